//! WebSocket tickets (issued by `POST /api/v1/ws-tickets`): a short-lived, single-use ticket to open
//! `/ws/v1/client` from a browser.
//!
//! Browsers cannot set headers on a WebSocket, and a token or key in a URL ends up in proxy and server logs.
//! A ticket is what goes in the URL instead: random, valid for [`TTL`], consumed by the first connection
//! that presents it, and worth exactly its creator's identity and rights (it is the principal that was
//! authenticated when it was issued). With Redis configured (every multi-node deployment), tickets live there
//! (`trellis:wst:<id>`, expiring with the ticket, taken with `GETDEL` so only one connection anywhere redeems
//! it): a ticket issued by one node opens a stream on any node. Without Redis, or while it is away, a ticket is
//! kept in this process's memory and redeemed on the node that issued it.

use std::time::{Duration, Instant};

use dashmap::DashMap;
use rand::RngCore;
use serde::{Deserialize, Serialize};

use super::AppError;
use crate::domain::hex;
use crate::security::service::Principal;

/// How long a ticket is valid.
pub const TTL: Duration = Duration::from_secs(30);
/// Outstanding tickets at most (a caller minting tickets in a loop cannot grow memory without bound).
const MAX_OUTSTANDING: usize = 10_000;

/// What a ticket stands for.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Ticket {
    pub principal: Principal,
    pub tenant: String,
}

/// The outstanding tickets.
#[derive(Default)]
pub struct Tickets {
    issued: DashMap<String, (Ticket, Instant)>,
    redis: Option<redis::Client>,
    conn: tokio::sync::Mutex<Option<redis::aio::ConnectionManager>>,
}

/// A Redis call that takes longer is treated as Redis being away.
const REDIS_TIMEOUT: Duration = Duration::from_millis(500);

fn redis_key(id: &str) -> String {
    format!("trellis:wst:{id}")
}

impl Tickets {
    /// Tickets kept in Redis at `redis_url` when given (shared by every node), in memory otherwise.
    pub fn new(redis_url: Option<&str>) -> Self {
        Self {
            redis: redis_url.and_then(|u| redis::Client::open(u).ok()),
            ..Self::default()
        }
    }

    async fn connection(&self) -> Option<redis::aio::ConnectionManager> {
        let client = self.redis.as_ref()?;
        let mut guard = self.conn.lock().await;
        if guard.is_none() {
            let connect = redis::aio::ConnectionManager::new(client.clone());
            *guard = tokio::time::timeout(REDIS_TIMEOUT, connect)
                .await
                .ok()?
                .ok();
        }
        guard.clone()
    }

    async fn forget_connection(&self) {
        *self.conn.lock().await = None;
    }

    pub async fn issue(&self, ticket: Ticket) -> Result<String, AppError> {
        let mut bytes = [0u8; 24];
        rand::thread_rng().fill_bytes(&mut bytes);
        let id = format!("wst_{}", hex(&bytes));
        if let (Some(mut conn), Ok(json)) =
            (self.connection().await, serde_json::to_string(&ticket))
        {
            let mut set = redis::cmd("SET");
            set.arg(redis_key(&id))
                .arg(json)
                .arg("PX")
                .arg(TTL.as_millis() as u64);
            match tokio::time::timeout(REDIS_TIMEOUT, set.query_async::<()>(&mut conn)).await {
                Ok(Ok(())) => return Ok(id),
                _ => self.forget_connection().await,
            }
        }
        let now = Instant::now();
        if self.issued.len() >= MAX_OUTSTANDING {
            self.issued
                .retain(|_, (_, at)| now.duration_since(*at) < TTL);
            if self.issued.len() >= MAX_OUTSTANDING {
                return Err(AppError::Unavailable(
                    "too many outstanding WebSocket tickets; retry in 30 s".into(),
                ));
            }
        }
        self.issued.insert(id.clone(), (ticket, now));
        Ok(id)
    }

    /// What the ticket stands for, without using it (to find the node that serves its tenant), and whether
    /// other nodes can redeem it too (it is in Redis, not only in this node's memory).
    pub async fn peek(&self, id: &str) -> Option<(Ticket, bool)> {
        if let Some(entry) = self.issued.get(id) {
            let (ticket, at) = entry.value();
            return (at.elapsed() < TTL).then(|| (ticket.clone(), false));
        }
        Some((self.ask_redis(id, "GET").await?, true))
    }

    /// The ticket's identity, once: a second redemption (on any node), or one after [`TTL`], finds nothing.
    pub async fn redeem(&self, id: &str) -> Option<Ticket> {
        if let Some((_, (ticket, at))) = self.issued.remove(id) {
            return (at.elapsed() < TTL).then_some(ticket);
        }
        self.ask_redis(id, "GETDEL").await
    }

    async fn ask_redis(&self, id: &str, command: &str) -> Option<Ticket> {
        if !id.starts_with("wst_") || id.len() > 64 {
            return None;
        }
        let mut conn = self.connection().await?;
        let mut get = redis::cmd(command);
        get.arg(redis_key(id));
        match tokio::time::timeout(REDIS_TIMEOUT, get.query_async::<Option<String>>(&mut conn))
            .await
        {
            Ok(Ok(json)) => serde_json::from_str(&json?).ok(),
            _ => {
                self.forget_connection().await;
                None
            }
        }
    }
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

    #[actix_rt::test]
    async fn a_ticket_is_redeemed_once() {
        let tickets = Tickets::default();
        let id = tickets.issue(ticket()).await.expect("issued");
        assert!(id.starts_with("wst_") && id.len() == 52);
        assert_eq!(
            tickets
                .peek(&id)
                .await
                .map(|(t, shared)| (t.tenant, shared)),
            Some(("acme".to_owned(), false))
        );
        assert_eq!(
            tickets.redeem(&id).await.map(|t| t.tenant),
            Some("acme".to_owned())
        );
        assert!(tickets.redeem(&id).await.is_none());
        assert!(tickets.redeem("wst_forged").await.is_none());
    }
}
