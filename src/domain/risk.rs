//! The pre-trade gate as pure code: the `Risk` actor and the backtester run exactly this.
//!
//! Checks, in order: kill switch, blind account (heartbeats missed), allowed symbols, volume per order, net
//! position per symbol, open positions, daily loss (realised + unrealised since the UTC day began) and
//! drawdown from the PnL peak, and the portfolio's volatility from the covariance of the tenant's symbols
//! (when a limit and a covariance are there). Orders that only reduce exposure pass the kill switch and the loss limits —
//! flattening must always be possible. A breached loss limit turns the kill switch on by itself.

use std::collections::HashSet;

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use super::{Login, Side, Symbol};
use crate::domain::schema::PositiveDecimal;
use crate::domain::tenant::RiskSettings;

/// What risk needs to judge an order.
#[derive(Debug, Clone, Serialize)]
pub struct OrderFacts {
    pub account: Login,
    pub symbol: Symbol,
    pub side: Side,
    pub volume: Decimal,
    /// The account's net position in the symbol before the order.
    pub net_before: Decimal,
    /// Open positions of the account before the order.
    pub open_positions: usize,
    /// True for orders that only reduce exposure (flattening); allowed even with the kill switch on.
    pub reduce_only: bool,
    /// The account's net volume per symbol before the order (for the portfolio-volatility limit).
    #[serde(skip)]
    pub positions: Vec<(Symbol, Decimal)>,
}

/// Which check refused an order: typed, so a client, a log reader or a test matches a variant instead of a
/// string, and a new check cannot reuse another's name by accident. Serialised in snake case
/// (`max_order_volume`), as clients have always received it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum RefusalCode {
    /// The kill switch is on (manual or tripped by a loss limit).
    KillSwitch,
    /// The account's terminal is not connected: trellis cannot see its positions.
    AccountBlind,
    SymbolNotAllowed,
    MaxOrderVolume,
    MaxNetPosition,
    MaxOpenPositions,
    MaxPortfolioVolatility,
    /// The loss of the UTC day reached `max_daily_loss`.
    MaxDailyLoss,
    /// PnL fell `max_drawdown` from its peak.
    MaxDrawdown,
}

impl RefusalCode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::KillSwitch => "kill_switch",
            Self::AccountBlind => "account_blind",
            Self::SymbolNotAllowed => "symbol_not_allowed",
            Self::MaxOrderVolume => "max_order_volume",
            Self::MaxNetPosition => "max_net_position",
            Self::MaxOpenPositions => "max_open_positions",
            Self::MaxPortfolioVolatility => "max_portfolio_volatility",
            Self::MaxDailyLoss => "max_daily_loss",
            Self::MaxDrawdown => "max_drawdown",
        }
    }
}

impl std::fmt::Display for RefusalCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why risk refused an order: the check and a sentence for people.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, thiserror::Error)]
#[error("{code}: {reason}")]
pub struct RiskRejection {
    pub code: RefusalCode,
    pub reason: String,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq, schemars::JsonSchema)]
pub struct KillSwitch {
    pub reason: String,
    pub automatic: bool,
    pub at_ms: i64,
}

/// Limits, kill switch and the PnL figures the loss limits look at.
#[derive(Debug, Clone)]
pub struct RiskGate {
    pub limits: RiskSettings,
    symbols: HashSet<String>,
    pub kill: Option<KillSwitch>,
    pub blind: HashSet<Login>,
    day: i64,
    day_start_realised: Decimal,
    pub daily_pnl: Decimal,
    peak: Decimal,
    pub drawdown: Decimal,
    /// The covariance of the symbols' one-bar log returns, kept current by the owner (the `Risk` actor).
    pub covariance: Option<crate::domain::correlation::Covariance>,
    /// Account currency per lot per unit of price move ratio: contract size × price, per symbol.
    pub lot_values: std::collections::HashMap<String, f64>,
    /// The regime's factor on the volume and position limits while the configured regime holds.
    pub regime_scale: Option<Decimal>,
}

impl RiskGate {
    /// `symbols`: the tenant's symbols, allowed when `limits.allowed_symbols` is empty.
    pub fn new(limits: RiskSettings, symbols: impl IntoIterator<Item = String>) -> Self {
        Self {
            limits,
            symbols: symbols.into_iter().collect(),
            kill: None,
            blind: HashSet::new(),
            day: i64::MIN,
            day_start_realised: Decimal::ZERO,
            daily_pnl: Decimal::ZERO,
            peak: Decimal::ZERO,
            drawdown: Decimal::ZERO,
            covariance: None,
            lot_values: std::collections::HashMap::new(),
            regime_scale: None,
        }
    }

    /// One-bar volatility of `positions` (lots per symbol) in account currency; `None` without a
    /// covariance or a value for one of the symbols.
    pub fn portfolio_volatility(&self, positions: &[(Symbol, Decimal)]) -> Option<f64> {
        use rust_decimal::prelude::ToPrimitive;
        let cov = self.covariance.as_ref()?;
        let mut exposures = Vec::with_capacity(positions.len());
        for (symbol, lots) in positions {
            if lots.is_zero() {
                continue;
            }
            let value = *self.lot_values.get(symbol.as_str())?;
            exposures.push((symbol.0.clone(), lots.to_f64()? * value));
        }
        crate::domain::correlation::portfolio_volatility(cov, &exposures).ok()
    }

    pub fn check(&self, o: &OrderFacts) -> Result<(), RiskRejection> {
        let reject = |code: RefusalCode, reason: String| Err(RiskRejection { code, reason });
        if let Some(k) = &self.kill {
            if !o.reduce_only {
                return reject(
                    RefusalCode::KillSwitch,
                    format!("kill switch is on: {}", k.reason),
                );
            }
        }
        if self.blind.contains(&o.account) {
            return reject(
                RefusalCode::AccountBlind,
                format!("account {} missed its heartbeats", o.account),
            );
        }
        let allowed = if self.limits.allowed_symbols.is_empty() {
            self.symbols.contains(o.symbol.as_str())
        } else {
            self.limits
                .allowed_symbols
                .iter()
                .any(|s| s == o.symbol.as_str())
        };
        if !allowed {
            return reject(
                RefusalCode::SymbolNotAllowed,
                format!("{} is not an allowed symbol", o.symbol),
            );
        }
        let scale = self.regime_scale.unwrap_or(Decimal::ONE);
        let regime_note = if self.regime_scale.is_some() {
            format!(" (scaled by {scale} for the market regime)")
        } else {
            String::new()
        };
        if let Some(max) = self.limits.max_order_volume.map(|m| m.get() * scale) {
            if o.volume > max {
                return reject(
                    RefusalCode::MaxOrderVolume,
                    format!(
                        "volume {} exceeds the limit of {max} lots{regime_note}",
                        o.volume
                    ),
                );
            }
        }
        if o.reduce_only {
            return Ok(());
        }
        let after = o.net_before + o.volume * o.side.sign();
        if let Some(max) = self.limits.max_net_position.map(|m| m.get() * scale) {
            if after.abs() > max && after.abs() > o.net_before.abs() {
                return reject(
                    RefusalCode::MaxNetPosition,
                    format!(
                        "net position in {} would be {after}, beyond ±{max} lots{regime_note}",
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
                    RefusalCode::MaxOpenPositions,
                    format!(
                        "{} positions are open, the limit is {max}",
                        o.open_positions
                    ),
                );
            }
        }
        if let Some(max) = self
            .limits
            .max_portfolio_volatility
            .map(PositiveDecimal::get)
        {
            let mut after_positions = o.positions.clone();
            let delta = o.volume * o.side.sign();
            match after_positions.iter_mut().find(|(s, _)| s == &o.symbol) {
                Some((_, lots)) => *lots += delta,
                None => after_positions.push((o.symbol.clone(), delta)),
            }
            let before = self.portfolio_volatility(&o.positions);
            let after = self.portfolio_volatility(&after_positions);
            if let (Some(before), Some(after)) = (before, after) {
                let limit = rust_decimal::prelude::ToPrimitive::to_f64(&max).unwrap_or(f64::MAX);
                if after > limit && after > before {
                    return reject(
                        RefusalCode::MaxPortfolioVolatility,
                        format!(
                            "portfolio volatility would be {after:.2} per M1 bar (now {before:.2}), beyond the limit of {max}"
                        ),
                    );
                }
            }
        }
        if let Some(max) = self.limits.max_daily_loss.map(PositiveDecimal::get) {
            if -self.daily_pnl >= max {
                return reject(
                    RefusalCode::MaxDailyLoss,
                    format!(
                        "today's loss {} reached the limit of {max}",
                        -self.daily_pnl
                    ),
                );
            }
        }
        if let Some(max) = self.limits.max_drawdown.map(PositiveDecimal::get) {
            if self.drawdown >= max {
                return reject(
                    RefusalCode::MaxDrawdown,
                    format!("drawdown {} reached the limit of {max}", self.drawdown),
                );
            }
        }
        Ok(())
    }

    /// Turns the kill switch on (keeping the first reason while it stays on).
    pub fn trip(&mut self, reason: String, automatic: bool, at_ms: i64) {
        if self.kill.is_none() {
            self.kill = Some(KillSwitch {
                reason,
                automatic,
                at_ms,
            });
        }
    }

    /// Follows PnL; returns the breach that tripped the kill switch just now, if any.
    pub fn on_pnl(
        &mut self,
        at_ms: i64,
        realised: Decimal,
        unrealised: Decimal,
        commission: Decimal,
    ) -> Option<String> {
        let day = at_ms.div_euclid(86_400_000);
        if day != self.day {
            self.day = day;
            self.day_start_realised = realised;
        }
        let total = realised + unrealised - commission;
        self.daily_pnl = realised - self.day_start_realised + unrealised;
        if total > self.peak {
            self.peak = total;
        }
        self.drawdown = self.peak - total;
        let breach = match (
            self.limits.max_daily_loss.map(PositiveDecimal::get),
            self.limits.max_drawdown.map(PositiveDecimal::get),
        ) {
            (Some(max), _) if -self.daily_pnl >= max => {
                Some(format!("daily loss {} reached {max}", -self.daily_pnl))
            }
            (_, Some(max)) if self.drawdown >= max => {
                Some(format!("drawdown {} reached {max}", self.drawdown))
            }
            _ => None,
        };
        match breach {
            Some(reason) if self.kill.is_none() => {
                self.trip(reason.clone(), true, at_ms);
                Some(reason)
            }
            _ => None,
        }
    }
}
