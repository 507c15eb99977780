//! Several trellis nodes as separate processes on one PostgreSQL, Redis and ClickHouse (real profile only),
//! with a simulated terminal per tenant trading through them: ownership is exclusive at every sampled
//! moment, a SIGKILLed node's tenants trade again elsewhere, a node frozen past its leases writes nothing
//! after they were taken and stops those tenants when it wakes, a node that joins takes its fair share by
//! graceful hand-off, and a bridge on the wrong node is redirected. Each terminal's own deal record (its
//! `--deals-csv`) is the oracle: every deal stored exactly once, no order executed twice.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use trellis::domain::positions::RECONCILIATION_TICKET_BASE;
use trellis::sim::feed::{pace, RandomWalk};
use trellis::sim::node::{Node, NodeSpec, Stop};
use trellis::sim::{SimConfig, SimHandle};

use crate::helpers::{free_port, real_profile, ROOT_EMAIL, ROOT_PASSWORD, T0};

/// Lease timings of the tests: a dead node's tenants move after at most 3 s.
const LEASE_MS: u64 = 3_000;
const RENEW_MS: u64 = 500;

struct Tenant {
    id: String,
    key: String,
    sim: Option<SimHandle>,
    feed: Option<actix_rt::task::JoinHandle<u64>>,
    csv: PathBuf,
}

/// N nodes on one set of stores, and the tenants of their shared configuration.
struct Rig {
    dir: tempfile::TempDir,
    env: Vec<(String, String)>,
    owner_url: String,
    config: PathBuf,
    specs: Vec<NodeSpec>,
    nodes: Vec<Option<Node>>,
    tenants: Vec<Tenant>,
    admin: Option<String>,
}

impl Rig {
    /// `tenants` tenants, each trading EURUSD with a fast EMA cross; no node started yet.
    async fn new(tenants: usize) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let vars = crate::helpers::real_store_vars().await;
        let owner_url = vars
            .iter()
            .find(|(k, _)| k == "TRELLIS__STORAGE__POSTGRES_MIGRATE_URL")
            .map(|(_, v)| v.clone())
            .expect("owner URL");
        // Unique ids: Redis (the event bus) is shared with every other test.
        let run = uuid::Uuid::new_v4().simple().to_string();
        let keys: Vec<(String, String)> = (0..tenants)
            .map(|i| {
                let id = format!("n{}-{i:02}", &run[..6]);
                let key = format!("trk_{id}_cluster-secret-key");
                (id, key)
            })
            .collect();
        let toml = trellis::sim::node::eurusd_tenants_config(&keys);
        let list: Vec<Tenant> = keys
            .into_iter()
            .map(|(id, key)| Tenant {
                csv: dir.path().join(format!("{id}.csv")),
                id,
                key,
                sim: None,
                feed: None,
            })
            .collect();
        let config = dir.path().join("trellis.toml");
        std::fs::write(&config, toml).expect("config written");
        // Every node shares the cluster settings and the secrets (sim::node::cluster_env).
        let mut env = vars;
        env.extend(trellis::sim::node::cluster_env(LEASE_MS, RENEW_MS));
        env.extend(
            [
                ("TRELLIS__LOG__LEVEL", "info"),
                ("TRELLIS__BOOTSTRAP__ADMIN_EMAIL", ROOT_EMAIL),
                ("TRELLIS__BOOTSTRAP__ADMIN_PASSWORD", ROOT_PASSWORD),
            ]
            .map(|(k, v)| (k.to_owned(), v.to_owned())),
        );
        Self {
            dir,
            env,
            owner_url,
            config,
            specs: Vec::new(),
            nodes: Vec::new(),
            tenants: list,
            admin: None,
        }
    }

    /// `nodes` nodes sharing `tenants` tenants, placement settled (every node holds tenants ÷ nodes, rounded
    /// down or up), and every tenant trading through the node `i % nodes` first; answers the settled leases.
    async fn trading(
        nodes: usize,
        tenants: usize,
    ) -> (Self, sqlx::PgPool, BTreeMap<String, (String, i64)>) {
        let mut rig = Self::new(tenants).await;
        for _ in 0..nodes {
            rig.add_node().await;
        }
        let pool = rig.owner_pool().await;
        // The first node takes everything, then hands over as the others join.
        let (low, high) = (tenants / nodes, tenants.div_ceil(nodes));
        let placed = rig
            .wait_leases(&pool, Duration::from_secs(60), |l| {
                let share = by_node(l);
                share.len() == nodes && share.values().all(|n| (low..=high).contains(n))
            })
            .await;
        for i in 0..tenants {
            rig.trade(i, i % nodes);
        }
        let all: Vec<usize> = (0..tenants).collect();
        assert!(
            rig.wait_trading(&all, &vec![0; tenants], Duration::from_secs(60))
                .await,
            "every tenant trades\n{}",
            rig.logs()
        );
        (rig, pool, placed)
    }

    /// Starts one more node; answers its index.
    async fn add_node(&mut self) -> usize {
        let i = self.specs.len();
        let mut env = self.env.clone();
        env.push(("TRELLIS__CLUSTER__NODE_ID".into(), format!("node-{i}")));
        let spec = NodeSpec {
            binary: env!("CARGO_BIN_EXE_trellis").into(),
            config: self.config.clone(),
            data_dir: self.dir.path().join(format!("data-{i}")),
            port: free_port(),
            env,
            log: self.dir.path().join(format!("node-{i}.log")),
        };
        let mut node = spec.start().expect("trellis starts");
        node.wait_ready(&spec, Duration::from_secs(60))
            .await
            .unwrap_or_else(|e| panic!("{e}\n{}", tail(&spec.log)));
        self.specs.push(spec);
        self.nodes.push(Some(node));
        i
    }

    fn logs(&self) -> String {
        self.specs
            .iter()
            .map(|s| format!("--- {}\n{}", s.log.display(), tail(&s.log)))
            .collect::<Vec<_>>()
            .join("\n")
    }

    fn ws_urls(&self) -> Vec<String> {
        self.specs.iter().map(|s| s.ws_url()).collect()
    }

    /// Starts tenant `i`'s terminal on `first` (the other nodes as fallbacks) and its market feed.
    fn trade(&mut self, i: usize, first: usize) {
        self.trade_via(i, first, true)
    }

    fn trade_via(&mut self, i: usize, first: usize, fallbacks: bool) {
        let urls = self.ws_urls();
        let t = &mut self.tenants[i];
        let mut cfg = SimConfig::new(urls[first].clone(), t.key.clone(), 8_000 + i as u64);
        if fallbacks {
            cfg.fallback_urls = urls
                .iter()
                .enumerate()
                .filter(|(j, _)| *j != first)
                .map(|(_, u)| u.clone())
                .collect();
        }
        cfg.heartbeat_ms = 200;
        cfg.silence_ms = 1_500;
        cfg.broker.deals_csv = Some(t.csv.clone());
        let sim = trellis::sim::spawn(cfg);
        let feeder = sim.feeder();
        let walk = RandomWalk::new(
            RandomWalk::default_symbols(&["EURUSD".to_owned()]),
            T0,
            // 15 s of market time per tick: an M1 bar closes every 4 ticks (10 a second), so a fresh
            // strategy on a new owner signals within a second or two.
            15_000,
            100 + i as u64,
        )
        .with_steps(8, 2);
        t.feed = Some(actix_rt::spawn(
            async move { pace(&feeder, walk, 40).await },
        ));
        t.sim = Some(sim);
    }

    fn deals(&self, i: usize) -> usize {
        self.tenants[i]
            .sim
            .as_ref()
            .and_then(|s| s.broker.lock().ok().map(|b| b.deals().len()))
            .unwrap_or_default()
    }

    /// Waits until every listed tenant's terminal has more deals than `floor`; false on timeout.
    async fn wait_trading(&self, which: &[usize], floor: &[usize], timeout: Duration) -> bool {
        let start = Instant::now();
        while start.elapsed() < timeout {
            if which.iter().zip(floor).all(|(i, f)| self.deals(*i) > *f) {
                return true;
            }
            actix_rt::time::sleep(Duration::from_millis(20)).await;
        }
        false
    }

    async fn owner_pool(&self) -> sqlx::PgPool {
        sqlx::PgPool::connect(&self.owner_url)
            .await
            .expect("PostgreSQL")
    }

    /// Live leases: tenant → (node, token).
    async fn leases(&self, pool: &sqlx::PgPool) -> BTreeMap<String, (String, i64)> {
        sqlx::query_as::<_, (String, String, i64)>(
            "SELECT tenant_id, node_id, token FROM tenant_leases WHERE expires_at > clock_timestamp() AND tenant_id NOT LIKE '@%'",
        )
        .fetch_all(pool)
        .await
        .expect("leases")
        .into_iter()
        .map(|(t, n, k)| (t, (n, k)))
        .collect()
    }

    /// Waits until every tenant has a live lease (and `pred` holds of the leases); answers them.
    async fn wait_leases(
        &self,
        pool: &sqlx::PgPool,
        timeout: Duration,
        pred: impl Fn(&BTreeMap<String, (String, i64)>) -> bool,
    ) -> BTreeMap<String, (String, i64)> {
        let start = Instant::now();
        loop {
            let leases = self.leases(pool).await;
            if leases.len() == self.tenants.len() && pred(&leases) {
                return leases;
            }
            assert!(
                start.elapsed() < timeout,
                "leases not placed within {timeout:?}: {leases:?}\n{}",
                self.logs()
            );
            actix_rt::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn admin_token(&mut self, via: usize) -> String {
        if let Some(t) = &self.admin {
            return t.clone();
        }
        let resp = http(
            "POST",
            &format!("{}/api/v1/auth/login", self.specs[via].url()),
            None,
            Some(serde_json::json!({"email": ROOT_EMAIL, "password": ROOT_PASSWORD})),
        )
        .await
        .expect("login answered");
        let token = resp["access_token"]
            .as_str()
            .unwrap_or_else(|| panic!("login: {resp}"))
            .to_owned();
        self.admin = Some(token.clone());
        token
    }

    /// The tenants node `i` runs, as its own API says (`None` when it does not answer).
    async fn running_on(&self, i: usize, token: &str) -> Option<BTreeSet<String>> {
        let body = http(
            "GET",
            &format!("{}/api/v1/tenants", self.specs[i].url()),
            Some(token),
            None,
        )
        .await?;
        Some(
            body["tenants"]
                .as_array()?
                .iter()
                .filter_map(|t| t["id"].as_str().map(str::to_owned))
                .collect(),
        )
    }

    fn stop_feeds(&mut self) {
        for t in &mut self.tenants {
            if let Some(f) = t.feed.take() {
                f.abort();
            }
        }
    }

    /// The terminal's deal tickets of tenant `i`, from its CSV record.
    fn terminal_tickets(&self, i: usize) -> Vec<i64> {
        let text = std::fs::read_to_string(&self.tenants[i].csv).unwrap_or_default();
        text.lines()
            .skip(1)
            .filter_map(|l| l.split(',').next().and_then(|t| t.parse().ok()))
            .collect()
    }

    async fn stored_tickets(&self, pool: &sqlx::PgPool, i: usize) -> Vec<i64> {
        sqlx::query_as::<_, (i64,)>(
            "SELECT deal_ticket FROM fills WHERE tenant_id = $1 ORDER BY deal_ticket",
        )
        .bind(&self.tenants[i].id)
        .fetch_all(pool)
        .await
        .expect("fills")
        .into_iter()
        .map(|(t,)| t)
        .filter(|t| (*t as u64) < RECONCILIATION_TICKET_BASE)
        .collect()
    }

    /// After the feeds stopped: every tenant's stored fills equal its terminal's deals, ticket for ticket,
    /// and no order was executed twice.
    async fn assert_books_equal_terminals(&self, pool: &sqlx::PgPool) {
        let start = Instant::now();
        for i in 0..self.tenants.len() {
            loop {
                let mut terminal = self.terminal_tickets(i);
                terminal.sort();
                let stored = self.stored_tickets(pool, i).await;
                if stored == terminal {
                    break;
                }
                assert!(
                    start.elapsed() < Duration::from_secs(30),
                    "tenant {}: stored fills {stored:?} differ from the terminal's deals {terminal:?}\n{}",
                    self.tenants[i].id,
                    self.logs()
                );
                actix_rt::time::sleep(Duration::from_millis(200)).await;
            }
            let sim = self.tenants[i].sim.as_ref().expect("sim");
            let broker = sim.broker.lock().expect("broker");
            let mut seen = HashSet::new();
            for deal in broker.deals() {
                if let Some(c) = &deal.client_order_id {
                    assert!(
                        seen.insert(c.clone()),
                        "tenant {}: order {c} was executed twice",
                        self.tenants[i].id
                    );
                }
            }
        }
    }

    async fn shutdown(mut self) {
        self.stop_feeds();
        for t in &mut self.tenants {
            if let Some(sim) = t.sim.take() {
                let _ = sim.stop().await;
            }
        }
        for node in self.nodes.iter_mut().flatten() {
            let _ = node.stop(Stop::Term, Duration::from_secs(15)).await;
        }
    }
}

/// One HTTP call with a JSON answer (`None` when the node does not answer 2xx within a second).
async fn http(
    method: &str,
    url: &str,
    token: Option<&str>,
    body: Option<serde_json::Value>,
) -> Option<serde_json::Value> {
    let client = awc::Client::builder()
        .timeout(Duration::from_secs(1))
        .finish();
    let mut req = match method {
        "POST" => client.post(url),
        "PUT" => client.put(url),
        _ => client.get(url),
    };
    if let Some(t) = token {
        req = req.insert_header(("Authorization", format!("Bearer {t}")));
    }
    let mut resp = match body {
        Some(b) => req.send_json(&b).await.ok()?,
        None => req.send().await.ok()?,
    };
    if !resp.status().is_success() {
        return None;
    }
    let bytes = resp.body().limit(4 << 20).await.ok()?;
    serde_json::from_slice(&bytes).ok()
}

fn tail(path: &Path) -> String {
    let text = String::from_utf8_lossy(&std::fs::read(path).unwrap_or_default()).into_owned();
    let start = text.len().saturating_sub(3_000);
    let start = (start..text.len())
        .find(|i| text.is_char_boundary(*i))
        .unwrap_or(text.len());
    text[start..].to_owned()
}

fn pause(node: &Node, signal: &str) {
    let status = std::process::Command::new("kill")
        .args(["-s", signal, &node.pid().to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success(), "kill -s {signal}");
}

/// Tenants per node index from the leases.
fn by_node(leases: &BTreeMap<String, (String, i64)>) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for (node, _) in leases.values() {
        *out.entry(node.clone()).or_default() += 1;
    }
    out
}

#[actix_rt::test]
async fn three_nodes_own_twenty_tenants_one_node_each_and_a_sigkilled_nodes_tenants_trade_again_on_the_others_within_ten_seconds_with_every_deal_stored_once(
) {
    if !real_profile() {
        return; // several nodes share PostgreSQL: the real profile only
    }
    // Arrange: three nodes, twenty tenants trading through them (6 or 7 each).
    let (mut rig, pool, placed) = Rig::trading(3, 20).await;
    let token = rig.admin_token(0).await;

    // Ownership sampled while trading: no tenant runs on two nodes, and each runs where its lease is.
    let mut samples = 0;
    for _ in 0..10 {
        let before = rig.leases(&pool).await;
        let mut seen: BTreeMap<String, usize> = BTreeMap::new();
        for n in 0..3 {
            for t in rig.running_on(n, &token).await.expect("node answers") {
                assert!(
                    seen.insert(t.clone(), n).is_none(),
                    "tenant {t} runs on two nodes at once"
                );
                let after = rig.leases(&pool).await;
                let owner = format!("node-{n}");
                assert!(
                    before.get(&t).is_some_and(|(o, _)| *o == owner)
                        || after.get(&t).is_some_and(|(o, _)| *o == owner),
                    "tenant {t} runs on {owner} without its lease ({:?} / {:?})",
                    before.get(&t),
                    after.get(&t)
                );
            }
        }
        assert_eq!(seen.len(), 20, "every tenant runs somewhere: {seen:?}");
        samples += 1;
        actix_rt::time::sleep(Duration::from_millis(100)).await;
    }

    // Act: SIGKILL node 1 in the middle of trading.
    let victims: Vec<usize> = (0..20)
        .filter(|i| {
            placed
                .get(&rig.tenants[*i].id)
                .is_some_and(|(n, _)| n == "node-1")
        })
        .collect();
    let floors: Vec<usize> = victims.iter().map(|i| rig.deals(*i)).collect();
    let killed = Instant::now();
    rig.nodes[1]
        .take()
        .expect("node 1")
        .stop(Stop::Kill, Duration::from_secs(5))
        .await
        .expect("killed");
    let connects: Vec<u64> = victims
        .iter()
        .map(|i| rig.tenants[*i].sim.as_ref().expect("sim").stats().connects)
        .collect();
    let leases_moved = rig
        .wait_leases(&pool, Duration::from_secs(20), |l| {
            l.values().all(|(n, _)| n != "node-1")
        })
        .await;
    let leases_moved_at = killed.elapsed();
    let _ = leases_moved;
    let mut reconnected = Duration::ZERO;
    for (i, before) in victims.iter().zip(&connects) {
        while rig.tenants[*i].sim.as_ref().expect("sim").stats().connects <= *before
            && killed.elapsed() < Duration::from_secs(20)
        {
            actix_rt::time::sleep(Duration::from_millis(10)).await;
        }
        reconnected = killed.elapsed();
    }
    eprintln!("after the kill: leases moved at {leases_moved_at:?}, bridges reconnected by {reconnected:?}");
    let mut moved = Vec::new();
    for (i, floor) in victims.iter().zip(&floors) {
        let ok = rig
            .wait_trading(&[*i], &[*floor], Duration::from_secs(20))
            .await;
        assert!(
            ok,
            "tenant {} trades again after the kill\n{}",
            rig.tenants[*i].id,
            rig.logs()
        );
        moved.push(killed.elapsed());
    }
    let slowest = moved.iter().max().copied().unwrap_or_default();
    let after = rig
        .wait_leases(&pool, Duration::from_secs(10), |l| {
            l.values().all(|(n, _)| n != "node-1")
        })
        .await;
    // Each moved tenant's strategy continued from the state it had stored on the dead node (issue 36).
    let mut warmed = Vec::new();
    for i in &victims {
        let url = format!(
            "{}/api/v1/tenants/{}/strategies/ema",
            rig.specs[0].url(),
            rig.tenants[*i].id
        );
        let view = http("GET", &url, Some(&token), None).await;
        warmed.push(view.map(|v| v["warm_up"]["warmed_by"].clone()));
    }
    rig.stop_feeds();
    actix_rt::time::sleep(Duration::from_millis(500)).await;

    // Assert
    eprintln!(
        "three nodes: {samples} ownership samples; node-1 held {} tenants; all traded again within {slowest:?} of the kill; now {:?}",
        victims.len(),
        by_node(&after)
    );
    assert!(!victims.is_empty(), "node 1 owned tenants");
    assert!(
        slowest <= Duration::from_secs(10),
        "the killed node's tenants traded again within 10 s (slowest {slowest:?})"
    );
    for i in &victims {
        let (old, new) = (&placed[&rig.tenants[*i].id], &after[&rig.tenants[*i].id]);
        assert!(new.1 > old.1, "the fencing token grew at the takeover");
    }
    assert!(
        warmed
            .iter()
            .all(|w| w.as_ref() == Some(&serde_json::json!("snapshot"))),
        "the moved strategies restored their stored state: {warmed:?}"
    );
    rig.assert_books_equal_terminals(&pool).await;
    pool.close().await;
    rig.shutdown().await;
}

#[actix_rt::test]
async fn a_node_frozen_until_its_leases_were_taken_writes_nothing_under_them_after_and_stops_those_tenants_when_it_wakes(
) {
    if !real_profile() {
        return;
    }
    // Arrange: two nodes, four tenants trading (2 each).
    let (mut rig, pool, _) = Rig::trading(2, 4).await;
    let token = rig.admin_token(1).await;
    let placed = rig.leases(&pool).await;
    let frozen: Vec<(String, i64)> = placed
        .iter()
        .filter(|(_, (n, _))| n == "node-0")
        .map(|(t, (_, k))| (t.clone(), *k))
        .collect();
    assert!(!frozen.is_empty(), "node 0 owns tenants: {placed:?}");

    // Act: freeze node 0 until node 1 holds every lease, let node 1 trade, then wake node 0.
    pause(rig.nodes[0].as_ref().expect("node 0"), "STOP");
    let taken = rig
        .wait_leases(&pool, Duration::from_secs(20), |l| {
            l.values().all(|(n, _)| n == "node-1")
        })
        .await;
    let taken_ms: i64 = sqlx::query_as::<_, (i64,)>(
        "SELECT (extract(epoch FROM clock_timestamp()) * 1000)::bigint",
    )
    .fetch_one(&pool)
    .await
    .expect("clock")
    .0;
    let floors: Vec<usize> = (0..4).map(|i| rig.deals(i)).collect();
    assert!(
        rig.wait_trading(&[0, 1, 2, 3], &floors, Duration::from_secs(20))
            .await,
        "node 1 trades every tenant while node 0 is frozen\n{}",
        rig.logs()
    );
    pause(rig.nodes[0].as_ref().expect("node 0"), "CONT");
    let woke = Instant::now();
    // Node 0 says, tenant by tenant, that it stopped what it lost (it may be handed some back afterwards,
    // under new leases: placement rebalances towards it).
    let mut stopped = None;
    while woke.elapsed() < Duration::from_secs(10) {
        let log = String::from_utf8_lossy(&std::fs::read(&rig.specs[0].log).unwrap_or_default())
            .into_owned();
        let lost = |t: &str| {
            log.lines().any(|l| {
                l.contains("lease lost: stopping the tenant here")
                    && l.contains(&format!("tenant={t}"))
            })
        };
        if frozen.iter().all(|(t, _)| lost(t)) {
            stopped = Some(woke.elapsed());
            break;
        }
        actix_rt::time::sleep(Duration::from_millis(50)).await;
    }
    // Whatever node 0 runs now, it runs under a lease it holds.
    actix_rt::time::sleep(Duration::from_millis(1_500)).await;
    let before = rig.leases(&pool).await;
    let running = rig.running_on(0, &token).await.expect("node 0 answers");
    let after = rig.leases(&pool).await;
    for t in &running {
        assert!(
            [&before, &after]
                .iter()
                .any(|l| l.get(t).is_some_and(|(n, _)| n == "node-0")),
            "node 0 runs {t} without its lease: {before:?} / {after:?}"
        );
    }
    // Trading goes on where the leases are.
    let floors: Vec<usize> = (0..4).map(|i| rig.deals(i)).collect();
    let still = rig
        .wait_trading(&[0, 1, 2, 3], &floors, Duration::from_secs(20))
        .await;
    rig.stop_feeds();
    actix_rt::time::sleep(Duration::from_millis(500)).await;

    // Assert
    let stopped = stopped.unwrap_or_else(|| {
        let _ = std::fs::copy(&rig.specs[0].log, "/tmp/frozen-node0.log");
        panic!(
            "node 0 stops the tenants it lost after waking\n{}",
            rig.logs()
        )
    });
    eprintln!("frozen node: woke and stopped its lost tenants after {stopped:?}");
    assert!(still, "trading went on after node 0 woke\n{}", rig.logs());
    for (tenant, old) in &frozen {
        assert!(taken[tenant].1 > *old, "{tenant}: a newer token");
        let late: Vec<(String, i64)> = sqlx::query_as(
            "SELECT 'order ' || client_order_id, updated_ms FROM orders \
             WHERE tenant_id = $1 AND lease_token = $2 AND updated_ms > $3 \
             UNION ALL SELECT 'fill ' || deal_ticket, recorded_ms FROM fills \
             WHERE tenant_id = $1 AND lease_token = $2 AND recorded_ms > $3",
        )
        .bind(tenant)
        .bind(old)
        .bind(taken_ms)
        .fetch_all(&pool)
        .await
        .expect("rows");
        assert!(
            late.is_empty(),
            "{tenant}: rows written under the overtaken token {old} after the takeover: {late:?}"
        );
    }
    rig.assert_books_equal_terminals(&pool).await;
    pool.close().await;
    rig.shutdown().await;
}

#[actix_rt::test]
async fn a_fourth_node_that_joins_takes_its_fair_share_by_graceful_hand_off_and_no_order_is_lost_or_doubled(
) {
    if !real_profile() {
        return;
    }
    // Arrange: three nodes, eight tenants trading (shares 3, 3, 2).
    let (mut rig, pool, before) = Rig::trading(3, 8).await;
    let all: Vec<usize> = (0..8).collect();

    // Act: a fourth node joins while everything trades.
    let joined = Instant::now();
    rig.add_node().await;
    let after = rig
        .wait_leases(&pool, Duration::from_secs(30), |l| {
            by_node(l).get("node-3").copied().unwrap_or(0) >= 2
        })
        .await;
    let moved_in = joined.elapsed();
    let floors: Vec<usize> = (0..8).map(|i| rig.deals(i)).collect();
    let trading = rig
        .wait_trading(&all, &floors, Duration::from_secs(30))
        .await;
    rig.stop_feeds();
    actix_rt::time::sleep(Duration::from_millis(500)).await;

    // Assert
    let moved: Vec<&String> = after
        .iter()
        .filter(|(t, (n, _))| before.get(*t).is_some_and(|(b, _)| b != n))
        .map(|(t, _)| t)
        .collect();
    eprintln!(
        "fourth node: {:?} → {:?} within {moved_in:?}; moved {moved:?}",
        by_node(&before),
        by_node(&after)
    );
    assert!(
        by_node(&after).values().all(|n| *n == 2),
        "every node holds 2 of 8: {:?}",
        by_node(&after)
    );
    assert!(
        trading,
        "every tenant trades after the hand-off\n{}",
        rig.logs()
    );
    rig.assert_books_equal_terminals(&pool).await;
    pool.close().await;
    rig.shutdown().await;
}

#[actix_rt::test]
async fn a_bridge_that_connects_to_the_wrong_node_is_redirected_to_the_owner_and_trades() {
    if !real_profile() {
        return;
    }
    // Arrange: two nodes, two tenants.
    let mut rig = Rig::new(2).await;
    rig.add_node().await;
    rig.add_node().await;
    let pool = rig.owner_pool().await;
    let placed = rig
        .wait_leases(&pool, Duration::from_secs(30), |l| by_node(l).len() == 2)
        .await;
    let owner: usize = placed[&rig.tenants[0].id]
        .0
        .trim_start_matches("node-")
        .parse()
        .expect("node index");
    let wrong = 1 - owner;

    // Act: tenant 0's bridge knows only the other node.
    rig.trade_via(0, wrong, false);
    let urls = rig.ws_urls();
    let trades = rig.wait_trading(&[0], &[0], Duration::from_secs(30)).await;

    // Assert
    let stats = rig.tenants[0].sim.as_ref().expect("sim").stats();
    assert!(trades, "the redirected bridge trades\n{}", rig.logs());
    assert!(
        stats.redirects >= 1,
        "the bridge was redirected (errors {:?})",
        stats.errors
    );
    assert_eq!(stats.url, urls[owner], "the bridge ended up on the owner");
    rig.stop_feeds();
    pool.close().await;
    rig.shutdown().await;
}

#[actix_rt::test]
async fn an_admin_call_and_a_client_stream_for_a_tenant_on_another_node_are_answered_by_its_owner()
{
    if !real_profile() {
        return;
    }
    // Arrange: two nodes, two tenants trading; the caller only knows the node that does not run tenant 0.
    let (mut rig, pool, placed) = Rig::trading(2, 2).await;
    let tenant = rig.tenants[0].id.clone();
    let owner: usize = placed[&tenant]
        .0
        .trim_start_matches("node-")
        .parse()
        .expect("index");
    let other = 1 - owner;
    let token = rig.admin_token(other).await;
    let via = rig.specs[other].url();
    // The other node learns the owner at its next placement round.
    let start = Instant::now();
    loop {
        let view = http("GET", &format!("{via}/api/v1/cluster"), Some(&token), None).await;
        let knows = view.is_some_and(|v| {
            v["leases"].as_array().is_some_and(|ls| {
                ls.iter().any(|l| {
                    l["tenant"] == tenant.as_str()
                        && l["live"] == true
                        && l["node"] == format!("node-{owner}").as_str()
                })
            })
        });
        if knows {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the other node learns the owner"
        );
        actix_rt::time::sleep(Duration::from_millis(100)).await;
    }

    // Act: read and command through the other node; stream through it too.
    let orders = http(
        "GET",
        &format!("{via}/api/v1/tenants/{tenant}/orders"),
        Some(&token),
        None,
    )
    .await;
    let switched = http(
        "PUT",
        &format!("{via}/api/v1/tenants/{tenant}/kill-switch"),
        Some(&token),
        Some(serde_json::json!({"on": true, "reason": "through another node"})),
    )
    .await;
    let at_owner = http(
        "GET",
        &format!("{}/api/v1/tenants/{tenant}/risk", rig.specs[owner].url()),
        Some(&token),
        None,
    )
    .await;
    let ws = format!(
        "ws://127.0.0.1:{}/ws/v1/client?tenant={tenant}",
        rig.specs[other].port
    );
    let (_resp, mut framed) = awc::Client::new()
        .ws(ws)
        .bearer_auth(&token)
        .connect()
        .await
        .unwrap_or_else(|e| panic!("client stream through the other node: {e}\n{}", rig.logs()));
    use futures_util::{SinkExt, StreamExt};
    framed
        .send(awc::ws::Message::Text(
            serde_json::json!({"op": "subscribe", "id": "s1", "channels": ["risk"]})
                .to_string()
                .into(),
        ))
        .await
        .expect("subscribe sent");
    let mut snapshot = None;
    let deadline = Instant::now() + Duration::from_secs(10);
    while snapshot.is_none() && Instant::now() < deadline {
        let Ok(Some(Ok(awc::ws::Frame::Text(bytes)))) =
            tokio::time::timeout(Duration::from_secs(5), framed.next()).await
        else {
            break;
        };
        let frame: serde_json::Value = serde_json::from_slice(&bytes).expect("json frame");
        if frame["type"] == "snapshot" && frame["channel"] == "risk" {
            snapshot = Some(frame);
        }
    }
    rig.stop_feeds();

    // Assert
    let orders = orders.expect("orders read through the other node");
    assert!(
        orders.to_string().contains("ema"),
        "the owner's orders, with the strategy's: {orders}"
    );
    let switched = switched.expect("kill switch set through the other node");
    assert!(!switched["state"]["kill_switch"].is_null(), "{switched}");
    let at_owner = at_owner.expect("risk read at the owner");
    assert!(
        at_owner.to_string().contains("through another node"),
        "the owner's risk actor holds the switch: {at_owner}"
    );
    let snapshot = snapshot.expect("a risk snapshot through the relayed stream");
    assert!(
        snapshot.to_string().contains("through another node"),
        "the stream is the owner's: {snapshot}"
    );

    // A browser ticket issued by the other node opens the stream through it, once (tickets are in Redis).
    let ticket = http(
        "POST",
        &format!("{via}/api/v1/ws-tickets"),
        Some(&token),
        Some(serde_json::json!({"tenant": tenant})),
    )
    .await
    .expect("ticket issued by the other node");
    let ticket = ticket["ticket"].as_str().expect("ticket").to_owned();
    let url = format!(
        "ws://127.0.0.1:{}/ws/v1/client?ticket={ticket}",
        rig.specs[other].port
    );
    let (_resp, mut framed) = awc::Client::new()
        .ws(url.clone())
        .connect()
        .await
        .unwrap_or_else(|e| panic!("ticket stream through the other node: {e}"));
    let Ok(Some(Ok(awc::ws::Frame::Text(bytes)))) =
        tokio::time::timeout(Duration::from_secs(5), framed.next()).await
    else {
        panic!("no welcome on the ticket's stream");
    };
    let welcome: serde_json::Value = serde_json::from_slice(&bytes).expect("json");
    assert_eq!(
        (welcome["type"].as_str(), welcome["tenant"].as_str()),
        (Some("welcome"), Some(tenant.as_str()))
    );
    let again = awc::Client::new().ws(url).connect().await;
    assert!(
        matches!(again, Err(awc::error::WsClientError::InvalidResponseStatus(s)) if s.as_u16() == 401),
        "a ticket opens one connection, on any node: {:?}",
        again.err()
    );
    pool.close().await;
    rig.shutdown().await;
}

#[actix_rt::test]
async fn a_node_stopped_with_sigterm_hands_its_tenants_over_at_once_instead_of_letting_their_leases_run_out(
) {
    if !real_profile() {
        return;
    }
    // Arrange: two nodes, four tenants trading (2 each).
    let (mut rig, pool, _) = Rig::trading(2, 4).await;

    // Act: SIGTERM node 0; its tenants drain, their leases are released, node 1 takes them.
    let stopped = Instant::now();
    rig.nodes[0]
        .take()
        .expect("node 0")
        .stop(Stop::Term, Duration::from_secs(20))
        .await
        .expect("node 0 stops");
    let exited = stopped.elapsed();
    rig.wait_leases(&pool, Duration::from_secs(10), |l| {
        l.values().all(|(n, _)| n == "node-1")
    })
    .await;
    let moved = stopped.elapsed();
    let floors: Vec<usize> = (0..4).map(|i| rig.deals(i)).collect();
    let trading = rig
        .wait_trading(&[0, 1, 2, 3], &floors, Duration::from_secs(20))
        .await;
    rig.stop_feeds();
    actix_rt::time::sleep(Duration::from_millis(500)).await;

    // Assert
    eprintln!(
        "sigterm: node 0 exited after {exited:?}, its tenants owned by node 1 after {moved:?}"
    );
    assert!(
        moved < exited + Duration::from_millis(2_000),
        "the leases were handed back, not left to run out ({} ms): moved {moved:?} after the signal, exit after {exited:?}\n{}",
        LEASE_MS,
        tail(&rig.specs[0].log)
    );
    assert!(trading, "every tenant trades on node 1\n{}", rig.logs());
    rig.assert_books_equal_terminals(&pool).await;
    pool.close().await;
    rig.shutdown().await;
}
