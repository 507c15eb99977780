//! `trellis backtest --strategy wasm --module FILE.wasm`: the `ema_cross` module, written from its text
//! to a file, trades exactly as the native `ema_cross`, and the same run twice gives the same trades.

use std::path::Path;

use clap::Parser;

use super::{backtest, BacktestArgs};
use crate::strategies::wasm::fixtures::{ema_cross_manifest, wasm, EMA_CROSS};

#[derive(Parser)]
pub(super) struct Cli {
    #[command(flatten)]
    args: BacktestArgs,
}

/// `n` ticks five a minute, a random walk around 1.1 with a two-point spread, from the generator's `seed`.
pub(super) fn ticks_csv(seed: u64, n: i64) -> String {
    let mut csv = String::from("time_msc,bid,ask\n");
    let mut x: u64 = seed;
    let mut bid: i64 = 110_000;
    for i in 0..n {
        x = x
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        bid += (x >> 33) as i64 % 21 - 10;
        let t = 1_700_000_000_000 + i * 12_000;
        csv.push_str(&format!(
            "{t},{}.{:05},{}.{:05}\n",
            bid / 100_000,
            bid % 100_000,
            (bid + 2) / 100_000,
            (bid + 2) % 100_000
        ));
    }
    csv
}

/// Runs a backtest of the ticks in `dir` with `args` (the parameters and the strategy) and returns its
/// trades CSV without the client order ids (they carry the strategy's kind).
pub(super) fn trades(dir: &Path, run: &str, args: &[&str]) -> Vec<String> {
    let input = dir.join("ticks.csv");
    let out = dir.join(format!("{run}.csv"));
    let mut argv = vec![
        "trellis",
        "--input",
        input.to_str().expect("path"),
        "--symbol",
        "EURUSD",
        "--json",
        "--trades",
        out.to_str().expect("path"),
    ];
    argv.extend_from_slice(args);
    let cli = Cli::try_parse_from(argv).expect("arguments parse");
    backtest(cli.args).unwrap_or_else(|e| panic!("{run}: the backtest fails: {e}"));
    let text = std::fs::read_to_string(&out).expect("trades written");
    text.lines()
        .map(|line| {
            let mut fields: Vec<&str> = line.split(',').collect();
            fields.remove(2);
            fields.join(",")
        })
        .collect()
}

/// Ten hours of ticks.
fn ten_hours() -> String {
    ticks_csv(7, 3_000)
}

/// The parameters the tests here run with, then the strategy.
fn fast_5_slow_20<'a>(strategy: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec!["--param", "fast=5", "--param", "slow=20"];
    args.extend_from_slice(strategy);
    args
}

#[test]
fn a_backtest_of_the_ema_cross_module_trades_as_the_native_ema_cross_and_repeats_itself() {
    let dir = tempfile::tempdir().expect("dir");
    std::fs::write(dir.path().join("ticks.csv"), ten_hours()).expect("ticks written");
    let module = dir.path().join("ema_cross.wasm");
    std::fs::write(&module, wasm(EMA_CROSS)).expect("module written");
    let manifest = dir.path().join("ema_cross.json");
    let manifest_json = serde_json::to_string(&ema_cross_manifest()).expect("json");
    std::fs::write(&manifest, manifest_json).expect("manifest written");
    let module_args = [
        "--strategy",
        "wasm",
        "--module",
        module.to_str().expect("path"),
        "--module-manifest",
        manifest.to_str().expect("path"),
    ];

    let first = trades(dir.path(), "first", &fast_5_slow_20(&module_args));
    let second = trades(dir.path(), "second", &fast_5_slow_20(&module_args));
    let native = trades(
        dir.path(),
        "native",
        &fast_5_slow_20(&["--strategy", "ema_cross"]),
    );

    assert!(first.len() > 10, "the walk crosses: {} lines", first.len());
    assert_eq!(first, second);
    assert_eq!(first, native);
}

#[test]
fn a_module_that_fails_ends_the_backtest_with_its_message_not_a_crash() {
    let dir = tempfile::tempdir().expect("dir");
    std::fs::write(dir.path().join("ticks.csv"), ten_hours()).expect("ticks written");
    let module = dir.path().join("trap.wasm");
    let bytes = crate::strategies::wasm::fixtures::module(
        "",
        &crate::strategies::wasm::fixtures::on_bar("(unreachable)"),
    );
    std::fs::write(&module, bytes).expect("module written");
    let input = dir.path().join("ticks.csv");
    let argv = [
        "trellis",
        "--input",
        input.to_str().expect("path"),
        "--symbol",
        "EURUSD",
        "--strategy",
        "wasm",
        "--module",
        module.to_str().expect("path"),
    ];
    let cli = Cli::try_parse_from(argv).expect("arguments parse");

    let failed = backtest(cli.args).expect_err("the run stops");

    assert!(failed.0.contains("wasm:trap: on_bar failed"), "{failed}");
}

#[test]
fn a_module_with_a_forbidden_import_is_refused_before_the_run() {
    let dir = tempfile::tempdir().expect("dir");
    let module = dir.path().join("wasi.wasm");
    let bytes = crate::strategies::wasm::fixtures::module(
        r#"(import "wasi_snapshot_preview1" "proc_exit" (func (param i32)))"#,
        &crate::strategies::wasm::fixtures::on_bar("(i32.const 0)"),
    );
    std::fs::write(&module, bytes).expect("module written");
    let argv = [
        "trellis",
        "--input",
        "unused.csv",
        "--symbol",
        "EURUSD",
        "--strategy",
        "wasm",
        "--module",
        module.to_str().expect("path"),
    ];
    let cli = Cli::try_parse_from(argv).expect("arguments parse");

    let refused = backtest(cli.args).expect_err("refused");

    assert!(
        refused.0.contains("wasi_snapshot_preview1.proc_exit"),
        "{refused}"
    );
}
