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
use std::sync::Arc;

use actix_web::web;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::{Authorized, Body, Deleted, Reply};
use crate::actors::messages::{DropRoute, SetRoute};
use crate::actors::supervisor::{GetChildren, StartChild, StopChild, SupervisionError};
use crate::actors::tenant::{StrategyRoute, TenantContext};
use crate::config::StrategySettings;
use crate::http::error::ApiError;

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateStrategy {
    #[serde(default)]
    #[schemars(pattern(r"^(M1|M5|M15|H1|H4|D1)$"))]
    pub timeframe: Option<String>,
    #[serde(default)]
    #[schemars(schema_with = "super::docs::positive_decimal_or_null")]
    pub volume: Option<rust_decimal::Decimal>,
    #[serde(default)]
    pub account: Option<u64>,
    #[serde(default)]
    pub params: Option<BTreeMap<String, f64>>,
}

/// Where a strategy is: `running`, `restarting` (between a failure and its restart), `failed` (disabled for
/// failing too often; `last_error` says why) or `stopped`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum StrategyState {
    Running,
    Restarting,
    Failed,
    Stopped,
}

/// A strategy with its state.
#[derive(Debug, Serialize, JsonSchema)]
pub struct StrategyView {
    /// Its settings, as stored.
    pub strategy: StrategySettings,
    /// Whether it is enabled and its actor runs now.
    pub running: bool,
    pub state: StrategyState,
    /// Why the strategy was disabled (`state: failed`).
    pub last_error: Option<String>,
}

/// The tenant's strategies.
#[derive(Debug, Serialize, JsonSchema)]
pub struct StrategyList {
    pub strategies: Vec<StrategyView>,
}

fn child_name(id: &str) -> String {
    format!("strategy:{id}")
}

fn validate(t: &TenantContext, s: &StrategySettings) -> Result<StrategyRoute, ApiError> {
    super::valid_id("id", &s.id)?;
    super::trading::traded_symbol(t, "symbol", &s.symbol)?;
    if s.volume <= rust_decimal::Decimal::ZERO {
        return Err(ApiError::BadRequest(
            "volume: must be greater than 0".into(),
        ));
    }
    TenantContext::route(&t.registry, s).map_err(|e| {
        // The registry's message names the parameter; prefix where it belongs.
        if e.contains("unknown timeframe") {
            ApiError::BadRequest(format!("timeframe: {e}"))
        } else if e.contains("unknown strategy kind") || e.contains("kind") {
            ApiError::BadRequest(format!("kind: {e}"))
        } else {
            ApiError::BadRequest(format!("params: {e}"))
        }
    })
}

fn strategies_supervisor(
    t: &TenantContext,
) -> Result<actix::Addr<crate::actors::supervisor::Supervisor>, ApiError> {
    t.strategy_supervisor.get().ok_or_else(|| {
        ApiError::Unavailable("the tenant's strategies supervisor is restarting".into())
    })
}

/// Starts the strategy, or re-enables it with a fresh restart budget when it was disabled.
async fn start_child(t: &Arc<TenantContext>, route: StrategyRoute) -> Result<(), ApiError> {
    let sup = strategies_supervisor(t)?;
    match sup.send(StartChild(t.strategy_spec(route))).await? {
        Ok(()) | Err(SupervisionError::DuplicateChild(_)) => Ok(()),
        Err(e) => Err(ApiError::Unavailable(e.to_string())),
    }
}

async fn stop_child(t: &Arc<TenantContext>, id: &str) -> Result<(), ApiError> {
    let sup = strategies_supervisor(t)?;
    match sup
        .send(StopChild {
            name: child_name(id),
        })
        .await?
    {
        Ok(()) | Err(SupervisionError::UnknownChild(_)) => Ok(()),
        Err(e) => Err(ApiError::Unavailable(e.to_string())),
    }
}

fn market_data(
    t: &TenantContext,
) -> Result<actix::Addr<crate::actors::market_data::MarketData>, ApiError> {
    t.market_data
        .get()
        .ok_or_else(|| ApiError::Unavailable("the tenant's market data is restarting".into()))
}

/// Adds or replaces a route at its owner (`MarketData`), and waits until it is in force.
async fn set_route(t: &TenantContext, route: StrategyRoute) -> Result<(), ApiError> {
    Ok(market_data(t)?.send(SetRoute(route)).await?)
}

async fn drop_route(t: &TenantContext, id: &str) -> Result<(), ApiError> {
    Ok(market_data(t)?.send(DropRoute(id.to_owned())).await?)
}

/// The route of strategy `id`, as last published.
fn route_of(t: &TenantContext, id: &str) -> Result<StrategyRoute, ApiError> {
    t.strategies
        .read()
        .get(id)
        .cloned()
        .ok_or(ApiError::NotFound)
}

/// What the strategies supervisor knows of each strategy.
async fn children(t: &TenantContext) -> Vec<crate::actors::supervisor::ChildInfo> {
    let Ok(sup) = strategies_supervisor(t) else {
        return Vec::new();
    };
    sup.send(GetChildren).await.unwrap_or_default()
}

/// Each strategy's (running, why disabled).
async fn supervised(t: &TenantContext) -> BTreeMap<String, (bool, Option<String>)> {
    by_strategy(children(t).await, |c| (c.running, c.disabled))
}

/// What `pick` takes of each strategy's child, by strategy id.
fn by_strategy<T>(
    children: Vec<crate::actors::supervisor::ChildInfo>,
    pick: impl Fn(crate::actors::supervisor::ChildInfo) -> T,
) -> BTreeMap<String, T> {
    children
        .into_iter()
        .filter_map(|c| Some((c.name.strip_prefix("strategy:")?.to_owned(), pick(c))))
        .collect()
}

/// The strategies as trading clients see them (`strategies` channel): flat, with the restart count; only
/// `only` when given. One query to the supervisor for both the state and the restart count.
pub async fn client_views(t: &TenantContext, only: Option<&str>) -> Vec<serde_json::Value> {
    let children = children(t).await;
    let restarts = by_strategy(children.clone(), |c| c.restarts);
    let supervised = by_strategy(children, |c| (c.running, c.disabled));
    t.document()
        .strategies
        .iter()
        .filter(|s| only.is_none_or(|id| id == s.id))
        .map(|s| {
            let v = view(s, &supervised);
            json!({
                "id": s.id,
                "kind": s.kind,
                "symbol": s.symbol,
                "timeframe": s.timeframe,
                "state": v.state,
                "running": v.running,
                "restarts": restarts.get(&s.id).copied().unwrap_or(0),
                "last_error": v.last_error,
            })
        })
        .collect()
}

/// A strategy with its state: `running`, `restarting` (between a failure and its restart), `failed`
/// (disabled for failing too often; `last_error` says why) or `stopped`.
fn view(
    s: &StrategySettings,
    supervised: &BTreeMap<String, (bool, Option<String>)>,
) -> StrategyView {
    let (running, disabled) = supervised.get(&s.id).cloned().unwrap_or((false, None));
    let state = match (s.enabled, running, &disabled) {
        (false, _, _) => StrategyState::Stopped,
        (true, _, Some(_)) => StrategyState::Failed,
        (true, true, None) => StrategyState::Running,
        (true, false, None) => StrategyState::Restarting,
    };
    StrategyView {
        strategy: s.clone(),
        running: s.enabled && running,
        state,
        last_error: disabled,
    }
}

async fn view_one(t: &TenantContext, s: &StrategySettings) -> StrategyView {
    view(s, &supervised(t).await)
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
    super::docs::check_decimal(
        body.get("volume"),
        "volume",
        super::docs::DecimalRule::Positive,
    )?;
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
        return Err(super::tenants::quota_exceeded(
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
    super::tenants::persist(&auth.state, &t).await?;
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
    super::docs::check_decimal(
        body.get("volume"),
        "volume",
        super::docs::DecimalRule::Positive,
    )?;
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
    super::tenants::persist(&auth.state, &t).await?;
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

/// Starts or stops a strategy for `actor` (HTTP and the client WebSocket): stored, supervised, audited.
/// Answers the strategy's view.
pub async fn set_enabled_as(
    app: &crate::http::AppState,
    t: &Arc<TenantContext>,
    actor: &str,
    id: &str,
    enabled: bool,
) -> Result<StrategyView, ApiError> {
    let _admin = t.admin.lock().await;
    let mut route = route_of(t, id)?;
    route.settings.enabled = enabled;
    set_route(t, route.clone()).await?;
    let settings = route.settings.clone();
    if enabled {
        start_child(t, route).await?;
    } else {
        stop_child(t, id).await?;
    }
    super::tenants::persist(app, t).await?;
    app.security
        .audit(
            &t.id.0,
            if enabled {
                "strategy.started"
            } else {
                "strategy.stopped"
            },
            actor,
            json!({"strategy": id}),
        )
        .await?;
    Ok(view_one(t, &settings).await)
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
    super::tenants::persist(&auth.state, &t).await?;
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
