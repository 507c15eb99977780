//! The two pools that run tenant model code, so that no HTTP worker and no trading thread ever does.
//!
//! # Why
//!
//! A model is tenant code (docs/tenant-code.md). Validating it (tract's optimisation and the dry runs) and
//! running it take time trellis does not control; on an HTTP worker that time is a request nobody else gets,
//! on the tenant's arbiter it is every strategy, the risk gate and the portfolio of that tenant waiting. Both
//! run here, on threads of their own, and the callers wait on a channel with a deadline.
//!
//! - [`Validation`]: uploads and every dry run of a deployment being made. At most
//!   [`VALIDATIONS_AT_ONCE`] run at once in the process and [`VALIDATIONS_PER_TENANT`] per tenant; a caller
//!   waits for its turn and the run within [`VALIDATION_DEADLINE`] in all, or is answered
//!   [`PoolError::Deadline`] (a refusal) or [`PoolError::Busy`] (try again). A run that outlives its caller's
//!   deadline keeps its permits until it ends, so the bound holds for what really runs, not for what is
//!   still awaited.
//! - [`Inference`]: predictions. Each tenant runs at most [`Inference::per_tenant`] predictions at once; the
//!   rest of its runs wait in its own queue, so one tenant's slow models cannot occupy every thread. The
//!   model host gives a version at most one run at a time (a bar that finds it busy skips it), so a tenant's
//!   queue never holds more than its versions.
//!
//! # Limitations
//!
//! A run cannot be interrupted: tract has no cancellation. What bounds a run is its admission (the cost pass
//! of [`super::cost`] limits its work and memory); what the deadline bounds is how long anybody waits for it.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use tokio::sync::{oneshot, Semaphore};

use crate::runtime::supervisor::contain;

/// Validations running at once in the process.
pub const VALIDATIONS_AT_ONCE: usize = 2;
/// Validations running at once for one tenant.
pub const VALIDATIONS_PER_TENANT: usize = 1;
/// How long a caller waits for a validation, its turn included.
pub const VALIDATION_DEADLINE: Duration = Duration::from_secs(10);

/// Why a job gave no result.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PoolError {
    #[error("other model validations hold every slot ({0}); try again shortly")]
    Busy(String),
    #[error("the model's validation did not finish within {0:?}")]
    Deadline(Duration),
    #[error("the model panicked: {0}")]
    Panicked(String),
    #[error("the model pool is not running")]
    Gone,
}

impl PoolError {
    /// Whether the same request may succeed later (a busy pool) rather than being a refusal of the model.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::Busy(_) | Self::Gone)
    }
}

fn threads(name: &'static str, n: usize) -> Option<rayon::ThreadPool> {
    match rayon::ThreadPoolBuilder::new()
        .num_threads(n)
        .thread_name(move |i| format!("{name}-{i}"))
        .build()
    {
        Ok(pool) => Some(pool),
        Err(e) => {
            tracing::error!(pool = name, error = %e, "model pool threads could not start");
            None
        }
    }
}

/// The bounded pool of model validations (uploads, deployments' dry runs).
#[derive(Debug)]
pub struct Validation {
    threads: Option<rayon::ThreadPool>,
    total: Arc<Semaphore>,
    /// One semaphore per tenant that has validated something; only this pool reads or writes it.
    tenants: Mutex<HashMap<String, Arc<Semaphore>>>,
    per_tenant: usize,
    deadline: Duration,
}

impl Validation {
    pub fn new(at_once: usize, per_tenant: usize, deadline: Duration) -> Self {
        Self {
            threads: threads("model-validate", at_once.max(1)),
            total: Arc::new(Semaphore::new(at_once.max(1))),
            tenants: Mutex::new(HashMap::new()),
            per_tenant: per_tenant.max(1),
            deadline,
        }
    }

    /// The process's validation pool.
    pub fn global() -> &'static Self {
        static POOL: OnceLock<Validation> = OnceLock::new();
        POOL.get_or_init(|| {
            Self::new(
                VALIDATIONS_AT_ONCE,
                VALIDATIONS_PER_TENANT,
                VALIDATION_DEADLINE,
            )
        })
    }

    /// Runs `job` for `tenant` within the bounds and the deadline; a panic is [`PoolError::Panicked`].
    pub async fn run<T, F>(&self, tenant: &str, job: F) -> Result<T, PoolError>
    where
        T: Send + 'static,
        F: FnOnce() -> T + Send + 'static,
    {
        let start = Instant::now();
        let threads = self.threads.as_ref().ok_or(PoolError::Gone)?;
        let mine = {
            let mut tenants = self.tenants.lock().map_err(|_| PoolError::Gone)?;
            tenants
                .entry(tenant.to_owned())
                .or_insert_with(|| Arc::new(Semaphore::new(self.per_tenant)))
                .clone()
        };
        let left = |start: Instant| self.deadline.saturating_sub(start.elapsed());
        let own = tokio::time::timeout(left(start), mine.acquire_owned())
            .await
            .map_err(|_| PoolError::Busy("this tenant's".into()))?
            .map_err(|_| PoolError::Gone)?;
        let all = tokio::time::timeout(left(start), self.total.clone().acquire_owned())
            .await
            .map_err(|_| PoolError::Busy("the process's".into()))?
            .map_err(|_| PoolError::Gone)?;
        let (tx, rx) = oneshot::channel();
        threads.spawn(move || {
            let out = contain(job);
            // The slots are given back when the work ends, not when its caller stops waiting.
            drop((own, all));
            let _ = tx.send(out);
        });
        match tokio::time::timeout(left(start), rx).await {
            Ok(Ok(Ok(v))) => Ok(v),
            Ok(Ok(Err(panic))) => Err(PoolError::Panicked(panic)),
            Ok(Err(_)) => Err(PoolError::Gone),
            Err(_) => Err(PoolError::Deadline(self.deadline)),
        }
    }
}

type Job = Box<dyn FnOnce() + Send + 'static>;

/// A tenant's predictions: how many run, and those waiting their turn.
#[derive(Default)]
struct Queue {
    running: usize,
    waiting: VecDeque<Job>,
}

/// The pool predictions run on, fair between tenants.
pub struct Inference {
    threads: Option<rayon::ThreadPool>,
    per_tenant: usize,
    /// Per tenant, its running count and queue; touched only by [`Inference::submit`] and the end of a job.
    queues: Mutex<HashMap<String, Queue>>,
}

impl std::fmt::Debug for Inference {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inference")
            .field("per_tenant", &self.per_tenant)
            .finish_non_exhaustive()
    }
}

impl Inference {
    pub fn new(threads_n: usize, per_tenant: usize) -> Self {
        Self {
            threads: threads("model-infer", threads_n.max(1)),
            per_tenant: per_tenant.max(1),
            queues: Mutex::new(HashMap::new()),
        }
    }

    /// The process's inference pool: one thread per core (at least two), half of them at most per tenant.
    pub fn global() -> &'static Self {
        static POOL: OnceLock<Inference> = OnceLock::new();
        POOL.get_or_init(|| {
            let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
            let n = cores.clamp(2, 16);
            Self::new(n, (n / 2).max(1))
        })
    }

    /// Predictions one tenant runs at once.
    pub fn per_tenant(&self) -> usize {
        self.per_tenant
    }

    /// Runs `job` for `tenant` when its turn comes; the result (or the panic's message) on the channel.
    pub fn submit<T, F>(&'static self, tenant: &str, job: F) -> oneshot::Receiver<Result<T, String>>
    where
        T: Send + 'static,
        F: FnOnce() -> T + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let wrapped: Job = Box::new(move || {
            let _ = tx.send(contain(job));
        });
        self.enqueue(tenant.to_owned(), wrapped);
        rx
    }

    fn enqueue(&'static self, tenant: String, job: Job) {
        let Some(threads) = self.threads.as_ref() else {
            return; // The receiver sees the channel closed.
        };
        let Ok(mut queues) = self.queues.lock() else {
            return;
        };
        let q = queues.entry(tenant.clone()).or_default();
        if q.running >= self.per_tenant {
            q.waiting.push_back(job);
            return;
        }
        q.running += 1;
        drop(queues);
        threads.spawn(move || self.work(tenant, job));
    }

    /// Runs `job`, then the tenant's next waiting job on the same thread, until its queue is empty.
    fn work(&'static self, tenant: String, job: Job) {
        let mut next = Some(job);
        while let Some(job) = next.take() {
            job();
            let Ok(mut queues) = self.queues.lock() else {
                return;
            };
            let Some(q) = queues.get_mut(&tenant) else {
                return;
            };
            next = q.waiting.pop_front();
            if next.is_none() {
                q.running = q.running.saturating_sub(1);
                if q.running == 0 {
                    queues.remove(&tenant);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    #[actix_rt::test]
    async fn a_validation_over_its_deadline_is_refused_and_keeps_its_slot_until_it_ends() {
        let pool = Validation::new(1, 1, Duration::from_millis(100));
        let started = Instant::now();
        let err = pool
            .run("t", || std::thread::sleep(Duration::from_millis(400)))
            .await
            .expect_err("over the deadline");
        assert_eq!(err, PoolError::Deadline(Duration::from_millis(100)));
        assert!(started.elapsed() < Duration::from_millis(300));
        // The slow run still holds the only slot: the next caller waits and is told it is busy.
        let err = pool.run("u", || 1).await.expect_err("busy");
        assert!(err.is_retryable(), "{err}");
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert_eq!(pool.run("u", || 2).await, Ok(2));
    }

    #[actix_rt::test]
    async fn a_panicking_validation_is_an_error_not_a_crash() {
        let pool = Validation::new(1, 1, Duration::from_secs(1));
        let err = pool
            .run("t", || -> u8 { panic!("hostile") })
            .await
            .expect_err("panicked");
        assert!(matches!(err, PoolError::Panicked(ref m) if m.contains("hostile")));
    }

    #[actix_rt::test]
    async fn one_tenant_runs_at_most_its_share_of_predictions_at_once() {
        let pool: &'static Inference = Box::leak(Box::new(Inference::new(4, 1)));
        let running = Arc::new(AtomicUsize::new(0));
        let most = Arc::new(AtomicUsize::new(0));
        let mut results = Vec::new();
        for i in 0..6 {
            let (running, most) = (running.clone(), most.clone());
            results.push(pool.submit("greedy", move || {
                let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                most.fetch_max(now, Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(20));
                running.fetch_sub(1, Ordering::SeqCst);
                i
            }));
        }
        // Another tenant is not queued behind the first one's runs.
        let other = Instant::now();
        let quick = pool.submit("other", || 7).await.expect("sent");
        assert_eq!(quick, Ok(7));
        assert!(other.elapsed() < Duration::from_millis(60));
        let mut got = Vec::new();
        for r in results {
            got.push(r.await.expect("sent").expect("ran"));
        }
        assert_eq!(got, vec![0, 1, 2, 3, 4, 5]);
        assert_eq!(most.load(Ordering::SeqCst), 1);
    }
}
