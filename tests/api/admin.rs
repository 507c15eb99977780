//! The admin API doing its job: tenants, strategies and risk managed while trading runs and kept across a
//! restart, tier quotas and rate limits, suspension, bad input, the first administrator.

use std::time::Duration;

use serde_json::json;
use trellis::runtime::supervisor::GetChildren;

use crate::helpers::{
    create_key, create_tenant, create_user, spawn_admin_app, spawn_app_on, spawn_app_with,
    ROOT_EMAIL, ROOT_PASSWORD,
};

fn ema(id: &str) -> serde_json::Value {
    json!({"id": id, "kind": "ema_cross", "symbol": "EURUSD", "timeframe": "M1", "volume": 0.1,
        "params": {"fast": 2, "slow": 3}})
}

/// The running children of the tenant's supervisor and of its `strategies` supervisor.
async fn children(app: &crate::helpers::TestApp, tenant: &str) -> Vec<String> {
    let t = app.runtime.tenant(tenant).expect("tenant runs");
    let mut names = Vec::new();
    for sup in [t.supervisor.get(), t.strategy_supervisor.get()]
        .into_iter()
        .flatten()
    {
        names.extend(
            sup.send(GetChildren)
                .await
                .expect("children")
                .into_iter()
                .filter(|c| c.running)
                .map(|c| c.name),
        );
    }
    names
}

#[actix_rt::test]
async fn strategies_are_created_stopped_changed_and_deleted_while_the_tenant_runs_and_kept_across_a_restart(
) {
    let (app, root) = spawn_admin_app(&[]).await;
    create_tenant(&app, &root, "acme", "basic").await;
    let (_, trader) = create_user(&app, &root, "acme", "t@acme.test", "trader").await;
    let base = "/api/v1/tenants/acme/strategies";

    // Create: validated, started under the tenant supervisor.
    let created = app
        .expect(201, "POST", base, Some(&trader), Some(&ema("fast-ema")))
        .await;
    assert_eq!(created["running"], true, "{created}");
    assert!(children(&app, "acme")
        .await
        .contains(&"strategy:fast-ema".to_owned()));
    // Invalid parameters, symbols and duplicates are refused, naming the field.
    let mut bad = ema("bad");
    bad["params"] = json!({"fast": 5, "slow": 3});
    let r = app.call("POST", base, Some(&trader), Some(&bad)).await;
    assert_eq!(r.status, 400);
    assert!(
        r.body["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("params:")),
        "{:?}",
        r.body
    );
    let mut bad = ema("bad");
    bad["symbol"] = json!("XAUUSD");
    let r = app.call("POST", base, Some(&trader), Some(&bad)).await;
    assert!(
        r.body["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("symbol:")),
        "{:?}",
        r.body
    );
    assert_eq!(
        app.call("POST", base, Some(&trader), Some(&ema("fast-ema")))
            .await
            .status,
        409
    );

    // Stop: no child, kept in the list.
    let stopped = app
        .expect(
            200,
            "POST",
            &format!("{base}/fast-ema/stop"),
            Some(&trader),
            None,
        )
        .await;
    assert_eq!(stopped["running"], false);
    assert!(!children(&app, "acme")
        .await
        .contains(&"strategy:fast-ema".to_owned()));
    // Change while stopped, then start with the new parameters.
    let changed = app
        .expect(
            200,
            "PUT",
            &format!("{base}/fast-ema"),
            Some(&trader),
            Some(&json!({"params": {"fast": 3, "slow": 8}, "timeframe": "M5"})),
        )
        .await;
    assert_eq!(changed["strategy"]["timeframe"], "M5");
    app.expect(
        200,
        "POST",
        &format!("{base}/fast-ema/start"),
        Some(&trader),
        None,
    )
    .await;
    assert!(children(&app, "acme")
        .await
        .contains(&"strategy:fast-ema".to_owned()));
    app.expect(201, "POST", base, Some(&trader), Some(&ema("doomed")))
        .await;
    app.expect(
        200,
        "DELETE",
        &format!("{base}/doomed"),
        Some(&trader),
        None,
    )
    .await;
    assert_eq!(
        app.call("GET", &format!("{base}/doomed"), Some(&trader), None)
            .await
            .status,
        404
    );
    // Risk limits replaced by a tenant admin and in force.
    let (_, admin) = create_user(&app, &root, "acme", "a@acme.test", "tenant_admin").await;
    app.expect(
        200,
        "PUT",
        "/api/v1/tenants/acme/risk",
        Some(&admin),
        Some(&json!({"max_order_volume": 0.5, "max_open_positions": 3})),
    )
    .await;

    // Act: restart on the same data.
    let kept = app.shutdown_keeping_data().await;
    let secrets = crate::helpers::jwt_secrets_var();
    let app = spawn_app_on(kept, &[("TRELLIS__SECURITY__JWT_SECRETS", &secrets)]).await;

    // Assert: the same tenant, strategy set, parameters and limits run.
    let (trader, _) = app.login("t@acme.test", "a-password-of-twelve+").await;
    let list = app.expect(200, "GET", base, Some(&trader), None).await;
    let items = list["strategies"].as_array().expect("list");
    assert_eq!(items.len(), 1, "{list}");
    assert_eq!(
        items[0]["strategy"]["params"],
        json!({"fast": 3.0, "slow": 8.0})
    );
    assert_eq!(items[0]["running"], true);
    assert!(children(&app, "acme")
        .await
        .contains(&"strategy:fast-ema".to_owned()));
    let risk = app
        .expect(200, "GET", "/api/v1/tenants/acme/risk", Some(&trader), None)
        .await;
    assert_eq!(risk["limits"]["max_open_positions"], 3);
    let tenant = app
        .expect(200, "GET", "/api/v1/tenants/acme", Some(&trader), None)
        .await;
    assert_eq!(tenant["tier"], "basic");
    app.shutdown().await;
}

#[actix_rt::test]
async fn a_tier_quota_answers_403_naming_the_tier_that_unlocks_more() {
    let (app, root) = spawn_admin_app(&[]).await;
    create_tenant(&app, &root, "acme", "free").await;
    let base = "/api/v1/tenants/acme/strategies";
    for i in 0..3 {
        app.expect(201, "POST", base, Some(&root), Some(&ema(&format!("s{i}"))))
            .await;
    }
    let r = app.call("POST", base, Some(&root), Some(&ema("s3"))).await;
    assert_eq!(r.status, 403);
    assert_eq!(r.body["error"], "tier_required");
    assert_eq!(r.body["required_tier"], "basic");
    app.expect(
        201,
        "POST",
        "/api/v1/tenants/acme/mt5-accounts",
        Some(&root),
        Some(&json!({"login": 1, "server": "B", "password": "p"})),
    )
    .await;
    let r = app
        .call(
            "POST",
            "/api/v1/tenants/acme/mt5-accounts",
            Some(&root),
            Some(&json!({"login": 2, "server": "B", "password": "p"})),
        )
        .await;
    assert_eq!(
        (r.status, r.body["required_tier"].as_str()),
        (403, Some("basic"))
    );

    // Upgrading lifts it.
    app.expect(
        200,
        "PUT",
        "/api/v1/tenants/acme/tier",
        Some(&root),
        Some(&json!({"tier": "basic"})),
    )
    .await;
    app.expect(201, "POST", base, Some(&root), Some(&ema("s3")))
        .await;
    app.shutdown().await;
}

#[actix_rt::test]
async fn each_tier_gets_its_own_request_limit_with_headers_and_recovers() {
    let (app, root) = spawn_admin_app(&[
        ("TRELLIS__RATE_LIMITS__FREE", "3"),
        ("TRELLIS__RATE_LIMITS__BASIC", "5"),
        ("TRELLIS__RATE_LIMITS__PROFESSIONAL", "7"),
        ("TRELLIS__RATE_LIMITS__ENTERPRISE", "600"),
    ])
    .await;
    for (tier, limit) in [("free", 3), ("basic", 5), ("professional", 7)] {
        create_tenant(&app, &root, tier, tier).await;
        let (_, key) = create_key(&app, &root, tier, &["read"]).await;
        let path = format!("/api/v1/tenants/{tier}/positions");
        for i in 0..limit {
            let r = app.call("GET", &path, Some(&key), None).await;
            assert_eq!(r.status, 200, "{tier} request {i}");
            assert_eq!(r.headers["ratelimit-policy"], format!("{limit};w=60"));
            assert!(r.headers["ratelimit"].contains(&format!("remaining={}", limit - i - 1)));
        }
        let r = app.call("GET", &path, Some(&key), None).await;
        assert_eq!(r.status, 429, "{tier}: {:?}", r.body);
        let wait: u64 = r.headers["retry-after"].parse().expect("seconds");
        assert!(
            (1..=60 / limit as u64 + 1).contains(&wait),
            "{tier}: retry after {wait}"
        );
        assert!(r.headers["ratelimit"].contains("remaining=0"));
    }
    // Enterprise: 600 a minute is one every 100 ms, so it recovers within the test.
    create_tenant(&app, &root, "big", "enterprise").await;
    let (_, key) = create_key(&app, &root, "big", &["read"]).await;
    let path = "/api/v1/tenants/big/positions";
    let mut refused = None;
    for _ in 0..700 {
        let r = app.call("GET", path, Some(&key), None).await;
        if r.status == 429 {
            refused = Some(r);
            break;
        }
    }
    let refused = refused.expect("the enterprise limit is reached");
    assert_eq!(refused.headers["ratelimit-policy"], "600;w=60");
    actix_rt::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(
        app.call("GET", path, Some(&key), None).await.status,
        200,
        "recovered"
    );
    app.shutdown().await;
}

#[actix_rt::test]
async fn a_suspended_tenant_is_refused_everywhere_until_resumed() {
    let (app, root) = spawn_admin_app(&[]).await;
    create_tenant(&app, &root, "acme", "basic").await;
    let (_, viewer) = create_user(&app, &root, "acme", "v@acme.test", "viewer").await;
    let (_, bridge) = create_key(&app, &root, "acme", &["market:write"]).await;
    let sim = app.sim(&bridge, 9001).await;

    app.expect(
        200,
        "POST",
        "/api/v1/tenants/acme/suspend",
        Some(&root),
        None,
    )
    .await;

    let r = app.call("GET", "/api/v1/me", Some(&viewer), None).await;
    assert_eq!(r.status, 403);
    assert!(r.body["message"]
        .as_str()
        .is_some_and(|m| m.contains("suspended")));
    let r = app
        .call(
            "POST",
            "/api/v1/auth/login",
            None,
            Some(&json!({"email": "v@acme.test", "password": "a-password-of-twelve+"})),
        )
        .await;
    assert_eq!(r.status, 403);
    crate::helpers::wait_for("the bridge to be disconnected", || !sim.stats().connected).await;

    app.expect(
        200,
        "POST",
        "/api/v1/tenants/acme/resume",
        Some(&root),
        None,
    )
    .await;
    assert_eq!(
        app.call("GET", "/api/v1/me", Some(&viewer), None)
            .await
            .status,
        200
    );
    drop(sim);
    app.shutdown().await;
}

#[actix_rt::test]
async fn bad_bodies_are_refused_naming_the_field_and_a_body_cannot_choose_tenant_role_or_tier() {
    let (app, root) = spawn_admin_app(&[("TRELLIS__HTTP__MAX_BODY_BYTES", "4096")]).await;
    create_tenant(&app, &root, "acme", "free").await;
    let (_, admin) = create_user(&app, &root, "acme", "a@acme.test", "tenant_admin").await;
    let users = "/api/v1/tenants/acme/users";
    let cases = [
        (
            json!({"email": "x@acme.test", "password": "long-enough-pw", "role": "viewer", "tenant_id": "globex"}),
            "tenant_id",
        ),
        (
            json!({"email": "x@acme.test", "password": "long-enough-pw"}),
            "role",
        ),
        (
            json!({"email": 5, "password": "long-enough-pw", "role": "viewer"}),
            "email",
        ),
        (
            json!({"email": "x@acme.test", "password": "short", "role": "viewer"}),
            "password",
        ),
        (
            json!({"email": "x@acme.test", "password": "long-enough-pw", "role": "platform_admin"}),
            "role",
        ),
    ];
    for (body, field) in &cases {
        let r = app.call("POST", users, Some(&admin), Some(body)).await;
        assert_eq!(r.status, 400, "{body}: {:?}", r.body);
        assert!(
            r.body["message"]
                .as_str()
                .is_some_and(|m| m.contains(field)),
            "{field}: {:?}",
            r.body
        );
    }
    // A tenant admin cannot change the tier, nor create tenants.
    let r = app
        .call(
            "PUT",
            "/api/v1/tenants/acme/tier",
            Some(&admin),
            Some(&json!({"tier": "enterprise"})),
        )
        .await;
    assert_eq!(r.status, 403);
    // Malformed JSON, wrong content type, a body over the limit.
    let r = app
        .call(
            "POST",
            "/api/v1/auth/login",
            None,
            Some(&json!("not an object")),
        )
        .await;
    assert_eq!(r.status, 400);
    let resp = awc::Client::default()
        .post(format!("{}/api/v1/auth/login", app.address))
        .insert_header(("Content-Type", "application/json"))
        .send_body("{\"email\": ")
        .await
        .expect("sent");
    assert_eq!(resp.status().as_u16(), 400);
    let huge = json!({"email": "x".repeat(10_000), "password": "y"});
    let r = app
        .call("POST", "/api/v1/auth/login", None, Some(&huge))
        .await;
    assert_eq!(r.status, 413, "{:?}", r.body);
    let nested = app
        .call(
            "PUT",
            "/api/v1/tenants/acme/risk",
            Some(&admin),
            Some(&json!({"max_order_volume": "lots"})),
        )
        .await;
    assert_eq!(nested.status, 400);
    assert!(
        nested.body["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("max_order_volume")),
        "{:?}",
        nested.body
    );
    app.shutdown().await;
}

#[actix_rt::test]
async fn the_first_start_creates_the_configured_administrator_once() {
    let (app, _) = spawn_admin_app(&[]).await;
    let kept = app.shutdown_keeping_data().await;
    // A second start with another configured email does not add a second administrator.
    let app = spawn_app_on(
        kept,
        &[
            ("TRELLIS__BOOTSTRAP__ADMIN_EMAIL", "other@trellis.test"),
            (
                "TRELLIS__BOOTSTRAP__ADMIN_PASSWORD",
                "another-long-password",
            ),
        ],
    )
    .await;
    app.login(ROOT_EMAIL, ROOT_PASSWORD).await;
    let r = app
        .call(
            "POST",
            "/api/v1/auth/login",
            None,
            Some(&json!({"email": "other@trellis.test", "password": "another-long-password"})),
        )
        .await;
    assert_eq!(r.status, 401);
    app.shutdown().await;
    // The demo profile generates one when none is configured.
    let app = spawn_app_with(&[("TRELLIS__BOOTSTRAP__GENERATE_ADMIN", "true")]).await;
    let users = app.security.store.all_users().await.expect("users");
    assert_eq!(users.len(), 1);
    assert_eq!(
        (users[0].email.as_str(), users[0].role.as_str()),
        ("admin@localhost", "platform_admin")
    );
    app.shutdown().await;
}

#[actix_rt::test]
async fn optimisation_ranks_a_parameter_grid_on_stored_ticks_for_the_professional_tier_only() {
    let (app, root) = spawn_admin_app(&[]).await;
    create_tenant(&app, &root, "pro", "professional").await;
    create_tenant(&app, &root, "small", "basic").await;
    let request = json!({"kind": "ema_cross", "symbol": "EURUSD", "timeframe": "M1",
        "from_ms": 0, "to_ms": 4_000_000_000_000i64,
        "grid": {"fast": [2, 3, 9], "slow": [5, 8]}});
    let r = app
        .call(
            "POST",
            "/api/v1/tenants/small/optimisations",
            Some(&root),
            Some(&request),
        )
        .await;
    assert_eq!(r.status, 403);
    assert_eq!(r.body["required_tier"], "professional", "{:?}", r.body);

    // The professional tenant's terminal streams ticks, which are stored.
    let (_, bridge) = create_key(&app, &root, "pro", &["market:write"]).await;
    let sim = app.sim(&bridge, 4242).await;
    for i in 0..400i64 {
        let mid = 1.1 + 0.005 * (i as f64 / 15.0).sin();
        sim.tick(crate::helpers::tick(
            "EURUSD",
            crate::helpers::T0 + i * 20_000,
            &format!("{:.5}", mid),
            &format!("{:.5}", mid + 0.00002),
        ));
    }
    let mut body = serde_json::Value::Null;
    for _ in 0..100 {
        body = run_optimisation(&app, &root, "pro", &request).await;
        if body["ticks"].as_u64().unwrap_or(0) >= 400 {
            break;
        }
        actix_rt::time::sleep(Duration::from_millis(100)).await;
    }
    drop(sim);
    assert_eq!(body["state"], "succeeded", "{body}");
    assert_eq!(body["runs_done"], 6, "{body}");

    let ticks = body["ticks"].as_u64().expect("ticks");
    assert_eq!(ticks, 400, "{body}");
    let traded = |r: &&serde_json::Value| r["report"]["fills"].as_u64().unwrap_or(0) > 0;
    assert!(
        results_have_trades(&body, traded),
        "the grid traded: {body}"
    );
    let results = body["results"].as_array().expect("results");
    assert_eq!(results.len(), 6);
    // fast 9 ≥ slow 5 and 8 is refused by the strategy: reported, not run.
    let errors: Vec<_> = results
        .iter()
        .filter(|r| r.get("error").is_some())
        .collect();
    assert_eq!(errors.len(), 2, "{body}");
    let pnl = |r: &serde_json::Value| {
        r["report"]["total_pnl"]
            .as_str()
            .and_then(|s| s.parse::<f64>().ok())
    };
    let ranked: Vec<f64> = results.iter().filter_map(pnl).collect();
    assert_eq!(ranked.len(), 4);
    assert!(
        ranked.windows(2).all(|w| w[0] >= w[1]),
        "ranked best first: {ranked:?}"
    );
    assert!(results
        .iter()
        .filter(|r| r.get("report").is_some())
        .all(|r| r["report"]["ticks"].as_u64() == Some(ticks)));
    app.shutdown().await;
}

#[actix_rt::test]
async fn an_optimisation_job_searches_genetically_walks_forward_and_can_be_cancelled() {
    let (app, root) = spawn_admin_app(&[]).await;
    create_tenant(&app, &root, "pro", "professional").await;
    let (_, bridge) = create_key(&app, &root, "pro", &["market:write"]).await;
    let sim = app.sim(&bridge, 4243).await;
    for i in 0..600i64 {
        let mid = 1.1 + 0.004 * (i as f64 / 25.0).sin() + 0.001 * (i as f64 / 4.0).sin();
        sim.tick(crate::helpers::tick(
            "EURUSD",
            crate::helpers::T0 + i * 15_000,
            &format!("{:.5}", mid),
            &format!("{:.5}", mid + 0.00002),
        ));
    }
    let grid = json!({"fast": [2, 3, 4, 5, 6], "slow": [7, 9, 11, 13, 15, 17]});
    let base = json!({"kind": "ema_cross", "symbol": "EURUSD", "timeframe": "M1",
        "from_ms": 0, "to_ms": 4_000_000_000_000i64, "grid": grid});
    // Wait until the ticks are stored: a grid job sees all 600.
    let mut done = serde_json::Value::Null;
    for _ in 0..100 {
        done = run_optimisation(&app, &root, "pro", &base).await;
        if done["ticks"].as_u64() == Some(600) {
            break;
        }
        actix_rt::time::sleep(Duration::from_millis(100)).await;
    }
    drop(sim);
    assert_eq!(done["ticks"], 600, "{done}");
    let grid_best = done["results"][0]["score"].as_f64().expect("grid best");

    let mut genetic = base.clone();
    genetic["search"] = json!({"method": "genetic", "population": 8, "max_generations": 6});
    genetic["seed"] = json!(11);
    let a = run_optimisation(&app, &root, "pro", &genetic).await;
    let b = run_optimisation(&app, &root, "pro", &genetic).await;
    assert_eq!(a["state"], "succeeded", "{a}");
    // Everything but the wall-clock figures is the same.
    use crate::helpers::ranked;
    assert!(!ranked(&a).is_empty(), "{a}");
    assert_eq!(ranked(&a), ranked(&b), "the same seed, the same candidates");
    let ga_best = a["results"][0]["score"].as_f64().expect("ga best");
    assert!(
        ga_best <= grid_best,
        "{ga_best} beats the whole grid's {grid_best}?"
    );
    assert!(
        a["runs_done"].as_u64().unwrap_or(0) <= 30,
        "each combination is run at most once: {a}"
    );

    // Walk-forward: 1 h in sample, 30 min out of sample over the 2.5 h stored.
    let mut wf = base.clone();
    wf["walk_forward"] = json!({"in_sample_ms": 3_600_000, "out_of_sample_ms": 1_800_000});
    wf["min_trades"] = json!(1);
    let w = run_optimisation(&app, &root, "pro", &wf).await;
    assert_eq!(w["state"], "succeeded", "{w}");
    let windows = w["walk_forward"]["windows"].as_array().expect("windows");
    assert_eq!(windows.len(), 3, "{w}");
    for pair in windows.windows(2) {
        assert_eq!(
            pair[0]["bounds"]["out_to_ms"],
            pair[1]["bounds"]["out_from_ms"]
        );
    }
    assert!(windows
        .iter()
        .all(|x| x["best"].is_object() || x["best"].is_null()));

    // A queued job is cancelled at once; the running one stops, or had finished (409).
    let mut big = base.clone();
    big["grid"] =
        json!({"fast": (2..102).collect::<Vec<i64>>(), "slow": (102..302).collect::<Vec<i64>>()});
    let post = |body: serde_json::Value| {
        let app = &app;
        let root = root.clone();
        async move {
            app.expect(
                202,
                "POST",
                "/api/v1/tenants/pro/optimisations",
                Some(&root),
                Some(&body),
            )
            .await["optimisation"]["id"]
                .as_str()
                .expect("id")
                .to_owned()
        }
    };
    let running = post(big.clone()).await;
    let queued = post(big).await;
    let cancelled = app
        .expect(
            200,
            "DELETE",
            &format!("/api/v1/tenants/pro/optimisations/{queued}"),
            Some(&root),
            None,
        )
        .await;
    assert_eq!(
        cancelled["optimisation"]["state"], "cancelled",
        "{cancelled}"
    );
    let r = app
        .call(
            "DELETE",
            &format!("/api/v1/tenants/pro/optimisations/{running}"),
            Some(&root),
            None,
        )
        .await;
    let expected = match r.status {
        200 => "cancelled",
        409 => "succeeded",
        s => panic!("cancelling a running job: {s} {:?}", r.body),
    };
    let mut last = serde_json::Value::Null;
    for _ in 0..600 {
        last = app
            .expect(
                200,
                "GET",
                &format!("/api/v1/tenants/pro/optimisations/{running}"),
                Some(&root),
                None,
            )
            .await["optimisation"]
            .clone();
        if !["queued", "running"].contains(&last["state"].as_str().unwrap_or("")) {
            break;
        }
        actix_rt::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(last["state"], expected, "{last}");
    let list = app
        .expect(
            200,
            "GET",
            "/api/v1/tenants/pro/optimisations",
            Some(&root),
            None,
        )
        .await;
    assert!(
        list["optimisations"]
            .as_array()
            .is_some_and(|l| l.len() >= 6),
        "{list}"
    );
    app.shutdown().await;
}

/// Queues an optimisation, waits for it to finish, and returns the job.
pub async fn run_optimisation(
    app: &crate::helpers::TestApp,
    token: &str,
    tenant: &str,
    request: &serde_json::Value,
) -> serde_json::Value {
    let queued = app
        .expect(
            202,
            "POST",
            &format!("/api/v1/tenants/{tenant}/optimisations"),
            Some(token),
            Some(request),
        )
        .await;
    let id = queued["optimisation"]["id"]
        .as_str()
        .expect("id")
        .to_owned();
    for _ in 0..600 {
        let job = app
            .expect(
                200,
                "GET",
                &format!("/api/v1/tenants/{tenant}/optimisations/{id}"),
                Some(token),
                None,
            )
            .await;
        let state = job["optimisation"]["state"]
            .as_str()
            .unwrap_or("")
            .to_owned();
        if !["queued", "running"].contains(&state.as_str()) {
            return job["optimisation"].clone();
        }
        actix_rt::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("optimisation {id} did not finish in 30 s");
}

fn results_have_trades(
    body: &serde_json::Value,
    traded: impl Fn(&&serde_json::Value) -> bool,
) -> bool {
    body["results"]
        .as_array()
        .is_some_and(|r| r.iter().filter(traded).count() >= 2)
}

#[actix_rt::test]
async fn bodies_are_checked_as_the_openapi_document_describes_them() {
    let (app, root) = spawn_admin_app(&[]).await;
    create_tenant(&app, &root, "acme", "enterprise").await;
    let call = |method: &'static str, path: &'static str, body: serde_json::Value| {
        let (app, root) = (&app, root.clone());
        async move { app.call(method, path, Some(&root), Some(&body)).await }
    };
    // A name of white space only, or over its length in characters (not bytes), is refused naming it; one
    // of 200 characters of two bytes each is taken.
    for name in [json!(" \u{3000} "), json!("é".repeat(201))] {
        let r = call(
            "POST",
            "/api/v1/tenants",
            json!({"id": "blank", "name": name, "symbols": ["EURUSD"]}),
        )
        .await;
        assert_eq!(r.status, 400, "{:?}", r.body);
        assert!(
            r.body["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("name:")),
            "{:?}",
            r.body
        );
    }
    let r = call(
        "POST",
        "/api/v1/tenants",
        json!({"id": "wide", "name": "é".repeat(200), "symbols": ["EURUSD"]}),
    )
    .await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    // The tier is one of four; `platform` is taken.
    let r = call("PUT", "/api/v1/tenants/wide/tier", json!({"tier": "gold"})).await;
    assert_eq!(r.status, 400);
    assert!(
        r.body["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("tier:")),
        "{:?}",
        r.body
    );
    let r = call(
        "POST",
        "/api/v1/tenants",
        json!({"id": "platform", "name": "p", "symbols": ["EURUSD"]}),
    )
    .await;
    assert_eq!(r.status, 409, "{:?}", r.body);
    // A body is an object: serde would otherwise fill a struct from an array, field by field.
    let r = call("PUT", "/api/v1/tenants/acme/risk", json!([null, null])).await;
    assert_eq!(r.status, 400, "{:?}", r.body);
    // A whole number written with a fraction is an integer, as in JSON Schema.
    let r = call(
        "POST",
        "/api/v1/tenants/acme/mt5-accounts",
        json!({"login": 7001.0, "server": "S", "password": "p"}),
    )
    .await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    let r = call(
        "POST",
        "/api/v1/tenants/acme/mt5-accounts",
        json!({"login": 7001.5, "server": "S", "password": "p"}),
    )
    .await;
    assert_eq!(r.status, 400, "{:?}", r.body);
    // Risk limits are positive decimals, as numbers or strings of digits; a symbol the tenant does not trade
    // conflicts with its settings (409), it is not malformed.
    for (body, status) in [
        (json!({"max_order_volume": 0}), 400),
        (json!({"max_order_volume": "-1"}), 400),
        (json!({"max_order_volume": "1e3"}), 400),
        (json!({"max_order_volume": 9.7e95}), 400),
        (
            json!({"max_order_volume": "2.5", "max_daily_loss": 100}),
            200,
        ),
        (json!({"allowed_symbols": ["XAUUSD"]}), 409),
        (json!({"regime": {"deployment": "d", "scale": 1.5}}), 400),
    ] {
        let r = call("PUT", "/api/v1/tenants/acme/risk", body.clone()).await;
        assert_eq!(r.status, status, "{body}: {:?}", r.body);
    }
    // Keys: scopes from the enum, at least one; the name is not blank.
    let r = call(
        "POST",
        "/api/v1/tenants/acme/api-keys",
        json!({"name": "  ", "scopes": ["read"]}),
    )
    .await;
    assert_eq!(r.status, 400);
    let r = call(
        "POST",
        "/api/v1/tenants/acme/api-keys",
        json!({"name": "k", "scopes": []}),
    )
    .await;
    assert_eq!(r.status, 400);
    // The caller's-tenant routes refuse a platform administrator, who has none (403, not a malformed request).
    for path in ["/api/v1/orders", "/api/v1/positions"] {
        let r = app.call("GET", path, Some(&root), None).await;
        assert_eq!(r.status, 403, "{path}: {:?}", r.body);
    }
    app.shutdown().await;
}
