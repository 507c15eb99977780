//! `trellis bench clients`: what trading clients cost trading. 1 000 connections on `/ws/v1/client`, each
//! subscribed to the ticks of 3 symbols, while a bridge streams 10 000 ticks/s and a strategy trades every
//! bar (the closed loop of `bench latency`). Reports tick → order with and without the clients, the fan-out
//! latency (the bridge sending a tick → a client receiving it, sampled on 100 of the clients), frames
//! delivered (conflation shows as fewer frames than ticks × clients) and resident memory per client.
//!
//! The clients run in this process beside the server (on the bench's own thread), so the machine's cores
//! are shared three ways: the figures are an upper bound on what remote clients would cost.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use awc::ws;
use dashmap::DashMap;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};

use super::{
    bench_tenant, drive, drive_marked, flip, report_latency, rss_mb, start, strategy, Latencies,
};

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

struct Counters {
    frames: AtomicU64,
    latencies: Mutex<Latencies>,
    sent_at: DashMap<i64, Instant>,
}

pub async fn run() -> anyhow::Result<()> {
    let app = start(&[]).await?;
    app.runtime.strategies.register("flip", flip);
    for (id, key) in [("fan", KEY), ("alone", ALONE_KEY)] {
        let mut tenant = bench_tenant(id, key, vec![strategy("flip", "flip", "EURUSD")]);
        tenant.symbols = SYMBOLS.iter().map(|s| s.to_string()).collect();
        app.runtime.start_tenant(tenant).await?;
    }

    let alone = drive(app.port, ALONE_KEY, 4242, RATE, SECONDS, 10).await?;
    report_latency("tick-to-order without clients", &alone, SECONDS);

    let counters = Arc::new(Counters {
        frames: AtomicU64::new(0),
        latencies: Mutex::new(Latencies::new()),
        sent_at: DashMap::new(),
    });
    let before = rss_mb();
    let connecting = Instant::now();
    let mut readers = Vec::with_capacity(CLIENTS);
    for i in 0..CLIENTS {
        readers.push(
            connect(app.port, i < TIMED, counters.clone())
                .await
                .with_context(|| format!("client {i}"))?,
        );
    }
    let connected_in = connecting.elapsed();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = rss_mb();
    println!(
        "{CLIENTS} clients connected and subscribed to {} in {:.2} s; resident memory {before:.1} → {after:.1} MB: {:.1} KB per client",
        SYMBOLS.map(|s| format!("ticks:{s}")).join(", "),
        connected_in.as_secs_f64(),
        (after - before) * 1024.0 / CLIENTS as f64
    );

    counters.frames.store(0, Ordering::Relaxed);
    let with = drive_marked(
        app.port,
        KEY,
        4343,
        RATE,
        SECONDS,
        10,
        Some(&counters.sent_at),
    )
    .await?;
    report_latency(
        &format!("tick-to-order with {CLIENTS} clients"),
        &with,
        SECONDS,
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let frames = counters.frames.load(Ordering::Relaxed);
    let latency = counters
        .latencies
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .summary(&[50.0, 99.0, 99.9]);
    println!(
        "fan-out: {frames} tick frames to {CLIENTS} clients for {} ticks ({:.0} frames/s, {:.1}% of ticks × clients: the rest conflated); tick sent → client received {latency}",
        with.sent,
        frames as f64 / SECONDS as f64,
        frames as f64 * 100.0 / (with.sent as f64 * CLIENTS as f64).max(1.0),
    );
    for r in readers {
        r.abort();
    }
    app.stop().await;
    Ok(())
}

/// A client subscribed to the ticks of every symbol; its reader counts (and when `timed`, times) each tick.
async fn connect(
    port: u16,
    timed: bool,
    counters: Arc<Counters>,
) -> anyhow::Result<actix_web::rt::task::JoinHandle<()>> {
    let (_resp, conn) = crate::sim::client::ws_client()
        .ws(format!("ws://127.0.0.1:{port}/ws/v1/client"))
        .header("X-API-Key", KEY)
        .max_frame_size(1 << 20)
        .connect()
        .await
        .map_err(|e| anyhow::anyhow!("connect: {e}"))?;
    let (mut sink, mut stream) = conn.split();
    let channels: Vec<String> = SYMBOLS.iter().map(|s| format!("ticks:{s}")).collect();
    let subscribe = json!({"op": "subscribe", "id": "s", "channels": channels});
    sink.send(ws::Message::Text(subscribe.to_string().into()))
        .await?;
    let mut snapshots = 0;
    while snapshots < SYMBOLS.len() {
        match stream.next().await {
            Some(Ok(ws::Frame::Text(b))) => {
                if serde_json::from_slice::<Value>(&b).is_ok_and(|v| v["type"] == "snapshot") {
                    snapshots += 1;
                }
            }
            Some(Ok(_)) => {}
            other => anyhow::bail!("no snapshots: {:?}", other.map(|f| f.map(|_| ()))),
        }
    }
    Ok(actix_web::rt::spawn(async move {
        let _sink = sink; // kept open
        while let Some(Ok(frame)) = stream.next().await {
            let ws::Frame::Text(b) = frame else { continue };
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
                    .record(at.elapsed());
            }
        }
    }))
}
