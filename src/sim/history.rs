//! The simulated terminal's charts: bars of every timeframe built from every tick the terminal sees, with the
//! link up or down, so it can answer `bars_request` (protocol 3) the way MT5's `copy_rates_range` does.
//!
//! Why `domain::bars::BarBuilder`, the builder trellis itself uses: a terminal's history and trellis's own bars
//! must agree bar for bar when both saw the same ticks, so a warm-up that mixes the two shows no seam. A real
//! terminal builds its bars on the trade server's tick times too (OHLC from bid, no empty bars).
//!
//! # Limits
//! At most [`KEPT_BARS`] closed bars per symbol and timeframe (the oldest go first), like a terminal's "max
//! bars in chart"; an answer holds at most `MAX_BARS_PER_ANSWER` bars, the newest of the range.

use std::collections::{HashMap, VecDeque};

use crate::bridge::protocol::MAX_BARS_PER_ANSWER;
use crate::domain::bars::{BarBuilder, TickOutcome};
use crate::domain::{Bar, Symbol, Tick, Timeframe};

/// Closed bars kept per symbol and timeframe.
pub const KEPT_BARS: usize = 100_000;

/// Bars of every timeframe for every symbol the terminal quotes.
#[derive(Debug)]
pub struct BarHistory {
    builder: BarBuilder,
    closed: HashMap<(Symbol, Timeframe), VecDeque<Bar>>,
    kept: usize,
}

impl Default for BarHistory {
    fn default() -> Self {
        Self::new(KEPT_BARS)
    }
}

impl BarHistory {
    /// A history keeping up to `kept` closed bars per symbol and timeframe.
    pub fn new(kept: usize) -> Self {
        Self {
            builder: BarBuilder::all(),
            closed: HashMap::new(),
            kept: kept.max(1),
        }
    }

    /// Feeds one tick (an out-of-order tick is dropped, as trellis drops it).
    pub fn on_tick(&mut self, tick: &Tick) {
        let TickOutcome::Accepted(closed) = self.builder.on_tick(tick) else {
            return;
        };
        for bar in closed {
            let bars = self
                .closed
                .entry((bar.symbol.clone(), bar.timeframe))
                .or_default();
            if bars.len() >= self.kept {
                bars.pop_front();
            }
            bars.push_back(bar);
        }
    }

    /// What `copy_rates_range` gives: the closed bars whose open time is in `[from_ms, to_ms]`, oldest first
    /// (the newest `MAX_BARS_PER_ANSWER` when there are more), and the bar still forming when its open time is
    /// in the range too.
    pub fn range(
        &self,
        symbol: &Symbol,
        tf: Timeframe,
        from_ms: i64,
        to_ms: i64,
    ) -> (Vec<Bar>, Option<Bar>) {
        let in_range = |b: &&Bar| (from_ms..=to_ms).contains(&b.open_time_ms);
        let closed = match self.closed.get(&(symbol.clone(), tf)) {
            Some(bars) => {
                // Open times increase along the queue: find the range by bisection.
                let start = bars.partition_point(|b| b.open_time_ms < from_ms);
                let end = bars.partition_point(|b| b.open_time_ms <= to_ms);
                let start = start.max(end.saturating_sub(MAX_BARS_PER_ANSWER));
                bars.range(start..end.max(start)).cloned().collect()
            }
            None => Vec::new(),
        };
        let forming = self.builder.open_bar(symbol, tf).filter(in_range).cloned();
        (closed, forming)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tick(t: i64, bid: &str) -> Tick {
        let bid: rust_decimal::Decimal = bid.parse().expect("decimal literal");
        Tick {
            symbol: Symbol::new("EURUSD"),
            time_msc: t,
            bid,
            ask: bid,
        }
    }

    #[test]
    fn the_terminals_bars_are_the_bars_trellis_builds_from_the_same_ticks() {
        let ticks: Vec<Tick> = (0..500)
            .map(|i| tick(i * 7_919, &format!("1.{:05}", 10_000 + (i * 37) % 900)))
            .collect();
        let mut history = BarHistory::default();
        let mut trellis = BarBuilder::all();
        let mut closed = Vec::new();
        for t in &ticks {
            history.on_tick(t);
            if let TickOutcome::Accepted(bars) = trellis.on_tick(t) {
                closed.extend(bars);
            }
        }
        let symbol = Symbol::new("EURUSD");

        for tf in Timeframe::ALL {
            let (bars, forming) = history.range(&symbol, tf, 0, i64::MAX);
            let expected: Vec<Bar> = closed
                .iter()
                .filter(|b| b.timeframe == tf)
                .cloned()
                .collect();
            assert_eq!(bars, expected, "{tf}");
            assert_eq!(forming.as_ref(), trellis.open_bar(&symbol, tf), "{tf}");
        }
    }

    #[test]
    fn a_range_gives_the_bars_opening_inside_it_and_the_forming_bar_only_when_it_opens_inside() {
        let mut history = BarHistory::default();
        for m in 0..10 {
            history.on_tick(&tick(m * 60_000 + 5, "1.1"));
        }
        let symbol = Symbol::new("EURUSD");

        let (bars, forming) = history.range(&symbol, Timeframe::M1, 120_000, 300_000);
        let (_, later) = history.range(&symbol, Timeframe::M1, 0, 9 * 60_000);
        let (_, before) = history.range(&symbol, Timeframe::M1, 0, 9 * 60_000 - 1);

        assert_eq!(
            bars.iter()
                .map(|b| b.open_time_ms / 60_000)
                .collect::<Vec<_>>(),
            vec![2, 3, 4, 5]
        );
        assert_eq!(forming, None);
        assert_eq!(later.map(|b| b.open_time_ms), Some(9 * 60_000));
        assert_eq!(before, None);
        assert_eq!(
            history.range(&Symbol::new("GBPUSD"), Timeframe::M1, 0, i64::MAX),
            (vec![], None)
        );
    }

    #[test]
    fn only_the_newest_bars_are_kept() {
        let mut history = BarHistory::new(3);
        for m in 0..6 {
            history.on_tick(&tick(m * 60_000, "1.1"));
        }

        let (bars, _) = history.range(&Symbol::new("EURUSD"), Timeframe::M1, 0, i64::MAX);

        assert_eq!(
            bars.iter()
                .map(|b| b.open_time_ms / 60_000)
                .collect::<Vec<_>>(),
            vec![2, 3, 4]
        );
    }
}
