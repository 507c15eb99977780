//! Trading events for clients (orders and fills), per tenant, across nodes.
//!
//! Each process broadcasts its tenants' events in-process to the WebSocket clients it serves
//! (`/ws/events`). With Redis configured it also publishes them on the deployment's channel
//! (`trellis:<namespace>:events`, see `Settings::namespace`: two deployments sharing a Redis never see each
//! other's events, even for tenants of the same id) and subscribes to it, re-broadcasting what other nodes published: a client connected to one node sees what
//! happened on another. Redis going away only stops the cross-node part; the subscriber reconnects.

use std::sync::Arc;
use std::time::Duration;

use dashmap::DashMap;
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

const CAPACITY: usize = 1_024;

/// One event as clients receive it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TenantEvent {
    pub tenant: String,
    /// What it is about; `data` is the JSON of that thing.
    pub kind: crate::domain::events::EventKind,
    pub data: serde_json::Value,
    /// Produced by this node (false for events re-broadcast from another node).
    #[serde(skip)]
    pub local: bool,
}

#[derive(Serialize, Deserialize)]
struct Wire {
    node: String,
    event: TenantEvent,
}

/// The per-tenant broadcast channels and, when configured, the Redis link.
#[derive(Clone)]
pub struct EventBus {
    node: String,
    channels: Arc<DashMap<String, broadcast::Sender<TenantEvent>>>,
    /// To the Redis publisher: the event itself, serialised by the publisher's task, not by the actor that
    /// publishes (the portfolio on the trading path).
    publish: Option<tokio::sync::mpsc::UnboundedSender<TenantEvent>>,
    channel: Arc<str>,
}

/// The publisher's state, kept across its restarts: the payload being published is retried, not lost.
struct Publisher {
    client: redis::Client,
    rx: tokio::sync::mpsc::UnboundedReceiver<TenantEvent>,
    node: String,
    conn: Option<redis::aio::ConnectionManager>,
    pending: Option<String>,
    channel: Arc<str>,
}

impl Publisher {
    async fn run(&mut self) {
        loop {
            let payload = match self.pending.take() {
                Some(p) => p,
                None => match self.rx.recv().await {
                    Some(event) => match serde_json::to_string(&Wire {
                        node: self.node.clone(),
                        event,
                    }) {
                        Ok(payload) => payload,
                        Err(_) => continue,
                    },
                    None => return,
                },
            };
            self.pending = Some(payload.clone());
            crate::runtime::task::fault_point("bus.publisher");
            if self.conn.is_none() {
                self.conn = redis::aio::ConnectionManager::new(self.client.clone())
                    .await
                    .ok();
            }
            if let Some(c) = self.conn.as_mut() {
                let sent: Result<(), _> = redis::cmd("PUBLISH")
                    .arg(&*self.channel)
                    .arg(&payload)
                    .query_async(c)
                    .await;
                if sent.is_err() {
                    self.conn = None; // the event still reached this node's clients
                }
            }
            self.pending = None;
        }
    }
}

impl EventBus {
    /// In-process only.
    pub fn local() -> Self {
        Self {
            node: uuid::Uuid::new_v4().to_string(),
            channels: Arc::new(DashMap::new()),
            publish: None,
            channel: "trellis:local:events".into(),
        }
    }

    /// The Redis channel this bus publishes on and listens to.
    pub fn redis_channel(&self) -> &str {
        &self.channel
    }

    /// Shared through Redis: starts the publisher and the subscriber on the current runtime, each a
    /// supervised task (`bus.publisher`, `bus.subscriber`) recorded in `events`.
    pub fn with_redis(
        url: &str,
        namespace: &str,
        events: Option<crate::runtime::events::EventLog>,
    ) -> Self {
        let mut bus = Self::local();
        bus.channel = format!("trellis:{namespace}:events").into();
        let Ok(client) = redis::Client::open(url) else {
            return bus;
        };
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<TenantEvent>();
        bus.publish = Some(tx);
        let publisher = Publisher {
            client: client.clone(),
            rx,
            node: bus.node.clone(),
            conn: None,
            pending: None,
            channel: bus.channel.clone(),
        };
        crate::runtime::task::spawn_supervised(
            "bus.publisher",
            events.clone(),
            publisher,
            |state| async move {
                let mut p = state.lock().await;
                p.run().await;
            },
        );
        let (node, channels, channel) =
            (bus.node.clone(), bus.channels.clone(), bus.channel.clone());
        crate::runtime::task::spawn_supervised(
            "bus.subscriber",
            events,
            (client, node, channels, channel),
            |state| async move {
                let s = state.lock().await;
                let (client, node, channels, channel) = (&s.0, &s.1, &s.2, &s.3);
                loop {
                    if let Ok(mut pubsub) = client.get_async_pubsub().await {
                        if pubsub.subscribe(&**channel).await.is_ok() {
                            let mut messages = pubsub.on_message();
                            while let Some(msg) = messages.next().await {
                                crate::runtime::task::fault_point("bus.subscriber");
                                let Ok(payload) = msg.get_payload::<String>() else {
                                    continue;
                                };
                                let Ok(wire) = serde_json::from_str::<Wire>(&payload) else {
                                    continue;
                                };
                                if &wire.node != node {
                                    if let Some(ch) = channels.get(&wire.event.tenant) {
                                        let _ = ch.send(wire.event);
                                    }
                                }
                            }
                        }
                    }
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            },
        );
        bus
    }

    fn channel(&self, tenant: &str) -> broadcast::Sender<TenantEvent> {
        // The common case (the channel exists) allocates nothing.
        if let Some(tx) = self.channels.get(tenant) {
            return tx.clone();
        }
        self.channels
            .entry(tenant.to_owned())
            .or_insert_with(|| broadcast::channel(CAPACITY).0)
            .clone()
    }

    /// Events of `tenant` from now on, from this node and (with Redis) the others.
    pub fn subscribe(&self, tenant: &str) -> broadcast::Receiver<TenantEvent> {
        self.channel(tenant).subscribe()
    }

    pub fn publish(&self, mut event: TenantEvent) {
        event.local = true;
        if let Some(tx) = &self.publish {
            let _ = tx.send(event.clone());
        }
        let _ = self.channel(&event.tenant).send(event);
    }
}
