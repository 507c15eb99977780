//! Storage actors: the only code that holds database connections.
//!
//! Each database sits behind one actor that batches writes, retries, and reports its health to the
//! [`HealthBoard`] that `GET /ready` reads. The embedded default is SQLite (two files under
//! `storage.data_dir`: `relational.db` for tenants, orders, fills and positions, and `timeseries.db` for
//! ticks and bars, so heavy tick writes never wait behind an order write). Other actors reach a store
//! through a [`StoreSlot`], which the supervisor refills with the new address after a restart.

pub mod relational;
pub mod sqlite;
pub mod timeseries;

use std::sync::Arc;

use actix::{Actor, Addr};
use dashmap::DashMap;
use serde::Serialize;

use crate::metrics::Metrics;

/// Errors of the storage layer, split by what the caller should do.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// The database is away, busy or restarting: keep the data and try again later.
    #[error("storage unavailable, retry later: {0}")]
    Unavailable(String),
    /// The data itself was refused (constraint, bad value): retrying will not help.
    #[error("storage rejected the data: {0}")]
    Rejected(String),
}

impl StorageError {
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::Unavailable(_))
    }
}

impl From<sqlx::Error> for StorageError {
    fn from(e: sqlx::Error) -> Self {
        match &e {
            sqlx::Error::Database(db)
                if db.is_unique_violation()
                    || db.is_foreign_key_violation()
                    || db.is_check_violation() =>
            {
                Self::Rejected(db.message().to_owned())
            }
            sqlx::Error::ColumnDecode { .. }
            | sqlx::Error::Decode(_)
            | sqlx::Error::TypeNotFound { .. } => Self::Rejected(e.to_string()),
            _ => Self::Unavailable(e.to_string()),
        }
    }
}

impl From<actix::MailboxError> for StorageError {
    fn from(e: actix::MailboxError) -> Self {
        Self::Unavailable(format!("storage actor unreachable: {e}"))
    }
}

/// The health of one store as last seen.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Health {
    Starting,
    Healthy,
    Unhealthy { reason: String },
}

/// Health of every storage actor, written by the actors, read by `GET /ready`.
#[derive(Clone)]
pub struct HealthBoard {
    stores: Arc<DashMap<String, Health>>,
    metrics: Arc<Metrics>,
}

impl HealthBoard {
    pub fn new(metrics: Arc<Metrics>) -> Self {
        Self {
            stores: Arc::new(DashMap::new()),
            metrics,
        }
    }

    /// Declares a store that must be healthy before trellis is ready.
    pub fn expect(&self, store: &str) {
        self.stores
            .entry(store.to_owned())
            .or_insert(Health::Starting);
        self.metrics.storage_health(store, false);
    }

    pub fn set(&self, store: &str, health: Health) {
        self.metrics
            .storage_health(store, health == Health::Healthy);
        self.stores.insert(store.to_owned(), health);
    }

    /// Every store with its health, sorted by name.
    pub fn snapshot(&self) -> Vec<(String, Health)> {
        let mut all: Vec<(String, Health)> = self
            .stores
            .iter()
            .map(|e| (e.key().clone(), e.value().clone()))
            .collect();
        all.sort_by(|a, b| a.0.cmp(&b.0));
        all
    }
}

/// Where the current incarnation of a storage actor can be reached.
pub type StoreSlot<A> = crate::actors::slot::Slot<A>;

/// The live storage actor behind `slot`, or `Unavailable` while it restarts.
pub fn live<A: Actor>(slot: &StoreSlot<A>) -> Result<Addr<A>, StorageError> {
    slot.get()
        .ok_or_else(|| StorageError::Unavailable("storage actor is restarting".into()))
}
