//! Strategies: the `Strategy` trait, parameter validation and the built-ins.
//!
//! A strategy is plain code with no I/O. It sees closed bars (and ticks when it asks for them) and answers
//! with the position it wants to hold, in signed lots. The portfolio turns the difference between that
//! target and what the strategy holds (plus what is in flight) into orders, so a strategy that restarts, or
//! repeats itself, never doubles a position. The same objects run live (inside a supervised actor, behind
//! `catch_unwind`) and in the backtester.

mod donchian_breakout;
mod ema_cross;
mod model_signal;
mod rsi_reversion;
pub mod wasm;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};

use rust_decimal::Decimal;

pub use donchian_breakout::DonchianBreakout;
pub use ema_cross::EmaCross;
pub use model_signal::ModelSignal;
pub use rsi_reversion::RsiReversion;

use crate::domain::{Bar, Tick};

/// Strategy code. `Send` because instances move into actors; panics are contained by the caller.
pub trait Strategy: Send {
    /// A bar of the strategy's symbol and timeframe closed. `Some(target)` asks to hold `target` lots
    /// (positive long, negative short, zero flat); `None` leaves things as they are.
    fn on_bar(&mut self, bar: &Bar) -> Option<Decimal>;

    /// A tick of the strategy's symbol, delivered only when [`Strategy::wants_ticks`] is true.
    fn on_tick(&mut self, _tick: &Tick) -> Option<Decimal> {
        None
    }

    /// A prediction of the strategy's model deployment (`model` in its settings) for a bar that closed;
    /// answered like [`Strategy::on_bar`].
    fn on_prediction(&mut self, _prediction: &crate::domain::Prediction) -> Option<Decimal> {
        None
    }

    /// One of the strategy's orders filled (signed lots, price).
    fn on_fill(&mut self, _signed_volume: Decimal, _price: Decimal) {}

    fn wants_ticks(&self) -> bool {
        false
    }

    /// Closed bars this strategy needs behind it before its next decision is the one it would make on a
    /// long history: after a start, market data gives it at least this many (from the store, then the
    /// terminal) before it is routed a live bar. Declared from the parameters (an EMA: three times its
    /// period, so the seed's weight is below 1 %).
    fn warm_up_bars(&self) -> usize {
        DEFAULT_WARM_UP_BARS
    }

    /// The strategy's state after the last bar it handled, when bars alone do not rebuild it exactly (an
    /// EMA remembers every bar since its seed; a position held between signals is not in the last bars).
    /// The host stores it at each bar and, after a restart, restores it and replays only the bars after
    /// it, so the decisions continue as if nothing happened. `None`: rebuilt by replaying the warm-up.
    fn snapshot(&self) -> Option<serde_json::Value> {
        None
    }

    /// Puts back a state from [`Strategy::snapshot`]; an error (a state this version cannot read) makes
    /// the host warm up by replay instead.
    fn restore(&mut self, _state: &serde_json::Value) -> Result<(), String> {
        Err("this strategy keeps no snapshot".into())
    }
}

/// Bars replayed into a strategy that declares nothing (and the floor market data keeps per series).
pub const DEFAULT_WARM_UP_BARS: usize = 500;

/// Reads a snapshot written with `serde_json` back into `T`, naming what does not fit.
pub(crate) fn read_snapshot<T: serde::de::DeserializeOwned>(
    state: &serde_json::Value,
) -> Result<T, String> {
    T::deserialize(state).map_err(|e| format!("unreadable snapshot: {e}"))
}

/// Parameters given to a strategy: name → number.
pub type Params = BTreeMap<String, f64>;

/// A parameter set that cannot be used; names the parameter.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
#[error("strategy `{kind}`: {message}")]
pub struct ParamError {
    pub kind: String,
    pub message: String,
}

/// Builds a strategy from its parameters and position size (lots).
pub type StrategyFactory = fn(&Params, Decimal) -> Result<Box<dyn Strategy>, ParamError>;

/// Reads parameters, refusing unknown names and out-of-range values.
pub struct ParamReader<'a> {
    kind: &'static str,
    params: &'a Params,
    known: Vec<&'static str>,
}

impl<'a> ParamReader<'a> {
    pub fn new(kind: &'static str, params: &'a Params) -> Self {
        Self {
            kind,
            params,
            known: Vec::new(),
        }
    }

    pub fn error(&self, message: impl Into<String>) -> ParamError {
        ParamError {
            kind: self.kind.to_owned(),
            message: message.into(),
        }
    }

    /// An integer parameter within `[min, max]`, `default` when absent.
    pub fn period(
        &mut self,
        name: &'static str,
        default: usize,
        min: usize,
        max: usize,
    ) -> Result<usize, ParamError> {
        self.known.push(name);
        let Some(&v) = self.params.get(name) else {
            return Ok(default);
        };
        if v.fract() != 0.0 || v < min as f64 || v > max as f64 {
            return Err(self.error(format!(
                "`{name}` must be a whole number from {min} to {max}, not {v}"
            )));
        }
        Ok(v as usize)
    }

    /// A number within `[min, max]`, `default` when absent.
    pub fn number(
        &mut self,
        name: &'static str,
        default: f64,
        min: f64,
        max: f64,
    ) -> Result<f64, ParamError> {
        self.known.push(name);
        let Some(&v) = self.params.get(name) else {
            return Ok(default);
        };
        if !v.is_finite() || v < min || v > max {
            return Err(self.error(format!("`{name}` must be from {min} to {max}, not {v}")));
        }
        Ok(v)
    }

    /// Refuses parameters the strategy does not know.
    pub fn finish(self) -> Result<(), ParamError> {
        match self
            .params
            .keys()
            .find(|k| !self.known.contains(&k.as_str()))
        {
            Some(unknown) => Err(self.error(format!(
                "unknown parameter `{unknown}` (known: {})",
                self.known.join(", ")
            ))),
            None => Ok(()),
        }
    }
}

/// Strategy kinds by name. The built-ins are always there; an embedding program (or a test) may add its own,
/// and WebAssembly modules are kinds `wasm:<name>`.
#[derive(Clone)]
pub struct StrategyRegistry {
    kinds: Arc<RwLock<HashMap<String, StrategyFactory>>>,
    /// Modules by kind (`wasm:<name>`): a factory that needs its module, which a `fn` pointer cannot hold.
    modules: Arc<RwLock<HashMap<String, Arc<wasm::WasmModule>>>>,
}

impl Default for StrategyRegistry {
    fn default() -> Self {
        let mut kinds: HashMap<String, StrategyFactory> = HashMap::new();
        kinds.insert("ema_cross".into(), EmaCross::build);
        kinds.insert("rsi_reversion".into(), RsiReversion::build);
        kinds.insert("donchian_breakout".into(), DonchianBreakout::build);
        kinds.insert("model_signal".into(), ModelSignal::build);
        Self {
            kinds: Arc::new(RwLock::new(kinds)),
            modules: Arc::default(),
        }
    }
}

/// A lock's guard whether or not a writer panicked: the maps hold no invariant a panic could break.
fn read<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(|p| p.into_inner())
}

impl StrategyRegistry {
    pub fn register(&self, kind: &str, factory: StrategyFactory) {
        let mut guard = match self.kinds.write() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        guard.insert(kind.to_owned(), factory);
    }

    /// Makes a loaded module strategy kind `wasm:<name>` (replacing a module registered under that name);
    /// returns the kind.
    pub fn register_wasm(&self, name: &str, module: Arc<wasm::WasmModule>) -> String {
        let kind = format!("wasm:{name}");
        let mut guard = self.modules.write().unwrap_or_else(|p| p.into_inner());
        guard.insert(kind.clone(), module);
        kind
    }

    /// A registry with the same kinds (shared: a kind registered later is seen by both) and modules of
    /// its own: each tenant gets one, so a tenant's uploaded modules are kinds of that tenant only.
    pub fn layer(&self) -> Self {
        Self {
            kinds: self.kinds.clone(),
            modules: Arc::default(),
        }
    }

    /// The module of kind `kind` (`wasm:…`), if one is registered here.
    pub fn module(&self, kind: &str) -> Option<Arc<wasm::WasmModule>> {
        read(&self.modules).get(kind).cloned()
    }

    /// Removes module kind `kind` (a deleted module version); running instances keep their module.
    pub fn unregister_wasm(&self, kind: &str) {
        let mut guard = self.modules.write().unwrap_or_else(|p| p.into_inner());
        guard.remove(kind);
    }

    /// Builds a strategy, validating its parameters.
    pub fn build(
        &self,
        kind: &str,
        params: &Params,
        volume: Decimal,
    ) -> Result<Box<dyn Strategy>, ParamError> {
        let factory = {
            let guard = match self.kinds.read() {
                Ok(g) => g,
                Err(p) => p.into_inner(),
            };
            guard.get(kind).copied()
        };
        let module = read(&self.modules).get(kind).cloned();
        match (factory, module) {
            (Some(f), _) => f(params, volume),
            (None, Some(module)) => {
                wasm::WasmStrategy::build(kind, module, params, volume).map(|s| Box::new(s) as _)
            }
            (None, None) => Err(ParamError {
                kind: kind.to_owned(),
                message: "unknown strategy kind".into(),
            }),
        }
    }

    pub fn kinds(&self) -> Vec<String> {
        let guard = match self.kinds.read() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        let mut all: Vec<String> = guard.keys().cloned().collect();
        all.extend(read(&self.modules).keys().cloned());
        all.sort();
        all
    }
}

/// The bar close as `f64`, for indicators.
pub(crate) fn close_f64(bar: &Bar) -> f64 {
    decimal_f64(bar.close)
}

/// `d` as `f64`, bit for bit what `rust_decimal`'s `to_f64` answers (its algorithm, step for step), without
/// its 128-bit division and remainder when the mantissa fits in 64 bits and the scale in 19 digits, as
/// every price and volume does. Strategies' decisions depend on these bits (a module's and a native
/// strategy's must agree), so the property test below holds it to `to_f64` on any decimal.
pub(crate) fn decimal_f64(d: Decimal) -> f64 {
    use rust_decimal::prelude::ToPrimitive;
    let scale = d.scale();
    let mantissa = u64::try_from(d.mantissa().unsigned_abs());
    let (Ok(mantissa), 1..=19) = (mantissa, scale) else {
        return d.to_f64().unwrap_or(f64::NAN);
    };
    let neg = d.is_sign_negative();
    let precision = 10u64.pow(scale);
    let frac = (mantissa % precision) as f64 / precision as f64;
    let integral = (mantissa / precision) as f64;
    let value = if frac == 0.0 {
        integral
    } else {
        let round_to = 10f64.powi(scale as i32);
        ((integral + frac) * round_to).round() / round_to
    };
    if neg {
        -value
    } else {
        value
    }
}

#[cfg(test)]
mod conversion_tests {
    use proptest::prelude::*;
    use rust_decimal::prelude::ToPrimitive;
    use rust_decimal::Decimal;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(20_000))]
        #[test]
        fn the_fast_conversion_gives_the_bits_of_to_f64(lo in any::<u32>(), mid in any::<u32>(), hi in prop_oneof![Just(0u32), any::<u32>()], neg in any::<bool>(), scale in 0u32..=28) {
            let d = Decimal::from_parts(lo, mid, hi, neg, scale);
            let expected = d.to_f64().unwrap_or(f64::NAN);
            prop_assert_eq!(super::decimal_f64(d).to_bits(), expected.to_bits(), "{}", d);
        }

        #[test]
        fn prices_convert_to_the_bits_of_to_f64(units in 0i64..100_000_000_000, scale in 0u32..=8) {
            let d = Decimal::new(units, scale);
            prop_assert_eq!(super::decimal_f64(d).to_bits(), d.to_f64().unwrap_or(f64::NAN).to_bits());
            prop_assert_eq!(super::decimal_f64(-d).to_bits(), (-d).to_f64().unwrap_or(f64::NAN).to_bits());
        }
    }
}
