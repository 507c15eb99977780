//! Strategy instances of a tenant: created with validated parameters (the strategy is built once before it
//! is accepted), changed, started, stopped and deleted while the tenant runs. Each change is stored in the
//! tenant's document, so a restart runs the same set.
//!
//! A strategy lives under the tenant's `strategies` supervisor, which counts restarts per strategy: one that
//! fails too often is disabled (`state: failed` with its `last_error`) while the rest of the tenant trades
//! on; `POST …/start` re-enables it with a fresh budget.
//!
//! The routes (which strategy trades what) are owned by the tenant's `MarketData`: these handlers change them
//! by message and read the snapshot it publishes.

use std::collections::BTreeMap;

use actix_web::web;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::{Authorized, Body, Deleted, Reply};
use crate::app::strategies::{
    drop_route, route_of, set_enabled_as, set_route, start_child, stop_child, supervised, validate,
    view, view_one, StrategyView,
};
use crate::domain::tenant::StrategySettings;
use crate::http::error::ApiError;

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateStrategy {
    #[serde(default)]
    #[schemars(pattern(r"^(M1|M5|M15|H1|H4|D1)$"))]
    pub timeframe: Option<String>,
    #[serde(default)]
    #[schemars(schema_with = "crate::domain::schema::positive_decimal_or_null")]
    pub volume: Option<crate::domain::schema::PositiveDecimal>,
    #[serde(default)]
    pub account: Option<u64>,
    #[serde(default)]
    pub params: Option<BTreeMap<String, f64>>,
}

/// The tenant's strategies.
#[derive(Debug, Serialize, JsonSchema)]
pub struct StrategyList {
    pub strategies: Vec<StrategyView>,
}

pub async fn list(auth: Authorized) -> Result<Reply<StrategyList>, ApiError> {
    let t = auth.tenant()?;
    let doc = t.document();
    let supervised = supervised(t).await;
    let items: Vec<_> = doc
        .strategies
        .iter()
        .map(|s| view(s, &supervised))
        .collect();
    Ok(auth.ok(StrategyList { strategies: items }))
}

pub async fn get(
    auth: Authorized,
    path: web::Path<(String, String)>,
) -> Result<Reply<StrategyView>, ApiError> {
    let t = auth.tenant()?;
    let route = route_of(t, &path.1)?;
    Ok(auth.ok(view_one(t, &route.settings).await))
}

pub async fn create(
    auth: Authorized,
    Body(body): Body<serde_json::Value>,
) -> Result<Reply<StrategyView, 201>, ApiError> {
    let body: StrategySettings = super::docs::decode(body)?;
    let t = auth.tenant()?.clone();
    let _admin = t.admin.lock().await;
    let route = validate(&t, &body)?;
    let (exists, count) = {
        let routes = t.strategies.read();
        (routes.contains_key(&body.id), routes.len())
    };
    if exists {
        return Err(ApiError::Conflict(format!(
            "id: strategy `{}` already exists",
            body.id
        )));
    }
    let quotas = &auth.state.settings.quotas.strategies;
    let quota = quotas.per_minute(&t.tier());
    if count as u32 >= quota {
        return Err(crate::app::tenants::quota_exceeded(
            quotas,
            &t.tier(),
            "strategies",
            quota,
        ));
    }
    set_route(&t, route.clone()).await?;
    if body.enabled {
        if let Err(e) = start_child(&t, route).await {
            // Undone so the refused strategy is not left half-created (best effort: the owner may be gone).
            let _ = drop_route(&t, &body.id).await;
            return Err(e);
        }
    }
    crate::app::tenants::persist(&auth.state, &t).await?;
    auth.state
        .security
        .audit(
            &t.id.0,
            "strategy.created",
            auth.actor(),
            json!({"strategy": body.id, "kind": body.kind}),
        )
        .await?;
    Ok(auth.created(view_one(&t, &body).await))
}

pub async fn update(
    auth: Authorized,
    path: web::Path<(String, String)>,
    Body(body): Body<serde_json::Value>,
) -> Result<Reply<StrategyView>, ApiError> {
    let body: UpdateStrategy = super::docs::decode(body)?;
    let t = auth.tenant()?.clone();
    let _admin = t.admin.lock().await;
    let mut settings = route_of(&t, &path.1)?.settings;
    if let Some(tf) = body.timeframe {
        settings.timeframe = tf;
    }
    if let Some(v) = body.volume {
        settings.volume = v;
    }
    if let Some(a) = body.account {
        settings.account = Some(a);
    }
    if let Some(p) = body.params {
        settings.params = p;
    }
    let route = validate(&t, &settings)?;
    stop_child(&t, &settings.id).await?;
    set_route(&t, route.clone()).await?;
    if settings.enabled {
        start_child(&t, route).await?;
    }
    crate::app::tenants::persist(&auth.state, &t).await?;
    auth.state
        .security
        .audit(
            &t.id.0,
            "strategy.updated",
            auth.actor(),
            json!({"strategy": settings.id}),
        )
        .await?;
    Ok(auth.ok(view_one(&t, &settings).await))
}

async fn set_enabled(
    auth: Authorized,
    id: &str,
    enabled: bool,
) -> Result<Reply<StrategyView>, ApiError> {
    let t = auth.tenant()?.clone();
    let view = set_enabled_as(&auth.state, &t, auth.actor(), id, enabled).await?;
    Ok(auth.ok(view))
}

pub async fn start(
    auth: Authorized,
    path: web::Path<(String, String)>,
) -> Result<Reply<StrategyView>, ApiError> {
    set_enabled(auth, &path.1, true).await
}

pub async fn stop(
    auth: Authorized,
    path: web::Path<(String, String)>,
) -> Result<Reply<StrategyView>, ApiError> {
    set_enabled(auth, &path.1, false).await
}

pub async fn delete(
    auth: Authorized,
    path: web::Path<(String, String)>,
) -> Result<Reply<Deleted>, ApiError> {
    let t = auth.tenant()?.clone();
    let _admin = t.admin.lock().await;
    route_of(&t, &path.1)?;
    stop_child(&t, &path.1).await?;
    drop_route(&t, &path.1).await?;
    crate::app::tenants::persist(&auth.state, &t).await?;
    auth.state
        .security
        .audit(
            &t.id.0,
            "strategy.deleted",
            auth.actor(),
            json!({"strategy": path.1}),
        )
        .await?;
    Ok(auth.ok(Deleted {
        deleted: path.1.clone(),
    }))
}
