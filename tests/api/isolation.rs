//! Fault isolation: a strategy that panics is restarted without touching its tenant's other strategies or
//! other tenants.

use std::time::Duration;

use rust_decimal::Decimal;
use trellis::actors::events::EventKind;
use trellis::domain::Bar;
use trellis::strategies::{ParamError, Params, Strategy};

use crate::helpers::{ema, spawn_app, tenant, tick, MINUTE, T0};

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
    assert!(
        events
            .iter()
            .all(|e| e.kind != EventKind::Escalated && e.kind != EventKind::GaveUp),
        "nothing escalated: {events:#?}"
    );
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
