//! `Risk`, one per tenant: the pre-trade gate every order passes, and the kill switch.
//!
//! The decisions are `domain::risk::RiskGate` (the backtester runs the same code); this actor feeds it PnL
//! and link states, answers `CheckOrder`, logs every rejection with its code and reason, and flattens when a
//! loss limit trips the kill switch and the tenant asked for it.

use std::sync::Arc;

use actix::prelude::*;

use super::messages::{
    AccountLink, CheckOrder, Flatten, GetRiskState, LinkState, PnlUpdated, RiskRejection,
    RiskState, SetKillSwitch,
};
use super::supervisor::{ExitNotifier, Shutdown};
use super::tenant::TenantContext;
use crate::domain::risk::RiskGate;
use crate::domain::{now_ms, Login};

pub struct Risk {
    tenant: Arc<TenantContext>,
    gate: RiskGate,
    rejections: u64,
    notifier: ExitNotifier,
}

impl Risk {
    pub fn new(tenant: Arc<TenantContext>, notifier: ExitNotifier) -> Self {
        let gate = RiskGate::new(tenant.settings.risk.clone(), tenant.symbols.iter().cloned());
        Self {
            tenant,
            gate,
            rejections: 0,
            notifier,
        }
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

impl Actor for Risk {
    type Context = Context<Self>;

    fn stopped(&mut self, _ctx: &mut Self::Context) {
        self.notifier.mark_stopped();
    }
}

impl Handler<CheckOrder> for Risk {
    type Result = Result<(), RiskRejection>;

    fn handle(&mut self, CheckOrder(facts): CheckOrder, _ctx: &mut Self::Context) -> Self::Result {
        let verdict = self.gate.check(&facts);
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
        MessageResult(self.state())
    }
}

impl Handler<PnlUpdated> for Risk {
    type Result = ();

    fn handle(&mut self, p: PnlUpdated, _ctx: &mut Self::Context) {
        if let Some(reason) = self
            .gate
            .on_pnl(p.at_ms, p.realised, p.unrealised, p.commission)
        {
            tracing::error!(tenant = %self.tenant.id, reason = %reason, "kill switch on (automatic)");
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
