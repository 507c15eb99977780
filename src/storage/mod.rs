//! Storage actors: the only code that holds database connections.
//!
//! Each database sits behind one actor that batches writes (the relational stores commit orders and deals
//! that arrive together in one transaction: [`journal`]), retries, and reports its health to the
//! [`HealthBoard`] that `GET /ready` reads. The embedded default is SQLite (two files under
//! `storage.data_dir`: `relational.db` for tenants, orders, fills and positions, and `timeseries.db` for
//! ticks and bars, so heavy tick writes never wait behind an order write). Other actors reach a store
//! through a [`StoreSlot`], which the supervisor refills with the new address after a restart.

pub mod cache;
pub mod clickhouse;
pub mod journal;
pub mod lease;
pub mod logs;
pub mod postgres;
pub mod relational;
pub mod security;
pub mod sqlite;
pub mod timeseries;

use std::sync::Arc;

use actix::{Actor, Addr};
use dashmap::DashMap;
use serde::Serialize;

use crate::metrics::Metrics;

/// Errors of the storage layer, split by what the caller should do.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StorageError {
    /// The database is away, busy or restarting: keep the data and try again later.
    #[error("storage unavailable, retry later: {0}")]
    Unavailable(String),
    /// The data itself was refused (constraint, bad value): retrying will not help.
    #[error("storage rejected the data: {0}")]
    Rejected(String),
    /// The write came from a node that no longer owns the tenant (its lease was taken): never retried, and
    /// the tenant stops on this node.
    #[error("write refused: {0}")]
    Fenced(String),
}

impl StorageError {
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::Unavailable(_))
    }
}

impl From<crate::storage::lease::FenceError> for StorageError {
    fn from(e: crate::storage::lease::FenceError) -> Self {
        match e {
            crate::storage::lease::FenceError::Storage(e) => e,
            overtaken => Self::Fenced(overtaken.to_string()),
        }
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
            // PostgreSQL's class 22, data exception (a NUL in text, a number out of range…): the value can
            // never be stored, so retrying it would hold every write queued behind it forever.
            sqlx::Error::Database(db)
                if db
                    .code()
                    .is_some_and(|c| c.len() == 5 && c.starts_with("22")) =>
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

    /// The application's metrics, for the store actors' own figures (`storage::journal`).
    pub fn metrics(&self) -> Arc<Metrics> {
        self.metrics.clone()
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
pub type StoreSlot<A> = crate::runtime::slot::Slot<A>;

/// The live storage actor behind `slot`, or `Unavailable` while it restarts.
pub fn live<A: Actor>(slot: &StoreSlot<A>) -> Result<Addr<A>, StorageError> {
    slot.get()
        .ok_or_else(|| StorageError::Unavailable("storage actor is restarting".into()))
}

/// Where ticks, bars and fills go: the embedded SQLite actor or the ClickHouse actor, whichever is
/// configured. Both answer the same messages.
#[derive(Clone)]
pub enum TimeSeriesStore {
    Embedded(StoreSlot<timeseries::TimeSeries>),
    ClickHouse(StoreSlot<clickhouse::ClickHouseSeries>),
}

impl TimeSeriesStore {
    pub async fn append_ticks(&self, msg: timeseries::AppendTicks) -> Result<(), StorageError> {
        match self {
            Self::Embedded(slot) => live(slot)?.send(msg).await?,
            Self::ClickHouse(slot) => live(slot)?.send(msg).await?,
        }
    }

    pub async fn append_bars(&self, msg: timeseries::AppendBars) -> Result<(), StorageError> {
        match self {
            Self::Embedded(slot) => live(slot)?.send(msg).await?,
            Self::ClickHouse(slot) => live(slot)?.send(msg).await?,
        }
    }

    pub async fn append_predictions(
        &self,
        msg: timeseries::AppendPredictions,
    ) -> Result<(), StorageError> {
        match self {
            Self::Embedded(slot) => live(slot)?.send(msg).await?,
            Self::ClickHouse(slot) => live(slot)?.send(msg).await?,
        }
    }

    pub async fn recent_bars(
        &self,
        msg: timeseries::RecentBars,
    ) -> Result<Vec<crate::domain::Bar>, StorageError> {
        match self {
            Self::Embedded(slot) => live(slot)?.send(msg).await?,
            Self::ClickHouse(slot) => live(slot)?.send(msg).await?,
        }
    }

    /// Fills go to the time-series store only on ClickHouse (embedded, the relational store has them).
    pub fn keeps_fills(&self) -> bool {
        matches!(self, Self::ClickHouse(_))
    }

    pub async fn append_fills(&self, msg: timeseries::AppendFills) -> Result<(), StorageError> {
        match self {
            Self::Embedded(_) => Ok(()),
            Self::ClickHouse(slot) => live(slot)?.send(msg).await?,
        }
    }

    /// Whether the actor is running (it may still be unable to write; see the health board).
    pub fn is_live(&self) -> bool {
        match self {
            Self::Embedded(slot) => slot.get().is_some(),
            Self::ClickHouse(slot) => slot.get().is_some(),
        }
    }
}

/// Applies the migrations of every configured store: `trellis migrate`.
pub async fn migrate_all(settings: &crate::config::Settings) -> anyhow::Result<()> {
    use anyhow::Context as _;
    let dir = &settings.storage.data_dir;
    let owner = settings.storage.postgres_migrate_url.trim();
    if !owner.is_empty() {
        postgres::migrate(owner)
            .await
            .context("migrating PostgreSQL")?;
        tracing::info!("PostgreSQL migrated");
    } else if !settings.storage.postgres_url.trim().is_empty() {
        anyhow::bail!(
            "storage.postgres_migrate_url: set it to the owner role's URL to migrate PostgreSQL"
        );
    } else {
        sqlite::open(dir, "relational.db", relational::migrator())
            .await
            .context("migrating the embedded relational store")?
            .close()
            .await;
        tracing::info!(dir = %dir.display(), "embedded relational store migrated");
    }
    match settings.storage.clickhouse() {
        Some(cfg) => {
            clickhouse::migrate(&cfg)
                .await
                .context("migrating ClickHouse")?;
            tracing::info!(url = %cfg.url, database = %cfg.database, "ClickHouse migrated");
        }
        None => {
            sqlite::open(dir, "timeseries.db", timeseries::migrator())
                .await
                .context("migrating the embedded time-series store")?
                .close()
                .await;
            tracing::info!(dir = %dir.display(), "embedded time-series store migrated");
        }
    }
    Ok(())
}

/// Where tenants, orders and fills go: the embedded SQLite actor or the PostgreSQL actor.
#[derive(Clone)]
pub enum RelationalStore {
    Embedded(StoreSlot<relational::Relational>),
    Postgres(StoreSlot<postgres::PgRelational>),
}

impl RelationalStore {
    pub async fn save_order(&self, msg: relational::SaveOrder) -> Result<(), StorageError> {
        match self {
            Self::Embedded(slot) => live(slot)?.send(msg).await?,
            Self::Postgres(slot) => live(slot)?.send(msg).await?,
        }
    }

    /// Records a deal; whether it was new.
    pub async fn save_deal(&self, msg: relational::SaveDeal) -> Result<bool, StorageError> {
        match self {
            Self::Embedded(slot) => live(slot)?.send(msg).await?,
            Self::Postgres(slot) => live(slot)?.send(msg).await?,
        }
    }

    pub async fn load_book(
        &self,
        msg: relational::LoadTenantBook,
    ) -> Result<relational::TenantBook, StorageError> {
        match self {
            Self::Embedded(slot) => live(slot)?.send(msg).await?,
            Self::Postgres(slot) => live(slot)?.send(msg).await?,
        }
    }

    pub async fn ensure_tenant(&self, msg: relational::EnsureTenant) -> Result<(), StorageError> {
        match self {
            Self::Embedded(slot) => live(slot)?.send(msg).await?,
            Self::Postgres(slot) => live(slot)?.send(msg).await?,
        }
    }

    pub fn is_live(&self) -> bool {
        match self {
            Self::Embedded(slot) => slot.get().is_some(),
            Self::Postgres(slot) => slot.get().is_some(),
        }
    }

    pub async fn save_kill_switch(
        &self,
        msg: relational::SaveKillSwitch,
    ) -> Result<(), StorageError> {
        match self {
            Self::Embedded(slot) => live(slot)?.send(msg).await?,
            Self::Postgres(slot) => live(slot)?.send(msg).await?,
        }
    }

    pub async fn save_strategy_snapshot(
        &self,
        msg: relational::SaveStrategySnapshot,
    ) -> Result<(), StorageError> {
        match self {
            Self::Embedded(slot) => live(slot)?.send(msg).await?,
            Self::Postgres(slot) => live(slot)?.send(msg).await?,
        }
    }

    pub async fn load_strategy_snapshot(
        &self,
        msg: relational::LoadStrategySnapshot,
    ) -> Result<Option<relational::StrategySnapshot>, StorageError> {
        match self {
            Self::Embedded(slot) => live(slot)?.send(msg).await?,
            Self::Postgres(slot) => live(slot)?.send(msg).await?,
        }
    }

    pub async fn load_kill_switch(
        &self,
        msg: relational::LoadKillSwitch,
    ) -> Result<Option<crate::domain::risk::KillSwitch>, StorageError> {
        match self {
            Self::Embedded(slot) => live(slot)?.send(msg).await?,
            Self::Postgres(slot) => live(slot)?.send(msg).await?,
        }
    }
}
