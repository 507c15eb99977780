//! The thread layout (docs/architecture.md, "Threads"): bridges on a listener and threads of their own at
//! normal priority, the API's threads reniced below trading, the tenants' actors on the trading arbiters.
//! Read from the running process's own threads (`/proc/<pid>/task`), not from its configuration.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use trellis::sim::feed::{pace, RandomWalk};
use trellis::sim::node::{trading_config, NodeSpec, Stop};
use trellis::sim::SimConfig;

use crate::helpers::{free_port, T0};
use crate::restart::tail;

const KEY: &str = "trk_acme0001_threads-secret";
const LOGIN: u64 = 7301;

/// Each thread of process `pid`: its name (as the kernel keeps it, 15 bytes) and its niceness.
fn threads_of(pid: u32) -> Vec<(String, i32)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(format!("/proc/{pid}/task")).expect("task list") {
        let Ok(stat) = std::fs::read_to_string(entry.expect("task").path().join("stat")) else {
            continue; // a thread that ended meanwhile
        };
        let (open, close) = (stat.find('(').expect("("), stat.rfind(')').expect(")"));
        let name = stat[open + 1..close].to_owned();
        // Fields after the name: state is field 3, nice field 19.
        let nice = stat[close + 2..]
            .split(' ')
            .nth(16)
            .and_then(|n| n.parse().ok())
            .expect("nice");
        out.push((name, nice));
    }
    out
}

#[cfg(target_os = "linux")]
#[actix_web::test]
async fn bridges_trade_on_a_listener_of_their_own_while_the_api_threads_run_at_a_lower_priority() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = dir.path().join("trellis.toml");
    std::fs::write(&config, trading_config(KEY, &["EURUSD"])).expect("config");
    let bridge_port = free_port();
    let spec = NodeSpec {
        binary: env!("CARGO_BIN_EXE_trellis").into(),
        config,
        data_dir: dir.path().join("data"),
        port: free_port(),
        env: [
            ("TRELLIS__HTTP__BRIDGE_LISTENER", "true".to_owned()),
            ("TRELLIS__HTTP__BRIDGE_PORT", bridge_port.to_string()),
            ("TRELLIS__THREADS__TRADING_THREADS", "2".to_owned()),
            ("TRELLIS__THREADS__BRIDGE_THREADS", "1".to_owned()),
            ("TRELLIS__THREADS__API_THREADS", "3".to_owned()),
            ("TRELLIS__THREADS__API_NICE", "6".to_owned()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect(),
        log: dir.path().join("trellis.log"),
    };
    let mut node = spec.start().expect("trellis starts");
    node.wait_ready(&spec, Duration::from_secs(30))
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", tail(&spec.log)));

    // The terminal connects to the bridges' listener, and trades there.
    let csv = dir.path().join("deals.csv");
    let mut cfg = SimConfig::new(format!("ws://127.0.0.1:{bridge_port}/ws/mt5"), KEY, LOGIN);
    cfg.broker.deals_csv = Some(csv);
    let sim = trellis::sim::spawn(cfg);
    let feeder = sim.feeder();
    let walk = RandomWalk::new(
        RandomWalk::default_symbols(&["EURUSD".to_owned()]),
        T0,
        3_000,
        11,
    )
    .with_steps(8, 2);
    let feed = actix_rt::spawn(async move { pace(&feeder, walk, 200).await });
    let start = Instant::now();
    let deals = || sim.broker.lock().expect("broker").deals().len();
    while deals() == 0 && start.elapsed() < Duration::from_secs(30) {
        actix_rt::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        deals() > 0,
        "no deal through the bridges' listener\n{}",
        tail(&spec.log)
    );

    // The bridges' listener serves the bridge endpoint and a health check, nothing of the API.
    let client = awc::Client::default();
    let on_bridge = |path: &str| format!("http://127.0.0.1:{bridge_port}{path}");
    let health = client
        .get(on_bridge("/health"))
        .send()
        .await
        .expect("health");
    assert_eq!(health.status(), 200);
    let api = client
        .get(on_bridge("/api/v1/tenants"))
        .send()
        .await
        .expect("api");
    assert_eq!(api.status(), 404, "the API is not served to bridges' port");
    // …and the API's port still serves bridges (clusters redirect there).
    let on_api = client
        .get(format!("{}/api/v1/tenants", spec.url()))
        .send()
        .await
        .expect("api");
    assert_eq!(on_api.status(), 401, "the API answers on its own port");

    // Threads, as the kernel sees them: actix names every arbiter thread "actix-rt|system:0|arbiter:N"
    // (the server workers are arbiters too). 3 API workers at nice 6; the 2 trading arbiters and the
    // bridge worker at 0; nothing else.
    let threads = threads_of(node.pid());
    let mut arbiters: BTreeMap<i32, usize> = BTreeMap::new();
    for (_, nice) in threads
        .iter()
        .filter(|(n, _)| n.starts_with("actix-rt|system"))
    {
        *arbiters.entry(*nice).or_default() += 1;
    }
    assert_eq!(
        arbiters.get(&6),
        Some(&3),
        "API workers reniced: {threads:?}"
    );
    assert!(
        arbiters.get(&0).is_some_and(|n| *n >= 3) && arbiters.len() == 2,
        "trading arbiters and the bridge worker at normal priority: {threads:?}"
    );

    feed.abort();
    let _ = sim.stop().await;
    let status = node
        .stop(Stop::Term, Duration::from_secs(20))
        .await
        .expect("trellis stops");
    assert!(
        status.success(),
        "SIGTERM ends trellis cleanly: {status}\n{}",
        tail(&spec.log)
    );
}
