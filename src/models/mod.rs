//! Models: the feature library shared by live model actors, the backtester and training; drift statistics
//! for monitoring; ONNX inference.

pub mod correlation;
pub mod deployment;
pub mod drift;
pub mod driven;
pub mod features;
pub mod hmm;
pub mod manifest;
pub mod onnx;
pub mod registry;
pub mod synthetic;
pub mod training;
pub mod trees;

use serde::Serialize;

use crate::domain::Symbol;

/// A model's prediction for a closed bar.
#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
pub struct Prediction {
    /// The deployment that made it.
    pub deployment: String,
    /// The version (sha256 of its ONNX file) that made it.
    pub version: String,
    pub symbol: Symbol,
    pub bar_open_ms: i64,
    /// The output as the manifest reads it (a probability, a return, or a class index).
    pub value: f64,
    /// Features and inference, in µs.
    pub latency_us: u64,
    /// A shadow version's prediction: recorded, never traded.
    pub shadow: bool,
    /// A `class` model's score per label (a regime detector's state probabilities); empty otherwise.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub scores: Vec<f32>,
}
