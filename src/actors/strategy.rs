//! `StrategyHost`, one per strategy instance: runs strategy code behind `catch_unwind` and turns its
//! targets into `Signal`s for the portfolio.
//!
//! The code is not ours to trust. A panic fails this actor alone (its supervisor starts a fresh one).
//!
//! **Warm-up.** Every instance — after a process restart, a tenant restart, a node take-over, a panic, or
//! a strategy created or enabled through the API — starts `warming`: it asks market data for the bars it
//! declares it needs (`Strategy::warm_up_bars`, e.g. three slow periods for an EMA), which market data
//! answers once the series is loaded from the store and its gap up to now filled from the terminal. Then:
//! - a strategy that keeps a **snapshot** (`Strategy::snapshot`: `ema_cross`, `rsi_reversion`,
//!   `donchian_breakout`) gets back its state after the last bar it handled, stored at each bar, and only
//!   the bars after that one are replayed: its decisions are bit for bit those of an uninterrupted run;
//! - otherwise (no snapshot yet, settings changed since, a snapshot older than the bars available, or a
//!   kind that keeps none) the warm-up bars are **replayed** from a fresh instance.
//!
//! Replayed signals are discarded (the portfolio's stored positions are the truth of what is held). Live
//! bars that close meanwhile are held, not lost, and handled as live once the strategy is `ready`. A bar
//! that panics during the replay is skipped (and counted in the log), so one poison bar cannot keep the
//! strategy in a restart loop.

use std::sync::Arc;

use actix::prelude::*;

use super::messages::{
    BarClosed, CatchUp, GetStrategyState, PredictionMade, Signal, StrategyFilled, StrategyState,
    Warm, WarmUp,
};
use super::tenant::{StrategyRoute, TenantContext};
use crate::domain::{Bar, Login, Prediction};
use crate::runtime::supervisor::{contain, ExitNotifier, Shutdown};
use crate::storage::relational::{LoadStrategySnapshot, SaveStrategySnapshot, StrategySnapshot};
use crate::strategies::Strategy;

/// Bars replayed into a strategy that declares no warm-up of its own (see `Strategy::warm_up_bars`).
pub const WARM_UP_BARS: usize = crate::strategies::DEFAULT_WARM_UP_BARS;

/// What arrived while the strategy was warming, handled in order once it is ready.
enum Held {
    Bar(Bar),
    Prediction(Prediction),
    Fill(StrategyFilled),
}

pub struct StrategyHost {
    tenant: Arc<TenantContext>,
    route: StrategyRoute,
    strategy: Box<dyn Strategy>,
    /// Open time of the last bar handled: a bar seen in warm-up and again as an event is handled once.
    last_bar_ms: i64,
    ready: bool,
    warmed_by: &'static str,
    held: Vec<Held>,
    /// The kind, parameters, symbol and timeframe: a snapshot of other settings is not restored.
    fingerprint: String,
    /// A snapshot write in flight, and the newest one waiting behind it (only the newest matters).
    saving: bool,
    unsaved: Option<StrategySnapshot>,
    notifier: ExitNotifier,
    /// When the frame of the tick that closed the bar being handled was read (stage timings).
    origin: Option<std::time::Instant>,
}

impl StrategyHost {
    pub fn new(
        tenant: Arc<TenantContext>,
        route: StrategyRoute,
        strategy: Box<dyn Strategy>,
        notifier: ExitNotifier,
    ) -> Self {
        let s = &route.settings;
        let fingerprint = serde_json::json!({
            "kind": s.kind, "params": s.params, "symbol": route.symbol.as_str(),
            "timeframe": route.timeframe.as_str(),
        })
        .to_string();
        Self {
            tenant,
            route,
            strategy,
            last_bar_ms: i64::MIN,
            ready: false,
            warmed_by: "none",
            held: Vec::new(),
            fingerprint,
            saving: false,
            unsaved: None,
            notifier,
            origin: None,
        }
    }

    fn signal(&self, target: rust_decimal::Decimal, at_ms: i64, cause: Option<Prediction>) {
        if let Some(origin) = self.origin {
            self.tenant
                .metrics
                .stage(crate::metrics::Stage::Strategy, origin);
        }
        if let Some(portfolio) = self.tenant.portfolio.get() {
            portfolio.do_send(Signal {
                origin: self.origin,
                strategy_id: self.route.settings.id.clone(),
                account: self.route.settings.account.map(Login::new),
                symbol: self.route.symbol.clone(),
                target,
                at_ms,
                cause,
            });
        }
    }

    fn fail(&mut self, why: String, ctx: &mut Context<Self>) {
        tracing::warn!(tenant = %self.tenant.id, strategy = %self.route.settings.id, reason = %why, "strategy failed");
        self.notifier.fail(why);
        ctx.stop();
    }

    /// Restores the stored state when it continues into `bars`, then replays what follows it (signals
    /// discarded); how it was warmed.
    fn warm(&mut self, snapshot: Option<StrategySnapshot>, warm: Warm) -> &'static str {
        // Bars that closed live while warming are handled as live, not replayed. The answer reaches back to
        // the stored state's bar when market data still holds it (an outage longer than the warm-up).
        let first_live = self.held.iter().find_map(|h| match h {
            Held::Bar(b) => Some(b.open_time_ms),
            _ => None,
        });
        let bars: Vec<&Bar> = warm
            .bars
            .iter()
            .filter(|b| first_live.is_none_or(|live| b.open_time_ms < live))
            .collect();
        let mut from_ms = i64::MIN;
        let mut how = "replay";
        if let Some(s) = snapshot.filter(|s| s.fingerprint == self.fingerprint) {
            // The bars must reach back to the snapshot's bar, or some after it are missing.
            let continues = bars
                .first()
                .is_some_and(|first| first.open_time_ms <= s.bar_open_ms)
                || bars.is_empty();
            let state = serde_json::from_str::<serde_json::Value>(&s.state);
            match (continues, state) {
                (true, Ok(state)) => match self.strategy.restore(&state) {
                    Ok(()) => {
                        from_ms = s.bar_open_ms;
                        self.last_bar_ms = s.bar_open_ms;
                        how = "snapshot";
                    }
                    Err(why) => {
                        tracing::warn!(tenant = %self.tenant.id, strategy = %self.route.settings.id,
                            reason = %why, "stored strategy state not restored; warming up by replay");
                    }
                },
                (false, _) => {
                    tracing::info!(tenant = %self.tenant.id, strategy = %self.route.settings.id,
                        snapshot_bar_ms = s.bar_open_ms, "stored strategy state older than the bars available; warming up by replay");
                }
                (true, Err(e)) => {
                    tracing::warn!(tenant = %self.tenant.id, strategy = %self.route.settings.id,
                        error = %e, "stored strategy state unreadable; warming up by replay");
                }
            }
        }
        // The bar that made the last incarnation panic may be among these: a panic here skips that bar
        // instead of failing again, or one poison bar would restart the strategy until it escalates.
        let mut skipped = 0;
        let mut replayed = 0;
        for bar in bars.into_iter().filter(|b| b.open_time_ms > from_ms) {
            let strategy = &mut self.strategy;
            if contain(|| strategy.on_bar(bar)).is_err() {
                skipped += 1;
            }
            replayed += 1;
            self.last_bar_ms = bar.open_time_ms;
        }
        tracing::info!(tenant = %self.tenant.id, strategy = %self.route.settings.id, by = how, bars = replayed,
            skipped, from_terminal = warm.from_terminal, "warmed up");
        how
    }

    fn on_bar(&mut self, bar: Bar, ctx: &mut Context<Self>) {
        if bar.open_time_ms <= self.last_bar_ms {
            return;
        }
        self.last_bar_ms = bar.open_time_ms;
        let strategy = &mut self.strategy;
        match contain(|| strategy.on_bar(&bar)) {
            Ok(Some(target)) => {
                self.signal(target, bar.open_time_ms + bar.timeframe.millis(), None)
            }
            Ok(None) => {}
            Err(why) => return self.fail(why, ctx),
        }
        self.snapshot(ctx);
    }

    /// Stores the state after the bar just handled; a write in flight is followed by the newest state only.
    fn snapshot(&mut self, ctx: &mut Context<Self>) {
        let strategy = &self.strategy;
        let Ok(Some(state)) = contain(|| strategy.snapshot()) else {
            return;
        };
        self.unsaved = Some(StrategySnapshot {
            strategy_id: self.route.settings.id.clone(),
            fingerprint: self.fingerprint.clone(),
            bar_open_ms: self.last_bar_ms,
            state: state.to_string(),
        });
        self.save(ctx);
    }

    fn save(&mut self, ctx: &mut Context<Self>) {
        if self.saving {
            return;
        }
        let Some(snapshot) = self.unsaved.take() else {
            return;
        };
        self.saving = true;
        let store = self.tenant.relational.clone();
        let msg = SaveStrategySnapshot {
            tenant: self.tenant.id.0.clone(),
            snapshot,
            fence: self.tenant.fence,
        };
        ctx.spawn(
            async move { store.save_strategy_snapshot(msg).await }
                .into_actor(self)
                .map(|res, act, ctx| {
                    act.saving = false;
                    if let Err(e) = res {
                        // The next bar writes a newer one; a restart before it replays from an older one.
                        tracing::debug!(tenant = %act.tenant.id, strategy = %act.route.settings.id, error = %e,
                            "strategy state not stored");
                    }
                    act.save(ctx);
                }),
        );
    }

    fn on_prediction(&mut self, p: Prediction, ctx: &mut Context<Self>) {
        let strategy = &mut self.strategy;
        match contain(|| strategy.on_prediction(&p)) {
            Ok(Some(target)) => {
                let at_ms = p.bar_open_ms + self.route.timeframe.millis();
                self.signal(target, at_ms, Some(p));
            }
            Ok(None) => {}
            Err(why) => self.fail(why, ctx),
        }
    }

    fn on_fill(&mut self, msg: StrategyFilled, ctx: &mut Context<Self>) {
        let strategy = &mut self.strategy;
        if let Err(why) = contain(|| strategy.on_fill(msg.signed_volume, msg.price)) {
            self.fail(why, ctx);
        }
    }
}

impl Actor for StrategyHost {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(4_096);
        let need = self.strategy.warm_up_bars();
        let md = self.tenant.market_data.get();
        let (Some(md), true) = (md, need > 0) else {
            self.ready = true;
            return;
        };
        let store = self.tenant.relational.clone();
        let load = LoadStrategySnapshot {
            tenant: self.tenant.id.0.clone(),
            strategy_id: self.route.settings.id.clone(),
        };
        let keeps_state = self.strategy.snapshot().is_some();
        let mut query = WarmUp {
            symbol: self.route.symbol.clone(),
            timeframe: self.route.timeframe,
            bars: need,
            since_ms: None,
        };
        let fingerprint = self.fingerprint.clone();
        // Not `ctx.wait`: the state stays readable (`warming`) while the terminal fills the gap.
        ctx.spawn(
            async move {
                let snapshot = if keeps_state {
                    store.load_strategy_snapshot(load).await.unwrap_or_else(|e| {
                        tracing::warn!(error = %e, "stored strategy state not readable; warming up by replay");
                        None
                    })
                } else {
                    None
                };
                query.since_ms = snapshot
                    .as_ref()
                    .filter(|s| s.fingerprint == fingerprint)
                    .map(|s| s.bar_open_ms);
                (snapshot, md.send(query).await.unwrap_or_default())
            }
            .into_actor(self)
            .map(|(snapshot, warm), act, ctx| {
                act.warmed_by = act.warm(snapshot, warm);
                act.ready = true;
                // Stored at once: a restart before the next bar continues from here, not from a replay.
                if act.last_bar_ms != i64::MIN {
                    act.snapshot(ctx);
                }
                for held in std::mem::take(&mut act.held) {
                    match held {
                        Held::Bar(bar) => act.on_bar(bar, ctx),
                        Held::Prediction(p) => act.on_prediction(p, ctx),
                        Held::Fill(f) => act.on_fill(f, ctx),
                    }
                }
            }),
        );
    }

    fn stopped(&mut self, _ctx: &mut Self::Context) {
        self.notifier.mark_stopped();
    }
}

impl Handler<BarClosed> for StrategyHost {
    type Result = ();

    fn handle(&mut self, BarClosed(bar, origin): BarClosed, ctx: &mut Self::Context) {
        if self.ready {
            self.origin = origin;
            self.on_bar(bar, ctx);
            self.origin = None;
        } else {
            self.held.push(Held::Bar(bar));
        }
    }
}

impl Handler<CatchUp> for StrategyHost {
    type Result = ();

    /// Bars missed while the link was down: the state moves on, the stale signals are dropped.
    fn handle(&mut self, CatchUp(bars): CatchUp, ctx: &mut Self::Context) {
        if !self.ready {
            return; // its warm-up answer has them
        }
        let mut caught = 0;
        for bar in &bars {
            if bar.open_time_ms <= self.last_bar_ms {
                continue;
            }
            let strategy = &mut self.strategy;
            if let Err(why) = contain(|| strategy.on_bar(bar)) {
                return self.fail(why, ctx);
            }
            self.last_bar_ms = bar.open_time_ms;
            caught += 1;
        }
        if caught > 0 {
            tracing::info!(tenant = %self.tenant.id, strategy = %self.route.settings.id, bars = caught,
                "caught up with the bars the terminal had while the link was down");
            self.snapshot(ctx);
        }
    }
}

impl Handler<PredictionMade> for StrategyHost {
    type Result = ();

    /// A prediction of the strategy's model for a closed bar; its target counts from that bar's close.
    fn handle(&mut self, PredictionMade(p): PredictionMade, ctx: &mut Self::Context) {
        if self.ready {
            self.on_prediction(p, ctx);
        } else {
            self.held.push(Held::Prediction(p));
        }
    }
}

impl Handler<StrategyFilled> for StrategyHost {
    type Result = ();

    fn handle(&mut self, msg: StrategyFilled, ctx: &mut Self::Context) {
        if self.ready {
            self.on_fill(msg, ctx);
        } else {
            self.held.push(Held::Fill(msg));
        }
    }
}

impl Handler<GetStrategyState> for StrategyHost {
    type Result = MessageResult<GetStrategyState>;

    fn handle(&mut self, _: GetStrategyState, _ctx: &mut Self::Context) -> Self::Result {
        MessageResult(StrategyState {
            id: self.route.settings.id.clone(),
            last_bar_ms: (self.last_bar_ms != i64::MIN).then_some(self.last_bar_ms),
            state: if self.ready { "ready" } else { "warming" },
            warm_up_bars: self.strategy.warm_up_bars(),
            warmed_by: self.warmed_by,
        })
    }
}

impl Handler<Shutdown> for StrategyHost {
    type Result = ();

    fn handle(&mut self, _msg: Shutdown, ctx: &mut Self::Context) {
        ctx.stop();
    }
}
