//! Several nodes: a call for a tenant that runs on another node is forwarded there.
//!
//! Each tenant's actors run on exactly one node (its lease owner), and most of `/api/v1/tenants/{tenant}/…`
//! reads or commands those actors. So on a node that does not run the tenant, this middleware sends the
//! request as it came — method, path, query, body and the caller's own credential — to the owner named by the
//! cluster's last placement round, and answers with the owner's answer. The owner authenticates, authorises
//! and rate-limits the call exactly as if it had been sent there: no trust is added between nodes, and a
//! forwarded call is never forwarded again (`x-trellis-forwarded`), so a stale view cannot make two nodes
//! bounce a request between them. While no node owns the tenant (a failover in progress) the local handlers
//! answer from the stores or say the tenant is unavailable.

use std::time::Duration;

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::middleware::Next;
use actix_web::{web, HttpMessage, HttpResponse};
use futures_util::StreamExt;

use super::AppState;
use crate::cluster::node::Location;

/// Marks a forwarded call (its value: the forwarding node).
pub const FORWARDED: &str = "x-trellis-forwarded";
/// How long the owner may take to answer a forwarded call.
const TIMEOUT: Duration = Duration::from_secs(30);

enum Target {
    /// Forward to the owner: (this node, the owner's URL, the largest body).
    Owner(String, String, usize),
    Moving(String),
}

/// The tenant of a `/api/v1/tenants/{tenant}…` path.
fn tenant_of(path: &str) -> Option<&str> {
    let rest = path.strip_prefix("/api/v1/tenants/")?;
    let tenant = rest.split('/').next()?;
    (!tenant.is_empty()).then_some(tenant)
}

/// Headers that describe one hop, not the message.
fn hop_by_hop(name: &str) -> bool {
    matches!(
        name,
        "host"
            | "connection"
            | "keep-alive"
            | "transfer-encoding"
            | "content-length"
            | "upgrade"
            | "te"
            | "trailer"
            | "proxy-authorization"
            | "proxy-connection"
    )
}

pub async fn forward_remote_tenants(
    mut req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let target = req.app_data::<web::Data<AppState>>().and_then(|state| {
        let cluster = state.cluster.as_ref()?;
        if req.headers().contains_key(FORWARDED) {
            return None;
        }
        let tenant = tenant_of(req.path())?;
        if state.runtime.tenant(tenant).is_some() {
            return None;
        }
        match cluster.locate(tenant) {
            Location::Remote { url, .. } => Some(Target::Owner(
                cluster.node.clone(),
                url,
                state.settings.http.max_body_bytes,
            )),
            Location::Moving => Some(Target::Moving(tenant.to_owned())),
            Location::Unknown => None,
        }
    });
    let (me, owner, max_body) = match target {
        None => return Ok(next.call(req).await?.map_into_boxed_body()),
        Some(Target::Moving(tenant)) => {
            let resp =
                actix_web::ResponseError::error_response(&super::error::ApiError::Unavailable(
                    format!("tenant `{tenant}` is moving between nodes; retry shortly"),
                ));
            return Ok(req.into_response(resp));
        }
        Some(Target::Owner(me, owner, max_body)) => (me, owner, max_body),
    };
    // The body as it came (bounded like a local call's).
    let mut payload = req.take_payload();
    let mut body = web::BytesMut::new();
    while let Some(chunk) = payload.next().await {
        let chunk = chunk?;
        if body.len() + chunk.len() > max_body.max(64 << 20) {
            let resp = HttpResponse::PayloadTooLarge().finish();
            return Ok(req.into_response(resp));
        }
        body.extend_from_slice(&chunk);
    }
    let path = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| req.path().to_owned());
    let client = awc::Client::builder()
        .timeout(TIMEOUT)
        .disable_redirects()
        .finish();
    let mut out = client.request(req.method().clone(), format!("{owner}{path}"));
    for (name, value) in req.headers() {
        if !hop_by_hop(name.as_str()) {
            out = out.append_header((name.clone(), value.clone()));
        }
    }
    out = out.insert_header((HeaderName::from_static(FORWARDED), me.as_str()));
    if let Some(peer) = req.peer_addr() {
        if let Ok(v) = HeaderValue::from_str(&peer.ip().to_string()) {
            out = out.insert_header(("x-forwarded-for", v));
        }
    }
    let resp = match out.send_body(body.freeze()).await {
        Ok(mut answer) => {
            let mut resp = HttpResponse::build(answer.status());
            for (name, value) in answer.headers() {
                if !hop_by_hop(name.as_str()) {
                    resp.append_header((name.clone(), value.clone()));
                }
            }
            match answer.body().limit(64 << 20).await {
                Ok(bytes) => resp.body(bytes),
                Err(e) => bad_gateway(&owner, &e.to_string()),
            }
        }
        Err(e) => bad_gateway(&owner, &e.to_string()),
    };
    Ok(req.into_response(resp))
}

/// The owner did not answer: the caller retries (the tenant may be moving).
fn bad_gateway(owner: &str, why: &str) -> HttpResponse {
    tracing::warn!(%owner, error = why, "forwarded call not answered by the tenant's node");
    actix_web::ResponseError::error_response(&super::error::ApiError::Unavailable(format!(
        "the tenant's node did not answer ({why}); retry shortly"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_paths_under_a_named_tenant_are_forwarded() {
        assert_eq!(tenant_of("/api/v1/tenants/acme/orders"), Some("acme"));
        assert_eq!(tenant_of("/api/v1/tenants/acme"), Some("acme"));
        assert_eq!(tenant_of("/api/v1/tenants/"), None);
        assert_eq!(tenant_of("/api/v1/tenants"), None);
        assert_eq!(tenant_of("/api/v1/cluster"), None);
    }
}
