//! The hot cache on Redis: the latest tick per symbol and the position snapshot are there for readers; when
//! Redis goes away trading continues, `/ready` says so, and the cache catches up when it is back.

use std::time::Duration;

use redis::AsyncCommands;

use crate::helpers::{rising, spawn_app_with, tenant, tick, MINUTE, T0};

async fn get(url: &str, key: &str) -> Option<serde_json::Value> {
    let client = redis::Client::open(url).ok()?;
    let mut conn = client.get_multiplexed_async_connection().await.ok()?;
    let value: Option<String> = conn.get(key).await.ok()?;
    value.and_then(|v| serde_json::from_str(&v).ok())
}

async fn wait_for_key(
    url: &str,
    key: &str,
    done: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let mut last = serde_json::Value::Null;
    for _ in 0..200 {
        if let Some(v) = get(url, key).await {
            if done(&v) {
                return v;
            }
            last = v;
        }
        actix_rt::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("{key} never became what was expected; last {last}");
}

#[actix_rt::test]
async fn the_cache_holds_the_latest_tick_and_the_positions_of_a_tenant() {
    let Some(url) = crate::helpers::service_url("TRELLIS_TEST_REDIS_URL") else {
        return;
    };
    let id = format!("c{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let key = format!("trk_{id}_redis-cache-secret");
    let app = spawn_app_with(&[("TRELLIS__STORAGE__REDIS_URL", &url)]).await;
    app.add_tenant(tenant(&id, &key)).await;
    let sim = app.sim(&key, 7001).await;

    rising(&sim, 4);
    app.wait_portfolio(&id, "the fill", |p| p.deals.len() == 1)
        .await;

    let last = wait_for_key(&url, &format!("trellis:{id}:tick:EURUSD"), |v| {
        v["time_msc"] == T0 + 3 * MINUTE
    })
    .await;
    assert_eq!(last["bid"], "1.1030");
    let positions = wait_for_key(&url, &format!("trellis:{id}:positions"), |v| {
        v.as_array().is_some_and(|a| a.len() == 1)
    })
    .await;
    assert_eq!(positions[0]["symbol"], "EURUSD");
    assert_eq!(positions[0]["volume"], "0.1");
    sim.stop().await.expect("sim stops");
    app.shutdown().await;
}

fn start_redis(port: u16, dir: &std::path::Path) {
    let status = std::process::Command::new("redis-server")
        .args([
            "--bind",
            "127.0.0.1",
            "--port",
            &port.to_string(),
            "--daemonize",
            "yes",
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .arg("--dir")
        .arg(dir)
        .arg("--pidfile")
        .arg(dir.join("redis.pid"))
        .status()
        .expect("redis-server runs");
    assert!(status.success());
}

fn stop_redis(port: u16) {
    let _ = std::process::Command::new("redis-cli")
        .args(["-p", &port.to_string(), "shutdown", "nosave"])
        .status();
}

#[actix_rt::test]
async fn trading_continues_while_redis_is_away_and_the_cache_catches_up_when_it_is_back() {
    if crate::helpers::service_url("TRELLIS_TEST_REDIS_URL").is_none() {
        return;
    }
    // Arrange: a Redis of this test's own.
    let dir = tempfile::tempdir().expect("dir");
    let port = crate::helpers::free_port();
    start_redis(port, dir.path());
    let url = format!("redis://127.0.0.1:{port}");
    let app = spawn_app_with(&[("TRELLIS__STORAGE__REDIS_URL", &url)]).await;
    app.wait_ready().await;
    app.add_tenant(tenant("acme", "trk_acme0001_redis-down-secret"))
        .await;
    let sim = app.sim("trk_acme0001_redis-down-secret", 7001).await;
    rising(&sim, 4);
    app.wait_portfolio("acme", "the first fill", |p| p.deals.len() == 1)
        .await;

    // Act: Redis goes away; the strategy reverses meanwhile.
    stop_redis(port);
    sim.tick(tick("EURUSD", T0 + 4 * MINUTE, "1.0990", "1.0992"));
    sim.tick(tick("EURUSD", T0 + 5 * MINUTE, "1.0950", "1.0952"));
    let traded = app
        .wait_portfolio("acme", "the fill while Redis is down", |p| {
            p.deals.len() == 2
        })
        .await;
    let mut not_ready = serde_json::Value::Null;
    for _ in 0..100 {
        let (status, body) = app.get("/ready").await;
        if status == 503 {
            not_ready = body;
            break;
        }
        actix_rt::time::sleep(Duration::from_millis(50)).await;
    }
    start_redis(port, dir.path());
    sim.tick(tick("EURUSD", T0 + 6 * MINUTE, "1.0940", "1.0942"));

    // Assert
    assert_eq!(
        traded.positions[0].position.side,
        trellis::domain::Side::Sell,
        "trading went on"
    );
    assert!(
        not_ready["failing"].to_string().contains("cache"),
        "{not_ready}"
    );
    let last = wait_for_key(&url, "trellis:acme:tick:EURUSD", |v| {
        v["time_msc"] == T0 + 6 * MINUTE
    })
    .await;
    assert_eq!(last["ask"], "1.0942");
    let positions = wait_for_key(&url, "trellis:acme:positions", |v| v[0]["side"] == "sell").await;
    assert_eq!(positions[0]["volume"], "0.1");
    sim.stop().await.expect("sim stops");
    app.shutdown().await;
    stop_redis(port);
}

#[actix_rt::test]
async fn the_hot_log_tier_keeps_a_tenants_trade_log_in_redis() {
    let Some(url) = crate::helpers::service_url("TRELLIS_TEST_REDIS_URL") else {
        return;
    };
    let id = format!("h{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let key = format!("trk_{id}_hot-log-secret");
    let app = spawn_app_with(&[("TRELLIS__STORAGE__REDIS_URL", &url)]).await;
    app.add_tenant(tenant(&id, &key)).await;
    let sim = app.sim(&key, 7001).await;

    rising(&sim, 4);
    app.wait_portfolio(&id, "the fill", |p| p.deals.len() == 1)
        .await;

    let mut entries = Vec::new();
    for _ in 0..200 {
        entries = crate::helpers::hot_log(&app, &id).await;
        if entries.iter().any(|e| e.kind == "fill") {
            break;
        }
        actix_rt::time::sleep(Duration::from_millis(25)).await;
    }
    let store = app
        .runtime
        .logs
        .as_ref()
        .and_then(|l| l.store())
        .expect("log tiers open");
    assert_eq!(
        store.hot.store(),
        "redis",
        "the hot tier is Redis when it is configured"
    );
    let kinds: Vec<String> = entries.iter().map(|e| e.kind.clone()).collect();
    // Risk and position events are logged too; of orders and fills, the order comes first.
    assert_eq!(
        kinds
            .iter()
            .find(|k| *k == "order" || *k == "fill")
            .map(String::as_str),
        Some("order"),
        "{kinds:?}"
    );
    assert!(kinds.iter().any(|k| k == "fill"), "{kinds:?}");
    sim.stop().await.expect("sim stops");
    app.shutdown().await;
}

#[actix_rt::test]
async fn audit_entries_reach_the_hot_log_tier_too() {
    let Some(url) = crate::helpers::service_url("TRELLIS_TEST_REDIS_URL") else {
        return;
    };
    let id = format!("a{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let (app, root) =
        crate::helpers::spawn_admin_app(&[("TRELLIS__STORAGE__REDIS_URL", &url)]).await;
    crate::helpers::create_tenant(&app, &root, &id, "basic").await;
    crate::helpers::create_user(&app, &root, &id, &format!("u@{id}.test"), "viewer").await;

    let mut actions: Vec<String> = Vec::new();
    for _ in 0..200 {
        actions = crate::helpers::hot_log(&app, &id)
            .await
            .iter()
            .filter(|e| e.kind == "audit")
            .filter_map(|e| serde_json::from_str::<serde_json::Value>(&e.data).ok())
            .filter_map(|v| v["entry"]["action"].as_str().map(str::to_owned))
            .collect();
        if actions.iter().any(|a| a == "login.ok") {
            break;
        }
        actix_rt::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(actions, vec!["user.created", "login.ok"], "in chain order");
    app.shutdown().await;
}
