//! `trellis bench logs`: 100 tenants × 30 simulated days of a realistic log volume through the three tiers
//! on a simulated clock (the mover runs once per simulated day), then the clock moves on past the warm
//! period so every day written is cold. Printed: entries and bytes per tier (as the stores report them),
//! bytes per raw byte, the monthly cost against keeping everything hot at the seeds' prices, entries lost
//! (written − held, counted in the tiers themselves), and the p50/p99 of a one-day query of one tenant in
//! each tier.
//!
//! Embedded stores by default (SQLite hot and warm, Parquet files); with `TRELLIS_TEST_REDIS_URL` and
//! `TRELLIS_TEST_CLICKHOUSE_URL` set (`eval "$(scripts/services.sh)"`) Redis and ClickHouse. Volume:
//! `TRELLIS_BENCH_LOG_TENANTS` (100), `TRELLIS_BENCH_LOG_DAYS` (30), `TRELLIS_BENCH_LOG_PER_DAY` (entries per
//! tenant per day, 400).

use std::time::{Duration, Instant};

use anyhow::Context as _;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde_json::json;

use super::Latencies;
use crate::config::{Profile, Settings};
use crate::storage::logs::mover::{Batches, Mover};
use crate::storage::logs::store::{CostReport, LogStore};
use crate::storage::logs::{day_of, LogEntry, LogQuery, DAY_MS};

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// One tenant's day: orders, fills and positions of a few strategies, risk checks, audit entries and the
/// application's own lines, in the proportions a trading day has them.
fn day_entries(rng: &mut SmallRng, tenant: &str, day: i64, n: u64, seq: &mut u64) -> Vec<LogEntry> {
    const SYMBOLS: [&str; 4] = ["EURUSD", "GBPUSD", "USDJPY", "XAUUSD"];
    const STRATEGIES: [&str; 3] = ["ema_cross", "rsi_reversion", "donchian_breakout"];
    let mut out = Vec::with_capacity(n as usize);
    for i in 0..n {
        *seq += 1;
        let at_ms = day * DAY_MS + (i as i64 * DAY_MS / n as i64) + rng.gen_range(0..1_000);
        let symbol = SYMBOLS[rng.gen_range(0..SYMBOLS.len())];
        let strategy = STRATEGIES[rng.gen_range(0..STRATEGIES.len())];
        let price = 1.05 + rng.gen::<f64>() * 0.1;
        let (kind, level, message, data) = match rng.gen_range(0..100) {
            0..=19 => (
                "order",
                "info",
                "order",
                json!({"client_id": format!("{strategy}:{}", *seq), "symbol": symbol, "side": if i % 2 == 0 { "buy" } else { "sell" }, "volume": "0.10", "type": "ORDER_TYPE_BUY", "price": format!("{price:.5}"), "status": "filled", "strategy": strategy}),
            ),
            20..=34 => (
                "fill",
                "info",
                "fill",
                json!({"deal": 10_000_000 + *seq, "order": 9_000_000 + *seq, "symbol": symbol, "volume": "0.10", "price": format!("{price:.5}"), "commission": "-0.70", "profit": format!("{:.2}", rng.gen::<f64>() * 40.0 - 20.0)}),
            ),
            35..=49 => (
                "position",
                "info",
                "position",
                json!({"symbol": symbol, "volume": "0.30", "avg_price": format!("{price:.5}"), "unrealised": format!("{:.2}", rng.gen::<f64>() * 100.0 - 50.0)}),
            ),
            50..=54 => (
                "risk",
                "warn",
                "risk_refused",
                json!({"reason": "max position exceeded", "symbol": symbol, "limit": "1.00", "strategy": strategy}),
            ),
            55..=57 => (
                "audit",
                "info",
                "login.ok",
                json!({"seq": *seq, "entry": {"action": "login.ok", "actor": format!("user-{}", rng.gen_range(0..5))}, "hash": format!("{:064x}", rng.gen::<u128>())}),
            ),
            _ => (
                "app",
                "info",
                "bar closed",
                json!({"symbol": symbol, "timeframe": "M1", "strategy": strategy, "signal": if rng.gen_bool(0.1) { "buy" } else { "none" }, "target": "trellis::actors::strategy"}),
            ),
        };
        out.push(LogEntry {
            id: format!("bench-{}", *seq),
            tenant: tenant.to_owned(),
            at_ms,
            kind: kind.into(),
            level: level.into(),
            message: message.into(),
            data: data.to_string(),
        });
    }
    out
}

fn print_cost(when: &str, c: &CostReport) {
    println!("  {when}:");
    for (tier, u) in [("hot", &c.hot), ("warm", &c.warm), ("cold", &c.cold)] {
        println!(
            "    {tier:<4} {:>10} entries  {:>12} raw bytes  {:>12} bytes  {:>6.3} bytes/raw byte  ${:.6}/month",
            u.entries, u.raw_bytes, u.bytes, u.ratio, u.usd_per_month
        );
    }
    println!(
        "    total ${:.6}/month; all hot {} bytes, ${:.6}/month; reduction {:.1} %",
        c.usd_per_month, c.all_hot_bytes, c.all_hot_usd_per_month, c.reduction_percent
    );
}

/// p50/p99 of `n` one-day queries of a random tenant in `days`, against `query`.
async fn day_queries<F, Fut>(
    rng: &mut SmallRng,
    tenants: u64,
    days: &[i64],
    n: usize,
    query: F,
) -> anyhow::Result<String>
where
    F: Fn(LogQuery) -> Fut,
    Fut: std::future::Future<Output = Result<Vec<LogEntry>, crate::storage::StorageError>>,
{
    let mut lat = Latencies::new();
    let mut rows = 0usize;
    for _ in 0..n {
        let day = days[rng.gen_range(0..days.len())];
        let q = LogQuery {
            tenant: format!("t{:03}", rng.gen_range(0..tenants)),
            from_ms: day * DAY_MS,
            to_ms: (day + 1) * DAY_MS,
            limit: 1_000,
            ..Default::default()
        };
        let started = Instant::now();
        rows += query(q).await?.len();
        lat.record(started.elapsed());
    }
    Ok(format!(
        "{} ({} queries, {:.0} entries each)",
        lat.summary(&[50.0, 99.0]),
        n,
        rows as f64 / n as f64
    ))
}

pub async fn run() -> anyhow::Result<()> {
    let tenants = env("TRELLIS_BENCH_LOG_TENANTS", 100);
    let days = env("TRELLIS_BENCH_LOG_DAYS", 30) as i64;
    let per_day = env("TRELLIS_BENCH_LOG_PER_DAY", 400);
    let dir = tempfile_dir()?;
    let mut vars = vec![(
        "TRELLIS__STORAGE__DATA_DIR".to_owned(),
        dir.display().to_string(),
    )];
    let redis = std::env::var("TRELLIS_TEST_REDIS_URL")
        .ok()
        .filter(|u| !u.is_empty());
    let clickhouse = std::env::var("TRELLIS_TEST_CLICKHOUSE_URL")
        .ok()
        .filter(|u| !u.is_empty());
    if let (Some(r), Some(c)) = (&redis, &clickhouse) {
        vars.push(("TRELLIS__STORAGE__REDIS_URL".into(), r.clone()));
        vars.push(("TRELLIS__STORAGE__CLICKHOUSE_URL".into(), c.clone()));
        vars.push((
            "TRELLIS__STORAGE__CLICKHOUSE_DATABASE".into(),
            format!(
                "bench_logs_{}",
                &uuid::Uuid::new_v4().simple().to_string()[..8]
            ),
        ));
    }
    let settings = Settings::load(Profile::Test, None, vars).context("bench settings")?;
    let store = LogStore::open(&settings)
        .await
        .context("opening the log tiers")?;
    println!(
        "logs: {tenants} tenants × {days} days × {per_day} entries per tenant-day; hot {}, warm {}, cold Parquet (zstd) in {}",
        store.hot.store(),
        store.warm.store(),
        dir.display()
    );
    let mut mover = Mover::new(store.clone(), Batches::Sqlite(store.sqlite.clone()));
    let mut rng = SmallRng::seed_from_u64(17);
    // Simulated days end well before today, so no real-time entry (this process writes none) interferes.
    let first =
        day_of(crate::domain::now_ms()) - days - 2 * settings.log_tiers.warm_days as i64 - 10;
    let mut seq = 0u64;
    let mut written = 0u64;
    let started = Instant::now();
    let mut move_time = Duration::ZERO;
    for d in 0..days {
        let day = first + d;
        for t in 0..tenants {
            let entries = day_entries(&mut rng, &format!("t{t:03}"), day, per_day, &mut seq);
            written += entries.len() as u64;
            store.hot.append(&entries).await?;
        }
        // The mover's round an hour into the next day.
        let m = Instant::now();
        mover.round((day + 1) * DAY_MS + 3_600_000).await?;
        move_time += m.elapsed();
    }
    println!(
        "  wrote {written} entries in {:.1} s (mover rounds {:.1} s of it)",
        started.elapsed().as_secs_f64(),
        move_time.as_secs_f64()
    );
    let now_a = (first + days) * DAY_MS + 3_600_000;
    let at_30 = store.cost().await?;
    print_cost(
        &format!("after {days} days (clock at the end of the last day)"),
        &at_30,
    );
    let hot_days: Vec<i64> = vec![first + days - 1];
    let warm_days: Vec<i64> = (first..first + days - 1).collect();
    let hot_q = day_queries(&mut rng, tenants, &hot_days, 200, |q| {
        let s = store.clone();
        async move { s.hot.query(&q).await }
    })
    .await?;
    let warm_q = day_queries(&mut rng, tenants, &warm_days, 200, |q| {
        let s = store.clone();
        async move { s.warm.query(&q).await }
    })
    .await?;
    let _ = now_a;

    // The clock moves past the warm period: every day written goes cold.
    let later = (first + days + settings.log_tiers.warm_days as i64 + 1) * DAY_MS;
    let m = Instant::now();
    let report = mover.round(later).await?;
    println!(
        "  {} entries moved warm → cold in {:.1} s ({} batches)",
        report.warm_to_cold,
        m.elapsed().as_secs_f64(),
        report.batches.len()
    );
    let aged = store.cost().await?;
    print_cost(
        &format!("{} days later (all cold)", settings.log_tiers.warm_days + 1),
        &aged,
    );
    let all_days: Vec<i64> = (first..first + days).collect();
    let cold_q = day_queries(&mut rng, tenants, &all_days, 200, |q| {
        let s = store.clone();
        async move { s.cold.query(&q).await }
    })
    .await?;
    let held = aged.hot.entries + aged.warm.entries + aged.cold.entries;
    println!(
        "  entries written {written}, held {held}, lost {}",
        written.saturating_sub(held)
    );
    println!("  one-day query of one tenant (limit 1 000):");
    println!("    hot  {hot_q}");
    println!("    warm {warm_q}");
    println!("    cold {cold_q}");
    if held != written {
        anyhow::bail!(
            "{} entries lost or duplicated",
            written as i64 - held as i64
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

fn tempfile_dir() -> anyhow::Result<std::path::PathBuf> {
    let dir = std::env::temp_dir().join(format!(
        "trellis-bench-logs-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    ));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}
