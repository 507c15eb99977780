//! History decoded once, replayed many times: what makes an optimisation of a thousand parameter sets cheap.
//!
//! A backtest's decisions happen only when a bar closes, and its orders execute only on ticks while an
//! order is queued or a limit/stop order is pending. A [`Tape`] is one symbol's quotes (40 bytes each, the
//! symbol implied) plus the index of every tick that closed a bar of one timeframe, computed once by the
//! live `BarBuilder`. [`super::Backtest::run_tape`] then visits the bar closes and only the ticks an order
//! needs, skipping the rest — with exactly the decisions, fills and figures of feeding every tick through
//! [`super::Backtest::on_tick`] (a test holds the two equal). The quotes are shared (`Arc`) between the tapes
//! of walk-forward windows and the threads of an optimisation.

use std::ops::Range;
use std::sync::Arc;

use rust_decimal::Decimal;

use crate::domain::bars::{BarBuilder, TickOutcome};
use crate::domain::{Bar, Symbol, Tick, Timeframe};

/// One tick of the tape's symbol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quote {
    pub time_msc: i64,
    pub bid: Decimal,
    pub ask: Decimal,
}

/// One symbol's ticks, in input order (out-of-order ticks included: they still execute queued orders, as
/// they do live, though bars drop them).
#[derive(Debug, Clone)]
pub struct History {
    pub symbol: Symbol,
    pub quotes: Arc<[Quote]>,
    /// Ticks of other symbols in the input.
    pub ignored: u64,
}

impl History {
    /// Keeps `symbol`'s ticks of a stream; the first error of the stream is returned.
    pub fn collect<E>(
        symbol: &Symbol,
        ticks: impl IntoIterator<Item = Result<Tick, E>>,
    ) -> Result<Self, E> {
        let mut quotes = Vec::new();
        let mut ignored = 0;
        for t in ticks {
            let t = t?;
            if t.symbol == *symbol {
                quotes.push(Quote {
                    time_msc: t.time_msc,
                    bid: t.bid,
                    ask: t.ask,
                });
            } else {
                ignored += 1;
            }
        }
        Ok(Self {
            symbol: symbol.clone(),
            quotes: quotes.into(),
            ignored,
        })
    }

    /// A history of quotes already read (all of `symbol`).
    pub fn from_quotes(symbol: Symbol, quotes: Vec<Quote>) -> Self {
        Self {
            symbol,
            quotes: quotes.into(),
            ignored: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.quotes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.quotes.is_empty()
    }

    /// Time of the first and last tick.
    pub fn span(&self) -> Option<(i64, i64)> {
        Some((self.quotes.first()?.time_msc, self.quotes.last()?.time_msc))
    }

    /// The ticks with `from_ms <= time < to_ms`, by position (the input is in time order but for the
    /// out-of-order ticks bars drop, which stay where they came).
    pub fn range(&self, from_ms: i64, to_ms: i64) -> Range<usize> {
        let start = self.quotes.partition_point(|q| q.time_msc < from_ms);
        let end = self.quotes.partition_point(|q| q.time_msc < to_ms);
        start..end.max(start)
    }

    /// The whole history as one tape.
    pub fn tape(&self, timeframe: Timeframe) -> Tape {
        self.tape_of(timeframe, 0..self.quotes.len())
    }

    /// The ticks of `range` as a tape: bars are built from these ticks alone, as a backtest started at the
    /// range's first tick would.
    pub fn tape_of(&self, timeframe: Timeframe, range: Range<usize>) -> Tape {
        let mut builder = BarBuilder::new(&[timeframe]);
        let mut closes = Vec::new();
        let mut out_of_order = 0;
        let mut last_accepted = None;
        let mut tick = Tick {
            symbol: self.symbol.clone(),
            time_msc: 0,
            bid: Decimal::ZERO,
            ask: Decimal::ZERO,
        };
        for i in range.clone() {
            let q = self.quotes[i];
            tick.time_msc = q.time_msc;
            tick.bid = q.bid;
            tick.ask = q.ask;
            match builder.on_tick(&tick) {
                TickOutcome::OutOfOrder { .. } => out_of_order += 1,
                TickOutcome::Accepted(closed) => {
                    last_accepted = Some(i - range.start);
                    closes.extend(closed.into_iter().map(|bar| (i - range.start, bar)));
                }
            }
        }
        Tape {
            symbol: self.symbol.clone(),
            timeframe,
            quotes: Arc::clone(&self.quotes),
            range,
            closes,
            out_of_order,
            last_accepted,
            ignored: self.ignored,
        }
    }
}

/// A history's ticks in a range with the bars they close.
#[derive(Debug, Clone)]
pub struct Tape {
    pub symbol: Symbol,
    pub timeframe: Timeframe,
    quotes: Arc<[Quote]>,
    range: Range<usize>,
    /// (index into `quotes()` of the tick that closed the bar, the bar), in order.
    pub(super) closes: Vec<(usize, Bar)>,
    pub(super) out_of_order: u64,
    pub(super) last_accepted: Option<usize>,
    pub(super) ignored: u64,
}

impl Tape {
    pub fn quotes(&self) -> &[Quote] {
        &self.quotes[self.range.clone()]
    }

    pub fn bars(&self) -> usize {
        self.closes.len()
    }

    /// Time of the first and last tick.
    pub fn span(&self) -> Option<(i64, i64)> {
        let q = self.quotes();
        Some((q.first()?.time_msc, q.last()?.time_msc))
    }
}
