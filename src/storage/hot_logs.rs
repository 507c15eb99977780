//! The hot log tier on Redis: each tenant's recent log — its trade log (every order change and fill this
//! node produces, as published on the event bus) and its audit entries — kept 24 hours in
//! `trellis:logs:<tenant>` (a list, newest last, expiring 24 h after its last write; platform audit entries
//! under `trellis:logs:platform`), for support and dashboards that need the last day quickly. Writes are
//! batched every 200 ms; while Redis is away lines wait in a bounded buffer (the oldest are dropped past
//! 100 000 and counted — the durable records are the relational store and the audit chain, not this tier).

use std::collections::VecDeque;
use std::time::Duration;

use tokio::sync::broadcast::error::RecvError;
use tokio::sync::mpsc;

use crate::actors::bus::EventBus;

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
}

impl HotLog {
    /// Starts the writer for the Redis at `url` on the current runtime.
    pub fn start(url: &str) -> Option<Self> {
        let client = redis::Client::open(url).ok()?;
        let (tx, mut rx) = mpsc::unbounded_channel::<(String, String)>();
        actix_rt::spawn(async move {
            let mut buffer: VecDeque<(String, String)> = VecDeque::new();
            let mut conn: Option<redis::aio::ConnectionManager> = None;
            let mut tick = tokio::time::interval(Duration::from_millis(200));
            let mut dropped = 0u64;
            loop {
                tokio::select! {
                    line = rx.recv() => match line {
                        Some(line) => {
                            buffer.push_back(line);
                            while buffer.len() > MAX_BUFFERED {
                                buffer.pop_front();
                                dropped += 1;
                                if dropped.is_power_of_two() {
                                    tracing::warn!(dropped, "hot log tier buffer full: oldest lines dropped");
                                }
                            }
                        }
                        None => return,
                    },
                    _ = tick.tick() => {
                        if buffer.is_empty() {
                            continue;
                        }
                        if conn.is_none() {
                            conn = tokio::time::timeout(Duration::from_secs(1), redis::aio::ConnectionManager::new(client.clone()))
                                .await
                                .ok()
                                .and_then(Result::ok);
                        }
                        let Some(c) = conn.as_mut() else { continue };
                        let mut pipe = redis::pipe();
                        for (tenant, line) in &buffer {
                            pipe.rpush(key(tenant), line).ignore();
                        }
                        let mut tenants: Vec<&String> = buffer.iter().map(|(t, _)| t).collect();
                        tenants.sort();
                        tenants.dedup();
                        for t in tenants {
                            pipe.expire(key(t), RETENTION.as_secs() as i64).ignore();
                        }
                        match pipe.query_async::<()>(c).await {
                            Ok(()) => buffer.clear(),
                            Err(e) => {
                                tracing::warn!(error = %e, buffered = buffer.len(), "hot log tier unavailable");
                                conn = None;
                            }
                        }
                    }
                }
            }
        });
        Some(Self { tx })
    }

    /// Appends a line `{"at_ms", "kind", "data"}` to `tenant`'s hot log.
    pub fn push(&self, tenant: &str, kind: &str, data: serde_json::Value) {
        let line =
            serde_json::json!({"at_ms": crate::domain::now_ms(), "kind": kind, "data": data});
        let _ = self.tx.send((tenant.to_owned(), line.to_string()));
    }

    /// Follows `tenant`'s events on `bus` (those this node produced) into the hot tier, until the bus closes.
    pub fn follow(&self, bus: &EventBus, tenant: &str) {
        let mut events = bus.subscribe(tenant);
        let (hot, tenant) = (self.clone(), tenant.to_owned());
        actix_rt::spawn(async move {
            loop {
                match events.recv().await {
                    Ok(e) if !e.local => {} // logged by the node that produced it
                    Ok(e) => hot.push(&tenant, &e.kind, e.data),
                    Err(RecvError::Lagged(n)) => {
                        tracing::warn!(missed = n, "hot log tier fell behind")
                    }
                    Err(RecvError::Closed) => return,
                }
            }
        });
    }
}
