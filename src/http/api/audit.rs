//! The audit log: query with filters, and verify the hash chain. Tenant administrators see their tenant's
//! chain; platform administrators choose one with `?tenant=` (default: the platform chain).

use actix_web::HttpRequest;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{Authorized, Reply};
use crate::http::error::ApiError;
use crate::security::service::{AuditView, ChainCheck, PLATFORM};
use crate::storage::security::AuditFilter;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct AuditQuery {
    tenant: Option<String>,
    action: Option<String>,
    from_ms: Option<i64>,
    to_ms: Option<i64>,
    after_seq: Option<i64>,
    limit: Option<i64>,
    /// `store` (default): the chain of record; `tiers`: its copy in the log tiers, wherever it moved.
    source: Option<String>,
}

fn parse(req: &HttpRequest) -> Result<AuditQuery, ApiError> {
    actix_web::web::Query::<AuditQuery>::from_query(req.query_string())
        .map(actix_web::web::Query::into_inner)
        .map_err(|e| ApiError::BadRequest(format!("query: {e}")))
}

/// Whose chain: a tenant caller's own (asking for another one is 404), a platform caller's choice.
fn chain(auth: &Authorized, asked: Option<String>) -> Result<String, ApiError> {
    if auth.principal.is_platform() {
        return Ok(asked.unwrap_or_else(|| PLATFORM.into()));
    }
    let own = auth.principal.tenant.clone().ok_or(ApiError::NotFound)?;
    match asked {
        Some(t) if t != own => Err(ApiError::NotFound),
        _ => Ok(own),
    }
}

/// A page of an audit chain.
#[derive(Debug, Serialize, JsonSchema)]
pub struct AuditEntries {
    /// Whose chain: a tenant, or `platform`.
    pub tenant: String,
    /// Oldest first, after `after_seq`, at most `limit`.
    pub entries: Vec<AuditView>,
}

pub async fn query(req: HttpRequest, auth: Authorized) -> Result<Reply<AuditEntries>, ApiError> {
    let q = parse(&req)?;
    let tenant = chain(&auth, q.tenant)?;
    let filter = AuditFilter {
        action: q.action,
        from_ms: q.from_ms,
        to_ms: q.to_ms,
        after_seq: q.after_seq,
        limit: q.limit.unwrap_or(100),
    };
    let entries = auth.state.security.audit_entries(&tenant, &filter).await?;
    Ok(auth.ok(AuditEntries { tenant, entries }))
}

pub async fn verify(req: HttpRequest, auth: Authorized) -> Result<Reply<ChainCheck>, ApiError> {
    let q = parse(&req)?;
    let tenant = chain(&auth, q.tenant)?;
    let check = match q.source.as_deref() {
        None | Some("store") => auth.state.security.verify_audit(&tenant).await?,
        Some("tiers") => {
            let copy = super::logs::audit_copy(&auth, &tenant).await?;
            auth.state.security.verify_audit_copy(&tenant, copy).await?
        }
        Some(other) => {
            return Err(ApiError::BadRequest(format!(
                "source: `{other}` is neither store nor tiers"
            )))
        }
    };
    Ok(auth.ok(check))
}
