//! The supervision event log: every start, failure, restart, escalation and give-up, with the child's name,
//! tenant and reason. Each event is logged with `tracing`, counted in metrics and kept in a bounded in-memory
//! history (oldest dropped first) that the admin API shows, so an operator can see what failed and why
//! without trawling log files.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use tokio::sync::Notify;

use crate::metrics::Metrics;

/// What happened to a child.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// The child was started for the first time.
    Started,
    /// The child ended with a failure (error, panic, or a factory that could not build it).
    Failed,
    /// The child ended normally.
    Stopped,
    /// The child was started again after ending.
    Restarted,
    /// The supervisor exceeded its restart intensity, stopped its subtree and reported to its parent.
    Escalated,
    /// The root exceeded its intensity for this child and stopped restarting it (the root has no parent).
    GaveUp,
    /// The child exceeded its own restart budget (a supervisor with per-child budgets): kept, not restarted
    /// until started again.
    Disabled,
}

impl EventKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Started => "started",
            Self::Failed => "failed",
            Self::Stopped => "stopped",
            Self::Restarted => "restarted",
            Self::Escalated => "escalated",
            Self::GaveUp => "gave_up",
            Self::Disabled => "disabled",
        }
    }
}

/// One entry of the history.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct SupervisionEvent {
    /// Position in the log since start-up, starting at 1.
    pub seq: u64,
    /// Milliseconds since the Unix epoch.
    pub at_ms: u64,
    pub kind: EventKind,
    /// The supervisor that saw it.
    pub supervisor: String,
    /// The child it concerns (for `escalated`, the supervisor itself).
    pub child: String,
    pub tenant: Option<String>,
    /// Failure message, panic message, or why a restart was not made.
    pub reason: String,
    /// Which incarnation of the child (1 for the first start).
    pub generation: u64,
}

/// Shared, bounded history of supervision events.
#[derive(Clone)]
pub struct EventLog {
    inner: Arc<Inner>,
}

struct Inner {
    events: Mutex<(u64, VecDeque<SupervisionEvent>)>,
    capacity: usize,
    metrics: Arc<Metrics>,
    changed: Notify,
    /// Each event as it is recorded, for trading clients (`supervision` channel).
    live: tokio::sync::broadcast::Sender<SupervisionEvent>,
}

/// The fields a supervisor fills in; the log adds `seq` and `at_ms`.
pub struct NewEvent<'a> {
    pub kind: EventKind,
    pub supervisor: &'a str,
    pub child: &'a str,
    pub tenant: Option<&'a str>,
    pub reason: &'a str,
    pub generation: u64,
}

impl EventLog {
    pub fn new(capacity: usize, metrics: Arc<Metrics>) -> Self {
        Self {
            inner: Arc::new(Inner {
                events: Mutex::new((0, VecDeque::with_capacity(capacity.min(4096)))),
                capacity: capacity.max(1),
                metrics,
                changed: Notify::new(),
                live: tokio::sync::broadcast::channel(1_024).0,
            }),
        }
    }

    /// Records an event: log line, metric, history.
    pub fn record(&self, e: NewEvent<'_>) {
        let tenant = e.tenant.unwrap_or("-");
        match e.kind {
            // A first start is routine (a start-up logs dozens): DEBUG, so the console opens with what a
            // person needs; the history and the metric keep every one.
            EventKind::Started => tracing::debug!(
                event = e.kind.as_str(),
                supervisor = e.supervisor,
                child = e.child,
                tenant,
                generation = e.generation,
                reason = e.reason,
                "supervision"
            ),
            EventKind::Restarted | EventKind::Stopped => tracing::info!(
                event = e.kind.as_str(),
                supervisor = e.supervisor,
                child = e.child,
                tenant,
                generation = e.generation,
                reason = e.reason,
                "supervision"
            ),
            EventKind::Failed => tracing::warn!(
                event = e.kind.as_str(),
                supervisor = e.supervisor,
                child = e.child,
                tenant,
                generation = e.generation,
                reason = e.reason,
                "supervision"
            ),
            EventKind::Escalated | EventKind::GaveUp | EventKind::Disabled => tracing::error!(
                event = e.kind.as_str(),
                supervisor = e.supervisor,
                child = e.child,
                tenant,
                generation = e.generation,
                reason = e.reason,
                "supervision"
            ),
        }
        self.inner.metrics.supervision_event(e.kind.as_str());
        let at_ms = crate::domain::now_ms().max(0) as u64;
        {
            let mut guard = match self.inner.events.lock() {
                Ok(g) => g,
                Err(poisoned) => poisoned.into_inner(),
            };
            guard.0 += 1;
            let seq = guard.0;
            if guard.1.len() == self.inner.capacity {
                guard.1.pop_front();
            }
            let event = SupervisionEvent {
                seq,
                at_ms,
                kind: e.kind,
                supervisor: e.supervisor.to_owned(),
                child: e.child.to_owned(),
                tenant: e.tenant.map(str::to_owned),
                reason: e.reason.to_owned(),
                generation: e.generation,
            };
            if self.inner.live.receiver_count() > 0 {
                let _ = self.inner.live.send(event.clone());
            }
            guard.1.push_back(event);
        }
        self.inner.changed.notify_waiters();
    }

    /// Every event recorded from now on (a receiver too slow for 1 024 events sees `Lagged`).
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<SupervisionEvent> {
        self.inner.live.subscribe()
    }

    /// The kept events, oldest first; only one tenant's when `tenant` is given.
    pub fn snapshot(&self, tenant: Option<&str>) -> Vec<SupervisionEvent> {
        let guard = match self.inner.events.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        guard
            .1
            .iter()
            .filter(|e| tenant.is_none() || e.tenant.as_deref() == tenant)
            .cloned()
            .collect()
    }

    /// Waits until `done` holds for the history, or `timeout` passes (then returns false). Works under paused
    /// tokio time, which is how the supervision tests run.
    pub async fn wait_until(
        &self,
        timeout: Duration,
        mut done: impl FnMut(&[SupervisionEvent]) -> bool,
    ) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.inner.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if done(&self.snapshot(None)) {
                return true;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return done(&self.snapshot(None));
            }
        }
    }
}
