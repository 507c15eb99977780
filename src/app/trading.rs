//! Trading use cases shared by the REST API and the client WebSocket: the kill switch, and the checks of
//! symbols, timeframes and risk limits that every request naming them goes through.

use std::sync::Arc;

use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::json;

use super::{App, AppError};
use crate::actors::messages::{RiskState, SetKillSwitch};
use crate::actors::tenant::TenantContext;
use crate::domain::tenant::RiskSettings;

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct KillSwitchRequest {
    pub on: bool,
    /// Why (kept with the switch and in the audit log).
    #[serde(default)]
    pub reason: Option<String>,
    /// Close every open position when turning on.
    #[serde(default)]
    pub flatten: bool,
}

/// Turns the kill switch on or off for `actor` (HTTP and the client WebSocket), audited.
pub async fn set_kill_switch(
    app: &App,
    t: &Arc<TenantContext>,
    actor: &str,
    body: KillSwitchRequest,
) -> Result<RiskState, AppError> {
    let risk = t
        .risk
        .get()
        .ok_or_else(|| AppError::Unavailable("risk restarting".into()))?;
    let reason = body
        .reason
        .clone()
        .unwrap_or_else(|| format!("set by {actor}"));
    if reason.chars().count() > 500 {
        return Err(AppError::BadRequest(
            "reason: at most 500 characters".into(),
        ));
    }
    let state = risk
        .send(SetKillSwitch {
            on: body.on,
            reason: reason.clone(),
            flatten: body.flatten,
        })
        .await?;
    app.security
        .audit(
            &t.id.0,
            if body.on {
                "kill_switch.on"
            } else {
                "kill_switch.off"
            },
            actor,
            json!({"reason": reason, "flatten": body.flatten}),
        )
        .await?;
    Ok(state)
}

/// Refuses (409) a symbol the tenant does not trade: well formed, but not one of the tenant's (its settings
/// decide, not the document).
pub fn traded_symbol(t: &TenantContext, field: &str, symbol: &str) -> Result<(), AppError> {
    if t.symbols.contains(symbol) {
        return Ok(());
    }
    Err(AppError::Conflict(format!(
        "{field}: `{symbol}` is not one of the tenant's symbols"
    )))
}

/// Checks risk limits (given to a new tenant or replacing a tenant's) against the tenant's symbols; the error
/// names the field. (Each limit is a `PositiveDecimal`: a zero or negative one never gets this far.)
pub fn check_limits(
    is_symbol: impl Fn(&str) -> bool,
    limits: &RiskSettings,
) -> Result<(), AppError> {
    for (i, s) in limits.allowed_symbols.iter().enumerate() {
        if !is_symbol(s) {
            return Err(AppError::Conflict(format!(
                "allowed_symbols[{i}]: `{s}` is not one of the tenant's symbols"
            )));
        }
    }
    Ok(())
}

/// Checks that `symbol` is one of the tenant's and `timeframe` a known one; the error names the field.
pub fn symbol_and_timeframe(
    t: &TenantContext,
    symbol: &str,
    timeframe: &str,
) -> Result<crate::domain::Timeframe, AppError> {
    if !t.symbols.contains(symbol) {
        return Err(AppError::BadRequest(format!(
            "symbol: `{symbol}` is not one of the tenant's symbols"
        )));
    }
    crate::domain::Timeframe::parse(timeframe)
        .ok_or_else(|| AppError::BadRequest(format!("timeframe: unknown timeframe `{timeframe}`")))
}
