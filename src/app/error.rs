//! The use cases' error: what went wrong, in terms a caller can act on, whatever the caller is (a REST
//! handler, the client WebSocket, a job actor).
//!
//! Each variant says whether to retry ([`AppError::is_retryable`]): `Unavailable` (an actor restarting, a
//! store away, a tenant moving) and the rate limits are worth retrying; the others are refusals. The HTTP
//! layer maps variants to status codes and one JSON body (`http::error`), the client WebSocket to an error
//! frame; neither adds meaning of its own.

#[derive(Debug, thiserror::Error)]
pub enum AppError {
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

impl AppError {
    /// Whether the same request may succeed later unchanged.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            Self::Unavailable(_) | Self::RateLimited { .. } | Self::TooManyAttempts(_)
        )
    }
}

impl From<actix::MailboxError> for AppError {
    fn from(e: actix::MailboxError) -> Self {
        Self::Unavailable(e.to_string())
    }
}

impl From<crate::security::service::AuthError> for AppError {
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

impl From<crate::storage::StorageError> for AppError {
    fn from(e: crate::storage::StorageError) -> Self {
        match e {
            crate::storage::StorageError::Unavailable(m) => Self::Unavailable(m),
            crate::storage::StorageError::Rejected(m) => Self::Conflict(m),
            // The tenant is moving to another node: the caller retries and is answered by the new owner.
            crate::storage::StorageError::Fenced(m) => Self::Unavailable(m),
        }
    }
}
