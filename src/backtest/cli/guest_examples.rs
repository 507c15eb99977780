//! The guest examples of `docs/strategy-modules.md` ("Guest SDKs"): `ema_cross` written with the Rust SDK
//! (`examples/wasm-strategy-rust`, `#![no_std]`) and with the C SDK (`examples/wasm-strategy-c`, clang
//! without libc), built for wasm32 by `scripts/build-wasm-examples.sh` into `target/wasm-examples/`. Each
//! must load under the default limits, import only from `trellis`, and decide — bar by bar, and in a
//! backtest, deal by deal — exactly as the native `ema_cross`.
//!
//! The test command builds the modules before the tests; when they are absent (or older than their
//! sources) the first test here runs the script itself.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, OnceLock};
use std::time::SystemTime;

use rust_decimal::Decimal;
use wasmi::ExternType;

use crate::domain::{Bar, Timeframe};
use crate::strategies::wasm::{WasmLimits, WasmManifest, WasmModule, WasmStrategy};
use crate::strategies::{EmaCross, Params, Strategy};

/// The modules the script builds, by file stem (`<stem>.wasm` and its manifest `<stem>.json`).
const MODULES: [&str; 2] = ["ema_cross_rust", "ema_cross_c"];

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Where the script puts the modules; runs it first, once per test process, when a module is absent or
/// older than a source of the examples.
fn built() -> PathBuf {
    static BUILT: OnceLock<()> = OnceLock::new();
    let dir = repo().join("target/wasm-examples");
    BUILT.get_or_init(|| {
        let sources = newest_change(&repo().join("examples/wasm-strategy-rust"))
            .max(newest_change(&repo().join("examples/wasm-strategy-c")))
            .max(newest_change(
                &repo().join("scripts/build-wasm-examples.sh"),
            ));
        let stale = MODULES.iter().any(|m| {
            let built = std::fs::metadata(dir.join(format!("{m}.wasm"))).and_then(|m| m.modified());
            built.map_or(true, |t| Some(t) < sources)
        });
        if !stale {
            return;
        }
        let run = Command::new("bash")
            .arg("scripts/build-wasm-examples.sh")
            .current_dir(repo())
            .output()
            .expect("bash runs");
        let stdout = String::from_utf8_lossy(&run.stdout);
        assert!(
            run.status.success(),
            "scripts/build-wasm-examples.sh failed ({}):\n{stdout}\n{}",
            run.status,
            String::from_utf8_lossy(&run.stderr)
        );
        println!("{stdout}");
    });
    dir
}

/// The latest modification time of `path` or of a file below it (a `target` directory excepted).
fn newest_change(path: &Path) -> Option<SystemTime> {
    let meta = std::fs::metadata(path).ok()?;
    if !meta.is_dir() {
        return meta.modified().ok();
    }
    std::fs::read_dir(path)
        .ok()?
        .flatten()
        .filter(|entry| entry.file_name() != "target")
        .filter_map(|entry| newest_change(&entry.path()))
        .max()
}

fn bytes(stem: &str) -> Vec<u8> {
    let path = built().join(format!("{stem}.wasm"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn manifest(stem: &str) -> WasmManifest {
    let path = built().join(format!("{stem}.json"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn load(stem: &str) -> Arc<WasmModule> {
    WasmModule::load(&bytes(stem), manifest(stem), WasmLimits::default())
        .unwrap_or_else(|e| panic!("{stem} does not load: {e}"))
}

fn volume() -> Decimal {
    Decimal::new(1, 1)
}

/// A random walk of closes around 1.1, five decimals, from a fixed linear congruential generator. With
/// `plateaus`, the close now and then holds a level for 30 to 400 bars: both averages converge on it until
/// their last bits decide `fast >= slow`, so the decisions there tell arithmetic in another order (say
/// `(1 - a) * prev + a * x`) from the native one.
fn walk(n: usize, plateaus: bool) -> Vec<Bar> {
    let mut x: u64 = 2024;
    let mut price: i64 = 110_000;
    let mut hold = 0;
    (0..n)
        .map(|i| {
            x = x
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            if hold > 0 {
                hold -= 1;
            } else {
                price += (x >> 33) as i64 % 41 - 20;
                if plateaus && (x >> 20) % 20 == 0 {
                    hold = 30 + (x >> 40) % 371;
                }
            }
            let close = Decimal::new(price, 5);
            Bar {
                symbol: "EURUSD".into(),
                timeframe: Timeframe::M1,
                open_time_ms: 1_700_000_000_000 + i as i64 * 60_000,
                open: close,
                high: close,
                low: close,
                close,
                tick_volume: 10,
            }
        })
        .collect()
}

fn params(fast: f64, slow: f64) -> Params {
    [("fast".to_owned(), fast), ("slow".to_owned(), slow)].into()
}

#[test]
fn the_rust_and_c_guest_examples_decide_like_the_native_ema_cross() {
    let series = [
        ("walk", walk(8_000, false)),
        ("plateaus", walk(8_000, true)),
    ];

    for stem in MODULES {
        let module = load(stem);
        for ((fast, slow), (name, bars)) in [(12, 26), (5, 20), (50, 200)]
            .into_iter()
            .flat_map(|periods| series.iter().map(move |s| (periods, s)))
        {
            let given = params(fast as f64, slow as f64);
            let mut guest = WasmStrategy::build(stem, module.clone(), &given, volume())
                .unwrap_or_else(|e| panic!("{stem} {fast}/{slow}: {e}"));
            let mut native = EmaCross::new(fast, slow, volume());

            let guest_decisions: Vec<_> = bars.iter().map(|b| guest.on_bar(b)).collect();
            let native_decisions: Vec<_> = bars.iter().map(|b| native.on_bar(b)).collect();

            let differ = guest_decisions
                .iter()
                .zip(&native_decisions)
                .position(|(g, n)| g != n);
            assert_eq!(
                differ, None,
                "{stem} {fast}/{slow} {name}: first different bar"
            );
            assert_eq!(guest.warm_up_bars(), native.warm_up_bars(), "{stem}");
            assert_eq!(
                guest_decisions[slow - 2],
                None,
                "{stem}: silent until slow bars"
            );
            assert!(guest_decisions[slow - 1].is_some(), "{stem}: then decides");
            let changes = native_decisions.windows(2).filter(|w| w[0] != w[1]).count();
            assert!(
                changes > 10,
                "{fast}/{slow} {name}: a walk that crosses: {changes}"
            );
            println!("{stem} {fast}/{slow} {name}: 8000 bars, {changes} reversals, all equal");
        }
        // The manifest's defaults are the native strategy's.
        let mut guest =
            WasmStrategy::build(stem, module, &Params::new(), volume()).expect("builds");
        let mut native = EmaCross::build(&Params::new(), volume()).expect("builds");
        for b in &series[1].1 {
            assert_eq!(guest.on_bar(b), native.on_bar(b), "{stem} with defaults");
        }
    }
}

#[test]
fn the_guest_examples_refuse_the_parameters_the_native_ema_cross_refuses() {
    for stem in MODULES {
        let module = load(stem);
        let refusal = |fast: f64, slow: f64| {
            let native = EmaCross::build(&params(fast, slow), volume()).err();
            let guest = WasmStrategy::build(stem, module.clone(), &params(fast, slow), volume());
            assert!(
                native.is_some(),
                "{fast}/{slow}: the native strategy refuses"
            );
            guest
                .err()
                .unwrap_or_else(|| panic!("{stem} accepts {fast}/{slow}"))
                .to_string()
        };

        assert!(refusal(26.0, 12.0).contains("init() returned 1"), "{stem}");
        assert!(refusal(20.0, 20.0).contains("init() returned 1"), "{stem}");
        assert!(refusal(5.5, 20.0).contains("init() returned 2"), "{stem}");
        assert!(
            refusal(0.5, 20.0).contains("`fast` must be from 1"),
            "{stem}"
        );
        let unknown = WasmStrategy::build(stem, module, &[("period".into(), 5.0)].into(), volume());
        assert!(unknown.is_err(), "{stem}");
    }
}

#[test]
fn the_guest_examples_import_only_trellis_and_export_exactly_the_interface() {
    let engine = wasmi::Engine::default();
    for stem in MODULES {
        let bytes = bytes(stem);
        let module = wasmi::Module::new(&engine, &bytes[..]).expect("valid WebAssembly");

        let mut imports: Vec<String> = module
            .imports()
            .map(|i| format!("{}.{}", i.module(), i.name()))
            .collect();
        imports.sort();
        let mut functions: Vec<&str> = module
            .exports()
            .filter(|e| matches!(e.ty(), ExternType::Func(_)))
            .map(|e| e.name())
            .collect();
        functions.sort_unstable();
        let memory_pages = module.exports().find_map(|e| match e.ty() {
            ExternType::Memory(m) if e.name() == "memory" => Some(m.minimum()),
            _ => None,
        });

        assert_eq!(imports, ["trellis.log", "trellis.set_target"], "{stem}");
        assert_eq!(
            functions,
            [
                "init",
                "on_bar",
                "param",
                "trellis_interface_version",
                "warm_up_bars"
            ],
            "{stem}"
        );
        // A stack of 64 KiB, not a toolchain's default of 1 MiB: instances start small.
        assert!(
            matches!(memory_pages, Some(1..=2)),
            "{stem}: {memory_pages:?} pages"
        );
        // No formatting code, no libc: a module of about a kilobyte.
        assert!(bytes.len() < 4_096, "{stem}: {} bytes", bytes.len());
        println!(
            "{stem}: {} bytes, memory {} pages",
            bytes.len(),
            memory_pages.unwrap_or(0)
        );
    }
}

/// Three days of ticks, fast 12 / slow 26, then the strategy: a backtest's trades (see `wasm_tests`).
fn trades(dir: &Path, run: &str, strategy: &[&str]) -> Vec<String> {
    let mut args = vec!["--param", "fast=12", "--param", "slow=26"];
    args.extend_from_slice(strategy);
    super::wasm_tests::trades(dir, run, &args)
}

#[test]
fn a_backtest_of_each_guest_example_makes_the_deals_of_the_native_ema_cross() {
    let dir = tempfile::tempdir().expect("dir");
    std::fs::write(
        dir.path().join("ticks.csv"),
        super::wasm_tests::ticks_csv(11, 21_600),
    )
    .expect("ticks written");
    let native = trades(dir.path(), "native", &["--strategy", "ema_cross"]);

    for stem in MODULES {
        let module = built().join(format!("{stem}.wasm"));
        let manifest = built().join(format!("{stem}.json"));
        let module_args = [
            "--strategy",
            "wasm",
            "--module",
            module.to_str().expect("path"),
            "--module-manifest",
            manifest.to_str().expect("path"),
        ];

        let guest = trades(dir.path(), stem, &module_args);

        assert!(
            native.len() > 20,
            "the walk crosses: {} lines",
            native.len()
        );
        assert_eq!(guest, native, "{stem}");
        println!("{stem}: {} deals, as the native ema_cross", guest.len() - 1);
    }
}
