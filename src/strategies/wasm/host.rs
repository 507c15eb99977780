//! The host functions a module may import, all in the `trellis` namespace, and the per-instance state
//! they touch.
//!
//! The list is short on purpose: a strategy decides from the bars it is given, so it needs no clock, no
//! file, no network. Everything a guest can reach is here:
//!
//! - `set_target(f64)`: the position the guest wants, in multiples of the strategy's volume; read by the
//!   host when the call returns status 1.
//! - `log(ptr: i32, len: i32)`: one line of UTF-8 from the guest's memory, cut at [`MAX_LOG_LINE`] bytes, at
//!   most [`super::WasmLimits::log_lines_per_call`] lines per call (more are dropped and counted); a range
//!   outside the guest's memory traps.
//! - `random() -> f64`: uniform in [0, 1) from splitmix64 seeded from the module's bytes, so a run is
//!   reproducible: the same module gives the same sequence live and in a backtest.

use wasmi::{Caller, Engine, Extern, Linker, StoreLimits, ValType};

/// The namespace of the host functions.
pub(super) const NAMESPACE: &str = "trellis";

/// Bytes of one logged line kept; the rest is cut.
pub const MAX_LOG_LINE: usize = 512;

/// An importable function: name, parameters, results, and the signature as a refusal names it.
pub(super) type ImportSpec = (
    &'static str,
    &'static [ValType],
    &'static [ValType],
    &'static str,
);

/// The importable functions.
pub(super) const IMPORTS: &[ImportSpec] = &[
    ("set_target", &[ValType::F64], &[], "(f64) -> ()"),
    (
        "log",
        &[ValType::I32, ValType::I32],
        &[],
        "(i32, i32) -> ()",
    ),
    ("random", &[], &[ValType::F64], "() -> f64"),
];

/// What the host keeps for one instance, inside its `Store`.
pub(super) struct HostState {
    /// Memory and table limits, enforced by wasmi on every growth.
    pub limits: StoreLimits,
    /// The last `set_target` of the current call; cleared before each call.
    pub target: Option<f64>,
    /// State of the splitmix64 generator behind `random`.
    pub rng: u64,
    /// Lines the current call may still log.
    pub log_budget: u32,
    /// Lines dropped over the budget since the instance started.
    pub logs_dropped: u64,
    /// The strategy kind, for the log lines.
    pub kind: String,
}

impl HostState {
    pub fn new(limits: StoreLimits, seed: u64, kind: &str) -> Self {
        Self {
            limits,
            target: None,
            rng: seed,
            log_budget: 0,
            logs_dropped: 0,
            kind: kind.to_owned(),
        }
    }

    /// splitmix64, mapped to [0, 1) with the top 53 bits.
    fn next_random(&mut self) -> f64 {
        self.rng = self.rng.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        (z >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// The seed of an instance's `random`: FNV-1a of the module's bytes.
pub(super) fn seed_of(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// A linker with the host functions defined.
pub(super) fn linker(engine: &Engine) -> Result<Linker<HostState>, wasmi::Error> {
    let mut linker = Linker::new(engine);
    linker.func_wrap(
        NAMESPACE,
        "set_target",
        |mut caller: Caller<'_, HostState>, target: f64| {
            caller.data_mut().target = Some(target);
        },
    )?;
    linker.func_wrap(NAMESPACE, "random", |mut caller: Caller<'_, HostState>| {
        caller.data_mut().next_random()
    })?;
    linker.func_wrap(NAMESPACE, "log", log)?;
    Ok(linker)
}

fn log(mut caller: Caller<'_, HostState>, ptr: i32, len: i32) -> Result<(), wasmi::Error> {
    if caller.data().log_budget == 0 {
        caller.data_mut().logs_dropped += 1;
        return Ok(());
    }
    caller.data_mut().log_budget -= 1;
    let Some(Extern::Memory(memory)) = caller.get_export("memory") else {
        return Err(wasmi::Error::new("trellis.log: the module has no memory"));
    };
    let (start, len) = (ptr as u32 as usize, len as u32 as usize);
    let data = memory.data(&caller);
    let Some(bytes) = start.checked_add(len).and_then(|end| data.get(start..end)) else {
        return Err(wasmi::Error::new(format!(
            "trellis.log: bytes {start}..{start}+{len} are outside the module's memory of {} bytes",
            data.len()
        )));
    };
    let line = String::from_utf8_lossy(&bytes[..len.min(MAX_LOG_LINE)]).into_owned();
    tracing::info!(target: "trellis::wasm", kind = %caller.data().kind, "{line}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_is_uniform_enough_and_repeats_for_one_seed() {
        let limits = wasmi::StoreLimitsBuilder::new().build();
        let mut a = HostState::new(limits.clone(), 7, "k");
        let mut b = HostState::new(limits, 7, "k");
        let xs: Vec<f64> = (0..10_000).map(|_| a.next_random()).collect();
        let ys: Vec<f64> = (0..10_000).map(|_| b.next_random()).collect();
        assert_eq!(xs, ys);
        assert!(xs.iter().all(|x| (0.0..1.0).contains(x)));
        let mean = xs.iter().sum::<f64>() / xs.len() as f64;
        assert!((mean - 0.5).abs() < 0.02, "mean {mean}");
    }
}
