//! The API error type: one JSON shape (`{"error": code, "message": text}`) for every failure. The body never
//! carries internals; the log gets the full cause.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use serde::Serialize;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error("not found")]
    NotFound,
    /// No credentials, or credentials trellis does not know.
    #[error("{0}")]
    Unauthorized(String),
    /// Known caller, not allowed (role, scope, suspended tenant).
    #[error("{0}")]
    Forbidden(String),
    /// The tenant's tier does not include this; `required` names the tier that does.
    #[error("{message}")]
    TierRequired { required: String, message: String },
    /// The body is over `http.max_body_bytes`.
    #[error("{0}")]
    TooLarge(String),
    /// The request conflicts with what is stored (duplicate, already rolled…).
    #[error("{0}")]
    Conflict(String),
    /// Too many login attempts: retry after the given seconds.
    #[error("too many attempts; retry in {0} s")]
    TooManyAttempts(u64),
    /// The tenant used its tier's requests for now.
    #[error("rate limit of {limit} requests per minute reached; retry in {retry_after_secs} s")]
    RateLimited {
        limit: u32,
        retry_after_secs: u64,
        reset_secs: u64,
    },
    /// An actor is gone or its mailbox is full: the client should retry.
    #[error("service temporarily unavailable: {0}")]
    Unavailable(String),
    #[error("internal error")]
    Internal(#[source] anyhow::Error),
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: &'a str,
    message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    required_tier: Option<&'a str>,
}

impl ApiError {
    fn code(&self) -> &'static str {
        match self {
            Self::BadRequest(_) => "bad_request",
            Self::NotFound => "not_found",
            Self::Unauthorized(_) => "unauthorized",
            Self::Forbidden(_) => "forbidden",
            Self::TierRequired { .. } => "tier_required",
            Self::Conflict(_) => "conflict",
            Self::TooLarge(_) => "payload_too_large",
            Self::TooManyAttempts(_) => "too_many_attempts",
            Self::RateLimited { .. } => "rate_limited",
            Self::Unavailable(_) => "unavailable",
            Self::Internal(_) => "internal",
        }
    }
}

impl From<actix::MailboxError> for ApiError {
    fn from(e: actix::MailboxError) -> Self {
        Self::Unavailable(e.to_string())
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::NotFound => StatusCode::NOT_FOUND,
            Self::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Self::Forbidden(_) | Self::TierRequired { .. } => StatusCode::FORBIDDEN,
            Self::Conflict(_) => StatusCode::CONFLICT,
            Self::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::TooManyAttempts(_) | Self::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        if let Self::Internal(cause) = self {
            tracing::error!(error = ?cause, "request failed");
        }
        let mut resp = HttpResponse::build(self.status_code());
        match self {
            Self::Unavailable(_) => {
                resp.insert_header(("Retry-After", "1"));
            }
            Self::RateLimited {
                limit,
                retry_after_secs,
                reset_secs,
            } => {
                resp.insert_header(("Retry-After", retry_after_secs.to_string()));
                resp.insert_header(("RateLimit-Policy", format!("{limit};w=60")));
                resp.insert_header((
                    "RateLimit",
                    format!("limit={limit}, remaining=0, reset={reset_secs}"),
                ));
            }
            Self::Unauthorized(_) => {
                resp.insert_header(("WWW-Authenticate", "Bearer"));
            }
            Self::TooManyAttempts(secs) => {
                resp.insert_header(("Retry-After", secs.to_string()));
            }
            _ => {}
        }
        resp.json(ErrorBody {
            error: self.code(),
            message: self.to_string(),
            required_tier: match self {
                Self::TierRequired { required, .. } => Some(required.as_str()),
                _ => None,
            },
        })
    }
}

impl From<crate::security::service::AuthError> for ApiError {
    fn from(e: crate::security::service::AuthError) -> Self {
        use crate::security::service::AuthError as A;
        match e {
            A::Unauthenticated(m) => Self::Unauthorized(m),
            A::Forbidden(m) => Self::Forbidden(m),
            A::TooMany(s) => Self::TooManyAttempts(s),
            A::Conflict(m) => Self::Conflict(m),
            A::Invalid(m) => Self::BadRequest(m),
            A::NotFound => Self::NotFound,
            A::Storage(s) => s.into(),
            A::Internal(m) => Self::Internal(anyhow::anyhow!(m)),
        }
    }
}

impl From<crate::storage::StorageError> for ApiError {
    fn from(e: crate::storage::StorageError) -> Self {
        match e {
            crate::storage::StorageError::Unavailable(m) => Self::Unavailable(m),
            crate::storage::StorageError::Rejected(m) => Self::Conflict(m),
            // The tenant is moving to another node: the caller retries and is answered by the new owner.
            crate::storage::StorageError::Fenced(m) => Self::Unavailable(m),
        }
    }
}
