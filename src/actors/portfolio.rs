//! `Portfolio`, one per tenant: the order manager and the books.
//!
//! The decisions and the bookkeeping are `domain::ledger::Ledger` (the backtester runs the same code). This
//! actor asks `Risk` about each planned order, hands approved orders to the account's `Mt5Session`, feeds
//! results and deals from the terminal into the ledger, and tells risk and strategies what changed.
//!
//! Durability: orders and deals are written through the relational store in the order they happened; a
//! write that fails for a retryable reason stays queued and is retried, so nothing accepted is lost while the
//! store restarts. On start the actor reloads every order and deal of the tenant and replays the deals, so
//! positions and PnL come back exactly; a deal re-sent by a terminal is recognised by its ticket.
//!
//! Crash safety: an order is written **before** it goes to the terminal (the queue releases it to the session
//! once its write is done), so after any crash every order the terminal may have is known and is re-sent from
//! the store, answered from the bridge's journal. A bridge frame's acknowledgement marker (`AckWhenStored`)
//! joins the same queue, so the session acknowledges a frame only when what it caused is stored.
//!
//! Reconciliation: a deal of no known order (a trade made by hand at the terminal) is booked to the account as
//! external, audited and published. The terminal's positions are compared with the book; a difference asks the
//! session for the terminal's recent deals, and one that remains after them (`history_end`) is adopted as a
//! reconciliation deal — stored, audited, published — so risk and the books continue from the real position.

use std::collections::{HashMap, VecDeque};

use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use rust_decimal::Decimal;

use super::messages::{
    AccountLink, AccountPosition, AccountReceived, AckWhenStored, CancelManualOrder,
    CancelResultReceived, CheckOrder, DealReceived, Flatten, GetInFlight, GetPortfolio,
    GetReconcilePoint, HistoryEndReceived, ManualOrderPlaced, ManualOrderRefused, OrderFacts,
    OrderResultReceived, PlaceManualOrder, PnlUpdated, PortfolioSnapshot, PositionsReceived,
    ReconcileNeeded, ReconcilePoint, SendCancel, SendOrder, Signal, Stored, StrategyFilled,
    UnknownOrder,
};
use super::tenant::TenantContext;
use crate::bridge::protocol::PositionItem;
use crate::domain::events::EventKind;
use crate::domain::ledger::{Ledger, OrderResult, ResultOutcome};
use crate::domain::orders::{Order, OrderKind, OrderStatus, TransitionError};
use crate::domain::positions::{AccountMode, Deal};
use crate::domain::{now_ms, Login, Symbol};
use crate::metrics::Stage;
use crate::runtime::supervisor::{ExitNotifier, Shutdown};
use crate::storage::cache::CachePositions;
use crate::storage::relational::{LoadTenantBook, SaveDeal, SaveOrder};
use crate::storage::timeseries::AppendFills;
use crate::storage::StorageError;

const MARK_EVERY: Duration = Duration::from_secs(1);
const RETRY_WRITES_EVERY: Duration = Duration::from_millis(200);

/// `from_msc` of a history request that wants no deals (2^53 − 1, exact in every JSON reader).
const NO_DEALS_MSC: i64 = (1 << 53) - 1;

/// The write queue, in order. `Release` and `Ack` are markers, not writes: they take effect once every write
/// queued before them is stored.
enum Write {
    Order(u64, Order),
    Deal(Deal),
    /// Hand an order to its account's session (written just before it). The session is looked up when the
    /// marker is reached: one that restarted meanwhile is the one to send it.
    Release(Login, SendOrder),
    /// Tell a session that a bridge frame's records are stored.
    Ack(Recipient<Stored>, u64),
}

/// What the API reads of a tenant's portfolio (orders, fills, positions, performance), asked of the actor at
/// most once every [`PortfolioReads::MAX_AGE`] and shared by every request meanwhile.
///
/// Why: a snapshot clones the whole book and computes the performance figures on the portfolio's thread —
/// the trading thread. Asked once per request, 500 API requests a second more than tripled tick → order p99
/// (`trellis bench beside`, BENCHMARKS.md). A read is therefore at most `MAX_AGE` old, except that a change
/// made through the API (a manual order, a cancel, a flatten) marks the snapshot stale, so the caller's next
/// read shows it.
#[derive(Default)]
pub struct PortfolioReads {
    latest: tokio::sync::Mutex<Option<(std::time::Instant, Arc<PortfolioSnapshot>)>>,
    stale: std::sync::atomic::AtomicBool,
}

impl PortfolioReads {
    pub const MAX_AGE: Duration = Duration::from_millis(50);

    /// A change was made through the API: the next read asks the actor.
    pub fn invalidate(&self) {
        self.stale.store(true, std::sync::atomic::Ordering::Release);
    }

    /// The latest snapshot, asked of `portfolio` when the one held is older than `MAX_AGE` or stale. Readers
    /// that arrive while one asks wait for its answer rather than asking again.
    pub async fn get(
        &self,
        portfolio: &Addr<Portfolio>,
    ) -> Result<Arc<PortfolioSnapshot>, MailboxError> {
        let mut latest = self.latest.lock().await;
        if let Some((at, snapshot)) = &*latest {
            if at.elapsed() < Self::MAX_AGE
                && !self.stale.load(std::sync::atomic::Ordering::Acquire)
            {
                return Ok(snapshot.clone());
            }
        }
        // Cleared before asking: a change made while the actor answers marks the answer stale again.
        self.stale
            .store(false, std::sync::atomic::Ordering::Release);
        let asked = std::time::Instant::now();
        let snapshot = Arc::new(portfolio.send(GetPortfolio).await?);
        *latest = Some((asked, snapshot.clone()));
        Ok(snapshot)
    }
}

pub struct Portfolio {
    tenant: Arc<TenantContext>,
    ledger: Ledger,
    writes: VecDeque<Write>,
    writing: bool,
    /// True while no write is in flight: shutdown waits for it before flushing the queue in order.
    idle: tokio::sync::watch::Sender<bool>,
    /// Shutting down: no new write starts on its own.
    stopping: bool,
    notifier: ExitNotifier,
}

impl Portfolio {
    pub fn new(tenant: Arc<TenantContext>, notifier: ExitNotifier) -> Self {
        Self {
            tenant,
            ledger: Ledger::new(),
            writes: VecDeque::new(),
            writing: false,
            idle: tokio::sync::watch::Sender::new(true),
            stopping: false,
            notifier,
        }
    }

    fn contract(&self, symbol: &Symbol) -> Decimal {
        self.tenant.contract_size(symbol.as_str())
    }

    /// Stores what a trade server answer (`what`: an order's or a cancel's result) did to its order.
    fn store_outcome(
        &mut self,
        outcome: ResultOutcome,
        result: &OrderResult,
        what: &str,
        ctx: &mut Context<Self>,
    ) -> Result<(), UnknownOrder> {
        match outcome {
            ResultOutcome::Unknown => Err(UnknownOrder(result.client_order_id.clone())),
            ResultOutcome::Duplicate => Ok(()),
            ResultOutcome::Updated {
                seq,
                order,
                transition_error,
            } => {
                if let Some(e) = transition_error {
                    self.illegal(&e);
                    tracing::warn!(tenant = %self.tenant.id, error = %e, "{what} out of sequence");
                }
                if order.status == OrderStatus::Rejected {
                    self.tenant.metrics.order("rejected_by_terminal");
                    tracing::warn!(tenant = %self.tenant.id, client_order_id = %order.client_order_id,
                        retcode = result.retcode, comment = %result.comment, "order rejected by the trade server");
                } else {
                    // Per order: DEBUG (the order's record is in the store and the trade log).
                    tracing::debug!(tenant = %self.tenant.id, client_order_id = %order.client_order_id,
                        retcode = result.retcode, status = order.status.as_str(), "{what} from the trade server");
                }
                self.persist(Write::Order(seq, *order), ctx);
                Ok(())
            }
        }
    }

    fn pnl(&self) -> (Decimal, Decimal, Decimal) {
        let quotes = self.tenant.quotes.read();
        let quote = |s: &Symbol| quotes.get(s).map(|q| (q.bid, q.ask));
        self.ledger.pnl(quote, |s| self.contract(s))
    }

    fn mark(&mut self) {
        self.publish_pnl();
        let (realised, unrealised, commission) = self.pnl();
        let at_ms = now_ms();
        self.ledger
            .curve
            .mark(at_ms, realised + unrealised - commission);
        if let Some(risk) = self.tenant.risk.get() {
            risk.do_send(PnlUpdated {
                at_ms,
                realised,
                unrealised,
                commission,
            });
        }
    }

    /// Every order change and fill is stored, in order, and published to the tenant's clients.
    fn persist(&mut self, write: Write, ctx: &mut Context<Self>) {
        self.publish(&write);
        self.writes.push_back(write);
        self.drain_writes(ctx);
    }

    fn publish(&self, write: &Write) {
        let (kind, data) = match write {
            Write::Order(_, order) => (EventKind::Order, serde_json::to_value(order)),
            Write::Deal(deal) => (EventKind::Fill, serde_json::to_value(deal)),
            Write::Release(..) | Write::Ack(..) => return,
        };
        if let Ok(data) = data {
            self.tenant.publish(kind, data);
        }
        if let Write::Deal(deal) = write {
            self.publish_positions(deal.account, &deal.fill.symbol);
        }
    }

    /// The account's positions in `symbol` after a deal, one `position` event each; a closed position is
    /// published with volume 0, so a client keyed by account and symbol removes it.
    fn publish_positions(&self, account: Login, symbol: &Symbol) {
        let mut open: Vec<AccountPosition> = self
            .ledger
            .positions()
            .into_iter()
            .filter(|(login, p)| *login == account && &p.symbol == symbol)
            .map(|(account, position)| AccountPosition { account, position })
            .collect();
        if open.is_empty() {
            open.push(AccountPosition {
                account,
                position: crate::domain::positions::Position {
                    position_id: 0,
                    symbol: symbol.clone(),
                    side: crate::domain::Side::Buy,
                    volume: Decimal::ZERO,
                    price_open: Decimal::ZERO,
                },
            });
        }
        for p in open {
            if let Ok(data) = serde_json::to_value(&p) {
                self.tenant.publish(EventKind::Position, data);
            }
        }
    }

    /// The PnL at the latest quotes, for trading clients (`pnl` channel): after every deal and once a second.
    fn publish_pnl(&self) {
        let (realised, unrealised, commission) = self.pnl();
        self.tenant.feed.set_pnl(super::feed::PnlView {
            realised,
            unrealised,
            commission,
            equity: realised + unrealised - commission,
            at_ms: now_ms(),
        });
    }

    /// Hands a stored order to its account's session. With no live session the order stays in flight: the
    /// account's next session rebuilds its outbox from the book.
    fn release(&self, account: Login, order: SendOrder) {
        if let Some(session) = self.tenant.session_of(account) {
            session.do_send(order);
        }
    }

    /// Writes a new order and then releases it to its session. The write goes straight to the store, beside
    /// the queue, so a new order never waits behind fills being written: an order's later states may be
    /// stored before this one lands, and the store keeps the most recent (`updated_ms`). If the store cannot
    /// take it now, the order joins the queue with its release behind it.
    fn write_ahead(&mut self, seq: u64, order: Order, send: SendOrder, ctx: &mut Context<Self>) {
        let account = order.account;
        let write = Write::Order(seq, order.clone());
        self.publish(&write);
        let store = self.tenant.relational.clone();
        if self.stopping || !store.is_live() {
            self.writes.push_back(write);
            self.writes.push_back(Write::Release(account, send));
            return self.drain_writes(ctx);
        }
        let msg = SaveOrder {
            tenant: self.tenant.id.0.clone(),
            seq,
            order,
            fence: self.tenant.fence,
        };
        ctx.spawn(async move { store.save_order(msg).await }.into_actor(self).map(
            move |result, act, ctx| match result {
                Ok(()) => {
                    if let Some(origin) = send.origin {
                        act.tenant.metrics.stage(Stage::WriteAhead, origin);
                    }
                    if !act.stopping {
                        act.release(account, send);
                    }
                }
                Err(e @ StorageError::Fenced(_)) => act.fenced(&e),
                Err(e) => {
                    tracing::warn!(tenant = %act.tenant.id, error = %e, "order not stored yet: queued, not sent");
                    act.writes.push_back(write);
                    act.writes.push_back(Write::Release(account, send));
                    act.drain_writes(ctx);
                }
            },
        ));
    }

    /// Another node took the tenant (its lease token was overtaken): this node must not send or store
    /// anything more for it. Nothing is released from now on; the cluster stops the tenant here at its next
    /// round, and the new owner rebuilds from the store and the terminal's history.
    fn fenced(&mut self, why: &StorageError) {
        tracing::error!(tenant = %self.tenant.id, error = %why, dropped = self.writes.len(),
            "lease lost: this node stops trading the tenant");
        self.stopping = true;
        self.writes.clear();
    }

    /// Writes queued records one after another; stops at the first retryable failure and retries later.
    fn drain_writes(&mut self, ctx: &mut Context<Self>) {
        if self.stopping || self.writing {
            return;
        }
        while matches!(
            self.writes.front(),
            Some(Write::Release(..) | Write::Ack(..))
        ) {
            match self.writes.pop_front() {
                Some(Write::Release(account, order)) => self.release(account, order),
                Some(Write::Ack(session, seq)) => session.do_send(Stored { seq }),
                _ => {}
            }
        }
        if self.writes.is_empty() {
            return;
        }
        let store = self.tenant.relational.clone();
        if !store.is_live() {
            return;
        }
        let Some(next) = self.writes.pop_front() else {
            return;
        };
        if crate::runtime::task::faults_armed() {
            // Fault injection (tests, fire drills): the portfolio dies holding a record it has not stored.
            crate::runtime::task::fault_point(&format!("portfolio.store:{}", self.tenant.id));
        }
        self.writing = true;
        self.idle.send_replace(false);
        let tenant = self.tenant.id.0.clone();
        let fence = self.tenant.fence;
        let fut = async move {
            let result = match &next {
                Write::Order(seq, order) => {
                    store
                        .save_order(SaveOrder {
                            tenant,
                            seq: *seq,
                            order: order.clone(),
                            fence,
                        })
                        .await
                }
                Write::Deal(deal) => store
                    .save_deal(SaveDeal {
                        tenant,
                        deal: deal.clone(),
                        fence,
                    })
                    .await
                    .map(|_| ()),
                Write::Release(..) | Write::Ack(..) => Ok(()),
            };
            (next, result)
        };
        ctx.spawn(fut.into_actor(self).map(|(write, result), act, ctx| {
            act.writing = false;
            act.idle.send_replace(true);
            match result {
                Ok(()) => act.drain_writes(ctx),
                Err(e) if e.is_retryable() => {
                    tracing::warn!(tenant = %act.tenant.id, error = %e, queued = act.writes.len() + 1,
                        "storage unavailable; keeping the write to retry");
                    act.writes.push_front(write);
                }
                Err(e @ StorageError::Fenced(_)) => act.fenced(&e),
                Err(e) => {
                    tracing::error!(tenant = %act.tenant.id, error = %e, "storage refused a record");
                    act.drain_writes(ctx);
                }
            }
        }));
    }

    fn pick_account(&self, wanted: Option<Login>) -> Result<Login, String> {
        if let Some(a) = wanted {
            return Ok(a);
        }
        let mut connected: Vec<Login> = self
            .tenant
            .sessions
            .read()
            .iter()
            .filter(|(_, s)| s.connected())
            .map(|(login, _)| *login)
            .collect();
        connected.sort();
        match connected.as_slice() {
            [one] => Ok(*one),
            [] => Err("no MT5 account is connected".into()),
            _ => Err("several MT5 accounts are connected; set `account` on the strategy".into()),
        }
    }

    /// Records a new order as sent and hands it to its session once that record is stored (write-ahead: the
    /// terminal never has an order the store lacks), or records why it could not be sent.
    fn dispatch(
        &mut self,
        seq: u64,
        mut order: Order,
        position: u64,
        origin: Option<std::time::Instant>,
        ctx: &mut Context<Self>,
    ) {
        let has_session = self.tenant.session_of(order.account).is_some();
        let now = now_ms();
        if has_session {
            self.step(&mut order, OrderStatus::Sent, now);
            self.tenant.metrics.order("sent");
            tracing::debug!(tenant = %self.tenant.id, account = %order.account, client_order_id = %order.client_order_id,
                symbol = %order.symbol, side = order.side.as_str(), volume = %order.volume, "order sent");
            let send = SendOrder {
                client_order_id: order.client_order_id.clone(),
                symbol: order.symbol.clone(),
                side: order.side,
                kind: order.kind,
                volume: order.volume,
                price: order.price,
                position,
                magic: magic(order.strategy_id.as_deref()),
                origin,
            };
            self.ledger.remember(seq, order.clone());
            return self.write_ahead(seq, order, send, ctx);
        }
        self.step(&mut order, OrderStatus::Rejected, now);
        order.reason = Some(format!("no MT5 session for account {}", order.account));
        self.tenant.metrics.order("rejected_no_session");
        self.ledger.remember(seq, order.clone());
        self.persist(Write::Order(seq, order), ctx);
    }

    /// Moves `order` to `next`; a change the state machine refuses is logged and counted
    /// (`trellis_order_illegal_transitions_total`), never silently ignored, and the order keeps its state.
    fn step(&self, order: &mut Order, next: OrderStatus, at_ms: i64) {
        if let Err(e) = order.transition(next, at_ms) {
            self.illegal(&e);
            tracing::error!(tenant = %self.tenant.id, error = %e, "illegal order state transition");
        }
    }

    fn illegal(&self, e: &TransitionError) {
        self.tenant
            .metrics
            .illegal_transition(e.from.as_str(), e.to.as_str());
    }

    fn reject(&mut self, seq: u64, mut order: Order, reason: String, ctx: &mut Context<Self>) {
        self.step(&mut order, OrderStatus::Rejected, now_ms());
        order.reason = Some(reason);
        self.tenant.metrics.order("rejected_by_risk");
        self.ledger.remember(seq, order.clone());
        self.persist(Write::Order(seq, order), ctx);
    }
}

/// The MT5 `magic` of a strategy's orders: a stable hash of its id (0 for orders of no strategy).
pub fn magic(strategy_id: Option<&str>) -> u64 {
    let Some(id) = strategy_id else { return 0 };
    // FNV-1a, folded to 31 bits so every terminal and language can hold it.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in id.as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h & 0x7fff_ffff
}

impl Actor for Portfolio {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(4_096);
        ctx.run_interval(std::time::Duration::from_secs(1), |act, _| {
            act.publish_pnl()
        });
        let store = self.tenant.relational.clone();
        let tenant = self.tenant.id.0.clone();
        ctx.wait(
            async move { store.load_book(LoadTenantBook { tenant }).await }
            .into_actor(self)
            .map(|loaded, act, ctx| match loaded {
                Ok(book) => {
                    for (seq, order) in book.orders {
                        act.ledger.remember(seq, order);
                    }
                    for deal in &book.deals {
                        // Orders were stored with their fills already counted.
                        let contract = act.contract(&deal.fill.symbol);
                        act.ledger.apply_deal(deal, false, contract, now_ms());
                    }
                    tracing::info!(tenant = %act.tenant.id, orders = act.ledger.orders_len(), deals = book.deals.len(),
                        "portfolio restored");
                }
                Err(e) => {
                    act.notifier.fail(format!("could not load the book: {e}"));
                    ctx.stop();
                }
            }),
        );
        ctx.run_interval(MARK_EVERY, |act, _| act.mark());
        ctx.run_interval(RETRY_WRITES_EVERY, |act, ctx| act.drain_writes(ctx));
    }

    fn stopped(&mut self, _ctx: &mut Self::Context) {
        if !self.writes.is_empty() {
            tracing::error!(tenant = %self.tenant.id, pending = self.writes.len(), "portfolio stopped with unwritten records");
        }
        self.notifier.mark_stopped();
    }
}

impl Handler<Signal> for Portfolio {
    /// Atomic: no other message is handled between planning an order and recording risk's verdict, so a
    /// second signal can never plan on top of an order that is not recorded yet.
    type Result = AtomicResponse<Self, ()>;

    fn handle(&mut self, s: Signal, _ctx: &mut Self::Context) -> Self::Result {
        let nothing = || AtomicResponse::new(Box::pin(actix::fut::ready(())));
        let account = match self.pick_account(s.account) {
            Ok(a) => a,
            Err(why) => {
                tracing::warn!(tenant = %self.tenant.id, strategy = %s.strategy_id, reason = %why, "signal not traded");
                return nothing();
            }
        };
        let origin = s.origin;
        let Some((seq, order, facts)) =
            self.ledger
                .plan(&s.strategy_id, account, &s.symbol, s.target, now_ms())
        else {
            return nothing();
        };
        if let Some(p) = &s.cause {
            // What a model decided is part of the order's record: which deployment, which version, what
            // it predicted for which bar.
            self.tenant.audit(
                "order.model_caused",
                &format!("strategy:{}", s.strategy_id),
                serde_json::json!({
                    "client_order_id": order.client_order_id,
                    "strategy": s.strategy_id,
                    "deployment": p.deployment,
                    "version": p.version,
                    "prediction": p.value,
                    "bar_open_ms": p.bar_open_ms,
                }),
            );
        }
        let Some(risk) = self.tenant.risk.get() else {
            return AtomicResponse::new(Box::pin(actix::fut::ready(()).into_actor(self).map(
                move |_, act: &mut Self, ctx| {
                    act.reject(
                        seq,
                        order,
                        "risk_unavailable: risk is restarting; order not sent".into(),
                        ctx,
                    )
                },
            )));
        };
        AtomicResponse::new(Box::pin(risk.send(CheckOrder(facts)).into_actor(self).map(
            move |verdict, act, ctx| match verdict {
                Ok(Ok(())) => {
                    if let Some(origin) = origin {
                        act.tenant.metrics.stage(Stage::Risk, origin);
                    }
                    act.dispatch(seq, order, 0, origin, ctx)
                }
                Ok(Err(rejection)) => act.reject(seq, order, rejection.to_string(), ctx),
                Err(e) => act.reject(seq, order, format!("risk_unavailable: {e}"), ctx),
            },
        )))
    }
}

impl Handler<OrderResultReceived> for Portfolio {
    type Result = Result<(), UnknownOrder>;

    fn handle(&mut self, msg: OrderResultReceived, ctx: &mut Self::Context) -> Self::Result {
        let f = msg.frame;
        let result = OrderResult {
            client_order_id: f.client_order_id,
            retcode: f.retcode,
            order: f.order,
            comment: f.comment,
        };
        let outcome = self.ledger.apply_result(msg.account, &result, now_ms());
        self.store_outcome(outcome, &result, "order result", ctx)
    }
}

impl Handler<DealReceived> for Portfolio {
    type Result = ();

    fn handle(&mut self, msg: DealReceived, ctx: &mut Self::Context) {
        let Some(deal) = msg.frame.to_deal(msg.account, &self.ledger) else {
            tracing::info!(tenant = %self.tenant.id, deal = msg.frame.ticket, deal_type = msg.frame.deal_type,
                "non-trade deal ignored");
            return;
        };
        let (side, client_order_id, strategy_id) = (
            deal.fill.side,
            deal.client_order_id.clone(),
            deal.strategy_id.clone(),
        );
        let contract = self.contract(&deal.fill.symbol);
        if !self.ledger.apply_deal(&deal, true, contract, now_ms()) {
            return; // already recorded
        }
        self.tenant.metrics.fill();
        if client_order_id.is_none() {
            tracing::warn!(tenant = %self.tenant.id, account = %deal.account, deal = deal.ticket, symbol = %deal.fill.symbol,
                "a deal of no trellis order (made at the terminal): booked to the account as external");
            self.reconciled(
                "reconciliation.external_deal",
                serde_json::json!({
                    "account": deal.account,
                    "ticket": deal.ticket,
                    "order": deal.order,
                    "symbol": deal.fill.symbol,
                    "side": deal.fill.side.as_str(),
                    "volume": deal.fill.volume.to_string(),
                    "price": deal.fill.price.to_string(),
                    "time_msc": deal.fill.time_msc,
                    "magic": msg.frame.magic,
                    "comment": msg.frame.comment,
                }),
            );
        }
        tracing::debug!(tenant = %self.tenant.id, account = %deal.account, deal = deal.ticket,
            client_order_id = client_order_id.as_deref().unwrap_or("-"), symbol = %deal.fill.symbol,
            side = side.as_str(), volume = %deal.fill.volume, price = %deal.fill.price, "fill");
        if let Some(sid) = &strategy_id {
            if let Some(host) = self.tenant.strategy_host(sid) {
                host.do_send(StrategyFilled {
                    signed_volume: deal.fill.volume * side.sign(),
                    price: deal.fill.price,
                });
            }
        }
        if let Some((seq, order)) = client_order_id
            .as_deref()
            .and_then(|c| self.ledger.order(c))
            .cloned()
        {
            self.persist(Write::Order(seq, order), ctx);
        }
        if let Some(cache) = self.tenant.cache.as_ref().and_then(|slot| slot.get()) {
            let positions: Vec<AccountPosition> = self
                .ledger
                .positions()
                .into_iter()
                .map(|(account, position)| AccountPosition { account, position })
                .collect();
            if let Ok(json) = serde_json::to_string(&positions) {
                cache.do_send(CachePositions {
                    tenant: self.tenant.id.0.clone(),
                    json,
                });
            }
        }
        if self.tenant.timeseries.keeps_fills() {
            let (store, msg) = (
                self.tenant.timeseries.clone(),
                AppendFills {
                    tenant: self.tenant.id.0.clone(),
                    deals: vec![deal.clone()],
                },
            );
            // Accepted into the store's buffer at once; the store itself retries and spills.
            ctx.spawn(async move { store.append_fills(msg).await }.into_actor(self).map(|res, act, _| {
                if let Err(e) = res {
                    tracing::warn!(tenant = %act.tenant.id, error = %e, "fill not sent to the time-series store");
                }
            }));
        }
        self.persist(Write::Deal(deal), ctx);
        self.mark();
    }
}

impl Handler<AccountReceived> for Portfolio {
    type Result = ();

    fn handle(&mut self, AccountReceived(info): AccountReceived, _ctx: &mut Self::Context) {
        self.ledger.set_mode(
            Login::new(info.login),
            AccountMode::from_margin_mode(info.margin_mode),
        );
    }
}

impl Handler<PositionsReceived> for Portfolio {
    type Result = ();

    /// Compares the terminal's positions with the book. A difference may be a deal still on its way, so it
    /// only asks the terminal for its recent deals; the answer (`history_end`) settles it.
    fn handle(&mut self, msg: PositionsReceived, _ctx: &mut Self::Context) {
        let terminal = terminal_positions(&msg.frame.positions);
        let differences = self.ledger.differences(msg.account, &terminal);
        if differences.is_empty() {
            return;
        }
        tracing::info!(tenant = %self.tenant.id, account = %msg.account, ?differences,
            "positions differ from the terminal's: asking for its recent deals");
        if let Some(session) = self.tenant.session_of(msg.account) {
            session.do_send(ReconcileNeeded);
        }
    }
}

impl Handler<HistoryEndReceived> for Portfolio {
    type Result = ();

    /// Every deal the terminal found came before this frame and is booked: what still differs is adopted.
    fn handle(&mut self, msg: HistoryEndReceived, ctx: &mut Self::Context) {
        if !msg.current {
            return self.handle(
                PositionsReceived {
                    account: msg.account,
                    frame: crate::bridge::protocol::PositionsFrame {
                        seq: msg.frame.seq,
                        positions: msg.frame.positions,
                    },
                },
                ctx,
            );
        }
        let terminal = terminal_positions(&msg.frame.positions);
        let adopted = self.ledger.adoption_deals(msg.account, &terminal, now_ms());
        tracing::info!(tenant = %self.tenant.id, account = %msg.account, deals = msg.frame.deals,
            adopted = adopted.len(), "reconciled with the terminal");
        for deal in adopted {
            let contract = self.contract(&deal.fill.symbol);
            if !self.ledger.apply_deal(&deal, false, contract, now_ms()) {
                continue;
            }
            tracing::warn!(tenant = %self.tenant.id, account = %deal.account, symbol = %deal.fill.symbol,
                side = deal.fill.side.as_str(), volume = %deal.fill.volume, ticket = deal.ticket,
                "position adopted from the terminal");
            let detail = serde_json::json!({
                "account": deal.account,
                "symbol": deal.fill.symbol,
                "side": deal.fill.side.as_str(),
                "volume": deal.fill.volume.to_string(),
                "price": deal.fill.price.to_string(),
                "ticket": deal.ticket,
                "reason": "the terminal's position differs after its deal history was booked",
            });
            self.reconciled("reconciliation.adopted", detail);
            self.persist(Write::Deal(deal), ctx);
        }
        self.mark();
    }
}

/// The terminal's net position per symbol: (signed volume, average open price, a position id).
fn terminal_positions(positions: &[PositionItem]) -> HashMap<Symbol, (Decimal, Decimal, u64)> {
    // Per symbol: net signed volume, cost and lots of its positions, the first position's id.
    let mut sums: HashMap<Symbol, (Decimal, Decimal, Decimal, u64)> = HashMap::new();
    for p in positions {
        let sign = if p.kind == 0 {
            Decimal::ONE
        } else {
            Decimal::NEGATIVE_ONE
        };
        let s = sums.entry(Symbol::new(p.symbol.clone())).or_insert((
            Decimal::ZERO,
            Decimal::ZERO,
            Decimal::ZERO,
            p.identifier,
        ));
        s.0 += p.volume * sign;
        s.1 += p.volume * p.price_open;
        s.2 += p.volume;
    }
    sums.into_iter()
        .map(|(symbol, (net, cost, lots, id))| {
            let price = if lots.is_zero() {
                Decimal::ZERO
            } else {
                cost / lots
            };
            (symbol, (net, price, id))
        })
        .collect()
}

impl Portfolio {
    /// A reconciliation: to the audit chain and to the tenant's clients.
    fn reconciled(&self, action: &'static str, detail: serde_json::Value) {
        self.tenant.audit(action, "trellis", detail.clone());
        let mut data = detail;
        if let Some(map) = data.as_object_mut() {
            map.insert("action".into(), action.into());
        }
        self.tenant.publish(EventKind::Reconciliation, data);
    }
}

impl Handler<AckWhenStored> for Portfolio {
    type Result = ();

    fn handle(&mut self, msg: AckWhenStored, ctx: &mut Self::Context) {
        self.writes.push_back(Write::Ack(msg.session, msg.seq));
        self.drain_writes(ctx);
    }
}

impl Handler<GetReconcilePoint> for Portfolio {
    type Result = MessageResult<GetReconcilePoint>;

    fn handle(&mut self, q: GetReconcilePoint, _ctx: &mut Self::Context) -> Self::Result {
        MessageResult(match self.ledger.last_deal(q.account) {
            Some((from_msc, after_ticket)) => ReconcilePoint {
                from_msc,
                after_ticket,
            },
            None => ReconcilePoint {
                from_msc: NO_DEALS_MSC,
                after_ticket: 0,
            },
        })
    }
}

impl Handler<GetInFlight> for Portfolio {
    type Result = MessageResult<GetInFlight>;

    fn handle(&mut self, q: GetInFlight, _ctx: &mut Self::Context) -> Self::Result {
        MessageResult(self.ledger.sent_orders(q.account))
    }
}

impl Handler<GetPortfolio> for Portfolio {
    type Result = MessageResult<GetPortfolio>;

    fn handle(&mut self, _: GetPortfolio, _ctx: &mut Self::Context) -> Self::Result {
        let (_, unrealised, _) = self.pnl();
        MessageResult(PortfolioSnapshot {
            orders: self.ledger.orders(),
            deals: self.ledger.deals().to_vec(),
            positions: self
                .ledger
                .positions()
                .into_iter()
                .map(|(account, position)| AccountPosition { account, position })
                .collect(),
            performance: self.ledger.performance(unrealised),
        })
    }
}

impl Handler<Flatten> for Portfolio {
    type Result = MessageResult<Flatten>;

    fn handle(&mut self, msg: Flatten, ctx: &mut Self::Context) -> Self::Result {
        let closing = self.ledger.closing_orders();
        let count = closing.len();
        for (login, symbol, side, volume, position) in closing {
            let (seq, order) = self
                .ledger
                .new_order(None, login, symbol, side, volume, now_ms());
            tracing::warn!(tenant = %self.tenant.id, reason = %msg.reason, client_order_id = %order.client_order_id,
                "flattening");
            self.dispatch(seq, order, position, None, ctx);
        }
        MessageResult(count)
    }
}

impl Handler<PlaceManualOrder> for Portfolio {
    /// Atomic like a strategy's signal: planning, risk's verdict and the record happen with no other
    /// message in between, so two copies of one order cannot both pass the idempotency check.
    type Result = AtomicResponse<Self, Result<ManualOrderPlaced, ManualOrderRefused>>;

    fn handle(&mut self, m: PlaceManualOrder, _ctx: &mut Self::Context) -> Self::Result {
        let done = |r| AtomicResponse::new(Box::pin(actix::fut::ready(r)));
        if let Some((_, order)) = self.ledger.order(&m.client_order_id) {
            return done(Ok(ManualOrderPlaced {
                order: order.clone(),
                duplicate: true,
            }));
        }
        let account = match self.pick_account(m.account) {
            Ok(a) => a,
            Err(why) => {
                return done(Err(ManualOrderRefused {
                    code: "no_session",
                    reason: why.replace("on the strategy", "on the order"),
                }))
            }
        };
        if self.tenant.session_of(account).is_none() {
            return done(Err(ManualOrderRefused {
                code: "no_session",
                reason: format!("no MT5 session for account {account}"),
            }));
        }
        let book = self.ledger.account(account);
        let facts = OrderFacts {
            account,
            symbol: m.symbol.clone(),
            side: m.side,
            volume: m.volume,
            net_before: book.net(&m.symbol),
            open_positions: book.open_count(),
            reduce_only: false,
            positions: book.nets(),
        };
        let (seq, mut order) =
            self.ledger
                .new_order(None, account, m.symbol.clone(), m.side, m.volume, now_ms());
        order.client_order_id = m.client_order_id.clone();
        order.kind = m.kind;
        order.price = m.price;
        self.tenant.audit(
            "order.manual",
            &m.actor,
            serde_json::json!({
                "client_order_id": order.client_order_id,
                "account": account,
                "symbol": order.symbol,
                "side": order.side.as_str(),
                "kind": order.kind,
                "volume": order.volume.to_string(),
                "price": order.price.map(|p| p.to_string()),
            }),
        );
        let Some(risk) = self.tenant.risk.get() else {
            return done(Err(ManualOrderRefused {
                code: "unavailable",
                reason: "risk is restarting; retry".into(),
            }));
        };
        let id = m.client_order_id;
        AtomicResponse::new(Box::pin(risk.send(CheckOrder(facts)).into_actor(self).map(
            move |verdict, act, ctx| match verdict {
                Ok(Ok(())) => {
                    act.dispatch(seq, order, 0, None, ctx);
                    match act.ledger.order(&id) {
                        Some((_, o)) if o.status != OrderStatus::Rejected => {
                            Ok(ManualOrderPlaced {
                                order: o.clone(),
                                duplicate: false,
                            })
                        }
                        Some((_, o)) => Err(ManualOrderRefused {
                            code: "no_session",
                            reason: o.reason.clone().unwrap_or_default(),
                        }),
                        None => Err(ManualOrderRefused {
                            code: "unavailable",
                            reason:
                                "the order was not recorded; retry with the same client_order_id"
                                    .into(),
                        }),
                    }
                }
                Ok(Err(rejection)) => {
                    let reason = rejection.to_string();
                    act.reject(seq, order, reason.clone(), ctx);
                    Err(ManualOrderRefused {
                        code: "risk_rejected",
                        reason,
                    })
                }
                Err(e) => Err(ManualOrderRefused {
                    code: "unavailable",
                    reason: format!(
                        "risk did not answer ({e}); retry with the same client_order_id"
                    ),
                }),
            },
        )))
    }
}

impl Handler<CancelManualOrder> for Portfolio {
    type Result = Result<Order, ManualOrderRefused>;

    /// Sends the cancel of an open pending order to its account's session. Only the terminal's answer
    /// (`cancel_result`) changes the order: until then it may still fill.
    fn handle(&mut self, m: CancelManualOrder, _ctx: &mut Self::Context) -> Self::Result {
        let refuse = |code, reason: String| Err(ManualOrderRefused { code, reason });
        let Some((_, order)) = self.ledger.order(&m.client_order_id) else {
            return refuse("unknown_order", format!("no order `{}`", m.client_order_id));
        };
        let order = order.clone();
        let open_pending = order.kind != OrderKind::Market
            && matches!(
                order.status,
                OrderStatus::Sent | OrderStatus::Placed | OrderStatus::PartiallyFilled
            );
        if !open_pending {
            let kind = match order.kind {
                OrderKind::Market => "market",
                OrderKind::Limit => "limit",
                OrderKind::Stop => "stop",
            };
            return refuse(
                "not_cancellable",
                format!(
                    "only an open pending order can be cancelled; this one is a {kind} order, {}",
                    order.status.as_str()
                ),
            );
        }
        let Some(session) = self.tenant.session_of(order.account) else {
            return refuse(
                "no_session",
                format!(
                    "no MT5 session for account {}; retry once the terminal is connected",
                    order.account
                ),
            );
        };
        self.tenant.audit(
            "order.cancel_requested",
            &m.actor,
            serde_json::json!({
                "client_order_id": order.client_order_id,
                "account": order.account,
                "order": order.broker_order,
            }),
        );
        session.do_send(SendCancel {
            client_order_id: order.client_order_id.clone(),
            order: order.broker_order.unwrap_or(0),
        });
        Ok(order)
    }
}

impl Handler<CancelResultReceived> for Portfolio {
    type Result = Result<(), UnknownOrder>;

    fn handle(&mut self, msg: CancelResultReceived, ctx: &mut Self::Context) -> Self::Result {
        let f = msg.frame;
        let result = OrderResult {
            client_order_id: f.client_order_id,
            retcode: f.retcode,
            order: f.order,
            comment: f.comment,
        };
        let outcome = self.ledger.apply_cancel(&result, now_ms());
        self.store_outcome(outcome, &result, "cancel result", ctx)
    }
}

impl Handler<AccountLink> for Portfolio {
    type Result = ();

    fn handle(&mut self, _link: AccountLink, _ctx: &mut Self::Context) {}
}

impl Handler<Shutdown> for Portfolio {
    type Result = ResponseActFuture<Self, ()>;

    /// Writes every queued record before stopping (bounded by the supervisor's shutdown timeout).
    fn handle(&mut self, _msg: Shutdown, _ctx: &mut Self::Context) -> Self::Result {
        // The write in flight finishes first (it may be put back in front of the queue), then the queue is
        // written in order.
        self.stopping = true;
        let mut idle = self.idle.subscribe();
        Box::pin(
            async move {
                let _ = idle.wait_for(|idle| *idle).await;
            }
            .into_actor(self)
            .then(|_, act, _| {
                let writes: Vec<Write> = act.writes.drain(..).collect();
                let store = act.tenant.relational.clone();
                let tenant = act.tenant.id.0.clone();
                let fence = act.tenant.fence;
                async move {
                    for w in writes {
                        let _ = match w {
                            Write::Order(seq, order) => {
                                store
                                    .save_order(SaveOrder {
                                        tenant: tenant.clone(),
                                        seq,
                                        order,
                                        fence,
                                    })
                                    .await
                            }
                            Write::Deal(deal) => store
                                .save_deal(SaveDeal {
                                    tenant: tenant.clone(),
                                    deal,
                                    fence,
                                })
                                .await
                                .map(|_| ()),
                            // Not sent now: the stored order is in flight and goes out after the restart.
                            Write::Release(..) => Ok(()),
                            Write::Ack(session, seq) => {
                                session.do_send(Stored { seq });
                                Ok(())
                            }
                        };
                    }
                }
                .into_actor(act)
            })
            .map(|_, _, ctx| ctx.stop()),
        )
    }
}
