//! Tenants (platform administrators): create (the tenant's actors start at once), list, get, change tier,
//! suspend and resume. A tenant's settings are stored as one document in the tenant registry; start-up runs
//! what is stored.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{Authorized, Body, Reply};
use crate::app::tenants::{view, CreateTenant, TenantView};
use crate::domain::tier::Tier;
use crate::http::error::ApiError;

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
    let tenant = crate::app::tenants::create(&auth.state, auth.actor(), body).await?;
    Ok(auth.created(view(&auth.state, &tenant)))
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
    let t = auth.tenant()?.clone();
    crate::app::tenants::set_tier(&auth.state, &t, auth.actor(), body.tier).await?;
    Ok(auth.ok(view(&auth.state, &t)))
}

async fn set_suspended(auth: Authorized, suspended: bool) -> Result<Reply<TenantView>, ApiError> {
    let t = auth.tenant()?.clone();
    crate::app::tenants::set_suspended(&auth.state, &t, auth.actor(), suspended).await?;
    Ok(auth.ok(view(&auth.state, &t)))
}

/// Starts a failed tenant again from its stored state (platform admin).
pub async fn restart(auth: Authorized) -> Result<Reply<TenantView>, ApiError> {
    let t = auth.tenant()?.clone();
    let restarted = crate::app::tenants::restart(&auth.state, &t, auth.actor()).await?;
    Ok(auth.ok(view(&auth.state, &restarted)))
}

pub async fn suspend(auth: Authorized) -> Result<Reply<TenantView>, ApiError> {
    set_suspended(auth, true).await
}

pub async fn resume(auth: Authorized) -> Result<Reply<TenantView>, ApiError> {
    set_suspended(auth, false).await
}
