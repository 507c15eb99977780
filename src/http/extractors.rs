//! The authenticated caller. Until users and tokens exist (the security issue), callers are tenants
//! presenting one of their API keys as `X-API-Key: trk_…` or `Authorization: Bearer trk_…`. Every request
//! of a tenant also takes one unit of its tier's rate limit.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use actix_web::{dev::Payload, web, FromRequest, HttpRequest};

use super::error::ApiError;
use super::AppState;
use crate::actors::tenant::TenantContext;
use crate::security::rate_limit::Decision;

/// A tenant that authenticated with an API key and is within its rate limit.
pub struct TenantCaller {
    pub tenant: Arc<TenantContext>,
    /// For the `RateLimit` headers of the answer.
    pub limit: Decision,
}

impl FromRequest for TenantCaller {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, ApiError>>>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let state = req.app_data::<web::Data<AppState>>().cloned();
        let key = req
            .headers()
            .get("X-API-Key")
            .and_then(|v| v.to_str().ok())
            .or_else(|| {
                req.headers()
                    .get("Authorization")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.strip_prefix("Bearer "))
            })
            .map(|k| k.trim().to_owned());
        Box::pin(async move {
            let state =
                state.ok_or_else(|| ApiError::Unavailable("application state missing".into()))?;
            let key = key.ok_or_else(|| {
                ApiError::Unauthorized(
                    "an API key is required (X-API-Key or Authorization: Bearer)".into(),
                )
            })?;
            let tenant = state
                .runtime
                .tenant_for_key(&key)
                .ok_or_else(|| ApiError::Unauthorized("unknown or revoked API key".into()))?;
            let per_minute = state.settings.rate_limits.per_minute(&tenant.settings.tier);
            let limit = state.rate_limiter.check(&tenant.id.0, per_minute).await;
            if !limit.allowed {
                return Err(ApiError::RateLimited {
                    limit: limit.limit,
                    retry_after_secs: limit.retry_after.as_secs_f64().ceil().max(1.0) as u64,
                    reset_secs: limit.reset.as_secs_f64().ceil() as u64,
                });
            }
            Ok(TenantCaller { tenant, limit })
        })
    }
}

impl TenantCaller {
    /// The `RateLimit` / `RateLimit-Policy` headers of an allowed request.
    pub fn headers(&self) -> [(&'static str, String); 2] {
        [
            ("RateLimit-Policy", format!("{};w=60", self.limit.limit)),
            (
                "RateLimit",
                format!(
                    "limit={}, remaining={}, reset={}",
                    self.limit.limit,
                    self.limit.remaining,
                    self.limit.reset.as_secs_f64().ceil() as u64
                ),
            ),
        ]
    }
}
