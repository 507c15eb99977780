//! Background tasks in the tree: each one, made to panic through the fault hook, is recorded as failed,
//! restarted, and keeps doing its job — nothing it had taken is lost.
//!
//! The fault hook is one per process and the tests of this binary run side by side, so another app's task of
//! the same name may take an injected fault first: each test injects again until its own app's task took one.

use std::time::Duration;

use trellis::runtime::events::EventKind;
use trellis::runtime::task::inject_fault;

use crate::helpers::{spawn_app, spawn_app_with, tenant, TestApp};

fn count(app: &TestApp, kind: EventKind, task: &str) -> usize {
    app.runtime
        .events
        .snapshot(None)
        .iter()
        .filter(|e| e.kind == kind && e.child == task && e.supervisor == "tasks")
        .count()
}

/// Injects a fault into `task` (and runs `poke` to make the task reach its fault point) until this app's task
/// has failed and been restarted.
async fn fail_once(app: &TestApp, task: &str, mut poke: impl FnMut()) {
    for _ in 0..20 {
        inject_fault(task);
        poke();
        for _ in 0..100 {
            if count(app, EventKind::Restarted, task) > 0 {
                return;
            }
            actix_rt::time::sleep(Duration::from_millis(20)).await;
        }
    }
    panic!("`{task}` never took the injected fault");
}

#[actix_rt::test]
async fn the_audit_writer_restarts_after_a_panic_and_writes_the_entry_it_held() {
    let app = spawn_app().await;
    let t = app
        .add_tenant(tenant("acme", "trk_acme0001_tasks-secret"))
        .await;

    let mut n = 0;
    fail_once(&app, "audit.writer", || {
        n += 1;
        t.audit("drill.entry", "test", serde_json::json!({ "n": n }));
    })
    .await;
    let stored = app.audited("acme", "drill.entry", n).await.len();

    assert!(count(&app, EventKind::Failed, "audit.writer") >= 1);
    assert_eq!(
        stored, n,
        "every entry, including the one held during the panic, is written"
    );
    t.audit("drill.after", "test", serde_json::json!({}));
    let after = app.audited("acme", "drill.after", 1).await.len();
    assert_eq!(after, 1, "the restarted writer keeps writing");
    app.shutdown().await;
}

#[actix_rt::test]
async fn the_security_refresh_restarts_after_a_panic_and_keeps_refreshing() {
    let app = spawn_app_with(&[("TRELLIS__SECURITY__CACHE_REFRESH_MS", "100")]).await;

    fail_once(&app, "security.refresh", || {}).await;
    // Still refreshing: the next injected fault is reached again by the restarted loop.
    let restarted = count(&app, EventKind::Restarted, "security.refresh");
    for _ in 0..20 {
        inject_fault("security.refresh");
        for _ in 0..50 {
            if count(&app, EventKind::Restarted, "security.refresh") > restarted {
                break;
            }
            actix_rt::time::sleep(Duration::from_millis(20)).await;
        }
        if count(&app, EventKind::Restarted, "security.refresh") > restarted {
            break;
        }
    }

    assert!(count(&app, EventKind::Restarted, "security.refresh") > restarted);
    assert!(app
        .runtime
        .events
        .snapshot(None)
        .iter()
        .filter(|e| e.child == "security.refresh" && e.kind == EventKind::Failed)
        .all(|e| e.reason.contains("injected fault")));
    app.shutdown().await;
}

#[actix_rt::test]
async fn the_log_writer_and_the_event_publisher_restart_after_a_panic_and_lose_nothing() {
    let Some(url) = crate::helpers::service_url("TRELLIS_TEST_REDIS_URL") else {
        return;
    };
    let id = format!("k{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let app = spawn_app_with(&[("TRELLIS__STORAGE__REDIS_URL", &url)]).await;
    let t = app
        .add_tenant(tenant(&id, "trk_tasks001_hot-log-secret"))
        .await;
    let client = redis::Client::open(url.as_str()).expect("client");
    let mut pubsub = client.get_async_pubsub().await.expect("pubsub");
    pubsub
        .subscribe(t.bus.redis_channel())
        .await
        .expect("subscribe");
    let mut published = pubsub.into_on_message();

    // The writer takes a fault while lines wait in its buffer; the publisher while it holds an event.
    let mut n = 0;
    let publish = |n: i32| {
        t.bus.publish(trellis::runtime::bus::TenantEvent {
            tenant: id.clone(),
            // A kind no actor publishes in this test; the drill's number marks its events.
            kind: trellis::domain::events::EventKind::Tenant,
            data: serde_json::json!({ "drill": n }),
            local: true,
        })
    };
    fail_once(&app, "log.writer", || {
        n += 1;
        publish(n);
    })
    .await;
    fail_once(&app, "bus.publisher", || {
        n += 1;
        publish(n);
    })
    .await;
    n += 1;
    publish(n);

    // Every event reached the hot tier, in order.
    let mut drills: Vec<i64> = Vec::new();
    for _ in 0..200 {
        drills = crate::helpers::hot_log(&app, &id)
            .await
            .iter()
            .filter(|e| e.kind == "tenant")
            .filter_map(|e| serde_json::from_str::<serde_json::Value>(&e.data).ok())
            .filter_map(|v| v["drill"].as_i64())
            .collect();
        if drills.len() as i32 >= n {
            break;
        }
        actix_rt::time::sleep(Duration::from_millis(25)).await;
    }
    // And every event was published to the other nodes, the one held during the panic too.
    let mut seen: Vec<i64> = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while (seen.len() as i32) < n {
        let Ok(Some(msg)) =
            tokio::time::timeout_at(deadline, futures_util::StreamExt::next(&mut published)).await
        else {
            break;
        };
        let payload: String = msg.get_payload().unwrap_or_default();
        let v: serde_json::Value = serde_json::from_str(&payload).unwrap_or_default();
        if v["event"]["tenant"] == id.as_str() {
            if let Some(k) = v["event"]["data"]["drill"].as_i64() {
                seen.push(k);
            }
        }
    }

    let all: Vec<i64> = (1..=n as i64).collect();
    assert_eq!(drills, all, "hot tier");
    assert_eq!(seen, all, "published");
    assert!(count(&app, EventKind::Failed, "log.writer") >= 1);
    assert!(count(&app, EventKind::Failed, "bus.publisher") >= 1);
    app.shutdown().await;
}

#[actix_rt::test]
async fn a_bridge_connection_whose_task_panics_is_closed_and_the_terminal_resumes_with_nothing_lost_or_repeated(
) {
    use crate::helpers::{rising, tick, MINUTE, T0};

    // Arrange: a tenant trading EURUSD with ema_cross 2/3; the terminal has bought 0.1.
    let app = spawn_app().await;
    app.add_tenant(tenant("conn", "trk_conn0001_tasks-secret"))
        .await;
    let sim = app.sim("trk_conn0001_tasks-secret", 7601).await;
    rising(&sim, 4);
    app.wait_portfolio("conn", "the buy", |p| p.deals.len() == 1)
        .await;

    // Act: the connection's task panics on the next frame it reads (a fault armed for this account only).
    let failed = |app: &TestApp| {
        app.runtime
            .events
            .snapshot(None)
            .into_iter()
            .filter(|e| e.child == "ws.mt5" && e.kind == EventKind::Failed)
            .collect::<Vec<_>>()
    };
    inject_fault("ws.mt5:7601");
    crate::helpers::wait_for("the connection task to take the fault", || {
        !failed(&app).is_empty()
    })
    .await;
    crate::helpers::wait_for("the terminal to reconnect", || {
        let s = sim.stats();
        s.connected && s.connects >= 2
    })
    .await;
    // Prices fall: the strategy turns short, through the new connection.
    for m in 4..10i64 {
        let bid = 1.1030 - 0.0010 * (m - 3) as f64;
        sim.tick(tick(
            "EURUSD",
            T0 + m * MINUTE,
            &format!("{bid:.4}"),
            &format!("{:.4}", bid + 0.0002),
        ));
    }
    let snap = app
        .wait_portfolio("conn", "the sell after the reconnect", |p| {
            p.deals.len() >= 2 && p.orders.iter().all(|o| o.status.is_final())
        })
        .await;

    // Assert: the failure was recorded with its reason, the close came with a code, and trellis's fills are
    // exactly the terminal's deals.
    let events = failed(&app);
    assert!(events[0].reason.contains("injected fault"), "{events:?}");
    let stats = sim.stats();
    assert!(stats.last_close.is_some(), "the bridge was told: {stats:?}");
    let mut ours: Vec<u64> = snap.deals.iter().map(|d| d.ticket).collect();
    let mut theirs: Vec<u64> = {
        let broker = sim.broker.lock().expect("broker");
        broker.deals().iter().map(|d| d.ticket).collect()
    };
    ours.sort_unstable();
    theirs.sort_unstable();
    assert_eq!(
        ours, theirs,
        "every terminal deal booked once, nothing else"
    );
    assert!(snap.deals.len() >= 2);
    sim.stop().await.expect("stop");
    app.shutdown().await;
}

#[actix_rt::test]
async fn a_portfolio_that_dies_holding_unstored_frames_gets_them_again_from_the_bridge_and_books_them_once(
) {
    use crate::helpers::rising;

    // Arrange: a tenant trading EURUSD; the portfolio will panic at its next queued write (the order's
    // result or its fill), holding frames the session has not acknowledged.
    let app = spawn_app().await;
    app.add_tenant(tenant("resync", "trk_resync01_tasks-secret"))
        .await;
    let sim = app.sim("trk_resync01_tasks-secret", 7611).await;
    inject_fault("portfolio.store:resync");

    // Act: the strategy buys; the portfolio dies storing what came back.
    rising(&sim, 4);
    let failed = |app: &TestApp| {
        app.runtime
            .events
            .snapshot(Some("resync"))
            .into_iter()
            .filter(|e| e.child == "portfolio" && e.kind == EventKind::Failed)
            .count()
    };
    crate::helpers::wait_for("the portfolio to die", || failed(&app) > 0).await;
    crate::helpers::wait_for("the bridge to resume on a new connection", || {
        let s = sim.stats();
        s.connected && s.connects >= 2
    })
    .await;
    let snap = app
        .wait_portfolio("resync", "the fill booked by the new portfolio", |p| {
            p.deals.len() == 1 && p.orders.iter().all(|o| o.status.is_final())
        })
        .await;
    actix_rt::time::sleep(Duration::from_millis(300)).await;
    let again = app.portfolio("resync").await;

    // Assert: the session asked the bridge to resynchronise, and the books equal the terminal's deals.
    let stats = sim.stats();
    assert!(
        stats.errors.iter().any(|(code, _)| code == "shutting_down"),
        "{:?}",
        stats.errors
    );
    let theirs: Vec<u64> = {
        let broker = sim.broker.lock().expect("broker");
        broker.deals().iter().map(|d| d.ticket).collect()
    };
    let ours: Vec<u64> = again.deals.iter().map(|d| d.ticket).collect();
    assert_eq!(ours, theirs, "each terminal deal booked exactly once");
    assert_eq!(snap.positions.len(), 1);
    assert_eq!(
        snap.positions[0].position.volume,
        rust_decimal::Decimal::new(1, 1)
    );
    sim.stop().await.expect("stop");
    app.shutdown().await;
}
