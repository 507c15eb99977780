//! `trellis bench recovery`: how long trading stalls across a restart. A real `trellis serve` child process
//! (this same binary) trades three symbols with the simulated terminal; it is stopped 20 times — SIGTERM and
//! SIGKILL in turn — and started again on the same data and port. Each figure is the time from starting the
//! new process to the terminal executing its next order: process start, stores, the bridge's reconnect,
//! reconciliation, and the strategies' next signal.
//!
//! Then decisions (issue 36): an `ema_cross` 20/100 on a real-time clock restarted with SIGKILL and SIGTERM —
//! restart → strategy ready, and the first bar after the restart → its decision; and the warm-up of 1 000
//! tenants × 5 strategies from stored history.

use std::time::{Duration, Instant};

use anyhow::Context as _;

use super::{percentile, rss_mb, rss_of};
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
    let mut result = run(&dir).await;
    if result.is_ok() {
        result = warm_restarts(&dir).await;
    }
    if result.is_ok() {
        result = warm_many(&dir, 1_000).await;
    }
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

// ---- decisions after a restart (issue 36) -------------------------------------------------------------

const WARM_KEY: &str = "trk_bench002_warm-up-secret";

/// The tenant's first strategy's warm-up, as the API shows it: (state, warmed_by, last_bar_ms).
async fn warm_state(
    spec: &NodeSpec,
    tenant: &str,
    key: &str,
) -> Option<(String, String, Option<i64>)> {
    let mut resp = awc::Client::default()
        .get(format!("{}/api/v1/tenants/{tenant}/strategies", spec.url()))
        .insert_header(("X-API-Key", key))
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .ok()?;
    let v: serde_json::Value = resp.json().limit(1 << 22).await.ok()?;
    let w = &v["strategies"][0]["warm_up"];
    Some((
        w["state"].as_str()?.to_owned(),
        w["warmed_by"].as_str().unwrap_or("").to_owned(),
        w["last_bar_ms"].as_i64(),
    ))
}

/// An `ema_cross` 20/100 on EURUSD M1 on a real-time clock: the terminal has 400 minutes of history and
/// quotes four times a second. After each restart (SIGKILL, then SIGTERM): restart → strategy ready, and the
/// first bar closing after the restart → its decision (the strategy's `last_bar_ms` reaching it). A cold start
/// would decide nothing for 100 minutes.
pub async fn warm_restarts(dir: &std::path::Path) -> anyhow::Result<()> {
    use rand::{Rng, SeedableRng};
    let config = dir.join("warm.toml");
    std::fs::write(
        &config,
        format!(
            "[[tenants]]\nid = \"acme\"\nname = \"Acme\"\ntier = \"professional\"\napi_keys = [\"{WARM_KEY}\"]\n\
             symbols = [\"EURUSD\"]\n\n[[tenants.strategies]]\nid = \"ema\"\nkind = \"ema_cross\"\n\
             symbol = \"EURUSD\"\ntimeframe = \"M1\"\nvolume = 0.1\nparams = {{ fast = 20, slow = 100 }}\n"
        ),
    )?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let spec = NodeSpec {
        binary: std::env::current_exe().context("the trellis binary")?,
        config,
        data_dir: dir.join("warm-data"),
        port,
        env: vec![("TRELLIS__LOG__LEVEL".into(), "warn".into())],
        log: dir.join("warm.log"),
    };
    let now = crate::domain::now_ms();
    let names = vec!["EURUSD".to_owned()];
    let mut cfg = SimConfig::new(spec.ws_url(), WARM_KEY, 9002);
    cfg.heartbeat_ms = 200;
    cfg.history = RandomWalk::new(
        RandomWalk::default_symbols(&names),
        now - 400 * 60_000,
        10_000,
        3,
    )
    .with_steps(6, 2)
    .take(400 * 6 - 1)
    .collect();
    let mut mid = cfg
        .history
        .last()
        .map_or(rust_decimal::Decimal::ONE, |t| t.bid);
    let mut node = spec.start()?;
    node.wait_ready(&spec, Duration::from_secs(30))
        .await
        .map_err(anyhow::Error::msg)?;
    let sim = crate::sim::spawn(cfg);
    // Live quotes on the wall clock, four a second.
    let feeder = sim.feeder();
    let feed = actix_rt::spawn(async move {
        let mut rng = rand::rngs::SmallRng::seed_from_u64(4);
        let point = rust_decimal::Decimal::new(1, 5);
        loop {
            tokio::time::sleep(Duration::from_millis(250)).await;
            mid += rust_decimal::Decimal::from(rng.gen_range(-6i64..=6)) * point;
            let tick = crate::domain::Tick {
                symbol: crate::domain::Symbol::new("EURUSD"),
                time_msc: crate::domain::now_ms(),
                bid: mid,
                ask: mid + point * rust_decimal::Decimal::from(2),
            };
            if !feeder.tick(tick) {
                return;
            }
        }
    });
    let wait_ready = |spec: &NodeSpec| {
        let spec = spec.clone();
        async move {
            let start = Instant::now();
            while start.elapsed() < Duration::from_secs(60) {
                if let Some((state, by, last)) = warm_state(&spec, "acme", WARM_KEY).await {
                    if state == "ready" {
                        return Ok((by, last));
                    }
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            anyhow::bail!("the strategy did not warm up within a minute")
        }
    };
    let started = Instant::now();
    let (by, _) = wait_ready(&spec).await?;
    println!(
        "recovery (warm-up): first start on an empty store, ema_cross 20/100 M1 warm from the terminal's 400 bars ({by}) in {:.0} ms",
        started.elapsed().as_secs_f64() * 1e3
    );
    for how in [Stop::Kill, Stop::Term] {
        // A bar or two of trading on the live clock, then the stop.
        tokio::time::sleep(Duration::from_secs(5)).await;
        node.stop(how, Duration::from_secs(15)).await?;
        let started = Instant::now();
        node = spec.start()?;
        node.wait_ready(&spec, Duration::from_secs(30))
            .await
            .map_err(anyhow::Error::msg)?;
        let (by, last) = wait_ready(&spec).await?;
        let ready = started.elapsed();
        // The first bar that closes after the restart: its close is the next minute boundary.
        let last = last.unwrap_or_default();
        let next_close = (crate::domain::now_ms() / 60_000 + 1) * 60_000;
        let decided = loop {
            if let Some((_, _, Some(bar))) = warm_state(&spec, "acme", WARM_KEY).await {
                if bar > last {
                    break crate::domain::now_ms() - (bar + 60_000);
                }
            }
            if crate::domain::now_ms() > next_close + 30_000 {
                anyhow::bail!("no bar decided within 30 s of its close after the {how:?} restart");
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        println!(
            "recovery (warm-up): {how:?} restart → strategy ready ({by}) {:.0} ms; first bar after the restart decided {decided} ms after its close (at most one 250 ms tick late: bars close on the first tick after the boundary); a cold start would decide nothing for 100 minutes",
            ready.as_secs_f64() * 1e3
        );
    }
    feed.abort();
    let _ = node.stop(Stop::Term, Duration::from_secs(15)).await;
    let _ = sim.stop().await;
    Ok(())
}

/// 1 000 tenants × 5 strategies (ema_cross 20/100 and 10/50, rsi_reversion 14 and 30, donchian_breakout 55) on
/// stored history: from starting `trellis serve` to every strategy warm (from the store alone: no terminal).
pub async fn warm_many(dir: &std::path::Path, tenants: usize) -> anyhow::Result<()> {
    let mut toml = String::new();
    for i in 0..tenants {
        toml.push_str(&format!(
            "[[tenants]]\nid = \"t{i:04}\"\nname = \"t{i:04}\"\ntier = \"professional\"\napi_keys = [\"trk_t{i:04}000_key\"]\n\
             symbols = [\"EURUSD\"]\n"
        ));
        for (id, kind, params) in [
            ("ema-slow", "ema_cross", "fast = 20, slow = 100"),
            ("ema-fast", "ema_cross", "fast = 10, slow = 50"),
            ("rsi-14", "rsi_reversion", "period = 14"),
            ("rsi-30", "rsi_reversion", "period = 30"),
            ("donchian", "donchian_breakout", "period = 55"),
        ] {
            toml.push_str(&format!(
                "\n[[tenants.strategies]]\nid = \"{id}\"\nkind = \"{kind}\"\nsymbol = \"EURUSD\"\n\
                 timeframe = \"M1\"\nvolume = 0.1\nparams = {{ {params} }}\n"
            ));
        }
        toml.push('\n');
    }
    let config = dir.join("many.toml");
    std::fs::write(&config, toml)?;
    let data_dir = dir.join("many-data");
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let spec = NodeSpec {
        binary: std::env::current_exe().context("the trellis binary")?,
        config,
        data_dir: data_dir.clone(),
        port,
        env: vec![
            ("TRELLIS__LOG__LEVEL".into(), "info".into()),
            ("TRELLIS__MT5__WARM_UP_WAIT_MS".into(), "0".into()),
        ],
        log: dir.join("many.log"),
    };
    // A first start creates the stores; then 300 bars of history per tenant go in.
    let mut node = spec.start()?;
    node.wait_ready(&spec, Duration::from_secs(120))
        .await
        .map_err(anyhow::Error::msg)?;
    node.stop(Stop::Term, Duration::from_secs(60)).await?;
    let url = format!(
        "sqlite://{}?mode=rw",
        data_dir.join("timeseries.db").display()
    );
    let pool = sqlx::SqlitePool::connect(&url).await?;
    let names = vec!["EURUSD".to_owned()];
    let mut builder = crate::domain::bars::BarBuilder::new(&[crate::domain::Timeframe::M1]);
    let mut bars = Vec::new();
    for t in RandomWalk::new(
        RandomWalk::default_symbols(&names),
        1_700_000_040_000,
        20_000,
        8,
    )
    .with_steps(6, 2)
    .take(301 * 3)
    {
        if let crate::domain::bars::TickOutcome::Accepted(closed) = builder.on_tick(&t) {
            bars.extend(closed);
        }
    }
    let mut tx = pool.begin().await?;
    for i in 0..tenants {
        for b in &bars {
            sqlx::query("INSERT OR REPLACE INTO bars (tenant_id, symbol, timeframe, open_time_ms, open, high, low, close, tick_volume) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)")
                .bind(format!("t{i:04}"))
                .bind(b.symbol.as_str())
                .bind(b.timeframe.as_str())
                .bind(b.open_time_ms)
                .bind(b.open.to_string())
                .bind(b.high.to_string())
                .bind(b.low.to_string())
                .bind(b.close.to_string())
                .bind(b.tick_volume as i64)
                .execute(&mut *tx)
                .await?;
        }
    }
    tx.commit().await?;
    pool.close().await;
    let before = std::fs::read_to_string(&spec.log)?
        .matches("warmed up")
        .count();
    let started = Instant::now();
    let mut node = spec.start()?;
    let want = tenants * 5;
    let (mut warm, mut peak) = (0, 0.0f64);
    while warm < want {
        if started.elapsed() > Duration::from_secs(300) {
            anyhow::bail!("{warm} of {want} strategies warm after 5 minutes");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        peak = peak.max(rss_of(node.pid()).unwrap_or(0.0));
        warm = std::fs::read_to_string(&spec.log)?
            .matches("warmed up")
            .count()
            - before;
    }
    println!(
        "recovery (warm-up): {tenants} tenants × 5 strategies ({} bars each) warm from the store {:.2} s after the process started; trellis RSS {:.0} MB",
        bars.len(),
        started.elapsed().as_secs_f64(),
        peak
    );
    node.stop(Stop::Term, Duration::from_secs(60)).await?;
    Ok(())
}
