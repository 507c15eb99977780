//! `MarketData`, one per tenant: ticks → bars of every timeframe, fan-out of closed bars to the strategies
//! that trade them, the latest quote per symbol, and batched persistence of ticks and bars.
//!
//! `MarketData` owns the tenant's strategy routes (which strategy trades which symbol and timeframe: the admin
//! API changes them with `SetRoute`/`DropRoute`), its model deployments (`SetDeployment`/`DropDeployment`;
//! closed bars go to the deployments of their symbol and timeframe) and the latest quote per symbol; it
//! publishes them for the others to read (see `tenant`'s "Who owns what").
//!
//! Bars close on tick time (see `domain::bars`), so a replay gives the same bars as the live feed. The last
//! bars of each symbol and timeframe stay in memory so a restarted strategy can rebuild its indicators.
//! Tick persistence is batched (every 100 ms or 2 000 ticks); while the store is away ticks wait in a
//! bounded buffer — market data is the one thing that may be shed under pressure, bars never are.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;

use super::messages::{
    BarClosed, DropDeployment, DropRoute, GetRecentBars, SetDeployment, SetRoute, TickReceived,
};
use super::tenant::{Quote, StrategyRoute, TenantContext};
use crate::domain::bars::{BarBuilder, TickOutcome};
use crate::domain::{Bar, Symbol, Tick, Timeframe};
use crate::runtime::published::Publisher;
use crate::runtime::supervisor::{ExitNotifier, Shutdown};
use crate::storage::cache::CacheTicks;
use crate::storage::timeseries::{AppendBars, AppendTicks};

/// Closed bars kept per symbol and timeframe for warm-ups.
pub const RECENT_BARS: usize = 1_000;
const FLUSH_EVERY: Duration = Duration::from_millis(100);
const FLUSH_AT: usize = 2_000;
/// Ticks held while the store is away; beyond this the oldest are shed (and counted).
const MAX_PENDING_TICKS: usize = 1_000_000;

/// The strategy routes by strategy id.
pub type Routes = std::collections::BTreeMap<String, StrategyRoute>;

/// The model deployments by id.
pub type Deployments =
    std::collections::BTreeMap<String, Arc<crate::models::deployment::Deployment>>;

pub struct MarketData {
    tenant: Arc<TenantContext>,
    routes: Publisher<Routes>,
    deployments: Publisher<Deployments>,
    quotes: Publisher<HashMap<Symbol, Quote>>,
    builder: BarBuilder,
    recent: HashMap<(Symbol, Timeframe), VecDeque<Bar>>,
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
            recent: HashMap::new(),
            pending_ticks: Vec::new(),
            pending_bars: Vec::new(),
            for_cache: HashMap::new(),
            flushing: false,
            notifier,
        }
    }

    fn fan_out(&self, bar: &Bar) {
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
                host.do_send(BarClosed(bar.clone()));
            }
        }
    }

    /// Closed bars to the model deployments of their symbol and timeframe, after the strategies had them.
    fn fan_out_models(&self, bar: &Bar) {
        let deployments = self.deployments.current();
        if deployments.is_empty() {
            return;
        }
        let hosts = self.tenant.model_hosts.read();
        for d in deployments.values() {
            if d.symbol == bar.symbol && d.timeframe == bar.timeframe {
                if let Some(host) = hosts.get(&d.id) {
                    host.do_send(BarClosed(bar.clone()));
                }
            }
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

    fn handle(&mut self, TickReceived(tick): TickReceived, ctx: &mut Self::Context) {
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
                    self.tenant.feed.bar_closed(&bar);
                    self.fan_out(&bar);
                    self.fan_out_models(&bar);
                    if bar.timeframe == Timeframe::M1 {
                        // The correlation engine (after the strategies: never in their way).
                        if let Some(risk) = self.tenant.risk.get() {
                            risk.do_send(BarClosed(bar.clone()));
                        }
                    }
                    let recent = self
                        .recent
                        .entry((bar.symbol.clone(), bar.timeframe))
                        .or_default();
                    if recent.len() == RECENT_BARS {
                        recent.pop_front();
                    }
                    recent.push_back(bar.clone());
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

    fn handle(&mut self, q: GetRecentBars, _ctx: &mut Self::Context) -> Self::Result {
        let bars = self
            .recent
            .get(&(q.symbol, q.timeframe))
            .map(|r| {
                r.iter()
                    .skip(r.len().saturating_sub(q.limit))
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        MessageResult(bars)
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
