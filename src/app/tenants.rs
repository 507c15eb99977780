//! Tenant use cases: create, change tier, suspend, resume and restart a tenant; and, shared by every other
//! use case, the tenant's view, tier gates and quotas, and storing the tenant document after a change.

use std::sync::Arc;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::{App, AppError};
use crate::actors::messages::{Disconnect, SetTier};
use crate::actors::tenant::TenantContext;
use crate::domain::now_ms;
use crate::domain::schema::is_blank;
use crate::domain::tenant::{RiskSettings, TenantSettings};
use crate::domain::tier::{Tier, TierLimits, TIERS};
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

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateTenant {
    /// Letters, digits, - or _; 1 to 64 characters.
    #[schemars(pattern(r"^[A-Za-z0-9_-]{1,64}$"))]
    pub id: String,
    /// 1 to 200 characters, not all white space.
    #[schemars(length(min = 1, max = 200), regex(pattern = crate::domain::schema::NOT_BLANK))]
    pub name: String,
    /// free, basic, professional or enterprise (default free).
    #[serde(default)]
    pub tier: Option<Tier>,
    /// Symbols the tenant trades: 1 to 32 printable ASCII characters each.
    #[schemars(length(min = 1), inner(regex(pattern = r"^[!-~]{1,32}$")))]
    pub symbols: Vec<String>,
    #[serde(default)]
    pub risk: Option<RiskSettings>,
}

/// Creates a tenant for `actor` (a platform administrator): checked (id, name, symbols, limits), started at
/// once (under this node's lease in cluster mode), stored and audited on the platform's chain.
pub async fn create(
    app: &App,
    actor: &str,
    body: CreateTenant,
) -> Result<Arc<TenantContext>, AppError> {
    let id = body.id.clone();
    super::valid_id("id", &id)?;
    if id == crate::security::service::PLATFORM {
        // Taken: the platform's own audit chain and users go by this name.
        return Err(AppError::Conflict("id: `platform` is reserved".into()));
    }
    if is_blank(&body.name) || body.name.chars().count() > 200 {
        return Err(AppError::BadRequest(
            "name: must have 1 to 200 characters, not all white space".into(),
        ));
    }
    let tier = body.tier.unwrap_or(Tier::Free).as_str().to_owned();
    if body.symbols.is_empty() {
        return Err(AppError::BadRequest(
            "symbols: at least one symbol is required".into(),
        ));
    }
    for (i, s) in body.symbols.iter().enumerate() {
        if s.is_empty() || s.len() > 32 || !s.chars().all(|c| c.is_ascii_graphic()) {
            return Err(AppError::BadRequest(format!(
                "symbols[{i}]: `{s}` is not a symbol"
            )));
        }
    }
    if let Some(risk) = &body.risk {
        super::trading::check_limits(|s| body.symbols.iter().any(|x| x == s), risk)?;
    }
    if app.runtime.tenant(&id).is_some() || app.security.store.tenant(&id).await?.is_some() {
        return Err(AppError::Conflict(format!(
            "id: tenant `{id}` already exists"
        )));
    }
    let settings = TenantSettings {
        id: id.clone(),
        name: body.name.trim().to_owned(),
        tier,
        api_keys: Vec::new(),
        symbols: body.symbols,
        contract_sizes: Default::default(),
        risk: body.risk.unwrap_or_default(),
        strategies: Vec::new(),
        models: Vec::new(),
    };
    let tenant = app
        .runtime
        .start_tenant(settings)
        .await
        .map_err(|e| AppError::BadRequest(e.to_string()))?;
    persist(app, &tenant).await?;
    app.security
        .audit(
            crate::security::service::PLATFORM,
            "tenant.created",
            actor,
            json!({"tenant": id, "tier": tenant.tier()}),
        )
        .await?;
    Ok(tenant)
}

/// Changes the tenant's tier for `actor`: in force once its risk actor (the tier's owner) has it, stored and
/// audited.
pub async fn set_tier(
    app: &App,
    t: &Arc<TenantContext>,
    actor: &str,
    tier: Tier,
) -> Result<(), AppError> {
    let tier = tier.as_str().to_owned();
    let _admin = t.admin.lock().await;
    let from = t.tier();
    // `Risk` owns the tier: it is in force (and published) once it answers.
    let risk = t
        .risk
        .get()
        .ok_or_else(|| AppError::Unavailable("risk restarting".into()))?;
    risk.send(SetTier(tier.clone())).await?;
    persist(app, t).await?;
    app.security
        .audit(
            &t.id.0,
            "tenant.tier_changed",
            actor,
            json!({"from": from, "to": tier}),
        )
        .await?;
    Ok(())
}

/// Suspends or resumes the tenant for `actor`: a suspended tenant's users, keys and bridges are refused and
/// its sessions closed; stored and audited.
pub async fn set_suspended(
    app: &App,
    t: &Arc<TenantContext>,
    actor: &str,
    suspended: bool,
) -> Result<(), AppError> {
    let _admin = t.admin.lock().await;
    app.security.set_suspended(&t.id.0, suspended);
    persist(app, t).await?;
    if suspended {
        for s in t.all_sessions() {
            s.do_send(Disconnect {
                reason: "the tenant is suspended".into(),
            });
        }
    }
    app.security
        .audit(
            &t.id.0,
            if suspended {
                "tenant.suspended"
            } else {
                "tenant.resumed"
            },
            actor,
            json!({}),
        )
        .await?;
    Ok(())
}

/// Starts a failed tenant again from its stored state, for `actor`; refused (conflict) while it runs.
pub async fn restart(
    app: &App,
    t: &Arc<TenantContext>,
    actor: &str,
) -> Result<Arc<TenantContext>, AppError> {
    let _admin = t.admin.lock().await;
    let failure = t.failure().ok_or_else(|| {
        AppError::Conflict(format!(
            "tenant `{}` is running: restart is for a tenant that failed",
            t.id
        ))
    })?;
    let restarted = app
        .runtime
        .restart_tenant(&t.id.0)
        .await
        .map_err(|e| AppError::Unavailable(format!("restarting tenant `{}`: {e}", t.id)))?;
    app.security
        .audit(
            &t.id.0,
            "tenant.restarted",
            actor,
            json!({ "after": failure }),
        )
        .await?;
    Ok(restarted)
}
