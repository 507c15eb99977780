//! MT5 accounts of a tenant: login, broker server and password. The password is encrypted with AES-256-GCM
//! bound to the tenant, the row and the column (shared/SECURITY.md) and is never returned.

use actix_web::web;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::{Authorized, Body, Reply};
use crate::http::error::ApiError;
use crate::storage::security::Mt5AccountRow;

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RegisterAccount {
    /// A positive MT5 login (at most 2^63 - 1).
    #[schemars(range(min = 1, max = 9_223_372_036_854_775_807u64))]
    pub login: u64,
    /// The broker's trade server, e.g. "MetaQuotes-Demo": 1 to 128 characters, not all white space.
    #[schemars(length(min = 1, max = 128), regex(pattern = super::docs::NOT_BLANK))]
    pub server: String,
    /// 1 to 256 characters.
    #[schemars(length(min = 1, max = 256))]
    pub password: String,
}

/// An MT5 account as the API shows it (never its password).
#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct AccountView {
    /// The MT5 login.
    pub login: i64,
    /// The broker's trade server.
    pub server: String,
    /// The data key version the password is encrypted with.
    pub key_version: i64,
    pub created_ms: i64,
    /// Whether a bridge has a session of this account open now.
    pub connected: bool,
}

/// The tenant's MT5 accounts.
#[derive(Debug, Serialize, JsonSchema)]
pub struct AccountList {
    pub accounts: Vec<AccountView>,
}

/// What removing an MT5 account answers.
#[derive(Debug, Serialize, JsonSchema)]
pub struct AccountRemoved {
    /// The login removed.
    pub removed: i64,
}

fn view(auth: &Authorized, a: &Mt5AccountRow) -> AccountView {
    let connected = auth.tenant.as_ref().is_some_and(|t| {
        t.session_of(crate::domain::Login::new(a.login as u64))
            .is_some()
    });
    AccountView {
        login: a.login,
        server: a.server.clone(),
        key_version: a.key_version,
        created_ms: a.created_ms,
        connected,
    }
}

pub async fn register(
    auth: Authorized,
    Body(body): Body<serde_json::Value>,
) -> Result<Reply<AccountView, 201>, ApiError> {
    let body: RegisterAccount = super::docs::decode(body)?;
    let tenant = auth.tenant()?.clone();
    if body.login == 0 || body.login > i64::MAX as u64 {
        return Err(ApiError::BadRequest(
            "login: must be a positive MT5 login".into(),
        ));
    }
    if super::docs::is_blank(&body.server) || body.server.chars().count() > 128 {
        return Err(ApiError::BadRequest(
            "server: must have 1 to 128 characters, not all white space".into(),
        ));
    }
    if body.password.is_empty() || body.password.chars().count() > 256 {
        return Err(ApiError::BadRequest(
            "password: must have 1 to 256 characters".into(),
        ));
    }
    let quota = auth
        .state
        .settings
        .quotas
        .mt5_accounts
        .per_minute(&tenant.tier());
    let existing = auth.state.security.store.accounts_of(&tenant.id.0).await?;
    if existing.len() as u32 >= quota {
        return Err(crate::app::tenants::quota_exceeded(
            &auth.state.settings.quotas.mt5_accounts,
            &tenant.tier(),
            "MT5 accounts",
            quota,
        ));
    }
    let row = auth
        .state
        .security
        .register_account(
            &tenant.id.0,
            body.login,
            body.server.trim(),
            &body.password,
            auth.actor(),
        )
        .await?;
    Ok(auth.created(view(&auth, &row)))
}

pub async fn list(auth: Authorized) -> Result<Reply<AccountList>, ApiError> {
    let tenant = &auth.tenant()?.id.0;
    let rows = auth.state.security.store.accounts_of(tenant).await?;
    let accounts: Vec<AccountView> = rows.iter().map(|a| view(&auth, a)).collect();
    Ok(auth.ok(AccountList { accounts }))
}

pub async fn remove(
    auth: Authorized,
    path: web::Path<(String, String)>,
) -> Result<Reply<AccountRemoved>, ApiError> {
    let tenant = auth.tenant()?.id.0.clone();
    let login: i64 = path
        .1
        .parse()
        .map_err(|_| ApiError::BadRequest("login: must be a number".into()))?;
    if !auth
        .state
        .security
        .store
        .delete_account(&tenant, login)
        .await?
    {
        return Err(ApiError::NotFound);
    }
    auth.state
        .security
        .audit(
            &tenant,
            "mt5_account.removed",
            auth.actor(),
            json!({"login": login}),
        )
        .await?;
    Ok(auth.ok(AccountRemoved { removed: login }))
}
