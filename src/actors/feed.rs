//! What a tenant's trading clients (`/ws/v1/client`) watch of its market data: the latest closed bar per
//! symbol and timeframe, the PnL with a short equity curve, and a wake-up for connections when either or a
//! quote changed.
//!
//! Why a pull model: a tick must never wait for clients. Pushing every tick to every connection would cost
//! the tick path one message per client, and a thousand clients would slow trading. Instead the owners
//! publish state in place (quotes are already published by `MarketData`, see `TenantContext::quotes`; bars
//! and PnL here) and *ring a bell*: an atomic add and, only while some connection listens, one `notify_one`
//! to a relay task that wakes the connections. Each connection then reads the latest values it subscribed to
//! and sends what changed since it last looked. That is conflation for free: a slow connection looks less
//! often and sees fewer, never stale, values; the tick path costs the same with one client or ten thousand.
//! The relay wakes connections at most every [`MARKET_INTERVAL`], which bounds what fan-out can take from
//! trading on a busy feed.
//!
//! Ownership (issue 12's rule: one owner per piece of state): only `MarketData` calls [`ClientFeed::bar_closed`]
//! and rings on ticks; only `Portfolio` calls [`ClientFeed::set_pnl`]. Connections only read.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use rust_decimal::Decimal;
use serde::Serialize;
use tokio::sync::{watch, Notify};

use crate::domain::{Bar, Symbol, Timeframe};
use crate::runtime::published::{publish, Published, Publisher};

/// The shortest time between two wake-ups of the connections: market data reaches a client at most ten
/// times a second per channel, the latest values each time. Without a pace, a thousand clients following a
/// 10 000 ticks/s feed would cost the two cores of a small machine more than trading does (measured with
/// `trellis bench clients`: tick → order p50 28 ms unpaced); a screen or a bot following prices needs no more.
pub const MARKET_INTERVAL: std::time::Duration = std::time::Duration::from_millis(100);

/// Equity points kept for a client's snapshot (one a second at most: an hour).
pub const CURVE_POINTS: usize = 3_600;

/// The tenant's PnL as clients see it.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PnlView {
    pub realised: Decimal,
    pub unrealised: Decimal,
    pub commission: Decimal,
    /// realised + unrealised − commission.
    pub equity: Decimal,
    pub at_ms: i64,
}

/// Bars and PnL with a change counter each, so a reader sends only what changed since it last looked.
#[derive(Debug, Default)]
pub struct FeedState {
    /// The latest closed bar per (symbol, timeframe), with the count of bars closed so far.
    pub bars: HashMap<(Symbol, Timeframe), (u64, Bar)>,
    pub pnl: (u64, PnlView),
    /// `(at_ms, equity)`, oldest first, at most [`CURVE_POINTS`].
    pub curve: VecDeque<(i64, Decimal)>,
}

pub struct ClientFeed {
    state: Published<FeedState>,
    owner: Publisher<FeedState>,
    /// Connections watching market data; the tick path rings only when this is above zero.
    watchers: AtomicUsize,
    bell: Arc<Notify>,
    /// The relay's fan-out to connections (started with the first watcher).
    changed: OnceLock<watch::Receiver<u64>>,
    /// When the bell last rang, in nanoseconds since [`epoch`] (fan-out delay, `trellis_client_fanout_seconds`).
    rung_at: AtomicU64,
    /// Updates as JSON, rendered once per change and shared by every connection (see [`ClientFeed::rendered_quote`]).
    rendered: Mutex<Rendered>,
}

/// What a quote's JSON is rendered from: bid, ask and tick time.
type QuoteVersion = (Decimal, Decimal, i64);

/// The JSON of the latest update of each market channel, with what it was rendered from.
#[derive(Default)]
struct Rendered {
    quotes: HashMap<Symbol, (QuoteVersion, Arc<str>)>,
    bars: HashMap<(Symbol, Timeframe), (u64, Arc<str>)>,
    pnl: Option<(u64, Arc<str>)>,
}

/// The process's reference instant for times kept in atomics.
fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// The cached JSON for `version`, or `render`'s output cached for the connections after this one.
fn cached<V: PartialEq>(
    slot: &mut Option<(V, Arc<str>)>,
    version: V,
    render: impl FnOnce() -> String,
) -> Arc<str> {
    match slot {
        Some((v, json)) if *v == version => json.clone(),
        _ => {
            let json: Arc<str> = render().into();
            *slot = Some((version, json.clone()));
            json
        }
    }
}

/// [`cached`] for one key of a map (the key is cloned only the first time it is seen).
fn cached_in<K: std::hash::Hash + Eq + Clone, V: PartialEq>(
    map: &mut HashMap<K, (V, Arc<str>)>,
    key: &K,
    version: V,
    render: impl FnOnce() -> String,
) -> Arc<str> {
    if let Some((v, json)) = map.get_mut(key) {
        if *v != version {
            *json = render().into();
            *v = version;
        }
        return json.clone();
    }
    let json: Arc<str> = render().into();
    map.insert(key.clone(), (version, json.clone()));
    json
}

impl Default for ClientFeed {
    fn default() -> Self {
        let (owner, state) = publish(FeedState::default());
        Self {
            state,
            owner,
            watchers: AtomicUsize::new(0),
            bell: Arc::new(Notify::new()),
            changed: OnceLock::new(),
            rung_at: AtomicU64::new(0),
            rendered: Mutex::new(Rendered::default()),
        }
    }
}

/// A connection's registration as a watcher; dropping it unregisters.
pub struct Watch {
    feed: Arc<ClientFeed>,
    pub changed: watch::Receiver<u64>,
}

impl Drop for Watch {
    fn drop(&mut self) {
        self.feed.watchers.fetch_sub(1, Ordering::Relaxed);
    }
}

impl ClientFeed {
    /// Something clients watch changed (a quote, a bar, the PnL). O(1) and allocation-free; nothing at all
    /// without watchers.
    #[inline]
    pub fn ring(&self) {
        if self.watchers.load(Ordering::Relaxed) > 0 {
            let at = epoch().elapsed().as_nanos() as u64;
            self.rung_at.store(at, Ordering::Relaxed);
            self.bell.notify_one();
        }
    }

    /// How long ago the bell last rang: what a connection reading now lags the latest change by.
    pub fn since_rung(&self) -> Duration {
        let at = Duration::from_nanos(self.rung_at.load(Ordering::Relaxed));
        epoch().elapsed().saturating_sub(at)
    }

    fn rendered(&self) -> std::sync::MutexGuard<'_, Rendered> {
        self.rendered.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A quote's JSON, rendered by the first connection that sends it and shared by the others: a thousand
    /// connections following a symbol cost one serialisation per change, not a thousand.
    pub fn rendered_quote(
        &self,
        symbol: &Symbol,
        version: QuoteVersion,
        render: impl FnOnce() -> String,
    ) -> Arc<str> {
        cached_in(&mut self.rendered().quotes, symbol, version, render)
    }

    /// A closed bar's JSON (`count`: the bars closed so far on its channel), shared like quotes.
    pub fn rendered_bar(
        &self,
        key: &(Symbol, Timeframe),
        count: u64,
        render: impl FnOnce() -> String,
    ) -> Arc<str> {
        cached_in(&mut self.rendered().bars, key, count, render)
    }

    /// The PnL's JSON (`count`: its change counter), shared like quotes.
    pub fn rendered_pnl(&self, count: u64, render: impl FnOnce() -> String) -> Arc<str> {
        cached(&mut self.rendered().pnl, count, render)
    }

    /// `MarketData` closed a bar.
    pub fn bar_closed(&self, bar: &Bar) {
        self.owner.modify(|s| {
            let entry = s
                .bars
                .entry((bar.symbol.clone(), bar.timeframe))
                .or_insert_with(|| (0, bar.clone()));
            entry.0 += 1;
            entry.1 = bar.clone();
        });
        self.ring();
    }

    /// `Portfolio` marked its PnL; a point joins the curve when a second passed since the last one.
    /// Unchanged figures change nothing (no update for clients).
    pub fn set_pnl(&self, pnl: PnlView) {
        {
            let s = self.state.read();
            let last = &s.pnl.1;
            if s.pnl.0 > 0
                && (last.realised, last.unrealised, last.commission)
                    == (pnl.realised, pnl.unrealised, pnl.commission)
            {
                return;
            }
        }
        self.owner.modify(|s| {
            if s.curve.back().is_none_or(|(at, _)| pnl.at_ms - at >= 1_000) {
                if s.curve.len() == CURVE_POINTS {
                    s.curve.pop_front();
                }
                s.curve.push_back((pnl.at_ms, pnl.equity));
            }
            s.pnl.0 += 1;
            s.pnl.1 = pnl;
        });
        self.ring();
    }

    pub fn read(&self) -> watch::Ref<'_, FeedState> {
        self.state.read()
    }

    /// Registers a watcher: its `changed` receiver wakes after every ring (several rings may wake it once).
    /// Starts the relay on the current tokio runtime the first time.
    pub fn watch(self: &Arc<Self>) -> Watch {
        let changed = self
            .changed
            .get_or_init(|| {
                let (tx, rx) = watch::channel(0u64);
                let bell = self.bell.clone();
                tokio::spawn(async move {
                    let mut n = 0u64;
                    loop {
                        bell.notified().await;
                        n += 1;
                        if tx.send(n).is_err() {
                            return;
                        }
                        // Paced: whatever rings meanwhile is seen at the next wake-up.
                        tokio::time::sleep(MARKET_INTERVAL).await;
                    }
                });
                rx
            })
            .clone();
        self.watchers.fetch_add(1, Ordering::Relaxed);
        Watch {
            feed: self.clone(),
            changed,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bar(close: &str) -> Bar {
        let d = |s: &str| s.parse::<Decimal>().unwrap_or_default();
        Bar {
            symbol: Symbol::new("EURUSD"),
            timeframe: Timeframe::M1,
            open_time_ms: 60_000,
            open: d("1.1"),
            high: d("1.2"),
            low: d("1.0"),
            close: d(close),
            tick_volume: 3,
        }
    }

    #[tokio::test]
    async fn a_watcher_wakes_after_a_ring_and_reads_the_latest_bar_and_pnl() {
        let feed = Arc::new(ClientFeed::default());
        feed.bar_closed(&bar("1.15")); // no watcher yet: kept, nobody woken
        let mut w = feed.watch();
        feed.bar_closed(&bar("1.16"));
        feed.set_pnl(PnlView {
            equity: Decimal::ONE,
            at_ms: 5_000,
            ..PnlView::default()
        });
        tokio::time::timeout(std::time::Duration::from_secs(5), w.changed.changed())
            .await
            .expect("woken")
            .expect("relay alive");
        drop(w);
        assert_eq!(feed.watchers.load(Ordering::Relaxed), 0);
        let s = feed.read();
        let (count, latest) = &s.bars[&(Symbol::new("EURUSD"), Timeframe::M1)];
        assert_eq!((*count, latest.close.to_string()), (2, "1.16".to_owned()));
        assert_eq!(s.pnl.0, 1);
        assert_eq!(s.curve.len(), 1);
    }

    #[test]
    fn the_curve_keeps_one_point_a_second() {
        let feed = ClientFeed::default();
        for (at_ms, equity) in [
            (0, 1),
            (400, 2),
            (999, 3),
            (1_000, 4),
            (1_500, 4),
            (2_500, 5),
        ] {
            feed.set_pnl(PnlView {
                at_ms,
                realised: Decimal::from(equity),
                equity: Decimal::from(equity),
                ..PnlView::default()
            });
        }
        let at: Vec<i64> = feed.read().curve.iter().map(|p| p.0).collect();
        assert_eq!(at, vec![0, 1_000, 2_500]);
        assert_eq!(feed.watchers.load(Ordering::Relaxed), 0);
    }
}
