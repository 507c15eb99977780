//! Tenant use cases shared by several callers: the tenant's view, tier gates and quotas, and storing the
//! tenant document after a change (strategies, risk limits, deployments).

use serde::Serialize;

use super::{App, AppError};
use crate::actors::tenant::TenantContext;
use crate::domain::now_ms;
use crate::domain::tier::{TierLimits, TIERS};
use crate::storage::security::TenantRow;

/// A tenant as the API shows it.
#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct TenantView {
    pub id: String,
    /// Its display name.
    pub name: String,
    /// `free`, `basic`, `professional` or `enterprise`.
    pub tier: String,
    /// A suspended tenant's users, keys and bridges are refused.
    pub suspended: bool,
    /// `running`, or `failed` when its core actors exceeded their restart budget (see `failure`; restart it
    /// with `POST /api/v1/tenants/{t}/restart`).
    pub state: String,
    /// Why the tenant failed.
    pub failure: Option<String>,
    /// The symbols it trades.
    pub symbols: Vec<String>,
    /// How many strategies it has.
    pub strategies: usize,
    /// MT5 sessions its bridges have open now.
    pub mt5_sessions: usize,
}

pub fn view(app: &App, t: &TenantContext) -> TenantView {
    TenantView {
        id: t.id.0.clone(),
        name: t.settings.name.clone(),
        tier: t.tier(),
        suspended: app.security.is_suspended(&t.id.0),
        state: if t.failure().is_some() {
            "failed".into()
        } else {
            "running".into()
        },
        failure: t.failure(),
        symbols: t.settings.symbols.clone(),
        strategies: t.strategies.read().len(),
        mt5_sessions: t.sessions.read().len(),
    }
}

/// Refuses (403 naming the tier) what needs tier `required` or higher when the tenant's is lower.
pub fn require_tier(t: &TenantContext, required: &str, what: &str) -> Result<(), AppError> {
    let tier = t.tier();
    let rank = |x: &str| TIERS.iter().position(|t| *t == x).unwrap_or(0);
    if rank(&tier) < rank(required) {
        return Err(AppError::TierRequired {
            required: required.into(),
            message: format!("{what} needs the {required} tier (this tenant is {tier})"),
        });
    }
    Ok(())
}

/// The 403 of a quota: names the tier that would allow more.
pub fn quota_exceeded(limits: &TierLimits, tier: &str, what: &str, quota: u32) -> AppError {
    // Only a higher tier can be the way to more (an override may give a lower tier a larger quota).
    let rank = TIERS.iter().position(|t| *t == tier).unwrap_or(0);
    let next = TIERS[rank + 1..]
        .iter()
        .find(|t| limits.per_minute(t) > quota)
        .copied();
    match next {
        Some(required) => AppError::TierRequired {
            required: required.into(),
            message: format!(
                "the {tier} tier allows {quota} {what}; the {required} tier allows {}",
                limits.per_minute(required)
            ),
        },
        None => AppError::Forbidden(format!("the {tier} tier allows at most {quota} {what}")),
    }
}

/// Stores the tenant's current document (after a change through the API).
pub async fn persist(app: &App, t: &TenantContext) -> Result<(), AppError> {
    let doc = t.document();
    let settings =
        serde_json::to_string(&doc).map_err(|e| AppError::Internal(anyhow::anyhow!(e)))?;
    let stored = app.security.store.tenant(&t.id.0).await?;
    let now = now_ms();
    let row = TenantRow {
        id: t.id.0.clone(),
        settings,
        tier: doc.tier.clone(),
        suspended: i64::from(app.security.is_suspended(&t.id.0)),
        created_ms: stored.as_ref().map_or(now, |s| s.created_ms),
        updated_ms: now,
    };
    if stored.is_some() {
        app.security.store.update_tenant(&row).await?;
    } else {
        app.security.store.insert_tenant(&row).await?;
    }
    Ok(())
}
