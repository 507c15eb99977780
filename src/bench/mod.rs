//! `trellis bench <name>`: the benchmark suite. Each benchmark starts what it measures for real (the
//! application on loopback, real WebSocket clients) and prints its figures; BENCHMARKS.md records them.
//!
//! - `backtest`: 1 000 000 ticks through `ema_cross` 10/20 on M1.
//! - `history`: reading 1 M ticks per format, a 1 000-run optimisation grid, 100 M ticks streamed.
//! - `latency`: tick-to-order at 1 000 and 10 000 ticks/s, three runs each and their spread: over loopback
//!   WebSocket from a bridge in a second process, and in-process (frame decoded → order frame encoded).
//! - `ingest`: the highest sustained tick rate with persistence to the embedded store.
//! - `tree`: 1 000 tenants × 5 strategies × 1 session: start-up time and resident memory.
//! - `supervision`: panic → replacement handling its first live bar, and a healthy tenant's latency while
//!   another tenant's strategy panics 100 times a second.
//! - `models`: inference, tick → order with a model, 1 000 model actors.
//! - `training`: a year of M1 bars trained walk-forward, and tick → order while training runs.
//! - `logs`: 100 tenants × 30 simulated days through the log tiers: bytes, cost against all-hot, losses,
//!   one-day query latency per tier.
//! - `clients`: 1 000 trading clients on `/ws/v1/client` following the ticks of 3 symbols while a bridge
//!   streams 10 000 ticks/s: tick → order with and without them, fan-out latency, memory per client; three
//!   runs and their spread.
//! - `beside`: tick → order at 10 000 ticks/s quiet and beside (a) an optimisation of 1 000 combinations,
//!   (b) a training job, (c) 500 API requests/s across tenants, (d) log movement rounds.
//! - `journal`: 2 000 orders from 20 writers at once into the relational store: commits per second, records per
//!   commit (group commit) and each order's latency; `TRELLIS_JOURNAL_MAX_BATCH=1` gives the figure without.
//! - `strategies`: the native `ema_cross` against the same strategy as a WebAssembly module (wasmi): the call,
//!   `on_bar` per call, instantiation, 1 000 instances' memory, backtest throughput (`--module FILE.wasm
//!   --module-manifest FILE.json` for another module).
//!
//! `latency` and `clients` measure trellis alone in this process: their bridge and clients run in a child
//! process (`trellis bench-driver`, [`driver`]) that reports back over a pipe. The other benchmarks still
//! drive trellis from the bench's own thread.
//!
//! Latencies go into an HDR histogram ([`Latencies`]) at microsecond precision: every sample is kept, the
//! percentiles come from the histogram, the maximum is the true one.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use awc::ws;
use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::actors::tree::Runtime;
use crate::backtest::{Backtest, BacktestConfig};
use crate::config::{Profile, Settings};
use crate::domain::schema::PositiveDecimal;
use crate::domain::tenant::{StrategySettings, TenantSettings};
use crate::domain::{Bar, Login, Timeframe};
use crate::sim::feed::RandomWalk;
use crate::startup::{Application, StopHandle};
use crate::strategies::{ParamError, Params, Strategy, StrategyRegistry};

mod beside;
mod clients;
mod closed_loop;
pub mod driver;
mod failover;
mod history;
mod journal;
mod latency;
mod logs;
mod models;
mod recovery;
mod strategies;
mod training;

use closed_loop::{drive, report_latency, Driven};

pub const NAMES: [&str; 16] = [
    "backtest",
    "history",
    "latency",
    "ingest",
    "tree",
    "supervision",
    "auth",
    "recovery",
    "models",
    "training",
    "clients",
    "failover",
    "logs",
    "journal",
    "beside",
    "strategies",
];

/// What `trellis bench` takes besides the benchmark's name.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// `bench strategies`: the module to measure instead of the Rust guest example, and its manifest.
    pub module: Option<std::path::PathBuf>,
    pub module_manifest: Option<std::path::PathBuf>,
}

pub async fn run(name: &str) -> anyhow::Result<()> {
    run_with(name, &Options::default()).await
}

pub async fn run_with(name: &str, options: &Options) -> anyhow::Result<()> {
    if options.module.is_some() && name != "strategies" {
        bail!("--module is an option of `trellis bench strategies`");
    }
    println!(
        "machine: {} cores, {}",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0),
        cpu_model()
    );
    match name {
        "backtest" => backtest(),
        "history" => history::run().await,
        "latency" => latency::run().await,
        "ingest" => ingest().await,
        "tree" => tree().await,
        "supervision" => supervision().await,
        "auth" => auth().await,
        "recovery" => recovery::recovery().await,
        "models" => models::run().await,
        "training" => training::run().await,
        "clients" => clients::run().await,
        // Needs PostgreSQL (several nodes share it): not part of `all`.
        "failover" => failover::run().await,
        // Minutes of writing and moving; embedded stores, or Redis and ClickHouse when their URLs are set.
        "logs" => logs::run().await,
        "journal" => journal::run().await,
        // Three minutes; the same loopback run quiet and beside an optimisation, training, API load, log moves.
        "beside" => beside::run().await,
        // Needs the guest examples (built by scripts/build-wasm-examples.sh, which may install clang and lld
        // when they are absent): not part of `all`.
        "strategies" => strategies::run(
            options.module.as_deref(),
            options.module_manifest.as_deref(),
        ),
        "all" => {
            backtest()?;
            history::run().await?;
            latency::run().await?;
            ingest().await?;
            tree().await?;
            supervision().await?;
            auth().await?;
            recovery::recovery().await?;
            models::run().await?;
            training::run().await?;
            clients::run().await?;
            journal::run().await
        }
        other => bail!(
            "unknown benchmark `{other}` (known: {}, all)",
            NAMES.join(", ")
        ),
    }
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into())
}

fn rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map(|kb| kb / 1024.0)
        .unwrap_or(0.0)
}

/// Resident memory of a process (Linux), in MB.
pub(crate) fn rss_of(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kb: f64 = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    Some(kb / 1024.0)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn us(d: Duration) -> String {
    format!("{:.1} µs", d.as_secs_f64() * 1e6)
}

/// Latency samples in an HDR histogram of whole microseconds (3 significant digits: exact below 2 048 µs,
/// within 0.1 % above), with the true maximum kept beside it. It crosses from the `bench-driver` process as
/// JSON ([`RecordedLatencies`]) whole: every bucket, not a few percentiles, so nothing the child measured is
/// lost on the way.
#[derive(Clone, Serialize, Deserialize)]
#[serde(into = "RecordedLatencies", from = "RecordedLatencies")]
struct Latencies {
    hist: Histogram<u64>,
    max: Duration,
}

/// A [`Latencies`] as it travels: each recorded bucket as (its highest equivalent value in µs, count), and
/// the true maximum in nanoseconds. Recording those values again fills the same buckets.
#[derive(Serialize, Deserialize)]
struct RecordedLatencies {
    max_ns: u64,
    buckets: Vec<(u64, u64)>,
}

impl From<Latencies> for RecordedLatencies {
    fn from(l: Latencies) -> Self {
        Self {
            max_ns: u64::try_from(l.max.as_nanos()).unwrap_or(u64::MAX),
            buckets: l
                .hist
                .iter_recorded()
                .map(|v| (v.value_iterated_to(), v.count_since_last_iteration()))
                .collect(),
        }
    }
}

impl From<RecordedLatencies> for Latencies {
    fn from(r: RecordedLatencies) -> Self {
        let mut l = Latencies::new();
        for (value, count) in r.buckets {
            l.hist.saturating_record_n(value, count);
        }
        l.max = Duration::from_nanos(r.max_ns);
        l
    }
}

impl Default for Latencies {
    fn default() -> Self {
        Self::new()
    }
}

impl Latencies {
    fn new() -> Self {
        Self {
            // 1 µs to an hour, clamped beyond. Not auto-resizing: `saturating_record` does not grow one, it
            // clamps to its initial bound (2 µs), which turned every sample of 2 ms or more into 2 µs.
            hist: Histogram::new_with_bounds(1, 3_600_000_000, 3)
                .expect("valid bounds and precision"),
            max: Duration::ZERO,
        }
    }

    fn record(&mut self, d: Duration) {
        self.hist
            .saturating_record(u64::try_from(d.as_micros()).unwrap_or(u64::MAX));
        self.max = self.max.max(d);
    }

    fn len(&self) -> u64 {
        self.hist.len()
    }

    /// The value at quantile `q` (0.5 for p50); never above the true maximum.
    fn at(&self, q: f64) -> Duration {
        if self.hist.is_empty() {
            return Duration::ZERO;
        }
        Duration::from_micros(self.hist.value_at_quantile(q)).min(self.max)
    }

    /// `p50 … p99 … max …` for the given percentiles, in whole microseconds.
    fn summary(&self, percentiles: &[f64]) -> String {
        let mut out = String::new();
        for p in percentiles {
            out.push_str(&format!("p{p} {} µs ", self.at(p / 100.0).as_micros()));
        }
        out.push_str(&format!("max {} µs", self.max.as_micros()));
        out
    }
}

// ---- backtest -------------------------------------------------------------------------------------------

fn backtest() -> anyhow::Result<()> {
    let ticks: Vec<_> = RandomWalk::new(
        RandomWalk::default_symbols(&["EURUSD".into()]),
        1_700_000_040_000,
        250,
        1,
    )
    .take(1_000_000)
    .collect();
    let params: Params = [("fast".to_owned(), 10.0), ("slow".to_owned(), 20.0)].into();
    let mut best = 0.0f64;
    for _ in 0..3 {
        let mut bt = Backtest::new(
            BacktestConfig::new("EURUSD", "ema_cross", params.clone(), Timeframe::M1),
            &StrategyRegistry::default(),
        )?;
        let started = Instant::now();
        for t in &ticks {
            bt.on_tick(t);
        }
        let elapsed = started.elapsed();
        let (report, _) = bt.finish();
        let rate = ticks.len() as f64 / elapsed.as_secs_f64();
        best = best.max(rate);
        println!(
            "backtest: {} ticks, {} bars, {} orders through ema_cross 10/20 M1 in {:.1} ms = {:.0} ticks/s",
            report.ticks, report.bars, report.orders, elapsed.as_secs_f64() * 1e3, rate
        );
    }
    // The same through the CSV reader, as `trellis backtest --csv` runs.
    let dir = tempfile_dir()?;
    let path = dir.join("ticks.csv");
    let mut text = String::with_capacity(ticks.len() * 40);
    text.push_str("time_msc,bid,ask,symbol\n");
    for t in &ticks {
        text.push_str(&format!(
            "{},{},{},{}\n",
            t.time_msc, t.bid, t.ask, t.symbol
        ));
    }
    std::fs::write(&path, text)?;
    let started = Instant::now();
    let read = crate::backtest::history::open(&path, Default::default())
        .map_err(|e| anyhow::anyhow!("{e}"))?
        .try_fold(0u64, |n, t| t.map(|_| n + 1))
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let parse = started.elapsed();
    println!(
        "backtest: reading the same 1 000 000 ticks from CSV takes {:.1} ms ({:.0} lines/s); best engine rate {:.0} ticks/s",
        parse.as_secs_f64() * 1e3,
        read as f64 / parse.as_secs_f64(),
        best
    );
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

fn tempfile_dir() -> anyhow::Result<std::path::PathBuf> {
    let dir = std::env::temp_dir().join(format!("trellis-bench-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

// ---- a running trellis ----------------------------------------------------------------------------------

struct Running {
    /// The API's port.
    port: u16,
    /// The bridges' own listener's port (`http.bridge_listener`).
    bridge: u16,
    runtime: Runtime,
    security: std::sync::Arc<crate::security::service::Security>,
    stop: StopHandle,
    serving: actix_web::rt::task::JoinHandle<anyhow::Result<()>>,
    dir: std::path::PathBuf,
}

async fn start(overrides: &[(&str, &str)]) -> anyhow::Result<Running> {
    let dir = tempfile_dir()?;
    let mut vars: Vec<(String, String)> = vec![
        (
            "TRELLIS__STORAGE__DATA_DIR".into(),
            dir.display().to_string(),
        ),
        ("TRELLIS__HTTP__PORT".into(), "0".into()),
        ("TRELLIS__HTTP__BRIDGE_PORT".into(), "0".into()),
        ("TRELLIS__LOG__LEVEL".into(), "error".into()),
        ("TRELLIS__BOOTSTRAP__GENERATE_ADMIN".into(), "false".into()),
    ];
    // The thread layout may be compared on one build: `TRELLIS__THREADS__API_NICE=0`,
    // `TRELLIS__HTTP__BRIDGE_LISTENER=false`, … in the bench's environment reach the trellis it starts.
    vars.extend(std::env::vars().filter(|(k, _)| {
        k.starts_with("TRELLIS__THREADS__") || k == "TRELLIS__HTTP__BRIDGE_LISTENER"
    }));
    vars.extend(
        overrides
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string())),
    );
    let settings = Settings::load(Profile::Embedded, None, vars)?;
    let app = Application::build(settings).await?;
    let running = Running {
        port: app.port(),
        bridge: app.bridge_port(),
        runtime: app.runtime().clone(),
        security: app.security().clone(),
        stop: app.stop_handle(),
        serving: actix_web::rt::spawn(async move { app.run_until_stopped().await }),
        dir,
    };
    for _ in 0..400 {
        if running.runtime.not_ready().is_empty() {
            break;
        }
        actix_web::rt::time::sleep(Duration::from_millis(5)).await;
    }
    Ok(running)
}

impl Running {
    async fn stop(self) {
        self.stop.stop();
        let _ = self.serving.await;
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn bench_tenant(id: &str, key: &str, strategies: Vec<StrategySettings>) -> TenantSettings {
    TenantSettings {
        id: id.into(),
        name: id.into(),
        tier: "enterprise".into(),
        api_keys: vec![key.into()],
        symbols: vec!["EURUSD".into(), "GBPUSD".into()],
        contract_sizes: Default::default(),
        risk: Default::default(),
        strategies,
        models: Vec::new(),
    }
}

fn strategy(id: &str, kind: &str, symbol: &str) -> StrategySettings {
    StrategySettings {
        id: id.into(),
        kind: kind.into(),
        symbol: symbol.into(),
        timeframe: "M1".into(),
        volume: PositiveDecimal::new(Decimal::new(1, 2)).unwrap_or(PositiveDecimal::ONE),
        account: None,
        params: Default::default(),
        enabled: true,
        on_failure: Default::default(),
        model: None,
    }
}

/// Wants the opposite position on every bar: one order per bar.
struct Flip {
    long: bool,
    volume: Decimal,
}

impl Strategy for Flip {
    fn on_bar(&mut self, _bar: &Bar) -> Option<Decimal> {
        self.long = !self.long;
        Some(if self.long { self.volume } else { -self.volume })
    }
}

fn flip(_: &Params, volume: Decimal) -> Result<Box<dyn Strategy>, ParamError> {
    Ok(Box::new(Flip {
        long: false,
        volume,
    }))
}

type WsFramed = actix_codec::Framed<awc::BoxedSocket, ws::Codec>;
type WsSink = futures_util::stream::SplitSink<WsFramed, ws::Message>;
type WsStream = futures_util::stream::SplitStream<WsFramed>;

/// A bridge connection that said hello (seq 1) and got its welcome.
async fn open_bridge(port: u16, key: &str, login: u64) -> anyhow::Result<(WsSink, WsStream)> {
    let (_resp, conn) = crate::sim::client::ws_client()
        .ws(format!("ws://127.0.0.1:{port}/ws/mt5"))
        .connect()
        .await
        .map_err(|e| anyhow::anyhow!("connect: {e}"))?;
    let (mut sink, mut stream) = conn.split();
    let hello = json!({"type":"hello","seq":1,"api_key":key,"login":login,"server":"bench","protocol_version":2,"last_seq_received":0});
    sink.send(ws::Message::Text(hello.to_string().into()))
        .await?;
    match stream.next().await {
        Some(Ok(ws::Frame::Text(b))) if String::from_utf8_lossy(&b).contains("welcome") => {
            Ok((sink, stream))
        }
        other => bail!("no welcome: {other:?}"),
    }
}

// ---- ingest ---------------------------------------------------------------------------------------------

async fn blast(
    port: u16,
    key: String,
    login: u64,
    symbol: &'static str,
    seconds: u64,
) -> anyhow::Result<u64> {
    let (mut sink, mut stream) = open_bridge(port, &key, login).await?;
    let reader = actix_web::rt::spawn(async move { while stream.next().await.is_some() {} });
    let end = Instant::now() + Duration::from_secs(seconds);
    let mut seq = 1u64;
    let mut time_msc = 1_700_000_040_000i64;
    while Instant::now() < end {
        for _ in 0..256 {
            seq += 1;
            time_msc += 10;
            let bid = 1.1 + (seq % 13) as f64 * 0.00001;
            let tick = format!(
                r#"{{"type":"tick","seq":{seq},"symbol":"{symbol}","time_msc":{time_msc},"bid":{bid:.5},"ask":{:.5}}}"#,
                bid + 0.0002
            );
            sink.feed(ws::Message::Text(tick.into())).await?;
        }
        sink.flush().await?;
    }
    // Give the last frames time to be read before closing, or the close may discard them.
    actix_web::rt::time::sleep(Duration::from_millis(200)).await;
    let _ = sink.send(ws::Message::Close(None)).await;
    reader.abort();
    Ok(seq - 1)
}

async fn ingest() -> anyhow::Result<()> {
    let app = start(&[
        ("TRELLIS__MT5__MAX_FRAMES_PER_SEC", "10000000"),
        ("TRELLIS__MT5__FRAME_BURST", "10000000"),
    ])
    .await?;
    let key = "trk_ingest01_bench-secret-key";
    let tenant = app
        .runtime
        .start_tenant(bench_tenant("ingest", key, Vec::new()))
        .await?;
    let seconds = 5;
    let started = Instant::now();
    let a = actix_web::rt::spawn(blast(app.bridge, key.into(), 1, "EURUSD", seconds));
    let b = actix_web::rt::spawn(blast(app.bridge, key.into(), 2, "GBPUSD", seconds));
    let sent = a.await?? + b.await??;
    let send_time = started.elapsed();
    // Let the last batches reach the store.
    let db = app.dir.join("timeseries.db");
    let mut persisted = 0i64;
    let mut accepted = 0.0;
    for _ in 0..100 {
        actix_web::rt::time::sleep(Duration::from_millis(100)).await;
        accepted = metric(&app.runtime.metrics.render(), "trellis_ticks_total");
        persisted = count_rows(&db).await.unwrap_or(0);
        if persisted as f64 >= accepted && accepted > 0.0 {
            break;
        }
    }
    let drained = started.elapsed();
    let dropped = metric(&app.runtime.metrics.render(), "trellis_ticks_dropped_total");
    println!(
        "ingest: 2 bridges sent {} ticks in {:.2} s ({:.0}/s); trellis accepted {:.0} ({:.0}/s over the send window), persisted {} to SQLite (all within {:.2} s), shed {:.0}",
        sent,
        send_time.as_secs_f64(),
        sent as f64 / send_time.as_secs_f64(),
        accepted,
        accepted / send_time.as_secs_f64(),
        persisted,
        drained.as_secs_f64(),
        dropped.abs()
    );
    drop(tenant);
    app.stop().await;
    Ok(())
}

fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

async fn count_rows(db: &std::path::Path) -> anyhow::Result<i64> {
    let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}?mode=ro", db.display())).await?;
    let (n,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM ticks")
        .fetch_one(&pool)
        .await?;
    pool.close().await;
    Ok(n)
}

// ---- tree -----------------------------------------------------------------------------------------------

async fn tree() -> anyhow::Result<()> {
    let before = rss_mb();
    let started = Instant::now();
    let app = start(&[]).await?;
    let booted = started.elapsed();
    let kinds = [
        "ema_cross",
        "rsi_reversion",
        "donchian_breakout",
        "ema_cross",
        "rsi_reversion",
    ];
    let mut tenants = Vec::with_capacity(1_000);
    for i in 0..1_000 {
        let strategies = kinds
            .iter()
            .enumerate()
            .map(|(j, k)| {
                strategy(
                    &format!("s{j}"),
                    k,
                    if j % 2 == 0 { "EURUSD" } else { "GBPUSD" },
                )
            })
            .collect();
        let t = app
            .runtime
            .start_tenant(bench_tenant(
                &format!("t{i}"),
                &format!("trk_tree{i:04}_bench-secret-key"),
                strategies,
            ))
            .await?;
        tenants.push(t);
    }
    for (i, t) in tenants.iter().enumerate() {
        t.session(Login::new(10_000 + i as u64))
            .await
            .context("session")?;
    }
    let elapsed = started.elapsed();
    let children: usize = tenants
        .iter()
        .map(|t| t.strategy_hosts.read().len() + t.sessions.read().len() + 3)
        .sum();
    println!(
        "tree: 1000 tenants × 5 strategies × 1 session ({} actors) up in {:.0} ms (process start {:.0} ms); resident memory {:.1} MB (was {:.1} MB)",
        children + 1_000,
        elapsed.as_secs_f64() * 1e3,
        booted.as_secs_f64() * 1e3,
        rss_mb(),
        before
    );
    app.stop().await;
    Ok(())
}

// ---- supervision ----------------------------------------------------------------------------------------

static PANICKED_AT: Mutex<Option<Instant>> = Mutex::new(None);
static LAST_POISON: AtomicI64 = AtomicI64::new(i64::MIN);
static PANICS: AtomicU64 = AtomicU64::new(0);
static RECOVERIES: Mutex<Vec<Recovery>> = Mutex::new(Vec::new());
/// When [`drive_bars`] sent the tick of each `time_msc`: the tick at `t` closes the bar that opened at
/// `t - 60 000`.
static TICKS_SENT: Mutex<Option<HashMap<i64, Instant>>> = Mutex::new(None);
/// Bars after a panic that had closed before the replacement began its warm-up: replayed, not live.
static REPLAYED_AFTER_PANIC: AtomicU64 = AtomicU64::new(0);

/// One panic and the replacement that followed it.
#[derive(Debug, Clone, Copy)]
struct Recovery {
    /// Panic → the replacement's first `on_bar` (its warm-up replay begins): the figure measured before
    /// 2026-11-28.
    warm_up: Duration,
    /// Panic → the replacement handling its first live bar.
    live: Duration,
    /// Panic → the tick that closed that bar was sent (the wait for the next bar, not the restart).
    bar_closed: Duration,
    /// That tick sent → the replacement handling the bar.
    handled: Duration,
}

/// What a fresh incarnation knows of its predecessor's panic until it handles its first live bar.
struct Recovering {
    panicked_at: Instant,
    /// Open time of the bar that panicked; the replay of recent bars ends with it or shortly after.
    poison_ms: i64,
    /// The first `on_bar` of this incarnation: the warm-up replay's first bar.
    warm_up_at: Instant,
}

/// Panics on bars it has not seen before whose minute is a multiple of `every`. A fresh incarnation
/// measures how long ago its predecessor panicked when it handles its first live bar: the strategy API does
/// not say whether a bar is replayed (warm-up) or live, so a live bar is one that opened after the bar that
/// panicked and whose closing tick was sent after this incarnation began its warm-up (the replay was
/// fetched before that, so cannot hold it). A post-panic bar closed earlier may be in the replay; it is
/// counted in `REPLAYED_AFTER_PANIC` and the next bar is measured instead (never a replayed bar).
struct Crash {
    every: i64,
    fresh: bool,
    recovering: Option<Recovering>,
}

impl Crash {
    fn new(every: i64) -> Self {
        Self {
            every,
            fresh: true,
            recovering: None,
        }
    }
}

impl Strategy for Crash {
    fn on_bar(&mut self, bar: &Bar) -> Option<Decimal> {
        if std::mem::take(&mut self.fresh) {
            let warm_up_at = Instant::now();
            if let Some(panicked_at) = PANICKED_AT.lock().ok().and_then(|mut p| p.take()) {
                self.recovering = Some(Recovering {
                    panicked_at,
                    poison_ms: LAST_POISON.load(Ordering::SeqCst),
                    warm_up_at,
                });
            }
        }
        if let Some(r) = self.recovering.take_if(|r| bar.open_time_ms > r.poison_ms) {
            let handled_at = Instant::now();
            let close_msc = bar.open_time_ms + bar.timeframe.millis();
            let closed_at = TICKS_SENT
                .lock()
                .ok()
                .and_then(|t| t.as_ref()?.get(&close_msc).copied());
            match closed_at {
                Some(closed_at) if closed_at > r.warm_up_at => {
                    if let Ok(mut all) = RECOVERIES.lock() {
                        all.push(Recovery {
                            warm_up: r.warm_up_at - r.panicked_at,
                            live: handled_at - r.panicked_at,
                            bar_closed: closed_at.saturating_duration_since(r.panicked_at),
                            handled: handled_at - closed_at,
                        });
                    }
                }
                _ => {
                    REPLAYED_AFTER_PANIC.fetch_add(1, Ordering::SeqCst);
                    self.recovering = Some(r);
                }
            }
        }
        let minute = bar.open_time_ms / 60_000;
        if minute % self.every == 0 && bar.open_time_ms > LAST_POISON.load(Ordering::SeqCst) {
            LAST_POISON.store(bar.open_time_ms, Ordering::SeqCst);
            if let Ok(mut p) = PANICKED_AT.lock() {
                *p = Some(Instant::now());
            }
            PANICS.fetch_add(1, Ordering::SeqCst);
            panic!("bench: poison bar {}", bar.open_time_ms);
        }
        None
    }
}

/// Clears what the crash strategy and [`drive_bars`] left in the statics.
fn reset_crash_statics() {
    LAST_POISON.store(i64::MIN, Ordering::SeqCst);
    PANICS.store(0, Ordering::SeqCst);
    REPLAYED_AFTER_PANIC.store(0, Ordering::SeqCst);
    if let Ok(mut p) = PANICKED_AT.lock() {
        *p = None;
    }
    if let Ok(mut r) = RECOVERIES.lock() {
        r.clear();
    }
    if let Ok(mut t) = TICKS_SENT.lock() {
        *t = Some(HashMap::new());
    }
}

fn crash_sometimes(_: &Params, _: Decimal) -> Result<Box<dyn Strategy>, ParamError> {
    // Bars come every 10 ms: a panic every 1.1 s, so each incarnation outlives the crash-loop threshold.
    Ok(Box::new(Crash::new(110)))
}

fn crash_always(_: &Params, _: Decimal) -> Result<Box<dyn Strategy>, ParamError> {
    Ok(Box::new(Crash::new(1)))
}

async fn supervision() -> anyhow::Result<()> {
    std::panic::set_hook(Box::new(|_| {})); // hundreds of panics would flood the terminal
    let seconds = 5;

    // 1. Restart latency: a panic every 110 bars, bars every 10 ms (intensity high so nothing escalates).
    let app = start(&[("TRELLIS__SUPERVISION__MAX_RESTARTS", "1000000")]).await?;
    app.runtime.strategies.register("crash", crash_sometimes);
    app.runtime
        .start_tenant(bench_tenant(
            "crashy",
            "trk_crashy01_bench-secret-key",
            vec![strategy("crash", "crash", "EURUSD")],
        ))
        .await?;
    reset_crash_statics();
    let bars = drive_bars(app.bridge, 12).await?;
    let recoveries = RECOVERIES
        .lock()
        .map(|mut r| std::mem::take(&mut *r))
        .unwrap_or_default();
    let histogram = |part: fn(&Recovery) -> Duration| {
        let mut h = Latencies::new();
        recoveries.iter().for_each(|r| h.record(part(r)));
        h
    };
    let (live, bar_closed, handled, warm_up) = (
        histogram(|r| r.live),
        histogram(|r| r.bar_closed),
        histogram(|r| r.handled),
        histogram(|r| r.warm_up),
    );
    let replayed = REPLAYED_AFTER_PANIC.load(Ordering::SeqCst);
    println!(
        "supervision: {} bars, {} panics, {} measured; panic → replacement handling its first live bar: {}{}",
        bars,
        PANICS.load(Ordering::SeqCst),
        live.len(),
        live.summary(&[50.0, 99.0]),
        if replayed > 0 {
            format!(" ({replayed} post-panic bars had closed before the replacement's warm-up: not counted as live)")
        } else {
            String::new()
        },
    );
    println!(
        "supervision: of which panic → that bar's closing tick sent (waiting for the next bar): {}; closing tick → handled by the replacement: {}",
        bar_closed.summary(&[50.0, 99.0]),
        handled.summary(&[50.0, 99.0]),
    );
    println!(
        "supervision: panic → replacement started and its warm-up replay begun (the figure before 2026-11-28): {}",
        warm_up.summary(&[50.0, 99.0]),
    );
    app.stop().await;
    reset_crash_statics();

    // 2. A healthy tenant's latency while another tenant's strategy panics on every bar, 100 bars a second
    //    (back-off capped at 2 ms so the restarts keep up, intensity high so nothing escalates).
    let app = start(&[
        ("TRELLIS__SUPERVISION__MAX_RESTARTS", "1000000"),
        ("TRELLIS__SUPERVISION__BACKOFF_MAX_MS", "2"),
    ])
    .await?;
    app.runtime.strategies.register("flip", flip);
    app.runtime.strategies.register("crash", crash_always);
    app.runtime
        .start_tenant(bench_tenant(
            "healthy",
            "trk_healthy1_bench-secret-key",
            vec![strategy("flip", "flip", "EURUSD")],
        ))
        .await?;
    app.runtime
        .start_tenant(bench_tenant(
            "crashy",
            "trk_crashy01_bench-secret-key",
            vec![strategy("crash", "crash", "EURUSD")],
        ))
        .await?;
    let crash_task = actix_web::rt::spawn(drive_bars(app.bridge, seconds));
    let driven = drive(
        app.bridge,
        "trk_healthy1_bench-secret-key",
        5151,
        1_000,
        seconds,
        10,
    )
    .await?;
    let bars = crash_task.await??;
    let failures = app
        .runtime
        .events
        .snapshot(Some("crashy"))
        .iter()
        .filter(|e| e.kind == crate::runtime::events::EventKind::Failed)
        .count();
    report_latency(
        "supervision: healthy tenant @ 1000 ticks/s while another tenant's strategy panics",
        &driven,
        seconds,
    );
    println!(
        "supervision: the other tenant got {bars} bars and its strategy failed {failures} times ({:.0}/s)",
        failures as f64 / seconds as f64
    );
    let _ = std::panic::take_hook();
    app.stop().await;
    reset_crash_statics();
    Ok(())
}

/// Closes one bar every 10 ms on the crashing tenant's bridge; returns the bars closed.
async fn drive_bars(port: u16, seconds: u64) -> anyhow::Result<u64> {
    let (mut sink, mut stream) = open_bridge(port, "trk_crashy01_bench-secret-key", 6161).await?;
    let reader = actix_web::rt::spawn(async move { while stream.next().await.is_some() {} });
    let mut clock = tokio::time::interval(Duration::from_millis(10));
    let end = Instant::now() + Duration::from_secs(seconds);
    let mut seq = 1u64;
    let mut time_msc = 1_700_000_040_000i64;
    let mut ticks = 0u64;
    while Instant::now() < end {
        clock.tick().await;
        seq += 1;
        time_msc += 60_000;
        let tick = format!(
            r#"{{"type":"tick","seq":{seq},"symbol":"EURUSD","time_msc":{time_msc},"bid":1.1,"ask":1.1002}}"#
        );
        // Before sending: the bar this tick closes cannot have closed before this instant.
        if let Ok(mut sent) = TICKS_SENT.lock() {
            sent.get_or_insert_with(HashMap::new)
                .insert(time_msc, Instant::now());
        }
        sink.send(ws::Message::Text(tick.into())).await?;
        ticks += 1;
    }
    actix_web::rt::time::sleep(Duration::from_millis(100)).await;
    reader.abort();
    Ok(ticks.saturating_sub(1))
}

// ---- auth -----------------------------------------------------------------------------------------------

/// What authenticating costs: the in-memory check every request runs (JWT verification and revocation
/// checks; API-key digest), a whole authenticated request over loopback HTTP (keep-alive, sequential), and a
/// login (Argon2id, deliberately slow).
async fn auth() -> anyhow::Result<()> {
    let app = start(&[
        ("TRELLIS__BOOTSTRAP__ADMIN_EMAIL", "bench@trellis.local"),
        ("TRELLIS__BOOTSTRAP__ADMIN_PASSWORD", "bench-password-long"),
        ("TRELLIS__RATE_LIMITS__ENTERPRISE", "1000000"),
        ("TRELLIS__SECURITY__LOGIN_PER_ACCOUNT_PER_MIN", "100"),
    ])
    .await?;
    let security = app.security.clone();
    let base = format!("http://127.0.0.1:{}", app.port);
    let client = awc::Client::builder()
        .timeout(Duration::from_secs(10))
        .finish();
    let mut logins = Latencies::new();
    let mut token = String::new();
    for _ in 0..10 {
        let started = Instant::now();
        let mut resp = client
            .post(format!("{base}/api/v1/auth/login"))
            .send_json(&serde_json::json!({"email": "bench@trellis.local", "password": "bench-password-long"}))
            .await
            .map_err(|e| anyhow::anyhow!("login: {e}"))?;
        let body: serde_json::Value = resp
            .json()
            .await
            .map_err(|e| anyhow::anyhow!("login: {e}"))?;
        logins.record(started.elapsed());
        if !resp.status().is_success() {
            bail!("login answered {}: {body}", resp.status());
        }
        token = body["access_token"].as_str().unwrap_or_default().to_owned();
    }
    let platform = security
        .authenticate(&token)
        .map_err(|e| anyhow::anyhow!("token: {e}"))?;
    // A tenant with a read key, for the key path and a rate-limited tenant route.
    let tenant = bench_tenant(
        "bench-auth",
        "trk_benchcfg_unused-config-key-000",
        Vec::new(),
    );
    let mut tenant = tenant;
    tenant.tier = "enterprise".into();
    app.runtime.start_tenant(tenant).await?;
    let (_, key) = security
        .create_key(
            "bench-auth",
            "bench",
            &[crate::security::rbac::Scope::Read],
            None,
            &platform.actor,
        )
        .await
        .map_err(|e| anyhow::anyhow!("key: {e}"))?;

    for (label, credential) in [("access token", token.as_str()), ("API key", key.as_str())] {
        let n = 200_000;
        let started = Instant::now();
        for _ in 0..n {
            std::hint::black_box(
                security
                    .authenticate(std::hint::black_box(credential))
                    .is_ok(),
            );
        }
        let per = started.elapsed() / n;
        println!(
            "auth: in-process check of an {label}: {} per request ({n} checks)",
            us(per)
        );
    }
    for (label, path, credential) in [
        (
            "GET /api/v1/me (access token)",
            "/api/v1/me".to_owned(),
            token.clone(),
        ),
        (
            "GET /api/v1/tenants/{t}/positions (API key, tier limit)",
            "/api/v1/tenants/bench-auth/positions".to_owned(),
            key.clone(),
        ),
    ] {
        let mut times = Latencies::new();
        for _ in 0..2_000 {
            let started = Instant::now();
            let mut resp = client
                .get(format!("{base}{path}"))
                .insert_header(("Authorization", format!("Bearer {credential}")))
                .send()
                .await
                .map_err(|e| anyhow::anyhow!("{path}: {e}"))?;
            let _ = resp.body().await;
            if !resp.status().is_success() {
                bail!("{path} answered {}", resp.status());
            }
            times.record(started.elapsed());
        }
        println!(
            "auth: {label} over loopback HTTP: {} (2000 sequential requests)",
            times.summary(&[50.0, 99.0]),
        );
    }
    println!(
        "auth: login (Argon2id m=19 MiB t=2 p=1, on the blocking pool): p50 {:.1} ms, max {:.1} ms (10 logins)",
        logins.at(0.5).as_secs_f64() * 1e3,
        logins.max.as_secs_f64() * 1e3
    );
    app.stop().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latencies_keep_every_sample_and_the_true_maximum() {
        let mut l = Latencies::new();
        for us in 1..=1_000u64 {
            l.record(Duration::from_micros(us * 10)); // 10 µs … 10 ms
        }
        l.record(Duration::from_nanos(250_000_700)); // one slow sample: 250 ms
        assert_eq!(l.len(), 1_001);
        let within = |d: Duration, us: u64| d.as_micros().abs_diff(us as u128) <= us as u128 / 500;
        assert!(within(l.at(0.5), 5_010), "{:?}", l.at(0.5));
        assert!(within(l.at(0.99), 9_910), "{:?}", l.at(0.99));
        assert_eq!(l.max, Duration::from_nanos(250_000_700));
        assert_eq!(l.at(1.0), l.max);
        assert!(l.summary(&[50.0, 99.9]).ends_with("max 250000 µs"));
    }

    #[test]
    fn latencies_cross_a_process_boundary_whole() {
        let mut sent = Latencies::new();
        for us in [3u64, 3, 17, 250, 2_047, 2_049, 9_999, 1_234_567] {
            sent.record(Duration::from_micros(us));
        }
        sent.record(Duration::from_nanos(1_234_567_891));
        let text = serde_json::to_string(&sent).unwrap();
        let received: Latencies = serde_json::from_str(&text).unwrap();
        assert_eq!(received.len(), sent.len());
        assert_eq!(received.max, sent.max);
        for q in [0.0, 0.1, 0.5, 0.9, 0.99, 0.999, 1.0] {
            assert_eq!(received.at(q), sent.at(q), "quantile {q}");
        }
    }
}
