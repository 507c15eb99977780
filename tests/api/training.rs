//! Training jobs through the API: a version trained on stored bars with walk-forward validation, promoted
//! over a worse champion (moving the deployment that follows the alias), not promoted when it is no
//! better, and jobs cancelled while queued.

use std::time::Duration;

use serde_json::{json, Value};
use trellis::domain::{Bar, Timeframe};

use crate::helpers::{create_tenant, spawn_admin_app, TestApp};

/// `n` M1 bars of EURUSD whose log returns follow AR(1) with coefficient `phi` (momentum when positive).
fn ar1_bars(n: usize, phi: f64, seed: u64) -> Vec<Bar> {
    use trellis::models::synthetic::{ar1_returns, bars_from_returns};
    bars_from_returns(&ar1_returns(n, phi, 0.0005, seed))
}

/// Stores `bars` for `tenant` through the app's time-series store and waits until they read back.
async fn store_bars(app: &TestApp, tenant: &str, bars: Vec<Bar>) {
    let n = bars.len();
    app.runtime
        .timeseries
        .append_bars(trellis::storage::timeseries::AppendBars {
            tenant: tenant.into(),
            bars,
        })
        .await
        .expect("bars stored");
    let settings = crate::helpers::test_settings(
        &crate::helpers::KeptStore {
            data_dir: tempfile::tempdir().expect("dir"),
            vars: app.store_vars.clone(),
        },
        &[],
    );
    let mut storage = settings.storage.clone();
    storage.data_dir = app.data_dir.path().to_path_buf();
    for _ in 0..500 {
        let got = trellis::storage::timeseries::load_stored_bars(
            &storage,
            tenant,
            "EURUSD",
            Timeframe::M1,
            i64::MIN,
            i64::MAX,
        )
        .await
        .map(|b| b.len())
        .unwrap_or(0);
        if got == n {
            return;
        }
        actix_rt::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("the {n} bars never read back");
}

async fn job_done(app: &TestApp, root: &str, tenant: &str, id: &str) -> Value {
    for _ in 0..3_000 {
        let j = app
            .expect(
                200,
                "GET",
                &format!("/api/v1/tenants/{tenant}/jobs/{id}"),
                Some(root),
                None,
            )
            .await;
        if !matches!(j["job"]["state"].as_str(), Some("queued" | "running")) {
            return j["job"].clone();
        }
        actix_rt::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("job {id} never finished");
}

/// Registers model `dir` for `tenant` with one version, an anti-momentum direction model, and points
/// `champion` at it; its sha256.
async fn contrarian_champion(app: &TestApp, root: &str, tenant: &str) -> String {
    use base64::Engine as _;
    app.expect(
        201,
        "POST",
        &format!("/api/v1/tenants/{tenant}/models"),
        Some(root),
        Some(&json!({"name": "dir"})),
    )
    .await;
    let contrarian = trellis::models::onnx::logistic_model(&[-2_000.0], 0.0);
    let up = app
        .expect(201, "POST", &format!("/api/v1/tenants/{tenant}/models/dir/versions"), Some(root),
            Some(&json!({"manifest": {"features": ["log_return_1"], "output": {"kind": "direction_probability"}},
                         "file_base64": base64::engine::general_purpose::STANDARD.encode(&contrarian)})))
        .await;
    let version = up["version"].as_str().expect("version").to_owned();
    app.expect(
        200,
        "PUT",
        &format!("/api/v1/tenants/{tenant}/models/dir/aliases/champion"),
        Some(root),
        Some(&json!({"version": version})),
    )
    .await;
    version
}

#[actix_rt::test]
async fn a_trained_version_replaces_a_worse_champion_only_when_significantly_better_and_jobs_can_be_cancelled(
) {
    // Arrange: 6 000 stored bars with momentum; champion = an anti-momentum model, deployed by alias.
    let (app, root) = spawn_admin_app(&[]).await;
    create_tenant(&app, &root, "lab", "professional").await;
    store_bars(&app, "lab", ar1_bars(6_000, 0.4, 21)).await;
    let old = contrarian_champion(&app, &root, "lab").await;
    app.expect(201, "POST", "/api/v1/tenants/lab/models/dir/deployments", Some(&root),
        Some(&json!({"id": "dir-eurusd", "symbol": "EURUSD", "timeframe": "M1", "traffic": [{"alias": "champion"}]})))
        .await;
    let request = json!({"symbol": "EURUSD", "timeframe": "M1",
        "train": {"features": ["log_return_1", "log_return_2", "rsi_14"], "folds": 3},
        "promote": {"alias": "champion", "min_improvement": 0.02}});

    // Act 1: train with promotion.
    let queued = app
        .expect(
            201,
            "POST",
            "/api/v1/tenants/lab/models/dir/jobs",
            Some(&root),
            Some(&request),
        )
        .await;
    let first = job_done(
        &app,
        &root,
        "lab",
        queued["job"]["id"].as_str().expect("id"),
    )
    .await;

    // Assert 1: validated out of sample, stored as a version, promoted over the contrarian, the
    // deployment following the alias serves it, every step audited.
    assert_eq!(first["state"], "succeeded", "{first}");
    let new = first["version"]
        .as_str()
        .expect("trained version")
        .to_owned();
    assert_ne!(new, old);
    let accuracy = first["report"]["accuracy"].as_f64().expect("accuracy");
    assert!(accuracy > 0.58, "walk-forward accuracy {accuracy}: {first}");
    assert_eq!(first["report"]["folds"].as_array().map(Vec::len), Some(3));
    assert_eq!(first["promotion"]["promoted"], true, "{first}");
    assert!(
        first["promotion"]["comparison"]["p_value"]
            .as_f64()
            .expect("p")
            < 0.05
    );
    assert_eq!(first["promotion"]["deployments"], json!(["dir-eurusd"]));
    let model = app
        .expect(
            200,
            "GET",
            "/api/v1/tenants/lab/models/dir",
            Some(&root),
            None,
        )
        .await;
    assert_eq!(model["aliases"]["champion"], new.as_str(), "{model}");
    let stored = model["versions"]
        .as_array()
        .and_then(|v| v.iter().find(|x| x["version"] == new.as_str()).cloned())
        .expect("the trained version is in the registry");
    assert!(
        stored["manifest"]["validation"]["folds"].is_array(),
        "{stored}"
    );
    assert!(
        stored["manifest"]["reference"]["log_return_1"].is_object(),
        "{stored}"
    );
    let deployed = app
        .expect(
            200,
            "GET",
            "/api/v1/tenants/lab/models/dir/deployments/dir-eurusd",
            Some(&root),
            None,
        )
        .await;
    assert_eq!(
        deployed["versions"][0]["version"],
        new.as_str(),
        "{deployed}"
    );

    // Act 2: the same training again (the same file: no better), then two jobs, the second cancelled
    // while it waits behind the first.
    let again = app
        .expect(
            201,
            "POST",
            "/api/v1/tenants/lab/models/dir/jobs",
            Some(&root),
            Some(&request),
        )
        .await;
    let a = app
        .expect(201, "POST", "/api/v1/tenants/lab/models/dir/jobs", Some(&root),
            Some(&json!({"symbol": "EURUSD", "timeframe": "M1", "train": {"features": ["return_1"]}})))
        .await;
    let cancelled = app
        .expect(
            200,
            "DELETE",
            &format!(
                "/api/v1/tenants/lab/jobs/{}",
                a["job"]["id"].as_str().expect("id")
            ),
            Some(&root),
            None,
        )
        .await;
    let second = job_done(&app, &root, "lab", again["job"]["id"].as_str().expect("id")).await;
    let twice = app
        .call(
            "DELETE",
            &format!(
                "/api/v1/tenants/lab/jobs/{}",
                a["job"]["id"].as_str().expect("id")
            ),
            Some(&root),
            None,
        )
        .await;
    let listed = app
        .expect(
            200,
            "GET",
            "/api/v1/tenants/lab/models/dir/jobs",
            Some(&root),
            None,
        )
        .await;
    let audit = |action: &'static str| {
        let app = &app;
        let root = root.clone();
        async move {
            app.expect(
                200,
                "GET",
                &format!("/api/v1/audit?tenant=lab&action={action}"),
                Some(&root),
                None,
            )
            .await["entries"]
                .as_array()
                .map(Vec::len)
                .unwrap_or(0)
        }
    };

    // Assert 2: not promoted, the decision audited; the queued job cancelled and not cancellable twice.
    assert_eq!(second["state"], "succeeded", "{second}");
    assert_eq!(second["promotion"]["promoted"], false, "{second}");
    assert_eq!(cancelled["job"]["state"], "cancelled", "{cancelled}");
    assert_eq!(twice.status, 409, "{:?}", twice.body);
    assert_eq!(listed["jobs"].as_array().map(Vec::len), Some(3), "{listed}");
    assert_eq!(audit("model.trained").await, 2);
    assert_eq!(audit("model.promoted").await, 1);
    assert_eq!(audit("model.promotion_refused").await, 1);
    assert_eq!(audit("model.training_cancelled").await, 1);
    app.shutdown().await;
}

#[actix_rt::test]
async fn a_deployment_with_a_retraining_schedule_trains_and_promotes_a_better_challenger_on_its_own(
) {
    // Arrange: stored bars with momentum, a contrarian champion, a deployment retraining every second.
    let (app, root) = spawn_admin_app(&[]).await;
    create_tenant(&app, &root, "sched", "professional").await;
    store_bars(&app, "sched", ar1_bars(5_000, 0.4, 33)).await;
    let _old = contrarian_champion(&app, &root, "sched").await;

    // Act: deploy with a schedule (the synthetic bars are from 2023: a window of 2 000 days holds them).
    let created = app
        .expect(201, "POST", "/api/v1/tenants/sched/models/dir/deployments", Some(&root),
            Some(&json!({"id": "dir-sched", "symbol": "EURUSD", "timeframe": "M1", "traffic": [{"alias": "champion"}],
                "retrain": {"every": "1s", "window": "2000d", "min_improvement": 0.02,
                            "train": {"features": ["log_return_1", "log_return_2"], "folds": 3}}})))
        .await;
    let mut done = Value::Null;
    for _ in 0..1_500 {
        let jobs = app
            .expect(
                200,
                "GET",
                "/api/v1/tenants/sched/models/dir/jobs",
                Some(&root),
                None,
            )
            .await;
        if let Some(j) = jobs["jobs"]
            .as_array()
            .and_then(|all| all.iter().find(|j| j["state"] == "succeeded").cloned())
        {
            done = j;
            break;
        }
        actix_rt::time::sleep(Duration::from_millis(20)).await;
    }
    let stopped = app
        .expect(
            200,
            "PUT",
            "/api/v1/tenants/sched/models/dir/deployments/dir-sched",
            Some(&root),
            Some(&json!({"no_retrain": true})),
        )
        .await;
    let model = app
        .expect(
            200,
            "GET",
            "/api/v1/tenants/sched/models/dir",
            Some(&root),
            None,
        )
        .await;

    // Assert: the schedule queued a job as `schedule:dir-sched`, which trained on the window and took the
    // alias; the schedule shows on the deployment and can be removed.
    assert_eq!(created["retrain"]["every"], "1s", "{created}");
    assert_eq!(done["actor"], "schedule:dir-sched", "{done}");
    assert_eq!(done["promotion"]["promoted"], true, "{done}");
    assert_eq!(model["aliases"]["champion"], done["version"], "{model}");
    assert!(stopped["retrain"].is_null(), "{stopped}");
    app.shutdown().await;
}
