//! `donchian_breakout`: long when the close breaks above the highest high of the previous `period` bars,
//! short when it breaks below their lowest low, holding the position in between.

use std::collections::VecDeque;

use rust_decimal::Decimal;

use super::{ParamError, ParamReader, Params, Strategy};
use crate::domain::Bar;

pub struct DonchianBreakout {
    period: usize,
    window: VecDeque<(Decimal, Decimal)>,
    volume: Decimal,
    target: Option<Decimal>,
}

impl DonchianBreakout {
    pub fn build(params: &Params, volume: Decimal) -> Result<Box<dyn Strategy>, ParamError> {
        let mut p = ParamReader::new("donchian_breakout", params);
        let period = p.period("period", 20, 1, 10_000)?;
        p.finish()?;
        Ok(Box::new(Self {
            period,
            window: VecDeque::with_capacity(period + 1),
            volume,
            target: None,
        }))
    }
}

impl Strategy for DonchianBreakout {
    fn on_bar(&mut self, bar: &Bar) -> Option<Decimal> {
        let full = self.window.len() == self.period;
        if full {
            let high = self.window.iter().map(|w| w.0).max().unwrap_or(bar.high);
            let low = self.window.iter().map(|w| w.1).min().unwrap_or(bar.low);
            if bar.close > high {
                self.target = Some(self.volume);
            } else if bar.close < low {
                self.target = Some(-self.volume);
            }
            self.window.pop_front();
        }
        self.window.push_back((bar.high, bar.low));
        self.target
    }

    /// The channel, and one bar more to see the first breakout against it.
    fn warm_up_bars(&self) -> usize {
        self.period + 1
    }

    /// The channel and the position held since the last breakout (which may be far older than the channel).
    fn snapshot(&self) -> Option<serde_json::Value> {
        Some(serde_json::json!({ "window": self.window, "target": self.target }))
    }

    fn restore(&mut self, state: &serde_json::Value) -> Result<(), String> {
        #[derive(serde::Deserialize)]
        struct State {
            window: VecDeque<(Decimal, Decimal)>,
            target: Option<Decimal>,
        }
        let s: State = super::read_snapshot(state)?;
        if s.window.len() > self.period {
            return Err("the snapshot is of a longer channel".into());
        }
        (self.window, self.target) = (s.window, s.target);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Timeframe;

    fn bar(h: i64, l: i64, c: i64) -> Bar {
        Bar {
            symbol: "X".into(),
            timeframe: Timeframe::M1,
            open_time_ms: 0,
            open: c.into(),
            high: h.into(),
            low: l.into(),
            close: c.into(),
            tick_volume: 1,
        }
    }

    #[test]
    fn breaks_out_above_the_channel_and_reverses_below_it() {
        let params: Params = [("period".to_owned(), 2.0)].into();
        let mut s = DonchianBreakout::build(&params, Decimal::ONE).expect("valid");
        assert_eq!(s.on_bar(&bar(10, 8, 9)), None);
        assert_eq!(s.on_bar(&bar(11, 9, 10)), None);
        assert_eq!(s.on_bar(&bar(13, 10, 12)), Some(Decimal::ONE));
        assert_eq!(
            s.on_bar(&bar(12, 10, 11)),
            Some(Decimal::ONE),
            "held inside the channel"
        );
        assert_eq!(s.on_bar(&bar(10, 7, 8)), Some(-Decimal::ONE));
    }
}
