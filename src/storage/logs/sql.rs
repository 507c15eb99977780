//! The embedded profile's hot and warm tiers: SQLite tables `log_hot` and `log_warm` in
//! `<data_dir>/logs.db` (a file of its own, so log writes never wait behind trading writes), and the
//! mover's batch records (`log_batches`) when there is no PostgreSQL.

use std::path::Path;

use sqlx::migrate::Migrator;
use sqlx::SqlitePool;

use super::{LogEntry, LogQuery, TenantBytes};
use crate::storage::StorageError;

static MIGRATOR: Migrator = sqlx::migrate!("./migrations/sqlite/logs");

/// Opens (creating and migrating) `<dir>/logs.db`.
pub async fn open(dir: &Path) -> Result<SqlitePool, StorageError> {
    crate::storage::sqlite::open(dir, "logs.db", &MIGRATOR).await
}

/// One tier in one table.
#[derive(Clone)]
pub struct SqlTier {
    pool: SqlitePool,
    table: &'static str,
}

impl SqlTier {
    pub fn hot(pool: SqlitePool) -> Self {
        Self {
            pool,
            table: "log_hot",
        }
    }

    pub fn warm(pool: SqlitePool) -> Self {
        Self {
            pool,
            table: "log_warm",
        }
    }

    /// Inserts entries not already there (by id), in one transaction.
    pub async fn append(&self, entries: &[LogEntry]) -> Result<(), StorageError> {
        let mut tx = self.pool.begin().await?;
        let sql = format!(
            "INSERT OR IGNORE INTO {} (id, tenant, day, at_ms, kind, level, message, data) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            self.table
        );
        for e in entries {
            sqlx::query(&sql)
                .bind(&e.id)
                .bind(&e.tenant)
                .bind(e.day())
                .bind(e.at_ms)
                .bind(&e.kind)
                .bind(&e.level)
                .bind(&e.message)
                .bind(&e.data)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Every (tenant, day) the tier holds.
    pub async fn days(&self) -> Result<Vec<(String, i64)>, StorageError> {
        Ok(sqlx::query_as(&format!(
            "SELECT DISTINCT tenant, day FROM {} ORDER BY day, tenant",
            self.table
        ))
        .fetch_all(&self.pool)
        .await?)
    }

    pub async fn read_day(&self, tenant: &str, day: i64) -> Result<Vec<LogEntry>, StorageError> {
        let rows: Vec<LogEntry> = sqlx::query_as(&format!(
            "SELECT id, tenant, at_ms, kind, level, message, data FROM {} \
             WHERE tenant = ? AND day = ? ORDER BY at_ms, id",
            self.table
        ))
        .bind(tenant)
        .bind(day)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows)
    }

    /// Removes exactly `entries` (by id).
    pub async fn delete(&self, entries: &[LogEntry]) -> Result<(), StorageError> {
        let mut tx = self.pool.begin().await?;
        let sql = format!("DELETE FROM {} WHERE id = ?", self.table);
        for e in entries {
            sqlx::query(&sql).bind(&e.id).execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Deletes a whole day, every tenant's.
    pub async fn drop_day(&self, day: i64) -> Result<(), StorageError> {
        sqlx::query(&format!("DELETE FROM {} WHERE day = ?", self.table))
            .bind(day)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn query(&self, q: &LogQuery) -> Result<Vec<LogEntry>, StorageError> {
        let (after_at, after_id) = q.after.clone().unwrap_or((i64::MIN, String::new()));
        let rows: Vec<LogEntry> = sqlx::query_as(&format!(
            "SELECT id, tenant, at_ms, kind, level, message, data FROM {} \
             WHERE tenant = ? AND at_ms >= ? AND at_ms < ? AND (at_ms > ? OR (at_ms = ? AND id > ?)) \
               AND (? IS NULL OR kind = ?) AND (? IS NULL OR level = ?) \
               AND (? IS NULL OR instr(message, ?) > 0 OR instr(data, ?) > 0) \
             ORDER BY at_ms, id LIMIT ?",
            self.table
        ))
        .bind(&q.tenant)
        .bind(q.from_ms)
        .bind(q.to_ms)
        .bind(after_at)
        .bind(after_at)
        .bind(&after_id)
        .bind(&q.kind)
        .bind(&q.kind)
        .bind(&q.level)
        .bind(&q.level)
        .bind(&q.q)
        .bind(&q.q)
        .bind(&q.q)
        .bind(q.limit as i64)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows)
    }

    /// Per tenant: entries, raw bytes, and bytes on disk (the file's pages shared out by raw bytes: SQLite
    /// keeps both tiers in one file and reports no size per row).
    pub async fn stats(&self) -> Result<Vec<(String, u64, u64)>, StorageError> {
        let rows: Vec<(String, i64, i64)> = sqlx::query_as(&format!(
            "SELECT tenant, COUNT(*), SUM(length(id) + length(tenant) + length(kind) + length(level) \
             + length(message) + length(data) + 80) FROM {} GROUP BY tenant",
            self.table
        ))
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|(t, n, raw)| (t, n.max(0) as u64, raw.max(0) as u64))
            .collect())
    }

    /// Bytes on disk per tenant: the database's pages in use, shared out by each tenant's share of the raw
    /// bytes of both tables.
    pub async fn bytes(&self) -> Result<TenantBytes, StorageError> {
        let (pages, free, size): (i64, i64, i64) = sqlx::query_as(
            "SELECT (SELECT page_count FROM pragma_page_count()), \
                    (SELECT freelist_count FROM pragma_freelist_count()), \
                    (SELECT page_size FROM pragma_page_size())",
        )
        .fetch_one(&self.pool)
        .await?;
        let used = ((pages - free).max(0) * size) as u64;
        let mine = self.stats().await?;
        let other = Self {
            pool: self.pool.clone(),
            table: if self.table == "log_hot" {
                "log_warm"
            } else {
                "log_hot"
            },
        };
        let all_raw: u64 = mine.iter().map(|s| s.2).sum::<u64>()
            + other.stats().await?.iter().map(|s| s.2).sum::<u64>();
        Ok(mine
            .into_iter()
            .map(|(t, _, raw)| {
                let share = if all_raw == 0 {
                    0.0
                } else {
                    raw as f64 / all_raw as f64
                };
                (t, (used as f64 * share).round() as u64)
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(tenant: &str, id: &str, at_ms: i64, kind: &str) -> LogEntry {
        LogEntry {
            id: id.into(),
            tenant: tenant.into(),
            at_ms,
            kind: kind.into(),
            level: "info".into(),
            message: format!("{kind} {id}"),
            data: format!("{{\"id\":\"{id}\"}}"),
        }
    }

    #[tokio::test]
    async fn a_sqlite_tier_keeps_each_entry_once_and_pages_in_order() {
        let dir = tempfile::tempdir().expect("dir");
        let pool = open(dir.path()).await.expect("open");
        let hot = SqlTier::hot(pool.clone());
        let day = 20_000 * super::super::DAY_MS;
        let batch: Vec<_> = (0..10)
            .map(|i| {
                entry(
                    "a",
                    &format!("n-{i}"),
                    day + i,
                    if i % 2 == 0 { "order" } else { "fill" },
                )
            })
            .collect();
        hot.append(&batch).await.expect("append");
        hot.append(&batch).await.expect("append again");
        hot.append(&[entry("b", "n-99", day, "order")])
            .await
            .expect("b");
        assert_eq!(hot.read_day("a", 20_000).await.expect("read").len(), 10);
        assert_eq!(
            hot.days().await.expect("days"),
            [("a".to_owned(), 20_000), ("b".to_owned(), 20_000)]
        );

        let mut q = LogQuery {
            tenant: "a".into(),
            from_ms: day,
            to_ms: day + super::super::DAY_MS,
            kind: Some("order".into()),
            limit: 3,
            ..Default::default()
        };
        let first = hot.query(&q).await.expect("page 1");
        assert_eq!(
            first.iter().map(|e| e.at_ms - day).collect::<Vec<_>>(),
            [0, 2, 4]
        );
        let last = first.last().expect("last");
        q.after = Some((last.at_ms, last.id.clone()));
        let second = hot.query(&q).await.expect("page 2");
        assert_eq!(
            second.iter().map(|e| e.at_ms - day).collect::<Vec<_>>(),
            [6, 8]
        );

        let bytes = hot.bytes().await.expect("bytes");
        assert!(bytes["a"] > bytes["b"] && bytes["b"] > 0, "{bytes:?}");
        let day_a = hot.read_day("a", 20_000).await.expect("read");
        hot.delete(&day_a).await.expect("delete");
        assert!(hot.read_day("a", 20_000).await.expect("read").is_empty());
        assert_eq!(hot.read_day("b", 20_000).await.expect("b").len(), 1);
    }
}
