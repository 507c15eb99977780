//! Logs in three tiers, queried as one.
//!
//! Every entry kept — a tenant's trade log (orders, fills, positions, risk, reconciliations, strategy and
//! model events), audit entries, supervision events and trellis's own structured logs — is first written to
//! the **hot** tier (Redis sorted sets, one per tenant and day; SQLite in the embedded profile), moves to the
//! **warm** tier (ClickHouse partitioned by day; SQLite) a day after its day ended, and to the **cold** tier
//! (one zstd Parquet file per tenant and day plus a manifest, through `object_store`) thirty days later,
//! where it stays seven years. The mover ([`crate::storage::logs::mover`]) copies a day, verifies it (count
//! and an order-independent hash of the entries) and only then deletes it from the hotter tier; every entry
//! carries an id unique to the node that wrote it, so a copy repeated after a crash is recognised and a query
//! that sees an entry in two tiers (between copy and delete) returns it once.
//!
//! Why days: a day is what each tier can count, hash and delete as a unit (a Redis key, a ClickHouse
//! partition, a Parquet file), so movement and retention never pick entries one by one.

pub mod clickhouse;
pub mod cold;
pub mod mover;
pub mod redis;
pub mod sql;
pub mod store;
pub mod writer;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::storage::StorageError;

/// The tenant id under which platform-wide entries (platform audit, application logs) are kept.
pub const PLATFORM: &str = "platform";
pub const DAY_MS: i64 = 86_400_000;

/// One log entry, identical in every tier (hashes are computed over its JSON form).
#[derive(
    Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema, sqlx::FromRow,
)]
pub struct LogEntry {
    /// `<node>-<seq>`: unique per writing process, the same in every tier.
    pub id: String,
    pub tenant: String,
    pub at_ms: i64,
    /// `order`, `fill`, `position`, `risk`, `reconciliation`, `audit`, `supervision`, `app`, …
    pub kind: String,
    /// `error`, `warn`, `info`, `debug`.
    pub level: String,
    pub message: String,
    /// The event's fields, as JSON text.
    pub data: String,
}

impl LogEntry {
    /// The day (days since 1970-01-01, UTC) the entry belongs to.
    pub fn day(&self) -> i64 {
        day_of(self.at_ms)
    }

    /// Bytes of the entry's JSON form: what it weighs before any tier stores it.
    pub fn raw_len(&self) -> usize {
        self.id.len()
            + self.tenant.len()
            + self.kind.len()
            + self.level.len()
            + self.message.len()
            + self.data.len()
            + 80
    }

    fn digest(&self) -> [u8; 32] {
        let json = serde_json::to_vec(self).unwrap_or_default();
        Sha256::digest(&json).into()
    }
}

pub fn day_of(at_ms: i64) -> i64 {
    at_ms.div_euclid(DAY_MS)
}

/// `yyyymmdd` of a day number, for keys, paths and people.
pub fn day_label(day: i64) -> String {
    let (y, m, d) = crate::domain::calendar::civil_from_days(day);
    format!("{y:04}{m:02}{d:02}")
}

/// What a batch of entries is, independent of order: how many, and the XOR of each entry's SHA-256.
/// Equal digests on both sides of a move mean the same entries (duplicates by id removed first).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Digest32 {
    pub count: u64,
    #[serde(with = "hex32")]
    pub hash: [u8; 32],
}

impl Digest32 {
    pub fn of(entries: &[LogEntry]) -> Self {
        let mut seen = std::collections::HashSet::with_capacity(entries.len());
        let mut d = Self::default();
        for e in entries {
            if !seen.insert(e.id.as_str()) {
                continue;
            }
            d.absorb(&Self {
                count: 1,
                hash: e.digest(),
            });
        }
        d
    }

    /// Adds the entries `other` describes (disjoint from these): the digest of both sets together.
    pub fn absorb(&mut self, other: &Self) {
        self.count += other.count;
        for (h, b) in self.hash.iter_mut().zip(other.hash) {
            *h ^= b;
        }
    }

    pub fn hex(&self) -> String {
        self.hash.iter().map(|b| format!("{b:02x}")).collect()
    }
}

mod hex32 {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(h: &[u8; 32], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&h.iter().map(|b| format!("{b:02x}")).collect::<String>())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; 32], D::Error> {
        let s = String::deserialize(d)?;
        let mut out = [0u8; 32];
        if s.len() != 64 {
            return Err(serde::de::Error::custom("hash must be 64 hex digits"));
        }
        for (i, o) in out.iter_mut().enumerate() {
            *o = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).map_err(serde::de::Error::custom)?;
        }
        Ok(out)
    }
}

/// A query over one tenant's entries: `from_ms <= at_ms < to_ms`, exact `kind`/`level` when given, `q` a
/// case-sensitive substring of the message or the data; entries after `after` in `(at_ms, id)` order.
#[derive(Debug, Clone, Default)]
pub struct LogQuery {
    pub tenant: String,
    pub from_ms: i64,
    pub to_ms: i64,
    pub kind: Option<String>,
    pub level: Option<String>,
    pub q: Option<String>,
    pub after: Option<(i64, String)>,
    pub limit: usize,
}

impl LogQuery {
    /// Whether `e` is one this query asks for (tiers that cannot filter in the store filter with this).
    pub fn matches(&self, e: &LogEntry) -> bool {
        e.tenant == self.tenant
            && e.at_ms >= self.from_ms
            && e.at_ms < self.to_ms
            && self.kind.as_deref().is_none_or(|k| e.kind == k)
            && self.level.as_deref().is_none_or(|l| e.level == l)
            && self
                .q
                .as_deref()
                .is_none_or(|q| e.message.contains(q) || e.data.contains(q))
            && self
                .after
                .as_ref()
                .is_none_or(|(at, id)| (e.at_ms, e.id.as_str()) > (*at, id.as_str()))
    }

    /// The days the query spans.
    pub fn days(&self) -> std::ops::RangeInclusive<i64> {
        let from = self
            .after
            .as_ref()
            .map_or(self.from_ms, |(at, _)| (*at).max(self.from_ms));
        day_of(from)..=day_of(self.to_ms.saturating_sub(1).max(from))
    }
}

/// Sorts by `(at_ms, id)`, removes entries seen twice (a day between copy and delete is in two tiers) and
/// keeps the first `limit`.
pub fn merge(mut entries: Vec<LogEntry>, limit: usize) -> Vec<LogEntry> {
    entries.sort_by(|a, b| (a.at_ms, &a.id).cmp(&(b.at_ms, &b.id)));
    entries.dedup_by(|b, a| a.id == b.id);
    entries.truncate(limit);
    entries
}

/// Per tenant: (tenant, entries, raw bytes, bytes in the store).
pub type TierStats = Vec<(String, u64, u64, u64)>;

/// Bytes a tier holds, per tenant, as the store itself reports them.
pub type TenantBytes = std::collections::BTreeMap<String, u64>;

/// Which tier.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Tier {
    Hot,
    Warm,
    Cold,
}

impl Tier {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Hot => "hot",
            Self::Warm => "warm",
            Self::Cold => "cold",
        }
    }
}

pub(crate) fn unavailable(e: impl std::fmt::Display) -> StorageError {
    StorageError::Unavailable(e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(id: &str, at_ms: i64) -> LogEntry {
        LogEntry {
            id: id.into(),
            tenant: "t".into(),
            at_ms,
            kind: "order".into(),
            level: "info".into(),
            message: "m".into(),
            data: "{}".into(),
        }
    }

    #[test]
    fn a_digest_ignores_order_and_duplicates_but_not_content() {
        let a = vec![entry("n-1", 1), entry("n-2", 2)];
        let b = vec![entry("n-2", 2), entry("n-1", 1), entry("n-1", 1)];
        assert_eq!(Digest32::of(&a), Digest32::of(&b));
        assert_eq!(Digest32::of(&a).count, 2);
        let mut c = a.clone();
        c[0].message = "changed".into();
        assert_ne!(Digest32::of(&a), Digest32::of(&c));
        let json = serde_json::to_string(&Digest32::of(&a)).expect("json");
        assert_eq!(
            serde_json::from_str::<Digest32>(&json).expect("back"),
            Digest32::of(&a)
        );
    }

    #[test]
    fn merging_orders_by_time_then_id_and_keeps_one_copy() {
        let merged = merge(
            vec![entry("b", 2), entry("a", 2), entry("c", 1), entry("a", 2)],
            10,
        );
        let ids: Vec<_> = merged.iter().map(|e| e.id.as_str()).collect();
        assert_eq!(ids, ["c", "a", "b"]);
        assert_eq!(merge(vec![entry("b", 2), entry("a", 1)], 1)[0].id, "a");
    }

    #[test]
    fn a_query_spans_the_days_of_its_range_after_its_cursor() {
        let mut q = LogQuery {
            tenant: "t".into(),
            from_ms: 0,
            to_ms: 3 * DAY_MS,
            limit: 10,
            ..Default::default()
        };
        assert_eq!(q.days(), 0..=2);
        q.after = Some((DAY_MS + 5, "x".into()));
        assert_eq!(q.days(), 1..=2);
        assert!(!q.matches(&entry("a", DAY_MS + 5)));
        assert!(q.matches(&entry("y", DAY_MS + 5)));
        assert_eq!(day_label(19_724), "20240102");
    }
}
