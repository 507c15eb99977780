//! `trellis bench training`: training on a year of M1 bars, and what it does to trading meanwhile.
//!
//! - A year of M1 bars (370 000, a synthetic AR(1) series with a little momentum) through
//!   `models::training::train` (four features, five walk-forward folds, then the final fit), timed.
//! - Tick → order latency at 1 000 ticks/s over loopback WebSocket for 10 s, once alone and once while
//!   training runs back to back on a thread of its own at the lowest priority (as a training job does).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{bench_tenant, drive, flip, report_latency, start, strategy};
use crate::domain::tenant::TrainSpec;
use crate::domain::{Bar, Timeframe};
use crate::models::training::{self, Progress};

/// M1 bars in a year of 24-hour trading on 257 days.
const YEAR_OF_M1: usize = 370_000;

fn year_of_bars() -> Vec<Bar> {
    crate::models::synthetic::bars_from_returns(&crate::models::synthetic::ar1_returns(
        YEAR_OF_M1, 0.1, 0.0003, 2026,
    ))
}

/// The training spec of both `bench training` and `bench beside`'s training load.
pub(super) fn spec() -> TrainSpec {
    TrainSpec {
        kind: crate::domain::tenant::ModelKind::Logistic,
        states: 2,
        features: ["log_return_1", "log_return_2", "volatility_20", "rsi_14"]
            .map(String::from)
            .to_vec(),
        horizon_bars: 1,
        folds: 5,
        l2: 1.0,
        upper: 0.55,
        lower: 0.45,
        cost: 0.00005,
    }
}

pub async fn run() -> anyhow::Result<()> {
    let bars = Arc::new(year_of_bars());
    let started = Instant::now();
    let b = bars.clone();
    let trained = training::run_low_priority(move || {
        training::train(&spec(), &b, Timeframe::M1, &Progress::default())
    })
    .await
    .map_err(anyhow::Error::msg)??;
    let took = started.elapsed();
    println!(
        "training: {} M1 bars, {} walk-forward test rows, 5 folds + final fit: {:.2} s; out-of-sample accuracy {:.4} (base rate {:.4}), log-loss {:.4}",
        bars.len(),
        trained.report.test_rows,
        took.as_secs_f64(),
        trained.report.accuracy,
        trained.report.base_rate,
        trained.report.log_loss
    );

    let key = "trk_training1_bench-secret-key";
    let seconds = 10;
    for busy in [false, true] {
        let app = start(&[]).await?;
        app.runtime.strategies.register("flip", flip);
        app.runtime
            .start_tenant(bench_tenant(
                "trainlat",
                key,
                vec![strategy("flip", "flip", "EURUSD")],
            ))
            .await?;
        let stop = Arc::new(AtomicBool::new(false));
        let trainer = busy.then(|| {
            let (stop, bars) = (stop.clone(), bars.clone());
            // As a training job runs: on its own thread at the lowest priority.
            training::run_low_priority(move || {
                let mut runs = 0u32;
                while !stop.load(Ordering::Relaxed) {
                    let p = Progress::default();
                    let _ = training::train(&spec(), &bars, Timeframe::M1, &p);
                    runs += 1;
                }
                runs
            })
        });
        let driven = drive(app.bridge, key, 4343, 1_000, seconds, 10).await?;
        stop.store(true, Ordering::Relaxed);
        let runs = match trainer {
            Some(t) => Some(t.await.map_err(anyhow::Error::msg)?),
            None => None,
        };
        let label = match runs {
            Some(n) => format!("training: tick → order @ 1000 ticks/s while training runs ({n} trainings finished)"),
            None => "training: tick → order @ 1000 ticks/s, no training".to_owned(),
        };
        report_latency(&label, &driven, seconds);
        app.stop().await;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(())
}
