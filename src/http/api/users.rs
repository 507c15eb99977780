//! A tenant's users: create, list, change role, disable. Roles and the tenant are never taken from a caller
//! who could not grant them: a tenant administrator creates users of their own tenant only, and no one
//! below platform administrator can create or promote a platform administrator.

use actix_web::{web, HttpResponse};
use schemars::JsonSchema;
use serde::Deserialize;

use super::{Authorized, Body};
use crate::http::error::ApiError;
use crate::security::rbac::Role;
use crate::security::service::UserView;

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateUser {
    pub email: String,
    /// At least 12 characters.
    pub password: String,
    /// `tenant_admin`, `trader` or `viewer`.
    pub role: String,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SetRole {
    /// `tenant_admin`, `trader` or `viewer`.
    pub role: String,
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
    Body(body): Body<CreateUser>,
) -> Result<HttpResponse, ApiError> {
    let tenant = auth.tenant()?.id.0.clone();
    let role = tenant_role(&body.role)?;
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

pub async fn list(req: actix_web::HttpRequest, auth: Authorized) -> Result<HttpResponse, ApiError> {
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
    Ok(auth.ok(serde_json::json!({ "users": users, "total": total })))
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
    Body(body): Body<SetRole>,
) -> Result<HttpResponse, ApiError> {
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
) -> Result<HttpResponse, ApiError> {
    let user = user_of(&auth, &path.1).await?;
    let role = Role::parse(&user.role).unwrap_or(Role::Viewer);
    auth.state
        .security
        .change_user(&user, role, true, auth.actor())
        .await?;
    let updated = user_of(&auth, &path.1).await?;
    Ok(auth.ok(UserView::from(&updated)))
}
