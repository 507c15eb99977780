//! History at scale, through the `trellis` binary as users run it: the formats users have (MT5 exports,
//! HistData, Parquet) give the same trades as trellis's own CSV; bad lines are named; a 10-million-tick
//! stream stays within a memory bound; `trellis optimise` searches, walks forward and writes its report.

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::Value;

fn trellis(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_trellis"))
        .args(args)
        .output()
        .expect("runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn path(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// A deterministic EURUSD walk: (time_msc, bid, ask) in points of 0.00001, ticks 700–1300 ms apart, some
/// ticks moving only the ask (what MT5's export writes with an empty bid).
fn walk(n: usize) -> Vec<(i64, i64, i64)> {
    let mut out = Vec::with_capacity(n);
    let (mut t, mut bid, mut state) = (1_700_000_000_000i64, 110_000i64, 0x2545F4914F6CDD1Du64);
    let mut spread = 2;
    for i in 0..n {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        t += 700 + (state % 600) as i64;
        if i % 7 == 3 {
            spread = if spread == 2 { 3 } else { 2 };
        } else {
            // Never zero: every tick changes its bid or its spread, as a quote of the export does.
            let step = (state >> 20) as i64 % 17 - 8;
            bid += if step == 0 { 1 } else { step };
        }
        out.push((t, bid, bid + spread));
    }
    out
}

fn price(points: i64) -> String {
    format!("{}.{:05}", points / 100_000, points % 100_000)
}

/// `YYYY.MM.DD` and `HH:MM:SS.mmm` of a UTC time, shifted by `offset_min`.
fn mt5_time(ms: i64, offset_min: i64) -> (String, String) {
    let ms = ms + offset_min * 60_000;
    let days = ms.div_euclid(86_400_000);
    let rem = ms.rem_euclid(86_400_000);
    // Days to civil (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (
        format!("{y:04}.{m:02}.{d:02}"),
        format!(
            "{:02}:{:02}:{:02}.{:03}",
            rem / 3_600_000,
            rem / 60_000 % 60,
            rem / 1_000 % 60,
            rem % 1_000
        ),
    )
}

fn trellis_csv(ticks: &[(i64, i64, i64)]) -> String {
    let mut s = String::from("time_msc,bid,ask\n");
    for (t, b, a) in ticks {
        let _ = writeln!(s, "{t},{},{}", price(*b), price(*a));
    }
    s
}

/// MT5's "Export ticks": tab-separated, an unchanged bid or ask left empty, flags 2 (bid) | 4 (ask).
fn mt5_ticks(ticks: &[(i64, i64, i64)]) -> String {
    mt5_ticks_in(ticks, |_| 0)
}

/// [`mt5_ticks`] in a server time whose offset (minutes east of UTC) at UTC time `t` is `offset_min(t)`.
fn mt5_ticks_in(ticks: &[(i64, i64, i64)], offset_min: impl Fn(i64) -> i64) -> String {
    let mut s = String::from("<DATE>\t<TIME>\t<BID>\t<ASK>\t<LAST>\t<VOLUME>\t<FLAGS>\n");
    let mut prev: Option<(i64, i64)> = None;
    for (t, b, a) in ticks {
        let (date, time) = mt5_time(*t, offset_min(*t));
        let bid = if prev.is_some_and(|p| p.0 == *b) {
            String::new()
        } else {
            price(*b)
        };
        let ask = if prev.is_some_and(|p| p.1 == *a) {
            String::new()
        } else {
            price(*a)
        };
        let flags = 2 * u8::from(!bid.is_empty()) + 4 * u8::from(!ask.is_empty());
        let _ = writeln!(s, "{date}\t{time}\t{bid}\t{ask}\t\t\t{flags}");
        prev = Some((*b, *a));
    }
    s
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).expect("written");
    p
}

/// Runs an ema_cross backtest of `input` (plus `extra` arguments) and returns its JSON report and trades.
fn run(dir: &Path, input: &Path, extra: &[&str]) -> (Value, String) {
    let trades = dir.join(format!(
        "{}.trades.csv",
        input.file_name().and_then(|n| n.to_str()).unwrap_or("x")
    ));
    let mut args = vec![
        "backtest",
        "--input",
        path(input),
        "--symbol",
        "EURUSD",
        "--param",
        "fast=3",
        "--param",
        "slow=8",
        "--json",
        "--trades",
        path(&trades),
    ];
    args.extend_from_slice(extra);
    let (code, stdout, stderr) = trellis(&args);
    assert_eq!(code, 0, "{}: {stderr}", input.display());
    let report: Value = serde_json::from_str(stdout.trim()).expect("one JSON object");
    (report, std::fs::read_to_string(&trades).expect("trades"))
}

fn same_run(a: &Value, b: &Value) {
    for field in [
        "ticks",
        "bars",
        "orders",
        "fills",
        "total_pnl",
        "max_drawdown",
        "trades",
        "final_position",
    ] {
        assert_eq!(a[field], b[field], "{field}: {a} vs {b}");
    }
}

#[test]
fn mt5_tick_exports_histdata_and_parquet_give_the_same_trades_as_trellis_csv() {
    let dir = tempfile::tempdir().expect("dir");
    let ticks = walk(30_000);
    let csv = write(dir.path(), "ticks.csv", &trellis_csv(&ticks));
    let (reference, trades) = run(dir.path(), &csv, &[]);
    assert!(
        reference["fills"].as_u64().unwrap_or(0) >= 10,
        "{reference}"
    );

    let mt5 = write(dir.path(), "EURUSD_ticks.csv", &mt5_ticks(&ticks));
    assert!(
        std::fs::read_to_string(&mt5)
            .expect("mt5")
            .contains("\t\t1.1"),
        "the export has ticks with an empty bid"
    );
    let (r, t) = run(dir.path(), &mt5, &[]);
    same_run(&reference, &r);
    assert_eq!(trades, t, "MT5 tick export");

    // HistData: `YYYYMMDD HHMMSSmmm,bid,ask,volume` in EST (UTC−5) without a header.
    let mut hist = String::new();
    for (t, b, a) in &ticks {
        let (date, time) = mt5_time(*t, -300);
        let _ = writeln!(
            hist,
            "{} {},{},{},0",
            date.replace('.', ""),
            time.replace([':', '.'], ""),
            price(*b),
            price(*a)
        );
    }
    let hist = write(dir.path(), "DAT_ASCII_EURUSD_T.csv", &hist);
    let (r, t) = run(dir.path(), &hist, &["--tz", "-05:00"]);
    same_run(&reference, &r);
    assert_eq!(trades, t, "HistData with --tz -05:00");

    // Dukascopy-style: named columns, ask before bid, date-times.
    let mut duka = String::from("Gmt time,Ask,Bid,AskVolume,BidVolume\n");
    for (t, b, a) in &ticks {
        let (date, time) = mt5_time(*t, 0);
        let d: Vec<&str> = date.split('.').collect();
        let _ = writeln!(
            duka,
            "{}.{}.{} {time},{},{},1.0,1.0",
            d[2],
            d[1],
            d[0],
            price(*a),
            price(*b)
        );
    }
    let duka = write(dir.path(), "dukascopy.csv", &duka);
    let (r, t) = run(dir.path(), &duka, &[]);
    same_run(&reference, &r);
    assert_eq!(trades, t, "Dukascopy CSV");

    // Parquet written by `trellis export-ticks` from the MT5 export.
    let parquet = dir.path().join("ticks.parquet");
    let (code, stdout, stderr) = trellis(&[
        "export-ticks",
        "--input",
        path(&mt5),
        "--symbol",
        "EURUSD",
        "--output",
        path(&parquet),
    ]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("wrote 30000 ticks"), "{stdout}");
    let (r, t) = run(dir.path(), &parquet, &[]);
    same_run(&reference, &r);
    assert_eq!(trades, t, "Parquet");
}

#[test]
fn an_mt5_export_in_athens_server_time_across_the_spring_change_gives_the_same_trades_as_utc() {
    // 2026-03-29 01:00 UTC: Athens moves from 03:00 EET (UTC+2) to 04:00 EEST (UTC+3). The walk is moved
    // to start four hours before and runs about eight hours, through the change.
    const CHANGE: i64 = 1_774_746_000_000;
    let dir = tempfile::tempdir().expect("dir");
    let shift = CHANGE - 4 * 3_600_000 - walk(1)[0].0;
    let ticks: Vec<(i64, i64, i64)> = walk(30_000)
        .into_iter()
        .map(|(t, b, a)| (t + shift, b, a))
        .collect();
    assert!(ticks[0].0 < CHANGE && CHANGE < ticks[ticks.len() - 1].0);
    let csv = write(dir.path(), "ticks.csv", &trellis_csv(&ticks));
    let (reference, trades) = run(dir.path(), &csv, &[]);
    assert!(
        reference["fills"].as_u64().unwrap_or(0) >= 10,
        "{reference}"
    );
    let athens = mt5_ticks_in(&ticks, |t| if t < CHANGE { 120 } else { 180 });
    assert!(athens.contains("2026.03.29\t02:59:") && athens.contains("2026.03.29\t04:00:"));
    assert!(
        !athens.contains("2026.03.29\t03:"),
        "no tick in the skipped hour"
    );
    let mt5 = write(dir.path(), "EURUSD_athens.csv", &athens);
    let (r, t) = run(dir.path(), &mt5, &["--tz", "Europe/Athens"]);
    same_run(&reference, &r);
    assert_eq!(trades, t, "MT5 ticks in Europe/Athens");

    // A fixed +02:00 reads the summer hours an hour late: the same ticks, trades at other times.
    let (r, t) = run(dir.path(), &mt5, &["--tz", "+02:00"]);
    assert_eq!(reference["ticks"], r["ticks"]);
    assert_ne!(trades, t, "a fixed offset misreads the summer half");

    let (code, _, stderr) = trellis(&[
        "backtest",
        "--input",
        path(&mt5),
        "--symbol",
        "EURUSD",
        "--tz",
        "Mars/Olympus",
    ]);
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("--tz") && stderr.contains("Mars/Olympus"),
        "{stderr}"
    );
}

#[test]
fn an_mt5_bar_export_backtests_on_bars_as_their_open_low_high_close_ticks_with_the_bars_spread() {
    let dir = tempfile::tempdir().expect("dir");
    // Bars of one minute with their spread in points; each becomes open, low, high, close (bullish) or
    // open, high, low, close (bearish) at +0, +15, +30, +59.999 s, the ask `spread` points above.
    let mut bars = String::from(
        "<DATE>\t<TIME>\t<OPEN>\t<HIGH>\t<LOW>\t<CLOSE>\t<TICKVOL>\t<VOL>\t<SPREAD>\n",
    );
    let mut csv = String::from("time_msc,bid,ask\n");
    let mut open = 110_000i64;
    let t0 = 1_700_006_400_000i64;
    for i in 0..400i64 {
        let t = t0 + i * 60_000;
        let drift = ((i as f64) / 9.0).sin() * 40.0;
        let close = open + drift as i64 + (i % 5) - 2;
        let high = open.max(close) + 3 + i % 4;
        let low = open.min(close) - 2 - i % 3;
        let spread = 1 + i % 3;
        let (date, time) = mt5_time(t, 0);
        let _ = writeln!(
            bars,
            "{date}\t{}\t{}\t{}\t{}\t{}\t{}\t0\t{spread}",
            &time[..8],
            price(open),
            price(high),
            price(low),
            price(close),
            40 + i
        );
        let path = if close >= open {
            [open, low, high, close]
        } else {
            [open, high, low, close]
        };
        for (k, p) in path.iter().enumerate() {
            let at = t + [0, 15_000, 30_000, 59_999][k];
            let _ = writeln!(csv, "{at},{},{}", price(*p), price(p + spread));
        }
        open = close;
    }
    let bars = write(dir.path(), "EURUSD_M1.csv", &bars);
    let csv = write(dir.path(), "bars_as_ticks.csv", &csv);
    let (reference, trades) = run(dir.path(), &csv, &[]);
    assert!(reference["fills"].as_u64().unwrap_or(0) >= 6, "{reference}");
    assert_eq!(reference["ticks"], 1_600);
    let (r, t) = run(dir.path(), &bars, &[]);
    same_run(&reference, &r);
    assert_eq!(trades, t);
}

#[test]
fn every_bad_line_is_named_by_line_column_and_value() {
    let dir = tempfile::tempdir().expect("dir");
    let mt5_head = "<DATE>\t<TIME>\t<BID>\t<ASK>\t<LAST>\t<VOLUME>\t<FLAGS>\n";
    let bars_head = "<DATE>\t<TIME>\t<OPEN>\t<HIGH>\t<LOW>\t<CLOSE>\t<TICKVOL>\t<VOL>\t<SPREAD>\n";
    let cases: [(&str, String, [&str; 3]); 6] = [
        (
            "csv-bid.csv",
            "time_msc,bid,ask\n1700000040000,1.1,1.2\n1700000041000,abc,1.2\n".into(),
            ["line 3", "column bid", "`abc`"],
        ),
        (
            "mt5-ask.csv",
            format!("{mt5_head}2024.01.02\t10:00:00.000\t1.10000\t1.10002\t\t\t6\n2024.01.02\t10:00:01.000\t1.10001\t1.1x\t\t\t6\n"),
            ["line 3", "column <ASK>", "`1.1x`"],
        ),
        (
            "mt5-date.csv",
            format!("{mt5_head}2024.13.02\t10:00:00.000\t1.10000\t1.10002\t\t\t6\n"),
            ["line 2", "column <DATE>", "`2024.13.02`"],
        ),
        (
            "mt5-crossed.csv",
            format!("{mt5_head}2024.01.02\t10:00:00.000\t1.10005\t1.10002\t\t\t6\n"),
            ["line 2", "column <BID>", "`1.10005`"],
        ),
        (
            "bars-high.csv",
            format!("{bars_head}2024.01.02\t10:00:00\t1.1\t1.1a\t1.0\t1.05\t10\t0\t2\n"),
            ["line 2", "column <HIGH>", "`1.1a`"],
        ),
        (
            "histdata.csv",
            "20240102 100000000,1.10000,1.10002,0\n20240102 100001000,1.10001,,0\n".into(),
            ["line 2", "column 3", "``"],
        ),
    ];
    for (name, text, expected) in cases {
        let file = write(dir.path(), name, &text);
        let (code, _, stderr) =
            trellis(&["backtest", "--input", path(&file), "--symbol", "EURUSD"]);
        assert_eq!(code, 2, "{name}: {stderr}");
        for e in expected {
            assert!(stderr.contains(e), "{name}: `{e}` not in {stderr}");
        }
    }
}

#[test]
fn ten_million_streamed_ticks_stay_under_a_hundred_megabytes_resident() {
    // A command-line run that touches no store: the real profile would only repeat it.
    if crate::helpers::real_profile() {
        return;
    }
    const N: u64 = 10_000_000;
    let mut child = Command::new(env!("CARGO_BIN_EXE_trellis"))
        .args([
            "backtest", "--input", "-", "--symbol", "EURUSD", "--param", "fast=5", "--param",
            "slow=20", "--json",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starts");
    // The child's peak resident set as its own /proc/<pid>/status says.
    let watcher = trellis::sim::node::watch_peak_rss(child.id());
    let mut stdin = std::io::BufWriter::with_capacity(1 << 20, child.stdin.take().expect("stdin"));
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(b"time_msc,bid,ask\n");
        let mut line = String::with_capacity(64);
        let (mut bid, mut state) = (110_000i64, 0x9E3779B97F4A7C15u64);
        for i in 0..N {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            bid += (state % 9) as i64 - 4;
            line.clear();
            let _ = writeln!(
                line,
                "{},{},{}",
                1_700_000_000_000 + i as i64 * 250,
                price(bid),
                price(bid + 2)
            );
            if stdin.write_all(line.as_bytes()).is_err() {
                break;
            }
        }
        let _ = stdin.flush();
    });
    let mut stdout = String::new();
    let mut out = child.stdout.take().expect("stdout");
    let reader = std::thread::spawn(move || {
        let _ = std::io::Read::read_to_string(&mut out, &mut stdout);
        stdout
    });
    writer.join().expect("writer");
    let exit = child.wait().expect("waited");
    let peak_kb = watcher.join().expect("watcher");
    let stdout = reader.join().expect("reader");
    assert!(exit.success(), "{exit:?}");
    let report: Value = serde_json::from_str(stdout.trim()).expect("json report");
    assert_eq!(report["ticks"], N, "{report}");
    assert!(report["fills"].as_u64().unwrap_or(0) > 100, "{report}");
    let peak_mb = peak_kb as f64 / 1024.0;
    assert!(peak_mb > 1.0, "VmHWM was read");
    println!("10 000 000 streamed ticks: peak resident {peak_mb:.1} MB");
    assert!(peak_mb < 100.0, "peak resident {peak_mb:.1} MB");
}

/// Ticks whose M1 closes follow a slow sine: trend followers profit with some EMA pairs and lose with
/// others, so the search has something to find.
fn sine_csv(dir: &Path, minutes: i64) -> PathBuf {
    let mut s = String::from("time_msc,bid,ask\n");
    let t0 = 1_700_006_400_000i64;
    for m in 0..minutes {
        for k in 0..4 {
            let x = (m * 4 + k) as f64;
            let bid = 110_000 + ((x / 150.0).sin() * 300.0 + (x / 11.0).sin() * 25.0) as i64;
            let _ = writeln!(
                s,
                "{},{},{}",
                t0 + m * 60_000 + k * 15_000,
                price(bid),
                price(bid + 2)
            );
        }
    }
    write(dir, "sine.csv", &s)
}

#[test]
fn trellis_optimise_searches_by_grid_and_genetic_walks_forward_and_writes_a_self_contained_report()
{
    if crate::helpers::real_profile() {
        return;
    }
    let dir = tempfile::tempdir().expect("dir");
    let csv = sine_csv(dir.path(), 6 * 24 * 60);
    let common = [
        "optimise",
        "--input",
        path(&csv),
        "--symbol",
        "EURUSD",
        "--param",
        "fast=2:12:2",
        "--param",
        "slow=14:40:2",
        "--json",
    ];
    let grid_report = dir.path().join("grid.html");
    let (code, stdout, stderr) = trellis(
        &[
            &common[..],
            &[
                "--method",
                "grid",
                "--top",
                "3",
                "--report",
                path(&grid_report),
            ],
        ]
        .concat(),
    );
    assert_eq!(code, 0, "{stderr}");
    let grid: Value = serde_json::from_str(stdout.trim()).expect("json");
    assert_eq!(grid["runs"], 6 * 14);
    let best = grid["results"][0].clone();
    let best_score = best["score"].as_f64().expect("scored");
    assert_eq!(
        best["score"].as_f64(),
        best["report"]["total_pnl"]
            .as_str()
            .and_then(|s| s.parse().ok())
    );

    // The genetic search with a seed: the same answer twice, close to the grid's best.
    let ga_args = [
        &common[..],
        &[
            "--method",
            "genetic",
            "--population",
            "16",
            "--seed",
            "7",
            "--top",
            "1",
        ],
    ]
    .concat();
    let (code, a, stderr) = trellis(&ga_args);
    assert_eq!(code, 0, "{stderr}");
    let (_, b, _) = trellis(&ga_args);
    let (a, b): (Value, Value) = (
        serde_json::from_str(a.trim()).expect("json"),
        serde_json::from_str(b.trim()).expect("json"),
    );
    // Everything but the wall-clock figures is the same.
    use crate::helpers::ranked;
    assert!(!ranked(&a).is_empty(), "{a}");
    assert_eq!(ranked(&a), ranked(&b));
    let ga_best = a["results"][0]["score"].as_f64().expect("scored");
    assert!(
        ga_best >= best_score - 0.01 * best_score.abs(),
        "{ga_best} vs {best_score}"
    );

    // Walk-forward: rolling windows of 2 days in sample, 1 day out of sample.
    let report = dir.path().join("wf.html");
    let (code, stdout, stderr) = trellis(
        &[
            &common[..],
            &[
                "--in-sample",
                "2d",
                "--out-of-sample",
                "1d",
                "--report",
                path(&report),
            ],
        ]
        .concat(),
    );
    assert_eq!(code, 0, "{stderr}");
    let wf: Value = serde_json::from_str(stdout.trim()).expect("json");
    let windows = wf["walk_forward"]["windows"].as_array().expect("windows");
    assert_eq!(windows.len(), 4, "{wf}");
    for pair in windows.windows(2) {
        assert_eq!(
            pair[0]["bounds"]["out_to_ms"],
            pair[1]["bounds"]["out_from_ms"]
        );
    }
    let out_sum: f64 = windows
        .iter()
        .filter_map(|w| w["out_net_profit"].as_f64())
        .sum();
    let stitched = wf["walk_forward"]["out_net_profit"].as_f64().expect("net");
    assert!((out_sum - stitched).abs() < 1e-6, "{out_sum} vs {stitched}");

    // The grid's report: the best run's equity and drawdown and the parameter heatmap; the walk-forward's:
    // the stitched out-of-sample curve and the efficiency. Neither refers to anything outside itself.
    let grid_html = std::fs::read_to_string(&grid_report).expect("grid report");
    assert!(
        grid_html.matches("<svg").count() >= 3,
        "equity, drawdown, heatmap"
    );
    let html = std::fs::read_to_string(&report).expect("report");
    assert!(html.contains("<svg"), "the stitched curve");
    assert!(html.to_lowercase().contains("efficiency"));
    for page in [&grid_html, &html] {
        for external in ["<script", "src=", "href=", "http", "url("] {
            assert!(
                !page.contains(external),
                "the report refers outside: {external}"
            );
        }
    }
}

#[test]
fn a_portfolio_runs_strategies_on_two_symbols_through_one_ledger_and_one_risk_gate() {
    let dir = tempfile::tempdir().expect("dir");
    // Two symbols interleaved in one file, as a terminal streams them.
    let eu = walk(20_000);
    let mut csv = String::from("time_msc,bid,ask,symbol\n");
    for (t, b, a) in &eu {
        let _ = writeln!(csv, "{t},{},{},EURUSD", price(*b), price(*a));
        // GBPUSD moves against EURUSD, 137 ms later.
        let gb = 254_000 - b;
        let _ = writeln!(csv, "{},{},{},GBPUSD", t + 137, price(gb), price(gb + 3));
    }
    let ticks = write(dir.path(), "two.csv", &csv);
    let spec = |risk: &str| {
        format!(
            "balance = 50000\n{risk}\n\
             [[strategies]]\nid = \"eu\"\nkind = \"ema_cross\"\nsymbol = \"EURUSD\"\ntimeframe = \"M1\"\nparams = {{ fast = 3, slow = 8 }}\n\
             [[strategies]]\nid = \"gu\"\nkind = \"ema_cross\"\nsymbol = \"GBPUSD\"\ntimeframe = \"M5\"\nvolume = 0.3\nparams = {{ fast = 2, slow = 5 }}\n"
        )
    };
    let free = write(dir.path(), "free.toml", &spec(""));
    let report = dir.path().join("portfolio.html");
    let (code, stdout, stderr) = trellis(&[
        "backtest",
        "--input",
        path(&ticks),
        "--spec",
        path(&free),
        "--json",
        "--report",
        path(&report),
    ]);
    assert_eq!(code, 0, "{stderr}");
    let p: Value = serde_json::from_str(stdout.trim()).expect("json");
    let legs = p["strategies"].as_array().expect("strategies");
    assert_eq!(legs.len(), 2);
    let num = |v: &Value| {
        v.as_str()
            .and_then(|s| s.parse::<f64>().ok())
            .unwrap_or(f64::NAN)
    };
    let sum_pnl: f64 = legs.iter().map(|l| num(&l["total_pnl"])).sum();
    assert!(
        (sum_pnl - num(&p["total"]["total_pnl"])).abs() < 1e-6,
        "{p}"
    );
    let sum_fills: u64 = legs.iter().filter_map(|l| l["fills"].as_u64()).sum();
    assert_eq!(p["total"]["fills"].as_u64(), Some(sum_fills));
    assert_eq!(p["total"]["ticks"], 40_000);

    // Without a shared limit, each strategy does exactly what it does alone.
    for (leg, symbol, tf, fast, slow, volume) in [
        (&legs[0], "EURUSD", "M1", "3", "8", "0.1"),
        (&legs[1], "GBPUSD", "M5", "2", "5", "0.3"),
    ] {
        let (code, alone, stderr) = trellis(&[
            "backtest",
            "--input",
            path(&ticks),
            "--symbol",
            symbol,
            "--timeframe",
            tf,
            "--param",
            &format!("fast={fast}"),
            "--param",
            &format!("slow={slow}"),
            "--volume",
            volume,
            "--json",
        ]);
        assert_eq!(code, 0, "{stderr}");
        let alone: Value = serde_json::from_str(alone.trim()).expect("json");
        assert!(alone["fills"].as_u64().unwrap_or(0) >= 4, "{alone}");
        for field in [
            "fills",
            "orders",
            "total_pnl",
            "trades",
            "final_position",
            "max_drawdown",
        ] {
            assert_eq!(leg[field], alone[field], "{symbol} {field}");
        }
    }

    // One risk gate: at most one open position in the account, so each strategy is refused while the
    // other holds one.
    let limited = write(
        dir.path(),
        "limited.toml",
        &spec("[risk]\nmax_open_positions = 1"),
    );
    let (code, stdout, stderr) = trellis(&[
        "backtest",
        "--input",
        path(&ticks),
        "--spec",
        path(&limited),
        "--json",
    ]);
    assert_eq!(code, 0, "{stderr}");
    let l: Value = serde_json::from_str(stdout.trim()).expect("json");
    assert!(
        l["total"]["orders_rejected"].as_u64().unwrap_or(0) > 0,
        "{l}"
    );
    assert!(
        l["total"]["fills"].as_u64() < p["total"]["fills"].as_u64(),
        "{l} against {p}"
    );

    let html = std::fs::read_to_string(&report).expect("report");
    assert!(html.contains("eu (ema_cross EURUSD M1)") && html.contains("gu (ema_cross GBPUSD M5)"));

    // A spec naming a timeframe that does not exist is refused with its place.
    let bad = write(
        dir.path(),
        "bad.toml",
        &spec("").replace("\"M5\"", "\"M7\""),
    );
    let (code, _, stderr) = trellis(&["backtest", "--input", path(&ticks), "--spec", path(&bad)]);
    assert_eq!(code, 2);
    assert!(stderr.contains("strategies[1].timeframe: `M7`"), "{stderr}");
}
