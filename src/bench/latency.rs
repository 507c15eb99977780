//! `trellis bench latency`: tick → order at 1 000 and 10 000 ticks/s, three runs of each, measured two ways,
//! each run on a fresh trellis with one tenant trading `flip` (one order per bar, every tenth tick):
//!
//! - **loopback**: the bridge runs in a second process (`trellis bench-driver`, [`super::driver`]) and
//!   speaks to `/ws/mt5` over loopback WebSocket. From the tick written to the socket to the order read from
//!   it: the whole path a terminal sees, with the kernel's loopback and the connection task on both sides.
//! - **in-process**: no socket. The seam is the one the connection task uses: a session is attached with an
//!   `Attach` whose outgoing channel is read here ([`SessionLink`]), and each frame's text is decoded with
//!   `bridge::protocol::decode` and handed over as `FrameReceived`, exactly what `http::ws::mt5` does with
//!   a text frame. From the instant before the closing tick is decoded to the instant its encoded
//!   `order_request` comes out of the session's channel: session, market data, strategy, portfolio, risk and
//!   back. Nothing in trellis changed for it. The bridge's own work (building ticks, parsing orders) runs in
//!   this process here, on the bench's thread, not on the tenant's arbiter: it shares the cores with trellis
//!   as the driver process does, but also the process.
//!
//! The runs alternate (loopback, in-process, loopback, …) so a machine that gets busier mid-benchmark
//! weighs on both; after the runs of a rate, each figure's min–max over them. On a shared machine the
//! spread is as much the machine as trellis.

use std::sync::Arc;
use std::time::Instant;

use actix::prelude::{Addr, SendError};
use anyhow::{bail, Context as _};
use bytes::Bytes;
use tokio::sync::mpsc;

use super::closed_loop::{drive_link, report_latency, report_spread, Driven, Link};
use super::driver::{self, Spec};
use super::{bench_tenant, flip, start, strategy, Running};
use crate::actors::messages::{Attach, Detach, FrameReceived, Outgoing};
use crate::actors::mt5_session::Mt5Session;
use crate::actors::tenant::TenantContext;
use crate::bridge::protocol::{decode, Inbound};
use crate::domain::Login;

const RUNS: usize = 3;
const SECONDS: u64 = 5;
const KEY: &str = "trk_latency1_bench-secret-key";
const LOGIN: u64 = 4242;

pub(super) async fn run() -> anyhow::Result<()> {
    for (rate, per_bar) in [(1_000u64, 10u64), (10_000, 10)] {
        let mut loopback: Vec<Driven> = Vec::with_capacity(RUNS);
        let mut in_process: Vec<Driven> = Vec::with_capacity(RUNS);
        for run in 1..=RUNS {
            let (app, _) = trellis_with_flip().await?;
            let report = driver::spawn(&Spec {
                port: app.port,
                bridge_port: app.bridge,
                key: KEY,
                login: LOGIN,
                rate,
                seconds: SECONDS,
                per_bar,
                clients: None,
                api: None,
            })
            .await;
            let stages = stage_report(&app.runtime.metrics.render());
            app.stop().await;
            let driven = report?.driven;
            println!("per stage @ {rate} ticks/s, run {run}/{RUNS} (from the tick frame read; trellis_trading_stage_seconds): {stages}");
            report_latency(
                &format!("latency @ {rate} ticks/s, loopback (bridge in a second process), run {run}/{RUNS}"),
                &driven,
                SECONDS,
            );
            loopback.push(driven);

            let (app, tenant) = trellis_with_flip().await?;
            let driven = in_process_run(&tenant, rate, per_bar).await;
            app.stop().await;
            let driven = driven?;
            report_latency(
                &format!("latency @ {rate} ticks/s, in-process (frame decoded → order frame encoded), run {run}/{RUNS}"),
                &driven,
                SECONDS,
            );
            in_process.push(driven);
        }
        report_spread(
            &format!("latency @ {rate} ticks/s, loopback"),
            &loopback,
            SECONDS,
        );
        report_spread(
            &format!("latency @ {rate} ticks/s, in-process"),
            &in_process,
            SECONDS,
        );
    }
    Ok(())
}

/// A fresh trellis with the one tenant this benchmark drives.
async fn trellis_with_flip() -> anyhow::Result<(Running, Arc<TenantContext>)> {
    let app = start(&[]).await?;
    app.runtime.strategies.register("flip", flip);
    let tenant = app
        .runtime
        .start_tenant(bench_tenant(
            "lat",
            KEY,
            vec![strategy("flip", "flip", "EURUSD")],
        ))
        .await?;
    Ok((app, tenant))
}

async fn in_process_run(
    tenant: &Arc<TenantContext>,
    rate: u64,
    per_bar: u64,
) -> anyhow::Result<Driven> {
    let mut link = SessionLink::attach(tenant, LOGIN).await?;
    drive_link(&mut link, rate, SECONDS, per_bar, None).await
}

/// A bridge with no socket: frames decoded and handed to the account's session as the connection task
/// would, its outgoing frames read from the channel the connection task would write to the socket.
struct SessionLink {
    session: Addr<Mt5Session>,
    rx: mpsc::UnboundedReceiver<Outgoing>,
}

/// The connection id of the one link attached to the bench's session (real ones count up from 1).
const CONN_ID: u64 = u64::MAX;

impl SessionLink {
    async fn attach(tenant: &Arc<TenantContext>, login: u64) -> anyhow::Result<Self> {
        let session = tenant
            .session(Login::new(login))
            .await
            .context("the bench account's session")?;
        let hello = format!(
            r#"{{"type":"hello","seq":1,"api_key":"{KEY}","login":{login},"server":"bench","protocol_version":2,"last_seq_received":0}}"#
        );
        let hello = match decode(&hello) {
            Ok(Inbound::Hello(h)) => h,
            Ok(other) => bail!("the bench's hello decoded as {}", other.kind()),
            Err(e) => bail!("the bench's hello: {}", e.message),
        };
        let (tx, rx) = mpsc::unbounded_channel();
        session
            .send(Attach {
                conn_id: CONN_ID,
                tx,
                hello,
            })
            .await
            .context("attaching to the session")?;
        Ok(Self { session, rx })
    }
}

impl Link for SessionLink {
    /// The instant before the frame is decoded.
    async fn send(&mut self, text: String) -> anyhow::Result<Instant> {
        let at = Instant::now();
        let frame = match decode(&text) {
            Ok(frame) => frame,
            Err(e) => bail!("the bench sent a frame trellis refuses: {}", e.message),
        };
        let msg = FrameReceived {
            conn_id: CONN_ID,
            frame,
            read_at: at,
        };
        // As the connection task does: a full mailbox is waited for, never dropped.
        match self.session.try_send(msg) {
            Ok(()) => {}
            Err(SendError::Full(msg)) => self.session.send(msg).await.context("the session")?,
            Err(SendError::Closed(_)) => bail!("the session stopped"),
        }
        Ok(at)
    }

    async fn recv(&mut self) -> Option<Bytes> {
        match self.rx.recv().await? {
            Outgoing::Text(text) => Some(Bytes::from(text)),
            Outgoing::Close(..) => None,
        }
    }

    async fn close(&mut self) {
        self.session.do_send(Detach { conn_id: CONN_ID });
    }
}

/// The trading path's stages as `/metrics` exports them (`trellis_trading_stage_seconds`): for each, how many
/// were measured, the mean, and the bucket bounds that hold the median and the 99th percentile (a classic
/// histogram knows no more than its buckets).
fn stage_report(text: &str) -> String {
    const NAME: &str = "trellis_trading_stage_seconds";
    let mut out = Vec::new();
    for stage in crate::metrics::Stage::ALL {
        let label = format!("stage=\"{}\"", stage.as_str());
        let value = |suffix: &str| -> Option<f64> {
            text.lines()
                .find(|l| l.starts_with(&format!("{NAME}_{suffix}{{")) && l.contains(&label))
                .and_then(|l| l.rsplit(' ').next())
                .and_then(|v| v.parse().ok())
        };
        let (Some(sum), Some(count)) = (value("sum"), value("count")) else {
            continue;
        };
        if count == 0.0 {
            continue;
        }
        // Cumulative buckets in the order exported: (upper bound, count up to it).
        let buckets: Vec<(f64, f64)> = text
            .lines()
            .filter(|l| l.starts_with(&format!("{NAME}_bucket{{")) && l.contains(&label))
            .filter_map(|l| {
                let le = l.split("le=\"").nth(1)?.split('"').next()?;
                let le = if le == "+Inf" {
                    f64::INFINITY
                } else {
                    le.parse().ok()?
                };
                Some((le, l.rsplit(' ').next()?.parse().ok()?))
            })
            .collect();
        let at = |q: f64| {
            buckets
                .iter()
                .find(|(_, n)| *n >= q * count)
                .map_or(f64::INFINITY, |(le, _)| *le)
        };
        let us = |s: f64| {
            if s.is_finite() {
                format!("{:.0}", s * 1e6)
            } else {
                "inf".to_owned()
            }
        };
        out.push(format!(
            "{} n={count} mean={} µs p50≤{} p99≤{}",
            stage.as_str(),
            us(sum / count),
            us(at(0.5)),
            us(at(0.99))
        ));
    }
    out.join("; ")
}
