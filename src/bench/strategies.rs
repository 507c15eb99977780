//! `trellis bench strategies`: the native `ema_cross` against the same strategy as a WebAssembly module run
//! by wasmi (`strategies::wasm`), at 12/26 and 50/200.
//!
//! The module is `target/wasm-examples/ema_cross_rust.wasm` with its manifest `ema_cross_rust.json`, read
//! from the file at run time (built by `scripts/build-wasm-examples.sh`, which this benchmark runs first when
//! the module is absent); `--module FILE.wasm --module-manifest FILE.json` measures another module instead
//! (given `fast` and `slow` when its manifest declares them, its defaults otherwise). By default the C guest
//! example (`ema_cross_c.wasm`) is timed beside it on `on_bar`, when it is there.
//!
//! 1. **Host → guest call**: a call of the module's trivial export `trellis_interface_version` through wasmi
//!    directly, fuel set before each call as every strategy call does (`WasmStrategy`'s calls are private
//!    and no module with an empty `on_bar` ships outside the tests). Beside it, what a whole decision costs
//!    over the native one: the mean `on_bar` of the module minus the native mean, and beside it the host's
//!    conversions alone (`strategies::wasm::{bar_args, target_lots}`: four decimals to `f64`, the target back
//!    to lots), timed without a call.
//! 2. **`on_bar`**: 1 000 000 bars of a seeded random walk, fresh instances after 10 000 untimed bars: a
//!    mean over an untimed loop, then every call timed on its own (`Instant` around the call; its own cost
//!    is printed) into an HDR histogram of nanoseconds with the true maximum. The decisions of native and
//!    module are compared. `on_tick` the same way on 1 000 000 ticks when the module exports it.
//! 3. **Instantiation**: `WasmStrategy::build` from the loaded module (store, start function, `param` per
//!    parameter, `init`, `warm_up_bars`) 2 000 times; `WasmModule::load` (validation, eager compilation, a
//!    dry instantiation) 50 times.
//! 4. **1 000 instances**: built and kept, the process's resident memory (`VmRSS`) before, after building,
//!    and after one bar each (a running instance has touched its stack). Measured first, before the bars
//!    and ticks are allocated.
//! 5. **Backtest**: 1 000 000 random-walk EURUSD ticks 250 ms apart (4 166 M1 bars, as `bench backtest`)
//!    through `Backtest` with the native kind and with the module registered as `wasm:<stem>`; best of
//!    three, alternated.

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use hdrhistogram::Histogram;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use rust_decimal::Decimal;

use super::{cpu_model, rss_mb};
use crate::backtest::{Backtest, BacktestConfig};
use crate::domain::{Bar, Tick, Timeframe};
use crate::sim::feed::RandomWalk;
use crate::strategies::wasm::{WasmLimits, WasmManifest, WasmModule, WasmStrategy};
use crate::strategies::{EmaCross, Params, Strategy, StrategyRegistry};

const BARS: usize = 1_000_000;
const WARM_UP_CALLS: usize = 10_000;
const TRIVIAL_CALLS: usize = 1_000_000;
const BUILDS: usize = 2_000;
const LOADS: usize = 50;
const INSTANCES: usize = 1_000;
const TICKS: usize = 1_000_000;
const BACKTEST_RUNS: usize = 3;
const SEED: u64 = 0x5747_2a7e;
/// The periods measured: the usual MACD pair and a long-term one.
const SETTINGS: [(usize, usize); 2] = [(12, 26), (50, 200)];

/// Targets of issue 28.
const CALL_TARGET_NS: f64 = 100.0;
const ON_TICK_P99_TARGET_NS: f64 = 5_000.0;
const BUILD_TARGET_NS: f64 = 50_000.0;

/// A module to measure: its bytes, manifest and name.
struct Guest {
    stem: String,
    path: PathBuf,
    bytes: Vec<u8>,
    manifest: WasmManifest,
}

impl Guest {
    fn read(path: &Path, manifest: Option<&Path>) -> anyhow::Result<Self> {
        let bytes = std::fs::read(path).with_context(|| format!("{}", path.display()))?;
        let manifest = match manifest {
            Some(m) => {
                let text =
                    std::fs::read_to_string(m).with_context(|| format!("{}", m.display()))?;
                serde_json::from_str(&text).with_context(|| format!("{}", m.display()))?
            }
            None => WasmManifest::default(),
        };
        let stem = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "module".into());
        Ok(Self {
            stem,
            path: path.to_owned(),
            bytes,
            manifest,
        })
    }

    fn load(&self) -> anyhow::Result<Arc<WasmModule>> {
        WasmModule::load(&self.bytes, self.manifest.clone(), WasmLimits::default())
            .map_err(|e| anyhow::anyhow!("{}: {e}", self.path.display()))
    }

    fn declares(&self, name: &str) -> bool {
        self.manifest.params.iter().any(|p| p.name == name)
    }
}

/// One setting: the native periods and what the module is given.
struct Setting {
    label: String,
    fast: usize,
    slow: usize,
    params: Params,
}

fn settings_of(guest: &Guest) -> Vec<Setting> {
    let periods = |fast: usize, slow: usize| -> Params {
        [
            ("fast".to_owned(), fast as f64),
            ("slow".to_owned(), slow as f64),
        ]
        .into()
    };
    if guest.declares("fast") && guest.declares("slow") {
        SETTINGS
            .iter()
            .map(|&(fast, slow)| Setting {
                label: format!("{fast}/{slow}"),
                fast,
                slow,
                params: periods(fast, slow),
            })
            .collect()
    } else {
        // A module without those parameters runs on its defaults beside the native 12/26.
        vec![Setting {
            label: "12/26 (module: its defaults)".into(),
            fast: 12,
            slow: 26,
            params: Params::new(),
        }]
    }
}

fn volume() -> Decimal {
    Decimal::new(1, 1)
}

/// The table printed at the end: measure, native, module, target, verdict.
#[derive(Default)]
struct Table(Vec<[String; 5]>);

impl Table {
    fn row(&mut self, measure: String, native: String, wasm: String, target: &str, verdict: &str) {
        self.0
            .push([measure, native, wasm, target.into(), verdict.into()]);
    }

    fn print(&self) {
        println!("| measure | native | WebAssembly (wasmi) | target | |");
        println!("|---|---|---|---|---|");
        for r in &self.0 {
            println!("| {} | {} | {} | {} | {} |", r[0], r[1], r[2], r[3], r[4]);
        }
    }
}

fn verdict(met: bool) -> &'static str {
    if met {
        "met"
    } else {
        "MISSED"
    }
}

/// Nanoseconds, or microseconds from 1 µs.
fn ns(x: f64) -> String {
    if x < 1_000.0 {
        format!("{x:.0} ns")
    } else {
        format!("{:.2} µs", x / 1e3)
    }
}

/// Latencies in nanoseconds, every sample kept, with the true maximum.
struct Nanos {
    hist: Histogram<u64>,
    max: u64,
}

impl Nanos {
    fn new() -> anyhow::Result<Self> {
        Ok(Self {
            // 1 ns to 60 s, 3 significant digits.
            hist: Histogram::new_with_bounds(1, 60_000_000_000, 3)?,
            max: 0,
        })
    }

    fn record(&mut self, d: Duration) {
        let n = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX).max(1);
        self.hist.saturating_record(n);
        self.max = self.max.max(n);
    }

    /// The value at quantile `q`, in ns; never above the true maximum.
    fn at(&self, q: f64) -> f64 {
        self.hist.value_at_quantile(q).min(self.max) as f64
    }

    fn summary(&self) -> String {
        format!(
            "p50 {} / p99 {} / max {}",
            ns(self.at(0.5)),
            ns(self.at(0.99)),
            ns(self.max as f64)
        )
    }
}

pub fn run(module: Option<&Path>, manifest: Option<&Path>) -> anyhow::Result<()> {
    println!(
        "strategies: build {}; {} cores, {}",
        if cfg!(debug_assertions) {
            "debug (figures are only meaningful with --release)"
        } else {
            "release"
        },
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0),
        cpu_model()
    );
    let (guest, others) = match module {
        Some(path) => (Guest::read(path, manifest)?, Vec::new()),
        None => {
            let dir = examples()?;
            let rust = Guest::read(
                &dir.join("ema_cross_rust.wasm"),
                Some(&dir.join("ema_cross_rust.json")),
            )?;
            let c = dir.join("ema_cross_c.wasm");
            let others = if c.exists() {
                vec![Guest::read(&c, Some(&dir.join("ema_cross_c.json")))?]
            } else {
                Vec::new()
            };
            (rust, others)
        }
    };
    println!(
        "strategies: module {} ({} bytes), wasmi interpreter, default limits (fuel {} per call)",
        guest.path.display(),
        guest.bytes.len(),
        WasmLimits::default().fuel_per_call
    );
    let started = Instant::now();
    let module = guest.load()?;
    let settings = settings_of(&guest);
    let mut table = Table::default();

    // Memory first, before the bars and ticks are allocated.
    instances(&guest, &module, &settings[0], &mut table)?;
    instantiation(&guest, &module, &settings, &mut table)?;
    trivial_call(&guest, &mut table)?;

    let bars = random_walk_bars(BARS);
    for setting in &settings {
        on_bar(&guest, &module, setting, &bars, &mut table)?;
    }
    for other in &others {
        let loaded = other.load()?;
        for setting in settings_of(other).iter().filter(|s| s.fast == 12) {
            on_bar_of_other(other, &loaded, setting, &bars, &mut table)?;
        }
    }
    drop(bars);

    let ticks: Vec<Tick> = RandomWalk::new(
        RandomWalk::default_symbols(&["EURUSD".into()]),
        1_700_000_040_000,
        250,
        1,
    )
    .take(TICKS)
    .collect();
    on_tick(&guest, &module, &settings[0], &ticks, &mut table)?;
    for setting in &settings {
        backtest(&guest, &module, setting, &ticks, &mut table)?;
    }
    drop(ticks);

    println!(
        "strategies: done in {:.1} s; machine: {} cores, {}; build {}",
        started.elapsed().as_secs_f64(),
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0),
        cpu_model(),
        if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        },
    );
    println!();
    table.print();
    Ok(())
}

/// `target/wasm-examples/` of the source tree, built by `scripts/build-wasm-examples.sh` when the Rust
/// example is absent there.
fn examples() -> anyhow::Result<PathBuf> {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = repo.join("target/wasm-examples");
    if dir.join("ema_cross_rust.wasm").exists() && dir.join("ema_cross_rust.json").exists() {
        return Ok(dir);
    }
    let script = repo.join("scripts/build-wasm-examples.sh");
    if !script.exists() {
        bail!(
            "{} is absent and so is {} to build it: give a module with --module FILE.wasm --module-manifest FILE.json",
            dir.join("ema_cross_rust.wasm").display(),
            script.display()
        );
    }
    println!("strategies: building the guest examples: bash scripts/build-wasm-examples.sh");
    let run = std::process::Command::new("bash")
        .arg(&script)
        .current_dir(repo)
        .output()
        .context("running scripts/build-wasm-examples.sh")?;
    if !run.status.success() {
        bail!(
            "scripts/build-wasm-examples.sh failed ({}):\n{}\n{}",
            run.status,
            String::from_utf8_lossy(&run.stdout),
            String::from_utf8_lossy(&run.stderr)
        );
    }
    print!("{}", String::from_utf8_lossy(&run.stdout));
    Ok(dir)
}

/// Bars of a seeded random walk around 1.1, five decimals: each opens at the last close, closes up to 20
/// points away, its high and low a few points beyond.
fn random_walk_bars(n: usize) -> Vec<Bar> {
    let mut rng = SmallRng::seed_from_u64(SEED);
    let mut price: i64 = 110_000;
    (0..n)
        .map(|i| {
            let open = price;
            price = (price + rng.gen_range(-20..=20)).max(1_000);
            let high = open.max(price) + rng.gen_range(0..=5);
            let low = open.min(price) - rng.gen_range(0..=5);
            Bar {
                symbol: "EURUSD".into(),
                timeframe: Timeframe::M1,
                open_time_ms: 1_700_000_040_000 + i as i64 * 60_000,
                open: Decimal::new(open, 5),
                high: Decimal::new(high, 5),
                low: Decimal::new(low, 5),
                close: Decimal::new(price, 5),
                tick_volume: rng.gen_range(1..=200),
            }
        })
        .collect()
}

// ---- 4. instances -----------------------------------------------------------------------------------------

fn instances(
    guest: &Guest,
    module: &Arc<WasmModule>,
    setting: &Setting,
    table: &mut Table,
) -> anyhow::Result<()> {
    let bar = random_walk_bars(1).remove(0);
    let mut each = Nanos::new()?;
    let before = rss_mb();
    let started = Instant::now();
    let mut all = Vec::with_capacity(INSTANCES);
    for _ in 0..INSTANCES {
        let one = Instant::now();
        let built = WasmStrategy::build(&guest.stem, module.clone(), &setting.params, volume())?;
        each.record(one.elapsed());
        all.push(built);
    }
    let took = started.elapsed();
    let built = rss_mb();
    for s in &mut all {
        black_box(s.on_bar(&bar));
    }
    let running = rss_mb();
    let per = |mb: f64| (mb - before) * 1024.0 / INSTANCES as f64;
    println!(
        "strategies: {INSTANCES} instances built in {:.1} ms (each {}); resident {before:.1} MB → {built:.1} MB \
         built → {running:.1} MB after one bar each: {:.1} KB per instance ({:.1} KB built); linear memory \
         declared: {}",
        took.as_secs_f64() * 1e3,
        each.summary(),
        per(running),
        per(built),
        memory_declared(&guest.bytes)
    );
    table.row(
        format!(
            "{INSTANCES} instances ({}) built and kept: total; each `build` p50 / p99 / max",
            setting.label
        ),
        "—".into(),
        format!("{:.1} ms; {}", took.as_secs_f64() * 1e3, each.summary()),
        "p99 ≤ 50 µs",
        verdict(each.at(0.99) <= BUILD_TARGET_NS),
    );
    table.row(
        format!(
            "… resident memory, before → built → after one bar each (linear memory declared: {})",
            memory_declared(&guest.bytes)
        ),
        format!(
            "{} bytes per `EmaCross` (its size)",
            std::mem::size_of::<EmaCross>()
        ),
        format!(
            "{before:.1} → {built:.1} → {running:.1} MB: **{:.1} KB per instance** ({:.1} KB before its first bar)",
            per(running),
            per(built)
        ),
        "",
        "",
    );
    drop(all);
    Ok(())
}

/// The initial linear memory the module declares, in 64 KiB pages.
fn memory_declared(bytes: &[u8]) -> String {
    let engine = wasmi::Engine::default();
    let pages = wasmi::Module::new(&engine, bytes).ok().and_then(|m| {
        m.exports().find_map(|e| match e.ty() {
            wasmi::ExternType::Memory(ty) if e.name() == "memory" => Some(ty.minimum()),
            _ => None,
        })
    });
    match pages {
        Some(p) => format!("{p} × 64 KiB"),
        None => "unknown".into(),
    }
}

// ---- 3. instantiation -------------------------------------------------------------------------------------

fn instantiation(
    guest: &Guest,
    module: &Arc<WasmModule>,
    settings: &[Setting],
    table: &mut Table,
) -> anyhow::Result<()> {
    let mut loads = Nanos::new()?;
    for _ in 0..LOADS {
        let started = Instant::now();
        let loaded = guest.load()?;
        loads.record(started.elapsed());
        drop(loaded);
    }
    println!(
        "strategies: WasmModule::load ({} bytes), {LOADS} times: {}",
        guest.bytes.len(),
        loads.summary()
    );
    table.row(
        format!(
            "`WasmModule::load` ({} bytes: validation, eager compilation, dry instantiation), {LOADS} loads",
            guest.bytes.len()
        ),
        "—".into(),
        loads.summary(),
        "",
        "",
    );
    for setting in settings {
        let mut builds = Nanos::new()?;
        for _ in 0..BUILDS {
            let started = Instant::now();
            let built = WasmStrategy::build(&guest.stem, module.clone(), &setting.params, volume());
            let took = started.elapsed();
            drop(built?);
            builds.record(took);
        }
        let mut natives = Nanos::new()?;
        for _ in 0..BUILDS {
            let started = Instant::now();
            let built = EmaCross::build(&native_params(setting), volume());
            let took = started.elapsed();
            drop(built?);
            natives.record(took);
        }
        println!(
            "strategies: {} build from the loaded module, {BUILDS} times: {} (native EmaCross::build: {})",
            setting.label,
            builds.summary(),
            natives.summary()
        );
        table.row(
            format!(
                "instantiation from the loaded module, {}: `WasmStrategy::build` (store, start, `param` × {}, `init`, `warm_up_bars`), {BUILDS} builds; native `EmaCross::build`",
                setting.label,
                guest.manifest.params.len()
            ),
            natives.summary(),
            builds.summary(),
            "p99 ≤ 50 µs",
            verdict(builds.at(0.99) <= BUILD_TARGET_NS),
        );
    }
    Ok(())
}

fn native_params(setting: &Setting) -> Params {
    [
        ("fast".to_owned(), setting.fast as f64),
        ("slow".to_owned(), setting.slow as f64),
    ]
    .into()
}

// ---- 1. the call itself -----------------------------------------------------------------------------------

/// What `trellis.*` imports touch here: nothing that matters, `trellis_interface_version` calls none.
struct Bare;

fn trivial_call(guest: &Guest, table: &mut Table) -> anyhow::Result<()> {
    let limits = WasmLimits::default();
    let mut config = wasmi::Config::default();
    config
        .consume_fuel(true)
        .compilation_mode(wasmi::CompilationMode::Eager);
    let engine = wasmi::Engine::new(&config);
    let module = wasmi::Module::new(&engine, &guest.bytes[..])?;
    let mut linker = wasmi::Linker::<Bare>::new(&engine);
    linker.func_wrap(
        "trellis",
        "set_target",
        |_: wasmi::Caller<'_, Bare>, _: f64| {},
    )?;
    linker.func_wrap("trellis", "random", |_: wasmi::Caller<'_, Bare>| 0.5f64)?;
    linker.func_wrap(
        "trellis",
        "log",
        |_: wasmi::Caller<'_, Bare>, _: i32, _: i32| {},
    )?;
    let mut store = wasmi::Store::new(&engine, Bare);
    store.set_fuel(limits.fuel_per_call)?;
    let instance = linker.instantiate_and_start(&mut store, &module)?;
    let version = instance.get_typed_func::<(), i32>(&store, "trellis_interface_version")?;
    let call = |store: &mut wasmi::Store<Bare>| -> anyhow::Result<i32> {
        store.set_fuel(limits.fuel_per_call)?;
        Ok(version.call(store, ())?)
    };
    for _ in 0..WARM_UP_CALLS {
        black_box(call(&mut store)?);
    }
    let started = Instant::now();
    for _ in 0..TRIVIAL_CALLS {
        black_box(call(&mut store)?);
    }
    let mean = started.elapsed().as_secs_f64() * 1e9 / TRIVIAL_CALLS as f64;
    let mut each = Nanos::new()?;
    for _ in 0..TRIVIAL_CALLS {
        let started = Instant::now();
        let v = call(&mut store)?;
        let took = started.elapsed();
        black_box(v);
        each.record(took);
    }
    // What `Instant` around a call adds to every timed sample.
    let mut timer = Nanos::new()?;
    for _ in 0..TRIVIAL_CALLS {
        let started = Instant::now();
        timer.record(black_box(started).elapsed());
    }
    println!(
        "strategies: host → guest call of the trivial export trellis_interface_version (fuel set per call): \
         mean {} over {TRIVIAL_CALLS}; each timed: {} (the timer alone: {})",
        ns(mean),
        each.summary(),
        timer.summary()
    );
    table.row(
        format!("host → guest call of a trivial export (`trellis_interface_version` → 1, fuel set before each call), mean of {TRIVIAL_CALLS}; each timed"),
        "—".into(),
        format!("**{}**; {}", ns(mean), each.summary()),
        "≤ 100 ns",
        verdict(mean <= CALL_TARGET_NS),
    );
    table.row(
        "`Instant::now()` + `elapsed()` alone (inside every timed sample)".into(),
        timer.summary(),
        String::new(),
        "",
        "",
    );
    Ok(())
}

// ---- 2. on_bar --------------------------------------------------------------------------------------------

/// A run of `on_bar` over the bars: the untimed mean, every call timed, and a digest of the decisions.
struct OnBar {
    mean_ns: f64,
    each: Nanos,
    digest: u64,
    decisions: u64,
}

/// Mixes a decision into a digest (None, a target's sign and size).
fn mix(digest: u64, d: Option<Decimal>) -> u64 {
    let code = match d {
        None => 0,
        Some(t) => 1 + ((t.mantissa() as u64) ^ (u64::from(t.scale()) << 56)),
    };
    digest.wrapping_mul(0x100_0000_01b3).wrapping_add(code)
}

fn time_on_bar(
    mut fresh: impl FnMut() -> anyhow::Result<Box<dyn Strategy>>,
    bars: &[Bar],
) -> anyhow::Result<OnBar> {
    // The untimed mean, after a warm-up on the same instance.
    let mut s = fresh()?;
    for b in bars.iter().take(WARM_UP_CALLS) {
        black_box(s.on_bar(b));
    }
    let mut s = fresh()?;
    let started = Instant::now();
    for b in bars {
        black_box(s.on_bar(black_box(b)));
    }
    let mean_ns = started.elapsed().as_secs_f64() * 1e9 / bars.len() as f64;
    // Every call timed, on a fresh instance: the decisions of the whole series from its start.
    let mut s = fresh()?;
    let mut each = Nanos::new()?;
    let mut digest = 0u64;
    let mut decisions = 0u64;
    for b in bars {
        let started = Instant::now();
        let d = s.on_bar(b);
        let took = started.elapsed();
        each.record(took);
        digest = mix(digest, d);
        decisions += u64::from(d.is_some());
    }
    Ok(OnBar {
        mean_ns,
        each,
        digest,
        decisions,
    })
}

/// What a module's `on_bar` pays on the host besides the call: its four decimals to `f64` and the volume
/// to `i64` (the native strategy converts the close too), and the target back to lots — the host's own
/// functions (`strategies::wasm::{bar_args, target_lots}`), timed without a call.
fn conversions(bars: &[Bar]) -> f64 {
    let volume = volume();
    let started = Instant::now();
    for b in bars {
        let args = black_box(crate::strategies::wasm::bar_args(b));
        let t = if args.1 >= args.2 { 1.0 } else { -1.0 };
        black_box(crate::strategies::wasm::target_lots(black_box(t), volume));
    }
    started.elapsed().as_secs_f64() * 1e9 / bars.len() as f64
}

fn on_bar(
    guest: &Guest,
    module: &Arc<WasmModule>,
    setting: &Setting,
    bars: &[Bar],
    table: &mut Table,
) -> anyhow::Result<()> {
    let native = time_on_bar(
        || {
            Ok(Box::new(EmaCross::new(
                setting.fast,
                setting.slow,
                volume(),
            )))
        },
        bars,
    )?;
    let wasm = time_on_bar(
        || {
            Ok(Box::new(WasmStrategy::build(
                &guest.stem,
                module.clone(),
                &setting.params,
                volume(),
            )?))
        },
        bars,
    )?;
    // Fuel of one call, over the first bars of a fresh instance.
    let mut s = WasmStrategy::build(&guest.stem, module.clone(), &setting.params, volume())?;
    let (mut fuel_min, mut fuel_max, mut fuel_sum) = (u64::MAX, 0u64, 0u64);
    let fuel_bars = bars.len().min(WARM_UP_CALLS);
    for b in &bars[..fuel_bars] {
        black_box(s.on_bar(b));
        let f = s.fuel_used();
        (fuel_min, fuel_max, fuel_sum) = (fuel_min.min(f), fuel_max.max(f), fuel_sum + f);
    }
    let fuel_mean = fuel_sum as f64 / fuel_bars.max(1) as f64;
    let host = conversions(bars);
    let over = wasm.mean_ns - native.mean_ns;
    let same = native.digest == wasm.digest && native.decisions == wasm.decisions;
    println!(
        "strategies: on_bar {} over {} bars: native mean {}, each {}; module mean {}, each {}; fuel {fuel_min}–{fuel_max} \
         (mean {fuel_mean:.1}); {} decisions, {}",
        setting.label,
        bars.len(),
        ns(native.mean_ns),
        native.each.summary(),
        ns(wasm.mean_ns),
        wasm.each.summary(),
        wasm.decisions,
        if same {
            "equal to the native ones"
        } else {
            "NOT equal to the native ones"
        }
    );
    println!(
        "strategies: on_bar {}: module − native = {} a call, of which the host's conversions {} (timed alone)",
        setting.label,
        ns(over),
        ns(host)
    );
    table.row(
        format!(
            "`on_bar` {}, mean over {} bars (untimed loop)",
            setting.label,
            bars.len()
        ),
        ns(native.mean_ns),
        format!(
            "**{}** ({:.0}× native)",
            ns(wasm.mean_ns),
            wasm.mean_ns / native.mean_ns.max(0.001)
        ),
        "",
        "",
    );
    table.row(
        format!(
            "`on_bar` {}, each call timed: p50 / p99 / max",
            setting.label
        ),
        native.each.summary(),
        format!("**{}**", wasm.each.summary()),
        "",
        "",
    );
    table.row(
        format!(
            "… the module's cost over native (mean − mean), of which host conversions (4 decimals → `f64`, target → lots) / the rest: call + guest's {fuel_mean:.0} instructions (fuel {fuel_min}–{fuel_max})"
        ),
        String::new(),
        format!("{} = {} + {}", ns(over), ns(host), ns(over - host)),
        "≤ 100 ns",
        verdict(over <= CALL_TARGET_NS),
    );
    table.row(
        format!("… decisions over the {} bars", bars.len()),
        format!("{}", native.decisions),
        format!(
            "{} — {}",
            wasm.decisions,
            if same {
                "equal, bar by bar"
            } else {
                "DIFFERENT"
            }
        ),
        "",
        "",
    );
    Ok(())
}

/// `on_bar` of a further example module (the C one): its times beside the main module's.
fn on_bar_of_other(
    guest: &Guest,
    module: &Arc<WasmModule>,
    setting: &Setting,
    bars: &[Bar],
    table: &mut Table,
) -> anyhow::Result<()> {
    let wasm = time_on_bar(
        || {
            Ok(Box::new(WasmStrategy::build(
                &guest.stem,
                module.clone(),
                &setting.params,
                volume(),
            )?))
        },
        bars,
    )?;
    let mut native = EmaCross::new(setting.fast, setting.slow, volume());
    let digest = bars
        .iter()
        .fold(0u64, |digest, b| mix(digest, native.on_bar(b)));
    let same = digest == wasm.digest;
    println!(
        "strategies: on_bar {} of {} ({} bytes): mean {}, each {}; decisions {}",
        setting.label,
        guest.stem,
        guest.bytes.len(),
        ns(wasm.mean_ns),
        wasm.each.summary(),
        if same {
            "equal to the native ones"
        } else {
            "NOT equal"
        }
    );
    table.row(
        format!(
            "`on_bar` {} of `{}.wasm` ({} bytes, clang -O2): mean; each call p50 / p99 / max",
            setting.label,
            guest.stem,
            guest.bytes.len()
        ),
        String::new(),
        format!(
            "{}; {} — decisions {}",
            ns(wasm.mean_ns),
            wasm.each.summary(),
            if same { "equal" } else { "DIFFERENT" }
        ),
        "",
        "",
    );
    Ok(())
}

// ---- on_tick ----------------------------------------------------------------------------------------------

fn on_tick(
    guest: &Guest,
    module: &Arc<WasmModule>,
    setting: &Setting,
    ticks: &[Tick],
    table: &mut Table,
) -> anyhow::Result<()> {
    let mut s = WasmStrategy::build(&guest.stem, module.clone(), &setting.params, volume())?;
    if !s.wants_ticks() {
        println!(
            "strategies: {} does not export on_tick: nothing to time (its on_bar figures stand in: an on_bar carries more)",
            guest.stem
        );
        table.row(
            "`on_tick` p99".into(),
            "—".into(),
            format!(
                "not measured: `{}` does not export `on_tick` (nor does the native `ema_cross` take ticks); `on_bar` p99 above stands in",
                guest.stem
            ),
            "p99 ≤ 5 µs",
            "n/a",
        );
        return Ok(());
    }
    for t in ticks.iter().take(WARM_UP_CALLS) {
        black_box(s.on_tick(t));
    }
    let mut s = WasmStrategy::build(&guest.stem, module.clone(), &setting.params, volume())?;
    let mut each = Nanos::new()?;
    for t in ticks {
        let started = Instant::now();
        let d = s.on_tick(t);
        let took = started.elapsed();
        black_box(d);
        each.record(took);
    }
    println!(
        "strategies: on_tick of {} over {} ticks: {}",
        guest.stem,
        ticks.len(),
        each.summary()
    );
    table.row(
        format!(
            "`on_tick` {}, each of {} ticks timed: p50 / p99 / max",
            setting.label,
            ticks.len()
        ),
        "—".into(),
        format!("**{}**", each.summary()),
        "p99 ≤ 5 µs",
        verdict(each.at(0.99) <= ON_TICK_P99_TARGET_NS),
    );
    Ok(())
}

// ---- 5. backtest ------------------------------------------------------------------------------------------

/// One backtest over the ticks: (ticks/s, bars, orders).
fn backtest_once(
    kind: &str,
    params: &Params,
    registry: &StrategyRegistry,
    ticks: &[Tick],
) -> anyhow::Result<(f64, u64, u64)> {
    let mut bt = Backtest::new(
        BacktestConfig::new("EURUSD", kind, params.clone(), Timeframe::M1),
        registry,
    )?;
    let started = Instant::now();
    for t in ticks {
        bt.on_tick(t);
    }
    let elapsed = started.elapsed();
    let (report, _) = bt.finish();
    Ok((
        ticks.len() as f64 / elapsed.as_secs_f64(),
        report.bars,
        report.orders as u64,
    ))
}

fn backtest(
    guest: &Guest,
    module: &Arc<WasmModule>,
    setting: &Setting,
    ticks: &[Tick],
    table: &mut Table,
) -> anyhow::Result<()> {
    let registry = StrategyRegistry::default();
    let kind = registry.register_wasm(&guest.stem, module.clone());
    let native_params = native_params(setting);
    let (mut native, mut wasm) = ((0.0f64, 0, 0), (0.0f64, 0, 0));
    for _ in 0..BACKTEST_RUNS {
        let n = backtest_once("ema_cross", &native_params, &registry, ticks)?;
        let w = backtest_once(&kind, &setting.params, &registry, ticks)?;
        if n.0 > native.0 {
            native = n;
        }
        if w.0 > wasm.0 {
            wasm = w;
        }
    }
    println!(
        "strategies: backtest of {} ticks, {} M1 bars, {}: native {:.0} ticks/s ({} orders), {kind} {:.0} ticks/s ({} orders), best of {BACKTEST_RUNS}",
        ticks.len(),
        native.1,
        setting.label,
        native.0,
        native.2,
        wasm.0,
        wasm.2
    );
    table.row(
        format!(
            "backtest, {} ticks ({} M1 bars), {}: ticks/s, best of {BACKTEST_RUNS}",
            ticks.len(),
            native.1,
            setting.label
        ),
        format!("{:.2} M ticks/s ({} orders)", native.0 / 1e6, native.2),
        format!(
            "**{:.2} M ticks/s** ({} orders{}; {:.0} % of native)",
            wasm.0 / 1e6,
            wasm.2,
            if wasm.2 == native.2 {
                ", the same"
            } else {
                ", DIFFERENT"
            },
            wasm.0 / native.0.max(1.0) * 100.0
        ),
        "",
        "",
    );
    Ok(())
}
