//! trellis embedded in another program without its HTTP front door (`Application::build_headless`,
//! docs/embedding.md): no API port is bound at all; bridges trade through their own listener when
//! `http.bridge_listener` is on; the stop handle still shuts everything down in order.

use std::time::Duration;

use trellis::actors::messages::GetPortfolio;
use trellis::startup::{Application, StopHandle};

use crate::helpers::{
    free_port, real_profile, real_store_vars, rising, tenant, test_settings, wait_for, KeptStore,
};

const KEY: &str = "trk_headles1_embedding-secret";

async fn store() -> KeptStore {
    KeptStore {
        data_dir: tempfile::tempdir().expect("temp dir"),
        vars: if real_profile() {
            real_store_vars().await
        } else {
            Vec::new()
        },
    }
}

/// Whether anything accepts TCP connections on `port` of the loopback.
fn listening(port: u16) -> bool {
    std::net::TcpStream::connect_timeout(
        &std::net::SocketAddr::from(([127, 0, 0, 1], port)),
        Duration::from_secs(2),
    )
    .is_ok()
}

/// Fires the stop handle and waits for `run_until_stopped` to return Ok.
async fn stop(stop: StopHandle, serving: actix_rt::task::JoinHandle<anyhow::Result<()>>) {
    stop.stop();
    tokio::time::timeout(Duration::from_secs(20), serving)
        .await
        .expect("shutdown completes in time")
        .expect("serve task did not panic")
        .expect("run_until_stopped returns Ok");
}

#[actix_rt::test]
async fn a_headless_runtime_binds_no_api_port_while_bridges_trade_on_their_own_listener_until_the_stop_handle_fires(
) {
    // Arrange: the API's port is a known free one, so that a request to it can be tried.
    let api_port = free_port();
    let api_port_var = api_port.to_string();
    let store = store().await;
    let settings = test_settings(
        &store,
        &[
            ("TRELLIS__HTTP__PORT", &api_port_var),
            ("TRELLIS__HTTP__BRIDGE_LISTENER", "true"),
            ("TRELLIS__HTTP__BRIDGE_PORT", "0"),
        ],
    );

    // Act
    let app = Application::build_headless(settings)
        .await
        .expect("a headless application builds");
    let bridge_port = app.bridge_port();
    let runtime = app.runtime().clone();
    let acme = runtime
        .start_tenant(tenant("acme", KEY))
        .await
        .expect("a tenant starts in code");
    let (handle, serving) = (app.stop_handle(), actix_rt::spawn(app.run_until_stopped()));

    // Assert: no API anywhere.
    assert_eq!(
        (
            runtime.tenants.len(),
            bridge_port != 0,
            bridge_port != api_port
        ),
        (1, true, true)
    );
    assert!(
        !listening(api_port),
        "nothing listens on http.port ({api_port})"
    );
    let refused = awc::Client::default()
        .get(format!("http://127.0.0.1:{api_port}/api/v1/tenants"))
        .timeout(Duration::from_secs(5))
        .send()
        .await;
    assert!(
        refused.is_err(),
        "a request to the API's port gets no answer"
    );
    let client = awc::Client::default();
    let on_bridge = |path: &str| format!("http://127.0.0.1:{bridge_port}{path}");
    for (path, status) in [
        ("/health", 200),
        ("/api/v1/tenants", 404),
        ("/ready", 404),
        ("/metrics", 404),
        ("/", 404),
    ] {
        let resp = client
            .get(on_bridge(path))
            .send()
            .await
            .expect("the bridges' listener answers");
        assert_eq!(
            resp.status().as_u16(),
            status,
            "GET {path} on the bridges' port"
        );
    }

    // Assert: the bridge endpoint works: a simulated terminal connects there and trades.
    let mut cfg =
        trellis::sim::SimConfig::new(format!("ws://127.0.0.1:{bridge_port}/ws/mt5"), KEY, 7401);
    cfg.heartbeat_ms = 200;
    let sim = trellis::sim::spawn(cfg);
    wait_for("the simulator to connect to the bridges' listener", || {
        sim.stats().connected
    })
    .await;
    rising(&sim, 5);
    wait_for("the terminal to make the buy", || {
        sim.broker.lock().expect("broker").deals().len() == 1
    })
    .await;
    let portfolio = acme.portfolio.get().expect("the portfolio runs");
    let mut booked = Vec::new();
    for _ in 0..500 {
        booked = portfolio.send(GetPortfolio).await.expect("portfolio").deals;
        if !booked.is_empty() {
            break;
        }
        actix_rt::time::sleep(Duration::from_millis(10)).await;
    }
    let terminal = sim.broker.lock().expect("broker").deals()[0].clone();
    assert_eq!(
        booked
            .iter()
            .map(|d| (d.ticket, d.fill.volume, d.fill.price))
            .collect::<Vec<_>>(),
        vec![(terminal.ticket, terminal.volume, terminal.price)],
        "trellis booked the terminal's deal"
    );

    // Assert: the stop handle shuts down in order, and the bridges' listener goes with it.
    sim.stop().await.expect("the simulator stops");
    stop(handle, serving).await;
    assert!(!listening(bridge_port), "the bridges' listener is closed");
}

#[actix_rt::test]
async fn a_headless_runtime_without_the_bridges_listener_binds_no_port_at_all_and_still_stops() {
    // Arrange
    let (api_port, bridge_port) = (free_port(), free_port());
    let vars = (api_port.to_string(), bridge_port.to_string());
    let store = store().await;
    let settings = test_settings(
        &store,
        &[
            ("TRELLIS__HTTP__PORT", &vars.0),
            ("TRELLIS__HTTP__BRIDGE_LISTENER", "false"),
            ("TRELLIS__HTTP__BRIDGE_PORT", &vars.1),
        ],
    );

    // Act
    let app = Application::build_headless(settings)
        .await
        .expect("a headless application builds");
    let runtime = app.runtime().clone();
    runtime
        .start_tenant(tenant("acme", KEY))
        .await
        .expect("a tenant starts in code");

    // Assert
    assert_eq!(
        (app.api_port(), app.port(), app.bridge_port()),
        (None, 0, 0)
    );
    let (handle, serving) = (app.stop_handle(), actix_rt::spawn(app.run_until_stopped()));
    assert!(!listening(api_port), "nothing listens on http.port");
    assert!(
        !listening(bridge_port),
        "nothing listens on http.bridge_port"
    );
    wait_for("the stores to be up", || runtime.not_ready().is_empty()).await;
    assert!(runtime.tenant("acme").is_some(), "the tenant runs");
    stop(handle, serving).await;
}

#[actix_rt::test]
async fn cluster_mode_is_refused_headless_because_nodes_reach_each_other_through_the_api() {
    // Arrange: never connected to; the refusal comes first.
    let store = KeptStore {
        data_dir: tempfile::tempdir().expect("temp dir"),
        vars: Vec::new(),
    };
    let settings = test_settings(
        &store,
        &[
            ("TRELLIS__CLUSTER__ENABLED", "true"),
            (
                "TRELLIS__STORAGE__POSTGRES_URL",
                "postgres://nobody@127.0.0.1:1/none",
            ),
        ],
    );

    // Act
    let refused = Application::build_headless(settings).await;

    // Assert
    let err = refused.err().expect("refused").to_string();
    assert!(err.contains("cluster.enabled"), "{err}");
}
