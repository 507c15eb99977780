//! The hot tier on Redis: a sorted set per tenant and day, `trellis:<ns>:logs:<tenant>:<yyyymmdd>` (score
//! `at_ms`, member the entry's JSON, so the same entry written twice is kept once), and one hash,
//! `trellis:<ns>:logs:days`, whose fields `<tenant>|<day>` list the days held with their raw bytes (the
//! mover finds days there without `SCAN`ning the keyspace). `<ns>` is the deployment's namespace
//! ([`crate::config::Settings::namespace`]): two deployments sharing one Redis never see each other's logs.

use redis::AsyncCommands;

use super::{day_label, unavailable, LogEntry, LogQuery};
use crate::storage::StorageError;

#[derive(Clone)]
pub struct RedisTier {
    conn: redis::aio::ConnectionManager,
    ns: String,
}

impl RedisTier {
    pub async fn connect(url: &str, ns: &str) -> Result<Self, StorageError> {
        let client = redis::Client::open(url).map_err(|e| StorageError::Rejected(e.to_string()))?;
        let conn = tokio::time::timeout(
            std::time::Duration::from_secs(5),
            redis::aio::ConnectionManager::new(client),
        )
        .await
        .map_err(|_| StorageError::Unavailable("redis: connect timed out".into()))?
        .map_err(unavailable)?;
        Ok(Self {
            conn,
            ns: ns.to_owned(),
        })
    }

    pub fn key(&self, tenant: &str, day: i64) -> String {
        format!("trellis:{}:logs:{tenant}:{}", self.ns, day_label(day))
    }

    fn days_key(&self) -> String {
        format!("trellis:{}:logs:days", self.ns)
    }

    pub async fn append(&self, entries: &[LogEntry]) -> Result<(), StorageError> {
        if entries.is_empty() {
            return Ok(());
        }
        let mut pipe = redis::pipe();
        for e in entries {
            let json =
                serde_json::to_string(e).map_err(|e| StorageError::Rejected(e.to_string()))?;
            pipe.zadd(self.key(&e.tenant, e.day()), json, e.at_ms)
                .ignore();
            pipe.hincr(
                self.days_key(),
                format!("{}|{}", e.tenant, e.day()),
                e.raw_len() as i64,
            )
            .ignore();
        }
        pipe.query_async::<()>(&mut self.conn.clone())
            .await
            .map_err(unavailable)
    }

    pub async fn days(&self) -> Result<Vec<(String, i64)>, StorageError> {
        let fields: Vec<String> = self
            .conn
            .clone()
            .hkeys(self.days_key())
            .await
            .map_err(unavailable)?;
        let mut days: Vec<(String, i64)> = fields
            .iter()
            .filter_map(|f| {
                let (t, d) = f.rsplit_once('|')?;
                Some((t.to_owned(), d.parse().ok()?))
            })
            .collect();
        days.sort_by(|a, b| (a.1, &a.0).cmp(&(b.1, &b.0)));
        Ok(days)
    }

    fn decode(members: Vec<String>) -> Vec<LogEntry> {
        members
            .iter()
            .filter_map(|m| serde_json::from_str(m).ok())
            .collect()
    }

    pub async fn read_day(&self, tenant: &str, day: i64) -> Result<Vec<LogEntry>, StorageError> {
        let members: Vec<String> = self
            .conn
            .clone()
            .zrange(self.key(tenant, day), 0, -1)
            .await
            .map_err(unavailable)?;
        let mut entries = Self::decode(members);
        entries.sort_by(|a, b| (a.at_ms, &a.id).cmp(&(b.at_ms, &b.id)));
        Ok(entries)
    }

    /// Removes exactly `entries` from the tenant's day (a line that arrived after they were read stays), and
    /// the day's key and index field once it is empty.
    pub async fn delete(
        &self,
        tenant: &str,
        day: i64,
        entries: &[LogEntry],
    ) -> Result<(), StorageError> {
        let key = self.key(tenant, day);
        let mut conn = self.conn.clone();
        for chunk in entries.chunks(1_000) {
            let members: Vec<String> = chunk
                .iter()
                .filter_map(|e| serde_json::to_string(e).ok())
                .collect();
            let _: i64 = conn.zrem(&key, members).await.map_err(unavailable)?;
        }
        redis::Script::new(
            "if redis.call('ZCARD', KEYS[1]) == 0 then redis.call('DEL', KEYS[1]); \
             redis.call('HDEL', KEYS[2], ARGV[1]) end return 0",
        )
        .key(&key)
        .key(self.days_key())
        .arg(format!("{tenant}|{day}"))
        .invoke_async::<i64>(&mut conn)
        .await
        .map_err(unavailable)?;
        Ok(())
    }

    /// Reads each day of the range in pages of scores, filtering here, until `limit` entries match.
    pub async fn query(&self, q: &LogQuery) -> Result<Vec<LogEntry>, StorageError> {
        const PAGE: isize = 2_000;
        let mut out = Vec::new();
        let mut conn = self.conn.clone();
        let low = q
            .after
            .as_ref()
            .map_or(q.from_ms, |(at, _)| (*at).max(q.from_ms));
        // Only the days the index lists (a range over years holds a day or two here).
        let range = q.days();
        let held: Vec<i64> = self
            .days()
            .await?
            .into_iter()
            .filter(|(t, d)| *t == q.tenant && range.contains(d))
            .map(|(_, d)| d)
            .collect();
        for day in held {
            let key = self.key(&q.tenant, day);
            let mut offset = 0isize;
            loop {
                let members: Vec<String> = redis::cmd("ZRANGEBYSCORE")
                    .arg(&key)
                    .arg(low)
                    .arg(format!("({}", q.to_ms))
                    .arg("LIMIT")
                    .arg(offset)
                    .arg(PAGE)
                    .query_async(&mut conn)
                    .await
                    .map_err(unavailable)?;
                let n = members.len() as isize;
                out.extend(Self::decode(members).into_iter().filter(|e| q.matches(e)));
                if n < PAGE {
                    break;
                }
                offset += n;
                if out.len() >= q.limit {
                    break;
                }
            }
            if out.len() >= q.limit {
                // Members come in score order, but those sharing a score come ordered by their JSON, not
                // their id: read every member with the cut-off score so none that sorts before the last
                // one kept is skipped (the next page starts after that one).
                out = super::merge(out, q.limit);
                if let Some(cut) = out.last().map(|e| e.at_ms) {
                    let same: Vec<String> = conn
                        .zrangebyscore(&key, cut, cut)
                        .await
                        .map_err(unavailable)?;
                    out.extend(Self::decode(same).into_iter().filter(|e| q.matches(e)));
                }
                break;
            }
        }
        Ok(super::merge(out, q.limit))
    }

    /// Per tenant: entries, raw bytes and Redis's own `MEMORY USAGE` of each day's key.
    pub async fn stats(&self) -> Result<super::TierStats, StorageError> {
        let mut conn = self.conn.clone();
        let raw: std::collections::HashMap<String, i64> =
            conn.hgetall(self.days_key()).await.map_err(unavailable)?;
        let mut per: std::collections::BTreeMap<String, (u64, u64, u64)> = Default::default();
        for (field, raw_bytes) in raw {
            let Some((tenant, day)) = field
                .rsplit_once('|')
                .and_then(|(t, d)| Some((t.to_owned(), d.parse::<i64>().ok()?)))
            else {
                continue;
            };
            let key = self.key(&tenant, day);
            let n: u64 = conn.zcard(&key).await.map_err(unavailable)?;
            let bytes: Option<u64> = redis::cmd("MEMORY")
                .arg("USAGE")
                .arg(&key)
                .arg("SAMPLES")
                .arg(0)
                .query_async(&mut conn)
                .await
                .map_err(unavailable)?;
            let s = per.entry(tenant).or_default();
            s.0 += n;
            s.1 += raw_bytes.max(0) as u64;
            s.2 += bytes.unwrap_or(0);
        }
        Ok(per.into_iter().map(|(t, (n, r, b))| (t, n, r, b)).collect())
    }
}
