//! The warm tier on ClickHouse: one table, `log_entries`, partitioned by day (days since 1970-01-01), ordered by
//! `(tenant, at_ms, id)`. Debian's ClickHouse 18.16 has neither TTL nor column codecs, so a day leaves the
//! warm tier by `ALTER TABLE … DROP PARTITION` once every tenant's copy of it in the cold tier is verified —
//! a whole partition at once, never row deletes. On a server that has them (19.x and later) tenant, kind
//! and level are `LowCardinality(String)` and message and data are compressed with `ZSTD`; which schema is in
//! force is read back from the server and reported with the tier's bytes.

use clickhouse::Client;
use serde::{Deserialize, Serialize};

use super::{LogEntry, LogQuery};
use crate::storage::clickhouse::{client, ClickHouseConfig};
use crate::storage::StorageError;

fn unavailable(e: clickhouse::error::Error) -> StorageError {
    StorageError::Unavailable(format!("clickhouse: {e}"))
}

#[derive(Debug, Clone, clickhouse::Row, Serialize, Deserialize)]
struct Row {
    tenant: String,
    day: i32,
    at_ms: i64,
    id: String,
    kind: String,
    level: String,
    message: String,
    data: String,
}

impl From<Row> for LogEntry {
    fn from(r: Row) -> Self {
        Self {
            id: r.id,
            tenant: r.tenant,
            at_ms: r.at_ms,
            kind: r.kind,
            level: r.level,
            message: r.message,
            data: r.data,
        }
    }
}

const COLUMNS: &str = "tenant, day, at_ms, id, kind, level, message, data";

/// The table for a server of `major` version: codecs and LowCardinality where it has them.
fn schema(major: u32) -> String {
    let (low, zstd) = if major >= 19 {
        ("LowCardinality(String)", " CODEC(ZSTD(3))")
    } else {
        ("String", "")
    };
    format!(
        "CREATE TABLE IF NOT EXISTS log_entries (tenant {low}, day Int32, at_ms Int64, id String, kind {low}, \
         level {low}, message String{zstd}, data String{zstd}) ENGINE = ReplacingMergeTree() \
         PARTITION BY day ORDER BY (tenant, at_ms, id)"
    )
}

#[derive(Clone)]
pub struct ClickHouseTier {
    client: Client,
    database: String,
    /// The server's version, as it reports it.
    pub version: String,
    /// Whether the table uses codecs and LowCardinality.
    pub compact: bool,
}

impl ClickHouseTier {
    /// Connects and creates the table (the database is created by the time-series migration).
    pub async fn open(cfg: &ClickHouseConfig) -> Result<Self, StorageError> {
        crate::storage::clickhouse::migrate(cfg).await?;
        let client = client(cfg);
        let version: String = client
            .query("SELECT version()")
            .fetch_one()
            .await
            .map_err(unavailable)?;
        let major = version
            .split('.')
            .next()
            .and_then(|m| m.parse::<u32>().ok())
            .unwrap_or(0);
        client
            .query(&schema(major))
            .execute()
            .await
            .map_err(unavailable)?;
        Ok(Self {
            client,
            database: cfg.database.clone(),
            version,
            compact: major >= 19,
        })
    }

    /// Inserts the entries whose ids the day does not hold yet (a copy repeated after a crash inserts
    /// nothing twice; the ReplacingMergeTree would also collapse a duplicate on merge).
    pub async fn append(&self, entries: &[LogEntry]) -> Result<(), StorageError> {
        let mut by_day: std::collections::BTreeMap<(&str, i64), Vec<&LogEntry>> =
            Default::default();
        for e in entries {
            by_day
                .entry((e.tenant.as_str(), e.day()))
                .or_default()
                .push(e);
        }
        for ((tenant, day), entries) in by_day {
            let held: std::collections::HashSet<String> = self
                .client
                .query("SELECT id FROM log_entries WHERE day = ? AND tenant = ?")
                .bind(day as i32)
                .bind(tenant)
                .fetch_all::<String>()
                .await
                .map_err(unavailable)?
                .into_iter()
                .collect();
            let fresh: Vec<_> = entries
                .into_iter()
                .filter(|e| !held.contains(&e.id))
                .collect();
            if fresh.is_empty() {
                continue;
            }
            let mut insert = self
                .client
                .insert::<Row>("log_entries")
                .await
                .map_err(unavailable)?;
            for e in fresh {
                insert
                    .write(&Row {
                        tenant: e.tenant.clone(),
                        day: e.day() as i32,
                        at_ms: e.at_ms,
                        id: e.id.clone(),
                        kind: e.kind.clone(),
                        level: e.level.clone(),
                        message: e.message.clone(),
                        data: e.data.clone(),
                    })
                    .await
                    .map_err(unavailable)?;
            }
            insert.end().await.map_err(unavailable)?;
        }
        Ok(())
    }

    pub async fn days(&self) -> Result<Vec<(String, i64)>, StorageError> {
        let rows: Vec<(String, i32)> = self
            .client
            .query("SELECT DISTINCT tenant, day FROM log_entries ORDER BY day, tenant")
            .fetch_all()
            .await
            .map_err(unavailable)?;
        Ok(rows.into_iter().map(|(t, d)| (t, i64::from(d))).collect())
    }

    pub async fn read_day(&self, tenant: &str, day: i64) -> Result<Vec<LogEntry>, StorageError> {
        let rows: Vec<Row> = self
            .client
            .query(&format!(
                "SELECT {COLUMNS} FROM log_entries WHERE day = ? AND tenant = ? ORDER BY at_ms, id"
            ))
            .bind(day as i32)
            .bind(tenant)
            .fetch_all()
            .await
            .map_err(unavailable)?;
        let mut entries: Vec<LogEntry> = rows.into_iter().map(LogEntry::from).collect();
        entries.dedup_by(|b, a| a.id == b.id);
        Ok(entries)
    }

    /// Drops a whole day, every tenant's (one partition).
    pub async fn drop_day(&self, day: i64) -> Result<(), StorageError> {
        self.client
            .query(&format!("ALTER TABLE log_entries DROP PARTITION {day}"))
            .execute()
            .await
            .map_err(unavailable)
    }

    pub async fn query(&self, q: &LogQuery) -> Result<Vec<LogEntry>, StorageError> {
        let (after_at, after_id) = q.after.clone().unwrap_or((i64::MIN, String::new()));
        let days = q.days();
        let rows: Vec<Row> = self
            .client
            .query(&format!(
                "SELECT {COLUMNS} FROM log_entries WHERE tenant = ? AND day >= ? AND day <= ? \
                 AND at_ms >= ? AND at_ms < ? AND (at_ms > ? OR (at_ms = ? AND id > ?)) \
                 AND (? = '' OR kind = ?) AND (? = '' OR level = ?) \
                 AND (? = '' OR position(message, ?) > 0 OR position(data, ?) > 0) \
                 ORDER BY at_ms, id LIMIT ?"
            ))
            .bind(&q.tenant)
            .bind(*days.start() as i32)
            .bind(*days.end() as i32)
            .bind(q.from_ms)
            .bind(q.to_ms)
            .bind(after_at)
            .bind(after_at)
            .bind(&after_id)
            .bind(q.kind.as_deref().unwrap_or(""))
            .bind(q.kind.as_deref().unwrap_or(""))
            .bind(q.level.as_deref().unwrap_or(""))
            .bind(q.level.as_deref().unwrap_or(""))
            .bind(q.q.as_deref().unwrap_or(""))
            .bind(q.q.as_deref().unwrap_or(""))
            .bind(q.q.as_deref().unwrap_or(""))
            .bind(q.limit as u64)
            .fetch_all()
            .await
            .map_err(unavailable)?;
        Ok(super::merge(
            rows.into_iter().map(LogEntry::from).collect(),
            q.limit,
        ))
    }

    /// Per tenant: entries, raw bytes, and bytes on disk (`system.parts` of the table, shared out by each
    /// tenant's raw bytes: parts hold every tenant of a day together).
    pub async fn stats(&self) -> Result<super::TierStats, StorageError> {
        let rows: Vec<(String, u64, u64)> = self
            .client
            .query(
                "SELECT tenant, count(), sum(length(id) + length(tenant) + length(kind) + length(level) \
                 + length(message) + length(data) + 80) FROM log_entries GROUP BY tenant ORDER BY tenant",
            )
            .fetch_all()
            .await
            .map_err(unavailable)?;
        let on_disk = self.bytes_on_disk().await?;
        let all_raw: u64 = rows.iter().map(|r| r.2).sum();
        Ok(rows
            .into_iter()
            .map(|(t, n, raw)| {
                let share = if all_raw == 0 {
                    0.0
                } else {
                    raw as f64 / all_raw as f64
                };
                (t, n, raw, (on_disk as f64 * share).round() as u64)
            })
            .collect())
    }

    /// The table's active parts' bytes on disk, as the server reports them.
    pub async fn bytes_on_disk(&self) -> Result<u64, StorageError> {
        self.client
            .query(
                "SELECT toUInt64(sum(bytes_on_disk)) FROM system.parts \
                 WHERE database = ? AND table = 'log_entries' AND active",
            )
            .bind(&self.database)
            .fetch_one::<u64>()
            .await
            .map_err(unavailable)
    }
}
