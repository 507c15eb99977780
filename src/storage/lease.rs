//! Tenant leases in PostgreSQL: one owner per tenant, a fencing token that only grows, expiry by the
//! database's clock.
//!
//! - [`LeaseStore::acquire`] takes a tenant that has no live lease (never owned, expired or released) and
//!   answers the new token (the previous one plus one); a live lease of another node is left alone.
//! - [`LeaseStore::renew`] extends the caller's own live lease; `false` means it is lost (expired — even if
//!   nobody took it yet, since anybody may at any moment), and the tenant's actors must stop at once.
//! - [`LeaseStore::release`] hands a lease back for a graceful move (expiry set to `-infinity`).
//! - [`fence`] runs first in a tenant's write transaction: it locks the lease row `FOR SHARE` and refuses
//!   the transaction unless the token is the caller's. The lock orders every write against every takeover
//!   (a takeover is an `UPDATE` of that row): a write in flight finishes before the takeover commits, and a
//!   write that starts after it sees the new token. Only a token that was overtaken is refused — a lease
//!   that expired but was not taken still fences correctly, because no other node can have written.
//!
//! Every time is PostgreSQL's `clock_timestamp()`: nodes with skewed clocks still agree on expiry.

use std::time::Duration;

use sqlx::postgres::PgPool;
use sqlx::{Postgres, Transaction};

use crate::storage::StorageError;

/// A lease held by this node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub tenant: String,
    pub node: String,
    pub token: i64,
}

/// Who owns a tenant, as the store says.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Owner {
    pub tenant_id: String,
    pub node_id: String,
    pub token: i64,
    /// Whether the lease is still live by the database's clock.
    pub live: bool,
    /// Milliseconds since it was acquired.
    pub age_ms: i64,
    /// Milliseconds since it ran out without being released (a dead or frozen owner); `None` while live or
    /// once released.
    pub expired_ms: Option<i64>,
}

/// A registered node, as the store says.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct NodeRow {
    pub id: String,
    /// Its advertised URLs, a JSON array.
    pub urls: String,
    pub live: bool,
    pub heartbeat_age_ms: i64,
    pub up_ms: i64,
}

impl NodeRow {
    /// The first advertised URL.
    pub fn url(&self) -> Option<String> {
        serde_json::from_str::<Vec<String>>(&self.urls)
            .ok()
            .and_then(|u| u.into_iter().next())
    }
}

/// Why a tenant write was refused by [`fence`].
#[derive(Debug, thiserror::Error)]
pub enum FenceError {
    /// The tenant's lease was taken by another node (or never given to this one): this node must stop the
    /// tenant. Never retried.
    #[error("tenant `{tenant}`: lease token {held} is overtaken (current {current:?}); this node no longer owns it")]
    Overtaken {
        tenant: String,
        held: i64,
        current: Option<i64>,
    },
    #[error(transparent)]
    Storage(#[from] StorageError),
}

impl From<sqlx::Error> for FenceError {
    fn from(e: sqlx::Error) -> Self {
        Self::Storage(StorageError::from(e))
    }
}

/// Locks the tenant's lease row for the rest of `tx` and checks that `token` is the current one.
/// `tx` must be scoped to the tenant (`storage::postgres::tenant_tx`).
pub async fn fence(
    tx: &mut Transaction<'static, Postgres>,
    tenant: &str,
    token: i64,
) -> Result<(), FenceError> {
    let current: Option<(i64,)> =
        sqlx::query_as("SELECT token FROM tenant_leases WHERE tenant_id = $1 FOR SHARE")
            .bind(tenant)
            .fetch_optional(&mut **tx)
            .await?;
    match current {
        Some((t,)) if t == token => Ok(()),
        other => Err(FenceError::Overtaken {
            tenant: tenant.to_owned(),
            held: token,
            current: other.map(|(t,)| t),
        }),
    }
}

/// The lease table, through the application role in the platform scope.
#[derive(Clone)]
pub struct LeaseStore {
    pool: PgPool,
}

impl LeaseStore {
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }

    async fn platform(&self) -> Result<Transaction<'static, Postgres>, StorageError> {
        crate::storage::postgres::platform_tx(&self.pool).await
    }

    /// Takes `tenant` for `node` for `ttl` when no live lease holds it; answers the new lease, or `None`
    /// while another node's lease is live (or this node's own: renew that one instead).
    pub async fn acquire(
        &self,
        tenant: &str,
        node: &str,
        ttl: Duration,
    ) -> Result<Option<Lease>, StorageError> {
        let mut tx = self.platform().await?;
        let token: Option<(i64,)> = sqlx::query_as(
            "INSERT INTO tenant_leases AS l (tenant_id, node_id, token, acquired_at, expires_at) \
             VALUES ($1, $2, 1, clock_timestamp(), clock_timestamp() + make_interval(secs => $3)) \
             ON CONFLICT (tenant_id) DO UPDATE \
             SET node_id = EXCLUDED.node_id, token = l.token + 1, \
                 acquired_at = EXCLUDED.acquired_at, expires_at = EXCLUDED.expires_at \
             WHERE l.expires_at < clock_timestamp() \
             RETURNING token",
        )
        .bind(tenant)
        .bind(node)
        .bind(ttl.as_secs_f64())
        .fetch_optional(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(token.map(|(token,)| Lease {
            tenant: tenant.to_owned(),
            node: node.to_owned(),
            token,
        }))
    }

    /// Extends a live lease by `ttl` from now; `false` when it is no longer live or no longer this one.
    pub async fn renew(&self, lease: &Lease, ttl: Duration) -> Result<bool, StorageError> {
        let mut tx = self.platform().await?;
        let done = sqlx::query(
            "UPDATE tenant_leases SET expires_at = clock_timestamp() + make_interval(secs => $4) \
             WHERE tenant_id = $1 AND node_id = $2 AND token = $3 AND expires_at > clock_timestamp()",
        )
        .bind(&lease.tenant)
        .bind(&lease.node)
        .bind(lease.token)
        .bind(ttl.as_secs_f64())
        .execute(&mut *tx)
        .await?
        .rows_affected();
        tx.commit().await?;
        Ok(done == 1)
    }

    /// Gives a lease back (after the tenant's actors stopped and flushed): another node may take it at once.
    /// `false` when it was not this node's any more.
    pub async fn release(&self, lease: &Lease) -> Result<bool, StorageError> {
        let mut tx = self.platform().await?;
        let done = sqlx::query(
            "UPDATE tenant_leases SET expires_at = '-infinity' \
             WHERE tenant_id = $1 AND node_id = $2 AND token = $3",
        )
        .bind(&lease.tenant)
        .bind(&lease.node)
        .bind(lease.token)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        tx.commit().await?;
        Ok(done == 1)
    }

    /// Says this node is alive and where it is reached (`cluster_nodes`).
    pub async fn heartbeat(&self, node: &str, url: &str, first: bool) -> Result<(), StorageError> {
        let mut tx = self.platform().await?;
        sqlx::query(
            "INSERT INTO cluster_nodes (id, urls, started_at, heartbeat_at) \
             VALUES ($1, $2, clock_timestamp(), clock_timestamp()) \
             ON CONFLICT (id) DO UPDATE SET urls = EXCLUDED.urls, heartbeat_at = EXCLUDED.heartbeat_at, \
             started_at = CASE WHEN $3 THEN EXCLUDED.started_at ELSE cluster_nodes.started_at END",
        )
        .bind(node)
        .bind(serde_json::json!([url]).to_string())
        .bind(first)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Marks the node gone (a graceful stop): other nodes stop counting it at once.
    pub async fn leave(&self, node: &str) -> Result<(), StorageError> {
        let mut tx = self.platform().await?;
        sqlx::query("UPDATE cluster_nodes SET heartbeat_at = to_timestamp(0) WHERE id = $1")
            .bind(node)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Every registered node, with whether its last heartbeat is younger than `timeout`.
    pub async fn nodes(&self, timeout: Duration) -> Result<Vec<NodeRow>, StorageError> {
        let mut tx = self.platform().await?;
        let rows = sqlx::query_as::<_, NodeRow>(
            "SELECT id, urls, \
             heartbeat_at > clock_timestamp() - make_interval(secs => $1) AS live, \
             (extract(epoch FROM clock_timestamp() - heartbeat_at) * 1000)::bigint AS heartbeat_age_ms, \
             (extract(epoch FROM clock_timestamp() - started_at) * 1000)::bigint AS up_ms \
             FROM cluster_nodes ORDER BY id",
        )
        .bind(timeout.as_secs_f64())
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(rows)
    }

    /// Every tenant's lease, live or not (not the leases of services such as the log mover, `@…`).
    pub async fn owners(&self) -> Result<Vec<Owner>, StorageError> {
        let mut tx = self.platform().await?;
        let rows = sqlx::query_as::<_, Owner>(
            "SELECT tenant_id, node_id, token, expires_at > clock_timestamp() AS live, \
             (extract(epoch FROM clock_timestamp() - acquired_at) * 1000)::bigint AS age_ms, \
             CASE WHEN expires_at = '-infinity' OR expires_at > clock_timestamp() THEN NULL \
                  ELSE (extract(epoch FROM clock_timestamp() - expires_at) * 1000)::bigint END AS expired_ms \
             FROM tenant_leases WHERE tenant_id NOT LIKE '@%' ORDER BY tenant_id",
        )
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(rows)
    }
}
