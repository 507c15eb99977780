//! Tenant strategies as sandboxed WebAssembly modules (interface v1; `docs/strategy-modules.md` is the
//! guest's side of it).
//!
//! A tenant's strategy code runs in the process that trades for every tenant, so it runs in an
//! interpreter that bounds it: [`wasmi`], a pure-Rust WebAssembly interpreter. It was chosen over wasmtime
//! because wasmtime's cranelift code generator adds minutes to a 2-core CI build, while wasmi compiles in
//! seconds and still has what the sandbox needs: fuel metering and store limits.
//!
//! # Design
//!
//! - [`WasmModule::load`] validates a module once (size, imports, exports, declared memory, interface
//!   version through a dry instantiation) and compiles it eagerly; instances share it through an `Arc`.
//! - [`WasmStrategy`] is one instance with a `Store` of its own, implementing [`super::Strategy`], so it
//!   runs wherever a built-in does: inside the strategy actor behind `contain`, and in the backtester.
//! - [`super::StrategyRegistry::register_wasm`] makes a module a strategy kind, `wasm:<name>`.
//!
//! # Bounds, and what happens at each
//!
//! - **CPU: fuel.** Every call into the guest (`param`, `init`, `on_bar`, `on_tick`, `on_fill`,
//!   `warm_up_bars`) gets [`WasmLimits::fuel_per_call`] units of fuel, about one per instruction executed.
//!   Fuel is deterministic, so a module that runs out on a bar runs out on that bar live and in a backtest
//!   alike. wasmi has no epoch interruption (wasmtime's way of stopping code by wall time); live, a thread
//!   may also set a wall-clock deadline per call ([`set_call_deadline`]): the call then runs in slices of
//!   fuel (wasmi's resumable calls) with the clock read between them. The live module threads set it;
//!   backtests and optimisations do not, so they stay deterministic.
//! - **Memory: the store limit.** The declared initial (and maximum, when given) memory is held to
//!   [`WasmLimits::max_memory_bytes`] at load; `memory.grow` past it traps (instead of returning -1).
//! - **Size**: a module over [`WasmLimits::max_module_bytes`] is refused before it is parsed.
//! - **At a limit, or on any trap**, the call panics with a message naming the module, the call and the
//!   cause. The strategy host runs strategy code inside `contain`, so that panic fails only that strategy
//!   actor, which supervision restarts or disables like a native strategy that panicked; the process,
//!   the tenant's other strategies and trading go on. In the backtester the run stops with the message.
//!
//! # Invariants
//!
//! - Only the host functions of [`host`] can be imported; anything else is refused at load, naming it
//!   (`tests::a_forbidden_import_is_refused_naming_it`).
//! - Two instances of one module with the same parameters decide bit for bit the same on the same bars:
//!   the guest sees no clock, and `trellis.random` is a fixed generator seeded from the module's bytes
//!   (`tests::two_runs_of_one_module_under_fuel_give_bit_identical_decisions`).
//!
//! # Limitations
//!
//! - No snapshot: an instance's state lives in its linear memory and is rebuilt by replaying the warm-up
//!   bars (`warm_up_bars`, 500 when the module does not say).
//! - No counters of fuel used or calls failed per strategy yet (`WasmStrategy::fuel_used` has the figure of
//!   the last call).

mod host;
mod module;
mod strategy;

#[cfg(test)]
pub(crate) mod fixtures;
#[cfg(test)]
mod tests;

pub use module::WasmModule;
pub use strategy::{set_call_deadline, WasmStrategy};

// The host's side of a call, for the benchmark of its cost.
pub(crate) use strategy::{bar_args, target_lots};

/// The interface version this host speaks; a module's `trellis_interface_version()` must return it.
pub const INTERFACE_VERSION: i32 = 1;

/// What one module may use. Tiers will set these from their quotas; the defaults are the ceiling for
/// modules the operator names (the backtester's `--module`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WasmLimits {
    /// Size of the module file.
    pub max_module_bytes: usize,
    /// Linear memory an instance may have, initially and after growing.
    pub max_memory_bytes: usize,
    /// Fuel (about one unit per instruction) of one call into the guest.
    pub fuel_per_call: u64,
    /// Lines one call may log through `trellis.log`; further lines are dropped and counted.
    pub log_lines_per_call: u32,
}

impl Default for WasmLimits {
    fn default() -> Self {
        Self {
            max_module_bytes: 1 << 20,
            max_memory_bytes: 64 << 20,
            fuel_per_call: 10_000_000,
            log_lines_per_call: 16,
        }
    }
}

impl WasmLimits {
    /// The default limits (the ceiling) with memory and fuel held to a tier's figures.
    pub fn within(memory_bytes: u64, fuel_per_call: u64) -> Self {
        let ceiling = Self::default();
        Self {
            max_memory_bytes: usize::try_from(memory_bytes)
                .unwrap_or(usize::MAX)
                .min(ceiling.max_memory_bytes),
            fuel_per_call: fuel_per_call.min(ceiling.fuel_per_call),
            ..ceiling
        }
    }
}

/// A module that cannot be used, and why. All of them are refusals (retrying the same bytes gives the
/// same answer); the message names the figure, the import or the export at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WasmError {
    #[error("the module is {bytes} bytes, over the limit of {limit} bytes")]
    TooLarge { bytes: usize, limit: usize },
    #[error("the module is not valid WebAssembly: {0}")]
    Invalid(String),
    #[error("the module imports `{module}.{name}`, which trellis does not provide (allowed: trellis.set_target, trellis.log, trellis.random)")]
    ForbiddenImport { module: String, name: String },
    #[error("the module's import `{name}` must be a function {expected}")]
    ImportType {
        name: String,
        expected: &'static str,
    },
    #[error("the module does not export `{name}` ({expected})")]
    MissingExport {
        name: String,
        expected: &'static str,
    },
    #[error("the module's export `{name}` must be {expected}")]
    ExportType {
        name: String,
        expected: &'static str,
    },
    #[error(
        "the module declares {what} of {bytes} bytes of memory, over the limit of {limit} bytes"
    )]
    Memory {
        what: &'static str,
        bytes: u64,
        limit: usize,
    },
    #[error("the module speaks interface version {found}; this host speaks {host}", host = INTERFACE_VERSION)]
    InterfaceVersion { found: i32 },
    #[error("the module failed when started: {0}")]
    Start(String),
    #[error("the module's manifest: {0}")]
    Manifest(String),
}

/// A parameter a module takes: passed to its `param(index, value)` export, in the manifest's order,
/// before `init`.
#[derive(Debug, Clone, PartialEq, serde::Deserialize, serde::Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WasmParam {
    #[schemars(pattern(r"^[A-Za-z0-9_]{1,64}$"))]
    pub name: String,
    /// The value passed when a strategy's settings do not name the parameter.
    pub default: f64,
    /// Smallest value accepted (none: any finite value).
    #[serde(default)]
    pub min: Option<f64>,
    /// Largest value accepted (none: any finite value).
    #[serde(default)]
    pub max: Option<f64>,
}

/// What the host knows about a module besides its bytes: its parameters, and optionally what it is for
/// (the symbols and the timeframe it was written for; a strategy of the module must trade one of them).
/// Given with the module (a JSON file beside it for the backtester, a part of the upload for the API),
/// since WebAssembly has no standard place for it.
#[derive(
    Debug, Clone, Default, PartialEq, serde::Deserialize, serde::Serialize, schemars::JsonSchema,
)]
#[serde(deny_unknown_fields)]
pub struct WasmManifest {
    /// The parameters, passed to `param(index, value)` in this order.
    #[serde(default)]
    #[schemars(length(max = 64))]
    pub params: Vec<WasmParam>,
    /// The symbols a strategy of the module may trade; empty: any of the tenant's.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub symbols: Vec<String>,
    /// The timeframe a strategy of the module must use (`M1` … `D1`); none: any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(r"^(M1|M5|M15|H1|H4|D1)$"))]
    pub timeframe: Option<String>,
    /// What the module does, for people: at most 500 characters.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    #[schemars(length(max = 500))]
    pub description: String,
}

/// A strategy kind naming a module version of a tenant: `wasm:<name>@<version>` (pinned), or
/// `wasm:<name>` (the newest version, pinned when a strategy is created). Answers (name, version).
pub fn parse_kind(kind: &str) -> Option<(&str, Option<&str>)> {
    let rest = kind.strip_prefix("wasm:")?;
    match rest.split_once('@') {
        Some((name, version)) => Some((name, Some(version))),
        None => Some((rest, None)),
    }
}

/// The kind of version `version` of module `name`.
pub fn kind_of(name: &str, version: &str) -> String {
    format!("wasm:{name}@{version}")
}

/// Parameters a manifest may declare.
const MAX_PARAMS: usize = 64;

impl WasmManifest {
    /// Refuses duplicate, empty or overlong names, a default outside its bounds, too many parameters.
    pub fn validate(&self) -> Result<(), WasmError> {
        let bad = |m: String| Err(WasmError::Manifest(m));
        if self.params.len() > MAX_PARAMS {
            return bad(format!(
                "{} parameters, more than {MAX_PARAMS}",
                self.params.len()
            ));
        }
        if self.description.chars().count() > 500 || self.description.contains('\0') {
            return bad("description: at most 500 characters, no NUL".into());
        }
        if self.symbols.len() > 64 {
            return bad(format!("{} symbols, more than 64", self.symbols.len()));
        }
        if let Some(s) = self
            .symbols
            .iter()
            .find(|s| s.is_empty() || s.len() > 32 || !s.bytes().all(|b| b.is_ascii_graphic()))
        {
            return bad(format!("symbol `{s}` is not 1–32 printable characters"));
        }
        if let Some(tf) = self
            .timeframe
            .as_deref()
            .filter(|tf| crate::domain::Timeframe::parse(tf).is_none())
        {
            return bad(format!(
                "timeframe `{tf}` is not one of M1, M5, M15, H1, H4, D1"
            ));
        }
        for (i, p) in self.params.iter().enumerate() {
            let name_ok = !p.name.is_empty()
                && p.name.len() <= 64
                && p.name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !name_ok {
                return bad(format!(
                    "parameter {i}: `{}` is not a name of 1–64 letters, digits or _",
                    p.name
                ));
            }
            if self.params[..i].iter().any(|q| q.name == p.name) {
                return bad(format!("parameter `{}` is declared twice", p.name));
            }
            if let Err(why) = p.check(p.default) {
                return bad(format!("the default of `{}` {why}", p.name));
            }
        }
        Ok(())
    }
}

impl WasmParam {
    /// `Err` with the reason when `v` is not a value of this parameter.
    fn check(&self, v: f64) -> Result<(), String> {
        let lo = self.min.unwrap_or(f64::MIN);
        let hi = self.max.unwrap_or(f64::MAX);
        if v.is_finite() && v >= lo && v <= hi {
            Ok(())
        } else {
            Err(format!("must be from {lo} to {hi}, not {v}"))
        }
    }
}
