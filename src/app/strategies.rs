//! Strategy use cases: validate a strategy's settings (it is built once before it is accepted), start and
//! stop it under the tenant's `strategies` supervisor, change its route, and the views the REST API and the
//! client WebSocket show. Each change is stored in the tenant's document, so a restart runs the same set.
//!
//! The routes (which strategy trades what) are owned by the tenant's `MarketData`: these functions change them
//! by message and read the snapshot it publishes.

use std::collections::BTreeMap;
use std::sync::Arc;

use schemars::JsonSchema;
use serde::Serialize;
use serde_json::json;

use super::{market_data, strategies_supervisor, App, AppError};
use crate::actors::messages::{DropRoute, SetRoute};
use crate::actors::tenant::{StrategyRoute, TenantContext};
use crate::domain::tenant::StrategySettings;
use crate::runtime::supervisor::{GetChildren, StartChild, StopChild, SupervisionError};

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

pub(crate) fn child_name(id: &str) -> String {
    format!("strategy:{id}")
}

pub(crate) fn validate(t: &TenantContext, s: &StrategySettings) -> Result<StrategyRoute, AppError> {
    crate::domain::valid_id("id", &s.id).map_err(AppError::BadRequest)?;
    crate::app::trading::traded_symbol(t, "symbol", &s.symbol)?;
    TenantContext::route(&t.registry, s).map_err(|e| {
        // The registry's message names the parameter; prefix where it belongs.
        if e.contains("unknown timeframe") {
            AppError::BadRequest(format!("timeframe: {e}"))
        } else if e.contains("unknown strategy kind") || e.contains("kind") {
            AppError::BadRequest(format!("kind: {e}"))
        } else {
            AppError::BadRequest(format!("params: {e}"))
        }
    })
}

/// Starts the strategy, or re-enables it with a fresh restart budget when it was disabled.
pub(crate) async fn start_child(
    t: &Arc<TenantContext>,
    route: StrategyRoute,
) -> Result<(), AppError> {
    let sup = strategies_supervisor(t)?;
    match sup.send(StartChild(t.strategy_spec(route))).await? {
        Ok(()) | Err(SupervisionError::DuplicateChild(_)) => Ok(()),
        Err(e) => Err(AppError::Unavailable(e.to_string())),
    }
}

pub(crate) async fn stop_child(t: &Arc<TenantContext>, id: &str) -> Result<(), AppError> {
    let sup = strategies_supervisor(t)?;
    match sup
        .send(StopChild {
            name: child_name(id),
        })
        .await?
    {
        Ok(()) | Err(SupervisionError::UnknownChild(_)) => Ok(()),
        Err(e) => Err(AppError::Unavailable(e.to_string())),
    }
}

/// Adds or replaces a route at its owner (`MarketData`), and waits until it is in force.
pub(crate) async fn set_route(t: &TenantContext, route: StrategyRoute) -> Result<(), AppError> {
    Ok(market_data(t)?.send(SetRoute(route)).await?)
}

pub(crate) async fn drop_route(t: &TenantContext, id: &str) -> Result<(), AppError> {
    Ok(market_data(t)?.send(DropRoute(id.to_owned())).await?)
}

/// The route of strategy `id`, as last published.
pub(crate) fn route_of(t: &TenantContext, id: &str) -> Result<StrategyRoute, AppError> {
    t.strategies
        .read()
        .get(id)
        .cloned()
        .ok_or(AppError::NotFound)
}

/// What the strategies supervisor knows of each strategy.
pub(crate) async fn children(t: &TenantContext) -> Vec<crate::runtime::supervisor::ChildInfo> {
    let Ok(sup) = strategies_supervisor(t) else {
        return Vec::new();
    };
    sup.send(GetChildren).await.unwrap_or_default()
}

/// Each strategy's (running, why disabled).
pub(crate) async fn supervised(t: &TenantContext) -> BTreeMap<String, (bool, Option<String>)> {
    by_strategy(children(t).await, |c| (c.running, c.disabled))
}

/// What `pick` takes of each strategy's child, by strategy id.
pub(crate) fn by_strategy<T>(
    children: Vec<crate::runtime::supervisor::ChildInfo>,
    pick: impl Fn(crate::runtime::supervisor::ChildInfo) -> T,
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
pub(crate) fn view(
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

pub(crate) async fn view_one(t: &TenantContext, s: &StrategySettings) -> StrategyView {
    view(s, &supervised(t).await)
}

/// Starts or stops a strategy for `actor` (HTTP and the client WebSocket): stored, supervised, audited.
/// Answers the strategy's view.
pub async fn set_enabled_as(
    app: &App,
    t: &Arc<TenantContext>,
    actor: &str,
    id: &str,
    enabled: bool,
) -> Result<StrategyView, AppError> {
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
    crate::app::tenants::persist(app, t).await?;
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
