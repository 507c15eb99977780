//! The hot cache on Redis (`storage.redis_url`): the latest tick of every symbol and each tenant's position
//! snapshot, for readers that must not ask the actors (the API, other trellis nodes).
//!
//! Writes are conflated — only the latest value of a key matters — and flushed every 100 ms in one pipeline.
//! Redis going away never stops trading: the actor reports itself unhealthy, keeps only the latest value per
//! key, reconnects every second and writes them once Redis is back.
//! Keys: `trellis:<tenant>:tick:<symbol>`, `trellis:<tenant>:positions` and
//! `trellis:<tenant>:prediction:<deployment>` (the latest served prediction), JSON values.

use std::collections::HashMap;
use std::time::Duration;

use actix::prelude::*;
use redis::aio::ConnectionManager;

use super::{Health, HealthBoard, StorageError};
use crate::domain::Tick;
use crate::runtime::supervisor::{ExitNotifier, Shutdown};

/// Name of this store on the health board and in `/ready`.
pub const NAME: &str = "cache";
const FLUSH_EVERY: Duration = Duration::from_millis(100);
const RECONNECT_EVERY: Duration = Duration::from_secs(1);

/// The latest ticks of a tenant's symbols.
#[derive(Message)]
#[rtype(result = "()")]
pub struct CacheTicks {
    pub tenant: String,
    pub ticks: Vec<Tick>,
}

/// The latest served prediction of a model deployment.
#[derive(Message)]
#[rtype(result = "()")]
pub struct CachePrediction {
    pub tenant: String,
    pub prediction: crate::domain::Prediction,
}

/// A tenant's positions, as JSON.
#[derive(Message)]
#[rtype(result = "()")]
pub struct CachePositions {
    pub tenant: String,
    pub json: String,
}

pub fn tick_key(tenant: &str, symbol: &str) -> String {
    format!("trellis:{tenant}:tick:{symbol}")
}

pub fn prediction_key(tenant: &str, deployment: &str) -> String {
    format!("trellis:{tenant}:prediction:{deployment}")
}

pub fn positions_key(tenant: &str) -> String {
    format!("trellis:{tenant}:positions")
}

pub struct RedisCache {
    url: String,
    conn: Option<ConnectionManager>,
    connecting: bool,
    /// Latest value per key, not yet written.
    pending: HashMap<String, String>,
    flushing: bool,
    board: HealthBoard,
    notifier: ExitNotifier,
}

impl RedisCache {
    pub fn new(url: String, board: HealthBoard, notifier: ExitNotifier) -> Self {
        Self {
            url,
            conn: None,
            connecting: false,
            pending: HashMap::new(),
            flushing: false,
            board,
            notifier,
        }
    }

    fn connect(&mut self, ctx: &mut Context<Self>) {
        if self.conn.is_some() || self.connecting {
            return;
        }
        self.connecting = true;
        let url = self.url.clone();
        ctx.spawn(
            async move {
                let client = redis::Client::open(url.as_str())
                    .map_err(|e| StorageError::Rejected(e.to_string()))?;
                let connect = ConnectionManager::new(client);
                tokio::time::timeout(Duration::from_secs(2), connect)
                    .await
                    .map_err(|_| StorageError::Unavailable("redis: connect timed out".into()))?
                    .map_err(|e| StorageError::Unavailable(format!("redis: {e}")))
            }
            .into_actor(self)
            .map(|res, act, _| {
                act.connecting = false;
                match res {
                    Ok(conn) => {
                        act.conn = Some(conn);
                        act.board.set(NAME, Health::Healthy);
                    }
                    Err(e) => act.board.set(
                        NAME,
                        Health::Unhealthy {
                            reason: e.to_string(),
                        },
                    ),
                }
            }),
        );
    }

    fn flush(&mut self, ctx: &mut Context<Self>) {
        if self.flushing || self.pending.is_empty() {
            return;
        }
        let Some(mut conn) = self.conn.clone() else {
            return;
        };
        self.flushing = true;
        let batch = std::mem::take(&mut self.pending);
        let mut pipe = redis::pipe();
        for (k, v) in &batch {
            pipe.set(k, v).ignore();
        }
        ctx.spawn(
            async move {
                tokio::time::timeout(Duration::from_secs(2), pipe.query_async::<()>(&mut conn))
                    .await
                    .map_err(|_| "redis: write timed out".to_owned())?
                    .map_err(|e| format!("redis: {e}"))
            }
            .into_actor(self)
            .map(move |res, act, _| {
                act.flushing = false;
                match res {
                    Ok(()) => act.board.set(NAME, Health::Healthy),
                    Err(reason) => {
                        // Keep what was not written unless a newer value arrived meanwhile.
                        for (k, v) in batch {
                            act.pending.entry(k).or_insert(v);
                        }
                        tracing::warn!(reason = %reason, pending = act.pending.len(), "cache write failed; reconnecting");
                        act.board.set(NAME, Health::Unhealthy { reason });
                        act.conn = None;
                    }
                }
            }),
        );
    }
}

impl Actor for RedisCache {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        self.board.set(NAME, Health::Starting);
        self.connect(ctx);
        ctx.run_interval(FLUSH_EVERY, |act, ctx| act.flush(ctx));
        ctx.run_interval(RECONNECT_EVERY, |act, ctx| act.connect(ctx));
    }

    fn stopped(&mut self, _ctx: &mut Self::Context) {
        self.board.set(
            NAME,
            Health::Unhealthy {
                reason: "stopped".into(),
            },
        );
        self.notifier.mark_stopped();
    }
}

impl Handler<CacheTicks> for RedisCache {
    type Result = ();

    fn handle(&mut self, msg: CacheTicks, _ctx: &mut Self::Context) {
        for t in msg.ticks {
            let value = serde_json::json!({"symbol": t.symbol, "time_msc": t.time_msc, "bid": t.bid, "ask": t.ask});
            self.pending
                .insert(tick_key(&msg.tenant, t.symbol.as_str()), value.to_string());
        }
    }
}

impl Handler<CachePrediction> for RedisCache {
    type Result = ();

    fn handle(&mut self, msg: CachePrediction, _ctx: &mut Self::Context) {
        if let Ok(json) = serde_json::to_string(&msg.prediction) {
            self.pending.insert(
                prediction_key(&msg.tenant, &msg.prediction.deployment),
                json,
            );
        }
    }
}

impl Handler<CachePositions> for RedisCache {
    type Result = ();

    fn handle(&mut self, msg: CachePositions, _ctx: &mut Self::Context) {
        self.pending.insert(positions_key(&msg.tenant), msg.json);
    }
}

impl Handler<Shutdown> for RedisCache {
    type Result = ();

    fn handle(&mut self, _msg: Shutdown, ctx: &mut Self::Context) {
        ctx.stop();
    }
}
