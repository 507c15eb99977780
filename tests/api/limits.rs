//! Tier rate limits on the API: 429 with `Retry-After`, `RateLimit` and `RateLimit-Policy`, recovery, one
//! limit across processes sharing Redis, and the in-process fallback when Redis is away.

use std::time::Duration;

use crate::helpers::{spawn_app_with, tenant, TestApp};

/// 60 a minute: the whole quota at once, then one a second.
const FREE: (&str, &str) = ("TRELLIS__RATE_LIMITS__FREE", "60");

fn free_tenant(id: &str, key: &str) -> trellis::domain::tenant::TenantSettings {
    let mut t = tenant(id, key);
    t.tier = "free".into();
    t
}

async fn statuses(app: &TestApp, key: &str, n: usize) -> Vec<u16> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        out.push(app.get_as("/api/v1/positions", Some(key)).await.0);
    }
    out
}

#[actix_rt::test]
async fn a_tenant_past_its_tier_quota_gets_429_with_the_headers_and_recovers() {
    let key = "trk_limits01_rate-limit-secret";
    let app = spawn_app_with(&[FREE, ("TRELLIS__STORAGE__REDIS_URL", "")]).await;
    app.add_tenant(free_tenant("acme", key)).await;

    let (no_key, _, body) = app.get_as("/api/v1/positions", None).await;
    let (bad_key, _, _) = app
        .get_as("/api/v1/positions", Some("trk_nobody00_xxxx"))
        .await;
    let (first, first_headers, positions) = app.get_as("/api/v1/positions", Some(key)).await;
    let allowed = statuses(&app, key, 59).await;
    let (refused, headers, error) = app.get_as("/api/v1/orders", Some(key)).await;
    actix_rt::time::sleep(Duration::from_millis(1_100)).await;
    let (recovered, _, _) = app.get_as("/api/v1/orders", Some(key)).await;

    assert_eq!((no_key, bad_key), (401, 401));
    assert_eq!(body["error"], "unauthorized");
    assert_eq!(first, 200);
    assert!(positions["positions"].is_array());
    assert_eq!(
        first_headers.get("ratelimit-policy").map(String::as_str),
        Some("60;w=60")
    );
    assert!(
        first_headers
            .get("ratelimit")
            .is_some_and(|v| v.starts_with("limit=60, remaining=59")),
        "{first_headers:?}"
    );
    assert!(allowed.iter().all(|s| *s == 200), "{allowed:?}");
    assert_eq!(refused, 429);
    assert_eq!(error["error"], "rate_limited");
    assert_eq!(headers.get("retry-after").map(String::as_str), Some("1"));
    assert_eq!(
        headers.get("ratelimit-policy").map(String::as_str),
        Some("60;w=60")
    );
    assert!(
        headers
            .get("ratelimit")
            .is_some_and(|v| v.starts_with("limit=60, remaining=0")),
        "{headers:?}"
    );
    assert_eq!(recovered, 200, "one more request a second later");
    app.shutdown().await;
}

#[actix_rt::test]
async fn two_trellis_processes_sharing_redis_hold_one_limit_per_tenant() {
    let Some(redis) = crate::helpers::service_url("TRELLIS_TEST_REDIS_URL") else {
        return;
    };
    let id = format!("l{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let key = format!("trk_{id}_shared-limit-secret");
    let a = spawn_app_with(&[FREE, ("TRELLIS__STORAGE__REDIS_URL", &redis)]).await;
    let b = spawn_app_with(&[FREE, ("TRELLIS__STORAGE__REDIS_URL", &redis)]).await;
    a.add_tenant(free_tenant(&id, &key)).await;
    b.add_tenant(free_tenant(&id, &key)).await;

    let from_a = statuses(&a, &key, 30).await;
    let from_b = statuses(&b, &key, 30).await;
    let (one_more, _, _) = b.get_as("/api/v1/positions", Some(&key)).await;

    assert!(from_a.iter().chain(&from_b).all(|s| *s == 200));
    assert_eq!(
        one_more, 429,
        "60 between both processes is the tenant's whole minute"
    );
    a.shutdown().await;
    b.shutdown().await;
}

#[actix_rt::test]
async fn with_redis_away_each_process_falls_back_to_its_own_limit() {
    let key = "trk_limits02_fallback-secret";
    let app = spawn_app_with(&[FREE, ("TRELLIS__STORAGE__REDIS_URL", "redis://127.0.0.1:9")]).await;
    app.add_tenant(free_tenant("acme", key)).await;

    let allowed = statuses(&app, key, 60).await;
    let (refused, _, _) = app.get_as("/api/v1/positions", Some(key)).await;

    assert!(allowed.iter().all(|s| *s == 200), "{allowed:?}");
    assert_eq!(refused, 429);
    app.shutdown().await;
}
