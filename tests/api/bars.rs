//! The terminal's bar history on the bridge (protocol 3, issue 36): which bridges are asked for bars, what goes
//! on the wire, and that a terminal's answer is accepted or refused with a clear error. The terminal's own
//! charts (`SimHandle::history`) are the oracle for what it sent.

use std::time::Duration;

use awc::ws;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use trellis::actors::messages::FetchBars;
use trellis::domain::{Login, Symbol, Tick, Timeframe};
use trellis::sim::{Control, SimConfig, SimHandle};

use crate::helpers::{spawn_app, tenant, tick, wait_for, TestApp, MINUTE, T0};

const KEY: &str = "trk_acme0001_bars-test-secret";
const LOGIN: u64 = 7101;

/// Ticks of `minutes` minutes before T0, three a minute: history the terminal has and trellis never saw.
fn history(minutes: i64) -> Vec<Tick> {
    (0..minutes * 3)
        .map(|i| {
            let t = T0 - minutes * MINUTE + i * 20_000 + 7;
            let bid = format!("1.{:05}", 10_000 + (i * 37) % 500);
            let ask = format!("1.{:05}", 10_002 + (i * 37) % 500);
            tick("EURUSD", t, &bid, &ask)
        })
        .collect()
}

async fn sim_with(app: &TestApp, version: u32, history: Vec<Tick>) -> SimHandle {
    let mut cfg = SimConfig::new(app.ws_url(), KEY, LOGIN);
    cfg.heartbeat_ms = 200;
    cfg.protocol_version = version;
    cfg.history = history;
    let sim = trellis::sim::spawn(cfg);
    wait_for("the simulator to connect", || sim.stats().connected).await;
    sim
}

/// Asks the account's session for bars, as market data does.
fn fetch(app: &TestApp, timeframe: Timeframe, from_ms: i64, to_ms: i64) {
    let session = app
        .runtime
        .tenant("acme")
        .and_then(|t| t.session_of(Login::new(LOGIN)))
        .expect("the account has a session");
    session.do_send(FetchBars {
        request_id: 1,
        symbol: Symbol::new("EURUSD"),
        timeframe,
        from_ms,
        to_ms,
        count: 50_000,
    });
}

/// Waits until trellis has handled everything sent before: a frame of an unknown type (with `seq`, far
/// ahead of the simulator's own) is answered with `unknown_type` in order, after everything before it.
async fn settle(sim: &SimHandle, seq: u64) {
    let before = unknown_types(sim);
    sim.send(Control::Raw(
        json!({"type": "teleport", "seq": seq}).to_string(),
    ));
    wait_for("trellis to answer the marker", || {
        unknown_types(sim) > before
    })
    .await;
}

fn unknown_types(sim: &SimHandle) -> usize {
    sim.stats()
        .errors
        .iter()
        .filter(|(code, _)| code == "unknown_type")
        .count()
}

/// The frames of `kind` the simulator received from trellis.
fn received(sim: &SimHandle, kind: &str) -> Vec<Value> {
    sim.stats()
        .received
        .iter()
        .filter_map(|t| serde_json::from_str::<Value>(t).ok())
        .filter(|f| f["type"] == kind)
        .collect()
}

/// The `welcome` (or error) a raw bridge gets for a hello of `version`.
async fn welcome_for(app: &TestApp, version: u32) -> Value {
    let (_resp, conn) = awc::Client::new()
        .ws(app.ws_url())
        .connect()
        .await
        .expect("websocket connects");
    let (mut sink, mut stream) = conn.split();
    let hello = json!({"type": "hello", "seq": 1, "api_key": KEY, "login": LOGIN, "server": "Test-Server",
                       "protocol_version": version, "last_seq_received": 0});
    sink.send(ws::Message::Text(hello.to_string().into()))
        .await
        .expect("hello sent");
    let first = tokio::time::timeout(Duration::from_secs(5), stream.next()).await;
    let Ok(Some(Ok(ws::Frame::Text(bytes)))) = first else {
        panic!("no answer to a hello of version {version}: {first:?}")
    };
    let _ = sink.send(ws::Message::Close(None)).await;
    serde_json::from_slice(&bytes).expect("JSON")
}

#[actix_rt::test]
async fn bridges_of_versions_2_and_3_are_welcomed_in_their_own_version_and_others_refused() {
    let app = spawn_app().await;
    app.add_tenant(tenant("acme", KEY)).await;

    let v2 = welcome_for(&app, 2).await;
    let v3 = welcome_for(&app, 3).await;
    let v1 = welcome_for(&app, 1).await;
    let v4 = welcome_for(&app, 4).await;

    assert_eq!(
        (&v2["type"], &v2["protocol_version"]),
        (&json!("welcome"), &json!(2))
    );
    assert_eq!(
        (&v3["type"], &v3["protocol_version"]),
        (&json!("welcome"), &json!(3))
    );
    for refused in [&v1, &v4] {
        assert_eq!(refused["code"], "unsupported_version", "{refused}");
        assert!(
            refused["message"]
                .as_str()
                .is_some_and(|m| m.contains("speaks 2 to 3")),
            "{refused}"
        );
    }
    assert!(
        v1["message"]
            .as_str()
            .is_some_and(|m| m.contains("upgrade the bridge to protocol 2")),
        "{v1}"
    );
    app.shutdown().await;
}

#[actix_rt::test]
async fn a_version_3_terminal_is_asked_for_bars_and_its_paged_answer_is_accepted() {
    // Arrange: ten hours of history the terminal saw before it connected: 600 M1 bars, three pages.
    let app = spawn_app().await;
    app.add_tenant(tenant("acme", KEY)).await;
    let sim = sim_with(&app, 3, history(600)).await;
    let (from, to) = (T0 - 600 * MINUTE, T0);

    // Act
    fetch(&app, Timeframe::M1, from, to);
    wait_for("the terminal's answer", || sim.stats().bars_sent > 0).await;
    settle(&sim, 1_000_000).await;

    // Assert
    // Market data asks for its own series too (the tenant's M1 correlation window): this test's request is
    // the one of its range.
    let asked: Vec<_> = received(&sim, "bars_request")
        .into_iter()
        .filter(|r| r["from_msc"] == json!(from))
        .collect();
    assert_eq!(asked.len(), 1, "{asked:?}");
    assert_eq!(
        (
            &asked[0]["symbol"],
            &asked[0]["timeframe"],
            &asked[0]["from_msc"],
            &asked[0]["to_msc"]
        ),
        (&json!("EURUSD"), &json!("M1"), &json!(from), &json!(to))
    );
    let (bars, forming) = trellis::sim::history::BarHistory::range(
        &sim.history.lock().expect("history"),
        &Symbol::new("EURUSD"),
        Timeframe::M1,
        from,
        to,
    );
    assert_eq!(
        bars.len(),
        599,
        "the terminal's own record: all but the forming bar"
    );
    assert!(forming.is_some());
    // This test's answer, and market data's own for its EURUSD M1 series (the same 600).
    assert_eq!(sim.stats().bars_sent, 1_200);
    let md = app
        .runtime
        .tenant("acme")
        .and_then(|t| t.market_data.get())
        .expect("market data");
    let kept = md
        .send(trellis::actors::messages::GetRecentBars {
            symbol: Symbol::new("EURUSD"),
            timeframe: Timeframe::M1,
            limit: 1_000,
        })
        .await
        .expect("bars");
    assert_eq!(kept, bars, "market data holds the terminal's bars, exactly");
    assert_eq!(
        unknown_types(&sim),
        sim.stats().errors.len(),
        "trellis took every page: {:?}",
        sim.stats().errors
    );
    sim.stop().await.expect("sim stops");
    app.shutdown().await;
}

#[actix_rt::test]
async fn a_version_2_terminal_is_never_sent_a_bars_request() {
    let app = spawn_app().await;
    app.add_tenant(tenant("acme", KEY)).await;
    let sim = sim_with(&app, 2, history(30)).await;

    fetch(&app, Timeframe::M5, T0 - 30 * MINUTE, T0);
    settle(&sim, 1_000_000).await;

    assert_eq!(sim.stats().bars_requests, 0);
    assert!(received(&sim, "bars_request").is_empty());
    sim.stop().await.expect("sim stops");
    app.shutdown().await;
}

#[actix_rt::test]
async fn a_malformed_bars_frame_gets_an_error_naming_the_problem_and_the_link_stays() {
    let app = spawn_app().await;
    app.add_tenant(tenant("acme", KEY)).await;
    let sim = sim_with(&app, 3, Vec::new()).await;
    let row = |t: i64, high: f64, low: f64| json!({"time_msc": t, "open": 1.1, "high": high, "low": low, "close": 1.1, "tick_volume": 3});
    // Far ahead of the simulator's own sequence, so no frame of its own is taken for a duplicate.
    let bad = [
        json!({"type": "bars", "seq": 1_000_001, "request_id": 1, "symbol": "EURUSD", "timeframe": "M1",
               "bars": [row(T0, 1.0, 1.2)]}),
        json!({"type": "bars", "seq": 1_000_002, "request_id": 1, "symbol": "EURUSD", "timeframe": "W1",
               "bars": []}),
        json!({"type": "bars", "seq": 1_000_003, "request_id": 1, "symbol": "EURUSD", "timeframe": "M1",
               "bars": [row(T0 + 1, 1.2, 1.0)]}),
        json!({"type": "bars", "seq": 1_000_004, "request_id": 1, "symbol": "EURUSD", "timeframe": "M1"}),
    ];

    for frame in &bad[..3] {
        sim.send(Control::Raw(frame.to_string()));
    }
    // A well-formed answer to no request out is ignored, without an error.
    sim.send(Control::Raw(bad[3].to_string()));
    settle(&sim, 1_000_005).await;

    let stats = sim.stats();
    let codes: Vec<&str> = stats.errors.iter().map(|(c, _)| c.as_str()).collect();
    assert_eq!(
        codes,
        [
            "invalid_value",
            "invalid_value",
            "invalid_value",
            "unknown_type"
        ]
    );
    assert!(
        stats.errors[0].1.contains("must enclose"),
        "{:?}",
        stats.errors[0]
    );
    assert!(stats.errors[1].1.contains("W1"), "{:?}", stats.errors[1]);
    assert!(
        stats.errors[2].1.contains("open time of a M1 bar"),
        "{:?}",
        stats.errors[2]
    );
    assert_eq!(stats.connects, 1, "non-fatal errors keep the connection");
    sim.stop().await.expect("sim stops");
    app.shutdown().await;
}
