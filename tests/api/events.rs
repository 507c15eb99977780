//! `/ws/events`: trading clients follow their tenant's orders and fills, on any node.

use std::time::Duration;

use awc::ws;
use futures_util::StreamExt;
use serde_json::Value;

use crate::helpers::{rising, spawn_app_with, tenant, TestApp};

/// Connects a trading client and returns a receiver of the JSON frames it gets.
pub async fn client(app: &TestApp, key: &str) -> tokio::sync::mpsc::UnboundedReceiver<Value> {
    let url = format!("ws://127.0.0.1:{}/ws/events?api_key={key}", app.port);
    let (_resp, mut conn) = awc::Client::new()
        .ws(url)
        .connect()
        .await
        .expect("events socket");
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    actix_rt::spawn(async move {
        while let Some(Ok(frame)) = conn.next().await {
            if let ws::Frame::Text(bytes) = frame {
                if tx
                    .send(serde_json::from_slice(&bytes).unwrap_or(Value::Null))
                    .is_err()
                {
                    break;
                }
            }
        }
    });
    rx
}

async fn first_fill(rx: &mut tokio::sync::mpsc::UnboundedReceiver<Value>) -> (Vec<String>, Value) {
    let mut kinds = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while let Ok(Some(frame)) = tokio::time::timeout_at(deadline, rx.recv()).await {
        kinds.push(frame["type"].as_str().unwrap_or("?").to_owned());
        if frame["type"] == "fill" {
            return (kinds, frame);
        }
    }
    panic!("no fill event; saw {kinds:?}");
}

#[actix_rt::test]
async fn a_trading_client_follows_its_tenants_orders_and_fills() {
    let key = "trk_events01_events-secret";
    let app = spawn_app_with(&[("TRELLIS__STORAGE__REDIS_URL", "")]).await;
    app.add_tenant(tenant("acme", key)).await;
    let mut events = client(&app, key).await;
    let sim = app.sim(key, 7001).await;

    rising(&sim, 4);
    let (kinds, fill) = first_fill(&mut events).await;

    // Other events (risk state, positions, …) may come between; of orders and fills, the order is first.
    assert_eq!(
        kinds
            .iter()
            .find(|k| *k == "order" || *k == "fill")
            .map(String::as_str),
        Some("order"),
        "the order comes before its fill: {kinds:?}"
    );
    assert_eq!(fill["tenant"], "acme");
    assert_eq!(fill["data"]["fill"]["symbol"], "EURUSD");
    assert_eq!(fill["data"]["fill"]["volume"], "0.1");
    let url = format!(
        "ws://127.0.0.1:{}/ws/events?api_key=trk_nobody00_nope",
        app.port
    );
    assert!(
        awc::Client::new().ws(url).connect().await.is_err(),
        "an unknown key is refused"
    );
    sim.stop().await.expect("sim stops");
    app.shutdown().await;
}

#[actix_rt::test]
async fn a_client_on_one_node_sees_the_fills_produced_on_another_through_redis() {
    let Some(redis) = crate::helpers::service_url("TRELLIS_TEST_REDIS_URL") else {
        return;
    };
    let id = format!("e{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let key = format!("trk_{id}_cross-node-secret");
    // Two nodes of one deployment: the same namespace on the shared Redis (each test app has stores of its
    // own, from which the namespace would otherwise differ).
    let ns = format!("ns-{id}");
    let trading = spawn_app_with(&[
        ("TRELLIS__STORAGE__REDIS_URL", &redis),
        ("TRELLIS__STORAGE__NAMESPACE", &ns),
    ])
    .await;
    let watching = spawn_app_with(&[
        ("TRELLIS__STORAGE__REDIS_URL", &redis),
        ("TRELLIS__STORAGE__NAMESPACE", &ns),
    ])
    .await;
    trading.add_tenant(tenant(&id, &key)).await;
    watching.add_tenant(tenant(&id, &key)).await;
    let mut events = client(&watching, &key).await;
    actix_rt::time::sleep(Duration::from_millis(300)).await; // the watching node's subscription settles
    let sim = trading.sim(&key, 7001).await;

    rising(&sim, 4);
    let (_, fill) = first_fill(&mut events).await;

    assert_eq!(fill["tenant"], id.as_str());
    assert_eq!(fill["data"]["fill"]["side"], "buy");
    assert!(
        watching.portfolio(&id).await.deals.is_empty(),
        "the watching node did not trade itself"
    );
    sim.stop().await.expect("sim stops");
    trading.shutdown().await;
    watching.shutdown().await;
}

#[actix_rt::test]
async fn a_user_stream_ends_when_its_access_token_expires() {
    let (app, root) =
        crate::helpers::spawn_admin_app(&[("TRELLIS__SECURITY__ACCESS_TTL_SECS", "2")]).await;
    crate::helpers::create_tenant(&app, &root, "acme", "basic").await;
    let (_, viewer) =
        crate::helpers::create_user(&app, &root, "acme", "v@acme.test", "viewer").await;
    let url = format!("ws://127.0.0.1:{}/ws/events", app.port);
    let started = std::time::Instant::now();
    let (_resp, mut conn) = awc::Client::new()
        .ws(url)
        .bearer_auth(&viewer)
        .connect()
        .await
        .expect("a viewer may follow the events");

    let mut close = None;
    while let Ok(Some(Ok(frame))) = tokio::time::timeout(Duration::from_secs(10), conn.next()).await
    {
        if let ws::Frame::Close(reason) = frame {
            close = reason;
            break;
        }
    }

    let close = close.expect("the server closed the stream");
    assert_eq!(close.code, ws::CloseCode::Policy);
    assert_eq!(close.description.as_deref(), Some("access token expired"));
    let lived = started.elapsed();
    assert!(
        lived >= Duration::from_millis(900) && lived < Duration::from_secs(5),
        "{lived:?}"
    );
    app.shutdown().await;
}
