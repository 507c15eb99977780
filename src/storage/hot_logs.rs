//! The hot log tier on Redis: the trade log — every order change and fill a node produces for a tenant, as
//! published on the event bus — kept 24 hours in `trellis:logs:<tenant>` (a list, newest last, expiring 24 h after its last
//! write), for support and dashboards that need the last day quickly. Writes are batched every 200 ms; while
//! Redis is away lines wait in a bounded buffer (the oldest are dropped past 100 000 and counted — the
//! durable record of orders and fills is the relational store, not this tier).

use std::collections::VecDeque;
use std::time::Duration;

use tokio::sync::broadcast::error::RecvError;

use crate::actors::bus::EventBus;

/// How long hot log lines live.
pub const RETENTION: Duration = Duration::from_secs(24 * 3600);
const MAX_BUFFERED: usize = 100_000;

pub fn key(tenant: &str) -> String {
    format!("trellis:logs:{tenant}")
}

/// Follows `tenant`'s events on `bus` and appends them to the hot tier at `url`, until the bus closes.
pub fn follow(bus: &EventBus, tenant: &str, url: &str) {
    let Ok(client) = redis::Client::open(url) else {
        return;
    };
    let mut events = bus.subscribe(tenant);
    let list = key(tenant);
    actix_rt::spawn(async move {
        let mut buffer: VecDeque<String> = VecDeque::new();
        let mut conn: Option<redis::aio::ConnectionManager> = None;
        let mut tick = tokio::time::interval(Duration::from_millis(200));
        loop {
            tokio::select! {
                event = events.recv() => match event {
                    Ok(e) if !e.local => {} // logged by the node that produced it
                    Ok(e) => {
                        let line = serde_json::json!({"at_ms": crate::domain::now_ms(), "kind": e.kind, "data": e.data});
                        buffer.push_back(line.to_string());
                        while buffer.len() > MAX_BUFFERED {
                            buffer.pop_front();
                        }
                    }
                    Err(RecvError::Lagged(n)) => tracing::warn!(missed = n, "hot log tier fell behind"),
                    Err(RecvError::Closed) => return,
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
                    let lines: Vec<String> = buffer.iter().cloned().collect();
                    let mut pipe = redis::pipe();
                    pipe.rpush(&list, &lines).ignore().expire(&list, RETENTION.as_secs() as i64).ignore();
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
}
