//! Strategy use cases: validate a strategy's settings (it is built once before it is accepted), start and
//! stop it under the tenant's `strategies` supervisor, change its route, and the views the REST API and the
//! client WebSocket show. Each change is stored in the tenant's document, so a restart runs the same set.
//!
//! The routes (which strategy trades what) are owned by the tenant's `MarketData`: these functions change them
//! by message and read the snapshot it publishes.

use std::collections::BTreeMap;
use std::sync::Arc;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
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
    /// Its warm-up, while its actor runs: `warming` until the bars it needs are behind it (it trades no
    /// live bar before), then `ready`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub warm_up: Option<WarmUpView>,
}

/// A running strategy's warm-up (see `actors::strategy`).
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct WarmUpView {
    /// `warming` or `ready`.
    pub state: String,
    /// Bars the strategy declares it needs behind it (from its parameters).
    pub bars: usize,
    /// `snapshot` (its stored state, then the bars after it), `replay` (its warm-up bars), `none` (yet).
    pub warmed_by: String,
    /// Open time of the last bar it handled.
    pub last_bar_ms: Option<i64>,
}

/// What the supervisor and the strategy's actor say of one strategy.
#[derive(Debug, Clone, Default)]
pub(crate) struct Supervised {
    running: bool,
    disabled: Option<String>,
    warm_up: Option<WarmUpView>,
}

pub(crate) fn child_name(id: &str) -> String {
    format!("strategy:{id}")
}

pub(crate) fn validate(t: &TenantContext, s: &StrategySettings) -> Result<StrategyRoute, AppError> {
    super::valid_id("id", &s.id)?;
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
pub(crate) async fn supervised(t: &TenantContext) -> BTreeMap<String, Supervised> {
    with_warm_ups(
        t,
        by_strategy(children(t).await, |c| Supervised {
            running: c.running,
            disabled: c.disabled,
            warm_up: None,
        }),
    )
    .await
}

/// Asks each running strategy's actor for its warm-up (a busy one is left out after 250 ms).
async fn with_warm_ups(
    t: &TenantContext,
    mut all: BTreeMap<String, Supervised>,
) -> BTreeMap<String, Supervised> {
    let hosts: Vec<_> = {
        let hosts = t.strategy_hosts.read();
        all.keys()
            .filter_map(|id| Some((id.clone(), hosts.get(id)?.clone())))
            .collect()
    };
    for (id, host) in hosts {
        let asked = host.send(crate::actors::messages::GetStrategyState);
        if let Ok(Ok(s)) = tokio::time::timeout(std::time::Duration::from_millis(250), asked).await
        {
            if let Some(entry) = all.get_mut(&id) {
                entry.warm_up = Some(WarmUpView {
                    state: s.state.to_owned(),
                    bars: s.warm_up_bars,
                    warmed_by: s.warmed_by.to_owned(),
                    last_bar_ms: s.last_bar_ms,
                });
            }
        }
    }
    all
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
    let supervised = with_warm_ups(
        t,
        by_strategy(children, |c| Supervised {
            running: c.running,
            disabled: c.disabled,
            warm_up: None,
        }),
    )
    .await;
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
                "warm_up": v.warm_up.as_ref().map(|w| w.state.clone()),
            })
        })
        .collect()
}

/// A strategy with its state: `running`, `restarting` (between a failure and its restart), `failed`
/// (disabled for failing too often; `last_error` says why) or `stopped`.
pub(crate) fn view(
    s: &StrategySettings,
    supervised: &BTreeMap<String, Supervised>,
) -> StrategyView {
    let Supervised {
        running,
        disabled,
        warm_up,
    } = supervised.get(&s.id).cloned().unwrap_or_default();
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
        warm_up: warm_up.filter(|_| s.enabled && running),
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

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
/// A change to a strategy: what is given replaces what it had.
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

/// Creates a strategy for `actor`: validated (built once), within the tier's quota, routed, started when
/// enabled, stored and audited. A strategy that cannot start is not left half-created.
pub async fn create(
    app: &App,
    t: &Arc<TenantContext>,
    actor: &str,
    mut settings: StrategySettings,
) -> Result<StrategyView, AppError> {
    let _admin = t.admin.lock().await;
    super::strategy_modules::prepare(app, t, &mut settings).await?;
    let route = validate(t, &settings)?;
    let (exists, count) = {
        let routes = t.strategies.read();
        (routes.contains_key(&settings.id), routes.len())
    };
    if exists {
        return Err(AppError::Conflict(format!(
            "id: strategy `{}` already exists",
            settings.id
        )));
    }
    let quotas = &app.settings.quotas.strategies;
    let quota = quotas.per_minute(&t.tier());
    if count as u32 >= quota {
        return Err(super::tenants::quota_exceeded(
            quotas,
            &t.tier(),
            "strategies",
            quota,
        ));
    }
    set_route(t, route.clone()).await?;
    if settings.enabled {
        if let Err(e) = start_child(t, route).await {
            // Undone so the refused strategy is not left half-created (best effort: the owner may be gone).
            let _ = drop_route(t, &settings.id).await;
            return Err(e);
        }
    }
    super::tenants::persist(app, t).await?;
    app.security
        .audit(
            &t.id.0,
            "strategy.created",
            actor,
            json!({"strategy": settings.id, "kind": settings.kind}),
        )
        .await?;
    Ok(view_one(t, &settings).await)
}

/// Changes strategy `id` for `actor`: the new settings are validated, the strategy restarted with them when
/// enabled, stored and audited.
pub async fn update(
    app: &App,
    t: &Arc<TenantContext>,
    actor: &str,
    id: &str,
    change: UpdateStrategy,
) -> Result<StrategyView, AppError> {
    let _admin = t.admin.lock().await;
    let mut settings = route_of(t, id)?.settings;
    if let Some(tf) = change.timeframe {
        settings.timeframe = tf;
    }
    if let Some(v) = change.volume {
        settings.volume = v;
    }
    if let Some(a) = change.account {
        settings.account = Some(a);
    }
    if let Some(p) = change.params {
        settings.params = p;
    }
    super::strategy_modules::prepare(app, t, &mut settings).await?;
    let route = validate(t, &settings)?;
    stop_child(t, &settings.id).await?;
    set_route(t, route.clone()).await?;
    if settings.enabled {
        start_child(t, route).await?;
    }
    super::tenants::persist(app, t).await?;
    app.security
        .audit(
            &t.id.0,
            "strategy.updated",
            actor,
            json!({"strategy": settings.id}),
        )
        .await?;
    Ok(view_one(t, &settings).await)
}

/// Deletes strategy `id` for `actor`: stopped, unrouted, stored and audited.
pub async fn delete(
    app: &App,
    t: &Arc<TenantContext>,
    actor: &str,
    id: &str,
) -> Result<(), AppError> {
    let _admin = t.admin.lock().await;
    route_of(t, id)?;
    stop_child(t, id).await?;
    drop_route(t, id).await?;
    super::tenants::persist(app, t).await?;
    app.security
        .audit(&t.id.0, "strategy.deleted", actor, json!({"strategy": id}))
        .await?;
    Ok(())
}
