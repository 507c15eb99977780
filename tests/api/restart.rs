//! Restarts and crashes in the middle of trading, against a real `trellis serve` process and the simulated
//! terminal, checked against the terminal's own record of its deals: a SIGTERM restart resumes trading at
//! once; a loop of SIGKILLs at random moments loses no deal, repeats none and leaves positions equal to the
//! terminal's; a trade made by hand while trellis is down is booked as external, and a position history cannot
//! explain is adopted — each with its audit entry.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use rust_decimal::Decimal;
use trellis::domain::positions::RECONCILIATION_TICKET_BASE;
use trellis::domain::Side;
use trellis::sim::feed::{pace, RandomWalk};
use trellis::sim::node::{trading_config, Node, NodeSpec, Stop};
use trellis::sim::{Control, SimConfig, SimHandle};

use crate::helpers::{d, free_port, real_profile, tenant, KeptStore, T0};

pub(crate) const KEY: &str = "trk_acme0001_restart-secret";
pub(crate) const LOGIN: u64 = 7001;
pub(crate) const SYMBOLS: [&str; 3] = ["EURUSD", "GBPUSD", "USDJPY"];

/// One stored fill, as the relational store has it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub(crate) struct StoredFill {
    pub(crate) deal_ticket: i64,
    symbol: String,
    side: String,
    volume: String,
}

/// A trellis process on its own stores, the simulated terminal connected to it, and a random-walk feed.
pub(crate) struct Rig {
    pub(crate) spec: NodeSpec,
    _dir: tempfile::TempDir,
    /// The PostgreSQL owner's URL in the real profile (reads the stored fills past row-level security).
    owner_url: Option<String>,
    pub(crate) sim: SimHandle,
    feed: Option<actix_rt::task::JoinHandle<u64>>,
    csv: std::path::PathBuf,
}

impl Rig {
    async fn start() -> (Self, Node) {
        Self::start_with(&trading_config(KEY, &SYMBOLS)).await
    }

    /// A rig whose trellis runs `config` (a TOML over the test profile; tenant `acme`, key [`KEY`]).
    pub(crate) async fn start_with(config_toml: &str) -> (Self, Node) {
        let dir = tempfile::tempdir().expect("temp dir");
        let vars = if real_profile() {
            crate::helpers::real_store_vars().await
        } else {
            Vec::new()
        };
        let owner_url = vars
            .iter()
            .find(|(k, _)| k == "TRELLIS__STORAGE__POSTGRES_MIGRATE_URL")
            .map(|(_, v)| v.clone());
        let config = dir.path().join("trellis.toml");
        std::fs::write(&config, config_toml).expect("config written");
        let mut env = vars;
        env.extend(
            [
                ("TRELLIS__LOG__LEVEL", "info"),
                ("TRELLIS__MT5__HEARTBEAT_INTERVAL_MS", "500"),
                ("TRELLIS__MT5__HEARTBEAT_TIMEOUT_MS", "5000"),
            ]
            .map(|(k, v)| (k.to_owned(), v.to_owned())),
        );
        let spec = NodeSpec {
            binary: env!("CARGO_BIN_EXE_trellis").into(),
            config,
            data_dir: dir.path().join("data"),
            port: free_port(),
            env,
            log: dir.path().join("trellis.log"),
        };
        let mut node = spec.start().expect("trellis starts");
        node.wait_ready(&spec, Duration::from_secs(30))
            .await
            .unwrap_or_else(|e| panic!("{e}\n{}", tail(&spec.log)));
        let csv = dir.path().join("deals.csv");
        let mut cfg = SimConfig::new(spec.ws_url(), KEY, LOGIN);
        cfg.heartbeat_ms = 200;
        cfg.broker.deals_csv = Some(csv.clone());
        let sim = trellis::sim::spawn(cfg);
        let feeder = sim.feeder();
        let names: Vec<String> = SYMBOLS.iter().map(|s| s.to_string()).collect();
        // 3 s of market time per tick at 200 ticks/s: an M1 bar closes every 100 ms of the clock.
        let walk =
            RandomWalk::new(RandomWalk::default_symbols(&names), T0, 3_000, 7).with_steps(8, 2);
        let feed = actix_rt::spawn(async move { pace(&feeder, walk, 200).await });
        let rig = Rig {
            spec,
            _dir: dir,
            owner_url,
            sim,
            feed: Some(feed),
            csv,
        };
        (rig, node)
    }

    pub(crate) fn deals(&self) -> usize {
        self.sim
            .broker
            .lock()
            .map(|b| b.deals().len())
            .unwrap_or_default()
    }

    /// Waits until the terminal has made more than `n` deals; how long that took.
    pub(crate) async fn wait_deals_above(&self, n: usize, timeout: Duration) -> Option<Duration> {
        let start = Instant::now();
        while start.elapsed() < timeout {
            if self.deals() > n {
                return Some(start.elapsed());
            }
            actix_rt::time::sleep(Duration::from_millis(5)).await;
        }
        None
    }

    pub(crate) fn stop_feed(&mut self) {
        if let Some(feed) = self.feed.take() {
            feed.abort();
        }
    }

    /// trellis's stored fills, read from its relational store.
    async fn stored(&self) -> Vec<StoredFill> {
        const Q: &str =
            "SELECT deal_ticket, symbol, side, CAST(volume AS TEXT) AS volume FROM fills \
                         WHERE tenant_id = 'acme' ORDER BY deal_ticket";
        match &self.owner_url {
            Some(url) => {
                let pool = sqlx::PgPool::connect(url).await.expect("PostgreSQL");
                let rows = sqlx::query_as::<_, StoredFill>(Q)
                    .fetch_all(&pool)
                    .await
                    .expect("fills");
                pool.close().await;
                rows
            }
            None => {
                let path = self.spec.data_dir.join("relational.db");
                let url = format!("sqlite://{}?mode=ro", path.display());
                let pool = sqlx::SqlitePool::connect(&url).await.expect("SQLite");
                let rows = sqlx::query_as::<_, StoredFill>(Q)
                    .fetch_all(&pool)
                    .await
                    .expect("fills");
                pool.close().await;
                rows
            }
        }
    }

    /// The terminal's deal tickets, from its `--deals-csv` record.
    fn terminal_tickets(&self) -> Vec<i64> {
        let text = std::fs::read_to_string(&self.csv).expect("deals CSV");
        let mut lines = text.lines();
        assert_eq!(
            lines.next(),
            Some("ticket,order,client_order_id,symbol,side,volume,price,time_msc")
        );
        lines
            .map(|l| {
                l.split(',')
                    .next()
                    .and_then(|t| t.parse().ok())
                    .expect("ticket")
            })
            .collect()
    }

    /// Waits until trellis has stored exactly the terminal's deals (the feed stopped, nothing in flight).
    pub(crate) async fn wait_stored_equals_terminal(
        &self,
        timeout: Duration,
    ) -> (Vec<StoredFill>, Vec<i64>) {
        let start = Instant::now();
        loop {
            let stored = self.stored().await;
            let terminal = self.terminal_tickets();
            let trades: Vec<i64> = stored
                .iter()
                .map(|f| f.deal_ticket)
                .filter(|t| (*t as u64) < RECONCILIATION_TICKET_BASE)
                .collect();
            if trades == terminal || start.elapsed() > timeout {
                return (stored, terminal);
            }
            actix_rt::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The terminal's net position per symbol.
    pub(crate) fn terminal_positions(&self) -> BTreeMap<String, Decimal> {
        let broker = self.sim.broker.lock().expect("broker");
        net(broker.positions().iter().map(|p| {
            (
                p.symbol.clone(),
                if p.kind == 0 { p.volume } else { -p.volume },
            )
        }))
    }
}

fn net(items: impl Iterator<Item = (String, Decimal)>) -> BTreeMap<String, Decimal> {
    let mut out: BTreeMap<String, Decimal> = BTreeMap::new();
    for (s, v) in items {
        *out.entry(s).or_default() += v;
    }
    out.retain(|_, v| !v.is_zero());
    out
}

/// The net position per symbol that trellis's stored fills add up to.
pub(crate) fn stored_positions(stored: &[StoredFill]) -> BTreeMap<String, Decimal> {
    net(stored.iter().map(|f| {
        let v: Decimal = f.volume.parse().expect("volume");
        (f.symbol.clone(), if f.side == "buy" { v } else { -v })
    }))
}

pub(crate) fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let start = text.len().saturating_sub(4_000);
    let start = (start..text.len())
        .find(|i| text.is_char_boundary(*i))
        .unwrap_or(text.len());
    text[start..].to_owned()
}

/// No order was executed twice: every deal of the terminal carries a different client order id.
pub(crate) fn assert_each_order_executed_once(sim: &SimHandle) {
    let broker = sim.broker.lock().expect("broker");
    let mut seen = HashSet::new();
    for deal in broker.deals() {
        if let Some(c) = &deal.client_order_id {
            assert!(seen.insert(c.clone()), "order {c} was executed twice");
        }
    }
}

#[actix_rt::test]
async fn a_sigterm_restart_resumes_trading_within_two_seconds_and_stored_fills_equal_the_terminals_deals(
) {
    // Arrange: trading on three symbols.
    let (mut rig, mut node) = Rig::start().await;
    assert!(
        rig.wait_deals_above(3, Duration::from_secs(20))
            .await
            .is_some(),
        "no trading before the restart:\n{}",
        tail(&rig.spec.log)
    );

    // Act: SIGTERM mid-run, then the same node again on the same data and port.
    node.stop(Stop::Term, Duration::from_secs(15))
        .await
        .expect("trellis stops");
    let before = rig.deals();
    let mut node = rig.spec.start().expect("trellis starts again");
    let ready = node
        .wait_ready(&rig.spec, Duration::from_secs(30))
        .await
        .expect("ready again");
    let resumed = rig.wait_deals_above(before, Duration::from_secs(10)).await;
    let since_start = node.started.elapsed();
    let later = rig.deals();
    let more = rig
        .wait_deals_above(later + 2, Duration::from_secs(10))
        .await;
    rig.stop_feed();
    let (stored, terminal) = rig
        .wait_stored_equals_terminal(Duration::from_secs(15))
        .await;
    node.stop(Stop::Term, Duration::from_secs(15))
        .await
        .expect("trellis stops");

    // Assert
    let resumed = resumed.unwrap_or_else(|| {
        panic!(
            "no order executed after the restart:\n{}",
            tail(&rig.spec.log)
        )
    });
    eprintln!("sigterm restart: ready after {ready:?}, first order executed {resumed:?} after ready ({since_start:?} after the start)");
    assert!(
        ready + resumed <= Duration::from_secs(2),
        "trading resumed {:?} after the restart (ready after {ready:?})",
        ready + resumed
    );
    assert!(more.is_some(), "trading went on after the restart");
    let trades: Vec<i64> = stored.iter().map(|f| f.deal_ticket).collect();
    assert_eq!(
        trades, terminal,
        "stored fills equal the terminal's deals, ticket for ticket"
    );
    assert_eq!(stored_positions(&stored), rig.terminal_positions());
    assert_each_order_executed_once(&rig.sim);
}

#[actix_rt::test]
async fn a_loop_of_sigkills_at_random_moments_loses_no_deal_repeats_none_and_leaves_positions_equal_to_the_terminals(
) {
    // Arrange
    let (mut rig, mut node) = Rig::start().await;
    assert!(
        rig.wait_deals_above(2, Duration::from_secs(20))
            .await
            .is_some(),
        "no trading before the kills:\n{}",
        tail(&rig.spec.log)
    );
    let mut rng = rand::rngs::SmallRng::seed_from_u64(20_261_128);
    let mut recoveries = Vec::new();

    // Act: six kills, every other one right as a deal comes back (a burst of results in flight).
    const KILLS: usize = 6;
    for k in 0..KILLS {
        if k % 2 == 0 {
            let n = rig.deals();
            rig.wait_deals_above(n, Duration::from_secs(10)).await;
        } else {
            actix_rt::time::sleep(Duration::from_millis(rng.gen_range(100..900))).await;
        }
        node.stop(Stop::Kill, Duration::from_secs(10))
            .await
            .expect("killed");
        let before = rig.deals();
        node = rig.spec.start().expect("trellis starts again");
        let ready = node
            .wait_ready(&rig.spec, Duration::from_secs(30))
            .await
            .unwrap_or_else(|e| panic!("{e}\n{}", tail(&rig.spec.log)));
        let resumed = rig.wait_deals_above(before, Duration::from_secs(15)).await;
        let resumed = resumed.unwrap_or_else(|| {
            panic!("no order executed after kill {k}:\n{}", tail(&rig.spec.log))
        });
        recoveries.push(ready + resumed);
    }
    let log_mark = std::fs::metadata(&rig.spec.log)
        .map(|m| m.len())
        .unwrap_or(0);
    actix_rt::time::sleep(Duration::from_secs(1)).await;
    rig.stop_feed();
    let (stored, terminal) = rig
        .wait_stored_equals_terminal(Duration::from_secs(20))
        .await;
    actix_rt::time::sleep(Duration::from_secs(1)).await;
    node.stop(Stop::Term, Duration::from_secs(15))
        .await
        .expect("trellis stops");

    // Assert
    let trades: Vec<i64> = stored
        .iter()
        .map(|f| f.deal_ticket)
        .filter(|t| (*t as u64) < RECONCILIATION_TICKET_BASE)
        .collect();
    let terminal_set: HashSet<i64> = terminal.iter().copied().collect();
    let missing = terminal.iter().filter(|t| !trades.contains(t)).count();
    let unknown = trades.iter().filter(|t| !terminal_set.contains(t)).count();
    let adopted = stored.len() - trades.len();
    recoveries.sort();
    eprintln!(
        "kill loop: {KILLS} kills, {} terminal deals, {} stored, {missing} missing, {unknown} unknown to the terminal, \
         {adopted} adopted; recovery (restart → first order executed) {:?}",
        terminal.len(),
        trades.len(),
        recoveries
    );
    assert_eq!(
        trades, terminal,
        "every terminal deal stored exactly once, nothing else"
    );
    let log = std::fs::read_to_string(&rig.spec.log).unwrap_or_default();
    let reconciliations: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("adopted") || l.contains("differ") || l.contains("reconciled"))
        .collect();
    assert_eq!(
        adopted,
        0,
        "nothing was lost, so nothing had to be adopted:\n{}",
        reconciliations.join("\n")
    );
    assert_eq!(stored_positions(&stored), rig.terminal_positions());
    assert_each_order_executed_once(&rig.sim);
    let last_seconds = &log[(log_mark as usize).min(log.len())..];
    assert!(
        !last_seconds.contains("positions differ from the terminal's"),
        "no mismatch reported at the end:\n{last_seconds}"
    );
}

/// Ticks for EURUSD that make ema_cross 2/3 buy 0.1 (see helpers::rising), from `from` on.
fn rising(sim: &SimHandle, from: i64, n: i64) {
    for i in 0..n {
        sim.tick(crate::helpers::tick(
            "EURUSD",
            T0 + (from + i) * crate::helpers::MINUTE,
            &format!("1.10{i}0"),
            &format!("1.10{i}2"),
        ));
    }
}

#[actix_rt::test]
async fn a_trade_made_by_hand_while_trellis_is_down_is_booked_as_external_after_the_restart_with_its_audit_entry(
) {
    // Arrange: a long position, then trellis stops; the terminal keeps running.
    let app = crate::helpers::spawn_app().await;
    app.add_tenant(tenant("acme", KEY)).await;
    let sim = app.sim(KEY, LOGIN).await;
    rising(&sim, 0, 4);
    app.wait_portfolio("acme", "a position", |p| p.deals.len() == 1)
        .await;
    let port = app.port;
    let store: KeptStore = app.shutdown_keeping_data().await;

    // Act: someone sells 0.3 at the terminal while trellis is down; trellis comes back on the same port.
    sim.send(Control::ManualDeal {
        symbol: "EURUSD".into(),
        side: Side::Sell,
        volume: d("0.3"),
    });
    let manual = {
        let mut ticket = None;
        for _ in 0..100 {
            ticket = sim
                .broker
                .lock()
                .expect("broker")
                .deals()
                .last()
                .filter(|d| d.client_order_id.is_none())
                .map(|d| d.ticket);
            if ticket.is_some() {
                break;
            }
            actix_rt::time::sleep(Duration::from_millis(10)).await;
        }
        ticket.expect("the manual deal was made")
    };
    let port_var = port.to_string();
    let app = crate::helpers::spawn_app_on(store, &[("TRELLIS__HTTP__PORT", &port_var)]).await;
    app.add_tenant(tenant("acme", KEY)).await;
    let snap = app
        .wait_portfolio("acme", "the manual deal", |p| p.deals.len() == 2)
        .await;

    // Assert
    let external = snap
        .deals
        .iter()
        .find(|d| d.ticket == manual)
        .expect("booked");
    assert_eq!(external.client_order_id, None);
    assert_eq!(external.strategy_id, None);
    assert_eq!(
        (external.fill.side, external.fill.volume),
        (Side::Sell, d("0.3"))
    );
    let net: Decimal = snap
        .positions
        .iter()
        .map(|p| p.position.signed_volume())
        .sum();
    assert_eq!(net, d("-0.2"), "trellis holds what the terminal holds");
    assert!(
        snap.deals.iter().all(|d| !d.is_reconciliation()),
        "history explained it: nothing adopted"
    );
    let entries = app.audited("acme", "reconciliation.external_deal", 1).await;
    assert_eq!(entries.len(), 1, "{entries:?}");
    assert_eq!(entries[0]["detail"]["ticket"], manual);
    sim.stop().await.expect("sim stops");
    app.shutdown().await;
}

#[actix_rt::test]
async fn a_position_that_history_cannot_explain_is_adopted_from_the_terminal_with_its_audit_entry()
{
    // Arrange: the terminal buys 0.1 by hand and reports it to nobody; trellis has booked no deal for this
    // account, so it asks for no history and only the positions can tell.
    let app = crate::helpers::spawn_app().await;
    app.add_tenant(tenant("acme", KEY)).await;
    let mut events = crate::events::client(&app, KEY).await;
    let sim = app.sim(KEY, LOGIN).await;
    sim.tick(crate::helpers::tick("EURUSD", T0, "1.1000", "1.1002"));
    sim.send(Control::ManualDeal {
        symbol: "EURUSD".into(),
        side: Side::Buy,
        volume: d("0.1"),
    });

    // Act: the link drops and the terminal comes back: every attach reconciles.
    let connects = sim.stats().connects;
    sim.send(Control::DropLink);
    crate::helpers::wait_for("the terminal to reconnect", || {
        sim.stats().connects > connects
    })
    .await;
    let snap = app
        .wait_portfolio("acme", "the adopted position", |p| p.deals.len() == 1)
        .await;

    // Assert
    let adopted = &snap.deals[0];
    assert!(adopted.is_reconciliation(), "{adopted:?}");
    assert_eq!(
        (adopted.fill.side, adopted.fill.volume, adopted.fill.price),
        (Side::Buy, d("0.1"), d("1.1002"))
    );
    let held: HashMap<String, Decimal> = snap
        .positions
        .iter()
        .map(|p| {
            (
                p.position.symbol.as_str().to_owned(),
                p.position.signed_volume(),
            )
        })
        .collect();
    assert_eq!(held, HashMap::from([("EURUSD".to_owned(), d("0.1"))]));
    let entries = app.audited("acme", "reconciliation.adopted", 1).await;
    assert_eq!(entries.len(), 1, "{entries:?}");
    assert_eq!(entries[0]["detail"]["symbol"], "EURUSD");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    let mut seen = Vec::new();
    while let Ok(Some(frame)) = tokio::time::timeout_at(deadline, events.recv()).await {
        if frame["type"] == "reconciliation" {
            assert_eq!(frame["data"]["action"], "reconciliation.adopted");
            assert_eq!(frame["data"]["volume"], "0.1");
            seen.push(frame);
            break;
        }
    }
    assert_eq!(
        seen.len(),
        1,
        "a trading client sees the adoption on /ws/events"
    );
    sim.stop().await.expect("sim stops");
    app.shutdown().await;
}
