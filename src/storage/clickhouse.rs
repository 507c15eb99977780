//! The time-series store on ClickHouse (`storage.clickhouse_url`): ticks, bars and fills, batched.
//!
//! Trading must not stop because analytics storage is away. Every append is accepted at once into a
//! bounded in-memory buffer and flushed in batches (every 200 ms, or at 20 000 rows). When ClickHouse does
//! not answer, the actor reports itself unhealthy (so `/ready` says so), keeps the rows, retries with a
//! back-off doubling to 5 s, and once the buffer passes `storage.clickhouse_buffer_rows` spills the oldest
//! rows to JSON-lines files under `<data_dir>/spill/` instead of dropping them; spilled rows are sent first
//! when ClickHouse is back. Each tick gets a unique id when accepted and the tables are ReplacingMergeTrees
//! keyed on it (fills on their deal ticket), so a batch retried after a lost answer is stored once.

use std::collections::VecDeque;
use std::io::{BufRead, Write as _};
use std::path::PathBuf;
use std::time::Duration;

use actix::prelude::*;
use clickhouse::{Client, Row};
use rust_decimal::prelude::ToPrimitive;
use serde::{Deserialize, Serialize};

use super::timeseries::{
    AppendBars, AppendFills, AppendPredictions, AppendTicks, RecentBars, NAME,
};
use super::{Health, HealthBoard, StorageError};
use crate::runtime::supervisor::{ExitNotifier, Shutdown};

const FLUSH_EVERY: Duration = Duration::from_millis(200);
const BATCH_ROWS: usize = 20_000;
const MAX_BACKOFF: Duration = Duration::from_secs(5);
const SCHEMA: &str = include_str!("../../migrations/clickhouse/0001_timeseries.sql");

#[derive(Debug, Clone, Row, Serialize, Deserialize)]
pub struct TickRow {
    pub tenant_id: String,
    pub symbol: String,
    pub time_msc: i64,
    pub bid: f64,
    pub ask: f64,
    pub id: u64,
}

#[derive(Debug, Clone, Row, Serialize, Deserialize)]
pub struct BarRow {
    pub tenant_id: String,
    pub symbol: String,
    pub timeframe: String,
    pub open_time_ms: i64,
    pub open: f64,
    pub high: f64,
    pub low: f64,
    pub close: f64,
    pub tick_volume: u64,
}

#[derive(Debug, Clone, Row, Serialize, Deserialize)]
pub struct FillRow {
    pub tenant_id: String,
    pub account: u64,
    pub deal_ticket: u64,
    pub client_order_id: String,
    pub strategy_id: String,
    pub symbol: String,
    pub side: String,
    pub volume: String,
    pub price: String,
    pub commission: String,
    pub time_msc: i64,
}

/// One buffered row of any table (the unit of spilling).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "table", rename_all = "snake_case")]
enum Pending {
    Tick(TickRow),
    Bar(BarRow),
    Fill(FillRow),
    Prediction(PredictionRow),
}

/// A row of `predictions`: `model` is the deployment; `id` is taken from the version's hash, so a replayed
/// bar's prediction by the same version replaces its row.
#[derive(Debug, Clone, Row, Serialize, Deserialize)]
pub struct PredictionRow {
    pub tenant_id: String,
    pub model: String,
    pub version: String,
    pub symbol: String,
    pub time_msc: i64,
    pub value: f64,
    pub id: u64,
}

/// Connection settings.
#[derive(Debug, Clone)]
pub struct ClickHouseConfig {
    pub url: String,
    pub database: String,
    pub buffer_rows: usize,
    pub spill_dir: PathBuf,
}

/// A client for the trellis database (schema validation off: Debian's 18.16 server lacks what it needs).
pub fn client(cfg: &ClickHouseConfig) -> Client {
    Client::default()
        .with_url(&cfg.url)
        .with_database(&cfg.database)
        .with_validation(false)
}

/// Creates the database and applies `migrations/clickhouse` (idempotent).
pub async fn migrate(cfg: &ClickHouseConfig) -> Result<(), StorageError> {
    let root = Client::default().with_url(&cfg.url).with_validation(false);
    root.query(&format!("CREATE DATABASE IF NOT EXISTS {}", cfg.database))
        .execute()
        .await
        .map_err(unavailable)?;
    let db = client(cfg);
    for statement in SCHEMA.split(';') {
        let sql: String = statement
            .lines()
            .filter(|l| !l.trim_start().starts_with("--"))
            .collect::<Vec<_>>()
            .join("\n");
        if !sql.trim().is_empty() {
            db.query(sql.trim()).execute().await.map_err(unavailable)?;
        }
    }
    Ok(())
}

fn unavailable(e: clickhouse::error::Error) -> StorageError {
    StorageError::Unavailable(format!("clickhouse: {e}"))
}

/// The ClickHouse time-series actor.
pub struct ClickHouseSeries {
    cfg: ClickHouseConfig,
    client: Client,
    pending: VecDeque<Pending>,
    /// Spill files not yet sent, oldest first.
    spilled: VecDeque<PathBuf>,
    flushing: bool,
    backoff: Duration,
    retry_at: Option<tokio::time::Instant>,
    /// Unique ids: a random prefix per incarnation, then a counter.
    id_prefix: u64,
    next_id: u64,
    migrated: bool,
    board: HealthBoard,
    notifier: ExitNotifier,
}

impl ClickHouseSeries {
    pub fn new(cfg: ClickHouseConfig, board: HealthBoard, notifier: ExitNotifier) -> Self {
        let mut spilled: Vec<PathBuf> = std::fs::read_dir(&cfg.spill_dir)
            .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
            .unwrap_or_default();
        spilled.sort();
        Self {
            client: client(&cfg),
            cfg,
            pending: VecDeque::new(),
            spilled: spilled.into(),
            flushing: false,
            backoff: FLUSH_EVERY,
            retry_at: None,
            id_prefix: u64::from(rand::random::<u32>()) << 32,
            next_id: 0,
            migrated: false,
            board,
            notifier,
        }
    }

    fn push(&mut self, row: Pending) {
        self.pending.push_back(row);
        if self.pending.len() > self.cfg.buffer_rows {
            self.spill(self.pending.len() - self.cfg.buffer_rows / 2);
        }
    }

    /// Moves the oldest `n` buffered rows to a spill file. A row that cannot be written stays in memory.
    fn spill(&mut self, n: usize) {
        if let Err(e) = std::fs::create_dir_all(&self.cfg.spill_dir) {
            tracing::error!(error = %e, "cannot create the spill directory; keeping rows in memory");
            return;
        }
        let path = self.cfg.spill_dir.join(format!(
            "{:020}-{:08x}.jsonl",
            crate::domain::now_ms(),
            rand::random::<u32>()
        ));
        let rows: Vec<Pending> = self.pending.drain(..n.min(self.pending.len())).collect();
        let written = std::fs::File::create(&path).and_then(|f| {
            let mut w = std::io::BufWriter::new(f);
            for r in &rows {
                serde_json::to_writer(&mut w, r).map_err(std::io::Error::other)?;
                w.write_all(b"\n")?;
            }
            w.flush()?;
            w.get_ref().sync_all()
        });
        match written {
            Ok(()) => {
                tracing::warn!(rows = rows.len(), file = %path.display(), "clickhouse away: buffered rows spilled to disk");
                self.spilled.push_back(path);
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot spill; keeping rows in memory");
                for r in rows.into_iter().rev() {
                    self.pending.push_front(r);
                }
            }
        }
    }

    /// The next batch: a spill file first, else up to `BATCH_ROWS` buffered rows.
    fn next_batch(&mut self) -> Option<(Vec<Pending>, Option<PathBuf>)> {
        if let Some(path) = self.spilled.front().cloned() {
            let rows = std::fs::File::open(&path)
                .map(|f| {
                    std::io::BufReader::new(f)
                        .lines()
                        .map_while(Result::ok)
                        .filter_map(|l| serde_json::from_str::<Pending>(&l).ok())
                        .collect::<Vec<_>>()
                })
                .unwrap_or_default();
            return Some((rows, Some(path)));
        }
        if self.pending.is_empty() {
            return None;
        }
        let n = self.pending.len().min(BATCH_ROWS);
        Some((self.pending.drain(..n).collect(), None))
    }

    fn flush(&mut self, ctx: &mut Context<Self>) {
        if self.flushing
            || self
                .retry_at
                .is_some_and(|t| tokio::time::Instant::now() < t)
        {
            return;
        }
        let Some((rows, file)) = self.next_batch() else {
            return;
        };
        self.flushing = true;
        let client = self.client.clone();
        let cfg = self.cfg.clone();
        let migrate_first = !self.migrated;
        let batch = rows.clone();
        ctx.spawn(
            async move {
                if migrate_first {
                    migrate(&cfg).await?;
                }
                insert_all(&client, &batch).await
            }
            .into_actor(self)
            .map(move |result, act, ctx| {
                act.flushing = false;
                match result {
                    Ok(()) => {
                        act.migrated = true;
                        act.backoff = FLUSH_EVERY;
                        act.retry_at = None;
                        act.board.set(NAME, Health::Healthy);
                        if let Some(path) = file {
                            let _ = std::fs::remove_file(&path);
                            act.spilled.pop_front();
                        }
                        if !act.pending.is_empty() || !act.spilled.is_empty() {
                            act.flush(ctx);
                        }
                    }
                    Err(e) => {
                        if file.is_none() {
                            for r in rows.into_iter().rev() {
                                act.pending.push_front(r);
                            }
                            if act.pending.len() > act.cfg.buffer_rows {
                                let excess = act.pending.len() - act.cfg.buffer_rows / 2;
                                act.spill(excess);
                            }
                        }
                        act.board.set(NAME, Health::Unhealthy { reason: e.to_string() });
                        tracing::warn!(error = %e, buffered = act.pending.len(), spilled_files = act.spilled.len(),
                            retry_in = ?act.backoff, "clickhouse write failed; will retry");
                        act.retry_at = Some(tokio::time::Instant::now() + act.backoff);
                        act.backoff = (act.backoff * 2).min(MAX_BACKOFF);
                    }
                }
            }),
        );
    }
}

async fn insert_all(client: &Client, rows: &[Pending]) -> Result<(), StorageError> {
    let ticks: Vec<&TickRow> = rows
        .iter()
        .filter_map(|r| {
            if let Pending::Tick(t) = r {
                Some(t)
            } else {
                None
            }
        })
        .collect();
    let bars: Vec<&BarRow> = rows
        .iter()
        .filter_map(|r| {
            if let Pending::Bar(b) = r {
                Some(b)
            } else {
                None
            }
        })
        .collect();
    let predictions: Vec<&PredictionRow> = rows
        .iter()
        .filter_map(|r| {
            if let Pending::Prediction(p) = r {
                Some(p)
            } else {
                None
            }
        })
        .collect();
    if !predictions.is_empty() {
        let mut insert = client
            .insert::<PredictionRow>("predictions")
            .await
            .map_err(unavailable)?;
        for p in predictions {
            insert.write(p).await.map_err(unavailable)?;
        }
        insert.end().await.map_err(unavailable)?;
    }
    let fills: Vec<&FillRow> = rows
        .iter()
        .filter_map(|r| {
            if let Pending::Fill(f) = r {
                Some(f)
            } else {
                None
            }
        })
        .collect();
    if !ticks.is_empty() {
        let mut insert = client
            .insert::<TickRow>("ticks")
            .await
            .map_err(unavailable)?;
        for t in ticks {
            insert.write(t).await.map_err(unavailable)?;
        }
        insert.end().await.map_err(unavailable)?;
    }
    if !bars.is_empty() {
        let mut insert = client.insert::<BarRow>("bars").await.map_err(unavailable)?;
        for b in bars {
            insert.write(b).await.map_err(unavailable)?;
        }
        insert.end().await.map_err(unavailable)?;
    }
    if !fills.is_empty() {
        let mut insert = client
            .insert::<FillRow>("fills")
            .await
            .map_err(unavailable)?;
        for f in fills {
            insert.write(f).await.map_err(unavailable)?;
        }
        insert.end().await.map_err(unavailable)?;
    }
    Ok(())
}

impl Actor for ClickHouseSeries {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        self.board.set(NAME, Health::Starting);
        let cfg = self.cfg.clone();
        // Migrate before the first write; if ClickHouse is away, the first flush retries it.
        ctx.spawn(async move { migrate(&cfg).await }.into_actor(self).map(
            |res, act, _| match res {
                Ok(()) => {
                    act.migrated = true;
                    act.board.set(NAME, Health::Healthy);
                }
                Err(e) => act.board.set(
                    NAME,
                    Health::Unhealthy {
                        reason: e.to_string(),
                    },
                ),
            },
        ));
        ctx.run_interval(FLUSH_EVERY, |act, ctx| act.flush(ctx));
    }

    fn stopped(&mut self, _ctx: &mut Self::Context) {
        // Nothing accepted is lost: what could not be written goes to disk for the next start.
        if !self.pending.is_empty() {
            let n = self.pending.len();
            self.spill(n);
        }
        self.board.set(
            NAME,
            Health::Unhealthy {
                reason: "stopped".into(),
            },
        );
        self.notifier.mark_stopped();
    }
}

impl Handler<AppendTicks> for ClickHouseSeries {
    type Result = Result<(), StorageError>;

    fn handle(&mut self, msg: AppendTicks, ctx: &mut Self::Context) -> Self::Result {
        for t in msg.ticks {
            self.next_id += 1;
            let row = TickRow {
                tenant_id: msg.tenant.clone(),
                symbol: t.symbol.into_string(),
                time_msc: t.time_msc,
                bid: t.bid.to_f64().unwrap_or(f64::NAN),
                ask: t.ask.to_f64().unwrap_or(f64::NAN),
                id: self.id_prefix | self.next_id,
            };
            self.push(Pending::Tick(row));
        }
        if self.pending.len() >= BATCH_ROWS {
            self.flush(ctx);
        }
        Ok(())
    }
}

impl Handler<AppendBars> for ClickHouseSeries {
    type Result = Result<(), StorageError>;

    fn handle(&mut self, msg: AppendBars, _ctx: &mut Self::Context) -> Self::Result {
        for b in msg.bars {
            self.push(Pending::Bar(BarRow {
                tenant_id: msg.tenant.clone(),
                symbol: b.symbol.into_string(),
                timeframe: b.timeframe.as_str().to_owned(),
                open_time_ms: b.open_time_ms,
                open: b.open.to_f64().unwrap_or(f64::NAN),
                high: b.high.to_f64().unwrap_or(f64::NAN),
                low: b.low.to_f64().unwrap_or(f64::NAN),
                close: b.close.to_f64().unwrap_or(f64::NAN),
                tick_volume: b.tick_volume,
            }));
        }
        Ok(())
    }
}

impl Handler<RecentBars> for ClickHouseSeries {
    type Result = ResponseFuture<Result<Vec<crate::domain::Bar>, StorageError>>;

    /// What ClickHouse has, with the bars still waiting in this actor's batch laid over it (a bar written
    /// twice is the same bar: the newer copy wins, as `ReplacingMergeTree` would decide).
    fn handle(&mut self, q: RecentBars, _ctx: &mut Self::Context) -> Self::Result {
        let waiting: Vec<BarRow> = self
            .pending
            .iter()
            .filter_map(|p| match p {
                Pending::Bar(b)
                    if b.tenant_id == q.tenant
                        && b.symbol == q.symbol.as_str()
                        && b.timeframe == q.timeframe.as_str()
                        && b.open_time_ms < q.before_ms =>
                {
                    Some(b.clone())
                }
                _ => None,
            })
            .collect();
        let client = client(&self.cfg);
        Box::pin(async move {
            let mut rows: Vec<BarRow> = client
                .query(
                    "SELECT tenant_id, symbol, timeframe, open_time_ms, open, high, low, close, tick_volume FROM bars FINAL \
                     WHERE tenant_id = ? AND symbol = ? AND timeframe = ? AND open_time_ms < ? \
                     ORDER BY open_time_ms DESC LIMIT ?",
                )
                .bind(&q.tenant)
                .bind(q.symbol.as_str())
                .bind(q.timeframe.as_str())
                .bind(q.before_ms)
                .bind(q.limit as u64)
                .fetch_all()
                .await
                .map_err(unavailable)?;
            let mut by_open: std::collections::BTreeMap<i64, BarRow> =
                rows.drain(..).map(|r| (r.open_time_ms, r)).collect();
            for r in waiting {
                by_open.insert(r.open_time_ms, r);
            }
            let skip = by_open.len().saturating_sub(q.limit);
            by_open
                .into_values()
                .skip(skip)
                .map(|r| bar_of(r, q.timeframe))
                .collect()
        })
    }
}

impl Handler<AppendPredictions> for ClickHouseSeries {
    type Result = Result<(), StorageError>;

    fn handle(&mut self, msg: AppendPredictions, _ctx: &mut Self::Context) -> Self::Result {
        for p in msg.predictions {
            let id = u64::from_str_radix(p.version.get(..16).unwrap_or("0"), 16).unwrap_or(0);
            self.push(Pending::Prediction(PredictionRow {
                tenant_id: msg.tenant.clone(),
                model: p.deployment,
                version: p.version,
                symbol: p.symbol.into_string(),
                time_msc: p.bar_open_ms,
                value: p.value,
                id,
            }));
        }
        Ok(())
    }
}

impl Handler<AppendFills> for ClickHouseSeries {
    type Result = Result<(), StorageError>;

    fn handle(&mut self, msg: AppendFills, _ctx: &mut Self::Context) -> Self::Result {
        for d in msg.deals {
            self.push(Pending::Fill(FillRow {
                tenant_id: msg.tenant.clone(),
                account: d.account.get(),
                deal_ticket: d.ticket,
                client_order_id: d.client_order_id.unwrap_or_default(),
                strategy_id: d.strategy_id.unwrap_or_default(),
                symbol: d.fill.symbol.into_string(),
                side: d.fill.side.as_str().to_owned(),
                volume: d.fill.volume.to_string(),
                price: d.fill.price.to_string(),
                commission: d.fill.commission.to_string(),
                time_msc: d.fill.time_msc,
            }));
        }
        Ok(())
    }
}

impl Handler<Shutdown> for ClickHouseSeries {
    type Result = ResponseActFuture<Self, ()>;

    /// One last attempt to write everything (2 s at most); the rest is spilled in `stopped`.
    fn handle(&mut self, _msg: Shutdown, _ctx: &mut Self::Context) -> Self::Result {
        let rows: Vec<Pending> = self.pending.drain(..).collect();
        let client = self.client.clone();
        let batch = rows.clone();
        Box::pin(
            async move {
                tokio::time::timeout(Duration::from_secs(2), insert_all(&client, &batch)).await
            }
            .into_actor(self)
            .map(move |res, act, ctx| {
                if !matches!(res, Ok(Ok(()))) {
                    act.pending.extend(rows);
                }
                ctx.stop();
            }),
        )
    }
}

#[derive(Debug, Row, Deserialize)]
struct StoredTick {
    symbol: String,
    time_msc: i64,
    bid: f64,
    ask: f64,
}

/// Reads stored ticks of a tenant's symbol in `[from_ms, to_ms]`, oldest first, each once (FINAL) — for
/// `trellis backtest --clickhouse-url` and optimisations.
pub async fn load_ticks(
    cfg: &ClickHouseConfig,
    tenant: &str,
    symbol: &str,
    from_ms: i64,
    to_ms: i64,
) -> Result<Vec<crate::domain::Tick>, StorageError> {
    let mut out = Vec::new();
    stream_ticks(cfg, tenant, symbol, from_ms, to_ms, 65_536, |chunk| {
        out.extend(chunk);
        true
    })
    .await?;
    Ok(out)
}

/// Streams stored ticks oldest first in chunks of `chunk` ticks to `sink` (false stops), through the
/// client's row cursor: the result set is never held whole.
pub async fn stream_ticks(
    cfg: &ClickHouseConfig,
    tenant: &str,
    symbol: &str,
    from_ms: i64,
    to_ms: i64,
    chunk: usize,
    mut sink: impl FnMut(Vec<crate::domain::Tick>) -> bool,
) -> Result<(), StorageError> {
    let mut cursor = client(cfg)
        .query(
            "SELECT symbol, time_msc, bid, ask FROM ticks FINAL \
             WHERE tenant_id = ? AND symbol = ? AND time_msc >= ? AND time_msc <= ? ORDER BY time_msc, id",
        )
        .bind(tenant)
        .bind(symbol)
        .bind(from_ms)
        .bind(to_ms)
        .fetch::<StoredTick>()
        .map_err(unavailable)?;
    // The shortest text that reads back as the stored double is the quote the terminal sent.
    let dec = |x: f64| {
        x.to_string()
            .parse::<rust_decimal::Decimal>()
            .map_err(|_| StorageError::Rejected(format!("stored price {x} is not a decimal")))
    };
    let mut batch = Vec::with_capacity(chunk.max(1));
    while let Some(r) = cursor.next().await.map_err(unavailable)? {
        batch.push(crate::domain::Tick {
            symbol: crate::domain::Symbol::new(r.symbol),
            time_msc: r.time_msc,
            bid: dec(r.bid)?,
            ask: dec(r.ask)?,
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

/// Reads stored bars of a tenant's symbol and timeframe with open times in `[from_ms, to_ms]`, oldest
/// first, each once (FINAL) — for training.
pub async fn load_bars(
    cfg: &ClickHouseConfig,
    tenant: &str,
    symbol: &str,
    timeframe: crate::domain::Timeframe,
    from_ms: i64,
    to_ms: i64,
) -> Result<Vec<crate::domain::Bar>, StorageError> {
    let rows: Vec<BarRow> = client(cfg)
        .query(
            "SELECT tenant_id, symbol, timeframe, open_time_ms, open, high, low, close, tick_volume FROM bars FINAL \
             WHERE tenant_id = ? AND symbol = ? AND timeframe = ? AND open_time_ms >= ? AND open_time_ms <= ? \
             ORDER BY open_time_ms",
        )
        .bind(tenant)
        .bind(symbol)
        .bind(timeframe.as_str())
        .bind(from_ms)
        .bind(to_ms)
        .fetch_all()
        .await
        .map_err(unavailable)?;
    rows.into_iter().map(|r| bar_of(r, timeframe)).collect()
}

// The settings' view of ClickHouse lives with the store it configures (config stays free of storage types).
impl crate::config::StorageSettings {
    /// The ClickHouse configuration, when one is set.
    pub fn clickhouse(&self) -> Option<ClickHouseConfig> {
        let url = self.clickhouse_url.trim();
        (!url.is_empty()).then(|| ClickHouseConfig {
            url: url.to_owned(),
            database: self.clickhouse_database.clone(),
            buffer_rows: self.clickhouse_buffer_rows.max(1_000),
            spill_dir: self.data_dir.join("spill"),
        })
    }
}

/// A stored bar row back to a bar (prices were stored as `f64`: their shortest decimal form is the price).
fn bar_of(
    r: BarRow,
    timeframe: crate::domain::Timeframe,
) -> Result<crate::domain::Bar, StorageError> {
    let dec = |x: f64| {
        x.to_string()
            .parse::<rust_decimal::Decimal>()
            .map_err(|_| StorageError::Rejected(format!("stored price {x} is not a decimal")))
    };
    Ok(crate::domain::Bar {
        symbol: crate::domain::Symbol::new(r.symbol),
        timeframe,
        open_time_ms: r.open_time_ms,
        open: dec(r.open)?,
        high: dec(r.high)?,
        low: dec(r.low)?,
        close: dec(r.close)?,
        tick_volume: r.tick_volume,
    })
}
