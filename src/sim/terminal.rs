//! The simulated terminal's connection: hello, ticks, order execution through the [`Broker`], reliable
//! frames with an outbox, heartbeats, and reconnect with resume.
//!
//! It keeps the protocol's promises the way a real bridge must: frames whose `seq` is not above the last one
//! processed are ignored; `order_result`, `deal`, `account` and `positions` stay in the outbox until trellis
//! acknowledges them and are re-sent after `welcome.resume_from`; a repeated order is answered from the
//! broker's journal. A `welcome` of a new epoch (trellis restarted) resets the duplicate filter for trellis's
//! frames; a `history_request` is answered from the broker's deal record, then `history_end` with positions.
//! The terminal keeps charts ([`BarHistory`]) built from every tick it sees, link up or down, and answers a
//! `bars_request` from them in pages of at most `MAX_BARS_PER_FRAME` bars, when it speaks protocol 3 (a
//! version-2 simulator ignores the frame, as a version-2 bridge would).
//! Faults can be injected through [`Control`] for tests.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix_web::rt::task::JoinHandle;
use awc::ws;
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use tokio::sync::mpsc;

use super::broker::{Broker, BrokerConfig, Execution};
use super::history::BarHistory;
use crate::bridge::protocol::{
    AccountFrame, BarRow, BarsFrame, BarsRequest, DealFrame, HeartbeatFrame, Hello,
    HistoryEndFrame, Outbound, PositionsFrame, TickFrame, BARS_PROTOCOL_VERSION,
    MAX_BARS_PER_FRAME, PROTOCOL_VERSION,
};
use crate::domain::{now_ms, Symbol, Tick, Timeframe};

/// How the simulated terminal connects.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// `ws://host:port/ws/mt5`
    pub url: String,
    pub api_key: String,
    pub server: String,
    pub broker: BrokerConfig,
    pub heartbeat_ms: u64,
    /// Reconnect (with resume) when the link drops.
    pub reconnect: bool,
    /// Protocol version sent in hello (tests use a wrong one on purpose).
    pub protocol_version: u32,
    /// Other trellis nodes to fail over to (several nodes): an unreachable node sends the next attempt to
    /// the next URL, in turn; a `redirect` is followed at once.
    pub fallback_urls: Vec<String>,
    /// Nothing received from trellis for this long (a frozen node keeps its socket open): the link is
    /// dropped and the next node tried. 0 = wait forever.
    pub silence_ms: u64,
    /// Ticks the terminal saw before it connects (its charts and last quotes start from them): a terminal
    /// with history that trellis never received.
    pub history: Vec<Tick>,
}

impl SimConfig {
    pub fn new(url: impl Into<String>, api_key: impl Into<String>, login: u64) -> Self {
        Self {
            url: url.into(),
            api_key: api_key.into(),
            server: "Trellis-Sim".into(),
            broker: BrokerConfig {
                login,
                ..BrokerConfig::default()
            },
            heartbeat_ms: 1_000,
            reconnect: true,
            protocol_version: PROTOCOL_VERSION,
            fallback_urls: Vec::new(),
            silence_ms: 0,
            history: Vec::new(),
        }
    }
}

/// Commands to a running simulator.
#[derive(Debug)]
pub enum Control {
    /// Quote a tick (the broker prices with it) and stream it.
    Tick(Tick),
    /// Cut the link now (no close frame), as a network failure would.
    DropLink,
    /// Execute the next order but cut the link before its result is sent.
    DropAfterNextOrder,
    /// Lose the next order in transit: cut the link as it arrives, before it is read.
    LoseNextOrder,
    /// Send this raw text frame (tests of bad input).
    Raw(String),
    /// A trade made by hand at the terminal: executed by the broker at the current quote, reported to
    /// nobody (trellis finds it in the deal history when it reconciles).
    ManualDeal {
        symbol: String,
        side: crate::domain::Side,
        volume: rust_decimal::Decimal,
    },
    Stop,
}

/// Counters the tests and the demo read.
#[derive(Debug, Clone, Default)]
pub struct SimStats {
    pub connects: u64,
    pub ticks_sent: u64,
    pub orders_received: u64,
    pub duplicate_frames: u64,
    pub results_sent: u64,
    pub deals_sent: u64,
    /// Every `error` frame trellis sent: (code, message).
    pub errors: Vec<(String, String)>,
    /// Text frames received, newest last (bounded).
    pub received: Vec<String>,
    pub connected: bool,
    pub last_close: Option<String>,
    /// `redirect` frames followed.
    pub redirects: u64,
    /// The node URL of the current (or last) connection.
    pub url: String,
    /// `bars_request` frames received (answered or, by a version-2 simulator, ignored).
    pub bars_requests: u64,
    /// Bars sent in `bars` answers (forming bars included).
    pub bars_sent: u64,
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum SimError {
    #[error("trellis refused the connection: {0}")]
    Refused(String),
    #[error("cannot connect to {0}")]
    Unreachable(String),
}

/// A running simulator.
pub struct SimHandle {
    tx: mpsc::UnboundedSender<Control>,
    pub stats: Arc<Mutex<SimStats>>,
    pub broker: Arc<Mutex<Broker>>,
    /// The terminal's own charts: the oracle for what trellis should have after a warm-up.
    pub history: Arc<Mutex<BarHistory>>,
    pub task: JoinHandle<Result<(), SimError>>,
}

/// Sends ticks to a simulator without borrowing its handle.
#[derive(Clone)]
pub struct Feeder(mpsc::UnboundedSender<Control>);

impl Feeder {
    /// False once the simulator has stopped.
    pub fn tick(&self, tick: Tick) -> bool {
        self.0.send(Control::Tick(tick)).is_ok()
    }
}

impl SimHandle {
    pub fn send(&self, c: Control) {
        let _ = self.tx.send(c);
    }

    pub fn feeder(&self) -> Feeder {
        Feeder(self.tx.clone())
    }

    pub fn tick(&self, tick: Tick) {
        self.send(Control::Tick(tick));
    }

    pub fn stats(&self) -> SimStats {
        lock(&self.stats).clone()
    }

    /// Stops the simulator and waits for it.
    pub async fn stop(self) -> Result<(), SimError> {
        self.send(Control::Stop);
        self.task.await.unwrap_or(Ok(()))
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    }
}

/// Starts a simulator on the current actix runtime.
pub fn spawn(cfg: SimConfig) -> SimHandle {
    let (tx, rx) = mpsc::unbounded_channel();
    let stats = Arc::new(Mutex::new(SimStats::default()));
    let broker = Broker::with_deals_csv(cfg.broker.clone()).unwrap_or_else(|e| {
        tracing::error!(error = %e, "cannot append to the deals CSV: deals are not recorded there");
        Broker::new(cfg.broker.clone())
    });
    let mut history = BarHistory::default();
    let mut broker = broker;
    for t in &cfg.history {
        quote(&mut broker, &mut history, t);
    }
    let broker = Arc::new(Mutex::new(broker));
    let history = Arc::new(Mutex::new(history));
    let task = actix_web::rt::spawn(run(cfg, rx, stats.clone(), broker.clone(), history.clone()));
    SimHandle {
        tx,
        stats,
        broker,
        history,
        task,
    }
}

/// The terminal sees a tick: the broker prices with it (and fills what it touches), the charts take it.
fn quote(broker: &mut Broker, history: &mut BarHistory, t: &Tick) -> Vec<Execution> {
    history.on_tick(t);
    broker.on_tick(t.symbol.as_str(), t.time_msc, t.bid, t.ask)
}

/// Protocol state that survives reconnects.
#[derive(Default)]
struct Link {
    out_seq: u64,
    in_seq: u64,
    /// trellis's epoch that `in_seq` counts in.
    epoch: u64,
    outbox: BTreeMap<u64, String>,
    drop_after_order: bool,
    lose_next_order: bool,
    last_tick_msc: Option<i64>,
}

enum Ended {
    Stop,
    Dropped,
    /// trellis named the node that owns the tenant.
    Redirect(String),
}

/// More redirects than this in a row without a welcome fall back to the back-off (a misconfigured cluster
/// must not make the simulator spin).
const MAX_REDIRECTS: u32 = 5;

async fn run(
    cfg: SimConfig,
    mut rx: mpsc::UnboundedReceiver<Control>,
    stats: Arc<Mutex<SimStats>>,
    broker: Arc<Mutex<Broker>>,
    history: Arc<Mutex<BarHistory>>,
) -> Result<(), SimError> {
    let mut link = Link::default();
    let mut backoff = Duration::from_millis(50);
    let mut failures = 0u32;
    let nodes: Vec<String> = std::iter::once(cfg.url.clone())
        .chain(cfg.fallback_urls.iter().cloned())
        .collect();
    let mut next_node = 0usize;
    let mut url = cfg.url.clone();
    let mut redirects = 0u32;
    loop {
        lock(&stats).url = url.clone();
        match session(&cfg, &url, &mut link, &mut rx, &stats, &broker, &history).await {
            Ok(Ended::Stop) => return Ok(()),
            Ok(Ended::Redirect(to)) => {
                lock(&stats).redirects += 1;
                redirects += 1;
                url = to;
                if redirects <= MAX_REDIRECTS {
                    continue;
                }
            }
            Ok(Ended::Dropped) => {
                failures = 0;
                redirects = 0;
                backoff = Duration::from_millis(50);
            }
            Err(SimError::Refused(why)) => return Err(SimError::Refused(why)),
            Err(e @ SimError::Unreachable(_)) => {
                failures += 1;
                // About half a minute of retries: long enough for trellis to restart.
                if failures > 60 {
                    return Err(e);
                }
                // The next node of the list (when there is one) gets the next attempt.
                next_node = (next_node + 1) % nodes.len();
                url = nodes[next_node].clone();
            }
        }
        lock(&stats).connected = false;
        if !cfg.reconnect {
            return Ok(());
        }
        // While the link is down the market moves on: quotes reach the broker, nothing is streamed.
        let wait = tokio::time::sleep(backoff);
        tokio::pin!(wait);
        loop {
            tokio::select! {
                _ = &mut wait => break,
                c = rx.recv() => match c {
                    None | Some(Control::Stop) => return Ok(()),
                    Some(Control::Tick(t)) => {
                        quote(&mut lock(&broker), &mut lock(&history), &t);
                    }
                    Some(Control::DropAfterNextOrder) => link.drop_after_order = true,
                    Some(Control::LoseNextOrder) => link.lose_next_order = true,
                    Some(Control::ManualDeal { symbol, side, volume }) => {
                        lock(&broker).manual_deal(&symbol, side, volume);
                    }
                    Some(_) => {}
                }
            }
        }
        backoff = (backoff * 2).min(Duration::from_millis(500));
    }
}

type Sink =
    futures_util::stream::SplitSink<actix_codec::Framed<awc::BoxedSocket, ws::Codec>, ws::Message>;

async fn send_text(sink: &mut Sink, text: String) -> bool {
    sink.send(ws::Message::Text(text.into())).await.is_ok()
}

impl Link {
    fn seq(&mut self) -> u64 {
        self.out_seq += 1;
        self.out_seq
    }

    /// Assigns a seq to a reliable frame and keeps it until acknowledged.
    fn reliable(&mut self, make: impl FnOnce(u64) -> serde_json::Value) -> String {
        let seq = self.seq();
        let text = make(seq).to_string();
        self.outbox.insert(seq, text.clone());
        text
    }

    fn acknowledge(&mut self, ack: u64) {
        self.outbox = self.outbox.split_off(&(ack + 1));
    }

    fn snapshot(&mut self, broker: &Broker) -> Vec<String> {
        let account = broker.account();
        let positions = broker.positions();
        vec![
            self.reliable(|seq| frame("account", &AccountFrame { seq, ..account })),
            self.reliable(|seq| frame("positions", &PositionsFrame { seq, positions })),
        ]
    }

    fn execution(&mut self, exec: Execution, stats: &Mutex<SimStats>) -> Vec<String> {
        let mut out = Vec::new();
        if let Some(r) = exec.result {
            out.push(self.reliable(|seq| {
                frame(
                    "order_result",
                    &crate::bridge::protocol::OrderResultFrame { seq, ..r },
                )
            }));
            lock(stats).results_sent += 1;
        }
        for d in exec.deals {
            out.push(self.reliable(|seq| frame("deal", &DealFrame { seq, ..d })));
            lock(stats).deals_sent += 1;
        }
        out
    }
}

/// A frame as JSON with its `type`.
fn frame<T: serde::Serialize>(kind: &str, body: &T) -> serde_json::Value {
    let mut v = serde_json::to_value(body).unwrap_or_default();
    if let Some(map) = v.as_object_mut() {
        map.insert("type".into(), kind.into());
    }
    v
}

async fn session(
    cfg: &SimConfig,
    url: &str,
    link: &mut Link,
    rx: &mut mpsc::UnboundedReceiver<Control>,
    stats: &Arc<Mutex<SimStats>>,
    broker: &Arc<Mutex<Broker>>,
    history: &Arc<Mutex<BarHistory>>,
) -> Result<Ended, SimError> {
    let client = super::client::ws_client();
    let (_resp, framed) = client
        .ws(url)
        .max_frame_size(1 << 20)
        .connect()
        .await
        .map_err(|e| SimError::Unreachable(format!("{url}: {e}")))?;
    let (mut sink, mut stream) = framed.split();
    let login = lock(broker).login();
    let hello = Hello {
        seq: link.seq(),
        api_key: cfg.api_key.clone(),
        login,
        server: cfg.server.clone(),
        build: Some(4000),
        protocol_version: cfg.protocol_version,
        last_seq_received: link.in_seq,
        epoch: link.epoch,
    };
    if !send_text(&mut sink, frame("hello", &hello).to_string()).await {
        return Ok(Ended::Dropped);
    }
    // The welcome, or why not.
    let welcome = loop {
        let next = tokio::time::timeout(Duration::from_secs(10), stream.next()).await;
        let Ok(Some(Ok(item))) = next else {
            return Ok(Ended::Dropped);
        };
        match item {
            ws::Frame::Text(bytes) => match serde_json::from_slice::<Outbound>(&bytes) {
                Ok(Outbound::Welcome(w)) => break w,
                Ok(Outbound::Redirect(r)) => return Ok(Ended::Redirect(r.url)),
                Ok(Outbound::Error(e)) => {
                    lock(stats).errors.push((e.code.clone(), e.message.clone()));
                    if e.fatal && matches!(e.code.as_str(), "bad_api_key" | "unsupported_version") {
                        return Err(SimError::Refused(format!("{}: {}", e.code, e.message)));
                    }
                    // No node owns the tenant this moment (it is moving): like an unreachable node.
                    if e.code == "tenant_unavailable" {
                        return Err(SimError::Unreachable(format!("{url}: {}", e.message)));
                    }
                    if e.fatal {
                        return Ok(Ended::Dropped);
                    }
                }
                _ => {}
            },
            ws::Frame::Close(reason) => {
                lock(stats).last_close = Some(format!("{reason:?}"));
                return Ok(Ended::Dropped);
            }
            _ => {}
        }
    };
    {
        let mut s = lock(stats);
        s.connects += 1;
        s.connected = true;
    }
    // A new epoch: trellis numbers its frames from 1 again; what we processed of its earlier life is no guide.
    if welcome.epoch != link.epoch {
        link.in_seq = 0;
        link.epoch = welcome.epoch;
    }
    // Resume: what trellis has not stored, then a fresh snapshot.
    link.acknowledge(welcome.resume_from);
    let mut pending: Vec<String> = link.outbox.values().cloned().collect();
    pending.extend(link.snapshot(&lock(broker)));
    for text in pending {
        if !send_text(&mut sink, text).await {
            return Ok(Ended::Dropped);
        }
    }
    let mut heartbeat = tokio::time::interval(Duration::from_millis(cfg.heartbeat_ms.max(10)));
    heartbeat.tick().await;
    let silence = Duration::from_millis(cfg.silence_ms);
    let mut heard = tokio::time::Instant::now();
    loop {
        tokio::select! {
            control = rx.recv() => match control {
                None | Some(Control::Stop) => {
                    let _ = sink.send(ws::Message::Close(Some(ws::CloseCode::Normal.into()))).await;
                    return Ok(Ended::Stop);
                }
                Some(Control::DropLink) => return Ok(Ended::Dropped),
                Some(Control::DropAfterNextOrder) => link.drop_after_order = true,
                Some(Control::LoseNextOrder) => link.lose_next_order = true,
                Some(Control::Raw(text)) => {
                    if !send_text(&mut sink, text).await { return Ok(Ended::Dropped); }
                }
                Some(Control::ManualDeal { symbol, side, volume }) => {
                    lock(broker).manual_deal(&symbol, side, volume);
                }
                Some(Control::Tick(t)) => {
                    let fired = quote(&mut lock(broker), &mut lock(history), &t);
                    link.last_tick_msc = Some(t.time_msc);
                    let seq = link.seq();
                    let tick = TickFrame { seq, symbol: t.symbol.into_string(), time_msc: t.time_msc, bid: t.bid, ask: t.ask,
                        last: None, volume: None, flags: Some(6) };
                    let mut out = vec![frame("tick", &tick).to_string()];
                    lock(stats).ticks_sent += 1;
                    for exec in fired {
                        out.extend(link.execution(exec, stats));
                    }
                    if out.len() > 1 {
                        out.extend(link.snapshot(&lock(broker)));
                    }
                    for text in out {
                        if !send_text(&mut sink, text).await { return Ok(Ended::Dropped); }
                    }
                }
            },
            item = stream.next() => {
                let Some(Ok(item)) = item else { return Ok(Ended::Dropped) };
                heard = tokio::time::Instant::now();
                match item {
                    ws::Frame::Text(bytes) => {
                        if link.lose_next_order && serde_json::from_slice::<Outbound>(&bytes)
                            .is_ok_and(|f| matches!(f, Outbound::OrderRequest(_)))
                        {
                            link.lose_next_order = false;
                            return Ok(Ended::Dropped); // never read: trellis must send it again
                        }
                        if let Some(out) = on_frame(&bytes, cfg.protocol_version, link, stats, broker, history) {
                            if link.drop_after_order {
                                link.drop_after_order = false;
                                return Ok(Ended::Dropped); // executed, result kept in the outbox
                            }
                            for text in out {
                                if !send_text(&mut sink, text).await { return Ok(Ended::Dropped); }
                            }
                        }
                    }
                    ws::Frame::Ping(p) => { let _ = sink.send(ws::Message::Pong(p)).await; }
                    ws::Frame::Close(reason) => {
                        lock(stats).last_close = Some(format!("{reason:?}"));
                        return Ok(Ended::Dropped);
                    }
                    _ => {}
                }
            },
            _ = heartbeat.tick() => {
                if !silence.is_zero() && heard.elapsed() > silence {
                    // A frozen node: its socket stays open but nothing comes; try the next node.
                    return Err(SimError::Unreachable(format!("{url}: silent for {silence:?}")));
                }
                let hb = HeartbeatFrame { seq: link.seq(), time_msc: now_ms(), last_tick_msc: link.last_tick_msc, ack: Some(link.in_seq) };
                if !send_text(&mut sink, frame("heartbeat", &hb).to_string()).await { return Ok(Ended::Dropped); }
            }
        }
    }
}

/// Handles one frame from trellis (as a bridge of protocol `version`); returns the frames that answer it.
fn on_frame(
    bytes: &Bytes,
    version: u32,
    link: &mut Link,
    stats: &Mutex<SimStats>,
    broker: &Mutex<Broker>,
    history: &Mutex<BarHistory>,
) -> Option<Vec<String>> {
    {
        let mut s = lock(stats);
        if s.received.len() >= 1_000 {
            s.received.remove(0);
        }
        s.received.push(String::from_utf8_lossy(bytes).into_owned());
    }
    let parsed = serde_json::from_slice::<Outbound>(bytes).ok()?;
    let seq = parsed.seq();
    // seq 0 marks frames outside the session's sequence (errors before or while closing a connection).
    if seq != 0 {
        if seq <= link.in_seq {
            lock(stats).duplicate_frames += 1;
            return None;
        }
        link.in_seq = seq;
    }
    match parsed {
        Outbound::OrderRequest(req) => {
            lock(stats).orders_received += 1;
            let exec = lock(broker).execute(&req);
            let mut out = link.execution(exec, stats);
            out.extend(link.snapshot(&lock(broker)));
            Some(out)
        }
        Outbound::Heartbeat(h) => {
            link.acknowledge(h.ack);
            None
        }
        Outbound::Error(e) => {
            lock(stats).errors.push((e.code, e.message));
            None
        }
        Outbound::HistoryRequest(req) => {
            let broker = lock(broker);
            let deals = broker.history(req.from_msc);
            let count = deals.len() as u64;
            let mut out: Vec<String> = deals
                .into_iter()
                .map(|d| link.reliable(|seq| frame("deal", &DealFrame { seq, ..d })))
                .collect();
            let positions = broker.positions();
            out.push(link.reliable(|seq| {
                frame(
                    "history_end",
                    &HistoryEndFrame {
                        seq,
                        request_id: req.request_id,
                        deals: count,
                        positions,
                    },
                )
            }));
            Some(out)
        }
        Outbound::CancelRequest(req) => {
            let answer = lock(broker).cancel(&req);
            Some(vec![link.reliable(|seq| {
                frame(
                    "cancel_result",
                    &crate::bridge::protocol::CancelResultFrame { seq, ..answer },
                )
            })])
        }
        Outbound::BarsRequest(req) => {
            lock(stats).bars_requests += 1;
            if version < BARS_PROTOCOL_VERSION {
                return None; // a version-2 bridge knows no such frame
            }
            let out = bars_answer(&req, &lock(history), link);
            lock(stats).bars_sent += out.1;
            Some(out.0)
        }
        Outbound::Welcome(_) | Outbound::Redirect(_) => None,
    }
}

/// The `bars` pages answering `req` from the terminal's charts, and how many bars they carry.
fn bars_answer(req: &BarsRequest, history: &BarHistory, link: &mut Link) -> (Vec<String>, u64) {
    let page = |link: &mut Link, bars: Vec<BarRow>, forming, error, more| {
        let f = BarsFrame {
            seq: link.seq(),
            request_id: req.request_id,
            symbol: req.symbol.clone(),
            timeframe: req.timeframe.clone(),
            bars,
            forming,
            error,
            more,
        };
        frame("bars", &f).to_string()
    };
    let Some(tf) = Timeframe::parse(&req.timeframe) else {
        let why = format!("no timeframe {}", req.timeframe);
        return (vec![page(link, Vec::new(), None, Some(why), false)], 0);
    };
    let (mut bars, forming) = history.range(
        &Symbol::new(req.symbol.clone()),
        tf,
        req.from_msc,
        req.to_msc,
    );
    if let Some(n) = req.count.map(|n| n as usize) {
        bars.drain(..bars.len().saturating_sub(n));
    }
    let count = (bars.len() + usize::from(forming.is_some())) as u64;
    let rows: Vec<BarRow> = bars.iter().map(BarRow::from_bar).collect();
    let mut chunks: Vec<&[BarRow]> = rows.chunks(MAX_BARS_PER_FRAME).collect();
    if chunks.is_empty() {
        chunks.push(&[]);
    }
    let last = chunks.len() - 1;
    let mut forming = forming.as_ref().map(BarRow::from_bar);
    let pages = chunks
        .into_iter()
        .enumerate()
        .map(|(i, chunk)| {
            let more = i < last;
            let forming = if more { None } else { forming.take() };
            page(link, chunk.to_vec(), forming, None, more)
        })
        .collect();
    (pages, count)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bridge::bars::{Ask, BarsRequests, Page};
    use crate::bridge::protocol::{decode, Inbound};

    fn tick(t: i64, bid: &str) -> Tick {
        let bid: rust_decimal::Decimal = bid.parse().expect("decimal literal");
        Tick {
            symbol: Symbol::new("EURUSD"),
            time_msc: t,
            bid,
            ask: bid,
        }
    }

    #[test]
    fn the_pages_a_terminal_sends_decode_and_assemble_into_exactly_its_own_bars() {
        // Arrange: 700 minutes of ticks, so 699 closed M1 bars (three pages) and one forming.
        let mut history = BarHistory::default();
        for i in 0..2_100 {
            history.on_tick(&tick(
                i * 20_000 + 3,
                &format!("1.{:05}", 10_000 + (i * 37) % 500),
            ));
        }
        let mut requests = BarsRequests::new(0);
        let ask = Ask {
            request_id: 42,
            symbol: Symbol::new("EURUSD"),
            timeframe: Timeframe::M1,
            from_ms: 0,
            to_ms: 700 * 60_000,
            count: 50_000,
        };
        requests.ask(ask).expect("room");
        let req = requests.start().remove(0);

        // Act: the simulator's pages, read back as trellis reads them.
        let (pages, count) = bars_answer(&req, &history, &mut Link::default());
        let mut outcome = None;
        for text in &pages {
            let Ok(Inbound::Bars(page)) = decode(text) else {
                panic!("a valid bars page: {text:.200}")
            };
            outcome = Some(requests.page(page));
        }

        // Assert
        let (bars, forming) = history.range(&Symbol::new("EURUSD"), Timeframe::M1, 0, 700 * 60_000);
        assert_eq!((pages.len(), count, bars.len()), (3, 700, 699));
        let Some(Page::Done(answer)) = outcome else {
            panic!("answered: {outcome:?}")
        };
        assert_eq!(answer.request_id, 42);
        assert_eq!(answer.bars, bars);
        // Decimals compare by value; their text shows the scale too, which must survive the wire.
        assert_eq!(format!("{:?}", answer.bars), format!("{bars:?}"));
        assert_eq!(answer.forming, forming);
    }
}
