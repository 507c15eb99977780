//! A tenant's trading: risk limits and state, the kill switch, orders, fills, positions, performance and
//! the supervision events of its actors. Orders and fills come from the tenant's `Portfolio` (which holds
//! the book it reloaded from storage), filtered by time and paginated newest first.

use actix_web::HttpRequest;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::{Authorized, Body, Page, Reply};
use crate::actors::messages::{
    AccountPosition, GetRiskState, PortfolioSnapshot, RiskState, SetRiskLimits,
};
use crate::app::trading::{check_limits, set_kill_switch, KillSwitchRequest};
use crate::domain::orders::Order;
use crate::domain::positions::{Deal, Performance};
use crate::domain::tenant::RiskSettings;
use crate::domain::Timeframe;
use crate::http::error::ApiError;
use crate::runtime::events::SupervisionEvent;

/// The tenant's risk limits and the risk state.
#[derive(Debug, Serialize, JsonSchema)]
pub struct RiskView {
    /// The limits in force.
    pub limits: RiskSettings,
    /// The kill switch, blind accounts and the day's figures.
    pub state: RiskState,
}

/// The risk limits in force after a change.
#[derive(Debug, Serialize, JsonSchema)]
pub struct RiskLimits {
    pub limits: RiskSettings,
}

/// The risk state after the kill switch changed.
#[derive(Debug, Serialize, JsonSchema)]
pub struct KillSwitchState {
    pub state: RiskState,
}

/// The correlation engine's view of the tenant's symbols' M1 log returns (Ledoit–Wolf shrinkage).
#[derive(Debug, Serialize, JsonSchema)]
pub struct Correlations {
    /// The symbols, in the order of the matrices' rows and columns.
    pub symbols: Vec<String>,
    /// Correlations from −1 to 1 (0 where a symbol did not move); `null` until the window holds enough
    /// bars.
    pub correlations: Option<Vec<Vec<f64>>>,
    /// The shrunk covariance matrix; `null` until the window holds enough bars.
    pub covariance: Option<Vec<Vec<f64>>>,
    /// The Ledoit–Wolf intensity from 0 (the sample covariance) to 1 (the target); `null` until the window
    /// holds enough bars.
    pub shrinkage: Option<f64>,
    /// Rows of returns the covariance was estimated from.
    pub observations: usize,
    /// The bars the returns are of: always `M1`.
    pub timeframe: Timeframe,
}

/// A page of the tenant's orders.
#[derive(Debug, Serialize, JsonSchema)]
pub struct OrderPage {
    /// Newest first, by creation time.
    pub orders: Vec<Order>,
    /// Orders matching the filters, across every page.
    pub total: usize,
}

/// A page of the tenant's fills (deals).
#[derive(Debug, Serialize, JsonSchema)]
pub struct FillPage {
    /// Newest first, by execution time.
    pub fills: Vec<Deal>,
    /// Fills matching the filters, across every page.
    pub total: usize,
}

/// The tenant's open positions.
#[derive(Debug, Serialize, JsonSchema)]
pub struct PositionList {
    pub positions: Vec<AccountPosition>,
}

/// The tenant's trading performance.
#[derive(Debug, Serialize, JsonSchema)]
pub struct PerformanceView {
    pub performance: Performance,
}

/// The open positions and the performance of the caller's tenant.
#[derive(Debug, Serialize, JsonSchema)]
pub struct PositionsAndPerformance {
    pub positions: Vec<AccountPosition>,
    pub performance: Performance,
}

/// Every order of the caller's tenant.
#[derive(Debug, Serialize, JsonSchema)]
pub struct OrderList {
    pub orders: Vec<Order>,
}

/// Supervision events of the tenant's actors.
#[derive(Debug, Serialize, JsonSchema)]
pub struct SupervisionEvents {
    /// Oldest first, the last `limit`.
    pub events: Vec<SupervisionEvent>,
}

/// The portfolio as the API reads it: at most `PortfolioReads::MAX_AGE` old, shared between requests.
async fn snapshot(auth: &Authorized) -> Result<std::sync::Arc<PortfolioSnapshot>, ApiError> {
    let tenant = auth.tenant()?;
    let portfolio = tenant
        .portfolio
        .get()
        .ok_or_else(|| ApiError::Unavailable("portfolio restarting".into()))?;
    Ok(tenant.portfolio_reads.get(&portfolio).await?)
}

pub async fn risk(auth: Authorized) -> Result<Reply<RiskView>, ApiError> {
    let t = auth.tenant()?;
    let risk = t
        .risk
        .get()
        .ok_or_else(|| ApiError::Unavailable("risk restarting".into()))?;
    let state = risk.send(GetRiskState).await?;
    Ok(auth.ok(RiskView {
        limits: t.risk_limits(),
        state,
    }))
}

/// `GET …/correlations`: the correlation engine's current view of the tenant's symbols (M1 log returns,
/// Ledoit–Wolf shrinkage): correlations, covariance, shrinkage intensity and observations; `null`
/// figures until the window holds enough bars.
pub async fn correlations(auth: Authorized) -> Result<Reply<Correlations>, ApiError> {
    let t = auth.tenant()?;
    let risk = t
        .risk
        .get()
        .ok_or_else(|| ApiError::Unavailable("risk restarting".into()))?;
    let cov = risk.send(crate::actors::messages::GetCorrelation).await?;
    Ok(auth.ok(match cov {
        Some(c) => Correlations {
            correlations: Some(c.correlations()),
            symbols: c.symbols,
            covariance: Some(c.matrix),
            shrinkage: Some(c.shrinkage),
            observations: c.observations,
            timeframe: Timeframe::M1,
        },
        None => Correlations {
            symbols: t
                .symbols
                .iter()
                .collect::<std::collections::BTreeSet<_>>()
                .into_iter()
                .cloned()
                .collect(),
            correlations: None,
            covariance: None,
            shrinkage: None,
            observations: 0,
            timeframe: Timeframe::M1,
        },
    }))
}

pub async fn set_risk(
    auth: Authorized,
    Body(limits): Body<serde_json::Value>,
) -> Result<Reply<RiskLimits>, ApiError> {
    let limits: RiskSettings = super::docs::decode(limits)?;
    let t = auth.tenant()?.clone();
    check_limits(|s| t.symbols.contains(s), &limits)?;
    let _admin = t.admin.lock().await;
    let before = t.risk_limits();
    // `Risk` owns the limits: they are in force (and published) once it answers.
    let risk = t
        .risk
        .get()
        .ok_or_else(|| ApiError::Unavailable("risk restarting".into()))?;
    risk.send(SetRiskLimits(limits.clone())).await?;
    crate::app::tenants::persist(&auth.state, &t).await?;
    auth.state
        .security
        .audit(
            &t.id.0,
            "risk.limits_changed",
            auth.actor(),
            json!({"from": before, "to": limits}),
        )
        .await?;
    Ok(auth.ok(RiskLimits { limits }))
}

pub async fn kill_switch(
    auth: Authorized,
    Body(body): Body<serde_json::Value>,
) -> Result<Reply<KillSwitchState>, ApiError> {
    let body: KillSwitchRequest = super::docs::decode(body)?;
    let t = auth.tenant()?.clone();
    let state = set_kill_switch(&auth.state, &t, auth.actor(), body).await?;
    Ok(auth.ok(KillSwitchState { state }))
}

pub async fn orders(req: HttpRequest, auth: Authorized) -> Result<Reply<OrderPage>, ApiError> {
    let page = Page::from_query(&req)?;
    let snap = snapshot(&auth).await?;
    let (orders, total) = page.apply(&snap.orders, |o| o.created_ms);
    Ok(auth.ok(OrderPage { orders, total }))
}

pub async fn fills(req: HttpRequest, auth: Authorized) -> Result<Reply<FillPage>, ApiError> {
    let page = Page::from_query(&req)?;
    let snap = snapshot(&auth).await?;
    let (fills, total) = page.apply(&snap.deals, |d| d.fill.time_msc);
    Ok(auth.ok(FillPage { fills, total }))
}

pub async fn positions(auth: Authorized) -> Result<Reply<PositionList>, ApiError> {
    let snap = snapshot(&auth).await?;
    Ok(auth.ok(PositionList {
        positions: snap.positions.clone(),
    }))
}

pub async fn performance(auth: Authorized) -> Result<Reply<PerformanceView>, ApiError> {
    let snap = snapshot(&auth).await?;
    Ok(auth.ok(PerformanceView {
        performance: snap.performance.clone(),
    }))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct EventsQuery {
    limit: Option<usize>,
}

pub async fn supervision_events(
    req: HttpRequest,
    auth: Authorized,
) -> Result<Reply<SupervisionEvents>, ApiError> {
    let q = actix_web::web::Query::<EventsQuery>::from_query(req.query_string())
        .map_err(|e| ApiError::BadRequest(format!("query: {e}")))?;
    let t = auth.tenant()?;
    let mut events = auth.state.runtime.events.snapshot(Some(&t.id.0));
    let limit = q.limit.unwrap_or(100).clamp(1, 1000);
    if events.len() > limit {
        events.drain(..events.len() - limit);
    }
    Ok(auth.ok(SupervisionEvents { events }))
}

/// `GET /api/v1/positions`: the caller's tenant (kept for bridges and bots from before the tenant paths).
pub async fn my_positions(auth: Authorized) -> Result<Reply<PositionsAndPerformance>, ApiError> {
    own_tenant(&auth)?;
    let snap = snapshot(&auth).await?;
    Ok(auth.ok(PositionsAndPerformance {
        positions: snap.positions.clone(),
        performance: snap.performance.clone(),
    }))
}

/// The routes of "the caller's tenant" refuse (403) a platform administrator, who has none: the request is
/// well formed, this caller may not make it.
fn own_tenant(auth: &Authorized) -> Result<(), ApiError> {
    if auth.tenant.is_none() && auth.principal.is_platform() {
        return Err(ApiError::Forbidden(
            "a platform administrator has no tenant of their own: use /api/v1/tenants/{tenant}/…"
                .into(),
        ));
    }
    Ok(())
}

pub async fn my_orders(auth: Authorized) -> Result<Reply<OrderList>, ApiError> {
    own_tenant(&auth)?;
    let snap = snapshot(&auth).await?;
    Ok(auth.ok(OrderList {
        orders: snap.orders.clone(),
    }))
}
