//! The time-series store: ticks and bars. Embedded SQLite (`timeseries.db`) here; ClickHouse
//! (`storage::clickhouse`) answers the same messages when `storage.clickhouse_url` is set.

use std::path::PathBuf;

use actix::prelude::*;
use sqlx::migrate::Migrator;

use super::sqlite::{boot, halt, Checkpoint, SqliteActor, SqliteCore};
use super::HealthBoard;
use crate::runtime::supervisor::{ExitNotifier, Shutdown};

static MIGRATOR: Migrator = sqlx::migrate!("./migrations/sqlite/timeseries");

/// The migrations of this store.
pub fn migrator() -> &'static Migrator {
    &MIGRATOR
}

/// Name of this store on the health board and in `/ready`.
pub const NAME: &str = "timeseries";

/// The time-series storage actor.
pub struct TimeSeries {
    core: SqliteCore,
}

impl TimeSeries {
    pub fn new(data_dir: PathBuf, board: HealthBoard, notifier: ExitNotifier) -> Self {
        Self {
            core: SqliteCore {
                name: NAME,
                dir: data_dir,
                file: "timeseries.db",
                migrator: &MIGRATOR,
                checkpoint: Checkpoint::OnCommit,
                pool: None,
                board,
                notifier,
            },
        }
    }
}

impl SqliteActor for TimeSeries {
    fn core(&mut self) -> &mut SqliteCore {
        &mut self.core
    }
}

impl Actor for TimeSeries {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        boot(self, ctx);
    }

    fn stopped(&mut self, _ctx: &mut Self::Context) {
        halt(self);
    }
}

impl Handler<Shutdown> for TimeSeries {
    type Result = ();

    fn handle(&mut self, _msg: Shutdown, ctx: &mut Self::Context) {
        ctx.stop();
    }
}

// ---------------------------------------------------------------------------------------------------------
// Ticks and bars

use sqlx::{QueryBuilder, Sqlite};

use super::StorageError;
use crate::domain::{Bar, Tick};

/// Rows per INSERT statement (SQLite allows up to 32766 bound parameters).
const CHUNK: usize = 1000;

/// Appends a batch of ticks in one transaction.
#[derive(Message)]
#[rtype(result = "Result<(), StorageError>")]
pub struct AppendTicks {
    pub tenant: String,
    pub ticks: Vec<Tick>,
}

/// Appends fills for analytics (ClickHouse only: in the embedded profile fills live in the relational store).
#[derive(Message)]
#[rtype(result = "Result<(), StorageError>")]
pub struct AppendFills {
    pub tenant: String,
    pub deals: Vec<crate::domain::positions::Deal>,
}

/// Stores model predictions with their version; a prediction already stored (same tenant, deployment,
/// version and bar) is replaced.
#[derive(Message)]
#[rtype(result = "Result<(), StorageError>")]
pub struct AppendPredictions {
    pub tenant: String,
    pub predictions: Vec<crate::domain::Prediction>,
}

/// Stores closed bars; a bar already stored (same tenant, symbol, timeframe, open time) is replaced.
#[derive(Message)]
#[rtype(result = "Result<(), StorageError>")]
pub struct AppendBars {
    pub tenant: String,
    pub bars: Vec<Bar>,
}

/// The last `limit` stored bars of a tenant's symbol and timeframe opened before `before_ms`, oldest first:
/// what market data warms its consumers with after a start.
#[derive(Message, Debug, Clone)]
#[rtype(result = "Result<Vec<Bar>, StorageError>")]
pub struct RecentBars {
    pub tenant: String,
    pub symbol: crate::domain::Symbol,
    pub timeframe: crate::domain::Timeframe,
    pub before_ms: i64,
    pub limit: usize,
}

/// A stored price back to a decimal.
fn stored_decimal(s: &str) -> Result<rust_decimal::Decimal, StorageError> {
    s.parse::<rust_decimal::Decimal>()
        .map_err(|_| StorageError::Rejected(format!("stored price `{s}` is not a decimal")))
}

impl Handler<RecentBars> for TimeSeries {
    type Result = ResponseFuture<Result<Vec<Bar>, StorageError>>;

    fn handle(&mut self, q: RecentBars, _ctx: &mut Self::Context) -> Self::Result {
        let pool = self.core.pool();
        Box::pin(async move {
            let pool = pool?;
            let rows: Vec<(i64, String, String, String, String, i64)> = sqlx::query_as(
                "SELECT open_time_ms, open, high, low, close, tick_volume FROM bars \
                 WHERE tenant_id = ? AND symbol = ? AND timeframe = ? AND open_time_ms < ? \
                 ORDER BY open_time_ms DESC LIMIT ?",
            )
            .bind(&q.tenant)
            .bind(q.symbol.as_str())
            .bind(q.timeframe.as_str())
            .bind(q.before_ms)
            .bind(i64::try_from(q.limit).unwrap_or(i64::MAX))
            .fetch_all(&pool)
            .await?;
            rows.into_iter()
                .rev()
                .map(|(open_time_ms, open, high, low, close, tick_volume)| {
                    Ok(Bar {
                        symbol: q.symbol.clone(),
                        timeframe: q.timeframe,
                        open_time_ms,
                        open: stored_decimal(&open)?,
                        high: stored_decimal(&high)?,
                        low: stored_decimal(&low)?,
                        close: stored_decimal(&close)?,
                        tick_volume: tick_volume.max(0) as u64,
                    })
                })
                .collect()
        })
    }
}

impl Handler<AppendTicks> for TimeSeries {
    type Result = ResponseFuture<Result<(), StorageError>>;

    fn handle(&mut self, msg: AppendTicks, _ctx: &mut Self::Context) -> Self::Result {
        let pool = self.core.pool();
        Box::pin(async move {
            let pool = pool?;
            let mut tx = pool.begin().await?;
            for chunk in msg.ticks.chunks(CHUNK) {
                let mut q: QueryBuilder<'_, Sqlite> =
                    QueryBuilder::new("INSERT INTO ticks (tenant_id, symbol, time_msc, bid, ask) ");
                q.push_values(chunk, |mut b, t| {
                    b.push_bind(&msg.tenant)
                        .push_bind(t.symbol.as_str())
                        .push_bind(t.time_msc)
                        .push_bind(t.bid.to_string())
                        .push_bind(t.ask.to_string());
                });
                q.build().execute(&mut *tx).await?;
            }
            tx.commit().await?;
            Ok(())
        })
    }
}

impl Handler<AppendBars> for TimeSeries {
    type Result = ResponseFuture<Result<(), StorageError>>;

    fn handle(&mut self, msg: AppendBars, _ctx: &mut Self::Context) -> Self::Result {
        let pool = self.core.pool();
        Box::pin(async move {
            let pool = pool?;
            let mut tx = pool.begin().await?;
            for chunk in msg.bars.chunks(CHUNK / 2) {
                let mut q: QueryBuilder<'_, Sqlite> = QueryBuilder::new(
                    "INSERT OR REPLACE INTO bars (tenant_id, symbol, timeframe, open_time_ms, open, high, low, close, tick_volume) ",
                );
                q.push_values(chunk, |mut b, bar| {
                    b.push_bind(&msg.tenant)
                        .push_bind(bar.symbol.as_str())
                        .push_bind(bar.timeframe.as_str())
                        .push_bind(bar.open_time_ms)
                        .push_bind(bar.open.to_string())
                        .push_bind(bar.high.to_string())
                        .push_bind(bar.low.to_string())
                        .push_bind(bar.close.to_string())
                        .push_bind(bar.tick_volume as i64);
                });
                q.build().execute(&mut *tx).await?;
            }
            tx.commit().await?;
            Ok(())
        })
    }
}

impl Handler<AppendPredictions> for TimeSeries {
    type Result = ResponseFuture<Result<(), StorageError>>;

    fn handle(&mut self, msg: AppendPredictions, _ctx: &mut Self::Context) -> Self::Result {
        let pool = self.core.pool();
        Box::pin(async move {
            let pool = pool?;
            let mut tx = pool.begin().await?;
            for chunk in msg.predictions.chunks(CHUNK / 2) {
                let mut q: QueryBuilder<'_, Sqlite> = QueryBuilder::new(
                    "INSERT OR REPLACE INTO predictions (tenant_id, deployment, version, symbol, bar_open_ms, value, latency_us, shadow) ",
                );
                q.push_values(chunk, |mut b, p| {
                    b.push_bind(&msg.tenant)
                        .push_bind(&p.deployment)
                        .push_bind(&p.version)
                        .push_bind(p.symbol.as_str())
                        .push_bind(p.bar_open_ms)
                        .push_bind(p.value)
                        .push_bind(p.latency_us.min(i64::MAX as u64) as i64)
                        .push_bind(p.shadow);
                });
                q.build().execute(&mut *tx).await?;
            }
            tx.commit().await?;
            Ok(())
        })
    }
}

/// Stored predictions of a tenant, oldest bar first — read-only from the embedded file, like
/// [`load_ticks`] (training and offline analysis).
pub async fn load_predictions(
    data_dir: &std::path::Path,
    tenant: &str,
) -> Result<Vec<crate::domain::Prediction>, StorageError> {
    let path = data_dir.join("timeseries.db");
    if !path.exists() {
        return Err(StorageError::Rejected(format!(
            "no embedded store at {}",
            path.display()
        )));
    }
    let url = format!("sqlite://{}?mode=ro", path.display());
    let pool = sqlx::SqlitePool::connect(&url).await?;
    let rows: Vec<(String, String, String, i64, f64, i64, bool)> = sqlx::query_as(
        "SELECT deployment, version, symbol, bar_open_ms, value, latency_us, shadow FROM predictions
         WHERE tenant_id = ? ORDER BY bar_open_ms, deployment, version",
    )
    .bind(tenant)
    .fetch_all(&pool)
    .await?;
    pool.close().await;
    Ok(rows
        .into_iter()
        .map(
            |(deployment, version, symbol, bar_open_ms, value, latency_us, shadow)| {
                crate::domain::Prediction {
                    deployment,
                    version,
                    symbol: crate::domain::Symbol::new(symbol),
                    bar_open_ms,
                    value,
                    latency_us: latency_us.max(0) as u64,
                    shadow,
                    scores: Vec::new(),
                }
            },
        )
        .collect())
}

/// Opens the embedded time-series file read-only: the offline tools (backtests, training) read it beside a
/// running trellis without going through its actor.
async fn open_read_only(data_dir: &std::path::Path) -> Result<sqlx::SqlitePool, StorageError> {
    let path = data_dir.join("timeseries.db");
    if !path.exists() {
        return Err(StorageError::Rejected(format!(
            "no embedded store at {}",
            path.display()
        )));
    }
    let options = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(&path)
        .read_only(true);
    Ok(sqlx::SqlitePool::connect_with(options).await?)
}

/// Reads stored ticks of a tenant's symbol in `[from_ms, to_ms]`, oldest first — for `trellis backtest
/// --data-dir` and optimisations.
pub async fn load_ticks(
    data_dir: &std::path::Path,
    tenant: &str,
    symbol: &str,
    from_ms: i64,
    to_ms: i64,
) -> Result<Vec<Tick>, StorageError> {
    let mut out = Vec::new();
    stream_ticks(data_dir, tenant, symbol, from_ms, to_ms, 65_536, |chunk| {
        out.extend(chunk);
        true
    })
    .await?;
    Ok(out)
}

/// Streams stored ticks oldest first in chunks of `chunk` ticks to `sink`, which returns false to stop:
/// a backtest of years of ticks holds one chunk at a time.
pub async fn stream_ticks(
    data_dir: &std::path::Path,
    tenant: &str,
    symbol: &str,
    from_ms: i64,
    to_ms: i64,
    chunk: usize,
    mut sink: impl FnMut(Vec<Tick>) -> bool,
) -> Result<(), StorageError> {
    use futures_util::TryStreamExt as _;
    let pool = open_read_only(data_dir).await?;
    let result = async {
        let mut rows = sqlx::query_as::<_, (String, i64, String, String)>(
            "SELECT symbol, time_msc, bid, ask FROM ticks WHERE tenant_id = ? AND symbol = ? AND time_msc BETWEEN ? AND ? \
             ORDER BY time_msc, rowid",
        )
        .bind(tenant)
        .bind(symbol)
        .bind(from_ms)
        .bind(to_ms)
        .fetch(&pool);
        let dec = |s: &str| {
            s.parse::<rust_decimal::Decimal>().map_err(|_| {
                StorageError::Rejected(format!("stored price `{s}` is not a decimal"))
            })
        };
        let mut batch = Vec::with_capacity(chunk.max(1));
        while let Some((symbol, time_msc, bid, ask)) = rows.try_next().await? {
            batch.push(Tick {
                symbol: crate::domain::Symbol::new(symbol),
                time_msc,
                bid: dec(&bid)?,
                ask: dec(&ask)?,
            });
            if batch.len() >= chunk.max(1) && !sink(std::mem::take(&mut batch)) {
                return Ok(());
            }
        }
        if !batch.is_empty() {
            sink(batch);
        }
        Ok(())
    }
    .await;
    pool.close().await;
    result
}

/// Reads stored bars of a tenant's symbol and timeframe with open times in `[from_ms, to_ms]`, oldest
/// first, from the embedded file (read-only, like [`load_ticks`]) — for training.
pub async fn load_bars(
    data_dir: &std::path::Path,
    tenant: &str,
    symbol: &str,
    timeframe: crate::domain::Timeframe,
    from_ms: i64,
    to_ms: i64,
) -> Result<Vec<crate::domain::Bar>, StorageError> {
    let pool = open_read_only(data_dir).await?;
    let rows: Vec<(i64, String, String, String, String, i64)> = sqlx::query_as(
        "SELECT open_time_ms, open, high, low, close, tick_volume FROM bars \
         WHERE tenant_id = ? AND symbol = ? AND timeframe = ? AND open_time_ms BETWEEN ? AND ? ORDER BY open_time_ms",
    )
    .bind(tenant)
    .bind(symbol)
    .bind(timeframe.as_str())
    .bind(from_ms)
    .bind(to_ms)
    .fetch_all(&pool)
    .await?;
    pool.close().await;
    rows.into_iter()
        .map(|(open_time_ms, open, high, low, close, tick_volume)| {
            Ok(crate::domain::Bar {
                symbol: crate::domain::Symbol::new(symbol.to_owned()),
                timeframe,
                open_time_ms,
                open: stored_decimal(&open)?,
                high: stored_decimal(&high)?,
                low: stored_decimal(&low)?,
                close: stored_decimal(&close)?,
                tick_volume: tick_volume.max(0) as u64,
            })
        })
        .collect()
}

/// Reads stored bars from whichever time-series store `settings` configure (ClickHouse, else the
/// embedded file).
pub async fn load_stored_bars(
    settings: &crate::config::StorageSettings,
    tenant: &str,
    symbol: &str,
    timeframe: crate::domain::Timeframe,
    from_ms: i64,
    to_ms: i64,
) -> Result<Vec<crate::domain::Bar>, StorageError> {
    match settings.clickhouse() {
        Some(cfg) => {
            crate::storage::clickhouse::load_bars(&cfg, tenant, symbol, timeframe, from_ms, to_ms)
                .await
        }
        None => {
            load_bars(
                &settings.data_dir,
                tenant,
                symbol,
                timeframe,
                from_ms,
                to_ms,
            )
            .await
        }
    }
}
