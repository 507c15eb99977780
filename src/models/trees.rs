//! Native evaluation of `ai.onnx.ml` tree ensembles (`TreeEnsembleRegressor`, `TreeEnsembleClassifier`).
//!
//! Why: scikit-learn, LightGBM and XGBoost models exported through skl2onnx / onnxmltools are a single
//! `TreeEnsembleRegressor` or `TreeEnsembleClassifier` node, and tract-onnx 0.23 does not implement the
//! regressor at all while its classifier steps through every leaf of the trees before each tree (about
//! 1.5 ms for 100 trees of depth 6). [`TreeEnsemble`] compiles such a node once into flat arrays (16-byte
//! nodes, leaf weight ranges into one `(target, weight)` array, a root per tree) in which every split is a
//! branch-free `<=` or `==` test, and walks four trees side by side so that their dependent loads
//! overlap: that forest takes about 1.7 µs a row (p50; `trellis bench models`).
//!
//! Semantics follow the ONNX-ML operator spec for `TreeEnsembleRegressor` / `TreeEnsembleClassifier`
//! (opset `ai.onnx.ml` 1–3, including the `*_as_tensor` attributes of opset 3), and onnxruntime's
//! `tree_ensemble_aggregator.h` / `ml_common.h` where the spec is silent:
//!
//! - A split sends a row to its true child when `x <mode> threshold` holds, or when `x` is NaN and the
//!   node's `nodes_missing_value_tracks_true` is 1; a NaN otherwise fails every comparison but `BRANCH_NEQ`.
//!   Thresholds given as doubles (`nodes_values_as_tensor`) are stored as the f32 threshold (and mode) that
//!   gives every f32 input the same answer the double comparison would.
//! - A tree's root is its first listed node; every node of a tree must be reachable from it, a child may be
//!   shared (onnxmltools writes LightGBM set membership so) but no path may loop or be longer than
//!   [`MAX_DEPTH`] splits. Weights attached to a split rather than a leaf are ignored, as onnxruntime does
//!   (old onnxmltools wrote some).
//! - Regressor: per target, `SUM` adds the leaves' weights, `AVERAGE` divides that by the number of trees,
//!   `MIN`/`MAX` keep the extreme weight (0 when no leaf reached gave the target one); then `base_values`
//!   (none, or one per target) are added; `post_transform` is `NONE` or `PROBIT` (the inverse of the
//!   standard normal CDF, computed accurately where onnxruntime uses a coarser approximation). The
//!   regressor's other transforms are refused: onnxruntime ignores them on one target, the spec applies them.
//! - Classifier: the value is the per-class scores (ONNX's second output, "probabilities"), one per label,
//!   summed over the trees. With three or more labels the base values are added and `post_transform`
//!   (`NONE`, `LOGISTIC`, `SOFTMAX`, `SOFTMAX_ZERO`) applies to all scores. With two labels onnxruntime's
//!   binary conventions apply: when the leaves reached gave class 1 nothing, the score `s` is class 0's
//!   (plus the single base value if there is one) and, if every weight of the ensemble is for one class id,
//!   the scores are `[1 - s, s]` when all weights are non-negative (whatever the transform), else
//!   `[σ(-s), σ(s)]` with `LOGISTIC` and `[-s, s]` without (that is how LightGBM and XGBoost binary models
//!   come out of onnxmltools: class id 0 only, `LOGISTIC`); otherwise the two scores get the transform
//!   one by one. Two choices differ from onnxruntime where its result depends on the row or looks
//!   accidental: with two base values they are added class by class, except that when class 1 got nothing
//!   its score is `base[1] + s0` and class 0's the opposite (onnxruntime's original intent; its current
//!   code tests the opposite condition and then ignores class 1's sum); and when weights name both class
//!   ids but the leaves reached gave class 1 nothing, class 1 scores 0 and both get the transform (where
//!   onnxruntime writes a single value). `PROBIT` is refused for a classifier; `SOFTMAX_ZERO` keeps
//!   scores of 0 at 0 and gives all zeros rather than NaN when every score is 0.
//!
//! Nothing here trusts the file: [`TreeEnsemble::from_model`] checks every id, length, mode and number
//! when it compiles the node, so evaluation indexes only what was checked (and still never panics: every
//! access is a checked `get`, and a walk takes as many steps as its deepest tree has splits, at most
//! [`MAX_DEPTH`]).

use std::collections::{HashMap, HashSet};

use prost::Message;
use tract_onnx::pb;

use super::onnx::value_info;

/// The ONNX-ML operator domain.
const ML_DOMAIN: &str = "ai.onnx.ml";
const REGRESSOR: &str = "TreeEnsembleRegressor";
const CLASSIFIER: &str = "TreeEnsembleClassifier";

/// The most splits from a tree's root to any of its leaves.
pub const MAX_DEPTH: usize = 64;
/// The most targets (regressor) or labels (classifier) an ensemble may have.
const MAX_OUTPUTS: usize = 1 << 16;
/// The most input features an ensemble may read (a feature index takes the low 24 bits of a node).
const MAX_FEATURES: usize = 1 << 24;

/// How a split compares its feature with its threshold (`nodes_modes`, leaves excepted).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Leq,
    Lt,
    Gte,
    Gt,
    Eq,
    Neq,
}

impl Mode {
    /// The name `nodes_modes` uses.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Leq => "BRANCH_LEQ",
            Mode::Lt => "BRANCH_LT",
            Mode::Gte => "BRANCH_GTE",
            Mode::Gt => "BRANCH_GT",
            Mode::Eq => "BRANCH_EQ",
            Mode::Neq => "BRANCH_NEQ",
        }
    }
}

/// How a regressor combines its trees (`aggregate_function`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Aggregate {
    Sum,
    Average,
    Min,
    Max,
}

impl Aggregate {
    pub fn as_str(self) -> &'static str {
        match self {
            Aggregate::Sum => "SUM",
            Aggregate::Average => "AVERAGE",
            Aggregate::Min => "MIN",
            Aggregate::Max => "MAX",
        }
    }
}

/// What is applied to the aggregated scores (`post_transform`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PostTransform {
    None,
    Logistic,
    Softmax,
    SoftmaxZero,
    Probit,
}

impl PostTransform {
    pub fn as_str(self) -> &'static str {
        match self {
            PostTransform::None => "NONE",
            PostTransform::Logistic => "LOGISTIC",
            PostTransform::Softmax => "SOFTMAX",
            PostTransform::SoftmaxZero => "SOFTMAX_ZERO",
            PostTransform::Probit => "PROBIT",
        }
    }

    fn parse(name: &[u8]) -> Option<Self> {
        [
            PostTransform::None,
            PostTransform::Logistic,
            PostTransform::Softmax,
            PostTransform::SoftmaxZero,
            PostTransform::Probit,
        ]
        .into_iter()
        .find(|p| p.as_str().as_bytes() == name)
    }
}

/// A compiled node's test; `Leaf` ends a walk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Leq,
    Lt,
    Gte,
    Gt,
    Eq,
    Neq,
    Leaf,
}

impl Op {
    fn parse(name: &[u8]) -> Option<Self> {
        Some(match name {
            b"BRANCH_LEQ" => Op::Leq,
            b"BRANCH_LT" => Op::Lt,
            b"BRANCH_GTE" => Op::Gte,
            b"BRANCH_GT" => Op::Gt,
            b"BRANCH_EQ" => Op::Eq,
            b"BRANCH_NEQ" => Op::Neq,
            b"LEAF" => Op::Leaf,
            _ => return None,
        })
    }
}

/// The flags of a compiled test, in the top 8 bits of [`Node::packed`].
mod flag {
    /// Test `x == threshold` rather than `x <= threshold`.
    pub const EQ: u32 = 1 << 24;
    /// Go the true way when the test fails.
    pub const INVERT: u32 = 1 << 25;
    /// Go the true way when `x` is NaN (whatever the test).
    pub const NAN_TRUE: u32 = 1 << 26;
    /// A leaf: both ways lead back to it.
    pub const LEAF: u32 = 1 << 27;
    /// The feature index, in the low 24 bits.
    pub const FEATURE: u32 = (1 << 24) - 1;
}

/// One compiled node, 16 bytes. Every `BRANCH_*` mode compiles to `x <= threshold` or `x == threshold`,
/// perhaps inverted, with the NaN case decided apart: for a number `x`, `x < t` is `x <= t⁻` (the f32 below
/// `t`), `x >= t` is not `x <= t⁻`, `x > t` is not `x <= t`, `x != t` is not `x == t`. A step is then
/// branch-free: `next[test as usize]`. A leaf's `next` is itself twice, so a walk can take more steps than
/// its tree is deep; its weights are `weights[leaf_weights[leaf]]`.
#[derive(Debug, Clone, Copy)]
struct Node {
    threshold: f32,
    /// The feature read (low 24 bits, 0 for a leaf) and the test's [`flag`]s.
    packed: u32,
    /// The next node when the test fails, and when it holds.
    next: [u32; 2],
}

impl Node {
    fn is_leaf(&self) -> bool {
        self.packed & flag::LEAF != 0
    }
}

/// Whether a row with `x` at the node's feature goes the node's true way.
#[inline(always)]
fn goes_true(packed: u32, threshold: f32, x: f32) -> bool {
    let test = if packed & flag::EQ != 0 {
        x == threshold
    } else {
        x <= threshold
    };
    if x.is_nan() {
        packed & flag::NAN_TRUE != 0
    } else {
        test ^ (packed & flag::INVERT != 0)
    }
}

/// Trees walked side by side (their steps are independent, so the processor overlaps them).
const LANES: usize = 4;

/// One leaf weight: `value` for output `target`.
#[derive(Debug, Clone, Copy)]
struct Weight {
    target: u32,
    value: f32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Regressor(Aggregate),
    /// `single_class`: every class weight names the same class id (onnxruntime's "binary case");
    /// `all_positive`: no class weight is negative.
    Classifier {
        single_class: bool,
        all_positive: bool,
    },
}

/// A tree ensemble compiled into flat arrays, evaluated natively.
#[derive(Debug, Clone)]
pub struct TreeEnsemble {
    kind: Kind,
    /// Every tree's nodes, then one weightless leaf that pads `roots`.
    nodes: Vec<Node>,
    /// Per node, the range of its weights in `weights` (empty but for leaves).
    leaf_weights: Vec<[u32; 2]>,
    weights: Vec<Weight>,
    /// Each tree's root, an index into `nodes`, padded to a multiple of [`LANES`] with the padding leaf.
    roots: Vec<u32>,
    /// Per group of [`LANES`] roots, the most splits from one of them to a leaf.
    steps: Vec<u8>,
    /// Trees, padding excepted.
    trees: usize,
    /// None, or one per output (or one for a two-label classifier).
    base_values: Vec<f32>,
    post: PostTransform,
    outputs: usize,
    declared_width: Option<usize>,
    /// 1 + the highest feature a split reads.
    read_width: usize,
}

impl TreeEnsemble {
    /// Compiles `model` if its graph is one `ai.onnx.ml` `TreeEnsembleRegressor` or `TreeEnsembleClassifier`
    /// node over the graph's one input: `Ok(None)` when it is not (another engine's business), `Err`
    /// naming the attribute at fault when it is but is malformed.
    pub fn from_model(model: &pb::ModelProto) -> Result<Option<TreeEnsemble>, String> {
        let Some(graph) = model.graph.as_ref() else {
            return Ok(None);
        };
        let [node] = graph.node.as_slice() else {
            return Ok(None);
        };
        let classifier = match node.op_type.as_str() {
            REGRESSOR => false,
            CLASSIFIER => true,
            _ => return Ok(None),
        };
        if node.domain != ML_DOMAIN {
            return Ok(None);
        }
        let initialized: HashSet<&str> =
            graph.initializer.iter().map(|t| t.name.as_str()).collect();
        let mut inputs = graph
            .input
            .iter()
            .filter(|i| !initialized.contains(i.name.as_str()));
        let (Some(input), None) = (inputs.next(), inputs.next()) else {
            return Ok(None);
        };
        if node.input.len() != 1 || node.input.first() != Some(&input.name) {
            return Ok(None);
        }
        compile(node, classifier, declared_width(input))
            .map(Some)
            .map_err(|e| {
                let name = if node.name.is_empty() {
                    String::new()
                } else {
                    format!(" `{}`", node.name)
                };
                format!("{}{name}: {e}", node.op_type)
            })
    }

    /// Input features a row must have: the graph's declared width, else 1 + the highest feature read.
    pub fn width(&self) -> usize {
        self.declared_width.unwrap_or(self.read_width)
    }

    /// Nodes of every tree.
    pub fn nodes(&self) -> usize {
        self.nodes.len().saturating_sub(1)
    }

    /// The most splits from a root to a leaf.
    pub fn depth(&self) -> usize {
        self.steps.iter().copied().max().unwrap_or(0) as usize
    }

    /// What one evaluation costs: the compiled arrays (memory) and a walk of every tree plus the leaf
    /// weights it may add (work), for the same limits as an ONNX graph's ([`super::cost`]).
    pub fn cost(&self) -> super::cost::ModelCost {
        use std::mem::size_of;
        let memory = self.nodes.len() * size_of::<Node>()
            + self.leaf_weights.len() * size_of::<[u32; 2]>()
            + self.weights.len() * size_of::<Weight>()
            + self.roots.len() * size_of::<u32>()
            + self.steps.len()
            + (self.base_values.len() + self.outputs) * size_of::<f32>();
        let walks: u64 = self
            .steps
            .iter()
            .map(|s| u64::from(*s) * LANES as u64)
            .sum();
        super::cost::ModelCost {
            memory_bytes: memory as u64,
            work: walks + self.weights.len() as u64 + self.outputs as u64,
        }
    }

    /// The input width the graph declares, if it declares one.
    pub fn declared_width(&self) -> Option<usize> {
        self.declared_width
    }

    /// Values one evaluation gives: targets (regressor) or class scores (classifier).
    pub fn outputs(&self) -> usize {
        self.outputs
    }

    /// Evaluates one row into `out` (cleared first; it never grows past [`Self::outputs`], so it
    /// allocates on the first call only). A feature past the end of `features` reads as missing (NaN).
    pub fn eval(&self, features: &[f32], out: &mut Vec<f32>) {
        out.clear();
        let extreme = matches!(
            self.kind,
            Kind::Regressor(Aggregate::Min) | Kind::Regressor(Aggregate::Max)
        );
        // NaN marks an output no leaf has given a weight to yet (weights are finite).
        out.resize(self.outputs, if extreme { f32::NAN } else { 0.0 });
        let mut class_1 = false;
        for (group, &steps) in self.roots.chunks_exact(LANES).zip(&self.steps) {
            let Ok(mut at) = <[u32; LANES]>::try_from(group) else {
                continue;
            };
            for _ in 0..steps {
                for a in &mut at {
                    *a = self.step(*a, features);
                }
            }
            for leaf in at {
                let [start, end] = self
                    .leaf_weights
                    .get(leaf as usize)
                    .copied()
                    .unwrap_or_default();
                let weights = self
                    .weights
                    .get(start as usize..end as usize)
                    .unwrap_or(&[]);
                for w in weights {
                    class_1 |= w.target == 1;
                    let Some(o) = out.get_mut(w.target as usize) else {
                        continue;
                    };
                    *o = match self.kind {
                        Kind::Regressor(Aggregate::Min) if o.is_nan() || w.value < *o => w.value,
                        Kind::Regressor(Aggregate::Max) if o.is_nan() || w.value > *o => w.value,
                        Kind::Regressor(Aggregate::Min | Aggregate::Max) => *o,
                        _ => *o + w.value,
                    };
                }
            }
        }
        match self.kind {
            Kind::Regressor(aggregate) => self.finish_regression(aggregate, out),
            Kind::Classifier {
                single_class,
                all_positive,
            } => self.finish_classification(single_class, all_positive, class_1, out),
        }
    }

    /// The node after `at` for `features` (`at` itself at a leaf).
    #[inline(always)]
    fn step(&self, at: u32, features: &[f32]) -> u32 {
        let Some(node) = self.nodes.get(at as usize) else {
            return at;
        };
        let x = features
            .get((node.packed & flag::FEATURE) as usize)
            .copied()
            .unwrap_or(f32::NAN);
        node.next[usize::from(goes_true(node.packed, node.threshold, x))]
    }

    fn finish_regression(&self, aggregate: Aggregate, out: &mut [f32]) {
        let trees = self.trees.max(1) as f32;
        for o in out.iter_mut() {
            match aggregate {
                Aggregate::Sum => {}
                Aggregate::Average => *o /= trees,
                Aggregate::Min | Aggregate::Max if o.is_nan() => *o = 0.0,
                Aggregate::Min | Aggregate::Max => {}
            }
        }
        if self.base_values.len() == out.len() {
            for (o, b) in out.iter_mut().zip(&self.base_values) {
                *o += b;
            }
        }
        transform(self.post, out);
    }

    fn finish_classification(
        &self,
        single_class: bool,
        all_positive: bool,
        class_1: bool,
        out: &mut [f32],
    ) {
        let base = self.base_values.as_slice();
        let [s0, s1] = out else {
            // Three or more labels.
            if base.len() == out.len() {
                for (o, b) in out.iter_mut().zip(base) {
                    *o += b;
                }
            }
            transform(self.post, out);
            return;
        };
        // Two labels: onnxruntime's binary conventions (see the module doc).
        match *base {
            [_, b1] if !class_1 => {
                *s1 = b1 + *s0;
                *s0 = -*s1;
            }
            [b0, b1] => {
                *s0 += b0;
                *s1 += b1;
            }
            [b0] => *s0 += b0,
            _ => {}
        }
        let single = !class_1 && base.len() < 2 && single_class;
        if !single {
            transform(self.post, out);
            return;
        }
        let s = *s0;
        let (a, b) = if all_positive {
            (1.0 - s, s)
        } else if self.post == PostTransform::Logistic {
            (logistic(-s), logistic(s))
        } else {
            (-s, s)
        };
        *s0 = a;
        *s1 = b;
    }
}

// ---- compiling ------------------------------------------------------------------------------------------

/// The last dimension of the graph input's declared shape, if it is a positive number.
fn declared_width(input: &pb::ValueInfoProto) -> Option<usize> {
    use pb::tensor_shape_proto::dimension::Value;
    let Some(pb::type_proto::Value::TensorType(tensor)) = input.r#type.as_ref()?.value.as_ref()
    else {
        return None;
    };
    match tensor.shape.as_ref()?.dim.last()?.value {
        Some(Value::DimValue(d)) if d > 0 => usize::try_from(d).ok(),
        _ => None,
    }
}

mod kind {
    //! `AttributeProto::r#type` values.
    pub const FLOAT: i32 = 1;
    pub const INT: i32 = 2;
    pub const STRING: i32 = 3;
    pub const TENSOR: i32 = 4;
    pub const FLOATS: i32 = 6;
    pub const INTS: i32 = 7;
    pub const STRINGS: i32 = 8;

    pub fn name(kind: i32) -> &'static str {
        match kind {
            FLOAT => "FLOAT",
            INT => "INT",
            STRING => "STRING",
            TENSOR => "TENSOR",
            5 => "GRAPH",
            FLOATS => "FLOATS",
            INTS => "INTS",
            STRINGS => "STRINGS",
            _ => "another type",
        }
    }
}

/// A node's attributes by name, read with their declared type checked.
struct Attributes<'a>(HashMap<&'a str, &'a pb::AttributeProto>);

impl<'a> Attributes<'a> {
    fn of(node: &'a pb::NodeProto) -> Result<Self, String> {
        let mut map = HashMap::with_capacity(node.attribute.len());
        for a in &node.attribute {
            if map.insert(a.name.as_str(), a).is_some() {
                return Err(format!("attribute {} is given twice", a.name));
            }
        }
        Ok(Self(map))
    }

    /// The attribute `name` if present, its type checked (an unset type is taken on trust).
    fn get(&self, name: &str, expected: i32) -> Result<Option<&'a pb::AttributeProto>, String> {
        match self.0.get(name) {
            Some(a) if a.r#type != 0 && a.r#type != expected => Err(format!(
                "{name} is of type {}, {} expected",
                kind::name(a.r#type),
                kind::name(expected)
            )),
            found => Ok(found.copied()),
        }
    }

    fn ints(&self, name: &str) -> Result<&'a [i64], String> {
        Ok(self
            .get(name, kind::INTS)?
            .map_or(&[], |a| a.ints.as_slice()))
    }

    fn strings(&self, name: &str) -> Result<&'a [Vec<u8>], String> {
        Ok(self
            .get(name, kind::STRINGS)?
            .map_or(&[], |a| a.strings.as_slice()))
    }

    fn int(&self, name: &str) -> Result<Option<i64>, String> {
        Ok(self.get(name, kind::INT)?.map(|a| a.i))
    }

    fn string(&self, name: &str) -> Result<Option<&'a [u8]>, String> {
        Ok(self.get(name, kind::STRING)?.map(|a| a.s.as_slice()))
    }

    /// `name` (floats) or `name_as_tensor` (a float or double tensor), not both; empty when neither.
    fn numbers(&self, name: &str) -> Result<(String, Vec<f64>), String> {
        let floats = self.get(name, kind::FLOATS)?;
        let tensor_name = format!("{name}_as_tensor");
        let tensor = self.get(&tensor_name, kind::TENSOR)?;
        match (floats, tensor) {
            (Some(_), Some(_)) => Err(format!("both {name} and {tensor_name} are given")),
            (_, Some(a)) => {
                let t =
                    a.t.as_ref()
                        .ok_or_else(|| format!("{tensor_name} holds no tensor"))?;
                Ok((tensor_name.clone(), tensor_values(t, &tensor_name)?))
            }
            (Some(a), None) => Ok((
                name.to_owned(),
                a.floats.iter().map(|&v| f64::from(v)).collect(),
            )),
            (None, None) => Ok((name.to_owned(), Vec::new())),
        }
    }
}

/// The values of a float or double tensor, from its typed field or its raw little-endian bytes.
fn tensor_values(t: &pb::TensorProto, name: &str) -> Result<Vec<f64>, String> {
    const FLOAT: i32 = pb::tensor_proto::DataType::Float as i32;
    const DOUBLE: i32 = pb::tensor_proto::DataType::Double as i32;
    if !t.external_data.is_empty() {
        return Err(format!("{name} is stored outside the model file"));
    }
    match t.data_type {
        FLOAT if !t.raw_data.is_empty() => {
            if t.raw_data.len() % 4 != 0 {
                return Err(format!("{name}: raw data of {} bytes", t.raw_data.len()));
            }
            Ok(t.raw_data
                .chunks_exact(4)
                .map(|c| {
                    c.try_into()
                        .map_or(f64::NAN, |b| f64::from(f32::from_le_bytes(b)))
                })
                .collect())
        }
        FLOAT => Ok(t.float_data.iter().map(|&v| f64::from(v)).collect()),
        DOUBLE if !t.raw_data.is_empty() => {
            if t.raw_data.len() % 8 != 0 {
                return Err(format!("{name}: raw data of {} bytes", t.raw_data.len()));
            }
            Ok(t.raw_data
                .chunks_exact(8)
                .map(|c| c.try_into().map_or(f64::NAN, f64::from_le_bytes))
                .collect())
        }
        DOUBLE => Ok(t.double_data.clone()),
        other => Err(format!(
            "{name} has element type {other}, float or double expected"
        )),
    }
}

fn same_length(name: &str, len: usize, reference: &str, expected: usize) -> Result<(), String> {
    if len == expected {
        Ok(())
    } else {
        Err(format!(
            "{name} has {len} values, {reference} has {expected}"
        ))
    }
}

fn lossy(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A u32 index, for arrays whose length was checked to fit.
fn index(i: usize) -> u32 {
    u32::try_from(i).unwrap_or(u32::MAX)
}

/// The largest f32 at most `t`, and the smallest at least `t` (equal when `t` is an f32).
fn f32_bounds(t: f64) -> (f32, f32) {
    let near = t as f32;
    if f64::from(near) == t {
        (near, near)
    } else if f64::from(near) < t {
        (near, next_up(near))
    } else {
        (-next_up(-near), near)
    }
}

/// The next f32 above `f` (`f32::next_up`, which is newer than this crate's minimum Rust).
fn next_up(f: f32) -> f32 {
    if f.is_nan() || f == f32::INFINITY {
        f
    } else if f == 0.0 {
        f32::from_bits(1)
    } else if f > 0.0 {
        f32::from_bits(f.to_bits() + 1)
    } else {
        f32::from_bits(f.to_bits() - 1)
    }
}

/// The next f32 below `f`.
fn next_down(f: f32) -> f32 {
    -next_up(-f)
}

/// The compiled test (flags and f32 threshold) of a split `x <op> t`: for every f32 `x` it goes the way the
/// comparison with the f64 `t` goes (see [`Node`]).
fn compile_test(op: Op, t: f64, nan_true: bool) -> (u32, f32) {
    let (down, up) = f32_bounds(t);
    let exact = down == up;
    // With `t` strictly between two f32s, `x < t` is `x <= down`, and no f32 equals `t`: a NaN threshold
    // makes `==` never hold.
    let below = if exact { next_down(down) } else { down };
    let equal = if exact { down } else { f32::NAN };
    let (flags, threshold) = match op {
        Op::Leq => (0, down),
        Op::Lt => (0, below),
        Op::Gte => (flag::INVERT, below),
        Op::Gt => (flag::INVERT, down),
        Op::Eq | Op::Leaf => (flag::EQ, equal),
        Op::Neq => (flag::EQ | flag::INVERT, equal),
    };
    // A NaN fails every comparison but `!=`.
    let nan = if nan_true || op == Op::Neq {
        flag::NAN_TRUE
    } else {
        0
    };
    (flags | nan, threshold)
}

fn compile(
    node: &pb::NodeProto,
    classifier: bool,
    declared: Option<usize>,
) -> Result<TreeEnsemble, String> {
    let attrs = Attributes::of(node)?;
    let node_ids = attrs.ints("nodes_nodeids")?;
    let n = node_ids.len();
    if n == 0 {
        return Err("nodes_nodeids is empty: the ensemble has no node".into());
    }
    if n >= u32::MAX as usize / 2 {
        return Err(format!("nodes_nodeids: {n} nodes is too many"));
    }
    let tree_ids = attrs.ints("nodes_treeids")?;
    let feature_ids = attrs.ints("nodes_featureids")?;
    let modes = attrs.strings("nodes_modes")?;
    let true_ids = attrs.ints("nodes_truenodeids")?;
    let false_ids = attrs.ints("nodes_falsenodeids")?;
    let missing = attrs.ints("nodes_missing_value_tracks_true")?;
    let (values_name, values) = attrs.numbers("nodes_values")?;
    for (name, len) in [
        ("nodes_treeids", tree_ids.len()),
        ("nodes_featureids", feature_ids.len()),
        ("nodes_modes", modes.len()),
        ("nodes_truenodeids", true_ids.len()),
        ("nodes_falsenodeids", false_ids.len()),
        (values_name.as_str(), values.len()),
    ] {
        same_length(name, len, "nodes_nodeids", n)?;
    }
    if !missing.is_empty() {
        same_length(
            "nodes_missing_value_tracks_true",
            missing.len(),
            "nodes_nodeids",
            n,
        )?;
    }

    // (tree id, node id) → position; trees in order of first appearance, each rooted at its first node.
    let mut position = HashMap::with_capacity(n);
    let mut roots = Vec::new();
    let mut trees_seen = HashSet::new();
    for (i, (&tree, &id)) in tree_ids.iter().zip(node_ids).enumerate() {
        if position.insert((tree, id), i).is_some() {
            return Err(format!(
                "nodes_nodeids: node {id} of tree {tree} is listed twice"
            ));
        }
        if trees_seen.insert(tree) {
            roots.push(i);
        }
    }

    let mut nodes = Vec::with_capacity(n);
    let mut read_width = 0usize;
    for i in 0..n {
        let at = |name: &str, values: &[i64]| {
            values
                .get(i)
                .copied()
                .ok_or_else(|| format!("{name}[{i}] is missing"))
        };
        let tree = at("nodes_treeids", tree_ids)?;
        let mode = modes.get(i).map(Vec::as_slice).unwrap_or(b"");
        let op = Op::parse(mode).ok_or_else(|| {
            format!(
                "nodes_modes[{i}] is {:?}, not one of BRANCH_LEQ, BRANCH_LT, BRANCH_GTE, BRANCH_GT, BRANCH_EQ, BRANCH_NEQ, LEAF",
                lossy(mode)
            )
        })?;
        let nan_yes = match missing.get(i).copied().unwrap_or(0) {
            0 => false,
            1 => true,
            other => {
                return Err(format!(
                    "nodes_missing_value_tracks_true[{i}] is {other}, 0 or 1 expected"
                ))
            }
        };
        if op == Op::Leaf {
            nodes.push(Node {
                threshold: 0.0,
                packed: flag::LEAF,
                next: [index(i); 2],
            });
            continue;
        }
        let feature = at("nodes_featureids", feature_ids)?;
        let feature = usize::try_from(feature)
            .map_err(|_| format!("nodes_featureids[{i}] is {feature}, a negative feature"))?;
        match declared {
            Some(width) if feature >= width => {
                return Err(format!(
                    "nodes_featureids[{i}] is {feature}, but the graph's input has {width} features"
                ))
            }
            _ if feature >= MAX_FEATURES => {
                return Err(format!(
                    "nodes_featureids[{i}] is {feature}, past the {MAX_FEATURES} features supported"
                ))
            }
            _ => {}
        }
        read_width = read_width.max(feature + 1);
        let threshold = values.get(i).copied().unwrap_or(f64::NAN);
        if !threshold.is_finite() {
            return Err(format!(
                "{values_name}[{i}] is {threshold}, not a finite threshold"
            ));
        }
        let (flags, threshold) = compile_test(op, threshold, nan_yes);
        let child = |name: &str, ids: &[i64]| -> Result<u32, String> {
            let id = at(name, ids)?;
            position
                .get(&(tree, id))
                .map(|&p| index(p))
                .ok_or_else(|| format!("{name}[{i}] is {id}, but tree {tree} has no node {id}"))
        };
        nodes.push(Node {
            threshold,
            packed: index(feature) | flags,
            next: [
                child("nodes_falsenodeids", false_ids)?,
                child("nodes_truenodeids", true_ids)?,
            ],
        });
    }
    let heights = check_structure(&nodes, &roots, tree_ids, node_ids)?;

    let (outputs, prefix, labels_name) = if classifier {
        let ints = attrs.ints("classlabels_int64s")?;
        let strings = attrs.strings("classlabels_strings")?;
        let (labels, name) = match (ints.len(), strings.len()) {
            (0, s) => (s, "classlabels_strings"),
            (i, 0) => (i, "classlabels_int64s"),
            _ => return Err("both classlabels_int64s and classlabels_strings are given".into()),
        };
        if labels < 2 {
            return Err(format!(
                "{name} has {labels} labels, a classifier needs two or more"
            ));
        }
        if labels > MAX_OUTPUTS {
            return Err(format!(
                "{name} has {labels} labels, past the {MAX_OUTPUTS} supported"
            ));
        }
        (labels, "class", name)
    } else {
        let target_ids = attrs.ints("target_ids")?;
        let targets = match attrs.int("n_targets")? {
            Some(t) if t < 1 || t > MAX_OUTPUTS as i64 => {
                return Err(format!("n_targets is {t}, 1 to {MAX_OUTPUTS} expected"))
            }
            Some(t) => t as usize,
            None => target_ids
                .iter()
                .copied()
                .max()
                .map_or(1, |m| m.clamp(0, MAX_OUTPUTS as i64 - 1) as usize + 1),
        };
        (targets, "target", "n_targets")
    };

    // Leaf weights, grouped by leaf in the order given.
    let leaf_tree_ids = attrs.ints(&format!("{prefix}_treeids"))?;
    let leaf_node_ids = attrs.ints(&format!("{prefix}_nodeids"))?;
    let leaf_targets = attrs.ints(&format!("{prefix}_ids"))?;
    let (weights_name, leaf_weights) = attrs.numbers(&format!("{prefix}_weights"))?;
    let ids_name = format!("{prefix}_ids");
    let m = leaf_targets.len();
    for (name, len) in [
        (format!("{prefix}_treeids"), leaf_tree_ids.len()),
        (format!("{prefix}_nodeids"), leaf_node_ids.len()),
        (weights_name.clone(), leaf_weights.len()),
    ] {
        same_length(&name, len, &ids_name, m)?;
    }
    if m >= u32::MAX as usize / 2 {
        return Err(format!("{ids_name}: {m} weights is too many"));
    }
    let mut entries = Vec::with_capacity(m);
    let mut classes = HashSet::new();
    let mut all_positive = true;
    for k in 0..m {
        let (Some(&tree), Some(&id), Some(&target), Some(&weight)) = (
            leaf_tree_ids.get(k),
            leaf_node_ids.get(k),
            leaf_targets.get(k),
            leaf_weights.get(k),
        ) else {
            return Err(format!("{ids_name}[{k}] is missing"));
        };
        let at = position.get(&(tree, id)).copied().ok_or_else(|| {
            format!("{prefix}_nodeids[{k}] is {id}, but tree {tree} has no node {id}")
        })?;
        let target = usize::try_from(target)
            .ok()
            .filter(|&t| t < outputs)
            .ok_or_else(|| {
                format!("{ids_name}[{k}] is {target}, but {labels_name} gives {outputs}")
            })?;
        if !weight.is_finite() {
            return Err(format!(
                "{weights_name}[{k}] is {weight}, not a finite weight"
            ));
        }
        let value = weight as f32;
        if !value.is_finite() {
            return Err(format!("{weights_name}[{k}] is {weight}, beyond f32"));
        }
        classes.insert(target);
        all_positive &= value >= 0.0;
        if nodes.get(at).is_some_and(Node::is_leaf) {
            entries.push((at, index(target), value));
        }
    }
    entries.sort_by_key(|&(at, _, _)| at);
    let mut weights = Vec::with_capacity(entries.len());
    let mut leaf_weights = vec![[0u32; 2]; nodes.len() + 1];
    for (at, target, value) in entries {
        if let Some(range) = leaf_weights.get_mut(at) {
            if range[0] == range[1] {
                range[0] = index(weights.len());
            }
            range[1] = index(weights.len() + 1);
        }
        weights.push(Weight { target, value });
    }

    let (base_name, base) = attrs.numbers("base_values")?;
    let base_ok =
        base.is_empty() || base.len() == outputs || (classifier && outputs == 2 && base.len() == 1);
    if !base_ok {
        return Err(format!(
            "{base_name} has {} values for {outputs} {}",
            base.len(),
            if classifier { "labels" } else { "targets" }
        ));
    }
    let mut base_values = Vec::with_capacity(base.len());
    for (k, &b) in base.iter().enumerate() {
        let v = b as f32;
        if !v.is_finite() {
            return Err(format!("{base_name}[{k}] is {b}, not a finite f32"));
        }
        base_values.push(v);
    }

    let post_name = attrs.string("post_transform")?.unwrap_or(b"NONE");
    let post = PostTransform::parse(post_name).ok_or_else(|| {
        format!(
            "post_transform is {:?}, not one of NONE, LOGISTIC, SOFTMAX, SOFTMAX_ZERO, PROBIT",
            lossy(post_name)
        )
    })?;
    let kind = if classifier {
        if post == PostTransform::Probit {
            return Err("post_transform PROBIT is not supported for a classifier here".into());
        }
        Kind::Classifier {
            single_class: outputs == 2 && classes.len() == 1,
            all_positive,
        }
    } else {
        if !matches!(post, PostTransform::None | PostTransform::Probit) {
            return Err(format!(
                "post_transform {} is not supported for a regressor here (NONE or PROBIT)",
                post.as_str()
            ));
        }
        let name = attrs.string("aggregate_function")?.unwrap_or(b"SUM");
        let aggregate = [
            Aggregate::Sum,
            Aggregate::Average,
            Aggregate::Min,
            Aggregate::Max,
        ]
        .into_iter()
        .find(|a| a.as_str().as_bytes() == name)
        .ok_or_else(|| {
            format!(
                "aggregate_function is {:?}, not one of SUM, AVERAGE, MIN, MAX",
                lossy(name)
            )
        })?;
        Kind::Regressor(aggregate)
    };

    // Pad the roots to whole groups with a weightless leaf; a group takes as many steps as its deepest tree.
    let trees = roots.len();
    let pad = index(nodes.len());
    nodes.push(Node {
        threshold: 0.0,
        packed: flag::LEAF,
        next: [pad; 2],
    });
    let mut roots: Vec<u32> = roots.into_iter().map(index).collect();
    roots.resize(trees.div_ceil(LANES) * LANES, pad);
    let steps = roots
        .chunks(LANES)
        .map(|group| {
            group
                .iter()
                .map(|&r| heights.get(r as usize).copied().unwrap_or(0))
                .max()
                .unwrap_or(0)
        })
        .collect();
    Ok(TreeEnsemble {
        kind,
        nodes,
        leaf_weights,
        weights,
        roots,
        steps,
        trees,
        base_values,
        post,
        outputs,
        declared_width: declared,
        read_width: read_width.max(1),
    })
}

/// Checks that from each root every node of its tree is reached, by no loop and within [`MAX_DEPTH`]
/// splits (a depth-first walk; children shared within a tree are walked once). Gives each node's height:
/// the most splits from it to a leaf.
fn check_structure(
    nodes: &[Node],
    roots: &[usize],
    tree_ids: &[i64],
    node_ids: &[i64],
) -> Result<Vec<u8>, String> {
    const NEW: u8 = 0;
    const OPEN: u8 = 1;
    const DONE: u8 = 2;
    let name = |i: usize| {
        format!(
            "node {} of tree {}",
            node_ids.get(i).copied().unwrap_or(-1),
            tree_ids.get(i).copied().unwrap_or(-1)
        )
    };
    let mut state = vec![NEW; nodes.len()];
    let mut height = vec![0u8; nodes.len()];
    let mut stack: Vec<(usize, bool)> = Vec::new();
    for &root in roots {
        stack.push((root, false));
        while let Some((i, expanded)) = stack.pop() {
            let Some(node) = nodes.get(i) else {
                return Err(format!("node position {i} out of range"));
            };
            let [no, yes] = node.next.map(|n| n as usize);
            if expanded {
                let child = |c: usize| usize::from(height.get(c).copied().unwrap_or(0));
                let h = 1 + child(yes).max(child(no));
                if h > MAX_DEPTH {
                    return Err(format!(
                        "{} starts a path of more than {MAX_DEPTH} splits",
                        name(i)
                    ));
                }
                if let (Some(height), Some(state)) = (height.get_mut(i), state.get_mut(i)) {
                    (*height, *state) = (u8::try_from(h).unwrap_or(u8::MAX), DONE);
                }
                continue;
            }
            match state.get(i).copied() {
                Some(DONE) => continue,
                Some(OPEN) => return Err(format!("{} is its own descendant (a cycle)", name(i))),
                _ => {}
            }
            let Some(at) = state.get_mut(i) else {
                continue;
            };
            if node.is_leaf() {
                *at = DONE;
                continue;
            }
            *at = OPEN;
            stack.push((i, true));
            for child in [yes, no] {
                match state.get(child).copied() {
                    Some(OPEN) => {
                        return Err(format!(
                            "{} leads back to {} (a cycle)",
                            name(i),
                            name(child)
                        ))
                    }
                    Some(NEW) => stack.push((child, false)),
                    _ => {}
                }
            }
        }
    }
    if let Some(i) = state.iter().position(|&s| s != DONE) {
        return Err(format!(
            "{} is not reached from its tree's root (the tree's first listed node)",
            name(i)
        ));
    }
    Ok(height)
}

// ---- post transforms ------------------------------------------------------------------------------------

fn transform(post: PostTransform, out: &mut [f32]) {
    match post {
        PostTransform::None => {}
        PostTransform::Logistic => out.iter_mut().for_each(|v| *v = logistic(*v)),
        PostTransform::Probit => out.iter_mut().for_each(|v| *v = probit(*v)),
        PostTransform::Softmax => softmax(out, false),
        PostTransform::SoftmaxZero => softmax(out, true),
    }
}

fn logistic(v: f32) -> f32 {
    if v >= 0.0 {
        1.0 / (1.0 + (-v).exp())
    } else {
        let e = v.exp();
        e / (1.0 + e)
    }
}

/// Softmax; with `keep_zeros` (`SOFTMAX_ZERO`), scores within 1e-7 of 0 stay 0 and take no share.
fn softmax(out: &mut [f32], keep_zeros: bool) {
    let max = out.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0.0f32;
    for v in out.iter_mut() {
        if keep_zeros && v.abs() <= 1e-7 {
            *v = 0.0;
        } else {
            *v = (*v - max).exp();
            sum += *v;
        }
    }
    if sum > 0.0 {
        out.iter_mut().for_each(|v| *v /= sum);
    }
}

/// The inverse of the standard normal CDF ([`super::drift::normal_quantile`], Acklam's approximation);
/// NaN outside [0, 1], ∓∞ at 0 and 1.
fn probit(p: f32) -> f32 {
    let p = f64::from(p);
    if p.is_nan() || !(0.0..=1.0).contains(&p) {
        return f32::NAN;
    }
    super::drift::normal_quantile(p) as f32
}

// ---- writing ensembles ----------------------------------------------------------------------------------

/// A node of a tree written by [`regressor_model`] or [`classifier_model`]. A tree is a `Vec<TreeNode>`:
/// node ids are positions in it, its root is the first.
#[derive(Debug, Clone, PartialEq)]
pub enum TreeNode {
    /// Goes to node `yes` when `features[feature] <mode> threshold` holds (or the feature is NaN and
    /// `nan_yes`), else to node `no`.
    Split {
        feature: usize,
        mode: Mode,
        threshold: f32,
        yes: usize,
        no: usize,
        nan_yes: bool,
    },
    /// `(target or class id, weight)` pairs.
    Leaf(Vec<(usize, f32)>),
}

impl TreeNode {
    /// A `BRANCH_LEQ` split that sends NaN the false way.
    pub fn leq(feature: usize, threshold: f32, yes: usize, no: usize) -> Self {
        TreeNode::Split {
            feature,
            mode: Mode::Leq,
            threshold,
            yes,
            no,
            nan_yes: false,
        }
    }

    /// A leaf of one weight for target (or class) 0.
    pub fn leaf(weight: f32) -> Self {
        TreeNode::Leaf(vec![(0, weight)])
    }
}

fn attribute(name: &str, kind: i32) -> pb::AttributeProto {
    pb::AttributeProto {
        name: name.into(),
        r#type: kind,
        ..Default::default()
    }
}

fn ints_attribute(name: &str, ints: Vec<i64>) -> pb::AttributeProto {
    pb::AttributeProto {
        ints,
        ..attribute(name, kind::INTS)
    }
}

fn floats_attribute(name: &str, floats: Vec<f32>) -> pb::AttributeProto {
    pb::AttributeProto {
        floats,
        ..attribute(name, kind::FLOATS)
    }
}

fn strings_attribute(name: &str, strings: Vec<&str>) -> pb::AttributeProto {
    pb::AttributeProto {
        strings: strings.into_iter().map(|s| s.as_bytes().to_vec()).collect(),
        ..attribute(name, kind::STRINGS)
    }
}

fn int_attribute(name: &str, i: i64) -> pb::AttributeProto {
    pb::AttributeProto {
        i,
        ..attribute(name, kind::INT)
    }
}

fn string_attribute(name: &str, s: &str) -> pb::AttributeProto {
    pb::AttributeProto {
        s: s.as_bytes().to_vec(),
        ..attribute(name, kind::STRING)
    }
}

/// The `nodes_*` attributes of `trees`, and the `{prefix}_*` attributes of their leaf weights.
fn tree_attributes(trees: &[Vec<TreeNode>], prefix: &str) -> Vec<pb::AttributeProto> {
    let (mut tree_ids, mut node_ids, mut features, mut modes) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let (mut values, mut yes_ids, mut no_ids, mut missing) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let (mut leaf_trees, mut leaf_nodes, mut targets, mut weights) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for (t, tree) in trees.iter().enumerate() {
        for (k, node) in tree.iter().enumerate() {
            tree_ids.push(t as i64);
            node_ids.push(k as i64);
            match node {
                TreeNode::Split {
                    feature,
                    mode,
                    threshold,
                    yes,
                    no,
                    nan_yes,
                } => {
                    features.push(*feature as i64);
                    modes.push(mode.as_str());
                    values.push(*threshold);
                    yes_ids.push(*yes as i64);
                    no_ids.push(*no as i64);
                    missing.push(i64::from(*nan_yes));
                }
                TreeNode::Leaf(leaf) => {
                    features.push(0);
                    modes.push("LEAF");
                    values.push(0.0);
                    yes_ids.push(0);
                    no_ids.push(0);
                    missing.push(0);
                    for &(target, weight) in leaf {
                        leaf_trees.push(t as i64);
                        leaf_nodes.push(k as i64);
                        targets.push(target as i64);
                        weights.push(weight);
                    }
                }
            }
        }
    }
    vec![
        ints_attribute("nodes_treeids", tree_ids),
        ints_attribute("nodes_nodeids", node_ids),
        ints_attribute("nodes_featureids", features),
        strings_attribute("nodes_modes", modes),
        floats_attribute("nodes_values", values),
        ints_attribute("nodes_truenodeids", yes_ids),
        ints_attribute("nodes_falsenodeids", no_ids),
        ints_attribute("nodes_missing_value_tracks_true", missing),
        ints_attribute(&format!("{prefix}_treeids"), leaf_trees),
        ints_attribute(&format!("{prefix}_nodeids"), leaf_nodes),
        ints_attribute(&format!("{prefix}_ids"), targets),
        floats_attribute(&format!("{prefix}_weights"), weights),
    ]
}

/// A model whose graph is one `ai.onnx.ml` node `op` over `features` (`[1, width]` f32), its graph output
/// `output` of `[1, outputs]`.
fn ensemble_proto(
    op: &str,
    width: usize,
    node_outputs: Vec<String>,
    output: &str,
    outputs: usize,
    attribute: Vec<pb::AttributeProto>,
) -> pb::ModelProto {
    let node = pb::NodeProto {
        op_type: op.into(),
        domain: ML_DOMAIN.into(),
        input: vec!["features".into()],
        output: node_outputs,
        name: "ensemble".into(),
        attribute,
        ..Default::default()
    };
    let graph = pb::GraphProto {
        name: "trellis-trees".into(),
        node: vec![node],
        input: vec![value_info("features", &[1, width as i64])],
        output: vec![value_info(output, &[1, outputs as i64])],
        ..Default::default()
    };
    pb::ModelProto {
        ir_version: 8,
        producer_name: "trellis".into(),
        opset_import: vec![
            pb::OperatorSetIdProto {
                domain: String::new(),
                version: 13,
            },
            pb::OperatorSetIdProto {
                domain: ML_DOMAIN.into(),
                version: 3,
            },
        ],
        graph: Some(graph),
        ..Default::default()
    }
}

fn regressor_proto(
    width: usize,
    targets: usize,
    trees: &[Vec<TreeNode>],
    aggregate: Aggregate,
    base_values: &[f32],
    post: PostTransform,
) -> pb::ModelProto {
    let mut attributes = tree_attributes(trees, "target");
    attributes.extend([
        int_attribute("n_targets", targets as i64),
        string_attribute("aggregate_function", aggregate.as_str()),
        string_attribute("post_transform", post.as_str()),
    ]);
    if !base_values.is_empty() {
        attributes.push(floats_attribute("base_values", base_values.to_vec()));
    }
    ensemble_proto(
        REGRESSOR,
        width,
        vec!["variable".into()],
        "variable",
        targets,
        attributes,
    )
}

fn classifier_proto(
    width: usize,
    labels: &[i64],
    trees: &[Vec<TreeNode>],
    base_values: &[f32],
    post: PostTransform,
) -> pb::ModelProto {
    let mut attributes = tree_attributes(trees, "class");
    attributes.extend([
        ints_attribute("classlabels_int64s", labels.to_vec()),
        string_attribute("post_transform", post.as_str()),
    ]);
    if !base_values.is_empty() {
        attributes.push(floats_attribute("base_values", base_values.to_vec()));
    }
    ensemble_proto(
        CLASSIFIER,
        width,
        vec!["label".into(), "probabilities".into()],
        "probabilities",
        labels.len(),
        attributes,
    )
}

/// An ONNX file of one `TreeEnsembleRegressor` over `[1, width]` f32 inputs with `targets` outputs.
pub fn regressor_model(
    width: usize,
    targets: usize,
    trees: &[Vec<TreeNode>],
    aggregate: Aggregate,
    base_values: &[f32],
    post: PostTransform,
) -> Vec<u8> {
    regressor_proto(width, targets, trees, aggregate, base_values, post).encode_to_vec()
}

/// An ONNX file of one `TreeEnsembleClassifier` over `[1, width]` f32 inputs; its graph's output is the
/// scores (`[1, labels.len()]`).
pub fn classifier_model(
    width: usize,
    labels: &[i64],
    trees: &[Vec<TreeNode>],
    base_values: &[f32],
    post: PostTransform,
) -> Vec<u8> {
    classifier_proto(width, labels, trees, base_values, post).encode_to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(got: &[f32], want: &[f32]) -> bool {
        got.len() == want.len() && got.iter().zip(want).all(|(g, w)| (g - w).abs() < 1e-5)
    }

    fn compile_proto(model: &pb::ModelProto) -> TreeEnsemble {
        TreeEnsemble::from_model(model)
            .expect("compiles")
            .expect("is a tree ensemble")
    }

    fn run(e: &TreeEnsemble, row: &[f32]) -> Vec<f32> {
        let mut out = Vec::new();
        e.eval(row, &mut out);
        out
    }

    /// Tree 0: `x0 <= 0.5` → 1, else 2. Tree 1: `x1 < 0.25` (NaN goes true) → 10, else 20.
    fn two_trees() -> Vec<Vec<TreeNode>> {
        vec![
            vec![
                TreeNode::leq(0, 0.5, 1, 2),
                TreeNode::leaf(1.0),
                TreeNode::leaf(2.0),
            ],
            vec![
                TreeNode::Split {
                    feature: 1,
                    mode: Mode::Lt,
                    threshold: 0.25,
                    yes: 1,
                    no: 2,
                    nan_yes: true,
                },
                TreeNode::leaf(10.0),
                TreeNode::leaf(20.0),
            ],
        ]
    }

    fn regressor(trees: &[Vec<TreeNode>], aggregate: Aggregate, base: &[f32]) -> pb::ModelProto {
        regressor_proto(2, 1, trees, aggregate, base, PostTransform::None)
    }

    fn attribute_mut<'a>(model: &'a mut pb::ModelProto, name: &str) -> &'a mut pb::AttributeProto {
        model
            .graph
            .as_mut()
            .and_then(|g| g.node.first_mut())
            .and_then(|n| n.attribute.iter_mut().find(|a| a.name == name))
            .expect("the attribute")
    }

    fn refusal(model: &pb::ModelProto) -> String {
        TreeEnsemble::from_model(model).expect_err("refused")
    }

    #[test]
    fn a_two_tree_regressor_gives_the_hand_computed_sums() {
        let e = compile_proto(&regressor(&two_trees(), Aggregate::Sum, &[]));
        assert_eq!((e.width(), e.outputs()), (2, 1));
        // 0.5 <= 0.5 holds (LEQ hit exactly): 1; 0.25 < 0.25 does not (LT hit exactly): 20.
        assert_eq!(run(&e, &[0.5, 0.25]), [21.0]);
        assert_eq!(run(&e, &[0.6, 0.0]), [12.0]);
        // A NaN tracks the true branch where nodes_missing_value_tracks_true says so…
        assert_eq!(run(&e, &[0.0, f32::NAN]), [11.0]);
        // …and fails the comparison elsewhere.
        assert_eq!(run(&e, &[f32::NAN, 1.0]), [22.0]);
        // A row too short reads its missing features as NaN.
        assert_eq!(run(&e, &[0.0]), [11.0]);
    }

    #[test]
    fn average_aggregation_divides_by_the_trees_and_adds_the_base_value() {
        let e = compile_proto(&regressor(&two_trees(), Aggregate::Average, &[0.5]));
        // (1 + 20) / 2 + 0.5
        assert_eq!(run(&e, &[0.0, 1.0]), [11.0]);
        let sum = compile_proto(&regressor(&two_trees(), Aggregate::Sum, &[0.5]));
        assert_eq!(run(&sum, &[0.0, 1.0]), [21.5]);
    }

    #[test]
    fn min_and_max_aggregations_keep_the_extreme_leaf_and_zero_for_a_target_no_leaf_gave() {
        let trees = vec![
            vec![
                TreeNode::leq(0, 0.0, 1, 2),
                TreeNode::Leaf(vec![(0, 3.0)]),
                TreeNode::Leaf(vec![(0, -1.0)]),
            ],
            vec![TreeNode::Leaf(vec![(0, 2.0)])],
        ];
        let model =
            |aggregate| regressor_proto(1, 2, &trees, aggregate, &[1.0, 5.0], PostTransform::None);
        let min = compile_proto(&model(Aggregate::Min));
        let max = compile_proto(&model(Aggregate::Max));
        // Target 1 has no weight anywhere: 0 plus its base value 5.
        assert_eq!(run(&min, &[0.0]), [2.0 + 1.0, 5.0]);
        assert_eq!(run(&max, &[0.0]), [3.0 + 1.0, 5.0]);
        assert_eq!(run(&min, &[1.0]), [-1.0 + 1.0, 5.0]);
        assert_eq!(run(&max, &[1.0]), [2.0 + 1.0, 5.0]);
    }

    #[test]
    fn a_multi_target_regressor_adds_each_target_apart() {
        let trees = vec![vec![
            TreeNode::leq(2, 1.0, 1, 2),
            TreeNode::Leaf(vec![(0, 1.0), (1, 2.0), (0, 0.5)]),
            TreeNode::Leaf(vec![(1, -4.0)]),
        ]];
        let e = compile_proto(&regressor_proto(
            3,
            2,
            &trees,
            Aggregate::Sum,
            &[],
            PostTransform::None,
        ));
        assert_eq!((e.width(), e.outputs()), (3, 2));
        assert_eq!(run(&e, &[0.0, 0.0, 1.0]), [1.5, 2.0]);
        assert_eq!(run(&e, &[0.0, 0.0, 2.0]), [0.0, -4.0]);
    }

    #[test]
    fn a_probit_regressor_gives_the_normal_quantile() {
        let trees = vec![vec![TreeNode::leaf(0.975)]];
        let e = compile_proto(&regressor_proto(
            1,
            1,
            &trees,
            Aggregate::Sum,
            &[],
            PostTransform::Probit,
        ));
        let y = run(&e, &[0.0]);
        assert!((y[0] - 1.959_964).abs() < 1e-5, "{y:?}");
        assert_eq!(probit(0.5), 0.0);
        assert!(probit(1.5).is_nan());
    }

    /// Three labels; tree 0 votes by `x0 <= 0`, tree 1 always for class 2.
    fn three_class_trees() -> Vec<Vec<TreeNode>> {
        vec![
            vec![
                TreeNode::leq(0, 0.0, 1, 2),
                TreeNode::Leaf(vec![(0, 1.0), (1, 0.5)]),
                TreeNode::Leaf(vec![(1, 2.0)]),
            ],
            vec![TreeNode::Leaf(vec![(2, 0.25)])],
        ]
    }

    #[test]
    fn a_classifier_with_softmax_gives_the_hand_computed_probabilities() {
        let model = classifier_proto(
            1,
            &[7, 8, 9],
            &three_class_trees(),
            &[0.0, 0.0, 1.0],
            PostTransform::Softmax,
        );
        let e = compile_proto(&model);
        assert_eq!(e.outputs(), 3);
        // Scores [1, 0.5, 0.25 + 1].
        let exp = [1.0f32.exp(), 0.5f32.exp(), 1.25f32.exp()];
        let sum: f32 = exp.iter().sum();
        let want: Vec<f32> = exp.iter().map(|e| e / sum).collect();
        assert!(close(&run(&e, &[-1.0]), &want), "{:?}", run(&e, &[-1.0]));
        let none = compile_proto(&classifier_proto(
            1,
            &[7, 8, 9],
            &three_class_trees(),
            &[],
            PostTransform::None,
        ));
        assert_eq!(run(&none, &[1.0]), [0.0, 2.0, 0.25]);
        let zero = compile_proto(&classifier_proto(
            1,
            &[7, 8, 9],
            &three_class_trees(),
            &[],
            PostTransform::SoftmaxZero,
        ));
        let (e1, e2) = ((2.0f32 - 2.0).exp(), (0.25f32 - 2.0).exp());
        assert!(close(
            &run(&zero, &[1.0]),
            &[0.0, e1 / (e1 + e2), e2 / (e1 + e2)]
        ));
    }

    #[test]
    fn a_classifier_with_logistic_applies_it_to_every_score() {
        let e = compile_proto(&classifier_proto(
            1,
            &[0, 1, 2],
            &three_class_trees(),
            &[],
            PostTransform::Logistic,
        ));
        let s = |v: f32| 1.0 / (1.0 + (-v).exp());
        assert!(close(&run(&e, &[-1.0]), &[s(1.0), s(0.5), s(0.25)]));
    }

    /// Two labels, every weight for class 0: tree 0 gives ±1.5 by `x0 <= 0`, tree 1 gives 0.5.
    fn binary_trees(negative: f32) -> Vec<Vec<TreeNode>> {
        vec![
            vec![
                TreeNode::leq(0, 0.0, 1, 2),
                TreeNode::leaf(1.5),
                TreeNode::leaf(negative),
            ],
            vec![TreeNode::leaf(0.5)],
        ]
    }

    #[test]
    fn a_binary_classifier_with_one_class_id_follows_onnxruntime() {
        let sigma = |v: f32| 1.0 / (1.0 + (-v).exp());
        let logistic = compile_proto(&classifier_proto(
            1,
            &[0, 1],
            &binary_trees(-1.5),
            &[],
            PostTransform::Logistic,
        ));
        assert_eq!(logistic.outputs(), 2);
        // s = 1.5 + 0.5; scores [1 − σ(s), σ(s)].
        assert!(close(
            &run(&logistic, &[0.0]),
            &[1.0 - sigma(2.0), sigma(2.0)]
        ));
        // s = −1.5 + 0.5 + base 0.25.
        let based = compile_proto(&classifier_proto(
            1,
            &[0, 1],
            &binary_trees(-1.5),
            &[0.25],
            PostTransform::Logistic,
        ));
        assert!(close(&run(&based, &[1.0]), &[sigma(0.75), sigma(-0.75)]));
        // Mixed signs, no transform: [−s, s].
        let raw = compile_proto(&classifier_proto(
            1,
            &[0, 1],
            &binary_trees(-1.5),
            &[],
            PostTransform::None,
        ));
        assert_eq!(run(&raw, &[1.0]), [1.0, -1.0]);
        // Non-negative weights: [1 − s, s], whatever the transform.
        let positive = compile_proto(&classifier_proto(
            1,
            &[0, 1],
            &binary_trees(0.1),
            &[],
            PostTransform::Logistic,
        ));
        assert!(close(&run(&positive, &[1.0]), &[0.4, 0.6]));
    }

    #[test]
    fn a_binary_classifier_voting_for_class_one_gives_both_scores_transformed() {
        let trees: Vec<Vec<TreeNode>> = binary_trees(-1.5)
            .into_iter()
            .map(|tree| {
                tree.into_iter()
                    .map(|node| match node {
                        TreeNode::Leaf(w) => {
                            TreeNode::Leaf(w.into_iter().map(|(_, v)| (1, v)).collect())
                        }
                        split => split,
                    })
                    .collect()
            })
            .collect();
        let e = compile_proto(&classifier_proto(
            1,
            &[0, 1],
            &trees,
            &[],
            PostTransform::None,
        ));
        assert_eq!(run(&e, &[0.0]), [0.0, 2.0]);
        let l = compile_proto(&classifier_proto(
            1,
            &[0, 1],
            &trees,
            &[],
            PostTransform::Logistic,
        ));
        assert!(close(
            &run(&l, &[0.0]),
            &[0.5, 1.0 / (1.0 + (-2.0f32).exp())]
        ));
    }

    #[test]
    fn thresholds_given_as_doubles_compare_as_the_double_would() {
        let tree = vec![vec![
            TreeNode::leq(0, 0.0, 1, 2),
            TreeNode::leaf(1.0),
            TreeNode::leaf(2.0),
        ]];
        let mut model = regressor(&tree, Aggregate::Sum, &[]);
        let graph_node = model
            .graph
            .as_mut()
            .and_then(|g| g.node.first_mut())
            .expect("node");
        graph_node.attribute.retain(|a| a.name != "nodes_values");
        graph_node.attribute.push(pb::AttributeProto {
            name: "nodes_values_as_tensor".into(),
            r#type: kind::TENSOR,
            t: Some(pb::TensorProto {
                dims: vec![3],
                data_type: pb::tensor_proto::DataType::Double as i32,
                double_data: vec![0.1, 0.0, 0.0],
                ..Default::default()
            }),
            ..Default::default()
        });
        let e = compile_proto(&model);
        // 0.1f32 is 0.100000001…, above the double 0.1.
        assert_eq!(run(&e, &[0.1f32]), [2.0]);
        assert_eq!(run(&e, &[0.099_999_99]), [1.0]);
        // Every mode, compiled, against the f64 comparison it stands for.
        let thresholds = [
            0.1f64,
            -0.1,
            0.5,
            0.0,
            -2.0,
            1e300,
            -1e300,
            1e-50,
            -1e-50,
            f64::from(f32::MAX),
        ];
        let inputs = [
            0.1f32,
            -0.1,
            0.5,
            0.0,
            -0.0,
            -2.0,
            1e-45,
            -1e-45,
            f32::MAX,
            -f32::MAX,
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::NAN,
        ];
        for op in [Op::Leq, Op::Lt, Op::Gte, Op::Gt, Op::Eq, Op::Neq] {
            for nan_true in [false, true] {
                for t in thresholds {
                    let (flags, t32) = compile_test(op, t, nan_true);
                    for x in inputs {
                        let x64 = f64::from(x);
                        let want = match op {
                            Op::Leq => x64 <= t,
                            Op::Lt => x64 < t,
                            Op::Gte => x64 >= t,
                            Op::Gt => x64 > t,
                            Op::Eq => x64 == t,
                            _ => x64 != t,
                        } || (nan_true && x.is_nan());
                        assert_eq!(
                            goes_true(flags, t32, x),
                            want,
                            "{x} {op:?} {t} (NaN true: {nan_true})"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn a_child_id_out_of_range_is_refused_naming_the_attribute() {
        let mut model = regressor(&two_trees(), Aggregate::Sum, &[]);
        attribute_mut(&mut model, "nodes_truenodeids").ints[0] = 7;
        let err = refusal(&model);
        assert!(
            err.contains("nodes_truenodeids[0] is 7") && err.contains("no node 7"),
            "{err}"
        );
        let mut model = regressor(&two_trees(), Aggregate::Sum, &[]);
        attribute_mut(&mut model, "target_nodeids").ints[1] = 9;
        let err = refusal(&model);
        assert!(err.contains("target_nodeids[1] is 9"), "{err}");
    }

    #[test]
    fn a_cycle_is_refused() {
        let mut model = regressor(&two_trees(), Aggregate::Sum, &[]);
        // Tree 0's root sends its false branch back to itself.
        attribute_mut(&mut model, "nodes_falsenodeids").ints[0] = 0;
        let err = refusal(&model);
        assert!(err.contains("cycle"), "{err}");
        // A longer loop: 0 → 1 → 0.
        let tree = vec![vec![
            TreeNode::leq(0, 0.0, 1, 2),
            TreeNode::leq(0, 1.0, 0, 2),
            TreeNode::leaf(1.0),
        ]];
        let err = refusal(&regressor(&tree, Aggregate::Sum, &[]));
        assert!(err.contains("cycle"), "{err}");
    }

    #[test]
    fn a_tree_deeper_than_the_limit_is_refused_and_one_at_the_limit_loads() {
        let chain = |depth: usize| {
            let mut tree = Vec::new();
            for d in 0..depth {
                tree.push(TreeNode::leq(0, d as f32, 2 * d + 1, 2 * d + 2));
                tree.push(TreeNode::leaf(d as f32));
            }
            // Split d at 2d: a leaf at 2d + 1 if true, the next split (the final leaf after the last) if not.
            tree.push(TreeNode::leaf(-1.0));
            vec![tree]
        };
        let ok = compile_proto(&regressor(&chain(MAX_DEPTH), Aggregate::Sum, &[]));
        assert_eq!(run(&ok, &[1e9]), [-1.0]);
        let err = refusal(&regressor(&chain(MAX_DEPTH + 1), Aggregate::Sum, &[]));
        assert!(err.contains("more than 64 splits"), "{err}");
    }

    #[test]
    fn mismatched_attribute_lengths_are_refused_naming_the_attribute() {
        let mut model = regressor(&two_trees(), Aggregate::Sum, &[]);
        attribute_mut(&mut model, "nodes_featureids").ints.pop();
        let err = refusal(&model);
        assert!(
            err.contains("nodes_featureids has 5 values, nodes_nodeids has 6"),
            "{err}"
        );
        let mut model = regressor(&two_trees(), Aggregate::Sum, &[]);
        attribute_mut(&mut model, "target_weights").floats.push(1.0);
        let err = refusal(&model);
        assert!(err.contains("target_weights has 5 values"), "{err}");
        let model = regressor_proto(
            2,
            2,
            &two_trees(),
            Aggregate::Sum,
            &[1.0],
            PostTransform::None,
        );
        let err = refusal(&model);
        assert!(
            err.contains("base_values has 1 values for 2 targets"),
            "{err}"
        );
    }

    #[test]
    fn a_bad_mode_aggregate_or_transform_is_refused_naming_the_attribute() {
        let mut model = regressor(&two_trees(), Aggregate::Sum, &[]);
        attribute_mut(&mut model, "nodes_modes").strings[0] = b"BRANCH_SOMETIMES".to_vec();
        let err = refusal(&model);
        assert!(
            err.contains("nodes_modes[0] is \"BRANCH_SOMETIMES\""),
            "{err}"
        );
        let mut model = regressor(&two_trees(), Aggregate::Sum, &[]);
        attribute_mut(&mut model, "aggregate_function").s = b"MEDIAN".to_vec();
        assert!(refusal(&model).contains("aggregate_function is \"MEDIAN\""));
        let mut model = regressor(&two_trees(), Aggregate::Sum, &[]);
        attribute_mut(&mut model, "post_transform").s = b"SOFTMAX".to_vec();
        assert!(refusal(&model).contains("post_transform SOFTMAX"));
        let mut model = regressor(&two_trees(), Aggregate::Sum, &[]);
        attribute_mut(&mut model, "nodes_modes").r#type = kind::INTS;
        assert!(refusal(&model).contains("nodes_modes is of type INTS, STRINGS expected"));
    }

    #[test]
    fn features_beyond_the_declared_width_and_non_finite_numbers_are_refused() {
        let model = regressor_proto(1, 1, &two_trees(), Aggregate::Sum, &[], PostTransform::None);
        let err = refusal(&model);
        assert!(
            err.contains("nodes_featureids[3] is 1, but the graph's input has 1 features"),
            "{err}"
        );
        let mut model = regressor_proto(
            1 << 25,
            1,
            &two_trees(),
            Aggregate::Sum,
            &[],
            PostTransform::None,
        );
        attribute_mut(&mut model, "nodes_featureids").ints[0] = 1 << 24;
        let err = refusal(&model);
        assert!(
            err.contains("past the 16777216 features supported"),
            "{err}"
        );
        let mut model = regressor(&two_trees(), Aggregate::Sum, &[]);
        attribute_mut(&mut model, "nodes_values").floats[0] = f32::NAN;
        assert!(refusal(&model).contains("nodes_values[0] is NaN"));
        let mut model = regressor(&two_trees(), Aggregate::Sum, &[]);
        attribute_mut(&mut model, "target_weights").floats[2] = f32::INFINITY;
        assert!(refusal(&model).contains("target_weights[2] is inf"));
        let mut model = regressor(&two_trees(), Aggregate::Sum, &[]);
        attribute_mut(&mut model, "target_ids").ints[0] = 1;
        assert!(refusal(&model).contains("target_ids[0] is 1, but n_targets gives 1"));
    }

    #[test]
    fn duplicate_and_unreachable_nodes_are_refused() {
        let mut model = regressor(&two_trees(), Aggregate::Sum, &[]);
        attribute_mut(&mut model, "nodes_nodeids").ints[2] = 1;
        assert!(refusal(&model).contains("node 1 of tree 0 is listed twice"));
        let tree = vec![vec![
            TreeNode::leq(0, 0.0, 1, 1),
            TreeNode::leaf(1.0),
            TreeNode::leaf(2.0),
        ]];
        let err = refusal(&regressor(&tree, Aggregate::Sum, &[]));
        assert!(err.contains("node 2 of tree 0 is not reached"), "{err}");
    }

    #[test]
    fn a_graph_that_is_not_a_tree_ensemble_is_left_to_tract() {
        let bytes = super::super::onnx::linear_model(&[1.0, 2.0], 0.5);
        let model = pb::ModelProto::decode(bytes.as_slice()).expect("decodes");
        assert!(TreeEnsemble::from_model(&model)
            .expect("no error")
            .is_none());
        // A tree ensemble outside the ai.onnx.ml domain is not one either.
        let mut model = regressor(&two_trees(), Aggregate::Sum, &[]);
        if let Some(node) = model.graph.as_mut().and_then(|g| g.node.first_mut()) {
            node.domain = "com.example".into();
        }
        assert!(TreeEnsemble::from_model(&model)
            .expect("no error")
            .is_none());
        assert!(TreeEnsemble::from_model(&pb::ModelProto::default())
            .expect("no error")
            .is_none());
    }

    #[test]
    fn eval_reuses_its_output_buffer() {
        let e = compile_proto(&regressor_proto(
            3,
            2,
            &[vec![TreeNode::Leaf(vec![(1, 1.0)])]],
            Aggregate::Sum,
            &[],
            PostTransform::None,
        ));
        let mut out = Vec::new();
        e.eval(&[0.0; 3], &mut out);
        let (ptr, capacity) = (out.as_ptr(), out.capacity());
        for _ in 0..10 {
            e.eval(&[1.0; 3], &mut out);
        }
        assert_eq!((out.as_ptr(), out.capacity()), (ptr, capacity));
        assert_eq!(out, [0.0, 1.0]);
    }

    mod generated {
        use super::*;
        use proptest::collection::vec;
        use proptest::prelude::*;

        fn small_ints(len: usize) -> impl Strategy<Value = Vec<i64>> {
            vec(-2i64..6, 0..=len)
        }

        fn numbers(len: usize) -> impl Strategy<Value = Vec<f32>> {
            vec(
                prop_oneof![
                    4 => -3.0f32..3.0,
                    1 => Just(f32::NAN),
                    1 => Just(f32::INFINITY),
                    1 => Just(0.0f32),
                ],
                0..=len,
            )
        }

        const MODES: [&str; 10] = [
            "BRANCH_LEQ",
            "BRANCH_LT",
            "BRANCH_GTE",
            "BRANCH_GT",
            "BRANCH_EQ",
            "BRANCH_NEQ",
            "LEAF",
            "LEAF",
            "LEAF",
            "NOPE",
        ];
        const POSTS: [&str; 6] = ["NONE", "LOGISTIC", "SOFTMAX", "SOFTMAX_ZERO", "PROBIT", "?"];
        const AGGREGATES: [&str; 5] = ["SUM", "AVERAGE", "MIN", "MAX", "?"];

        /// Node arrays: tree ids, node ids, features, modes, thresholds, true ids, false ids, missing.
        type NodeArrays = (
            Vec<i64>,
            Vec<i64>,
            Vec<i64>,
            Vec<&'static str>,
            Vec<f32>,
            Vec<i64>,
            Vec<i64>,
            Vec<i64>,
        );

        fn node_arrays() -> impl Strategy<Value = NodeArrays> {
            (
                vec(0i64..2, 0..=10),
                small_ints(10),
                small_ints(10),
                vec(prop::sample::select(MODES.to_vec()), 0..=10),
                numbers(10),
                small_ints(10),
                small_ints(10),
                vec(0i64..3, 0..=10),
            )
        }

        prop_compose! {
            fn attributes()(
                n in 0usize..10,
                nodes in node_arrays(),
                leaves in (small_ints(12), small_ints(12), small_ints(12), numbers(12)),
                base in numbers(4),
                extra in 0i64..5,
                post in prop::sample::select(POSTS.to_vec()),
                aggregate in prop::sample::select(AGGREGATES.to_vec()),
            ) -> (bool, Vec<pb::AttributeProto>) {
                let (tree_ids, node_ids, features, modes, values, yes, no, missing) = nodes;
                // Mostly one shared length `n` (so that compiling gets past the length checks), else each
                // array its own.
                let own = n % 3 == 0;
                fn fit<T: Clone>(own: bool, n: usize, v: Vec<T>) -> Vec<T> {
                    if own { v } else { v.into_iter().cycle().take(n).collect() }
                }
                let mut attrs = vec![
                    ints_attribute("nodes_treeids", fit(own, n, tree_ids)),
                    ints_attribute("nodes_nodeids", fit(own, n, node_ids)),
                    ints_attribute("nodes_featureids", fit(own, n, features)),
                    strings_attribute("nodes_modes", fit(own, n, modes)),
                    floats_attribute("nodes_values", fit(own, n, values)),
                    ints_attribute("nodes_truenodeids", fit(own, n, yes)),
                    ints_attribute("nodes_falsenodeids", fit(own, n, no)),
                    ints_attribute("nodes_missing_value_tracks_true", fit(own, n, missing)),
                    string_attribute("post_transform", post),
                    string_attribute("aggregate_function", aggregate),
                    floats_attribute("base_values", base),
                ];
                let classifier = extra % 2 == 0;
                let prefix = if classifier { "class" } else { "target" };
                let (leaf_trees, leaf_nodes, targets, weights) = leaves;
                let m = leaf_trees.len();
                attrs.extend([
                    ints_attribute(&format!("{prefix}_treeids"), leaf_trees.iter().map(|t| t.rem_euclid(2)).collect()),
                    ints_attribute(&format!("{prefix}_nodeids"), fit(false, m, leaf_nodes)),
                    ints_attribute(&format!("{prefix}_ids"), fit(false, m, targets)),
                    floats_attribute(&format!("{prefix}_weights"), fit(false, m, weights)),
                ]);
                if classifier {
                    attrs.push(ints_attribute("classlabels_int64s", (0..extra).collect()));
                } else if extra > 0 {
                    attrs.push(int_attribute("n_targets", extra - 1));
                }
                (classifier, attrs)
            }
        }

        const ALL_MODES: [Mode; 6] = [
            Mode::Leq,
            Mode::Lt,
            Mode::Gte,
            Mode::Gt,
            Mode::Eq,
            Mode::Neq,
        ];

        prop_compose! {
            /// A full binary tree of depth 0 to 3 in breadth-first order.
            fn full_tree()(depth in 0usize..4)(
                splits in vec(
                    (0usize..4, prop::sample::select(ALL_MODES.to_vec()), prop_oneof![3 => -2.0f32..2.0, 1 => Just(0.5f32)], any::<bool>()),
                    (1 << depth) - 1,
                ),
                leaves in vec(vec((0usize..3, -2.0f32..2.0), 0..3), 1 << depth),
            ) -> Vec<TreeNode> {
                let mut tree: Vec<TreeNode> = splits
                    .into_iter()
                    .enumerate()
                    .map(|(k, (feature, mode, threshold, nan_yes))| TreeNode::Split {
                        feature,
                        mode,
                        threshold,
                        yes: 2 * k + 1,
                        no: 2 * k + 2,
                        nan_yes,
                    })
                    .collect();
                tree.extend(leaves.into_iter().map(TreeNode::Leaf));
                tree
            }
        }

        prop_compose! {
            /// A well-formed forest as either operator, with odd settings, and perhaps one value of one
            /// attribute changed to anything.
            fn mutated_forest()(
                trees in vec(full_tree(), 1..4),
                classifier in any::<bool>(),
                outputs in 1usize..4,
                width in prop_oneof![2 => Just(4usize), 1 => 0usize..6],
                (base, fit_base) in (vec(-1.0f32..1.0, 0..4), any::<bool>()),
                post in prop::sample::select(POSTS.to_vec()),
                aggregate in prop::sample::select(AGGREGATES.to_vec()),
                mutation in proptest::option::of((0usize..64, 0usize..64, -3i64..10)),
            ) -> pb::ModelProto {
                let mut base = base;
                if fit_base {
                    base.resize(outputs + usize::from(classifier), 0.5);
                }
                let mut model = if classifier {
                    let labels: Vec<i64> = (0..=outputs as i64).collect();
                    classifier_proto(width, &labels, &trees, &[], PostTransform::None)
                } else {
                    regressor_proto(width, outputs, &trees, Aggregate::Sum, &[], PostTransform::None)
                };
                if let Some(node) = model.graph.as_mut().and_then(|g| g.node.first_mut()) {
                    let attrs = &mut node.attribute;
                    attrs.retain(|a| a.name != "post_transform" && a.name != "aggregate_function");
                    attrs.push(string_attribute("post_transform", post));
                    attrs.push(string_attribute("aggregate_function", aggregate));
                    attrs.push(floats_attribute("base_values", base));
                    if let Some((a, e, v)) = mutation {
                        let len = attrs.len();
                        if let Some(attr) = attrs.get_mut(a % len) {
                            let n = attr.ints.len().max(attr.floats.len()).max(attr.strings.len());
                            let e = e % n.max(1);
                            if let Some(i) = attr.ints.get_mut(e) {
                                *i = v;
                            }
                            if let Some(f) = attr.floats.get_mut(e) {
                                *f = v as f32 * 0.75;
                            }
                            if let Some(s) = attr.strings.get_mut(e) {
                                *s = MODES[v.rem_euclid(MODES.len() as i64) as usize].as_bytes().to_vec();
                            }
                        }
                    }
                }
                model
            }
        }

        proptest! {
            #![proptest_config(ProptestConfig { cases: 2_000, ..ProptestConfig::default() })]

            #[test]
            fn mutated_forests_never_panic_and_give_outputs_of_the_stated_width(
                model in mutated_forest(),
                rows in vec(vec(prop_oneof![4 => -2.0f32..2.0, 1 => Just(f32::NAN)], 0..6), 1..4),
            ) {
                if let Ok(Some(e)) = TreeEnsemble::from_model(&model) {
                    let mut out = Vec::new();
                    for row in &rows {
                        e.eval(row, &mut out);
                        prop_assert_eq!(out.len(), e.outputs());
                    }
                }
            }

            #[test]
            fn random_attribute_vectors_never_panic_the_compiler_or_the_evaluator(
                (classifier, attrs) in attributes(),
                width in 0usize..4,
                rows in vec(vec(prop_oneof![4 => -3.0f32..3.0, 1 => Just(f32::NAN)], 0..5), 1..4),
            ) {
                let op = if classifier { CLASSIFIER } else { REGRESSOR };
                let model = ensemble_proto(op, width, vec!["y".into()], "y", 1, attrs);
                if let Ok(Some(e)) = TreeEnsemble::from_model(&model) {
                    let mut out = Vec::new();
                    for row in &rows {
                        e.eval(row, &mut out);
                        prop_assert_eq!(out.len(), e.outputs());
                    }
                }
            }

            #[test]
            fn random_bytes_never_panic_the_parser(bytes in vec(any::<u8>(), 0..400)) {
                if let Ok(model) = pb::ModelProto::decode(bytes.as_slice()) {
                    if let Ok(Some(e)) = TreeEnsemble::from_model(&model) {
                        let mut out = Vec::new();
                        e.eval(&[0.0; 4], &mut out);
                        prop_assert_eq!(out.len(), e.outputs());
                    }
                }
            }

            #[test]
            fn random_forests_agree_with_a_direct_walk_of_the_spec(
                trees in vec(full_tree(), 1..10),
                rows in vec(vec(prop_oneof![3 => -2.0f32..2.0, 1 => Just(0.5f32), 1 => Just(f32::NAN)], 4), 1..4),
            ) {
                let e = compile_proto(&regressor_proto(4, 3, &trees, Aggregate::Sum, &[], PostTransform::None));
                for row in &rows {
                    // The ONNX-ML semantics, node by node, over the trees as written.
                    let mut want = [0.0f32; 3];
                    for tree in &trees {
                        let mut k = 0;
                        while let Some(TreeNode::Split { feature, mode, threshold, yes, no, nan_yes }) = tree.get(k) {
                            let (x, t) = (row[*feature], *threshold);
                            let holds = match mode {
                                Mode::Leq => x <= t,
                                Mode::Lt => x < t,
                                Mode::Gte => x >= t,
                                Mode::Gt => x > t,
                                Mode::Eq => x == t,
                                Mode::Neq => x != t,
                            };
                            k = if holds || (*nan_yes && x.is_nan()) { *yes } else { *no };
                        }
                        if let Some(TreeNode::Leaf(weights)) = tree.get(k) {
                            for &(target, w) in weights {
                                want[target] += w;
                            }
                        }
                    }
                    let got = run(&e, row);
                    prop_assert!(close(&got, &want), "{:?} vs {:?} on {:?}", got, want, row);
                }
            }
        }
    }
}
