//! The HTTP front door: one route table. Resources live one per file.

pub mod api;
pub mod dashboard;
pub mod error;
pub mod forward;
pub mod health;
pub mod ws;

use std::sync::Arc;

use actix_web::web;

use crate::actors::tree::Runtime;
use crate::config::Settings;

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    pub runtime: Runtime,
    pub settings: Arc<Settings>,
    pub rate_limiter: Arc<crate::security::rate_limit::RateLimiter>,
    pub security: Arc<crate::security::service::Security>,
    /// Training jobs (set once the actor runs; it holds a copy of this state).
    pub jobs: crate::actors::slot::Slot<crate::actors::training::TrainingJobs>,
    /// Strategy optimisation jobs (set once the actor runs).
    pub optimisations: crate::actors::slot::Slot<crate::actors::optimisations::Optimisations>,
    /// Outstanding WebSocket tickets (`POST /api/v1/ws-tickets`).
    pub tickets: Arc<api::tickets::Tickets>,
}

/// The route table.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/", web::get().to(dashboard::index))
        .route("/dashboard/app.js", web::get().to(dashboard::script))
        .route("/dashboard/style.css", web::get().to(dashboard::style))
        .route("/health", web::get().to(health::health))
        .route("/ready", web::get().to(health::ready))
        .route("/metrics", web::get().to(health::metrics))
        .route("/ws/mt5", web::get().to(ws::mt5::connect))
        .route("/ws/events", web::get().to(ws::events::connect))
        .route("/ws/v1/client", web::get().to(ws::client::connect))
        .configure(api::configure);
}
