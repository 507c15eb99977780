//! The log mover: moves each tenant's days hot → warm and warm → cold, and deletes cold files past
//! retention (`storage::logs` explains the tiers).
//!
//! A batch is one tenant's day crossing the hot/warm boundary (`hw:<tenant>:<day>`) or one whole day leaving
//! the warm tier (`wc:<day>`, every tenant's file of that day). Each runs copy → verify → delete, and its
//! state (`copying`, `verified`, `done`, with the entries' count and hash) is stored before each step
//! (`log_batches`, PostgreSQL when configured, the embedded logs database otherwise). Every step is safe to
//! repeat — copies insert by entry id (the warm tier skips ids it holds, the cold file merges by id), the
//! hotter tier deletes exactly the entries it copied, and only after the colder tier was read back and found
//! to hold them all with the same content — so a crash between any two steps, followed by a later round (on
//! this node or another), leaves every entry exactly once.
//!
//! With several nodes one of them moves: the one holding the `@log_tiers` lease (the same fenced leases
//! as tenants', `storage::lease`), renewed every round; if it dies another takes the lease once it expires.

use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tokio::sync::Notify;

use crate::storage::lease::{Lease, LeaseStore};
use crate::storage::logs::store::LogStore;
use crate::storage::logs::writer::LogWriter;
use crate::storage::logs::{day_of, Digest32, LogEntry, DAY_MS};
use crate::storage::StorageError;

/// The lease row the mover holds in a cluster: `@` is never in a tenant id, so no tenant can collide with it
/// and the tenants' placement leaves it out (`LeaseStore::owners`).
pub const LEASE: &str = "@log_tiers";

/// Why a round stopped early.
#[derive(Debug, thiserror::Error)]
pub enum MoveError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// The copy read back from the colder tier differs from the source: nothing is deleted.
    #[error("batch {batch}: verification failed ({reason}); the source is kept")]
    Mismatch { batch: String, reason: String },
    /// A crash injected after `step` (tests): the round stops as a killed process would.
    #[error("crash injected after {0}")]
    Crashed(&'static str),
}

/// What one round did.
#[derive(Debug, Default, Clone, Serialize, schemars::JsonSchema)]
pub struct RoundReport {
    /// Whether this node moved (false: another node holds the mover's lease).
    pub moved: bool,
    /// Entries moved hot → warm, warm → cold, and cold files deleted past retention.
    pub hot_to_warm: u64,
    pub warm_to_cold: u64,
    pub expired_files: u64,
    pub batches: Vec<String>,
}

/// Where batch states are kept.
#[derive(Clone)]
pub enum Batches {
    Sqlite(sqlx::SqlitePool),
    Postgres(sqlx::PgPool),
}

impl Batches {
    async fn put(&self, id: &str, state: &str, d: &Digest32) -> Result<(), StorageError> {
        let now = crate::domain::now_ms();
        match self {
            Self::Sqlite(pool) => {
                sqlx::query(
                    "INSERT INTO log_batches (id, state, entries, hash, updated_ms) VALUES (?, ?, ?, ?, ?) \
                     ON CONFLICT (id) DO UPDATE SET state = excluded.state, entries = excluded.entries, \
                     hash = excluded.hash, updated_ms = excluded.updated_ms",
                )
                .bind(id)
                .bind(state)
                .bind(d.count as i64)
                .bind(d.hex())
                .bind(now)
                .execute(pool)
                .await?;
            }
            Self::Postgres(pool) => {
                let mut tx = crate::storage::postgres::platform_tx(pool).await?;
                sqlx::query(
                    "INSERT INTO log_batches (id, state, entries, hash, updated_ms) VALUES ($1, $2, $3, $4, $5) \
                     ON CONFLICT (id) DO UPDATE SET state = EXCLUDED.state, entries = EXCLUDED.entries, \
                     hash = EXCLUDED.hash, updated_ms = EXCLUDED.updated_ms",
                )
                .bind(id)
                .bind(state)
                .bind(d.count as i64)
                .bind(d.hex())
                .bind(now)
                .execute(&mut *tx)
                .await?;
                tx.commit().await?;
            }
        }
        Ok(())
    }

    /// A batch's recorded state.
    pub async fn get(&self, id: &str) -> Result<Option<(String, i64)>, StorageError> {
        Ok(match self {
            Self::Sqlite(pool) => {
                sqlx::query_as("SELECT state, entries FROM log_batches WHERE id = ?")
                    .bind(id)
                    .fetch_optional(pool)
                    .await?
            }
            Self::Postgres(pool) => {
                let mut tx = crate::storage::postgres::platform_tx(pool).await?;
                let row = sqlx::query_as("SELECT state, entries FROM log_batches WHERE id = $1")
                    .bind(id)
                    .fetch_optional(&mut *tx)
                    .await?;
                tx.commit().await?;
                row
            }
        })
    }
}

/// Whether `copy` holds every entry of `source` with the same content.
fn verify(batch: &str, source: &[LogEntry], copy: &[LogEntry]) -> Result<(), MoveError> {
    let ids: std::collections::HashSet<&str> = source.iter().map(|e| e.id.as_str()).collect();
    let held: Vec<LogEntry> = copy
        .iter()
        .filter(|e| ids.contains(e.id.as_str()))
        .cloned()
        .collect();
    let (want, got) = (Digest32::of(source), Digest32::of(&held));
    if want == got {
        Ok(())
    } else {
        Err(MoveError::Mismatch {
            batch: batch.to_owned(),
            reason: format!(
                "{} entries expected, {} found with the same ids; hashes {} / {}",
                want.count,
                got.count,
                want.hex(),
                got.hex()
            ),
        })
    }
}

/// One mover: its stores, where its batches are recorded, and (in a cluster) its lease.
pub struct Mover {
    pub store: LogStore,
    pub batches: Batches,
    lease: Option<(LeaseStore, String, Option<Lease>)>,
    /// Tests: stop the round after this step, as a crash would.
    pub crash_after: Option<&'static str>,
}

impl Mover {
    pub fn new(store: LogStore, batches: Batches) -> Self {
        Self {
            store,
            batches,
            lease: None,
            crash_after: None,
        }
    }

    /// Moves only while this node holds the [`LEASE`].
    pub fn with_lease(mut self, leases: LeaseStore, node: &str) -> Self {
        self.lease = Some((leases, node.to_owned(), None));
        self
    }

    fn step(&self, name: &'static str) -> Result<(), MoveError> {
        crate::runtime::task::fault_point(name);
        crate::runtime::task::crash_point(name);
        if self.crash_after == Some(name) {
            return Err(MoveError::Crashed(name));
        }
        Ok(())
    }

    /// Takes or renews the mover's lease; `false` while another node holds it.
    async fn hold_lease(&mut self) -> Result<bool, StorageError> {
        // Three rounds' worth: a dead mover is replaced within three intervals (at least 3 s).
        let ttl =
            Duration::from_millis(self.store.settings.interval_ms.saturating_mul(3).max(3_000));
        let Some((leases, node, held)) = &mut self.lease else {
            return Ok(true);
        };
        if let Some(lease) = held.as_ref() {
            if leases.renew(lease, ttl).await? {
                return Ok(true);
            }
            tracing::warn!(node = %node, "log mover lease lost");
            *held = None;
        }
        *held = leases.acquire(LEASE, node, ttl).await?;
        Ok(held.is_some())
    }

    /// One round at `now_ms`: every hot day that ended `hot_ms` ago to warm, every warm day that ended
    /// `warm_days` ago to cold, then cold files past retention deleted.
    pub async fn round(&mut self, now_ms: i64) -> Result<RoundReport, MoveError> {
        let mut report = RoundReport::default();
        if !self.hold_lease().await? {
            return Ok(report);
        }
        report.moved = true;
        let s = self.store.settings.clone();
        let hot_before = now_ms - s.hot_ms as i64;
        for (tenant, day) in self.store.hot.days().await? {
            if (day + 1) * DAY_MS > hot_before {
                continue;
            }
            let batch = format!("hw:{tenant}:{day}");
            let entries = self.store.hot.read_day(&tenant, day).await?;
            let digest = Digest32::of(&entries);
            self.batches.put(&batch, "copying", &digest).await?;
            self.store.warm.append(&entries).await?;
            self.step("log_tiers.hot_warm.copied")?;
            let copy = self.store.warm.read_day(&tenant, day).await?;
            verify(&batch, &entries, &copy)?;
            self.batches.put(&batch, "verified", &digest).await?;
            self.step("log_tiers.hot_warm.verified")?;
            self.store.hot.delete(&tenant, day, &entries).await?;
            self.batches.put(&batch, "done", &digest).await?;
            report.hot_to_warm += digest.count;
            report.batches.push(batch);
        }
        let warm_before = now_ms - s.warm_days as i64 * DAY_MS;
        let mut days: std::collections::BTreeMap<i64, Vec<String>> = Default::default();
        for (tenant, day) in self.store.warm.days().await? {
            if (day + 1) * DAY_MS <= warm_before {
                days.entry(day).or_default().push(tenant);
            }
        }
        for (day, tenants) in days {
            let batch = format!("wc:{day}");
            let mut total = Digest32::default();
            for tenant in &tenants {
                let entries = self.store.warm.read_day(tenant, day).await?;
                total.absorb(&Digest32::of(&entries));
                self.batches.put(&batch, "copying", &total).await?;
                let info = self.store.cold.write_day(tenant, day, &entries).await?;
                self.step("log_tiers.warm_cold.copied")?;
                let copy = self.store.cold.read_day(tenant, day).await?;
                verify(&batch, &entries, &copy)?;
                self.store.cold.record(tenant, info).await?;
            }
            self.batches.put(&batch, "verified", &total).await?;
            self.step("log_tiers.warm_cold.verified")?;
            self.store.warm.drop_day(day).await?;
            self.batches.put(&batch, "done", &total).await?;
            report.warm_to_cold += total.count;
            report.batches.push(batch);
        }
        let keep_from = day_of(now_ms) - s.cold_retention_days as i64;
        report.expired_files = self.store.cold.retain(keep_from).await?.len() as u64;
        Ok(report)
    }
}

/// The running mover: a supervised task that runs a round every `interval_ms`, or at once when asked.
#[derive(Clone)]
pub struct LogTiersHandle {
    wake: Arc<Notify>,
    last: Arc<std::sync::Mutex<Option<Result<RoundReport, String>>>>,
    /// Rounds begun and ended.
    started: Arc<std::sync::atomic::AtomicU64>,
    rounds: Arc<tokio::sync::watch::Sender<u64>>,
}

impl LogTiersHandle {
    /// Starts the mover once the writer's tiers are open. `leases` in a cluster (the node's id with it).
    pub fn start(
        writer: LogWriter,
        postgres: Option<sqlx::PgPool>,
        leases: Option<(LeaseStore, String)>,
        events: Option<crate::runtime::events::EventLog>,
        metrics: Arc<crate::metrics::Metrics>,
    ) -> Self {
        let handle = Self {
            wake: Arc::default(),
            last: Arc::default(),
            started: Arc::default(),
            rounds: Arc::new(tokio::sync::watch::channel(0).0),
        };
        let state = (
            writer,
            postgres,
            leases,
            handle.clone(),
            None::<Mover>,
            metrics,
        );
        crate::runtime::task::spawn_supervised(
            "log_tiers.mover",
            events,
            state,
            |state| async move {
                let mut s = state.lock().await;
                let (writer, postgres, leases, handle, mover, metrics) = &mut *s;
                // A round asked for (run_now) before the tiers were open is still owed.
                let mut owed = false;
                loop {
                    // A round every interval (the first one an interval after start), or at once when asked.
                    let interval = mover.as_ref().map_or(Duration::from_secs(1), |m| {
                        Duration::from_millis(m.store.settings.interval_ms)
                    });
                    owed |= tokio::time::timeout(interval, handle.wake.notified())
                        .await
                        .is_ok();
                    if mover.is_none() {
                        if let Some(store) = writer.store() {
                            let batches = match postgres {
                                Some(pg) => Batches::Postgres(pg.clone()),
                                None => Batches::Sqlite(store.sqlite.clone()),
                            };
                            let mut m = Mover::new(store.clone(), batches);
                            if let Some((l, node)) = leases.clone() {
                                m = m.with_lease(l, &node);
                            }
                            *mover = Some(m);
                            if !owed {
                                // The first round an interval from now, like every other.
                                continue;
                            }
                        }
                    }
                    if let Some(m) = mover.as_mut() {
                        owed = false;
                        handle
                            .started
                            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        let result = m.round(crate::domain::now_ms()).await;
                        match &result {
                            Err(e) => {
                                tracing::warn!(error = %e, "log mover round stopped; the next round resumes it")
                            }
                            Ok(r) if r.moved => {
                                if let Ok(cost) = m.store.cost().await {
                                    cost.record(metrics);
                                }
                            }
                            Ok(_) => {}
                        }
                        if let Ok(mut last) = handle.last.lock() {
                            *last = Some(result.map_err(|e| e.to_string()));
                        }
                        handle.rounds.send_modify(|n| *n += 1);
                    }
                }
            },
        );
        handle
    }

    /// Runs a round now and answers its report (or why it stopped).
    pub async fn run_now(&self) -> Result<RoundReport, String> {
        // The next round to begin (a round under way began before this call) is the one to wait for.
        let target = self.started.load(std::sync::atomic::Ordering::SeqCst) + 1;
        let mut rounds = self.rounds.subscribe();
        self.wake.notify_one();
        while *rounds.borrow_and_update() < target {
            if rounds.changed().await.is_err() {
                return Err("the log mover stopped".into());
            }
        }
        self.last
            .lock()
            .map_err(|_| "poisoned".to_string())?
            .clone()
            .unwrap_or_else(|| Err("no round yet".into()))
    }
}
