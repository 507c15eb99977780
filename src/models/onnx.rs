//! ONNX inference with `tract-onnx`: pure Rust, loads a model offline with no native runtime to download.
//!
//! A model file is never trusted (docs/tenant-code.md). [`OnnxModel::load_within`] first costs it without
//! running anything ([`super::cost`]: peak memory and work per prediction from the graph with its input fixed
//! to one row of the manifest's width, `[1, width]` f32) and refuses a file over the tier's [`ModelLimits`]
//! or whose cost cannot be bounded; only then does tract parse it, optimise it once, and dry-run it on three
//! rows (zeros, ones, alternating signs): a file that does not parse, whose graph does not accept that width,
//! that fails to run or gives a non-finite output is refused with a message naming the problem. Tree
//! ensembles and regime HMMs are costed from their structure (nodes and depth; states and dimension) against
//! the same limits. A loaded model is shared
//! (`Arc`); each user runs it through its own [`Inference`], whose tract state keeps the intermediate buffers
//! from one run to the next.
//!
//! A file whose graph is a lone `ai.onnx.ml` `TreeEnsembleRegressor` or `TreeEnsembleClassifier` node (how
//! skl2onnx and onnxmltools export scikit-learn, LightGBM and XGBoost models) is served instead by the native
//! evaluator of [`super::trees`], since tract-onnx 0.23 lacks the regressor and runs the classifier slowly.
//! It passes the same width check and dry run, and a malformed ensemble is refused naming the attribute at
//! fault.
//!
//! The built-in regime detector (`regime_hmm`) is not an ONNX graph: its "file" is the JSON of a fitted
//! Gaussian HMM ([`RegimeFile`]), recognised by its `kind`, validated the same way, and run as an online
//! filter: each run is one forward step over the newest bar's features and gives the state probabilities
//! (the filter's state lives in the [`Inference`], one per version run, like tract's buffers).
//!
//! [`linear_model`] and [`mlp_model`] write small ONNX files from weights (the demo's model, tests and
//! benchmarks): models whose outputs can be computed by hand.

use std::sync::Arc;

use prost::Message;
use tract_onnx::pb;
use tract_onnx::prelude::*;
use tract_onnx::tract_hir::infer::Factoid;

use super::cost::{CostError, ModelCost, ModelLimits};
use super::trees::TreeEnsemble;

/// Why a model file was refused, or a run failed.
#[derive(Debug, thiserror::Error)]
pub enum OnnxError {
    #[error("not a loadable ONNX model: {0}")]
    NotOnnx(String),
    #[error("the model does not take {width} input features: {reason}")]
    InputWidth { width: usize, reason: String },
    #[error("the model cannot be prepared for {width} input features (an operator tract does not support, or shapes that do not fit): {reason}")]
    Prepare { width: usize, reason: String },
    #[error("the model fails on a dry run: {0}")]
    DryRun(String),
    #[error("the model gives a non-finite output ({value}) on a dry run with {input}")]
    NonFinite { value: f32, input: &'static str },
    #[error("the model gives no output")]
    NoOutput,
    #[error("inference failed: {0}")]
    Run(String),
    #[error(transparent)]
    Cost(#[from] CostError),
}

/// A validated, optimised model taking `[1, width]` f32 and giving one or more f32 outputs.
#[derive(Debug)]
pub struct OnnxModel {
    engine: Engine,
    width: usize,
    outputs: usize,
    cost: ModelCost,
}

/// What runs a model: tract's optimised plan, or the native tree-ensemble evaluator.
#[derive(Debug)]
enum Engine {
    Tract(Arc<TypedSimplePlan>),
    Trees(Arc<TreeEnsemble>),
    Hmm(Arc<super::hmm::GaussianHmm>),
}

/// The file of a `regime_hmm` version: a fitted Gaussian HMM as JSON.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegimeFile {
    /// Always `regime_hmm`.
    pub kind: String,
    pub hmm: super::hmm::GaussianHmm,
}

/// The HMM in `bytes` if they are a regime file; `Err` if they claim to be one and are not valid.
fn regime(bytes: &[u8], width: usize) -> Result<Option<super::hmm::GaussianHmm>, OnnxError> {
    if bytes.first() != Some(&b'{') {
        return Ok(None);
    }
    let file: RegimeFile = serde_json::from_slice(bytes)
        .map_err(|e| OnnxError::NotOnnx(format!("neither ONNX nor a regime_hmm file: {e}")))?;
    if file.kind != "regime_hmm" {
        return Err(OnnxError::NotOnnx(format!(
            "kind `{}`: the only built-in model file kind is `regime_hmm`",
            file.kind
        )));
    }
    file.hmm
        .validate()
        .map_err(|e| OnnxError::NotOnnx(format!("regime_hmm: {e}")))?;
    if file.hmm.dims != width {
        return Err(OnnxError::InputWidth {
            width,
            reason: format!("the regime model observes {} features", file.hmm.dims),
        });
    }
    Ok(Some(file.hmm))
}

/// One forward step of a Gaussian HMM over `dims` features: a `states × states` transition, per-state means
/// and variances, and the filter's state (f64).
fn hmm_cost(hmm: &super::hmm::GaussianHmm) -> ModelCost {
    let (k, d) = (hmm.states as u64, hmm.dims as u64);
    let values = k
        .saturating_mul(k)
        .saturating_add(k.saturating_mul(d).saturating_mul(2))
        .saturating_add(k.saturating_mul(3));
    ModelCost {
        memory_bytes: values.saturating_mul(8),
        work: k
            .saturating_mul(k)
            .saturating_add(k.saturating_mul(d).saturating_mul(3)),
    }
}

/// A runner's engine: tract's state (its buffers), or the shared ensemble.
enum Runner {
    Tract(TypedSimpleState),
    Trees(Arc<TreeEnsemble>),
    Hmm(super::hmm::Filter),
}

/// The native ensemble for `bytes` when its graph is a lone tree-ensemble node (`None` otherwise, and for
/// bytes that do not decode, which tract then refuses with its own message).
fn tree_ensemble(bytes: &[u8], width: usize) -> Result<Option<TreeEnsemble>, OnnxError> {
    let Ok(proto) = pb::ModelProto::decode(bytes) else {
        return Ok(None);
    };
    let Some(trees) = TreeEnsemble::from_model(&proto)
        .map_err(|reason| OnnxError::NotOnnx(format!("a malformed tree ensemble: {reason}")))?
    else {
        return Ok(None);
    };
    match trees.declared_width() {
        Some(declared) if declared != width => Err(OnnxError::InputWidth {
            width,
            reason: format!("its input is declared with {declared} features"),
        }),
        None if trees.width() > width => Err(OnnxError::InputWidth {
            width,
            reason: format!("its trees read feature {}", trees.width() - 1),
        }),
        _ => Ok(Some(trees)),
    }
}

/// Costs a graph before tract sees it: the declared width checked, then peak memory and work against
/// `limits` ([`super::cost::estimate`]).
fn graph_cost(bytes: &[u8], width: usize, limits: &ModelLimits) -> Result<ModelCost, OnnxError> {
    let proto = pb::ModelProto::decode(bytes)
        .map_err(|e| OnnxError::NotOnnx(format!("not an ONNX protobuf: {e}")))?;
    if let Some(graph) = &proto.graph {
        let initialized: std::collections::HashSet<&str> =
            graph.initializer.iter().map(|t| t.name.as_str()).collect();
        let inputs: Vec<&pb::ValueInfoProto> = graph
            .input
            .iter()
            .filter(|i| !initialized.contains(i.name.as_str()))
            .collect();
        if inputs.len() != 1 {
            return Err(OnnxError::InputWidth {
                width,
                reason: format!("it has {} inputs, one is expected", inputs.len()),
            });
        }
        if let Some(last) = declared_last_dim(inputs[0]) {
            if last != width as i64 {
                return Err(OnnxError::InputWidth {
                    width,
                    reason: format!("its input is declared with {last} features"),
                });
            }
        }
    }
    Ok(super::cost::estimate(&proto, width, limits)?)
}

/// The last dimension of an input as declared, when it is a number.
fn declared_last_dim(input: &pb::ValueInfoProto) -> Option<i64> {
    use pb::tensor_shape_proto::dimension::Value;
    let Some(pb::type_proto::Value::TensorType(t)) = input.r#type.as_ref()?.value.as_ref() else {
        return None;
    };
    match t.shape.as_ref()?.dim.last()?.value.as_ref()? {
        Value::DimValue(v) => Some(*v),
        Value::DimParam(_) => None,
    }
}

/// Parses, checks the width of and optimises a model for tract (once [`graph_cost`] admitted it).
fn tract_plan(bytes: &[u8], width: usize) -> Result<Arc<TypedSimplePlan>, OnnxError> {
    let model = tract_onnx::onnx()
        .model_for_read(&mut &bytes[..])
        .map_err(|e| OnnxError::NotOnnx(format!("{e:#}")))?;
    if model.inputs.len() != 1 {
        return Err(OnnxError::InputWidth {
            width,
            reason: format!("it has {} inputs, one is expected", model.inputs.len()),
        });
    }
    let declared = model
        .input_fact(0)
        .map_err(|e| OnnxError::NotOnnx(format!("{e:#}")))?
        .shape
        .dims()
        .last()
        .and_then(|d| d.concretize())
        .and_then(|d| d.to_i64().ok());
    if let Some(last) = declared {
        if last != width as i64 {
            return Err(OnnxError::InputWidth {
                width,
                reason: format!("its input is declared with {last} features"),
            });
        }
    }
    model
        .with_input_fact(0, f32::fact([1, width]).into())
        .and_then(|m| m.into_optimized())
        .and_then(|m| m.into_runnable())
        .map_err(|e| OnnxError::Prepare {
            width,
            reason: format!("{e:#}"),
        })
}

impl OnnxModel {
    /// Loads and validates a model file for `width` input features, within [`ModelLimits::CEILING`] (where
    /// no tier applies: configuration files, trellis's own trained models, benchmarks).
    pub fn load(bytes: &[u8], width: usize) -> Result<Arc<Self>, OnnxError> {
        Self::load_within(bytes, width, &ModelLimits::CEILING)
    }

    /// Loads and validates a model file for `width` input features: refused, before anything runs it, when
    /// one prediction would cost more than `limits`.
    pub fn load_within(
        bytes: &[u8],
        width: usize,
        limits: &ModelLimits,
    ) -> Result<Arc<Self>, OnnxError> {
        let (engine, cost) = match regime(bytes, width)? {
            Some(hmm) => {
                let cost = hmm_cost(&hmm);
                cost.check(
                    limits,
                    &format!(
                        "a regime HMM of {} states over {} features",
                        hmm.states, hmm.dims
                    ),
                )?;
                (Engine::Hmm(Arc::new(hmm)), cost)
            }
            None => match tree_ensemble(bytes, width)? {
                Some(trees) => {
                    let cost = trees.cost();
                    cost.check(
                        limits,
                        &format!(
                            "a tree ensemble of {} nodes, {} splits deep at most",
                            trees.nodes(),
                            trees.depth()
                        ),
                    )?;
                    (Engine::Trees(Arc::new(trees)), cost)
                }
                None => {
                    let cost = graph_cost(bytes, width, limits)?;
                    (Engine::Tract(tract_plan(bytes, width)?), cost)
                }
            },
        };
        let mut loaded = Self {
            engine,
            width,
            outputs: 0,
            cost,
        };
        let mut run = loaded
            .inference()
            .map_err(|e| OnnxError::DryRun(e.to_string()))?;
        let rows: [(&'static str, Vec<f32>); 3] = [
            ("zeros", vec![0.0; width]),
            ("ones", vec![1.0; width]),
            (
                "alternating ±1",
                (0..width)
                    .map(|i| if i % 2 == 0 { 1.0 } else { -1.0 })
                    .collect(),
            ),
        ];
        let mut outputs = 0;
        for (input, row) in rows {
            let out = run
                .run(&row)
                .map_err(|e| OnnxError::DryRun(e.to_string()))?;
            if out.is_empty() {
                return Err(OnnxError::NoOutput);
            }
            if let Some(value) = out.iter().copied().find(|v| !v.is_finite()) {
                return Err(OnnxError::NonFinite { value, input });
            }
            outputs = out.len();
        }
        loaded.outputs = outputs;
        Ok(Arc::new(loaded))
    }

    pub fn width(&self) -> usize {
        self.width
    }

    /// The estimated peak memory and work of one prediction, as admitted.
    pub fn cost(&self) -> ModelCost {
        self.cost
    }

    /// How many values one run gives (the first output, flattened).
    pub fn outputs(&self) -> usize {
        self.outputs
    }

    /// A runner of this model with its own reused buffers.
    pub fn inference(&self) -> Result<Inference, OnnxError> {
        let runner = match &self.engine {
            Engine::Tract(plan) => {
                Runner::Tract(plan.spawn().map_err(|e| OnnxError::Run(format!("{e:#}")))?)
            }
            Engine::Trees(trees) => Runner::Trees(Arc::clone(trees)),
            Engine::Hmm(hmm) => Runner::Hmm(hmm.filter()),
        };
        Ok(Inference {
            runner,
            width: self.width,
            out: Vec::with_capacity(self.outputs.max(1)),
        })
    }
}

/// Runs one model, reusing its buffers between runs.
pub struct Inference {
    runner: Runner,
    width: usize,
    out: Vec<f32>,
}

impl Inference {
    /// Runs the model on one row of features; the first output, flattened.
    pub fn run(&mut self, features: &[f32]) -> Result<&[f32], OnnxError> {
        if features.len() != self.width {
            return Err(OnnxError::Run(format!(
                "{} features given, the model takes {}",
                features.len(),
                self.width
            )));
        }
        let state = match &mut self.runner {
            Runner::Trees(trees) => {
                trees.eval(features, &mut self.out);
                return Ok(&self.out);
            }
            Runner::Hmm(filter) => {
                let row: Vec<f64> = features.iter().map(|x| f64::from(*x)).collect();
                let p = filter.step(&row);
                self.out.clear();
                self.out.extend(p.iter().map(|x| *x as f32));
                return Ok(&self.out);
            }
            Runner::Tract(state) => state,
        };
        let input = Tensor::from_shape(&[1, self.width], features)
            .map_err(|e| OnnxError::Run(format!("{e:#}")))?;
        let outputs = state
            .run(tvec!(input.into_tvalue()))
            .map_err(|e| OnnxError::Run(format!("{e:#}")))?;
        let first = outputs.first().ok_or(OnnxError::NoOutput)?;
        let values = first
            .to_plain_array_view::<f32>()
            .map_err(|e| OnnxError::Run(format!("the output is not f32: {e:#}")))?;
        self.out.clear();
        self.out.extend(values.iter().copied());
        Ok(&self.out)
    }
}

const FLOAT: i32 = pb::tensor_proto::DataType::Float as i32;

/// An f32 tensor input or output of `dims`, for graphs written here and by the benchmarks.
pub fn value_info(name: &str, dims: &[i64]) -> pb::ValueInfoProto {
    use pb::tensor_shape_proto::{dimension, Dimension};
    pb::ValueInfoProto {
        name: name.into(),
        r#type: Some(pb::TypeProto {
            value: Some(pb::type_proto::Value::TensorType(pb::type_proto::Tensor {
                elem_type: FLOAT,
                shape: Some(pb::TensorShapeProto {
                    dim: dims
                        .iter()
                        .map(|d| Dimension {
                            value: Some(dimension::Value::DimValue(*d)),
                            ..Default::default()
                        })
                        .collect(),
                }),
            })),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn initializer(name: &str, dims: &[i64], values: Vec<f32>) -> pb::TensorProto {
    pb::TensorProto {
        name: name.into(),
        dims: dims.to_vec(),
        data_type: FLOAT,
        float_data: values,
        ..Default::default()
    }
}

fn node(op: &str, inputs: &[&str], output: &str) -> pb::NodeProto {
    pb::NodeProto {
        op_type: op.into(),
        input: inputs.iter().map(|s| (*s).to_owned()).collect(),
        output: vec![output.into()],
        name: output.into(),
        ..Default::default()
    }
}

fn model_bytes(
    width: usize,
    outputs: usize,
    nodes: Vec<pb::NodeProto>,
    init: Vec<pb::TensorProto>,
) -> Vec<u8> {
    let graph = pb::GraphProto {
        name: "trellis".into(),
        node: nodes,
        initializer: init,
        input: vec![value_info("features", &[1, width as i64])],
        output: vec![value_info("y", &[1, outputs as i64])],
        ..Default::default()
    };
    pb::ModelProto {
        ir_version: 8,
        producer_name: "trellis".into(),
        opset_import: vec![pb::OperatorSetIdProto {
            domain: String::new(),
            version: 13,
        }],
        graph: Some(graph),
        ..Default::default()
    }
    .encode_to_vec()
}

/// `y = x · weights + bias`: one output, `weights.len()` features.
pub fn linear_model(weights: &[f32], bias: f32) -> Vec<u8> {
    let n = weights.len() as i64;
    model_bytes(
        weights.len(),
        1,
        vec![
            node("MatMul", &["features", "w"], "xw"),
            node("Add", &["xw", "b"], "y"),
        ],
        vec![
            initializer("w", &[n, 1], weights.to_vec()),
            initializer("b", &[1], vec![bias]),
        ],
    )
}

/// `y = sigmoid(x · weights + bias)`: a logistic regression (trained direction models).
pub fn logistic_model(weights: &[f32], bias: f32) -> Vec<u8> {
    let n = weights.len() as i64;
    model_bytes(
        weights.len(),
        1,
        vec![
            node("MatMul", &["features", "w"], "xw"),
            node("Add", &["xw", "b"], "z"),
            node("Sigmoid", &["z"], "y"),
        ],
        vec![
            initializer("w", &[n, 1], weights.to_vec()),
            initializer("b", &[1], vec![bias]),
        ],
    )
}

/// `y = op(x · weights)` with one output, for a unary ONNX operator (`Sqrt`, `Log`, `Relu`, …): a model
/// whose failure modes can be provoked at will (a square root of a negative input is NaN).
pub fn unary_model(op: &str, weights: &[f32]) -> Vec<u8> {
    let n = weights.len() as i64;
    model_bytes(
        weights.len(),
        1,
        vec![
            node("MatMul", &["features", "w"], "xw"),
            node(op, &["xw"], "y"),
        ],
        vec![initializer("w", &[n, 1], weights.to_vec())],
    )
}

/// A two-layer perceptron `y = relu(x·W1 + b1)·W2 + b2` with one output. `w1` is `width × hidden`, row-major.
pub fn mlp_model(
    width: usize,
    hidden: usize,
    w1: Vec<f32>,
    b1: Vec<f32>,
    w2: Vec<f32>,
    b2: f32,
) -> Vec<u8> {
    let (n, h) = (width as i64, hidden as i64);
    model_bytes(
        width,
        1,
        vec![
            node("MatMul", &["features", "w1"], "xw1"),
            node("Add", &["xw1", "b1"], "h1"),
            node("Relu", &["h1"], "a1"),
            node("MatMul", &["a1", "w2"], "aw2"),
            node("Add", &["aw2", "b2"], "y"),
        ],
        vec![
            initializer("w1", &[n, h], w1),
            initializer("b1", &[h], b1),
            initializer("w2", &[h, 1], w2),
            initializer("b2", &[1], vec![b2]),
        ],
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_linear_model_gives_the_hand_computed_value() {
        let model = OnnxModel::load(&linear_model(&[0.5, -2.0, 1.0], 0.25), 3).expect("loads");
        let mut run = model.inference().expect("runs");
        let y = run.run(&[2.0, 1.0, 3.0]).expect("runs")[0];
        // 0.5·2 − 2·1 + 1·3 + 0.25
        assert!((y - 2.25).abs() < 1e-6, "{y}");
        let again = run.run(&[0.0, 0.0, 0.0]).expect("runs")[0];
        assert!(
            (again - 0.25).abs() < 1e-6,
            "the reused state gives {again}"
        );
        assert_eq!(model.outputs(), 1);
    }

    #[test]
    fn a_two_layer_perceptron_gives_the_hand_computed_value() {
        // hidden = relu([x0 + x1, x0 − x1]); y = 2·h0 + 3·h1 − 1
        let bytes = mlp_model(
            2,
            2,
            vec![1.0, 1.0, 1.0, -1.0],
            vec![0.0, 0.0],
            vec![2.0, 3.0],
            -1.0,
        );
        let model = OnnxModel::load(&bytes, 2).expect("loads");
        let mut run = model.inference().expect("runs");
        let y = run.run(&[1.0, 3.0]).expect("runs")[0];
        // h = relu([4, −2]) = [4, 0]; y = 8 − 1
        assert!((y - 7.0).abs() < 1e-6, "{y}");
    }

    #[test]
    fn bytes_that_are_not_onnx_are_refused_as_such() {
        let err = OnnxModel::load(b"certainly not a protobuf model", 3).expect_err("refused");
        assert!(matches!(err, OnnxError::NotOnnx(_)), "{err}");
    }

    #[test]
    fn a_model_of_another_width_is_refused_naming_both_widths() {
        let err = OnnxModel::load(&linear_model(&[1.0, 2.0], 0.0), 5).expect_err("refused");
        let text = err.to_string();
        assert!(
            matches!(err, OnnxError::InputWidth { width: 5, .. }),
            "{text}"
        );
        assert!(
            text.contains("5 input features") && text.contains('2'),
            "{text}"
        );
    }

    fn two_tree_regressor(width: usize) -> Vec<u8> {
        use super::super::trees::{regressor_model, Aggregate, PostTransform, TreeNode};
        // x0 <= 0.5 → 1 else 2; x1 <= 0 → 10 else 20.
        let trees = vec![
            vec![
                TreeNode::leq(0, 0.5, 1, 2),
                TreeNode::leaf(1.0),
                TreeNode::leaf(2.0),
            ],
            vec![
                TreeNode::leq(1, 0.0, 1, 2),
                TreeNode::leaf(10.0),
                TreeNode::leaf(20.0),
            ],
        ];
        regressor_model(width, 1, &trees, Aggregate::Sum, &[], PostTransform::None)
    }

    #[test]
    fn a_tree_ensemble_regressor_is_served_natively_through_inference() {
        let model = OnnxModel::load(&two_tree_regressor(2), 2).expect("loads");
        assert!(matches!(model.engine, Engine::Trees(_)), "{model:?}");
        assert_eq!((model.width(), model.outputs()), (2, 1));
        let mut run = model.inference().expect("runs");
        assert_eq!(run.run(&[0.5, 0.0]).expect("runs"), [11.0]);
        assert_eq!(run.run(&[0.6, 1.0]).expect("runs"), [22.0]);
        let err = run.run(&[0.0]).expect_err("one feature short");
        assert!(matches!(err, OnnxError::Run(_)), "{err}");
    }

    #[test]
    fn a_tree_ensemble_of_another_width_is_refused_naming_both_widths() {
        let err = OnnxModel::load(&two_tree_regressor(2), 3).expect_err("refused");
        let text = err.to_string();
        assert!(
            matches!(err, OnnxError::InputWidth { width: 3, .. }),
            "{text}"
        );
        assert!(text.contains("declared with 2 features"), "{text}");
    }

    #[test]
    fn a_malformed_tree_ensemble_is_refused_naming_the_attribute() {
        let mut model = pb::ModelProto::decode(two_tree_regressor(2).as_slice()).expect("decodes");
        if let Some(attribute) = model
            .graph
            .as_mut()
            .and_then(|g| g.node.first_mut())
            .and_then(|n| {
                n.attribute
                    .iter_mut()
                    .find(|a| a.name == "nodes_falsenodeids")
            })
        {
            attribute.ints[0] = 42;
        }
        let err = OnnxModel::load(&model.encode_to_vec(), 2).expect_err("refused");
        let text = err.to_string();
        assert!(matches!(err, OnnxError::NotOnnx(_)), "{text}");
        assert!(
            text.contains("TreeEnsembleRegressor") && text.contains("nodes_falsenodeids[0] is 42"),
            "{text}"
        );
    }

    #[test]
    fn a_model_giving_non_finite_outputs_is_refused() {
        let err =
            OnnxModel::load(&linear_model(&[f32::INFINITY, 1.0], 0.0), 2).expect_err("refused");
        assert!(matches!(err, OnnxError::NonFinite { .. }), "{err}");
    }
}
