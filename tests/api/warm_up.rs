//! Decisions continue across a restart (issue 36), checked against an uninterrupted run: the same ticks go
//! through a real `trellis serve` once without interruption and once with a SIGKILL and a SIGTERM restart in
//! the middle, with an `ema_cross` 20/100 on M1 — a warm-up of 300 bars, the length it has on a real clock
//! (100 minutes of market time before its first decision when it starts cold). The terminal's own deals are
//! the record compared: after each restart the strategy is warm at once (its stored state, then the bars
//! after it) and trades bar for bar as the uninterrupted run did.
//!
//! The feed pauses while trellis is down (in the simulator a tick sent while no bridge is linked reaches the
//! broker but not trellis, and an uninterrupted run would have traded on it), and the last ticks before each
//! stop are given a moment to be handled: what this test checks is the decisions, not the no-loss of
//! in-flight orders (`restart.rs` kills at random moments for that).

use std::time::{Duration, Instant};

use rust_decimal::Decimal;
use serde_json::Value;
use trellis::domain::Tick;
use trellis::sim::feed::RandomWalk;
use trellis::sim::node::{Node, NodeSpec, Stop};
use trellis::sim::{SimConfig, SimHandle};

use crate::helpers::{free_port, real_profile, T0};

const KEY: &str = "trk_acme0001_warm-up-secret";
const LOGIN: u64 = 7301;
/// Ticks per M1 bar (six seconds of market time each).
const PER_BAR: usize = 10;
const BARS: usize = 460;

fn config(fast: u32, slow: u32) -> String {
    format!(
        "[[tenants]]\nid = \"acme\"\nname = \"Acme\"\ntier = \"professional\"\napi_keys = [\"{KEY}\"]\n\
         symbols = [\"EURUSD\"]\n\n[[tenants.strategies]]\nid = \"ema\"\nkind = \"ema_cross\"\n\
         symbol = \"EURUSD\"\ntimeframe = \"M1\"\nvolume = 0.1\nparams = {{ fast = {fast}, slow = {slow} }}\n"
    )
}

/// The market: one seeded random walk of EURUSD, ten ticks a minute.
fn market() -> Vec<Tick> {
    let names = vec!["EURUSD".to_owned()];
    RandomWalk::new(RandomWalk::default_symbols(&names), T0, 6_000, 36)
        .with_steps(6, 2)
        .take(PER_BAR * BARS)
        .collect()
}

/// One trellis process on its own stores (kept across its restarts) and its simulated terminal.
struct Rig {
    spec: NodeSpec,
    _dir: tempfile::TempDir,
    sim: SimHandle,
}

impl Rig {
    async fn start(toml: &str) -> (Self, Node) {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut env = if real_profile() {
            crate::helpers::real_store_vars().await
        } else {
            Vec::new()
        };
        env.extend(
            [
                ("TRELLIS__LOG__LEVEL", "info"),
                ("TRELLIS__MT5__HEARTBEAT_INTERVAL_MS", "500"),
                ("TRELLIS__MT5__HEARTBEAT_TIMEOUT_MS", "5000"),
            ]
            .map(|(k, v)| (k.to_owned(), v.to_owned())),
        );
        let config = dir.path().join("trellis.toml");
        std::fs::write(&config, toml).expect("config written");
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
        let mut cfg = SimConfig::new(spec.ws_url(), KEY, LOGIN);
        cfg.heartbeat_ms = 200;
        let sim = trellis::sim::spawn(cfg);
        let rig = Rig {
            spec,
            _dir: dir,
            sim,
        };
        (rig, node)
    }

    /// Sends `ticks` at about 500 a second (so each bar's order reaches the terminal within its bar).
    async fn feed(&self, ticks: &[Tick]) {
        for chunk in ticks.chunks(5) {
            for t in chunk {
                self.sim.tick(t.clone());
            }
            actix_rt::time::sleep(Duration::from_millis(10)).await;
        }
        // The last bar's consequences: decided, sent, executed.
        actix_rt::time::sleep(Duration::from_millis(700)).await;
    }

    /// The terminal's deals as (bar index, buy or sell, volume), in order.
    fn deals(&self) -> Vec<(i64, u32, Decimal)> {
        let broker = self.sim.broker.lock().expect("broker");
        broker
            .deals()
            .iter()
            .map(|d| ((d.time_msc - T0) / 60_000, d.deal_type, d.volume))
            .collect()
    }

    /// `GET` on the tenant's API with its key.
    async fn api(&self, path: &str) -> Value {
        let mut resp = awc::Client::default()
            .get(format!("{}{path}", self.spec.url()))
            .insert_header(("X-API-Key", KEY))
            .send()
            .await
            .expect("trellis answers");
        resp.json::<Value>()
            .limit(1 << 22)
            .await
            .expect("JSON body")
    }

    /// Waits until the strategy is warm; how it was warmed and how long that took.
    async fn wait_warm(&self, timeout: Duration) -> (String, Duration) {
        let start = Instant::now();
        loop {
            let list = self.api("/api/v1/tenants/acme/strategies").await;
            let w = &list["strategies"][0]["warm_up"];
            if w["state"] == "ready" {
                return (
                    w["warmed_by"].as_str().unwrap_or("").to_owned(),
                    start.elapsed(),
                );
            }
            assert!(
                start.elapsed() < timeout,
                "not warm after {timeout:?}: {list}\n{}",
                tail(&self.spec.log)
            );
            actix_rt::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Stops trellis and starts it again on the same stores; how long until its strategy was warm.
    async fn restart(&self, node: &mut Node, how: Stop) -> (String, Duration) {
        node.stop(how, Duration::from_secs(15))
            .await
            .expect("trellis stops");
        let started = Instant::now();
        *node = self.spec.start().expect("trellis starts again");
        node.wait_ready(&self.spec, Duration::from_secs(30))
            .await
            .unwrap_or_else(|e| panic!("{e}\n{}", tail(&self.spec.log)));
        let (by, _) = self.wait_warm(Duration::from_secs(20)).await;
        (by, started.elapsed())
    }
}

fn tail(path: &std::path::Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(60)..].join("\n")
}

/// Deals of two runs are the same decisions: the same sides and volumes in the same order, each in the same
/// bar or the next (an order decided at a bar's close executes at the terminal's next tick, which a busy
/// machine may deliver after the next bar opened).
fn assert_same_decisions(uninterrupted: &[(i64, u32, Decimal)], restarted: &[(i64, u32, Decimal)]) {
    let sides = |d: &[(i64, u32, Decimal)]| d.iter().map(|x| (x.1, x.2)).collect::<Vec<_>>();
    assert_eq!(
        sides(uninterrupted),
        sides(restarted),
        "the same orders in the same order\nuninterrupted: {uninterrupted:?}\nrestarted:     {restarted:?}"
    );
    for (a, b) in uninterrupted.iter().zip(restarted) {
        assert!(
            (a.0 - b.0).abs() <= 1,
            "a deal of bar {} in the uninterrupted run was made at bar {} after the restarts\n\
             uninterrupted: {uninterrupted:?}\nrestarted:     {restarted:?}",
            a.0,
            b.0
        );
    }
}

#[actix_rt::test]
async fn after_a_sigkill_and_a_sigterm_restart_an_ema_20_100_trades_bar_for_bar_as_an_uninterrupted_run(
) {
    let ticks = market();
    let toml = config(20, 100);

    // The oracle: the same ticks, no interruption.
    let (oracle, mut node) = Rig::start(&toml).await;
    oracle.wait_warm(Duration::from_secs(20)).await;
    oracle.feed(&ticks).await;
    let uninterrupted = oracle.deals();
    node.stop(Stop::Term, Duration::from_secs(15))
        .await
        .expect("stops");
    oracle.sim.send(trellis::sim::Control::Stop);

    // The same ticks with a SIGKILL at 40 % and a SIGTERM at 70 %.
    // Each stop a few bars before one of the oracle's deals: a cold start would miss it.
    let deal_bars: Vec<i64> = uninterrupted
        .iter()
        .map(|d| d.0)
        .filter(|b| *b > 150)
        .collect();
    assert!(
        deal_bars.len() >= 3,
        "the market must make the strategy trade: {uninterrupted:?}"
    );
    let stop_before = |bar: i64| ((bar - 4) as usize) * PER_BAR;
    let (a, b) = (stop_before(deal_bars[0]), stop_before(deal_bars[2]));
    let (rig, mut node) = Rig::start(&toml).await;
    rig.wait_warm(Duration::from_secs(20)).await;
    rig.feed(&ticks[..a]).await;
    let (by_kill, after_kill) = rig.restart(&mut node, Stop::Kill).await;
    rig.feed(&ticks[a..b]).await;
    let (by_term, after_term) = rig.restart(&mut node, Stop::Term).await;
    rig.feed(&ticks[b..]).await;
    let restarted = rig.deals();
    node.stop(Stop::Term, Duration::from_secs(15))
        .await
        .expect("stops");

    eprintln!(
        "warm after the SIGKILL restart in {after_kill:?} ({by_kill}), after the SIGTERM restart in \
         {after_term:?} ({by_term}); {} deals",
        restarted.len()
    );
    assert_same_decisions(&uninterrupted, &restarted);
    // And both are what a backtest of the same ticks decides.
    let params: trellis::strategies::Params =
        [("fast".to_owned(), 20.0), ("slow".to_owned(), 100.0)].into();
    let cfg = trellis::backtest::BacktestConfig::new(
        "EURUSD",
        "ema_cross",
        params,
        trellis::domain::Timeframe::M1,
    );
    let (_, backtest) = trellis::backtest::run(
        cfg,
        &trellis::strategies::StrategyRegistry::default(),
        &ticks,
    )
    .expect("backtest runs");
    let backtest: Vec<(i64, u32, Decimal)> = backtest
        .iter()
        .map(|d| {
            (
                (d.fill.time_msc - T0) / 60_000,
                u32::from(d.fill.side != trellis::domain::Side::Buy),
                d.fill.volume,
            )
        })
        .collect();
    assert_same_decisions(&backtest, &uninterrupted);
    assert_eq!(by_kill, "snapshot", "restored from its stored state");
    assert_eq!(by_term, "snapshot", "restored from its stored state");
}

// ---- in one process ------------------------------------------------------------------------------------

mod in_process {
    use std::time::Duration;

    use serde_json::json;
    use trellis::domain::Tick;
    use trellis::sim::feed::RandomWalk;
    use trellis::sim::{SimConfig, SimHandle};

    use crate::helpers::{
        create_key, create_tenant, create_user, spawn_admin_app, wait_for, TestApp, T0,
    };

    /// `bars` M1 bars of EURUSD from T0 (three ticks each), and the first tick of the bar after.
    fn history(bars: usize, seed: u64) -> Vec<Tick> {
        let names = vec!["EURUSD".to_owned()];
        RandomWalk::new(
            RandomWalk::default_symbols(&names),
            T0 - 20_000,
            20_000,
            seed,
        )
        .with_steps(6, 2)
        .take(bars * 3 + 1)
        .collect()
    }

    /// An ema_cross 20/67: a declared warm-up of 201 bars.
    fn long_ema(id: &str) -> serde_json::Value {
        json!({"id": id, "kind": "ema_cross", "symbol": "EURUSD", "timeframe": "M1", "volume": 0.1,
               "params": {"fast": 20, "slow": 67}})
    }

    async fn sim(app: &TestApp, key: &str, version: Option<u32>, preload: &[Tick]) -> SimHandle {
        let mut cfg = SimConfig::new(app.ws_url(), key, 9101);
        cfg.heartbeat_ms = 200;
        if let Some(v) = version {
            cfg.protocol_version = v;
        }
        cfg.history = preload.to_vec();
        let sim = trellis::sim::spawn(cfg);
        wait_for("the simulator to connect", || sim.stats().connected).await;
        sim
    }

    async fn warm_up(app: &TestApp, token: &str, id: &str) -> serde_json::Value {
        let path = format!("/api/v1/tenants/acme/strategies/{id}");
        for _ in 0..400 {
            let v = app.expect(200, "GET", &path, Some(token), None).await;
            if v["warm_up"]["state"] == "ready" {
                return v["warm_up"].clone();
            }
            actix_rt::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("{id} never warm")
    }

    fn deals(sim: &SimHandle) -> usize {
        sim.broker.lock().map(|b| b.deals().len()).unwrap_or(0)
    }

    /// The live bar after the history: its ticks, then the one that closes it.
    fn next_bar(history: &[Tick]) -> Vec<Tick> {
        let last = history.last().expect("history");
        (1..=3)
            .map(|i| Tick {
                time_msc: last.time_msc + i * 20_000,
                ..last.clone()
            })
            .collect()
    }

    #[actix_rt::test]
    async fn a_strategy_created_through_the_api_with_a_200_bar_warm_up_trades_on_the_first_live_bar_after_its_creation(
    ) {
        let (app, root) = spawn_admin_app(&[]).await;
        create_tenant(&app, &root, "acme", "professional").await;
        let (_, trader) = create_user(&app, &root, "acme", "t@acme.test", "trader").await;
        let (_, key) = create_key(&app, &root, "acme", &["market:write"]).await;
        let past = history(260, 5);
        let sim = sim(&app, &key, None, &[]).await;
        for t in &past {
            sim.tick(t.clone());
        }
        let t = app.runtime.tenant("acme").expect("tenant runs");
        let md = t.market_data.get().expect("market data");
        for _ in 0..200 {
            let bars = md
                .send(trellis::actors::messages::GetRecentBars {
                    symbol: "EURUSD".into(),
                    timeframe: trellis::domain::Timeframe::M1,
                    limit: 1_000,
                })
                .await
                .expect("bars");
            if bars.len() >= 260 {
                break;
            }
            actix_rt::time::sleep(Duration::from_millis(20)).await;
        }

        app.expect(
            201,
            "POST",
            "/api/v1/tenants/acme/strategies",
            Some(&trader),
            Some(&long_ema("long")),
        )
        .await;
        let warm = warm_up(&app, &trader, "long").await;
        assert_eq!(warm["bars"], 201, "{warm}");
        assert_eq!(
            warm["warmed_by"], "replay",
            "a new strategy has no stored state: {warm}"
        );
        let before = deals(&sim);
        for t in next_bar(&past) {
            sim.tick(t);
        }

        wait_for("an order on the first live bar", || deals(&sim) > before).await;
        let made = sim
            .broker
            .lock()
            .expect("broker")
            .deals()
            .last()
            .cloned()
            .expect("deal");
        let first_live_bar = past.last().expect("history").time_msc;
        assert!(
            made.time_msc == first_live_bar + 60_000,
            "the deal is made at the tick that closed the first live bar: {made:?}"
        );
    }

    #[actix_rt::test]
    async fn a_tenant_whose_store_is_empty_warms_from_the_terminals_bars_and_an_older_bridge_leaves_it_to_the_store(
    ) {
        let (app, root) = spawn_admin_app(&[]).await;
        create_tenant(&app, &root, "acme", "professional").await;
        let (_, trader) = create_user(&app, &root, "acme", "t@acme.test", "trader").await;
        let (_, key) = create_key(&app, &root, "acme", &["market:write"]).await;
        // The terminal has 260 bars of history this trellis never saw.
        let past = history(260, 9);
        let sim_now = sim(&app, &key, None, &past).await;

        app.expect(
            201,
            "POST",
            "/api/v1/tenants/acme/strategies",
            Some(&trader),
            Some(&long_ema("long")),
        )
        .await;
        let warm = warm_up(&app, &trader, "long").await;
        assert_eq!(
            warm["last_bar_ms"],
            json!(past[past.len() - 2].time_msc / 60_000 * 60_000),
            "{warm}"
        );
        let before = deals(&sim_now);
        for t in next_bar(&past) {
            sim_now.tick(t);
        }
        wait_for("an order on the first live bar", || {
            deals(&sim_now) > before
        })
        .await;
        sim_now.send(trellis::sim::Control::Stop);

        // A bridge of protocol version 2 cannot send bars: the strategy warms from the store alone.
        let old = sim(&app, &key, Some(2), &[]).await;
        app.expect(
            201,
            "POST",
            "/api/v1/tenants/acme/strategies",
            Some(&trader),
            Some(
                &json!({"id": "h1", "kind": "ema_cross", "symbol": "EURUSD", "timeframe": "H1",
                         "volume": 0.1, "params": {"fast": 2, "slow": 3}}),
            ),
        )
        .await;
        let warm = warm_up(&app, &trader, "h1").await;
        assert_eq!(warm["state"], "ready", "{warm}");
        assert!(old.stats().connected, "the older bridge stays connected");
    }
}
