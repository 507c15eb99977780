//! The `/api/v1` surface. One table, [`ROUTES`], lists every route with what it requires ([`Access`]) and
//! the handler that answers it: [`configure`] registers the handlers from it, the [`Authorized`] extractor
//! finds the matched route in it and enforces it, the OpenAPI document is written from it (each answer from
//! its handler's return type, see [`reply`]), and the authorization-matrix test walks it. A route missing
//! from the table refuses every caller (fail closed), and has no handler either.
//!
//! Tenant resources live under `/api/v1/tenants/{tenant}/…`. The tenant a caller acts for comes only from
//! its verified token or key: a caller of another tenant gets 404 (not 403: the tenant's existence is not
//! revealed), a caller of the right tenant without the role gets 403. Platform administrators may act on
//! every tenant. Every authenticated request of a tenant takes one unit of its tier's rate limit.

pub mod accounts;
pub mod audit;
pub mod auth;
pub mod cluster;
pub mod deployments;
pub mod docs;
pub mod jobs;
pub mod keys;
pub mod logs;
pub mod models;
pub mod optimise;
pub mod reply;
pub mod strategies;
pub mod strategy_modules;
pub mod tenants;
pub mod tickets;
pub mod trading;
pub mod users;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use actix_web::dev::Payload;
use actix_web::http::Method;
use actix_web::{web, FromRequest, HttpRequest, HttpResponse};
use serde::de::DeserializeOwned;

pub use self::reply::{Deleted, Html, Reply, Stored};
use super::error::ApiError;
use super::AppState;
use crate::actors::tenant::TenantContext;
use crate::security::rate_limit::Decision;
use crate::security::rbac::Access;
use crate::security::service::{AuthError, Principal};

/// Which schema documents a request body.
pub type SchemaFn = fn(&mut schemars::SchemaGenerator) -> schemars::Schema;

/// One route: what it is, who may call it, which handler answers it and what that handler answers.
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
    /// Registers the handler on `path` for `method` (see [`configure`]).
    pub register: fn(&mut web::ServiceConfig),
    /// What the handler answers on success (status, media type, body schema), read from its return type.
    pub success: fn(&mut schemars::SchemaGenerator) -> reply::Success,
    /// Error statuses this route answers beyond those its kind implies (see `docs::errors`), declared here
    /// next to the route: e.g. 400 for a path parameter the handler checks, 401 and 429 for a public sign-in.
    pub also: &'static [u16],
    /// Error statuses its kind implies that this route never answers (e.g. no 404 on a collection).
    pub never: &'static [u16],
}

/// A [`RouteDef`]: `route!(method, path, access, tag, summary, [body = Type,] [query = &[..],]
/// [also = &[status..],] [never = &[status..],] handler = path)`. The handler is both what [`configure`]
/// registers and where the document reads the answer from (its return type, see [`reply`]), so the two cannot
/// name different functions. `registered_by = f` marks a route whose handler `f` registers instead (the model
/// upload, [`configure_uploads`]). `also` and `never` declare the route's error answers beyond (or short of)
/// those its kind implies, so the document never guesses them from the path.
macro_rules! route {
    (@body) => { None };
    (@body $body:ty) => { Some(|g| g.subschema_for::<$body>()) };
    (@query) => { &[] };
    (@query $q:expr) => { $q };
    (@codes) => { &[] };
    (@codes $c:expr) => { $c };
    (@verb "GET") => { web::get() };
    (@verb "POST") => { web::post() };
    (@verb "PUT") => { web::put() };
    (@verb "DELETE") => { web::delete() };
    (@register $method:tt, $path:literal, $handler:path) => {
        |cfg| {
            cfg.route($path, route!(@verb $method).to($handler));
        }
    };
    (@register $method:tt, $path:literal, $handler:path, $by:path) => {{
        // Registered by the function named, not by `configure`: named here so that the table cannot point
        // at a function that is gone.
        let _: fn(&mut web::ServiceConfig) = $by;
        |_| {}
    }};
    (
        $method:tt, $path:literal, $access:ident, $tag:literal, $summary:literal,
        $(body = $body:ty,)? $(query = $q:expr,)? $(also = $also:expr,)? $(never = $never:expr,)?
        handler = $handler:path $(, registered_by = $by:path)? $(,)?
    ) => {
        RouteDef {
            method: $method,
            path: $path,
            access: Access::$access,
            tag: $tag,
            summary: $summary,
            body: route!(@body $($body)?),
            query: route!(@query $($q)?),
            register: route!(@register $method, $path, $handler $(, $by)?),
            success: |g| reply::success_of(&$handler, g),
            also: route!(@codes $($also)?),
            never: route!(@codes $($never)?),
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
        body = auth::LoginRequest,
        also = &[401, 429, 503],
        handler = auth::login
    ),
    route!(
        "POST",
        "/api/v1/auth/refresh",
        Public,
        "auth",
        "Rotate a refresh token (a reused one revokes its session)",
        body = auth::RefreshRequest,
        also = &[401, 503],
        handler = auth::refresh
    ),
    route!(
        "POST",
        "/api/v1/auth/logout",
        Authenticated,
        "auth",
        "End the caller's session",
        also = &[400],
        handler = auth::logout
    ),
    route!(
        "GET",
        "/api/v1/me",
        Authenticated,
        "auth",
        "Who the caller is",
        handler = auth::me
    ),
    route!(
        "POST",
        "/api/v1/ws-tickets",
        Read,
        "auth",
        "A single-use ticket (valid 30 s) to open the client WebSocket /ws/v1/client from a browser",
        body = tickets::TicketRequest,
        never = &[409],
        handler = tickets::create
    ),
    route!(
        "POST",
        "/api/v1/tenants",
        Platform,
        "tenants",
        "Create a tenant (it starts at once)",
        body = crate::app::tenants::CreateTenant,
        never = &[404],
        handler = tenants::create
    ),
    route!(
        "GET",
        "/api/v1/cluster",
        Platform,
        "cluster",
        "The nodes, the tenants each owns and every lease (several nodes on one PostgreSQL)",
        handler = cluster::get
    ),
    route!(
        "GET",
        "/api/v1/tenants",
        Platform,
        "tenants",
        "List tenants",
        never = &[404],
        handler = tenants::list
    ),
    route!(
        "GET",
        "/api/v1/tenants/{tenant}",
        Read,
        "tenants",
        "A tenant",
        handler = tenants::get
    ),
    route!(
        "PUT",
        "/api/v1/tenants/{tenant}/tier",
        Platform,
        "tenants",
        "Change a tenant's tier",
        body = tenants::SetTier,
        handler = tenants::set_tier
    ),
    route!(
        "POST",
        "/api/v1/tenants/{tenant}/restart",
        Platform,
        "tenants",
        "Start a failed tenant again from its stored state (409 while it runs)",
        handler = tenants::restart
    ),
    route!(
        "POST",
        "/api/v1/tenants/{tenant}/suspend",
        Platform,
        "tenants",
        "Suspend a tenant: its users, keys and bridges are refused",
        handler = tenants::suspend
    ),
    route!(
        "POST",
        "/api/v1/tenants/{tenant}/resume",
        Platform,
        "tenants",
        "Lift a suspension",
        handler = tenants::resume
    ),
    route!(
        "POST",
        "/api/v1/tenants/{tenant}/users",
        Admin,
        "users",
        "Create a user of the tenant",
        body = users::CreateUser,
        handler = users::create
    ),
    route!(
        "GET",
        "/api/v1/tenants/{tenant}/users",
        Admin,
        "users",
        "List the tenant's users",
        query = PAGE,
        handler = users::list
    ),
    route!(
        "PUT",
        "/api/v1/tenants/{tenant}/users/{user}/role",
        Admin,
        "users",
        "Change a user's role (their sessions end)",
        body = users::SetRole,
        handler = users::set_role
    ),
    route!(
        "POST",
        "/api/v1/tenants/{tenant}/users/{user}/disable",
        Admin,
        "users",
        "Disable a user (their sessions end)",
        handler = users::disable
    ),
    route!(
        "POST",
        "/api/v1/tenants/{tenant}/api-keys",
        Admin,
        "api-keys",
        "Create an API key (the secret is shown once)",
        body = keys::CreateKey,
        handler = keys::create
    ),
    route!(
        "GET",
        "/api/v1/tenants/{tenant}/api-keys",
        Admin,
        "api-keys",
        "List API keys (never their secrets)",
        query = PAGE,
        handler = keys::list
    ),
    route!(
        "POST",
        "/api/v1/tenants/{tenant}/api-keys/{key}/roll",
        Admin,
        "api-keys",
        "Roll a key: a new secret, the old one valid for an overlap window",
        body = keys::RollKey,
        handler = keys::roll
    ),
    route!(
        "DELETE",
        "/api/v1/tenants/{tenant}/api-keys/{key}",
        Admin,
        "api-keys",
        "Revoke a key",
        handler = keys::revoke
    ),
    route!(
        "POST",
        "/api/v1/tenants/{tenant}/mt5-accounts",
        Admin,
        "mt5-accounts",
        "Register an MT5 account (the password is stored encrypted, never returned)",
        body = accounts::RegisterAccount,
        handler = accounts::register
    ),
    route!(
        "GET",
        "/api/v1/tenants/{tenant}/mt5-accounts",
        Read,
        "mt5-accounts",
        "List MT5 accounts",
        handler = accounts::list
    ),
    route!(
        "DELETE",
        "/api/v1/tenants/{tenant}/mt5-accounts/{login}",
        Admin,
        "mt5-accounts",
        "Remove an MT5 account",
        also = &[400],
        handler = accounts::remove
    ),
    route!(
        "GET",
        "/api/v1/tenants/{tenant}/models",
        Read,
        "models",
        "Registered models with their version count and current aliases",
        query = &["offset", "limit"],
        handler = models::list
    ),
    route!(
        "POST",
        "/api/v1/tenants/{tenant}/models",
        Trade,
        "models",
        "Register a model name (professional tier and up)",
        body = models::RegisterModel,
        handler = models::register
    ),
    route!(
        "GET",
        "/api/v1/tenants/{tenant}/models/{model}",
        Read,
        "models",
        "A model: its versions with manifests, its aliases and their history",
        handler = models::get
    ),
    route!(
        "POST",
        "/api/v1/tenants/{tenant}/models/{model}/versions",
        Trade,
        "models",
        "Upload a version: ONNX file and manifest as JSON (file in base64), as multipart/form-data (parts manifest and file) or as application/octet-stream (manifest as JSON in the `manifest` query parameter); validated, stored encrypted, named by its sha256",
        body = models::UploadVersion,
        handler = models::upload,
        registered_by = configure_uploads
    ),
    route!(
        "PUT",
        "/api/v1/tenants/{tenant}/models/{model}/aliases/{alias}",
        Trade,
        "models",
        "Point an alias (champion, challenger, any name) at a version; the history is kept",
        body = models::MoveAlias,
        also = &[400],
        handler = models::move_alias
    ),
    route!(
        "DELETE",
        "/api/v1/tenants/{tenant}/models/{model}/versions/{version}",
        Trade,
        "models",
        "Delete a version (refused while deployed or aliased)",
        handler = models::delete_version
    ),
    route!(
        "GET",
        "/api/v1/tenants/{tenant}/strategy-modules",
        Read,
        "strategy-modules",
        "The tenant's strategy modules (WebAssembly) with their versions and the strategies running each",
        handler = strategy_modules::list,
        registered_by = configure_uploads
    ),
    route!(
        "POST",
        "/api/v1/tenants/{tenant}/strategy-modules",
        Trade,
        "strategy-modules",
        "Upload a strategy module version (professional tier and up): JSON with the module in base64, or the module itself as application/wasm with `name` and `manifest` (JSON) in the query; validated within the tier's limits, stored encrypted, named by its sha256",
        body = strategy_modules::UploadModule,
        handler = strategy_modules::upload,
        registered_by = configure_uploads
    ),
    route!(
        "GET",
        "/api/v1/tenants/{tenant}/strategy-modules/{module}",
        Read,
        "strategy-modules",
        "A strategy module: its versions with manifests and the strategies running each",
        handler = strategy_modules::get
    ),
    route!(
        "DELETE",
        "/api/v1/tenants/{tenant}/strategy-modules/{module}/versions/{version}",
        Trade,
        "strategy-modules",
        "Delete a strategy module version (refused while a strategy runs it)",
        handler = strategy_modules::delete_version
    ),
    route!(
        "GET",
        "/api/v1/tenants/{tenant}/deployments",
        Read,
        "models",
        "Model deployments: versions, weights, state, and per version predictions, skips, rollbacks, accuracy and drift",
        handler = deployments::list
    ),
    route!(
        "POST",
        "/api/v1/tenants/{tenant}/models/{model}/deployments",
        Trade,
        "models",
        "Deploy registry versions (by sha256 or alias) on a symbol and timeframe: traffic split by weight per bar, shadow versions beside (professional tier and up)",
        body = crate::app::deployments::CreateDeployment,
        handler = deployments::create
    ),
    route!(
        "GET",
        "/api/v1/tenants/{tenant}/models/{model}/deployments/{deployment}",
        Read,
        "models",
        "A deployment with its monitoring",
        handler = deployments::get
    ),
    route!(
        "PUT",
        "/api/v1/tenants/{tenant}/models/{model}/deployments/{deployment}",
        Trade,
        "models",
        "Change a deployment's versions, weights or budget live (audited)",
        body = crate::app::deployments::ChangeDeployment,
        handler = deployments::change
    ),
    route!(
        "DELETE",
        "/api/v1/tenants/{tenant}/models/{model}/deployments/{deployment}",
        Trade,
        "models",
        "Remove a deployment (refused while a strategy trades its predictions)",
        handler = deployments::delete
    ),
    route!(
        "POST",
        "/api/v1/tenants/{tenant}/models/{model}/jobs",
        Trade,
        "models",
        "Train a version on the tenant's stored bars (walk-forward validated; optionally promoted to an alias if significantly better)",
        body = crate::app::jobs::training::JobRequest,
        handler = jobs::create
    ),
    route!(
        "GET",
        "/api/v1/tenants/{tenant}/models/{model}/jobs",
        Read,
        "models",
        "The model's training jobs with their progress and results",
        handler = jobs::list
    ),
    route!(
        "GET",
        "/api/v1/tenants/{tenant}/jobs/{job}",
        Read,
        "models",
        "A training job",
        handler = jobs::get
    ),
    route!(
        "DELETE",
        "/api/v1/tenants/{tenant}/jobs/{job}",
        Trade,
        "models",
        "Cancel a queued or running training job",
        handler = jobs::cancel
    ),
    route!(
        "GET",
        "/api/v1/tenants/{tenant}/models/{model}/monitoring",
        Read,
        "models",
        "The model's deployments and, per version, predictions, skips, rollbacks, accuracy and drift",
        handler = deployments::monitoring
    ),
    route!(
        "GET",
        "/api/v1/tenants/{tenant}/strategies",
        Read,
        "strategies",
        "List strategies with their state",
        handler = strategies::list
    ),
    route!(
        "POST",
        "/api/v1/tenants/{tenant}/strategies",
        Trade,
        "strategies",
        "Create a strategy (validated, started unless disabled)",
        body = crate::domain::tenant::StrategySettings,
        handler = strategies::create
    ),
    route!(
        "GET",
        "/api/v1/tenants/{tenant}/strategies/{strategy}",
        Read,
        "strategies",
        "A strategy",
        handler = strategies::get
    ),
    route!(
        "PUT",
        "/api/v1/tenants/{tenant}/strategies/{strategy}",
        Trade,
        "strategies",
        "Change a strategy's parameters, volume or timeframe (it restarts)",
        body = crate::app::strategies::UpdateStrategy,
        handler = strategies::update
    ),
    route!(
        "POST",
        "/api/v1/tenants/{tenant}/strategies/{strategy}/start",
        Trade,
        "strategies",
        "Start a stopped strategy",
        handler = strategies::start
    ),
    route!(
        "POST",
        "/api/v1/tenants/{tenant}/strategies/{strategy}/stop",
        Trade,
        "strategies",
        "Stop a strategy (its positions stay)",
        handler = strategies::stop
    ),
    route!(
        "DELETE",
        "/api/v1/tenants/{tenant}/strategies/{strategy}",
        Trade,
        "strategies",
        "Delete a strategy",
        handler = strategies::delete
    ),
    route!(
        "GET",
        "/api/v1/tenants/{tenant}/risk",
        Read,
        "risk",
        "Risk limits and state (kill switch, blind accounts)",
        handler = trading::risk
    ),
    route!(
        "GET",
        "/api/v1/tenants/{tenant}/correlations",
        Read,
        "risk",
        "Correlations and Ledoit–Wolf covariance of the tenant's symbols' M1 returns (the portfolio-volatility limit's input)",
        handler = trading::correlations
    ),
    route!(
        "PUT",
        "/api/v1/tenants/{tenant}/risk",
        Admin,
        "risk",
        "Replace the risk limits",
        body = crate::domain::tenant::RiskSettings,
        handler = trading::set_risk
    ),
    route!(
        "PUT",
        "/api/v1/tenants/{tenant}/kill-switch",
        Trade,
        "risk",
        "Turn the kill switch on (optionally flattening) or off",
        body = crate::app::trading::KillSwitchRequest,
        handler = trading::kill_switch
    ),
    route!(
        "GET",
        "/api/v1/tenants/{tenant}/orders",
        Read,
        "trading",
        "Orders, newest first, paginated, by creation time",
        query = PAGE,
        handler = trading::orders
    ),
    route!(
        "GET",
        "/api/v1/tenants/{tenant}/fills",
        Read,
        "trading",
        "Fills (deals), newest first, paginated, by execution time",
        query = PAGE,
        handler = trading::fills
    ),
    route!(
        "GET",
        "/api/v1/tenants/{tenant}/positions",
        Read,
        "trading",
        "Open positions",
        handler = trading::positions
    ),
    route!(
        "GET",
        "/api/v1/tenants/{tenant}/performance",
        Read,
        "trading",
        "PnL, win rate, profit factor, drawdown, Sharpe",
        handler = trading::performance
    ),
    route!(
        "POST",
        "/api/v1/tenants/{tenant}/optimisations",
        Trade,
        "strategies",
        "Queue a strategy optimisation on stored ticks: grid, random or genetic search, optionally walk-forward (professional tier)",
        body = crate::app::optimise::OptimiseRequest,
        handler = optimise::create
    ),
    route!(
        "GET",
        "/api/v1/tenants/{tenant}/optimisations",
        Read,
        "strategies",
        "The tenant's optimisation jobs, newest first",
        handler = optimise::list
    ),
    route!(
        "GET",
        "/api/v1/tenants/{tenant}/optimisations/{optimisation}",
        Read,
        "strategies",
        "An optimisation job: progress, and the ranked candidates once done",
        handler = optimise::get
    ),
    route!(
        "DELETE",
        "/api/v1/tenants/{tenant}/optimisations/{optimisation}",
        Trade,
        "strategies",
        "Cancel a queued or running optimisation",
        handler = optimise::cancel
    ),
    route!(
        "GET",
        "/api/v1/tenants/{tenant}/supervision-events",
        Read,
        "trading",
        "Supervision events of the tenant's actors (starts, failures, restarts)",
        query = &["limit"],
        handler = trading::supervision_events
    ),
    route!(
        "GET",
        "/api/v1/audit",
        Admin,
        "audit",
        "The audit log of the caller's tenant (platform: ?tenant=)",
        query = &["tenant", "action", "from_ms", "to_ms", "after_seq", "limit"],
        handler = audit::query
    ),
    route!(
        "GET",
        "/api/v1/audit/verify",
        Admin,
        "audit",
        "Check the audit hash chain; names the first broken entry (source=tiers: the copy in the log tiers)",
        query = &["tenant", "source"],
        handler = audit::verify
    ),
    route!(
        "GET",
        "/api/v1/tenants/{tenant}/logs",
        Read,
        "logs",
        "The tenant's log (trade log, audit, supervision, application) across hot, warm and cold, oldest first",
        query = &["from_ms", "to_ms", "kind", "level", "q", "cursor", "limit"],
        handler = logs::tenant_logs
    ),
    route!(
        "GET",
        "/api/v1/logs",
        Platform,
        "logs",
        "Platform-wide log entries (platform audit, application logs) across the tiers",
        query = &["from_ms", "to_ms", "kind", "level", "q", "cursor", "limit"],
        handler = logs::platform_logs
    ),
    route!(
        "GET",
        "/api/v1/logs/cost",
        Platform,
        "logs",
        "Bytes each log tier holds (measured from the stores), their monthly cost, and the cost of keeping all of it hot",
        handler = logs::cost
    ),
    route!(
        "POST",
        "/api/v1/logs/move",
        Platform,
        "logs",
        "Run a log mover round now (hot to warm, warm to cold, cold retention) and report what it moved",
        handler = logs::move_now
    ),
    route!(
        "GET",
        "/api/v1/positions",
        Read,
        "trading",
        "Open positions and performance of the caller's tenant",
        handler = trading::my_positions
    ),
    route!(
        "GET",
        "/api/v1/orders",
        Read,
        "trading",
        "Orders of the caller's tenant",
        handler = trading::my_orders
    ),
    route!("GET", "/api/openapi.json", Public, "docs", "This document",
        handler = docs::openapi
    ),
    route!(
        "GET",
        "/api/asyncapi.json",
        Public,
        "docs",
        "The trading-client WebSocket protocol (/ws/v1/client) as an AsyncAPI 3 document",
        handler = docs::asyncapi
    ),
    route!(
        "GET",
        "/api/docs",
        Public,
        "docs",
        "A browsable page of this document",
        handler = docs::page
    ),
];

/// Registers the model upload, whose body may be larger than other requests' (a file of
/// `models.max_file_bytes`, in base64 for JSON, plus its manifest): the handler reads the payload itself
/// and bounds each form of upload (see `models::upload`). The one route [`configure`] does not register:
/// the server configures it before every other route (`startup`); its table entry (`registered_by =
/// configure_uploads`) still documents it from the handler.
pub fn configure_uploads(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/api/v1/tenants/{tenant}/models/{model}/versions")
            .route(web::post().to(models::upload))
            .default_service(web::to(method_not_allowed)),
    );
    cfg.service(
        web::resource("/api/v1/tenants/{tenant}/strategy-modules")
            .route(web::post().to(strategy_modules::upload))
            .route(web::get().to(strategy_modules::list))
            .default_service(web::to(method_not_allowed)),
    );
}

/// The paths whose resource [`configure_uploads`] registers with every method (and its own 405).
const UPLOAD_PATHS: [&str; 2] = [
    "/api/v1/tenants/{tenant}/models/{model}/versions",
    "/api/v1/tenants/{tenant}/strategy-modules",
];

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
        if UPLOAD_PATHS.contains(&r.path) || !seen.insert(r.path) {
            continue;
        }
        cfg.route(r.path, web::route().to(method_not_allowed));
    }
}

/// Registers every handler of [`ROUTES`], in table order (the model upload through [`configure_uploads`]),
/// then the 405 answers of their paths, after all of them.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.app_data(web::JsonConfig::default());
    for r in ROUTES {
        (r.register)(cfg);
    }
    configure_method_not_allowed(cfg);
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
            let tenant = match state.runtime.tenant_of_key(credential) {
                Some(t) => t.0,
                // Several nodes: the key of a configured tenant that runs on another node is still its
                // (the bridge is then redirected there).
                None if state.cluster.is_some() => state
                    .settings
                    .tenants
                    .iter()
                    .find(|t| t.api_keys.iter().any(|k| k == credential))
                    .map(|t| t.id.clone())
                    .ok_or(ApiError::Unauthorized(m))?,
                None => return Err(ApiError::Unauthorized(m)),
            };
            if state.security.is_suspended(&tenant) {
                return Err(ApiError::Forbidden(format!(
                    "tenant `{tenant}` is suspended"
                )));
            }
            Ok(Principal {
                tenant: Some(tenant),
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

    /// `body` with the rate-limit headers, answered with status `STATUS`.
    pub fn reply<T, const STATUS: u16>(&self, body: T) -> Reply<T, STATUS> {
        let mut reply = Reply::new(body);
        if let Some(d) = &self.limit {
            reply = reply
                .header("RateLimit-Policy", format!("{};w=60", d.limit))
                .header(
                    "RateLimit",
                    format!(
                        "limit={}, remaining={}, reset={}",
                        d.limit,
                        d.remaining,
                        d.reset.as_secs_f64().ceil() as u64
                    ),
                );
        }
        reply
    }

    /// 200.
    pub fn ok<T>(&self, body: T) -> Reply<T, 200> {
        self.reply(body)
    }

    /// 201: made.
    pub fn created<T>(&self, body: T) -> Reply<T, 201> {
        self.reply(body)
    }

    /// 202: queued, to be watched.
    pub fn accepted<T>(&self, body: T) -> Reply<T, 202> {
        self.reply(body)
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

pub use crate::app::valid_id;

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
