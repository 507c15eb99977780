//! The HTTP form of the use cases' error ([`crate::app::AppError`], named `ApiError` in the handlers): one JSON
//! shape (`{"error": code, "message": text}`) for every failure, a status code and headers per variant. The
//! body never carries internals; the log gets the full cause.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use serde::Serialize;

pub use crate::app::AppError as ApiError;

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
