//! `POST /api/v1/ws-tickets`: a short-lived, single-use ticket to open `/ws/v1/client` from a browser.
//!
//! Browsers cannot set headers on a WebSocket, and a token or key in a URL ends up in proxy and server logs.
//! A ticket is what goes in the URL instead: random, valid for [`TTL`], consumed by the first connection
//! that presents it, and worth exactly its creator's identity and rights (it is the principal that was
//! authenticated when it was issued). Tickets are kept in this process's memory: a ticket is redeemed on the
//! node that issued it (a load balancer needs session affinity for the two requests, or the client uses a
//! header instead).

use std::time::{Duration, Instant};

use dashmap::DashMap;
use rand::RngCore;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{Authorized, Body, Reply};
use crate::http::error::ApiError;
use crate::security::service::Principal;

/// How long a ticket is valid.
pub const TTL: Duration = Duration::from_secs(30);
/// Outstanding tickets at most (a caller minting tickets in a loop cannot grow memory without bound).
const MAX_OUTSTANDING: usize = 10_000;

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TicketRequest {
    /// For a platform administrator: the tenant the connection acts for. Others act for their own tenant
    /// and may omit it (or name their own).
    #[serde(default)]
    #[schemars(length(min = 1, max = 64))]
    pub tenant: Option<String>,
}

/// What a ticket stands for.
#[derive(Debug, Clone)]
pub struct Ticket {
    pub principal: Principal,
    pub tenant: String,
}

/// The outstanding tickets.
#[derive(Default)]
pub struct Tickets {
    issued: DashMap<String, (Ticket, Instant)>,
}

impl Tickets {
    fn issue(&self, ticket: Ticket) -> Result<String, ApiError> {
        let now = Instant::now();
        if self.issued.len() >= MAX_OUTSTANDING {
            self.issued
                .retain(|_, (_, at)| now.duration_since(*at) < TTL);
            if self.issued.len() >= MAX_OUTSTANDING {
                return Err(ApiError::Unavailable(
                    "too many outstanding WebSocket tickets; retry in 30 s".into(),
                ));
            }
        }
        let mut bytes = [0u8; 24];
        rand::thread_rng().fill_bytes(&mut bytes);
        let id = format!("wst_{}", hex(&bytes));
        self.issued.insert(id.clone(), (ticket, now));
        Ok(id)
    }

    /// The ticket's identity, once: a second redemption, or one after [`TTL`], finds nothing.
    pub fn redeem(&self, id: &str) -> Option<Ticket> {
        let (_, (ticket, at)) = self.issued.remove(id)?;
        (at.elapsed() < TTL).then_some(ticket)
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
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
    if auth.state.runtime.tenant(&tenant).is_none() {
        return Err(ApiError::NotFound);
    }
    let id = auth.state.tickets.issue(Ticket {
        principal: auth.principal.clone(),
        tenant,
    })?;
    let expires_ms = crate::domain::now_ms() + TTL.as_millis() as i64;
    Ok(auth.created(TicketIssued {
        ticket: id,
        expires_ms,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::security::service::Credential;

    fn ticket() -> Ticket {
        Ticket {
            principal: Principal {
                tenant: Some("acme".into()),
                role: None,
                scopes: Vec::new(),
                actor: "key:k1".into(),
                credential: Credential::ConfigKey,
            },
            tenant: "acme".into(),
        }
    }

    #[test]
    fn a_ticket_is_redeemed_once() {
        let tickets = Tickets::default();
        let id = tickets.issue(ticket()).expect("issued");
        assert!(id.starts_with("wst_") && id.len() == 52);
        assert_eq!(
            tickets.redeem(&id).map(|t| t.tenant),
            Some("acme".to_owned())
        );
        assert!(tickets.redeem(&id).is_none());
        assert!(tickets.redeem("wst_forged").is_none());
    }
}
