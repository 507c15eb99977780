//! `ema_cross` as a trellis strategy module, in Rust: two exponential moving averages of the close
//! (alpha = 2/(n+1), seeded with the first close); once both have seen `slow` bars, long (target 1.0)
//! while fast ≥ slow, short (-1.0) otherwise, reversing on each cross.
//!
//! Its decisions equal the native `src/strategies/ema_cross.rs` bit for bit: the same `f64` arithmetic
//! in the same order (WebAssembly floats are IEEE 754 and the compiler neither reassociates nor fuses
//! them), the same warm-up (3 × slow bars), and `init` refuses what the native strategy refuses
//! (`fast` ≥ `slow`, periods that are not whole). Parameters, in the order of `manifest.json`:
//! 0 = `fast`, 1 = `slow`.

#![no_std]

mod sdk;

use sdk::{Bar, Status, Strategy};

/// An EMA seeded with its first value (as `strategies::ema_cross::Ema`).
struct Ema {
    alpha: f64,
    value: Option<f64>,
}

impl Ema {
    const fn new(period: u32) -> Self {
        Self {
            alpha: 2.0 / (period as f64 + 1.0),
            value: None,
        }
    }

    fn update(&mut self, x: f64) -> f64 {
        let v = match self.value {
            None => x,
            Some(prev) => prev + self.alpha * (x - prev),
        };
        self.value = Some(v);
        v
    }
}

struct EmaCross {
    /// The parameters as passed, checked by `init`.
    fast_param: f64,
    slow_param: f64,
    fast: Ema,
    slow: Ema,
    slow_period: u32,
    bars: u32,
}

impl EmaCross {
    /// The native strategy's defaults, replaced by `param` and `init`.
    const fn new() -> Self {
        Self {
            fast_param: 10.0,
            slow_param: 20.0,
            fast: Ema::new(10),
            slow: Ema::new(20),
            slow_period: 20,
            bars: 0,
        }
    }
}

/// `Some(n)` when `v` is a whole number of bars the native strategy accepts (1 to 10 000).
fn period(v: f64) -> Option<u32> {
    let n = v as u32;
    (n as f64 == v && (1..=10_000).contains(&n)).then_some(n)
}

impl Strategy for EmaCross {
    fn param(&mut self, index: i32, value: f64) {
        match index {
            0 => self.fast_param = value,
            1 => self.slow_param = value,
            _ => {}
        }
    }

    fn init(&mut self) -> Result<(), i32> {
        let (Some(fast), Some(slow)) = (period(self.fast_param), period(self.slow_param)) else {
            sdk::log("ema_cross: `fast` and `slow` must be whole numbers of bars");
            return Err(2);
        };
        if fast >= slow {
            sdk::log("ema_cross: `fast` must be smaller than `slow`");
            return Err(1);
        }
        self.fast = Ema::new(fast);
        self.slow = Ema::new(slow);
        self.slow_period = slow;
        self.bars = 0;
        Ok(())
    }

    fn warm_up_bars(&self) -> i32 {
        (self.slow_period * 3) as i32
    }

    fn on_bar(&mut self, bar: &Bar) -> Status {
        let fast = self.fast.update(bar.close);
        let slow = self.slow.update(bar.close);
        self.bars = self.bars.saturating_add(1);
        if self.bars < self.slow_period {
            return Status::NoChange;
        }
        sdk::target(if fast >= slow { 1.0 } else { -1.0 })
    }
}

export_strategy!(EmaCross = EmaCross::new());
