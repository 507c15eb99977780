//! Fault isolation: a strategy that panics is restarted without touching its tenant's other strategies or
//! other tenants; one that keeps failing is disabled on its own budget, its position following its policy.

use std::time::Duration;

use rust_decimal::Decimal;
use trellis::domain::Bar;
use trellis::runtime::events::EventKind;
use trellis::strategies::{ParamError, Params, Strategy};

use crate::helpers::{ema, spawn_app, tenant, tick, MINUTE, T0};

fn assert_nothing_escalated(events: &[trellis::runtime::events::SupervisionEvent]) {
    assert!(
        events
            .iter()
            .all(|e| e.kind != EventKind::Escalated && e.kind != EventKind::GaveUp),
        "nothing escalated: {events:#?}"
    );
}

/// Panics on every 10th bar (minute index ending in 9), otherwise has no opinion.
struct PoisonedEveryTenth;

impl Strategy for PoisonedEveryTenth {
    fn on_bar(&mut self, bar: &Bar) -> Option<Decimal> {
        if (bar.open_time_ms / 60_000) % 10 == 9 {
            panic!("poison bar at {}", bar.open_time_ms);
        }
        None
    }
}

fn poisoned(_: &Params, _: Decimal) -> Result<Box<dyn Strategy>, ParamError> {
    Ok(Box::new(PoisonedEveryTenth))
}

#[actix_rt::test]
async fn a_strategy_that_panics_every_tenth_bar_is_restarted_while_other_strategies_and_tenants_trade_on(
) {
    // Arrange: tenant `wobbly` runs the poisoned strategy beside an ema_cross; tenant `steady` runs the
    // same ema_cross alone. Both get the same ticks from their own terminals.
    let app = spawn_app().await;
    app.runtime.strategies.register("poisoned", poisoned);
    let mut wobbly = tenant("wobbly", "trk_wobbly01_isolation-secret");
    let mut flaky = ema("flaky", "EURUSD");
    flaky.kind = "poisoned".into();
    flaky.params.clear();
    wobbly.strategies.push(flaky);
    app.add_tenant(wobbly).await;
    app.add_tenant(tenant("steady", "trk_steady01_isolation-secret"))
        .await;
    let sim_w = app.sim("trk_wobbly01_isolation-secret", 8001).await;
    let sim_s = app.sim("trk_steady01_isolation-secret", 9001).await;

    // Act: 35 one-minute bars of a zig-zag; minutes 5, 15 and 25 are poison (T0 is 4 minutes past a ten).
    for m in 0..=35i64 {
        let wave = [0, 4, 8, 12, 8, 4, 0, -4][(m % 8) as usize];
        let bid = Decimal::new(110_000 + wave * 10, 5);
        let t = tick(
            "EURUSD",
            T0 + m * MINUTE,
            &bid.to_string(),
            &(bid + Decimal::new(2, 5)).to_string(),
        );
        sim_w.tick(t.clone());
        sim_s.tick(t);
        // Let both tenants answer the bar this tick closed before the next.
        if m > 0 {
            for who in ["wobbly", "steady"] {
                app.settle(who, "ema-eurusd", T0 + (m - 1) * MINUTE).await;
            }
        }
    }
    actix_rt::time::sleep(Duration::from_millis(300)).await;

    // Assert
    let events = app.runtime.events.snapshot(None);
    let failed: Vec<_> = events
        .iter()
        .filter(|e| e.kind == EventKind::Failed && e.child == "strategy:flaky")
        .collect();
    let restarted = events
        .iter()
        .filter(|e| e.kind == EventKind::Restarted && e.child == "strategy:flaky")
        .count();
    assert_eq!(
        failed.len(),
        3,
        "bars 9, 19 and 29 of each ten: {events:#?}"
    );
    assert!(failed
        .iter()
        .all(|e| e.reason.contains("poison bar") && e.tenant.as_deref() == Some("wobbly")));
    assert_eq!(restarted, 3);
    assert_nothing_escalated(&events);
    assert!(events
        .iter()
        .filter(|e| e.tenant.as_deref() == Some("steady"))
        .all(|e| e.kind == EventKind::Started));
    let steady = app.portfolio("steady").await;
    let wobbly = app.portfolio("wobbly").await;
    assert!(
        steady.orders.len() >= 4,
        "steady traded: {:?}",
        steady.orders
    );
    let sides = |p: &trellis::actors::messages::PortfolioSnapshot| {
        p.orders
            .iter()
            .map(|o| (o.side, o.volume, o.status))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        sides(&wobbly),
        sides(&steady),
        "the wobbly tenant's ema traded exactly like the steady one"
    );
    sim_w.stop().await.expect("stop");
    sim_s.stop().await.expect("stop");
    app.shutdown().await;
}

/// Wants 0.1 lots long on bars that opened before T0 + 2 minutes, then panics on every later bar.
struct LongThenCrash;

impl Strategy for LongThenCrash {
    fn on_bar(&mut self, bar: &Bar) -> Option<Decimal> {
        if bar.open_time_ms >= T0 + 2 * MINUTE {
            panic!("poison bar at {}", bar.open_time_ms);
        }
        Some(Decimal::new(1, 1))
    }
}

fn long_then_crash(_: &Params, _: Decimal) -> Result<Box<dyn Strategy>, ParamError> {
    Ok(Box::new(LongThenCrash))
}

fn supervision_count(app: &crate::helpers::TestApp, kind: EventKind, child: &str) -> usize {
    app.runtime
        .events
        .snapshot(None)
        .iter()
        .filter(|e| e.kind == kind && e.child == child && e.tenant.as_deref() == Some("crashy"))
        .count()
}

#[actix_rt::test]
async fn a_strategy_failing_on_every_bar_is_disabled_alone_its_position_follows_its_policy_and_the_api_re_enables_it(
) {
    use crate::helpers::{create_key, create_tenant, spawn_admin_app};
    use serde_json::json;

    // Arrange: through the API, tenant `crashy` runs an ema_cross on EURUSD and two strategies that go long
    // GBPUSD and then panic on every bar: `hold-me` (on_failure hold) and `flat-me` (on_failure flatten).
    let (app, root) = spawn_admin_app(&[]).await;
    app.runtime
        .strategies
        .register("long_then_crash", long_then_crash);
    create_tenant(&app, &root, "crashy", "professional").await;
    let base = "/api/v1/tenants/crashy/strategies";
    let strategy = |id: &str, kind: &str, symbol: &str, on_failure: &str| {
        json!({"id": id, "kind": kind, "symbol": symbol, "timeframe": "M1", "volume": 0.1,
               "params": if kind == "ema_cross" { json!({"fast": 2, "slow": 3}) } else { json!({}) },
               "on_failure": on_failure})
    };
    for body in [
        strategy("ema-eurusd", "ema_cross", "EURUSD", "hold"),
        strategy("hold-me", "long_then_crash", "GBPUSD", "hold"),
        strategy("flat-me", "long_then_crash", "GBPUSD", "flatten"),
    ] {
        app.expect(201, "POST", base, Some(&root), Some(&body))
            .await;
    }
    let (_, key) = create_key(&app, &root, "crashy", &["market:write"]).await;
    let sim = app.sim(&key, 7301).await;
    for m in 0..2 {
        sim.tick(tick("GBPUSD", T0 + m * MINUTE, "1.2500", "1.2502"));
    }
    let p = app
        .wait_portfolio("crashy", "both longs", |p| p.deals.len() == 2)
        .await;
    assert!(p.deals.iter().all(|d| d.fill.symbol.as_str() == "GBPUSD"));

    // Act: every GBPUSD bar from minute 2 on is poison; one bar at a time, each failure restarted. (A bar
    // closes when the first tick of a later minute arrives.)
    sim.tick(tick("GBPUSD", T0 + 2 * MINUTE, "1.2500", "1.2502"));
    let mut m = 2;
    while supervision_count(&app, EventKind::Disabled, "strategy:hold-me") == 0 && m < 20 {
        let failed = supervision_count(&app, EventKind::Failed, "strategy:hold-me");
        sim.tick(tick("GBPUSD", T0 + (m + 1) * MINUTE, "1.2500", "1.2502"));
        crate::helpers::wait_for("the poison bar to fail the strategy", || {
            supervision_count(&app, EventKind::Failed, "strategy:hold-me") > failed
        })
        .await;
        actix_rt::time::sleep(Duration::from_millis(60)).await; // back to work after the back-off
        m += 1;
    }
    let snap = app
        .wait_portfolio("crashy", "flat-me flattened", |p| p.deals.len() == 3)
        .await;
    // Meanwhile the ema on EURUSD trades on.
    for (i, bid) in ["1.1000", "1.1010", "1.1020", "1.1030"].iter().enumerate() {
        let ask = format!("{}2", &bid[..5]);
        sim.tick(tick("EURUSD", T0 + (30 + i as i64) * MINUTE, bid, &ask));
    }
    let traded = app
        .wait_portfolio("crashy", "the ema's buy", |p| {
            p.deals.iter().any(|d| d.fill.symbol.as_str() == "EURUSD")
        })
        .await;

    // Assert: both disabled, nothing else touched.
    assert_eq!(
        supervision_count(&app, EventKind::Disabled, "strategy:hold-me"),
        1
    );
    assert_eq!(
        supervision_count(&app, EventKind::Disabled, "strategy:flat-me"),
        1
    );
    let events = app.runtime.events.snapshot(None);
    assert_nothing_escalated(&events);
    assert!(events
        .iter()
        .filter(|e| e.tenant.as_deref() == Some("crashy"))
        .filter(|e| !e.child.starts_with("strategy:hold-me")
            && !e.child.starts_with("strategy:flat-me"))
        .all(|e| e.kind == EventKind::Started));
    let stats = sim.stats();
    assert!(
        stats.connected && stats.connects == 1,
        "the MT5 session stayed up: {stats:?}"
    );
    let held = app
        .expect(200, "GET", &format!("{base}/hold-me"), Some(&root), None)
        .await;
    assert_eq!(held["state"], "failed", "{held}");
    assert!(
        held["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("poison bar")),
        "{held}"
    );
    // hold keeps its 0.1; flatten sold its 0.1 back.
    let gbp: Decimal = snap
        .positions
        .iter()
        .filter(|p| p.position.symbol.as_str() == "GBPUSD")
        .map(|p| p.position.signed_volume())
        .sum();
    assert_eq!(gbp, Decimal::new(1, 1));
    let flattening = &snap.deals[2];
    assert_eq!(flattening.strategy_id.as_deref(), Some("flat-me"));
    assert_eq!(flattening.fill.side, trellis::domain::Side::Sell);
    assert!(traded
        .orders
        .iter()
        .any(|o| o.strategy_id.as_deref() == Some("ema-eurusd")));
    let audited = app.audited("crashy", "strategy.disabled", 2).await;
    assert_eq!(audited.len(), 2, "{audited:?}");

    // Re-enabled through the API with a fresh budget.
    let started = app
        .expect(
            200,
            "POST",
            &format!("{base}/hold-me/start"),
            Some(&root),
            None,
        )
        .await;
    assert_eq!(started["state"], "running", "{started}");
    sim.stop().await.expect("stop");
    app.shutdown().await;
}

#[actix_rt::test]
async fn a_tenant_whose_risk_keeps_failing_is_marked_failed_and_restarts_through_the_api_with_its_positions_while_another_tenant_trades_on(
) {
    use crate::helpers::{create_key, create_tenant, rising, spawn_admin_app};
    use serde_json::json;
    use trellis::actors::messages::Crash;

    // Arrange: two tenants with an ema_cross each; `brittle` holds a position.
    let (app, root) = spawn_admin_app(&[]).await;
    let mut sims = Vec::new();
    for (id, login) in [("brittle", 7401), ("sturdy", 7402)] {
        create_tenant(&app, &root, id, "professional").await;
        let body = json!({"id": "ema-eurusd", "kind": "ema_cross", "symbol": "EURUSD", "timeframe": "M1",
                          "volume": 0.1, "params": {"fast": 2, "slow": 3}});
        app.expect(
            201,
            "POST",
            &format!("/api/v1/tenants/{id}/strategies"),
            Some(&root),
            Some(&body),
        )
        .await;
        let (_, key) = create_key(&app, &root, id, &["market:write"]).await;
        sims.push(app.sim(&key, login).await);
    }
    let (brittle_sim, sturdy_sim) = (&sims[0], &sims[1]);
    rising(brittle_sim, 4);
    let before = app
        .wait_portfolio("brittle", "brittle's position", |p| p.positions.len() == 1)
        .await;

    // Act: brittle's risk actor panics again and again (an injected fault), beyond the tenant's budget.
    let t = app.runtime.tenant("brittle").expect("brittle runs");
    let mut crashed: Vec<actix::Addr<trellis::actors::risk::Risk>> = Vec::new();
    for i in 0..8 {
        let mut risk = None;
        for _ in 0..200 {
            risk = t
                .risk
                .get()
                .filter(|r| r.connected() && !crashed.contains(r));
            if risk.is_some() || t.failure().is_some() {
                break;
            }
            actix_rt::time::sleep(Duration::from_millis(10)).await;
        }
        let Some(risk) = risk else { break };
        risk.do_send(Crash {
            reason: format!("drill {i}"),
        });
        crashed.push(risk);
    }
    let mut failed = serde_json::Value::Null;
    for _ in 0..200 {
        failed = app
            .expect(200, "GET", "/api/v1/tenants/brittle", Some(&root), None)
            .await;
        if failed["state"] == "failed" {
            break;
        }
        actix_rt::time::sleep(Duration::from_millis(20)).await;
    }
    // The other tenant trades on, and how soon is measured.
    let since = std::time::Instant::now();
    rising(sturdy_sim, 4);
    app.wait_portfolio("sturdy", "sturdy's buy", |p| p.deals.len() == 1)
        .await;
    eprintln!("sturdy traded {:?} after brittle failed", since.elapsed());
    let wrong = app
        .call("POST", "/api/v1/tenants/sturdy/restart", Some(&root), None)
        .await;
    let restarted = app
        .expect(
            200,
            "POST",
            "/api/v1/tenants/brittle/restart",
            Some(&root),
            None,
        )
        .await;
    let after = app
        .wait_portfolio("brittle", "the restored book", |p| !p.positions.is_empty())
        .await;
    crate::helpers::wait_for("brittle's terminal to reconnect", || {
        brittle_sim.stats().connected && brittle_sim.stats().connects >= 2
    })
    .await;
    // Its strategy continues where it was: its stored state, not a cold start (issue 36).
    let mut warm = serde_json::Value::Null;
    for _ in 0..200 {
        warm = app
            .expect(
                200,
                "GET",
                "/api/v1/tenants/brittle/strategies/ema-eurusd",
                Some(&root),
                None,
            )
            .await["warm_up"]
            .clone();
        if warm["state"] == "ready" {
            break;
        }
        actix_rt::time::sleep(Duration::from_millis(20)).await;
    }

    // Assert
    assert_eq!(
        (&warm["state"], &warm["warmed_by"], &warm["last_bar_ms"]),
        (
            &json!("ready"),
            &json!("snapshot"),
            &json!(crate::helpers::T0 + 2 * 60_000)
        ),
        "the strategy restored its state after the last bar it handled: {warm}"
    );
    assert_eq!(failed["state"], "failed", "{failed}");
    assert!(
        failed["failure"]
            .as_str()
            .is_some_and(|f| f.contains("restart intensity exceeded") && f.contains("`risk`")),
        "{failed}"
    );
    assert_eq!(
        wrong.status, 409,
        "a running tenant is not restarted: {:?}",
        wrong.body
    );
    assert_eq!(restarted["state"], "running", "{restarted}");
    assert_eq!(after.positions[0].position, before.positions[0].position);
    assert_eq!(after.deals, before.deals);
    let events = app.runtime.events.snapshot(None);
    assert!(events
        .iter()
        .filter(|e| e.tenant.as_deref() == Some("sturdy"))
        .all(|e| e.kind == EventKind::Started));
    for sim in sims {
        sim.stop().await.expect("stop");
    }
    app.shutdown().await;
}

#[actix_rt::test]
async fn state_changed_through_the_api_lives_in_its_owning_actor_and_survives_that_actors_restart()
{
    use crate::helpers::{create_key, create_tenant, rising, spawn_admin_app};
    use serde_json::json;
    use trellis::actors::messages::Crash;

    // Arrange: a tenant on the basic tier with no strategy and no limits.
    let (app, root) = spawn_admin_app(&[]).await;
    create_tenant(&app, &root, "owned", "basic").await;
    let (_, key) = create_key(&app, &root, "owned", &["market:write"]).await;
    let sim = app.sim(&key, 7501).await;

    // Act: change what `Risk` owns (tier, limits) and what `MarketData` owns (the routes) through the API,
    // then crash both owners once (within their budget) and wait for their replacements.
    app.expect(
        200,
        "PUT",
        "/api/v1/tenants/owned/tier",
        Some(&root),
        Some(&json!({"tier": "enterprise"})),
    )
    .await;
    app.expect(
        200,
        "PUT",
        "/api/v1/tenants/owned/risk",
        Some(&root),
        Some(&json!({"max_order_volume": 5, "allowed_symbols": ["EURUSD"]})),
    )
    .await;
    let body = json!({"id": "ema-eurusd", "kind": "ema_cross", "symbol": "EURUSD", "timeframe": "M1",
                      "volume": 0.1, "params": {"fast": 2, "slow": 3}});
    app.expect(
        201,
        "POST",
        "/api/v1/tenants/owned/strategies",
        Some(&root),
        Some(&body),
    )
    .await;
    let t = app.runtime.tenant("owned").expect("owned runs");
    let (risk, market_data) = (
        t.risk.get().expect("risk runs"),
        t.market_data.get().expect("market data runs"),
    );
    risk.do_send(Crash {
        reason: "owner drill".into(),
    });
    market_data.do_send(Crash {
        reason: "owner drill".into(),
    });
    crate::helpers::wait_for("both owners to be replaced", || {
        t.risk.get().is_some_and(|r| r.connected() && r != risk)
            && t.market_data
                .get()
                .is_some_and(|m| m.connected() && m != market_data)
    })
    .await;
    // The replacements trade: bars reach the strategy through the restarted market data's routes.
    rising(&sim, 4);
    let traded = app
        .wait_portfolio("owned", "the strategy's buy", |p| p.deals.len() == 1)
        .await;
    let tenant = app
        .expect(200, "GET", "/api/v1/tenants/owned", Some(&root), None)
        .await;
    let limits = app
        .expect(200, "GET", "/api/v1/tenants/owned/risk", Some(&root), None)
        .await;
    let strategies = app
        .expect(
            200,
            "GET",
            "/api/v1/tenants/owned/strategies",
            Some(&root),
            None,
        )
        .await;

    // Assert: each owner's replacement started from what its predecessor published.
    assert_eq!(tenant["tier"], "enterprise", "{tenant}");
    assert_eq!(limits["limits"]["max_order_volume"], "5", "{limits}");
    assert_eq!(limits["limits"]["allowed_symbols"], json!(["EURUSD"]));
    assert_eq!(strategies["strategies"][0]["strategy"]["id"], "ema-eurusd");
    assert_eq!(
        strategies["strategies"][0]["state"], "running",
        "{strategies}"
    );
    assert_eq!(traded.deals[0].fill.volume, Decimal::new(1, 1));
    assert_eq!(t.strategies.read().len(), 1);
    let events = app.runtime.events.snapshot(Some("owned"));
    assert_nothing_escalated(&events);
    sim.stop().await.expect("stop");
    app.shutdown().await;
}
