//! A model version's manifest: what goes in (feature names, in order, from the feature library), what comes
//! out and over which horizon, and what training saw (per-feature histograms for drift, training metrics).
//!
//! The manifest is what makes an ONNX file usable live: trellis computes exactly these features, in this
//! order, with the same code training used, and reads the output as the manifest says.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::drift::Reference;
use super::features::FeatureSet;
use super::onnx::OnnxModel;

/// Longest horizon a manifest may name, in bars.
pub const MAX_HORIZON_BARS: u32 = 10_000;

/// What the model's output means.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Output {
    /// One value in [0, 1]: the probability that the price is higher after the horizon.
    DirectionProbability,
    /// One value: the expected return over the horizon (0.001 = +0.1 %).
    ExpectedReturn,
    /// One score per label; the prediction is the index of the highest.
    Class { labels: Vec<String> },
}

impl Output {
    /// How many values one run of the model must give.
    pub fn width(&self) -> usize {
        match self {
            Self::Class { labels } => labels.len(),
            _ => 1,
        }
    }

    /// The prediction from one run's outputs: the value itself, or the winning class's index.
    pub fn value(&self, outputs: &[f32]) -> Option<f64> {
        match self {
            Self::Class { .. } => outputs
                .iter()
                .enumerate()
                .max_by(|a, b| a.1.total_cmp(b.1))
                .map(|(i, _)| i as f64),
            _ => outputs.first().map(|v| f64::from(*v)),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Input features, in the order the model takes them (e.g. `log_return_1`, `rsi_14`, `tod_sin`).
    pub features: Vec<String>,
    pub output: Output,
    /// Bars after which the outcome of a prediction is known (for accuracy).
    #[serde(default = "one")]
    pub horizon_bars: u32,
    /// The training distribution of each feature (and of `output`), for drift monitoring.
    #[serde(default)]
    // In the API's answers (always there) but, as before, not in the request schema.
    #[schemars(skip_deserializing)]
    pub reference: BTreeMap<String, Reference>,
    /// Metrics from training (accuracy, loss, …), kept with the version.
    #[serde(default)]
    pub metrics: BTreeMap<String, f64>,
    /// The walk-forward report of a version trained by trellis.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub validation: Option<super::training::WalkForward>,
    /// What one prediction costs (peak memory, work), as estimated when the version was admitted; set by
    /// trellis (a value given in an upload is replaced).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(skip_deserializing)]
    pub cost: Option<super::cost::ModelCost>,
}

fn one() -> u32 {
    1
}

impl Manifest {
    /// Checks the manifest on its own; the error names the field.
    pub fn validate(&self) -> Result<FeatureSet, String> {
        let set = FeatureSet::parse(&self.features).map_err(|e| format!("features: {e}"))?;
        if self.horizon_bars == 0 || self.horizon_bars > MAX_HORIZON_BARS {
            return Err(format!(
                "horizon_bars: must be 1 to {MAX_HORIZON_BARS}, not {}",
                self.horizon_bars
            ));
        }
        if let Output::Class { labels } = &self.output {
            if labels.len() < 2 || labels.len() > 100 {
                return Err("output.labels: 2 to 100 labels".into());
            }
        }
        for (name, reference) in &self.reference {
            if name != "output" && !self.features.contains(name) {
                return Err(format!(
                    "reference.{name}: not one of the features (or `output`)"
                ));
            }
            reference
                .validate()
                .map_err(|e| format!("reference.{name}: {e}"))?;
        }
        if let Some((name, v)) = self.metrics.iter().find(|(_, v)| !v.is_finite()) {
            return Err(format!("metrics.{name}: {v} is not a finite number"));
        }
        Ok(set)
    }

    /// Checks that `model` fits this manifest: the input width was checked at load; the output width here.
    pub fn check_model(&self, model: &OnnxModel) -> Result<(), String> {
        if model.outputs() != self.output.width() {
            return Err(format!(
                "the model gives {} outputs, the manifest's output ({}) needs {}",
                model.outputs(),
                serde_json::to_value(&self.output)
                    .ok()
                    .and_then(|v| v["kind"].as_str().map(str::to_owned))
                    .unwrap_or_default(),
                self.output.width()
            ));
        }
        Ok(())
    }
}
