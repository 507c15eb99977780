//! `Portfolio`, one per tenant: the order manager and the books.
//!
//! It turns a strategy's target into an order (target − position − in-flight; nothing while an order of
//! the same strategy and symbol is in flight, so repeated signals never stack), asks `Risk`, records the
//! order, hands it to the account's `Mt5Session`, and follows results and deals through the order state
//! machine into positions and PnL — per account (netting or hedging, as the terminal says) and per strategy.
//!
//! Durability: orders and deals are written through the relational store in the order they happened; a
//! write that fails for a retryable reason stays queued and is retried, so nothing accepted is lost while the
//! store restarts. On start the actor reloads every order and deal of the tenant and replays the deals, so
//! positions and PnL come back exactly; a deal re-sent by a terminal is recognised by its ticket.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use rust_decimal::Decimal;

use super::messages::{
    AccountLink, AccountPosition, AccountReceived, CheckOrder, DealReceived, Flatten, GetInFlight,
    GetPortfolio, OrderFacts, OrderResultReceived, PnlUpdated, PortfolioSnapshot,
    PositionsReceived, SendOrder, Signal, StrategyFilled, UnknownOrder,
};
use super::supervisor::{ExitNotifier, Shutdown};
use super::tenant::TenantContext;
use crate::domain::orders::{classify, Order, OrderKind, OrderStatus, RetcodeClass};
use crate::domain::positions::{
    performance, AccountMode, Book, Deal, DealEntry, EquityCurve, Fill,
};
use crate::domain::{now_ms, Login, Side, Symbol};
use crate::http::ws::protocol::AccountFrame;
use crate::storage::live;
use crate::storage::relational::{LoadTenantBook, SaveDeal, SaveOrder};

const MARK_EVERY: Duration = Duration::from_secs(1);
const RETRY_WRITES_EVERY: Duration = Duration::from_millis(200);

enum Write {
    Order(u64, Order),
    Deal(Deal),
}

struct Account {
    book: Book,
    info: Option<AccountFrame>,
}

pub struct Portfolio {
    tenant: Arc<TenantContext>,
    orders: HashMap<String, (u64, Order)>,
    /// Client order ids in creation order, for listings.
    order_ids: Vec<String>,
    by_broker_order: HashMap<(Login, u64), String>,
    accounts: HashMap<Login, Account>,
    strategies: HashMap<String, Book>,
    /// Deal tickets already applied, per account.
    deals_seen: HashSet<(Login, u64)>,
    deals: Vec<Deal>,
    curve: EquityCurve,
    next_seq: u64,
    writes: VecDeque<Write>,
    writing: bool,
    notifier: ExitNotifier,
}

impl Portfolio {
    pub fn new(tenant: Arc<TenantContext>, notifier: ExitNotifier) -> Self {
        Self {
            tenant,
            orders: HashMap::new(),
            order_ids: Vec::new(),
            by_broker_order: HashMap::new(),
            accounts: HashMap::new(),
            strategies: HashMap::new(),
            deals_seen: HashSet::new(),
            deals: Vec::new(),
            curve: EquityCurve::default(),
            next_seq: 1,
            writes: VecDeque::new(),
            writing: false,
            notifier,
        }
    }

    fn account(&mut self, login: Login) -> &mut Account {
        self.accounts.entry(login).or_insert_with(|| Account {
            book: Book::new(AccountMode::Netting),
            info: None,
        })
    }

    fn contract(&self, symbol: &Symbol) -> Decimal {
        self.tenant.contract_size(symbol.as_str())
    }

    /// Applies a deal to the books (no I/O); with `fill_order`, also to its order. Returns false for a
    /// ticket already applied.
    fn apply_deal(&mut self, deal: &Deal, fill_order: bool) -> bool {
        if !self.deals_seen.insert((deal.account, deal.ticket)) {
            return false;
        }
        let contract = self.contract(&deal.fill.symbol);
        self.account(deal.account).book.apply(&deal.fill, contract);
        if let Some(sid) = &deal.strategy_id {
            // A strategy thinks in net exposure, whatever the account's mode.
            self.strategies
                .entry(sid.clone())
                .or_insert_with(|| Book::new(AccountMode::Netting))
                .apply(
                    &Fill {
                        entry: DealEntry::In,
                        ..deal.fill.clone()
                    },
                    contract,
                );
        }
        if fill_order {
            if let Some((_, order)) = deal
                .client_order_id
                .as_ref()
                .and_then(|c| self.orders.get_mut(c))
            {
                order.add_fill(deal.fill.volume, deal.fill.price, now_ms());
            }
        }
        self.deals.push(deal.clone());
        true
    }

    /// PnL (realised, unrealised, commission) in account currency across accounts.
    fn pnl(&self) -> (Decimal, Decimal, Decimal) {
        let quote = |s: &Symbol| self.tenant.quotes.get(s).map(|q| (q.bid, q.ask));
        let contract = |s: &Symbol| self.contract(s);
        self.accounts.values().fold(
            (Decimal::ZERO, Decimal::ZERO, Decimal::ZERO),
            |(r, u, c), acc| {
                (
                    r + acc.book.realised,
                    u + acc.book.unrealised(quote, contract),
                    c + acc.book.commission,
                )
            },
        )
    }

    fn mark(&mut self) {
        let (realised, unrealised, commission) = self.pnl();
        let at_ms = now_ms();
        self.curve.mark(at_ms, realised + unrealised - commission);
        if let Some(risk) = self.tenant.risk.get() {
            risk.do_send(PnlUpdated {
                at_ms,
                realised,
                unrealised,
                commission,
            });
        }
    }

    fn persist(&mut self, write: Write, ctx: &mut Context<Self>) {
        self.writes.push_back(write);
        self.drain_writes(ctx);
    }

    /// Writes queued records one after another; stops at the first retryable failure and retries later.
    fn drain_writes(&mut self, ctx: &mut Context<Self>) {
        if self.writing || self.writes.is_empty() {
            return;
        }
        let Ok(store) = live(&self.tenant.relational) else {
            return;
        };
        let Some(next) = self.writes.pop_front() else {
            return;
        };
        self.writing = true;
        let tenant = self.tenant.id.0.clone();
        let fut = async move {
            let result = match &next {
                Write::Order(seq, order) => store
                    .send(SaveOrder {
                        tenant,
                        seq: *seq,
                        order: order.clone(),
                    })
                    .await
                    .map_err(crate::storage::StorageError::from)
                    .and_then(|r| r),
                Write::Deal(deal) => store
                    .send(SaveDeal {
                        tenant,
                        deal: deal.clone(),
                    })
                    .await
                    .map_err(crate::storage::StorageError::from)
                    .and_then(|r| r.map(|_| ())),
            };
            (next, result)
        };
        ctx.spawn(fut.into_actor(self).map(|(write, result), act, ctx| {
            act.writing = false;
            match result {
                Ok(()) => act.drain_writes(ctx),
                Err(e) if e.is_retryable() => {
                    tracing::warn!(tenant = %act.tenant.id, error = %e, queued = act.writes.len() + 1,
                        "storage unavailable; keeping the write to retry");
                    act.writes.push_front(write);
                }
                Err(e) => {
                    tracing::error!(tenant = %act.tenant.id, error = %e, "storage refused a record");
                    act.drain_writes(ctx);
                }
            }
        }));
    }

    fn in_flight(&self, strategy_id: &str, symbol: &Symbol) -> bool {
        self.orders.values().any(|(_, o)| {
            !o.status.is_final()
                && o.strategy_id.as_deref() == Some(strategy_id)
                && &o.symbol == symbol
        })
    }

    fn pick_account(&self, wanted: Option<Login>) -> Result<Login, String> {
        if let Some(a) = wanted {
            return Ok(a);
        }
        let mut connected: Vec<Login> = self.tenant.sessions.iter().map(|e| *e.key()).collect();
        connected.sort();
        match connected.as_slice() {
            [one] => Ok(*one),
            [] => Err("no MT5 account is connected".into()),
            _ => Err("several MT5 accounts are connected; set `account` on the strategy".into()),
        }
    }

    fn new_order(
        &mut self,
        strategy_id: Option<&str>,
        account: Login,
        symbol: Symbol,
        side: Side,
        volume: Decimal,
    ) -> (u64, Order) {
        let seq = self.next_seq;
        self.next_seq += 1;
        let prefix = strategy_id.unwrap_or("flatten");
        let now = now_ms();
        (
            seq,
            Order {
                client_order_id: format!("{prefix}-{seq}"),
                account,
                strategy_id: strategy_id.map(str::to_owned),
                symbol,
                side,
                kind: OrderKind::Market,
                volume,
                price: None,
                status: OrderStatus::New,
                filled_volume: Decimal::ZERO,
                avg_price: None,
                retcode: None,
                broker_order: None,
                reason: None,
                created_ms: now,
                updated_ms: now,
            },
        )
    }

    /// Records a new order as sent and hands it to its session, or records why it could not be sent.
    fn dispatch(&mut self, seq: u64, mut order: Order, position: u64, ctx: &mut Context<Self>) {
        let session = self
            .tenant
            .sessions
            .get(&order.account)
            .map(|s| s.clone())
            .filter(Addr::connected);
        let now = now_ms();
        match session {
            Some(session) => {
                let _ = order.transition(OrderStatus::Sent, now);
                self.tenant.metrics.order("sent");
                tracing::info!(tenant = %self.tenant.id, account = %order.account, client_order_id = %order.client_order_id,
                    symbol = %order.symbol, side = order.side.as_str(), volume = %order.volume, "order sent");
                session.do_send(SendOrder {
                    client_order_id: order.client_order_id.clone(),
                    symbol: order.symbol.clone(),
                    side: order.side,
                    kind: order.kind,
                    volume: order.volume,
                    price: order.price,
                    position,
                    magic: magic(order.strategy_id.as_deref()),
                });
            }
            None => {
                let _ = order.transition(OrderStatus::Rejected, now);
                order.reason = Some(format!("no MT5 session for account {}", order.account));
                self.tenant.metrics.order("rejected_no_session");
            }
        }
        self.remember(seq, order.clone());
        self.persist(Write::Order(seq, order), ctx);
    }

    fn remember(&mut self, seq: u64, order: Order) {
        if !self.orders.contains_key(&order.client_order_id) {
            self.order_ids.push(order.client_order_id.clone());
        }
        if let Some(b) = order.broker_order {
            self.by_broker_order
                .insert((order.account, b), order.client_order_id.clone());
        }
        self.orders
            .insert(order.client_order_id.clone(), (seq, order));
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
        let store = live(&self.tenant.relational);
        let tenant = self.tenant.id.0.clone();
        ctx.wait(
            async move {
                let store = store?;
                store.send(LoadTenantBook { tenant }).await?
            }
            .into_actor(self)
            .map(|loaded, act, ctx| match loaded {
                Ok(book) => {
                    for (seq, order) in book.orders {
                        act.next_seq = act.next_seq.max(seq + 1);
                        act.remember(seq, order);
                    }
                    let deals = book.deals;
                    for deal in &deals {
                        // Orders were stored with their fills already counted.
                        act.apply_deal(deal, false);
                    }
                    let open = act.orders.values().filter(|(_, o)| !o.status.is_final()).count();
                    tracing::info!(tenant = %act.tenant.id, orders = act.orders.len(), open, deals = deals.len(),
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
    type Result = ResponseActFuture<Self, ()>;

    fn handle(&mut self, s: Signal, _ctx: &mut Self::Context) -> Self::Result {
        let nothing = || -> Self::Result { Box::pin(actix::fut::ready(())) };
        if self.in_flight(&s.strategy_id, &s.symbol) {
            return nothing();
        }
        let held = self
            .strategies
            .get(&s.strategy_id)
            .map(|b| b.net(&s.symbol))
            .unwrap_or_default();
        let delta = s.target - held;
        if delta.is_zero() {
            return nothing();
        }
        let account = match self.pick_account(s.account) {
            Ok(a) => a,
            Err(why) => {
                tracing::warn!(tenant = %self.tenant.id, strategy = %s.strategy_id, reason = %why, "signal not traded");
                return nothing();
            }
        };
        let side = if delta.is_sign_positive() {
            Side::Buy
        } else {
            Side::Sell
        };
        let volume = delta.abs();
        let acc = self.account(account);
        let facts = OrderFacts {
            account,
            symbol: s.symbol.clone(),
            side,
            volume,
            net_before: acc.book.net(&s.symbol),
            open_positions: acc.book.open_count(),
            reduce_only: false,
        };
        let (seq, order) = self.new_order(
            Some(&s.strategy_id),
            account,
            s.symbol.clone(),
            side,
            volume,
        );
        let Some(risk) = self.tenant.risk.get() else {
            let mut order = order;
            let _ = order.transition(OrderStatus::Rejected, now_ms());
            order.reason = Some("risk is restarting; order not sent".into());
            self.tenant.metrics.order("rejected_by_risk");
            self.remember(seq, order.clone());
            return Box::pin(
                actix::fut::ready(())
                    .into_actor(self)
                    .map(move |_, act: &mut Self, ctx| act.persist(Write::Order(seq, order), ctx)),
            );
        };
        Box::pin(
            risk.send(CheckOrder(facts))
                .into_actor(self)
                .map(move |verdict, act, ctx| {
                    let verdict = verdict.unwrap_or_else(|e| {
                        Err(super::messages::RiskRejection {
                            code: "risk_unavailable",
                            reason: e.to_string(),
                        })
                    });
                    match verdict {
                        Ok(()) => act.dispatch(seq, order, 0, ctx),
                        Err(rejection) => {
                            let mut order = order;
                            let _ = order.transition(OrderStatus::Rejected, now_ms());
                            order.reason = Some(rejection.to_string());
                            act.tenant.metrics.order("rejected_by_risk");
                            act.remember(seq, order.clone());
                            act.persist(Write::Order(seq, order), ctx);
                        }
                    }
                }),
        )
    }
}

impl Handler<OrderResultReceived> for Portfolio {
    type Result = Result<(), UnknownOrder>;

    fn handle(&mut self, msg: OrderResultReceived, ctx: &mut Self::Context) -> Self::Result {
        let f = msg.frame;
        let Some((seq, order)) = self.orders.get_mut(&f.client_order_id) else {
            return Err(UnknownOrder(f.client_order_id));
        };
        let seq = *seq;
        if order.retcode == Some(f.retcode)
            && order.broker_order == Some(f.order).filter(|o| *o != 0)
        {
            return Ok(()); // the same result again (re-sent after a reconnect)
        }
        let now = now_ms();
        order.retcode = Some(f.retcode);
        if f.order != 0 {
            order.broker_order = Some(f.order);
        }
        let class = classify(f.retcode);
        let next = match (class, f.retcode) {
            (RetcodeClass::Accepted, crate::domain::orders::retcode::PLACED) => {
                Some(OrderStatus::Placed)
            }
            (RetcodeClass::Accepted, _) => None, // filled by its deals
            (RetcodeClass::Rejected | RetcodeClass::Requote, _) => Some(OrderStatus::Rejected),
            (RetcodeClass::Ambiguous, _) => None,
        };
        order.reason = Some(match class {
            RetcodeClass::Ambiguous => format!(
                "ambiguous result {} ({}): awaiting reconciliation",
                f.retcode, f.comment
            ),
            _ if f.comment.is_empty() => format!("retcode {}", f.retcode),
            _ => format!("retcode {}: {}", f.retcode, f.comment),
        });
        if let Some(next) = next {
            if order.status != next {
                if let Err(e) = order.transition(next, now) {
                    tracing::warn!(tenant = %self.tenant.id, error = %e, "order result out of sequence");
                }
            }
        }
        if order.status == OrderStatus::Rejected {
            self.tenant.metrics.order("rejected_by_terminal");
            tracing::warn!(tenant = %self.tenant.id, client_order_id = %order.client_order_id, retcode = f.retcode,
                comment = %f.comment, "order rejected by the trade server");
        }
        let order = order.clone();
        if let Some(b) = order.broker_order {
            self.by_broker_order
                .insert((msg.account, b), order.client_order_id.clone());
        }
        self.persist(Write::Order(seq, order), ctx);
        Ok(())
    }
}

impl Handler<DealReceived> for Portfolio {
    type Result = ();

    fn handle(&mut self, msg: DealReceived, ctx: &mut Self::Context) {
        let f = msg.frame;
        let side = match f.deal_type {
            0 => Side::Buy,
            1 => Side::Sell,
            other => {
                tracing::info!(tenant = %self.tenant.id, deal = f.ticket, deal_type = other, "non-trade deal ignored");
                return;
            }
        };
        let client_order_id = f
            .client_order_id
            .clone()
            .filter(|c| self.orders.contains_key(c))
            .or_else(|| self.by_broker_order.get(&(msg.account, f.order)).cloned());
        let strategy_id = client_order_id
            .as_ref()
            .and_then(|c| self.orders.get(c))
            .and_then(|(_, o)| o.strategy_id.clone());
        let deal = Deal {
            account: msg.account,
            ticket: f.ticket,
            order: f.order,
            client_order_id: client_order_id.clone(),
            strategy_id: strategy_id.clone(),
            fill: Fill {
                symbol: Symbol(f.symbol),
                side,
                volume: f.volume,
                price: f.price,
                position_id: f.position_id,
                entry: DealEntry::from_code(f.entry).unwrap_or(DealEntry::In),
                commission: -f.commission - f.fee,
                time_msc: f.time_msc,
            },
            swap: f.swap,
            profit: f.profit,
        };
        if !self.apply_deal(&deal, true) {
            return; // already recorded
        }
        self.tenant.metrics.fill();
        tracing::info!(tenant = %self.tenant.id, account = %deal.account, deal = deal.ticket,
            client_order_id = client_order_id.as_deref().unwrap_or("-"), symbol = %deal.fill.symbol,
            side = side.as_str(), volume = %deal.fill.volume, price = %deal.fill.price, "fill");
        if let Some(sid) = &strategy_id {
            if let Some(host) = self.tenant.strategy_hosts.get(sid) {
                host.do_send(StrategyFilled {
                    signed_volume: deal.fill.volume * side.sign(),
                    price: deal.fill.price,
                });
            }
        }
        if let Some(coid) = &client_order_id {
            if let Some((seq, order)) = self.orders.get(coid) {
                let (seq, order) = (*seq, order.clone());
                self.persist(Write::Order(seq, order), ctx);
            }
        }
        self.persist(Write::Deal(deal), ctx);
        self.mark();
    }
}

impl Handler<AccountReceived> for Portfolio {
    type Result = ();

    fn handle(&mut self, AccountReceived(info): AccountReceived, _ctx: &mut Self::Context) {
        let mode = AccountMode::from_margin_mode(info.margin_mode);
        let account = self.account(Login(info.login));
        if account.book.mode() != mode && account.book.open_count() == 0 {
            account.book = Book::new(mode);
        }
        account.info = Some(info);
    }
}

impl Handler<PositionsReceived> for Portfolio {
    type Result = ();

    /// Compares the terminal's positions with the book; a difference is reported, never papered over (the
    /// broker is the truth, and a person should look).
    fn handle(&mut self, msg: PositionsReceived, _ctx: &mut Self::Context) {
        let mut broker: HashMap<String, Decimal> = HashMap::new();
        for p in &msg.frame.positions {
            let sign = if p.kind == 0 {
                Decimal::ONE
            } else {
                Decimal::NEGATIVE_ONE
            };
            *broker.entry(p.symbol.clone()).or_default() += p.volume * sign;
        }
        let tenant = self.tenant.id.clone();
        let account = self.account(msg.account);
        let mut symbols: HashSet<String> = broker.keys().cloned().collect();
        symbols.extend(account.book.positions().map(|p| p.symbol.0.clone()));
        for s in symbols {
            let ours = account.book.net(&Symbol(s.clone()));
            let theirs = broker.get(&s).copied().unwrap_or_default();
            if ours != theirs {
                tracing::warn!(tenant = %tenant, account = %msg.account, symbol = %s, trellis = %ours,
                    terminal = %theirs, "position differs from the terminal's");
            }
        }
    }
}

impl Handler<GetInFlight> for Portfolio {
    type Result = MessageResult<GetInFlight>;

    fn handle(&mut self, q: GetInFlight, _ctx: &mut Self::Context) -> Self::Result {
        let mut orders: Vec<(u64, Order)> = self
            .orders
            .values()
            .filter(|(_, o)| o.account == q.account && o.status == OrderStatus::Sent)
            .cloned()
            .collect();
        orders.sort_by_key(|(seq, _)| *seq);
        MessageResult(orders.into_iter().map(|(_, o)| o).collect())
    }
}

impl Handler<GetPortfolio> for Portfolio {
    type Result = MessageResult<GetPortfolio>;

    fn handle(&mut self, _: GetPortfolio, _ctx: &mut Self::Context) -> Self::Result {
        let (_, unrealised, _) = self.pnl();
        let mut merged = Book::new(AccountMode::Netting);
        let mut positions = Vec::new();
        for (login, acc) in &self.accounts {
            merged.realised += acc.book.realised;
            merged.commission += acc.book.commission;
            merged
                .closed_trades
                .extend(acc.book.closed_trades.iter().copied());
            positions.extend(acc.book.positions().map(|p| AccountPosition {
                account: *login,
                position: p.clone(),
            }));
        }
        positions
            .sort_by(|a, b| (a.account, &a.position.symbol).cmp(&(b.account, &b.position.symbol)));
        let orders = self
            .order_ids
            .iter()
            .filter_map(|id| self.orders.get(id))
            .map(|(_, o)| o.clone())
            .collect();
        MessageResult(PortfolioSnapshot {
            orders,
            deals: self.deals.clone(),
            positions,
            performance: performance(&merged, unrealised, &self.curve),
        })
    }
}

impl Handler<Flatten> for Portfolio {
    type Result = MessageResult<Flatten>;

    fn handle(&mut self, msg: Flatten, ctx: &mut Self::Context) -> Self::Result {
        let mut closing = Vec::new();
        for (login, acc) in &self.accounts {
            for p in acc.book.positions() {
                let position = if acc.book.mode() == AccountMode::Hedging {
                    p.position_id
                } else {
                    0
                };
                closing.push((
                    *login,
                    p.symbol.clone(),
                    p.side.opposite(),
                    p.volume,
                    position,
                ));
            }
        }
        let count = closing.len();
        for (login, symbol, side, volume, position) in closing {
            let (seq, order) = self.new_order(None, login, symbol, side, volume);
            tracing::warn!(tenant = %self.tenant.id, reason = %msg.reason, client_order_id = %order.client_order_id,
                "flattening");
            self.dispatch(seq, order, position, ctx);
        }
        MessageResult(count)
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
        let writes: Vec<Write> = self.writes.drain(..).collect();
        let store = live(&self.tenant.relational).ok();
        let tenant = self.tenant.id.0.clone();
        Box::pin(
            async move {
                let Some(store) = store else { return };
                for w in writes {
                    let _ = match w {
                        Write::Order(seq, order) => store
                            .send(SaveOrder {
                                tenant: tenant.clone(),
                                seq,
                                order,
                            })
                            .await
                            .map(|_| ()),
                        Write::Deal(deal) => store
                            .send(SaveDeal {
                                tenant: tenant.clone(),
                                deal,
                            })
                            .await
                            .map(|_| ()),
                    };
                }
            }
            .into_actor(self)
            .map(|_, _, ctx| ctx.stop()),
        )
    }
}
