//! Model deployments in the live path: ONNX models predicting on closed bars, their predictions traded by
//! `model_signal`, shadow versions recorded and never traded, and models that fail, give NaN or run slow
//! kept away from the rest of the tenant.

use std::time::Duration;

use rust_decimal::prelude::ToPrimitive;
use serde_json::{json, Value};
use trellis::actors::messages::{GetModelState, GetRecentBars, ModelState};
use trellis::domain::tenant::{ModelDeploymentSettings, ModelVersionSettings, StrategySettings};
use trellis::domain::{Bar, Symbol, Timeframe};
use trellis::models::onnx::{linear_model, unary_model};
use trellis::runtime::events::EventKind;
use trellis::runtime::task::inject_fault;

use crate::helpers::{ema, rising, spawn_app, tenant, tick, TestApp, MINUTE, T0};

/// Writes a model file and its manifest into `dir`; the version settings pointing at them.
fn version(
    dir: &tempfile::TempDir,
    name: &str,
    bytes: Vec<u8>,
    manifest: serde_json::Value,
) -> ModelVersionSettings {
    let file = dir.path().join(format!("{name}.onnx"));
    let man = dir.path().join(format!("{name}.json"));
    std::fs::write(&file, bytes).expect("model file");
    std::fs::write(&man, manifest.to_string()).expect("manifest");
    ModelVersionSettings::file(file.display().to_string(), man.display().to_string(), 1.0)
}

fn deployment(
    id: &str,
    symbol: &str,
    traffic: Vec<ModelVersionSettings>,
    shadow: Vec<ModelVersionSettings>,
    budget_us: u64,
) -> ModelDeploymentSettings {
    ModelDeploymentSettings {
        id: id.into(),
        model: None,
        symbol: symbol.into(),
        timeframe: "M1".into(),
        traffic,
        shadow,
        budget_us,
        retrain: None,
    }
}

fn signal(id: &str, symbol: &str, model: &str) -> StrategySettings {
    let mut s = ema(id, symbol);
    s.kind = "model_signal".into();
    s.params = [("upper".to_owned(), 0.0005), ("lower".to_owned(), -0.0005)].into();
    s.model = Some(model.into());
    s
}

async fn model_state(app: &TestApp, tenant: &str, deployment: &str) -> ModelState {
    let t = app.runtime.tenant(tenant).expect("tenant runs");
    let host = t
        .model_hosts
        .read()
        .get(deployment)
        .cloned()
        .expect("model host");
    host.send(GetModelState).await.expect("model state")
}

async fn bars(app: &TestApp, tenant: &str, symbol: &str) -> Vec<Bar> {
    let t = app.runtime.tenant(tenant).expect("tenant runs");
    let md = t.market_data.get().expect("market data");
    md.send(GetRecentBars {
        symbol: Symbol::new(symbol),
        timeframe: Timeframe::M1,
        limit: 1_000,
    })
    .await
    .expect("bars")
}

/// Two ticks a minute (so bars have a range), a zig-zag around 1.1000: minute `m`'s bar closes when minute
/// `m + 1` begins.
fn zigzag(sim: &trellis::sim::SimHandle, symbol: &str, minutes: i64) {
    zigzag_from(sim, symbol, 0, minutes)
}

/// [`zigzag`] from minute `from` on.
fn zigzag_from(sim: &trellis::sim::SimHandle, symbol: &str, from: i64, minutes: i64) {
    for m in from..from + minutes {
        let wave = [0, 6, 12, 9, 3, -4, -9, -2][(m % 8) as usize];
        let open = 1.1000 + wave as f64 * 0.0001;
        let later = open + if m % 3 == 0 { 0.0003 } else { -0.0002 };
        for (dt, bid) in [(0, open), (30_000, later)] {
            sim.tick(tick(
                symbol,
                T0 + m * MINUTE + dt,
                &format!("{bid:.5}"),
                &format!("{:.5}", bid + 0.0002),
            ));
        }
    }
}

/// The predictions stored for `tenant` as (bar open time, version, value, shadow), whichever store the
/// app runs on (the embedded SQLite file, or ClickHouse in the real profile).
async fn stored_predictions(app: &TestApp, tenant: &str) -> Vec<(i64, String, f64)> {
    let var = |name: &str| {
        app.store_vars
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    };
    match (
        var("TRELLIS__STORAGE__CLICKHOUSE_URL"),
        var("TRELLIS__STORAGE__CLICKHOUSE_DATABASE"),
    ) {
        (Some(url), Some(db)) => {
            let ch = clickhouse::Client::default()
                .with_url(&url)
                .with_database(&db)
                .with_validation(false);
            ch.query(
                "SELECT time_msc, version, value FROM predictions FINAL WHERE tenant_id = ? ORDER BY time_msc",
            )
            .bind(tenant)
            .fetch_all::<(i64, String, f64)>()
            .await
            .unwrap_or_default()
        }
        _ => trellis::storage::timeseries::load_predictions(app.data_dir.path(), tenant)
            .await
            .unwrap_or_default()
            .into_iter()
            .map(|p| (p.bar_open_ms, p.version, p.value))
            .collect(),
    }
}

fn f(d: rust_decimal::Decimal) -> f64 {
    d.to_f64().expect("price")
}

#[actix_rt::test]
async fn a_linear_models_live_predictions_equal_the_hand_computation_at_every_bar_and_model_signal_trades_them(
) {
    // Arrange: y = 2·return_1 − 0.5·bar_range + 0.0001, deployed on EURUSD, traded by `model_signal`.
    let dir = tempfile::tempdir().expect("dir");
    let (w, b) = ([2.0f32, -0.5], 0.0001f32);
    let manifest =
        json!({"features": ["return_1", "bar_range"], "output": {"kind": "expected_return"}});
    let v = version(&dir, "linear", linear_model(&w, b), manifest);
    let mut settings = tenant("ml", "trk_ml000001_models-secret");
    settings.models = vec![deployment(
        "lin-eurusd",
        "EURUSD",
        vec![v],
        vec![],
        1_000_000,
    )];
    settings.strategies = vec![signal("signal", "EURUSD", "lin-eurusd")];
    let app = spawn_app().await;
    app.add_tenant(settings).await;
    let sim = app.sim("trk_ml000001_models-secret", 7701).await;

    // Act: 30 minutes of a zig-zag: 29 closed bars.
    zigzag(&sim, "EURUSD", 30);
    let mut state = ModelState::default();
    for _ in 0..300 {
        state = model_state(&app, "ml", "lin-eurusd").await;
        if state.recent.len() >= 28 {
            break;
        }
        actix_rt::time::sleep(Duration::from_millis(20)).await;
    }
    let bars = bars(&app, "ml", "EURUSD").await;
    let traded = app
        .wait_portfolio("ml", "model_signal's orders", |p| {
            !p.deals.is_empty() && p.orders.iter().all(|o| o.status.is_final())
        })
        .await;

    // Assert: one prediction per bar from the second (return_1 needs two closes), each equal to the formula.
    assert_eq!(bars.len(), 29);
    assert_eq!(state.recent.len(), 28, "{state:?}");
    for (bar, p) in bars[1..].iter().zip(&state.recent) {
        let prev = bars
            .iter()
            .find(|x| x.open_time_ms == bar.open_time_ms - MINUTE)
            .expect("previous bar");
        let ret = f(bar.close) / f(prev.close) - 1.0;
        let range = (f(bar.high) - f(bar.low)) / f(bar.close);
        let expected = f64::from(w[0]) * ret + f64::from(w[1]) * range + f64::from(b);
        assert_eq!(p.bar_open_ms, bar.open_time_ms);
        assert!(
            (p.value - expected).abs() < 1e-6,
            "bar {}: predicted {}, by hand {expected}",
            bar.open_time_ms,
            p.value
        );
        assert!(!p.shadow);
    }
    assert_eq!(state.versions[0].served, 28);
    assert!(traded
        .deals
        .iter()
        .all(|d| d.strategy_id.as_deref() == Some("signal")));
    // Monitoring: every prediction but the last has its one-bar outcome; the accuracy is the share whose
    // sign matched the next bar's return, computed here from the bars.
    let monitoring = &state.versions[0].monitoring;
    let mut right = 0;
    for (k, p) in state.recent.iter().enumerate().take(27) {
        let (then, next) = (&bars[k + 1], &bars[k + 2]);
        let realised = f(next.close) / f(then.close) - 1.0;
        if (p.value > 0.0) == (realised > 0.0) {
            right += 1;
        }
    }
    assert_eq!(monitoring.outcomes, 27, "{monitoring:?}");
    let accuracy = monitoring.directional_accuracy.expect("accuracy");
    assert!(
        (accuracy - f64::from(right) / 27.0).abs() < 1e-9,
        "{accuracy} vs {right}/27"
    );
    let (status, _, listed) = app
        .get_as(
            "/api/v1/tenants/ml/deployments",
            Some("trk_ml000001_models-secret"),
        )
        .await;
    assert_eq!(status, 200, "{listed}");
    let d = &listed["models"][0];
    assert_eq!(d["deployment"], "lin-eurusd");
    assert_eq!(d["state"], "running");
    assert_eq!(d["versions"][0]["live"]["served"], 28, "{d}");
    assert_eq!(d["versions"][0]["live"]["monitoring"]["outcomes"], 27);
    assert_eq!(
        d["versions"][0]["manifest"]["features"],
        json!(["return_1", "bar_range"])
    );
    // Every prediction is stored with its version.
    let mut stored = Vec::new();
    for _ in 0..100 {
        stored = stored_predictions(&app, "ml").await;
        if stored.len() >= 28 {
            break;
        }
        actix_rt::time::sleep(Duration::from_millis(50)).await;
    }
    let expected: Vec<(i64, String, f64)> = state
        .recent
        .iter()
        .map(|p| (p.bar_open_ms, p.version.clone(), p.value))
        .collect();
    assert_eq!(stored, expected, "stored predictions");
    // With Redis (the real profile), the latest served prediction is cached for clients and other nodes.
    if let Some((_, url)) = app
        .store_vars
        .iter()
        .find(|(k, _)| k == "TRELLIS__STORAGE__REDIS_URL")
    {
        use redis::AsyncCommands as _;
        let last = state.recent.last().expect("a prediction");
        let client = redis::Client::open(url.as_str()).expect("redis url");
        let mut conn = client
            .get_multiplexed_async_connection()
            .await
            .expect("redis");
        let mut cached = serde_json::Value::Null;
        for _ in 0..100 {
            let v: Option<String> = conn
                .get("trellis:ml:prediction:lin-eurusd")
                .await
                .unwrap_or(None);
            cached = v
                .and_then(|v| serde_json::from_str(&v).ok())
                .unwrap_or_default();
            if cached["bar_open_ms"] == last.bar_open_ms {
                break;
            }
            actix_rt::time::sleep(Duration::from_millis(25)).await;
        }
        assert_eq!(cached["bar_open_ms"], last.bar_open_ms, "{cached}");
        assert_eq!(cached["version"], last.version.as_str());
    }
    // Every order the model caused names the deployment, the version and the prediction in the audit log.
    let caused = app
        .audited("ml", "order.model_caused", traded.orders.len())
        .await;
    assert_eq!(caused.len(), traded.orders.len(), "{caused:?}");
    for order in &traded.orders {
        let text = caused
            .iter()
            .map(|e| e.to_string())
            .find(|e| e.contains(&order.client_order_id))
            .unwrap_or_else(|| panic!("no audit entry for {}", order.client_order_id));
        assert!(
            text.contains("lin-eurusd") && text.contains(&state.versions[0].version),
            "{text}"
        );
    }
    sim.stop().await.expect("stop");
    app.shutdown().await;
}

#[actix_rt::test]
async fn a_shadow_version_predicts_beside_the_served_one_and_never_trades() {
    // Arrange: the served version always says 0 (flat); the shadow always says 1 (which would go long).
    let dir = tempfile::tempdir().expect("dir");
    let manifest = json!({"features": ["return_1"], "output": {"kind": "expected_return"}});
    let served = version(&dir, "flat", linear_model(&[0.0], 0.0), manifest.clone());
    let shadow = version(&dir, "long", linear_model(&[0.0], 1.0), manifest);
    let mut settings = tenant("shadowed", "trk_shadow01_models-secret");
    settings.models = vec![deployment(
        "ab-eurusd",
        "EURUSD",
        vec![served],
        vec![shadow],
        1_000_000,
    )];
    settings.strategies = vec![signal("signal", "EURUSD", "ab-eurusd")];
    let app = spawn_app().await;
    app.add_tenant(settings).await;
    let sim = app.sim("trk_shadow01_models-secret", 7702).await;

    // Act
    zigzag(&sim, "EURUSD", 12);
    let mut state = ModelState::default();
    for _ in 0..300 {
        state = model_state(&app, "shadowed", "ab-eurusd").await;
        if state.recent.iter().filter(|p| p.shadow).count() >= 10 {
            break;
        }
        actix_rt::time::sleep(Duration::from_millis(20)).await;
    }
    actix_rt::time::sleep(Duration::from_millis(200)).await;
    let portfolio = app.portfolio("shadowed").await;

    // Assert: both predicted every bar after warm-up; the shadow's 1.0 never became an order.
    let shadow: Vec<_> = state.recent.iter().filter(|p| p.shadow).collect();
    let served: Vec<_> = state.recent.iter().filter(|p| !p.shadow).collect();
    assert_eq!(shadow.len(), 10, "{state:?}");
    assert_eq!(served.len(), 10);
    assert!(shadow.iter().all(|p| p.value == 1.0));
    assert!(served.iter().all(|p| p.value == 0.0));
    assert!(portfolio.orders.is_empty(), "{:?}", portfolio.orders);
    assert!(portfolio.deals.is_empty());
    sim.stop().await.expect("stop");
    app.shutdown().await;
}

#[actix_rt::test]
async fn models_that_give_nan_run_over_budget_or_panic_are_skipped_rolled_back_or_disabled_while_a_strategy_on_another_symbol_trades_on(
) {
    // Arrange: three GBPUSD deployments beside an ema_cross on EURUSD. `nan-gbp` is √(return_1): NaN on
    // every falling bar. `slow-gbp` has a budget of 0 µs (every result comes after its deadline). `panic-gbp` takes injected panics.
    let dir = tempfile::tempdir().expect("dir");
    let manifest = json!({"features": ["return_1"], "output": {"kind": "expected_return"}});
    let nan = version(&dir, "sqrt", unary_model("Sqrt", &[1.0]), manifest.clone());
    let slow = version(&dir, "slow", linear_model(&[1.0], 0.0), manifest.clone());
    let brittle = version(&dir, "brittle", linear_model(&[2.0], 0.0), manifest);
    let mut settings = tenant("wild", "trk_wild0001_models-secret");
    settings.models = vec![
        deployment("nan-gbp", "GBPUSD", vec![nan], vec![], 1_000_000),
        deployment("slow-gbp", "GBPUSD", vec![slow], vec![], 0),
        deployment("panic-gbp", "GBPUSD", vec![brittle], vec![], 1_000_000),
    ];
    let app = spawn_app().await;
    app.add_tenant(settings).await;
    let sim = app.sim("trk_wild0001_models-secret", 7703).await;
    let count = |kind: EventKind| {
        app.runtime
            .events
            .snapshot(Some("wild"))
            .iter()
            .filter(|e| e.kind == kind && e.child == "model:panic-gbp")
            .count()
    };

    // Act: GBPUSD falls a pip a minute; before each bar closes a panic is armed for `panic-gbp`, until its
    // restart budget is spent and it is disabled.
    let mut m = 0;
    while count(EventKind::Disabled) == 0 && m < 40 {
        if m >= 2 {
            inject_fault("model:panic-gbp");
        }
        let bid = 1.2500 - m as f64 * 0.0001;
        sim.tick(tick(
            "GBPUSD",
            T0 + m * MINUTE,
            &format!("{bid:.5}"),
            &format!("{:.5}", bid + 0.0002),
        ));
        if m >= 2 {
            let failed = count(EventKind::Failed);
            for _ in 0..100 {
                if count(EventKind::Failed) > failed || count(EventKind::Disabled) > 0 {
                    break;
                }
                actix_rt::time::sleep(Duration::from_millis(10)).await;
            }
            actix_rt::time::sleep(Duration::from_millis(60)).await;
        }
        m += 1;
    }
    // More falling bars for the two other deployments to be judged on.
    for k in m..m + 25 {
        let bid = 1.2500 - k as f64 * 0.0001;
        sim.tick(tick(
            "GBPUSD",
            T0 + k * MINUTE,
            &format!("{bid:.5}"),
            &format!("{:.5}", bid + 0.0002),
        ));
    }
    // Meanwhile the ema_cross on EURUSD trades.
    rising(&sim, 4);
    let traded = app
        .wait_portfolio("wild", "the ema's buy", |p| p.deals.len() == 1)
        .await;
    let mut nan = ModelState::default();
    let mut slow = ModelState::default();
    for _ in 0..300 {
        nan = model_state(&app, "wild", "nan-gbp").await;
        slow = model_state(&app, "wild", "slow-gbp").await;
        if nan.versions[0].rolled_back && slow.versions[0].rolled_back {
            break;
        }
        actix_rt::time::sleep(Duration::from_millis(20)).await;
    }
    let audited = app.audited("wild", "model.rolled_back", 2).await;

    // Assert
    assert_eq!(count(EventKind::Disabled), 1, "panic-gbp disabled alone");
    assert!(app
        .runtime
        .events
        .snapshot(Some("wild"))
        .iter()
        .filter(|e| e.child != "model:panic-gbp")
        .all(|e| e.kind == EventKind::Started));
    assert_eq!(traded.deals[0].fill.symbol.as_str(), "EURUSD");
    let n = &nan.versions[0];
    assert!(
        n.not_finite >= 10 && n.rolled_back && n.weight == 0.0,
        "{n:?}"
    );
    assert_eq!(n.served, 0);
    // A budget of 0 µs: a bar computing at its deadline is over budget, one still queued behind it is
    // skipped busy; both are breaches.
    let s = &slow.versions[0];
    assert!(
        s.over_budget + s.skipped_busy >= 10
            && s.over_budget >= 1
            && s.rolled_back
            && s.served == 0,
        "{s:?}"
    );
    assert_eq!(audited.len(), 2, "{audited:?}");
    sim.stop().await.expect("stop");
    app.shutdown().await;
}

#[actix_rt::test]
async fn a_feature_that_drifts_from_its_training_reference_raises_an_alert_and_a_stationary_one_does_not(
) {
    use trellis::models::drift::Reference;
    use trellis::models::features::{compute_all, FeatureSet};

    // Arrange: the training reference of `bar_range` is the live stream's own distribution (the same
    // zig-zag, computed by the feature library); that of `return_1` is centred 1 % away from anything the
    // zig-zag does.
    let minutes = 90;
    let stream: Vec<Bar> = (0..minutes - 1)
        .map(|m| {
            let wave = [0, 6, 12, 9, 3, -4, -9, -2][(m % 8) as usize];
            let open = 1.1000 + wave as f64 * 0.0001;
            let later = open + if m % 3 == 0 { 0.0003 } else { -0.0002 };
            let p = |x: f64| {
                format!("{x:.5}")
                    .parse::<rust_decimal::Decimal>()
                    .expect("price")
            };
            Bar {
                symbol: Symbol::new("EURUSD"),
                timeframe: Timeframe::M1,
                open_time_ms: T0 + m * MINUTE,
                open: p(open),
                high: p(open.max(later)),
                low: p(open.min(later)),
                close: p(later),
                tick_volume: 2,
            }
        })
        .collect();
    let set = FeatureSet::parse(&["bar_range".to_owned()]).expect("set");
    let ranges: Vec<f64> = compute_all(&set, &stream)
        .into_iter()
        .flatten()
        .map(|row| f64::from(row[0]))
        .collect();
    let shifted: Vec<f64> = (0..1_000).map(|i| 0.01 + (i % 50) as f64 * 1e-5).collect();
    let reference = json!({
        "bar_range": Reference::from_sample(&ranges, 10).expect("reference"),
        "return_1": Reference::from_sample(&shifted, 10).expect("reference"),
    });
    let dir = tempfile::tempdir().expect("dir");
    let manifest = json!({"features": ["return_1", "bar_range"], "output": {"kind": "expected_return"},
                          "reference": reference});
    let v = version(&dir, "watched", linear_model(&[1.0, 1.0], 0.0), manifest);
    let mut settings = tenant("drifty", "trk_drifty01_models-secret");
    settings.models = vec![deployment("watched", "EURUSD", vec![], vec![v], 1_000_000)];
    settings.strategies = Vec::new();
    let app = spawn_app().await;
    app.add_tenant(settings).await;
    let sim = app.sim("trk_drifty01_models-secret", 7704).await;

    // Act: 89 closed bars: 88 predictions, drift checked at the 25th, 50th and 75th.
    zigzag(&sim, "EURUSD", minutes);
    let mut state = ModelState::default();
    for _ in 0..300 {
        state = model_state(&app, "drifty", "watched").await;
        if state.recent.len() >= 88 {
            break;
        }
        actix_rt::time::sleep(Duration::from_millis(20)).await;
    }
    let alerts = app.audited("drifty", "model.drift", 1).await;

    // Assert
    let drift = &state.versions[0].monitoring.drift;
    let of = |name: &str| drift.iter().find(|d| d.feature == name).expect("watched");
    let (ret, range) = (of("return_1"), of("bar_range"));
    assert!(
        ret.check.as_ref().is_some_and(|c| c.drifted) && ret.alarms == 1,
        "{ret:?}"
    );
    assert!(
        range.check.as_ref().is_some_and(|c| !c.drifted) && range.alarms == 0,
        "{range:?}"
    );
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    assert!(alerts[0].to_string().contains("return_1"), "{alerts:?}");
    sim.stop().await.expect("stop");
    app.shutdown().await;
}

#[actix_rt::test]
async fn the_registry_validates_uploads_names_versions_by_content_keeps_alias_history_and_guards_deletes(
) {
    use crate::helpers::{create_key, create_tenant, spawn_admin_app};
    use base64::Engine as _;

    // Arrange: a professional tenant, a rival one and a free one; uploads above 4 000 bytes are refused.
    let (app, root) = spawn_admin_app(&[("TRELLIS__MODELS__MAX_FILE_BYTES", "4000")]).await;
    create_tenant(&app, &root, "lab", "professional").await;
    create_tenant(&app, &root, "rival", "professional").await;
    create_tenant(&app, &root, "cheap", "free").await;
    let b64 = |bytes: &[u8]| base64::engine::general_purpose::STANDARD.encode(bytes);
    let two = json!({"features": ["return_1", "bar_range"], "output": {"kind": "expected_return"}});
    let upload = |file: Vec<u8>, manifest: serde_json::Value| json!({"manifest": manifest, "file_base64": b64(&file)});
    let versions = "/api/v1/tenants/lab/models/momentum/versions";

    // Act
    app.expect(
        201,
        "POST",
        "/api/v1/tenants/lab/models",
        Some(&root),
        Some(&json!({"name": "momentum"})),
    )
    .await;
    let again = app
        .call(
            "POST",
            "/api/v1/tenants/lab/models",
            Some(&root),
            Some(&json!({"name": "momentum"})),
        )
        .await;
    let free = app
        .call(
            "POST",
            "/api/v1/tenants/cheap/models",
            Some(&root),
            Some(&json!({"name": "x"})),
        )
        .await;
    let v1_file = linear_model(&[1.0, 1.0], 0.0);
    let v1 = app
        .expect(
            201,
            "POST",
            versions,
            Some(&root),
            Some(&upload(v1_file.clone(), two.clone())),
        )
        .await;
    let same = app
        .expect(
            200,
            "POST",
            versions,
            Some(&root),
            Some(&upload(v1_file.clone(), two.clone())),
        )
        .await;
    let refusals = [
        (
            "not onnx",
            upload(b"GIF89a not a model".to_vec(), two.clone()),
            "not a loadable ONNX model",
        ),
        (
            "wrong width",
            upload(
                linear_model(&[1.0, 1.0], 0.0),
                json!({"features": ["return_1", "bar_range", "rsi_14"], "output": {"kind": "expected_return"}}),
            ),
            "does not take 3 input features",
        ),
        (
            "nan",
            upload(linear_model(&[f32::INFINITY, 1.0], 0.0), two.clone()),
            "non-finite output",
        ),
        (
            "too large",
            upload(
                linear_model(&[0.5; 1_200], 0.0),
                json!({"features": (0..1_200).map(|i| format!("return_{}", i + 1)).collect::<Vec<_>>(), "output": {"kind": "expected_return"}}),
            ),
            "at most 4000",
        ),
        (
            "not base64",
            json!({"manifest": two, "file_base64": "@@@"}),
            "not base64",
        ),
        (
            "bad feature",
            upload(
                linear_model(&[1.0], 0.0),
                json!({"features": ["rsi_0"], "output": {"kind": "expected_return"}}),
            ),
            "features",
        ),
    ];
    let mut refused = Vec::new();
    for (what, body, _) in &refusals {
        refused.push((
            *what,
            app.call("POST", versions, Some(&root), Some(body)).await,
        ));
    }
    let v2 = app
        .expect(
            201,
            "POST",
            versions,
            Some(&root),
            Some(&upload(linear_model(&[1.0, 1.0], 0.5), two.clone())),
        )
        .await;
    let (v1, v2) = (
        v1["version"].as_str().expect("v1").to_owned(),
        v2["version"].as_str().expect("v2").to_owned(),
    );
    let alias = "/api/v1/tenants/lab/models/momentum/aliases/champion";
    app.expect(
        200,
        "PUT",
        alias,
        Some(&root),
        Some(&json!({"version": v1})),
    )
    .await;
    let moved = app
        .expect(
            200,
            "PUT",
            alias,
            Some(&root),
            Some(&json!({"version": v2})),
        )
        .await;
    let model = app
        .expect(
            200,
            "GET",
            "/api/v1/tenants/lab/models/momentum",
            Some(&root),
            None,
        )
        .await;
    let aliased = app
        .call("DELETE", &format!("{versions}/{v2}"), Some(&root), None)
        .await;
    let deleted = app
        .call("DELETE", &format!("{versions}/{v1}"), Some(&root), None)
        .await;
    let (_, rival_key) = create_key(&app, &root, "rival", &["read"]).await;
    let seen_by_rival = app
        .get_as("/api/v1/tenants/lab/models/momentum", Some(&rival_key))
        .await;
    let rivals_own = app
        .get_as("/api/v1/tenants/rival/models", Some(&rival_key))
        .await;

    // Assert
    assert_eq!(again.status, 409, "{:?}", again.body);
    assert_eq!(free.status, 403, "{:?}", free.body);
    assert!(
        free.body.to_string().contains("professional"),
        "{:?}",
        free.body
    );
    let sha = {
        use sha2::Digest as _;
        sha2::Sha256::digest(&v1_file)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    };
    assert_eq!(v1, sha, "a version is the sha256 of its file");
    assert_eq!(same["created"], false, "the same file is stored once");
    for ((what, reply), (_, _, says)) in refused.iter().zip(&refusals) {
        assert_eq!(reply.status, 400, "{what}: {:?}", reply.body);
        assert!(
            reply.body.to_string().contains(says),
            "{what}: {:?}",
            reply.body
        );
    }
    assert_eq!(moved["previous"], v1.as_str());
    assert_eq!(model["aliases"]["champion"], v2.as_str());
    let history = model["alias_history"].as_array().expect("history");
    assert_eq!(history.len(), 2, "{model}");
    assert_eq!(history[0]["version"], v1.as_str());
    assert!(
        history[0]["to_ms"].is_i64() && history[1]["to_ms"].is_null(),
        "{model}"
    );
    assert_eq!(model["versions"].as_array().map(Vec::len), Some(2));
    assert_eq!(aliased.status, 409, "{:?}", aliased.body);
    assert!(aliased.body.to_string().contains("champion"));
    assert_eq!(deleted.status, 200, "{:?}", deleted.body);
    assert_eq!(
        seen_by_rival.0, 404,
        "another tenant cannot see it: {}",
        seen_by_rival.2
    );
    assert_eq!(rivals_own.2["total"], 0);
    let audited = app.audited("lab", "model.alias_moved", 2).await;
    assert_eq!(audited.len(), 2);
    app.shutdown().await;
}

/// Uploads `file` as a version of `tenant`'s model `model` (one feature, `return_1`); its sha256.
async fn upload(app: &TestApp, admin: &str, tenant: &str, model: &str, file: &[u8]) -> String {
    use base64::Engine as _;
    let manifest = json!({"features": ["return_1"], "output": {"kind": "expected_return"}});
    let up = app
        .expect(
            201,
            "POST",
            &format!("/api/v1/tenants/{tenant}/models/{model}/versions"),
            Some(admin),
            Some(&json!({"manifest": manifest, "file_base64": base64::engine::general_purpose::STANDARD.encode(file)})),
        )
        .await;
    up["version"].as_str().expect("version").to_owned()
}

/// The actions of `tenant`'s audit entries named `action`, with their details.
async fn audited(app: &TestApp, admin: &str, tenant: &str, action: &str) -> Vec<Value> {
    let body = app
        .expect(
            200,
            "GET",
            &format!("/api/v1/audit?tenant={tenant}&action={action}"),
            Some(admin),
            None,
        )
        .await;
    body["entries"].as_array().cloned().unwrap_or_default()
}

/// Waits until the deployment's host has served `n` traffic predictions after bar `after_ms`.
async fn served_after(
    app: &TestApp,
    tenant: &str,
    deployment: &str,
    after_ms: i64,
    n: usize,
) -> Vec<trellis::domain::Prediction> {
    let mut got = Vec::new();
    for _ in 0..500 {
        got = model_state(app, tenant, deployment)
            .await
            .recent
            .into_iter()
            .filter(|p| p.bar_open_ms > after_ms)
            .collect();
        if got.iter().filter(|p| !p.shadow).count() >= n {
            break;
        }
        actix_rt::time::sleep(Duration::from_millis(20)).await;
    }
    got
}

#[actix_rt::test]
async fn a_deployment_made_through_the_api_serves_registry_versions_follows_its_alias_changes_live_and_survives_a_restart(
) {
    use crate::helpers::{create_key, create_tenant, spawn_admin_app, spawn_app_on};

    // Arrange: model `mom` with two versions, y = return_1 and y = −return_1; `champion` → the first.
    let (app, root) = spawn_admin_app(&[]).await;
    create_tenant(&app, &root, "reg", "professional").await;
    let (_, bridge) = create_key(&app, &root, "reg", &["market:write"]).await;
    app.expect(
        201,
        "POST",
        "/api/v1/tenants/reg/models",
        Some(&root),
        Some(&json!({"name": "mom"})),
    )
    .await;
    let plus = upload(&app, &root, "reg", "mom", &linear_model(&[1.0], 0.0)).await;
    let minus = upload(&app, &root, "reg", "mom", &linear_model(&[-1.0], 0.0)).await;
    app.expect(
        200,
        "PUT",
        "/api/v1/tenants/reg/models/mom/aliases/champion",
        Some(&root),
        Some(&json!({"version": plus})),
    )
    .await;

    // Act 1: deploy the champion, with the other version in shadow; ten minutes of bars.
    let created = app
        .expect(201, "POST", "/api/v1/tenants/reg/models/mom/deployments", Some(&root),
            Some(&json!({"id": "mom-eurusd", "symbol": "EURUSD", "timeframe": "M1",
                "traffic": [{"alias": "champion"}], "shadow": [{"version": minus}], "budget_us": 1_000_000})))
        .await;
    let sim = app.sim(&bridge, 7801).await;
    zigzag_from(&sim, "EURUSD", 0, 10);
    // Bars 0–8 close; from bar 1 on (return_1 needs two closes) each is predicted.
    let first = served_after(&app, "reg", "mom-eurusd", 0, 8).await;

    // Assert 1: the champion trades, the shadow predicts the opposite on every bar.
    assert_eq!(created["state"], "running", "{created}");
    assert_eq!(created["versions"][0]["alias"], "champion", "{created}");
    let traffic: Vec<_> = first.iter().filter(|p| !p.shadow).collect();
    assert_eq!(traffic.len(), 8, "{first:?}");
    for p in &traffic {
        assert_eq!(p.version, plus);
        let twin = first
            .iter()
            .find(|s| s.shadow && s.bar_open_ms == p.bar_open_ms)
            .expect("the shadow predicts the same bar");
        assert_eq!(twin.version, minus);
        assert!((p.value + twin.value).abs() < 1e-9, "{p:?} {twin:?}");
    }

    // Act 2: the alias moves to the other version.
    let moved = app
        .expect(
            200,
            "PUT",
            "/api/v1/tenants/reg/models/mom/aliases/champion",
            Some(&root),
            Some(&json!({"version": minus})),
        )
        .await;
    zigzag_from(&sim, "EURUSD", 10, 6);
    let second = served_after(&app, "reg", "mom-eurusd", T0 + 8 * MINUTE, 6).await;

    // Assert 2: the deployment followed it, audited.
    assert_eq!(moved["deployments"], json!(["mom-eurusd"]), "{moved}");
    let after_move: Vec<_> = second.iter().filter(|p| !p.shadow).collect();
    assert_eq!(after_move.len(), 6, "{second:?}");
    assert!(
        after_move.iter().all(|p| p.version == minus),
        "{after_move:?}"
    );
    let followed = audited(&app, &root, "reg", "model.deployment_followed_alias").await;
    assert_eq!(followed.len(), 1, "{followed:?}");

    // Act 3: weights change live: the first version back at weight 1, the champion at 0.
    let changed = app
        .expect(200, "PUT", "/api/v1/tenants/reg/models/mom/deployments/mom-eurusd", Some(&root),
            Some(&json!({"traffic": [{"version": plus, "weight": 1.0}, {"alias": "champion", "weight": 0.0}]})))
        .await;
    zigzag_from(&sim, "EURUSD", 16, 6);
    let third = served_after(&app, "reg", "mom-eurusd", T0 + 14 * MINUTE, 6).await;
    let in_use = app
        .call(
            "DELETE",
            &format!("/api/v1/tenants/reg/models/mom/versions/{plus}"),
            Some(&root),
            None,
        )
        .await;

    // Assert 3: served by the first version only, the change audited with before and after; a served
    // version cannot be deleted.
    assert_eq!(
        changed["versions"].as_array().map(Vec::len),
        Some(3),
        "{changed}"
    );
    let after_change: Vec<_> = third.iter().filter(|p| !p.shadow).collect();
    assert_eq!(after_change.len(), 6, "{third:?}");
    assert!(
        after_change.iter().all(|p| p.version == plus),
        "{after_change:?}"
    );
    let changes = audited(&app, &root, "reg", "model.deployment_changed").await;
    assert_eq!(changes.len(), 1, "{changes:?}");
    let detail = changes[0].to_string();
    assert!(
        detail.contains("\"from\"") && detail.contains("\"to\""),
        "{detail}"
    );
    assert_eq!(in_use.status, 409, "{:?}", in_use.body);
    assert!(
        in_use.body.to_string().contains("mom-eurusd"),
        "{:?}",
        in_use.body
    );

    // Act 4: trellis restarts on the same stores.
    sim.stop().await.expect("the simulator stops");
    let kept = app.shutdown_keeping_data().await;
    let secrets = crate::helpers::jwt_secrets_var();
    let app = spawn_app_on(kept, &[("TRELLIS__SECURITY__JWT_SECRETS", &secrets)]).await;
    let (root, _) = app
        .login(crate::helpers::ROOT_EMAIL, crate::helpers::ROOT_PASSWORD)
        .await;
    let mut again = Value::Null;
    for _ in 0..100 {
        again = app
            .expect(
                200,
                "GET",
                "/api/v1/tenants/reg/models/mom/deployments/mom-eurusd",
                Some(&root),
                None,
            )
            .await;
        if again["state"] == "running" {
            break;
        }
        actix_rt::time::sleep(Duration::from_millis(20)).await;
    }

    // Assert 4: the same deployment serves: the first version at weight 1, the alias (now the second) at 0.
    let versions = again["versions"].as_array().cloned().unwrap_or_default();
    let summary: Vec<(String, Value, bool, f64)> = versions
        .iter()
        .map(|v| {
            (
                v["version"].as_str().unwrap_or("").to_owned(),
                v["alias"].clone(),
                v["shadow"].as_bool().unwrap_or(false),
                v["configured_weight"].as_f64().unwrap_or(-1.0),
            )
        })
        .collect();
    assert_eq!(
        summary,
        vec![
            (plus.clone(), Value::Null, false, 1.0),
            (minus.clone(), json!("champion"), false, 0.0),
            (minus.clone(), Value::Null, true, 0.0),
        ],
        "{again}"
    );
    assert_eq!(again["state"], "running", "{again}");

    // Act 5: removed.
    app.expect(
        200,
        "DELETE",
        "/api/v1/tenants/reg/models/mom/deployments/mom-eurusd",
        Some(&root),
        None,
    )
    .await;
    let listed = app
        .expect(
            200,
            "GET",
            "/api/v1/tenants/reg/models/mom/monitoring",
            Some(&root),
            None,
        )
        .await;
    assert_eq!(listed["deployments"], json!([]), "{listed}");
    app.expect(
        200,
        "DELETE",
        &format!("/api/v1/tenants/reg/models/mom/versions/{plus}"),
        Some(&root),
        None,
    )
    .await;
    app.shutdown().await;
}

#[actix_rt::test]
async fn deployments_and_predictions_are_held_to_the_tiers_quotas() {
    use crate::helpers::{create_key, create_tenant, spawn_admin_app};

    // Arrange: professional may run one deployment and make three predictions a minute.
    let (app, root) = spawn_admin_app(&[
        ("TRELLIS__QUOTAS__MODEL_DEPLOYMENTS__PROFESSIONAL", "1"),
        ("TRELLIS__QUOTAS__PREDICTIONS__PROFESSIONAL", "3"),
    ])
    .await;
    create_tenant(&app, &root, "capped", "professional").await;
    create_tenant(&app, &root, "small", "basic").await;
    let (_, bridge) = create_key(&app, &root, "capped", &["market:write"]).await;
    app.expect(
        201,
        "POST",
        "/api/v1/tenants/capped/models",
        Some(&root),
        Some(&json!({"name": "m"})),
    )
    .await;
    let v = upload(&app, &root, "capped", "m", &linear_model(&[1.0], 0.0)).await;
    let deploy = |id: &str| json!({"id": id, "symbol": "EURUSD", "timeframe": "M1", "traffic": [{"version": v}], "budget_us": 1_000_000});

    // Act
    app.expect(
        201,
        "POST",
        "/api/v1/tenants/capped/models/m/deployments",
        Some(&root),
        Some(&deploy("one")),
    )
    .await;
    let second = app
        .call(
            "POST",
            "/api/v1/tenants/capped/models/m/deployments",
            Some(&root),
            Some(&deploy("two")),
        )
        .await;
    let basic = app
        .call(
            "POST",
            "/api/v1/tenants/small/models/m/deployments",
            Some(&root),
            Some(&deploy("one")),
        )
        .await;
    let sim = app.sim(&bridge, 7802).await;
    zigzag(&sim, "EURUSD", 22);
    let mut state = ModelState::default();
    for _ in 0..500 {
        state = model_state(&app, "capped", "one").await;
        let v = &state.versions[0];
        if v.served + v.over_quota >= 20 {
            break;
        }
        actix_rt::time::sleep(Duration::from_millis(20)).await;
    }

    // Assert: the second deployment is refused naming the tier that allows more; basic has no custom
    // models; predictions beyond three a minute are skipped and counted (six at most if the test's bars
    // straddle a minute).
    assert_eq!(second.status, 403, "{:?}", second.body);
    assert!(
        second.body.to_string().contains("enterprise"),
        "{:?}",
        second.body
    );
    assert_eq!(basic.status, 403, "{:?}", basic.body);
    assert!(
        basic.body.to_string().contains("professional"),
        "{:?}",
        basic.body
    );
    let v = &state.versions[0];
    assert!(v.served >= 3 && v.served <= 6, "{v:?}");
    assert_eq!(v.served + v.over_quota, 20, "{v:?}");
    app.shutdown().await;
}

#[actix_rt::test]
async fn model_files_are_stored_encrypted_bound_to_their_version_and_survive_key_rotation() {
    use crate::helpers::{create_tenant, spawn_admin_app, spawn_app_on, test_settings};
    use base64::Engine as _;

    // Arrange: one uploaded version.
    let (app, root) = spawn_admin_app(&[]).await;
    create_tenant(&app, &root, "vault", "professional").await;
    app.expect(
        201,
        "POST",
        "/api/v1/tenants/vault/models",
        Some(&root),
        Some(&json!({"name": "m"})),
    )
    .await;
    let file = linear_model(&[1.0, -1.0], 0.25);
    let manifest =
        json!({"features": ["return_1", "bar_range"], "output": {"kind": "expected_return"}});
    app.expect(
        201,
        "POST",
        "/api/v1/tenants/vault/models/m/versions",
        Some(&root),
        Some(&json!({"manifest": manifest, "file_base64": base64::engine::general_purpose::STANDARD.encode(&file)})),
    )
    .await;

    // Act: read it back; move its ciphertext to another version; rotate the data keys with trellis stopped.
    let stored = app.security.store.all_model_files().await.expect("rows");
    let plain = app
        .security
        .decrypt_model_file(&stored[0])
        .expect("decrypts");
    let mut moved = stored[0].clone();
    moved.version = "0".repeat(64);
    let moved_refused = app.security.decrypt_model_file(&moved).is_err();
    let kept = app.shutdown_keeping_data().await;
    let report = trellis::security::service::rotate_data_keys(&test_settings(&kept, &[]))
        .await
        .expect("rotates");
    let secrets = crate::helpers::jwt_secrets_var();
    let app = spawn_app_on(kept, &[("TRELLIS__SECURITY__JWT_SECRETS", &secrets)]).await;
    let after = app.security.store.all_model_files().await.expect("rows");
    let plain_after = app
        .security
        .decrypt_model_file(&after[0])
        .expect("decrypts");

    // Assert
    assert_eq!(stored.len(), 1);
    assert!(!stored[0]
        .file_enc
        .contains(&base64::engine::general_purpose::STANDARD.encode(&file)));
    assert_eq!(&plain[..], &file[..]);
    assert!(moved_refused, "a ciphertext is bound to its version");
    assert_eq!(
        (
            report.new_version,
            report.reencrypted,
            report.already_current
        ),
        (2, 1, 0)
    );
    assert_eq!(after[0].key_version, 2);
    assert_ne!(after[0].file_enc, stored[0].file_enc);
    assert_eq!(&plain_after[..], &file[..]);
    app.shutdown().await;
}

/// A `multipart/form-data` body of `parts` (name, bytes); its content type and bytes.
fn multipart(parts: &[(&str, &[u8])]) -> (String, Vec<u8>) {
    let boundary = "trellis-test-boundary-7f3a";
    let mut body = Vec::new();
    for (name, bytes) in parts {
        body.extend_from_slice(format!("--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"; filename=\"{name}\"\r\nContent-Type: application/octet-stream\r\n\r\n").as_bytes());
        body.extend_from_slice(bytes);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={boundary}"), body)
}

#[actix_rt::test]
async fn versions_upload_as_json_multipart_or_an_octet_stream_and_each_form_refuses_bad_files_naming_the_problem(
) {
    use crate::helpers::{create_tenant, spawn_admin_app};

    // Arrange: uploads above 4 000 bytes are refused.
    let (app, root) = spawn_admin_app(&[("TRELLIS__MODELS__MAX_FILE_BYTES", "4000")]).await;
    create_tenant(&app, &root, "forms", "professional").await;
    app.expect(
        201,
        "POST",
        "/api/v1/tenants/forms/models",
        Some(&root),
        Some(&json!({"name": "m"})),
    )
    .await;
    let versions = "/api/v1/tenants/forms/models/m/versions";
    let manifest = json!({"features": ["return_1"], "output": {"kind": "expected_return"}});
    let query = |m: &Value| {
        let text = m.to_string();
        let encoded: String = text
            .bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => {
                    (b as char).to_string()
                }
                _ => format!("%{b:02X}"),
            })
            .collect();
        format!("{versions}?manifest={encoded}")
    };
    let file = linear_model(&[1.0], 0.5);

    // Act
    let raw = app
        .call_raw(
            "POST",
            &query(&manifest),
            Some(&root),
            "application/octet-stream",
            file.clone(),
        )
        .await;
    let (ct, body) = multipart(&[
        ("manifest", manifest.to_string().as_bytes()),
        ("file", &file),
    ]);
    let same_as_multipart = app.call_raw("POST", versions, Some(&root), &ct, body).await;
    let other = linear_model(&[2.0], 0.0);
    let (ct, body) = multipart(&[
        ("manifest", manifest.to_string().as_bytes()),
        ("file", &other),
    ]);
    let new_multipart = app.call_raw("POST", versions, Some(&root), &ct, body).await;
    let wide = linear_model(&[1.0, 2.0], 0.0);
    let (ct, body) = multipart(&[
        ("manifest", manifest.to_string().as_bytes()),
        ("file", &wide),
    ]);
    let wrong_width = app.call_raw("POST", versions, Some(&root), &ct, body).await;
    let (ct, body) = multipart(&[("file", &other)]);
    let no_manifest_part = app.call_raw("POST", versions, Some(&root), &ct, body).await;
    let not_onnx = app
        .call_raw(
            "POST",
            &query(&manifest),
            Some(&root),
            "application/octet-stream",
            b"MZ\x90\x00 not a model".to_vec(),
        )
        .await;
    let no_manifest = app
        .call_raw(
            "POST",
            versions,
            Some(&root),
            "application/octet-stream",
            file.clone(),
        )
        .await;
    let huge = app
        .call_raw(
            "POST",
            &query(&manifest),
            Some(&root),
            "application/octet-stream",
            vec![7u8; 5_000],
        )
        .await;
    let (ct, body) = multipart(&[
        ("manifest", manifest.to_string().as_bytes()),
        ("file", &[7u8; 5_000]),
    ]);
    let huge_part = app.call_raw("POST", versions, Some(&root), &ct, body).await;
    let text = app
        .call_raw("POST", versions, Some(&root), "text/plain", file.clone())
        .await;
    let listed = app
        .expect(
            200,
            "GET",
            "/api/v1/tenants/forms/models/m",
            Some(&root),
            None,
        )
        .await;

    // Assert: the raw file and the same file in multipart are one version; each refusal names its problem.
    assert_eq!(raw.status, 201, "{:?}", raw.body);
    assert_eq!(
        same_as_multipart.status, 200,
        "{:?}",
        same_as_multipart.body
    );
    assert_eq!(same_as_multipart.body["version"], raw.body["version"]);
    assert_eq!(same_as_multipart.body["created"], false);
    assert_eq!(new_multipart.status, 201, "{:?}", new_multipart.body);
    let refused = |r: &crate::helpers::Reply, needle: &str| {
        assert_eq!(r.status, 400, "{:?}", r.body);
        assert!(
            r.body.to_string().contains(needle),
            "`{needle}` not in {:?}",
            r.body
        );
    };
    refused(&wrong_width, "file: ");
    refused(&wrong_width, "1 input features");
    refused(&no_manifest_part, "manifest: the part is missing");
    refused(&not_onnx, "not a loadable ONNX model");
    refused(&no_manifest, "`manifest` query parameter");
    refused(&huge, "at most 4000");
    refused(&huge_part, "at most 4000");
    refused(&text, "Content-Type must be");
    assert_eq!(
        listed["versions"].as_array().map(Vec::len),
        Some(2),
        "{listed}"
    );
    app.shutdown().await;
}

#[actix_rt::test]
async fn a_regime_detector_publishes_its_state_probabilities_with_each_prediction() {
    use trellis::models::hmm::GaussianHmm;
    use trellis::models::onnx::RegimeFile;

    // Arrange: a two-state HMM on the bar range (calm: narrow bars, volatile: wide), deployed from a file.
    let dir = tempfile::tempdir().expect("dir");
    let hmm = GaussianHmm {
        states: 2,
        dims: 1,
        initial: vec![0.5, 0.5],
        transition: vec![vec![0.95, 0.05], vec![0.05, 0.95]],
        means: vec![vec![0.0002], vec![0.002]],
        variances: vec![vec![1e-8], vec![1e-6]],
    };
    let file = serde_json::to_vec(&RegimeFile {
        kind: "regime_hmm".into(),
        hmm,
    })
    .expect("regime file");
    let manifest = json!({"features": ["bar_range"], "output": {"kind": "class", "labels": ["calm", "volatile"]}});
    let v = version(&dir, "regime", file, manifest);
    let mut settings = tenant("regimed", "trk_regimed1_models-secret");
    settings.models = vec![deployment("regime", "EURUSD", vec![v], vec![], 1_000_000)];
    let app = spawn_app().await;
    app.add_tenant(settings).await;
    let sim = app.sim("trk_regimed1_models-secret", 7901).await;

    // Act: ten minutes of the zig-zag (bars 2 to 5 pips wide: calm).
    zigzag(&sim, "EURUSD", 10);
    let mut state = ModelState::default();
    for _ in 0..300 {
        state = model_state(&app, "regimed", "regime").await;
        if state.recent.len() >= 9 {
            break;
        }
        actix_rt::time::sleep(Duration::from_millis(20)).await;
    }

    // Assert: every prediction carries both probabilities, summing to 1, and calls the market calm.
    assert_eq!(state.recent.len(), 9, "{state:?}");
    for p in &state.recent {
        assert_eq!(p.scores.len(), 2, "{p:?}");
        let sum: f32 = p.scores.iter().sum();
        assert!((sum - 1.0).abs() < 1e-4, "{p:?}");
        assert_eq!(p.value, 0.0, "calm: {p:?}");
        assert!(p.scores[0] > 0.9, "{p:?}");
    }
    app.shutdown().await;
}
