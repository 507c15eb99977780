//! A tenant's users: create, list, change role, disable. Roles and the tenant are never taken from a caller
//! who could not grant them: a tenant administrator creates users of their own tenant only, and no one
//! below platform administrator can create or promote a platform administrator.

use actix_web::web;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{Authorized, Body, Reply};
use crate::http::error::ApiError;
use crate::security::rbac::Role;
use crate::security::service::UserView;

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateUser {
    /// Printable ASCII without spaces, one `@` between two non-empty parts; at most 254 characters.
    #[schemars(length(min = 3, max = 254), regex(pattern = r"^[!-?A-~]+@[!-?A-~]+$"))]
    pub email: String,
    /// 12 to 256 characters.
    #[schemars(length(min = 12, max = 256))]
    pub password: String,
    /// `tenant_admin`, `trader` or `viewer`.
    #[schemars(extend("enum" = ["tenant_admin", "trader", "viewer"]))]
    pub role: String,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SetRole {
    /// `tenant_admin`, `trader` or `viewer`.
    #[schemars(extend("enum" = ["tenant_admin", "trader", "viewer"]))]
    pub role: String,
}

/// A page of the tenant's users.
#[derive(Debug, Serialize, JsonSchema)]
pub struct UserList {
    /// Newest first.
    pub users: Vec<UserView>,
    /// Users matching the filters, across every page.
    pub total: usize,
}

/// The email and password rules of the document (the security service checks them again, more loosely).
fn check_credentials(email: &str, password: &str) -> Result<(), ApiError> {
    let printable = |s: &str| !s.is_empty() && s.bytes().all(|b| (b'!'..=b'~').contains(&b));
    let ok = email.len() <= 254
        && email.split_once('@').is_some_and(|(local, domain)| {
            printable(local) && printable(domain) && !domain.contains('@')
        });
    if !ok {
        return Err(ApiError::BadRequest(
            "email: not an email address (printable ASCII, one @, at most 254 characters)".into(),
        ));
    }
    let n = password.chars().count();
    if !(12..=256).contains(&n) {
        return Err(ApiError::BadRequest(
            "password: must have 12 to 256 characters".into(),
        ));
    }
    Ok(())
}

fn tenant_role(role: &str) -> Result<Role, ApiError> {
    match Role::parse(role) {
        Some(Role::PlatformAdmin) => Err(ApiError::BadRequest(
            "role: platform_admin is not a tenant role".into(),
        )),
        Some(r) => Ok(r),
        None => Err(ApiError::BadRequest(format!(
            "role: `{role}` is not one of tenant_admin, trader, viewer"
        ))),
    }
}

pub async fn create(
    auth: Authorized,
    Body(body): Body<serde_json::Value>,
) -> Result<Reply<UserView, 201>, ApiError> {
    let body: CreateUser = super::docs::decode(body)?;
    let tenant = auth.tenant()?.id.0.clone();
    let role = tenant_role(&body.role)?;
    check_credentials(&body.email, &body.password)?;
    let user = auth
        .state
        .security
        .create_user(
            Some(&tenant),
            &body.email,
            &body.password,
            role,
            auth.actor(),
        )
        .await?;
    Ok(auth.created(UserView::from(&user)))
}

pub async fn list(
    req: actix_web::HttpRequest,
    auth: Authorized,
) -> Result<Reply<UserList>, ApiError> {
    let page = super::Page::from_query(&req)?;
    let tenant = &auth.tenant()?.id.0;
    let users: Vec<UserView> = auth
        .state
        .security
        .store
        .users_of(tenant)
        .await?
        .iter()
        .map(UserView::from)
        .collect();
    let (users, total) = page.apply(&users, |u| u.created_ms);
    Ok(auth.ok(UserList { users, total }))
}

async fn user_of(
    auth: &Authorized,
    id: &str,
) -> Result<crate::storage::security::UserRow, ApiError> {
    let tenant = &auth.tenant()?.id.0;
    auth.state
        .security
        .store
        .user(id)
        .await?
        .filter(|u| u.tenant_id.as_deref() == Some(tenant.as_str()))
        .ok_or(ApiError::NotFound)
}

pub async fn set_role(
    auth: Authorized,
    path: web::Path<(String, String)>,
    Body(body): Body<serde_json::Value>,
) -> Result<Reply<UserView>, ApiError> {
    let body: SetRole = super::docs::decode(body)?;
    let role = tenant_role(&body.role)?;
    let user = user_of(&auth, &path.1).await?;
    auth.state
        .security
        .change_user(&user, role, user.disabled != 0, auth.actor())
        .await?;
    let updated = user_of(&auth, &path.1).await?;
    Ok(auth.ok(UserView::from(&updated)))
}

pub async fn disable(
    auth: Authorized,
    path: web::Path<(String, String)>,
) -> Result<Reply<UserView>, ApiError> {
    let user = user_of(&auth, &path.1).await?;
    let role = Role::parse(&user.role).unwrap_or(Role::Viewer);
    auth.state
        .security
        .change_user(&user, role, true, auth.actor())
        .await?;
    let updated = user_of(&auth, &path.1).await?;
    Ok(auth.ok(UserView::from(&updated)))
}
