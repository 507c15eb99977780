//! Bad input on the MT5 bridge protocol: every kind gets an `error` naming the problem; connections that
//! can't be trusted are closed with 1008/1009; what was accepted before stays accepted.

use std::time::Duration;

use awc::ws;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use trellis::actors::messages::GetRiskState;
use trellis::domain::Login;
use trellis::sim::{Control, SimConfig, SimError};

use crate::helpers::{spawn_app, spawn_app_with, tenant, wait_for, MINUTE, T0};

const KEY: &str = "trk_acme0001_bridge-test-secret";

fn hello(key: &str, version: u32) -> String {
    json!({"type": "hello", "seq": 1, "api_key": key, "login": 7001, "server": "Test-Server",
           "protocol_version": version, "last_seq_received": 0})
    .to_string()
}

/// What a raw client saw: the JSON frames, and the close code if the server closed.
struct Seen {
    frames: Vec<Value>,
    close: Option<u16>,
}

impl Seen {
    fn error_codes(&self) -> Vec<String> {
        self.frames
            .iter()
            .filter(|f| f["type"] == "error")
            .filter_map(|f| f["code"].as_str().map(str::to_owned))
            .collect()
    }
}

/// Connects, sends `frames`, then reads for up to `wait` or until the server closes.
async fn raw(url: &str, frames: Vec<ws::Message>, wait: Duration) -> Seen {
    let (_resp, conn) = awc::Client::new()
        .ws(url)
        .max_frame_size(1 << 22)
        .connect()
        .await
        .expect("websocket connects");
    let (mut sink, mut stream) = conn.split();
    for f in frames {
        if sink.send(f).await.is_err() {
            break;
        }
    }
    let mut seen = Seen {
        frames: Vec::new(),
        close: None,
    };
    let deadline = tokio::time::Instant::now() + wait;
    while let Ok(Some(Ok(frame))) = tokio::time::timeout_at(deadline, stream.next()).await {
        match frame {
            ws::Frame::Text(b) => seen
                .frames
                .push(serde_json::from_slice(&b).unwrap_or(Value::Null)),
            ws::Frame::Close(reason) => {
                seen.close = reason.map(|r| u16::from(r.code));
                break;
            }
            _ => {}
        }
    }
    seen
}

fn text(s: impl Into<String>) -> ws::Message {
    ws::Message::Text(s.into().into())
}

#[actix_rt::test]
async fn a_wrong_api_key_or_protocol_version_is_refused_with_a_clear_error_and_1008() {
    let app = spawn_app().await;
    app.add_tenant(tenant("acme", KEY)).await;

    let bad_key = raw(
        &app.ws_url(),
        vec![text(hello("trk_nobody00_not-a-real-key", 2))],
        Duration::from_secs(2),
    )
    .await;
    let bad_version = raw(
        &app.ws_url(),
        vec![text(hello(KEY, 99))],
        Duration::from_secs(2),
    )
    .await;
    let old_version = raw(
        &app.ws_url(),
        vec![text(hello(KEY, 1))],
        Duration::from_secs(2),
    )
    .await;
    let no_hello = raw(
        &app.ws_url(),
        vec![text(
            json!({"type":"tick","seq":1,"symbol":"EURUSD","time_msc":1,"bid":1.1,"ask":1.2})
                .to_string(),
        )],
        Duration::from_secs(2),
    )
    .await;
    let sim = trellis::sim::spawn(SimConfig::new(
        app.ws_url(),
        "trk_nobody00_not-a-real-key",
        7001,
    ));
    let sim_result = sim.task.await.expect("sim task");

    assert_eq!(bad_key.error_codes(), vec!["bad_api_key"]);
    assert_eq!(bad_key.close, Some(1008));
    assert_eq!(bad_version.error_codes(), vec!["unsupported_version"]);
    assert!(bad_version.frames[0]["message"]
        .as_str()
        .unwrap_or("")
        .contains("99"));
    assert_eq!(bad_version.close, Some(1008));
    assert_eq!(old_version.error_codes(), vec!["unsupported_version"]);
    assert!(
        old_version.frames[0]["message"]
            .as_str()
            .unwrap_or("")
            .contains("upgrade the bridge to protocol 2"),
        "a version-1 bridge is told what to upgrade: {:?}",
        old_version.frames
    );
    assert_eq!(no_hello.error_codes(), vec!["hello_required"]);
    assert_eq!(no_hello.close, Some(1008));
    assert!(
        matches!(sim_result, Err(SimError::Refused(ref why)) if why.contains("bad_api_key")),
        "{sim_result:?}"
    );
    app.shutdown().await;
}

#[actix_rt::test]
async fn each_bad_frame_gets_its_own_error_and_the_session_and_accepted_data_survive() {
    // Arrange: a position exists before the bad input.
    let app = spawn_app().await;
    app.add_tenant(tenant("acme", KEY)).await;
    let sim = app.sim(KEY, 7001).await;
    crate::helpers::rising(&sim, 4);
    app.wait_portfolio("acme", "a fill", |p| p.deals.len() == 1)
        .await;

    // Act
    let bad = [
        "{this is not json",
        r#"{"type":"teleport","seq":100}"#,
        r#"{"type":"tick","seq":101,"symbol":"EURUSD","time_msc":1,"bid":1.1}"#,
        r#"{"type":"tick","seq":102,"symbol":"EURUSD","time_msc":"soon","bid":1.1,"ask":1.2}"#,
        r#"{"type":"tick","seq":103,"symbol":"DOGEUSD","time_msc":1,"bid":1.1,"ask":1.2}"#,
        r#"{"type":"tick","seq":104,"symbol":"EURUSD","time_msc":1,"bid":1.3,"ask":1.2}"#,
        r#"{"type":"order_result","seq":105,"client_order_id":"nobody-1","retcode":10009}"#,
    ];
    for frame in bad {
        sim.send(Control::Raw(frame.to_owned()));
    }
    let expected = [
        "malformed_json",
        "unknown_type",
        "missing_field",
        "wrong_type",
        "unknown_symbol",
        "invalid_value",
        "unknown_order",
    ];
    wait_for("every error", || sim.stats().errors.len() >= expected.len()).await;
    // The raw frames above moved the terminal's sequence to 105, so the next good frame says 106.
    let good = format!(
        r#"{{"type":"tick","seq":106,"symbol":"EURUSD","time_msc":{},"bid":1.1040,"ask":1.1042}}"#,
        T0 + 4 * MINUTE + 1
    );
    sim.send(Control::Raw(good));
    let mut metrics = String::new();
    for _ in 0..200 {
        metrics = app.get_text("/metrics").await.1;
        if metrics.contains("trellis_ticks_total 5") {
            break;
        }
        actix_rt::time::sleep(Duration::from_millis(10)).await;
    }

    // Assert
    let stats = sim.stats();
    let codes: Vec<&str> = stats.errors.iter().map(|(c, _)| c.as_str()).collect();
    assert_eq!(codes, expected);
    assert!(
        stats.errors[4].1.contains("DOGEUSD"),
        "the message names the symbol: {:?}",
        stats.errors[4]
    );
    assert_eq!(stats.connects, 1, "non-fatal errors keep the connection");
    let snap = app.portfolio("acme").await;
    assert_eq!(snap.deals.len(), 1, "accepted data survives");
    assert_eq!(snap.positions.len(), 1);
    assert!(
        metrics.contains("trellis_ticks_total 5"),
        "the good tick was accepted: {metrics}"
    );
    sim.stop().await.expect("sim stops");
    app.shutdown().await;
}

#[actix_rt::test]
async fn an_oversized_frame_closes_with_1009_and_the_terminal_resumes() {
    let app = spawn_app_with(&[("TRELLIS__MT5__MAX_FRAME_BYTES", "4096")]).await;
    app.add_tenant(tenant("acme", KEY)).await;
    let sim = app.sim(KEY, 7001).await;
    crate::helpers::rising(&sim, 4);
    app.wait_portfolio("acme", "a fill", |p| p.deals.len() == 1)
        .await;

    let huge = format!(
        r#"{{"type":"heartbeat","seq":999,"time_msc":1,"pad":"{}"}}"#,
        "x".repeat(10_000)
    );
    sim.send(Control::Raw(huge));
    wait_for("the reconnect", || sim.stats().connects >= 2).await;

    let stats = sim.stats();
    assert!(
        stats.errors.iter().any(|(c, _)| c == "frame_too_large"),
        "{:?}",
        stats.errors
    );
    assert!(
        stats.last_close.as_deref().unwrap_or("").contains("Size"),
        "{:?}",
        stats.last_close
    );
    assert_eq!(app.portfolio("acme").await.deals.len(), 1);
    sim.stop().await.expect("sim stops");
    app.shutdown().await;
}

#[actix_rt::test]
async fn a_flood_beyond_the_frame_budget_is_closed_with_1008() {
    let app = spawn_app_with(&[
        ("TRELLIS__MT5__MAX_FRAMES_PER_SEC", "20"),
        ("TRELLIS__MT5__FRAME_BURST", "20"),
    ])
    .await;
    app.add_tenant(tenant("acme", KEY)).await;
    let mut frames = vec![text(hello(KEY, 2))];
    for seq in 2..200 {
        frames.push(text(
            json!({"type":"heartbeat","seq":seq,"time_msc":1}).to_string(),
        ));
    }

    let seen = raw(&app.ws_url(), frames, Duration::from_secs(3)).await;

    assert!(
        seen.error_codes().contains(&"rate_limited".to_owned()),
        "{:?}",
        seen.frames
    );
    assert_eq!(seen.close, Some(1008));
    app.shutdown().await;
}

#[actix_rt::test]
async fn too_many_bad_frames_close_the_connection() {
    let app = spawn_app_with(&[("TRELLIS__MT5__MAX_BAD_FRAMES", "3")]).await;
    app.add_tenant(tenant("acme", KEY)).await;
    let frames = vec![text(hello(KEY, 2)), text("{"), text("{"), text("{")];

    let seen = raw(&app.ws_url(), frames, Duration::from_secs(3)).await;

    let codes = seen.error_codes();
    assert_eq!(
        codes.last().map(String::as_str),
        Some("too_many_errors"),
        "{codes:?}"
    );
    assert_eq!(seen.close, Some(1008));
}

#[actix_rt::test]
async fn a_silent_terminal_is_declared_lost_and_its_account_blind() {
    let app = spawn_app_with(&[
        ("TRELLIS__MT5__HEARTBEAT_INTERVAL_MS", "100"),
        ("TRELLIS__MT5__HEARTBEAT_TIMEOUT_MS", "300"),
    ])
    .await;
    let t = app.add_tenant(tenant("acme", KEY)).await;

    let seen = raw(
        &app.ws_url(),
        vec![text(hello(KEY, 2))],
        Duration::from_secs(3),
    )
    .await;

    assert_eq!(seen.frames[0]["type"], "welcome");
    assert!(
        seen.frames.iter().any(|f| f["type"] == "heartbeat"),
        "trellis sent heartbeats"
    );
    assert_eq!(seen.error_codes(), vec!["heartbeat_timeout"]);
    assert_eq!(seen.close, Some(1008));
    let risk = t.risk.get().expect("risk");
    let state = risk.send(GetRiskState).await.expect("risk state");
    assert_eq!(state.blind_accounts, vec![Login::new(7001)]);
    app.shutdown().await;
}

fn hello_as(key: &str, login: u64, server: &str) -> String {
    json!({"type": "hello", "seq": 1, "api_key": key, "login": login, "server": server,
           "protocol_version": 2, "last_seq_received": 0})
    .to_string()
}

#[actix_rt::test]
async fn a_bridge_needs_a_market_write_key_a_registered_account_and_room_in_its_tier() {
    let (app, root) = crate::helpers::spawn_admin_app(&[]).await;
    crate::helpers::create_tenant(&app, &root, "acme", "free").await;
    crate::helpers::create_tenant(&app, &root, "globex", "free").await;
    let (_, read) = crate::helpers::create_key(&app, &root, "acme", &["read"]).await;
    let (_, bridge) = crate::helpers::create_key(&app, &root, "acme", &["market:write"]).await;
    app.expect(
        201,
        "POST",
        "/api/v1/tenants/globex/mt5-accounts",
        Some(&root),
        Some(&json!({"login": 7001, "server": "Test-Server", "password": "globex-pw"})),
    )
    .await;
    let wait = Duration::from_millis(500);

    // A read-only key cannot feed market data.
    let seen = raw(
        &app.ws_url(),
        vec![text(hello_as(&read, 7001, "Test-Server"))],
        wait,
    )
    .await;
    assert_eq!(seen.error_codes(), vec!["bad_api_key"]);
    assert_eq!(seen.close, Some(1008));
    // Without registered accounts any login may connect (configuration-era tenants); free allows one.
    let first = raw(
        &app.ws_url(),
        vec![text(hello_as(&bridge, 5001, "Test-Server"))],
        wait,
    )
    .await;
    assert_eq!(first.frames[0]["type"], "welcome", "{:?}", first.frames);
    let second = raw(
        &app.ws_url(),
        vec![text(hello_as(&bridge, 5002, "Test-Server"))],
        wait,
    )
    .await;
    assert_eq!(second.error_codes(), vec!["bad_api_key"]);
    let why = second.frames[0]["message"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(why.contains("free tier allows 1"), "{why}");

    // Once acme registers its account, only that login on that server connects — not globex's login.
    app.expect(
        201,
        "POST",
        "/api/v1/tenants/acme/mt5-accounts",
        Some(&root),
        Some(&json!({"login": 5001, "server": "Test-Server", "password": "acme-pw"})),
    )
    .await;
    let other = raw(
        &app.ws_url(),
        vec![text(hello_as(&bridge, 7001, "Test-Server"))],
        wait,
    )
    .await;
    assert_eq!(
        other.error_codes(),
        vec!["bad_api_key"],
        "another tenant's account"
    );
    let wrong_server = raw(
        &app.ws_url(),
        vec![text(hello_as(&bridge, 5001, "Elsewhere"))],
        wait,
    )
    .await;
    assert_eq!(wrong_server.error_codes(), vec!["bad_api_key"]);
    let again = raw(
        &app.ws_url(),
        vec![text(hello_as(&bridge, 5001, "Test-Server"))],
        wait,
    )
    .await;
    assert_eq!(again.frames[0]["type"], "welcome", "{:?}", again.frames);
    app.shutdown().await;
}

#[actix_rt::test]
async fn a_restarted_risk_actor_still_knows_which_accounts_are_blind() {
    let app = spawn_app_with(&[
        ("TRELLIS__MT5__HEARTBEAT_INTERVAL_MS", "100"),
        ("TRELLIS__MT5__HEARTBEAT_TIMEOUT_MS", "300"),
    ])
    .await;
    let t = app.add_tenant(tenant("acme", KEY)).await;
    let seen = raw(
        &app.ws_url(),
        vec![text(hello(KEY, 2))],
        Duration::from_secs(2),
    )
    .await;
    assert_eq!(seen.error_codes(), vec!["heartbeat_timeout"]);
    let old = t.risk.get().expect("risk");
    let state = old.send(GetRiskState).await.expect("risk state");
    assert_eq!(state.blind_accounts, vec![Login::new(7001)]);

    // Act: the risk actor stops; its supervisor starts a fresh one (its in-memory state is gone).
    old.do_send(trellis::runtime::supervisor::Shutdown {
        reason: "test".into(),
    });
    crate::helpers::wait_for("a new risk actor", || {
        t.risk.get().is_some_and(|a| a != old && a.connected())
    })
    .await;

    // Assert: it asked the sessions, and the silent terminal's account is still blind.
    let fresh = t.risk.get().expect("risk");
    let state = fresh.send(GetRiskState).await.expect("risk state");
    assert_eq!(state.blind_accounts, vec![Login::new(7001)]);
    app.shutdown().await;
}
