//! `POST /api/v1/ws-tickets`: a short-lived, single-use ticket to open `/ws/v1/client` from a browser
//! (the store is `app::tickets`).
//!
//! Browsers cannot set headers on a WebSocket, and a token or key in a URL ends up in proxy and server logs.
//! A ticket is what goes in the URL instead: random, valid for [`TTL`], consumed by the first connection
//! that presents it, and worth exactly its creator's identity and rights (it is the principal that was
//! authenticated when it was issued). With Redis configured (every multi-node deployment), tickets live there
//! (`trellis:wst:<id>`, expiring with the ticket, taken with `GETDEL` so only one connection anywhere redeems
//! it): a ticket issued by one node opens a stream on any node. Without Redis, or while it is away, a ticket is
//! kept in this process's memory and redeemed on the node that issued it.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{Authorized, Body, Reply};
use crate::app::tickets::{Ticket, TTL};
use crate::http::error::ApiError;

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TicketRequest {
    /// For a platform administrator: the tenant the connection acts for. Others act for their own tenant
    /// and may omit it (or name their own).
    #[serde(default)]
    #[schemars(length(min = 1, max = 64))]
    pub tenant: Option<String>,
}

/// A ticket to open `/ws/v1/client` with (`?ticket=`).
#[derive(Debug, Serialize, JsonSchema)]
pub struct TicketIssued {
    /// Single use, valid 30 s.
    pub ticket: String,
    /// When it stops being valid (ms since the Unix epoch).
    pub expires_ms: i64,
}

pub async fn create(
    auth: Authorized,
    Body(body): Body<TicketRequest>,
) -> Result<Reply<TicketIssued, 201>, ApiError> {
    let tenant = match (&auth.principal.tenant, body.tenant) {
        (Some(own), None) => own.clone(),
        (Some(own), Some(t)) if *own == t => t,
        (Some(_), Some(_)) => return Err(ApiError::NotFound),
        (None, Some(t)) => t,
        (None, None) => {
            return Err(ApiError::BadRequest(
                "tenant: a platform administrator names the tenant the connection acts for".into(),
            ))
        }
    };
    // Several nodes: a tenant that runs on another node is still the cluster's (the stream is relayed there).
    let known = auth.state.runtime.tenant(&tenant).is_some()
        || auth
            .state
            .cluster
            .as_ref()
            .is_some_and(|c| c.view.read().knows(&tenant));
    if !known {
        return Err(ApiError::NotFound);
    }
    let id = auth
        .state
        .tickets
        .issue(Ticket {
            principal: auth.principal.clone(),
            tenant,
        })
        .await?;
    let expires_ms = crate::domain::now_ms() + TTL.as_millis() as i64;
    Ok(auth.created(TicketIssued {
        ticket: id,
        expires_ms,
    }))
}
