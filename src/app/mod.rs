//! The use cases: what a tenant, an operator or a job can ask trellis to do, with their own error type
//! ([`AppError`]), whoever asks.
//!
//! The REST handlers, the client WebSocket and the job actors (training, optimisation) call the same
//! functions here, so a kill switch pressed from the API and from a trading client is one code path, audited
//! once. This layer sits above the tenant's actors, the cluster and the stores, and below `http`, which only
//! extracts a request, calls a use case and shapes the reply. Nothing here imports the HTTP layer
//! (`src/layers.rs` checks the rule).
//!
//! - [`App`]: what every use case can reach (the runtime of tenants, settings, security, jobs, tickets).
//! - `error`: [`AppError`], retryable or not.
//! - `tenants`, `strategies`, `strategy_modules`, `trading`, `deployments`, `models`, `optimise`: the use
//!   cases shared by several callers.
//! - `jobs`: the training and optimisation job actors, which run use cases on their own schedule.
//! - `tickets`: single-use WebSocket tickets.

pub mod deployments;
pub mod error;
pub mod jobs;
pub mod models;
pub mod optimise;
pub mod strategies;
pub mod strategy_modules;
pub mod tenants;
pub mod tickets;
pub mod trading;

use std::sync::Arc;

pub use error::AppError;

use crate::actors::tree::Runtime;
use crate::config::Settings;

/// What every use case can reach; cloned per request (every field is shared).
#[derive(Clone)]
pub struct App {
    pub runtime: Runtime,
    pub settings: Arc<Settings>,
    pub rate_limiter: Arc<crate::security::rate_limit::RateLimiter>,
    pub security: Arc<crate::security::service::Security>,
    /// Training jobs (set once the actor runs; it holds a copy of this context).
    pub jobs: crate::runtime::slot::Slot<jobs::training::TrainingJobs>,
    /// Strategy optimisation jobs (set once the actor runs).
    pub optimisations: crate::runtime::slot::Slot<jobs::optimisations::Optimisations>,
    /// This node's view of the cluster and its actor, in cluster mode (`cluster.enabled`).
    pub cluster: Option<crate::cluster::ClusterHandle>,
    /// Outstanding WebSocket tickets (`POST /api/v1/ws-tickets`).
    pub tickets: Arc<tickets::Tickets>,
}

/// Ids and names (tenants, strategies, models, aliases): 1 to 64 letters, digits, `-` or `_`; the error names
/// the field.
pub fn valid_id(what: &str, s: &str) -> Result<(), AppError> {
    crate::domain::valid_id(what, s).map_err(AppError::BadRequest)
}

/// The tenant's market data (the owner of its routes and deployments), or `Unavailable` while it restarts.
pub(crate) fn market_data(
    t: &crate::actors::tenant::TenantContext,
) -> Result<actix::Addr<crate::actors::market_data::MarketData>, AppError> {
    t.market_data
        .get()
        .ok_or_else(|| AppError::Unavailable("the tenant's market data is restarting".into()))
}

/// The tenant's `strategies` supervisor (strategies and model hosts), or `Unavailable` while it restarts.
pub(crate) fn strategies_supervisor(
    t: &crate::actors::tenant::TenantContext,
) -> Result<actix::Addr<crate::runtime::supervisor::Supervisor>, AppError> {
    t.strategy_supervisor.get().ok_or_else(|| {
        AppError::Unavailable("the tenant's strategies supervisor is restarting".into())
    })
}
