//! The log tiers (issue 17): entries moved hot → warm → cold survive crashes at every step exactly once, are
//! queried as one across tiers and pages, stay within their tenant, leave the cold tier only when expired,
//! keep the audit chain verifiable, and are priced from the bytes the stores report. Both profiles: SQLite
//! hot and warm tiers in the embedded one; Redis and ClickHouse in the real one; Parquet files in both.

use std::collections::HashMap;

use serde_json::{json, Value};
use trellis::storage::logs::mover::{Batches, MoveError, Mover};
use trellis::storage::logs::store::LogStore;
use trellis::storage::logs::{day_of, LogEntry, DAY_MS};

use crate::helpers::{create_tenant, create_user, spawn_admin_app, TestApp};

/// The app's own mover waits an hour between rounds: the tests drive movement themselves.
const QUIET_MOVER: (&str, &str) = ("TRELLIS__LOG_TIERS__INTERVAL_MS", "3600000");

async fn open_store(app: &TestApp) -> LogStore {
    for _ in 0..200 {
        if let Some(s) = app.runtime.logs.as_ref().and_then(|l| l.store()) {
            return s.clone();
        }
        actix_rt::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    panic!("the log tiers never opened")
}

/// `per_day` entries of `tenant` on each of the days `days_ago` before now, written to the hot tier.
async fn seed(store: &LogStore, tenant: &str, days_ago: &[i64], per_day: i64) -> Vec<LogEntry> {
    let now = trellis::domain::now_ms();
    let mut entries = Vec::new();
    for (d, ago) in days_ago.iter().enumerate() {
        let base = (day_of(now) - ago) * DAY_MS;
        for i in 0..per_day {
            // Two entries share each millisecond: order within it is by id.
            let at_ms = base + 1_000 + i / 2;
            if at_ms > now {
                break;
            }
            entries.push(LogEntry {
                id: format!("{tenant}-{d}-{i:04}"),
                tenant: tenant.to_owned(),
                at_ms,
                kind: "drill".into(),
                level: if i % 5 == 0 { "warn" } else { "info" }.into(),
                message: format!("drill {d}/{i} of {tenant}"),
                data: json!({"day": d, "i": i, "tenant": tenant}).to_string(),
            });
        }
    }
    store.hot.append(&entries).await.expect("seeded");
    entries
}

/// How many copies of each entry every tier holds (read tier by tier, not through the merging query).
async fn copies(
    store: &LogStore,
    tenant: &str,
    days: &[i64],
) -> HashMap<String, Vec<(&'static str, LogEntry)>> {
    let mut out: HashMap<String, Vec<(&'static str, LogEntry)>> = HashMap::new();
    for &day in days {
        for (tier, entries) in [
            ("hot", store.hot.read_day(tenant, day).await.expect("hot")),
            (
                "warm",
                store.warm.read_day(tenant, day).await.expect("warm"),
            ),
            (
                "cold",
                store.cold.read_day(tenant, day).await.expect("cold"),
            ),
        ] {
            for e in entries {
                out.entry(e.id.clone()).or_default().push((tier, e));
            }
        }
    }
    out
}

fn days_of(entries: &[LogEntry]) -> Vec<i64> {
    let mut days: Vec<i64> = entries.iter().map(LogEntry::day).collect();
    days.sort();
    days.dedup();
    days
}

#[actix_rt::test]
async fn a_crash_between_copy_and_delete_at_each_tier_boundary_leaves_every_entry_exactly_once() {
    let (app, _root) = spawn_admin_app(&[QUIET_MOVER]).await;
    let store = open_store(&app).await;
    let tenant = format!("c{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let other = format!("{tenant}-b");
    let mut seeded = seed(&store, &tenant, &[40, 35, 10, 2, 0], 30).await;
    seeded.extend(seed(&store, &other, &[40, 2], 10).await);
    let now = trellis::domain::now_ms();
    let batches = Batches::Sqlite(store.sqlite.clone());

    // One crash after each step that precedes a delete, each in a new mover (nothing kept in memory).
    for step in [
        "log_tiers.hot_warm.copied",
        "log_tiers.hot_warm.verified",
        "log_tiers.warm_cold.copied",
        "log_tiers.warm_cold.verified",
    ] {
        let mut mover = Mover::new(store.clone(), batches.clone());
        mover.crash_after = Some(step);
        match mover.round(now).await {
            Err(MoveError::Crashed(s)) => assert_eq!(s, step),
            other => panic!("expected a crash after {step}, got {other:?}"),
        }
        // Between the crash and the next round a query still answers each entry once.
        let merged = store
            .query(&trellis::storage::logs::LogQuery {
                tenant: tenant.clone(),
                from_ms: 0,
                to_ms: now + 1,
                kind: Some("drill".into()),
                limit: 1_000,
                ..Default::default()
            })
            .await
            .expect("query");
        assert_eq!(
            merged.len(),
            150,
            "after a crash at {step}: every entry once in the merged view"
        );
    }
    let report = Mover::new(store.clone(), batches.clone())
        .round(now)
        .await
        .expect("the round after the crashes");
    assert!(report.moved);

    let mut all_days = days_of(&seeded);
    all_days.dedup();
    let mut held = copies(&store, &tenant, &all_days).await;
    held.extend(copies(&store, &other, &all_days).await);
    for e in &seeded {
        let found = held.get(&e.id).cloned().unwrap_or_default();
        assert_eq!(
            found.len(),
            1,
            "{} is held {} times: {:?}",
            e.id,
            found.len(),
            found.iter().map(|f| f.0).collect::<Vec<_>>()
        );
        let (tier, copy) = &found[0];
        assert_eq!(copy, e, "{} changed on its way to {tier}", e.id);
        let age = day_of(now) - e.day();
        let expected = if age >= 31 {
            "cold"
        } else if age >= 2 {
            "warm"
        } else {
            "hot"
        };
        // Yesterday is still hot until a whole day has passed since it ended.
        let expected = if age == 1 { "hot" } else { expected };
        assert_eq!(*tier, expected, "{} ({age} days old)", e.id);
    }
    // The batches' states were kept: each day's batch is done.
    let oldest = day_of(now) - 40;
    assert_eq!(
        batches
            .get(&format!("hw:{tenant}:{oldest}"))
            .await
            .expect("batch")
            .map(|b| b.0),
        Some("done".to_owned())
    );
    assert_eq!(
        batches
            .get(&format!("wc:{oldest}"))
            .await
            .expect("batch")
            .map(|b| b.0),
        Some("done".to_owned())
    );
    app.shutdown().await;
}

/// Every page of `path` (a logs URL with its filters) as `token`, following the cursor.
async fn all_pages(app: &TestApp, path: &str, token: &str) -> (Vec<Value>, usize) {
    let mut entries = Vec::new();
    let mut pages = 0;
    let mut cursor: Option<String> = None;
    loop {
        let url = match &cursor {
            Some(c) => format!("{path}&cursor={c}"),
            None => path.to_owned(),
        };
        let body = app.expect(200, "GET", &url, Some(token), None).await;
        pages += 1;
        entries.extend(body["entries"].as_array().expect("entries").iter().cloned());
        match body["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => return (entries, pages),
        }
        assert!(pages < 1_000, "the cursor never ends");
    }
}

#[actix_rt::test]
async fn a_query_spanning_all_three_tiers_returns_exactly_the_entries_written_in_order_across_pages(
) {
    let (app, root) = spawn_admin_app(&[QUIET_MOVER]).await;
    let store = open_store(&app).await;
    let tenant = format!("q{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    create_tenant(&app, &root, &tenant, "basic").await;
    let mut seeded = seed(&store, &tenant, &[45, 33, 20, 3, 0], 23).await;
    // The app's own mover moves them, as it would every interval.
    let report = app
        .expect(200, "POST", "/api/v1/logs/move", Some(&root), None)
        .await;
    assert_eq!(report["moved"], true, "{report}");
    assert!(
        report["hot_to_warm"].as_u64().unwrap_or(0) >= 92,
        "{report}"
    );
    assert!(
        report["warm_to_cold"].as_u64().unwrap_or(0) >= 46,
        "{report}"
    );
    let cost = store.cost().await.expect("cost");
    let mine = cost
        .tenants
        .iter()
        .find(|t| t.tenant == tenant)
        .expect("the tenant's usage");
    assert!(
        mine.hot.entries >= 23 && mine.warm.entries == 46 && mine.cold.entries == 46,
        "{mine:?}"
    );

    seeded.sort_by(|a, b| (a.at_ms, &a.id).cmp(&(b.at_ms, &b.id)));
    let now = trellis::domain::now_ms();
    let path = format!(
        "/api/v1/tenants/{tenant}/logs?from_ms=0&to_ms={}&kind=drill&limit=7",
        now + 1
    );
    let (entries, pages) = all_pages(&app, &path, &root).await;
    let ids: Vec<&str> = entries.iter().filter_map(|e| e["id"].as_str()).collect();
    let want: Vec<&str> = seeded.iter().map(|e| e.id.as_str()).collect();
    assert_eq!(ids, want, "every entry once, in (time, id) order");
    assert!(pages >= seeded.len() / 7, "{pages} pages");
    let first: LogEntry = serde_json::from_value(entries[0].clone()).expect("an entry");
    assert_eq!(first, seeded[0], "entries come back as written");

    // Filters apply in every tier: warnings only, and a text search.
    let warn = format!(
        "/api/v1/tenants/{tenant}/logs?from_ms=0&to_ms={}&level=warn&kind=drill&limit=4",
        now + 1
    );
    let (warnings, _) = all_pages(&app, &warn, &root).await;
    assert_eq!(
        warnings.len(),
        seeded.iter().filter(|e| e.level == "warn").count()
    );
    let text = format!(
        "/api/v1/tenants/{tenant}/logs?from_ms=0&to_ms={}&q=drill%201%2F&limit=50",
        now + 1
    );
    let (found, _) = all_pages(&app, &text, &root).await;
    assert_eq!(
        found.len(),
        23,
        "the second day's entries, found in the cold tier"
    );
    app.shutdown().await;
}

#[actix_rt::test]
async fn tenant_b_reads_nothing_of_tenant_a_in_any_tier_even_with_crafted_cursors() {
    let (app, root) = spawn_admin_app(&[QUIET_MOVER]).await;
    let store = open_store(&app).await;
    let suffix = &uuid::Uuid::new_v4().simple().to_string()[..8];
    let (a, b) = (format!("a{suffix}"), format!("b{suffix}"));
    create_tenant(&app, &root, &a, "basic").await;
    create_tenant(&app, &root, &b, "basic").await;
    seed(&store, &a, &[40, 5, 0], 12).await;
    seed(&store, &b, &[0], 3).await;
    app.expect(200, "POST", "/api/v1/logs/move", Some(&root), None)
        .await;
    let (_, viewer_b) = create_user(&app, &root, &b, &format!("v@{b}.test"), "viewer").await;
    let to = trellis::domain::now_ms() + 1;

    // A's path answers 404 to B, whatever the filters.
    for q in ["", "&kind=drill", "&level=warn"] {
        app.expect(
            404,
            "GET",
            &format!("/api/v1/tenants/{a}/logs?from_ms=0&to_ms={to}{q}"),
            Some(&viewer_b),
            None,
        )
        .await;
    }
    // B's own log holds only B's entries, from every tier.
    let (own, _) = all_pages(
        &app,
        &format!("/api/v1/tenants/{b}/logs?from_ms=0&to_ms={to}&limit=5"),
        &viewer_b,
    )
    .await;
    assert!(!own.is_empty());
    assert!(own.iter().all(|e| e["tenant"] == b.as_str()), "{own:?}");
    assert!(!own
        .iter()
        .any(|e| e["data"].as_str().unwrap_or("").contains(&a)));

    // A cursor issued for A's log does not open A's entries through B's path…
    let first = app
        .expect(
            200,
            "GET",
            &format!("/api/v1/tenants/{a}/logs?from_ms=0&to_ms={to}&kind=drill&limit=2"),
            Some(&root),
            None,
        )
        .await;
    let cursor = first["next_cursor"].as_str().expect("a cursor").to_owned();
    let r = app
        .call(
            "GET",
            &format!(
                "/api/v1/tenants/{b}/logs?from_ms=0&to_ms={to}&kind=drill&limit=2&cursor={cursor}"
            ),
            Some(&viewer_b),
            None,
        )
        .await;
    assert_eq!(r.status, 400, "{:?}", r.body);
    // …nor does one edited to name B (its signature no longer matches), nor a made-up one.
    use base64::Engine as _;
    let (data, mac) = cursor.split_once('.').expect("signed");
    let mut body: Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(data)
            .expect("base64"),
    )
    .expect("json");
    body["tenant"] = Value::String(b.clone());
    let forged = format!(
        "{}.{mac}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(body.to_string())
    );
    for bad in [forged.as_str(), "e30.00", "garbage", ""] {
        let r = app
            .call(
                "GET",
                &format!(
                    "/api/v1/tenants/{b}/logs?from_ms=0&to_ms={to}&kind=drill&limit=2&cursor={bad}"
                ),
                Some(&viewer_b),
                None,
            )
            .await;
        assert_eq!(r.status, 400, "cursor {bad:?}: {:?}", r.body);
    }
    // Platform logs are for platform administrators only.
    app.expect(403, "GET", "/api/v1/logs", Some(&viewer_b), None)
        .await;
    app.expect(200, "GET", "/api/v1/logs?limit=5", Some(&root), None)
        .await;
    app.shutdown().await;
}

#[actix_rt::test]
async fn retention_deletes_only_expired_files_and_the_audit_chain_verifies_across_tiers() {
    let (app, root) = spawn_admin_app(&[QUIET_MOVER]).await;
    let store = open_store(&app).await;
    let tenant = format!("r{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    create_tenant(&app, &root, &tenant, "basic").await;
    create_user(&app, &root, &tenant, &format!("u@{tenant}.test"), "viewer").await;
    let chain = app
        .expect(
            200,
            "GET",
            &format!("/api/v1/audit/verify?tenant={tenant}"),
            Some(&root),
            None,
        )
        .await;
    let chain_len = chain["entries"].as_u64().expect("entries");
    assert!(chain_len >= 2, "{chain}");
    // The audit entries reach the hot tier (the writer flushes every 200 ms).
    for _ in 0..200 {
        if crate::helpers::hot_log(&app, &tenant)
            .await
            .iter()
            .filter(|e| e.kind == "audit")
            .count() as u64
            >= chain_len
        {
            break;
        }
        actix_rt::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    // Retention keeps 2 555 days: seen from 40 days ahead, day today−2 515 is the oldest kept.
    seed(&store, &tenant, &[2_600, 2_516, 2_515, 100], 5).await;

    // A mover 40 days in the future: everything written today is cold by then; retention is 2 555 days.
    let later = trellis::domain::now_ms() + 40 * DAY_MS;
    let batches = Batches::Sqlite(store.sqlite.clone());
    let report = Mover::new(store.clone(), batches)
        .round(later)
        .await
        .expect("round");
    let today = day_of(trellis::domain::now_ms());
    let expired: Vec<i64> = vec![today - 2_600, today - 2_516];
    assert_eq!(report.expired_files, 2, "{report:?}");
    let manifest = store.cold.manifest(&tenant).await.expect("manifest");
    let kept: Vec<i64> = manifest.files.iter().map(|f| f.day).collect();
    for day in &expired {
        assert!(!kept.contains(day), "day {day} expired but is still listed");
        assert!(
            store
                .cold
                .read_day(&tenant, *day)
                .await
                .expect("read")
                .is_empty(),
            "day {day}'s file is gone"
        );
    }
    for day in [today - 2_515, today - 100, today] {
        assert!(
            kept.contains(&day),
            "day {day} is within retention: {kept:?}"
        );
    }
    // The audit entries are cold now, and the chain verifies from there as from the store.
    let cold_audit = store
        .cold
        .read_day(&tenant, today)
        .await
        .expect("today's file")
        .into_iter()
        .filter(|e| e.kind == "audit")
        .count() as u64;
    assert_eq!(cold_audit, chain_len);
    let from_tiers = app
        .expect(
            200,
            "GET",
            &format!("/api/v1/audit/verify?tenant={tenant}&source=tiers"),
            Some(&root),
            None,
        )
        .await;
    assert_eq!(from_tiers["intact"], true, "{from_tiers}");
    assert_eq!(from_tiers["entries"].as_u64(), Some(chain_len));
    let from_store = app
        .expect(
            200,
            "GET",
            &format!("/api/v1/audit/verify?tenant={tenant}"),
            Some(&root),
            None,
        )
        .await;
    assert_eq!(from_store["intact"], true, "{from_store}");
    app.expect(
        400,
        "GET",
        &format!("/api/v1/audit/verify?tenant={tenant}&source=elsewhere"),
        Some(&root),
        None,
    )
    .await;
    app.shutdown().await;
}

#[actix_rt::test]
async fn the_cost_figures_equal_the_measured_bytes_times_the_configured_prices() {
    let (app, root) = spawn_admin_app(&[
        QUIET_MOVER,
        ("TRELLIS__LOG_TIERS__PRICE_HOT", "2.0"),
        ("TRELLIS__LOG_TIERS__PRICE_WARM", "0.5"),
        ("TRELLIS__LOG_TIERS__PRICE_COLD", "0.1"),
    ])
    .await;
    let store = open_store(&app).await;
    let tenant = format!("m{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    seed(&store, &tenant, &[50, 40, 10, 0], 200).await;
    app.expect(200, "POST", "/api/v1/logs/move", Some(&root), None)
        .await;
    let cost = app
        .expect(200, "GET", "/api/v1/logs/cost", Some(&root), None)
        .await;
    assert_eq!(cost["prices"], json!([2.0, 0.5, 0.1]));
    let gb = 1_073_741_824.0;
    let close = |a: f64, b: f64| (a - b).abs() <= 1e-9 * b.abs().max(1.0);
    for (tier, price) in [("hot", 2.0), ("warm", 0.5), ("cold", 0.1)] {
        let bytes = cost[tier]["bytes"].as_f64().expect("bytes");
        assert!(bytes > 0.0, "{tier}: {cost}");
        assert!(
            close(
                cost[tier]["usd_per_month"].as_f64().expect("usd"),
                bytes / gb * price
            ),
            "{tier}: {cost}"
        );
    }
    // The cold tier's bytes are the files' own sizes on disk (the embedded cold tier is <data_dir>/logs).
    let mine = cost["tenants"]
        .as_array()
        .expect("tenants")
        .iter()
        .find(|t| t["tenant"] == tenant.as_str())
        .expect("the tenant")
        .clone();
    let dir = app.data_dir.path().join("logs").join(&tenant);
    let mut on_disk = 0u64;
    let mut stack = vec![dir];
    while let Some(d) = stack.pop() {
        for f in std::fs::read_dir(&d).expect("cold dir").flatten() {
            let path = f.path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "parquet") {
                on_disk += f.metadata().expect("size").len();
            }
        }
    }
    assert_eq!(mine["cold"]["bytes"].as_u64(), Some(on_disk));
    assert_eq!(mine["cold"]["entries"].as_u64(), Some(400));
    let total: f64 = ["hot", "warm", "cold"]
        .iter()
        .map(|t| cost[*t]["usd_per_month"].as_f64().unwrap_or(0.0))
        .sum();
    assert!(close(cost["usd_per_month"].as_f64().expect("total"), total));
    let all_hot = cost["all_hot_usd_per_month"].as_f64().expect("all hot");
    assert!(close(
        all_hot,
        cost["all_hot_bytes"].as_f64().expect("bytes") / gb * 2.0
    ));
    assert!(close(
        cost["reduction_percent"].as_f64().expect("reduction"),
        (1.0 - total / all_hot) * 100.0
    ));
    // The same figures are exported for Prometheus.
    let metrics = app.call("GET", "/metrics", None, None).await;
    let text = metrics.body.as_str().unwrap_or_default().to_owned();
    assert!(
        text.contains("trellis_log_tier_bytes{tier=\"cold\"}"),
        "{text}"
    );
    app.shutdown().await;
}

#[actix_rt::test]
async fn the_cold_tier_writes_reads_and_expires_parquet_files_on_an_s3_compatible_store() {
    let Some(s3) = crate::helpers::service_url("TRELLIS_TEST_S3_URL") else {
        return;
    };
    let bucket = format!(
        "trellis-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..12]
    );
    let created = awc::Client::default()
        .put(format!("{s3}/{bucket}"))
        .send()
        .await
        .expect("bucket created");
    assert!(created.status().is_success(), "{:?}", created.status());
    let cold_url = format!("s3://{bucket}/cold");
    let (app, root) = spawn_admin_app(&[
        QUIET_MOVER,
        ("TRELLIS__LOG_TIERS__COLD_URL", &cold_url),
        ("TRELLIS__LOG_TIERS__S3_ENDPOINT", &s3),
        ("TRELLIS__LOG_TIERS__S3_ACCESS_KEY_ID", "test"),
        ("TRELLIS__LOG_TIERS__S3_SECRET_ACCESS_KEY", "test"),
    ])
    .await;
    let store = open_store(&app).await;
    let tenant = format!("s{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    create_tenant(&app, &root, &tenant, "basic").await;
    let seeded = seed(&store, &tenant, &[2_600, 40, 35], 9).await;
    let report = app
        .expect(200, "POST", "/api/v1/logs/move", Some(&root), None)
        .await;
    assert_eq!(report["warm_to_cold"].as_u64(), Some(27), "{report}");
    assert_eq!(report["expired_files"].as_u64(), Some(1), "{report}");

    // The bucket itself (listed by its own API, not through trellis) holds the two kept days and the manifest.
    let mut listing = awc::Client::default()
        .get(format!("{s3}/{bucket}?list-type=2&prefix=cold/{tenant}/"))
        .send()
        .await
        .expect("listing");
    let xml = String::from_utf8_lossy(&listing.body().await.expect("body")).into_owned();
    let today = day_of(trellis::domain::now_ms());
    for kept in [today - 40, today - 35] {
        let label = trellis::storage::logs::day_label(kept);
        assert!(
            xml.contains(&format!("{label}.parquet</Key>")),
            "day {label} in {xml}"
        );
    }
    let expired = trellis::storage::logs::day_label(today - 2_600);
    assert!(!xml.contains(&expired), "the expired day is gone: {xml}");
    assert!(
        xml.contains(&format!("cold/{tenant}/manifest.json</Key>")),
        "{xml}"
    );

    // And they read back, through the query API, as written.
    let to = trellis::domain::now_ms() + 1;
    let (entries, _) = all_pages(
        &app,
        &format!("/api/v1/tenants/{tenant}/logs?from_ms=0&to_ms={to}&kind=drill&limit=5"),
        &root,
    )
    .await;
    let got: Vec<LogEntry> = entries
        .into_iter()
        .map(|e| serde_json::from_value(e).expect("entry"))
        .collect();
    let mut want: Vec<LogEntry> = seeded
        .into_iter()
        .filter(|e| today - e.day() < 2_555)
        .collect();
    want.sort_by(|a, b| (a.at_ms, &a.id).cmp(&(b.at_ms, &b.id)));
    assert_eq!(got, want);
    app.shutdown().await;
}

#[actix_rt::test]
async fn a_process_killed_between_copy_and_delete_at_each_tier_boundary_loses_and_repeats_nothing()
{
    use std::os::unix::process::ExitStatusExt;
    use trellis::sim::node::NodeSpec;

    let vars = if crate::helpers::real_profile() {
        crate::helpers::real_store_vars().await
    } else {
        Vec::new()
    };
    let kept = crate::helpers::KeptStore {
        data_dir: tempfile::tempdir().expect("data dir"),
        vars,
    };
    let settings = crate::helpers::test_settings(&kept, &[]);
    let store = LogStore::open(&settings).await.expect("log tiers");
    let tenant = format!("k{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let seeded = seed(&store, &tenant, &[40, 33, 10, 0], 25).await;
    let config = kept.data_dir.path().join("node.toml");
    std::fs::write(&config, "").expect("config");
    let spec = |crash: Option<&str>| NodeSpec {
        binary: env!("CARGO_BIN_EXE_trellis").into(),
        config: config.clone(),
        data_dir: kept.data_dir.path().to_owned(),
        port: crate::helpers::free_port(),
        env: kept
            .vars
            .iter()
            .cloned()
            .chain([
                (
                    "TRELLIS__LOG_TIERS__INTERVAL_MS".to_owned(),
                    "200".to_owned(),
                ),
                (
                    "TRELLIS_CRASH_AT".to_owned(),
                    crash.unwrap_or("").to_owned(),
                ),
            ])
            .collect(),
        log: kept.data_dir.path().join("node.log"),
    };

    // The mover of a real `trellis serve` dies (abort: no destructor, no flush) after each step that comes
    // before a delete; the next process resumes from what the stores and the batch records say.
    for step in [
        "log_tiers.hot_warm.copied",
        "log_tiers.hot_warm.verified",
        "log_tiers.warm_cold.copied",
        "log_tiers.warm_cold.verified",
    ] {
        let spec = spec(Some(step));
        let mut node = spec.start().expect("trellis starts");
        let status = node
            .exited(std::time::Duration::from_secs(60))
            .await
            .expect("wait")
            .unwrap_or_else(|| panic!("trellis never reached {step}"));
        assert_eq!(status.signal(), Some(6), "killed at {step}: {status:?}");
        let log = std::fs::read_to_string(&spec.log).unwrap_or_default();
        assert!(log.contains(&format!("crashing at `{step}`")), "{log}");
    }
    let mut spec = spec(None);
    spec.env.push(("TRELLIS__LOG__LEVEL".into(), "info".into()));
    let mut node = spec.start().expect("trellis starts");
    let today = day_of(trellis::domain::now_ms());
    let days = days_of(&seeded);
    let mut held = HashMap::new();
    for _ in 0..300 {
        // Settled once every entry is held once: cold days recorded and dropped from warm, hot moved.
        let moved = store
            .cold
            .manifest(&tenant)
            .await
            .expect("manifest")
            .files
            .len()
            == 2
            && store
                .hot
                .read_day(&tenant, today - 10)
                .await
                .expect("hot")
                .is_empty();
        // Read after the check, so the copies seen are those of the state checked or a later one.
        held = copies(&store, &tenant, &days).await;
        if moved && held.values().all(|c| c.len() == 1) {
            break;
        }
        actix_rt::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    // trellis's own log lines are kept too, as platform entries.
    let mut app_lines = Vec::new();
    for _ in 0..100 {
        app_lines = store
            .hot
            .read_day("platform", today)
            .await
            .expect("hot")
            .into_iter()
            .filter(|e| e.kind == "app" && e.level == "info")
            .collect();
        if !app_lines.is_empty() {
            break;
        }
        actix_rt::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(
        !app_lines.is_empty(),
        "no application log entry reached the hot tier"
    );
    node.stop(
        trellis::sim::node::Stop::Term,
        std::time::Duration::from_secs(20),
    )
    .await
    .expect("stops");
    for e in &seeded {
        let found = held.get(&e.id).cloned().unwrap_or_default();
        let tiers: Vec<&str> = found.iter().map(|f| f.0).collect();
        let age = today - e.day();
        let expected = if age > 30 {
            "cold"
        } else if age > 1 {
            "warm"
        } else {
            "hot"
        };
        assert_eq!(tiers, [expected], "{} ({age} days old)", e.id);
        assert_eq!(&found[0].1, e);
    }
}

#[actix_rt::test]
async fn only_the_node_holding_the_movers_lease_moves_and_another_takes_over_when_it_dies() {
    if !crate::helpers::real_profile() {
        return; // the lease lives in PostgreSQL
    }
    let (app, _root) = spawn_admin_app(&[QUIET_MOVER]).await;
    let mut store = open_store(&app).await;
    store.settings.interval_ms = 500; // a lease of 3 s
    let url = app
        .store_vars
        .iter()
        .find(|(k, _)| k == "TRELLIS__STORAGE__POSTGRES_URL")
        .map(|(_, v)| v.clone())
        .expect("the app's PostgreSQL");
    let pool = trellis::storage::postgres::connect(&url)
        .await
        .expect("pool");
    let leases = trellis::storage::lease::LeaseStore::new(pool.clone());
    let batches = Batches::Postgres(pool);
    let mover =
        |node: &str| Mover::new(store.clone(), batches.clone()).with_lease(leases.clone(), node);
    let tenant = format!("l{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let mut seeded = seed(&store, &tenant, &[12], 10).await;
    let now = trellis::domain::now_ms();

    let (mut a, mut b) = (mover("node-a"), mover("node-b"));
    let first = a.round(now).await.expect("a's round");
    assert!(first.moved && first.hot_to_warm == 10, "{first:?}");
    let idle = b.round(now).await.expect("b's round");
    assert!(
        !idle.moved && idle.hot_to_warm == 0,
        "b waits while a holds the lease: {idle:?}"
    );

    // a dies without releasing its lease; b takes over once it runs out, and moves what came since.
    drop(a);
    let more = LogEntry {
        id: format!("{tenant}-late"),
        ..seeded[0].clone()
    };
    store
        .hot
        .append(std::slice::from_ref(&more))
        .await
        .expect("append");
    seeded.push(more);
    assert!(!b.round(now).await.expect("round").moved);
    let started = std::time::Instant::now();
    let took = loop {
        actix_rt::time::sleep(std::time::Duration::from_millis(250)).await;
        let r = b.round(trellis::domain::now_ms()).await.expect("round");
        if r.moved {
            break r;
        }
        assert!(started.elapsed().as_secs() < 10, "b never took the lease");
    };
    assert_eq!(took.hot_to_warm, 1, "{took:?}");
    let held = copies(&store, &tenant, &days_of(&seeded)).await;
    for e in &seeded {
        let tiers: Vec<&str> = held
            .get(&e.id)
            .map(|f| f.iter().map(|c| c.0).collect())
            .unwrap_or_default();
        assert_eq!(tiers, ["warm"], "{}", e.id);
    }
    app.shutdown().await;
}
