//! trellis's supervision layer on top of actix actors.
//!
//! actix's own `Supervisor` restarts an actor that stopped, but knows nothing of restart policies, restart
//! intensity, back-off or panics. Trading needs all four: a strategy that panics must come back with fresh
//! state without touching its siblings, a tenant whose children keep failing must be stopped and reported
//! while every other tenant keeps trading, and a crashing child must not spin the CPU.
//!
//! The contract:
//! - A [`Supervisor`] owns [`ChildSpec`]s. A spec's factory starts a fresh actor from a [`ChildContext`] and
//!   returns its [`Shutdown`] recipient; the supervisor never holds a child's state.
//! - The child keeps the context's [`ExitNotifier`] in its state and calls [`ExitNotifier::mark_stopped`] in
//!   `Actor::stopped`. The notifier reports the exit to the supervisor when the actor is dropped: normal if
//!   marked, the recorded failure if [`ExitNotifier::fail`] was called, and a failure otherwise (a panic in a
//!   handler drops the actor without running `stopped`).
//! - Code we don't trust (strategies, models) runs inside [`contain`], so a panic becomes an error with its
//!   message.
//! - On an exit the policy decides: `permanent` always restarts, `transient` only after a failure,
//!   `temporary` never. Each restart waits a back-off that doubles with every incarnation in a row that died
//!   within a second of starting (a crash loop), and is the base again after one that lived. More than
//!   `max_restarts` restarts inside
//!   `window` escalates: the supervisor stops its whole subtree, records `escalated`, and ends with a failure
//!   its own parent sees. The root has no parent: it gives up on the offending child only and keeps running.
//! - A supervisor with **per-child budgets** (a tenant's `strategies`) counts each child's restarts on its
//!   own: a child over its budget is **disabled** — kept, not restarted, its last error on record, its
//!   `on_disabled` hook run — and its siblings and the supervisor are untouched. Starting it again
//!   (`StartChild` of the same name) re-enables it with a fresh budget. One crash-looping strategy can then
//!   never stop its tenant.

use std::any::Any;
use std::collections::VecDeque;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use crate::runtime::events::{EventKind, EventLog, NewEvent};

/// An incarnation that lived this long was not part of a crash loop: its restart waits only the base
/// back-off.
pub const STABLE_AFTER: Duration = Duration::from_secs(1);

/// When a child that ended is started again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RestartPolicy {
    /// Always restarted.
    Permanent,
    /// Restarted only after a failure; a normal stop is final.
    Transient,
    /// Never restarted.
    Temporary,
}

/// Restart intensity and back-off of one supervisor.
#[derive(Debug, Clone, Copy)]
pub struct SupervisorConfig {
    /// More restarts than this within `window` escalate.
    pub max_restarts: u32,
    pub window: Duration,
    /// First back-off; doubled for each restart already inside the window.
    pub backoff_base: Duration,
    pub backoff_max: Duration,
}

impl SupervisorConfig {
    /// The back-off before the `n`-th restart inside the window (n ≥ 1).
    pub fn backoff(&self, n: u32) -> Duration {
        let factor = 1u32
            .checked_shl(n.saturating_sub(1).min(20))
            .unwrap_or(u32::MAX);
        self.backoff_base
            .checked_mul(factor)
            .unwrap_or(self.backoff_max)
            .min(self.backoff_max)
    }
}

impl From<&crate::config::SupervisionSettings> for SupervisorConfig {
    fn from(s: &crate::config::SupervisionSettings) -> Self {
        Self {
            max_restarts: s.max_restarts,
            window: s.window(),
            backoff_base: s.backoff_base(),
            backoff_max: s.backoff_max(),
        }
    }
}

/// How a child ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExitReason {
    Normal,
    Failed(String),
}

/// Reported to a supervisor when one of its children has ended.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct ChildExited {
    pub name: String,
    /// Unique per supervisor and start, so a late report never hits a newer child of the same name.
    pub incarnation: u64,
    pub reason: ExitReason,
}

/// Asks a supervised actor to stop: finish or flush what it holds, then stop. The reply comes once it has.
#[derive(Message, Debug, Clone)]
#[rtype(result = "()")]
pub struct Shutdown {
    pub reason: String,
}

/// Reports a child's end to its supervisor when dropped. Keep it in the actor's state.
pub struct ExitNotifier {
    parent: Option<Recipient<ChildExited>>,
    name: String,
    generation: u64,
    incarnation: u64,
    failure: Option<String>,
    clean: bool,
}

impl ExitNotifier {
    /// A notifier that reports to nobody, for actors started outside a supervisor (tools, benchmarks).
    pub fn detached(name: impl Into<String>) -> Self {
        Self {
            parent: None,
            name: name.into(),
            generation: 1,
            incarnation: 0,
            failure: None,
            clean: false,
        }
    }

    /// Records why the actor is failing; call before `ctx.stop()`.
    pub fn fail(&mut self, reason: impl Into<String>) {
        self.failure = Some(reason.into());
    }

    /// Call from `Actor::stopped`: the actor went through its normal stop path. actix also runs `stopped`
    /// while a panic unwinds out of a handler (the dropped context stops its actor); that is not clean.
    pub fn mark_stopped(&mut self) {
        if !std::thread::panicking() {
            self.clean = true;
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn generation(&self) -> u64 {
        self.generation
    }
}

impl Drop for ExitNotifier {
    fn drop(&mut self) {
        let reason = match (self.failure.take(), self.clean) {
            (Some(why), _) => ExitReason::Failed(why),
            (None, true) => ExitReason::Normal,
            (None, false) => {
                ExitReason::Failed("actor ended abnormally (panic in a handler)".into())
            }
        };
        if let Some(parent) = self.parent.take() {
            parent.do_send(ChildExited {
                name: std::mem::take(&mut self.name),
                incarnation: self.incarnation,
                reason,
            });
        }
    }
}

/// What a factory gets to start one incarnation of a child.
pub struct ChildContext {
    pub name: String,
    pub tenant: Option<String>,
    pub generation: u64,
    pub notifier: ExitNotifier,
    /// For children that are supervisors themselves.
    pub events: EventLog,
    pub config: SupervisorConfig,
}

/// Starts a fresh incarnation of a child and returns where to send its [`Shutdown`].
pub type Factory = Arc<dyn Fn(ChildContext) -> Result<Recipient<Shutdown>, String> + Send + Sync>;

/// A child as its supervisor knows it.
#[derive(Clone)]
pub struct ChildSpec {
    pub name: String,
    pub tenant: Option<String>,
    pub policy: RestartPolicy,
    pub factory: Factory,
    /// Run with the reason when the supervisor stops restarting this child after a failure: disabled over
    /// its own budget, a temporary child that failed, or a child the root gave up on.
    pub on_disabled: Option<DisabledHook>,
}

/// What a supervisor runs when it disables a child (audit, events, the child's failure policy).
pub type DisabledHook = Arc<dyn Fn(&str) + Send + Sync>;

impl ChildSpec {
    pub fn new(
        name: impl Into<String>,
        policy: RestartPolicy,
        factory: impl Fn(ChildContext) -> Result<Recipient<Shutdown>, String> + Send + Sync + 'static,
    ) -> Self {
        Self {
            name: name.into(),
            tenant: None,
            policy,
            factory: Arc::new(factory),
            on_disabled: None,
        }
    }

    /// What to do when a supervisor with per-child budgets disables this child.
    pub fn on_disabled(mut self, hook: impl Fn(&str) + Send + Sync + 'static) -> Self {
        self.on_disabled = Some(Arc::new(hook));
        self
    }

    pub fn tenant(mut self, tenant: impl Into<String>) -> Self {
        self.tenant = Some(tenant.into());
        self
    }

    /// A spec whose child is a supervisor of `children`, in the given arbiter (or the caller's).
    pub fn supervisor(
        name: impl Into<String>,
        policy: RestartPolicy,
        config: Option<SupervisorConfig>,
        children: Vec<ChildSpec>,
        arbiter: Option<ArbiterHandle>,
    ) -> Self {
        let name = name.into();
        let own_name = name.clone();
        Self::new(name, policy, move |cx: ChildContext| {
            let config = config.unwrap_or(cx.config);
            let sup = Supervisor::child(own_name.clone(), cx, config, children.clone());
            let addr = match &arbiter {
                Some(arb) => Supervisor::start_in_arbiter(arb, move |_| sup),
                None => sup.start(),
            };
            Ok(addr.recipient())
        })
    }
}

/// Runs code we don't trust; a panic becomes `Err` with its message.
pub fn contain<R>(f: impl FnOnce() -> R) -> Result<R, String> {
    catch_unwind(AssertUnwindSafe(f)).map_err(|payload| panic_message(payload.as_ref()))
}

/// The text of a panic payload.
pub fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        format!("panic: {s}")
    } else if let Some(s) = payload.downcast_ref::<String>() {
        format!("panic: {s}")
    } else {
        "panic with a non-string payload".to_owned()
    }
}

/// Adds a child at run time (a tenant, a strategy instance).
#[derive(Message)]
#[rtype(result = "Result<(), SupervisionError>")]
pub struct StartChild(pub ChildSpec);

/// Stops a child for good: it is removed, not restarted.
#[derive(Message)]
#[rtype(result = "Result<(), SupervisionError>")]
pub struct StopChild {
    pub name: String,
}

/// Lists the children with their incarnation and restart counts.
#[derive(Message)]
#[rtype(result = "Vec<ChildInfo>")]
pub struct GetChildren;

/// A child's state as the supervisor sees it.
#[derive(Debug, Clone, Serialize)]
pub struct ChildInfo {
    pub name: String,
    pub tenant: Option<String>,
    pub policy: RestartPolicy,
    pub generation: u64,
    pub restarts: u32,
    pub running: bool,
    /// Why the child is disabled (over its own restart budget), if it is.
    pub disabled: Option<String>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SupervisionError {
    #[error("a child named `{0}` already exists")]
    DuplicateChild(String),
    #[error("no child named `{0}`")]
    UnknownChild(String),
    #[error("the supervisor is shutting down")]
    ShuttingDown,
}

struct Slot {
    spec: ChildSpec,
    generation: u64,
    incarnation: u64,
    restarts: u32,
    handle: Option<Recipient<Shutdown>>,
    /// When the current incarnation started, and how many incarnations in a row died young (before
    /// [`STABLE_AFTER`]): the back-off grows with the latter, so a crash loop slows down while a child that
    /// fails now and then (a strategy bug on one bar in ten) comes back at once.
    started_at: Instant,
    young_deaths: u32,
    /// This child's own recent restarts (per-child budgets).
    recent: VecDeque<Instant>,
    /// Over its budget: not restarted until started again.
    disabled: Option<String>,
}

impl Slot {
    fn new(spec: ChildSpec) -> Self {
        Self {
            spec,
            generation: 0,
            incarnation: 0,
            restarts: 0,
            handle: None,
            started_at: Instant::now(),
            young_deaths: 0,
            recent: VecDeque::new(),
            disabled: None,
        }
    }
}

/// Runs a child's `on_disabled` hook, containing a panic in it.
fn run_hook(slot: &Slot, reason: &str) {
    if let Some(hook) = &slot.spec.on_disabled {
        if let Err(e) = contain(|| hook(reason)) {
            tracing::error!(child = %slot.spec.name, error = %e, "the on_disabled hook failed");
        }
    }
}

/// Drops the instants older than `window` and adds `now`; answers how many remain.
fn count_recent(recent: &mut VecDeque<Instant>, now: Instant, window: Duration) -> u32 {
    while let Some(&first) = recent.front() {
        if now.duration_since(first) > window {
            recent.pop_front();
        } else {
            break;
        }
    }
    recent.push_back(now);
    recent.len() as u32
}

/// A supervisor of actix actors. See the module docs for the rules.
pub struct Supervisor {
    name: String,
    tenant: Option<String>,
    config: SupervisorConfig,
    events: EventLog,
    slots: Vec<Slot>,
    recent_restarts: VecDeque<Instant>,
    notifier: Option<ExitNotifier>,
    stopping: bool,
    incarnations: u64,
    /// Budgets per child: a child over its own budget is disabled, nothing escalates.
    per_child: bool,
}

impl Supervisor {
    /// Counts restarts per child and disables a child over its budget instead of escalating (see the
    /// module docs).
    pub fn with_per_child_budgets(mut self) -> Self {
        self.per_child = true;
        self
    }

    /// The root of a tree: it has no parent and never escalates.
    pub fn root(
        name: impl Into<String>,
        config: SupervisorConfig,
        events: EventLog,
        children: Vec<ChildSpec>,
    ) -> Self {
        Self::build(name.into(), None, config, events, children, None)
    }

    /// A supervisor started as the child described by `cx`.
    pub fn child(
        name: String,
        cx: ChildContext,
        config: SupervisorConfig,
        children: Vec<ChildSpec>,
    ) -> Self {
        let ChildContext {
            tenant,
            notifier,
            events,
            ..
        } = cx;
        Self::build(name, tenant, config, events, children, Some(notifier))
    }

    fn build(
        name: String,
        tenant: Option<String>,
        config: SupervisorConfig,
        events: EventLog,
        children: Vec<ChildSpec>,
        notifier: Option<ExitNotifier>,
    ) -> Self {
        Self {
            name,
            tenant,
            config,
            events,
            slots: children.into_iter().map(Slot::new).collect(),
            recent_restarts: VecDeque::new(),
            notifier,
            stopping: false,
            incarnations: 0,
            per_child: false,
        }
    }

    fn record(
        &self,
        kind: EventKind,
        child: &str,
        tenant: Option<&str>,
        reason: &str,
        generation: u64,
    ) {
        self.events.record(NewEvent {
            kind,
            supervisor: &self.name,
            child,
            tenant: tenant.or(self.tenant.as_deref()),
            reason,
            generation,
        });
    }

    fn index_of(&self, name: &str) -> Option<usize> {
        self.slots.iter().position(|s| s.spec.name == name)
    }

    /// Starts a fresh incarnation of the child at `idx`.
    fn start_slot(&mut self, idx: usize, ctx: &mut Context<Self>) {
        let me = ctx.address().recipient::<ChildExited>();
        self.incarnations += 1;
        let incarnation = self.incarnations;
        let slot = &mut self.slots[idx];
        slot.generation += 1;
        slot.incarnation = incarnation;
        slot.started_at = Instant::now();
        let generation = slot.generation;
        let spec = slot.spec.clone();
        let cx = ChildContext {
            name: spec.name.clone(),
            tenant: spec.tenant.clone().or_else(|| self.tenant.clone()),
            generation,
            notifier: ExitNotifier {
                parent: Some(me),
                name: spec.name.clone(),
                generation,
                incarnation,
                failure: None,
                clean: false,
            },
            events: self.events.clone(),
            config: self.config,
        };
        let started = contain(|| (spec.factory)(cx)).and_then(|r| r);
        match started {
            Ok(handle) => {
                self.slots[idx].handle = Some(handle);
                let kind = if generation == 1 {
                    EventKind::Started
                } else {
                    EventKind::Restarted
                };
                self.record(kind, &spec.name, spec.tenant.as_deref(), "", generation);
            }
            Err(why) => {
                // The factory could not build it: the same as a failure right after start. The notifier it
                // consumed may also report; the generation check below makes that a no-op.
                self.slots[idx].handle = None;
                self.on_exit(
                    idx,
                    ExitReason::Failed(format!("could not start: {why}")),
                    ctx,
                );
            }
        }
    }

    fn on_exit(&mut self, idx: usize, reason: ExitReason, ctx: &mut Context<Self>) {
        let (name, tenant, policy, generation) = {
            let s = &self.slots[idx];
            (
                s.spec.name.clone(),
                s.spec.tenant.clone(),
                s.spec.policy,
                s.generation,
            )
        };
        let why = match &reason {
            ExitReason::Normal => {
                self.record(
                    EventKind::Stopped,
                    &name,
                    tenant.as_deref(),
                    "stopped normally",
                    generation,
                );
                String::new()
            }
            ExitReason::Failed(why) => {
                self.record(EventKind::Failed, &name, tenant.as_deref(), why, generation);
                why.clone()
            }
        };
        if self.stopping {
            return;
        }
        let restart = match policy {
            RestartPolicy::Permanent => true,
            RestartPolicy::Transient => reason != ExitReason::Normal,
            RestartPolicy::Temporary => false,
        };
        if !restart {
            let slot = self.slots.remove(idx);
            if !why.is_empty() {
                run_hook(&slot, &why);
            }
            return;
        }
        let now = Instant::now();
        let last = if why.is_empty() {
            "stopped"
        } else {
            why.as_str()
        };
        if self.per_child {
            let window = self.config.window;
            let recent = count_recent(&mut self.slots[idx].recent, now, window);
            if recent > self.config.max_restarts {
                let summary = format!(
                    "disabled: {recent} restarts within {window:?}, over its budget of {}; last failure: {last}",
                    self.config.max_restarts
                );
                self.disable(idx, summary);
                return;
            }
        } else if count_recent(&mut self.recent_restarts, now, self.config.window)
            > self.config.max_restarts
        {
            let recent = self.recent_restarts.len();
            let summary = format!(
                "restart intensity exceeded: {} restarts within {:?}; last failure of `{name}`: {last}",
                recent, self.config.window,
            );
            self.escalate(idx, summary, ctx);
            return;
        }
        let slot = &mut self.slots[idx];
        if now.duration_since(slot.started_at) >= STABLE_AFTER {
            slot.young_deaths = 0;
        }
        slot.young_deaths += 1;
        let delay = self.config.backoff(slot.young_deaths);
        slot.restarts += 1;
        ctx.run_later(delay, move |act, ctx| {
            if act.stopping {
                return;
            }
            if let Some(i) = act.index_of(&name) {
                if act.slots[i].generation == generation && act.slots[i].handle.is_none() {
                    act.start_slot(i, ctx);
                }
            }
        });
    }

    /// A child over its own budget: kept with its last error, not restarted, its hook run.
    fn disable(&mut self, idx: usize, summary: String) {
        let slot = &mut self.slots[idx];
        slot.disabled = Some(summary.clone());
        let (name, tenant, generation) = (
            slot.spec.name.clone(),
            slot.spec.tenant.clone(),
            slot.generation,
        );
        self.record(
            EventKind::Disabled,
            &name,
            tenant.as_deref(),
            &summary,
            generation,
        );
        run_hook(&self.slots[idx], &summary);
    }

    fn escalate(&mut self, idx: usize, summary: String, ctx: &mut Context<Self>) {
        if self.notifier.is_none() {
            // The root: give up on this child only, so the rest of the system keeps running.
            let slot = self.slots.remove(idx);
            self.record(
                EventKind::GaveUp,
                &slot.spec.name,
                slot.spec.tenant.as_deref(),
                &summary,
                slot.generation,
            );
            run_hook(&slot, &summary);
            return;
        }
        let own = self.name.clone();
        self.record(
            EventKind::Escalated,
            &own,
            None,
            &summary,
            self.notifier.as_ref().map_or(0, |n| n.generation),
        );
        self.stopping = true;
        for slot in &self.slots {
            if let Some(h) = &slot.handle {
                h.do_send(Shutdown {
                    reason: format!("supervisor `{own}` escalated"),
                });
            }
        }
        if let Some(n) = self.notifier.as_mut() {
            n.fail(summary);
        }
        ctx.stop();
    }
}

impl Actor for Supervisor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        // Children are started in order; a later child may rely on an earlier one (storage before tenants).
        for idx in 0..self.slots.len() {
            if idx < self.slots.len() && self.slots[idx].generation == 0 {
                self.start_slot(idx, ctx);
            }
        }
    }

    fn stopped(&mut self, _ctx: &mut Self::Context) {
        if let Some(n) = self.notifier.as_mut() {
            n.mark_stopped();
        }
    }
}

impl Handler<ChildExited> for Supervisor {
    type Result = ();

    fn handle(&mut self, msg: ChildExited, ctx: &mut Self::Context) {
        let Some(idx) = self.index_of(&msg.name) else {
            return;
        };
        if self.slots[idx].incarnation != msg.incarnation || self.slots[idx].handle.is_none() {
            return; // a stale report from an incarnation already replaced or already handled
        }
        self.slots[idx].handle = None;
        self.on_exit(idx, msg.reason, ctx);
    }
}

impl Handler<StartChild> for Supervisor {
    type Result = Result<(), SupervisionError>;

    fn handle(&mut self, msg: StartChild, ctx: &mut Self::Context) -> Self::Result {
        if self.stopping {
            return Err(SupervisionError::ShuttingDown);
        }
        if let Some(idx) = self.index_of(&msg.0.name) {
            let slot = &mut self.slots[idx];
            if slot.disabled.is_none() {
                return Err(SupervisionError::DuplicateChild(msg.0.name));
            }
            // Re-enabled with a fresh budget (and the spec it is started with now).
            slot.disabled = None;
            slot.recent.clear();
            slot.young_deaths = 0;
            slot.spec = msg.0;
            self.start_slot(idx, ctx);
            return Ok(());
        }
        self.slots.push(Slot::new(msg.0));
        let idx = self.slots.len() - 1;
        self.start_slot(idx, ctx);
        Ok(())
    }
}

impl Handler<StopChild> for Supervisor {
    type Result = Result<(), SupervisionError>;

    fn handle(&mut self, msg: StopChild, _ctx: &mut Self::Context) -> Self::Result {
        let idx = self
            .index_of(&msg.name)
            .ok_or_else(|| SupervisionError::UnknownChild(msg.name.clone()))?;
        let slot = self.slots.remove(idx);
        if let Some(h) = slot.handle {
            h.do_send(Shutdown {
                reason: "stopped by request".into(),
            });
        }
        self.record(
            EventKind::Stopped,
            &slot.spec.name,
            slot.spec.tenant.as_deref(),
            "stopped by request",
            slot.generation,
        );
        Ok(())
    }
}

impl Handler<GetChildren> for Supervisor {
    type Result = MessageResult<GetChildren>;

    fn handle(&mut self, _: GetChildren, _ctx: &mut Self::Context) -> Self::Result {
        MessageResult(
            self.slots
                .iter()
                .map(|s| ChildInfo {
                    name: s.spec.name.clone(),
                    tenant: s.spec.tenant.clone().or_else(|| self.tenant.clone()),
                    policy: s.spec.policy,
                    generation: s.generation,
                    restarts: s.restarts,
                    running: s.handle.is_some(),
                    disabled: s.disabled.clone(),
                })
                .collect(),
        )
    }
}

impl Handler<Shutdown> for Supervisor {
    type Result = ResponseActFuture<Self, ()>;

    /// Stops the children in reverse start order, each after the one started after it has finished, then
    /// stops itself. The reply comes when the whole subtree has drained.
    fn handle(&mut self, msg: Shutdown, _ctx: &mut Self::Context) -> Self::Result {
        self.stopping = true;
        let children: Vec<Recipient<Shutdown>> = self
            .slots
            .iter()
            .rev()
            .filter_map(|s| s.handle.clone())
            .collect();
        Box::pin(
            async move {
                for child in children {
                    // A child that is already gone has nothing left to drain.
                    let _ = child.send(msg.clone()).await;
                }
            }
            .into_actor(self)
            .map(|_, _act, ctx| ctx.stop()),
        )
    }
}
