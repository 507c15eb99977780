//! `model_signal`: trades a model deployment's predictions (the strategy's `model`). Long while the
//! prediction is above `upper`, short while below `lower`, flat between. With a `direction_probability`
//! model the defaults (0.55 / 0.45) leave a dead band around a coin flip; for `expected_return` models set
//! them around 0 (e.g. 0.0005 / -0.0005).

use rust_decimal::Decimal;

use super::{ParamError, ParamReader, Params, Strategy};
use crate::domain::Bar;
use crate::domain::Prediction;

pub struct ModelSignal {
    upper: f64,
    lower: f64,
    volume: Decimal,
}

impl ModelSignal {
    pub fn build(params: &Params, volume: Decimal) -> Result<Box<dyn Strategy>, ParamError> {
        let mut p = ParamReader::new("model_signal", params);
        let upper = p.number("upper", 0.55, -1e9, 1e9)?;
        let lower = p.number("lower", 0.45, -1e9, 1e9)?;
        if lower >= upper {
            return Err(p.error(format!("`lower` ({lower}) must be below `upper` ({upper})")));
        }
        p.finish()?;
        Ok(Box::new(Self {
            upper,
            lower,
            volume,
        }))
    }
}

impl Strategy for ModelSignal {
    /// Bars alone say nothing: the decision comes with the bar's prediction.
    fn on_bar(&mut self, _bar: &Bar) -> Option<Decimal> {
        None
    }

    /// Nothing of its own to warm: its model's features are (see `ModelHost`).
    fn warm_up_bars(&self) -> usize {
        0
    }

    fn on_prediction(&mut self, p: &Prediction) -> Option<Decimal> {
        Some(if p.value > self.upper {
            self.volume
        } else if p.value < self.lower {
            -self.volume
        } else {
            Decimal::ZERO
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Symbol;

    fn prediction(value: f64) -> Prediction {
        Prediction {
            deployment: "d".into(),
            version: "v".into(),
            symbol: Symbol::new("EURUSD"),
            bar_open_ms: 0,
            value,
            latency_us: 1,
            shadow: false,
            scores: Vec::new(),
        }
    }

    #[test]
    fn the_target_follows_the_prediction_through_the_thresholds() {
        let mut s = ModelSignal::build(&Params::new(), Decimal::ONE).expect("defaults");
        assert_eq!(s.on_prediction(&prediction(0.9)), Some(Decimal::ONE));
        assert_eq!(s.on_prediction(&prediction(0.5)), Some(Decimal::ZERO));
        assert_eq!(s.on_prediction(&prediction(0.1)), Some(-Decimal::ONE));
    }

    #[test]
    fn thresholds_out_of_order_are_refused_naming_both() {
        let params = Params::from([("upper".to_owned(), 0.4), ("lower".to_owned(), 0.6)]);
        let err = ModelSignal::build(&params, Decimal::ONE)
            .err()
            .expect("refused");
        assert!(
            err.message.contains("0.6") && err.message.contains("0.4"),
            "{err}"
        );
    }
}
