//! Tenant strategies as WebAssembly modules through the API: uploaded, validated, stored encrypted and
//! named by their sha256; run as strategies of kind `wasm:<name>@<version>` that trade through the risk
//! gate and the portfolio like the built-ins; isolated per tenant and tier; bounded at upload (refusals
//! name the problem) and at run time (a module that loops, traps or grows its memory fails only its own
//! strategy while a native strategy of the same tenant trades on).
//!
//! The modules are written here in the WebAssembly text format and compiled with the `wat` crate.

use std::time::Duration;

use serde_json::{json, Value};

use crate::helpers::{
    create_key, create_tenant, rising, spawn_admin_app, spawn_app_on, tick, TestApp, MINUTE, T0,
};

/// Long while the close rises, short while it falls, `size` position sizes at a time (a parameter).
const FOLLOW: &str = r#"
(module
  (import "trellis" "set_target" (func $set_target (param f64)))
  (memory (export "memory") 1)
  (global $last (mut f64) (f64.const 0))
  (global $size (mut f64) (f64.const 1))
  (func (export "trellis_interface_version") (result i32) (i32.const 1))
  (func (export "warm_up_bars") (result i32) (i32.const 1))
  (func (export "param") (param $i i32) (param $v f64) (global.set $size (local.get $v)))
  (func (export "on_bar") (param $open f64) (param $high f64) (param $low f64) (param $close f64)
                          (param $tick_volume i64) (param $open_time_ms i64) (result i32)
    (local $previous f64)
    (local.set $previous (global.get $last))
    (global.set $last (local.get $close))
    (if (f64.eq (local.get $previous) (f64.const 0)) (then (return (i32.const 0))))
    (call $set_target
      (f64.mul (global.get $size)
        (select (f64.const 1) (f64.const -1) (f64.gt (local.get $close) (local.get $previous)))))
    (i32.const 1)))
"#;

/// A module of interface v1 whose `on_bar` is `body` (returning an i32).
fn module_with_on_bar(body: &str) -> Vec<u8> {
    wasm(&format!(
        r#"(module
  (memory (export "memory") 1)
  (func (export "trellis_interface_version") (result i32) (i32.const 1))
  (func (export "warm_up_bars") (result i32) (i32.const 1))
  (func (export "on_bar") (param f64 f64 f64 f64 i64 i64) (result i32)
    {body}))"#
    ))
}

fn wasm(text: &str) -> Vec<u8> {
    wat::parse_str(text).unwrap_or_else(|e| panic!("a test module does not parse: {e}"))
}

const FOLLOW_MANIFEST: &str =
    r#"{"params": [{"name": "size", "default": 1, "min": 0, "max": 10}], "symbols": ["EURUSD"]}"#;

/// Uploads `bytes` as the raw body (`application/wasm`), the manifest in the query.
async fn upload_raw(
    app: &TestApp,
    token: &str,
    tenant: &str,
    name: &str,
    manifest: &str,
    bytes: Vec<u8>,
) -> crate::helpers::Reply {
    let manifest: String = url_encode(manifest);
    app.call_raw(
        "POST",
        &format!("/api/v1/tenants/{tenant}/strategy-modules?name={name}&manifest={manifest}"),
        Some(token),
        "application/wasm",
        bytes,
    )
    .await
}

/// Percent-encodes a query value.
fn url_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            b => format!("%{b:02X}"),
        })
        .collect()
}

/// Uploads as JSON (the module in base64).
async fn upload_json(
    app: &TestApp,
    token: &str,
    tenant: &str,
    name: &str,
    bytes: &[u8],
) -> crate::helpers::Reply {
    use base64::Engine as _;
    let body = json!({
        "name": name,
        "file_base64": base64::engine::general_purpose::STANDARD.encode(bytes),
    });
    app.call(
        "POST",
        &format!("/api/v1/tenants/{tenant}/strategy-modules"),
        Some(token),
        Some(&body),
    )
    .await
}

fn strategy(id: &str, kind: &str, symbol: &str) -> Value {
    json!({"id": id, "kind": kind, "symbol": symbol, "timeframe": "M1", "volume": "0.1"})
}

async fn strategy_state(app: &TestApp, token: &str, tenant: &str, id: &str) -> Value {
    app.expect(
        200,
        "GET",
        &format!("/api/v1/tenants/{tenant}/strategies/{id}"),
        Some(token),
        None,
    )
    .await
}

#[actix_rt::test]
async fn an_uploaded_module_trades_end_to_end_is_pinned_by_version_kept_from_other_tenants_and_runs_again_after_a_restart(
) {
    // Arrange: a professional tenant with a bridge key, a rival professional tenant, a free tenant.
    let (app, root) = spawn_admin_app(&[]).await;
    create_tenant(&app, &root, "wasmco", "professional").await;
    create_tenant(&app, &root, "rival", "professional").await;
    create_tenant(&app, &root, "cheap", "free").await;
    let (_, bridge) = create_key(&app, &root, "wasmco", &["market:write"]).await;
    let (_, rival_key) = create_key(&app, &root, "rival", &["read", "trade"]).await;
    let bytes = wasm(FOLLOW);

    // Act 1: upload (raw), upload the same bytes again (JSON), create a strategy of `wasm:follow`.
    let first = upload_raw(
        &app,
        &root,
        "wasmco",
        "follow",
        FOLLOW_MANIFEST,
        bytes.clone(),
    )
    .await;
    let again = upload_json(&app, &root, "wasmco", "follow", &bytes).await;
    let version = first.body["version"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let created = app
        .call(
            "POST",
            "/api/v1/tenants/wasmco/strategies",
            Some(&root),
            Some(
                &json!({"id": "w1", "kind": "wasm:follow", "symbol": "EURUSD", "timeframe": "M1",
                         "volume": "0.1", "params": {"size": 2}}),
            ),
        )
        .await;
    let off_manifest = app
        .call(
            "POST",
            "/api/v1/tenants/wasmco/strategies",
            Some(&root),
            Some(&strategy("w2", "wasm:follow", "GBPUSD")),
        )
        .await;

    // Assert 1: named by its sha256, stored once, the strategy pinned to that version; a symbol the
    // manifest does not name is refused.
    assert_eq!(first.status, 201, "{:?}", first.body);
    assert_eq!(version.len(), 64, "{:?}", first.body);
    assert_eq!(first.body["kind"], format!("wasm:follow@{version}"));
    assert_eq!(again.status, 200, "{:?}", again.body);
    assert_eq!(again.body["created"], false, "{:?}", again.body);
    assert_eq!(created.status, 201, "{:?}", created.body);
    assert_eq!(
        created.body["strategy"]["kind"],
        format!("wasm:follow@{version}"),
        "{:?}",
        created.body
    );
    assert_eq!(off_manifest.status, 400, "{:?}", off_manifest.body);
    assert!(
        off_manifest.body["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("symbol:") && m.contains("EURUSD")),
        "{:?}",
        off_manifest.body
    );

    // Act 2: a terminal; the close rises bar after bar.
    let sim = app.sim(&bridge, 9101).await;
    rising(&sim, 6);
    let snap = app
        .wait_portfolio("wasmco", "the module's buy to fill", |p| {
            p.deals
                .iter()
                .any(|d| d.strategy_id.as_deref() == Some("w1"))
        })
        .await;

    // Assert 2: the module's target (2 sizes of 0.1 lots) went through risk and portfolio to the terminal,
    // whose own record has the deal.
    let deal = snap
        .deals
        .iter()
        .find(|d| d.strategy_id.as_deref() == Some("w1"))
        .expect("a deal of w1");
    assert_eq!(deal.fill.volume.to_string(), "0.2", "{deal:?}");
    let terminal = sim.broker.lock().expect("broker").deals().to_vec();
    assert!(
        terminal
            .iter()
            .any(|d| d.ticket == deal.ticket && d.deal_type == 0 && d.volume.to_string() == "0.2"),
        "{terminal:?}"
    );

    // Act 3: the module as the rival and the free tenant see it; deleting the version in use.
    let list = app
        .expect(
            200,
            "GET",
            "/api/v1/tenants/wasmco/strategy-modules",
            Some(&root),
            None,
        )
        .await;
    let seen_by_rival = app
        .call(
            "GET",
            "/api/v1/tenants/wasmco/strategy-modules/follow",
            Some(&rival_key),
            None,
        )
        .await;
    let rivals_own = app
        .call(
            "GET",
            "/api/v1/tenants/rival/strategy-modules/follow",
            Some(&rival_key),
            None,
        )
        .await;
    let run_by_rival = app
        .call(
            "POST",
            "/api/v1/tenants/rival/strategies",
            Some(&rival_key),
            Some(&strategy("r1", &format!("wasm:follow@{version}"), "EURUSD")),
        )
        .await;
    let deleted_by_rival = app
        .call(
            "DELETE",
            &format!("/api/v1/tenants/rival/strategy-modules/follow/versions/{version}"),
            Some(&rival_key),
            None,
        )
        .await;
    let free = upload_raw(
        &app,
        &root,
        "cheap",
        "follow",
        FOLLOW_MANIFEST,
        bytes.clone(),
    )
    .await;
    let in_use = app
        .call(
            "DELETE",
            &format!("/api/v1/tenants/wasmco/strategy-modules/follow/versions/{version}"),
            Some(&root),
            None,
        )
        .await;

    // Assert 3: listed with its user; invisible, unrunnable and undeletable for the rival; the free tier
    // is told which tier it needs; a version in use stays.
    assert_eq!(list["modules"][0]["name"], "follow", "{list}");
    assert_eq!(
        list["modules"][0]["versions"][0]["used_by"],
        json!(["w1"]),
        "{list}"
    );
    assert_eq!(
        list["modules"][0]["versions"][0]["manifest"]["params"][0]["name"], "size",
        "{list}"
    );
    assert!(
        matches!(seen_by_rival.status, 403 | 404),
        "{:?}",
        seen_by_rival.body
    );
    assert_eq!(rivals_own.status, 404, "{:?}", rivals_own.body);
    assert_eq!(run_by_rival.status, 400, "{:?}", run_by_rival.body);
    assert!(
        run_by_rival.body["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("kind:") && m.contains("no version")),
        "{:?}",
        run_by_rival.body
    );
    assert_eq!(deleted_by_rival.status, 404, "{:?}", deleted_by_rival.body);
    assert_eq!(free.status, 403, "{:?}", free.body);
    assert!(
        free.body.to_string().contains("professional"),
        "{:?}",
        free.body
    );
    assert_eq!(in_use.status, 409, "{:?}", in_use.body);
    assert!(in_use.body.to_string().contains("w1"), "{:?}", in_use.body);
    let uploads = app.audited("wasmco", "strategy_module.uploaded", 1).await;
    assert_eq!(uploads.len(), 1, "{uploads:?}");

    // Act 4: trellis restarts on the same stores.
    sim.stop().await.expect("the simulator stops");
    let kept = app.shutdown_keeping_data().await;
    let secrets = crate::helpers::jwt_secrets_var();
    let app = spawn_app_on(kept, &[("TRELLIS__SECURITY__JWT_SECRETS", &secrets)]).await;
    let (root, _) = app
        .login(crate::helpers::ROOT_EMAIL, crate::helpers::ROOT_PASSWORD)
        .await;
    let mut view = Value::Null;
    for _ in 0..200 {
        let r = app
            .call(
                "GET",
                "/api/v1/tenants/wasmco/strategies/w1",
                Some(&root),
                None,
            )
            .await;
        view = r.body;
        if view["state"] == "running" {
            break;
        }
        actix_rt::time::sleep(Duration::from_millis(20)).await;
    }

    // Assert 4: the strategy runs the same version, loaded from the encrypted store.
    assert_eq!(view["state"], "running", "{view}");
    assert_eq!(view["strategy"]["kind"], format!("wasm:follow@{version}"));
    app.shutdown().await;
}

#[actix_rt::test]
async fn hostile_modules_are_refused_at_upload_naming_the_problem() {
    let (app, root) = spawn_admin_app(&[]).await;
    create_tenant(&app, &root, "guarded", "professional").await;
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "no on_bar",
            wasm(
                r#"(module (memory (export "memory") 1)
                   (func (export "trellis_interface_version") (result i32) (i32.const 1)))"#,
            ),
            "does not export `on_bar`",
        ),
        (
            "interface version 2",
            wasm(
                r#"(module (memory (export "memory") 1)
                   (func (export "trellis_interface_version") (result i32) (i32.const 2))
                   (func (export "on_bar") (param f64 f64 f64 f64 i64 i64) (result i32) (i32.const 0)))"#,
            ),
            "interface version 2",
        ),
        (
            "a WASI import",
            wasm(
                r#"(module
                   (import "wasi_snapshot_preview1" "fd_write" (func (param i32 i32 i32 i32) (result i32)))
                   (memory (export "memory") 1)
                   (func (export "trellis_interface_version") (result i32) (i32.const 1))
                   (func (export "on_bar") (param f64 f64 f64 f64 i64 i64) (result i32) (i32.const 0)))"#,
            ),
            "wasi_snapshot_preview1.fd_write",
        ),
        (
            "128 MiB of declared memory",
            wasm(
                r#"(module (memory (export "memory") 2048)
                   (func (export "trellis_interface_version") (result i32) (i32.const 1))
                   (func (export "on_bar") (param f64 f64 f64 f64 i64 i64) (result i32) (i32.const 0)))"#,
            ),
            "over the limit of 67108864 bytes",
        ),
        (
            "not WebAssembly",
            b"\0asm but not really".to_vec(),
            "not valid WebAssembly",
        ),
        (
            "over 1 MiB",
            vec![0u8; (1 << 20) + 1],
            "over the limit of 1048576 bytes",
        ),
    ];
    for (what, bytes, expected) in cases {
        let r = upload_raw(&app, &root, "guarded", "bad", "{}", bytes).await;
        assert_eq!(r.status, 400, "{what}: {:?}", r.body);
        let message = r.body["message"].as_str().unwrap_or_default();
        assert!(message.contains(expected), "{what}: {message}");
    }
    let bad_manifest = upload_raw(
        &app,
        &root,
        "guarded",
        "follow",
        r#"{"params": [{"name": "size", "default": 50, "min": 0, "max": 10}]}"#,
        wasm(FOLLOW),
    )
    .await;
    assert_eq!(bad_manifest.status, 400, "{:?}", bad_manifest.body);
    assert!(
        bad_manifest.body["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("manifest:") && m.contains("size")),
        "{:?}",
        bad_manifest.body
    );
    let list = app
        .expect(
            200,
            "GET",
            "/api/v1/tenants/guarded/strategy-modules",
            Some(&root),
            None,
        )
        .await;
    assert_eq!(
        list["modules"],
        json!([]),
        "nothing refused is stored: {list}"
    );
    app.shutdown().await;
}

#[actix_rt::test]
async fn a_module_that_loops_traps_or_grows_its_memory_fails_only_its_own_strategy_while_a_native_one_trades(
) {
    // Arrange: three hostile modules, each a strategy beside a native ema_cross on the same symbol.
    let (app, root) = spawn_admin_app(&[]).await;
    create_tenant(&app, &root, "mixed", "professional").await;
    let (_, bridge) = create_key(&app, &root, "mixed", &["market:write"]).await;
    let hostile = [
        // Live, a call stops at its wall-clock deadline (`threads.module_call_deadline_us`) before its fuel.
        ("spin", "(loop $l (br $l)) (i32.const 0)", "deadline"),
        ("trap", "unreachable", "unreachable"),
        (
            "hog",
            "(drop (memory.grow (i32.const 1100))) (i32.const 0)",
            "memory",
        ),
    ];
    for (name, body, _) in hostile {
        let up = upload_raw(&app, &root, "mixed", name, "{}", module_with_on_bar(body)).await;
        assert_eq!(up.status, 201, "{name}: {:?}", up.body);
        let mut s = strategy(name, &format!("wasm:{name}"), "EURUSD");
        s["on_failure"] = json!("flatten");
        app.expect(
            201,
            "POST",
            "/api/v1/tenants/mixed/strategies",
            Some(&root),
            Some(&s),
        )
        .await;
    }
    let mut native = strategy("native", "ema_cross", "EURUSD");
    native["params"] = json!({"fast": 2, "slow": 3});
    app.expect(
        201,
        "POST",
        "/api/v1/tenants/mixed/strategies",
        Some(&root),
        Some(&native),
    )
    .await;

    // Act: bars close, one a tick, more of them than the restart budget (5 in 10 s) lets a strategy fail.
    // Paced: a restart replays the bars that closed meanwhile and skips the ones it fails on, so bars sent
    // all at once would fail each strategy only once.
    let sim = app.sim(&bridge, 9102).await;
    for i in 0..14i64 {
        actix_rt::time::sleep(Duration::from_millis(300)).await;
        let bid = 1.1 + 0.001 * i as f64;
        sim.tick(tick(
            "EURUSD",
            T0 + i * MINUTE,
            &format!("{bid:.4}"),
            &format!("{:.4}", bid + 0.0002),
        ));
    }
    let snap = app
        .wait_portfolio("mixed", "the native strategy's buy to fill", |p| {
            p.deals
                .iter()
                .any(|d| d.strategy_id.as_deref() == Some("native"))
        })
        .await;
    let mut states = Vec::new();
    for (name, _, cause) in hostile {
        let mut view = Value::Null;
        wait_for_state(&app, &root, name, &mut view).await;
        states.push((name, cause, view));
    }

    // Assert: the native strategy traded; each hostile one failed on its limit, naming it, and no order
    // of theirs reached the terminal.
    assert!(snap
        .deals
        .iter()
        .all(|d| d.strategy_id.as_deref() == Some("native")));
    for (name, cause, view) in states {
        let error = view["last_error"].as_str().unwrap_or_default().to_owned();
        assert!(view["state"] == "failed", "{name}: {view}");
        assert!(
            error.contains(cause),
            "{name}: the reason names {cause}: {view}"
        );
    }
    let native_view = strategy_state(&app, &root, "mixed", "native").await;
    assert_eq!(native_view["state"], "running", "{native_view}");
    sim.stop().await.expect("the simulator stops");
    app.shutdown().await;
}

/// Waits (up to 20 s) until strategy `id` of tenant `mixed` is disabled with its reason on record.
async fn wait_for_state(app: &TestApp, token: &str, id: &str, view: &mut Value) {
    for _ in 0..1_000 {
        *view = strategy_state(app, token, "mixed", id).await;
        if view["last_error"].is_string() {
            return;
        }
        actix_rt::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The Rust guest example (`examples/wasm-strategy-rust`, `ema_cross` through the Rust SDK) and its
/// manifest, built by `scripts/build-wasm-examples.sh` (run here when the test command has not yet).
fn rust_example() -> (Vec<u8>, String) {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let module = root.join("target/wasm-examples/ema_cross_rust.wasm");
    let manifest = root.join("target/wasm-examples/ema_cross_rust.json");
    if !module.exists() || !manifest.exists() {
        let status = std::process::Command::new("bash")
            .arg(root.join("scripts/build-wasm-examples.sh"))
            .status()
            .expect("the build script runs");
        assert!(status.success(), "scripts/build-wasm-examples.sh failed");
    }
    (
        std::fs::read(module).expect("the module"),
        std::fs::read_to_string(manifest).expect("the manifest"),
    )
}

#[actix_rt::test]
async fn the_same_module_makes_the_same_trades_live_in_a_backtest_and_as_the_best_point_of_an_optimisation(
) {
    use trellis::backtest::{Backtest, BacktestConfig};
    use trellis::domain::Timeframe;
    use trellis::strategies::wasm::{WasmLimits, WasmManifest, WasmModule};
    use trellis::strategies::{Params, StrategyRegistry};

    // Arrange: 100 minutes of a random walk, a tick a second; the Rust SDK's ema_cross module uploaded to
    // a tenant that optimises and to one that trades live.
    let ticks: Vec<_> = trellis::sim::feed::RandomWalk::new(
        trellis::sim::feed::RandomWalk::default_symbols(&["EURUSD".into()]),
        T0,
        1_000,
        29,
    )
    .take(6_000)
    .collect();
    let (bytes, manifest) = rust_example();
    let (app, root) = spawn_admin_app(&[]).await;
    for tenant in ["quant", "desk"] {
        create_tenant(&app, &root, tenant, "professional").await;
        let up = upload_raw(&app, &root, tenant, "ema_cross", &manifest, bytes.clone()).await;
        assert_eq!(up.status, 201, "{:?}", up.body);
    }

    // Act 1: the quant tenant's terminal streams the ticks (stored), then a grid over the module's
    // parameters runs on them.
    let (_, quant_bridge) = create_key(&app, &root, "quant", &["market:write"]).await;
    let sim = app.sim(&quant_bridge, 9103).await;
    for t in &ticks {
        sim.tick(t.clone());
    }
    let request = json!({"kind": "wasm:ema_cross", "symbol": "EURUSD", "timeframe": "M1",
        "from_ms": 0, "to_ms": 4_000_000_000_000i64,
        "grid": {"fast": [3, 5], "slow": [8, 13]}});
    let mut optimisation = Value::Null;
    for _ in 0..100 {
        optimisation = crate::admin::run_optimisation(&app, &root, "quant", &request).await;
        if optimisation["ticks"].as_u64() == Some(ticks.len() as u64) {
            break;
        }
        actix_rt::time::sleep(Duration::from_millis(100)).await;
    }
    sim.stop().await.expect("the simulator stops");
    assert_eq!(optimisation["state"], "succeeded", "{optimisation}");
    assert_eq!(optimisation["runs_done"], 4, "{optimisation}");
    let best = optimisation["results"][0].clone();
    let best_params: Params = serde_json::from_value(best["params"].clone()).expect("params");
    let best_fills = best["report"]["fills"].as_u64().expect("fills");

    // Act 2: the best point re-run alone in the backtester, with the module loaded there…
    let registry = StrategyRegistry::default();
    let manifest_value: WasmManifest = serde_json::from_str(&manifest).expect("manifest");
    let kind = registry.register_wasm(
        "ema_cross",
        WasmModule::load(&bytes, manifest_value, WasmLimits::default()).expect("loads"),
    );
    let mut bt = Backtest::new(
        BacktestConfig::new("EURUSD", &kind, best_params.clone(), Timeframe::M1),
        &registry,
    )
    .expect("valid");
    for t in &ticks {
        bt.on_tick(t);
    }
    let backtest: Vec<_> = bt
        .orders()
        .into_iter()
        .map(|o| (o.side, o.volume))
        .collect();
    let (report, _) = bt.finish();

    // …and live: a strategy of the module with those parameters, on the desk tenant, paced bar by bar.
    let (_, desk_bridge) = create_key(&app, &root, "desk", &["market:write"]).await;
    let mut live_strategy = strategy("best", "wasm:ema_cross", "EURUSD");
    live_strategy["params"] = serde_json::to_value(&best_params).expect("params");
    app.expect(
        201,
        "POST",
        "/api/v1/tenants/desk/strategies",
        Some(&root),
        Some(&live_strategy),
    )
    .await;
    let sim = app.sim(&desk_bridge, 9104).await;
    for t in ticks {
        let opens_bar = t.time_msc % MINUTE == 0;
        let time = t.time_msc;
        sim.tick(t);
        if opens_bar && time > T0 {
            app.settle("desk", "best", time - MINUTE).await;
        }
    }
    let live: Vec<_> = app
        .portfolio("desk")
        .await
        .orders
        .into_iter()
        .map(|o| (o.side, o.volume))
        .collect();

    // Assert: the optimisation's best point, the backtest and live trading made the same trades.
    assert!(backtest.len() >= 4, "the module traded: {backtest:?}");
    assert_eq!(
        report.fills as u64, best_fills,
        "the best point re-run alone: {best}"
    );
    assert_eq!(live, backtest);
    sim.stop().await.expect("the simulator stops");
    app.shutdown().await;
}

#[test]
fn trellis_optimise_searches_a_modules_parameters_and_ranks_them_as_it_ranks_the_native_strategy() {
    if crate::helpers::real_profile() {
        return; // no store involved: the embedded run covers it
    }
    let (module, manifest) = rust_example();
    let dir = tempfile::tempdir().expect("dir");
    let module_path = dir.path().join("ema_cross.wasm");
    let manifest_path = dir.path().join("ema_cross.json");
    std::fs::write(&module_path, module).expect("module written");
    std::fs::write(&manifest_path, manifest).expect("manifest written");
    let mut csv = String::from("time_msc,bid,ask\n");
    for t in trellis::sim::feed::RandomWalk::new(
        trellis::sim::feed::RandomWalk::default_symbols(&["EURUSD".into()]),
        T0,
        15_000,
        31,
    )
    .take(4 * 60 * 24)
    {
        csv.push_str(&format!("{},{},{}\n", t.time_msc, t.bid, t.ask));
    }
    let input = dir.path().join("ticks.csv");
    std::fs::write(&input, csv).expect("ticks written");
    let optimise = |strategy: &[&str]| -> Value {
        let mut args = vec![
            "optimise",
            "--input",
            input.to_str().expect("path"),
            "--symbol",
            "EURUSD",
            "--param",
            "fast=3,5,8",
            "--param",
            "slow=13,21",
            "--top",
            "6",
            "--json",
        ];
        args.extend_from_slice(strategy);
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_trellis"))
            .args(&args)
            .output()
            .expect("trellis runs");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("json")
    };
    // (params, score, fills) of every candidate, best first.
    let ranked = |v: &Value| -> Vec<(Value, Value, Value)> {
        v["results"]
            .as_array()
            .expect("results")
            .iter()
            .map(|r| {
                (
                    r["params"].clone(),
                    r["score"].clone(),
                    r["report"]["fills"].clone(),
                )
            })
            .collect()
    };

    let wasm = optimise(&[
        "--strategy",
        "wasm",
        "--module",
        module_path.to_str().expect("path"),
        "--module-manifest",
        manifest_path.to_str().expect("path"),
    ]);
    let native = optimise(&["--strategy", "ema_cross"]);

    assert_eq!(wasm["runs"], 6, "{wasm}");
    assert_eq!(ranked(&wasm), ranked(&native));
    assert!(
        ranked(&wasm)
            .iter()
            .all(|(_, _, fills)| fills.as_u64().unwrap_or(0) > 0),
        "every candidate traded: {wasm}"
    );
}

/// Bids of a triangle wave of period 6 (three minutes up a pip and a half, three down): ema_cross 2/3
/// crosses at every turn.
fn triangle_bid(m: i64) -> String {
    let tri = [0, 1, 2, 3, 2, 1][(m % 6) as usize];
    format!("{:.5}", 1.1000 + f64::from(tri) * 0.0015)
}

/// Ticks a minute apart, each closing the previous minute's bar; for each that makes a strategy trade, the
/// time from sending it to the terminal receiving the order.
async fn tick_to_order(sim: &trellis::sim::SimHandle, minutes: i64) -> Vec<Duration> {
    let mut latencies = Vec::new();
    for m in 0..minutes {
        let orders = sim.stats().orders_received;
        let b = triangle_bid(m);
        let a = format!("{:.5}", b.parse::<f64>().unwrap_or(1.1) + 0.0002);
        let sent = std::time::Instant::now();
        sim.tick(tick("EURUSD", T0 + m * MINUTE, &b, &a));
        // Orders come at the wave's turns only; 150 ms is over ten times a late one's latency here.
        let deadline = sent + Duration::from_millis(150);
        while std::time::Instant::now() < deadline {
            if sim.stats().orders_received > orders {
                latencies.push(sent.elapsed());
                break;
            }
            actix_rt::task::yield_now().await;
        }
        // Let the order's fill come back (and the modules finish the bar) before the next one.
        actix_rt::time::sleep(Duration::from_millis(60)).await;
    }
    latencies
}

#[actix_rt::test]
async fn a_module_that_computes_for_tens_of_milliseconds_a_bar_leaves_a_native_strategys_tick_to_order_latency_alone(
) {
    // Arrange: a module strategy that burns 4.8 million units of fuel a bar (about 30 ms in a debug build;
    // the live deadline raised so that it finishes), beside a native ema_cross 2/3 of the same tenant; and
    // the same tenant without it.
    let heavy = module_with_on_bar(
        "(local $i i32)
         (local.set $i (i32.const 1200000))
         (block $done (loop $more
           (br_if $done (i32.eqz (local.get $i)))
           (local.set $i (i32.sub (local.get $i) (i32.const 1)))
           (br $more)))
         (i32.const 0)",
    );
    let mut figures = Vec::new();
    for with_modules in [false, true] {
        let (app, root) =
            spawn_admin_app(&[("TRELLIS__THREADS__MODULE_CALL_DEADLINE_US", "1000000")]).await;
        create_tenant(&app, &root, "lat", "professional").await;
        let (_, bridge) = create_key(&app, &root, "lat", &["market:write"]).await;
        let mut native = strategy("native", "ema_cross", "EURUSD");
        native["params"] = json!({"fast": 2, "slow": 3});
        app.expect(
            201,
            "POST",
            "/api/v1/tenants/lat/strategies",
            Some(&root),
            Some(&native),
        )
        .await;
        if with_modules {
            let up = upload_raw(&app, &root, "lat", "heavy", "{}", heavy.clone()).await;
            assert_eq!(up.status, 201, "{:?}", up.body);
            let s = strategy("heavy", "wasm:heavy", "EURUSD");
            app.expect(
                201,
                "POST",
                "/api/v1/tenants/lat/strategies",
                Some(&root),
                Some(&s),
            )
            .await;
        }
        let sim = app.sim(&bridge, 9105).await;

        // Act: 36 minutes of the triangle wave.
        let latencies = tick_to_order(&sim, 36).await;
        let mut views = Vec::new();
        if with_modules {
            views.push(strategy_state(&app, &root, "lat", "heavy").await);
        }
        sim.stop().await.expect("the simulator stops");
        app.shutdown().await;

        // Assert (per run): the native strategy traded at its turns; the module ran every bar and never
        // failed.
        assert!(latencies.len() >= 8, "{} orders", latencies.len());
        for v in &views {
            assert_eq!(v["state"], "running", "{v}");
            assert!(
                v["warm_up"]["last_bar_ms"].as_i64().unwrap_or(0) >= T0 + 25 * MINUTE,
                "the module handled the bars: {v}"
            );
        }
        let mut sorted = latencies.clone();
        sorted.sort_unstable();
        figures.push((
            sorted[sorted.len() / 2],
            sorted[sorted.len() - 1],
            sorted.len(),
        ));
    }

    // Assert: the margin is 10 ms on the median. A module on the tenant's trading thread would hold every
    // order behind its call of about 30 ms.
    let (without, with) = (figures[0], figures[1]);
    println!(
        "tick → order without the module: median {:?}, max {:?} ({} orders); with a heavy module: median {:?}, max {:?} ({} orders)",
        without.0, without.1, without.2, with.0, with.1, with.2
    );
    assert!(
        with.0 <= without.0 + Duration::from_millis(10),
        "with the module {:?}, without {:?}",
        with.0,
        without.0
    );
}
