//! A model file is tenant code (docs/tenant-code.md): what it may cost is bounded at upload, it never runs on
//! the tenant's trading thread, and it holds neither the API nor a shutdown hostage.
//!
//! The hostile files are written as bytes (`trellis::models::cost::hostile`); the slow-but-admissible model
//! (`hostile::heavy`) is a matrix made from the input (expanded to `[n, n]`, plus a ramp so that it is not
//! uniform) multiplied by itself, `n` calibrated here so that one run takes at least 20 ms on this machine. It is deployed from the tenant's configuration, which is held to
//! the process's ceiling (`ModelLimits::CEILING`) rather than the tier's: in a debug build, 20 ms of tract
//! is more than the professional tier's default of 10^8 multiply-adds.

use std::time::{Duration, Instant};

use serde_json::json;
use trellis::actors::messages::{GetModelState, ModelState};
use trellis::domain::tenant::{ModelDeploymentSettings, ModelVersionSettings};
use trellis::models::cost::hostile;
use trellis::models::onnx::OnnxModel;

use crate::helpers::{
    create_tenant, spawn_admin_app, spawn_app, tenant, tick, TestApp, MINUTE, T0,
};

/// (VmRSS, VmHWM) of this process in MiB.
fn memory_mb() -> (f64, f64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|kb| kb.parse::<f64>().ok())
            .map_or(0.0, |kb| kb / 1024.0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// Resets the process's peak resident memory to its current one (Linux: `5` into clear_refs).
fn reset_peak() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

#[actix_rt::test]
async fn hostile_models_are_refused_at_upload_naming_the_limit_within_a_second_and_without_the_memory_they_ask_for(
) {
    use base64::Engine as _;
    // Arrange: a professional tenant (64 MiB and 10^8 multiply-adds a prediction) with a model to upload to.
    let (app, root) = spawn_admin_app(&[]).await;
    create_tenant(&app, &root, "hostile", "professional").await;
    app.expect(
        201,
        "POST",
        "/api/v1/tenants/hostile/models",
        Some(&root),
        Some(&json!({"name": "m"})),
    )
    .await;
    let manifest = json!({"features": ["return_1"], "output": {"kind": "expected_return"}});
    let files: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "Expand to [32768, 32768] (4 GiB)",
            hostile::expand(32_768),
            "model_memory_bytes",
        ),
        (
            "Expand to [46341, 46341] (8 GiB)",
            hostile::expand(46_341),
            "model_memory_bytes",
        ),
        (
            "Tile by [32768, 32768]",
            hostile::tile(32_768),
            "model_memory_bytes",
        ),
        (
            "ConstantOfShape [32768, 32768]",
            hostile::constant_of_shape(32_768),
            "model_memory_bytes",
        ),
        (
            "MatMul chain of 8 [1024, 1024]",
            hostile::matmul_chain(1_024, 8),
            "model_work_per_bar",
        ),
        (
            "Loop of 10^12 iterations",
            hostile::long_loop(1_000_000_000_000),
            "model_work_per_bar",
        ),
        (
            "Scan of 10^4 steps of a [100, 100] product",
            hostile::long_scan(10_000, 100),
            "model_work_per_bar",
        ),
    ];

    for (name, bytes, limit) in files {
        // Act
        reset_peak();
        let (before, _) = memory_mb();
        let started = Instant::now();
        let r = app
            .call(
                "POST",
                "/api/v1/tenants/hostile/models/m/versions",
                Some(&root),
                Some(&json!({"manifest": manifest, "file_base64": base64::engine::general_purpose::STANDARD.encode(&bytes)})),
            )
            .await;
        let took = started.elapsed();
        let (after, peak) = memory_mb();

        // Assert
        println!(
            "{name} ({} bytes): {} in {:.1} ms; resident {before:.1} MiB before, {after:.1} after, peak {peak:.1} (+{:.1})",
            bytes.len(),
            r.status,
            took.as_secs_f64() * 1e3,
            peak - before
        );
        assert_eq!(r.status, 400, "{name}: {:?}", r.body);
        let message = r.body["message"].as_str().unwrap_or_default();
        assert!(message.contains(limit), "{name}: {message}");
        assert!(took < Duration::from_secs(1), "{name}: {took:?}");
        // Other tests of this binary run meanwhile; what matters is gigabytes asked, not allocated.
        assert!(
            peak - before < 48.0,
            "{name}: peak +{:.1} MiB",
            peak - before
        );
    }
    app.shutdown().await;
}

/// A model of an `n × n` matrix made from the input multiplied by itself `links` times.
fn slow_model(n: i64, links: usize) -> Vec<u8> {
    hostile::heavy(n, links)
}

/// How long one run of `bytes` takes here.
fn one_run(bytes: &[u8]) -> Duration {
    let model = OnnxModel::load(bytes, 1).expect("admissible within the ceiling");
    let mut run = model.inference().expect("runner");
    let _ = run.run(&[0.5]).expect("runs");
    let started = Instant::now();
    let _ = run.run(&[0.25]).expect("runs");
    started.elapsed()
}

/// The smallest matrix from a ladder whose product takes at least `at_least`; its bytes and run time.
fn calibrated(at_least: Duration, links: usize) -> (Vec<u8>, Duration) {
    let mut last = (Vec::new(), Duration::ZERO);
    for n in [
        128, 192, 256, 320, 400, 464, 560, 640, 800, 1_000, 1_280, 1_600,
    ] {
        let bytes = slow_model(n, links);
        let took = one_run(&bytes);
        last = (bytes, took);
        if took >= at_least {
            break;
        }
    }
    last
}

fn deployed(dir: &tempfile::TempDir, bytes: &[u8], budget_us: u64) -> ModelDeploymentSettings {
    let file = dir.path().join("slow.onnx");
    let manifest = dir.path().join("slow.json");
    std::fs::write(&file, bytes).expect("model file");
    std::fs::write(
        &manifest,
        json!({"features": ["return_1"], "output": {"kind": "expected_return"}}).to_string(),
    )
    .expect("manifest");
    ModelDeploymentSettings {
        id: "slow-eurusd".into(),
        model: None,
        symbol: "EURUSD".into(),
        timeframe: "M1".into(),
        traffic: vec![ModelVersionSettings::file(
            file.display().to_string(),
            manifest.display().to_string(),
            1.0,
        )],
        shadow: vec![],
        budget_us,
        retrain: None,
    }
}

async fn model_state(app: &TestApp, tenant: &str) -> ModelState {
    let t = app.runtime.tenant(tenant).expect("tenant runs");
    let host = t
        .model_hosts
        .read()
        .get("slow-eurusd")
        .cloned()
        .expect("model host");
    host.send(GetModelState).await.expect("model state")
}

/// Bids of a triangle wave of period 6 (three minutes up a pip and a half, three down): ema_cross 2/3
/// crosses at every turn.
fn bid(m: i64) -> String {
    let tri = [0, 1, 2, 3, 2, 1][(m % 6) as usize];
    format!("{:.5}", 1.1000 + f64::from(tri) * 0.0015)
}

/// Ticks a minute apart, each closing the previous minute's bar; for each that makes the strategy trade,
/// the time from sending it to the terminal receiving the order. Every fifth tick the tenant's API is asked
/// for its deployments too (answers: status and time).
async fn drive(
    app: &TestApp,
    sim: &trellis::sim::SimHandle,
    key: &str,
    minutes: i64,
) -> (Vec<Duration>, Vec<(u16, Duration)>) {
    let mut latencies = Vec::new();
    let mut answers = Vec::new();
    for m in 0..minutes {
        let orders = sim.stats().orders_received;
        let b = bid(m);
        let a = format!("{:.5}", b.parse::<f64>().unwrap_or(1.1) + 0.0002);
        let sent = Instant::now();
        sim.tick(tick("EURUSD", T0 + m * MINUTE, &b, &a));
        let deadline = sent + Duration::from_millis(300);
        while Instant::now() < deadline {
            if sim.stats().orders_received > orders {
                latencies.push(sent.elapsed());
                break;
            }
            actix_rt::task::yield_now().await;
        }
        if m % 5 == 4 {
            let asked = Instant::now();
            let (status, _, _) = app
                .get_as("/api/v1/tenants/lat/deployments", Some(key))
                .await;
            answers.push((status, asked.elapsed()));
        }
        // Let the order's fill come back before the next bar.
        actix_rt::time::sleep(Duration::from_millis(30)).await;
    }
    (latencies, answers)
}

fn median(v: &[Duration]) -> Duration {
    let mut v = v.to_vec();
    v.sort_unstable();
    v.get(v.len() / 2).copied().unwrap_or_default()
}

#[actix_rt::test]
async fn a_slow_model_beside_an_ema_cross_leaves_its_tick_to_order_latency_and_the_api_alone() {
    // Arrange: a model of at least 20 ms a run, with the default budget of 5 ms.
    let (bytes, run) = calibrated(Duration::from_millis(20), 1);
    let dir = tempfile::tempdir().expect("dir");
    const KEY: &str = "trk_lat00001_model-limits";
    let mut figures = Vec::new();
    for with_model in [false, true] {
        let app = spawn_app().await;
        let mut settings = tenant("lat", KEY);
        if with_model {
            settings.models = vec![deployed(&dir, &bytes, 5_000)];
        }
        app.add_tenant(settings).await;
        let sim = app.sim(KEY, 7801).await;

        // Act: 60 minutes of the triangle wave.
        let (latencies, answers) = drive(&app, &sim, KEY, 60).await;
        let state = if with_model {
            actix_rt::time::sleep(run * 2).await;
            Some(model_state(&app, "lat").await)
        } else {
            None
        };
        sim.stop().await.expect("stop");
        app.shutdown().await;

        // Assert (per run)
        assert!(latencies.len() >= 10, "{} orders", latencies.len());
        assert!(
            answers
                .iter()
                .all(|(s, t)| *s == 200 && *t < Duration::from_secs(1)),
            "the API answered {answers:?}"
        );
        if let Some(state) = state {
            let v = &state.versions[0];
            println!("slow model ({run:?} a run): {v:?}");
            assert!(
                v.over_budget + v.skipped_busy >= 10,
                "late runs counted: {v:?}"
            );
            assert_eq!(
                v.served, 0,
                "a prediction later than its budget is never used: {v:?}"
            );
        }
        let mut sorted = latencies.clone();
        sorted.sort_unstable();
        figures.push((
            median(&latencies),
            sorted.last().copied().unwrap_or_default(),
            latencies.len(),
        ));
    }

    // Assert: the margin is 10 ms on the median, half a model run: a model computing on the tenant's
    // thread would hold every order behind it for the rest of its 20 ms and more.
    let (without, with) = (figures[0], figures[1]);
    println!(
        "tick → order without the model: median {:?}, max {:?} ({} orders); with a {run:?} model: median {:?}, max {:?} ({} orders)",
        without.0, without.1, without.2, with.0, with.1, with.2
    );
    assert!(
        with.0 <= without.0 + Duration::from_millis(10),
        "with the model {:?}, without {:?}",
        with.0,
        without.0
    );
}

#[actix_rt::test]
async fn a_restart_and_a_shutdown_with_a_model_mid_prediction_end_within_the_drain_deadline() {
    // Arrange: the heaviest model the process's ceiling admits (2 products of [1600, 1600], 8.2·10^9
    // multiply-adds), computing when the restart and then the shutdown come.
    let bytes = slow_model(1_600, 2);
    let run = one_run(&bytes);
    let dir = tempfile::tempdir().expect("dir");
    const KEY: &str = "trk_sigt0001_model-limits";
    let app = spawn_app().await;
    let mut settings = tenant("sigterm", KEY);
    settings.models = vec![deployed(&dir, &bytes, 1_000_000)];
    app.add_tenant(settings.clone()).await;
    let sim = app.sim(KEY, 7802).await;
    let close_bars = |from: i64| {
        for m in from..from + 3 {
            sim.tick(tick("EURUSD", T0 + m * MINUTE, &bid(m), "1.10500"));
        }
    };
    close_bars(0);
    // Two bars closed: the second's prediction (return_1 needs two closes) has started.
    actix_rt::time::sleep(run / 4).await;

    // Act 1: the tenant restarts (stopped, its actors drained, and started again) while its model computes.
    let restarting = Instant::now();
    assert!(
        app.runtime
            .stop_tenant("sigterm", Duration::from_secs(5))
            .await
    );
    app.add_tenant(settings).await;
    let restarted = restarting.elapsed();
    // The bridge's back-off and the new tenant's start; the real-profile suite's load can stretch both.
    let reconnecting = Instant::now();
    while !sim.stats().connected && reconnecting.elapsed() < Duration::from_secs(30) {
        actix_rt::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        sim.stats().connected,
        "the simulator reconnected within 30 s: {:?}",
        sim.stats()
    );
    // Meanwhile its key stayed valid: the bridge was told to retry, never that its key is unknown.
    let refusals = sim.stats().errors;
    assert!(
        refusals.iter().all(|(code, _)| code != "bad_api_key"),
        "{refusals:?}"
    );
    close_bars(3);
    actix_rt::time::sleep(run / 4).await;

    // Act 2: the shutdown trigger that SIGTERM fires.
    let started = Instant::now();
    app.stop.stop();
    let result = tokio::time::timeout(Duration::from_secs(20), app.serving)
        .await
        .expect("shutdown completes");
    let took = started.elapsed();
    let _ = sim.stop().await;

    // Assert: within the drain deadline ([shutdown] grace_secs = 5).
    println!("with a {run:?} prediction running: tenant restart {restarted:?}, shutdown {took:?}");
    assert!(result.is_ok(), "serve task ended");
    // The tenant's drain deadline (`stop_tenant`'s 5 s): the restart does not wait for the model's run.
    assert!(restarted < Duration::from_secs(5), "{restarted:?}");
    assert!(took < Duration::from_secs(5), "{took:?}");
}
