//! `trellis bench-driver` (a hidden command): the load side of `bench latency` and `bench clients`, in a
//! process of its own.
//!
//! Why a second process: the simulated bridge and the 1 000 client readers used to run on the bench's own
//! thread, beside trellis, so every figure also held the load generator's work competing for trellis's
//! threads (and the memory per client held both ends of each connection). Now the bench process holds only
//! trellis; it starts this same binary (`std::env::current_exe()`) as `trellis bench-driver …` with the
//! port of the trellis it started, and the driver connects over loopback WebSocket, runs the closed loop of
//! [`super::closed_loop::drive_link`] (every order timed exactly once) and, when asked, the clients, then
//! prints what it measured as one JSON line on stdout ([`Report`], histograms whole). The bench parses it
//! and reports.
//!
//! # Limitations
//! - Both processes still share the machine's cores: the driver is not pinned. `taskset` is not everywhere,
//!   and `sched_setaffinity` would be a second `unsafe` call in a crate that allows one (lib.rs); on the
//!   2-core machines these figures come from, pinning trellis to one core would also halve what it has.
//! - The driver is one thread (an actix system), so 1 000 clients' frames are read one after another: a
//!   client's fan-out figure holds the time the driver spent reading the clients before it.
//! - The API key goes to the child in an environment variable (`TRELLIS_BENCH_DRIVER_KEY`), not on its
//!   command line; it is a bench tenant's key, made up for the run.

use std::io::Read as _;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use awc::ws;
use dashmap::DashMap;
use futures_util::{SinkExt, StreamExt};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::closed_loop::{drive_link, WsLink};
use super::{rss_mb, rss_of, Driven, Latencies};

/// The environment variable that carries the bridge's API key to the driver.
const KEY_VAR: &str = "TRELLIS_BENCH_DRIVER_KEY";
/// The API keys of `--api-path`, passed in the environment rather than on the command line.
const API_KEYS_VAR: &str = "TRELLIS_BENCH_API_KEYS";

/// `trellis bench-driver`: what `bench latency` and `bench clients` start in a child process.
#[derive(clap::Args, Debug)]
pub struct DriverArgs {
    /// Port of the trellis to drive (loopback): its API, for the clients.
    #[arg(long)]
    port: u16,
    /// Port of its bridges' listener.
    #[arg(long)]
    bridge_port: u16,
    /// The tenant's API key, for the bridge and the clients.
    #[arg(long, env = KEY_VAR, hide_env_values = true)]
    key: String,
    /// MT5 account login the bridge presents.
    #[arg(long)]
    login: u64,
    /// Ticks per second asked for (closed loop: the achieved rate is reported).
    #[arg(long)]
    rate: u64,
    /// Seconds of ticks.
    #[arg(long)]
    seconds: u64,
    /// Every this many ticks opens a bar.
    #[arg(long, default_value_t = 10)]
    per_bar: u64,
    /// Trading clients to connect on `/ws/v1/client` before the bridge starts (0: none).
    #[arg(long, default_value_t = 0)]
    clients: usize,
    /// Of those, how many time every tick frame (the rest only count).
    #[arg(long, default_value_t = 0)]
    timed: usize,
    /// Symbols whose ticks each client follows.
    #[arg(long, value_delimiter = ',', default_value = "EURUSD")]
    symbols: Vec<String>,
    /// The trellis process, whose resident memory is read before and after the clients connect.
    #[arg(long)]
    server_pid: Option<u32>,
    /// API requests per second sent beside the bridge while it streams (0: none): `GET` of each of
    /// `api_path` in turn, with the bridge's key.
    #[arg(long, default_value_t = 0)]
    api_rate: u64,
    /// The API paths those requests read (e.g. `/api/v1/tenants/t1/positions`).
    #[arg(long, value_delimiter = ',')]
    api_path: Vec<String>,
    /// The API key for each of `api_path` (same order; the bridge's key when missing).
    #[arg(long, value_delimiter = ',', env = API_KEYS_VAR, hide_env_values = true)]
    api_keys: Vec<String>,
}

/// What the driver measured: the one JSON line it prints.
#[derive(Serialize, Deserialize)]
pub(super) struct Report {
    pub(super) driven: Driven,
    pub(super) clients: Option<ClientsReport>,
    #[serde(default)]
    pub(super) api: Option<ApiReport>,
}

/// The API requests sent beside the bridge, and how they were answered.
#[derive(Serialize, Deserialize, Default)]
pub(super) struct ApiReport {
    pub(super) sent: u64,
    /// 2xx answers.
    pub(super) ok: u64,
    /// 429 answers (a tenant's tier limit).
    pub(super) limited: u64,
    /// Other answers and transport errors.
    pub(super) failed: u64,
    /// Requests not sent because 256 were already waiting (the server fell behind the rate).
    pub(super) skipped: u64,
    pub(super) latency: Latencies,
}

/// What the clients cost and saw.
#[derive(Serialize, Deserialize)]
pub(super) struct ClientsReport {
    pub(super) connected: usize,
    pub(super) connect_secs: f64,
    /// trellis's resident memory before the clients connected and 500 ms after, in MB (0 if unknown).
    pub(super) server_rss_before_mb: f64,
    pub(super) server_rss_after_mb: f64,
    /// The driver's own resident memory, likewise: the client side of the connections.
    pub(super) driver_rss_before_mb: f64,
    pub(super) driver_rss_after_mb: f64,
    /// Tick frames the clients received while the bridge streamed (and 500 ms after).
    pub(super) frames: u64,
    /// Bridge sent a tick → a timed client received it.
    pub(super) fan_out: Latencies,
}

/// The clients the driver connects, for [`Spec`].
pub(super) struct ClientLoad {
    pub(super) count: usize,
    pub(super) timed: usize,
    pub(super) symbols: Vec<String>,
}

/// One run of the driver, from the bench's side.
pub(super) struct Spec<'a> {
    pub(super) port: u16,
    pub(super) bridge_port: u16,
    pub(super) key: &'a str,
    pub(super) login: u64,
    pub(super) rate: u64,
    pub(super) seconds: u64,
    pub(super) per_bar: u64,
    pub(super) clients: Option<ClientLoad>,
    /// API requests per second beside the bridge, reading these (path, API key) in turn.
    pub(super) api: Option<(u64, Vec<(String, String)>)>,
}

/// A child process killed (and reaped) when dropped: a bench that fails half-way leaves no driver behind.
struct KillOnDrop(Option<Child>);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Some(child) = &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Runs `trellis bench-driver` against the trellis on `spec.port` and returns what it measured.
pub(super) async fn spawn(spec: &Spec<'_>) -> anyhow::Result<Report> {
    let exe = std::env::current_exe().context("finding the trellis binary to start the driver")?;
    let mut cmd = Command::new(exe);
    cmd.arg("bench-driver")
        .args(["--port", &spec.port.to_string()])
        .args(["--bridge-port", &spec.bridge_port.to_string()])
        .args(["--login", &spec.login.to_string()])
        .args(["--rate", &spec.rate.to_string()])
        .args(["--seconds", &spec.seconds.to_string()])
        .args(["--per-bar", &spec.per_bar.to_string()])
        .args(["--server-pid", &std::process::id().to_string()])
        .env(KEY_VAR, spec.key)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    if let Some((rate, targets)) = &spec.api {
        let paths: Vec<&str> = targets.iter().map(|(p, _)| p.as_str()).collect();
        let keys: Vec<&str> = targets.iter().map(|(_, k)| k.as_str()).collect();
        cmd.args(["--api-rate", &rate.to_string()])
            .args(["--api-path", &paths.join(",")])
            .env(API_KEYS_VAR, keys.join(","));
    }
    if let Some(c) = &spec.clients {
        cmd.args(["--clients", &c.count.to_string()])
            .args(["--timed", &c.timed.to_string()])
            .args(["--symbols", &c.symbols.join(",")]);
    }
    let mut child = cmd.spawn().context("starting `trellis bench-driver`")?;
    let stdout = child
        .stdout
        .take()
        .context("the driver's standard output")?;
    let mut guard = KillOnDrop(Some(child));
    let reading = tokio::task::spawn_blocking(move || {
        let mut text = String::new();
        let mut stdout = stdout;
        stdout.read_to_string(&mut text).map(|_| text)
    });
    // Connecting clients, the run, its drain and the fan-out's settling, with room to spare.
    let limit = Duration::from_secs(spec.seconds + 120);
    let text = match tokio::time::timeout(limit, reading).await {
        Ok(read) => read
            .context("reading the driver's output")?
            .context("reading the driver's output")?,
        Err(_) => bail!(
            "`trellis bench-driver` did not finish within {} s; killed",
            limit.as_secs()
        ),
    };
    // Its output is closed: it is exiting.
    let mut child = guard.0.take().context("the driver process")?;
    let status = tokio::task::spawn_blocking(move || child.wait())
        .await
        .context("waiting for the driver")?
        .context("waiting for the driver")?;
    if !status.success() {
        bail!("`trellis bench-driver` failed ({status}); its error is above");
    }
    let line = text
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .context("`trellis bench-driver` printed no report")?;
    serde_json::from_str(line).context("parsing the report of `trellis bench-driver`")
}

/// The driver's side: connects the clients (if any), drives the bridge and prints the [`Report`].
pub async fn run(args: DriverArgs) -> anyhow::Result<()> {
    let counters = Arc::new(Counters {
        frames: AtomicU64::new(0),
        latencies: Mutex::new(Latencies::new()),
        sent_at: DashMap::new(),
    });
    let mut readers = Vec::with_capacity(args.clients);
    let mut clients = None;
    if args.clients > 0 {
        let server_before = server_rss(&args);
        let driver_before = rss_mb();
        let connecting = Instant::now();
        for i in 0..args.clients {
            readers.push(
                connect(&args, i < args.timed, counters.clone())
                    .await
                    .with_context(|| format!("client {i}"))?,
            );
        }
        let connect_secs = connecting.elapsed().as_secs_f64();
        tokio::time::sleep(Duration::from_millis(500)).await;
        clients = Some((
            connect_secs,
            server_before,
            server_rss(&args),
            driver_before,
            rss_mb(),
        ));
    }
    counters.frames.store(0, Ordering::Relaxed);
    let mut link = WsLink::open(args.bridge_port, &args.key, args.login).await?;
    let marks = clients.is_some().then_some(&counters.sent_at);
    let api_stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let api = (args.api_rate > 0 && !args.api_path.is_empty()).then(|| {
        let targets = args
            .api_path
            .iter()
            .enumerate()
            .map(|(i, path)| {
                let key = args.api_keys.get(i).unwrap_or(&args.key);
                (path.clone(), key.clone())
            })
            .collect();
        actix_web::rt::spawn(api_load(
            args.port,
            args.api_rate,
            targets,
            api_stop.clone(),
        ))
    });
    let driven = drive_link(&mut link, args.rate, args.seconds, args.per_bar, marks).await;
    api_stop.store(true, Ordering::Relaxed);
    let api = match api {
        Some(task) => Some(task.await.context("the API load task")?),
        None => None,
    };
    let driven = driven?;
    let clients = match clients {
        Some((connect_secs, server_before, server_after, driver_before, driver_after)) => {
            // The last tick frames still on their way to the clients.
            tokio::time::sleep(Duration::from_millis(500)).await;
            let fan_out = counters
                .latencies
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone();
            Some(ClientsReport {
                connected: readers.len(),
                connect_secs,
                server_rss_before_mb: server_before,
                server_rss_after_mb: server_after,
                driver_rss_before_mb: driver_before,
                driver_rss_after_mb: driver_after,
                frames: counters.frames.load(Ordering::Relaxed),
                fan_out,
            })
        }
        None => None,
    };
    for r in readers {
        r.abort();
    }
    let report = Report {
        driven,
        clients,
        api,
    };
    println!(
        "{}",
        serde_json::to_string(&report).context("encoding the report")?
    );
    Ok(())
}

/// `rate` GETs a second over `paths` in turn until `stop`, each on a task of its own so a slow answer
/// does not slow the pace (at most 256 waiting).
async fn api_load(
    port: u16,
    rate: u64,
    targets: Vec<(String, String)>,
    stop: Arc<std::sync::atomic::AtomicBool>,
) -> ApiReport {
    let report = Arc::new(Mutex::new(ApiReport::default()));
    let waiting = Arc::new(AtomicU64::new(0));
    let client = awc::Client::builder()
        .timeout(Duration::from_secs(10))
        .finish();
    let period = Duration::from_secs_f64(1.0 / rate.max(1) as f64);
    let mut ticker = tokio::time::interval(period);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut i = 0usize;
    let mut tasks = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        ticker.tick().await;
        if waiting.load(Ordering::Relaxed) >= 256 {
            report.lock().unwrap_or_else(|p| p.into_inner()).skipped += 1;
            continue;
        }
        let (path, key) = &targets[i % targets.len()];
        let url = format!("http://127.0.0.1:{port}{path}");
        i += 1;
        let (client, key, report, waiting) =
            (client.clone(), key.clone(), report.clone(), waiting.clone());
        waiting.fetch_add(1, Ordering::Relaxed);
        tasks.push(actix_web::rt::spawn(async move {
            let sent = Instant::now();
            let status = match client
                .get(url)
                .insert_header(("X-API-Key", key))
                .send()
                .await
            {
                Ok(mut resp) => {
                    let _ = resp.body().limit(1 << 22).await;
                    Some(resp.status())
                }
                Err(_) => None,
            };
            waiting.fetch_sub(1, Ordering::Relaxed);
            let mut r = report.lock().unwrap_or_else(|p| p.into_inner());
            r.sent += 1;
            r.latency.record(sent.elapsed());
            match status {
                Some(s) if s.is_success() => r.ok += 1,
                Some(s) if s.as_u16() == 429 => r.limited += 1,
                _ => r.failed += 1,
            }
        }));
        if tasks.len() > 4_096 {
            tasks.retain(|t| !t.is_finished());
        }
    }
    for t in tasks {
        let _ = t.await;
    }
    let mut r = report.lock().unwrap_or_else(|p| p.into_inner());
    std::mem::take(&mut *r)
}

fn server_rss(args: &DriverArgs) -> f64 {
    args.server_pid.and_then(rss_of).unwrap_or(0.0)
}

/// What the client readers share with the driver.
struct Counters {
    frames: AtomicU64,
    latencies: Mutex<Latencies>,
    /// When the bridge sent the tick of each `time_msc`.
    sent_at: DashMap<i64, Instant>,
}

/// A client subscribed to the ticks of every symbol; its reader counts (and when `timed`, times) each tick.
async fn connect(
    args: &DriverArgs,
    timed: bool,
    counters: Arc<Counters>,
) -> anyhow::Result<actix_web::rt::task::JoinHandle<()>> {
    let (_resp, conn) = crate::sim::client::ws_client()
        .ws(format!("ws://127.0.0.1:{}/ws/v1/client", args.port))
        .header("X-API-Key", args.key.as_str())
        .max_frame_size(1 << 20)
        .connect()
        .await
        .map_err(|e| anyhow::anyhow!("connect: {e}"))?;
    let (mut sink, mut stream) = conn.split();
    let channels: Vec<String> = args.symbols.iter().map(|s| format!("ticks:{s}")).collect();
    let subscribe = json!({"op": "subscribe", "id": "s", "channels": channels});
    sink.send(ws::Message::Text(subscribe.to_string().into()))
        .await?;
    let mut snapshots = 0;
    while snapshots < args.symbols.len() {
        match stream.next().await {
            Some(Ok(ws::Frame::Text(b))) => {
                if serde_json::from_slice::<Value>(&b).is_ok_and(|v| v["type"] == "snapshot") {
                    snapshots += 1;
                }
            }
            Some(Ok(_)) => {}
            other => bail!("no snapshots: {:?}", other.map(|f| f.map(|_| ()))),
        }
    }
    Ok(actix_web::rt::spawn(async move {
        let _sink = sink; // kept open
        while let Some(Ok(frame)) = stream.next().await {
            let ws::Frame::Text(b) = frame else { continue };
            let arrived = Instant::now();
            counters.frames.fetch_add(1, Ordering::Relaxed);
            if !timed {
                continue;
            }
            let Ok(v) = serde_json::from_slice::<Value>(&b) else {
                continue;
            };
            if let Some(at) = v["data"]["time_msc"]
                .as_i64()
                .and_then(|t| counters.sent_at.get(&t).map(|s| *s))
            {
                counters
                    .latencies
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .record(arrived.saturating_duration_since(at));
            }
        }
    }))
}
