//! `trellis bench latency`: tick → order at 1 000 and 10 000 ticks/s, three runs of each, each run on a
//! fresh trellis with one tenant trading `flip` (one order per bar, every tenth tick). The bridge runs in a
//! second process (`trellis bench-driver`, [`super::driver`]) and speaks to `/ws/mt5` over loopback
//! WebSocket: from the tick written to the socket to the order read from it, the whole path a terminal
//! sees, with the kernel's loopback and the connection task on both sides. After the runs of a rate, each
//! figure's min–max over them; on a shared machine the spread is as much the machine as trellis.

use anyhow::Context as _;

use super::closed_loop::{report_latency, report_spread, Driven};
use super::driver::{self, Spec};
use super::{bench_tenant, flip, start, strategy, Running};

const RUNS: usize = 3;
const SECONDS: u64 = 5;
const KEY: &str = "trk_latency1_bench-secret-key";
const LOGIN: u64 = 4242;

pub(super) async fn run() -> anyhow::Result<()> {
    for (rate, per_bar) in [(1_000u64, 10u64), (10_000, 10)] {
        let mut loopback: Vec<Driven> = Vec::with_capacity(RUNS);
        for run in 1..=RUNS {
            let app = trellis_with_flip().await?;
            let report = driver::spawn(&Spec {
                port: app.port,
                key: KEY,
                login: LOGIN,
                rate,
                seconds: SECONDS,
                per_bar,
                clients: None,
            })
            .await;
            app.stop().await;
            let driven = report?.driven;
            report_latency(
                &format!("latency @ {rate} ticks/s, loopback (bridge in a second process), run {run}/{RUNS}"),
                &driven,
                SECONDS,
            );
            loopback.push(driven);
        }
        report_spread(
            &format!("latency @ {rate} ticks/s, loopback"),
            &loopback,
            SECONDS,
        );
    }
    Ok(())
}

/// A fresh trellis with the one tenant this benchmark drives.
async fn trellis_with_flip() -> anyhow::Result<Running> {
    let app = start(&[]).await?;
    app.runtime.strategies.register("flip", flip);
    app.runtime
        .start_tenant(bench_tenant(
            "lat",
            KEY,
            vec![strategy("flip", "flip", "EURUSD")],
        ))
        .await
        .context("the bench tenant")?;
    Ok(app)
}
