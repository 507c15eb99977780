//! `ema_cross`: two exponential moving averages of the close (alpha = 2/(n+1), seeded with the first close).
//! Once both have seen `slow` bars: long while fast ≥ slow, short otherwise, reversing on each cross.

use rust_decimal::Decimal;

use super::{close_f64, ParamError, ParamReader, Params, Strategy};
use crate::domain::Bar;

/// An EMA seeded with its first value.
#[derive(Debug, Clone)]
pub struct Ema {
    alpha: f64,
    value: Option<f64>,
}

impl Ema {
    pub fn new(period: usize) -> Self {
        Self {
            alpha: 2.0 / (period as f64 + 1.0),
            value: None,
        }
    }

    pub fn update(&mut self, x: f64) -> f64 {
        let v = match self.value {
            None => x,
            Some(prev) => prev + self.alpha * (x - prev),
        };
        self.value = Some(v);
        v
    }
}

pub struct EmaCross {
    fast: Ema,
    slow: Ema,
    slow_period: usize,
    bars: usize,
    volume: Decimal,
}

impl EmaCross {
    pub fn new(fast: usize, slow: usize, volume: Decimal) -> Self {
        Self {
            fast: Ema::new(fast),
            slow: Ema::new(slow),
            slow_period: slow,
            bars: 0,
            volume,
        }
    }

    pub fn build(params: &Params, volume: Decimal) -> Result<Box<dyn Strategy>, ParamError> {
        let mut p = ParamReader::new("ema_cross", params);
        let fast = p.period("fast", 10, 1, 10_000)?;
        let slow = p.period("slow", 20, 2, 10_000)?;
        if fast >= slow {
            return Err(p.error(format!(
                "`fast` ({fast}) must be smaller than `slow` ({slow})"
            )));
        }
        p.finish()?;
        Ok(Box::new(Self::new(fast, slow, volume)))
    }
}

impl Strategy for EmaCross {
    fn on_bar(&mut self, bar: &Bar) -> Option<Decimal> {
        let close = close_f64(bar);
        let fast = self.fast.update(close);
        let slow = self.slow.update(close);
        self.bars += 1;
        if self.bars < self.slow_period {
            return None;
        }
        Some(if fast >= slow {
            self.volume
        } else {
            -self.volume
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Timeframe;

    fn bar(close: &str) -> Bar {
        let c: Decimal = close.parse().expect("d");
        Bar {
            symbol: "X".into(),
            timeframe: Timeframe::M1,
            open_time_ms: 0,
            open: c,
            high: c,
            low: c,
            close: c,
            tick_volume: 1,
        }
    }

    #[test]
    fn stays_silent_until_slow_bars_then_follows_the_cross() {
        let v: Decimal = "0.1".parse().expect("d");
        let mut s = EmaCross::new(2, 3, v);
        assert_eq!(s.on_bar(&bar("1.0")), None);
        assert_eq!(s.on_bar(&bar("1.1")), None);
        assert_eq!(s.on_bar(&bar("1.2")), Some(v), "rising: fast above slow");
        assert_eq!(s.on_bar(&bar("0.9")), Some(-v), "falling: reversed");
    }

    #[test]
    fn fast_must_be_smaller_than_slow() {
        let params: Params = [("fast".to_owned(), 20.0), ("slow".to_owned(), 10.0)].into();
        assert!(EmaCross::build(&params, Decimal::ONE).is_err());
        let unknown: Params = [("speed".to_owned(), 1.0)].into();
        let err = EmaCross::build(&unknown, Decimal::ONE)
            .err()
            .expect("unknown param refused");
        assert!(err.message.contains("speed"));
    }
}
