//! The `/api/v1` surface. One table, [`ROUTES`], lists every route with what it requires ([`Access`]); the
//! [`Authorized`] extractor finds the matched route in it and enforces it, the OpenAPI document is written
//! from it, and the authorization-matrix test walks it. A route missing from the table refuses every
//! caller (fail closed).
//!
//! Tenant resources live under `/api/v1/tenants/{tenant}/…`. The tenant a caller acts for comes only from
//! its verified token or key: a caller of another tenant gets 404 (not 403: the tenant's existence is not
//! revealed), a caller of the right tenant without the role gets 403. Platform administrators may act on
//! every tenant. Every authenticated request of a tenant takes one unit of its tier's rate limit.

pub mod accounts;
pub mod audit;
pub mod auth;
pub mod deployments;
pub mod docs;
pub mod jobs;
pub mod keys;
pub mod models;
pub mod optimise;
pub mod strategies;
pub mod tenants;
pub mod tickets;
pub mod trading;
pub mod users;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use actix_web::dev::Payload;
use actix_web::http::{Method, StatusCode};
use actix_web::{web, FromRequest, HttpRequest, HttpResponse};
use serde::de::DeserializeOwned;

use super::error::ApiError;
use super::AppState;
use crate::actors::tenant::TenantContext;
use crate::security::rate_limit::Decision;
use crate::security::rbac::Access;
use crate::security::service::{AuthError, Principal};

/// Which schema documents a request body.
pub type SchemaFn = fn(&mut schemars::SchemaGenerator) -> schemars::Schema;

/// One route: what it is, who may call it.
pub struct RouteDef {
    pub method: &'static str,
    /// As registered (actix pattern syntax, `{tenant}` etc.).
    pub path: &'static str,
    pub access: Access,
    pub tag: &'static str,
    pub summary: &'static str,
    pub body: Option<SchemaFn>,
    /// Query parameters (all optional strings/integers).
    pub query: &'static [&'static str],
}

macro_rules! route {
    ($method:literal, $path:literal, $access:ident, $tag:literal, $summary:literal) => {
        RouteDef {
            method: $method,
            path: $path,
            access: Access::$access,
            tag: $tag,
            summary: $summary,
            body: None,
            query: &[],
        }
    };
    ($method:literal, $path:literal, $access:ident, $tag:literal, $summary:literal, body = $body:ty) => {
        RouteDef {
            method: $method,
            path: $path,
            access: Access::$access,
            tag: $tag,
            summary: $summary,
            body: Some(|g| g.subschema_for::<$body>()),
            query: &[],
        }
    };
    ($method:literal, $path:literal, $access:ident, $tag:literal, $summary:literal, query = $q:expr) => {
        RouteDef {
            method: $method,
            path: $path,
            access: Access::$access,
            tag: $tag,
            summary: $summary,
            body: None,
            query: $q,
        }
    };
}

const PAGE: &[&str] = &["from_ms", "to_ms", "offset", "limit"];

/// Every `/api` route.
pub static ROUTES: &[RouteDef] = &[
    route!(
        "POST",
        "/api/v1/auth/login",
        Public,
        "auth",
        "Sign in with email and password; answers an access and a refresh token",
        body = auth::LoginRequest
    ),
    route!(
        "POST",
        "/api/v1/auth/refresh",
        Public,
        "auth",
        "Rotate a refresh token (a reused one revokes its session)",
        body = auth::RefreshRequest
    ),
    route!(
        "POST",
        "/api/v1/auth/logout",
        Authenticated,
        "auth",
        "End the caller's session"
    ),
    route!(
        "GET",
        "/api/v1/me",
        Authenticated,
        "auth",
        "Who the caller is"
    ),
    route!(
        "POST",
        "/api/v1/ws-tickets",
        Read,
        "auth",
        "A single-use ticket (valid 30 s) to open the client WebSocket /ws/v1/client from a browser",
        body = tickets::TicketRequest
    ),
    route!(
        "POST",
        "/api/v1/tenants",
        Platform,
        "tenants",
        "Create a tenant (it starts at once)",
        body = tenants::CreateTenant
    ),
    route!(
        "GET",
        "/api/v1/tenants",
        Platform,
        "tenants",
        "List tenants"
    ),
    route!(
        "GET",
        "/api/v1/tenants/{tenant}",
        Read,
        "tenants",
        "A tenant"
    ),
    route!(
        "PUT",
        "/api/v1/tenants/{tenant}/tier",
        Platform,
        "tenants",
        "Change a tenant's tier",
        body = tenants::SetTier
    ),
    route!(
        "POST",
        "/api/v1/tenants/{tenant}/restart",
        Platform,
        "tenants",
        "Start a failed tenant again from its stored state (409 while it runs)"
    ),
    route!(
        "POST",
        "/api/v1/tenants/{tenant}/suspend",
        Platform,
        "tenants",
        "Suspend a tenant: its users, keys and bridges are refused"
    ),
    route!(
        "POST",
        "/api/v1/tenants/{tenant}/resume",
        Platform,
        "tenants",
        "Lift a suspension"
    ),
    route!(
        "POST",
        "/api/v1/tenants/{tenant}/users",
        Admin,
        "users",
        "Create a user of the tenant",
        body = users::CreateUser
    ),
    route!(
        "GET",
        "/api/v1/tenants/{tenant}/users",
        Admin,
        "users",
        "List the tenant's users",
        query = PAGE
    ),
    route!(
        "PUT",
        "/api/v1/tenants/{tenant}/users/{user}/role",
        Admin,
        "users",
        "Change a user's role (their sessions end)",
        body = users::SetRole
    ),
    route!(
        "POST",
        "/api/v1/tenants/{tenant}/users/{user}/disable",
        Admin,
        "users",
        "Disable a user (their sessions end)"
    ),
    route!(
        "POST",
        "/api/v1/tenants/{tenant}/api-keys",
        Admin,
        "api-keys",
        "Create an API key (the secret is shown once)",
        body = keys::CreateKey
    ),
    route!(
        "GET",
        "/api/v1/tenants/{tenant}/api-keys",
        Admin,
        "api-keys",
        "List API keys (never their secrets)",
        query = PAGE
    ),
    route!(
        "POST",
        "/api/v1/tenants/{tenant}/api-keys/{key}/roll",
        Admin,
        "api-keys",
        "Roll a key: a new secret, the old one valid for an overlap window",
        body = keys::RollKey
    ),
    route!(
        "DELETE",
        "/api/v1/tenants/{tenant}/api-keys/{key}",
        Admin,
        "api-keys",
        "Revoke a key"
    ),
    route!(
        "POST",
        "/api/v1/tenants/{tenant}/mt5-accounts",
        Admin,
        "mt5-accounts",
        "Register an MT5 account (the password is stored encrypted, never returned)",
        body = accounts::RegisterAccount
    ),
    route!(
        "GET",
        "/api/v1/tenants/{tenant}/mt5-accounts",
        Read,
        "mt5-accounts",
        "List MT5 accounts"
    ),
    route!(
        "DELETE",
        "/api/v1/tenants/{tenant}/mt5-accounts/{login}",
        Admin,
        "mt5-accounts",
        "Remove an MT5 account"
    ),
    route!(
        "GET",
        "/api/v1/tenants/{tenant}/models",
        Read,
        "models",
        "Registered models with their version count and current aliases",
        query = &["offset", "limit"]
    ),
    route!(
        "POST",
        "/api/v1/tenants/{tenant}/models",
        Trade,
        "models",
        "Register a model name (professional tier and up)",
        body = models::RegisterModel
    ),
    route!(
        "GET",
        "/api/v1/tenants/{tenant}/models/{model}",
        Read,
        "models",
        "A model: its versions with manifests, its aliases and their history"
    ),
    route!(
        "POST",
        "/api/v1/tenants/{tenant}/models/{model}/versions",
        Trade,
        "models",
        "Upload a version: ONNX file and manifest as JSON (file in base64), as multipart/form-data (parts manifest and file) or as application/octet-stream (manifest as JSON in the `manifest` query parameter); validated, stored encrypted, named by its sha256",
        body = models::UploadVersion
    ),
    route!(
        "PUT",
        "/api/v1/tenants/{tenant}/models/{model}/aliases/{alias}",
        Trade,
        "models",
        "Point an alias (champion, challenger, any name) at a version; the history is kept",
        body = models::MoveAlias
    ),
    route!(
        "DELETE",
        "/api/v1/tenants/{tenant}/models/{model}/versions/{version}",
        Trade,
        "models",
        "Delete a version (refused while deployed or aliased)"
    ),
    route!(
        "GET",
        "/api/v1/tenants/{tenant}/deployments",
        Read,
        "models",
        "Model deployments: versions, weights, state, and per version predictions, skips, rollbacks, accuracy and drift"
    ),
    route!(
        "POST",
        "/api/v1/tenants/{tenant}/models/{model}/deployments",
        Trade,
        "models",
        "Deploy registry versions (by sha256 or alias) on a symbol and timeframe: traffic split by weight per bar, shadow versions beside (professional tier and up)",
        body = deployments::CreateDeployment
    ),
    route!(
        "GET",
        "/api/v1/tenants/{tenant}/models/{model}/deployments/{deployment}",
        Read,
        "models",
        "A deployment with its monitoring"
    ),
    route!(
        "PUT",
        "/api/v1/tenants/{tenant}/models/{model}/deployments/{deployment}",
        Trade,
        "models",
        "Change a deployment's versions, weights or budget live (audited)",
        body = deployments::ChangeDeployment
    ),
    route!(
        "DELETE",
        "/api/v1/tenants/{tenant}/models/{model}/deployments/{deployment}",
        Trade,
        "models",
        "Remove a deployment (refused while a strategy trades its predictions)"
    ),
    route!(
        "POST",
        "/api/v1/tenants/{tenant}/models/{model}/jobs",
        Trade,
        "models",
        "Train a version on the tenant's stored bars (walk-forward validated; optionally promoted to an alias if significantly better)",
        body = crate::actors::training::JobRequest
    ),
    route!(
        "GET",
        "/api/v1/tenants/{tenant}/models/{model}/jobs",
        Read,
        "models",
        "The model's training jobs with their progress and results"
    ),
    route!(
        "GET",
        "/api/v1/tenants/{tenant}/jobs/{job}",
        Read,
        "models",
        "A training job"
    ),
    route!(
        "DELETE",
        "/api/v1/tenants/{tenant}/jobs/{job}",
        Trade,
        "models",
        "Cancel a queued or running training job"
    ),
    route!(
        "GET",
        "/api/v1/tenants/{tenant}/models/{model}/monitoring",
        Read,
        "models",
        "The model's deployments and, per version, predictions, skips, rollbacks, accuracy and drift"
    ),
    route!(
        "GET",
        "/api/v1/tenants/{tenant}/strategies",
        Read,
        "strategies",
        "List strategies with their state"
    ),
    route!(
        "POST",
        "/api/v1/tenants/{tenant}/strategies",
        Trade,
        "strategies",
        "Create a strategy (validated, started unless disabled)",
        body = crate::config::StrategySettings
    ),
    route!(
        "GET",
        "/api/v1/tenants/{tenant}/strategies/{strategy}",
        Read,
        "strategies",
        "A strategy"
    ),
    route!(
        "PUT",
        "/api/v1/tenants/{tenant}/strategies/{strategy}",
        Trade,
        "strategies",
        "Change a strategy's parameters, volume or timeframe (it restarts)",
        body = strategies::UpdateStrategy
    ),
    route!(
        "POST",
        "/api/v1/tenants/{tenant}/strategies/{strategy}/start",
        Trade,
        "strategies",
        "Start a stopped strategy"
    ),
    route!(
        "POST",
        "/api/v1/tenants/{tenant}/strategies/{strategy}/stop",
        Trade,
        "strategies",
        "Stop a strategy (its positions stay)"
    ),
    route!(
        "DELETE",
        "/api/v1/tenants/{tenant}/strategies/{strategy}",
        Trade,
        "strategies",
        "Delete a strategy"
    ),
    route!(
        "GET",
        "/api/v1/tenants/{tenant}/risk",
        Read,
        "risk",
        "Risk limits and state (kill switch, blind accounts)"
    ),
    route!(
        "GET",
        "/api/v1/tenants/{tenant}/correlations",
        Read,
        "risk",
        "Correlations and Ledoit–Wolf covariance of the tenant's symbols' M1 returns (the portfolio-volatility limit's input)"
    ),
    route!(
        "PUT",
        "/api/v1/tenants/{tenant}/risk",
        Admin,
        "risk",
        "Replace the risk limits",
        body = crate::config::RiskSettings
    ),
    route!(
        "PUT",
        "/api/v1/tenants/{tenant}/kill-switch",
        Trade,
        "risk",
        "Turn the kill switch on (optionally flattening) or off",
        body = trading::KillSwitchRequest
    ),
    route!(
        "GET",
        "/api/v1/tenants/{tenant}/orders",
        Read,
        "trading",
        "Orders, newest first, paginated, by creation time",
        query = PAGE
    ),
    route!(
        "GET",
        "/api/v1/tenants/{tenant}/fills",
        Read,
        "trading",
        "Fills (deals), newest first, paginated, by execution time",
        query = PAGE
    ),
    route!(
        "GET",
        "/api/v1/tenants/{tenant}/positions",
        Read,
        "trading",
        "Open positions"
    ),
    route!(
        "GET",
        "/api/v1/tenants/{tenant}/performance",
        Read,
        "trading",
        "PnL, win rate, profit factor, drawdown, Sharpe"
    ),
    route!(
        "POST",
        "/api/v1/tenants/{tenant}/optimisations",
        Trade,
        "strategies",
        "Queue a strategy optimisation on stored ticks: grid, random or genetic search, optionally walk-forward (professional tier)",
        body = optimise::OptimiseRequest
    ),
    route!(
        "GET",
        "/api/v1/tenants/{tenant}/optimisations",
        Read,
        "strategies",
        "The tenant's optimisation jobs, newest first"
    ),
    route!(
        "GET",
        "/api/v1/tenants/{tenant}/optimisations/{optimisation}",
        Read,
        "strategies",
        "An optimisation job: progress, and the ranked candidates once done"
    ),
    route!(
        "DELETE",
        "/api/v1/tenants/{tenant}/optimisations/{optimisation}",
        Trade,
        "strategies",
        "Cancel a queued or running optimisation"
    ),
    route!(
        "GET",
        "/api/v1/tenants/{tenant}/supervision-events",
        Read,
        "trading",
        "Supervision events of the tenant's actors (starts, failures, restarts)",
        query = &["limit"]
    ),
    route!(
        "GET",
        "/api/v1/audit",
        Admin,
        "audit",
        "The audit log of the caller's tenant (platform: ?tenant=)",
        query = &["tenant", "action", "from_ms", "to_ms", "after_seq", "limit"]
    ),
    route!(
        "GET",
        "/api/v1/audit/verify",
        Admin,
        "audit",
        "Check the audit hash chain; names the first broken entry",
        query = &["tenant"]
    ),
    route!(
        "GET",
        "/api/v1/positions",
        Read,
        "trading",
        "Open positions and performance of the caller's tenant"
    ),
    route!(
        "GET",
        "/api/v1/orders",
        Read,
        "trading",
        "Orders of the caller's tenant"
    ),
    route!("GET", "/api/openapi.json", Public, "docs", "This document"),
    route!(
        "GET",
        "/api/asyncapi.json",
        Public,
        "docs",
        "The trading-client WebSocket protocol (/ws/v1/client) as an AsyncAPI 3 document"
    ),
    route!(
        "GET",
        "/api/docs",
        Public,
        "docs",
        "A browsable page of this document"
    ),
];

/// Registers the model upload, whose body may be larger than other requests' (a file of
/// `models.max_file_bytes`, in base64 for JSON, plus its manifest): the handler reads the payload itself
/// and bounds each form of upload (see `models::upload`).
pub fn configure_uploads(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/api/v1/tenants/{tenant}/models/{model}/versions")
            .route(web::post().to(models::upload))
            .default_service(web::to(method_not_allowed)),
    );
}

/// The methods [`ROUTES`] lists for a path pattern.
pub fn methods_of(pattern: &str) -> Vec<&'static str> {
    ROUTES
        .iter()
        .filter(|r| r.path == pattern)
        .map(|r| r.method)
        .collect()
}

/// 405 with `Allow` for a method a known path does not take (after the routes that take it).
async fn method_not_allowed(req: HttpRequest) -> HttpResponse {
    let allowed = req
        .match_pattern()
        .map(|p| methods_of(&p))
        .unwrap_or_default();
    if allowed.is_empty() {
        return HttpResponse::NotFound().json(serde_json::json!({
            "error": "not_found", "message": "not found"}));
    }
    let allow = allowed.join(", ");
    HttpResponse::MethodNotAllowed()
        .insert_header(("Allow", allow.clone()))
        .json(serde_json::json!({
            "error": "method_not_allowed",
            "message": format!("{} is not allowed here; allowed: {allow}", req.method()),
        }))
}

/// Registers, after every route, a 405 for the other methods of each path of [`ROUTES`] (the model
/// upload's resource answers its own).
fn configure_method_not_allowed(cfg: &mut web::ServiceConfig) {
    let mut seen = std::collections::BTreeSet::new();
    for r in ROUTES {
        if r.path == "/api/v1/tenants/{tenant}/models/{model}/versions" || !seen.insert(r.path) {
            continue;
        }
        cfg.route(r.path, web::route().to(method_not_allowed));
    }
}

/// Registers every handler of [`ROUTES`] (the model upload through [`configure_uploads`]).
pub fn configure(cfg: &mut web::ServiceConfig) {
    use web::{delete, get, post, put};
    cfg.app_data(web::JsonConfig::default())
        .route("/api/v1/auth/login", post().to(auth::login))
        .route("/api/v1/auth/refresh", post().to(auth::refresh))
        .route("/api/v1/auth/logout", post().to(auth::logout))
        .route("/api/v1/me", get().to(auth::me))
        .route("/api/v1/ws-tickets", post().to(tickets::create))
        .route("/api/v1/tenants", post().to(tenants::create))
        .route("/api/v1/tenants", get().to(tenants::list))
        .route("/api/v1/tenants/{tenant}", get().to(tenants::get))
        .route("/api/v1/tenants/{tenant}/tier", put().to(tenants::set_tier))
        .route(
            "/api/v1/tenants/{tenant}/restart",
            post().to(tenants::restart),
        )
        .route(
            "/api/v1/tenants/{tenant}/suspend",
            post().to(tenants::suspend),
        )
        .route(
            "/api/v1/tenants/{tenant}/resume",
            post().to(tenants::resume),
        )
        .route("/api/v1/tenants/{tenant}/users", post().to(users::create))
        .route("/api/v1/tenants/{tenant}/users", get().to(users::list))
        .route(
            "/api/v1/tenants/{tenant}/users/{user}/role",
            put().to(users::set_role),
        )
        .route(
            "/api/v1/tenants/{tenant}/users/{user}/disable",
            post().to(users::disable),
        )
        .route("/api/v1/tenants/{tenant}/api-keys", post().to(keys::create))
        .route("/api/v1/tenants/{tenant}/api-keys", get().to(keys::list))
        .route(
            "/api/v1/tenants/{tenant}/api-keys/{key}/roll",
            post().to(keys::roll),
        )
        .route(
            "/api/v1/tenants/{tenant}/api-keys/{key}",
            delete().to(keys::revoke),
        )
        .route(
            "/api/v1/tenants/{tenant}/mt5-accounts",
            post().to(accounts::register),
        )
        .route(
            "/api/v1/tenants/{tenant}/mt5-accounts",
            get().to(accounts::list),
        )
        .route(
            "/api/v1/tenants/{tenant}/mt5-accounts/{login}",
            delete().to(accounts::remove),
        )
        .route("/api/v1/tenants/{tenant}/models", get().to(models::list))
        .route(
            "/api/v1/tenants/{tenant}/models",
            post().to(models::register),
        )
        .route(
            "/api/v1/tenants/{tenant}/models/{model}",
            get().to(models::get),
        )
        .route(
            "/api/v1/tenants/{tenant}/models/{model}/aliases/{alias}",
            put().to(models::move_alias),
        )
        .route(
            "/api/v1/tenants/{tenant}/models/{model}/versions/{version}",
            delete().to(models::delete_version),
        )
        .route(
            "/api/v1/tenants/{tenant}/deployments",
            get().to(deployments::list),
        )
        .route(
            "/api/v1/tenants/{tenant}/models/{model}/deployments",
            post().to(deployments::create),
        )
        .route(
            "/api/v1/tenants/{tenant}/models/{model}/deployments/{deployment}",
            get().to(deployments::get),
        )
        .route(
            "/api/v1/tenants/{tenant}/models/{model}/deployments/{deployment}",
            put().to(deployments::change),
        )
        .route(
            "/api/v1/tenants/{tenant}/models/{model}/deployments/{deployment}",
            delete().to(deployments::delete),
        )
        .route(
            "/api/v1/tenants/{tenant}/models/{model}/monitoring",
            get().to(deployments::monitoring),
        )
        .route(
            "/api/v1/tenants/{tenant}/models/{model}/jobs",
            post().to(jobs::create),
        )
        .route(
            "/api/v1/tenants/{tenant}/models/{model}/jobs",
            get().to(jobs::list),
        )
        .route("/api/v1/tenants/{tenant}/jobs/{job}", get().to(jobs::get))
        .route(
            "/api/v1/tenants/{tenant}/jobs/{job}",
            delete().to(jobs::cancel),
        )
        .route(
            "/api/v1/tenants/{tenant}/strategies",
            get().to(strategies::list),
        )
        .route(
            "/api/v1/tenants/{tenant}/strategies",
            post().to(strategies::create),
        )
        .route(
            "/api/v1/tenants/{tenant}/strategies/{strategy}",
            get().to(strategies::get),
        )
        .route(
            "/api/v1/tenants/{tenant}/strategies/{strategy}",
            put().to(strategies::update),
        )
        .route(
            "/api/v1/tenants/{tenant}/strategies/{strategy}/start",
            post().to(strategies::start),
        )
        .route(
            "/api/v1/tenants/{tenant}/strategies/{strategy}/stop",
            post().to(strategies::stop),
        )
        .route(
            "/api/v1/tenants/{tenant}/strategies/{strategy}",
            delete().to(strategies::delete),
        )
        .route("/api/v1/tenants/{tenant}/risk", get().to(trading::risk))
        .route(
            "/api/v1/tenants/{tenant}/correlations",
            get().to(trading::correlations),
        )
        .route("/api/v1/tenants/{tenant}/risk", put().to(trading::set_risk))
        .route(
            "/api/v1/tenants/{tenant}/kill-switch",
            put().to(trading::kill_switch),
        )
        .route("/api/v1/tenants/{tenant}/orders", get().to(trading::orders))
        .route("/api/v1/tenants/{tenant}/fills", get().to(trading::fills))
        .route(
            "/api/v1/tenants/{tenant}/positions",
            get().to(trading::positions),
        )
        .route(
            "/api/v1/tenants/{tenant}/performance",
            get().to(trading::performance),
        )
        .route(
            "/api/v1/tenants/{tenant}/optimisations",
            post().to(optimise::create),
        )
        .route(
            "/api/v1/tenants/{tenant}/optimisations",
            get().to(optimise::list),
        )
        .route(
            "/api/v1/tenants/{tenant}/optimisations/{optimisation}",
            get().to(optimise::get),
        )
        .route(
            "/api/v1/tenants/{tenant}/optimisations/{optimisation}",
            delete().to(optimise::cancel),
        )
        .route(
            "/api/v1/tenants/{tenant}/supervision-events",
            get().to(trading::supervision_events),
        )
        .route("/api/v1/audit", get().to(audit::query))
        .route("/api/v1/audit/verify", get().to(audit::verify))
        .route("/api/v1/positions", get().to(trading::my_positions))
        .route("/api/v1/orders", get().to(trading::my_orders))
        .route("/api/openapi.json", get().to(docs::openapi))
        .route(
            "/api/asyncapi.json",
            get().to(crate::http::ws::asyncapi::asyncapi),
        )
        .route("/api/docs", get().to(docs::page))
        .configure(configure_method_not_allowed);
}

/// The route `req` matched, from [`ROUTES`].
pub fn route_of(req: &HttpRequest) -> Option<&'static RouteDef> {
    let pattern = req.match_pattern()?;
    let method = req.method();
    ROUTES.iter().find(|r| {
        r.path == pattern && Method::from_bytes(r.method.as_bytes()).ok().as_ref() == Some(method)
    })
}

/// The bearer credential of a request: `Authorization: Bearer …` or `X-API-Key: …`.
pub fn credential(req: &HttpRequest) -> Option<String> {
    req.headers()
        .get("Authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .or_else(|| req.headers().get("X-API-Key").and_then(|v| v.to_str().ok()))
        .map(|k| k.trim().to_owned())
}

/// Authenticates a credential: a token or stored key through the security service, else a key listed in
/// configuration.
pub fn authenticate(state: &AppState, credential: &str) -> Result<Principal, ApiError> {
    match state.security.authenticate(credential) {
        Ok(p) => Ok(p),
        Err(AuthError::Unauthenticated(m)) => {
            let Some(tenant) = state.runtime.tenant_for_key(credential) else {
                return Err(ApiError::Unauthorized(m));
            };
            if state.security.is_suspended(&tenant.id.0) {
                return Err(ApiError::Forbidden(format!(
                    "tenant `{}` is suspended",
                    tenant.id
                )));
            }
            Ok(Principal {
                tenant: Some(tenant.id.0.clone()),
                role: None,
                scopes: vec![
                    crate::security::rbac::Scope::Read,
                    crate::security::rbac::Scope::Trade,
                    crate::security::rbac::Scope::MarketWrite,
                ],
                actor: "key:config".into(),
                credential: crate::security::service::Credential::ConfigKey,
            })
        }
        Err(e) => Err(e.into()),
    }
}

/// A caller allowed on the matched route; for routes under `/tenants/{tenant}` also the tenant.
pub struct Authorized {
    pub principal: Principal,
    pub route: &'static RouteDef,
    /// The tenant acted on: the path's, or the caller's own for routes without one.
    pub tenant: Option<Arc<TenantContext>>,
    pub state: web::Data<AppState>,
    /// The rate-limit verdict, for the `RateLimit` headers of the answer.
    pub limit: Option<Decision>,
}

impl Authorized {
    /// The tenant acted on (routes under `/tenants/{tenant}` and tenant callers always have one).
    pub fn tenant(&self) -> Result<&Arc<TenantContext>, ApiError> {
        match &self.tenant {
            Some(t) => Ok(t),
            None if self.principal.is_platform() => Err(ApiError::BadRequest(
                "a platform administrator has no tenant of their own: use /api/v1/tenants/{tenant}/…".into(),
            )),
            None => Err(ApiError::NotFound),
        }
    }

    pub fn actor(&self) -> &str {
        &self.principal.actor
    }

    /// An answer with the rate-limit headers.
    pub fn reply(&self, status: StatusCode, body: impl serde::Serialize) -> HttpResponse {
        let mut resp = HttpResponse::build(status);
        if let Some(d) = &self.limit {
            resp.insert_header(("RateLimit-Policy", format!("{};w=60", d.limit)));
            resp.insert_header((
                "RateLimit",
                format!(
                    "limit={}, remaining={}, reset={}",
                    d.limit,
                    d.remaining,
                    d.reset.as_secs_f64().ceil() as u64
                ),
            ));
        }
        resp.json(body)
    }

    pub fn ok(&self, body: impl serde::Serialize) -> HttpResponse {
        self.reply(StatusCode::OK, body)
    }

    pub fn created(&self, body: impl serde::Serialize) -> HttpResponse {
        self.reply(StatusCode::CREATED, body)
    }

    /// 202: queued, to be watched.
    pub fn accepted(&self, body: impl serde::Serialize) -> HttpResponse {
        self.reply(StatusCode::ACCEPTED, body)
    }
}

impl FromRequest for Authorized {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, ApiError>>>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let req = req.clone();
        Box::pin(async move {
            let state = req
                .app_data::<web::Data<AppState>>()
                .cloned()
                .ok_or_else(|| ApiError::Unavailable("application state missing".into()))?;
            let route = route_of(&req).ok_or_else(|| {
                ApiError::Forbidden("this route is not in the route table".into())
            })?;
            let cred = credential(&req).ok_or_else(|| {
                ApiError::Unauthorized(
                    "credentials are required (Authorization: Bearer <token or API key>)".into(),
                )
            })?;
            let principal = authenticate(&state, &cred)?;
            let path_tenant = req.match_info().get("tenant").map(str::to_owned);
            let tenant = match &path_tenant {
                Some(id) => {
                    // Another tenant's resources do not exist for this caller.
                    if !principal.is_platform() && principal.tenant.as_deref() != Some(id.as_str())
                    {
                        return Err(ApiError::NotFound);
                    }
                    Some(state.runtime.tenant(id).ok_or(ApiError::NotFound)?)
                }
                None => principal
                    .tenant
                    .as_deref()
                    .and_then(|t| state.runtime.tenant(t)),
            };
            if !principal.may(route.access) {
                return Err(ApiError::Forbidden(
                    match (principal.role, route.access.min_role()) {
                        (Some(_), Some(min)) => {
                            format!("this requires the role {} or above", min.as_str())
                        }
                        _ => "API keys may not do this, or lack the scope".into(),
                    },
                ));
            }
            let mut decision = None;
            if let (Some(t), false) = (&tenant, principal.is_platform()) {
                let limit = state
                    .rate_limiter
                    .check(&t.id.0, state.settings.rate_limits.per_minute(&t.tier()))
                    .await;
                if !limit.allowed {
                    return Err(ApiError::RateLimited {
                        limit: limit.limit,
                        retry_after_secs: limit.retry_after.as_secs_f64().ceil().max(1.0) as u64,
                        reset_secs: limit.reset.as_secs_f64().ceil() as u64,
                    });
                }
                decision = Some(limit);
            }
            Ok(Authorized {
                principal,
                route,
                tenant,
                state,
                limit: decision,
            })
        })
    }
}

/// A body that could not be read: too large (413) or broken.
fn body_error(e: actix_web::Error) -> ApiError {
    match e.as_error::<actix_web::error::PayloadError>() {
        Some(actix_web::error::PayloadError::Overflow) => {
            ApiError::TooLarge("body: larger than http.max_body_bytes".into())
        }
        _ => ApiError::BadRequest(format!("body: {e}")),
    }
}

/// Parses a JSON body; an error names the field it is about (`body` for the document itself).
fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if path == "." || path.is_empty() {
            ApiError::BadRequest(format!("body: {inner}"))
        } else {
            ApiError::BadRequest(format!("{path}: {inner}"))
        }
    })
}

/// A JSON body: unknown fields are refused by the types, every error names the field.
pub struct Body<T>(pub T);

impl<T: DeserializeOwned + 'static> FromRequest for Body<T> {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, ApiError>>>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let is_json = req
            .headers()
            .get("Content-Type")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/json"));
        let bytes = web::Bytes::from_request(req, payload);
        Box::pin(async move {
            let bytes = bytes.await.map_err(body_error)?;
            if !is_json {
                return Err(ApiError::BadRequest(
                    "body: Content-Type must be application/json".into(),
                ));
            }
            parse_json(&bytes).map(Body)
        })
    }
}

/// Ids and names (tenants, strategies, models, aliases): 1 to 64 letters, digits, `-` or `_`; the error
/// names the field.
pub fn valid_id(what: &str, s: &str) -> Result<(), ApiError> {
    if s.is_empty()
        || s.len() > 64
        || !s
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        return Err(ApiError::BadRequest(format!(
            "{what}: must be 1 to 64 letters, digits, - or _"
        )));
    }
    Ok(())
}

/// Checks that `symbol` is one of the tenant's and `timeframe` a known one; the error names the field.
pub fn symbol_and_timeframe(
    t: &crate::actors::tenant::TenantContext,
    symbol: &str,
    timeframe: &str,
) -> Result<crate::domain::Timeframe, ApiError> {
    if !t.symbols.contains(symbol) {
        return Err(ApiError::BadRequest(format!(
            "symbol: `{symbol}` is not one of the tenant's symbols"
        )));
    }
    crate::domain::Timeframe::parse(timeframe)
        .ok_or_else(|| ApiError::BadRequest(format!("timeframe: unknown timeframe `{timeframe}`")))
}

/// An optional JSON body (absent or empty is `None`).
pub struct OptionalBody<T>(pub Option<T>);

impl<T: DeserializeOwned + 'static> FromRequest for OptionalBody<T> {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, ApiError>>>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let bytes = web::Bytes::from_request(req, payload);
        Box::pin(async move {
            let bytes = bytes.await.map_err(body_error)?;
            if bytes.iter().all(u8::is_ascii_whitespace) {
                return Ok(OptionalBody(None));
            }
            parse_json(&bytes).map(|v| OptionalBody(Some(v)))
        })
    }
}

/// Pagination and time filters of list queries.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Page {
    pub from_ms: Option<i64>,
    pub to_ms: Option<i64>,
    pub offset: Option<usize>,
    pub limit: Option<usize>,
}

impl Page {
    pub fn from_query(req: &HttpRequest) -> Result<Self, ApiError> {
        web::Query::<Page>::from_query(req.query_string())
            .map(web::Query::into_inner)
            .map_err(|e| ApiError::BadRequest(format!("query: {e}")))
    }

    /// Applies the filters to items with a time; newest first.
    pub fn apply<T: Clone>(&self, items: &[T], time: impl Fn(&T) -> i64) -> (Vec<T>, usize) {
        let mut picked: Vec<&T> = items
            .iter()
            .filter(|i| self.from_ms.is_none_or(|f| time(i) >= f))
            .filter(|i| self.to_ms.is_none_or(|t| time(i) < t))
            .collect();
        picked.sort_by_key(|i| std::cmp::Reverse(time(i)));
        let total = picked.len();
        let limit = self.limit.unwrap_or(100).clamp(1, 1000);
        let page = picked
            .into_iter()
            .skip(self.offset.unwrap_or(0))
            .take(limit)
            .cloned()
            .collect();
        (page, total)
    }
}
