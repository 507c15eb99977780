//! A strategy fed by a model, for backtests and optimisation: each closed bar updates the model's features,
//! runs the model and hands the prediction to the strategy's `on_prediction` — the order live trading uses
//! (bar to the strategy, then the model's prediction), with the same feature library and the same
//! inference code, so a backtest sees the predictions the live path would make.

use rust_decimal::Decimal;

use super::deployment::LoadedVersion;
use super::features::FeatureState;
use super::manifest::Output;
use super::onnx::Inference;
use crate::domain::Prediction;
use crate::domain::{Bar, Tick};
use crate::strategies::Strategy;

pub struct ModelDriven {
    inner: Box<dyn Strategy>,
    features: FeatureState,
    inference: Inference,
    output: Output,
    row: Vec<f32>,
    version: String,
    /// Runs that failed or gave a non-finite value (skipped, as live).
    pub skipped: u64,
    pub predictions: u64,
}

impl ModelDriven {
    pub fn new(inner: Box<dyn Strategy>, version: &LoadedVersion) -> Result<Self, String> {
        Ok(Self {
            inner,
            features: version.features.state(),
            inference: version.model.inference().map_err(|e| e.to_string())?,
            output: version.manifest.output.clone(),
            row: vec![0.0; version.features.len()],
            version: version.version.clone(),
            skipped: 0,
            predictions: 0,
        })
    }

    fn predict(&mut self, bar: &Bar) -> Option<Prediction> {
        self.features.on_bar(bar);
        if !self.features.write(&mut self.row) {
            return None;
        }
        let start = std::time::Instant::now();
        let value = match self.inference.run(&self.row) {
            Ok(out) => self.output.value(out),
            Err(_) => None,
        };
        match value {
            Some(v) if v.is_finite() => {
                self.predictions += 1;
                Some(Prediction {
                    deployment: "backtest".into(),
                    version: self.version.clone(),
                    symbol: bar.symbol.clone(),
                    bar_open_ms: bar.open_time_ms,
                    value: v,
                    latency_us: start.elapsed().as_micros() as u64,
                    shadow: false,
                    scores: Vec::new(),
                })
            }
            _ => {
                self.skipped += 1;
                None
            }
        }
    }
}

impl Strategy for ModelDriven {
    fn on_bar(&mut self, bar: &Bar) -> Option<Decimal> {
        let from_bar = self.inner.on_bar(bar);
        match self.predict(bar) {
            Some(p) => self.inner.on_prediction(&p).or(from_bar),
            None => from_bar,
        }
    }

    fn on_tick(&mut self, tick: &Tick) -> Option<Decimal> {
        self.inner.on_tick(tick)
    }

    fn on_fill(&mut self, signed_volume: Decimal, price: Decimal) {
        self.inner.on_fill(signed_volume, price);
    }

    fn wants_ticks(&self) -> bool {
        self.inner.wants_ticks()
    }
}
