//! The HTTP front door: one route table. Resources live one per file.

pub mod error;
pub mod health;

use std::sync::Arc;

use actix_web::web;

use crate::actors::tree::Runtime;
use crate::config::Settings;

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    pub runtime: Runtime,
    pub settings: Arc<Settings>,
}

/// The route table.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/health", web::get().to(health::health))
        .route("/ready", web::get().to(health::ready))
        .route("/metrics", web::get().to(health::metrics));
}
