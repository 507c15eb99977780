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
}

impl ApiError {
    fn code(&self) -> &'static str {
        match self {
            Self::BadRequest(_) => "bad_request",
            Self::NotFound => "not_found",
            Self::Unauthorized(_) => "unauthorized",
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
            Self::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
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
            _ => {}
        }
        resp.json(ErrorBody {
            error: self.code(),
            message: self.to_string(),
        })
    }
}
