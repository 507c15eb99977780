//! `WasmStrategy`: one instance of a module, driven through the [`Strategy`] trait.
//!
//! Each instance owns its `Store` (its memory, globals, fuel and host state); nothing is shared between
//! instances but the compiled code. Every call sets the fuel to one call's budget first, so a call's cost
//! never depends on what earlier calls spent. A failed call (trap, out of fuel, memory over the limit, a
//! status or target out of the interface) panics: see the module doc of `strategies::wasm` for why.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rust_decimal::prelude::FromPrimitive;
use rust_decimal::Decimal;
use wasmi::{Instance, Store, TrapCode, TypedFunc, TypedResumableCall, WasmParams, WasmResults};

use super::host::HostState;
use super::{WasmModule, INTERFACE_VERSION};
use crate::domain::{Bar, Tick};
use crate::strategies::{ParamError, Params, Strategy, DEFAULT_WARM_UP_BARS};

/// The largest |target| a guest may ask for, in multiples of the strategy's volume.
pub const MAX_TARGET_MULTIPLE: f64 = 1_000.0;

/// Bars of warm-up a module may ask for.
const MAX_WARM_UP_BARS: i32 = 100_000;

type OnBar = TypedFunc<(f64, f64, f64, f64, i64, i64), i32>;
type OnTick = TypedFunc<(f64, f64, i64), i32>;
type OnFill = TypedFunc<(f64, f64), ()>;

/// A strategy whose decisions come from a WebAssembly module.
pub struct WasmStrategy {
    kind: String,
    module: Arc<WasmModule>,
    store: Store<HostState>,
    on_bar: OnBar,
    on_tick: Option<OnTick>,
    on_fill: Option<OnFill>,
    warm_up_bars: usize,
    volume: Decimal,
    /// Fuel the last call used.
    fuel_used: u64,
}

impl std::fmt::Debug for WasmStrategy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WasmStrategy")
            .field("kind", &self.kind)
            .field("warm_up_bars", &self.warm_up_bars)
            .finish_non_exhaustive()
    }
}

impl WasmStrategy {
    /// An instance of `module` as strategy kind `kind`: parameters checked against the manifest (unknown
    /// names and values out of bounds refused, naming them), then passed to `param` in the manifest's
    /// order, defaults for those not given, then `init()`, which may refuse them by returning non-zero.
    pub fn build(
        kind: &str,
        module: Arc<WasmModule>,
        params: &Params,
        volume: Decimal,
    ) -> Result<Self, ParamError> {
        let error = |message: String| ParamError {
            kind: kind.to_owned(),
            message,
        };
        let declared = &module.manifest.params;
        if let Some(unknown) = params
            .keys()
            .find(|k| !declared.iter().any(|p| &p.name == *k))
        {
            let known: Vec<&str> = declared.iter().map(|p| p.name.as_str()).collect();
            return Err(error(format!(
                "unknown parameter `{unknown}` (known: {})",
                known.join(", ")
            )));
        }
        let mut values = Vec::with_capacity(declared.len());
        for p in declared {
            let v = params.get(&p.name).copied().unwrap_or(p.default);
            p.check(v)
                .map_err(|why| error(format!("`{}` {why}", p.name)))?;
            values.push(v);
        }
        let failed =
            |what: &str, e: wasmi::Error| error(format!("the module's {what} failed: {e}"));
        let (mut store, instance) = module
            .instantiate(kind)
            .map_err(|e| failed("instantiation", e))?;
        let exports = Exports::of(&instance, &store).map_err(|e| failed("interface", e))?;
        if let Some(param) = exports.param {
            for (i, v) in values.iter().enumerate() {
                call(&mut store, &module, param, (i as i32, *v))
                    .map_err(|e| failed("param()", e))?;
            }
        }
        if let Some(init) = exports.init {
            let status = call(&mut store, &module, init, ()).map_err(|e| failed("init()", e))?;
            if status != 0 {
                return Err(error(format!(
                    "the module refused its parameters (init() returned {status})"
                )));
            }
        }
        let warm_up_bars = match exports.warm_up_bars {
            Some(f) => match call(&mut store, &module, f, ()) {
                Ok(n) if (0..=MAX_WARM_UP_BARS).contains(&n) => n as usize,
                Ok(n) => {
                    return Err(error(format!(
                        "warm_up_bars() returned {n}, not 0 to {MAX_WARM_UP_BARS}"
                    )))
                }
                Err(e) => return Err(failed("warm_up_bars()", e)),
            },
            None => DEFAULT_WARM_UP_BARS,
        };
        Ok(Self {
            kind: kind.to_owned(),
            module,
            store,
            on_bar: exports.on_bar,
            on_tick: exports.on_tick,
            on_fill: exports.on_fill,
            warm_up_bars,
            volume,
            fuel_used: 0,
        })
    }

    /// Fuel (about one unit per instruction) the last call into the guest used.
    pub fn fuel_used(&self) -> u64 {
        self.fuel_used
    }

    /// Lines the guest logged over its per-call budget, dropped.
    pub fn logs_dropped(&self) -> u64 {
        self.store.data().logs_dropped
    }

    /// Runs one decision call and turns its status into a target; panics on any failure (contained by
    /// the host).
    fn decide<P: WasmParams>(
        &mut self,
        what: &str,
        f: TypedFunc<P, i32>,
        args: P,
    ) -> Option<Decimal> {
        self.store.data_mut().target = None;
        let result = call(&mut self.store, &self.module, f, args);
        self.fuel_used = self.spent();
        let status = match result {
            Ok(s) => s,
            Err(e) => self.fail(what, &e),
        };
        let target = self.store.data().target;
        match (status, target) {
            (0, _) => None,
            (1, Some(t)) if t.is_finite() && t.abs() <= MAX_TARGET_MULTIPLE => {
                match target_lots(t, self.volume) {
                    Some(lots) => Some(lots),
                    None => panic!("{}: {what} set a target of {t}, not a number of lots", self.kind),
                }
            }
            (1, Some(t)) => panic!(
                "{}: {what} set a target of {t}; a target is a finite multiple of the volume within ±{MAX_TARGET_MULTIPLE}",
                self.kind
            ),
            (1, None) => panic!(
                "{}: {what} returned 1 (target set) without calling trellis.set_target",
                self.kind
            ),
            (s, _) => panic!(
                "{}: {what} returned status {s}; interface v{INTERFACE_VERSION} knows 0 (no change) and 1 (target set)",
                self.kind
            ),
        }
    }

    fn spent(&self) -> u64 {
        let left = self.store.get_fuel().unwrap_or(0);
        self.module.limits.fuel_per_call.saturating_sub(left)
    }

    fn fail(&self, what: &str, e: &wasmi::Error) -> ! {
        match e.as_trap_code() {
            Some(TrapCode::OutOfFuel) => panic!(
                "{}: {what} ran out of fuel: more than {} instructions in one call",
                self.kind, self.module.limits.fuel_per_call
            ),
            Some(TrapCode::GrowthOperationLimited) => panic!(
                "{}: {what} grew its memory past the limit of {} bytes",
                self.kind, self.module.limits.max_memory_bytes
            ),
            _ => panic!("{}: {what} failed: {e}", self.kind),
        }
    }
}

/// A target in multiples of the volume as lots, rounded to 8 decimals. Whole multiples (long 1, short 1,
/// flat) are exact integers and need no binary-to-decimal conversion.
pub(crate) fn target_lots(t: f64, volume: Decimal) -> Option<Decimal> {
    let multiple = if t.fract() == 0.0 {
        Some(Decimal::from(t as i64))
    } else {
        Decimal::from_f64(t)
    };
    multiple.map(|m| (m * volume).round_dp(8).normalize())
}

/// A bar as `on_bar`'s arguments.
pub(crate) fn bar_args(bar: &Bar) -> (f64, f64, f64, f64, i64, i64) {
    let f = crate::strategies::decimal_f64;
    (
        f(bar.open),
        f(bar.high),
        f(bar.low),
        f(bar.close),
        i64::try_from(bar.tick_volume).unwrap_or(i64::MAX),
        bar.open_time_ms,
    )
}

impl Strategy for WasmStrategy {
    fn on_bar(&mut self, bar: &Bar) -> Option<Decimal> {
        self.decide("on_bar", self.on_bar, bar_args(bar))
    }

    fn on_tick(&mut self, tick: &Tick) -> Option<Decimal> {
        let on_tick = self.on_tick?;
        let f = crate::strategies::decimal_f64;
        self.decide(
            "on_tick",
            on_tick,
            (f(tick.bid), f(tick.ask), tick.time_msc),
        )
    }

    fn on_fill(&mut self, signed_volume: Decimal, price: Decimal) {
        let Some(on_fill) = self.on_fill else {
            return;
        };
        let args = (
            crate::strategies::decimal_f64(signed_volume),
            crate::strategies::decimal_f64(price),
        );
        let result = call(&mut self.store, &self.module, on_fill, args);
        self.fuel_used = self.spent();
        if let Err(e) = result {
            self.fail("on_fill", &e);
        }
    }

    fn wants_ticks(&self) -> bool {
        self.on_tick.is_some()
    }

    fn warm_up_bars(&self) -> usize {
        self.warm_up_bars
    }
}

/// The exports of interface v1, typed (their signatures were checked at load).
struct Exports {
    on_bar: OnBar,
    on_tick: Option<OnTick>,
    on_fill: Option<OnFill>,
    param: Option<TypedFunc<(i32, f64), ()>>,
    init: Option<TypedFunc<(), i32>>,
    warm_up_bars: Option<TypedFunc<(), i32>>,
}

impl Exports {
    fn of(instance: &Instance, store: &Store<HostState>) -> Result<Self, wasmi::Error> {
        let optional = |name: &str| instance.get_func(store, name).is_some();
        Ok(Self {
            on_bar: instance.get_typed_func(store, "on_bar")?,
            on_tick: optional("on_tick")
                .then(|| instance.get_typed_func(store, "on_tick"))
                .transpose()?,
            on_fill: optional("on_fill")
                .then(|| instance.get_typed_func(store, "on_fill"))
                .transpose()?,
            param: optional("param")
                .then(|| instance.get_typed_func(store, "param"))
                .transpose()?,
            init: optional("init")
                .then(|| instance.get_typed_func(store, "init"))
                .transpose()?,
            warm_up_bars: optional("warm_up_bars")
                .then(|| instance.get_typed_func(store, "warm_up_bars"))
                .transpose()?,
        })
    }
}

thread_local! {
    /// The wall-clock limit of one call on this thread, if calls here are live (see [`set_call_deadline`]).
    static DEADLINE: std::cell::Cell<Option<Duration>> = const { std::cell::Cell::new(None) };
}

/// Fuel given at a time to a call under a deadline: the clock is read between slices only, so a call that
/// needs less never reads it. About 0.1–0.5 ms of interpretation.
const SLICE: u64 = 50_000;

/// Makes every call into a guest on this thread stop at `limit` of wall time, besides its fuel (`None`:
/// fuel only). The live strategy threads set it; backtests and optimisations, which must be deterministic,
/// do not: there fuel alone decides, instruction for instruction.
pub fn set_call_deadline(limit: Option<Duration>) {
    DEADLINE.with(|d| d.set(limit));
}

/// One call into the guest with a fresh budget of fuel and of log lines; under a deadline, run in slices
/// of fuel with the clock read between them.
fn call<P: WasmParams, R: WasmResults>(
    store: &mut Store<HostState>,
    module: &WasmModule,
    f: TypedFunc<P, R>,
    args: P,
) -> Result<R, wasmi::Error> {
    store.data_mut().log_budget = module.limits.log_lines_per_call;
    let budget = module.limits.fuel_per_call;
    let Some(limit) = DEADLINE.with(std::cell::Cell::get) else {
        store.set_fuel(budget)?;
        return f.call(store, args);
    };
    let started = Instant::now();
    let first = budget.min(SLICE);
    let mut left = budget - first;
    store.set_fuel(first)?;
    let mut state = f.call_resumable(&mut *store, args)?;
    loop {
        match state {
            TypedResumableCall::Finished(results) => {
                // What the call did not use, as if it had had its whole budget (`fuel_used`).
                let unused = store.get_fuel().unwrap_or(0);
                store.set_fuel(unused + left)?;
                return Ok(results);
            }
            TypedResumableCall::HostTrap(trap) => {
                return Err(wasmi::Error::new(trap.host_error().to_string()))
            }
            TypedResumableCall::OutOfFuel(more) => {
                let need = more.required_fuel().max(1);
                if left < need {
                    return Err(wasmi::Error::from(TrapCode::OutOfFuel));
                }
                if started.elapsed() > limit {
                    // What it did not use stays counted as unused (`fuel_used`: what it ran).
                    store.set_fuel(left)?;
                    return Err(wasmi::Error::new(format!(
                        "ran past its deadline of {} µs of wall time (the live limit of one call)",
                        limit.as_micros()
                    )));
                }
                let slice = left.min(SLICE.max(need));
                left -= slice;
                store.set_fuel(slice)?;
                state = more.resume(&mut *store)?;
            }
        }
    }
}
