//! The three tiers behind one handle: which store each tier is in this deployment, the query that merges
//! them, and what they hold and cost.

use std::sync::Arc;

use serde::Serialize;

use super::clickhouse::ClickHouseTier;
use super::cold::ColdTier;
use super::redis::RedisTier;
use super::sql::SqlTier;
use super::{merge, LogEntry, LogQuery, Tier};
use crate::config::{LogTierSettings, Settings};
use crate::storage::StorageError;

/// The hot tier: Redis, or SQLite in the embedded profile.
#[derive(Clone)]
pub enum HotTier {
    Redis(RedisTier),
    Sql(SqlTier),
}

/// The warm tier: ClickHouse, or SQLite in the embedded profile.
#[derive(Clone)]
pub enum WarmTier {
    ClickHouse(Box<ClickHouseTier>),
    Sql(SqlTier),
}

macro_rules! both {
    ($self:ident, $t:ident => $e:expr) => {
        match $self {
            Self::Redis($t) => $e,
            Self::Sql($t) => $e,
        }
    };
}

macro_rules! warm {
    ($self:ident, $t:ident => $e:expr) => {
        match $self {
            Self::ClickHouse($t) => $e,
            Self::Sql($t) => $e,
        }
    };
}

impl HotTier {
    pub fn store(&self) -> &'static str {
        match self {
            Self::Redis(_) => "redis",
            Self::Sql(_) => "sqlite",
        }
    }
    pub async fn append(&self, entries: &[LogEntry]) -> Result<(), StorageError> {
        both!(self, t => t.append(entries).await)
    }
    pub async fn days(&self) -> Result<Vec<(String, i64)>, StorageError> {
        both!(self, t => t.days().await)
    }
    pub async fn read_day(&self, tenant: &str, day: i64) -> Result<Vec<LogEntry>, StorageError> {
        both!(self, t => t.read_day(tenant, day).await)
    }
    /// Removes exactly `entries` (those copied), not whatever else the day received meanwhile.
    pub async fn delete(
        &self,
        tenant: &str,
        day: i64,
        entries: &[LogEntry],
    ) -> Result<(), StorageError> {
        match self {
            Self::Redis(t) => t.delete(tenant, day, entries).await,
            Self::Sql(t) => t.delete(entries).await,
        }
    }
    pub async fn query(&self, q: &LogQuery) -> Result<Vec<LogEntry>, StorageError> {
        both!(self, t => t.query(q).await)
    }
    /// Per tenant: (entries, raw bytes, bytes in the store).
    pub async fn stats(&self) -> Result<super::TierStats, StorageError> {
        match self {
            Self::Redis(t) => t.stats().await,
            Self::Sql(t) => sql_stats(t).await,
        }
    }
}

impl WarmTier {
    pub fn store(&self) -> &'static str {
        match self {
            Self::ClickHouse(_) => "clickhouse",
            Self::Sql(_) => "sqlite",
        }
    }
    pub async fn append(&self, entries: &[LogEntry]) -> Result<(), StorageError> {
        warm!(self, t => t.append(entries).await)
    }
    pub async fn days(&self) -> Result<Vec<(String, i64)>, StorageError> {
        warm!(self, t => t.days().await)
    }
    pub async fn read_day(&self, tenant: &str, day: i64) -> Result<Vec<LogEntry>, StorageError> {
        warm!(self, t => t.read_day(tenant, day).await)
    }
    /// Removes a whole day, every tenant's (a ClickHouse partition).
    pub async fn drop_day(&self, day: i64) -> Result<(), StorageError> {
        warm!(self, t => t.drop_day(day).await)
    }
    pub async fn query(&self, q: &LogQuery) -> Result<Vec<LogEntry>, StorageError> {
        warm!(self, t => t.query(q).await)
    }
    pub async fn stats(&self) -> Result<super::TierStats, StorageError> {
        match self {
            Self::ClickHouse(t) => t.stats().await,
            Self::Sql(t) => sql_stats(t).await,
        }
    }
}

async fn sql_stats(t: &SqlTier) -> Result<super::TierStats, StorageError> {
    let bytes = t.bytes().await?;
    Ok(t.stats()
        .await?
        .into_iter()
        .map(|(tenant, n, raw)| {
            let b = bytes.get(&tenant).copied().unwrap_or(0);
            (tenant, n, raw, b)
        })
        .collect())
}

/// The tiers of this deployment.
#[derive(Clone)]
pub struct LogStore {
    pub hot: HotTier,
    pub warm: WarmTier,
    pub cold: Arc<ColdTier>,
    /// Where the batch records live: the embedded logs database (PostgreSQL's `log_batches` in a cluster).
    pub sqlite: sqlx::SqlitePool,
    pub settings: LogTierSettings,
}

impl LogStore {
    /// Opens the tiers this configuration names: Redis and ClickHouse when configured, SQLite otherwise; the
    /// cold tier under `<data_dir>/logs` or at `log_tiers.cold_url`.
    pub async fn open(settings: &Settings) -> Result<Self, StorageError> {
        let sqlite = super::sql::open(&settings.storage.data_dir).await?;
        let hot = match settings.storage.redis_url.trim() {
            "" => HotTier::Sql(SqlTier::hot(sqlite.clone())),
            url => HotTier::Redis(RedisTier::connect(url, &settings.namespace()).await?),
        };
        let warm = match settings.storage.clickhouse_url.trim() {
            "" => WarmTier::Sql(SqlTier::warm(sqlite.clone())),
            _ => WarmTier::ClickHouse(Box::new(
                ClickHouseTier::open(&crate::storage::clickhouse::ClickHouseConfig {
                    url: settings.storage.clickhouse_url.clone(),
                    database: settings.storage.clickhouse_database.clone(),
                    buffer_rows: settings.storage.clickhouse_buffer_rows,
                    spill_dir: settings.storage.data_dir.join("spill"),
                })
                .await?,
            )),
        };
        let cold = open_cold(&settings.log_tiers, &settings.storage.data_dir)?;
        Ok(Self {
            hot,
            warm,
            cold: Arc::new(cold),
            sqlite,
            settings: settings.log_tiers.clone(),
        })
    }

    /// One page of a tenant's entries across the tiers, in `(at_ms, id)` order: each tier answers its first
    /// `limit` after the cursor and the merge keeps the first `limit` of them (an entry in two tiers while it
    /// moves is returned once).
    pub async fn query(&self, q: &LogQuery) -> Result<Vec<LogEntry>, StorageError> {
        let (hot, warm, cold) =
            tokio::join!(self.hot.query(q), self.warm.query(q), self.cold.query(q));
        let mut all = hot?;
        all.extend(warm?);
        all.extend(cold?);
        Ok(merge(all, q.limit))
    }

    /// What each tier holds and costs, per tenant, measured from the stores.
    pub async fn cost(&self) -> Result<CostReport, StorageError> {
        let (hot, warm, cold) =
            tokio::join!(self.hot.stats(), self.warm.stats(), self.cold.stats());
        let prices = [
            (Tier::Hot, self.settings.price_hot),
            (Tier::Warm, self.settings.price_warm),
            (Tier::Cold, self.settings.price_cold),
        ];
        Ok(CostReport::from_stats(
            [(Tier::Hot, hot?), (Tier::Warm, warm?), (Tier::Cold, cold?)],
            prices,
        ))
    }
}

/// The cold tier: `<data_dir>/logs`, or the S3-compatible store `log_tiers.cold_url` names
/// (`s3://bucket[/prefix]`, with `s3_endpoint` for a store other than AWS).
fn open_cold(s: &LogTierSettings, data_dir: &std::path::Path) -> Result<ColdTier, StorageError> {
    if s.cold_url.is_empty() {
        return ColdTier::local(&data_dir.join("logs"));
    }
    let rest = s.cold_url.trim_start_matches("s3://");
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    if bucket.is_empty() {
        return Err(StorageError::Rejected(
            "log_tiers.cold_url: s3://bucket[/prefix] names no bucket".into(),
        ));
    }
    let mut builder = object_store::aws::AmazonS3Builder::new()
        .with_bucket_name(bucket)
        .with_region(&s.s3_region);
    if !s.s3_endpoint.is_empty() {
        builder = builder
            .with_endpoint(&s.s3_endpoint)
            .with_allow_http(s.s3_endpoint.starts_with("http://"))
            .with_virtual_hosted_style_request(false);
    }
    if !s.s3_access_key_id.is_empty() {
        builder = builder
            .with_access_key_id(&s.s3_access_key_id)
            .with_secret_access_key(&s.s3_secret_access_key);
    }
    let store = builder
        .build()
        .map_err(|e| StorageError::Rejected(format!("log_tiers S3 store: {e}")))?;
    Ok(ColdTier::with_store(
        Arc::new(store),
        prefix.trim_matches('/'),
    ))
}

const GB: f64 = 1_073_741_824.0;

/// What one tier holds.
#[derive(Debug, Clone, Default, Serialize, schemars::JsonSchema)]
pub struct TierUsage {
    pub entries: u64,
    /// The entries' own size (their JSON form) before the tier stores them.
    pub raw_bytes: u64,
    /// What the store reports it uses (Redis `MEMORY USAGE`, ClickHouse `system.parts`, object sizes,
    /// SQLite pages).
    pub bytes: u64,
    /// `bytes / raw_bytes`.
    pub ratio: f64,
    /// `bytes` × the tier's price per GB-month.
    pub usd_per_month: f64,
}

/// A tenant's (or the platform's) usage per tier.
#[derive(Debug, Clone, Default, Serialize, schemars::JsonSchema)]
pub struct TenantUsage {
    pub tenant: String,
    pub hot: TierUsage,
    pub warm: TierUsage,
    pub cold: TierUsage,
    pub usd_per_month: f64,
}

/// `GET /api/v1/logs/cost`.
#[derive(Debug, Clone, Default, Serialize, schemars::JsonSchema)]
pub struct CostReport {
    /// $/GB-month used: hot, warm, cold.
    pub prices: [f64; 3],
    pub hot: TierUsage,
    pub warm: TierUsage,
    pub cold: TierUsage,
    pub usd_per_month: f64,
    /// Every entry kept hot instead: all raw bytes at the hot tier's measured bytes per raw byte (1.0 while
    /// the hot tier is empty), at the hot price.
    pub all_hot_bytes: u64,
    pub all_hot_usd_per_month: f64,
    /// `1 − usd_per_month / all_hot_usd_per_month`, in percent.
    pub reduction_percent: f64,
    pub tenants: Vec<TenantUsage>,
}

impl CostReport {
    /// Sets the `trellis_log_tier_*` gauges from this report (after each mover round and each cost request).
    pub fn record(&self, metrics: &crate::metrics::Metrics) {
        for (tier, usage) in [
            ("hot", &self.hot),
            ("warm", &self.warm),
            ("cold", &self.cold),
        ] {
            metrics.log_tier(tier, usage.bytes, Some(usage.entries), usage.usd_per_month);
        }
        metrics.log_tier(
            "all_hot",
            self.all_hot_bytes,
            None,
            self.all_hot_usd_per_month,
        );
    }
}

impl TierUsage {
    fn add(&mut self, entries: u64, raw: u64, bytes: u64) {
        self.entries += entries;
        self.raw_bytes += raw;
        self.bytes += bytes;
    }

    fn price(&mut self, usd_per_gb_month: f64) {
        self.ratio = if self.raw_bytes == 0 {
            0.0
        } else {
            self.bytes as f64 / self.raw_bytes as f64
        };
        self.usd_per_month = self.bytes as f64 / GB * usd_per_gb_month;
    }
}

impl CostReport {
    pub fn from_stats(stats: [(Tier, super::TierStats); 3], prices: [(Tier, f64); 3]) -> Self {
        let mut report = Self {
            prices: [prices[0].1, prices[1].1, prices[2].1],
            ..Default::default()
        };
        let mut tenants: std::collections::BTreeMap<String, TenantUsage> = Default::default();
        for (tier, rows) in stats {
            for (tenant, n, raw, bytes) in rows {
                let t = tenants
                    .entry(tenant.clone())
                    .or_insert_with(|| TenantUsage {
                        tenant,
                        ..Default::default()
                    });
                match tier {
                    Tier::Hot => (t.hot.add(n, raw, bytes), report.hot.add(n, raw, bytes)),
                    Tier::Warm => (t.warm.add(n, raw, bytes), report.warm.add(n, raw, bytes)),
                    Tier::Cold => (t.cold.add(n, raw, bytes), report.cold.add(n, raw, bytes)),
                };
            }
        }
        let [hot, warm, cold] = report.prices;
        for t in tenants.values_mut() {
            t.hot.price(hot);
            t.warm.price(warm);
            t.cold.price(cold);
            t.usd_per_month = t.hot.usd_per_month + t.warm.usd_per_month + t.cold.usd_per_month;
        }
        report.hot.price(hot);
        report.warm.price(warm);
        report.cold.price(cold);
        report.usd_per_month =
            report.hot.usd_per_month + report.warm.usd_per_month + report.cold.usd_per_month;
        let per_raw = if report.hot.raw_bytes == 0 {
            1.0
        } else {
            report.hot.ratio
        };
        let raw_all = report.hot.raw_bytes + report.warm.raw_bytes + report.cold.raw_bytes;
        report.all_hot_bytes =
            report.hot.bytes + ((raw_all - report.hot.raw_bytes) as f64 * per_raw).round() as u64;
        report.all_hot_usd_per_month = report.all_hot_bytes as f64 / GB * hot;
        report.reduction_percent = if report.all_hot_usd_per_month > 0.0 {
            (1.0 - report.usd_per_month / report.all_hot_usd_per_month) * 100.0
        } else {
            0.0
        };
        report.tenants = tenants.into_values().collect();
        report
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cost_is_measured_bytes_times_the_configured_prices() {
        let gb = 1_073_741_824u64;
        let report = CostReport::from_stats(
            [
                (Tier::Hot, vec![("a".into(), 10, gb, 2 * gb)]),
                (
                    Tier::Warm,
                    vec![("a".into(), 100, 10 * gb, gb), ("b".into(), 1, gb, gb)],
                ),
                (Tier::Cold, vec![("b".into(), 1000, 100 * gb, 5 * gb)]),
            ],
            [(Tier::Hot, 0.9), (Tier::Warm, 0.425), (Tier::Cold, 0.18)],
        );
        let close = |a: f64, b: f64| (a - b).abs() < 1e-9;
        assert!(close(report.hot.usd_per_month, 1.8));
        assert!(close(report.warm.usd_per_month, 0.85));
        assert!(close(report.cold.usd_per_month, 0.9));
        assert!(close(report.usd_per_month, 3.55));
        // All hot: 112 GB raw at the hot tier's 2 bytes per raw byte.
        assert_eq!(report.all_hot_bytes, 2 * gb + 222 * gb);
        assert!(close(report.all_hot_usd_per_month, 224.0 * 0.9));
        assert!(close(
            report.reduction_percent,
            (1.0 - 3.55 / (224.0 * 0.9)) * 100.0
        ));
        assert_eq!(report.tenants.len(), 2);
        assert!(close(report.tenants[1].usd_per_month, 0.425 + 0.9));
    }
}
