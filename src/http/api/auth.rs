//! Sign-in, refresh-token rotation, sign-out and `GET /me`.

use actix_web::{web, HttpRequest};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{Authorized, Body, Reply};
use crate::http::error::ApiError;
use crate::http::AppState;
use crate::security::rbac::Scope;
use crate::security::service::{Credential, TokenPair};

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    pub email: String,
    pub password: String,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RefreshRequest {
    pub refresh_token: String,
}

pub async fn login(
    req: HttpRequest,
    state: web::Data<AppState>,
    Body(body): Body<serde_json::Value>,
) -> Result<Reply<TokenPair>, ApiError> {
    let body: LoginRequest = super::docs::decode(body)?;
    let ip = req.peer_addr().map(|a| a.ip());
    let pair = state
        .security
        .login(&body.email, &body.password, ip)
        .await?;
    Ok(Reply::new(pair).header("Cache-Control", "no-store"))
}

pub async fn refresh(
    state: web::Data<AppState>,
    Body(body): Body<serde_json::Value>,
) -> Result<Reply<TokenPair>, ApiError> {
    let body: RefreshRequest = super::docs::decode(body)?;
    let pair = state.security.refresh(&body.refresh_token).await?;
    Ok(Reply::new(pair).header("Cache-Control", "no-store"))
}

/// What `POST /auth/logout` answers.
#[derive(Debug, Serialize, JsonSchema)]
pub struct LoggedOut {
    /// Always `true`: the session is over (its refresh token no longer works).
    pub logged_out: bool,
}

pub async fn logout(auth: Authorized) -> Result<Reply<LoggedOut>, ApiError> {
    auth.state.security.logout(&auth.principal).await?;
    Ok(auth.ok(LoggedOut { logged_out: true }))
}

/// Who the caller is (`GET /me`), by the kind of credential it presented.
#[derive(Debug, Serialize, JsonSchema)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Me {
    /// A user, by an access token.
    User {
        /// The user's id.
        user_id: String,
        email: String,
        /// The user's tenant; `null` for a platform administrator.
        tenant_id: Option<String>,
        /// `platform_admin`, `tenant_admin`, `trader` or `viewer`.
        role: String,
        /// The session the access token belongs to (ended by `POST /auth/logout`).
        session_id: String,
    },
    /// An API key stored through the API.
    ApiKey {
        /// The key's id.
        key_id: String,
        /// The key's tenant.
        tenant_id: Option<String>,
        /// What the key may do.
        scopes: Vec<Scope>,
    },
    /// An API key listed in the configuration (`[[tenants]] api_keys`).
    ConfigKey {
        /// The key's tenant.
        tenant_id: Option<String>,
        /// What the key may do (every scope).
        scopes: Vec<Scope>,
    },
}

pub async fn me(auth: Authorized) -> Result<Reply<Me>, ApiError> {
    let p = &auth.principal;
    let body = match &p.credential {
        Credential::User { user_id, sid, .. } => {
            let user = auth
                .state
                .security
                .store
                .user(user_id)
                .await?
                .ok_or(ApiError::NotFound)?;
            Me::User {
                user_id: user.id,
                email: user.email,
                tenant_id: user.tenant_id,
                role: user.role,
                session_id: sid.clone(),
            }
        }
        Credential::Key { key_id } => Me::ApiKey {
            key_id: key_id.clone(),
            tenant_id: p.tenant.clone(),
            scopes: p.scopes.clone(),
        },
        Credential::ConfigKey => Me::ConfigKey {
            tenant_id: p.tenant.clone(),
            scopes: p.scopes.clone(),
        },
    };
    Ok(auth.ok(body))
}
