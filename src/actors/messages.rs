//! Messages between the actors of a tenant, grouped as commands, events and queries.

use actix::prelude::*;
use rust_decimal::Decimal;
use serde::Serialize;
use tokio::sync::mpsc::UnboundedSender;

use crate::bridge::protocol::{
    AccountFrame, CancelResultFrame, DealFrame, Hello, HistoryEndFrame, Inbound, OrderResultFrame,
    PositionsFrame, Welcome,
};
use crate::domain::orders::{Order, OrderKind};
use crate::domain::positions::{Deal, Performance, Position};
use crate::domain::{Bar, Login, Side, Symbol, Tick, Timeframe};

// ---- commands -------------------------------------------------------------------------------------------

/// A strategy wants to hold `target` lots of `symbol` (signed). Sent to the portfolio.
#[derive(Message, Debug, Clone)]
#[rtype(result = "()")]
pub struct Signal {
    pub strategy_id: String,
    pub account: Option<Login>,
    pub symbol: Symbol,
    pub target: Decimal,
    /// Tick time of the bar that caused it.
    pub at_ms: i64,
    /// The model prediction that caused it, if one did (recorded in the audit trail of its order).
    pub cause: Option<crate::domain::Prediction>,
    /// When the frame of the tick behind it was read (stage timings; `None` when not caused by a live tick).
    pub origin: Option<std::time::Instant>,
}

pub use crate::domain::risk::{KillSwitch, OrderFacts, RiskRejection};

/// Pre-trade check. Sent by the portfolio to risk.
#[derive(Message, Debug)]
#[rtype(result = "Result<(), RiskRejection>")]
pub struct CheckOrder(pub OrderFacts);

/// A regime deployment's latest state (model host → `Risk`, when the risk limits name the deployment).
#[derive(Message, Debug, Clone)]
#[rtype(result = "()")]
pub struct RegimeObserved {
    pub deployment: String,
    pub label: String,
}

/// The tenant's current covariance of its symbols' M1 returns (`None` until the window holds enough bars).
#[derive(Message, Debug)]
#[rtype(result = "Option<crate::domain::correlation::Covariance>")]
pub struct GetCorrelation;

/// Turns the kill switch on or off; `flatten` also closes every position.
#[derive(Message, Debug)]
#[rtype(result = "RiskState")]
pub struct SetKillSwitch {
    pub on: bool,
    pub reason: String,
    pub flatten: bool,
}

/// A trading client's manual order (`/ws/v1/client` `place_order`), checked by risk like a strategy's.
/// Idempotent by `client_order_id`: an id the book already has answers that order, marked `duplicate`.
#[derive(Message, Debug, Clone)]
#[rtype(result = "Result<ManualOrderPlaced, ManualOrderRefused>")]
pub struct PlaceManualOrder {
    /// As recorded (`manual:<the client's id>`).
    pub client_order_id: String,
    pub account: Option<Login>,
    pub symbol: Symbol,
    pub side: Side,
    pub kind: OrderKind,
    pub volume: Decimal,
    pub price: Option<Decimal>,
    /// Who placed it (audit log).
    pub actor: String,
}

#[derive(Debug, Clone)]
pub struct ManualOrderPlaced {
    /// The order as it stands once handed towards its session.
    pub order: Order,
    pub duplicate: bool,
}

/// Why a manual order was not sent: `code` is one of the protocol's refusal codes.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{code}: {reason}")]
pub struct ManualOrderRefused {
    pub code: &'static str,
    pub reason: String,
}

/// A trading client's cancel of its manual pending order (`cancel_order`). Answers the order as it stands
/// once the cancel is on its way to the terminal; the outcome arrives later as the order's new state.
#[derive(Message, Debug, Clone)]
#[rtype(result = "Result<Order, ManualOrderRefused>")]
pub struct CancelManualOrder {
    /// As recorded (`manual:<the client's id>`).
    pub client_order_id: String,
    /// Who cancelled it (audit log).
    pub actor: String,
}

/// Asks the session of an order's account to cancel it on the terminal (`cancel_request`).
#[derive(Message, Debug)]
#[rtype(result = "u64")]
pub struct SendCancel {
    pub client_order_id: String,
    /// The trade server's order ticket, 0 when not known yet.
    pub order: u64,
}

/// Closes every open position with reduce-only market orders.
#[derive(Message, Debug)]
#[rtype(result = "usize")]
pub struct Flatten {
    pub reason: String,
}

/// Hands an order to the session of its account. Answers the frame's `seq`.
#[derive(Message, Debug)]
#[rtype(result = "u64")]
pub struct SendOrder {
    pub client_order_id: String,
    pub symbol: Symbol,
    pub side: Side,
    pub kind: OrderKind,
    pub volume: Decimal,
    pub price: Option<Decimal>,
    /// Ticket of the position to close (hedging accounts), 0 otherwise.
    pub position: u64,
    pub magic: u64,
    /// When the frame of the tick behind it was read (stage timings; `None` for orders of no live tick).
    pub origin: Option<std::time::Instant>,
}

/// What a WebSocket connection task receives from its session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outgoing {
    Text(String),
    /// Close with a WebSocket close code and reason.
    Close(u16, String),
}

/// A bridge connection says hello to its session (after authentication).
#[derive(Message)]
#[rtype(result = "Welcome")]
pub struct Attach {
    pub conn_id: u64,
    pub tx: UnboundedSender<Outgoing>,
    pub hello: Hello,
}

/// The connection ended.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct Detach {
    pub conn_id: u64,
}

/// A frame read from the bridge (already parsed).
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct FrameReceived {
    pub conn_id: u64,
    pub frame: Inbound,
    /// When the frame was read off the socket: the origin of the trading path's stage timings.
    pub read_at: std::time::Instant,
}

/// A frame from the bridge that could not be used; the session answers with a sequenced `error`.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct RejectFrame {
    pub conn_id: u64,
    pub code: crate::bridge::protocol::ErrorCode,
    pub message: String,
    pub ref_seq: Option<u64>,
}

// ---- events ---------------------------------------------------------------------------------------------

#[derive(Message, Debug, Clone)]
#[rtype(result = "()")]
pub struct TickReceived(pub Tick, pub std::time::Instant);

#[derive(Message, Debug, Clone)]
#[rtype(result = "()")]
/// A bar closed; with the time its closing tick's frame was read when a live tick closed it (stage
/// timings), `None` when it comes from the store, the terminal's history or a timer.
pub struct BarClosed(pub Bar, pub Option<std::time::Instant>);

/// One of a strategy's orders filled.
#[derive(Message, Debug, Clone)]
#[rtype(result = "()")]
pub struct StrategyFilled {
    pub signed_volume: Decimal,
    pub price: Decimal,
}

/// The trade server answered an order.
#[derive(Message, Debug)]
#[rtype(result = "Result<(), UnknownOrder>")]
pub struct OrderResultReceived {
    pub account: Login,
    pub frame: OrderResultFrame,
}

#[derive(Debug, thiserror::Error)]
#[error("no order with client_order_id `{0}`")]
pub struct UnknownOrder(pub String);

/// The trade server answered a cancel.
#[derive(Message, Debug)]
#[rtype(result = "Result<(), UnknownOrder>")]
pub struct CancelResultReceived {
    pub frame: CancelResultFrame,
}

#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct DealReceived {
    pub account: Login,
    pub frame: DealFrame,
}

#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct AccountReceived(pub AccountFrame);

#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct PositionsReceived {
    pub account: Login,
    pub frame: PositionsFrame,
}

/// The terminal's answer to a `history_request` (its deals came before it): the positions to reconcile with.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct HistoryEndReceived {
    pub account: Login,
    pub frame: HistoryEndFrame,
    /// The answer to the request outstanding now; false for an old answer a bridge re-sent after a restart,
    /// whose positions may be stale (it is only compared, like a `positions` snapshot).
    pub current: bool,
}

/// Sent to the portfolio right after a reliable bridge frame: once every record that frame caused is stored,
/// the portfolio tells the session `Stored { seq }`, and only then does the bridge hear the frame
/// acknowledged. The portfolio's write queue is in order, so the marker is simply queued behind the writes.
#[derive(Message)]
#[rtype(result = "()")]
pub struct AckWhenStored {
    pub session: Recipient<Stored>,
    pub seq: u64,
}

/// Every record caused by the bridge frame `seq` is durably stored.
#[derive(Message, Debug, Clone, Copy)]
#[rtype(result = "()")]
pub struct Stored {
    pub seq: u64,
}

/// The portfolio saw the terminal's positions differ from its book: the session asks the terminal for its
/// recent deals (one request at a time), and the answer settles it.
#[derive(Message, Debug, Clone, Copy)]
#[rtype(result = "()")]
pub struct ReconcileNeeded;

/// Where an account's history request starts: the last deal booked for it.
#[derive(Message, Debug)]
#[rtype(result = "ReconcilePoint")]
pub struct GetReconcilePoint {
    pub account: Login,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReconcilePoint {
    /// The terminal's time of the last deal booked (2^53 − 1 when none: ask for no deals).
    pub from_msc: i64,
    /// The highest deal ticket booked (0 for none).
    pub after_ticket: u64,
}

/// The link to a terminal changed.
#[derive(Message, Debug, Clone, Copy)]
#[rtype(result = "()")]
pub struct AccountLink {
    pub account: Login,
    pub state: LinkState,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum LinkState {
    Connected,
    Disconnected,
    /// Heartbeats missed: the account is blind.
    Lost,
}

/// PnL of the tenant, for the loss limits.
#[derive(Message, Debug, Clone, Copy)]
#[rtype(result = "()")]
pub struct PnlUpdated {
    pub at_ms: i64,
    pub realised: Decimal,
    pub unrealised: Decimal,
    pub commission: Decimal,
}

// ---- queries --------------------------------------------------------------------------------------------

#[derive(Message, Debug)]
#[rtype(result = "Vec<Bar>")]
pub struct GetRecentBars {
    pub symbol: Symbol,
    pub timeframe: Timeframe,
    pub limit: usize,
}

/// The bars a consumer needs behind it before its first live bar (a strategy's warm-up): answered by
/// `MarketData` once the series is warm — loaded from the store, and its gap up to now filled from the
/// terminal (or the terminal could not fill it). At most `bars`, oldest first.
#[derive(Message, Debug)]
#[rtype(result = "Warm")]
pub struct WarmUp {
    pub symbol: Symbol,
    pub timeframe: Timeframe,
    pub bars: usize,
    /// The bar a stored state was taken after: the answer reaches back to it when the series still holds
    /// it, however many bars that is (an outage longer than the warm-up).
    pub since_ms: Option<i64>,
}

#[derive(Debug, Clone, Default)]
pub struct Warm {
    pub bars: Vec<Bar>,
    /// Whether the terminal filled the gap between the store and now (else: the store alone).
    pub from_terminal: bool,
}

/// Bars a warm strategy missed while its terminal's link was down, filled in from the terminal when it came
/// back (`MarketData` → `StrategyHost`): they bring its state up to date; their signals are stale and
/// discarded, the next live bar decides.
#[derive(Message, Debug, Clone)]
#[rtype(result = "()")]
pub struct CatchUp(pub Vec<Bar>);

/// Bars asked from the terminal (`MarketData` → an `Mt5Session`), answered with `BarsFetched` to the
/// tenant's market data. Open times in `[from_ms, to_ms]`. A session that is not connected, or whose bridge
/// speaks a protocol without `bars_request` (version 2), answers at once with `error` set.
#[derive(Message, Debug, Clone)]
#[rtype(result = "()")]
pub struct FetchBars {
    pub request_id: u64,
    pub symbol: Symbol,
    pub timeframe: Timeframe,
    pub from_ms: i64,
    pub to_ms: i64,
    /// At most this many bars, the newest of the range (a series the store lacks asks for its depth
    /// from the beginning of time).
    pub count: usize,
}

/// The terminal's bars for a `FetchBars` (an `Mt5Session` → `MarketData`).
#[derive(Message, Debug, Clone)]
#[rtype(result = "()")]
pub struct BarsFetched {
    pub request_id: u64,
    pub symbol: Symbol,
    pub timeframe: Timeframe,
    /// Complete bars, oldest first.
    pub bars: Vec<Bar>,
    /// The bar still forming at the terminal, if any (seeds the bar being built).
    pub forming: Option<Bar>,
    /// Why there are no bars (not connected, an older bridge, an unknown symbol, the terminal's error).
    pub error: Option<String>,
}

/// A terminal attached to one of the tenant's sessions (an `Mt5Session` → `MarketData`, after each
/// `welcome`): whether its bridge answers `bars_request`, and where to ask.
#[derive(Message, Debug, Clone)]
#[rtype(result = "()")]
pub struct TerminalLinked {
    pub login: Login,
    pub serves_bars: bool,
    pub session: Recipient<FetchBars>,
}

/// Orders still in flight for an account (a session rebuilding its outbox).
#[derive(Message, Debug)]
#[rtype(result = "Vec<Order>")]
pub struct GetInFlight {
    pub account: Login,
}

#[derive(Message, Debug)]
#[rtype(result = "PortfolioSnapshot")]
pub struct GetPortfolio;

/// The portfolio as the API and the demo show it.
#[derive(Debug, Clone, Serialize)]
pub struct PortfolioSnapshot {
    pub orders: Vec<Order>,
    pub deals: Vec<Deal>,
    pub positions: Vec<AccountPosition>,
    pub performance: Performance,
}

#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct AccountPosition {
    pub account: Login,
    #[serde(flatten)]
    pub position: Position,
}

/// A strategy instance's progress. Answered after every bar sent to it before the query.
#[derive(Message, Debug)]
#[rtype(result = "StrategyState")]
pub struct GetStrategyState;

#[derive(Debug, Clone, Serialize)]
pub struct StrategyState {
    pub id: String,
    /// Open time of the last bar handled (`None` before the first).
    pub last_bar_ms: Option<i64>,
    /// `warming` until the strategy has its warm-up behind it (it is routed no live bar before), then
    /// `ready`.
    pub state: &'static str,
    /// Bars the strategy declares it needs behind it (from its parameters).
    pub warm_up_bars: usize,
    /// How it was warmed: `snapshot` (its stored state, then the bars after it), `replay` (the warm-up
    /// bars), or `none` yet.
    pub warmed_by: &'static str,
}

#[derive(Message, Debug)]
#[rtype(result = "RiskState")]
pub struct GetRiskState;

#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct RiskState {
    pub kill_switch: Option<KillSwitch>,
    pub daily_pnl: Decimal,
    pub drawdown: Decimal,
    pub blind_accounts: Vec<Login>,
    pub rejections: u64,
}

#[derive(Message, Debug)]
#[rtype(result = "SessionState")]
pub struct GetSessionState;

#[derive(Debug, Clone, Serialize)]
pub struct SessionState {
    pub login: Login,
    pub link: LinkState,
    pub last_seq_received: u64,
    pub last_seq_sent: u64,
    pub outbox: Vec<String>,
    pub duplicates_ignored: u64,
    pub bridge_ack: u64,
    /// The epoch of this life of the session's sequence (`welcome.epoch`).
    pub epoch: u64,
    /// Highest bridge seq whose state is stored: what trellis acknowledges.
    pub acknowledged: u64,
    /// History requests sent to the terminal so far.
    pub history_requests: u64,
    pub last_tick_msc: Option<i64>,
}

/// Closes the terminal's connection (the session stays, the bridge may not reconnect while refused).
#[derive(Message, Debug, Clone)]
#[rtype(result = "()")]
pub struct Disconnect {
    pub reason: String,
}

/// Fault injection for tests and fire drills: the actor that receives it panics in the handler, exactly as
/// a bug would. Handled by `Risk` and `MarketData`; nothing in trellis sends it.
#[derive(Message, Debug, Clone)]
#[rtype(result = "()")]
pub struct Crash {
    pub reason: String,
}

/// Replaces the tenant's risk limits (admin API); the kill switch and PnL state are kept.
#[derive(Message, Debug, Clone)]
#[rtype(result = "()")]
pub struct SetRiskLimits(pub crate::domain::tenant::RiskSettings);

/// Changes the tenant's tier (admin API → `Risk`, which owns it).
#[derive(Message, Debug, Clone)]
#[rtype(result = "()")]
pub struct SetTier(pub String);

/// Adds or replaces a strategy route (admin API → `MarketData`, which owns the routes).
#[derive(Message, Debug, Clone)]
#[rtype(result = "()")]
pub struct SetRoute(pub super::tenant::StrategyRoute);

/// Removes a strategy route (admin API → `MarketData`).
#[derive(Message, Debug, Clone)]
#[rtype(result = "()")]
pub struct DropRoute(pub String);

/// Adds or replaces a model deployment (admin API → `MarketData`, which owns the deployments and routes
/// bars to them).
#[derive(Message, Debug, Clone)]
#[rtype(result = "()")]
pub struct SetDeployment(pub std::sync::Arc<crate::models::deployment::Deployment>);

/// Removes a model deployment (admin API → `MarketData`).
#[derive(Message, Debug, Clone)]
#[rtype(result = "()")]
pub struct DropDeployment(pub String);

/// A deployment's versions or weights changed (admin API → its `ModelHost`): the host serves the
/// deployment as now published, keeping the features and monitoring of the versions it still serves.
#[derive(Message, Debug, Clone)]
#[rtype(result = "()")]
pub struct Redeploy;

/// A model deployment's prediction, to the strategies that trade it.
#[derive(Message, Debug, Clone)]
#[rtype(result = "()")]
pub struct PredictionMade(pub crate::domain::Prediction);

/// What a model host has done: its recent predictions and each version's counts.
#[derive(Message, Debug, Clone)]
#[rtype(result = "ModelState")]
pub struct GetModelState;

#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct ModelState {
    pub deployment: String,
    pub versions: Vec<ModelVersionState>,
    /// Newest last; at most the last 1 000.
    pub recent: Vec<crate::domain::Prediction>,
}

/// A version's counts and monitoring, as the model host reports them.
#[derive(Debug, Clone, Default, serde::Serialize, schemars::JsonSchema)]
pub struct ModelVersionState {
    pub version: String,
    pub shadow: bool,
    /// The weight in force (0 after an automatic rollback).
    pub weight: f64,
    /// Predictions made.
    pub served: u64,
    /// Runs whose output was not a finite number.
    pub not_finite: u64,
    /// Runs that failed.
    pub failed: u64,
    /// Predictions slower than the budget, dropped.
    pub over_budget: u64,
    /// Runs skipped because the tenant's predictions for the minute were spent (`[quotas] predictions`).
    pub over_quota: u64,
    /// Bars abandoned because the version was still computing earlier ones when their deadline passed.
    pub skipped_busy: u64,
    /// Whether it was rolled back automatically.
    pub rolled_back: bool,
    pub monitoring: ModelMonitoring,
}

/// How a version's predictions turned out, and whether its inputs still look like its training data.
#[derive(Debug, Clone, Default, serde::Serialize, schemars::JsonSchema)]
pub struct ModelMonitoring {
    /// Predictions whose horizon has passed, over the rolling window.
    pub outcomes: usize,
    /// Share of those whose direction matched the realised return (direction and return outputs).
    pub directional_accuracy: Option<f64>,
    /// Mean absolute error against the realised return (`expected_return` outputs).
    pub mae: Option<f64>,
    /// Per feature (and `output`) with a training reference: the last drift check.
    pub drift: Vec<FeatureDrift>,
}

/// A feature's (or the output's) drift.
#[derive(Debug, Clone, serde::Serialize, schemars::JsonSchema)]
pub struct FeatureDrift {
    pub feature: String,
    /// The last check; `null` before the window holds enough values.
    pub check: Option<crate::models::drift::DriftCheck>,
    /// Alarms raised (a check turning from no drift to drift).
    pub alarms: u64,
}
