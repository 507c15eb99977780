//! `ModelHost`, one per model deployment (tenant × model × symbol × timeframe): closed bars in, features
//! computed with the shared feature library, the model run, predictions out to the strategies that name
//! the deployment.
//!
//! It lives under the tenant's `strategies` supervisor with its own restart budget: a model that panics is
//! restarted, and one that keeps panicking is disabled alone while the strategies trade on. A fresh instance
//! warms its features up from the bars `MarketData` keeps (read from the store when the tenant starts), and
//! the bars the terminal fills in after a restart reach it as `CatchUp`: its first prediction after a restart
//! is made on full feature windows, on the first live bar.
//!
//! Per bar one traffic version serves (a deterministic weighted pick, see `models::deployment::pick`) and
//! every shadow version predicts too; shadow predictions are recorded and published but never reach a
//! strategy. A run that fails or gives a non-finite value is counted and skipped. A traffic version that
//! breaches (fails, runs over budget or is skipped busy) on more than half of its last 20 runs is rolled
//! back: its weight becomes 0, audited and announced.
//!
//! # Where a prediction runs, and its deadline
//!
//! The host runs on the tenant's arbiter, beside market data, the strategies, risk and the portfolio, so it
//! never runs a model there (docs/tenant-code.md): on a closed bar it updates the features, writes the row
//! and queues it on the version; the rows go to the inference pool (`models::pool::Inference`, fair between
//! tenants) in one job per version, whatever has queued while the previous job ran, and the results come
//! back as a message. A version has one tract state, so at most one job of it runs at a time.
//!
//! `budget_us` is a deadline counted from the moment the bar reached the host: a result that comes later is
//! not used (`over_budget`, counted when the deadline passes); a bar still queued at its deadline because
//! the version was busy with earlier bars is abandoned (`skipped_busy`). At most [`MAX_QUEUED`] bars wait per
//! version. Both count as breaches for the rollback. A replay whose bars arrive microseconds apart is still
//! predicted bar by bar as long as the model keeps up within its budget.
//!
//! Each version is monitored (served and shadow alike, so a challenger is judged before it trades): once a
//! prediction's horizon has passed, the realised return gives its directional accuracy (and, for
//! `expected_return` models, its absolute error) over a rolling window; every feature and the output with a
//! training reference in the manifest feed a drift monitor (PSI with a window-size-aware threshold and KS,
//! see `models::drift`), checked every 25 predictions; a check turning to drift is an alert (audit log,
//! `/ws/events`).
//!
//! Predictions (served and shadow, with their version) are stored in the time-series store in batches
//! (every 500 ms or 500 predictions, and on shutdown); while the store is away they wait, up to 100 000,
//! beyond which the oldest are shed and counted.
//!
//! Every run takes one unit of the tenant's predictions-per-minute quota (its tier's `[quotas] predictions`);
//! with the minute's quota spent, runs are skipped and counted (`over_quota`) until the next minute.
//!
//! The deployment itself (versions, weights, budget) is owned by `MarketData`. When the admin API changes it
//! (weights, versions, an alias it follows moved) the host gets `Redeploy` and serves the deployment as now
//! published: versions it still serves keep their warm features, counts and monitoring; an operator's new
//! weight replaces an automatic rollback. A restarted host also reads the published deployment.
//!
//! The tick → order path never waits on a model: bars reach strategies before the model hears of them, the
//! model computes on threads of its own, and a strategy acts on a prediction whenever it comes.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;

use super::messages::{
    BarClosed, FeatureDrift, GetModelState, GetRecentBars, ModelMonitoring, ModelState,
    ModelVersionState, PredictionMade, Redeploy,
};
use super::strategy::WARM_UP_BARS;
use super::tenant::TenantContext;
use crate::domain::events::EventKind;
use crate::domain::Bar;
use crate::domain::Prediction;
use crate::models::deployment::{pick, Deployment, LoadedVersion};
use crate::models::drift::DriftMonitor;
use crate::models::features::FeatureState;
use crate::models::manifest::Output;
use crate::models::onnx::Inference;
use crate::models::pool;
use crate::runtime::supervisor::{contain, ExitNotifier, Shutdown};

/// Predictions kept for `GetModelState`.
const RECENT: usize = 1_000;
/// Runs a traffic version is judged on for rollback.
const JUDGED_RUNS: usize = 20;
/// Live values per drift window, and outcomes per accuracy window.
const MONITOR_WINDOW: usize = 500;
/// False-alarm rate of a drift check.
const DRIFT_ALPHA: f64 = 0.01;
/// Predictions between drift checks.
const CHECK_EVERY: u64 = 25;
/// Predictions are stored this often, or at this many.
const STORE_EVERY: std::time::Duration = std::time::Duration::from_millis(500);
const STORE_AT: usize = 500;
/// Predictions held while the store is away; beyond this the oldest are shed.
const MAX_UNSTORED: usize = 100_000;
/// Bars waiting per version while it computes; beyond this the oldest is skipped busy.
const MAX_QUEUED: usize = 64;
/// Closes kept past a version's horizon, for predictions that come back after their horizon's bar.
const CLOSES_KEPT: usize = 1_024;

/// One drift monitor: a feature (by its index in the row) or the output (`None`).
struct Watched {
    name: String,
    index: Option<usize>,
    monitor: DriftMonitor,
    last: Option<crate::models::drift::DriftCheck>,
    alarms: u64,
}

/// A version's monitoring: outcomes after the horizon, drift of its inputs and output.
struct Monitor {
    output: Output,
    horizon: u64,
    /// (bar number, close then, predicted value), oldest first.
    pending: VecDeque<(u64, f64, f64)>,
    /// (bar number, close) of the recent bars: a prediction comes back after its bar, maybe after its
    /// horizon's bar too (a fast replay), and is judged on the close it would have seen.
    closes: VecDeque<(u64, f64)>,
    /// (direction right, absolute error if the output is a return).
    outcomes: VecDeque<(bool, Option<f64>)>,
    watched: Vec<Watched>,
    predictions: u64,
}

impl Monitor {
    fn new(v: &LoadedVersion) -> Self {
        let names = v.features.names();
        let watched = v
            .manifest
            .reference
            .iter()
            .filter_map(|(name, reference)| {
                let index = if name == "output" {
                    None
                } else {
                    Some(names.iter().position(|n| n == name)?)
                };
                let monitor =
                    DriftMonitor::new(reference.clone(), MONITOR_WINDOW, DRIFT_ALPHA).ok()?;
                Some(Watched {
                    name: name.clone(),
                    index,
                    monitor,
                    last: None,
                    alarms: 0,
                })
            })
            .collect();
        Self {
            output: v.manifest.output.clone(),
            horizon: u64::from(v.manifest.horizon_bars),
            pending: VecDeque::new(),
            closes: VecDeque::new(),
            outcomes: VecDeque::with_capacity(MONITOR_WINDOW),
            watched,
            predictions: 0,
        }
    }

    /// A bar closed: predictions whose horizon has now passed get their outcome.
    fn on_bar(&mut self, bar_no: u64, close: f64) {
        self.closes.push_back((bar_no, close));
        let keep = self.horizon as usize + CLOSES_KEPT;
        while self.closes.len() > keep {
            self.closes.pop_front();
        }
        self.resolve();
    }

    /// Gives an outcome to each pending prediction whose horizon's bar has closed.
    fn resolve(&mut self) {
        let Some(&(last, _)) = self.closes.back() else {
            return;
        };
        while let Some(&(at, then, value)) = self.pending.front() {
            let due = at + self.horizon;
            if last < due {
                break;
            }
            self.pending.pop_front();
            let Some(close) = self.closes.iter().find(|(n, _)| *n == due).map(|c| c.1) else {
                continue; // Its bar left the window: no outcome.
            };
            if then <= 0.0 || !close.is_finite() {
                continue;
            }
            let realised = close / then - 1.0;
            let outcome = match self.output {
                Output::DirectionProbability => ((value > 0.5) == (realised > 0.0), None),
                Output::ExpectedReturn => (
                    (value > 0.0) == (realised > 0.0),
                    Some((value - realised).abs()),
                ),
                Output::Class { .. } => continue,
            };
            if self.outcomes.len() == MONITOR_WINDOW {
                self.outcomes.pop_front();
            }
            self.outcomes.push_back(outcome);
        }
    }

    /// A prediction was made from `row`: remember it for its outcome, feed the drift monitors. Returns the
    /// names whose check turned to drift.
    fn on_prediction(&mut self, bar_no: u64, close: f64, value: f64, row: &[f32]) -> Vec<String> {
        if !matches!(self.output, Output::Class { .. }) {
            self.pending.push_back((bar_no, close, value));
            if self.pending.len() > MONITOR_WINDOW + self.horizon as usize {
                self.pending.pop_front();
            }
            self.resolve();
        }
        self.predictions += 1;
        let check = self.predictions % CHECK_EVERY == 0;
        let mut alarms = Vec::new();
        for w in &mut self.watched {
            let v = match w.index {
                Some(i) => row.get(i).map(|x| f64::from(*x)).unwrap_or(f64::NAN),
                None => value,
            };
            w.monitor.push(v);
            if check {
                let was = w.last.as_ref().is_some_and(|c| c.drifted);
                w.last = w.monitor.check();
                if !was && w.last.as_ref().is_some_and(|c| c.drifted) {
                    w.alarms += 1;
                    alarms.push(w.name.clone());
                }
            }
        }
        alarms
    }

    fn report(&self) -> ModelMonitoring {
        let n = self.outcomes.len();
        let right = self.outcomes.iter().filter(|o| o.0).count();
        let errors: Vec<f64> = self.outcomes.iter().filter_map(|o| o.1).collect();
        ModelMonitoring {
            outcomes: n,
            directional_accuracy: (n > 0).then(|| right as f64 / n as f64),
            mae: (!errors.is_empty()).then(|| errors.iter().sum::<f64>() / errors.len() as f64),
            drift: self
                .watched
                .iter()
                .map(|w| FeatureDrift {
                    feature: w.name.clone(),
                    check: w.last.clone(),
                    alarms: w.alarms,
                })
                .collect(),
        }
    }
}

/// A bar waiting for (or in) a run of one version: its row, written when the bar arrived.
struct Queued {
    /// Unique in the host: what the deadline timer names.
    seq: u64,
    bar: Bar,
    bar_no: u64,
    row: Vec<f32>,
    arrived: Instant,
    /// Its deadline passed while it computed: counted then, its result not used.
    late: bool,
}

struct VersionRun {
    features: FeatureState,
    /// The version's tract state; `None` while a job of it runs on the pool.
    inference: Option<Inference>,
    /// Bars waiting for the version to be free.
    queued: VecDeque<Queued>,
    /// The bars of the job running now, and its id.
    running: Vec<Queued>,
    job: Option<u64>,
    row: Vec<f32>,
    /// The last run's scores, for `class` outputs.
    scores: Vec<f32>,
    shadow: bool,
    weight: f64,
    /// Whether each of the last runs breached (failed, not finite, over budget).
    breaches: VecDeque<bool>,
    state: ModelVersionState,
    monitor: Monitor,
}

impl VersionRun {
    fn new(v: &LoadedVersion, shadow: bool) -> Result<Self, String> {
        Ok(Self {
            features: v.features.state(),
            inference: Some(v.model.inference().map_err(|e| e.to_string())?),
            queued: VecDeque::new(),
            running: Vec::new(),
            job: None,
            row: vec![0.0; v.features.len()],
            scores: Vec::new(),
            shadow,
            weight: if shadow { 0.0 } else { v.weight },
            breaches: VecDeque::with_capacity(JUDGED_RUNS),
            monitor: Monitor::new(v),
            state: ModelVersionState {
                version: v.version.clone(),
                shadow,
                weight: if shadow { 0.0 } else { v.weight },
                ..Default::default()
            },
        })
    }
}

enum Outcome {
    Served(f64, u64),
    NotFinite,
    Failed(String),
    OverBudget(u64),
    OverQuota(u32),
    SkippedBusy,
}

/// What a job on the pool gives back: the version's state and one result per row.
type JobResult = (Inference, Vec<Result<Vec<f32>, String>>);

pub struct ModelHost {
    tenant: Arc<TenantContext>,
    deployment: Arc<Deployment>,
    runs: Vec<VersionRun>,
    recent: VecDeque<Prediction>,
    last_bar_ms: i64,
    /// Live bars seen by this incarnation (for prediction horizons).
    bar_no: u64,
    unstored: Vec<Prediction>,
    storing: bool,
    shed: u64,
    notifier: ExitNotifier,
    /// Numbers bars queued and jobs sent.
    seq: u64,
}

impl ModelHost {
    pub fn new(
        tenant: Arc<TenantContext>,
        deployment: Arc<Deployment>,
        notifier: ExitNotifier,
    ) -> Result<Self, String> {
        let runs = deployment
            .traffic
            .iter()
            .map(|v| VersionRun::new(v, false))
            .chain(deployment.shadow.iter().map(|v| VersionRun::new(v, true)))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            tenant,
            deployment,
            runs,
            recent: VecDeque::with_capacity(RECENT),
            last_bar_ms: i64::MIN,
            bar_no: 0,
            unstored: Vec::new(),
            storing: false,
            shed: 0,
            notifier,
            seq: 0,
        })
    }

    fn version(&self, i: usize) -> &LoadedVersion {
        let traffic = self.deployment.traffic.len();
        if i < traffic {
            &self.deployment.traffic[i]
        } else {
            &self.deployment.shadow[i - traffic]
        }
    }

    /// A bar for version `i`: its row written and queued (or nothing when the features are not warm or the
    /// minute's quota is spent), its deadline set, and a job sent if the version is free.
    fn enqueue(&mut self, i: usize, bar: &Bar, ctx: &mut Context<Self>) {
        let run = &mut self.runs[i];
        if !run.features.write(&mut run.row) {
            return;
        }
        let quota = {
            let limits = self.tenant.limits.read();
            self.tenant
                .prediction_quota
                .take(&limits.tier, crate::domain::now_ms())
        };
        if let Err(quota) = quota {
            return self.record(i, bar, self.bar_no, &[], Outcome::OverQuota(quota));
        }
        self.seq += 1;
        let seq = self.seq;
        let run = &mut self.runs[i];
        run.queued.push_back(Queued {
            seq,
            bar: bar.clone(),
            bar_no: self.bar_no,
            row: run.row.clone(),
            arrived: Instant::now(),
            late: false,
        });
        if run.queued.len() > MAX_QUEUED {
            if let Some(old) = run.queued.pop_front() {
                self.record(i, &old.bar, old.bar_no, &[], Outcome::SkippedBusy);
            }
        }
        let budget = Duration::from_micros(self.deployment.budget_us);
        ctx.run_later(budget, move |act, _ctx| act.deadline(seq));
        self.send_job(i, ctx);
    }

    /// Sends version `i`'s queued bars to the pool as one job, if it is free and has some.
    fn send_job(&mut self, i: usize, ctx: &mut Context<Self>) {
        let run = &mut self.runs[i];
        if run.job.is_some() || run.queued.is_empty() {
            return;
        }
        let Some(mut inference) = run.inference.take() else {
            return;
        };
        run.running = run.queued.drain(..).collect();
        let rows: Vec<Vec<f32>> = run.running.iter().map(|q| q.row.clone()).collect();
        self.seq += 1;
        let job = self.seq;
        self.runs[i].job = Some(job);
        let done = pool::Inference::global().submit(&self.tenant.id.0, move || -> JobResult {
            let out = rows
                .iter()
                .map(|row| {
                    inference
                        .run(row)
                        .map(<[f32]>::to_vec)
                        .map_err(|e| e.to_string())
                })
                .collect();
            (inference, out)
        });
        ctx.spawn(
            done.into_actor(self)
                .map(move |res, act, ctx| act.job_done(job, res, ctx)),
        );
    }

    /// A bar's deadline: still queued, it is abandoned (the version was busy); computing, its result will
    /// not be used.
    fn deadline(&mut self, seq: u64) {
        for i in 0..self.runs.len() {
            let run = &mut self.runs[i];
            if let Some(k) = run.queued.iter().position(|q| q.seq == seq) {
                if let Some(q) = run.queued.remove(k) {
                    self.record(i, &q.bar, q.bar_no, &[], Outcome::SkippedBusy);
                }
                return;
            }
            if let Some(q) = run.running.iter_mut().find(|q| q.seq == seq && !q.late) {
                q.late = true;
                let (bar, bar_no) = (q.bar.clone(), q.bar_no);
                let waited = q.arrived.elapsed().as_micros() as u64;
                self.record(i, &bar, bar_no, &[], Outcome::OverBudget(waited));
                return;
            }
        }
    }

    /// A job came back: its state returned to the version, each bar's result recorded unless its deadline
    /// passed, and the next job sent.
    fn job_done(
        &mut self,
        job: u64,
        res: Result<Result<JobResult, String>, tokio::sync::oneshot::error::RecvError>,
        ctx: &mut Context<Self>,
    ) {
        let Some(i) = self.runs.iter().position(|r| r.job == Some(job)) else {
            return; // The version left the deployment meanwhile.
        };
        let budget = self.deployment.budget_us;
        let running = std::mem::take(&mut self.runs[i].running);
        self.runs[i].job = None;
        let results = match res {
            Ok(Ok((inference, results))) => {
                self.runs[i].inference = Some(inference);
                results
            }
            failed => {
                let why = match failed {
                    Ok(Err(panic)) => format!("the model panicked: {panic}"),
                    _ => "the inference pool dropped the run".to_owned(),
                };
                match self.version(i).model.inference() {
                    Ok(fresh) => self.runs[i].inference = Some(fresh),
                    Err(e) => return self.fail(format!("{why}; and then: {e}"), ctx),
                }
                vec![Err(why); running.len()]
            }
        };
        for (q, result) in running.into_iter().zip(results) {
            if q.late {
                continue;
            }
            let micros = q.arrived.elapsed().as_micros() as u64;
            let outcome = match result {
                Err(e) => Outcome::Failed(e),
                Ok(out) => {
                    let run = &mut self.runs[i];
                    if matches!(run.monitor.output, Output::Class { .. }) {
                        run.scores.clear();
                        run.scores.extend_from_slice(&out);
                    }
                    match run.monitor.output.value(&out) {
                        Some(v) if v.is_finite() && micros > budget => Outcome::OverBudget(micros),
                        Some(v) if v.is_finite() => Outcome::Served(v, micros),
                        _ => Outcome::NotFinite,
                    }
                }
            };
            self.record(i, &q.bar, q.bar_no, &q.row, outcome);
        }
        if self.unstored.len() >= STORE_AT {
            self.store(ctx);
        }
        self.send_job(i, ctx);
    }

    /// One closed bar: features of every version updated, the picked traffic version and every shadow
    /// version queued.
    fn on_bar(&mut self, bar: &Bar, ctx: &mut Context<Self>) {
        use rust_decimal::prelude::ToPrimitive;
        self.bar_no += 1;
        let close = bar.close.to_f64().unwrap_or(f64::NAN);
        for run in &mut self.runs {
            run.features.on_bar(bar);
            run.monitor.on_bar(self.bar_no, close);
        }
        let traffic = self.deployment.traffic.len();
        let weights: Vec<f64> = self.runs[..traffic].iter().map(|r| r.weight).collect();
        let picked = pick(&weights, &self.deployment.id, bar.open_time_ms);
        for i in 0..self.runs.len() {
            let shadow = i >= traffic;
            if !shadow && Some(i) != picked {
                continue;
            }
            self.enqueue(i, bar, ctx);
        }
    }

    /// Counts an outcome of version `i` for `bar` (the `bar_no`-th this host saw, its features `row`), and
    /// publishes a served prediction.
    fn record(&mut self, i: usize, bar: &Bar, bar_no: u64, row: &[f32], outcome: Outcome) {
        let tenant = self.tenant.id.0.clone();
        let deployment = self.deployment.id.clone();
        let short = self.version(i).short().to_owned();
        let metrics = self.tenant.metrics.clone();
        let run = &mut self.runs[i];
        let (label, seconds, breach) = match &outcome {
            Outcome::SkippedBusy => {
                run.state.skipped_busy += 1;
                ("skipped_busy", None, true)
            }
            Outcome::Served(_, us) => {
                run.state.served += 1;
                (
                    if run.shadow { "shadow" } else { "served" },
                    Some(*us as f64 / 1e6),
                    false,
                )
            }
            Outcome::NotFinite => {
                run.state.not_finite += 1;
                ("not_finite", None, true)
            }
            Outcome::Failed(why) => {
                run.state.failed += 1;
                tracing::warn!(tenant = %tenant, deployment = %deployment, version = %short, reason = %why,
                    "model run failed");
                ("failed", None, true)
            }
            Outcome::OverBudget(us) => {
                run.state.over_budget += 1;
                ("over_budget", Some(*us as f64 / 1e6), true)
            }
            Outcome::OverQuota(quota) => {
                run.state.over_quota += 1;
                if run.state.over_quota == 1 || run.state.over_quota % 1_000 == 0 {
                    tracing::warn!(tenant = %tenant, deployment = %deployment, quota = *quota,
                        skipped = run.state.over_quota, "predictions over the tier's quota per minute: skipped");
                }
                metrics.prediction(&tenant, &deployment, &short, "over_quota", None);
                return;
            }
        };
        metrics.prediction(&tenant, &deployment, &short, label, seconds);
        if !run.shadow {
            if run.breaches.len() == JUDGED_RUNS {
                run.breaches.pop_front();
            }
            run.breaches.push_back(breach);
        }
        if let Outcome::Served(value, latency_us) = outcome {
            use rust_decimal::prelude::ToPrimitive;
            let close = bar.close.to_f64().unwrap_or(f64::NAN);
            let drifted = run.monitor.on_prediction(bar_no, close, value, row);
            for feature in drifted {
                let detail = serde_json::json!({
                    "deployment": deployment,
                    "version": run.state.version,
                    "feature": feature,
                    "alert": "drift",
                    "check": run.monitor.watched.iter().find(|w| w.name == feature).and_then(|w| w.last.clone()),
                });
                tracing::warn!(tenant = %tenant, %detail, "model input drifted from its training data");
                self.tenant.audit("model.drift", "model", detail.clone());
                self.tenant.publish(EventKind::Model, detail);
            }
            let run = &mut self.runs[i];
            let prediction = Prediction {
                deployment: deployment.clone(),
                version: run.state.version.clone(),
                symbol: bar.symbol.clone(),
                bar_open_ms: bar.open_time_ms,
                value,
                latency_us,
                shadow: run.shadow,
                scores: run.scores.clone(),
            };
            self.publish(prediction);
        }
        self.judge(i);
    }

    /// Rolls a traffic version back (weight 0) once it breaches on most of its recent runs.
    fn judge(&mut self, i: usize) {
        let run = &mut self.runs[i];
        if run.shadow || run.state.rolled_back || run.breaches.len() < JUDGED_RUNS / 2 {
            return;
        }
        let breached = run.breaches.iter().filter(|b| **b).count();
        if breached * 2 <= run.breaches.len() {
            return;
        }
        run.weight = 0.0;
        run.state.weight = 0.0;
        run.state.rolled_back = true;
        let detail = serde_json::json!({
            "deployment": self.deployment.id,
            "version": run.state.version,
            "breached": breached,
            "of_runs": run.breaches.len(),
            "not_finite": run.state.not_finite,
            "failed": run.state.failed,
            "over_budget": run.state.over_budget,
            "budget_us": self.deployment.budget_us,
        });
        tracing::error!(tenant = %self.tenant.id, %detail, "model version rolled back: weight set to 0");
        self.tenant
            .audit("model.rolled_back", "model", detail.clone());
        self.tenant.publish(EventKind::Model, detail);
    }

    /// Writes the predictions waiting; on failure they wait for the next attempt.
    fn store(&mut self, ctx: &mut Context<Self>) {
        if self.storing || self.unstored.is_empty() || !self.tenant.timeseries.is_live() {
            return;
        }
        self.storing = true;
        let batch = std::mem::take(&mut self.unstored);
        let again = batch.clone();
        let store = self.tenant.timeseries.clone();
        let tenant = self.tenant.id.0.clone();
        ctx.spawn(
            async move {
                store
                    .append_predictions(crate::storage::timeseries::AppendPredictions {
                        tenant,
                        predictions: batch,
                    })
                    .await
            }
            .into_actor(self)
            .map(move |res, act, _ctx| {
                act.storing = false;
                if let Err(e) = res {
                    tracing::warn!(tenant = %act.tenant.id, deployment = %act.deployment.id, error = %e,
                        "predictions not stored yet; retrying");
                    let newer = std::mem::replace(&mut act.unstored, again);
                    act.unstored.extend(newer);
                    act.bound_unstored();
                }
            }),
        );
    }

    fn bound_unstored(&mut self) {
        if self.unstored.len() > MAX_UNSTORED {
            let over = self.unstored.len() - MAX_UNSTORED;
            self.unstored.drain(..over);
            self.shed += over as u64;
            tracing::warn!(tenant = %self.tenant.id, deployment = %self.deployment.id, shed = self.shed,
                "predictions shed while the store is away");
        }
    }

    fn publish(&mut self, prediction: Prediction) {
        if self.recent.len() == RECENT {
            self.recent.pop_front();
        }
        self.recent.push_back(prediction.clone());
        self.unstored.push(prediction.clone());
        self.bound_unstored();
        if let Ok(data) = serde_json::to_value(&prediction) {
            self.tenant.publish(EventKind::Prediction, data);
        }
        if prediction.shadow {
            return;
        }
        self.tell_risk(&prediction);
        if let Some(cache) = self.tenant.cache.as_ref().and_then(|slot| slot.get()) {
            // Conflated by the cache actor: only the latest per deployment is written.
            cache.do_send(crate::storage::cache::CachePrediction {
                tenant: self.tenant.id.0.clone(),
                prediction: prediction.clone(),
            });
        }
        let subscribers: Vec<String> = self
            .tenant
            .strategies
            .read()
            .values()
            .filter(|r| {
                r.settings.enabled && r.settings.model.as_deref() == Some(&*prediction.deployment)
            })
            .map(|r| r.settings.id.clone())
            .collect();
        for id in subscribers {
            if let Some(host) = self.tenant.strategy_host(&id) {
                host.do_send(PredictionMade(prediction.clone()));
            }
        }
    }

    /// Rebuilds the features of the runs `only` (all when `None`) from the bars `MarketData` keeps, up to
    /// the last bar this host saw; no bar is handled meanwhile (`ctx.wait`).
    fn warm_up(&mut self, ctx: &mut Context<Self>, only: Option<Vec<usize>>) {
        let Some(md) = self.tenant.market_data.get() else {
            return;
        };
        let query = GetRecentBars {
            symbol: self.deployment.symbol.clone(),
            timeframe: self.deployment.timeframe,
            limit: WARM_UP_BARS,
        };
        ctx.wait(md.send(query).into_actor(self).map(move |res, act, _ctx| {
            let bars = res.unwrap_or_default();
            let seen = act.last_bar_ms;
            for bar in &bars {
                if only.is_some() && bar.open_time_ms > seen {
                    break;
                }
                for (i, run) in act.runs.iter_mut().enumerate() {
                    if only.as_ref().is_none_or(|o| o.contains(&i)) {
                        run.features.on_bar(bar);
                    }
                }
            }
            if only.is_none() {
                if let Some(last) = bars.last() {
                    act.last_bar_ms = last.open_time_ms;
                }
            }
        }));
    }

    /// Bars the terminal filled in after this host warmed up from what the store had (after a restart):
    /// they complete the features, so the next live bar predicts on full windows.
    fn catch_up(&mut self, bars: &[Bar]) {
        for bar in bars {
            if bar.open_time_ms <= self.last_bar_ms {
                continue;
            }
            for run in self.runs.iter_mut() {
                run.features.on_bar(bar);
            }
            self.last_bar_ms = bar.open_time_ms;
        }
    }

    /// A class prediction of the deployment the risk limits scale by (the regime): its label to `Risk`.
    fn tell_risk(&self, prediction: &Prediction) {
        let named = self
            .tenant
            .limits
            .read()
            .risk
            .regime
            .as_ref()
            .is_some_and(|r| r.deployment == self.deployment.id);
        if !named {
            return;
        }
        let Some(run) = self
            .runs
            .iter()
            .find(|r| r.state.version == prediction.version)
        else {
            return;
        };
        if let Output::Class { labels } = &run.monitor.output {
            let label = labels
                .get(prediction.value as usize)
                .cloned()
                .unwrap_or_default();
            if let Some(risk) = self.tenant.risk.get() {
                risk.do_send(super::messages::RegimeObserved {
                    deployment: self.deployment.id.clone(),
                    label,
                });
            }
        }
    }

    fn fail(&mut self, why: String, ctx: &mut Context<Self>) {
        tracing::warn!(tenant = %self.tenant.id, deployment = %self.deployment.id, reason = %why, "model failed");
        self.notifier.fail(why);
        ctx.stop();
    }
}

impl Actor for ModelHost {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(4_096);
        ctx.run_interval(STORE_EVERY, |act, ctx| act.store(ctx));
        self.warm_up(ctx, None);
    }

    fn stopped(&mut self, _ctx: &mut Self::Context) {
        self.notifier.mark_stopped();
    }
}

impl Handler<BarClosed> for ModelHost {
    type Result = ();

    fn handle(&mut self, BarClosed(bar, _): BarClosed, ctx: &mut Self::Context) {
        if bar.open_time_ms <= self.last_bar_ms {
            return;
        }
        self.last_bar_ms = bar.open_time_ms;
        let name = format!("model:{}", self.deployment.id);
        let this = &mut *self;
        let result = contain(|| {
            if crate::runtime::task::faults_armed() {
                crate::runtime::task::fault_point(&name);
            }
            this.on_bar(&bar, ctx);
        });
        if let Err(why) = result {
            self.fail(why, ctx);
        }
    }
}

impl Handler<super::messages::CatchUp> for ModelHost {
    type Result = ();

    fn handle(&mut self, msg: super::messages::CatchUp, _ctx: &mut Self::Context) {
        self.catch_up(&msg.0);
    }
}

impl Handler<Redeploy> for ModelHost {
    type Result = ();

    fn handle(&mut self, _: Redeploy, ctx: &mut Self::Context) {
        let Some(next) = self
            .tenant
            .deployments
            .read()
            .get(&self.deployment.id)
            .cloned()
        else {
            return;
        };
        if Arc::ptr_eq(&next, &self.deployment) {
            return;
        }
        let mut old: Vec<Option<VersionRun>> = std::mem::take(&mut self.runs)
            .into_iter()
            .map(Some)
            .collect();
        let mut runs = Vec::with_capacity(next.traffic.len() + next.shadow.len());
        let mut fresh = Vec::new();
        let wanted = next
            .traffic
            .iter()
            .map(|v| (v, false))
            .chain(next.shadow.iter().map(|v| (v, true)));
        for (v, shadow) in wanted {
            let kept = old.iter_mut().find_map(|slot| {
                slot.take_if(|r| r.shadow == shadow && r.state.version == v.version)
            });
            let run = match kept {
                Some(mut run) => {
                    let weight = if shadow { 0.0 } else { v.weight };
                    run.weight = weight;
                    run.state.weight = weight;
                    run.state.rolled_back = false;
                    run.breaches.clear();
                    run
                }
                None => match VersionRun::new(v, shadow) {
                    Ok(run) => {
                        // Warmed below from the bars the kept versions saw.
                        fresh.push(runs.len());
                        run
                    }
                    Err(why) => return self.fail(why, ctx),
                },
            };
            runs.push(run);
        }
        self.runs = runs;
        self.deployment = next;
        tracing::info!(tenant = %self.tenant.id, deployment = %self.deployment.id,
            versions = self.runs.len(), "model deployment changed live");
        if !fresh.is_empty() {
            self.warm_up(ctx, Some(fresh));
        }
    }
}

impl Handler<GetModelState> for ModelHost {
    type Result = MessageResult<GetModelState>;

    fn handle(&mut self, _: GetModelState, _ctx: &mut Self::Context) -> Self::Result {
        MessageResult(ModelState {
            deployment: self.deployment.id.clone(),
            versions: self
                .runs
                .iter()
                .map(|r| ModelVersionState {
                    monitoring: r.monitor.report(),
                    ..r.state.clone()
                })
                .collect(),
            recent: self.recent.iter().cloned().collect(),
        })
    }
}

impl Handler<Shutdown> for ModelHost {
    type Result = ResponseActFuture<Self, ()>;

    /// Stores what waits before stopping.
    fn handle(&mut self, _msg: Shutdown, _ctx: &mut Self::Context) -> Self::Result {
        let batch = std::mem::take(&mut self.unstored);
        let store = self.tenant.timeseries.clone();
        let tenant = self.tenant.id.0.clone();
        Box::pin(
            async move {
                if !batch.is_empty() {
                    let _ = store
                        .append_predictions(crate::storage::timeseries::AppendPredictions {
                            tenant,
                            predictions: batch,
                        })
                        .await;
                }
            }
            .into_actor(self)
            .map(|_, _, ctx| ctx.stop()),
        )
    }
}
