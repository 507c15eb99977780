//! Ticks → bars. Bars close on the boundaries of tick time, never the wall clock, so replaying the same ticks
//! gives the same bars. A tick older than the last accepted tick of its symbol is refused (and counted by the
//! caller) so it can never corrupt a bar that is already built or closed.

use std::collections::HashMap;

use super::{Bar, Symbol, Tick, Timeframe};

/// What happened to one tick.
#[derive(Debug, PartialEq, Eq)]
pub enum TickOutcome {
    /// Accepted; these bars closed because the tick opened a new period.
    Accepted(Vec<Bar>),
    /// Older than the last accepted tick of the symbol: dropped.
    OutOfOrder { last_time_msc: i64 },
}

#[derive(Debug, Default)]
struct SymbolBars {
    last_time_msc: i64,
    /// The open bar of each timeframe, in the order of `BarBuilder::timeframes` (at most six: an index
    /// beats hashing the timeframe on every tick).
    open: Vec<Option<Bar>>,
}

/// Builds bars of several timeframes for many symbols.
#[derive(Debug)]
pub struct BarBuilder {
    timeframes: Vec<Timeframe>,
    symbols: HashMap<Symbol, SymbolBars>,
}

impl BarBuilder {
    pub fn new(timeframes: &[Timeframe]) -> Self {
        Self {
            timeframes: timeframes.to_vec(),
            symbols: HashMap::new(),
        }
    }

    /// Builds every timeframe trellis knows.
    pub fn all() -> Self {
        Self::new(&Timeframe::ALL)
    }

    /// Feeds one tick; returns the bars it closed, oldest timeframe first.
    pub fn on_tick(&mut self, tick: &Tick) -> TickOutcome {
        let n = self.timeframes.len();
        let state = match self.symbols.get_mut(&tick.symbol) {
            Some(s) => s,
            None => self
                .symbols
                .entry(tick.symbol.clone())
                .or_insert_with(|| SymbolBars {
                    last_time_msc: i64::MIN,
                    open: vec![None; n],
                }),
        };
        if tick.time_msc < state.last_time_msc {
            return TickOutcome::OutOfOrder {
                last_time_msc: state.last_time_msc,
            };
        }
        state.last_time_msc = tick.time_msc;
        let mut closed = Vec::new();
        for (&tf, slot) in self.timeframes.iter().zip(state.open.iter_mut()) {
            let open_time = tf.open_time(tick.time_msc);
            match slot {
                Some(bar) if bar.open_time_ms == open_time => {
                    if tick.bid > bar.high {
                        bar.high = tick.bid;
                    }
                    if tick.bid < bar.low {
                        bar.low = tick.bid;
                    }
                    bar.close = tick.bid;
                    bar.tick_volume += 1;
                }
                slot => {
                    let fresh = Bar {
                        symbol: tick.symbol.clone(),
                        timeframe: tf,
                        open_time_ms: open_time,
                        open: tick.bid,
                        high: tick.bid,
                        low: tick.bid,
                        close: tick.bid,
                        tick_volume: 1,
                    };
                    if let Some(bar) = slot.replace(fresh) {
                        closed.push(bar);
                    }
                }
            }
        }
        TickOutcome::Accepted(closed)
    }

    /// Lays the terminal's bar still forming (after a restart) under the one being built here: a bar this
    /// process only saw the end of gets its open, high and low from the terminal, which saw it whole. A bar
    /// of another period than the one being built is ignored (the terminal's view is older or newer).
    pub fn seed(&mut self, forming: &Bar) {
        let Some(i) = self.timeframes.iter().position(|t| *t == forming.timeframe) else {
            return;
        };
        let n = self.timeframes.len();
        let state = self
            .symbols
            .entry(forming.symbol.clone())
            .or_insert_with(|| SymbolBars {
                last_time_msc: i64::MIN,
                open: vec![None; n],
            });
        match &mut state.open[i] {
            slot @ None => *slot = Some(forming.clone()),
            Some(bar) if bar.open_time_ms == forming.open_time_ms => {
                bar.open = forming.open;
                bar.high = bar.high.max(forming.high);
                bar.low = bar.low.min(forming.low);
                bar.tick_volume = bar.tick_volume.max(forming.tick_volume);
            }
            Some(_) => {}
        }
    }

    /// The bar being built for `symbol` and `tf`, if any.
    pub fn open_bar(&self, symbol: &Symbol, tf: Timeframe) -> Option<&Bar> {
        let i = self.timeframes.iter().position(|t| *t == tf)?;
        self.symbols.get(symbol)?.open.get(i)?.as_ref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> rust_decimal::Decimal {
        s.parse().expect("decimal literal")
    }

    fn tick(t: i64, bid: &str) -> Tick {
        Tick {
            symbol: "EURUSD".into(),
            time_msc: t,
            bid: d(bid),
            ask: d(bid) + d("0.0001"),
        }
    }

    #[test]
    fn a_bar_seen_only_in_part_takes_its_open_high_and_low_from_the_terminals_forming_bar() {
        let mut b = BarBuilder::new(&[Timeframe::M1]);
        // After a restart this process sees the minute's last ticks only.
        b.on_tick(&tick(30_000, "1.1005"));
        let terminal = Bar {
            symbol: "EURUSD".into(),
            timeframe: Timeframe::M1,
            open_time_ms: 0,
            open: d("1.1000"),
            high: d("1.1010"),
            low: d("1.0990"),
            close: d("1.1004"),
            tick_volume: 40,
        };
        b.seed(&terminal);
        let TickOutcome::Accepted(closed) = b.on_tick(&tick(60_000, "1.1007")) else {
            panic!("accepted");
        };
        let bar = &closed[0];
        assert_eq!(
            (bar.open, bar.high, bar.low),
            (d("1.1000"), d("1.1010"), d("1.0990"))
        );
        assert_eq!(
            bar.close,
            d("1.1005"),
            "the close is the last tick seen here"
        );
        // A forming bar of an older period changes nothing.
        b.seed(&terminal);
        assert_eq!(
            b.open_bar(&"EURUSD".into(), Timeframe::M1).map(|x| x.open),
            Some(d("1.1007"))
        );
    }

    #[test]
    fn bars_close_on_the_first_tick_of_the_next_period_with_ohlc_from_bid() {
        let mut b = BarBuilder::new(&[Timeframe::M1]);
        for (t, bid) in [
            (0, "1.1000"),
            (10_000, "1.1010"),
            (20_000, "1.0990"),
            (59_999, "1.1005"),
        ] {
            assert_eq!(b.on_tick(&tick(t, bid)), TickOutcome::Accepted(vec![]));
        }
        let TickOutcome::Accepted(closed) = b.on_tick(&tick(60_000, "1.1020")) else {
            panic!("accepted")
        };
        assert_eq!(closed.len(), 1);
        let bar = &closed[0];
        assert_eq!(bar.open_time_ms, 0);
        assert_eq!(
            (bar.open, bar.high, bar.low, bar.close),
            (d("1.1000"), d("1.1010"), d("1.0990"), d("1.1005"))
        );
        assert_eq!(bar.tick_volume, 4);
    }

    #[test]
    fn a_gap_closes_the_old_bar_once_and_creates_no_empty_bars() {
        let mut b = BarBuilder::new(&[Timeframe::M1]);
        b.on_tick(&tick(1_000, "1.1"));
        let TickOutcome::Accepted(closed) = b.on_tick(&tick(5 * 60_000 + 1, "1.2")) else {
            panic!()
        };
        assert_eq!(closed.len(), 1);
        assert_eq!(closed[0].open_time_ms, 0);
        assert_eq!(
            b.open_bar(&"EURUSD".into(), Timeframe::M1)
                .map(|b| b.open_time_ms),
            Some(300_000)
        );
    }

    #[test]
    fn an_out_of_order_tick_is_dropped_and_leaves_the_bar_untouched() {
        let mut b = BarBuilder::new(&[Timeframe::M1]);
        b.on_tick(&tick(30_000, "1.1"));
        assert_eq!(
            b.on_tick(&tick(29_999, "9.9")),
            TickOutcome::OutOfOrder {
                last_time_msc: 30_000
            }
        );
        let bar = b
            .open_bar(&"EURUSD".into(), Timeframe::M1)
            .expect("open bar");
        assert_eq!((bar.high, bar.tick_volume), (d("1.1"), 1));
    }

    #[test]
    fn higher_timeframes_align_on_utc_boundaries() {
        assert_eq!(Timeframe::H4.open_time(5 * 3_600_000 + 7), 4 * 3_600_000);
        assert_eq!(Timeframe::D1.open_time(86_400_000 + 1), 86_400_000);
        assert_eq!(Timeframe::M15.open_time(-1), -900_000);
    }
}
