//! `/ws/v1/client` over a real WebSocket on loopback (docs/client-protocol.md): snapshots then numbered
//! updates, every command's ack and refusal, a slow client conflated on ticks but given every fill, tenant
//! isolation, tickets.

use std::collections::HashMap;
use std::time::Duration;

use awc::ws;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};

use trellis::domain::orders::OrderStatus;

use crate::helpers::{rising, spawn_app_with, tenant, tick, wait_for, TestApp, T0};

/// A connected client: frames to send, frames received (JSON).
pub struct Client {
    tx: tokio::sync::mpsc::UnboundedSender<String>,
    rx: tokio::sync::mpsc::UnboundedReceiver<Value>,
    /// Every frame received so far, in order.
    pub seen: Vec<Value>,
}

pub async fn connect(url: String, header: Option<(&str, String)>) -> Client {
    let mut req = awc::Client::new().ws(url).max_frame_size(8 * 1024 * 1024);
    if let Some((name, value)) = header {
        req = req.header(name, value);
    }
    let (_resp, conn) = req.connect().await.expect("client socket");
    let (mut sink, mut stream) = conn.split();
    let (tx, mut outgoing) = tokio::sync::mpsc::unbounded_channel::<String>();
    let (incoming, rx) = tokio::sync::mpsc::unbounded_channel();
    actix_rt::spawn(async move {
        while let Some(text) = outgoing.recv().await {
            if sink.send(ws::Message::Text(text.into())).await.is_err() {
                break;
            }
        }
    });
    actix_rt::spawn(async move {
        while let Some(Ok(frame)) = stream.next().await {
            let value = match frame {
                ws::Frame::Text(bytes) => serde_json::from_slice(&bytes).unwrap_or(Value::Null),
                ws::Frame::Close(reason) => {
                    json!({"type": "closed", "code": reason.as_ref().map(|r| u16::from(r.code)),
                    "reason": reason.and_then(|r| r.description)})
                }
                _ => continue,
            };
            if incoming.send(value).is_err() {
                break;
            }
        }
    });
    Client {
        tx,
        rx,
        seen: Vec::new(),
    }
}

pub async fn with_key(app: &TestApp, key: &str) -> Client {
    connect(
        format!("ws://127.0.0.1:{}/ws/v1/client", app.port),
        Some(("X-API-Key", key.to_owned())),
    )
    .await
}

impl Client {
    pub fn send(&self, frame: Value) {
        self.tx.send(frame.to_string()).expect("client open");
    }

    /// The next frame matching `want`, waiting up to 15 s; every frame read is kept in `seen`.
    pub async fn until(&mut self, what: &str, want: impl Fn(&Value) -> bool) -> Value {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
        loop {
            match tokio::time::timeout_at(deadline, self.rx.recv()).await {
                Ok(Some(frame)) => {
                    self.seen.push(frame.clone());
                    if want(&frame) {
                        return frame;
                    }
                }
                _ => panic!(
                    "{what}: not received; the last frames: {:?}",
                    &self.seen[self.seen.len().saturating_sub(8)..]
                ),
            }
        }
    }

    /// A frame matching `want` already received, or the next one.
    pub async fn find(&mut self, what: &str, want: impl Fn(&Value) -> bool) -> Value {
        match self.seen.iter().find(|f| want(f)) {
            Some(f) => f.clone(),
            None => self.until(what, want).await,
        }
    }

    /// Sends a command and answers its `ack` or `refused`.
    pub async fn call(&mut self, id: &str, frame: Value) -> Value {
        let mut frame = frame;
        frame["id"] = json!(id);
        self.send(frame);
        self.until(id, |f| {
            f["id"] == id && matches!(f["type"].as_str(), Some("ack" | "refused" | "error"))
        })
        .await
    }

    pub async fn subscribe(&mut self, channels: &[&str]) {
        let ack = self
            .call("sub", json!({"op": "subscribe", "channels": channels}))
            .await;
        assert_eq!(ack["type"], "ack", "{ack}");
        for c in channels {
            self.until(&format!("snapshot of {c}"), |f| {
                f["type"] == "snapshot" && f["channel"] == *c
            })
            .await;
        }
    }
}

/// Checks every channel's frames in `frames`: a snapshot at 0, then 1, 2, 3 …
fn assert_consecutive(frames: &[Value]) {
    let mut last: HashMap<String, u64> = HashMap::new();
    for f in frames {
        let Some(channel) = f["channel"].as_str() else {
            continue;
        };
        let seq = f["seq"].as_u64().expect("seq");
        match f["type"].as_str() {
            Some("snapshot") => assert_eq!(seq, 0, "{f}"),
            _ => assert_eq!(
                Some(seq),
                last.get(channel).map(|s| s + 1),
                "{channel}: a gap before {f}"
            ),
        }
        last.insert(channel.to_owned(), seq);
    }
}

#[actix_rt::test]
async fn a_client_gets_snapshots_then_numbered_updates_and_a_fresh_snapshot_when_it_resubscribes() {
    let key = "trk_client01_client-secret";
    let app = spawn_app_with(&[]).await;
    app.add_tenant(tenant("acme", key)).await;
    let mut client = with_key(&app, key).await;
    let welcome = client.until("welcome", |f| f["type"] == "welcome").await;
    assert_eq!(welcome["tenant"], "acme");
    assert_eq!(welcome["can_trade"], true);
    assert_eq!(welcome["symbols"], json!(["EURUSD", "GBPUSD"]));
    client
        .subscribe(&[
            "fills",
            "orders",
            "positions",
            "ticks:EURUSD",
            "bars:EURUSD:M1",
            "pnl",
            "strategies",
            "risk",
            "supervision",
        ])
        .await;
    let snapshot = |c: &Client, channel: &str| -> Value {
        c.seen
            .iter()
            .find(|f| f["type"] == "snapshot" && f["channel"] == channel)
            .map(|f| f["data"].clone())
            .expect("snapshot")
    };
    assert_eq!(snapshot(&client, "fills"), json!({"fills": []}));
    assert_eq!(
        snapshot(&client, "ticks:EURUSD"),
        Value::Null,
        "no tick yet"
    );
    let strategies = snapshot(&client, "strategies");
    assert_eq!(strategies["strategies"][0]["id"], "ema-eurusd");
    assert_eq!(strategies["strategies"][0]["state"], "running");

    let sim = app.sim(key, 7001).await;
    rising(&sim, 4);
    let fill = client
        .until("the fill", |f| {
            f["type"] == "update" && f["channel"] == "fills"
        })
        .await;
    assert_eq!(fill["data"]["fill"]["side"], "buy");
    assert_eq!(fill["data"]["fill"]["volume"], "0.1");
    let position = client
        .find("the position", |f| {
            f["type"] == "update" && f["channel"] == "positions"
        })
        .await;
    assert_eq!(
        (&position["data"]["symbol"], &position["data"]["volume"]),
        (&json!("EURUSD"), &json!("0.1"))
    );
    client
        .find("a closed bar", |f| {
            f["type"] == "update" && f["channel"] == "bars:EURUSD:M1"
        })
        .await;
    client
        .find("the latest tick", |f| {
            f["channel"] == "ticks:EURUSD" && f["data"]["bid"] == "1.1030"
        })
        .await;
    let orders: Vec<&Value> = client
        .seen
        .iter()
        .filter(|f| f["type"] == "update" && f["channel"] == "orders")
        .collect();
    assert!(
        orders.iter().any(|o| o["data"]["status"] == "sent"),
        "the order's life is followed: {orders:?}"
    );
    assert_consecutive(&client.seen);

    // A client that saw a gap resubscribes: a fresh snapshot, counted from 0 again.
    let ack = client
        .call("unsub", json!({"op": "unsubscribe", "channels": ["fills"]}))
        .await;
    assert_eq!(ack["type"], "ack");
    client.seen.clear();
    client.subscribe(&["fills"]).await;
    let fills = snapshot(&client, "fills");
    assert_eq!(fills["fills"].as_array().map(Vec::len), Some(1), "{fills}");
    assert_eq!(fills["fills"][0]["ticket"], fill["data"]["ticket"]);
    sim.stop().await.expect("sim stops");
    app.shutdown().await;
}

#[actix_rt::test]
async fn every_command_is_acknowledged_or_refused_with_a_reason() {
    let key = "trk_client02_client-secret";
    let app = spawn_app_with(&[]).await;
    let mut settings = tenant("acme", key);
    settings.risk.max_order_volume = Some(crate::helpers::p("1"));
    app.add_tenant(settings).await;
    let mut c = with_key(&app, key).await;
    c.until("welcome", |f| f["type"] == "welcome").await;
    let refused = |f: &Value, code: &str| {
        assert_eq!(
            (f["type"].as_str(), f["code"].as_str()),
            (Some("refused"), Some(code)),
            "{f}"
        );
        assert!(!f["reason"].as_str().unwrap_or_default().is_empty(), "{f}");
    };
    let order = |id: &str, symbol: &str, volume: &str| json!({"op": "place_order", "client_order_id": id, "symbol": symbol, "side": "buy", "volume": volume});

    // No terminal yet: nothing can be sent.
    refused(
        &c.call("o0", order("first", "EURUSD", "0.1")).await,
        "no_session",
    );
    let sim = app.sim(key, 7001).await;
    sim.tick(tick("EURUSD", T0, "1.1000", "1.1002"));
    wait_for("the quote", || {
        app.runtime
            .tenant("acme")
            .is_some_and(|t| !t.quotes.read().is_empty())
    })
    .await;

    let placed = c.call("o1", order("m-1", "EURUSD", "0.2")).await;
    assert_eq!(placed["type"], "ack", "{placed}");
    assert_eq!(placed["result"]["duplicate"], false);
    assert_eq!(placed["result"]["order"]["client_order_id"], "manual:m-1");
    let again = c.call("o2", order("m-1", "EURUSD", "0.2")).await;
    assert_eq!(again["result"]["duplicate"], true, "{again}");
    // REST reads the portfolio at a bounded rate, but a change made through the API is seen at once:
    // read the orders, place another, read again at once.
    let orders = |body: &Value| -> Vec<String> {
        body["orders"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|o| o["client_order_id"].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    };
    let (status, _, before) = app.get_as("/api/v1/tenants/acme/orders", Some(key)).await;
    assert_eq!(status, 200, "{before}");
    assert!(
        orders(&before).contains(&"manual:m-1".to_owned()),
        "{before}"
    );
    let placed = c.call("o2b", order("m-1b", "EURUSD", "0.1")).await;
    assert_eq!(placed["type"], "ack", "{placed}");
    let (_, _, after) = app.get_as("/api/v1/tenants/acme/orders", Some(key)).await;
    assert!(
        orders(&after).contains(&"manual:m-1b".to_owned()),
        "the order placed a moment ago: {after}"
    );
    app.wait_portfolio("acme", "one fill of each manual order", |p| {
        p.deals.len() == 2
    })
    .await;
    refused(
        &c.call("o3", order("m-2", "XAUUSD", "0.1")).await,
        "unknown_symbol",
    );
    refused(
        &c.call("o4", order("m-3", "EURUSD", "0")).await,
        "bad_request",
    );
    refused(
        &c.call("o5", order("m-4", "EURUSD", "5")).await,
        "risk_rejected",
    );
    refused(
        &c.call("o6", order("has:colon", "EURUSD", "0.1")).await,
        "bad_request",
    );
    let limit_without_price = json!({"op": "place_order", "client_order_id": "m-5", "symbol": "EURUSD", "side": "buy", "volume": "0.1", "kind": "limit"});
    refused(&c.call("o7", limit_without_price).await, "bad_request");
    let wrong_type = c
        .call("o8", json!({"op": "place_order", "client_order_id": "m-6", "symbol": "EURUSD", "side": "up", "volume": "0.1"}))
        .await;
    assert_eq!(wrong_type["type"], "error");
    assert!(
        wrong_type["reason"]
            .as_str()
            .unwrap_or_default()
            .starts_with("side:"),
        "{wrong_type}"
    );
    refused(
        &c.call(
            "c1",
            json!({"op": "cancel_order", "client_order_id": "nope"}),
        )
        .await,
        "unknown_order",
    );
    refused(
        &c.call(
            "c2",
            json!({"op": "cancel_order", "client_order_id": "m-1"}),
        )
        .await,
        "not_cancellable",
    );

    // A buy limit far below the market waits on the terminal; cancelled, it is gone from the terminal (the
    // price that would have filled it comes and nothing fills), and a second cancel is refused.
    let limit = json!({"op": "place_order", "client_order_id": "lim-1", "symbol": "EURUSD", "side": "buy", "volume": "0.1", "kind": "limit", "price": "1.0500"});
    assert_eq!(c.call("l1", limit).await["type"], "ack");
    let status_of = |p: &trellis::actors::messages::PortfolioSnapshot| {
        p.orders
            .iter()
            .find(|o| o.client_order_id == "manual:lim-1")
            .map(|o| o.status)
    };
    app.wait_portfolio("acme", "the limit order placed", |p| {
        status_of(p) == Some(OrderStatus::Placed)
    })
    .await;
    let cancel = c
        .call(
            "c3",
            json!({"op": "cancel_order", "client_order_id": "lim-1"}),
        )
        .await;
    assert_eq!(
        (cancel["type"].as_str(), cancel["result"]["cancel"].as_str()),
        (Some("ack"), Some("sent")),
        "{cancel}"
    );
    app.wait_portfolio("acme", "the limit order cancelled", |p| {
        status_of(p) == Some(OrderStatus::Cancelled)
    })
    .await;
    let sent = sim.stats().ticks_sent;
    sim.tick(tick("EURUSD", T0 + 1_000, "1.0400", "1.0402"));
    sim.tick(tick("EURUSD", T0 + 2_000, "1.1000", "1.1002"));
    wait_for("the sim to see the low price", || {
        sim.stats().ticks_sent >= sent + 2
    })
    .await;
    refused(
        &c.call(
            "c4",
            json!({"op": "cancel_order", "client_order_id": "lim-1"}),
        )
        .await,
        "not_cancellable",
    );
    let of_limit = |id: Option<&str>| id == Some("manual:lim-1");
    let terminal_deals = sim.broker.lock().expect("broker").deals().to_vec();
    assert!(
        !terminal_deals
            .iter()
            .any(|d| of_limit(d.client_order_id.as_deref())),
        "the terminal made no deal of the cancelled order: {terminal_deals:?}"
    );
    let book = app.portfolio("acme").await;
    assert!(!book
        .deals
        .iter()
        .any(|d| of_limit(d.client_order_id.as_deref())));

    refused(
        &c.call("s1", json!({"op": "strategy_start", "strategy": "nope"}))
            .await,
        "unknown_strategy",
    );
    let stopped = c
        .call(
            "s2",
            json!({"op": "strategy_stop", "strategy": "ema-eurusd"}),
        )
        .await;
    assert_eq!(
        stopped["result"]["strategy"]["state"], "stopped",
        "{stopped}"
    );
    let started = c
        .call(
            "s3",
            json!({"op": "strategy_start", "strategy": "ema-eurusd"}),
        )
        .await;
    assert_eq!(started["type"], "ack", "{started}");

    let on = c
        .call(
            "k1",
            json!({"op": "kill_switch", "on": true, "reason": "client test"}),
        )
        .await;
    assert_eq!(
        on["result"]["risk"]["kill_switch"]["reason"], "client test",
        "{on}"
    );
    refused(
        &c.call("o9", order("m-7", "EURUSD", "0.1")).await,
        "risk_rejected",
    );
    let flattened = c
        .call("f1", json!({"op": "flatten", "reason": "end of test"}))
        .await;
    assert_eq!(flattened["result"]["orders"], 1, "{flattened}");
    let flat = app
        .wait_portfolio("acme", "the position flattened", |p| p.deals.len() == 3)
        .await;
    assert!(flat.positions.is_empty(), "{:?}", flat.positions);
    let off = c
        .call("k2", json!({"op": "kill_switch", "on": false}))
        .await;
    assert_eq!(off["result"]["risk"]["kill_switch"], Value::Null, "{off}");

    c.send(json!({"op": "ping", "id": "p1"}));
    c.until("the pong", |f| f["type"] == "pong" && f["id"] == "p1")
        .await;
    c.send(json!("not an object"));
    let error = c
        .until("the bad frame's error", |f| {
            f["type"] == "error" && f["id"].is_null()
        })
        .await;
    assert_eq!(error["code"], "bad_frame");
    let still = c
        .call("k3", json!({"op": "kill_switch", "on": false}))
        .await;
    assert_eq!(still["type"], "ack", "the connection survives bad frames");

    let audit = app.audited("acme", "order.manual", 1).await;
    assert_eq!(audit[0]["actor"], "key:config");
    sim.stop().await.expect("sim stops");
    app.shutdown().await;
}

#[actix_rt::test]
async fn a_slow_client_is_conflated_on_ticks_but_receives_every_fill_and_trading_does_not_wait_for_it(
) {
    let key = "trk_client03_client-secret";
    let app = spawn_app_with(&[]).await;
    app.add_tenant(tenant("acme", key)).await;
    // The slow client subscribes, then reads nothing while the market moves.
    let url = format!("ws://127.0.0.1:{}/ws/v1/client", app.port);
    let (_resp, mut slow) = awc::Client::new()
        .ws(url)
        .max_frame_size(8 * 1024 * 1024)
        .header("X-API-Key", key)
        .connect()
        .await
        .expect("slow client");
    let subscribe = json!({"op": "subscribe", "id": "s", "channels": ["ticks:EURUSD", "fills"]});
    slow.send(ws::Message::Text(subscribe.to_string().into()))
        .await
        .expect("subscribe sent");
    actix_rt::time::sleep(Duration::from_millis(200)).await;
    let sim = app.sim(key, 7001).await;

    // 30 000 ticks a second apart: a wave whose EMA crossings make the strategy trade both ways.
    const TICKS: i64 = 30_000;
    for i in 0..TICKS {
        let mid = 1.1 + 0.002 * ((i as f64) / 900.0).sin();
        sim.tick(tick(
            "EURUSD",
            T0 + i * 1_000,
            &format!("{mid:.5}"),
            &format!("{:.5}", mid + 0.00002),
        ));
    }
    let last_bid = format!("{:.5}", 1.1 + 0.002 * (((TICKS - 1) as f64) / 900.0).sin());
    let last_ms = T0 + (TICKS - 1) * 1_000;
    let t = app.runtime.tenant("acme").expect("tenant");
    for _ in 0..12_000 {
        let done = t.quotes.read().values().any(|q| q.time_msc == last_ms);
        if done {
            break;
        }
        actix_rt::time::sleep(Duration::from_millis(10)).await;
    }
    // Settled: every order final and no new deal for 300 ms (the last ticks' bar may still make an order
    // after a first look finds everything final, on a loaded machine).
    let mut snap = app
        .wait_portfolio(
            "acme",
            "the strategy's fills while the slow client read nothing",
            |p| p.deals.len() >= 4 && p.orders.iter().all(|o| o.status.is_final()),
        )
        .await;
    loop {
        actix_rt::time::sleep(Duration::from_millis(300)).await;
        let now = app
            .wait_portfolio("acme", "every order final", |p| {
                p.orders.iter().all(|o| o.status.is_final())
            })
            .await;
        if now.deals.len() == snap.deals.len() {
            break;
        }
        snap = now;
    }
    assert!(
        t.quotes.read().values().any(|q| q.time_msc == last_ms),
        "every tick was handled while the slow client read nothing"
    );
    let deals: Vec<u64> = snap.deals.iter().map(|d| d.ticket).collect();

    // Now the slow client reads: the latest tick, every fill, and far fewer tick frames than ticks.
    let mut frames = Vec::new();
    let mut fills = Vec::new();
    let mut ticks = 0usize;
    let mut latest = String::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while fills.len() < deals.len() || latest != last_bid {
        let frame = match tokio::time::timeout_at(deadline, slow.next()).await {
            Ok(Some(Ok(ws::Frame::Text(bytes)))) => {
                serde_json::from_slice::<Value>(&bytes).expect("json")
            }
            Ok(Some(Ok(_))) => continue,
            other => panic!(
                "the slow client stopped receiving ({:?}) with {} of {} fills, latest bid {latest}",
                other.map(|o| o.map(|r| r.map(|_| ()))),
                fills.len(),
                deals.len()
            ),
        };
        match (frame["type"].as_str(), frame["channel"].as_str()) {
            (Some("update"), Some("fills")) => {
                fills.push(frame["data"]["ticket"].as_u64().expect("ticket"))
            }
            (Some("update"), Some("ticks:EURUSD")) => {
                ticks += 1;
                latest = frame["data"]["bid"].as_str().unwrap_or_default().to_owned();
            }
            _ => {}
        }
        frames.push(frame);
    }
    assert_eq!(fills, deals, "every fill, in order, none twice");
    assert_consecutive(&frames);
    assert!(
        ticks < TICKS as usize / 2,
        "ticks were conflated for the slow client: {ticks} frames for {TICKS} ticks"
    );
    eprintln!(
        "slow client: {ticks} tick frames for {TICKS} ticks, {} fills",
        fills.len()
    );
    sim.stop().await.expect("sim stops");
    app.shutdown().await;
}

#[actix_rt::test]
async fn a_client_of_one_tenant_sees_nothing_of_another() {
    let (acme_key, beta_key) = ("trk_client04_acme-secret", "trk_client05_beta-secret");
    let app = spawn_app_with(&[]).await;
    app.add_tenant(tenant("acme", acme_key)).await;
    app.add_tenant(tenant("beta", beta_key)).await;
    let mut beta = with_key(&app, beta_key).await;
    let welcome = beta.until("welcome", |f| f["type"] == "welcome").await;
    assert_eq!(welcome["tenant"], "beta");
    beta.subscribe(&[
        "fills",
        "orders",
        "positions",
        "ticks:EURUSD",
        "supervision",
        "risk",
    ])
    .await;

    let sim = app.sim(acme_key, 7001).await;
    rising(&sim, 4);
    app.wait_portfolio("acme", "acme's fill", |p| p.deals.len() == 1)
        .await;
    let mut acme = with_key(&app, acme_key).await;
    acme.until("acme's welcome", |f| f["type"] == "welcome")
        .await;
    acme.send(json!({"op": "kill_switch", "id": "k", "on": true}));
    acme.until("acme's kill switch", |f| f["id"] == "k").await;
    actix_rt::time::sleep(Duration::from_millis(500)).await;
    while let Ok(frame) = beta.rx.try_recv() {
        beta.seen.push(frame);
    }
    let updates: Vec<&Value> = beta.seen.iter().filter(|f| f["type"] == "update").collect();
    assert!(updates.is_empty(), "beta saw acme's events: {updates:?}");

    // Naming the other tenant is refused before the upgrade, as in the HTTP API (404: not revealed).
    let other = awc::Client::new()
        .ws(format!(
            "ws://127.0.0.1:{}/ws/v1/client?tenant=acme",
            app.port
        ))
        .header("X-API-Key", beta_key)
        .connect()
        .await;
    assert!(
        matches!(other, Err(awc::error::WsClientError::InvalidResponseStatus(s)) if s.as_u16() == 404),
        "{:?}",
        other.err()
    );
    sim.stop().await.expect("sim stops");
    app.shutdown().await;
}

#[actix_rt::test]
async fn a_browser_ticket_opens_one_connection_with_its_creators_rights() {
    let (app, root) = crate::helpers::spawn_admin_app(&[]).await;
    crate::helpers::create_tenant(&app, &root, "acme", "professional").await;
    let (_, trader) =
        crate::helpers::create_user(&app, &root, "acme", "t@acme.test", "trader").await;
    let (_, viewer) =
        crate::helpers::create_user(&app, &root, "acme", "v@acme.test", "viewer").await;
    let ticket = |token: String, body: Value| {
        let app = &app;
        async move {
            app.expect(201, "POST", "/api/v1/ws-tickets", Some(&token), Some(&body))
                .await["ticket"]
                .as_str()
                .expect("ticket")
                .to_owned()
        }
    };
    let url = |t: &str| format!("ws://127.0.0.1:{}/ws/v1/client?ticket={t}", app.port);

    let t1 = ticket(trader.clone(), json!({})).await;
    let mut c = connect(url(&t1), None).await;
    let welcome = c.until("welcome", |f| f["type"] == "welcome").await;
    assert_eq!(
        (welcome["tenant"].as_str(), welcome["can_trade"].as_bool()),
        (Some("acme"), Some(true))
    );
    assert!(
        welcome["expires_ms"].as_i64().is_some(),
        "a user's connection ends with its token"
    );
    let again = awc::Client::new().ws(url(&t1)).connect().await;
    assert!(
        matches!(again, Err(awc::error::WsClientError::InvalidResponseStatus(s)) if s.as_u16() == 401),
        "a ticket opens one connection: {:?}",
        again.err()
    );

    let t2 = ticket(viewer, json!({})).await;
    let mut v = connect(url(&t2), None).await;
    let welcome = v.until("welcome", |f| f["type"] == "welcome").await;
    assert_eq!(welcome["can_trade"], false);
    let refused = v.call("k", json!({"op": "kill_switch", "on": true})).await;
    assert_eq!(
        (refused["type"].as_str(), refused["code"].as_str()),
        (Some("refused"), Some("forbidden"))
    );

    // A platform administrator names the tenant; a tenant's user cannot name another.
    let t3 = ticket(root.clone(), json!({"tenant": "acme"})).await;
    let mut r = connect(url(&t3), None).await;
    assert_eq!(
        r.until("welcome", |f| f["type"] == "welcome").await["tenant"],
        "acme"
    );
    app.expect(
        404,
        "POST",
        "/api/v1/ws-tickets",
        Some(&trader),
        Some(&json!({"tenant": "other"})),
    )
    .await;
    app.expect(
        400,
        "POST",
        "/api/v1/ws-tickets",
        Some(&root),
        Some(&json!({})),
    )
    .await;
    let forged = awc::Client::new().ws(url("wst_forged")).connect().await;
    assert!(
        matches!(forged, Err(awc::error::WsClientError::InvalidResponseStatus(s)) if s.as_u16() == 401)
    );
    app.shutdown().await;
}

#[actix_rt::test]
async fn a_users_client_stream_closes_when_its_access_token_expires() {
    let (app, root) =
        crate::helpers::spawn_admin_app(&[("TRELLIS__SECURITY__ACCESS_TTL_SECS", "2")]).await;
    crate::helpers::create_tenant(&app, &root, "acme", "basic").await;
    let (_, viewer) =
        crate::helpers::create_user(&app, &root, "acme", "v@acme.test", "viewer").await;
    let mut c = connect(
        format!("ws://127.0.0.1:{}/ws/v1/client", app.port),
        Some(("Authorization", format!("Bearer {viewer}"))),
    )
    .await;
    c.subscribe(&["risk"]).await;
    let closed = c.until("the close", |f| f["type"] == "closed").await;
    assert_eq!(closed["code"], 1008, "{closed}");
    assert_eq!(closed["reason"], "access token expired");
    app.shutdown().await;
}

#[actix_rt::test]
async fn an_open_stream_closes_when_its_api_key_is_revoked() {
    let (app, root) = crate::helpers::spawn_admin_app(&[]).await;
    crate::helpers::create_tenant(&app, &root, "acme", "basic").await;
    let (id, secret) = crate::helpers::create_key(&app, &root, "acme", &["read"]).await;
    let mut c = connect(
        format!("ws://127.0.0.1:{}/ws/v1/client", app.port),
        Some(("X-API-Key", secret)),
    )
    .await;
    c.subscribe(&["risk"]).await;
    app.expect(
        200,
        "DELETE",
        &format!("/api/v1/tenants/acme/api-keys/{id}"),
        Some(&root),
        None,
    )
    .await;
    let closed = c.until("the close", |f| f["type"] == "closed").await;
    assert_eq!(closed["code"], 1008, "{closed}");
    assert!(
        closed["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("revoked"),
        "{closed}"
    );
    app.shutdown().await;
}
