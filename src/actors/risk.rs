//! `Risk`, one per tenant: the pre-trade gate every order passes, and the kill switch.
//!
//! Checks, in order: kill switch, blind account (heartbeats missed), allowed symbols, volume per order, net
//! position per symbol, open positions, daily loss (realised + unrealised since the UTC day began) and
//! drawdown from the PnL peak. Orders that only reduce exposure pass the kill switch and the loss limits —
//! flattening must always be possible. A breached loss limit turns the kill switch on by itself (and
//! flattens, when configured). Every rejection carries a code and a reason a person can read.

use std::collections::HashSet;
use std::sync::Arc;

use actix::prelude::*;
use rust_decimal::Decimal;

use super::messages::{
    AccountLink, CheckOrder, Flatten, GetRiskState, KillSwitch, LinkState, OrderFacts, PnlUpdated,
    RiskRejection, RiskState, SetKillSwitch,
};
use super::supervisor::{ExitNotifier, Shutdown};
use super::tenant::TenantContext;
use crate::config::RiskSettings;
use crate::domain::{now_ms, Login, Side};

pub struct Risk {
    tenant: Arc<TenantContext>,
    limits: RiskSettings,
    kill: Option<KillSwitch>,
    blind: HashSet<Login>,
    /// UTC day (days since the epoch) of `day_start_realised`.
    day: i64,
    day_start_realised: Decimal,
    daily_pnl: Decimal,
    peak: Decimal,
    drawdown: Decimal,
    rejections: u64,
    notifier: ExitNotifier,
}

impl Risk {
    pub fn new(tenant: Arc<TenantContext>, notifier: ExitNotifier) -> Self {
        let limits = tenant.settings.risk.clone();
        Self {
            tenant,
            limits,
            kill: None,
            blind: HashSet::new(),
            day: i64::MIN,
            day_start_realised: Decimal::ZERO,
            daily_pnl: Decimal::ZERO,
            peak: Decimal::ZERO,
            drawdown: Decimal::ZERO,
            rejections: 0,
            notifier,
        }
    }

    /// The pre-trade decision; pure apart from reading the actor's state.
    pub fn check(&self, o: &OrderFacts) -> Result<(), RiskRejection> {
        let reject = |code: &'static str, reason: String| Err(RiskRejection { code, reason });
        if let Some(k) = &self.kill {
            if !o.reduce_only {
                return reject("kill_switch", format!("kill switch is on: {}", k.reason));
            }
        }
        if self.blind.contains(&o.account) {
            return reject(
                "account_blind",
                format!("account {} missed its heartbeats", o.account),
            );
        }
        let allowed = if self.limits.allowed_symbols.is_empty() {
            self.tenant.symbols.contains(o.symbol.as_str())
        } else {
            self.limits
                .allowed_symbols
                .iter()
                .any(|s| s == o.symbol.as_str())
        };
        if !allowed {
            return reject(
                "symbol_not_allowed",
                format!("{} is not an allowed symbol", o.symbol),
            );
        }
        if let Some(max) = self.limits.max_order_volume {
            if o.volume > max {
                return reject(
                    "max_order_volume",
                    format!("volume {} exceeds the limit of {max} lots", o.volume),
                );
            }
        }
        if o.reduce_only {
            return Ok(());
        }
        let after = o.net_before + o.volume * o.side.sign();
        if let Some(max) = self.limits.max_net_position {
            if after.abs() > max && after.abs() > o.net_before.abs() {
                return reject(
                    "max_net_position",
                    format!(
                        "net position in {} would be {after}, beyond ±{max} lots",
                        o.symbol
                    ),
                );
            }
        }
        if let Some(max) = self.limits.max_open_positions {
            let opens_new = o.net_before.is_zero()
                || (o.net_before.is_sign_positive() != (o.side == Side::Buy));
            if opens_new && o.open_positions >= max && after.abs() > o.net_before.abs() {
                return reject(
                    "max_open_positions",
                    format!(
                        "{} positions are open, the limit is {max}",
                        o.open_positions
                    ),
                );
            }
        }
        if let Some(max) = self.limits.max_daily_loss {
            if -self.daily_pnl >= max {
                return reject(
                    "max_daily_loss",
                    format!(
                        "today's loss {} reached the limit of {max}",
                        -self.daily_pnl
                    ),
                );
            }
        }
        if let Some(max) = self.limits.max_drawdown {
            if self.drawdown >= max {
                return reject(
                    "max_drawdown",
                    format!("drawdown {} reached the limit of {max}", self.drawdown),
                );
            }
        }
        Ok(())
    }

    fn trip(&mut self, reason: String, automatic: bool) {
        if self.kill.is_none() {
            tracing::error!(tenant = %self.tenant.id, reason = %reason, automatic, "kill switch on");
        }
        self.kill = Some(KillSwitch {
            reason,
            automatic,
            at_ms: now_ms(),
        });
    }

    fn state(&self) -> RiskState {
        let mut blind: Vec<Login> = self.blind.iter().copied().collect();
        blind.sort();
        RiskState {
            kill_switch: self.kill.clone(),
            daily_pnl: self.daily_pnl,
            drawdown: self.drawdown,
            blind_accounts: blind,
            rejections: self.rejections,
        }
    }
}

impl Actor for Risk {
    type Context = Context<Self>;

    fn stopped(&mut self, _ctx: &mut Self::Context) {
        self.notifier.mark_stopped();
    }
}

impl Handler<CheckOrder> for Risk {
    type Result = Result<(), RiskRejection>;

    fn handle(&mut self, CheckOrder(facts): CheckOrder, _ctx: &mut Self::Context) -> Self::Result {
        let verdict = self.check(&facts);
        if let Err(r) = &verdict {
            self.rejections += 1;
            tracing::warn!(tenant = %self.tenant.id, account = %facts.account, symbol = %facts.symbol,
                side = facts.side.as_str(), volume = %facts.volume, code = r.code, reason = %r.reason,
                "order rejected by risk");
        }
        verdict
    }
}

impl Handler<SetKillSwitch> for Risk {
    type Result = MessageResult<SetKillSwitch>;

    fn handle(&mut self, msg: SetKillSwitch, _ctx: &mut Self::Context) -> Self::Result {
        if msg.on {
            self.trip(msg.reason.clone(), false);
            if msg.flatten {
                if let Some(p) = self.tenant.portfolio.get() {
                    p.do_send(Flatten { reason: msg.reason });
                }
            }
        } else {
            tracing::warn!(tenant = %self.tenant.id, reason = %msg.reason, "kill switch off");
            self.kill = None;
        }
        MessageResult(self.state())
    }
}

impl Handler<PnlUpdated> for Risk {
    type Result = ();

    fn handle(&mut self, p: PnlUpdated, _ctx: &mut Self::Context) {
        let day = p.at_ms.div_euclid(86_400_000);
        if day != self.day {
            self.day = day;
            self.day_start_realised = p.realised;
        }
        let total = p.realised + p.unrealised - p.commission;
        self.daily_pnl = p.realised - self.day_start_realised + p.unrealised;
        if total > self.peak {
            self.peak = total;
        }
        self.drawdown = self.peak - total;
        let breach = match (self.limits.max_daily_loss, self.limits.max_drawdown) {
            (Some(max), _) if -self.daily_pnl >= max => {
                Some(format!("daily loss {} reached {max}", -self.daily_pnl))
            }
            (_, Some(max)) if self.drawdown >= max => {
                Some(format!("drawdown {} reached {max}", self.drawdown))
            }
            _ => None,
        };
        if let Some(reason) = breach {
            if self.kill.is_none() {
                self.trip(reason.clone(), true);
                if self.limits.flatten_on_breach {
                    if let Some(portfolio) = self.tenant.portfolio.get() {
                        portfolio.do_send(Flatten { reason });
                    }
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
                self.blind.remove(&link.account);
            }
            LinkState::Lost | LinkState::Disconnected => {
                self.blind.insert(link.account);
            }
        }
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
