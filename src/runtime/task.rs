//! Background tasks that are not actors — the event bus's Redis links, the hot-log writer and its followers,
//! the security cache refresh, the audit writer — are supervised too.
//!
//! A panic inside a bare spawned task is silent: the task is gone and whatever it did stops. Here each task
//! runs inside `catch_unwind`; a panic is logged, recorded in the supervision history under the `tasks`
//! supervisor (so it is counted in `trellis_supervision_events_total`) and the task is started again after a
//! back-off that doubles while it keeps failing. The task's state (its channel receiver, its buffer) lives
//! outside the incarnation that panicked, so a restart loses nothing that was queued: a task that takes an
//! item keeps it in its state until the item is done.
//!
//! [`fault_point`] is a test hook: a task calls it once per iteration, and [`inject_fault`] makes the next
//! call of that name panic, the way a bug would.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::FutureExt;

use crate::runtime::events::{EventKind, EventLog, NewEvent};
use crate::runtime::supervisor::panic_message;

const SUPERVISOR: &str = "tasks";
const BACKOFF_BASE: Duration = Duration::from_millis(10);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// Spawns `body` on the current runtime under supervision. `body` gets the shared state for each
/// incarnation; returning ends the task for good (its input closed), a panic restarts it.
pub fn spawn_supervised<S, F, Fut>(name: &'static str, events: Option<EventLog>, state: S, body: F)
where
    S: 'static,
    F: Fn(Arc<tokio::sync::Mutex<S>>) -> Fut + 'static,
    Fut: Future<Output = ()> + 'static,
{
    let state = Arc::new(tokio::sync::Mutex::new(state));
    actix_rt::spawn(async move {
        let mut failures: u32 = 0;
        let mut generation: u64 = 1;
        record(&events, EventKind::Started, name, "", generation);
        loop {
            let started = tokio::time::Instant::now();
            match AssertUnwindSafe(body(state.clone())).catch_unwind().await {
                Ok(()) => {
                    record(
                        &events,
                        EventKind::Stopped,
                        name,
                        "its input closed",
                        generation,
                    );
                    return;
                }
                Err(payload) => {
                    let why = panic_message(payload.as_ref());
                    record(&events, EventKind::Failed, name, &why, generation);
                    if started.elapsed() > Duration::from_secs(1) {
                        failures = 0;
                    }
                    failures += 1;
                    let backoff = BACKOFF_BASE
                        .checked_mul(1 << failures.min(16))
                        .unwrap_or(BACKOFF_MAX)
                        .min(BACKOFF_MAX);
                    tokio::time::sleep(backoff).await;
                    generation += 1;
                    record(&events, EventKind::Restarted, name, &why, generation);
                }
            }
        }
    });
}

fn record(events: &Option<EventLog>, kind: EventKind, child: &str, reason: &str, generation: u64) {
    match events {
        Some(log) => log.record(NewEvent {
            kind,
            supervisor: SUPERVISOR,
            child,
            tenant: None,
            reason,
            generation,
        }),
        None if kind == EventKind::Failed => {
            tracing::error!(task = child, %reason, "background task failed; restarting it")
        }
        None => {}
    }
}

static ANY_ARMED: AtomicBool = AtomicBool::new(false);
static ARMED: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// Makes the next [`fault_point`] named `name` panic (tests and fire drills).
pub fn inject_fault(name: &str) {
    if let Ok(mut armed) = ARMED.lock() {
        armed.push(name.to_owned());
        ANY_ARMED.store(true, Ordering::SeqCst);
    }
}

/// Whether any fault is armed (to skip building a fault point's name on a hot path).
pub fn faults_armed() -> bool {
    ANY_ARMED.load(Ordering::Relaxed)
}

/// Panics if a fault was injected for `name` (once per injection). Costs one atomic load otherwise.
pub fn fault_point(name: &str) {
    if !ANY_ARMED.load(Ordering::Relaxed) {
        return;
    }
    let hit = ARMED.lock().is_ok_and(|mut armed| {
        let found = armed.iter().position(|n| n == name);
        if let Some(i) = found {
            armed.remove(i);
        }
        ANY_ARMED.store(!armed.is_empty(), Ordering::SeqCst);
        found.is_some()
    });
    if hit {
        panic!("injected fault in `{name}`");
    }
}

/// Ends the process at once — no destructor, no flush, as `kill -9` would — when `TRELLIS_CRASH_AT` names
/// `name` (fault tests that must crash between two steps no signal can be timed to hit). Costs one read of a
/// value set at start otherwise.
pub fn crash_point(name: &str) {
    static AT: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    let at = AT.get_or_init(|| {
        std::env::var("TRELLIS_CRASH_AT")
            .ok()
            .filter(|v| !v.is_empty())
    });
    if at.as_deref() == Some(name) {
        eprintln!("TRELLIS_CRASH_AT: crashing at `{name}`");
        std::process::abort();
    }
}
