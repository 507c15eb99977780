//! The Rust guest SDK of trellis strategy modules: interface v1 (`docs/strategy-modules.md`) as Rust
//! types and safe wrappers, for a `#![no_std]` `cdylib` built for `wasm32-unknown-unknown`.
//!
//! It has no dependencies: copy this file into a crate as `src/sdk.rs`, declare `mod sdk;` in `lib.rs`,
//! implement [`Strategy`] and name the type in [`export_strategy!`](crate::export_strategy). What it
//! gives:
//!
//! - the host functions of the `trellis` namespace as safe functions: [`set_target`] (and [`target`],
//!   which also returns the status that goes with it), [`log`], [`random`];
//! - the guest's side as types: [`Bar`], [`Tick`], [`Status`], and the [`Strategy`] trait whose methods
//!   are the optional and required exports;
//! - the exports every module needs: `trellis_interface_version` (returning [`INTERFACE_VERSION`]) here,
//!   and `param`, `init`, `warm_up_bars`, `on_bar` (and on request `on_tick`, `on_fill`) from
//!   [`export_strategy!`](crate::export_strategy); the toolchain exports `memory` itself;
//! - a `#[panic_handler]` that traps: a panic (an index out of bounds, an `unwrap` of `None`) fails the
//!   call, which the host reports naming the call, and the module does not carry formatting code.
//!
//! Without `std` nothing imports WASI, so the module passes the host's import check. The state of a
//! strategy lives in a `static` inside its linear memory: after a restart the host rebuilds it by
//! replaying [`Strategy::warm_up_bars`] bars.

// An SDK: a module uses what it needs of it.
#![allow(dead_code)]

#[cfg(not(target_arch = "wasm32"))]
compile_error!("a trellis strategy module is built for wasm32-unknown-unknown");

use core::cell::{Cell, UnsafeCell};

/// The interface version this SDK speaks; the host refuses a module that returns another.
pub const INTERFACE_VERSION: i32 = 1;

/// The host functions. Nothing else may be imported (the host refuses the module at load, naming the
/// import).
mod ffi {
    #[link(wasm_import_module = "trellis")]
    unsafe extern "C" {
        pub fn set_target(target: f64);
        pub fn log(ptr: i32, len: i32);
        pub fn random() -> f64;
    }
}

/// A closed bar of the strategy's symbol and timeframe (prices as `f64`, converted by the host from its
/// decimals).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Bar {
    pub open: f64,
    pub high: f64,
    pub low: f64,
    pub close: f64,
    pub tick_volume: i64,
    /// Start of the bar, milliseconds since the Unix epoch.
    pub open_time_ms: i64,
}

/// A tick of the strategy's symbol.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Tick {
    pub bid: f64,
    pub ask: f64,
    /// Milliseconds since the Unix epoch.
    pub time_msc: i64,
}

/// What a call to `on_bar` or `on_tick` returns.
#[must_use]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(i32)]
pub enum Status {
    /// The position stays as it is.
    NoChange = 0,
    /// The target is the last value passed to [`set_target`] during this call.
    TargetSet = 1,
}

/// Records `multiple` (of the strategy's volume: `1.0` long, `-1.0` short, `0.0` flat; finite, within
/// ±1 000) as the target of the current call. The host reads it only when the call returns
/// [`Status::TargetSet`]; [`target`] does both.
pub fn set_target(multiple: f64) {
    // SAFETY: a host function taking a number; it touches nothing of the guest.
    unsafe { ffi::set_target(multiple) }
}

/// Sets the target to `multiple` and returns the status that says so: `return sdk::target(1.0);`.
pub fn target(multiple: f64) -> Status {
    set_target(multiple);
    Status::TargetSet
}

/// Logs `line` (at INFO, with the strategy's kind). The host keeps 512 bytes of a line and 16 lines per
/// call, dropping and counting the rest.
pub fn log(line: &str) {
    // SAFETY: the host reads `len` bytes at `ptr` of this module's memory, which is where `line` is
    // (a wasm32 address and length fit an i32's bits; the host reads them as unsigned).
    unsafe { ffi::log(line.as_ptr() as i32, line.len() as i32) }
}

/// A number uniform in [0, 1) from the host's generator, seeded from the module's bytes: the same
/// sequence live, in a backtest and on every rerun.
pub fn random() -> f64 {
    // SAFETY: a host function returning a number.
    unsafe { ffi::random() }
}

/// The exports of a strategy, as methods. Only [`Strategy::on_bar`] is required; the host calls
/// [`Strategy::param`] once per parameter of the manifest (in its order), then [`Strategy::init`], then
/// [`Strategy::warm_up_bars`], then the bars.
pub trait Strategy {
    /// Parameter `index` of the manifest (0 for the first) has `value`: the strategy's setting or the
    /// manifest's default, already checked against the manifest's bounds.
    fn param(&mut self, index: i32, value: f64) {
        let _ = (index, value);
    }

    /// After the parameters: `Ok` accepts them, `Err(status)` refuses them (the host names the status;
    /// an `Err(0)` is reported as 1).
    fn init(&mut self) -> Result<(), i32> {
        Ok(())
    }

    /// Bars to replay before the first live decision (0–100 000); the host's default is 500.
    fn warm_up_bars(&self) -> i32 {
        500
    }

    /// A bar closed.
    fn on_bar(&mut self, bar: &Bar) -> Status;

    /// A tick; exported (so the host sends ticks) only when [`export_strategy!`](crate::export_strategy)
    /// names `on_tick`.
    fn on_tick(&mut self, tick: &Tick) -> Status {
        let _ = tick;
        Status::NoChange
    }

    /// One of the strategy's orders filled (`signed_volume` in lots, negative when sold); exported only
    /// when [`export_strategy!`](crate::export_strategy) names `on_fill`.
    fn on_fill(&mut self, signed_volume: f64, price: f64) {
        let _ = (signed_volume, price);
    }
}

/// The one instance of a module's strategy, in a `static`. The host calls one export at a time on one
/// thread and never calls back into the guest from a host function; [`Slot::with`] still refuses (traps
/// on) a nested use, so handing out `&mut` is sound.
pub struct Slot<S> {
    value: UnsafeCell<S>,
    busy: Cell<bool>,
}

// SAFETY: wasm32-unknown-unknown without the `atomics` feature has one thread, so nothing is shared
// across threads.
#[cfg(not(target_feature = "atomics"))]
unsafe impl<S> Sync for Slot<S> {}

impl<S> Slot<S> {
    pub const fn new(value: S) -> Self {
        Self {
            value: UnsafeCell::new(value),
            busy: Cell::new(false),
        }
    }

    /// Runs `f` on the instance; a nested call traps.
    pub fn with<R>(&self, f: impl FnOnce(&mut S) -> R) -> R {
        if self.busy.replace(true) {
            core::arch::wasm32::unreachable()
        }
        // SAFETY: `busy` was false, so no other reference to the value is alive, and none is made until
        // it is false again.
        let r = f(unsafe { &mut *self.value.get() });
        self.busy.set(false);
        r
    }
}

/// Exports a strategy: `export_strategy!(MyStrategy = MyStrategy::new());` with a `const` expression of
/// the state before the parameters, optionally followed by `, on_tick` and/or `, on_fill` to export
/// those too (a module that exports `on_tick` is sent every tick).
#[macro_export]
macro_rules! export_strategy {
    ($ty:ty = $init:expr $(, $extra:ident)* $(,)?) => {
        const _: () = {
            static STRATEGY: $crate::sdk::Slot<$ty> = $crate::sdk::Slot::new($init);

            #[unsafe(no_mangle)]
            extern "C" fn param(index: i32, value: f64) {
                STRATEGY.with(|s| $crate::sdk::Strategy::param(s, index, value))
            }

            #[unsafe(no_mangle)]
            extern "C" fn init() -> i32 {
                match STRATEGY.with(|s| $crate::sdk::Strategy::init(s)) {
                    Ok(()) => 0,
                    Err(0) => 1,
                    Err(status) => status,
                }
            }

            #[unsafe(no_mangle)]
            extern "C" fn warm_up_bars() -> i32 {
                STRATEGY.with(|s| $crate::sdk::Strategy::warm_up_bars(s))
            }

            #[unsafe(no_mangle)]
            extern "C" fn on_bar(
                open: f64,
                high: f64,
                low: f64,
                close: f64,
                tick_volume: i64,
                open_time_ms: i64,
            ) -> i32 {
                let bar = $crate::sdk::Bar {
                    open,
                    high,
                    low,
                    close,
                    tick_volume,
                    open_time_ms,
                };
                STRATEGY.with(|s| $crate::sdk::Strategy::on_bar(s, &bar)) as i32
            }

            $($crate::export_strategy!(@export $extra STRATEGY);)*
        };
    };
    (@export on_tick $slot:ident) => {
        #[unsafe(no_mangle)]
        extern "C" fn on_tick(bid: f64, ask: f64, time_msc: i64) -> i32 {
            let tick = $crate::sdk::Tick { bid, ask, time_msc };
            $slot.with(|s| $crate::sdk::Strategy::on_tick(s, &tick)) as i32
        }
    };
    (@export on_fill $slot:ident) => {
        #[unsafe(no_mangle)]
        extern "C" fn on_fill(signed_volume: f64, price: f64) {
            $slot.with(|s| $crate::sdk::Strategy::on_fill(s, signed_volume, price))
        }
    };
}

/// Interface v1: the host calls this at load and refuses any other answer.
#[unsafe(no_mangle)]
pub extern "C" fn trellis_interface_version() -> i32 {
    INTERFACE_VERSION
}

/// A panic traps: the call fails and the host reports it, naming the call.
#[panic_handler]
fn panic(_: &core::panic::PanicInfo) -> ! {
    core::arch::wasm32::unreachable()
}
