//! Tiered rate limits (free 10, basic 100, professional 1000, enterprise 10000 requests a minute per tenant,
//! configurable) with GCRA: a tenant may burst up to its whole minute's quota, then one request per
//! 60 s / quota. With Redis configured the state lives there, in a Lua script using the server's clock, so
//! every trellis process sharing that Redis enforces one limit. If Redis is unreachable each process falls
//! back to its own in-process GCRA (`governor`): limits loosen to per-node, nothing stops.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use dashmap::DashMap;
use governor::clock::{Clock, DefaultClock};
use governor::middleware::StateInformationMiddleware;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter as Gcra};

type LocalLimiter = Gcra<NotKeyed, InMemoryState, DefaultClock, StateInformationMiddleware>;
use redis::aio::ConnectionManager;
use tokio::sync::Mutex;

/// GCRA on a key: ARGV[1] emission interval (ms), ARGV[2] burst. Returns {allowed, retry_after_ms,
/// reset_ms} with the server's clock.
const SCRIPT: &str = r#"
local emission = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local new_tat = tat + emission
local allow_at = new_tat - emission * burst
if now < allow_at then
  return {0, allow_at - now, tat - now}
end
redis.call('SET', KEYS[1], new_tat, 'PX', math.ceil(new_tat - now) + 1000)
return {1, 0, new_tat - now}
"#;

/// How long the in-process limiter answers alone after Redis failed.
const REDIS_RETRY: Duration = Duration::from_secs(5);

/// The verdict on one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    pub limit: u32,
    pub remaining: u32,
    /// When a refused request may be retried.
    pub retry_after: Duration,
    /// When the quota is whole again.
    pub reset: Duration,
}

pub struct RateLimiter {
    redis: Option<redis::Client>,
    conn: Mutex<Option<ConnectionManager>>,
    /// After Redis fails, the local limiter answers alone until then (no request waits on a dead Redis).
    redis_down_until: std::sync::Mutex<Option<tokio::time::Instant>>,
    script: redis::Script,
    local: DashMap<String, Arc<LocalLimiter>>,
}

impl RateLimiter {
    /// Shared through Redis when `redis_url` is set, else in-process only.
    pub fn new(redis_url: Option<&str>) -> Self {
        Self {
            redis: redis_url.and_then(|u| redis::Client::open(u).ok()),
            conn: Mutex::new(None),
            redis_down_until: std::sync::Mutex::new(None),
            script: redis::Script::new(SCRIPT),
            local: DashMap::new(),
        }
    }

    /// Takes one request from `key`'s quota of `per_minute`.
    pub async fn check(&self, key: &str, per_minute: u32) -> Decision {
        let per_minute = per_minute.max(1);
        match self.check_shared(key, per_minute).await {
            Some(d) => d,
            None => self.check_local(key, per_minute),
        }
    }

    async fn check_shared(&self, key: &str, per_minute: u32) -> Option<Decision> {
        let client = self.redis.as_ref()?;
        let down = self.redis_down_until.lock().ok().and_then(|g| *g);
        if down.is_some_and(|t| tokio::time::Instant::now() < t) {
            return None;
        }
        let decision = self.ask_redis(client, key, per_minute).await;
        if decision.is_none() {
            if let Ok(mut g) = self.redis_down_until.lock() {
                *g = Some(tokio::time::Instant::now() + REDIS_RETRY);
            }
            tracing::warn!(
                "rate limiter: Redis unreachable; using in-process limits for {REDIS_RETRY:?}"
            );
        }
        decision
    }

    async fn ask_redis(
        &self,
        client: &redis::Client,
        key: &str,
        per_minute: u32,
    ) -> Option<Decision> {
        let mut guard = self.conn.lock().await;
        if guard.is_none() {
            let connect = ConnectionManager::new(client.clone());
            *guard = tokio::time::timeout(Duration::from_millis(500), connect)
                .await
                .ok()?
                .ok();
        }
        let conn = guard.as_mut()?;
        let emission = 60_000f64 / f64::from(per_minute);
        let mut invocation = self.script.key(format!("trellis:rate:{key}"));
        invocation.arg(emission).arg(per_minute);
        let call = invocation.invoke_async(conn);
        let result: Result<(i64, f64, f64), _> =
            match tokio::time::timeout(Duration::from_millis(500), call).await {
                Ok(r) => r,
                Err(_) => return None,
            };
        let Ok((allowed, retry_ms, reset_ms)) = result else {
            *guard = None; // reconnect next time; meanwhile the local limiter answers
            return None;
        };
        let used = (reset_ms / emission).ceil().max(0.0) as u32;
        Some(Decision {
            allowed: allowed == 1,
            limit: per_minute,
            remaining: per_minute.saturating_sub(used),
            retry_after: Duration::from_millis(retry_ms.max(0.0).ceil() as u64),
            reset: Duration::from_millis(reset_ms.max(0.0).ceil() as u64),
        })
    }

    fn check_local(&self, key: &str, per_minute: u32) -> Decision {
        let quota_n = NonZeroU32::new(per_minute).unwrap_or(NonZeroU32::MIN);
        let limiter = self
            .local
            .entry(format!("{key}:{per_minute}"))
            .or_insert_with(|| {
                Arc::new(
                    Gcra::direct(Quota::per_minute(quota_n))
                        .with_middleware::<StateInformationMiddleware>(),
                )
            })
            .clone();
        let emission = Duration::from_secs(60) / per_minute;
        match limiter.check() {
            Ok(snapshot) => Decision {
                allowed: true,
                limit: per_minute,
                remaining: snapshot.remaining_burst_capacity(),
                retry_after: Duration::ZERO,
                reset: emission * (per_minute - snapshot.remaining_burst_capacity()),
            },
            Err(not_until) => {
                let wait = not_until.wait_time_from(DefaultClock::default().now());
                Decision {
                    allowed: false,
                    limit: per_minute,
                    remaining: 0,
                    retry_after: wait,
                    reset: wait + emission * (per_minute - 1),
                }
            }
        }
    }
}
