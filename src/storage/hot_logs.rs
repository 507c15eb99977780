//! The hot log tier on Redis: each tenant's recent log — its trade log (every event this node publishes on
//! the event bus: order changes, fills, positions after each fill, risk state changes, reconciliations,
//! strategy and model events) and its audit entries — kept 24 hours in
//! `trellis:logs:<tenant>` (a list, newest last, expiring 24 h after its last write; platform audit entries
//! under `trellis:logs:platform`), for support and dashboards that need the last day quickly. Writes are
//! batched every 200 ms; while Redis is away lines wait in a bounded buffer (the oldest are dropped past
//! 100 000 and counted — the durable records are the relational store and the audit chain, not this tier).

use std::collections::VecDeque;
use std::time::Duration;

use tokio::sync::broadcast::error::RecvError;
use tokio::sync::mpsc;

use crate::actors::bus::EventBus;
use crate::actors::events::EventLog;

/// How long hot log lines live.
pub const RETENTION: Duration = Duration::from_secs(24 * 3600);
const MAX_BUFFERED: usize = 100_000;

pub fn key(tenant: &str) -> String {
    format!("trellis:logs:{tenant}")
}

/// The writer of the hot tier: cheap to clone, never blocks the caller.
#[derive(Clone)]
pub struct HotLog {
    tx: mpsc::UnboundedSender<(String, String)>,
    events: Option<EventLog>,
    /// Tenants followed on this node: one follower each, however often the tenant starts here (a restart
    /// through the API, a tenant that moves away and back in a cluster).
    followed: std::sync::Arc<dashmap::DashSet<String>>,
}

/// The writer's state, kept across its restarts.
struct Writer {
    client: redis::Client,
    rx: mpsc::UnboundedReceiver<(String, String)>,
    buffer: VecDeque<(String, String)>,
    conn: Option<redis::aio::ConnectionManager>,
    dropped: u64,
}

impl Writer {
    /// Buffers lines and writes them in one pipeline every 200 ms; returns when every sender is gone.
    async fn run(&mut self) {
        let mut tick = tokio::time::interval(Duration::from_millis(200));
        loop {
            tokio::select! {
                line = self.rx.recv() => match line {
                    Some(line) => {
                        self.buffer.push_back(line);
                        while self.buffer.len() > MAX_BUFFERED {
                            self.buffer.pop_front();
                            self.dropped += 1;
                            if self.dropped.is_power_of_two() {
                                tracing::warn!(dropped = self.dropped, "hot log tier buffer full: oldest lines dropped");
                            }
                        }
                    }
                    None => return,
                },
                _ = tick.tick() => {
                    if self.buffer.is_empty() {
                        continue;
                    }
                    crate::actors::task::fault_point("hot_log.writer");
                    if self.conn.is_none() {
                        self.conn = tokio::time::timeout(Duration::from_secs(1), redis::aio::ConnectionManager::new(self.client.clone()))
                            .await
                            .ok()
                            .and_then(Result::ok);
                    }
                    let Some(c) = self.conn.as_mut() else { continue };
                    let mut pipe = redis::pipe();
                    for (tenant, line) in &self.buffer {
                        pipe.rpush(key(tenant), line).ignore();
                    }
                    let mut tenants: Vec<&String> = self.buffer.iter().map(|(t, _)| t).collect();
                    tenants.sort();
                    tenants.dedup();
                    for t in tenants {
                        pipe.expire(key(t), RETENTION.as_secs() as i64).ignore();
                    }
                    match pipe.query_async::<()>(c).await {
                        Ok(()) => self.buffer.clear(),
                        Err(e) => {
                            tracing::warn!(error = %e, buffered = self.buffer.len(), "hot log tier unavailable");
                            self.conn = None;
                        }
                    }
                }
            }
        }
    }
}

impl HotLog {
    /// Starts the writer for the Redis at `url` on the current runtime, a supervised task (`hot_log.writer`)
    /// recorded in `events`; its buffer survives its restarts.
    pub fn start(url: &str, events: Option<EventLog>) -> Option<Self> {
        let client = redis::Client::open(url).ok()?;
        let (tx, rx) = mpsc::unbounded_channel::<(String, String)>();
        let writer = Writer {
            client,
            rx,
            buffer: VecDeque::new(),
            conn: None,
            dropped: 0,
        };
        crate::actors::task::spawn_supervised(
            "hot_log.writer",
            events.clone(),
            writer,
            |state| async move { state.lock().await.run().await },
        );
        Some(Self {
            tx,
            events,
            followed: Default::default(),
        })
    }

    /// Appends a line `{"at_ms", "kind", "data"}` to `tenant`'s hot log.
    pub fn push(&self, tenant: &str, kind: &str, data: serde_json::Value) {
        let line =
            serde_json::json!({"at_ms": crate::domain::now_ms(), "kind": kind, "data": data});
        let _ = self.tx.send((tenant.to_owned(), line.to_string()));
    }

    /// Follows `tenant`'s events on `bus` (those this node produced) into the hot tier, until the bus closes;
    /// once per tenant (a second call is a no-op). A supervised task (`hot_log.follow`).
    pub fn follow(&self, bus: &EventBus, tenant: &str) {
        if !self.followed.insert(tenant.to_owned()) {
            return;
        }
        let state = (bus.subscribe(tenant), self.clone(), tenant.to_owned());
        crate::actors::task::spawn_supervised(
            "hot_log.follow",
            self.events.clone(),
            state,
            |state| async move {
                let mut s = state.lock().await;
                let (events, hot, tenant) = &mut *s;
                loop {
                    match events.recv().await {
                        Ok(e) if !e.local => {} // logged by the node that produced it
                        Ok(e) => {
                            hot.push(tenant, &e.kind, e.data);
                            crate::actors::task::fault_point("hot_log.follow");
                        }
                        Err(RecvError::Lagged(n)) => {
                            tracing::warn!(missed = n, "hot log tier fell behind")
                        }
                        Err(RecvError::Closed) => return,
                    }
                }
            },
        );
    }
}
