//! `trellis bench history`: backtesting at scale.
//!
//! - reading 1 000 000 ticks: trellis CSV, MT5 tick export and Parquet (files written by the bench);
//! - a 1 000-combination grid of `ema_cross` on those 1 000 000 ticks, on every core;
//! - 100 000 000 ticks streamed through `trellis backtest --input -` (a child process fed by a pipe, no file
//!   on disk): wall time and the child's peak resident memory (VmHWM from its /proc status).
//!
//! `TRELLIS_BENCH_STREAM_TICKS` changes the streamed count (e.g. 10 000 000 for a quick run).

use std::fmt::Write as _;
use std::io::Write as _;
use std::process::{Command, Stdio};
use std::time::Instant;

use rust_decimal::Decimal;

use crate::backtest::history::{self, HistoryOptions};
use crate::backtest::optimise::{
    Constraints, Control, Dimension, Method, Objective, Space, StrategyRuns,
};
use crate::backtest::parquet::{write_ticks, ParquetTicks};
use crate::backtest::tape::History;
use crate::backtest::BacktestConfig;
use crate::domain::{Symbol, Tick, Timeframe};
use crate::sim::feed::RandomWalk;
use crate::strategies::{Params, StrategyRegistry};

fn walk(n: usize) -> Vec<Tick> {
    RandomWalk::new(
        RandomWalk::default_symbols(&["EURUSD".into()]),
        1_700_000_040_000,
        250,
        1,
    )
    .take(n)
    .collect()
}

pub async fn run() -> anyhow::Result<()> {
    let ticks = walk(1_000_000);
    let dir = super::tempfile_dir()?;
    read_formats(&dir, &ticks)?;
    grid(&ticks)?;
    stream()?;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

fn read_formats(dir: &std::path::Path, ticks: &[Tick]) -> anyhow::Result<()> {
    let mut csv = String::with_capacity(ticks.len() * 32);
    csv.push_str("time_msc,bid,ask\n");
    let mut mt5 = String::with_capacity(ticks.len() * 40);
    mt5.push_str("<DATE>\t<TIME>\t<BID>\t<ASK>\t<LAST>\t<VOLUME>\t<FLAGS>\n");
    for t in ticks {
        let _ = writeln!(csv, "{},{},{}", t.time_msc, t.bid, t.ask);
        let s = crate::backtest::report::date_time(t.time_msc);
        // `YYYY-MM-DD HH:MM` → MT5's `YYYY.MM.DD` and `HH:MM:SS.mmm`.
        let (date, hm) = s.split_once(' ').unwrap_or((&s, "00:00"));
        let ms = t.time_msc.rem_euclid(60_000);
        let _ = writeln!(
            mt5,
            "{}\t{hm}:{:02}.{:03}\t{}\t{}\t\t\t6",
            date.replace('-', "."),
            ms / 1000,
            ms % 1000,
            t.bid,
            t.ask
        );
    }
    let csv_path = dir.join("ticks.csv");
    let mt5_path = dir.join("ticks-mt5.csv");
    std::fs::write(&csv_path, csv)?;
    std::fs::write(&mt5_path, mt5)?;
    let parquet_path = dir.join("ticks.parquet");
    let file = std::io::BufWriter::new(std::fs::File::create(&parquet_path)?);
    write_ticks(file, ticks.iter().cloned().map(Ok), false).map_err(|e| anyhow::anyhow!("{e}"))?;
    let options = HistoryOptions {
        symbol: Some("EURUSD".into()),
        ..HistoryOptions::default()
    };
    for (name, path) in [("trellis CSV", &csv_path), ("MT5 tick export", &mt5_path)] {
        let mut best = f64::MAX;
        for _ in 0..3 {
            let started = Instant::now();
            let n = history::open(path, options.clone())
                .map_err(|e| anyhow::anyhow!("{e}"))?
                .try_fold(0u64, |n, t| t.map(|_| n + 1))
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            anyhow::ensure!(n == ticks.len() as u64, "{name}: read {n} ticks");
            best = best.min(started.elapsed().as_secs_f64());
        }
        println!(
            "history: reading 1 000 000 ticks of {name} ({:.1} MB): {:.0} ms ({:.1} M ticks/s)",
            std::fs::metadata(path)?.len() as f64 / 1e6,
            best * 1e3,
            ticks.len() as f64 / best / 1e6
        );
    }
    let mut best = f64::MAX;
    for _ in 0..3 {
        let started = Instant::now();
        let n = ParquetTicks::open(&parquet_path, Some("EURUSD".into()), 5)
            .map_err(|e| anyhow::anyhow!("{e}"))?
            .try_fold(0u64, |n, t| t.map(|_| n + 1))
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        anyhow::ensure!(n == ticks.len() as u64, "parquet: read {n} ticks");
        best = best.min(started.elapsed().as_secs_f64());
    }
    println!(
        "history: reading 1 000 000 ticks of Parquet (zstd, {:.1} MB): {:.0} ms ({:.1} M ticks/s)",
        std::fs::metadata(&parquet_path)?.len() as f64 / 1e6,
        best * 1e3,
        ticks.len() as f64 / best / 1e6
    );
    Ok(())
}

fn grid(ticks: &[Tick]) -> anyhow::Result<()> {
    let symbol = Symbol::new("EURUSD");
    let started = Instant::now();
    let history = History::collect(&symbol, ticks.iter().cloned().map(Ok::<_, ()>))
        .map_err(|_| anyhow::anyhow!("history"))?;
    let tape = history.tape(Timeframe::M1);
    let decoded = started.elapsed();
    // 25 fast × 40 slow = 1 000 combinations (fast < slow everywhere).
    let space = Space::new(vec![
        Dimension::parse("fast=2:26:1").map_err(anyhow::Error::msg)?,
        Dimension::parse("slow=30:108:2").map_err(anyhow::Error::msg)?,
    ])
    .map_err(anyhow::Error::msg)?;
    anyhow::ensure!(space.size() == 1_000, "grid of {}", space.size());
    let template = BacktestConfig::new("EURUSD", "ema_cross", Params::new(), Timeframe::M1);
    let registry = StrategyRegistry::default();
    let runs = StrategyRuns {
        template: &template,
        registry: &registry,
        objective: Objective::NetProfit,
        constraints: &Constraints::default(),
        space: &space,
    };
    let started = Instant::now();
    let all = runs
        .optimise(&tape, &Method::Grid, 1, &Control::default())
        .map_err(|_| anyhow::anyhow!("cancelled"))?;
    let elapsed = started.elapsed();
    let best = all.first().map(|c| space.params(&c.values));
    println!(
        "optimise: 1 000-combination grid of ema_cross on 1 000 000 ticks ({} M1 bars) on {} threads: {:.2} s \
         ({:.1} ms per run; decoding once {:.0} ms); best {best:?} score {:?}",
        tape.bars(),
        rayon::current_num_threads(),
        elapsed.as_secs_f64(),
        elapsed.as_secs_f64() * 1e3 / all.len() as f64 * rayon::current_num_threads() as f64,
        decoded.as_secs_f64() * 1e3,
        all.first().and_then(|c| c.score)
    );
    Ok(())
}

fn stream() -> anyhow::Result<()> {
    let n: u64 = std::env::var("TRELLIS_BENCH_STREAM_TICKS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000_000);
    let exe = std::env::current_exe()?;
    let mut child = Command::new(exe)
        .args([
            "backtest", "--input", "-", "--symbol", "EURUSD", "--param", "fast=10", "--param",
            "slow=20", "--json",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()?;
    let watcher = crate::sim::node::watch_peak_rss(child.id());
    let started = Instant::now();
    let stdin = child
        .stdin
        .take()
        .ok_or_else(|| anyhow::anyhow!("no stdin"))?;
    let writer = std::thread::spawn(move || -> std::io::Result<()> {
        let mut out = std::io::BufWriter::with_capacity(1 << 20, stdin);
        out.write_all(b"time_msc,bid,ask\n")?;
        let mut line = String::with_capacity(64);
        let point = Decimal::new(1, 5);
        let mut walk = RandomWalk::new(
            vec![(Symbol::new("EURUSD"), Decimal::new(110_000, 5), point)],
            1_500_000_000_000,
            25,
            3,
        );
        for _ in 0..n {
            let Some(t) = walk.next() else { break };
            line.clear();
            let _ = writeln!(line, "{},{},{}", t.time_msc, t.bid, t.ask);
            out.write_all(line.as_bytes())?;
        }
        out.flush()
    });
    let output = child.wait_with_output()?;
    let wrote = writer
        .join()
        .map_err(|_| anyhow::anyhow!("writer panicked"))?;
    let elapsed = started.elapsed();
    let peak_kb = watcher.join().map_err(|_| anyhow::anyhow!("watcher"))?;
    wrote?;
    anyhow::ensure!(
        output.status.success(),
        "the backtest failed: {:?}",
        output.status
    );
    let report: serde_json::Value = serde_json::from_slice(&output.stdout)?;
    println!(
        "stream: {} ticks through `trellis backtest --input -` in {:.1} s ({:.1} M ticks/s, the pipe's writer included), \
         {} bars, {} fills; peak resident {:.1} MB",
        report["ticks"],
        elapsed.as_secs_f64(),
        n as f64 / elapsed.as_secs_f64() / 1e6,
        report["bars"],
        report["fills"],
        peak_kb as f64 / 1024.0
    );
    Ok(())
}
