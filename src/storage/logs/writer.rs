//! The one writer of the hot tier: every entry kept enters here, is numbered (`<node>-<seq>`, the id that
//! follows it through every tier) and reaches the hot tier in batches every 200 ms. While the tier is away
//! entries wait in a bounded buffer (the oldest dropped past 100 000 and counted: the trade records of
//! record are the relational store and the audit chain; this is their searchable copy).
//!
//! Sources: a tenant's events on the event bus ([`LogWriter::follow`]), audit entries (the security
//! service), supervision events, and trellis's own `tracing` events at `log_tiers.app_level` and above
//! ([`AppLogLayer`], installed once per process by `telemetry::init`).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use tokio::sync::broadcast::error::RecvError;
use tokio::sync::mpsc;

use super::store::LogStore;
use super::{LogEntry, PLATFORM};
use crate::config::Settings;
use crate::runtime::bus::EventBus;
use crate::runtime::events::EventLog;

const MAX_BUFFERED: usize = 100_000;

/// Cheap to clone; never blocks the caller.
#[derive(Clone)]
pub struct LogWriter {
    tx: mpsc::UnboundedSender<LogEntry>,
    node: Arc<str>,
    seq: Arc<AtomicU64>,
    store: Arc<OnceLock<LogStore>>,
    events: Option<EventLog>,
    followed: Arc<dashmap::DashSet<String>>,
}

struct Writer {
    settings: Settings,
    rx: mpsc::UnboundedReceiver<LogEntry>,
    buffer: VecDeque<LogEntry>,
    store: Arc<OnceLock<LogStore>>,
    dropped: u64,
}

impl Writer {
    async fn run(&mut self) {
        let mut tick = tokio::time::interval(Duration::from_millis(200));
        loop {
            tokio::select! {
                entry = self.rx.recv() => match entry {
                    Some(e) => {
                        self.buffer.push_back(e);
                        while self.buffer.len() > MAX_BUFFERED {
                            self.buffer.pop_front();
                            self.dropped += 1;
                            if self.dropped.is_power_of_two() {
                                tracing::warn!(dropped = self.dropped, "log writer buffer full: oldest entries dropped");
                            }
                        }
                    }
                    None => return,
                },
                _ = tick.tick() => {
                    if self.store.get().is_none() {
                        match LogStore::open(&self.settings).await {
                            Ok(s) => { let _ = self.store.set(s); }
                            Err(e) => {
                                tracing::warn!(error = %e, "log tiers unavailable; entries are buffered");
                                tokio::time::sleep(Duration::from_secs(1)).await;
                                continue;
                            }
                        }
                    }
                    if self.buffer.is_empty() {
                        continue;
                    }
                    crate::runtime::task::fault_point("log.writer");
                    let Some(store) = self.store.get() else { continue };
                    let batch: Vec<LogEntry> = self.buffer.iter().take(5_000).cloned().collect();
                    match store.hot.append(&batch).await {
                        Ok(()) => { self.buffer.drain(..batch.len()); }
                        Err(e) => tracing::warn!(error = %e, buffered = self.buffer.len(), "hot log tier unavailable"),
                    }
                }
            }
        }
    }
}

impl LogWriter {
    /// Starts the writer (a supervised task, `log.writer`): it opens the tiers, retrying while a store is
    /// away, and keeps its buffer across its restarts.
    pub fn start(settings: &Settings, events: Option<EventLog>) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        let store: Arc<OnceLock<LogStore>> = Arc::default();
        let writer = Writer {
            settings: settings.clone(),
            rx,
            buffer: VecDeque::new(),
            store: store.clone(),
            dropped: 0,
        };
        crate::runtime::task::spawn_supervised(
            "log.writer",
            events.clone(),
            writer,
            |s| async move { s.lock().await.run().await },
        );
        let this = Self {
            tx,
            node: uuid::Uuid::new_v4().simple().to_string()[..12].into(),
            seq: Arc::default(),
            store,
            events,
            followed: Arc::default(),
        };
        register_app_sink(this.clone(), &settings.log_tiers.app_level);
        this.follow_supervision();
        this
    }

    /// The tiers, once open.
    pub fn store(&self) -> Option<&LogStore> {
        self.store.get()
    }

    /// Keeps an entry.
    pub fn push(
        &self,
        tenant: &str,
        kind: &str,
        level: &str,
        message: &str,
        data: serde_json::Value,
    ) {
        let seq = self.seq.fetch_add(1, Ordering::Relaxed) + 1;
        let _ = self.tx.send(LogEntry {
            id: format!("{}-{seq}", self.node),
            tenant: tenant.to_owned(),
            at_ms: crate::domain::now_ms(),
            kind: kind.to_owned(),
            level: level.to_owned(),
            message: message.to_owned(),
            data: data.to_string(),
        });
    }

    /// Follows `tenant`'s events on `bus` (those this node produced), once per tenant.
    pub fn follow(&self, bus: &EventBus, tenant: &str) {
        if !self.followed.insert(tenant.to_owned()) {
            return;
        }
        let state = (bus.subscribe(tenant), self.clone(), tenant.to_owned());
        crate::runtime::task::spawn_supervised(
            "log.follow",
            self.events.clone(),
            state,
            |state| async move {
                let mut s = state.lock().await;
                let (events, writer, tenant) = &mut *s;
                loop {
                    match events.recv().await {
                        Ok(e) if !e.local => {} // kept by the node that produced it
                        Ok(e) => {
                            let kind = e.kind.as_str();
                            writer.push(tenant, kind, level_of(&e), kind, e.data);
                            crate::runtime::task::fault_point("log.follow");
                        }
                        Err(RecvError::Lagged(n)) => {
                            tracing::warn!(missed = n, "log follower fell behind")
                        }
                        Err(RecvError::Closed) => return,
                    }
                }
            },
        );
    }

    fn follow_supervision(&self) {
        let Some(events) = &self.events else { return };
        let state = (events.subscribe(), self.clone());
        crate::runtime::task::spawn_supervised(
            "log.supervision",
            None,
            state,
            |state| async move {
                let mut s = state.lock().await;
                let (events, writer) = &mut *s;
                loop {
                    match events.recv().await {
                        Ok(e) => {
                            let level = match e.kind.as_str() {
                                "failed" => "warn",
                                "escalated" | "gave_up" | "disabled" => "error",
                                _ => "info",
                            };
                            let tenant = e.tenant.clone().unwrap_or_else(|| PLATFORM.to_owned());
                            let message =
                                format!("{} {} ({})", e.child, e.kind.as_str(), e.supervisor);
                            writer.push(
                                &tenant,
                                "supervision",
                                level,
                                &message,
                                serde_json::to_value(&e).unwrap_or_default(),
                            );
                        }
                        Err(RecvError::Lagged(_)) => {}
                        Err(RecvError::Closed) => return,
                    }
                }
            },
        );
    }
}

// -- application logs ----------------------------------------------------------------------------------------

/// The writer that receives this process's application logs, and from which level: the runtime started last
/// (a process runs one; a test process that starts several keeps them out of each other's tiers by holding
/// only the newest, not a list that grows with every runtime).
static APP_SINKS: Mutex<Vec<(LogWriter, tracing::Level)>> = Mutex::new(Vec::new());

fn register_app_sink(writer: LogWriter, level: &str) {
    let level = match level {
        "error" => tracing::Level::ERROR,
        "warn" => tracing::Level::WARN,
        "debug" => tracing::Level::DEBUG,
        _ => tracing::Level::INFO,
    };
    if let Ok(mut sinks) = APP_SINKS.lock() {
        sinks.clear();
        sinks.push((writer, level));
    }
}

/// A `tracing` layer that keeps trellis's own events (target `trellis…`) as `app` entries: the tenant from a
/// `tenant` field when there is one, the platform otherwise.
pub struct AppLogLayer;

#[derive(Default)]
struct Fields {
    message: String,
    tenant: Option<String>,
    map: serde_json::Map<String, serde_json::Value>,
}

impl tracing::field::Visit for Fields {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        let v = format!("{value:?}");
        self.put(field.name(), serde_json::Value::String(v));
    }
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        self.put(field.name(), serde_json::Value::String(value.to_owned()));
    }
    fn record_i64(&mut self, field: &tracing::field::Field, value: i64) {
        self.put(field.name(), value.into());
    }
    fn record_u64(&mut self, field: &tracing::field::Field, value: u64) {
        self.put(field.name(), value.into());
    }
    fn record_bool(&mut self, field: &tracing::field::Field, value: bool) {
        self.put(field.name(), value.into());
    }
}

impl Fields {
    fn put(&mut self, name: &str, value: serde_json::Value) {
        match name {
            "message" => self.message = value.as_str().map(str::to_owned).unwrap_or_default(),
            "tenant" => self.tenant = value.as_str().filter(|t| *t != "-").map(str::to_owned),
            _ => {
                self.map.insert(name.to_owned(), value);
            }
        }
    }
}

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for AppLogLayer {
    fn on_event(
        &self,
        event: &tracing::Event<'_>,
        _ctx: tracing_subscriber::layer::Context<'_, S>,
    ) {
        let meta = event.metadata();
        if !meta.target().starts_with("trellis") {
            return;
        }
        let Ok(sinks) = APP_SINKS.lock() else { return };
        if sinks.iter().all(|(_, l)| meta.level() > l) {
            return;
        }
        let mut fields = Fields::default();
        event.record(&mut fields);
        if fields.message == "supervision" {
            return; // kept as a `supervision` entry with its fields
        }
        let tenant = fields.tenant.clone().unwrap_or_else(|| PLATFORM.to_owned());
        let level = meta.level().as_str().to_ascii_lowercase();
        fields
            .map
            .insert("target".into(), meta.target().to_owned().into());
        let data = serde_json::Value::Object(fields.map);
        for (writer, keep) in sinks.iter() {
            if meta.level() <= keep {
                writer.push(&tenant, "app", &level, &fields.message, data.clone());
            }
        }
    }
}

/// The level a tenant event is kept at in the log tiers: an order the trade server or risk refused is a
/// warning a person looks for; everything else is information.
fn level_of(e: &crate::runtime::bus::TenantEvent) -> &'static str {
    let refused = e.kind == crate::domain::events::EventKind::Order
        && e.data.get("status").and_then(serde_json::Value::as_str) == Some("rejected");
    if refused {
        "warn"
    } else {
        "info"
    }
}
