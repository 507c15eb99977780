//! API keys for bridges and bots: created with scopes (the secret is shown once), listed without secrets,
//! rolled with an overlap window, revoked. Every change is audited.

use actix_web::web;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{Authorized, Body, OptionalBody, Reply};
use crate::domain::now_ms;
use crate::http::error::ApiError;
use crate::security::rbac::Scope;
use crate::security::service::KeyView;

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateKey {
    /// What the key is for (e.g. "bridge-london"): 1 to 100 characters, not all white space.
    #[schemars(length(min = 1, max = 100), regex(pattern = super::docs::NOT_BLANK))]
    pub name: String,
    /// At least one of `read`, `trade`, `market:write`.
    #[schemars(with = "Vec<Scope>", length(min = 1))]
    pub scopes: Vec<String>,
    /// Lifetime; the key never expires when absent.
    #[serde(default)]
    pub expires_in_secs: Option<u64>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RollKey {
    /// How long the old key keeps working (at most `security.key_overlap_secs`, the default).
    #[serde(default)]
    pub overlap_secs: Option<u64>,
}

/// A new key and its secret.
#[derive(Debug, Serialize, JsonSchema)]
pub struct KeyCreated {
    pub key: KeyView,
    /// The key itself (`Authorization: Bearer` or `X-API-Key`): shown once, never again.
    pub secret: String,
}

/// A rolled key: its successor with the secret, and the old key, valid until its overlap ends.
#[derive(Debug, Serialize, JsonSchema)]
pub struct KeyRolled {
    /// The new key.
    pub key: KeyView,
    /// The new key's secret: shown once, never again.
    pub secret: String,
    /// The old key (`rolled_to` names the new one; it expires at the end of the overlap).
    pub previous: KeyView,
}

/// A page of the tenant's API keys (never their secrets).
#[derive(Debug, Serialize, JsonSchema)]
pub struct KeyList {
    /// Newest first.
    pub keys: Vec<KeyView>,
    /// Keys matching the filters, across every page.
    pub total: usize,
}

pub async fn create(
    auth: Authorized,
    Body(body): Body<serde_json::Value>,
) -> Result<Reply<KeyCreated, 201>, ApiError> {
    let body: CreateKey = super::docs::decode(body)?;
    let tenant = auth.tenant()?.id.0.clone();
    if super::docs::is_blank(&body.name) || body.name.chars().count() > 100 {
        return Err(ApiError::BadRequest(
            "name: must have 1 to 100 characters, not all white space".into(),
        ));
    }
    let name = body.name.trim();
    if body.scopes.is_empty() {
        return Err(ApiError::BadRequest(
            "scopes: at least one scope is required".into(),
        ));
    }
    let mut scopes = Vec::new();
    for (i, s) in body.scopes.iter().enumerate() {
        let scope = Scope::parse(s).ok_or_else(|| {
            ApiError::BadRequest(format!(
                "scopes[{i}]: `{s}` is not one of read, trade, market:write"
            ))
        })?;
        if !scopes.contains(&scope) {
            scopes.push(scope);
        }
    }
    let expires = body
        .expires_in_secs
        .map(|s| now_ms() + (s.min(10 * 365 * 86400) as i64) * 1000);
    let (row, secret) = auth
        .state
        .security
        .create_key(&tenant, name, &scopes, expires, auth.actor())
        .await?;
    Ok(auth.created(KeyCreated {
        key: KeyView::from(&row),
        secret,
    }))
}

pub async fn list(
    req: actix_web::HttpRequest,
    auth: Authorized,
) -> Result<Reply<KeyList>, ApiError> {
    let page = super::Page::from_query(&req)?;
    let tenant = &auth.tenant()?.id.0;
    let keys: Vec<KeyView> = auth
        .state
        .security
        .store
        .keys_of(tenant)
        .await?
        .iter()
        .map(KeyView::from)
        .collect();
    let (keys, total) = page.apply(&keys, |k| k.created_ms);
    Ok(auth.ok(KeyList { keys, total }))
}

pub async fn roll(
    auth: Authorized,
    path: web::Path<(String, String)>,
    OptionalBody(body): OptionalBody<serde_json::Value>,
) -> Result<Reply<KeyRolled, 201>, ApiError> {
    let body: Option<RollKey> = body.map(super::docs::decode).transpose()?;
    let tenant = auth.tenant()?.id.0.clone();
    let overlap = body.and_then(|b| b.overlap_secs);
    let (row, secret) = auth
        .state
        .security
        .roll_key(&tenant, &path.1, overlap, auth.actor())
        .await?;
    let old = auth.state.security.key_of(&tenant, &path.1).await?;
    Ok(auth.created(KeyRolled {
        key: KeyView::from(&row),
        secret,
        previous: KeyView::from(&old),
    }))
}

pub async fn revoke(
    auth: Authorized,
    path: web::Path<(String, String)>,
) -> Result<Reply<KeyView>, ApiError> {
    let tenant = auth.tenant()?.id.0.clone();
    auth.state
        .security
        .revoke_key(&tenant, &path.1, auth.actor())
        .await?;
    let key = auth.state.security.key_of(&tenant, &path.1).await?;
    Ok(auth.ok(KeyView::from(&key)))
}
