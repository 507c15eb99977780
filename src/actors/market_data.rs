//! `MarketData`, one per tenant: ticks → bars of every timeframe, fan-out of closed bars to the strategies
//! that trade them, the latest quote per symbol, and batched persistence of ticks and bars.
//!
//! `MarketData` owns the tenant's strategy routes (which strategy trades which symbol and timeframe: the admin
//! API changes them with `SetRoute`/`DropRoute`), its model deployments (`SetDeployment`/`DropDeployment`;
//! closed bars go to the deployments of their symbol and timeframe) and the latest quote per symbol; it
//! publishes them for the others to read (see `tenant`'s "Who owns what").
//!
//! Bars close on tick time (see `domain::bars`), so a replay gives the same bars as the live feed. Bars of
//! every timeframe are stored as they close. Tick persistence is batched (every 100 ms or 2 000 ticks); while
//! the store is away ticks wait in a bounded buffer — market data is the one thing that may be shed under
//! pressure, bars never are.
//!
//! **Warm-up after a start** (process, tenant restart, node take-over; issue 36). The last bars of each
//! series in use (symbol × timeframe of a strategy, a model deployment, or the M1 correlation window) are
//! kept in memory, as deep as the largest warm-up one of its consumers declares (at least
//! [`RECENT_BARS`]). At start they are read from the time-series store before any tick is handled. When a
//! terminal attaches (`TerminalLinked`) the gap between the last bar known and now is asked from it
//! (`FetchBars` → `bars_request`), and so is the history of a series the store lacks; the bars it gives are
//! stored, and its bar still forming seeds the one being built here, so a bar split by the restart is whole.
//! A series is *warm* once loaded and filled (or once the terminal could not fill it: a bridge of protocol
//! version 2, an error, no answer within [`FILL_TIMEOUT`]); `WarmUp` is answered then. A series waits for a
//! terminal `mt5.warm_up_wait_ms` after the start (there are no live bars without one either), then warms
//! from the store alone; a terminal attaching later fills the gap all the same. The same happens at every
//! attach, so bars missed while a link was down are filled in and given to the warm strategies, the model
//! hosts of the series and the correlation window (`CatchUp`).

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;

use super::messages::{
    BarClosed, BarsFetched, CatchUp, DropDeployment, DropRoute, FetchBars, GetRecentBars,
    SetDeployment, SetRoute, TerminalLinked, TickReceived, Warm, WarmUp,
};
use super::tenant::{Quote, StrategyRoute, TenantContext};
use crate::domain::bars::{BarBuilder, TickOutcome};
use crate::domain::{now_ms, Bar, Symbol, Tick, Timeframe};
use crate::metrics::Stage;
use crate::runtime::published::Publisher;
use crate::runtime::supervisor::{ExitNotifier, Shutdown};
use crate::storage::cache::CacheTicks;
use crate::storage::timeseries::{AppendBars, AppendTicks, RecentBars};

/// Closed bars kept per symbol and timeframe at least (a consumer declaring a longer warm-up deepens its
/// series).
pub const RECENT_BARS: usize = 1_000;
/// A terminal that has not answered a `FetchBars` by then is not waited for: the series warms from the store.
pub const FILL_TIMEOUT: Duration = Duration::from_secs(10);
/// The store read at start is not waited for longer (a store that is away: the terminal fills what it can).
const LOAD_TIMEOUT: Duration = Duration::from_secs(10);
/// The deepest series kept (a warm-up asking for more gets this many).
const MAX_DEPTH: usize = 100_000;
const FLUSH_EVERY: Duration = Duration::from_millis(100);
const FLUSH_AT: usize = 2_000;
/// Ticks held while the store is away; beyond this the oldest are shed (and counted).
const MAX_PENDING_TICKS: usize = 1_000_000;

/// The strategy routes by strategy id.
pub type Routes = std::collections::BTreeMap<String, StrategyRoute>;

/// The model deployments by id.
pub type Deployments =
    std::collections::BTreeMap<String, Arc<crate::models::deployment::Deployment>>;

type Key = (Symbol, Timeframe);

/// Where a series stands with the terminal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fill {
    /// Not asked yet (no terminal has attached since the series was loaded).
    Needed,
    /// Asked; the request's id.
    Asked(u64),
    /// Answered, refused or timed out; whether the terminal gave bars.
    Done { from_terminal: bool },
}

/// One symbol × timeframe: its last bars, oldest first, and its warm-up.
struct Series {
    bars: VecDeque<Bar>,
    /// Bars kept: the deepest warm-up asked (at least `RECENT_BARS`).
    depth: usize,
    /// Depth read from the store so far.
    loaded: usize,
    loading: bool,
    fill: Fill,
    /// Whether the terminal has filled it at least once (what `WarmUp` waits for).
    warm: bool,
    waiters: Vec<(usize, Option<i64>, tokio::sync::oneshot::Sender<Warm>)>,
}

impl Series {
    fn new() -> Self {
        Self {
            bars: VecDeque::new(),
            depth: RECENT_BARS,
            loaded: 0,
            loading: false,
            fill: Fill::Needed,
            warm: false,
            waiters: Vec::new(),
        }
    }

    /// Adds bars this series lacks (a bar it has is kept: it is the one already routed); the bars added.
    fn merge(&mut self, bars: Vec<Bar>) -> Vec<Bar> {
        let mut added = Vec::new();
        for bar in bars {
            let pos = self
                .bars
                .partition_point(|b| b.open_time_ms < bar.open_time_ms);
            if self
                .bars
                .get(pos)
                .is_some_and(|b| b.open_time_ms == bar.open_time_ms)
            {
                continue;
            }
            self.bars.insert(pos, bar.clone());
            added.push(bar);
        }
        self.trim();
        added
    }

    fn push(&mut self, bar: Bar) {
        match self.bars.back() {
            Some(last) if last.open_time_ms >= bar.open_time_ms => {
                self.merge(vec![bar]);
            }
            _ => {
                self.bars.push_back(bar);
                self.trim();
            }
        }
    }

    fn trim(&mut self) {
        while self.bars.len() > self.depth {
            self.bars.pop_front();
        }
    }

    fn last(&self, n: usize) -> Vec<Bar> {
        self.bars
            .iter()
            .skip(self.bars.len().saturating_sub(n))
            .cloned()
            .collect()
    }

    /// The last `n` bars, reaching back to the one opened at `since_ms` when it is held.
    fn since(&self, n: usize, since_ms: Option<i64>) -> Vec<Bar> {
        let from = self.bars.len().saturating_sub(n);
        let from = match since_ms {
            Some(t) if self.bars.front().is_some_and(|b| b.open_time_ms <= t) => {
                from.min(self.bars.partition_point(|b| b.open_time_ms < t))
            }
            _ => from,
        };
        self.bars.iter().skip(from).cloned().collect()
    }
}

pub struct MarketData {
    tenant: Arc<TenantContext>,
    routes: Publisher<Routes>,
    deployments: Publisher<Deployments>,
    quotes: Publisher<HashMap<Symbol, Quote>>,
    builder: BarBuilder,
    series: HashMap<Key, Series>,
    /// Where to ask for bars: the last terminal that attached speaking `bars_request`.
    terminal: Option<actix::Recipient<FetchBars>>,
    /// Whether a terminal that cannot answer has attached (and none that can since), or none attached within
    /// `mt5.warm_up_wait_ms` of the start: series warm from the store alone then.
    old_terminal: bool,
    asked: HashMap<u64, Key>,
    next_request: u64,
    pending_ticks: Vec<Tick>,
    pending_bars: Vec<Bar>,
    /// Latest tick per symbol since the last cache write (only with a cache configured).
    for_cache: HashMap<Symbol, Tick>,
    flushing: bool,
    notifier: ExitNotifier,
}

impl MarketData {
    /// A new incarnation, starting from the routes and quotes its predecessor published.
    pub fn new(
        tenant: Arc<TenantContext>,
        routes: Publisher<Routes>,
        deployments: Publisher<Deployments>,
        quotes: Publisher<HashMap<Symbol, Quote>>,
        notifier: ExitNotifier,
    ) -> Self {
        Self {
            tenant,
            routes,
            deployments,
            quotes,
            builder: BarBuilder::all(),
            series: HashMap::new(),
            terminal: None,
            old_terminal: false,
            asked: HashMap::new(),
            next_request: 0,
            pending_ticks: Vec::new(),
            pending_bars: Vec::new(),
            for_cache: HashMap::new(),
            flushing: false,
            notifier,
        }
    }

    fn fan_out(&self, bar: &Bar, origin: Option<std::time::Instant>) {
        let routes = self.routes.current();
        let mut wanted = routes.values().filter(|r| {
            r.settings.enabled && r.symbol == bar.symbol && r.timeframe == bar.timeframe
        });
        let Some(first) = wanted.next() else {
            return;
        };
        let hosts = self.tenant.strategy_hosts.read();
        for route in std::iter::once(first).chain(wanted) {
            if let Some(host) = hosts.get(&route.settings.id) {
                // Bars are few and must not be lost: do_send ignores the mailbox bound.
                host.do_send(BarClosed(bar.clone(), origin));
            }
        }
    }

    /// Closed bars to the model deployments of their symbol and timeframe, after the strategies had them.
    fn fan_out_models(&self, bar: &Bar, origin: Option<std::time::Instant>) {
        let deployments = self.deployments.current();
        if deployments.is_empty() {
            return;
        }
        let hosts = self.tenant.model_hosts.read();
        for d in deployments.values() {
            if d.symbol == bar.symbol && d.timeframe == bar.timeframe {
                if let Some(host) = hosts.get(&d.id) {
                    host.do_send(BarClosed(bar.clone(), origin));
                }
            }
        }
    }

    /// The series in use and the depth each needs: every strategy's declared warm-up, model deployments,
    /// and the M1 correlation window of the tenant's symbols.
    fn in_use(&self) -> HashMap<Key, usize> {
        let mut need: HashMap<Key, usize> = HashMap::new();
        for r in self.routes.current().values() {
            let s = &r.settings;
            let warm_up = self
                .tenant
                .registry
                .build(&s.kind, &s.params, s.volume.get())
                .map(|strategy| strategy.warm_up_bars())
                .unwrap_or(RECENT_BARS);
            let e = need.entry((r.symbol.clone(), r.timeframe)).or_default();
            *e = (*e).max(warm_up);
        }
        for d in self.deployments.current().values() {
            need.entry((d.symbol.clone(), d.timeframe)).or_default();
        }
        for symbol in &self.tenant.symbols {
            need.entry((Symbol::new(symbol.clone()), Timeframe::M1))
                .or_default();
        }
        need
    }

    /// Makes sure `key` is kept `depth` deep, reading what it lacks from the store.
    fn ensure(&mut self, key: &Key, depth: usize, ctx: &mut Context<Self>) {
        let series = self.series.entry(key.clone()).or_insert_with(Series::new);
        series.depth = series.depth.max(depth.min(MAX_DEPTH));
        if series.loaded >= series.depth || series.loading {
            return;
        }
        series.loading = true;
        let depth = series.depth;
        let store = self.tenant.timeseries.clone();
        let q = RecentBars {
            tenant: self.tenant.id.0.clone(),
            symbol: key.0.clone(),
            timeframe: key.1,
            before_ms: i64::MAX,
            limit: depth,
        };
        let key = key.clone();
        ctx.spawn(
            async move { tokio::time::timeout(LOAD_TIMEOUT, store.recent_bars(q)).await }
                .into_actor(self)
                .map(move |res, act, ctx| act.loaded(key, depth, res, ctx)),
        );
    }

    fn loaded(
        &mut self,
        key: Key,
        depth: usize,
        res: Result<Result<Vec<Bar>, crate::storage::StorageError>, tokio::time::error::Elapsed>,
        ctx: &mut Context<Self>,
    ) {
        let Some(series) = self.series.get_mut(&key) else {
            return;
        };
        series.loading = false;
        series.loaded = depth;
        match res {
            Ok(Ok(bars)) => {
                let n = bars.len();
                series.merge(bars);
                tracing::debug!(tenant = %self.tenant.id, symbol = %key.0, timeframe = ?key.1, bars = n,
                    "bars loaded from the store");
            }
            Ok(Err(e)) => {
                tracing::warn!(tenant = %self.tenant.id, symbol = %key.0, timeframe = ?key.1,
                error = %e, "stored bars not readable: the terminal fills what it can")
            }
            Err(_) => tracing::warn!(tenant = %self.tenant.id, symbol = %key.0, timeframe = ?key.1,
                "the store did not answer in time: the terminal fills what it can"),
        }
        if series.depth > depth {
            // A deeper warm-up was asked meanwhile.
            return self.ensure(&key, 0, ctx);
        }
        self.fill(&key, ctx);
    }

    /// Asks the terminal for the bars between the last one known and now (or for the series' depth when
    /// it has none); with no terminal that can answer, the series is warm from the store.
    fn fill(&mut self, key: &Key, ctx: &mut Context<Self>) {
        let Some(series) = self.series.get_mut(key) else {
            return;
        };
        if series.loading || matches!(series.fill, Fill::Asked(_) | Fill::Done { .. }) {
            return;
        }
        let Some(terminal) = self.terminal.clone() else {
            if self.old_terminal {
                series.fill = Fill::Done {
                    from_terminal: false,
                };
                self.answer(key);
            }
            return;
        };
        let tf = key.1.millis();
        // Market time may run ahead of the wall clock (a replay, a fast simulated clock).
        let quoted = self
            .quotes
            .current()
            .get(&key.0)
            .map_or(i64::MIN, |q| q.time_msc);
        let to_ms = now_ms().max(quoted).saturating_add(tf);
        // A series the store lacks takes the terminal's newest bars, however old (its clock may not be ours).
        let from_ms = match series.bars.back() {
            Some(last) => last.open_time_ms.saturating_add(tf),
            None => 0,
        };
        self.next_request += 1;
        let id = self.next_request;
        series.fill = Fill::Asked(id);
        self.asked.insert(id, key.clone());
        terminal.do_send(FetchBars {
            request_id: id,
            symbol: key.0.clone(),
            timeframe: key.1,
            from_ms,
            to_ms,
            count: series.depth,
        });
        ctx.run_later(FILL_TIMEOUT, move |act, _ctx| {
            if let Some(key) = act.asked.remove(&id) {
                tracing::warn!(tenant = %act.tenant.id, symbol = %key.0, timeframe = ?key.1,
                    "the terminal did not send the bars asked in time: warm from the store alone");
                act.filled(&key, false);
            }
        });
    }

    fn filled(&mut self, key: &Key, from_terminal: bool) {
        if let Some(series) = self.series.get_mut(key) {
            series.fill = Fill::Done { from_terminal };
        }
        self.answer(key);
    }

    /// Answers the warm-ups waiting on `key` once it is warm.
    fn answer(&mut self, key: &Key) {
        let Some(series) = self.series.get_mut(key) else {
            return;
        };
        let Fill::Done { from_terminal } = series.fill else {
            return;
        };
        if series.loading || series.loaded < series.depth {
            return;
        }
        series.warm = true;
        for (n, since, tx) in std::mem::take(&mut series.waiters) {
            let _ = tx.send(Warm {
                bars: series.since(n, since),
                from_terminal,
            });
        }
    }

    /// Writes what is pending; on failure puts it back in front and tries again at the next flush.
    fn flush(&mut self, ctx: &mut Context<Self>) {
        if self.flushing || (self.pending_ticks.is_empty() && self.pending_bars.is_empty()) {
            return;
        }
        if !self.tenant.timeseries.is_live() {
            return self.shed();
        }
        let store = self.tenant.timeseries.clone();
        self.flushing = true;
        let ticks = std::mem::take(&mut self.pending_ticks);
        let bars = std::mem::take(&mut self.pending_bars);
        let tenant = self.tenant.id.0.clone();
        let (t2, b2) = (ticks.clone(), bars.clone());
        ctx.spawn(
            async move {
                let bars_ok = bars.is_empty()
                    || store
                        .append_bars(AppendBars {
                            tenant: tenant.clone(),
                            bars,
                        })
                        .await
                        .is_ok();
                let ticks_ok = ticks.is_empty()
                    || store
                        .append_ticks(AppendTicks { tenant, ticks })
                        .await
                        .is_ok();
                (bars_ok, ticks_ok)
            }
            .into_actor(self)
            .map(move |(bars_ok, ticks_ok), act, _ctx| {
                act.flushing = false;
                if !bars_ok {
                    let newer = std::mem::replace(&mut act.pending_bars, b2);
                    act.pending_bars.extend(newer);
                }
                if !ticks_ok {
                    let newer = std::mem::replace(&mut act.pending_ticks, t2);
                    act.pending_ticks.extend(newer);
                    act.shed();
                }
            }),
        );
    }

    fn shed(&mut self) {
        if self.pending_ticks.len() > MAX_PENDING_TICKS {
            let excess = self.pending_ticks.len() - MAX_PENDING_TICKS;
            self.pending_ticks.drain(..excess);
            for _ in 0..excess {
                self.tenant.metrics.tick_dropped("persist_overflow");
            }
        }
    }
}

impl Actor for MarketData {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(8_192);
        let wait = Duration::from_millis(self.tenant.mt5.warm_up_wait_ms);
        ctx.run_later(wait, |act, ctx| {
            if act.terminal.is_none() && !act.old_terminal {
                tracing::warn!(tenant = %act.tenant.id, waited_ms = act.tenant.mt5.warm_up_wait_ms,
                    "no terminal attached to fill the bars missed while down: strategies warm up from the store alone (the terminal fills the gap when it attaches)");
                act.old_terminal = true;
                let keys: Vec<Key> = act.series.keys().cloned().collect();
                for key in keys {
                    act.fill(&key, ctx);
                }
            }
        });
        // The stored bars of every series in use, before the first tick is handled.
        let need = self.in_use();
        let store = self.tenant.timeseries.clone();
        let tenant = self.tenant.id.0.clone();
        let asks: Vec<(Key, usize)> = need
            .into_iter()
            .map(|(k, d)| (k, d.clamp(RECENT_BARS, MAX_DEPTH)))
            .collect();
        for (key, depth) in &asks {
            let series = self.series.entry(key.clone()).or_insert_with(Series::new);
            series.depth = *depth;
            series.loading = true;
        }
        ctx.wait(
            async move {
                let mut out = Vec::new();
                for (key, depth) in asks {
                    let q = RecentBars {
                        tenant: tenant.clone(),
                        symbol: key.0.clone(),
                        timeframe: key.1,
                        before_ms: i64::MAX,
                        limit: depth,
                    };
                    let res = tokio::time::timeout(LOAD_TIMEOUT, store.recent_bars(q)).await;
                    out.push((key, depth, res));
                }
                out
            }
            .into_actor(self)
            .map(|loaded, act, ctx| {
                for (key, depth, res) in loaded {
                    act.loaded(key, depth, res, ctx);
                }
            }),
        );
        ctx.run_interval(FLUSH_EVERY, |act, ctx| act.flush(ctx));
        if self.tenant.cache.is_some() {
            ctx.run_interval(FLUSH_EVERY, |act, _| {
                let cache = act.tenant.cache.as_ref().and_then(|slot| slot.get());
                if let (Some(cache), false) = (cache, act.for_cache.is_empty()) {
                    let ticks = act.for_cache.drain().map(|(_, t)| t).collect();
                    cache.do_send(CacheTicks {
                        tenant: act.tenant.id.0.clone(),
                        ticks,
                    });
                }
            });
        }
    }

    fn stopped(&mut self, _ctx: &mut Self::Context) {
        self.notifier.mark_stopped();
    }
}

impl Handler<TickReceived> for MarketData {
    type Result = ();

    fn handle(&mut self, TickReceived(tick, read_at): TickReceived, ctx: &mut Self::Context) {
        self.tenant.metrics.tick();
        match self.builder.on_tick(&tick) {
            TickOutcome::OutOfOrder { last_time_msc } => {
                self.tenant.metrics.tick_dropped("out_of_order");
                tracing::debug!(tenant = %self.tenant.id, symbol = %tick.symbol, time_msc = tick.time_msc,
                    last_time_msc, "out-of-order tick dropped");
                return;
            }
            TickOutcome::Accepted(closed) => {
                for bar in closed {
                    self.tenant.metrics.bar_closed();
                    self.tenant.metrics.stage(Stage::Bar, read_at);
                    // Strategies first, then models; clients and the correlation engine after them.
                    self.fan_out(&bar, Some(read_at));
                    self.fan_out_models(&bar, Some(read_at));
                    self.tenant.feed.bar_closed(&bar);
                    if bar.timeframe == Timeframe::M1 {
                        // The correlation engine (after the strategies: never in their way).
                        if let Some(risk) = self.tenant.risk.get() {
                            risk.do_send(BarClosed(bar.clone(), None));
                        }
                    }
                    self.series
                        .entry((bar.symbol.clone(), bar.timeframe))
                        .or_insert_with(Series::new)
                        .push(bar.clone());
                    self.pending_bars.push(bar);
                }
            }
        }
        let quote = Quote {
            bid: tick.bid,
            ask: tick.ask,
            time_msc: tick.time_msc,
        };
        self.quotes
            .modify(|quotes| match quotes.get_mut(&tick.symbol) {
                Some(q) => *q = quote,
                None => {
                    quotes.insert(tick.symbol.clone(), quote);
                }
            });
        self.tenant.feed.ring();
        if self.tenant.cache.is_some() {
            self.for_cache.insert(tick.symbol.clone(), tick.clone());
        }
        self.pending_ticks.push(tick);
        if self.pending_ticks.len() >= FLUSH_AT {
            self.flush(ctx);
        }
    }
}

impl Handler<super::messages::Crash> for MarketData {
    type Result = ();

    fn handle(&mut self, msg: super::messages::Crash, _ctx: &mut Self::Context) {
        panic!("injected fault: {}", msg.reason);
    }
}

impl Handler<SetRoute> for MarketData {
    type Result = ();

    fn handle(&mut self, SetRoute(route): SetRoute, _ctx: &mut Self::Context) {
        tracing::info!(tenant = %self.tenant.id, strategy = %route.settings.id, symbol = %route.symbol,
            timeframe = ?route.timeframe, enabled = route.settings.enabled, "strategy route set");
        self.routes.modify(|routes| {
            routes.insert(route.settings.id.clone(), route);
        });
    }
}

impl Handler<DropRoute> for MarketData {
    type Result = ();

    fn handle(&mut self, DropRoute(id): DropRoute, _ctx: &mut Self::Context) {
        tracing::info!(tenant = %self.tenant.id, strategy = %id, "strategy route removed");
        self.routes.modify(|routes| {
            routes.remove(&id);
        });
    }
}

impl Handler<SetDeployment> for MarketData {
    type Result = ();

    fn handle(&mut self, SetDeployment(d): SetDeployment, _ctx: &mut Self::Context) {
        tracing::info!(tenant = %self.tenant.id, deployment = %d.id, symbol = %d.symbol,
            timeframe = ?d.timeframe, "model deployment set");
        self.deployments.modify(|all| {
            all.insert(d.id.clone(), d);
        });
    }
}

impl Handler<DropDeployment> for MarketData {
    type Result = ();

    fn handle(&mut self, DropDeployment(id): DropDeployment, _ctx: &mut Self::Context) {
        tracing::info!(tenant = %self.tenant.id, deployment = %id, "model deployment removed");
        self.deployments.modify(|all| {
            all.remove(&id);
        });
    }
}

impl Handler<GetRecentBars> for MarketData {
    type Result = MessageResult<GetRecentBars>;

    /// What is in memory now (warm or not): for snapshots and consumers that do not wait.
    fn handle(&mut self, q: GetRecentBars, _ctx: &mut Self::Context) -> Self::Result {
        let bars = self
            .series
            .get(&(q.symbol, q.timeframe))
            .map(|s| s.last(q.limit))
            .unwrap_or_default();
        MessageResult(bars)
    }
}

impl Handler<WarmUp> for MarketData {
    type Result = ResponseFuture<Warm>;

    fn handle(&mut self, q: WarmUp, ctx: &mut Self::Context) -> Self::Result {
        let key = (q.symbol, q.timeframe);
        self.ensure(&key, q.bars, ctx);
        let (tx, rx) = tokio::sync::oneshot::channel();
        if let Some(series) = self.series.get_mut(&key) {
            series.waiters.push((q.bars, q.since_ms, tx));
        }
        self.answer(&key);
        self.fill(&key, ctx);
        Box::pin(async move { rx.await.unwrap_or_default() })
    }
}

impl Handler<TerminalLinked> for MarketData {
    type Result = ();

    /// Every attach fills the gaps again: bars missed while a link was down come back too.
    fn handle(&mut self, msg: TerminalLinked, ctx: &mut Self::Context) {
        if msg.serves_bars {
            self.terminal = Some(msg.session);
            self.old_terminal = false;
        } else {
            tracing::warn!(tenant = %self.tenant.id, login = %msg.login,
                "this bridge speaks protocol version 2 and cannot send bar history: strategies warm up from the store alone (upgrade the bridge to fill the gap of a restart)");
            if self.terminal.is_none() {
                self.old_terminal = true;
            }
        }
        let keys: Vec<Key> = self.series.keys().cloned().collect();
        for key in keys {
            if let Some(series) = self.series.get_mut(&key) {
                if matches!(series.fill, Fill::Done { .. }) && msg.serves_bars {
                    series.fill = Fill::Needed;
                }
            }
            self.fill(&key, ctx);
        }
    }
}

impl Handler<BarsFetched> for MarketData {
    type Result = ();

    fn handle(&mut self, msg: BarsFetched, _ctx: &mut Self::Context) {
        let Some(key) = self.asked.remove(&msg.request_id) else {
            return; // timed out before: the series is warm from the store
        };
        if let Some(why) = &msg.error {
            tracing::warn!(tenant = %self.tenant.id, symbol = %key.0, timeframe = ?key.1, reason = %why,
                "the terminal sent no bars: warm from the store alone");
            return self.filled(&key, false);
        }
        let Some(series) = self.series.get_mut(&key) else {
            return;
        };
        let got = msg.bars.len();
        let wanted = msg
            .bars
            .into_iter()
            .filter(|b| b.symbol == key.0 && b.timeframe == key.1);
        let added = series.merge(wanted.collect());
        let was_warm = series.warm;
        if let Some(forming) = msg
            .forming
            .filter(|b| b.symbol == key.0 && b.timeframe == key.1)
        {
            self.builder.seed(&forming);
        }
        tracing::info!(tenant = %self.tenant.id, symbol = %key.0, timeframe = ?key.1, sent = got,
            added = added.len(), "bars filled in from the terminal");
        if was_warm && !added.is_empty() {
            // Warm strategies of this series missed these while the link was down.
            let routes = self.routes.current();
            let hosts = self.tenant.strategy_hosts.read();
            for r in routes.values() {
                if r.symbol == key.0 && r.timeframe == key.1 {
                    if let Some(host) = hosts.get(&r.settings.id) {
                        host.do_send(CatchUp(added.clone()));
                    }
                }
            }
        }
        if !added.is_empty() {
            // Model features and the correlation window took what the store had at their start: the
            // terminal's bars complete them (a bar older than what they saw live is ignored by them).
            let deployments = self.deployments.current();
            let hosts = self.tenant.model_hosts.read();
            for d in deployments.values() {
                if d.symbol == key.0 && d.timeframe == key.1 {
                    if let Some(host) = hosts.get(&d.id) {
                        host.do_send(CatchUp(added.clone()));
                    }
                }
            }
            if key.1 == Timeframe::M1 {
                if let Some(risk) = self.tenant.risk.get() {
                    risk.do_send(CatchUp(added.clone()));
                }
            }
        }
        self.pending_bars.extend(added);
        self.filled(&key, true);
    }
}

impl Handler<Shutdown> for MarketData {
    type Result = ResponseActFuture<Self, ()>;

    /// Writes what is pending before stopping.
    fn handle(&mut self, _msg: Shutdown, _ctx: &mut Self::Context) -> Self::Result {
        let ticks = std::mem::take(&mut self.pending_ticks);
        let bars = std::mem::take(&mut self.pending_bars);
        let store = self.tenant.timeseries.clone();
        let tenant = self.tenant.id.0.clone();
        Box::pin(
            async move {
                if !bars.is_empty() {
                    let _ = store
                        .append_bars(AppendBars {
                            tenant: tenant.clone(),
                            bars,
                        })
                        .await;
                }
                if !ticks.is_empty() {
                    let _ = store.append_ticks(AppendTicks { tenant, ticks }).await;
                }
            }
            .into_actor(self)
            .map(|_, _, ctx| ctx.stop()),
        )
    }
}
