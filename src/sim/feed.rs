//! Tick sources for the simulator and the benchmarks: a seeded random walk, and pacing a stream of ticks
//! into a simulator. Files of history are read by `backtest::history` (every format, streamed).

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use rust_decimal::Decimal;

use crate::domain::{Symbol, Tick};

/// A random walk per symbol: each tick moves one symbol's mid by up to `max_step_points` either way, at
/// a fixed spread, with tick time advancing by `time_step_ms` (so market time can run faster than the
/// wall clock and bars close quickly in a demo).
pub struct RandomWalk {
    symbols: Vec<(Symbol, Decimal, Decimal)>,
    rng: SmallRng,
    next: usize,
    time_msc: i64,
    time_step_ms: i64,
    max_step_points: i64,
    spread_points: i64,
}

impl RandomWalk {
    /// `symbols`: name, start price, point size.
    pub fn new(
        symbols: Vec<(Symbol, Decimal, Decimal)>,
        start_msc: i64,
        time_step_ms: i64,
        seed: u64,
    ) -> Self {
        Self {
            symbols,
            rng: SmallRng::seed_from_u64(seed),
            next: 0,
            time_msc: start_msc,
            time_step_ms: time_step_ms.max(1),
            max_step_points: 10,
            spread_points: 2,
        }
    }

    pub fn with_steps(mut self, max_step_points: i64, spread_points: i64) -> Self {
        self.max_step_points = max_step_points.max(1);
        self.spread_points = spread_points.max(0);
        self
    }

    /// The usual majors with their points.
    pub fn default_symbols(names: &[String]) -> Vec<(Symbol, Decimal, Decimal)> {
        names
            .iter()
            .map(|n| {
                let (start, point) = match n.as_str() {
                    "USDJPY" => (Decimal::new(150_000, 3), Decimal::new(1, 3)),
                    "GBPUSD" => (Decimal::new(127_000, 5), Decimal::new(1, 5)),
                    "AUDUSD" => (Decimal::new(66_000, 5), Decimal::new(1, 5)),
                    "XAUUSD" => (Decimal::new(200_000, 2), Decimal::new(1, 2)),
                    _ => (Decimal::new(110_000, 5), Decimal::new(1, 5)),
                };
                (Symbol::new(n.clone()), start, point)
            })
            .collect()
    }
}

impl Iterator for RandomWalk {
    type Item = Tick;

    fn next(&mut self) -> Option<Tick> {
        if self.symbols.is_empty() {
            return None;
        }
        let i = self.next % self.symbols.len();
        self.next += 1;
        let step = self
            .rng
            .gen_range(-self.max_step_points..=self.max_step_points);
        let (symbol, mid, point) = &mut self.symbols[i];
        let moved = *mid + Decimal::from(step) * *point;
        if moved > *point * Decimal::from(100) {
            *mid = moved;
        }
        let bid = *mid;
        let ask = *mid + Decimal::from(self.spread_points) * *point;
        self.time_msc += self.time_step_ms;
        Some(Tick {
            symbol: symbol.clone(),
            time_msc: self.time_msc,
            bid,
            ask,
        })
    }
}

/// Sends `ticks` to a simulator at `rate` ticks per second (in batches every 10 ms), or as fast as the
/// simulator takes them when `rate` is 0. Returns how many were sent (it stops when the simulator does).
pub async fn pace(sim: &super::Feeder, ticks: impl IntoIterator<Item = Tick>, rate: u64) -> u64 {
    let mut sent = 0u64;
    let mut ticks = ticks.into_iter();
    if rate == 0 {
        for t in ticks {
            if !sim.tick(t) {
                return sent;
            }
            sent += 1;
            if sent % 1_000 == 0 {
                tokio::task::yield_now().await;
            }
        }
        return sent;
    }
    let period = std::time::Duration::from_millis(10);
    let mut clock = tokio::time::interval(period);
    let started = tokio::time::Instant::now();
    loop {
        clock.tick().await;
        let due = (started.elapsed().as_secs_f64() * rate as f64) as u64;
        while sent < due {
            let Some(t) = ticks.next() else { return sent };
            if !sim.tick(t) {
                return sent;
            }
            sent += 1;
        }
    }
}
