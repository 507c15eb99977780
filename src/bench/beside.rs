//! `trellis bench beside`: tick → order over loopback at 10 000 ticks/s (the bridge in a second process),
//! quiet and while other work runs beside it in the same trellis (issue 29's targets: each within 10 % of
//! the quiet p99):
//!
//! - (a) **optimisation**: `POST /api/v1/tenants/{t}/optimisations`, an `ema_cross` grid of 1 000
//!   combinations on the tenant's stored ticks, run by the optimisation job on its threads;
//! - (b) **training**: a logistic model trained walk-forward on a year of M1 bars, back to back, on a thread of
//!   its own at the lowest priority (as a training job runs it);
//! - (c) **API**: 500 requests/s across three tenants (positions, orders, the tenant), sent by the driver
//!   process beside the bridge;
//! - (d) **log movement**: rounds of the log tiers' mover back to back.
//!
//! The scenarios alternate with quiet runs (quiet, a, quiet, b, …) so a machine that gets busier
//! mid-benchmark weighs on both sides; each load is compared with the mean of the quiet runs around it.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use serde_json::{json, Value};

use super::closed_loop::{report_latency, Driven};
use super::driver::{self, Spec};
use super::{bench_tenant, flip, start, strategy, Running};
use crate::domain::Timeframe;
use crate::models::training::{self, Progress};

const RATE: u64 = 10_000;
const SECONDS: u64 = 5;
const LOGIN: u64 = 4646;
const TENANTS: [(&str, &str); 3] = [
    ("bes1", "trk_beside01_bench-secret-key"),
    ("bes2", "trk_beside02_bench-secret-key"),
    ("bes3", "trk_beside03_bench-secret-key"),
];
/// API requests per second of scenario (c).
const API_RATE: u64 = 500;

#[derive(Clone, Copy, Debug)]
enum Load {
    Quiet,
    Optimisation,
    Training,
    Api,
    Logs,
}

impl Load {
    fn label(self) -> &'static str {
        match self {
            Load::Quiet => "quiet",
            Load::Optimisation => "(a) beside an optimisation of 1 000 combinations",
            Load::Training => "(b) beside a training job",
            Load::Api => "(c) beside 500 API requests/s across 3 tenants",
            Load::Logs => "(d) beside log movement rounds",
        }
    }
}

pub(super) async fn run() -> anyhow::Result<()> {
    let mut quiet: Vec<Driven> = Vec::new();
    let (first, _) = scenario(Load::Quiet).await?;
    report_latency(&line(Load::Quiet), &first, SECONDS);
    quiet.push(first);
    for load in [Load::Optimisation, Load::Training, Load::Api, Load::Logs] {
        let (driven, what) = scenario(load).await?;
        report_latency(&format!("{} ({what})", line(load)), &driven, SECONDS);
        let (after, _) = scenario(Load::Quiet).await?;
        report_latency(&line(Load::Quiet), &after, SECONDS);
        let before = quiet.last().map(p99_us).unwrap_or(0.0);
        let reference = (before + p99_us(&after)) / 2.0;
        quiet.push(after);
        let p99 = p99_us(&driven);
        let change = if reference > 0.0 {
            (p99 / reference - 1.0) * 100.0
        } else {
            0.0
        };
        println!(
            "beside: {}: p99 {p99:.0} µs against {reference:.0} µs quiet (the quiet runs before and after): {change:+.1} %{}",
            load.label(),
            if change <= 10.0 { "" } else { " — over the 10 % target" }
        );
    }
    Ok(())
}

/// One measured run on a fresh trellis (as `bench latency`'s runs): three tenants trading `flip`, the
/// first driven by the bridge, `load` beside it.
async fn scenario(load: Load) -> anyhow::Result<(Driven, String)> {
    let app = start(&[]).await?;
    app.runtime.strategies.register("flip", flip);
    let outcome = async {
        for (id, key) in TENANTS {
            app.runtime
                .start_tenant(bench_tenant(
                    id,
                    key,
                    vec![strategy("flip", "flip", "EURUSD")],
                ))
                .await?;
        }
        beside(&app, load).await
    }
    .await;
    app.stop().await;
    outcome
}

fn line(load: Load) -> String {
    format!(
        "beside: tick → order @ {RATE} ticks/s, loopback, {}",
        load.label()
    )
}

fn p99_us(d: &Driven) -> f64 {
    d.samples.at(0.99).as_secs_f64() * 1e6
}

/// One loopback run of the driver on the first tenant (with API load when `api` is given).
async fn drive(app: &Running, api: Option<(u64, Vec<(String, String)>)>) -> anyhow::Result<Driven> {
    Ok(run_driver(app, TENANTS[0].1, LOGIN, api).await?.driven)
}

async fn run_driver(
    app: &Running,
    key: &str,
    login: u64,
    api: Option<(u64, Vec<(String, String)>)>,
) -> anyhow::Result<driver::Report> {
    driver::spawn(&Spec {
        port: app.port,
        bridge_port: app.bridge,
        key,
        login,
        rate: RATE,
        seconds: SECONDS,
        per_bar: 10,
        clients: None,
        api,
    })
    .await
}

/// A run with `load` beside it; what the load did meanwhile.
async fn beside(app: &Running, load: Load) -> anyhow::Result<(Driven, String)> {
    match load {
        Load::Quiet => Ok((drive(app, None).await?, String::new())),
        Load::Optimisation => optimisation(app).await,
        Load::Training => {
            let bars = Arc::new(crate::models::synthetic::bars_from_returns(
                &crate::models::synthetic::ar1_returns(370_000, 0.1, 0.0003, 2026),
            ));
            let stop = Arc::new(AtomicBool::new(false));
            let trainer = {
                let (stop, bars) = (stop.clone(), bars.clone());
                training::run_low_priority(move || {
                    let mut runs = 0u32;
                    while !stop.load(Ordering::Relaxed) {
                        let _ = training::train(
                            &super::training::spec(),
                            &bars,
                            Timeframe::M1,
                            &Progress::default(),
                        );
                        runs += 1;
                    }
                    runs
                })
            };
            let driven = drive(app, None).await;
            stop.store(true, Ordering::Relaxed);
            let runs = trainer.await.map_err(anyhow::Error::msg)?;
            Ok((
                driven?,
                format!("{runs} trainings of 370 000 bars finished meanwhile"),
            ))
        }
        Load::Api => {
            let targets = TENANTS
                .iter()
                .flat_map(|(t, key)| {
                    [
                        format!("/api/v1/tenants/{t}/positions"),
                        format!("/api/v1/tenants/{t}/orders"),
                        format!("/api/v1/tenants/{t}"),
                    ]
                    .map(|path| (path, key.to_string()))
                })
                .collect();
            let report = run_driver(app, TENANTS[0].1, LOGIN, Some((API_RATE, targets))).await?;
            let api = report.api.context("the driver reported no API requests")?;
            let what = format!(
                "{} requests: {} ok, {} limited, {} failed, {} not sent; answered in {}",
                api.sent,
                api.ok,
                api.limited,
                api.failed,
                api.skipped,
                api.latency.summary(&[50.0, 99.0])
            );
            Ok((report.driven, what))
        }
        Load::Logs => {
            let mover = app
                .runtime
                .log_tiers
                .clone()
                .context("log tiers are off in this profile")?;
            let stop = Arc::new(AtomicBool::new(false));
            let rounds = Arc::new(AtomicU64::new(0));
            let task = {
                let (stop, rounds) = (stop.clone(), rounds.clone());
                actix_web::rt::spawn(async move {
                    let mut moved = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        if let Ok(r) = mover.run_now().await {
                            moved += r.hot_to_warm + r.warm_to_cold;
                        }
                        rounds.fetch_add(1, Ordering::Relaxed);
                    }
                    moved
                })
            };
            let driven = drive(app, None).await;
            stop.store(true, Ordering::Relaxed);
            let moved = task.await.unwrap_or(0);
            Ok((
                driven?,
                format!(
                    "{} rounds, {moved} entries moved",
                    rounds.load(Ordering::Relaxed)
                ),
            ))
        }
    }
}

/// Stores 5 s of ticks on the second tenant (a run of its own bridge), starts an optimisation of 1 000
/// `ema_cross` combinations on them through the API, drives the first tenant while it runs, and cancels it
/// if it is still running after.
async fn optimisation(app: &Running) -> anyhow::Result<(Driven, String)> {
    let (tenant, key) = TENANTS[1];
    run_driver(app, key, LOGIN + 1, None).await?;
    // The time-series store writes ticks in batches: let the last one land.
    actix_web::rt::time::sleep(Duration::from_millis(1_500)).await;
    let base = format!(
        "http://127.0.0.1:{}/api/v1/tenants/{tenant}/optimisations",
        app.port
    );
    let client = awc::Client::builder()
        .timeout(Duration::from_secs(30))
        .finish();
    let fast: Vec<f64> = (2..42).map(f64::from).collect(); // 40
    let slow: Vec<f64> = (50..75).map(f64::from).collect(); // 25
    let body = json!({
        "kind": "ema_cross",
        "symbol": "EURUSD",
        "timeframe": "M1",
        "from_ms": 0,
        "to_ms": crate::domain::now_ms() + 86_400_000 * 365 * 10,
        "grid": {"fast": fast, "slow": slow},
    });
    let mut resp = client
        .post(&base)
        .insert_header(("X-API-Key", key))
        .send_json(&body)
        .await
        .map_err(|e| anyhow::anyhow!("POST optimisations: {e}"))?;
    let created: Value = resp
        .json()
        .limit(1 << 20)
        .await
        .map_err(|e| anyhow::anyhow!("reading the job: {e}"))?;
    let created = created.get("optimisation").unwrap_or(&created);
    let id = created["id"]
        .as_str()
        .with_context(|| format!("the optimisation was not queued: {created}"))?
        .to_owned();
    let url = format!("{base}/{id}");
    let view = |client: awc::Client, url: String| async move {
        let mut resp = client
            .get(&url)
            .insert_header(("X-API-Key", key))
            .send()
            .await
            .map_err(|e| anyhow::anyhow!("GET the optimisation: {e}"))?;
        let v = resp
            .json::<Value>()
            .limit(1 << 26)
            .await
            .map_err(|e| anyhow::anyhow!("reading the optimisation: {e}"))?;
        Ok::<Value, anyhow::Error>(v.get("optimisation").cloned().unwrap_or(v))
    };
    // Its history is loaded before it searches: start the bridge once it runs.
    let waiting = Instant::now();
    loop {
        let v = view(client.clone(), url.clone()).await?;
        let state = v["state"].as_str().unwrap_or("").to_ascii_lowercase();
        if state == "running" && v["runs_done"].as_u64().unwrap_or(0) > 0 {
            break;
        }
        if state != "queued" && state != "running" {
            anyhow::bail!("the optimisation ended before the run: {v}");
        }
        if waiting.elapsed() > Duration::from_secs(60) {
            anyhow::bail!("the optimisation did not start within 60 s: {v}");
        }
        actix_web::rt::time::sleep(Duration::from_millis(20)).await;
    }
    let before = view(client.clone(), url.clone()).await?["runs_done"]
        .as_u64()
        .unwrap_or(0);
    let driven = drive(app, None).await;
    let v = view(client.clone(), url.clone()).await?;
    let after = v["runs_done"].as_u64().unwrap_or(0);
    let state = v["state"].as_str().unwrap_or("").to_owned();
    if state.eq_ignore_ascii_case("running") {
        let _ = client
            .delete(&url)
            .insert_header(("X-API-Key", key))
            .send()
            .await;
        // Let the job end before its trellis stops.
        for _ in 0..200 {
            let v = view(client.clone(), url.clone()).await?;
            if !v["state"]
                .as_str()
                .unwrap_or("")
                .eq_ignore_ascii_case("running")
            {
                break;
            }
            actix_web::rt::time::sleep(Duration::from_millis(50)).await;
        }
    }
    Ok((
        driven?,
        format!(
            "{} of {} runs done meanwhile, {} ticks each; the job {state} at the end of the run",
            after.saturating_sub(before),
            v["runs_total"],
            v["ticks"]
        ),
    ))
}
