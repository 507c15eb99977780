//! `Mt5Session`, one per tenant and MT5 account: the protocol state that outlives a WebSocket connection.
//!
//! It owns the sequence numbers of both directions and the outbox of orders not yet answered by the
//! terminal. A connection attaches with `hello`; a newer connection for the same account replaces an older
//! one. When the link drops, the session stays: orders wait in the outbox, and on resume every order the
//! bridge has not received (`seq` > its `last_seq_received`) is re-sent with its original `seq`; an order the
//! bridge did receive is answered from the bridge's journal, so nothing is executed twice. Frames whose
//! `seq` is not above the last one processed are duplicates of a resume and are ignored. After a restart
//! (of this actor or of trellis) the outbox is rebuilt from the portfolio's in-flight orders.
//!
//! Silence longer than `mt5.heartbeat_timeout_ms` marks the session lost: the connection is closed and risk
//! treats the account as blind until the terminal is back.
//!
//! Crash safety (protocol version 2):
//! - Each life of this actor has an **epoch**, sent in `welcome`. When trellis restarts (or this actor is
//!   restarted) the sequence starts again from 1 under a new epoch, so a bridge never mistakes the new frames
//!   for duplicates of the old ones; a `hello` naming another epoch gets every kept order re-sent.
//! - **Acknowledged means stored.** A reliable frame (deal, order result, account, positions, history end) is
//!   followed to the portfolio by an `AckWhenStored` marker; the acknowledged seq (`heartbeat.ack`,
//!   `welcome.resume_from`) stays below the oldest frame whose records are not yet written. A kill at any
//!   instant loses nothing: the bridge still keeps what was not stored and re-sends it.
//! - **Reconciliation on every attach**: after the re-sent orders, a `history_request` for the deals since the
//!   last one booked; the portfolio books what is missing and adopts a remaining difference of positions.
//!
//! The terminal's bar history (protocol 3, issue 36): after each `welcome` the session tells the tenant's market
//! data that a terminal is linked (`TerminalLinked`) and whether its bridge serves bars (it said hello with
//! version 3 or later). Market data asks with `FetchBars`; the session puts a `bars_request` on the wire
//! (`bridge::bars` keeps them, at most a few out at once) and answers every request exactly once with
//! `BarsFetched`: the bars, or an error at once (no terminal, a version-2 bridge), when a page breaks the rules,
//! after [`BARS_TIMEOUT`], or when the link drops (bars are not kept for a resume, like ticks).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use rust_decimal::Decimal;
use tokio::sync::mpsc::UnboundedSender;
use tokio::time::Instant;

use super::messages::UnknownOrder;
use super::messages::{
    AccountLink, AccountReceived, AckWhenStored, Attach, CancelResultReceived, DealReceived,
    Detach, FrameReceived, GetInFlight, GetReconcilePoint, GetSessionState, HistoryEndReceived,
    LinkState, OrderResultReceived, Outgoing, PositionsReceived, ReconcileNeeded, RejectFrame,
    SendCancel, SendOrder, SessionState, Stored, TickReceived,
};
use super::messages::{BarsFetched, FetchBars, TerminalLinked};
use super::tenant::TenantContext;
use crate::bridge::bars::{Answer, Ask, BarsRequests, Page};
use crate::bridge::protocol::{
    encode, BarsFrame, CancelRequest, ErrorCode, ErrorFrame, HistoryRequest, Inbound, OrderRequest,
    Outbound, ServerHeartbeat, TickFrame, Welcome, BARS_PROTOCOL_VERSION, PROTOCOL_VERSION,
};
use crate::domain::orders::{action, mt5_order_type, OrderKind};
use crate::domain::{now_ms, Login, Symbol, Tick};
use crate::runtime::supervisor::{ExitNotifier, Shutdown};

/// WebSocket close code for a policy violation.
pub const CLOSE_POLICY: u16 = 1008;
/// WebSocket close code for a server going away.
pub const CLOSE_GOING_AWAY: u16 = 1001;

/// Maximum deviation (points) sent with market orders.
const DEVIATION_POINTS: u32 = 20;
/// ORDER_FILLING_IOC: the filling mode most brokers accept for market orders; bridges adapt it to the symbol.
const FILLING_IOC: u32 = 1;
/// A `bars_request` unanswered this long is answered with an error (a terminal reads its history in
/// milliseconds; this covers a slow link carrying the 200 pages of a full answer).
pub const BARS_TIMEOUT: Duration = Duration::from_secs(30);

struct Connection {
    id: u64,
    tx: UnboundedSender<Outgoing>,
    /// The protocol version this bridge said hello with (from `MIN_PROTOCOL_VERSION` to `PROTOCOL_VERSION`).
    version: u32,
}

struct OutboxEntry {
    client_order_id: String,
    /// A `cancel_request` for that order rather than the order itself: each leaves the outbox on its own
    /// answer (`cancel_result` or `order_result`).
    cancel: bool,
    text: String,
}

pub struct Mt5Session {
    tenant: Arc<TenantContext>,
    login: Login,
    session_id: String,
    /// This life of the sequence (`welcome.epoch`): new whenever `out_seq` starts again from 0.
    epoch: u64,
    conn: Option<Connection>,
    link: LinkState,
    /// Highest terminal seq processed.
    in_seq: u64,
    /// Reliable terminal frames handed to the portfolio whose records are not stored yet.
    unstored: BTreeSet<u64>,
    /// The portfolio those frames went to: if it dies before storing them, their acknowledgements never
    /// come, and the bridge is asked to reconnect and re-send them.
    unstored_at: Option<Addr<super::portfolio::Portfolio>>,
    /// The history request awaiting its `history_end`, if any.
    history_pending: Option<u64>,
    history_requests: u64,
    /// Last seq trellis used.
    out_seq: u64,
    outbox: BTreeMap<u64, OutboxEntry>,
    last_heard: Instant,
    /// When the frame being handled was read off the socket (stage timings).
    frame_read_at: std::time::Instant,
    duplicates: u64,
    /// Highest trellis seq the bridge says it processed (heartbeat `ack`). Orders stay in the outbox until
    /// their result arrives regardless: an acknowledged order is answered from the bridge's journal.
    bridge_ack: u64,
    /// The terminal's last tick time, from its heartbeats: a live link with a stalled feed shows here.
    last_tick_msc: Option<i64>,
    /// Market data's requests for the terminal's bars, on the wire or waiting for their turn.
    bars: BarsRequests,
    notifier: ExitNotifier,
}

impl Mt5Session {
    pub fn new(tenant: Arc<TenantContext>, login: Login, notifier: ExitNotifier) -> Self {
        let epoch = new_epoch();
        Self {
            session_id: format!("{}-{}-{}", tenant.id, login, uuid::Uuid::new_v4().simple()),
            epoch,
            // Wire ids unique across lives, like history requests: a page of an earlier life matches nothing.
            bars: BarsRequests::new(epoch),
            tenant,
            login,
            conn: None,
            link: LinkState::Disconnected,
            in_seq: 0,
            unstored: BTreeSet::new(),
            unstored_at: None,
            history_pending: None,
            history_requests: 0,
            out_seq: 0,
            outbox: BTreeMap::new(),
            last_heard: Instant::now(),
            frame_read_at: std::time::Instant::now(),
            duplicates: 0,
            bridge_ack: 0,
            last_tick_msc: None,
            notifier,
        }
    }

    /// The highest terminal seq trellis acknowledges: every reliable frame up to it is stored.
    fn acknowledged(&self) -> u64 {
        match self.unstored.first() {
            Some(first) => first - 1,
            None => self.in_seq,
        }
    }

    /// Asks the terminal for the deals since the last one booked (one request at a time).
    fn request_history(&mut self, ctx: &mut Context<Self>) {
        if self.conn.is_none() || self.history_pending.is_some() {
            return;
        }
        let Some(portfolio) = self.tenant.portfolio.get() else {
            return;
        };
        self.history_requests += 1;
        // Unique across lives too: a bridge re-sends a kept `history_end` of an earlier life after a
        // restart, and its stale positions must not be taken for the answer to this request.
        let request_id = self.epoch + self.history_requests;
        self.history_pending = Some(request_id);
        let account = self.login;
        ctx.spawn(
            portfolio
                .send(GetReconcilePoint { account })
                .into_actor(self)
                .map(move |point, act, _| {
                    let Ok(point) = point else {
                        act.history_pending = None;
                        return;
                    };
                    if act.history_pending != Some(request_id) {
                        return;
                    }
                    let seq = act.next_seq();
                    tracing::info!(tenant = %act.tenant.id, account = %act.login, request_id,
                        from_msc = point.from_msc, after_ticket = point.after_ticket, "asking the terminal for its deals");
                    act.send(encode(&Outbound::HistoryRequest(HistoryRequest {
                        seq,
                        request_id,
                        from_msc: point.from_msc,
                        after_ticket: point.after_ticket,
                    })));
                }),
        );
    }

    fn next_seq(&mut self) -> u64 {
        self.out_seq += 1;
        self.out_seq
    }

    fn send(&self, text: String) {
        if let Some(c) = &self.conn {
            let _ = c.tx.send(Outgoing::Text(text));
        }
    }

    fn send_error(&mut self, code: ErrorCode, message: String, ref_seq: Option<u64>, fatal: bool) {
        self.tenant.metrics.protocol_error(code.as_str());
        let seq = self.next_seq();
        self.send(encode(&Outbound::Error(ErrorFrame {
            seq,
            code: code.as_str().to_owned(),
            message,
            ref_seq,
            fatal,
        })));
    }

    fn set_link(&mut self, state: LinkState) {
        if self.link == state {
            return;
        }
        self.link = state;
        tracing::info!(tenant = %self.tenant.id, account = %self.login, link = ?state, "mt5 link");
        if let Some(risk) = self.tenant.risk.get() {
            risk.do_send(AccountLink {
                account: self.login,
                state,
            });
        }
    }

    fn close(&mut self, code: u16, reason: &str) {
        if let Some(c) = self.conn.take() {
            let _ = c.tx.send(Outgoing::Close(code, reason.to_owned()));
            self.tenant.metrics.session_closed();
        }
        self.fail_bars(&format!("the terminal's link closed ({reason})"));
    }

    /// Answers every bar request, out or waiting: the link they were asked on is gone, and bars are not
    /// re-sent on a resume.
    fn fail_bars(&mut self, why: &str) {
        for answer in self.bars.fail_all(why) {
            self.answer_bars(answer);
        }
    }

    fn answer_bars(&self, a: Answer) {
        match &a.error {
            Some(error) => {
                tracing::info!(tenant = %self.tenant.id, account = %self.login, request_id = a.request_id,
                symbol = %a.symbol, timeframe = %a.timeframe, %error, "no bars from the terminal")
            }
            None => {
                tracing::debug!(tenant = %self.tenant.id, account = %self.login, request_id = a.request_id,
                symbol = %a.symbol, timeframe = %a.timeframe, bars = a.bars.len(), forming = a.forming.is_some(),
                "bars from the terminal")
            }
        }
        if let Some(md) = self.tenant.market_data.get() {
            md.do_send(BarsFetched {
                request_id: a.request_id,
                symbol: a.symbol,
                timeframe: a.timeframe,
                bars: a.bars,
                forming: a.forming,
                error: a.error,
            });
        }
    }

    /// Puts the bar requests whose turn it is on the wire, each with its deadline.
    fn start_bars(&mut self, ctx: &mut Context<Self>) {
        for mut req in self.bars.start() {
            req.seq = self.next_seq();
            let id = req.request_id;
            tracing::debug!(tenant = %self.tenant.id, account = %self.login, request_id = id, symbol = %req.symbol,
                timeframe = %req.timeframe, from_msc = req.from_msc, to_msc = req.to_msc, "asking the terminal for bars");
            self.send(encode(&Outbound::BarsRequest(req)));
            ctx.run_later(BARS_TIMEOUT, move |act, ctx| {
                let why = format!(
                    "the terminal did not answer within {} s",
                    BARS_TIMEOUT.as_secs()
                );
                if let Some(answer) = act.bars.expire(id, why) {
                    act.answer_bars(answer);
                    act.start_bars(ctx);
                }
            });
        }
    }

    fn on_bars(&mut self, seq: u64, frame: BarsFrame, ctx: &mut Context<Self>) {
        let id = frame.request_id;
        match self.bars.page(frame) {
            Page::Partial => {}
            Page::Done(answer) => {
                self.answer_bars(answer);
                self.start_bars(ctx);
            }
            Page::Refused { answer, why } => {
                self.send_error(ErrorCode::InvalidValue, why, Some(seq), false);
                self.answer_bars(answer);
                self.start_bars(ctx);
            }
            Page::Unknown => {
                tracing::debug!(tenant = %self.tenant.id, account = %self.login, request_id = id,
                    "bars for no request out (late, after its deadline): ignored");
            }
        }
    }

    fn enqueue_order(&mut self, o: SendOrder) -> u64 {
        // The same order can reach the outbox twice (restored from the store while the portfolio releases
        // it): it is sent once.
        if let Some((seq, _)) = self
            .outbox
            .iter()
            .find(|(_, e)| !e.cancel && e.client_order_id == o.client_order_id)
        {
            return *seq;
        }
        let seq = self.next_seq();
        let (action, price) = match (o.kind, o.price) {
            (OrderKind::Market, _) => (action::DEAL, Decimal::ZERO),
            (_, Some(p)) => (action::PENDING, p),
            (_, None) => (action::PENDING, Decimal::ZERO),
        };
        let mut comment = o.client_order_id.clone();
        comment.truncate(31);
        let frame = Outbound::OrderRequest(OrderRequest {
            seq,
            client_order_id: o.client_order_id.clone(),
            action,
            symbol: o.symbol.into_string(),
            order_type: mt5_order_type(o.side, o.kind),
            volume: o.volume,
            price,
            sl: Decimal::ZERO,
            tp: Decimal::ZERO,
            deviation: DEVIATION_POINTS,
            magic: o.magic,
            comment,
            type_filling: FILLING_IOC,
            type_time: 0,
            position: o.position,
        });
        let text = encode(&frame);
        self.send(text.clone());
        if let Some(origin) = o.origin {
            self.tenant
                .metrics
                .stage(crate::metrics::Stage::Send, origin);
        }
        self.outbox.insert(
            seq,
            OutboxEntry {
                client_order_id: o.client_order_id,
                cancel: false,
                text,
            },
        );
        seq
    }

    /// Queues a `cancel_request` (once per order while unanswered); like an order it waits in the outbox
    /// through a dropped link and is re-sent on resume. The outbox of a restarted session does not hold it:
    /// a cancel is asked again by its client, never replayed from the store.
    fn enqueue_cancel(&mut self, c: SendCancel) -> u64 {
        if let Some((seq, _)) = self
            .outbox
            .iter()
            .find(|(_, e)| e.cancel && e.client_order_id == c.client_order_id)
        {
            return *seq;
        }
        let seq = self.next_seq();
        let text = encode(&Outbound::CancelRequest(CancelRequest {
            seq,
            client_order_id: c.client_order_id.clone(),
            order: c.order,
        }));
        self.send(text.clone());
        self.outbox.insert(
            seq,
            OutboxEntry {
                client_order_id: c.client_order_id,
                cancel: true,
                text,
            },
        );
        seq
    }

    fn on_tick(&mut self, f: TickFrame) {
        if !self.tenant.symbols.contains(&f.symbol) {
            return self.send_error(
                ErrorCode::UnknownSymbol,
                format!("`{}` is not one of this tenant's symbols", f.symbol),
                Some(f.seq),
                false,
            );
        }
        if f.bid <= Decimal::ZERO || f.ask < f.bid {
            return self.send_error(
                ErrorCode::InvalidValue,
                format!(
                    "tick {}: bid must be positive and not above ask (bid {}, ask {})",
                    f.symbol, f.bid, f.ask
                ),
                Some(f.seq),
                false,
            );
        }
        if let Some(md) = self.tenant.market_data.get() {
            self.tenant
                .metrics
                .stage(crate::metrics::Stage::Decode, self.frame_read_at);
            let tick = TickReceived(
                Tick {
                    symbol: Symbol::new(f.symbol),
                    time_msc: f.time_msc,
                    bid: f.bid,
                    ask: f.ask,
                },
                self.frame_read_at,
            );
            // Ticks may be shed under pressure (the latest price is what matters); a full mailbox sheds this one.
            if md.try_send(tick).is_err() {
                self.tenant.metrics.tick_dropped("conflated");
            }
        }
    }

    fn handle_frame(&mut self, frame: Inbound, ctx: &mut Context<Self>) {
        let seq = frame.seq();
        if seq <= self.in_seq {
            self.duplicates += 1;
            return;
        }
        self.in_seq = seq;
        let portfolio = self.tenant.portfolio.get();
        let reliable = frame.is_reliable();
        if reliable {
            self.unstored.insert(seq);
        }
        self.dispatch_frame(seq, frame, portfolio.as_ref(), ctx);
        if reliable {
            // Behind the frame's own message in the portfolio's mailbox, so behind the writes it causes. A
            // frame refused here (wrong login) is acknowledged once the writes before it are stored.
            if let Some(p) = portfolio {
                self.unstored_at = Some(p.clone());
                p.do_send(AckWhenStored {
                    session: ctx.address().recipient(),
                    seq,
                });
            }
        }
    }

    fn dispatch_frame(
        &mut self,
        seq: u64,
        frame: Inbound,
        portfolio: Option<&Addr<super::portfolio::Portfolio>>,
        ctx: &mut Context<Self>,
    ) {
        match frame {
            Inbound::Tick(f) => self.on_tick(f),
            Inbound::Heartbeat(h) => {
                if let Some(ack) = h.ack {
                    self.bridge_ack = self.bridge_ack.max(ack);
                }
                self.last_tick_msc = h.last_tick_msc.or(self.last_tick_msc);
            }
            Inbound::Account(a) => {
                if a.login != self.login.get() {
                    return self.send_error(
                        ErrorCode::InvalidValue,
                        format!(
                            "account {} reported on the session of account {}",
                            a.login, self.login
                        ),
                        Some(seq),
                        false,
                    );
                }
                if let Some(p) = portfolio {
                    p.do_send(AccountReceived(a));
                }
            }
            Inbound::Positions(frame) => {
                if let Some(p) = portfolio {
                    p.do_send(PositionsReceived {
                        account: self.login,
                        frame,
                    });
                }
            }
            Inbound::Deal(frame) => {
                if let Some(p) = portfolio {
                    p.do_send(DealReceived {
                        account: self.login,
                        frame,
                    });
                }
            }
            Inbound::OrderResult(frame) => {
                let coid = frame.client_order_id.clone();
                self.outbox
                    .retain(|_, e| e.cancel || e.client_order_id != coid);
                if let Some(p) = portfolio {
                    let account = self.login;
                    self.forward_result(seq, p.send(OrderResultReceived { account, frame }), ctx);
                }
            }
            Inbound::CancelResult(frame) => {
                let coid = frame.client_order_id.clone();
                self.outbox
                    .retain(|_, e| !e.cancel || e.client_order_id != coid);
                if let Some(p) = portfolio {
                    self.forward_result(seq, p.send(CancelResultReceived { frame }), ctx);
                }
            }
            Inbound::HistoryEnd(frame) => {
                let current = self.history_pending == Some(frame.request_id);
                if current {
                    self.history_pending = None;
                }
                if let Some(p) = portfolio {
                    p.do_send(HistoryEndReceived {
                        account: self.login,
                        frame,
                        current,
                    });
                }
            }
            Inbound::Bars(frame) => self.on_bars(seq, frame, ctx),
            Inbound::Hello(_) => self.send_error(
                ErrorCode::DuplicateHello,
                "this connection already said hello".into(),
                Some(seq),
                false,
            ),
        }
    }

    /// Waits for the portfolio to apply a trade server answer; one for an order it does not know is refused
    /// to the bridge (`unknown_order`).
    fn forward_result(
        &mut self,
        seq: u64,
        applied: impl std::future::Future<Output = Result<Result<(), UnknownOrder>, MailboxError>>
            + 'static,
        ctx: &mut Context<Self>,
    ) {
        ctx.spawn(applied.into_actor(self).map(move |res, act, _ctx| {
            if let Ok(Err(unknown)) = res {
                act.send_error(
                    ErrorCode::UnknownOrder,
                    unknown.to_string(),
                    Some(seq),
                    false,
                );
            }
        }));
    }

    fn check_heartbeat(&mut self) {
        if self.conn.is_none() {
            return;
        }
        let portfolio_died = self
            .unstored_at
            .as_ref()
            .is_some_and(|p| !self.unstored.is_empty() && !p.connected());
        if portfolio_died {
            // Those frames' records may never be written: resume from what is stored, so the bridge re-sends
            // them to the restarted portfolio.
            tracing::warn!(tenant = %self.tenant.id, account = %self.login, unstored = self.unstored.len(),
                "the portfolio restarted before storing frames: asking the bridge to resume");
            self.set_link(LinkState::Disconnected);
            self.send_error(
                ErrorCode::ShuttingDown,
                "the session is resynchronising: reconnect".into(),
                None,
                true,
            );
            self.close(CLOSE_GOING_AWAY, "resynchronising");
            return;
        }
        let timeout = Duration::from_millis(self.tenant.mt5.heartbeat_timeout_ms);
        if self.last_heard.elapsed() > timeout {
            tracing::warn!(tenant = %self.tenant.id, account = %self.login, "heartbeats missed: session lost");
            // Risk hears of it before the terminal does: once the connection is seen closed, the account
            // is already blind.
            self.set_link(LinkState::Lost);
            self.send_error(
                ErrorCode::HeartbeatTimeout,
                format!("nothing received for {} ms", timeout.as_millis()),
                None,
                true,
            );
            self.close(CLOSE_POLICY, "heartbeat timeout");
            return;
        }
        let seq = self.next_seq();
        let ack = self.acknowledged();
        self.send(encode(&Outbound::Heartbeat(ServerHeartbeat {
            seq,
            time_msc: now_ms(),
            ack,
        })));
    }
}

impl Actor for Mt5Session {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(4_096);
        let interval = Duration::from_millis(self.tenant.mt5.heartbeat_interval_ms);
        ctx.run_interval(interval, |act, _| act.check_heartbeat());
        let Some(portfolio) = self.tenant.portfolio.get() else {
            return;
        };
        ctx.wait(portfolio.send(GetInFlight { account: self.login }).into_actor(self).map(|res, act, _| {
            for order in res.unwrap_or_default() {
                tracing::info!(tenant = %act.tenant.id, account = %act.login, client_order_id = %order.client_order_id,
                    "order in flight: queued for re-sending");
                act.enqueue_order(SendOrder {
                    origin: None,
                    magic: super::portfolio::magic(order.strategy_id.as_deref()),
                    client_order_id: order.client_order_id,
                    symbol: order.symbol,
                    side: order.side,
                    kind: order.kind,
                    volume: order.volume,
                    price: order.price,
                    position: 0,
                });
            }
        }));
    }

    fn stopped(&mut self, _ctx: &mut Self::Context) {
        self.close(CLOSE_GOING_AWAY, "session stopped");
        self.fail_bars("the account's session stopped");
        self.notifier.mark_stopped();
    }
}

impl Handler<Attach> for Mt5Session {
    type Result = MessageResult<Attach>;

    fn handle(&mut self, a: Attach, ctx: &mut Self::Context) -> Self::Result {
        if self.conn.is_some() {
            self.send_error(
                ErrorCode::SessionReplaced,
                "a newer connection for this account took over".into(),
                None,
                true,
            );
            self.close(CLOSE_POLICY, "session replaced");
        }
        let version = a.hello.protocol_version.min(PROTOCOL_VERSION);
        self.conn = Some(Connection {
            id: a.conn_id,
            tx: a.tx,
            version,
        });
        self.tenant.metrics.session_opened();
        self.last_heard = Instant::now();
        // Resume from what is stored: frames processed but not yet written come again and are recognised
        // (deal tickets, order results); their earlier processing may still finish, harmlessly.
        self.in_seq = self.acknowledged();
        self.unstored.clear();
        self.unstored_at = None;
        self.history_pending = None;
        let seq = self.next_seq();
        let mut symbols: Vec<String> = self.tenant.symbols.iter().cloned().collect();
        symbols.sort();
        let welcome = Welcome {
            seq,
            session_id: self.session_id.clone(),
            epoch: self.epoch,
            // The version spoken on this connection: the bridge's (the handshake refused any other).
            protocol_version: version,
            resume_from: self.in_seq,
            heartbeat_interval_ms: self.tenant.mt5.heartbeat_interval_ms,
            symbols,
        };
        self.send(encode(&Outbound::Welcome(welcome.clone())));
        // The bridge's last_seq_received counts in our epoch only; from an earlier life it means nothing.
        let received = if a.hello.epoch == self.epoch {
            a.hello.last_seq_received
        } else {
            0
        };
        // Every kept frame after `received`, without `received + 1`, which overflows on a hostile u64::MAX.
        let resend: Vec<String> = self
            .outbox
            .range((
                std::ops::Bound::Excluded(received),
                std::ops::Bound::Unbounded,
            ))
            .map(|(_, e)| e.text.clone())
            .collect();
        if !resend.is_empty() {
            tracing::info!(tenant = %self.tenant.id, account = %self.login, orders = resend.len(), "re-sending orders after resume");
        }
        for text in resend {
            self.send(text);
        }
        tracing::info!(tenant = %self.tenant.id, account = %self.login, server = %a.hello.server, epoch = self.epoch,
            bridge_epoch = a.hello.epoch, resume_from = self.in_seq, last_seq_received = a.hello.last_seq_received,
            "mt5 session attached");
        self.set_link(LinkState::Connected);
        self.request_history(ctx);
        if let Some(md) = self.tenant.market_data.get() {
            md.do_send(TerminalLinked {
                login: self.login,
                serves_bars: version >= BARS_PROTOCOL_VERSION,
                session: ctx.address().recipient(),
            });
        }
        MessageResult(welcome)
    }
}

impl Handler<Detach> for Mt5Session {
    type Result = ();

    fn handle(&mut self, d: Detach, _ctx: &mut Self::Context) {
        if self.conn.as_ref().map(|c| c.id) == Some(d.conn_id) {
            self.conn = None;
            self.tenant.metrics.session_closed();
            if self.link == LinkState::Connected {
                self.set_link(LinkState::Disconnected);
            }
            self.fail_bars("the terminal disconnected");
        }
    }
}

impl Handler<FrameReceived> for Mt5Session {
    type Result = ();

    fn handle(&mut self, f: FrameReceived, ctx: &mut Self::Context) {
        if self.conn.as_ref().map(|c| c.id) != Some(f.conn_id) {
            return; // from a connection that was replaced
        }
        self.last_heard = Instant::now();
        self.frame_read_at = f.read_at;
        self.handle_frame(f.frame, ctx);
    }
}

impl Handler<RejectFrame> for Mt5Session {
    type Result = ();

    fn handle(&mut self, r: RejectFrame, _ctx: &mut Self::Context) {
        if self.conn.as_ref().map(|c| c.id) == Some(r.conn_id) {
            self.last_heard = Instant::now();
            self.send_error(r.code, r.message, r.ref_seq, false);
        }
    }
}

impl Handler<SendOrder> for Mt5Session {
    type Result = MessageResult<SendOrder>;

    fn handle(&mut self, o: SendOrder, _ctx: &mut Self::Context) -> Self::Result {
        MessageResult(self.enqueue_order(o))
    }
}

impl Handler<FetchBars> for Mt5Session {
    type Result = ();

    fn handle(&mut self, f: FetchBars, ctx: &mut Self::Context) {
        let ask = Ask {
            request_id: f.request_id,
            symbol: f.symbol,
            timeframe: f.timeframe,
            from_ms: f.from_ms,
            to_ms: f.to_ms,
            count: f.count,
        };
        let refused = match self.conn.as_ref().map(|c| c.version) {
            None => Some(format!(
                "the terminal of account {} is not connected",
                self.login
            )),
            Some(v) if v < BARS_PROTOCOL_VERSION => Some(format!(
                "the bridge of account {} speaks protocol {v}, which has no bars_request (version \
                 {BARS_PROTOCOL_VERSION} has)",
                self.login
            )),
            Some(_) => None,
        };
        let result = match refused {
            Some(why) => Err(Box::new(Answer {
                request_id: ask.request_id,
                symbol: ask.symbol,
                timeframe: ask.timeframe,
                bars: Vec::new(),
                forming: None,
                error: Some(why),
            })),
            None => self.bars.ask(ask),
        };
        match result {
            Ok(()) => self.start_bars(ctx),
            Err(answer) => self.answer_bars(*answer),
        }
    }
}

impl Handler<SendCancel> for Mt5Session {
    type Result = MessageResult<SendCancel>;

    fn handle(&mut self, c: SendCancel, _ctx: &mut Self::Context) -> Self::Result {
        MessageResult(self.enqueue_cancel(c))
    }
}

impl Handler<GetSessionState> for Mt5Session {
    type Result = MessageResult<GetSessionState>;

    fn handle(&mut self, _: GetSessionState, _ctx: &mut Self::Context) -> Self::Result {
        MessageResult(SessionState {
            login: self.login,
            link: self.link,
            last_seq_received: self.in_seq,
            last_seq_sent: self.out_seq,
            outbox: self
                .outbox
                .values()
                .map(|e| match e.cancel {
                    true => format!("cancel:{}", e.client_order_id),
                    false => e.client_order_id.clone(),
                })
                .collect(),
            duplicates_ignored: self.duplicates,
            bridge_ack: self.bridge_ack,
            epoch: self.epoch,
            acknowledged: self.acknowledged(),
            history_requests: self.history_requests,
            last_tick_msc: self.last_tick_msc,
        })
    }
}

impl Handler<Stored> for Mt5Session {
    type Result = ();

    fn handle(&mut self, msg: Stored, _ctx: &mut Self::Context) {
        self.unstored.remove(&msg.seq);
    }
}

impl Handler<ReconcileNeeded> for Mt5Session {
    type Result = ();

    fn handle(&mut self, _msg: ReconcileNeeded, ctx: &mut Self::Context) {
        self.request_history(ctx);
    }
}

/// A fresh epoch: microseconds since the Unix epoch (below 2^53, exact in every JSON reader), so two lives of
/// a session on any node differ, and a later life has a larger epoch unless the clock went back.
fn new_epoch() -> u64 {
    static LAST: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(1);
    // Two sessions created in the same microsecond still get different epochs.
    let mut prev = LAST.load(std::sync::atomic::Ordering::Relaxed);
    loop {
        let next = now.max(prev + 1);
        match LAST.compare_exchange_weak(
            prev,
            next,
            std::sync::atomic::Ordering::Relaxed,
            std::sync::atomic::Ordering::Relaxed,
        ) {
            Ok(_) => return next,
            Err(p) => prev = p,
        }
    }
}

impl Handler<Shutdown> for Mt5Session {
    type Result = ();

    fn handle(&mut self, msg: Shutdown, ctx: &mut Self::Context) {
        self.send_error(ErrorCode::ShuttingDown, msg.reason.clone(), None, true);
        self.close(CLOSE_GOING_AWAY, &msg.reason);
        ctx.stop();
    }
}

impl Handler<super::messages::Disconnect> for Mt5Session {
    type Result = ();

    fn handle(&mut self, msg: super::messages::Disconnect, _ctx: &mut Self::Context) {
        if self.conn.is_some() {
            self.set_link(LinkState::Disconnected);
            self.send_error(ErrorCode::BadApiKey, msg.reason.clone(), None, true);
            self.close(CLOSE_POLICY, &msg.reason);
        }
    }
}
