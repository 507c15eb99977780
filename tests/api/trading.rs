//! The trading loop end to end over a real WebSocket: sim → ticks → bars → signal → risk → order → fill →
//! position and PnL; resume after a dropped link; restart; replay determinism.

use std::time::Duration;

use trellis::actors::messages::{GetRecentBars, GetSessionState};
use trellis::domain::orders::OrderStatus;
use trellis::domain::{Login, Side, Symbol, Timeframe};
use trellis::sim::Control;

use crate::helpers::{d, spawn_app, tenant, tick, wait_for, MINUTE, T0};

const KEY: &str = "trk_acme0001_end-to-end-secret";

/// The scripted sequence (EURUSD, spread 2 points): closes of 1.1000, 1.1010, 1.1020 make ema(2) ≥ ema(3)
/// on the third bar → buy 0.1 at the ask 1.1032. Closes 1.1030 then 1.0990 cross down on the fifth bar →
/// sell 0.2 at the bid 1.0950: realises (1.0950 − 1.1032) × 0.1 × 100 000 = −82 and leaves 0.1 short at
/// 1.0950. At the last quote (ask 1.0942) the short is worth (1.0950 − 1.0942) × 0.1 × 100 000 = +8.
#[actix_rt::test]
async fn scripted_ticks_become_bars_orders_fills_and_a_position_with_pnl_checked_by_hand() {
    // Arrange
    let app = spawn_app().await;
    app.add_tenant(tenant("acme", KEY)).await;
    let sim = app.sim(KEY, 7001).await;

    // Act
    for (i, bid, ask) in [
        (0, "1.1000", "1.1002"),
        (1, "1.1010", "1.1012"),
        (2, "1.1020", "1.1022"),
    ] {
        sim.tick(tick("EURUSD", T0 + i * MINUTE, bid, ask));
    }
    sim.tick(tick("EURUSD", T0 + 3 * MINUTE, "1.1030", "1.1032"));
    app.wait_portfolio("acme", "the buy to fill", |p| p.deals.len() == 1)
        .await;
    sim.tick(tick("EURUSD", T0 + 4 * MINUTE, "1.0990", "1.0992"));
    sim.tick(tick("EURUSD", T0 + 5 * MINUTE, "1.0950", "1.0952"));
    app.wait_portfolio("acme", "the reversal to fill", |p| p.deals.len() == 2)
        .await;
    sim.tick(tick("EURUSD", T0 + 6 * MINUTE, "1.0940", "1.0942"));
    let snap = app
        .wait_portfolio("acme", "the last quote", |p| {
            p.performance.unrealised_pnl == d("8")
        })
        .await;

    // Assert
    let orders: Vec<_> = snap
        .orders
        .iter()
        .map(|o| (o.side, o.volume, o.status))
        .collect();
    assert_eq!(
        orders,
        vec![
            (Side::Buy, d("0.1"), OrderStatus::Filled),
            (Side::Sell, d("0.2"), OrderStatus::Filled)
        ]
    );
    assert_eq!(snap.orders[0].avg_price, Some(d("1.1032")));
    assert_eq!(snap.orders[1].avg_price, Some(d("1.0950")));
    assert_eq!(snap.positions.len(), 1);
    let pos = &snap.positions[0];
    assert_eq!(
        (
            pos.account,
            pos.position.side,
            pos.position.volume,
            pos.position.price_open
        ),
        (Login::new(7001), Side::Sell, d("0.1"), d("1.0950"))
    );
    assert_eq!(snap.performance.realised_pnl, d("-82"));
    assert_eq!(snap.performance.total_pnl, d("-74"));
    assert_eq!(snap.performance.trades, 1);
    assert_eq!(snap.performance.win_rate, 0.0);
    let broker = sim.broker.lock().expect("broker").balance();
    assert_eq!(
        broker,
        d("99918"),
        "the terminal's balance agrees: 100000 − 82"
    );
    sim.stop().await.expect("sim stops cleanly");
    app.shutdown().await;
}

#[actix_rt::test]
async fn bars_close_on_tick_time_across_gaps_and_out_of_order_ticks_are_dropped() {
    // Arrange
    let app = spawn_app().await;
    let t = app.add_tenant(tenant("acme", KEY)).await;
    let sim = app.sim(KEY, 7001).await;

    // Act: a bar, a late tick, a five-minute gap, another bar.
    sim.tick(tick("GBPUSD", T0 + 1_000, "1.2700", "1.2702"));
    sim.tick(tick("GBPUSD", T0 + 30_000, "1.2710", "1.2712"));
    sim.tick(tick("GBPUSD", T0 + 20_000, "9.9999", "9.9999")); // out of order: must not touch the bar
    sim.tick(tick("GBPUSD", T0 + 59_999, "1.2690", "1.2692"));
    sim.tick(tick("GBPUSD", T0 + 6 * MINUTE + 5, "1.2720", "1.2722"));
    sim.tick(tick("GBPUSD", T0 + 7 * MINUTE, "1.2730", "1.2732"));
    let md = t.market_data.get().expect("market data");
    let mut bars = Vec::new();
    for _ in 0..300 {
        bars = md
            .send(GetRecentBars {
                symbol: Symbol::new("GBPUSD"),
                timeframe: Timeframe::M1,
                limit: 10,
            })
            .await
            .expect("md");
        if bars.len() == 2 {
            break;
        }
        actix_rt::time::sleep(Duration::from_millis(10)).await;
    }

    // Assert
    assert_eq!(bars.len(), 2, "{bars:?}");
    assert_eq!(
        (
            bars[0].open_time_ms,
            bars[0].open,
            bars[0].high,
            bars[0].low,
            bars[0].close,
            bars[0].tick_volume
        ),
        (T0, d("1.2700"), d("1.2710"), d("1.2690"), d("1.2690"), 3)
    );
    assert_eq!(
        (bars[1].open_time_ms, bars[1].tick_volume),
        (T0 + 6 * MINUTE, 1),
        "no bars invented for the gap"
    );
    let (_, metrics) = app.get_text("/metrics").await;
    assert!(
        metrics.contains("trellis_ticks_dropped_total{kind=\"out_of_order\"} 1"),
        "{metrics}"
    );
    sim.stop().await.expect("sim stops");
    app.shutdown().await;
}

#[actix_rt::test]
async fn a_link_that_drops_after_the_order_reaches_the_terminal_executes_it_once_and_records_the_fill_once(
) {
    // Arrange
    let app = spawn_app().await;
    let t = app.add_tenant(tenant("acme", KEY)).await;
    let sim = app.sim(KEY, 7001).await;
    crate::helpers::rising(&sim, 3);

    // Act: the terminal executes the next order, then the link dies before the result goes out.
    sim.send(Control::DropAfterNextOrder);
    sim.tick(tick("EURUSD", T0 + 3 * MINUTE, "1.1030", "1.1032"));
    let snap = app
        .wait_portfolio("acme", "the fill after resume", |p| p.deals.len() == 1)
        .await;
    actix_rt::time::sleep(Duration::from_millis(300)).await; // time for any duplicate to show up

    // Assert
    let stats = sim.stats();
    assert!(stats.connects >= 2, "the terminal reconnected: {stats:?}");
    assert_eq!(
        sim.broker.lock().expect("broker").executed,
        1,
        "executed exactly once"
    );
    let snap2 = app.portfolio("acme").await;
    assert_eq!(snap2.deals.len(), 1, "the fill is recorded once");
    assert_eq!(snap.orders.len(), 1);
    assert_eq!(snap2.orders[0].status, OrderStatus::Filled);
    assert_eq!(snap2.positions[0].position.volume, d("0.1"));
    let session = t.session_of(Login::new(7001)).expect("session");
    let state = session.send(GetSessionState).await.expect("session state");
    assert!(
        state.outbox.is_empty(),
        "nothing left to re-send: {state:?}"
    );
    sim.stop().await.expect("sim stops");
    app.shutdown().await;
}

#[actix_rt::test]
async fn an_order_lost_in_transit_when_the_link_drops_is_re_sent_after_resume_and_executed_once() {
    // Arrange
    let app = spawn_app().await;
    app.add_tenant(tenant("acme", KEY)).await;
    let sim = app.sim(KEY, 7001).await;
    crate::helpers::rising(&sim, 3);

    // Act: the order is lost with the link; on resume the bridge says it never got it.
    sim.send(Control::LoseNextOrder);
    sim.tick(tick("EURUSD", T0 + 3 * MINUTE, "1.1030", "1.1032"));
    let snap = app
        .wait_portfolio("acme", "the fill", |p| p.deals.len() == 1)
        .await;
    actix_rt::time::sleep(Duration::from_millis(300)).await;

    // Assert
    assert_eq!(sim.broker.lock().expect("broker").executed, 1);
    assert!(sim.stats().connects >= 2, "the terminal reconnected");
    assert_eq!(app.portfolio("acme").await.deals.len(), 1);
    assert_eq!(snap.orders[0].status, OrderStatus::Filled);
    sim.stop().await.expect("sim stops");
    app.shutdown().await;
}

#[actix_rt::test]
async fn restarting_trellis_restores_orders_and_positions_from_the_embedded_store() {
    // Arrange: trade to a long position, then stop trellis.
    let app = spawn_app().await;
    app.add_tenant(tenant("acme", KEY)).await;
    let sim = app.sim(KEY, 7001).await;
    crate::helpers::rising(&sim, 4);
    let before = app
        .wait_portfolio("acme", "a position", |p| {
            p.positions.len() == 1 && p.deals.len() == 1
        })
        .await;
    sim.stop().await.expect("sim stops");
    let store = app.shutdown_keeping_data().await;

    // Act: a new process on the same store.
    let app2 = crate::helpers::spawn_app_on(store, &[]).await;
    app2.add_tenant(tenant("acme", KEY)).await;
    let after = app2
        .wait_portfolio("acme", "the restored book", |p| !p.orders.is_empty())
        .await;

    // Assert
    assert_eq!(after.positions.len(), 1);
    assert_eq!(after.positions[0].position, before.positions[0].position);
    assert_eq!(after.orders, before.orders);
    assert_eq!(after.deals, before.deals);
    app2.shutdown().await;
}

#[actix_rt::test]
async fn replaying_the_same_csv_twice_produces_identical_orders() {
    // Arrange: a seeded random walk written as CSV.
    let dir = tempfile::tempdir().expect("dir");
    let csv = dir.path().join("ticks.csv");
    let walk = trellis::sim::feed::RandomWalk::new(
        trellis::sim::feed::RandomWalk::default_symbols(&["EURUSD".to_owned()]),
        T0,
        1_000,
        11,
    );
    let mut text = String::from("time_msc,bid,ask,symbol\n");
    for t in walk.take(1_800) {
        text.push_str(&format!(
            "{},{},{},{}\n",
            t.time_msc, t.bid, t.ask, t.symbol
        ));
    }
    std::fs::write(&csv, text).expect("csv written");

    // Act
    let mut runs = Vec::new();
    for _ in 0..2 {
        let app = spawn_app().await;
        app.add_tenant(tenant("acme", KEY)).await;
        let sim = app.sim(KEY, 7001).await;
        let ticks: Vec<trellis::domain::Tick> =
            trellis::backtest::history::open(&csv, Default::default())
                .expect("csv")
                .collect::<Result<_, _>>()
                .expect("ticks");
        assert_eq!(ticks.len(), 1_800);
        for t in ticks {
            let opens_bar = t.time_msc % MINUTE == 0;
            let time = t.time_msc;
            sim.tick(t);
            // At each bar boundary let the bar's order finish, as a paced replay would.
            if opens_bar {
                app.settle("acme", "ema-eurusd", time - MINUTE).await;
            }
        }
        wait_for("the ticks to be streamed", || {
            sim.stats().ticks_sent == 1_800
        })
        .await;
        let snap = app
            .wait_portfolio("acme", "every order answered", |p| {
                !p.orders.is_empty() && p.orders.iter().all(|o| o.status.is_final())
            })
            .await;
        runs.push(
            snap.orders
                .iter()
                .map(|o| (o.client_order_id.clone(), o.side, o.volume))
                .collect::<Vec<_>>(),
        );
        sim.stop().await.expect("sim stops");
        app.shutdown().await;
    }

    // Assert
    assert!(runs[0].len() >= 4, "the walk should trade: {:?}", runs[0]);
    assert_eq!(runs[0], runs[1]);
}

/// The count of a histogram series in the Prometheus text (`name_count{labels} N`), 0 when absent.
fn histogram_count(metrics: &str, series: &str) -> u64 {
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(&format!("{series} ")))
        .and_then(|n| n.trim().parse::<f64>().ok())
        .map_or(0, |n| n as u64)
}

#[actix_rt::test]
async fn the_trading_path_exports_a_latency_histogram_per_stage_that_moves_with_each_order() {
    // Arrange: the scripted buy (see the first test): three closes, then the tick that closes the third bar.
    let app = spawn_app().await;
    app.add_tenant(tenant("acme", KEY)).await;
    let sim = app.sim(KEY, 7001).await;
    let (_, before) = app.get_text("/metrics").await;
    let stages = ["decode", "bar", "strategy", "risk", "write_ahead", "send"];
    let count = |metrics: &str, stage: &str| {
        histogram_count(
            metrics,
            &format!("trellis_trading_stage_seconds_count{{stage=\"{stage}\"}}"),
        )
    };
    for stage in stages {
        assert_eq!(count(&before, stage), 0, "{stage} before any tick");
    }

    // Act
    crate::helpers::rising(&sim, 3);
    sim.tick(tick("EURUSD", T0 + 3 * MINUTE, "1.1030", "1.1032"));
    app.wait_portfolio("acme", "the buy to fill", |p| p.deals.len() == 1)
        .await;
    let (_, after) = app.get_text("/metrics").await;

    // Assert: every tick is decoded, every bar closed is timed, and the one order went through each later
    // stage once; its stages are cumulative from the frame's arrival, so each sum is at least the one before.
    assert_eq!(count(&after, "decode"), 4, "{after}");
    assert!(count(&after, "bar") >= 3, "three M1 bars closed");
    for stage in ["strategy", "risk", "write_ahead", "send"] {
        assert_eq!(count(&after, stage), 1, "{stage}: {after}");
    }
    let sum = |stage: &str| {
        after
            .lines()
            .find_map(|l| {
                l.strip_prefix(&format!(
                    "trellis_trading_stage_seconds_sum{{stage=\"{stage}\"}} "
                ))
            })
            .and_then(|n| n.trim().parse::<f64>().ok())
            .unwrap_or(-1.0)
    };
    let ordered = ["strategy", "risk", "write_ahead", "send"];
    for pair in ordered.windows(2) {
        assert!(
            sum(pair[0]) <= sum(pair[1]) && sum(pair[0]) > 0.0,
            "{} {} ≤ {} {}",
            pair[0],
            sum(pair[0]),
            pair[1],
            sum(pair[1])
        );
    }
    assert!(
        after.contains("trellis_api_request_seconds_count{method=\"GET\",route=\"/metrics\"}"),
        "API requests are timed by route pattern"
    );
    sim.stop().await.expect("sim stops");
    app.shutdown().await;
}
