//! `ModelHost`, one per model deployment (tenant × model × symbol × timeframe): closed bars in, features
//! computed with the shared feature library, the model run, predictions out to the strategies that name
//! the deployment.
//!
//! It lives under the tenant's `strategies` supervisor with its own restart budget: a model that panics is
//! restarted, and one that keeps panicking is disabled alone while the strategies trade on. A fresh instance
//! warms its features up from the bars `MarketData` keeps, like a strategy.
//!
//! Per bar one traffic version serves (a deterministic weighted pick, see `models::deployment::pick`) and
//! every shadow version predicts too; shadow predictions are recorded and published but never reach a
//! strategy. A run that fails or gives a non-finite value is counted and skipped; one slower than the
//! deployment's budget is dropped and counted. A traffic version that breaches (fails or runs over budget)
//! on more than half of its last 20 runs is rolled back: its weight becomes 0, audited and announced.
//!
//! The tick → order path never waits on a model: bars reach strategies before the model hears of them, and a
//! strategy acts on a prediction whenever it comes.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

use actix::prelude::*;

use super::messages::{
    BarClosed, GetModelState, GetRecentBars, ModelState, ModelVersionState, PredictionMade,
};
use super::strategy::WARM_UP_BARS;
use super::supervisor::{contain, ExitNotifier, Shutdown};
use super::tenant::TenantContext;
use crate::domain::Bar;
use crate::models::deployment::{pick, Deployment, LoadedVersion};
use crate::models::features::FeatureState;
use crate::models::onnx::Inference;
use crate::models::Prediction;

/// Predictions kept for `GetModelState`.
const RECENT: usize = 1_000;
/// Runs a traffic version is judged on for rollback.
const JUDGED_RUNS: usize = 20;

struct VersionRun {
    features: FeatureState,
    inference: Inference,
    row: Vec<f32>,
    shadow: bool,
    weight: f64,
    /// Whether each of the last runs breached (failed, not finite, over budget).
    breaches: VecDeque<bool>,
    state: ModelVersionState,
}

impl VersionRun {
    fn new(v: &LoadedVersion, shadow: bool) -> Result<Self, String> {
        Ok(Self {
            features: v.features.state(),
            inference: v.model.inference().map_err(|e| e.to_string())?,
            row: vec![0.0; v.features.len()],
            shadow,
            weight: if shadow { 0.0 } else { v.weight },
            breaches: VecDeque::with_capacity(JUDGED_RUNS),
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
    NotWarm,
}

pub struct ModelHost {
    tenant: Arc<TenantContext>,
    deployment: Arc<Deployment>,
    runs: Vec<VersionRun>,
    recent: VecDeque<Prediction>,
    last_bar_ms: i64,
    notifier: ExitNotifier,
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
            notifier,
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

    fn run_one(&mut self, i: usize, bar: &Bar) -> Outcome {
        let budget = self.deployment.budget_us;
        let output = self.version(i).manifest.output.clone();
        let run = &mut self.runs[i];
        let start = Instant::now();
        if !run.features.write(&mut run.row) {
            return Outcome::NotWarm;
        }
        let value = match run.inference.run(&run.row) {
            Ok(out) => output.value(out),
            Err(e) => return Outcome::Failed(e.to_string()),
        };
        let micros = start.elapsed().as_micros() as u64;
        let _ = bar;
        match value {
            Some(v) if v.is_finite() => {
                if micros > budget {
                    Outcome::OverBudget(micros)
                } else {
                    Outcome::Served(v, micros)
                }
            }
            _ => Outcome::NotFinite,
        }
    }

    /// One closed bar: features of every version updated, the picked traffic version and every shadow run.
    fn on_bar(&mut self, bar: &Bar) {
        for run in &mut self.runs {
            run.features.on_bar(bar);
        }
        let traffic = self.deployment.traffic.len();
        let weights: Vec<f64> = self.runs[..traffic].iter().map(|r| r.weight).collect();
        let picked = pick(&weights, &self.deployment.id, bar.open_time_ms);
        for i in 0..self.runs.len() {
            let shadow = i >= traffic;
            if !shadow && Some(i) != picked {
                continue;
            }
            let outcome = self.run_one(i, bar);
            self.record(i, bar, outcome);
        }
    }

    fn record(&mut self, i: usize, bar: &Bar, outcome: Outcome) {
        let tenant = self.tenant.id.0.clone();
        let deployment = self.deployment.id.clone();
        let short = self.version(i).short().to_owned();
        let metrics = self.tenant.metrics.clone();
        let run = &mut self.runs[i];
        let (label, seconds, breach) = match &outcome {
            Outcome::NotWarm => return,
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
        };
        metrics.prediction(&tenant, &deployment, &short, label, seconds);
        if !run.shadow {
            if run.breaches.len() == JUDGED_RUNS {
                run.breaches.pop_front();
            }
            run.breaches.push_back(breach);
        }
        if let Outcome::Served(value, latency_us) = outcome {
            let prediction = Prediction {
                deployment: deployment.clone(),
                version: run.state.version.clone(),
                symbol: bar.symbol.clone(),
                bar_open_ms: bar.open_time_ms,
                value,
                latency_us,
                shadow: run.shadow,
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
        self.tenant.publish("model", detail);
    }

    fn publish(&mut self, prediction: Prediction) {
        if self.recent.len() == RECENT {
            self.recent.pop_front();
        }
        self.recent.push_back(prediction.clone());
        if let Ok(data) = serde_json::to_value(&prediction) {
            self.tenant.publish("prediction", data);
        }
        if prediction.shadow {
            return;
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
        let Some(md) = self.tenant.market_data.get() else {
            return;
        };
        let query = GetRecentBars {
            symbol: self.deployment.symbol.clone(),
            timeframe: self.deployment.timeframe,
            limit: WARM_UP_BARS,
        };
        ctx.wait(md.send(query).into_actor(self).map(|res, act, _ctx| {
            let bars = res.unwrap_or_default();
            for bar in &bars {
                for run in &mut act.runs {
                    run.features.on_bar(bar);
                }
            }
            if let Some(last) = bars.last() {
                act.last_bar_ms = last.open_time_ms;
            }
        }));
    }

    fn stopped(&mut self, _ctx: &mut Self::Context) {
        self.notifier.mark_stopped();
    }
}

impl Handler<BarClosed> for ModelHost {
    type Result = ();

    fn handle(&mut self, BarClosed(bar): BarClosed, ctx: &mut Self::Context) {
        if bar.open_time_ms <= self.last_bar_ms {
            return;
        }
        self.last_bar_ms = bar.open_time_ms;
        let name = format!("model:{}", self.deployment.id);
        let this = &mut *self;
        let result = contain(|| {
            if super::task::faults_armed() {
                super::task::fault_point(&name);
            }
            this.on_bar(&bar);
        });
        if let Err(why) = result {
            self.fail(why, ctx);
        }
    }
}

impl Handler<GetModelState> for ModelHost {
    type Result = MessageResult<GetModelState>;

    fn handle(&mut self, _: GetModelState, _ctx: &mut Self::Context) -> Self::Result {
        MessageResult(ModelState {
            deployment: self.deployment.id.clone(),
            versions: self.runs.iter().map(|r| r.state.clone()).collect(),
            recent: self.recent.iter().cloned().collect(),
        })
    }
}

impl Handler<Shutdown> for ModelHost {
    type Result = ();

    fn handle(&mut self, _msg: Shutdown, ctx: &mut Self::Context) {
        ctx.stop();
    }
}
