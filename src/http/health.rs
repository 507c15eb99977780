//! Liveness, readiness and metrics, for load balancers and Prometheus.
//!
//! `/health` answers as long as the process serves HTTP. `/ready` answers 200 only when every storage actor
//! has passed its last check, else 503 naming each failing store, so a balancer stops sending traffic to a
//! node that could not record what it accepts.

use actix_web::{web, HttpResponse};
use serde_json::json;

use super::AppState;

pub async fn health() -> HttpResponse {
    HttpResponse::Ok().json(json!({ "status": "ok", "version": env!("CARGO_PKG_VERSION") }))
}

pub async fn ready(state: web::Data<AppState>) -> HttpResponse {
    let failing = state.runtime.not_ready();
    let checks: serde_json::Map<String, serde_json::Value> = state
        .runtime
        .health
        .snapshot()
        .into_iter()
        .map(|(name, h)| (name, serde_json::to_value(h).unwrap_or_default()))
        .collect();
    if failing.is_empty() {
        HttpResponse::Ok().json(json!({ "status": "ready", "checks": checks }))
    } else {
        let failing: Vec<_> = failing
            .into_iter()
            .map(|(name, reason)| json!({ "name": name, "reason": reason }))
            .collect();
        HttpResponse::ServiceUnavailable()
            .insert_header(("Retry-After", "1"))
            .json(json!({ "status": "not_ready", "failing": failing, "checks": checks }))
    }
}

pub async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/openmetrics-text; version=1.0.0; charset=utf-8")
        .body(state.runtime.metrics.render())
}

/// Times every request by its method and matched route pattern (`trellis_api_request_seconds`); a path that
/// matches no route counts as `unmatched`, so the label set stays as small as the route table.
pub async fn time_requests(
    req: actix_web::dev::ServiceRequest,
    next: actix_web::middleware::Next<impl actix_web::body::MessageBody + 'static>,
) -> Result<actix_web::dev::ServiceResponse<actix_web::body::BoxBody>, actix_web::Error> {
    let started = std::time::Instant::now();
    let method = req.method().clone();
    let state = req.app_data::<web::Data<AppState>>().cloned();
    let res = next.call(req).await?.map_into_boxed_body();
    if let Some(state) = state {
        let route = res
            .request()
            .match_pattern()
            .unwrap_or_else(|| "unmatched".to_owned());
        state
            .runtime
            .metrics
            .api_request(method.as_str(), &route, started.elapsed().as_secs_f64());
    }
    Ok(res)
}
