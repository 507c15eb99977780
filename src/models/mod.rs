//! Models: the feature library shared by live model actors, the backtester and training; drift statistics
//! for monitoring; ONNX inference.

pub mod cost;
pub mod deployment;
pub mod drift;
pub mod driven;
pub mod features;
pub mod hmm;
pub mod manifest;
pub mod onnx;
pub mod pool;
pub mod registry;
pub mod synthetic;
pub mod training;
pub mod trees;
