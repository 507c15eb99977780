//! `trellis bench clients`: what trading clients cost trading. 1 000 connections on `/ws/v1/client`, each
//! subscribed to the ticks of 3 symbols, while a bridge streams 10 000 ticks/s and a strategy trades every
//! bar (the closed loop of `bench latency`). Reports tick → order with and without the clients, the fan-out
//! latency (the bridge sending a tick → a client receiving it, sampled on 100 of the clients), frames
//! delivered (conflation shows as fewer frames than ticks × clients) and resident memory per client.
//!
//! The bridge and the clients run in a second process (`trellis bench-driver`, [`super::driver`]), so this
//! process holds trellis alone and its resident memory per client is the server's side of a connection
//! (the driver reports its own side apart; only the first run's figure is whole: later runs reuse the heap
//! the earlier ones freed). Both processes still share the machine's cores. Three runs, each on a fresh
//! trellis (a tenant's bars only move forward), then each figure's min–max over them.

use anyhow::Context as _;

use super::closed_loop::{report_latency, report_spread, spread, Driven};
use super::driver::{self, ClientLoad, Spec};
use super::{bench_tenant, flip, start, strategy, Latencies};

const RUNS: usize = 3;
const CLIENTS: usize = 1_000;
/// Clients whose every frame is timed (the rest only count).
const TIMED: usize = 100;
const RATE: u64 = 10_000;
const SECONDS: u64 = 5;
/// The tenant the clients follow, and one without clients for the baseline (a tenant's bars only move
/// forward, so each run needs its own).
const KEY: &str = "trk_clients1_bench-secret-key";
const ALONE_KEY: &str = "trk_clients2_bench-secret-key";
const SYMBOLS: [&str; 3] = ["EURUSD", "GBPUSD", "USDJPY"];

pub async fn run() -> anyhow::Result<()> {
    let mut alone_runs: Vec<Driven> = Vec::with_capacity(RUNS);
    let mut with_runs: Vec<Driven> = Vec::with_capacity(RUNS);
    let mut fan_outs: Vec<Latencies> = Vec::with_capacity(RUNS);
    for run in 1..=RUNS {
        let app = start(&[]).await?;
        app.runtime.strategies.register("flip", flip);
        for (id, key) in [("fan", KEY), ("alone", ALONE_KEY)] {
            let mut tenant = bench_tenant(id, key, vec![strategy("flip", "flip", "EURUSD")]);
            tenant.symbols = SYMBOLS.iter().map(|s| s.to_string()).collect();
            app.runtime.start_tenant(tenant).await?;
        }
        let measured = measure(app.port, app.bridge, run).await;
        app.stop().await;
        let (alone, with, fan_out) = measured?;
        alone_runs.push(alone);
        with_runs.push(with);
        fan_outs.push(fan_out);
    }
    report_spread("tick-to-order without clients", &alone_runs, SECONDS);
    report_spread(
        &format!("tick-to-order with {CLIENTS} clients"),
        &with_runs,
        SECONDS,
    );
    println!(
        "fan-out, {RUNS} runs: tick sent → client received {}",
        spread(&fan_outs.iter().collect::<Vec<_>>())
    );
    Ok(())
}

/// One run against the trellis on `port` (its bridges on `bridge_port`): the baseline, then the same with
/// the clients; prints both.
async fn measure(
    port: u16,
    bridge_port: u16,
    run: usize,
) -> anyhow::Result<(Driven, Driven, Latencies)> {
    let alone = driver::spawn(&Spec {
        port,
        bridge_port,
        key: ALONE_KEY,
        login: 4242,
        rate: RATE,
        seconds: SECONDS,
        per_bar: 10,
        clients: None,
        api: None,
    })
    .await?
    .driven;
    report_latency(
        &format!("tick-to-order without clients, run {run}/{RUNS}"),
        &alone,
        SECONDS,
    );

    let report = driver::spawn(&Spec {
        port,
        bridge_port,
        key: KEY,
        login: 4343,
        rate: RATE,
        seconds: SECONDS,
        per_bar: 10,
        clients: Some(ClientLoad {
            count: CLIENTS,
            timed: TIMED,
            symbols: SYMBOLS.iter().map(|s| s.to_string()).collect(),
        }),
        api: None,
    })
    .await?;
    let clients = report.clients.context("the driver reported no clients")?;
    let with = report.driven;
    println!(
        "{} clients connected and subscribed to {} in {:.2} s; trellis resident memory {:.1} → {:.1} MB: {:.1} KB per client{} (the driver's side: {:.1} KB per client), run {run}/{RUNS}",
        clients.connected,
        SYMBOLS.map(|s| format!("ticks:{s}")).join(", "),
        clients.connect_secs,
        clients.server_rss_before_mb,
        clients.server_rss_after_mb,
        (clients.server_rss_after_mb - clients.server_rss_before_mb) * 1024.0
            / clients.connected.max(1) as f64,
        if run > 1 {
            " (a lower bound: the heap of the earlier runs is reused)"
        } else {
            ""
        },
        (clients.driver_rss_after_mb - clients.driver_rss_before_mb) * 1024.0
            / clients.connected.max(1) as f64,
    );
    report_latency(
        &format!("tick-to-order with {CLIENTS} clients, run {run}/{RUNS}"),
        &with,
        SECONDS,
    );
    println!(
        "fan-out: {} tick frames to {CLIENTS} clients for {} ticks ({:.0} frames/s, {:.1}% of ticks × clients: the rest conflated); tick sent → client received {}, run {run}/{RUNS}",
        clients.frames,
        with.sent,
        clients.frames as f64 / SECONDS as f64,
        clients.frames as f64 * 100.0 / (with.sent as f64 * CLIENTS as f64).max(1.0),
        clients.fan_out.summary(&[50.0, 99.0, 99.9]),
    );
    Ok((alone, with, clients.fan_out))
}
