//! `TrainingJobs`: the process's training jobs — queued, run one at a time on the blocking pool, visible
//! with their progress, cancellable, audited.
//!
//! A job trains a direction model for a tenant's registry model on the tenant's stored bars
//! (`models::training`: walk-forward validation, then a final fit), and stores the result as a registry
//! version exactly like an upload (validated by loading it, encrypted with the data keys, content-addressed).
//! With `promote`, the new version is then judged against the version the alias (default `champion`)
//! points at, on the last walk-forward block, bar by bar: it takes the alias only when it is better by the
//! margin and significantly so (exact McNemar); either way the decision is audited with its figures. Moving
//! the alias moves the deployments that follow it, as through the API.
//!
//! One job runs at a time, on a thread of its own at the lowest CPU priority (nice 19), never on an
//! actor's thread: on a 2-core machine trading keeps a core and wins every contest for the other. The rest
//! wait in order.
//! Jobs live in memory: a restart abandons a queued or running job (what it would have produced is a
//! registry version, which is durable once stored); its audit entries remain.
//!
//! **Schedules.** Every second the actor looks at the running tenants' deployments that carry a
//! `retrain` schedule (registry models only) and queues a job for each whose period has passed since its
//! last scheduled job: trained on the last `window` of the deployment's symbol and timeframe, promoted
//! over `alias` under the schedule's margin and significance. The clock of a schedule starts when this
//! process does (a restart does not retrain everything at once); a schedule whose previous job is still
//! queued or running waits for it.
//!
//! This actor sits beside the HTTP layer rather than in a tenant's subtree because its results go to the
//! registry and the audit log (the security service), which tenants' actors do not reach.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use actix::prelude::*;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::app::App;
use crate::domain::tenant::TrainSpec;
use crate::domain::Timeframe;
use crate::models::deployment::LoadedVersion;
use crate::models::registry::OwnedRef;
use crate::models::training::{self, Comparison, Progress, WalkForward};

/// Jobs kept per process (finished ones beyond this are forgotten, oldest first).
const KEPT: usize = 1_000;

/// What a job trains on and whether it may promote its result.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct JobRequest {
    pub symbol: String,
    #[schemars(pattern(r"^(M1|M5|M15|H1|H4|D1)$"))]
    pub timeframe: String,
    /// Bars opened in `[from_ms, to_ms]` (default: everything stored).
    #[serde(default)]
    pub from_ms: Option<i64>,
    #[serde(default)]
    pub to_ms: Option<i64>,
    pub train: TrainSpec,
    #[serde(default)]
    pub promote: Option<PromoteSpec>,
}

/// When a trained version takes an alias from the version holding it.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PromoteSpec {
    #[serde(default = "champion")]
    #[schemars(pattern(r"^[A-Za-z0-9_-]{1,64}$"))]
    pub alias: String,
    /// Accuracy points the challenger must gain (0.01 = one point).
    #[serde(default = "point")]
    #[schemars(range(min = 0.0, max = 1.0))]
    pub min_improvement: f64,
    /// Significance level of the McNemar test.
    #[serde(default = "five_percent")]
    #[schemars(range(min = 0.0, max = 0.5))]
    pub alpha: f64,
}

fn champion() -> String {
    "champion".into()
}
fn point() -> f64 {
    0.01
}
fn five_percent() -> f64 {
    0.05
}

/// A job's promotion decision.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct Promotion {
    pub alias: String,
    pub promoted: bool,
    pub reason: String,
    /// `None` when the alias pointed nowhere (the version takes it) or at a version without a direction.
    pub comparison: Option<Comparison>,
    pub previous: Option<String>,
    pub deployments: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    Queued,
    Running,
    Succeeded,
    Failed,
    Cancelled,
}

/// A job as the API shows it.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct JobView {
    pub id: String,
    pub tenant: String,
    pub model: String,
    pub state: JobState,
    /// 0 to 1.
    pub progress: f64,
    pub actor: String,
    pub created_ms: i64,
    pub started_ms: Option<i64>,
    pub finished_ms: Option<i64>,
    pub request: JobRequest,
    pub bars: Option<usize>,
    pub version: Option<String>,
    pub report: Option<WalkForward>,
    pub promotion: Option<Promotion>,
    pub error: Option<String>,
}

struct Job {
    view: JobView,
    progress: Arc<Progress>,
}

/// Why a job request is refused.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    #[error("no such job")]
    NotFound,
    #[error("job `{0}` has finished: nothing to cancel")]
    Finished(String),
}

pub struct TrainingJobs {
    state: App,
    jobs: BTreeMap<String, Job>,
    queue: VecDeque<String>,
    running: Option<String>,
    next: u64,
    /// Per (tenant, deployment) with a schedule: when its last scheduled job was queued (or this process
    /// started) and that job's id.
    schedules: BTreeMap<(String, String), (i64, Option<String>)>,
}

impl TrainingJobs {
    pub fn new(state: App) -> Self {
        Self {
            state,
            jobs: BTreeMap::new(),
            queue: VecDeque::new(),
            running: None,
            next: 1,
            schedules: BTreeMap::new(),
        }
    }

    /// Queues the jobs whose schedules are due.
    fn tick_schedules(&mut self, ctx: &mut Context<Self>) {
        let now = crate::domain::now_ms();
        let mut due = Vec::new();
        let mut seen = std::collections::BTreeSet::new();
        for entry in self.state.runtime.tenants.iter() {
            let t = entry.value();
            for d in t.deployments.read().values() {
                let (Some(r), Some(model)) = (&d.settings.retrain, &d.settings.model) else {
                    continue;
                };
                let (Some(every), Some(window)) = (
                    crate::domain::tenant::parse_span(&r.every),
                    crate::domain::tenant::parse_span(&r.window),
                ) else {
                    continue;
                };
                let key = (t.id.0.clone(), d.id.clone());
                seen.insert(key.clone());
                let (last, job) = self.schedules.entry(key.clone()).or_insert((now, None));
                let busy = job.as_ref().is_some_and(|id| {
                    self.jobs.get(id).is_some_and(|j| {
                        matches!(j.view.state, JobState::Queued | JobState::Running)
                    })
                });
                if busy || now - *last < every {
                    continue;
                }
                *last = now;
                let request = JobRequest {
                    symbol: d.symbol.as_str().to_owned(),
                    timeframe: d.timeframe.as_str().to_owned(),
                    from_ms: Some(now - window),
                    to_ms: Some(now),
                    train: r.train.clone(),
                    promote: Some(PromoteSpec {
                        alias: r.alias.clone(),
                        min_improvement: r.min_improvement,
                        alpha: r.alpha,
                    }),
                };
                due.push((key, model.clone(), request));
            }
        }
        self.schedules.retain(|k, _| seen.contains(k));
        for ((tenant, deployment), model, request) in due {
            let view = self.submit(
                tenant.clone(),
                model,
                format!("schedule:{deployment}"),
                request,
                ctx,
            );
            tracing::info!(tenant = %tenant, deployment = %deployment, job = %view.id, "scheduled retraining queued");
            if let Some(s) = self.schedules.get_mut(&(tenant, deployment)) {
                s.1 = Some(view.id);
            }
        }
    }

    fn submit(
        &mut self,
        tenant: String,
        model: String,
        actor: String,
        request: JobRequest,
        ctx: &mut Context<Self>,
    ) -> JobView {
        let id = format!("job-{}-{}", crate::domain::now_ms(), self.next);
        self.next += 1;
        let view = JobView {
            id: id.clone(),
            tenant,
            model,
            state: JobState::Queued,
            progress: 0.0,
            actor,
            created_ms: crate::domain::now_ms(),
            started_ms: None,
            finished_ms: None,
            request,
            bars: None,
            version: None,
            report: None,
            promotion: None,
            error: None,
        };
        self.jobs.insert(
            id.clone(),
            Job {
                view: view.clone(),
                progress: Arc::new(Progress::default()),
            },
        );
        self.queue.push_back(id.clone());
        self.pump(ctx);
        self.view(&id).unwrap_or(view)
    }

    fn view(&self, id: &str) -> Option<JobView> {
        self.jobs.get(id).map(|j| {
            let mut v = j.view.clone();
            if v.state == JobState::Running {
                v.progress = f64::from(j.progress.permille()) / 1000.0;
            }
            v
        })
    }

    /// Starts the next queued job when none runs.
    fn pump(&mut self, ctx: &mut Context<Self>) {
        if self.running.is_some() {
            return;
        }
        let Some(id) = self.queue.pop_front() else {
            return;
        };
        let Some(job) = self.jobs.get_mut(&id) else {
            return self.pump(ctx);
        };
        job.view.state = JobState::Running;
        job.view.started_ms = Some(crate::domain::now_ms());
        self.running = Some(id.clone());
        let (state, view, progress) = (self.state.clone(), job.view.clone(), job.progress.clone());
        tracing::info!(job = %id, tenant = %view.tenant, model = %view.model, "training job started");
        ctx.spawn(
            run(state, view, progress)
                .into_actor(self)
                .map(move |outcome, act, ctx| {
                    act.finish(&id, outcome);
                    act.running = None;
                    act.forget_old();
                    act.pump(ctx);
                }),
        );
    }

    fn finish(&mut self, id: &str, outcome: Result<Finished, String>) {
        let Some(job) = self.jobs.get_mut(id) else {
            return;
        };
        let v = &mut job.view;
        v.finished_ms = Some(crate::domain::now_ms());
        match outcome {
            Ok(done) => {
                v.state = JobState::Succeeded;
                v.progress = 1.0;
                v.bars = Some(done.bars);
                v.version = Some(done.version);
                v.report = done.report;
                v.promotion = done.promotion;
            }
            Err(e) if job.progress.is_cancelled() => {
                v.state = JobState::Cancelled;
                v.error = Some(e);
            }
            Err(e) => {
                v.state = JobState::Failed;
                v.error = Some(e);
            }
        }
        tracing::info!(job = %id, state = ?v.state, error = ?v.error, "training job finished");
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

impl Actor for TrainingJobs {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.run_interval(std::time::Duration::from_secs(1), |act, ctx| {
            act.tick_schedules(ctx)
        });
    }
}

/// A finished job's results.
struct Finished {
    bars: usize,
    version: String,
    report: Option<WalkForward>,
    promotion: Option<Promotion>,
}

/// Loads the bars, trains on the blocking pool, stores the version, and promotes if asked.
async fn run(state: App, job: JobView, progress: Arc<Progress>) -> Result<Finished, String> {
    let tf = Timeframe::parse(&job.request.timeframe)
        .ok_or_else(|| format!("timeframe: unknown `{}`", job.request.timeframe))?;
    let req = job.request.clone();
    let bars = crate::storage::timeseries::load_stored_bars(
        &state.settings.storage,
        &job.tenant,
        &req.symbol,
        tf,
        req.from_ms.unwrap_or(i64::MIN),
        req.to_ms.unwrap_or(i64::MAX),
    )
    .await
    .map_err(|e| format!("reading the stored bars: {e}"))?;
    let champion = match &req.promote {
        Some(p) => state
            .security
            .registry_version(&job.tenant, &job.model, &OwnedRef::Alias(p.alias.clone()))
            .await
            .map_err(|e| format!("reading the `{}` version: {e}", p.alias))?,
        None => None,
    };
    let count = bars.len();
    let spec = req.train.clone();
    let watched = progress.clone();
    if spec.kind == crate::domain::tenant::ModelKind::RegimeHmm {
        let regime = training::run_low_priority(move || {
            training::train_regime(&spec, &bars, &watched).map_err(|e| e.to_string())
        })
        .await??;
        if progress.is_cancelled() {
            return Err("cancelled".into());
        }
        let version = store_version(&state, &job, &regime.file, &regime.manifest).await?;
        state
            .security
            .audit(
                &job.tenant,
                "model.trained",
                &job.actor,
                json!({"model": job.model, "job": job.id, "version": version, "kind": "regime_hmm",
                       "bars": count, "rows": regime.rows, "log_likelihood": regime.log_likelihood}),
            )
            .await
            .map_err(|e| format!("auditing: {e}"))?;
        // A regime detector has no direction to judge: a scheduled refit on the latest window replaces it.
        let promotion = match &req.promote {
            Some(p) => {
                let moved = take_alias(&state, &job, &p.alias, &version).await?;
                let reason = "a regime detector is refitted on the latest window".to_owned();
                state
                    .security
                    .audit(
                        &job.tenant,
                        "model.promoted",
                        &job.actor,
                        json!({"model": job.model, "job": job.id, "version": version, "alias": p.alias, "reason": reason}),
                    )
                    .await
                    .map_err(|e| format!("auditing: {e}"))?;
                Some(Promotion {
                    alias: p.alias.clone(),
                    promoted: true,
                    reason,
                    comparison: None,
                    previous: moved.previous,
                    deployments: moved.deployments,
                })
            }
            None => None,
        };
        return Ok(Finished {
            bars: count,
            version,
            report: None,
            promotion,
        });
    }
    let (trained, comparison) = training::run_low_priority(move || {
        let trained = training::train(&spec, &bars, tf, &watched).map_err(|e| e.to_string())?;
        let comparison = match champion {
            Some(c) => {
                let loaded = LoadedVersion::from_bytes(&c.bytes, c.manifest.clone(), 1.0)
                    .map_err(|e| format!("the champion does not load: {e}"))?;
                training::calls(&loaded, &bars).map(|calls| {
                    let h = &trained.holdout;
                    let (mut champ, mut chall) = (Vec::new(), Vec::new());
                    for ((t, up), called) in h.bar_open_ms.iter().zip(&h.labels).zip(&h.called_up) {
                        if let Some(c) = calls.get(t) {
                            champ.push(c == up);
                            chall.push(called == up);
                        }
                    }
                    (c.version.clone(), training::compare(&champ, &chall))
                })
            }
            None => None,
        };
        Ok::<_, String>((trained, comparison))
    })
    .await??;
    if progress.is_cancelled() {
        return Err("cancelled".into());
    }
    let version = store_version(&state, &job, &trained.onnx, &trained.manifest).await?;
    let audit = |action: &'static str, detail: serde_json::Value| {
        let state = state.clone();
        let tenant = job.tenant.clone();
        let actor = job.actor.clone();
        async move {
            state
                .security
                .audit(&tenant, action, &actor, detail)
                .await
                .map_err(|e| format!("auditing: {e}"))
        }
    };
    audit(
        "model.trained",
        json!({"model": job.model, "job": job.id, "version": version, "bars": count,
               "accuracy": trained.report.accuracy, "base_rate": trained.report.base_rate,
               "log_loss": trained.report.log_loss, "sharpe": trained.report.sharpe}),
    )
    .await?;
    let promotion = match &req.promote {
        None => None,
        Some(p) => {
            let (promote, reason, comparison) = match &comparison {
                Some((champion, _)) if *champion == version => {
                    (false, "the champion is this very file".to_owned(), None)
                }
                Some((_, cmp)) => {
                    let (yes, why) = training::decide(cmp, p.min_improvement, p.alpha);
                    (yes, why, Some(cmp.clone()))
                }
                None => (
                    true,
                    format!("alias `{}` pointed at no comparable version", p.alias),
                    None,
                ),
            };
            let (mut previous, mut deployments) = (None, Vec::new());
            if promote {
                let moved = take_alias(&state, &job, &p.alias, &version).await?;
                previous = moved.previous;
                deployments = moved.deployments;
            }
            audit(
                if promote {
                    "model.promoted"
                } else {
                    "model.promotion_refused"
                },
                json!({"model": job.model, "job": job.id, "version": version, "alias": p.alias,
                       "reason": reason, "comparison": comparison}),
            )
            .await?;
            Some(Promotion {
                alias: p.alias.clone(),
                promoted: promote,
                reason,
                comparison,
                previous,
                deployments,
            })
        }
    };
    Ok(Finished {
        bars: count,
        version,
        report: Some(trained.report),
        promotion,
    })
}

/// Points the job's model's `alias` at `version` (moving the deployments that follow it), as the job's actor.
async fn take_alias(
    state: &App,
    job: &JobView,
    alias: &str,
    version: &str,
) -> Result<crate::app::models::AliasMoved, String> {
    let t = state
        .runtime
        .tenant(&job.tenant)
        .ok_or_else(|| format!("tenant `{}` does not run", job.tenant))?;
    crate::app::models::point_alias(state, &t, &job.model, alias, version, &job.actor)
        .await
        .map_err(|e| format!("promoting: {e}"))
}

/// Stores a trained model as a registry version (validated by loading it, encrypted); its sha256.
async fn store_version(
    state: &App,
    job: &JobView,
    file: &[u8],
    manifest: &crate::models::manifest::Manifest,
) -> Result<String, String> {
    let loaded = LoadedVersion::from_bytes(file, manifest.clone(), 1.0)
        .map_err(|e| format!("the trained model does not validate: {e}"))?;
    let version = loaded.version.clone();
    let security = &state.security;
    let (file_enc, key_version) = security
        .encrypt_model_file(&job.tenant, &job.model, &version, file)
        .map_err(|e| format!("encrypting: {e}"))?;
    let row = crate::storage::security::ModelVersionRow {
        tenant_id: job.tenant.clone(),
        name: job.model.clone(),
        version: version.clone(),
        manifest: serde_json::to_string(manifest).map_err(|e| e.to_string())?,
        key_version,
        size_bytes: file.len() as i64,
        created_ms: crate::domain::now_ms(),
    };
    security
        .store
        .insert_version(&row, &file_enc)
        .await
        .map_err(|e| format!("storing the version: {e}"))?;
    Ok(version)
}

/// Queues a job.
#[derive(Message)]
#[rtype(result = "JobView")]
pub struct SubmitJob {
    pub tenant: String,
    pub model: String,
    pub actor: String,
    pub request: JobRequest,
}

impl Handler<SubmitJob> for TrainingJobs {
    type Result = MessageResult<SubmitJob>;

    fn handle(&mut self, msg: SubmitJob, ctx: &mut Self::Context) -> Self::Result {
        MessageResult(self.submit(msg.tenant, msg.model, msg.actor, msg.request, ctx))
    }
}

/// The jobs of a tenant's model (newest first).
#[derive(Message)]
#[rtype(result = "Vec<JobView>")]
pub struct ListJobs {
    pub tenant: String,
    pub model: String,
}

impl Handler<ListJobs> for TrainingJobs {
    type Result = MessageResult<ListJobs>;

    fn handle(&mut self, msg: ListJobs, _ctx: &mut Self::Context) -> Self::Result {
        let mut out: Vec<JobView> = self
            .jobs
            .iter()
            .filter(|(_, j)| j.view.tenant == msg.tenant && j.view.model == msg.model)
            .filter_map(|(id, _)| self.view(id))
            .collect();
        out.sort_by(|a, b| b.created_ms.cmp(&a.created_ms).then(b.id.cmp(&a.id)));
        MessageResult(out)
    }
}

/// One job of a tenant.
#[derive(Message)]
#[rtype(result = "Result<JobView, JobError>")]
pub struct GetJob {
    pub tenant: String,
    pub id: String,
}

impl Handler<GetJob> for TrainingJobs {
    type Result = Result<JobView, JobError>;

    fn handle(&mut self, msg: GetJob, _ctx: &mut Self::Context) -> Self::Result {
        self.view(&msg.id)
            .filter(|v| v.tenant == msg.tenant)
            .ok_or(JobError::NotFound)
    }
}

/// Cancels a tenant's queued or running job (a running one stops at its next fold).
#[derive(Message)]
#[rtype(result = "Result<JobView, JobError>")]
pub struct CancelJob {
    pub tenant: String,
    pub id: String,
}

impl Handler<CancelJob> for TrainingJobs {
    type Result = Result<JobView, JobError>;

    fn handle(&mut self, msg: CancelJob, _ctx: &mut Self::Context) -> Self::Result {
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
            JobState::Running => job.progress.cancel(),
            _ => return Err(JobError::Finished(msg.id)),
        }
        self.view(&msg.id).ok_or(JobError::NotFound)
    }
}
