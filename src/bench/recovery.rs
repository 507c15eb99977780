//! `trellis bench recovery`: how long trading stalls across a restart. A real `trellis serve` child process
//! (this same binary) trades three symbols with the simulated terminal; it is stopped 20 times — SIGTERM and
//! SIGKILL in turn — and started again on the same data and port. Each figure is the time from starting the
//! new process to the terminal executing its next order: process start, stores, the bridge's reconnect,
//! reconciliation, and the strategies' next signal.

use std::time::{Duration, Instant};

use anyhow::Context as _;

use super::{percentile, rss_mb};
use crate::sim::feed::{pace, RandomWalk};
use crate::sim::node::{trading_config, NodeSpec, Stop};
use crate::sim::SimConfig;

const KEY: &str = "trk_bench001_recovery-secret";
const RESTARTS: usize = 20;

pub async fn recovery() -> anyhow::Result<()> {
    let dir = std::env::temp_dir().join(format!(
        "trellis-bench-recovery-{}",
        uuid::Uuid::new_v4().simple()
    ));
    std::fs::create_dir_all(&dir)?;
    let result = run(&dir).await;
    let _ = std::fs::remove_dir_all(&dir);
    result
}

async fn run(dir: &std::path::Path) -> anyhow::Result<()> {
    let symbols = ["EURUSD", "GBPUSD", "USDJPY"];
    let config = dir.join("trellis.toml");
    std::fs::write(&config, trading_config(KEY, &symbols))?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let spec = NodeSpec {
        binary: std::env::current_exe().context("the trellis binary")?,
        config,
        data_dir: dir.join("data"),
        port,
        env: vec![("TRELLIS__LOG__LEVEL".into(), "warn".into())],
        log: dir.join("trellis.log"),
    };
    let mut node = spec.start()?;
    node.wait_ready(&spec, Duration::from_secs(30))
        .await
        .map_err(anyhow::Error::msg)?;
    let mut cfg = SimConfig::new(spec.ws_url(), KEY, 9001);
    cfg.heartbeat_ms = 200;
    let sim = crate::sim::spawn(cfg);
    let feeder = sim.feeder();
    let names: Vec<String> = symbols.iter().map(|s| s.to_string()).collect();
    let walk = RandomWalk::new(
        RandomWalk::default_symbols(&names),
        1_700_000_040_000,
        3_000,
        5,
    )
    .with_steps(8, 2);
    let feed = actix_rt::spawn(async move { pace(&feeder, walk, 200).await });
    let deals = || sim.broker.lock().map(|b| b.deals().len()).unwrap_or(0);
    let wait_deal = |after: usize, timeout: Duration| async move {
        let start = Instant::now();
        while start.elapsed() < timeout {
            if deals() > after {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        false
    };
    if !wait_deal(2, Duration::from_secs(30)).await {
        anyhow::bail!("no trading before the first restart");
    }
    let (mut term, mut kill) = (Vec::new(), Vec::new());
    for i in 0..RESTARTS {
        let how = if i % 2 == 0 { Stop::Term } else { Stop::Kill };
        // Stop right as an order comes back, when results and fills are in flight.
        wait_deal(deals(), Duration::from_secs(10)).await;
        node.stop(how, Duration::from_secs(15)).await?;
        let before = deals();
        node = spec.start()?;
        node.wait_ready(&spec, Duration::from_secs(30))
            .await
            .map_err(anyhow::Error::msg)?;
        if !wait_deal(before, Duration::from_secs(30)).await {
            anyhow::bail!("no order executed after restart {i} ({how:?})");
        }
        let took = node.started.elapsed();
        match how {
            Stop::Term => term.push(took),
            Stop::Kill => kill.push(took),
        }
    }
    feed.abort();
    let _ = node.stop(Stop::Term, Duration::from_secs(15)).await;
    let _ = sim.stop().await;
    let mut all: Vec<Duration> = term.iter().chain(kill.iter()).copied().collect();
    all.sort();
    term.sort();
    kill.sort();
    let ms = |d: Duration| format!("{:.0} ms", d.as_secs_f64() * 1e3);
    println!(
        "recovery: {} restarts, restart → first order executed: p50 {} max {} (SIGTERM p50 {} max {}; SIGKILL p50 {} max {}); bench process RSS {:.0} MB",
        all.len(),
        ms(percentile(&all, 0.5)),
        ms(all.last().copied().unwrap_or_default()),
        ms(percentile(&term, 0.5)),
        ms(term.last().copied().unwrap_or_default()),
        ms(percentile(&kill, 0.5)),
        ms(kill.last().copied().unwrap_or_default()),
        rss_mb()
    );
    Ok(())
}
