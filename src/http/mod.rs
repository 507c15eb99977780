//! The HTTP front door: one route table. Resources live one per file.

pub mod api;
pub mod dashboard;
pub mod error;
pub mod forward;
pub mod health;
pub mod ws;

use actix_web::web;

/// What every handler can reach: the application's use-case context under its HTTP name.
pub type AppState = crate::app::App;

/// The bridges' own listener's routes (`http.bridge_listener`): the bridge endpoint and a health check.
pub fn bridge_routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/health", web::get().to(health::health))
        .route("/ws/mt5", web::get().to(ws::mt5::connect));
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
