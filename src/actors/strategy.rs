//! `StrategyHost`, one per strategy instance: runs strategy code behind `catch_unwind` and turns its
//! targets into `Signal`s for the portfolio.
//!
//! The code is not ours to trust. A panic fails this actor alone (its supervisor starts a fresh one); the
//! fresh instance first replays the recent bars that `MarketData` keeps, with its signals discarded, so its
//! indicators are where they were, then carries on with the next bar. A bar that panics during that replay
//! is skipped (and counted in the log), so one poison bar cannot keep the strategy in a restart loop.

use std::sync::Arc;

use actix::prelude::*;

use super::messages::{
    BarClosed, GetRecentBars, GetStrategyState, PredictionMade, Signal, StrategyFilled,
    StrategyState,
};
use super::tenant::{StrategyRoute, TenantContext};
use crate::domain::Login;
use crate::runtime::supervisor::{contain, ExitNotifier, Shutdown};
use crate::strategies::Strategy;

/// Bars replayed into a fresh instance.
pub const WARM_UP_BARS: usize = 500;

pub struct StrategyHost {
    tenant: Arc<TenantContext>,
    route: StrategyRoute,
    strategy: Box<dyn Strategy>,
    /// Open time of the last bar handled: a bar seen in warm-up and again as an event is handled once.
    last_bar_ms: i64,
    notifier: ExitNotifier,
}

impl StrategyHost {
    pub fn new(
        tenant: Arc<TenantContext>,
        route: StrategyRoute,
        strategy: Box<dyn Strategy>,
        notifier: ExitNotifier,
    ) -> Self {
        Self {
            tenant,
            route,
            strategy,
            last_bar_ms: i64::MIN,
            notifier,
        }
    }

    fn signal(
        &self,
        target: rust_decimal::Decimal,
        at_ms: i64,
        cause: Option<crate::domain::Prediction>,
    ) {
        if let Some(portfolio) = self.tenant.portfolio.get() {
            portfolio.do_send(Signal {
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
}

impl Actor for StrategyHost {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(4_096);
        let Some(md) = self.tenant.market_data.get() else {
            return;
        };
        let query = GetRecentBars {
            symbol: self.route.symbol.clone(),
            timeframe: self.route.timeframe,
            limit: WARM_UP_BARS,
        };
        ctx.wait(md.send(query).into_actor(self).map(|res, act, _ctx| {
            let bars = res.unwrap_or_default();
            // The bar that made the last incarnation panic is among these: a panic here skips that bar
            // instead of failing again, or one poison bar would restart the strategy until it escalates.
            let mut skipped = 0;
            for bar in &bars {
                let strategy = &mut act.strategy;
                if contain(|| strategy.on_bar(bar)).is_err() {
                    skipped += 1;
                }
            }
            if let Some(last) = bars.last() {
                act.last_bar_ms = last.open_time_ms;
            }
            if !bars.is_empty() {
                tracing::info!(tenant = %act.tenant.id, strategy = %act.route.settings.id, bars = bars.len(),
                    skipped, "warmed up");
            }
        }));
    }

    fn stopped(&mut self, _ctx: &mut Self::Context) {
        self.notifier.mark_stopped();
    }
}

impl Handler<BarClosed> for StrategyHost {
    type Result = ();

    fn handle(&mut self, BarClosed(bar): BarClosed, ctx: &mut Self::Context) {
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
            Err(why) => self.fail(why, ctx),
        }
    }
}

impl Handler<PredictionMade> for StrategyHost {
    type Result = ();

    /// A prediction of the strategy's model for a closed bar; its target counts from that bar's close.
    fn handle(&mut self, PredictionMade(p): PredictionMade, ctx: &mut Self::Context) {
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
}

impl Handler<StrategyFilled> for StrategyHost {
    type Result = ();

    fn handle(&mut self, msg: StrategyFilled, ctx: &mut Self::Context) {
        let strategy = &mut self.strategy;
        if let Err(why) = contain(|| strategy.on_fill(msg.signed_volume, msg.price)) {
            self.fail(why, ctx);
        }
    }
}

impl Handler<GetStrategyState> for StrategyHost {
    type Result = MessageResult<GetStrategyState>;

    fn handle(&mut self, _: GetStrategyState, _ctx: &mut Self::Context) -> Self::Result {
        MessageResult(StrategyState {
            id: self.route.settings.id.clone(),
            last_bar_ms: (self.last_bar_ms != i64::MIN).then_some(self.last_bar_ms),
        })
    }
}

impl Handler<Shutdown> for StrategyHost {
    type Result = ();

    fn handle(&mut self, _msg: Shutdown, ctx: &mut Self::Context) {
        ctx.stop();
    }
}
