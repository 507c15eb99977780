//! The MT5 bridge protocol, version 3: the JSON frames exchanged over `/ws/mt5` (docs/mt5-protocol.md).
//!
//! Field names and numeric codes are those of the MT5 API (shared/MT5.md) so a bridge maps them 1:1, except
//! that a top-level MT5 `type` is spelled `order_type` / `deal_type` since `type` names the frame. Every
//! frame is `{"type": …, "seq": …, …}`; `seq` counts frames per direction from 1. Prices and volumes are
//! JSON numbers (decimal strings are accepted too) and become exact decimals on arrival. Unknown fields are
//! ignored so a newer bridge can add some; unknown types, missing fields and wrong types are errors.
//!
//! Versions: 3 adds the terminal's bar history (`bars_request` → `bars`), which trellis uses to fill the bars
//! it missed while it was down. A version-2 bridge is still accepted: it is simply never asked for bars (its
//! tenant's market data warms up from its own store). Version 1 is refused: it knows no epochs, so it would take
//! every frame of a restarted trellis for a duplicate.

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::domain::ledger::Ledger;
use crate::domain::positions::{Deal, DealEntry, Fill, RECONCILIATION_TICKET_BASE};
use crate::domain::{Bar, Login, Side, Symbol, Timeframe};

/// The protocol version this build speaks (and the one its own bridges send).
pub const PROTOCOL_VERSION: u32 = 3;
/// The oldest version still accepted: a version-2 bridge works in full except that it cannot serve bars.
pub const MIN_PROTOCOL_VERSION: u32 = 2;
/// The first version whose bridges answer `bars_request`.
pub const BARS_PROTOCOL_VERSION: u32 = 3;

/// What a bridge of an older protocol version is told to upgrade to.
pub const UPGRADE_HINT: &str =
    "upgrade the bridge to protocol 2 at least, 3 preferably (trellis mt5-sim of this release, \
     clients/mt5-bridge 0.3 or later): version 2 adds session epochs and history reconciliation, \
     version 3 the terminal's bar history";

/// At most this many bars in one `bars` frame: the bridge pages a longer answer. 250 rows of the widest
/// numbers (17 significant digits each) stay under 45 KB, inside the default `mt5.max_frame_bytes` (64 KiB).
pub const MAX_BARS_PER_FRAME: usize = 250;
/// At most this many bars in one answer (all its pages together): a range holding more is answered with its
/// newest bars. 50 000 M1 bars are about five weeks of trading.
pub const MAX_BARS_PER_ANSWER: usize = 50_000;

/// Frames from the terminal's bridge to trellis.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Inbound {
    Hello(Hello),
    Tick(TickFrame),
    Account(AccountFrame),
    Positions(PositionsFrame),
    OrderResult(OrderResultFrame),
    CancelResult(CancelResultFrame),
    Deal(DealFrame),
    Heartbeat(HeartbeatFrame),
    HistoryEnd(HistoryEndFrame),
    Bars(BarsFrame),
}

impl Inbound {
    pub fn seq(&self) -> u64 {
        match self {
            Self::Hello(f) => f.seq,
            Self::Tick(f) => f.seq,
            Self::Account(f) => f.seq,
            Self::Positions(f) => f.seq,
            Self::OrderResult(f) => f.seq,
            Self::CancelResult(f) => f.seq,
            Self::Deal(f) => f.seq,
            Self::Heartbeat(f) => f.seq,
            Self::HistoryEnd(f) => f.seq,
            Self::Bars(f) => f.seq,
        }
    }

    /// Whether the frame carries state trellis must store before acknowledging it.
    pub fn is_reliable(&self) -> bool {
        matches!(
            self,
            Self::Account(_)
                | Self::Positions(_)
                | Self::OrderResult(_)
                | Self::CancelResult(_)
                | Self::Deal(_)
                | Self::HistoryEnd(_)
        )
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Self::Hello(_) => "hello",
            Self::Tick(_) => "tick",
            Self::Account(_) => "account",
            Self::Positions(_) => "positions",
            Self::OrderResult(_) => "order_result",
            Self::CancelResult(_) => "cancel_result",
            Self::Deal(_) => "deal",
            Self::Heartbeat(_) => "heartbeat",
            Self::HistoryEnd(_) => "history_end",
            Self::Bars(_) => "bars",
        }
    }
}

/// First frame of every connection.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
pub struct Hello {
    pub seq: u64,
    pub api_key: String,
    /// MT5 account login.
    pub login: u64,
    /// Broker trade server, e.g. `MetaQuotes-Demo`.
    pub server: String,
    /// Terminal build, for the logs.
    #[serde(default)]
    pub build: Option<u32>,
    pub protocol_version: u32,
    /// Highest trellis `seq` this bridge has processed (0 on a fresh start): trellis re-sends what follows.
    #[serde(default)]
    pub last_seq_received: u64,
    /// The trellis epoch `last_seq_received` belongs to (from the last `welcome`; 0 on a fresh start). When
    /// it is not the session's current epoch, trellis's sequence started again and everything kept is re-sent.
    #[serde(default)]
    pub epoch: u64,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
pub struct TickFrame {
    pub seq: u64,
    pub symbol: String,
    pub time_msc: i64,
    pub bid: Decimal,
    pub ask: Decimal,
    #[serde(default)]
    pub last: Option<Decimal>,
    #[serde(default)]
    pub volume: Option<Decimal>,
    #[serde(default)]
    pub flags: Option<u32>,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
pub struct AccountFrame {
    pub seq: u64,
    pub login: u64,
    pub currency: String,
    pub leverage: u32,
    pub balance: Decimal,
    pub equity: Decimal,
    pub margin: Decimal,
    #[serde(default)]
    pub margin_free: Option<Decimal>,
    #[serde(default)]
    pub profit: Option<Decimal>,
    /// RETAIL_NETTING 0, EXCHANGE 1, RETAIL_HEDGING 2.
    #[serde(default)]
    pub margin_mode: u32,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
pub struct PositionsFrame {
    pub seq: u64,
    pub positions: Vec<PositionItem>,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
pub struct PositionItem {
    pub ticket: u64,
    /// Stable position id (use this, not `ticket`).
    pub identifier: u64,
    pub symbol: String,
    /// POSITION_TYPE_BUY 0, SELL 1.
    #[serde(rename = "type")]
    pub kind: u32,
    pub volume: Decimal,
    pub price_open: Decimal,
    #[serde(default)]
    pub price_current: Option<Decimal>,
    #[serde(default)]
    pub profit: Option<Decimal>,
    #[serde(default)]
    pub magic: Option<u64>,
    #[serde(default)]
    pub time_msc: Option<i64>,
}

/// The trade server's answer to an `order_request` (MT5 `MqlTradeResult`).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
pub struct OrderResultFrame {
    pub seq: u64,
    pub client_order_id: String,
    pub retcode: u32,
    #[serde(default)]
    pub deal: u64,
    #[serde(default)]
    pub order: u64,
    #[serde(default)]
    pub volume: Decimal,
    #[serde(default)]
    pub price: Decimal,
    #[serde(default)]
    pub bid: Option<Decimal>,
    #[serde(default)]
    pub ask: Option<Decimal>,
    #[serde(default)]
    pub comment: String,
    #[serde(default)]
    pub request_id: Option<u64>,
    #[serde(default)]
    pub retcode_external: Option<i64>,
}

/// The trade server's answer to a `cancel_request` (the `MqlTradeResult` of a TRADE_ACTION_REMOVE): a frame
/// of its own, so a cancel's outcome is never mistaken for the order's own result. 10009 DONE: the pending
/// order is removed (whatever filled before stays filled); anything else: it was not, and `comment` says why
/// (e.g. 10013 when the order is no longer pending).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
pub struct CancelResultFrame {
    pub seq: u64,
    /// The order the cancel was for, as in its `cancel_request`.
    pub client_order_id: String,
    pub retcode: u32,
    /// The trade server's order ticket.
    #[serde(default)]
    pub order: u64,
    #[serde(default)]
    pub comment: String,
}

/// A fill (MT5 deal).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
pub struct DealFrame {
    pub seq: u64,
    pub ticket: u64,
    pub order: u64,
    /// The order it fills, when the bridge knows it (from its journal).
    #[serde(default)]
    pub client_order_id: Option<String>,
    pub position_id: u64,
    pub symbol: String,
    /// MT5 deal `type` (DEAL_TYPE_BUY 0, SELL 1), renamed because `type` names the frame.
    pub deal_type: u32,
    /// DEAL_ENTRY_IN 0, OUT 1, INOUT 2, OUT_BY 3.
    pub entry: u32,
    pub volume: Decimal,
    pub price: Decimal,
    #[serde(default)]
    pub commission: Decimal,
    #[serde(default)]
    pub swap: Decimal,
    #[serde(default)]
    pub profit: Decimal,
    #[serde(default)]
    pub fee: Decimal,
    #[serde(default)]
    pub magic: u64,
    #[serde(default)]
    pub comment: String,
    pub time_msc: i64,
}

impl DealFrame {
    /// The deal as the ledger books it, attributed to its order and strategy when the ledger knows them;
    /// `None` for deals that are not trades (balance, credit, …: `deal_type` other than buy or sell).
    pub fn to_deal(&self, account: Login, ledger: &Ledger) -> Option<Deal> {
        let side = match self.deal_type {
            0 => Side::Buy,
            1 => Side::Sell,
            _ => return None,
        };
        let client_order_id = ledger.owner_of(account, self.client_order_id.as_deref(), self.order);
        Some(Deal {
            account,
            ticket: self.ticket,
            order: self.order,
            strategy_id: client_order_id
                .as_deref()
                .and_then(|c| ledger.strategy_of(c)),
            client_order_id,
            fill: Fill {
                symbol: Symbol::new(self.symbol.clone()),
                side,
                volume: self.volume,
                price: self.price,
                position_id: self.position_id,
                entry: DealEntry::from_code(self.entry).unwrap_or(DealEntry::In),
                // MT5 reports costs as negative amounts; the books count them as positive costs.
                commission: -self.commission - self.fee,
                time_msc: self.time_msc,
            },
            swap: self.swap,
            profit: self.profit,
        })
    }
}

/// The bridge's answer to a `history_request`, sent after the `deal` frames it found: the terminal's
/// positions read after those deals, so trellis compares a book that includes them.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
pub struct HistoryEndFrame {
    pub seq: u64,
    /// The `request_id` of the `history_request` answered.
    pub request_id: u64,
    /// How many deals the bridge found (and sent before this frame).
    #[serde(default)]
    pub deals: u64,
    pub positions: Vec<PositionItem>,
}

/// One page of the answer to a `bars_request` (protocol 3): complete bars of `symbol` and `timeframe`, oldest
/// first, at most [`MAX_BARS_PER_FRAME`] of them. Pages of one answer come in order; every page but the last
/// has `more: true`. Not reliable, like ticks: an answer lost with its link is asked again or done without.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
pub struct BarsFrame {
    pub seq: u64,
    /// The `request_id` of the `bars_request` answered.
    pub request_id: u64,
    pub symbol: String,
    /// `M1`, `M5`, `M15`, `H1`, `H4` or `D1`.
    pub timeframe: String,
    /// Complete bars (their period has ended at the terminal), oldest first.
    #[serde(default)]
    pub bars: Vec<BarRow>,
    /// The terminal's bar still forming, when its open time is in the range asked (on the last page).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forming: Option<BarRow>,
    /// Why the terminal has no bars to give (MT5's `last_error()`, an unknown symbol…); bars are then ignored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// More pages of this answer follow.
    #[serde(default)]
    pub more: bool,
}

/// A bar as MT5's `copy_rates_range` gives it (`time` in ms instead of seconds), OHLC from bid.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
pub struct BarRow {
    /// The bar's open time, ms since the Unix epoch on the terminal's clock (as tick `time_msc`).
    pub time_msc: i64,
    pub open: Decimal,
    pub high: Decimal,
    pub low: Decimal,
    pub close: Decimal,
    pub tick_volume: u64,
}

impl BarRow {
    /// The domain bar of this row for `symbol` and `timeframe`.
    pub fn to_bar(&self, symbol: &Symbol, timeframe: Timeframe) -> Bar {
        Bar {
            symbol: symbol.clone(),
            timeframe,
            open_time_ms: self.time_msc,
            open: self.open,
            high: self.high,
            low: self.low,
            close: self.close,
            tick_volume: self.tick_volume,
        }
    }

    /// The row of a domain bar.
    pub fn from_bar(bar: &Bar) -> Self {
        Self {
            time_msc: bar.open_time_ms,
            open: bar.open,
            high: bar.high,
            low: bar.low,
            close: bar.close,
            tick_volume: bar.tick_volume,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
pub struct HeartbeatFrame {
    pub seq: u64,
    pub time_msc: i64,
    /// Time of the last tick the terminal saw, so a live link with a stalled feed shows.
    #[serde(default)]
    pub last_tick_msc: Option<i64>,
    /// Highest trellis `seq` processed by the bridge.
    #[serde(default)]
    pub ack: Option<u64>,
}

/// Frames from trellis to the bridge.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Outbound {
    Welcome(Welcome),
    OrderRequest(OrderRequest),
    CancelRequest(CancelRequest),
    HistoryRequest(HistoryRequest),
    BarsRequest(BarsRequest),
    Heartbeat(ServerHeartbeat),
    Error(ErrorFrame),
    Redirect(Redirect),
}

/// The answer to a `hello` on a node that does not own the key's tenant (several nodes, docs/cluster.md):
/// connect to `url` instead. trellis closes the connection (1000) after it; `seq` is 0 (outside any
/// session's sequence).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Redirect {
    pub seq: u64,
    /// The owner's bridge endpoint, `ws://host:port/ws/mt5`.
    pub url: String,
    pub node: String,
    pub tenant: String,
    pub reason: String,
}

impl Outbound {
    pub fn seq(&self) -> u64 {
        match self {
            Self::Welcome(f) => f.seq,
            Self::OrderRequest(f) => f.seq,
            Self::CancelRequest(f) => f.seq,
            Self::HistoryRequest(f) => f.seq,
            Self::BarsRequest(f) => f.seq,
            Self::Heartbeat(f) => f.seq,
            Self::Error(f) => f.seq,
            Self::Redirect(f) => f.seq,
        }
    }
}

/// Reconciliation: trellis asks for the terminal's deals from `from_msc` on (MT5 `history_deals_get`), to
/// book what it missed; the bridge sends them as `deal` frames, then `history_end` with its positions.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct HistoryRequest {
    pub seq: u64,
    pub request_id: u64,
    /// Deals with `time_msc` ≥ this (the terminal's clock: the time of the last deal trellis booked).
    pub from_msc: i64,
    /// The highest deal ticket trellis booked for the account (0 for none), for the bridge's logs.
    pub after_ticket: u64,
}

/// Protocol 3: trellis asks for the terminal's bars of `symbol` and `timeframe` whose open time is in
/// `[from_msc, to_msc]` (MT5 `copy_rates_range`); the bridge answers with one or more `bars` frames. Sent only
/// to bridges that said hello with version 3 or later.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct BarsRequest {
    pub seq: u64,
    /// Echoed by every `bars` page of the answer.
    pub request_id: u64,
    pub symbol: String,
    /// `M1`, `M5`, `M15`, `H1`, `H4` or `D1`.
    pub timeframe: String,
    /// Open times from (inclusive), ms, terminal clock.
    pub from_msc: i64,
    /// Open times up to (inclusive), ms, terminal clock.
    pub to_msc: i64,
    /// At most this many bars: the newest of the range (absent: up to [`MAX_BARS_PER_ANSWER`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<u64>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Welcome {
    pub seq: u64,
    pub session_id: String,
    /// This life of the session's sequence: new whenever trellis numbers its frames from 1 again (a trellis
    /// restart, a session restart). A bridge seeing a new epoch forgets the trellis `seq` it processed.
    pub epoch: u64,
    pub protocol_version: u32,
    /// Highest terminal `seq` trellis has processed: the bridge re-sends its unacknowledged frames after it.
    pub resume_from: u64,
    pub heartbeat_interval_ms: u64,
    /// Symbols this tenant trades; ticks of others are refused.
    pub symbols: Vec<String>,
}

/// An order for the terminal (fields of MT5 `MqlTradeRequest`). Idempotent by `client_order_id`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct OrderRequest {
    pub seq: u64,
    pub client_order_id: String,
    /// TRADE_ACTION_DEAL 1 (market) or PENDING 5.
    pub action: u32,
    pub symbol: String,
    /// MT5 request `type` (ORDER_TYPE_BUY 0, SELL 1, BUY_LIMIT 2, SELL_LIMIT 3, BUY_STOP 4, SELL_STOP 5),
    /// renamed because `type` names the frame.
    pub order_type: u32,
    #[serde(with = "rust_decimal::serde::float")]
    pub volume: Decimal,
    /// 0 for market orders (the terminal uses the current price).
    #[serde(with = "rust_decimal::serde::float")]
    pub price: Decimal,
    #[serde(with = "rust_decimal::serde::float")]
    pub sl: Decimal,
    #[serde(with = "rust_decimal::serde::float")]
    pub tp: Decimal,
    /// Allowed slippage in points.
    pub deviation: u32,
    pub magic: u64,
    /// Short id for the terminal's comment (≤ 31 chars); never relied on to identify the order.
    pub comment: String,
    /// ORDER_FILLING_FOK 0, IOC 1, RETURN 2.
    pub type_filling: u32,
    /// ORDER_TIME_GTC 0, DAY 1, SPECIFIED 2, SPECIFIED_DAY 3.
    pub type_time: u32,
    /// Ticket of the position to close (hedging accounts); 0 otherwise.
    #[serde(default)]
    pub position: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CancelRequest {
    pub seq: u64,
    pub client_order_id: String,
    /// The trade server's order ticket, when known.
    pub order: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ServerHeartbeat {
    pub seq: u64,
    pub time_msc: i64,
    /// Highest terminal `seq` processed by trellis.
    pub ack: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ErrorFrame {
    pub seq: u64,
    /// Machine-readable: see [`ErrorCode`].
    pub code: String,
    pub message: String,
    /// The `seq` of the offending frame, when it could be read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ref_seq: Option<u64>,
    /// True when trellis closes the connection after this frame.
    pub fatal: bool,
}

/// Every problem a bridge can be told about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    MalformedJson,
    UnknownType,
    MissingField,
    WrongType,
    InvalidValue,
    UnknownSymbol,
    FrameTooLarge,
    RateLimited,
    BinaryNotSupported,
    HelloRequired,
    DuplicateHello,
    BadApiKey,
    UnsupportedVersion,
    HeartbeatTimeout,
    SessionReplaced,
    UnknownOrder,
    TooManyErrors,
    ShuttingDown,
    /// No node owns the tenant at this moment (it is moving after a node failed): retry shortly.
    TenantUnavailable,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::MalformedJson => "malformed_json",
            Self::UnknownType => "unknown_type",
            Self::MissingField => "missing_field",
            Self::WrongType => "wrong_type",
            Self::InvalidValue => "invalid_value",
            Self::UnknownSymbol => "unknown_symbol",
            Self::FrameTooLarge => "frame_too_large",
            Self::RateLimited => "rate_limited",
            Self::BinaryNotSupported => "binary_not_supported",
            Self::HelloRequired => "hello_required",
            Self::DuplicateHello => "duplicate_hello",
            Self::BadApiKey => "bad_api_key",
            Self::UnsupportedVersion => "unsupported_version",
            Self::HeartbeatTimeout => "heartbeat_timeout",
            Self::SessionReplaced => "session_replaced",
            Self::UnknownOrder => "unknown_order",
            Self::TooManyErrors => "too_many_errors",
            Self::ShuttingDown => "shutting_down",
            Self::TenantUnavailable => "tenant_unavailable",
        }
    }
}

/// Why a text frame could not be read, with the code the bridge is told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError {
    pub code: ErrorCode,
    pub message: String,
    pub ref_seq: Option<u64>,
}

/// Largest magnitude of a price or volume accepted from a bridge: beyond any instrument, and small enough
/// that volume × price × contract size, and sums of those, stay far inside `Decimal` (±7.9 × 10^28), whose
/// arithmetic panics on overflow.
pub const MAX_QUANTITY: Decimal = Decimal::from_parts(1_000_000_000, 0, 0, false, 0);
/// Largest magnitude of an amount of money (commission, swap, profit, fee, balance): 10^15.
pub const MAX_AMOUNT: Decimal = Decimal::from_parts(2_764_472_320, 232_830, 0, false, 0);
/// Times are milliseconds since the Unix epoch from 0 to 2^53 (the year 287 396); bar arithmetic on times
/// near `i64::MIN` or `i64::MAX` would overflow.
pub const MAX_TIME_MSC: i64 = 1 << 53;

/// Parses one text frame, telling apart broken JSON, unknown types, missing fields and wrong types, and
/// refusing numbers out of range (`invalid_value`) before they reach any arithmetic.
pub fn decode(text: &str) -> Result<Inbound, DecodeError> {
    match serde_json::from_str::<Inbound>(text) {
        Ok(frame) => match out_of_range(&frame) {
            None => Ok(frame),
            Some(message) => Err(DecodeError {
                code: ErrorCode::InvalidValue,
                message,
                ref_seq: Some(frame.seq()),
            }),
        },
        Err(e) => Err(classify(text, e)),
    }
}

/// The first number of `frame` outside the ranges above (or a buy, sell or position volume not above 0),
/// named.
fn out_of_range(frame: &Inbound) -> Option<String> {
    if let Some(name) = nul_in(frame) {
        // PostgreSQL cannot store a NUL in text: such a frame could be acknowledged but never stored.
        return Some(format!("`{name}` contains a NUL character"));
    }
    fn quantity(name: &str, v: Decimal) -> Option<String> {
        (v.abs() > MAX_QUANTITY).then(|| format!("`{name}` {v} is beyond ±{MAX_QUANTITY}"))
    }
    fn amount(name: &str, v: Decimal) -> Option<String> {
        (v.abs() > MAX_AMOUNT).then(|| format!("`{name}` {v} is beyond ±{MAX_AMOUNT}"))
    }
    fn positive(name: &str, v: Decimal) -> Option<String> {
        (v <= Decimal::ZERO).then(|| format!("`{name}` {v} must be above 0"))
    }
    fn time(name: &str, t: i64) -> Option<String> {
        (!(0..=MAX_TIME_MSC).contains(&t))
            .then(|| format!("`{name}` {t} is not a time from 0 to 2^53 ms"))
    }
    fn position(p: &PositionItem) -> Option<String> {
        positive("positions[].volume", p.volume)
            .or_else(|| quantity("positions[].volume", p.volume))
            .or_else(|| quantity("positions[].price_open", p.price_open))
            .or_else(|| {
                p.price_current
                    .and_then(|v| quantity("positions[].price_current", v))
            })
            .or_else(|| p.profit.and_then(|v| amount("positions[].profit", v)))
            .or_else(|| p.time_msc.and_then(|t| time("positions[].time_msc", t)))
    }
    match frame {
        Inbound::Tick(t) => time("time_msc", t.time_msc)
            .or_else(|| quantity("bid", t.bid))
            .or_else(|| quantity("ask", t.ask))
            .or_else(|| t.last.and_then(|v| quantity("last", v)))
            .or_else(|| t.volume.and_then(|v| quantity("volume", v))),
        Inbound::Account(a) => amount("balance", a.balance)
            .or_else(|| amount("equity", a.equity))
            .or_else(|| amount("margin", a.margin))
            .or_else(|| a.margin_free.and_then(|v| amount("margin_free", v)))
            .or_else(|| a.profit.and_then(|v| amount("profit", v))),
        Inbound::Positions(p) => p.positions.iter().find_map(position),
        Inbound::HistoryEnd(h) => h.positions.iter().find_map(position),
        Inbound::OrderResult(r) => quantity("volume", r.volume)
            .or_else(|| quantity("price", r.price))
            .or_else(|| r.bid.and_then(|v| quantity("bid", v)))
            .or_else(|| r.ask.and_then(|v| quantity("ask", v))),
        Inbound::CancelResult(_) => None,
        Inbound::Deal(d) => (d.ticket >= RECONCILIATION_TICKET_BASE)
            .then(|| {
                format!(
                    "`ticket` {} is in trellis's range for reconciliation entries (2^62 and above)",
                    d.ticket
                )
            })
            .or_else(|| time("time_msc", d.time_msc))
            // A buy or sell moves a position: by a positive volume (other deal types are ignored).
            .or_else(|| {
                (d.deal_type <= 1)
                    .then(|| positive("volume", d.volume))
                    .flatten()
            })
            .or_else(|| quantity("volume", d.volume))
            .or_else(|| quantity("price", d.price))
            .or_else(|| amount("commission", d.commission))
            .or_else(|| amount("swap", d.swap))
            .or_else(|| amount("profit", d.profit))
            .or_else(|| amount("fee", d.fee)),
        Inbound::Bars(b) => bars_out_of_range(b),
        Inbound::Hello(_) | Inbound::Heartbeat(_) => None,
    }
}

/// What is wrong with a `bars` page, if anything: an unknown timeframe, too many rows, a row that is not a bar
/// of that timeframe (open time off its boundaries, prices not positive or beyond range, high below another
/// price or low above one), rows not in increasing time, or a forming bar older than the last complete one.
fn bars_out_of_range(b: &BarsFrame) -> Option<String> {
    let Some(tf) = Timeframe::parse(&b.timeframe) else {
        return Some(format!(
            "`timeframe` `{}` is not one of M1, M5, M15, H1, H4, D1",
            b.timeframe
        ));
    };
    if b.error.is_some() {
        return None; // the rows of an answer with an error are ignored
    }
    if b.bars.len() > MAX_BARS_PER_FRAME {
        return Some(format!(
            "`bars` holds {} rows; a frame carries at most {MAX_BARS_PER_FRAME} (send more pages)",
            b.bars.len()
        ));
    }
    let row = |name: &str, r: &BarRow| -> Option<String> {
        if !(0..=MAX_TIME_MSC).contains(&r.time_msc) {
            return Some(format!(
                "`{name}.time_msc` {} is not a time from 0 to 2^53 ms",
                r.time_msc
            ));
        }
        if tf.open_time(r.time_msc) != r.time_msc {
            return Some(format!(
                "`{name}.time_msc` {} is not the open time of a {tf} bar (a multiple of {} ms)",
                r.time_msc,
                tf.millis()
            ));
        }
        for (field, v) in [
            ("open", r.open),
            ("high", r.high),
            ("low", r.low),
            ("close", r.close),
        ] {
            if v <= Decimal::ZERO || v > MAX_QUANTITY {
                return Some(format!(
                    "`{name}.{field}` {v} at {} must be above 0 and at most {MAX_QUANTITY}",
                    r.time_msc
                ));
            }
        }
        let (lo, hi) = (r.open.min(r.close), r.open.max(r.close));
        (r.low > lo || r.high < hi).then(|| {
            format!(
                "`{name}` at {}: low {} and high {} must enclose open {} and close {}",
                r.time_msc, r.low, r.high, r.open, r.close
            )
        })
    };
    let mut last: Option<i64> = None;
    for r in &b.bars {
        if let Some(why) = row("bars[]", r) {
            return Some(why);
        }
        if let Some(t) = last.filter(|t| r.time_msc <= *t) {
            return Some(format!(
                "`bars` must be oldest first without repeats: {} follows {t}",
                r.time_msc
            ));
        }
        last = Some(r.time_msc);
    }
    let forming = b.forming.as_ref()?;
    row("forming", forming).or_else(|| {
        last.filter(|t| forming.time_msc <= *t).map(|t| {
            format!(
                "`forming` opens at {}, not after the last complete bar ({t})",
                forming.time_msc
            )
        })
    })
}

/// The first string field of `frame` that holds a NUL character.
fn nul_in(frame: &Inbound) -> Option<&'static str> {
    let nul = |s: &str| s.contains('\0');
    let positions = |ps: &[PositionItem]| ps.iter().any(|p| nul(&p.symbol));
    match frame {
        Inbound::Hello(h) => (nul(&h.api_key) || nul(&h.server)).then_some("hello"),
        Inbound::Tick(t) => nul(&t.symbol).then_some("symbol"),
        Inbound::Account(a) => nul(&a.currency).then_some("currency"),
        Inbound::Positions(p) => positions(&p.positions).then_some("positions[].symbol"),
        Inbound::HistoryEnd(h) => positions(&h.positions).then_some("positions[].symbol"),
        Inbound::OrderResult(r) => {
            (nul(&r.client_order_id) || nul(&r.comment)).then_some("order_result")
        }
        Inbound::CancelResult(r) => {
            (nul(&r.client_order_id) || nul(&r.comment)).then_some("cancel_result")
        }
        Inbound::Deal(d) => {
            (nul(&d.symbol) || nul(&d.comment) || d.client_order_id.as_deref().is_some_and(nul))
                .then_some("deal")
        }
        Inbound::Bars(b) => {
            (nul(&b.symbol) || nul(&b.timeframe) || b.error.as_deref().is_some_and(nul))
                .then_some("bars")
        }
        Inbound::Heartbeat(_) => None,
    }
}

fn classify(text: &str, e: serde_json::Error) -> DecodeError {
    use serde_json::error::Category;
    let message = e.to_string();
    // A frame that is valid JSON but the wrong shape: find its seq for the reply.
    let value = match e.classify() {
        Category::Syntax | Category::Eof | Category::Io => None,
        Category::Data => serde_json::from_str::<serde_json::Value>(text).ok(),
    };
    let Some(value) = value else {
        return DecodeError {
            code: ErrorCode::MalformedJson,
            message: format!("not valid JSON: {message}"),
            ref_seq: None,
        };
    };
    let ref_seq = value.get("seq").and_then(serde_json::Value::as_u64);
    let code = if !value.is_object() {
        ErrorCode::WrongType
    } else if value.get("type").is_none() {
        ErrorCode::MissingField
    } else if !value["type"].is_string() {
        ErrorCode::WrongType
    } else if message.starts_with("unknown variant") {
        ErrorCode::UnknownType
    } else if message.starts_with("missing field") {
        ErrorCode::MissingField
    } else if message.starts_with("invalid value") && !message.contains("expected a Decimal") {
        ErrorCode::InvalidValue
    } else {
        ErrorCode::WrongType
    };
    let message = match code {
        ErrorCode::MissingField if value.get("type").is_none() => "missing field `type`".to_owned(),
        ErrorCode::WrongType if !value.is_object() => "a frame must be a JSON object".to_owned(),
        _ => message,
    };
    DecodeError {
        code,
        message,
        ref_seq,
    }
}

/// Serialises an outbound frame. Serialising these types cannot fail; an empty string is never sent.
pub fn encode(frame: &Outbound) -> String {
    serde_json::to_string(frame).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tick_frame_parses_prices_exactly() {
        let f = decode(r#"{"type":"tick","seq":3,"symbol":"EURUSD","time_msc":1700000000123,"bid":1.08123,"ask":"1.08125"}"#)
            .expect("valid");
        let Inbound::Tick(t) = f else { panic!("tick") };
        assert_eq!(t.bid.to_string(), "1.08123");
        assert_eq!(t.ask.to_string(), "1.08125");
    }

    #[test]
    fn each_kind_of_bad_frame_gets_its_own_code() {
        let code = |s: &str| decode(s).expect_err("bad").code;
        assert_eq!(code("{not json"), ErrorCode::MalformedJson);
        assert_eq!(
            code(r#"{"type":"teleport","seq":1}"#),
            ErrorCode::UnknownType
        );
        assert_eq!(
            code(r#"{"type":"tick","seq":1,"symbol":"EURUSD","time_msc":1,"bid":1.1}"#),
            ErrorCode::MissingField
        );
        assert_eq!(
            code(
                r#"{"type":"tick","seq":1,"symbol":"EURUSD","time_msc":"soon","bid":1.1,"ask":1.2}"#
            ),
            ErrorCode::WrongType
        );
        assert_eq!(code(r#"{"seq":1}"#), ErrorCode::MissingField);
        assert_eq!(code("[1,2]"), ErrorCode::WrongType);
        assert_eq!(
            decode(r#"{"type":"teleport","seq":9}"#)
                .expect_err("bad")
                .ref_seq,
            Some(9)
        );
    }

    #[test]
    fn a_version_1_hello_reads_as_epoch_0_and_a_history_end_parses_with_its_positions() {
        let Ok(Inbound::Hello(h)) = decode(
            r#"{"type":"hello","seq":1,"api_key":"k","login":5,"server":"s","protocol_version":1}"#,
        ) else {
            panic!("hello")
        };
        assert_eq!((h.epoch, h.last_seq_received), (0, 0));
        let f = decode(
            r#"{"type":"history_end","seq":9,"request_id":4,"deals":1,"positions":[{"ticket":1,"identifier":1,"symbol":"EURUSD","type":1,"volume":0.1,"price_open":1.1}]}"#,
        )
        .expect("valid");
        assert!(f.is_reliable());
        let Inbound::HistoryEnd(end) = f else {
            panic!("history_end")
        };
        assert_eq!(
            (end.request_id, end.deals, end.positions[0].kind),
            (4, 1, 1)
        );
        let text = encode(&Outbound::HistoryRequest(HistoryRequest {
            seq: 3,
            request_id: 4,
            from_msc: (1 << 53) - 1,
            after_ticket: 0,
        }));
        assert!(text.contains(r#""type":"history_request""#), "{text}");
        assert!(text.contains(r#""from_msc":9007199254740991"#), "{text}");
    }

    #[test]
    fn numbers_beyond_what_the_books_can_hold_are_invalid_values() {
        let invalid = |s: &str| {
            let e = decode(s).expect_err("out of range");
            assert_eq!(e.code, ErrorCode::InvalidValue, "{s}: {}", e.message);
            assert_eq!(e.ref_seq, Some(7));
        };
        invalid(
            r#"{"type":"tick","seq":7,"symbol":"EURUSD","time_msc":-9223372036854775808,"bid":1.1,"ask":1.2}"#,
        );
        invalid(
            r#"{"type":"tick","seq":7,"symbol":"EURUSD","time_msc":1,"bid":1.1,"ask":"79228162514264337593543950335"}"#,
        );
        invalid(
            r#"{"type":"deal","seq":7,"ticket":18446744073709551615,"order":1,"position_id":1,"symbol":"EURUSD","deal_type":0,"entry":0,"volume":0.1,"price":1.1,"time_msc":1}"#,
        );
        invalid(
            r#"{"type":"deal","seq":7,"ticket":1,"order":1,"position_id":1,"symbol":"EURUSD","deal_type":0,"entry":0,"volume":"1000000000.1","price":1.1,"time_msc":1}"#,
        );
        invalid(
            r#"{"type":"positions","seq":7,"positions":[{"ticket":1,"identifier":1,"symbol":"EURUSD","type":0,"volume":0.1,"price_open":"-10000000000"}]}"#,
        );
        invalid(
            r#"{"type":"deal","seq":7,"ticket":1,"order":1,"position_id":1,"symbol":"EURUSD","deal_type":1,"entry":0,"volume":0,"price":1.1,"time_msc":1}"#,
        );
        invalid(
            r#"{"type":"history_end","seq":7,"request_id":1,"positions":[{"ticket":1,"identifier":1,"symbol":"EURUSD","type":0,"volume":-0.1,"price_open":1.1}]}"#,
        );
        invalid(
            r#"{"type":"deal","seq":7,"ticket":1,"order":1,"position_id":1,"symbol":"EUR\u0000USD","deal_type":0,"entry":0,"volume":0.1,"price":1.1,"time_msc":1}"#,
        );
        assert!(decode(
            r#"{"type":"deal","seq":7,"ticket":1,"order":1,"position_id":1,"symbol":"EURUSD","deal_type":0,"entry":0,"volume":"1000000000","price":"-1000000000","commission":"-1000000000000000","time_msc":9007199254740992}"#
        )
        .is_ok());
    }

    #[test]
    fn a_bars_request_names_its_timeframe_and_a_bars_answer_parses_exactly_with_its_forming_bar() {
        let text = encode(&Outbound::BarsRequest(BarsRequest {
            seq: 5,
            request_id: 9,
            symbol: "EURUSD".into(),
            timeframe: Timeframe::M5.as_str().into(),
            from_msc: 1_700_000_100_000,
            to_msc: 1_700_000_400_000,
            count: None,
        }));
        assert_eq!(
            text,
            r#"{"type":"bars_request","seq":5,"request_id":9,"symbol":"EURUSD","timeframe":"M5","from_msc":1700000100000,"to_msc":1700000400000}"#
        );

        let f = decode(
            r#"{"type":"bars","seq":12,"request_id":9,"symbol":"EURUSD","timeframe":"M5","bars":[{"time_msc":1700000100000,"open":1.08123,"high":"1.08130","low":1.0812,"close":1.08125,"tick_volume":17}],"forming":{"time_msc":1700000400000,"open":1.08125,"high":1.08125,"low":1.08125,"close":1.08125,"tick_volume":1}}"#,
        )
        .expect("valid");
        assert!(!f.is_reliable(), "bars are plain frames, like ticks");
        let Inbound::Bars(b) = f else { panic!("bars") };
        assert!(!b.more);
        let bar = b.bars[0].to_bar(&Symbol::new("EURUSD"), Timeframe::M5);
        assert_eq!(bar.high.to_string(), "1.08130");
        assert_eq!((bar.open_time_ms, bar.tick_volume), (1_700_000_100_000, 17));
        assert_eq!(b.forming.map(|r| r.time_msc), Some(1_700_000_400_000));
    }

    #[test]
    fn a_bars_frame_that_is_not_bars_of_its_timeframe_is_an_invalid_value_naming_the_problem() {
        let bars = |timeframe: &str, rows: &str| {
            format!(
                r#"{{"type":"bars","seq":4,"request_id":1,"symbol":"EURUSD","timeframe":"{timeframe}","bars":[{rows}]}}"#
            )
        };
        let r = |t: i64, o: &str, h: &str, l: &str, c: &str| {
            format!(
                r#"{{"time_msc":{t},"open":{o},"high":{h},"low":{l},"close":{c},"tick_volume":1}}"#
            )
        };
        let ok = r(60_000, "1.1", "1.2", "1.0", "1.1");
        let many = vec![ok.as_str(); MAX_BARS_PER_FRAME + 1].join(",");
        let cases = [
            (bars("M2", &ok), "timeframe"),
            (
                bars("M1", &r(60_001, "1.1", "1.2", "1.0", "1.1")),
                "open time of a M1 bar",
            ),
            (
                bars("M1", &r(60_000, "1.1", "1.0", "1.2", "1.1")),
                "must enclose",
            ),
            (
                bars("M1", &r(60_000, "1.3", "1.2", "1.0", "1.1")),
                "must enclose",
            ),
            (bars("M1", &r(60_000, "0", "1.2", "0", "1.1")), "above 0"),
            (bars("M1", &r(-60_000, "1.1", "1.2", "1.0", "1.1")), "2^53"),
            (bars("M1", &format!("{ok},{ok}")), "oldest first"),
            (bars("M1", &many), "at most 250"),
        ];
        for (text, says) in cases {
            let e = decode(&text).expect_err("refused");
            assert_eq!(e.code, ErrorCode::InvalidValue, "{text}: {}", e.message);
            assert!(e.message.contains(says), "{}: should say {says}", e.message);
            assert_eq!(e.ref_seq, Some(4));
        }
        let with_error = r#"{"type":"bars","seq":4,"request_id":1,"symbol":"EURUSD","timeframe":"H4","error":"(-1, 'Terminal: Call failed')"}"#;
        assert!(decode(with_error).is_ok());
    }

    #[test]
    fn order_requests_carry_prices_as_numbers() {
        let text = encode(&Outbound::OrderRequest(OrderRequest {
            seq: 1,
            client_order_id: "c1".into(),
            action: 1,
            symbol: "EURUSD".into(),
            order_type: 0,
            volume: "0.1".parse().expect("d"),
            price: Decimal::ZERO,
            sl: Decimal::ZERO,
            tp: Decimal::ZERO,
            deviation: 10,
            magic: 7,
            comment: "c1".into(),
            type_filling: 1,
            type_time: 0,
            position: 0,
        }));
        assert!(text.contains(r#""volume":0.1"#), "{text}");
        assert!(text.contains(r#""type":"order_request""#), "{text}");
        assert!(text.contains(r#""order_type":0"#), "{text}");
    }
}
