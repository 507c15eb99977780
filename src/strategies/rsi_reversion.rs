//! `rsi_reversion`: Wilder's RSI of the close. Long when RSI falls below `lower` (oversold), short when it
//! rises above `upper` (overbought), flat again once it crosses back through `exit`.

use rust_decimal::Decimal;

use super::{close_f64, ParamError, ParamReader, Params, Strategy};
use crate::domain::Bar;

/// Wilder's RSI: averages of gains and losses smoothed with 1/period after a simple first average.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Rsi {
    period: usize,
    prev: Option<f64>,
    seen: usize,
    avg_gain: f64,
    avg_loss: f64,
}

impl Rsi {
    pub fn new(period: usize) -> Self {
        Self {
            period,
            prev: None,
            seen: 0,
            avg_gain: 0.0,
            avg_loss: 0.0,
        }
    }

    /// Feeds a close; the RSI once `period` changes have been seen.
    pub fn update(&mut self, close: f64) -> Option<f64> {
        let prev = self.prev.replace(close)?;
        let change = close - prev;
        let (gain, loss) = (change.max(0.0), (-change).max(0.0));
        self.seen += 1;
        let n = self.period as f64;
        if self.seen <= self.period {
            self.avg_gain += gain / n;
            self.avg_loss += loss / n;
            if self.seen < self.period {
                return None;
            }
        } else {
            self.avg_gain = (self.avg_gain * (n - 1.0) + gain) / n;
            self.avg_loss = (self.avg_loss * (n - 1.0) + loss) / n;
        }
        Some(if self.avg_loss == 0.0 {
            100.0
        } else {
            100.0 - 100.0 / (1.0 + self.avg_gain / self.avg_loss)
        })
    }
}

pub struct RsiReversion {
    rsi: Rsi,
    lower: f64,
    upper: f64,
    exit: f64,
    volume: Decimal,
    target: Decimal,
}

impl RsiReversion {
    pub fn build(params: &Params, volume: Decimal) -> Result<Box<dyn Strategy>, ParamError> {
        let mut p = ParamReader::new("rsi_reversion", params);
        let period = p.period("period", 14, 2, 1_000)?;
        let lower = p.number("lower", 30.0, 0.0, 100.0)?;
        let upper = p.number("upper", 70.0, 0.0, 100.0)?;
        let exit = p.number("exit", 50.0, 0.0, 100.0)?;
        if !(lower < exit && exit < upper) {
            return Err(p.error(format!(
                "need lower < exit < upper, got {lower} / {exit} / {upper}"
            )));
        }
        p.finish()?;
        Ok(Box::new(Self {
            rsi: Rsi::new(period),
            lower,
            upper,
            exit,
            volume,
            target: Decimal::ZERO,
        }))
    }
}

impl Strategy for RsiReversion {
    fn on_bar(&mut self, bar: &Bar) -> Option<Decimal> {
        let rsi = self.rsi.update(close_f64(bar))?;
        let long = self.target.is_sign_positive() && !self.target.is_zero();
        let short = self.target.is_sign_negative();
        self.target = if rsi < self.lower {
            self.volume
        } else if rsi > self.upper {
            -self.volume
        } else if (long && rsi >= self.exit) || (short && rsi <= self.exit) {
            Decimal::ZERO
        } else {
            self.target
        };
        Some(self.target)
    }

    /// Wilder's smoothing forgets slowly: ten periods leave the start's weight below 1 %.
    fn warm_up_bars(&self) -> usize {
        self.rsi.period.saturating_mul(10)
    }

    /// The averages and the position held between an entry and its exit (not in the last bars).
    fn snapshot(&self) -> Option<serde_json::Value> {
        Some(serde_json::json!({ "rsi": self.rsi, "target": self.target }))
    }

    fn restore(&mut self, state: &serde_json::Value) -> Result<(), String> {
        #[derive(serde::Deserialize)]
        struct State {
            rsi: Rsi,
            target: Decimal,
        }
        let s: State = super::read_snapshot(state)?;
        if s.rsi.period != self.rsi.period {
            return Err("the snapshot is of another period".into());
        }
        (self.rsi, self.target) = (s.rsi, s.target);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rsi_is_100_when_prices_only_rise_and_low_when_they_fall() {
        let mut r = Rsi::new(3);
        assert_eq!(r.update(1.0), None);
        r.update(2.0);
        r.update(3.0);
        assert_eq!(r.update(4.0), Some(100.0));
        let mut f = Rsi::new(3);
        let mut last = None;
        for x in [10.0, 9.0, 8.0, 7.0, 6.0] {
            last = f.update(x);
        }
        assert_eq!(last, Some(0.0));
    }

    #[test]
    fn bounds_must_be_ordered() {
        let params: Params = [("lower".to_owned(), 80.0)].into();
        assert!(RsiReversion::build(&params, Decimal::ONE).is_err());
    }
}
