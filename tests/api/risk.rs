//! Risk: each limit rejects with its reason; the kill switch stops trading and flattens.

use std::time::Duration;

use trellis::actors::messages::{
    AccountLink, CheckOrder, GetRiskState, LinkState, OrderFacts, PnlUpdated, SetKillSwitch,
};
use trellis::domain::orders::OrderStatus;
use trellis::domain::tenant::RiskSettings;
use trellis::domain::{Login, Side, Symbol};

use crate::helpers::{d, p, spawn_app, tenant, tick, MINUTE, T0};

const KEY: &str = "trk_acme0001_risk-test-secret";

fn limits() -> RiskSettings {
    RiskSettings {
        max_order_volume: Some(p("0.5")),
        max_net_position: Some(p("1.0")),
        max_open_positions: Some(1),
        allowed_symbols: vec!["EURUSD".into()],
        max_daily_loss: Some(p("100")),
        max_drawdown: Some(p("150")),
        flatten_on_breach: false,
        ..RiskSettings::default()
    }
}

fn facts(symbol: &str, side: Side, volume: &str, net_before: &str, open: usize) -> OrderFacts {
    OrderFacts {
        account: Login::new(7001),
        symbol: Symbol::new(symbol),
        side,
        volume: d(volume),
        net_before: d(net_before),
        open_positions: open,
        reduce_only: false,
        positions: Vec::new(),
    }
}

#[actix_rt::test]
async fn each_limit_rejects_with_its_code_and_a_reason() {
    // Arrange
    let app = spawn_app().await;
    let mut settings = tenant("acme", KEY);
    settings.risk = limits();
    let t = app.add_tenant(settings).await;
    let risk = t.risk.get().expect("risk");
    let check = |f: OrderFacts| {
        let risk = risk.clone();
        async move { risk.send(CheckOrder(f)).await.expect("risk answers") }
    };

    // Act & Assert: one order per limit.
    assert_eq!(
        check(facts("EURUSD", Side::Buy, "0.1", "0", 0)).await,
        Ok(())
    );
    let cases = [
        (
            facts("EURUSD", Side::Buy, "0.6", "0", 0),
            "max_order_volume",
            "0.6",
        ),
        (
            facts("GBPUSD", Side::Buy, "0.1", "0", 0),
            "symbol_not_allowed",
            "GBPUSD",
        ),
        (
            facts("EURUSD", Side::Buy, "0.3", "0.8", 1),
            "max_net_position",
            "1.1",
        ),
        (
            facts("EURUSD", Side::Sell, "0.1", "0", 1),
            "max_open_positions",
            "limit is 1",
        ),
    ];
    for (f, code, detail) in cases {
        let err = check(f).await.expect_err(code);
        assert_eq!(err.code.as_str(), code);
        assert!(err.reason.contains(detail), "{code}: {}", err.reason);
    }
    assert_eq!(
        check(facts("EURUSD", Side::Sell, "0.3", "0.8", 1)).await,
        Ok(()),
        "reducing is allowed"
    );

    risk.do_send(AccountLink {
        account: Login::new(7001),
        state: LinkState::Lost,
    });
    assert_eq!(
        check(facts("EURUSD", Side::Buy, "0.1", "0", 0))
            .await
            .expect_err("blind")
            .code
            .as_str(),
        "account_blind"
    );
    risk.do_send(AccountLink {
        account: Login::new(7001),
        state: LinkState::Connected,
    });

    // A loss beyond the daily limit trips the kill switch by itself.
    risk.do_send(PnlUpdated {
        at_ms: T0,
        realised: d("0"),
        unrealised: d("0"),
        commission: d("0"),
    });
    risk.do_send(PnlUpdated {
        at_ms: T0 + 1,
        realised: d("-60"),
        unrealised: d("-45"),
        commission: d("0"),
    });
    let state = risk.send(GetRiskState).await.expect("state");
    let kill = state.kill_switch.expect("kill switch tripped");
    assert!(
        kill.automatic && kill.reason.contains("daily loss 105"),
        "{kill:?}"
    );
    let err = check(facts("EURUSD", Side::Buy, "0.1", "0", 0))
        .await
        .expect_err("killed");
    assert_eq!(err.code.as_str(), "kill_switch");
    let mut flatten = facts("EURUSD", Side::Sell, "0.1", "0.1", 1);
    flatten.reduce_only = true;
    assert_eq!(
        check(flatten).await,
        Ok(()),
        "flattening passes the kill switch"
    );
    app.shutdown().await;
}

#[actix_rt::test]
async fn drawdown_from_the_peak_trips_the_kill_switch() {
    let app = spawn_app().await;
    let mut settings = tenant("acme", KEY);
    settings.risk = RiskSettings {
        max_drawdown: Some(p("150")),
        ..RiskSettings::default()
    };
    let t = app.add_tenant(settings).await;
    let risk = t.risk.get().expect("risk");

    risk.do_send(PnlUpdated {
        at_ms: T0,
        realised: d("400"),
        unrealised: d("0"),
        commission: d("0"),
    });
    risk.do_send(PnlUpdated {
        at_ms: T0 + 1,
        realised: d("400"),
        unrealised: d("-160"),
        commission: d("0"),
    });
    let state = risk.send(GetRiskState).await.expect("state");

    assert_eq!(state.drawdown, d("160"));
    let kill = state.kill_switch.expect("tripped");
    assert!(kill.reason.contains("drawdown 160"), "{kill:?}");
    app.shutdown().await;
}

#[actix_rt::test]
async fn an_order_over_the_volume_limit_is_recorded_as_rejected_and_never_reaches_the_terminal() {
    let app = spawn_app().await;
    let mut settings = tenant("acme", KEY);
    settings.risk = RiskSettings {
        max_order_volume: Some(p("0.05")),
        ..RiskSettings::default()
    };
    app.add_tenant(settings).await;
    let sim = app.sim(KEY, 7001).await;

    crate::helpers::rising(&sim, 4);
    let snap = app
        .wait_portfolio("acme", "the rejected order", |p| !p.orders.is_empty())
        .await;

    let order = &snap.orders[0];
    assert_eq!(order.status, OrderStatus::Rejected);
    assert!(
        order
            .reason
            .as_deref()
            .unwrap_or("")
            .contains("max_order_volume"),
        "{order:?}"
    );
    actix_rt::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(sim.stats().orders_received, 0);
    // The refusal is in the tenant's audit chain, which still verifies.
    let audited = app.audited("acme", "order.rejected_by_risk", 1).await;
    assert_eq!(audited.len(), 1, "{audited:?}");
    assert_eq!(audited[0]["detail"]["code"], "max_order_volume");
    assert_eq!(audited[0]["actor"], "risk");
    assert!(
        app.security
            .verify_audit("acme")
            .await
            .expect("verify")
            .intact
    );
    sim.stop().await.expect("sim stops");
    app.shutdown().await;
}

#[actix_rt::test]
async fn the_kill_switch_flattens_positions_and_stops_new_orders() {
    // Arrange: a long position.
    let app = spawn_app().await;
    let t = app.add_tenant(tenant("acme", KEY)).await;
    let sim = app.sim(KEY, 7001).await;
    crate::helpers::rising(&sim, 4);
    app.wait_portfolio("acme", "a long", |p| p.positions.len() == 1)
        .await;

    // Act: kill switch on with flatten, then a cross down that would reverse.
    let risk = t.risk.get().expect("risk");
    let state = risk
        .send(SetKillSwitch {
            on: true,
            reason: "operator: news event".into(),
            flatten: true,
        })
        .await
        .expect("risk");
    let flat = app
        .wait_portfolio("acme", "flat", |p| {
            p.positions.is_empty() && p.deals.len() == 2
        })
        .await;
    sim.tick(tick("EURUSD", T0 + 4 * MINUTE, "1.0990", "1.0992"));
    sim.tick(tick("EURUSD", T0 + 5 * MINUTE, "1.0950", "1.0952"));
    let after = app
        .wait_portfolio("acme", "the refused signal", |p| p.orders.len() == 3)
        .await;

    // Assert
    assert_eq!(
        state.kill_switch.map(|k| k.reason),
        Some("operator: news event".to_owned())
    );
    assert_eq!(flat.orders[1].client_order_id, "flatten-2");
    assert_eq!(flat.orders[1].side, Side::Sell);
    let refused = &after.orders[2];
    assert_eq!(refused.status, OrderStatus::Rejected);
    assert!(
        refused
            .reason
            .as_deref()
            .unwrap_or("")
            .contains("kill switch is on"),
        "{refused:?}"
    );
    assert_eq!(
        sim.stats().orders_received,
        2,
        "the buy and the flattening sell only"
    );
    sim.stop().await.expect("sim stops");
    app.shutdown().await;
}

#[actix_rt::test]
async fn the_kill_switch_stays_on_after_a_restart() {
    // Arrange
    let app = spawn_app().await;
    let t = app.add_tenant(tenant("acme", KEY)).await;
    let risk = t.risk.get().expect("risk");
    risk.send(SetKillSwitch {
        on: true,
        reason: "operator: audit".into(),
        flatten: false,
    })
    .await
    .expect("risk answers");
    let store = app.shutdown_keeping_data().await;

    // Act
    let app2 = crate::helpers::spawn_app_on(store, &[]).await;
    let t2 = app2.add_tenant(tenant("acme", KEY)).await;
    let risk2 = t2.risk.get().expect("risk");
    let state = risk2.send(GetRiskState).await.expect("state");
    let refused = risk2
        .send(CheckOrder(facts("EURUSD", Side::Buy, "0.1", "0", 0)))
        .await
        .expect("risk");
    risk2
        .send(SetKillSwitch {
            on: false,
            reason: "operator: resume".into(),
            flatten: false,
        })
        .await
        .expect("risk answers");
    let allowed = risk2
        .send(CheckOrder(facts("EURUSD", Side::Buy, "0.1", "0", 0)))
        .await
        .expect("risk");

    // Assert
    assert_eq!(
        state.kill_switch.map(|k| (k.reason, k.automatic)),
        Some(("operator: audit".to_owned(), false))
    );
    assert_eq!(
        refused.expect_err("still killed").code.as_str(),
        "kill_switch"
    );
    assert_eq!(allowed, Ok(()));
    app2.shutdown().await;
}

#[actix_rt::test]
async fn the_portfolio_volatility_limit_refuses_correlated_exposure_and_accepts_a_hedge() {
    // Arrange: EURUSD and GBPUSD moving together for 40 minutes; no strategies (orders are checked
    // directly); the limit 1.4 × the volatility of one lot of EURUSD.
    let key = "trk_corr0001_risk-test-secret";
    let app = spawn_app().await;
    let mut settings = tenant("corr", key);
    settings.strategies = Vec::new();
    settings.risk = RiskSettings {
        max_portfolio_volatility: Some(p("1000000")),
        ..RiskSettings::default()
    };
    let t = app.add_tenant(settings).await;
    let sim = app.sim(key, 7101).await;
    let wave = [0i64, 6, 12, 9, 3, -4, -9, -2, 5, -6, 1];
    for m in 0..41i64 {
        let w = wave[(m % 11) as usize] as f64;
        for (symbol, base, scale, noise) in [("EURUSD", 1.1, 1.0, 0.0), ("GBPUSD", 1.3, 1.2, 0.2)] {
            let bid = base + (w * scale + noise * ((m % 3) as f64 - 1.0)) * 0.0001;
            sim.tick(tick(
                symbol,
                T0 + m * MINUTE,
                &format!("{bid:.5}"),
                &format!("{:.5}", bid + 0.0002),
            ));
        }
    }
    let mut view = serde_json::Value::Null;
    for _ in 0..300 {
        view = app
            .call("GET", "/api/v1/tenants/corr/correlations", Some(key), None)
            .await
            .body;
        if view["observations"].as_u64().unwrap_or(0) >= 38 {
            break;
        }
        actix_rt::time::sleep(Duration::from_millis(20)).await;
    }
    let risk = t.risk.get().expect("risk");
    let long_eur = vec![(Symbol::new("EURUSD"), d("1"))];
    let cov = &view["covariance"];
    let (eur_var, symbols) = (cov[0][0].as_f64().expect("variance"), &view["symbols"]);
    let one_lot = 100_000.0 * 1.1 * eur_var.sqrt();
    let limits = RiskSettings {
        max_portfolio_volatility: Some(
            rust_decimal::Decimal::from_f64_retain(1.4 * one_lot)
                .and_then(trellis::domain::schema::PositiveDecimal::new)
                .expect("limit"),
        ),
        ..RiskSettings::default()
    };
    risk.send(trellis::actors::messages::SetRiskLimits(limits))
        .await
        .expect("limits set");
    let order = |side: Side| OrderFacts {
        account: Login::new(7101),
        symbol: Symbol::new("GBPUSD"),
        side,
        volume: d("1"),
        net_before: d("0"),
        open_positions: 1,
        reduce_only: false,
        positions: long_eur.clone(),
    };

    // Act
    let adding = risk
        .send(CheckOrder(order(Side::Buy)))
        .await
        .expect("risk answers");
    let hedging = risk
        .send(CheckOrder(order(Side::Sell)))
        .await
        .expect("risk answers");

    // Assert: the engine sees the co-movement; buying GBPUSD on top of long EURUSD is refused naming the
    // figure, selling it (a hedge) passes.
    assert_eq!(symbols, &serde_json::json!(["EURUSD", "GBPUSD"]), "{view}");
    let rho = view["correlations"][0][1].as_f64().expect("correlation");
    assert!(rho > 0.9, "correlation {rho}: {view}");
    let shrinkage = view["shrinkage"].as_f64().expect("shrinkage");
    assert!((0.0..=1.0).contains(&shrinkage), "{view}");
    let refused = adding.expect_err("correlated exposure is refused");
    assert_eq!(refused.code.as_str(), "max_portfolio_volatility");
    assert!(refused.reason.contains("per M1 bar"), "{}", refused.reason);
    assert_eq!(hedging, Ok(()), "a hedge passes");
    app.shutdown().await;
}

#[actix_rt::test]
async fn a_volatile_regime_scales_the_volume_and_position_limits_while_it_lasts() {
    // Arrange: max 1 lot per order; halved while deployment `regime` says `volatile`.
    let key = "trk_regime01_risk-test-secret";
    let app = spawn_app().await;
    let mut settings = tenant("regimes", key);
    settings.strategies = Vec::new();
    settings.risk = RiskSettings {
        max_order_volume: Some(p("1")),
        regime: Some(trellis::domain::tenant::RegimeRisk {
            deployment: "regime".into(),
            state: "volatile".into(),
            scale: "0.5".parse().expect("fraction"),
        }),
        ..RiskSettings::default()
    };
    let t = app.add_tenant(settings).await;
    let risk = t.risk.get().expect("risk");
    let order = || OrderFacts {
        account: Login::new(7201),
        symbol: Symbol::new("EURUSD"),
        side: Side::Buy,
        volume: d("0.8"),
        net_before: d("0"),
        open_positions: 0,
        reduce_only: false,
        positions: Vec::new(),
    };
    let observe = |label: &str| trellis::actors::messages::RegimeObserved {
        deployment: "regime".into(),
        label: label.into(),
    };

    // Act
    let calm = risk.send(CheckOrder(order())).await.expect("risk answers");
    risk.send(observe("volatile")).await.expect("observed");
    let volatile = risk.send(CheckOrder(order())).await.expect("risk answers");
    risk.send(observe("calm")).await.expect("observed");
    let calm_again = risk.send(CheckOrder(order())).await.expect("risk answers");

    // Assert
    assert_eq!(calm, Ok(()));
    let refused = volatile.expect_err("halved limit");
    assert_eq!(refused.code.as_str(), "max_order_volume");
    assert!(
        refused.reason.contains("0.50") || refused.reason.contains("0.5"),
        "{}",
        refused.reason
    );
    assert!(
        refused.reason.contains("market regime"),
        "{}",
        refused.reason
    );
    assert_eq!(calm_again, Ok(()));
    app.shutdown().await;
}
