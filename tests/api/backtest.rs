//! `trellis backtest`: figures checked by hand, bad input, determinism, and the same orders as live.

use std::path::Path;
use std::process::Command;

use serde_json::Value;
use trellis::backtest::{Backtest, BacktestConfig};
use trellis::domain::Timeframe;
use trellis::strategies::{Params, StrategyRegistry};

use crate::helpers::{d, spawn_app, tenant, MINUTE, T0};

fn ema_params() -> Params {
    [("fast".to_owned(), 2.0), ("slow".to_owned(), 3.0)].into()
}

fn write(dir: &Path, name: &str, text: &str) -> std::path::PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("written");
    path
}

fn backtest(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_trellis"))
        .arg("backtest")
        .args(args)
        .output()
        .expect("runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The scripted sequence of the live end-to-end test, one tick per minute. Orders decided on a bar fill at
/// the next tick: buy 0.1 at the ask 1.0992 (tick 4); sell 0.2 at the bid 1.0940 (tick 6), realising
/// (1.0940 − 1.0992) × 0.1 × 100 000 = −52 and leaving 0.1 short at 1.0940; the last ask 1.0932 values the
/// short at +8. Commission 2 per lot: 0.1 × 2 + 0.2 × 2 = 0.6. Total −52 + 8 − 0.6 = −44.6. The worst mark
/// is at tick 6: −52 − 2 (short marked at the ask 1.0942) − 0.6 = −54.6 below the starting peak of 0.
const SCRIPT: &str = "time_msc,bid,ask\n\
1700000040000,1.1000,1.1002\n\
1700000100000,1.1010,1.1012\n\
1700000160000,1.1020,1.1022\n\
1700000220000,1.1030,1.1032\n\
1700000280000,1.0990,1.0992\n\
1700000340000,1.0950,1.0952\n\
1700000400000,1.0940,1.0942\n\
1700000460000,1.0930,1.0932\n";

#[test]
fn a_scripted_csv_gives_fills_pnl_and_metrics_checked_by_hand() {
    let dir = tempfile::tempdir().expect("dir");
    let csv = write(dir.path(), "script.csv", SCRIPT);
    let trades = dir.path().join("trades.csv");

    let (code, stdout, stderr) = backtest(&[
        "--csv",
        csv.to_str().expect("path"),
        "--symbol",
        "EURUSD",
        "--strategy",
        "ema_cross",
        "--param",
        "fast=2",
        "--param",
        "slow=3",
        "--timeframe",
        "M1",
        "--commission-per-lot",
        "2",
        "--json",
        "--trades",
        trades.to_str().expect("path"),
    ]);

    assert_eq!(code, 0, "{stderr}");
    let r: Value = serde_json::from_str(stdout.trim()).expect("one JSON object");
    assert_eq!(r["ticks"], 8);
    assert_eq!(r["bars"], 7);
    assert_eq!(r["orders"], 2);
    assert_eq!(r["fills"], 2);
    assert_eq!(r["final_position"], "-0.1");
    assert_eq!(r["realised_pnl"], "-52");
    assert_eq!(r["unrealised_pnl"], "8");
    assert_eq!(r["commission"], "0.6");
    assert_eq!(r["total_pnl"], "-44.6");
    assert_eq!(r["trades"], 1);
    assert_eq!(r["win_rate"], 0.0);
    assert_eq!(r["profit_factor"], 0.0);
    assert_eq!(r["max_drawdown"], "54.6");
    assert!(r["sharpe"].is_null(), "one day of marks has no Sharpe");
    assert!(r["ticks_per_sec"].as_f64().unwrap_or(0.0) > 0.0);
    let fills = std::fs::read_to_string(&trades).expect("trades file");
    assert_eq!(
        fills,
        "time_msc,ticket,client_order_id,symbol,side,volume,price,entry,commission,profit\n\
         1700000280000,1002,backtest-1,EURUSD,buy,0.1,1.0992,0,0.2,0\n\
         1700000400000,1004,backtest-2,EURUSD,sell,0.2,1.0940,2,0.4,-52\n"
    );
}

#[test]
fn the_same_input_gives_byte_identical_results() {
    let dir = tempfile::tempdir().expect("dir");
    let mut text = String::from("time_msc,bid,ask,symbol\n");
    let walk = trellis::sim::feed::RandomWalk::new(
        trellis::sim::feed::RandomWalk::default_symbols(&["EURUSD".into()]),
        T0,
        1_000,
        5,
    );
    for t in walk.take(20_000) {
        text.push_str(&format!(
            "{},{},{},{}\n",
            t.time_msc, t.bid, t.ask, t.symbol
        ));
    }
    let csv = write(dir.path(), "walk.csv", &text);
    let run = |n: usize| {
        let trades = dir.path().join(format!("trades-{n}.csv"));
        let (code, stdout, stderr) = backtest(&[
            "--csv",
            csv.to_str().expect("p"),
            "--symbol",
            "EURUSD",
            "--param",
            "fast=5",
            "--param",
            "slow=12",
            "--json",
            "--trades",
            trades.to_str().expect("p"),
        ]);
        assert_eq!(code, 0, "{stderr}");
        let mut v: Value = serde_json::from_str(stdout.trim()).expect("json");
        let map = v.as_object_mut().expect("object");
        map.remove("elapsed_ms");
        map.remove("ticks_per_sec");
        (v, std::fs::read(&trades).expect("trades"))
    };

    let (a, trades_a) = run(1);
    let (b, trades_b) = run(2);

    assert!(a["orders"].as_u64().unwrap_or(0) > 10, "{a}");
    assert_eq!(a, b);
    assert_eq!(trades_a, trades_b);
}

#[test]
fn bad_input_stops_with_the_line_number_and_reason_or_is_skipped_and_counted() {
    let dir = tempfile::tempdir().expect("dir");
    let cases = [
        (
            "no-header.csv",
            "1700000040000,1.1,1.2\n",
            "line 1: `1700000040000,1.1,1.2` is not a history format",
        ),
        (
            "garbage.csv",
            "time_msc,bid,ask\n1700000040000,1.1,1.2\n1700000041000,abc,1.2\n",
            "line 3, column bid: `abc` is not a number",
        ),
        (
            "backwards.csv",
            "time_msc,bid,ask\n1700000040000,1.1,1.2\n1700000030000,1.1,1.2\n",
            "line 3, column time_msc: `1700000030000` is before the previous tick",
        ),
        (
            "crossed.csv",
            "time_msc,bid,ask\n1700000040000,1.3,1.2\n",
            "line 2, column bid: `1.3` is above the ask 1.2",
        ),
    ];
    for (name, text, expected) in cases {
        let csv = write(dir.path(), name, text);
        let (code, _, stderr) =
            backtest(&["--csv", csv.to_str().expect("p"), "--symbol", "EURUSD"]);
        assert_eq!(code, 2, "{name}: {stderr}");
        assert!(stderr.contains(expected), "{name}: {stderr}");
    }

    let csv = write(dir.path(), "mixed.csv", "time_msc,bid,ask\n1700000040000,1.1,1.2\nnonsense\n1700000041000,1.3,1.2\n1700000042000,1.1,1.2\n");
    let (code, stdout, stderr) = backtest(&[
        "--csv",
        csv.to_str().expect("p"),
        "--symbol",
        "EURUSD",
        "--skip-bad",
        "--json",
    ]);
    assert_eq!(code, 0, "{stderr}");
    let r: Value = serde_json::from_str(stdout.trim()).expect("json");
    assert_eq!(
        (r["ticks"].as_u64(), r["lines_skipped"].as_u64()),
        (Some(2), Some(2))
    );
}

#[actix_rt::test]
async fn live_trading_and_the_backtest_send_the_same_orders_for_the_same_ticks() {
    // Arrange: one series of ticks.
    let walk = trellis::sim::feed::RandomWalk::new(
        trellis::sim::feed::RandomWalk::default_symbols(&["EURUSD".into()]),
        T0,
        1_000,
        23,
    );
    let ticks: Vec<_> = walk.take(1_800).collect();

    // Act: the backtest…
    let mut bt = Backtest::new(
        BacktestConfig::new("EURUSD", "ema_cross", ema_params(), Timeframe::M1),
        &StrategyRegistry::default(),
    )
    .expect("valid");
    for t in &ticks {
        bt.on_tick(t);
    }
    let backtest: Vec<_> = bt
        .orders()
        .into_iter()
        .map(|o| (o.side, o.volume))
        .collect();

    // …and the live path, paced bar by bar.
    let app = spawn_app().await;
    app.add_tenant(tenant("acme", "trk_acme0001_backtest-vs-live"))
        .await;
    let sim = app.sim("trk_acme0001_backtest-vs-live", 7001).await;
    for t in ticks {
        let opens_bar = t.time_msc % MINUTE == 0;
        let time = t.time_msc;
        sim.tick(t);
        if opens_bar {
            app.settle("acme", "ema-eurusd", time - MINUTE).await;
        }
    }
    let live: Vec<_> = app
        .portfolio("acme")
        .await
        .orders
        .into_iter()
        .map(|o| (o.side, o.volume))
        .collect();

    // Assert
    assert!(backtest.len() >= 4, "{backtest:?}");
    assert_eq!(live, backtest);
    assert_eq!(backtest[0].1, d("0.1"));
    sim.stop().await.expect("sim stops");
    app.shutdown().await;
}

#[actix_rt::test]
async fn a_backtest_can_read_the_ticks_trellis_stored_for_a_symbol_and_time_range() {
    if crate::helpers::real_profile() {
        eprintln!(
            "skipped in the real profile: backtest reads stored ticks from the embedded store only"
        );
        return;
    }
    // Arrange: trellis records 120 ticks from a terminal, then stops (flushing its store).
    let app = spawn_app().await;
    app.add_tenant(tenant("acme", "trk_acme0001_stored-ticks"))
        .await;
    let sim = app.sim("trk_acme0001_stored-ticks", 7001).await;
    let walk = trellis::sim::feed::RandomWalk::new(
        trellis::sim::feed::RandomWalk::default_symbols(&["EURUSD".into()]),
        T0,
        1_000,
        3,
    );
    for t in walk.take(120) {
        sim.tick(t);
    }
    crate::helpers::wait_for("the ticks to be streamed", || sim.stats().ticks_sent == 120).await;
    actix_rt::time::sleep(std::time::Duration::from_millis(300)).await;
    sim.stop().await.expect("sim stops");
    let store = app.shutdown_keeping_data().await;

    // Act: the whole range, then the first minute only, from wherever this profile stores ticks.
    let source: Vec<String> = match store
        .vars
        .iter()
        .find(|(k, _)| k == "TRELLIS__STORAGE__CLICKHOUSE_URL")
    {
        Some((_, url)) => {
            let db = store
                .vars
                .iter()
                .find(|(k, _)| k == "TRELLIS__STORAGE__CLICKHOUSE_DATABASE")
                .map(|(_, v)| v.clone());
            vec![
                "--clickhouse-url".into(),
                url.clone(),
                "--clickhouse-database".into(),
                db.unwrap_or_default(),
            ]
        }
        None => vec![
            "--data-dir".into(),
            store.path().to_str().expect("path").to_owned(),
        ],
    };
    let args = |extra: &[&str]| -> Vec<String> {
        let mut v = source.clone();
        v.extend(
            ["--tenant", "acme", "--symbol", "EURUSD", "--json"]
                .iter()
                .map(|s| s.to_string()),
        );
        v.extend(extra.iter().map(|s| s.to_string()));
        v
    };
    let run = |v: Vec<String>| backtest(&v.iter().map(String::as_str).collect::<Vec<_>>());
    let (code, all, stderr) = run(args(&[]));
    let to = (T0 + MINUTE).to_string();
    let (_, first, _) = run(args(&["--to", &to]));
    let (bad, _, missing) = backtest(&[
        "--data-dir",
        "/nonexistent",
        "--tenant",
        "acme",
        "--symbol",
        "EURUSD",
    ]);

    // Assert
    assert_eq!(code, 0, "{stderr}");
    let all: Value = serde_json::from_str(all.trim()).expect("json");
    let first: Value = serde_json::from_str(first.trim()).expect("json");
    assert_eq!(all["ticks"], 120);
    assert_eq!(
        all["bars"], 2,
        "ticks from T0+1 s to T0+120 s close the bars of minutes 0 and 1"
    );
    assert_eq!(first["ticks"], 60);
    assert_eq!(bad, 2);
    assert!(missing.contains("no embedded store"), "{missing}");
}

#[test]
fn a_backtest_with_a_model_trades_its_predictions_as_computed_by_hand() {
    // Arrange: y = return_1, traded by model_signal at ±0.0005 over the scripted ticks (one per minute).
    // Bar k (closed by tick k+1) has return_1 = close_k / close_(k−1) − 1: +0.00091 at bars 1–3 → long 0.1,
    // −0.0036 at bar 4 → short 0.1 (sell 0.2), −0.0036 and −0.0009 at bars 5 and 6 → stay short.
    let dir = tempfile::tempdir().expect("dir");
    let csv = write(dir.path(), "script.csv", SCRIPT);
    let model = dir.path().join("r1.onnx");
    std::fs::write(&model, trellis::models::onnx::linear_model(&[1.0], 0.0)).expect("model");
    let manifest = write(
        dir.path(),
        "r1.json",
        r#"{"features": ["return_1"], "output": {"kind": "expected_return"}}"#,
    );
    let args = [
        "--csv",
        csv.to_str().expect("path"),
        "--symbol",
        "EURUSD",
        "--strategy",
        "model_signal",
        "--param",
        "upper=0.0005",
        "--param",
        "lower=-0.0005",
        "--model",
        model.to_str().expect("path"),
        "--manifest",
        manifest.to_str().expect("path"),
        "--json",
    ];

    // Act
    let (code, stdout, stderr) = backtest(&args);
    let (again, stdout2, _) = backtest(&args);
    let (bad, _, refused) = backtest(&[
        "--csv",
        csv.to_str().expect("path"),
        "--symbol",
        "EURUSD",
        "--strategy",
        "model_signal",
        "--model",
        csv.to_str().expect("path"),
        "--manifest",
        manifest.to_str().expect("path"),
    ]);

    // Assert
    assert_eq!(code, 0, "{stderr}");
    let r: Value = serde_json::from_str(stdout.trim()).expect("json");
    assert_eq!(r["orders"], 2, "{r}");
    assert_eq!(r["fills"], 2);
    assert_eq!(r["final_position"], "-0.1");
    // Orders fill at the tick after the bar-closing tick: buy 0.1 at the ask 1.1032 (tick 3), sell 0.2 at the
    // bid 1.0940 (tick 6): realised (1.0940 − 1.1032) × 0.1 × 100 000 = −92; the short 0.1 at 1.0940 marked
    // at the last ask 1.0932 is +8.
    assert_eq!(r["realised_pnl"], "-92", "{r}");
    assert_eq!(r["total_pnl"], "-84", "{r}");
    let strip = |v: &str| {
        let mut v: Value = serde_json::from_str(v.trim()).expect("json");
        v["elapsed_ms"] = Value::Null;
        v["ticks_per_sec"] = Value::Null;
        v
    };
    assert_eq!(again, 0);
    assert_eq!(strip(&stdout), strip(&stdout2), "deterministic");
    assert_eq!(bad, 2);
    assert!(refused.contains("not a loadable ONNX model"), "{refused}");
}
