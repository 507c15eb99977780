//! Synthetic price series with known structure, for the tests and benchmarks that must tell skill from
//! chance: a random walk (no model can beat 50%), autoregressive returns (a model should reach
//! ½ + asin(φ)/π), and the bars such returns make. Deterministic for a seed.

use rand::{Rng, SeedableRng};
use rust_decimal::Decimal;

use crate::domain::{Bar, Symbol, Timeframe};

/// Open time of the first synthetic bar (2023-11-14, minute-aligned).
pub const FIRST_BAR_MS: i64 = 1_700_000_040_000;

/// A standard normal draw (Box–Muller).
pub fn normal(rng: &mut rand::rngs::SmallRng) -> f64 {
    let u1: f64 = rng.gen_range(f64::EPSILON..1.0);
    let u2: f64 = rng.gen_range(0.0..1.0);
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

/// `n` AR(1) log returns `r ← φ·r + sd·ε` (φ = 0 is a random walk).
pub fn ar1_returns(n: usize, phi: f64, sd: f64, seed: u64) -> Vec<f64> {
    let mut rng = rand::rngs::SmallRng::seed_from_u64(seed);
    let mut r = 0.0;
    (0..n)
        .map(|_| {
            r = phi * r + sd * normal(&mut rng);
            r
        })
        .collect()
}

/// EURUSD M1 bars from 1.1 whose closes follow the log returns, one a minute from [`FIRST_BAR_MS`].
pub fn bars_from_returns(returns: &[f64]) -> Vec<Bar> {
    let mut close = 1.1f64;
    let dec = |x: f64| Decimal::from_f64_retain((x * 1e6).round() / 1e6).unwrap_or_default();
    returns
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let open = close;
            close *= r.exp();
            Bar {
                symbol: Symbol::new("EURUSD"),
                timeframe: Timeframe::M1,
                open_time_ms: FIRST_BAR_MS + i as i64 * 60_000,
                open: dec(open),
                high: dec(open.max(close) * 1.00002),
                low: dec(open.min(close) * 0.99998),
                close: dec(close),
                tick_volume: 10,
            }
        })
        .collect()
}
