//! Strategy instances of a tenant: created with validated parameters (the strategy is built once before it
//! is accepted), changed, started, stopped and deleted while the tenant runs. Each change is stored in the
//! tenant's document, so a restart runs the same set.
//!
//! A strategy lives under the tenant's `strategies` supervisor, which counts restarts per strategy: one that
//! fails too often is disabled (`state: failed` with its `last_error`) while the rest of the tenant trades
//! on; `POST …/start` re-enables it with a fresh budget.
//!
//! The use cases are `app::strategies` (the client WebSocket starts and stops strategies through the same
//! functions); these handlers read the request and shape the answer.

use actix_web::web;
use schemars::JsonSchema;
use serde::Serialize;

use super::{Authorized, Body, Deleted, Reply};
use crate::app::strategies::{
    self, route_of, set_enabled_as, supervised, view, view_one, StrategyView, UpdateStrategy,
};
use crate::domain::tenant::StrategySettings;
use crate::http::error::ApiError;

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
    let view = strategies::create(&auth.state, &t, auth.actor(), body).await?;
    Ok(auth.created(view))
}

pub async fn update(
    auth: Authorized,
    path: web::Path<(String, String)>,
    Body(body): Body<serde_json::Value>,
) -> Result<Reply<StrategyView>, ApiError> {
    let body: UpdateStrategy = super::docs::decode(body)?;
    let t = auth.tenant()?.clone();
    let view = strategies::update(&auth.state, &t, auth.actor(), &path.1, body).await?;
    Ok(auth.ok(view))
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
    strategies::delete(&auth.state, &t, auth.actor(), &path.1).await?;
    Ok(auth.ok(Deleted {
        deleted: path.1.clone(),
    }))
}
