//! `Risk`, one per tenant: the pre-trade gate every order passes, and the kill switch.
//!
//! The decisions are `domain::risk::RiskGate` (the backtester runs the same code); this actor feeds it PnL
//! and link states, answers `CheckOrder`, logs every rejection with its code and reason, and flattens when a
//! loss limit trips the kill switch and the tenant asked for it.
//!
//! `Risk` owns the tenant's limits (risk limits and tier): the admin API changes them by message
//! (`SetRiskLimits`, `SetTier`) and everyone else reads the snapshot this actor publishes.
//!
//! It is also the tenant's correlation engine: `MarketData` sends it every closed M1 bar, and it keeps the
//! last `correlation_window` aligned log returns of the tenant's symbols and their Ledoit–Wolf covariance
//! (`domain::correlation`), recomputed on each complete bar time. The gate uses it for the
//! portfolio-volatility limit; `GetCorrelation` answers it for the API, and every tenth update is published
//! on `/ws/events` (`correlation`). A restarted `Risk` rebuilds the window from the bars `MarketData` keeps.

use std::sync::Arc;

use actix::prelude::*;

use super::messages::{
    AccountLink, BarClosed, CheckOrder, Flatten, GetCorrelation, GetRecentBars, GetRiskState,
    LinkState, PnlUpdated, RiskRejection, RiskState, SetKillSwitch,
};
use super::tenant::{TenantContext, TenantLimits};
use crate::domain::events::EventKind;
use crate::domain::risk::RiskGate;
use crate::domain::{now_ms, Login};
use crate::runtime::published::Publisher;
use crate::runtime::supervisor::{ExitNotifier, Shutdown};
use crate::storage::relational::{LoadKillSwitch, SaveKillSwitch};

pub struct Risk {
    tenant: Arc<TenantContext>,
    /// The tier and limits this actor owns, published for the API, rate limits and quotas.
    limits: Publisher<TenantLimits>,
    gate: RiskGate,
    rejections: u64,
    /// Aligned M1 log returns of the tenant's symbols.
    returns: crate::domain::correlation::ReturnWindow,
    updates: u64,
    notifier: ExitNotifier,
}

/// M1 bars the correlation engine keeps by default.
const CORRELATION_WINDOW: usize = 240;
/// Rows before the covariance is used.
const MIN_CORRELATION_ROWS: usize = 30;

impl Risk {
    /// A new incarnation, starting from the limits its predecessor published.
    pub fn new(
        tenant: Arc<TenantContext>,
        limits: Publisher<TenantLimits>,
        notifier: ExitNotifier,
    ) -> Self {
        let risk = limits.current().risk.clone();
        let window = risk
            .correlation_window
            .unwrap_or(CORRELATION_WINDOW)
            .clamp(MIN_CORRELATION_ROWS, 10_000);
        let gate = RiskGate::new(risk, tenant.symbols.iter().cloned());
        let mut symbols: Vec<String> = tenant.symbols.iter().cloned().collect();
        symbols.sort();
        Self {
            tenant,
            limits,
            gate,
            rejections: 0,
            returns: crate::domain::correlation::ReturnWindow::new(symbols, window),
            updates: 0,
            notifier,
        }
    }

    /// A closed M1 bar of one symbol: into the return window; a complete bar time renews the covariance.
    fn on_bar(&mut self, bar: &crate::domain::Bar) {
        use rust_decimal::prelude::ToPrimitive;
        if bar.timeframe != crate::domain::Timeframe::M1 {
            return;
        }
        let close = bar.close.to_f64().unwrap_or(f64::NAN);
        let pushed = self
            .returns
            .push_closes(bar.open_time_ms, &[(bar.symbol.as_str().to_owned(), close)]);
        if !matches!(pushed, Ok(true)) || self.returns.len() < MIN_CORRELATION_ROWS {
            return;
        }
        match self.returns.covariance() {
            Ok(cov) => {
                self.updates += 1;
                if self.updates % 10 == 1 {
                    self.tenant.publish(
                        EventKind::Correlation,
                        serde_json::json!({
                            "symbols": cov.symbols,
                            "correlations": cov.correlations(),
                            "shrinkage": cov.shrinkage,
                            "observations": cov.observations,
                        }),
                    );
                }
                self.gate.covariance = Some(cov);
            }
            Err(e) => {
                tracing::warn!(tenant = %self.tenant.id, error = %e, "covariance not renewed");
            }
        }
    }

    /// Account currency per lot per unit of return, from the latest quotes and contract sizes.
    fn refresh_lot_values(&mut self) {
        use rust_decimal::prelude::ToPrimitive;
        let quotes = self.tenant.quotes.read();
        for (symbol, q) in quotes.iter() {
            let mid = (q.bid + q.ask) / rust_decimal::Decimal::TWO;
            let value = (mid * self.tenant.contract_size(symbol.as_str())).to_f64();
            if let Some(v) = value.filter(|v| v.is_finite()) {
                self.gate.lot_values.insert(symbol.as_str().to_owned(), v);
            }
        }
    }

    /// The limits and state, to the tenant's clients (`risk` channel), after every change of either.
    fn publish_state(&self) {
        self.tenant.publish(
            EventKind::Risk,
            serde_json::json!({"limits": self.gate.limits, "state": self.state()}),
        );
    }

    fn state(&self) -> RiskState {
        let mut blind: Vec<Login> = self.gate.blind.iter().copied().collect();
        blind.sort();
        RiskState {
            kill_switch: self.gate.kill.clone(),
            daily_pnl: self.gate.daily_pnl,
            drawdown: self.gate.drawdown,
            blind_accounts: blind,
            rejections: self.rejections,
        }
    }
}

impl Risk {
    /// Stores the kill switch as it is now; a failed write is retried until it lands (the switch itself is
    /// already in force in memory).
    fn persist_kill_switch(&self, ctx: &mut Context<Self>) {
        let store = self.tenant.relational.clone();
        let msg = SaveKillSwitch {
            tenant: self.tenant.id.0.clone(),
            kill: self.gate.kill.clone(),
            fence: self.tenant.fence,
        };
        ctx.spawn(
            async move {
                let mut attempt = 0;
                loop {
                    match store.save_kill_switch(msg.clone()).await {
                        Err(e) if e.is_retryable() && attempt < 50 => {
                            attempt += 1;
                            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                        }
                        done => return done,
                    }
                }
            }
            .into_actor(self)
            .map(|res, act, _| {
                if let Err(e) = res {
                    tracing::error!(tenant = %act.tenant.id, error = %e, "the kill switch could not be stored");
                }
            }),
        );
    }
}

impl Actor for Risk {
    type Context = Context<Self>;

    /// A kill switch stored before a restart is in force again before the first order is checked.
    fn started(&mut self, ctx: &mut Self::Context) {
        // The correlation window from the bars MarketData keeps (empty on a first start).
        if let Some(md) = self.tenant.market_data.get() {
            let symbols = self.returns.symbols().to_vec();
            ctx.wait(
                async move {
                    let mut all = Vec::new();
                    for s in symbols {
                        let q = GetRecentBars {
                            symbol: crate::domain::Symbol::new(s),
                            timeframe: crate::domain::Timeframe::M1,
                            limit: super::market_data::RECENT_BARS,
                        };
                        if let Ok(bars) = md.send(q).await {
                            all.extend(bars);
                        }
                    }
                    all.sort_by_key(|b| b.open_time_ms);
                    all
                }
                .into_actor(self)
                .map(|bars, act, _ctx| {
                    for b in &bars {
                        act.on_bar(b);
                    }
                }),
            );
        }
        let store = self.tenant.relational.clone();
        let tenant = self.tenant.id.0.clone();
        ctx.wait(async move { store.load_kill_switch(LoadKillSwitch { tenant }).await }.into_actor(self).map(
            |res, act, ctx| match res {
                Ok(kill) => {
                    if let Some(k) = &kill {
                        tracing::warn!(tenant = %act.tenant.id, reason = %k.reason, "kill switch still on from before the restart");
                    }
                    act.gate.kill = kill;
                }
                Err(e) => {
                    act.notifier.fail(format!("could not load the kill switch: {e}"));
                    ctx.stop();
                }
            },
        ));
        // After a restart the blind accounts are asked of the sessions themselves: a terminal lost before
        // this incarnation started must stay blind. `wait` keeps later link changes queued until this is done.
        let sessions = self.tenant.all_sessions();
        if !sessions.is_empty() {
            ctx.wait(
                async move {
                    let mut blind = Vec::new();
                    for s in sessions {
                        if let Ok(state) = s.send(super::messages::GetSessionState).await {
                            if state.link != LinkState::Connected {
                                blind.push(state.login);
                            }
                        }
                    }
                    blind
                }
                .into_actor(self)
                .map(|blind, act, _| act.gate.blind.extend(blind)),
            );
        }
    }

    fn stopped(&mut self, _ctx: &mut Self::Context) {
        self.notifier.mark_stopped();
    }
}

impl Handler<super::messages::Crash> for Risk {
    type Result = ();

    fn handle(&mut self, msg: super::messages::Crash, _ctx: &mut Self::Context) {
        panic!("injected fault: {}", msg.reason);
    }
}

impl Handler<CheckOrder> for Risk {
    type Result = Result<(), RiskRejection>;

    fn handle(&mut self, CheckOrder(facts): CheckOrder, _ctx: &mut Self::Context) -> Self::Result {
        if self.gate.limits.max_portfolio_volatility.is_some() {
            self.refresh_lot_values();
        }
        let verdict = self.gate.check(&facts);
        if let Err(r) = &verdict {
            self.rejections += 1;
            self.publish_state();
            self.tenant.audit(
                "order.rejected_by_risk",
                "risk",
                serde_json::json!({"account": facts.account, "symbol": facts.symbol,
                    "side": facts.side.as_str(), "volume": facts.volume, "code": r.code, "reason": r.reason}),
            );
            tracing::warn!(tenant = %self.tenant.id, account = %facts.account, symbol = %facts.symbol,
                side = facts.side.as_str(), volume = %facts.volume, code = r.code.as_str(), reason = %r.reason,
                "order rejected by risk");
        }
        verdict
    }
}

impl Handler<BarClosed> for Risk {
    type Result = ();

    fn handle(&mut self, BarClosed(bar, _): BarClosed, _ctx: &mut Self::Context) {
        self.on_bar(&bar);
    }
}

impl Handler<super::messages::CatchUp> for Risk {
    type Result = ();

    /// Bars the terminal filled in after this actor's start (its window began with what the store had).
    fn handle(
        &mut self,
        super::messages::CatchUp(bars): super::messages::CatchUp,
        _ctx: &mut Self::Context,
    ) {
        for bar in &bars {
            self.on_bar(bar);
        }
    }
}

impl Handler<super::messages::RegimeObserved> for Risk {
    type Result = ();

    fn handle(&mut self, msg: super::messages::RegimeObserved, _ctx: &mut Self::Context) {
        let scale = self.gate.limits.regime.as_ref().and_then(|r| {
            (r.deployment == msg.deployment && r.state == msg.label).then_some(r.scale.get())
        });
        if scale != self.gate.regime_scale {
            tracing::info!(tenant = %self.tenant.id, deployment = %msg.deployment, regime = %msg.label,
                scale = ?scale, "market regime changed the risk limits");
            self.tenant.audit(
                "risk.regime",
                "risk",
                serde_json::json!({"deployment": msg.deployment, "regime": msg.label, "scale": scale}),
            );
        }
        self.gate.regime_scale = scale;
    }
}

impl Handler<GetCorrelation> for Risk {
    type Result = MessageResult<GetCorrelation>;

    fn handle(&mut self, _: GetCorrelation, _ctx: &mut Self::Context) -> Self::Result {
        MessageResult(self.gate.covariance.clone())
    }
}

impl Handler<SetKillSwitch> for Risk {
    /// Answers once the new state is stored: a switch the operator saw turned on stays on after a restart.
    type Result = AtomicResponse<Self, RiskState>;

    fn handle(&mut self, msg: SetKillSwitch, _ctx: &mut Self::Context) -> Self::Result {
        if msg.on {
            tracing::error!(tenant = %self.tenant.id, reason = %msg.reason, "kill switch on");
            self.gate.trip(msg.reason.clone(), false, now_ms());
            if msg.flatten {
                if let Some(p) = self.tenant.portfolio.get() {
                    p.do_send(Flatten { reason: msg.reason });
                }
            }
        } else {
            tracing::warn!(tenant = %self.tenant.id, reason = %msg.reason, "kill switch off");
            self.gate.kill = None;
        }
        self.publish_state();
        let store = self.tenant.relational.clone();
        let save = SaveKillSwitch {
            tenant: self.tenant.id.0.clone(),
            kill: self.gate.kill.clone(),
            fence: self.tenant.fence,
        };
        AtomicResponse::new(Box::pin(async move { store.save_kill_switch(save).await }.into_actor(self).map(
            |res, act, _| {
                if let Err(e) = res {
                    tracing::error!(tenant = %act.tenant.id, error = %e, "the kill switch could not be stored");
                }
                act.state()
            },
        )))
    }
}

impl Handler<PnlUpdated> for Risk {
    type Result = ();

    fn handle(&mut self, p: PnlUpdated, ctx: &mut Self::Context) {
        if let Some(reason) = self
            .gate
            .on_pnl(p.at_ms, p.realised, p.unrealised, p.commission)
        {
            tracing::error!(tenant = %self.tenant.id, reason = %reason, "kill switch on (automatic)");
            self.tenant.audit(
                "kill_switch.on",
                "risk",
                serde_json::json!({"reason": reason, "automatic": true}),
            );
            self.persist_kill_switch(ctx);
            self.publish_state();
            if self.gate.limits.flatten_on_breach {
                if let Some(portfolio) = self.tenant.portfolio.get() {
                    portfolio.do_send(Flatten { reason });
                }
            }
        }
    }
}

impl Handler<AccountLink> for Risk {
    type Result = ();

    fn handle(&mut self, link: AccountLink, _ctx: &mut Self::Context) {
        match link.state {
            LinkState::Connected => {
                self.gate.blind.remove(&link.account);
            }
            LinkState::Lost | LinkState::Disconnected => {
                self.gate.blind.insert(link.account);
            }
        }
        self.publish_state();
    }
}

impl Handler<GetRiskState> for Risk {
    type Result = MessageResult<GetRiskState>;

    fn handle(&mut self, _: GetRiskState, _ctx: &mut Self::Context) -> Self::Result {
        MessageResult(self.state())
    }
}

impl Handler<Shutdown> for Risk {
    type Result = ();

    fn handle(&mut self, _msg: Shutdown, ctx: &mut Self::Context) {
        ctx.stop();
    }
}

impl Handler<super::messages::SetRiskLimits> for Risk {
    type Result = ();

    fn handle(&mut self, msg: super::messages::SetRiskLimits, _ctx: &mut Self::Context) {
        tracing::info!(tenant = %self.tenant.id, limits = ?msg.0, "risk limits replaced");
        if msg.0.regime.is_none() {
            self.gate.regime_scale = None;
        }
        self.gate.limits = msg.0.clone();
        self.limits.modify(|l| l.risk = msg.0);
        self.publish_state();
    }
}

impl Handler<super::messages::SetTier> for Risk {
    type Result = ();

    fn handle(&mut self, msg: super::messages::SetTier, _ctx: &mut Self::Context) {
        tracing::info!(tenant = %self.tenant.id, tier = %msg.0, "tier changed");
        self.limits.modify(|l| l.tier = msg.0);
    }
}
