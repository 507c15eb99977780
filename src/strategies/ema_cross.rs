//! `ema_cross`: two exponential moving averages of the close (alpha = 2/(n+1), seeded with the first close).
//! Once both have seen `slow` bars: long while fast ≥ slow, short otherwise, reversing on each cross.

use rust_decimal::Decimal;

use super::{close_f64, ParamError, ParamReader, Params, Strategy};
use crate::domain::Bar;

/// An EMA seeded with its first value.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
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

/// The whole state of an `ema_cross`: `f64`s round-trip exactly through JSON, so a restored instance
/// decides bit for bit as the one that wrote it.
#[derive(serde::Serialize, serde::Deserialize)]
struct EmaState {
    fast: Ema,
    slow: Ema,
    bars: usize,
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

    fn warm_up_bars(&self) -> usize {
        self.slow_period.saturating_mul(3)
    }

    fn snapshot(&self) -> Option<serde_json::Value> {
        serde_json::to_value(EmaState {
            fast: self.fast.clone(),
            slow: self.slow.clone(),
            bars: self.bars,
        })
        .ok()
    }

    fn restore(&mut self, state: &serde_json::Value) -> Result<(), String> {
        let s: EmaState = super::read_snapshot(state)?;
        if s.fast.alpha != self.fast.alpha || s.slow.alpha != self.slow.alpha {
            return Err("the snapshot is of other periods".into());
        }
        (self.fast, self.slow, self.bars) = (s.fast, s.slow, s.bars);
        Ok(())
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
    fn a_restored_snapshot_decides_bit_for_bit_like_the_instance_that_wrote_it() {
        let v: Decimal = "0.1".parse().expect("d");
        let closes: Vec<String> = (0..400)
            .map(|i| format!("{:.5}", 1.1 + ((i * 37 % 101) as f64 - 50.0) * 0.0001))
            .collect();
        let mut whole = EmaCross::new(20, 100, v);
        let mut first = EmaCross::new(20, 100, v);
        let mut decisions = Vec::new();
        for c in &closes[..250] {
            decisions.push(whole.on_bar(&bar(c)));
            first.on_bar(&bar(c));
        }
        let state = first.snapshot().expect("ema_cross keeps a snapshot");
        let text = serde_json::to_string(&state).expect("json");
        let mut second = EmaCross::new(20, 100, v);
        second
            .restore(&serde_json::from_str(&text).expect("json"))
            .expect("restored");
        for c in &closes[250..] {
            assert_eq!(whole.on_bar(&bar(c)), second.on_bar(&bar(c)));
        }
        assert_eq!(whole.fast.value, second.fast.value);
        assert_eq!(whole.slow.value, second.slow.value);
        let mut other = EmaCross::new(10, 100, v);
        assert!(other.restore(&state).is_err(), "other periods refused");
        assert_eq!(whole.warm_up_bars(), 300);
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
