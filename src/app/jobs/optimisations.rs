//! `Optimisations`: the process's strategy optimisation jobs — queued, run one at a time, visible with
//! their progress, cancellable — behind `POST/GET/DELETE /api/v1/tenants/{t}/optimisations`.
//!
//! A job reads the tenant's stored ticks of the symbol in chunks into one decoded [`History`], then runs
//! the search of `backtest::optimise` (grid, random, genetic; optionally walk-forward) on a pool of worker
//! threads at the lowest CPU priority (nice 19), so that trading keeps its cores: the same engine as
//! `trellis optimise`, deterministic for a seed. One job runs at a time; the rest wait in order. Jobs live
//! in memory, like training jobs: a restart abandons them (they change nothing that must survive).

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use actix::prelude::*;
use serde::Serialize;
use serde_json::{json, Value};

use super::training::{JobError, JobState};
use crate::app::optimise::OptimiseRequest;
use crate::app::App;
use crate::backtest::optimise::{
    Constraints, Control, Method, Objective, Space, StrategyRuns, WalkForwardSpec,
};
use crate::backtest::tape::{History, Quote};
use crate::backtest::BacktestConfig;
use crate::domain::Symbol;
use crate::strategies::StrategyRegistry;

/// Jobs kept per process (finished ones beyond this are forgotten, oldest first).
const KEPT: usize = 200;
/// Candidates a finished job keeps, best first.
pub const KEPT_RESULTS: usize = 100;

/// A validated optimisation: everything the search needs but the ticks.
#[derive(Clone)]
pub struct Plan {
    pub template: BacktestConfig,
    pub registry: StrategyRegistry,
    pub space: Space,
    pub method: Method,
    pub objective: Objective,
    pub constraints: Constraints,
    pub walk_forward: Option<WalkForwardSpec>,
    pub seed: u64,
    pub from_ms: i64,
    pub to_ms: i64,
}

/// A job as the API shows it.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct OptimisationView {
    pub id: String,
    pub tenant: String,
    pub actor: String,
    pub state: JobState,
    /// Runs done and expected (a genetic search's expectation grows with its generations).
    pub runs_done: u64,
    pub runs_total: u64,
    pub created_ms: i64,
    pub started_ms: Option<i64>,
    pub finished_ms: Option<i64>,
    pub request: OptimiseRequest,
    pub ticks: Option<usize>,
    /// Best first: `{params, score, report}` or `{params, score: null, error}`.
    #[schemars(with = "Option<Vec<crate::app::optimise::Candidate>>")]
    pub results: Option<Vec<Value>>,
    #[schemars(with = "Option<crate::app::optimise::WalkForwardResult>")]
    pub walk_forward: Option<Value>,
    pub error: Option<String>,
}

struct Job {
    view: OptimisationView,
    plan: Plan,
    control: Arc<Control>,
}

pub struct Optimisations {
    state: App,
    jobs: BTreeMap<String, Job>,
    queue: VecDeque<String>,
    running: Option<String>,
    next: u64,
    pool: Option<Arc<rayon::ThreadPool>>,
}

impl Optimisations {
    pub fn new(state: App) -> Self {
        Self {
            state,
            jobs: BTreeMap::new(),
            queue: VecDeque::new(),
            running: None,
            next: 1,
            pool: None,
        }
    }

    /// The worker threads, started with the first job: one per core but one, each at nice 19 in the idle
    /// scheduling class.
    fn pool(&mut self) -> Result<Arc<rayon::ThreadPool>, String> {
        if let Some(p) = &self.pool {
            return Ok(Arc::clone(p));
        }
        // One core fewer than the machine has: even in the idle scheduling class, a search that keeps every
        // core busy doubled tick → order p99 on two cores (`trellis bench beside`: a woken trading thread
        // then always lands on a core busy with a backtest, and shares its caches), while one that leaves a
        // core free did not move it (the training job's figure).
        let threads = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2)
            .saturating_sub(1)
            .max(1);
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name(|i| format!("trellis-opt-{i}"))
            .start_handler(|_| crate::models::training::lower_this_threads_priority())
            .build()
            .map_err(|e| format!("starting the optimisation threads: {e}"))?;
        let pool = Arc::new(pool);
        self.pool = Some(Arc::clone(&pool));
        Ok(pool)
    }

    fn view(&self, id: &str) -> Option<OptimisationView> {
        self.jobs.get(id).map(|j| {
            let mut v = j.view.clone();
            v.runs_done = j.control.done.load(Ordering::Relaxed);
            v.runs_total = j.control.total.load(Ordering::Relaxed).max(v.runs_done);
            v
        })
    }

    fn pump(&mut self, ctx: &mut Context<Self>) {
        if self.running.is_some() {
            return;
        }
        let Some(id) = self.queue.pop_front() else {
            return;
        };
        let pool = self.pool();
        let Some(job) = self.jobs.get_mut(&id) else {
            return self.pump(ctx);
        };
        job.view.state = JobState::Running;
        job.view.started_ms = Some(crate::domain::now_ms());
        self.running = Some(id.clone());
        let settings = self.state.settings.clone();
        let (tenant, symbol) = (job.view.tenant.clone(), job.view.request.symbol.clone());
        let (plan, control) = (job.plan.clone(), Arc::clone(&job.control));
        tracing::info!(job = %id, tenant = %tenant, "optimisation started");
        ctx.spawn(
            async move {
                let pool = pool?;
                let history = load(&settings.storage, &tenant, &symbol, &plan).await?;
                let ticks = history.len();
                let searched = crate::models::training::run_low_priority(move || {
                    pool.install(|| search(&plan, &history, &control))
                })
                .await??;
                Ok((ticks, searched))
            }
            .into_actor(self)
            .map(move |outcome, act, ctx| {
                act.finish(&id, outcome);
                act.running = None;
                act.forget_old();
                act.pump(ctx);
            }),
        );
    }

    fn finish(&mut self, id: &str, outcome: Result<(usize, Searched), String>) {
        let Some(job) = self.jobs.get_mut(id) else {
            return;
        };
        let v = &mut job.view;
        v.finished_ms = Some(crate::domain::now_ms());
        match outcome {
            Ok((ticks, searched)) => {
                v.state = JobState::Succeeded;
                v.ticks = Some(ticks);
                v.results = Some(searched.results);
                v.walk_forward = searched.walk_forward;
            }
            Err(e) if job.control.cancelled() => {
                v.state = JobState::Cancelled;
                v.error = Some(e);
            }
            Err(e) => {
                v.state = JobState::Failed;
                v.error = Some(e);
            }
        }
        tracing::info!(job = %id, state = ?v.state, error = ?v.error, "optimisation finished");
    }

    fn forget_old(&mut self) {
        while self.jobs.len() > KEPT {
            let oldest = self
                .jobs
                .iter()
                .find(|(_, j)| j.view.finished_ms.is_some())
                .map(|(id, _)| id.clone());
            match oldest {
                Some(id) => {
                    self.jobs.remove(&id);
                }
                None => break,
            }
        }
    }
}

impl Actor for Optimisations {
    type Context = Context<Self>;
}

/// Reads the stored ticks of the plan's range, chunk by chunk, into one decoded history.
async fn load(
    storage: &crate::config::StorageSettings,
    tenant: &str,
    symbol: &str,
    plan: &Plan,
) -> Result<History, String> {
    let mut quotes = Vec::new();
    let sink = |chunk: Vec<crate::domain::Tick>| {
        quotes.extend(chunk.into_iter().map(|t| Quote {
            time_msc: t.time_msc,
            bid: t.bid,
            ask: t.ask,
        }));
        true
    };
    let read = match storage.clickhouse() {
        Some(cfg) => {
            crate::storage::clickhouse::stream_ticks(
                &cfg,
                tenant,
                symbol,
                plan.from_ms,
                plan.to_ms,
                65_536,
                sink,
            )
            .await
        }
        None => {
            crate::storage::timeseries::stream_ticks(
                &storage.data_dir,
                tenant,
                symbol,
                plan.from_ms,
                plan.to_ms,
                65_536,
                sink,
            )
            .await
        }
    };
    read.map_err(|e| format!("reading the stored ticks: {e}"))?;
    Ok(History::from_quotes(Symbol::new(symbol.to_owned()), quotes))
}

struct Searched {
    results: Vec<Value>,
    walk_forward: Option<Value>,
}

/// The search itself, on the calling (worker) thread's pool.
fn search(plan: &Plan, history: &History, control: &Control) -> Result<Searched, String> {
    let runs = StrategyRuns {
        template: &plan.template,
        registry: &plan.registry,
        objective: plan.objective,
        constraints: &plan.constraints,
        space: &plan.space,
    };
    let cancelled = |_| "cancelled".to_owned();
    let row = |values: &[f64], score: Option<f64>, outcome: &crate::backtest::optimise::Outcome| {
        let mut v = json!({"params": plan.space.params(values), "score": score});
        match outcome {
            Ok(r) => v["report"] = serde_json::to_value(r).unwrap_or_default(),
            Err(e) => v["error"] = e.clone().into(),
        }
        v
    };
    match plan.walk_forward {
        None => {
            let tape = history.tape(plan.template.timeframe);
            let candidates = runs
                .optimise(&tape, &plan.method, plan.seed, control)
                .map_err(cancelled)?;
            Ok(Searched {
                results: candidates
                    .iter()
                    .take(KEPT_RESULTS)
                    .map(|c| row(&c.values, c.score, &c.outcome))
                    .collect(),
                walk_forward: None,
            })
        }
        Some(spec) => {
            let w = runs
                .walk_forward(history, spec, &plan.method, plan.seed, control)
                .map_err(cancelled)??;
            let mut wf = serde_json::to_value(&w).unwrap_or_default();
            // Parameter vectors as named parameters, as everywhere else in the API.
            if let Some(windows) = wf["windows"].as_array_mut() {
                for (out, r) in windows.iter_mut().zip(&w.windows) {
                    out["best"] = r
                        .best
                        .as_ref()
                        .map(|v| json!(plan.space.params(v)))
                        .unwrap_or(Value::Null);
                }
            }
            Ok(Searched {
                results: Vec::new(),
                walk_forward: Some(wf),
            })
        }
    }
}

/// Queues a job.
#[derive(Message)]
#[rtype(result = "OptimisationView")]
pub struct SubmitOptimisation {
    pub tenant: String,
    pub actor: String,
    pub request: OptimiseRequest,
    pub plan: Plan,
}

impl Handler<SubmitOptimisation> for Optimisations {
    type Result = MessageResult<SubmitOptimisation>;

    fn handle(&mut self, msg: SubmitOptimisation, ctx: &mut Self::Context) -> Self::Result {
        let id = format!("opt-{}-{}", crate::domain::now_ms(), self.next);
        self.next += 1;
        let view = OptimisationView {
            id: id.clone(),
            tenant: msg.tenant,
            actor: msg.actor,
            state: JobState::Queued,
            runs_done: 0,
            runs_total: 0,
            created_ms: crate::domain::now_ms(),
            started_ms: None,
            finished_ms: None,
            request: msg.request,
            ticks: None,
            results: None,
            walk_forward: None,
            error: None,
        };
        self.jobs.insert(
            id.clone(),
            Job {
                view: view.clone(),
                plan: msg.plan,
                control: Arc::new(Control::default()),
            },
        );
        self.queue.push_back(id.clone());
        self.pump(ctx);
        MessageResult(self.view(&id).unwrap_or(view))
    }
}

/// A tenant's jobs, newest first, without their results.
#[derive(Message)]
#[rtype(result = "Vec<OptimisationView>")]
pub struct ListOptimisations {
    pub tenant: String,
}

impl Handler<ListOptimisations> for Optimisations {
    type Result = MessageResult<ListOptimisations>;

    fn handle(&mut self, msg: ListOptimisations, _ctx: &mut Self::Context) -> Self::Result {
        let mut out: Vec<OptimisationView> = self
            .jobs
            .iter()
            .filter(|(_, j)| j.view.tenant == msg.tenant)
            .filter_map(|(id, _)| self.view(id))
            .map(|mut v| {
                v.results = None;
                v.walk_forward = None;
                v
            })
            .collect();
        out.sort_by(|a, b| b.created_ms.cmp(&a.created_ms).then(b.id.cmp(&a.id)));
        MessageResult(out)
    }
}

/// One job of a tenant, with its results once finished.
#[derive(Message)]
#[rtype(result = "Result<OptimisationView, JobError>")]
pub struct GetOptimisation {
    pub tenant: String,
    pub id: String,
}

impl Handler<GetOptimisation> for Optimisations {
    type Result = Result<OptimisationView, JobError>;

    fn handle(&mut self, msg: GetOptimisation, _ctx: &mut Self::Context) -> Self::Result {
        self.view(&msg.id)
            .filter(|v| v.tenant == msg.tenant)
            .ok_or(JobError::NotFound)
    }
}

/// Cancels a tenant's queued or running job (a running one stops after the runs in progress).
#[derive(Message)]
#[rtype(result = "Result<OptimisationView, JobError>")]
pub struct CancelOptimisation {
    pub tenant: String,
    pub id: String,
}

impl Handler<CancelOptimisation> for Optimisations {
    type Result = Result<OptimisationView, JobError>;

    fn handle(&mut self, msg: CancelOptimisation, _ctx: &mut Self::Context) -> Self::Result {
        let job = self
            .jobs
            .get_mut(&msg.id)
            .filter(|j| j.view.tenant == msg.tenant)
            .ok_or(JobError::NotFound)?;
        match job.view.state {
            JobState::Queued => {
                job.view.state = JobState::Cancelled;
                job.view.finished_ms = Some(crate::domain::now_ms());
                self.queue.retain(|id| id != &msg.id);
            }
            JobState::Running => job.control.cancel.store(true, Ordering::Relaxed),
            _ => return Err(JobError::Finished(msg.id)),
        }
        self.view(&msg.id).ok_or(JobError::NotFound)
    }
}
