//! Tenants (platform administrators): create (the tenant's actors start at once), list, get, change tier,
//! suspend and resume. A tenant's settings are stored as one document in the tenant registry; start-up runs
//! what is stored.

use std::sync::Arc;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::{Authorized, Body, Reply};
use crate::actors::messages::{self, Disconnect};
use crate::actors::tenant::TenantContext;
use crate::app::tenants::{persist, view, TenantView};
use crate::domain::tenant::{RiskSettings, TenantSettings};
use crate::domain::tier::Tier;
use crate::http::error::ApiError;

pub use crate::domain::tier::TIERS;

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateTenant {
    /// Letters, digits, - or _; 1 to 64 characters.
    #[schemars(pattern(r"^[A-Za-z0-9_-]{1,64}$"))]
    pub id: String,
    /// 1 to 200 characters, not all white space.
    #[schemars(length(min = 1, max = 200), regex(pattern = super::docs::NOT_BLANK))]
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

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SetTier {
    pub tier: Tier,
}

/// Every tenant.
#[derive(Debug, Serialize, JsonSchema)]
pub struct TenantList {
    /// By id.
    pub tenants: Vec<TenantView>,
}

pub async fn create(
    auth: Authorized,
    Body(body): Body<serde_json::Value>,
) -> Result<Reply<TenantView, 201>, ApiError> {
    let body: CreateTenant = super::docs::decode(body)?;
    let id = body.id.clone();
    super::valid_id("id", &id)?;
    if id == crate::security::service::PLATFORM {
        // Taken: the platform's own audit chain and users go by this name.
        return Err(ApiError::Conflict("id: `platform` is reserved".into()));
    }
    if super::docs::is_blank(&body.name) || body.name.chars().count() > 200 {
        return Err(ApiError::BadRequest(
            "name: must have 1 to 200 characters, not all white space".into(),
        ));
    }
    let tier = body.tier.unwrap_or(Tier::Free).as_str().to_owned();
    if body.symbols.is_empty() {
        return Err(ApiError::BadRequest(
            "symbols: at least one symbol is required".into(),
        ));
    }
    for (i, s) in body.symbols.iter().enumerate() {
        if s.is_empty() || s.len() > 32 || !s.chars().all(|c| c.is_ascii_graphic()) {
            return Err(ApiError::BadRequest(format!(
                "symbols[{i}]: `{s}` is not a symbol"
            )));
        }
    }
    if let Some(risk) = &body.risk {
        crate::app::trading::check_limits(|s| body.symbols.iter().any(|x| x == s), risk)?;
    }
    let state = auth.state.clone();
    if state.runtime.tenant(&id).is_some() || state.security.store.tenant(&id).await?.is_some() {
        return Err(ApiError::Conflict(format!(
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
    let tenant: Arc<TenantContext> = state
        .runtime
        .start_tenant(settings)
        .await
        .map_err(|e| ApiError::BadRequest(e.to_string()))?;
    persist(&state, &tenant).await?;
    state
        .security
        .audit(
            crate::security::service::PLATFORM,
            "tenant.created",
            auth.actor(),
            json!({"tenant": id, "tier": tenant.tier()}),
        )
        .await?;
    Ok(auth.created(view(&state, &tenant)))
}

pub async fn list(auth: Authorized) -> Result<Reply<TenantList>, ApiError> {
    let mut tenants: Vec<TenantView> = auth
        .state
        .runtime
        .tenants
        .iter()
        .map(|t| view(&auth.state, t.value()))
        .collect();
    tenants.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(auth.ok(TenantList { tenants }))
}

pub async fn get(auth: Authorized) -> Result<Reply<TenantView>, ApiError> {
    let t = auth.tenant()?;
    Ok(auth.ok(view(&auth.state, t)))
}

pub async fn set_tier(
    auth: Authorized,
    Body(body): Body<serde_json::Value>,
) -> Result<Reply<TenantView>, ApiError> {
    let body: SetTier = super::docs::decode(body)?;
    let tier = body.tier.as_str().to_owned();
    let t = auth.tenant()?.clone();
    let _admin = t.admin.lock().await;
    let from = t.tier();
    // `Risk` owns the tier: it is in force (and published) once it answers.
    let risk = t
        .risk
        .get()
        .ok_or_else(|| ApiError::Unavailable("risk restarting".into()))?;
    risk.send(messages::SetTier(tier.clone())).await?;
    persist(&auth.state, &t).await?;
    auth.state
        .security
        .audit(
            &t.id.0,
            "tenant.tier_changed",
            auth.actor(),
            json!({"from": from, "to": tier}),
        )
        .await?;
    Ok(auth.ok(view(&auth.state, &t)))
}

async fn set_suspended(auth: Authorized, suspended: bool) -> Result<Reply<TenantView>, ApiError> {
    let t = auth.tenant()?.clone();
    let _admin = t.admin.lock().await;
    auth.state.security.set_suspended(&t.id.0, suspended);
    persist(&auth.state, &t).await?;
    if suspended {
        for s in t.all_sessions() {
            s.do_send(Disconnect {
                reason: "the tenant is suspended".into(),
            });
        }
    }
    auth.state
        .security
        .audit(
            &t.id.0,
            if suspended {
                "tenant.suspended"
            } else {
                "tenant.resumed"
            },
            auth.actor(),
            json!({}),
        )
        .await?;
    Ok(auth.ok(view(&auth.state, &t)))
}

/// Starts a failed tenant again from its stored state (platform admin).
pub async fn restart(auth: Authorized) -> Result<Reply<TenantView>, ApiError> {
    let t = auth.tenant()?.clone();
    let _admin = t.admin.lock().await;
    let failure = t.failure().ok_or_else(|| {
        ApiError::Conflict(format!(
            "tenant `{}` is running: restart is for a tenant that failed",
            t.id
        ))
    })?;
    let restarted = auth
        .state
        .runtime
        .restart_tenant(&t.id.0)
        .await
        .map_err(|e| ApiError::Unavailable(format!("restarting tenant `{}`: {e}", t.id)))?;
    auth.state
        .security
        .audit(
            &t.id.0,
            "tenant.restarted",
            auth.actor(),
            json!({ "after": failure }),
        )
        .await?;
    Ok(auth.ok(view(&auth.state, &restarted)))
}

pub async fn suspend(auth: Authorized) -> Result<Reply<TenantView>, ApiError> {
    set_suspended(auth, true).await
}

pub async fn resume(auth: Authorized) -> Result<Reply<TenantView>, ApiError> {
    set_suspended(auth, false).await
}
