//! Sign-in, refresh-token rotation, sign-out and `GET /me`.

use actix_web::{web, HttpRequest, HttpResponse};
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::json;

use super::{Authorized, Body};
use crate::http::error::ApiError;
use crate::http::AppState;
use crate::security::service::Credential;

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
) -> Result<HttpResponse, ApiError> {
    let body: LoginRequest = super::docs::decode(body)?;
    let ip = req.peer_addr().map(|a| a.ip());
    let pair = state
        .security
        .login(&body.email, &body.password, ip)
        .await?;
    Ok(HttpResponse::Ok()
        .insert_header(("Cache-Control", "no-store"))
        .json(pair))
}

pub async fn refresh(
    state: web::Data<AppState>,
    Body(body): Body<serde_json::Value>,
) -> Result<HttpResponse, ApiError> {
    let body: RefreshRequest = super::docs::decode(body)?;
    let pair = state.security.refresh(&body.refresh_token).await?;
    Ok(HttpResponse::Ok()
        .insert_header(("Cache-Control", "no-store"))
        .json(pair))
}

pub async fn logout(auth: Authorized) -> Result<HttpResponse, ApiError> {
    auth.state.security.logout(&auth.principal).await?;
    Ok(auth.ok(json!({"logged_out": true})))
}

pub async fn me(auth: Authorized) -> Result<HttpResponse, ApiError> {
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
            json!({
                "kind": "user",
                "user_id": user.id,
                "email": user.email,
                "tenant_id": user.tenant_id,
                "role": user.role,
                "session_id": sid,
            })
        }
        Credential::Key { key_id } => json!({
            "kind": "api_key", "key_id": key_id, "tenant_id": p.tenant,
            "scopes": p.scopes.iter().map(|s| s.as_str()).collect::<Vec<_>>(),
        }),
        Credential::ConfigKey => json!({
            "kind": "config_key", "tenant_id": p.tenant,
            "scopes": p.scopes.iter().map(|s| s.as_str()).collect::<Vec<_>>(),
        }),
    };
    Ok(auth.ok(body))
}
