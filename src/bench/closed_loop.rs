//! The closed loop every tick → order benchmark drives: a bridge that streams ticks at a rate, opens the next
//! bar only once the previous bar's order came back, and answers every order at once with a fill.
//!
//! Why one loop for every transport: its matching rule (every bar's closing instant kept until its order
//! arrives, so every order is timed exactly once, however slow) is what makes the figures comparable, and it
//! must not differ between the loopback figure (a [`WsLink`]: a WebSocket to `/ws/mt5`, from the
//! `bench-driver` process or, for the other benchmarks, from the bench's own thread) and the in-process one
//! (`latency::SessionLink`: frames decoded and handed to the session, no socket). A [`Link`] is all that
//! changes: how a frame reaches trellis, and from which instant its latency counts.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use awc::ws;
use bytes::Bytes;
use dashmap::DashMap;
use futures_util::{SinkExt, StreamExt};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::{open_bridge, Latencies, WsSink, WsStream};

/// What [`drive_link`] measured.
#[derive(Serialize, Deserialize)]
pub(super) struct Driven {
    /// Tick-to-order latency of every bar after the warm-up bars whose order arrived.
    pub(super) samples: Latencies,
    /// Ticks sent.
    pub(super) sent: u64,
    /// Bars closed whose order had not arrived when the run ended (after waiting [`DRAIN`] for it).
    pub(super) never_arrived: usize,
    /// Orders that arrived with no bar waiting for one (none expected: each bar close yields one order).
    pub(super) unmatched: u64,
}

/// How long [`drive_link`] keeps answering orders after it stops sending ticks, for orders still on their way.
const DRAIN: Duration = Duration::from_secs(2);

/// How frames travel between the simulated bridge and trellis.
pub(super) trait Link {
    /// Hands one text frame to trellis; returns the instant the frame's latency counts from.
    async fn send(&mut self, text: String) -> anyhow::Result<Instant>;
    /// The next text frame from trellis; `None` once the link is closed. Cancel-safe: it races the clock.
    async fn recv(&mut self) -> Option<Bytes>;
    /// Ends the link (the session is told, as when a bridge goes away).
    async fn close(&mut self);
}

/// A bridge connection over loopback WebSocket that said hello and got its welcome.
pub(super) struct WsLink {
    sink: WsSink,
    stream: WsStream,
}

impl WsLink {
    pub(super) async fn open(port: u16, key: &str, login: u64) -> anyhow::Result<Self> {
        let (sink, stream) = open_bridge(port, key, login).await?;
        Ok(Self { sink, stream })
    }
}

impl Link for WsLink {
    /// The instant after the frame was written to the socket: what this figure has always counted from.
    async fn send(&mut self, text: String) -> anyhow::Result<Instant> {
        self.sink.send(ws::Message::Text(text.into())).await?;
        Ok(Instant::now())
    }

    async fn recv(&mut self) -> Option<Bytes> {
        loop {
            match self.stream.next().await? {
                Ok(ws::Frame::Text(b)) => return Some(b),
                Ok(_) => continue,
                Err(_) => return None,
            }
        }
    }

    async fn close(&mut self) {
        let _ = self.sink.send(ws::Message::Close(None)).await;
    }
}

/// [`drive_link`] over a fresh loopback WebSocket bridge from this process (the benchmarks other than
/// `latency` and `clients`, which run theirs in `bench-driver`).
pub(super) async fn drive(
    port: u16,
    key: &str,
    login: u64,
    rate: u64,
    seconds: u64,
    per_bar: u64,
) -> anyhow::Result<Driven> {
    let mut link = WsLink::open(port, key, login).await?;
    drive_link(&mut link, rate, seconds, per_bar, None).await
}

/// A bridge that streams ticks at `rate` (every `per_bar`-th tick opens a bar) and answers every order at
/// once with a fill. Tick-to-order latency is the time from the instant the link gives for the tick that
/// closes a bar to the order it causes coming back (taken as the frame arrives, before it is parsed); every
/// bar's instant is kept until its order arrives, so every order is measured once, however slow. The next
/// bar opens only once the previous bar's order has arrived and been answered (closed loop: the achieved
/// rate is reported). That is also what makes the matching exact: `flip` wants the opposite position on
/// every bar, so each bar close yields exactly one order — but only while the strategy has no order in
/// flight (the ledger plans no order on top of one), so a bar closed before the previous order came back
/// could yield none. After `seconds` it sends no more ticks and waits up to [`DRAIN`] for the orders still
/// due; those that never come are counted. The link is closed at the end.
pub(super) async fn drive_link(
    link: &mut impl Link,
    rate: u64,
    seconds: u64,
    per_bar: u64,
    sent_at: Option<&DashMap<i64, Instant>>,
) -> anyhow::Result<Driven> {
    let mut seq = 1u64;
    let step = 60_000 / per_bar.max(1) as i64;
    let first_msc = 1_700_000_040_000i64;
    let mut time_msc = first_msc;
    let mut sent = 0u64;
    // Bars closed whose order has not arrived: (open time of the bar, the closing tick's instant).
    let mut outstanding: VecDeque<(i64, Instant)> = VecDeque::new();
    let mut samples = Latencies::new();
    let mut unmatched = 0u64;
    let mut ticket = 10_000u64;
    // The first bars' orders are answered but not timed (connection and caches warming up).
    let warmup_bars = 3;
    let first_timed_bar = (first_msc / 60_000 + warmup_bars) * 60_000;
    let started = Instant::now();
    let mut clock = tokio::time::interval(Duration::from_micros(500));
    let end = started + Duration::from_secs(seconds);
    loop {
        let now = Instant::now();
        if now >= end && (outstanding.is_empty() || now >= end + DRAIN) {
            break;
        }
        tokio::select! {
            frame = link.recv() => {
                let Some(b) = frame else { break };
                let arrived = Instant::now();
                let v: serde_json::Value = serde_json::from_slice(&b).unwrap_or_default();
                if v["type"] != "order_request" { continue; }
                match outstanding.pop_front() {
                    Some((bar, at)) if bar >= first_timed_bar => {
                        samples.record(arrived.saturating_duration_since(at));
                    }
                    Some(_) => {}
                    None => unmatched += 1,
                }
                ticket += 2;
                let side = v["order_type"].as_u64().unwrap_or(0);
                seq += 1;
                let result = json!({"type":"order_result","seq":seq,"client_order_id":v["client_order_id"],"retcode":10009,"deal":ticket,"order":ticket+1,"volume":v["volume"],"price":1.1});
                seq += 1;
                let deal = json!({"type":"deal","seq":seq,"ticket":ticket,"order":ticket+1,"client_order_id":v["client_order_id"],"position_id":1,"symbol":"EURUSD","deal_type":side,"entry":0,"volume":v["volume"],"price":1.1,"time_msc":time_msc});
                link.send(result.to_string()).await?;
                link.send(deal.to_string()).await?;
            }
            _ = clock.tick() => {
                if Instant::now() >= end {
                    continue; // draining: no more ticks, only answers
                }
                let due = (started.elapsed().as_secs_f64() * rate as f64) as u64;
                while sent < due {
                    time_msc += step;
                    let opens_bar = time_msc % 60_000 == 0;
                    if opens_bar && !outstanding.is_empty() {
                        time_msc -= step;
                        break; // the previous bar's order has not arrived yet
                    }
                    seq += 1;
                    let bid = 1.1 + (sent % 7) as f64 * 0.0001;
                    let tick = format!(r#"{{"type":"tick","seq":{seq},"symbol":"EURUSD","time_msc":{time_msc},"bid":{bid:.5},"ask":{:.5}}}"#, bid + 0.0002);
                    if let Some(marks) = sent_at {
                        marks.insert(time_msc, Instant::now());
                    }
                    let at = link.send(tick).await?;
                    sent += 1;
                    if opens_bar {
                        // This tick closed the bar before it.
                        outstanding.push_back((time_msc - 60_000, at));
                    }
                }
            }
        }
    }
    link.close().await;
    Ok(Driven {
        samples,
        sent,
        never_arrived: outstanding.len(),
        unmatched,
    })
}

pub(super) fn report_latency(label: &str, driven: &Driven, seconds: u64) {
    let mut line = format!(
        "{label}: {} ticks ({:.0}/s achieved), {} orders; tick-to-order {}; {} never arrived",
        driven.sent,
        driven.sent as f64 / seconds as f64,
        driven.samples.len(),
        driven.samples.summary(&[50.0, 99.0, 99.9]),
        driven.never_arrived,
    );
    if driven.unmatched > 0 {
        line.push_str(&format!(", {} arrived unasked", driven.unmatched));
    }
    println!("{line}");
}

/// The runs of one scenario side by side: the achieved rate and each percentile as min–max over the runs.
pub(super) fn report_spread(label: &str, runs: &[Driven], seconds: u64) {
    let rates: Vec<f64> = runs
        .iter()
        .map(|d| d.sent as f64 / seconds as f64)
        .collect();
    let (lo, hi) = min_max(&rates);
    let samples: Vec<&Latencies> = runs.iter().map(|d| &d.samples).collect();
    println!(
        "{label}, {} runs: {lo:.0}–{hi:.0} ticks/s achieved; tick-to-order {}",
        runs.len(),
        spread(&samples)
    );
}

/// `p50 a–b µs, p99 …, p99.9 …, max …`: each figure's lowest and highest over the runs, whole microseconds.
pub(super) fn spread(runs: &[&Latencies]) -> String {
    let mut parts = Vec::new();
    for (name, q) in [("p50", 0.5), ("p99", 0.99), ("p99.9", 0.999)] {
        let values: Vec<f64> = runs.iter().map(|l| l.at(q).as_micros() as f64).collect();
        let (lo, hi) = min_max(&values);
        parts.push(format!("{name} {lo:.0}–{hi:.0} µs"));
    }
    let maxima: Vec<f64> = runs.iter().map(|l| l.max.as_micros() as f64).collect();
    let (lo, hi) = min_max(&maxima);
    parts.push(format!("max {lo:.0}–{hi:.0} µs"));
    parts.join(", ")
}

fn min_max(values: &[f64]) -> (f64, f64) {
    values
        .iter()
        .fold(None, |acc: Option<(f64, f64)>, &v| {
            Some(acc.map_or((v, v), |(lo, hi)| (lo.min(v), hi.max(v))))
        })
        .unwrap_or((0.0, 0.0))
}
