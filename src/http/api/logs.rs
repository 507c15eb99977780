//! The log tiers over HTTP: a tenant's entries across hot, warm and cold in time order with a cursor
//! (`GET /api/v1/tenants/{tenant}/logs`), the platform's own (`GET /api/v1/logs`, platform administrators),
//! what the tiers hold and cost (`GET /api/v1/logs/cost`), and a mover round on demand
//! (`POST /api/v1/logs/move`).
//!
//! The tenant is settled before anything is read (the route's authorisation: a caller of another tenant is
//! answered 404), and every tier is read under that tenant's key, partition or path only. The cursor is
//! signed with the audit key and names the tenant and filters it was issued for: a cursor edited, or taken to
//! another tenant or query, is refused.

use base64::Engine as _;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{Authorized, Reply};
use crate::http::error::ApiError;
use crate::storage::logs::mover::RoundReport;
use crate::storage::logs::store::{CostReport, LogStore};
use crate::storage::logs::{LogEntry, LogQuery, PLATFORM};

const MAX_LIMIT: usize = 1_000;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct LogsParams {
    from_ms: Option<i64>,
    to_ms: Option<i64>,
    kind: Option<String>,
    level: Option<String>,
    q: Option<String>,
    cursor: Option<String>,
    limit: Option<usize>,
}

/// A page of entries, oldest first.
#[derive(Debug, Serialize, JsonSchema)]
pub struct LogPage {
    pub tenant: String,
    pub entries: Vec<LogEntry>,
    /// Pass as `cursor` (with the same filters) for the next page; absent on the last one.
    pub next_cursor: Option<String>,
}

/// What a cursor carries: where the last page ended and what it was issued for.
#[derive(Serialize, Deserialize, PartialEq)]
struct CursorBody {
    tenant: String,
    at_ms: i64,
    id: String,
    from_ms: i64,
    to_ms: i64,
    kind: Option<String>,
    level: Option<String>,
    q: Option<String>,
}

fn store(auth: &Authorized) -> Result<&LogStore, ApiError> {
    auth.state
        .runtime
        .logs
        .as_ref()
        .ok_or_else(|| ApiError::NotFound)?
        .store()
        .ok_or_else(|| ApiError::Unavailable("the log tiers are opening".into()))
}

fn sign(auth: &Authorized, body: &CursorBody) -> String {
    let json = serde_json::to_vec(body).unwrap_or_default();
    let mac = auth.state.security.mac("logs.cursor", &json);
    format!(
        "{}.{mac}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(json)
    )
}

fn open(auth: &Authorized, cursor: &str) -> Result<CursorBody, ApiError> {
    let bad = || ApiError::BadRequest("cursor: not one this server issued for this query".into());
    let (data, mac) = cursor.split_once('.').ok_or_else(bad)?;
    let json = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(data)
        .map_err(|_| bad())?;
    let expected = auth.state.security.mac("logs.cursor", &json);
    if !bool::from(subtle::ConstantTimeEq::ct_eq(
        expected.as_bytes(),
        mac.as_bytes(),
    )) {
        return Err(bad());
    }
    serde_json::from_slice(&json).map_err(|_| bad())
}

async fn page(
    auth: &Authorized,
    req: &actix_web::HttpRequest,
    tenant: String,
) -> Result<LogPage, ApiError> {
    let p = actix_web::web::Query::<LogsParams>::from_query(req.query_string())
        .map_err(|e| ApiError::BadRequest(format!("query: {e}")))?
        .into_inner();
    let to_ms = p.to_ms.unwrap_or_else(|| crate::domain::now_ms() + 1);
    let from_ms = p
        .from_ms
        .unwrap_or(to_ms.saturating_sub(crate::storage::logs::DAY_MS));
    if from_ms >= to_ms {
        return Err(ApiError::BadRequest("from_ms must be before to_ms".into()));
    }
    let limit = p.limit.unwrap_or(100);
    if limit == 0 || limit > MAX_LIMIT {
        return Err(ApiError::BadRequest(format!(
            "limit must be 1 to {MAX_LIMIT}"
        )));
    }
    for (name, v) in [("kind", &p.kind), ("level", &p.level), ("q", &p.q)] {
        if v.as_ref()
            .is_some_and(|v| v.is_empty() || v.chars().count() > 200)
        {
            return Err(ApiError::BadRequest(format!("{name}: 1 to 200 characters")));
        }
    }
    let mut query = LogQuery {
        tenant: tenant.clone(),
        from_ms,
        to_ms,
        kind: p.kind,
        level: p.level,
        q: p.q,
        after: None,
        limit,
    };
    if let Some(c) = &p.cursor {
        let body = open(auth, c)?;
        let same = body.tenant == query.tenant
            && body.from_ms == query.from_ms
            && body.to_ms == query.to_ms
            && body.kind == query.kind
            && body.level == query.level
            && body.q == query.q;
        if !same {
            return Err(ApiError::BadRequest(
                "cursor: issued for another tenant or other filters (pass the same from_ms, to_ms, kind, level and q)".into(),
            ));
        }
        query.after = Some((body.at_ms, body.id));
    }
    let entries = store(auth)?.query(&query).await?;
    let next_cursor = (entries.len() == limit)
        .then(|| entries.last())
        .flatten()
        .map(|last| {
            sign(
                auth,
                &CursorBody {
                    tenant: tenant.clone(),
                    at_ms: last.at_ms,
                    id: last.id.clone(),
                    from_ms,
                    to_ms,
                    kind: query.kind.clone(),
                    level: query.level.clone(),
                    q: query.q.clone(),
                },
            )
        });
    Ok(LogPage {
        tenant,
        entries,
        next_cursor,
    })
}

pub async fn tenant_logs(
    req: actix_web::HttpRequest,
    auth: Authorized,
) -> Result<Reply<LogPage>, ApiError> {
    let tenant = auth.tenant()?.id.0.clone();
    let page = page(&auth, &req, tenant).await?;
    Ok(auth.ok(page))
}

pub async fn platform_logs(
    req: actix_web::HttpRequest,
    auth: Authorized,
) -> Result<Reply<LogPage>, ApiError> {
    let page = page(&auth, &req, PLATFORM.to_owned()).await?;
    Ok(auth.ok(page))
}

pub async fn cost(auth: Authorized) -> Result<Reply<CostReport>, ApiError> {
    let report = store(&auth)?.cost().await?;
    report.record(&auth.state.runtime.metrics);
    Ok(auth.ok(report))
}

pub async fn move_now(auth: Authorized) -> Result<Reply<RoundReport>, ApiError> {
    let mover = auth
        .state
        .runtime
        .log_tiers
        .as_ref()
        .ok_or(ApiError::NotFound)?;
    let report = mover.run_now().await.map_err(ApiError::Unavailable)?;
    Ok(auth.ok(report))
}

/// The audit chain as the log tiers hold it (`GET /api/v1/audit/verify?source=tiers`).
pub async fn audit_copy(
    auth: &Authorized,
    tenant: &str,
) -> Result<Vec<crate::security::audit::Entry>, ApiError> {
    // Only a tenant id can have entries in the tiers (whose paths and keys are built from it).
    if super::valid_id("tenant", tenant).is_err() {
        return Err(ApiError::NotFound);
    }
    let store = store(auth)?;
    let mut query = LogQuery {
        tenant: tenant.to_owned(),
        from_ms: 0,
        to_ms: crate::domain::now_ms() + 1,
        kind: Some("audit".into()),
        limit: MAX_LIMIT,
        ..Default::default()
    };
    let mut out = Vec::new();
    loop {
        let entries = store.query(&query).await?;
        for e in &entries {
            let v: serde_json::Value = serde_json::from_str(&e.data).unwrap_or_default();
            out.push(crate::security::audit::Entry {
                seq: v["seq"].as_u64().unwrap_or(0),
                body: v["entry"].clone(),
                hash: v["hash"].as_str().unwrap_or_default().to_owned(),
            });
        }
        match entries.last() {
            Some(last) if entries.len() == query.limit => {
                query.after = Some((last.at_ms, last.id.clone()))
            }
            _ => return Ok(out),
        }
    }
}
