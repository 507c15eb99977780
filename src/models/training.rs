//! Training on stored bars: a direction classifier with walk-forward validation, exported to ONNX so that
//! a trained model is served exactly like an uploaded one.
//!
//! **Data.** Rows come from the feature library ([`FeatureState`](super::features::FeatureState), the code
//! serving runs), fed the bars in time order: the row at bar `t` is written after bar `t` closed and before
//! any later bar is seen, so no feature can read the future (a test perturbs every later bar and checks the
//! row is unchanged). The label of row `t` is whether the close `horizon` bars later is higher
//! (`direction_probability`'s meaning).
//!
//! **Model.** Logistic regression from `smartcore` (a maintained crate; L-BFGS, L2 penalty) on features
//! standardised with the training mean and deviation. The standardisation is folded into the weights, so
//! the exported ONNX graph is `sigmoid(x · w + b)` on raw features: `MatMul`, `Add`, `Sigmoid`, which
//! tract-onnx runs like any uploaded model. (Tree ensembles from `smartcore` keep their nodes private, so
//! they cannot be exported; they are left out rather than served by a second path.)
//!
//! **Walk-forward.** The rows are cut into `folds + 1` consecutive blocks; fold `k` trains on blocks
//! `0..=k` (anchored) and tests on block `k + 1`. The last `horizon` training rows are purged before each
//! test block, because their labels look into it. Per fold: out-of-sample directional accuracy, the base
//! rate (share of rows that went up — the accuracy of always saying "up"), log-loss, and the annualised
//! Sharpe of `model_signal` trading the block bar by bar (long above `upper`, short below `lower`, flat
//! between) with a cost per unit of position change. The final model is trained on every row.
//!
//! **Honest accuracy.** On a random walk no model has skill, so out-of-sample accuracy must sit at ~50%
//! (skill there is leakage); on a process with learnable structure it must be well above. Both are tests,
//! and their figures are in BENCHMARKS.md.
//!
//! Training is CPU work: callers run it on the blocking pool, never on an actor's thread. It reports
//! progress and stops between folds when cancelled.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use rust_decimal::prelude::ToPrimitive;
use serde::{Deserialize, Serialize};
use smartcore::linalg::basic::arrays::Array;
use smartcore::linalg::basic::matrix::DenseMatrix;
use smartcore::linear::logistic_regression::{LogisticRegression, LogisticRegressionParameters};

use super::drift::Reference;
use super::features::FeatureSet;
use super::manifest::{Manifest, Output};
use crate::domain::tenant::{ModelKind, TrainSpec};
use crate::domain::{Bar, Timeframe};

/// Runs `f` on a thread of its own at the lowest CPU priority (nice 19 on Linux), so that on a machine
/// with few cores the trading threads win every contest for a core; answers `f`'s result.
///
/// A dedicated thread rather than tokio's blocking pool: a pool thread is reused for other work after the
/// job, and an unprivileged process cannot raise a thread's priority back once lowered.
pub async fn run_low_priority<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, String> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("trellis-train".into())
        .spawn(move || {
            lower_this_threads_priority();
            let _ = tx.send(f());
        })
        .map_err(|e| format!("starting the training thread: {e}"))?;
    rx.await
        .map_err(|_| "the training thread ended without an answer (it panicked)".to_owned())
}

/// Lowers the calling thread to nice 19 in the idle scheduling class: for threads that must never take a
/// core from trading (`runtime::priority`).
pub fn lower_this_threads_priority() {
    let niced = crate::runtime::priority::set_this_threads_nice(19);
    if !(niced && crate::runtime::priority::make_this_thread_idle()) {
        tracing::warn!("could not lower a background thread's priority; it competes with trading");
    }
}

/// Bins of the training reference histograms (drift monitoring).
const REFERENCE_BINS: usize = 10;

impl TrainSpec {
    /// Checks the spec; the error names the field.
    pub fn validate(&self) -> Result<FeatureSet, TrainError> {
        let bad = |m: String| TrainError::Spec(m);
        let set = FeatureSet::parse(&self.features).map_err(|e| bad(format!("features: {e}")))?;
        if set.is_empty() {
            return Err(bad("features: at least one".into()));
        }
        if self.horizon_bars == 0 || self.horizon_bars > super::manifest::MAX_HORIZON_BARS {
            return Err(bad(format!(
                "horizon_bars: 1 to {}",
                super::manifest::MAX_HORIZON_BARS
            )));
        }
        if self.kind == ModelKind::RegimeHmm && !(2..=3).contains(&self.states) {
            return Err(bad("states: 2 or 3".into()));
        }
        if !(1..=20).contains(&self.folds) {
            return Err(bad("folds: 1 to 20".into()));
        }
        if !self.l2.is_finite() || self.l2 < 0.0 || self.l2 > 1e6 {
            return Err(bad("l2: from 0 to 1000000".into()));
        }
        if !(0.0..=1.0).contains(&self.lower)
            || !(0.0..=1.0).contains(&self.upper)
            || self.lower > self.upper
        {
            return Err(bad("upper, lower: 0 ≤ lower ≤ upper ≤ 1".into()));
        }
        if !self.cost.is_finite() || !(0.0..0.1).contains(&self.cost) {
            return Err(bad("cost: from 0 to 0.1".into()));
        }
        Ok(set)
    }
}

/// Why training failed.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error("{0}")]
    Spec(String),
    #[error("not enough data: {rows} usable rows, at least {needed} are needed ({why})")]
    TooFewRows {
        rows: usize,
        needed: usize,
        why: &'static str,
    },
    #[error("the labels are all one class: nothing to learn")]
    OneClass,
    #[error("fitting failed: {0}")]
    Fit(String),
    #[error("cancelled")]
    Cancelled,
}

/// Progress of a training run (permille) and its cancellation, shared with whoever watches it.
#[derive(Debug, Default)]
pub struct Progress {
    permille: AtomicU32,
    cancel: AtomicBool,
}

impl Progress {
    pub fn permille(&self) -> u32 {
        self.permille.load(Ordering::Relaxed)
    }
    pub fn cancel(&self) {
        self.cancel.store(true, Ordering::Relaxed);
    }
    pub fn is_cancelled(&self) -> bool {
        self.cancel.load(Ordering::Relaxed)
    }
    fn set(&self, done: usize, of: usize) {
        let p = (done * 1000 / of.max(1)).min(1000) as u32;
        self.permille.store(p, Ordering::Relaxed);
    }
    fn check(&self) -> Result<(), TrainError> {
        if self.is_cancelled() {
            Err(TrainError::Cancelled)
        } else {
            Ok(())
        }
    }
}

/// Rows, labels and returns from bars.
#[derive(Debug, Clone, Default)]
pub struct Dataset {
    /// Features of each usable bar (as `f32`, like serving computes them, widened).
    pub rows: Vec<Vec<f64>>,
    /// Whether the close `horizon` bars later is higher.
    pub labels: Vec<bool>,
    /// The next bar's return (for trading the signal bar by bar).
    pub next_return: Vec<f64>,
    pub bar_open_ms: Vec<i64>,
}

impl Dataset {
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    fn slice(&self, from: usize, to: usize) -> Dataset {
        Dataset {
            rows: self.rows[from..to].to_vec(),
            labels: self.labels[from..to].to_vec(),
            next_return: self.next_return[from..to].to_vec(),
            bar_open_ms: self.bar_open_ms[from..to].to_vec(),
        }
    }
}

/// Builds the dataset: one row per bar whose features are ready and whose label is known.
pub fn dataset(set: &FeatureSet, bars: &[Bar], horizon: usize) -> Dataset {
    let closes: Vec<f64> = bars
        .iter()
        .map(|b| b.close.to_f64().unwrap_or(f64::NAN))
        .collect();
    let mut state = set.state();
    let mut row = vec![0f32; set.len()];
    let mut out = Dataset::default();
    for (t, bar) in bars.iter().enumerate() {
        state.on_bar(bar);
        if t + horizon >= bars.len() || t + 1 >= bars.len() {
            continue;
        }
        if !state.write(&mut row) {
            continue;
        }
        let (now, later, next) = (closes[t], closes[t + horizon], closes[t + 1]);
        if !(now > 0.0 && later.is_finite() && next.is_finite()) {
            continue;
        }
        out.rows.push(row.iter().map(|v| f64::from(*v)).collect());
        out.labels.push(later > now);
        out.next_return.push(next / now - 1.0);
        out.bar_open_ms.push(bar.open_time_ms);
    }
    out
}

/// A fitted direction model on raw features: `P(up) = sigmoid(x · weights + bias)`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Logistic {
    pub weights: Vec<f64>,
    pub bias: f64,
}

impl Logistic {
    /// Fits on standardised rows (L2 penalty `l2`), then folds the standardisation into the weights.
    pub fn fit(rows: &[Vec<f64>], labels: &[bool], l2: f64) -> Result<Self, TrainError> {
        let width = rows.first().map(Vec::len).unwrap_or(0);
        if rows.len() < 2 * width.max(10) {
            return Err(TrainError::TooFewRows {
                rows: rows.len(),
                needed: 2 * width.max(10),
                why: "to fit the model",
            });
        }
        let ups = labels.iter().filter(|l| **l).count();
        if ups == 0 || ups == labels.len() {
            return Err(TrainError::OneClass);
        }
        let n = rows.len() as f64;
        let mut mean = vec![0.0; width];
        for r in rows {
            for (m, x) in mean.iter_mut().zip(r) {
                *m += x / n;
            }
        }
        let mut sd = vec![0.0; width];
        for r in rows {
            for ((s, x), m) in sd.iter_mut().zip(r).zip(&mean) {
                *s += (x - m) * (x - m) / n;
            }
        }
        // A constant column carries nothing: scale 1 keeps it finite (its weight ends near 0 with L2).
        let sd: Vec<f64> = sd
            .into_iter()
            .map(|v| if v.sqrt() > 1e-300 { v.sqrt() } else { 1.0 })
            .collect();
        let mut values = Vec::with_capacity(rows.len() * width);
        for r in rows {
            values.extend(r.iter().zip(&mean).zip(&sd).map(|((x, m), s)| (x - m) / s));
        }
        let x = DenseMatrix::new(rows.len(), width, values, false)
            .map_err(|e| TrainError::Fit(e.to_string()))?;
        let y: Vec<i32> = labels.iter().map(|l| i32::from(*l)).collect();
        let params = LogisticRegressionParameters::default().with_alpha(l2);
        // smartcore checks shapes with a panic here and there; a panic is a failed fit, not a dead worker.
        let fitted =
            crate::runtime::supervisor::contain(|| LogisticRegression::fit(&x, &y, params))
                .map_err(TrainError::Fit)?
                .map_err(|e| TrainError::Fit(e.to_string()))?;
        let coef = fitted.coefficients();
        let intercept = *fitted.intercept().get((0, 0));
        let mut weights = Vec::with_capacity(width);
        let mut bias = intercept;
        for j in 0..width {
            let w = *coef.get((0, j)) / sd[j];
            bias -= w * mean[j];
            weights.push(w);
        }
        if !bias.is_finite() || weights.iter().any(|w| !w.is_finite()) {
            return Err(TrainError::Fit("the fit gave non-finite weights".into()));
        }
        Ok(Self { weights, bias })
    }

    /// P(up) for one row.
    pub fn probability(&self, row: &[f64]) -> f64 {
        let z: f64 = self.bias
            + row
                .iter()
                .zip(&self.weights)
                .map(|(x, w)| x * w)
                .sum::<f64>();
        1.0 / (1.0 + (-z).exp())
    }

    /// The model as an ONNX file: `sigmoid(x · w + b)`.
    pub fn to_onnx(&self) -> Vec<u8> {
        let w: Vec<f32> = self.weights.iter().map(|w| *w as f32).collect();
        super::onnx::logistic_model(&w, self.bias as f32)
    }
}

/// One walk-forward fold's out-of-sample figures.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Fold {
    pub train_rows: usize,
    pub test_rows: usize,
    pub test_from_ms: i64,
    pub test_to_ms: i64,
    pub accuracy: f64,
    /// Share of test rows that went up: what always answering "up" scores.
    pub base_rate: f64,
    pub log_loss: f64,
    /// Annualised Sharpe of `model_signal` trading the block bar by bar, after costs.
    pub sharpe: f64,
    /// Position changes in the block.
    pub trades: usize,
}

/// The last fold's test block as the challenger saw it out of sample: what a promotion compares the
/// champion with, bar by bar.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Holdout {
    pub bar_open_ms: Vec<i64>,
    /// The label: up after the horizon.
    pub labels: Vec<bool>,
    /// The fold model's call (P(up) > 0.5).
    pub called_up: Vec<bool>,
}

/// The walk-forward report, stored with the version (`manifest.validation`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct WalkForward {
    pub folds: Vec<Fold>,
    /// Over every test row of every fold.
    pub accuracy: f64,
    pub base_rate: f64,
    pub log_loss: f64,
    pub sharpe: f64,
    pub test_rows: usize,
}

/// Out-of-sample hits of a model on rows (for comparing two models on the same rows).
pub fn hits(model: &Logistic, data: &Dataset) -> Vec<bool> {
    data.rows
        .iter()
        .zip(&data.labels)
        .map(|(r, up)| (model.probability(r) > 0.5) == *up)
        .collect()
}

fn bars_per_year(tf: Timeframe) -> f64 {
    // Markets trading 24 hours, 252 days.
    252.0 * 86_400_000.0 / tf.millis() as f64
}

/// Scores a model on test rows: (accuracy, base rate, log-loss, Sharpe, trades).
fn score(
    model: &Logistic,
    test: &Dataset,
    spec: &TrainSpec,
    tf: Timeframe,
) -> (f64, f64, f64, f64, usize) {
    let n = test.len().max(1) as f64;
    let mut right = 0usize;
    let mut ups = 0usize;
    let mut loss = 0.0;
    let mut pnl = Vec::with_capacity(test.len());
    let mut position = 0.0f64;
    let mut trades = 0usize;
    for ((row, up), next) in test.rows.iter().zip(&test.labels).zip(&test.next_return) {
        let p = model.probability(row).clamp(1e-12, 1.0 - 1e-12);
        right += usize::from((p > 0.5) == *up);
        ups += usize::from(*up);
        loss -= if *up { p.ln() } else { (1.0 - p).ln() };
        let target = if p > spec.upper {
            1.0
        } else if p < spec.lower {
            -1.0
        } else {
            0.0
        };
        if target != position {
            trades += 1;
        }
        pnl.push(target * next - spec.cost * (target - position).abs());
        position = target;
    }
    let mean = pnl.iter().sum::<f64>() / n;
    let var = pnl.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / n;
    let sharpe = if var > 0.0 {
        mean / var.sqrt() * bars_per_year(tf).sqrt()
    } else {
        0.0
    };
    (right as f64 / n, ups as f64 / n, loss / n, sharpe, trades)
}

/// Walk-forward validation (anchored, purged) of the spec's model on `data`.
pub fn walk_forward(
    data: &Dataset,
    spec: &TrainSpec,
    tf: Timeframe,
    progress: &Progress,
) -> Result<(WalkForward, Holdout), TrainError> {
    let blocks = spec.folds + 1;
    let block = data.len() / blocks;
    let purge = spec.horizon_bars as usize;
    if block < 50 + purge {
        return Err(TrainError::TooFewRows {
            rows: data.len(),
            needed: blocks * (50 + purge),
            why: "for the walk-forward blocks",
        });
    }
    let mut folds = Vec::with_capacity(spec.folds);
    let mut holdout = Holdout::default();
    let (mut total, mut right, mut ups, mut loss, mut sharpe_sum) = (0usize, 0.0, 0.0, 0.0, 0.0);
    for k in 0..spec.folds {
        progress.check()?;
        let test_from = (k + 1) * block;
        let test_to = if k + 1 == spec.folds {
            data.len()
        } else {
            test_from + block
        };
        let train = data.slice(0, test_from - purge);
        let test = data.slice(test_from, test_to);
        let model = Logistic::fit(&train.rows, &train.labels, spec.l2)?;
        let (accuracy, base_rate, log_loss, sharpe, trades) = score(&model, &test, spec, tf);
        if k + 1 == spec.folds {
            holdout = Holdout {
                bar_open_ms: test.bar_open_ms.clone(),
                labels: test.labels.clone(),
                called_up: test
                    .rows
                    .iter()
                    .map(|r| model.probability(r) > 0.5)
                    .collect(),
            };
        }
        let n = test.len() as f64;
        total += test.len();
        right += accuracy * n;
        ups += base_rate * n;
        loss += log_loss * n;
        sharpe_sum += sharpe;
        folds.push(Fold {
            train_rows: train.len(),
            test_rows: test.len(),
            test_from_ms: test.bar_open_ms.first().copied().unwrap_or(0),
            test_to_ms: test.bar_open_ms.last().copied().unwrap_or(0),
            accuracy,
            base_rate,
            log_loss,
            sharpe,
            trades,
        });
        progress.set(k + 1, spec.folds + 1);
    }
    let n = total.max(1) as f64;
    let report = WalkForward {
        accuracy: right / n,
        base_rate: ups / n,
        log_loss: loss / n,
        sharpe: sharpe_sum / spec.folds as f64,
        test_rows: total,
        folds,
    };
    Ok((report, holdout))
}

/// A trained version: the ONNX file and its manifest (features, output, horizon, training reference,
/// metrics and the walk-forward report).
#[derive(Debug, Clone)]
pub struct Trained {
    pub onnx: Vec<u8>,
    pub manifest: Manifest,
    pub model: Logistic,
    pub report: WalkForward,
    pub holdout: Holdout,
}

/// Validates the spec's model walk-forward on `bars`, then trains it on every row.
pub fn train(
    spec: &TrainSpec,
    bars: &[Bar],
    tf: Timeframe,
    progress: &Progress,
) -> Result<Trained, TrainError> {
    let set = spec.validate()?;
    let data = dataset(&set, bars, spec.horizon_bars as usize);
    let (report, holdout) = walk_forward(&data, spec, tf, progress)?;
    progress.check()?;
    let model = Logistic::fit(&data.rows, &data.labels, spec.l2)?;
    let mut reference = BTreeMap::new();
    for (j, name) in spec.features.iter().enumerate() {
        let column: Vec<f64> = data.rows.iter().map(|r| r[j]).collect();
        if let Ok(r) = Reference::from_sample(&column, REFERENCE_BINS) {
            reference.insert(name.clone(), r);
        }
    }
    let outputs: Vec<f64> = data.rows.iter().map(|r| model.probability(r)).collect();
    if let Ok(r) = Reference::from_sample(&outputs, REFERENCE_BINS) {
        reference.insert("output".into(), r);
    }
    let metrics = BTreeMap::from([
        ("wf_accuracy".to_owned(), report.accuracy),
        ("wf_base_rate".to_owned(), report.base_rate),
        ("wf_log_loss".to_owned(), report.log_loss),
        ("wf_sharpe".to_owned(), report.sharpe),
        ("wf_test_rows".to_owned(), report.test_rows as f64),
        ("train_rows".to_owned(), data.len() as f64),
    ]);
    let manifest = Manifest {
        features: spec.features.clone(),
        output: Output::DirectionProbability,
        horizon_bars: spec.horizon_bars,
        reference,
        metrics,
        validation: Some(report.clone()),
        cost: None,
    };
    progress.set(1, 1);
    Ok(Trained {
        onnx: model.to_onnx(),
        manifest,
        model,
        report,
        holdout,
    })
}

/// A fitted regime detector: its file (JSON) and manifest.
#[derive(Debug, Clone)]
pub struct TrainedRegime {
    pub file: Vec<u8>,
    pub manifest: Manifest,
    pub hmm: super::hmm::GaussianHmm,
    pub log_likelihood: f64,
    pub rows: usize,
}

/// Labels of a regime detector's states, calmest first.
pub fn regime_labels(states: usize) -> Vec<String> {
    match states {
        2 => vec!["calm".into(), "volatile".into()],
        _ => (0..states)
            .map(|i| match i {
                0 => "calm".to_owned(),
                i if i + 1 == states => "volatile".to_owned(),
                i => format!("state_{i}"),
            })
            .collect(),
    }
}

/// Fits the spec's regime detector (a Gaussian HMM) on the features of `bars`.
pub fn train_regime(
    spec: &TrainSpec,
    bars: &[Bar],
    progress: &Progress,
) -> Result<TrainedRegime, TrainError> {
    let set = spec.validate()?;
    let data = dataset(&set, bars, 1);
    progress.check()?;
    let opts = super::hmm::FitOptions {
        states: spec.states,
        ..super::hmm::FitOptions::default()
    };
    let fit = super::hmm::GaussianHmm::fit(&data.rows, &opts)
        .map_err(|e| TrainError::Fit(e.to_string()))?;
    progress.check()?;
    let mut reference = BTreeMap::new();
    for (j, name) in spec.features.iter().enumerate() {
        let column: Vec<f64> = data.rows.iter().map(|r| r[j]).collect();
        if let Ok(r) = Reference::from_sample(&column, REFERENCE_BINS) {
            reference.insert(name.clone(), r);
        }
    }
    let file = serde_json::to_vec(&super::onnx::RegimeFile {
        kind: "regime_hmm".into(),
        hmm: fit.model.clone(),
    })
    .map_err(|e| TrainError::Fit(e.to_string()))?;
    let metrics = BTreeMap::from([
        ("log_likelihood".to_owned(), fit.log_likelihood),
        ("iterations".to_owned(), fit.iterations as f64),
        ("train_rows".to_owned(), data.len() as f64),
    ]);
    let manifest = Manifest {
        features: spec.features.clone(),
        output: Output::Class {
            labels: regime_labels(spec.states),
        },
        horizon_bars: 1,
        reference,
        metrics,
        validation: None,
        cost: None,
    };
    progress.set(1, 1);
    Ok(TrainedRegime {
        file,
        manifest,
        hmm: fit.model,
        log_likelihood: fit.log_likelihood,
        rows: data.len(),
    })
}

/// A champion and a challenger judged on the same out-of-sample bars.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Comparison {
    /// Bars both were judged on.
    pub bars: usize,
    pub champion_accuracy: f64,
    pub challenger_accuracy: f64,
    /// Bars the champion got right and the challenger wrong, and the other way round (McNemar's b, c).
    pub champion_only: usize,
    pub challenger_only: usize,
    /// One-sided exact McNemar test: P(challenger_only ≥ c | b + c discordant bars, each side ½).
    pub p_value: f64,
}

/// Compares hits bar by bar (`true` = the call was right).
pub fn compare(champion: &[bool], challenger: &[bool]) -> Comparison {
    let n = champion.len().min(challenger.len());
    let (mut b, mut c, mut right_a, mut right_b) = (0usize, 0usize, 0usize, 0usize);
    for (a, x) in champion.iter().zip(challenger).take(n) {
        right_a += usize::from(*a);
        right_b += usize::from(*x);
        match (a, x) {
            (true, false) => b += 1,
            (false, true) => c += 1,
            _ => {}
        }
    }
    Comparison {
        bars: n,
        champion_accuracy: right_a as f64 / n.max(1) as f64,
        challenger_accuracy: right_b as f64 / n.max(1) as f64,
        champion_only: b,
        challenger_only: c,
        p_value: binomial_upper_tail(b + c, c),
    }
}

/// P(X ≥ k) for X ~ Binomial(n, ½), in log space (exact for any n a test window has).
fn binomial_upper_tail(n: usize, k: usize) -> f64 {
    if k == 0 {
        return 1.0;
    }
    if k > n {
        return 0.0;
    }
    let ln_half_n = n as f64 * std::f64::consts::LN_2;
    // ln C(n, i) by the running product, summed with log-sum-exp.
    let mut ln_c = 0.0f64; // ln C(n, 0)
    let mut terms = Vec::with_capacity(n - k + 1);
    for i in 0..=n {
        if i > 0 {
            ln_c += ((n - i + 1) as f64).ln() - (i as f64).ln();
        }
        if i >= k {
            terms.push(ln_c - ln_half_n);
        }
    }
    let max = terms.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let sum: f64 = terms.iter().map(|t| (t - max).exp()).sum();
    (max + sum.ln()).exp().min(1.0)
}

/// Whether a challenger replaces the champion: better out of sample by at least `min_improvement`
/// (accuracy points) and significantly so (`p_value < alpha`). The reason says which held.
pub fn decide(cmp: &Comparison, min_improvement: f64, alpha: f64) -> (bool, String) {
    let gain = cmp.challenger_accuracy - cmp.champion_accuracy;
    if cmp.bars == 0 {
        return (false, "no common out-of-sample bars to compare on".into());
    }
    if gain < min_improvement {
        return (
            false,
            format!(
                "the challenger's accuracy {:.4} is not {min_improvement} above the champion's {:.4}",
                cmp.challenger_accuracy, cmp.champion_accuracy
            ),
        );
    }
    if cmp.p_value >= alpha {
        return (
            false,
            format!(
                "better by {gain:.4} but not significantly (McNemar p = {:.4} ≥ {alpha}; {} vs {} discordant bars)",
                cmp.p_value, cmp.challenger_only, cmp.champion_only
            ),
        );
    }
    (
        true,
        format!(
            "better by {gain:.4} (accuracy {:.4} vs {:.4}), McNemar p = {:.2e} < {alpha}",
            cmp.challenger_accuracy, cmp.champion_accuracy, cmp.p_value
        ),
    )
}

/// A loaded version's up/down call per bar (by open time), computed with the serving feature library:
/// P(up) > 0.5 for `direction_probability`, a positive value for `expected_return`; `None` for class
/// outputs, which have no direction.
pub fn calls(
    version: &super::deployment::LoadedVersion,
    bars: &[Bar],
) -> Option<std::collections::HashMap<i64, bool>> {
    let up = match version.manifest.output {
        Output::DirectionProbability => 0.5,
        Output::ExpectedReturn => 0.0,
        Output::Class { .. } => return None,
    };
    let mut state = version.features.state();
    let mut row = vec![0f32; version.features.len()];
    let mut run = version.model.inference().ok()?;
    let mut out = std::collections::HashMap::with_capacity(bars.len());
    for bar in bars {
        state.on_bar(bar);
        if !state.write(&mut row) {
            continue;
        }
        if let Ok(values) = run.run(&row) {
            if let Some(v) = version
                .manifest
                .output
                .value(values)
                .filter(|v| v.is_finite())
            {
                out.insert(bar.open_time_ms, v > up);
            }
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use rust_decimal::Decimal;

    use crate::models::synthetic::{bars_from_returns, normal};

    /// AR(1) log returns with coefficient `phi` (0 = a random walk), sd 0.0005.
    fn ar1(n: usize, phi: f64, seed: u64) -> Vec<f64> {
        crate::models::synthetic::ar1_returns(n, phi, 0.0005, seed)
    }

    fn spec(features: &[&str]) -> TrainSpec {
        TrainSpec {
            kind: ModelKind::Logistic,
            states: 2,
            features: features.iter().map(|s| (*s).to_owned()).collect(),
            horizon_bars: 1,
            folds: 4,
            l2: 1.0,
            upper: 0.55,
            lower: 0.45,
            cost: 0.0,
        }
    }

    #[test]
    fn on_a_random_walk_out_of_sample_accuracy_is_chance_and_on_an_autoregressive_series_it_is_well_above(
    ) {
        let features = ["log_return_1", "log_return_2", "volatility_10", "rsi_14"];
        let progress = Progress::default();
        let walk = bars_from_returns(&ar1(60_000, 0.0, 7));
        let structured = bars_from_returns(&ar1(60_000, 0.4, 8));

        let chance = train(&spec(&features), &walk, Timeframe::M1, &progress).expect("trains");
        let skill = train(&spec(&features), &structured, Timeframe::M1, &progress).expect("trains");

        eprintln!(
            "honest accuracy: random walk {:.4} (base rate {:.4}, Sharpe {:.2}); AR(1) φ=0.4 {:.4} (base rate {:.4}, Sharpe {:.2}); {} test rows each",
            chance.report.accuracy,
            chance.report.base_rate,
            chance.report.sharpe,
            skill.report.accuracy,
            skill.report.base_rate,
            skill.report.sharpe,
            skill.report.test_rows
        );
        // ~48 000 test rows: σ of an accuracy at 0.5 is 0.0023, so ±0.015 is over 6σ.
        assert!(
            (chance.report.accuracy - 0.5).abs() < 0.015,
            "random walk: {:?}",
            chance.report
        );
        // AR(1) with φ = 0.4: P(next return has the sign of φ·r) = 1/2 + asin(0.4)/π ≈ 0.631.
        assert!(
            skill.report.accuracy > 0.6,
            "AR(1) φ = 0.4: {:?}",
            skill.report
        );
        assert!(skill.report.sharpe > chance.report.sharpe);
        assert_eq!(skill.manifest.output, Output::DirectionProbability);
        assert!(skill.manifest.reference.contains_key("output"));
        assert_eq!(skill.report.folds.len(), 4);
    }

    #[test]
    fn no_feature_row_reads_a_bar_after_its_own() {
        let set = FeatureSet::parse(
            &[
                "return_1",
                "log_return_3",
                "volatility_5",
                "rsi_14",
                "ema_ratio_5_20",
                "atr_14",
                "bar_range",
                "tod_sin",
                "dow_cos",
            ]
            .map(String::from),
        )
        .expect("features");
        let bars = bars_from_returns(&ar1(400, 0.2, 3));
        let full = dataset(&set, &bars, 1);
        for cut in [60usize, 150, 300] {
            // Every bar after `cut` replaced by something else entirely.
            let mut changed = bars.clone();
            for b in changed.iter_mut().skip(cut + 1) {
                b.close *= Decimal::new(13, 1);
                b.high *= Decimal::new(14, 1);
            }
            let other = dataset(&set, &changed, 1);
            let at = full
                .bar_open_ms
                .iter()
                .position(|t| *t == bars[cut].open_time_ms)
                .expect("row at cut");
            assert_eq!(full.rows[at], other.rows[at], "row at bar {cut}");
            assert_eq!(full.rows[..at], other.rows[..at]);
        }
    }

    #[test]
    fn the_exported_onnx_model_gives_the_fitted_probabilities() {
        let bars = bars_from_returns(&ar1(5_000, 0.4, 11));
        let s = spec(&["log_return_1", "rsi_14"]);
        let trained = train(&s, &bars, Timeframe::M1, &Progress::default()).expect("trains");
        let onnx = crate::models::onnx::OnnxModel::load(&trained.onnx, 2).expect("loads");
        let version = crate::models::deployment::LoadedVersion::from_bytes(
            &trained.onnx,
            trained.manifest.clone(),
            1.0,
        )
        .expect("a valid version");
        let served = calls(&version, &bars).expect("direction calls");
        assert!(trained
            .holdout
            .bar_open_ms
            .iter()
            .all(|t| served.contains_key(t)));
        let mut run = onnx.inference().expect("inference");
        let data = dataset(&s.validate().expect("spec"), &bars, 1);
        for (row, t) in data.rows.iter().zip(&data.bar_open_ms).step_by(97) {
            let f: Vec<f32> = row.iter().map(|x| *x as f32).collect();
            let got = f64::from(run.run(&f).expect("runs")[0]);
            let want = trained.model.probability(row);
            assert!((got - want).abs() < 1e-4, "onnx {got}, fitted {want}");
            if (want - 0.5).abs() > 1e-3 {
                assert_eq!(served[t], want > 0.5, "served call at {t}");
            }
        }
        // Momentum: a positive last return makes "up" more likely.
        assert!(trained.model.weights[0] > 0.0, "{:?}", trained.model);
    }

    #[test]
    fn training_refuses_bad_specs_and_too_little_data_naming_the_problem_and_stops_when_cancelled()
    {
        let bars = bars_from_returns(&ar1(3_000, 0.1, 5));
        let p = Progress::default();
        let bad = |s: TrainSpec| {
            train(&s, &bars, Timeframe::M1, &p)
                .err()
                .map(|e| e.to_string())
        };
        let mut s = spec(&["return_1"]);
        s.features = vec!["nope_3".into()];
        assert!(bad(s).is_some_and(|e| e.starts_with("features:")));
        let mut s = spec(&["return_1"]);
        s.folds = 0;
        assert!(bad(s).is_some_and(|e| e.starts_with("folds:")));
        let mut s = spec(&["return_1"]);
        s.upper = 0.2;
        assert!(bad(s).is_some_and(|e| e.contains("lower")));
        let short = bars_from_returns(&ar1(100, 0.1, 5));
        let e = train(&spec(&["return_1"]), &short, Timeframe::M1, &p).expect_err("too short");
        assert!(e.to_string().contains("not enough data"), "{e}");
        let cancelled = Progress::default();
        cancelled.cancel();
        let e = train(&spec(&["return_1"]), &bars, Timeframe::M1, &cancelled).expect_err("stops");
        assert!(matches!(e, TrainError::Cancelled));
    }

    #[test]
    fn a_better_challenger_is_promoted_and_a_worse_or_insignificantly_better_one_is_not() {
        // 1 000 bars: champion right on 520, challenger on 580; 100 bars only the champion got right,
        // 160 only the challenger.
        let champion: Vec<bool> = (0..1_000).map(|i| i < 520).collect();
        let challenger: Vec<bool> = (0..1_000)
            .map(|i| i < 420 || (520..680).contains(&i))
            .collect();
        let better = compare(&champion, &challenger);
        assert_eq!((better.champion_only, better.challenger_only), (100, 160));
        assert!((better.challenger_accuracy - 0.58).abs() < 1e-12);
        // P(X ≥ 160 | n = 260, ½): z = (160 − 130 − ½) / √65 = 3.66, so about 1.3e-4.
        assert!(better.p_value > 5e-5 && better.p_value < 3e-4, "{better:?}");
        assert!(decide(&better, 0.01, 0.05).0);

        let worse = compare(&challenger, &champion);
        let (promoted, why) = decide(&worse, 0.01, 0.05);
        assert!(!promoted && why.contains("not 0.01 above"), "{why}");

        // Better by 0.6 points on 1 000 bars: 16 vs 10 discordant, p ≈ 0.16.
        let slightly: Vec<bool> = (0..1_000)
            .map(|i| (i < 520 && !(420..430).contains(&i)) || (520..536).contains(&i))
            .collect();
        let small = compare(&champion, &slightly);
        assert_eq!((small.champion_only, small.challenger_only), (10, 16));
        let (promoted, why) = decide(&small, 0.005, 0.05);
        assert!(!promoted && why.contains("not significantly"), "{why}");

        assert!((binomial_upper_tail(10, 0) - 1.0).abs() < 1e-12);
        assert!((binomial_upper_tail(10, 10) - 1.0 / 1024.0).abs() < 1e-15);
        assert!((binomial_upper_tail(4, 2) - 11.0 / 16.0).abs() < 1e-12);
    }

    #[test]
    fn a_regime_detector_trained_on_two_regimes_finds_them_online_and_is_served_as_a_model() {
        // 6 000 bars: calm (σ 0.0002) and volatile (σ 0.0015) stretches of 300 to 700 bars.
        let mut rng = rand::rngs::SmallRng::seed_from_u64(17);
        let (mut returns, mut truth) = (Vec::new(), Vec::new());
        let mut volatile = false;
        while returns.len() < 6_000 {
            let len = rng.gen_range(300..700);
            for _ in 0..len {
                let sd = if volatile { 0.0015 } else { 0.0002 };
                returns.push(sd * normal(&mut rng));
                truth.push(volatile);
            }
            volatile = !volatile;
        }
        let bars = bars_from_returns(&returns);
        let mut s = spec(&["log_return_1", "volatility_10"]);
        s.kind = ModelKind::RegimeHmm;

        let trained = train_regime(&s, &bars, &Progress::default()).expect("fits");
        let version = crate::models::deployment::LoadedVersion::from_bytes(
            &trained.file,
            trained.manifest.clone(),
            1.0,
        )
        .expect("the regime file loads like any model");
        let mut state = version.features.state();
        let mut run = version.model.inference().expect("filter");
        let mut row = vec![0f32; version.features.len()];
        let (mut right, mut judged) = (0usize, 0usize);
        for (i, bar) in bars.iter().enumerate() {
            state.on_bar(bar);
            if !state.write(&mut row) {
                continue;
            }
            let out = run.run(&row).expect("step");
            let label = version.manifest.output.value(out).expect("a class") as usize;
            // Judged 20 bars after each switch (the rolling volatility needs that long to see it).
            let settled = (i.saturating_sub(20)..=i).all(|j| truth[j] == truth[i]);
            if settled {
                judged += 1;
                right += usize::from((label == 1) == truth[i]);
            }
        }
        let accuracy = right as f64 / judged as f64;
        eprintln!(
            "regime detector: online state accuracy {accuracy:.4} over {judged} settled bars"
        );
        assert!(accuracy >= 0.9, "online state accuracy {accuracy}");
        assert_eq!(
            trained.manifest.output,
            Output::Class {
                labels: vec!["calm".into(), "volatile".into()]
            }
        );
        assert!(trained.hmm.variances[1][0] > trained.hmm.variances[0][0]);
    }

    #[test]
    fn training_on_a_year_of_m1_bars_completes_within_the_test_budget() {
        // 370 000 M1 bars (a year of 24-hour trading), four features, five folds and the final fit, in the
        // test profile (unoptimised trellis code). The release figure is in BENCHMARKS.md.
        let bars = bars_from_returns(&crate::models::synthetic::ar1_returns(
            370_000, 0.1, 0.0003, 2026,
        ));
        let mut s = spec(&["log_return_1", "log_return_2", "volatility_20", "rsi_14"]);
        s.folds = 5;
        let started = std::time::Instant::now();

        let trained = train(&s, &bars, Timeframe::M1, &Progress::default()).expect("trains");

        let took = started.elapsed();
        eprintln!(
            "a year of M1 bars: {:.1} s, out-of-sample accuracy {:.4} over {} rows",
            took.as_secs_f64(),
            trained.report.accuracy,
            trained.report.test_rows
        );
        assert!(trained.report.test_rows > 300_000);
        // AR(1) φ = 0.1: ½ + asin(0.1)/π ≈ 0.532.
        assert!(
            (trained.report.accuracy - 0.532).abs() < 0.01,
            "{:?}",
            trained.report
        );
        assert!(took < std::time::Duration::from_secs(300), "took {took:?}");
    }
}
