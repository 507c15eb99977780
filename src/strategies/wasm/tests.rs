//! Hostile modules, each stopped at its limit with only its own call failing, and an `ema_cross` module
//! that must decide exactly as the native strategy. Run with `--nocapture` to see the figures (fuel per
//! bar, wall time of a call, instantiation).

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rust_decimal::Decimal;

use super::fixtures::{ema_cross_manifest, module, on_bar, wasm, EMA_CROSS};
use super::*;
use crate::domain::{Bar, Timeframe};
use crate::strategies::{EmaCross, Params, Strategy, StrategyRegistry};

fn bar(i: i64, close: Decimal) -> Bar {
    Bar {
        symbol: "EURUSD".into(),
        timeframe: Timeframe::M1,
        open_time_ms: 1_700_000_000_000 + i * 60_000,
        open: close,
        high: close,
        low: close,
        close,
        tick_volume: 10,
    }
}

/// A random walk of closes around 1.1, five decimals, from a fixed linear congruential generator.
fn walk(n: usize) -> Vec<Bar> {
    let mut x: u64 = 42;
    let mut price: i64 = 110_000;
    (0..n)
        .map(|i| {
            x = x
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            price += (x >> 33) as i64 % 41 - 20;
            bar(i as i64, Decimal::new(price, 5))
        })
        .collect()
}

fn volume() -> Decimal {
    Decimal::new(1, 1)
}

fn load(bytes: &[u8]) -> Result<Arc<WasmModule>, WasmError> {
    WasmModule::load(bytes, WasmManifest::default(), WasmLimits::default())
}

fn instance(bytes: &[u8]) -> WasmStrategy {
    let module = load(bytes).expect("the module loads");
    WasmStrategy::build("wasm:test", module, &Params::new(), volume()).expect("builds")
}

fn ema(fast: f64, slow: f64) -> WasmStrategy {
    let module = WasmModule::load(
        &wasm(EMA_CROSS),
        ema_cross_manifest(),
        WasmLimits::default(),
    )
    .expect("the ema_cross module loads");
    let params: Params = [("fast".to_owned(), fast), ("slow".to_owned(), slow)].into();
    WasmStrategy::build("wasm:ema_cross", module, &params, volume()).expect("builds")
}

/// Runs `f` as the strategy host does (behind `catch_unwind`): the panic's message, or `None`.
fn failure(f: impl FnOnce()) -> Option<String> {
    let payload = catch_unwind(AssertUnwindSafe(f)).err()?;
    Some(
        payload
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| payload.downcast_ref::<&str>().map(|s| (*s).to_owned()))
            .unwrap_or_default(),
    )
}

#[test]
fn an_endless_loop_is_stopped_by_fuel_and_only_that_call_fails() {
    let mut s = instance(&module("", &on_bar("(loop $l (br $l)) (i32.const 0)")));

    let started = Instant::now();
    let why = failure(|| {
        s.on_bar(&bar(0, Decimal::ONE));
    });
    let took = started.elapsed();

    let why = why.expect("the call fails");
    assert!(why.contains("ran out of fuel"), "{why}");
    assert!(why.contains("10000000 instructions"), "{why}");
    println!("an endless loop stopped by fuel after {took:?} (10 million units)");
    assert!(took < Duration::from_secs(30), "stopped after {took:?}");
    // The process lives, and so does the instance: the next call gets a fresh budget.
    assert!(failure(|| {
        s.on_bar(&bar(1, Decimal::ONE));
    })
    .is_some());
}

#[test]
fn a_trap_fails_the_call_naming_it() {
    let mut s = instance(&module("", &on_bar("(unreachable)")));

    let why = failure(|| {
        s.on_bar(&bar(0, Decimal::ONE));
    });

    let why = why.expect("the call fails");
    assert!(why.contains("wasm:test: on_bar failed"), "{why}");
    assert!(why.contains("unreachable"), "{why}");
}

#[test]
fn memory_growth_past_the_limit_fails_the_call_instead_of_aborting() {
    // Grows one page at a time for as long as growing succeeds.
    let body = on_bar(
        "(block $done (loop $more
           (br_if $done (i32.eq (memory.grow (i32.const 1)) (i32.const -1)))
           (br $more)))
         (i32.const 0)",
    );
    let mut s = instance(&module("", &body));

    let why = failure(|| {
        s.on_bar(&bar(0, Decimal::ONE));
    });

    let why = why.expect("growing past 64 MiB fails the call");
    assert!(why.contains("memory") || why.contains("growth"), "{why}");
}

#[test]
fn endless_recursion_fails_the_call() {
    let body = format!(
        "(func $deeper (call $deeper)) {}",
        on_bar("(call $deeper) (i32.const 0)")
    );
    let mut s = instance(&module("", &body));

    let why = failure(|| {
        s.on_bar(&bar(0, Decimal::ONE));
    });

    assert!(why.is_some());
}

#[test]
fn a_module_without_on_bar_is_refused_naming_the_export() {
    let refused = load(&module("", "")).expect_err("refused");

    assert!(matches!(&refused, WasmError::MissingExport { name, .. } if name == "on_bar"));
    assert!(refused.to_string().contains("`on_bar`"), "{refused}");
}

#[test]
fn a_module_of_an_unknown_interface_version_is_refused() {
    let bytes = wasm(&format!(
        r#"(module (memory (export "memory") 1)
             (func (export "trellis_interface_version") (result i32) (i32.const 2))
             {})"#,
        on_bar("(i32.const 0)")
    ));

    assert_eq!(
        load(&bytes).err(),
        Some(WasmError::InterfaceVersion { found: 2 })
    );
}

#[test]
fn a_forbidden_import_is_refused_naming_it() {
    let imports = r#"(import "wasi_snapshot_preview1" "fd_write"
                        (func (param i32 i32 i32 i32) (result i32)))"#;
    let refused = load(&module(imports, &on_bar("(i32.const 0)"))).expect_err("refused");

    assert!(
        refused
            .to_string()
            .contains("`wasi_snapshot_preview1.fd_write`"),
        "{refused}"
    );
}

#[test]
fn a_host_import_of_the_wrong_signature_is_refused() {
    let imports = r#"(import "trellis" "set_target" (func (param i32)))"#;
    let refused = load(&module(imports, &on_bar("(i32.const 0)"))).expect_err("refused");

    assert!(matches!(refused, WasmError::ImportType { .. }), "{refused}");
}

#[test]
fn an_export_of_the_wrong_signature_is_refused() {
    let body = r#"(func (export "on_bar") (param f64) (result i32) (i32.const 0))"#;
    let refused = load(&module("", body)).expect_err("refused");

    assert!(matches!(&refused, WasmError::ExportType { name, .. } if name == "on_bar"));
}

#[test]
fn a_module_over_the_size_limit_is_refused_before_it_is_parsed() {
    // A valid module made large by a custom section (id 0) of 1 MiB.
    let mut bytes = module("", &on_bar("(i32.const 0)"));
    let payload = 1usize << 20;
    let mut size = payload as u32 + 2;
    bytes.push(0);
    loop {
        let byte = (size & 0x7f) as u8;
        size >>= 7;
        bytes.push(if size == 0 { byte } else { byte | 0x80 });
        if size == 0 {
            break;
        }
    }
    bytes.extend_from_slice(&[1, b'x']);
    bytes.resize(bytes.len() + payload, 0);

    let refused = load(&bytes).expect_err("refused");

    assert_eq!(
        refused,
        WasmError::TooLarge {
            bytes: bytes.len(),
            limit: 1 << 20
        }
    );
}

#[test]
fn a_declared_memory_over_the_limit_is_refused() {
    let bytes = wasm(&format!(
        r#"(module (memory (export "memory") 1025)
             (func (export "trellis_interface_version") (result i32) (i32.const 1))
             {})"#,
        on_bar("(i32.const 0)")
    ));

    let refused = load(&bytes).expect_err("refused");

    assert!(matches!(refused, WasmError::Memory { .. }), "{refused}");
    assert!(refused.to_string().contains("67174400 bytes"), "{refused}");
}

#[test]
fn bytes_that_are_not_webassembly_are_refused() {
    assert!(matches!(load(b"(module)"), Err(WasmError::Invalid(_))));
}

#[test]
fn a_status_outside_the_interface_or_a_target_without_set_target_fails_the_call() {
    let mut seven = instance(&module("", &on_bar("(i32.const 7)")));
    let mut silent = instance(&module("", &on_bar("(i32.const 1)")));

    let seven = failure(|| {
        seven.on_bar(&bar(0, Decimal::ONE));
    });
    let silent = failure(|| {
        silent.on_bar(&bar(0, Decimal::ONE));
    });

    assert!(seven.expect("fails").contains("status 7"));
    assert!(silent
        .expect("fails")
        .contains("without calling trellis.set_target"));
}

#[test]
fn unknown_parameters_and_values_out_of_bounds_are_refused_naming_them() {
    let module = WasmModule::load(
        &wasm(EMA_CROSS),
        ema_cross_manifest(),
        WasmLimits::default(),
    )
    .expect("loads");
    let build = |name: &str, v: f64| {
        let params: Params = [(name.to_owned(), v)].into();
        WasmStrategy::build("wasm:ema_cross", module.clone(), &params, volume())
            .err()
            .map(|e| e.to_string())
    };

    let unknown = build("period", 5.0).expect("refused");
    let out_of_bounds = build("slow", 1.0).expect("refused");
    let refused_by_init = build("fast", 50.0).expect("refused");

    assert!(unknown.contains("unknown parameter `period`"), "{unknown}");
    assert!(
        out_of_bounds.contains("`slow` must be from 2"),
        "{out_of_bounds}"
    );
    assert!(
        refused_by_init.contains("init() returned 1"),
        "{refused_by_init}"
    );
}

#[test]
fn logging_is_bounded_per_call() {
    let body = format!(
        r#"(data (i32.const 0) "hello") {}"#,
        on_bar(
            "(local $i i32)
             (loop $more
               (call $log (i32.const 0) (i32.const 5))
               (local.set $i (i32.add (local.get $i) (i32.const 1)))
               (br_if $more (i32.lt_u (local.get $i) (i32.const 100))))
             (i32.const 0)"
        )
    );
    let imports = r#"(import "trellis" "log" (func $log (param i32 i32)))"#;
    let mut s = instance(&module(imports, &body));

    s.on_bar(&bar(0, Decimal::ONE));
    s.on_bar(&bar(1, Decimal::ONE));

    assert_eq!(s.logs_dropped(), 2 * (100 - 16));
}

#[test]
fn the_wat_ema_cross_decides_exactly_as_the_native_ema_cross() {
    let bars = walk(5_000);
    let started = Instant::now();
    let module = WasmModule::load(
        &wasm(EMA_CROSS),
        ema_cross_manifest(),
        WasmLimits::default(),
    )
    .expect("the ema_cross module loads");
    let loaded = started.elapsed();
    let params: Params = [("fast".to_owned(), 5.0), ("slow".to_owned(), 20.0)].into();
    let started = Instant::now();
    let mut guest =
        WasmStrategy::build("wasm:ema_cross", module, &params, volume()).expect("builds");
    let instantiated = started.elapsed();
    let mut native = EmaCross::new(5, 20, volume());

    let mut fuel = Vec::new();
    let started = Instant::now();
    let guest_decisions: Vec<_> = bars
        .iter()
        .map(|b| {
            let d = guest.on_bar(b);
            fuel.push(guest.fuel_used());
            d
        })
        .collect();
    let per_call = started.elapsed() / bars.len() as u32;
    let native_decisions: Vec<_> = bars.iter().map(|b| native.on_bar(b)).collect();

    assert_eq!(guest_decisions, native_decisions);
    assert_eq!(guest.warm_up_bars(), native.warm_up_bars());
    assert!(guest_decisions.iter().filter(|d| d.is_some()).count() > 4_000);
    let changes = native_decisions.windows(2).filter(|w| w[0] != w[1]).count();
    assert!(changes > 50, "a walk that crosses: {changes} changes");
    println!(
        "ema_cross module: load {loaded:?}, instantiation {instantiated:?}, on_bar {per_call:?} a call, fuel per on_bar {}..={}",
        fuel.iter().min().unwrap_or(&0),
        fuel.iter().max().unwrap_or(&0)
    );
}

#[test]
fn two_runs_of_one_module_under_fuel_give_bit_identical_decisions() {
    // ema_cross, and a module that decides by `trellis.random`.
    let imports = r#"(import "trellis" "random" (func $random (result f64)))
                     (import "trellis" "set_target" (func $set_target (param f64)))"#;
    let dice = module(
        imports,
        &on_bar(
            "(call $set_target (f64.sub (f64.mul (call $random) (f64.const 2)) (f64.const 1)))
             (i32.const 1)",
        ),
    );
    let bars = walk(2_000);
    let run = |mut s: WasmStrategy| -> Vec<Option<Decimal>> {
        bars.iter().map(|b| s.on_bar(b)).collect()
    };

    let ema_runs = (run(ema(3.0, 7.0)), run(ema(3.0, 7.0)));
    let dice_runs = (run(instance(&dice)), run(instance(&dice)));

    assert_eq!(ema_runs.0, ema_runs.1);
    assert_eq!(dice_runs.0, dice_runs.1);
    assert!(
        dice_runs.0.windows(2).any(|w| w[0] != w[1]),
        "random varies"
    );
}

#[test]
fn a_registered_module_builds_as_strategy_kind_wasm_and_its_name() {
    let registry = StrategyRegistry::default();
    let module = WasmModule::load(
        &wasm(EMA_CROSS),
        ema_cross_manifest(),
        WasmLimits::default(),
    )
    .expect("loads");

    registry.register_wasm("ema", module);
    let params: Params = [("slow".to_owned(), 30.0)].into();
    let built = registry.build("wasm:ema", &params, volume());

    assert!(registry.kinds().contains(&"wasm:ema".to_owned()));
    assert_eq!(built.expect("builds").warm_up_bars(), 90);
    assert!(registry.build("wasm:other", &params, volume()).is_err());
}

#[test]
fn a_module_that_exports_on_tick_gets_ticks_and_hears_its_fills() {
    // Asks, on every tick, for the opposite of what it was filled.
    let body = format!(
        r#"(global $held (mut f64) (f64.const 0))
           (func (export "on_fill") (param $volume f64) (param $price f64)
             (global.set $held (f64.add (global.get $held) (local.get $volume))))
           (func (export "on_tick") (param f64 f64 i64) (result i32)
             (call $set_target (f64.neg (global.get $held)))
             (i32.const 1))
           {}"#,
        on_bar("(i32.const 0)")
    );
    let imports = r#"(import "trellis" "set_target" (func $set_target (param f64)))"#;
    let mut s = instance(&module(imports, &body));
    let tick = crate::domain::Tick {
        symbol: "EURUSD".into(),
        time_msc: 1_700_000_000_000,
        bid: Decimal::ONE,
        ask: Decimal::ONE,
    };

    s.on_fill(Decimal::new(2, 0), Decimal::ONE);
    let target = s.on_tick(&tick);

    assert!(s.wants_ticks());
    assert_eq!(target, Some(Decimal::new(-2, 1)), "-2 × the volume 0.1");
    assert!(!instance(&module("", &on_bar("(i32.const 0)"))).wants_ticks());
}

#[test]
fn the_example_of_the_guide_loads_and_follows_the_close() {
    let guide = include_str!("../../../docs/strategy-modules.md");
    let text = guide
        .split("```wat")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .expect("docs/strategy-modules.md has a wat example");
    let mut s = instance(&wasm(text));
    let closes = ["1.1", "1.2", "1.15", "1.15"].map(|c| c.parse::<Decimal>().expect("decimal"));

    let decisions: Vec<_> = closes
        .iter()
        .enumerate()
        .map(|(i, c)| s.on_bar(&bar(i as i64, *c)))
        .collect();

    assert_eq!(s.warm_up_bars(), 1);
    assert_eq!(
        decisions,
        vec![None, Some(volume()), Some(-volume()), Some(-volume())]
    );
}

#[test]
fn a_live_deadline_stops_an_endless_loop_within_milliseconds_and_names_the_deadline() {
    let mut s = instance(&module("", &on_bar("(loop $l (br $l)) (i32.const 0)")));
    super::set_call_deadline(Some(Duration::from_millis(2)));

    let started = Instant::now();
    let why = failure(|| {
        s.on_bar(&bar(0, Decimal::ONE));
    });
    let took = started.elapsed();
    super::set_call_deadline(None);

    let why = why.expect("the call fails");
    assert!(why.contains("deadline of 2000 µs"), "{why}");
    let ran = s.fuel_used();
    println!("an endless loop stopped by a 2 ms deadline after {ran} units of fuel, {took:?} with the panic");
    // The clock is read between slices of fuel, so the loop ran about 2 ms of instructions: a small part of
    // the 10 million units that stop it without a deadline (the wall time above includes the panic and
    // its backtrace, which is why fuel is what this asserts).
    assert!(
        ran < WasmLimits::default().fuel_per_call / 5,
        "ran {ran} units"
    );
}

#[test]
fn under_a_deadline_a_module_decides_and_spends_fuel_exactly_as_under_fuel_alone() {
    // A call long enough to take several slices of fuel: 20 000 iterations of a loop per bar.
    let body = on_bar(
        "(local $i i32)
         (local.set $i (i32.const 20000))
         (block $done (loop $more
           (br_if $done (i32.eqz (local.get $i)))
           (local.set $i (i32.sub (local.get $i) (i32.const 1)))
           (br $more)))
         (call $set_target (local.get 3))
         (i32.const 1)",
    );
    let bytes = module(
        r#"(import "trellis" "set_target" (func $set_target (param f64)))"#,
        &body,
    );
    let bars = walk(50);
    let run = |deadline: Option<Duration>| {
        super::set_call_deadline(deadline);
        let mut s = instance(&bytes);
        let out: Vec<_> = bars.iter().map(|b| (s.on_bar(b), s.fuel_used())).collect();
        super::set_call_deadline(None);
        out
    };

    let fuel_only = run(None);
    let live = run(Some(Duration::from_secs(5)));

    assert_eq!(fuel_only, live);
    // Each call took more than one slice of fuel (50 000 units), so the slices were exercised.
    assert!(
        fuel_only.iter().all(|(_, fuel)| *fuel > 50_000),
        "{:?}",
        fuel_only[0]
    );
}
