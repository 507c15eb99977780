//! What a model file will cost before anything runs it: the peak memory and the work (multiply-adds) of one
//! prediction, from the ONNX graph alone.
//!
//! # Why an own pass over the protobuf
//!
//! A model file is tenant code (docs/tenant-code.md). A 169-byte graph (one `Expand` to `[32768, 32768]`)
//! asks for 4 GiB; handed to tract, its type analysis and constant folding allocate whatever the graph asks
//! before trellis could say no. So the graph is read here first, with the manifest's fixed input
//! (`[1, width]` f32): every tensor's shape follows from the operator's rule and the constants the shape
//! depends on (a `Reshape`'s target, an `Expand`'s shape, a `Tile`'s repeats, a `Loop`'s trip count), and no
//! tensor is ever materialised. Only a file whose cost fits the tier's limits ([`ModelLimits`]) goes on to
//! tract.
//!
//! # What is admitted
//!
//! The operators of the feed-forward models trading uses (linear, logistic, MLPs and what exporters write
//! around them: shape arithmetic, casts, reductions, softmax, normalisation), `Scan` and a `Loop` with a
//! constant trip count (whose body is costed once and multiplied). An operator outside that set, a shape that
//! depends on the data (`NonZero`, a `Loop` without a constant trip count, a `Reshape` to a computed shape
//! that cannot be followed), external data and model-local functions are refused naming the reason: a cost
//! that cannot be bounded is not admitted.
//!
//! # Limitations
//!
//! The figures are estimates of what an interpreter needs: peak memory is the largest sum of live tensors
//! (initialisers always live, an intermediate freed after its last use), work counts one unit per output
//! element of element-wise operators and per multiply-add of a product. tract may pack weights (a constant
//! factor more memory) and fuses operators (less); the limits are set with that margin. Values are followed
//! only for small integer tensors (at most [`MAX_FOLLOWED`] elements), which is what shape arithmetic needs.

use std::collections::{HashMap, HashSet};

use tract_onnx::pb;

/// Largest integer tensor whose values the pass follows (shape arithmetic is small).
const MAX_FOLLOWED: u64 = 4_096;

/// What one prediction of a model may cost: a tier's `[quotas] model_memory_bytes` and
/// `model_work_per_bar`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ModelLimits {
    /// Peak memory of one prediction (weights included), in bytes.
    pub memory_bytes: u64,
    /// Multiply-adds (or element operations) of one prediction.
    pub work: u64,
}

impl ModelLimits {
    /// What no model ever exceeds, whatever its tier: the bound where no tier is known (configuration files,
    /// benchmarks, tests).
    pub const CEILING: Self = Self {
        memory_bytes: 1 << 30,
        work: 10_000_000_000,
    };
}

/// The estimated cost of one prediction, stored with the version.
#[derive(
    Debug,
    Clone,
    Copy,
    Default,
    PartialEq,
    Eq,
    serde::Serialize,
    serde::Deserialize,
    schemars::JsonSchema,
)]
#[serde(deny_unknown_fields)]
pub struct ModelCost {
    /// Peak memory of one prediction (weights included), in bytes.
    pub memory_bytes: u64,
    /// Multiply-adds (or element operations) of one prediction.
    pub work: u64,
}

impl ModelCost {
    /// Refuses a cost over `limits`, naming the figure and the limit.
    pub fn check(&self, limits: &ModelLimits, what: &str) -> Result<(), CostError> {
        if self.memory_bytes > limits.memory_bytes {
            return Err(CostError::Memory {
                needed: self.memory_bytes,
                limit: limits.memory_bytes,
                at: what.to_owned(),
            });
        }
        if self.work > limits.work {
            return Err(CostError::Work {
                needed: self.work,
                limit: limits.work,
                at: what.to_owned(),
            });
        }
        Ok(())
    }
}

/// Why a model's cost is not admitted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CostError {
    #[error("the model needs {needed} bytes of memory per prediction (at {at}), over the tier's limit model_memory_bytes = {limit}")]
    Memory { needed: u64, limit: u64, at: String },
    #[error("the model needs {needed} multiply-adds per prediction (at {at}), over the tier's limit model_work_per_bar = {limit}")]
    Work { needed: u64, limit: u64, at: String },
    #[error("the model's cost cannot be bounded before it runs: {0}")]
    Unresolved(String),
}

/// A tensor as the pass knows it: its shape, its element size and, for small integer tensors, its values.
#[derive(Debug, Clone)]
struct Fact {
    shape: Vec<u64>,
    elem: u64,
    value: Option<Vec<i64>>,
}

impl Fact {
    fn new(shape: Vec<u64>, elem: u64) -> Self {
        Self {
            shape,
            elem,
            value: None,
        }
    }

    fn len(&self) -> u64 {
        product(&self.shape)
    }

    fn bytes(&self) -> u64 {
        self.len().saturating_mul(self.elem)
    }

    fn rank(&self) -> usize {
        self.shape.len()
    }
}

fn product(dims: &[u64]) -> u64 {
    dims.iter().fold(1u64, |a, d| a.saturating_mul(*d))
}

/// Bytes per element of an ONNX data type (`None`: strings and unknown types, not admitted).
fn elem_size(data_type: i32) -> Option<u64> {
    use pb::tensor_proto::DataType as T;
    let t = T::try_from(data_type).ok()?;
    Some(match t {
        T::Bool | T::Uint8 | T::Int8 => 1,
        T::Uint16 | T::Int16 | T::Float16 | T::Bfloat16 => 2,
        T::Float | T::Int32 | T::Uint32 => 4,
        T::Double | T::Int64 | T::Uint64 | T::Complex64 => 8,
        T::Complex128 => 16,
        _ => return None,
    })
}

fn is_int(data_type: i32) -> bool {
    use pb::tensor_proto::DataType as T;
    matches!(
        T::try_from(data_type),
        Ok(T::Int64 | T::Int32 | T::Int16 | T::Int8 | T::Uint8 | T::Uint16 | T::Uint32 | T::Uint64)
    )
}

const INT64: u64 = 8;
const BOOL: u64 = 1;

fn unresolved<T>(why: impl Into<String>) -> Result<T, CostError> {
    Err(CostError::Unresolved(why.into()))
}

/// The fact of a tensor written in the file (an initialiser or a `Constant`'s value).
fn tensor_fact(t: &pb::TensorProto, limits: &ModelLimits) -> Result<Fact, CostError> {
    if t.data_location == Some(pb::tensor_proto::DataLocation::External as i32)
        || !t.external_data.is_empty()
    {
        return unresolved(format!(
            "tensor `{}` keeps its data outside the file (external data is not admitted)",
            t.name
        ));
    }
    let elem = elem_size(t.data_type).ok_or_else(|| {
        CostError::Unresolved(format!(
            "tensor `{}` has data type {}, which is not admitted",
            t.name, t.data_type
        ))
    })?;
    let mut shape = Vec::with_capacity(t.dims.len());
    for d in &t.dims {
        let d = u64::try_from(*d).map_err(|_| {
            CostError::Unresolved(format!("tensor `{}` has a negative dimension", t.name))
        })?;
        shape.push(d);
    }
    let mut fact = Fact::new(shape, elem);
    if fact.bytes() > limits.memory_bytes {
        return Err(CostError::Memory {
            needed: fact.bytes(),
            limit: limits.memory_bytes,
            at: format!("tensor `{}`", t.name),
        });
    }
    if is_int(t.data_type) && fact.len() <= MAX_FOLLOWED {
        fact.value = int_values(t, fact.len() as usize);
    }
    Ok(fact)
}

/// The values of a small integer tensor, if the file holds exactly that many.
fn int_values(t: &pb::TensorProto, n: usize) -> Option<Vec<i64>> {
    use pb::tensor_proto::DataType as T;
    let values: Vec<i64> = if !t.int64_data.is_empty() {
        t.int64_data.clone()
    } else if !t.int32_data.is_empty() {
        t.int32_data.iter().map(|v| i64::from(*v)).collect()
    } else if !t.raw_data.is_empty() {
        let width = match T::try_from(t.data_type).ok()? {
            T::Int64 | T::Uint64 => 8,
            T::Int32 | T::Uint32 => 4,
            _ => return None,
        };
        t.raw_data
            .chunks_exact(width)
            .map(|c| {
                let mut b = [0u8; 8];
                b[..width].copy_from_slice(c);
                let v = i64::from_le_bytes(b);
                if width == 4 {
                    i64::from(v as u32 as i32)
                } else {
                    v
                }
            })
            .collect()
    } else if n == 0 {
        Vec::new()
    } else {
        return None;
    };
    (values.len() == n).then_some(values)
}

fn attr<'a>(node: &'a pb::NodeProto, name: &str) -> Option<&'a pb::AttributeProto> {
    node.attribute.iter().find(|a| a.name == name)
}

fn attr_i(node: &pb::NodeProto, name: &str) -> Option<i64> {
    attr(node, name).map(|a| a.i)
}

fn attr_ints(node: &pb::NodeProto, name: &str) -> Option<Vec<i64>> {
    attr(node, name).map(|a| a.ints.clone())
}

/// An axis of a tensor of rank `rank` (negative counts from the end).
fn axis(a: i64, rank: usize, op: &str) -> Result<usize, CostError> {
    let r = rank as i64;
    let v = if a < 0 { a + r } else { a };
    if v < 0 || v >= r {
        return unresolved(format!("{op}: axis {a} of a tensor of rank {rank}"));
    }
    Ok(v as usize)
}

/// Numpy broadcasting of two shapes.
fn broadcast(a: &[u64], b: &[u64], op: &str) -> Result<Vec<u64>, CostError> {
    let n = a.len().max(b.len());
    let mut out = vec![0; n];
    for i in 0..n {
        let x = if i + a.len() >= n {
            a[i + a.len() - n]
        } else {
            1
        };
        let y = if i + b.len() >= n {
            b[i + b.len() - n]
        } else {
            1
        };
        out[i] = match (x, y) {
            (x, y) if x == y => x,
            (1, y) => y,
            (x, 1) => x,
            _ => return unresolved(format!("{op}: shapes {a:?} and {b:?} do not broadcast")),
        };
    }
    Ok(out)
}

/// The scope of one graph: what is known of each tensor by name.
struct Scope<'p> {
    facts: HashMap<String, Fact>,
    parent: Option<&'p Scope<'p>>,
}

impl Scope<'_> {
    fn get(&self, name: &str) -> Option<&Fact> {
        self.facts
            .get(name)
            .or_else(|| self.parent.and_then(|p| p.get(name)))
    }
}

/// What one graph costs: its outputs, its peak memory (of what it owns), its work.
struct Costed {
    outputs: Vec<Fact>,
    peak: u64,
    work: u64,
}

struct Pass {
    limits: ModelLimits,
    opset: i64,
}

/// Every name a node reads, its subgraphs' reads of outer names included (for liveness).
fn reads(node: &pb::NodeProto, into: &mut Vec<String>) {
    into.extend(node.input.iter().filter(|s| !s.is_empty()).cloned());
    for a in &node.attribute {
        for g in a.g.iter().chain(&a.graphs) {
            for n in &g.node {
                reads(n, into);
            }
            into.extend(g.output.iter().map(|o| o.name.clone()));
        }
    }
}

impl Pass {
    fn over(&self, needed: u64, at: &str) -> Result<(), CostError> {
        if needed > self.limits.memory_bytes {
            return Err(CostError::Memory {
                needed,
                limit: self.limits.memory_bytes,
                at: at.to_owned(),
            });
        }
        Ok(())
    }

    fn over_work(&self, needed: u64, at: &str) -> Result<(), CostError> {
        if needed > self.limits.work {
            return Err(CostError::Work {
                needed,
                limit: self.limits.work,
                at: at.to_owned(),
            });
        }
        Ok(())
    }

    /// Costs `g` with `inputs` bound to its non-initialiser inputs, in order.
    fn graph(
        &self,
        g: &pb::GraphProto,
        inputs: Vec<Fact>,
        parent: Option<&Scope<'_>>,
        depth: usize,
    ) -> Result<Costed, CostError> {
        if depth > 8 {
            return unresolved("subgraphs nested more than 8 deep");
        }
        if !g.sparse_initializer.is_empty() {
            return unresolved("sparse initialisers are not admitted");
        }
        let mut scope = Scope {
            facts: HashMap::new(),
            parent,
        };
        let mut resident = 0u64;
        for t in &g.initializer {
            let fact = tensor_fact(t, &self.limits)?;
            resident = resident.saturating_add(fact.bytes());
            scope.facts.insert(t.name.clone(), fact);
        }
        self.over(resident, "the initialisers")?;
        let formal: Vec<&pb::ValueInfoProto> = g
            .input
            .iter()
            .filter(|i| !scope.facts.contains_key(&i.name))
            .collect();
        if formal.len() != inputs.len() {
            return unresolved(format!(
                "a graph with {} inputs given {}",
                formal.len(),
                inputs.len()
            ));
        }
        let mut live: HashMap<String, u64> = HashMap::new();
        for (info, fact) in formal.iter().zip(inputs) {
            live.insert(info.name.clone(), fact.bytes());
            scope.facts.insert(info.name.clone(), fact);
        }
        // The last node reading each name; graph outputs live to the end.
        let mut last: HashMap<String, usize> = HashMap::new();
        for (i, node) in g.node.iter().enumerate() {
            let mut names = Vec::new();
            reads(node, &mut names);
            for n in names {
                last.insert(n, i);
            }
        }
        let kept: HashSet<&str> = g.output.iter().map(|o| o.name.as_str()).collect();
        let mut live_bytes: u64 = live.values().sum();
        let mut peak = resident.saturating_add(live_bytes);
        let mut work = 0u64;
        for (i, node) in g.node.iter().enumerate() {
            let at = if node.name.is_empty() {
                format!("{} node {i}", node.op_type)
            } else {
                format!("{} `{}`", node.op_type, node.name)
            };
            let step = self.node(node, &scope, &at, depth)?;
            // Memory first: a tensor too large to hold is the plainer reason.
            for (name, fact) in node.output.iter().zip(&step.outputs) {
                self.over(fact.bytes(), &format!("{at}, output `{name}`"))?;
            }
            work = work.saturating_add(step.work);
            self.over_work(work, &at)?;
            let mut made = 0u64;
            for (name, fact) in node.output.iter().zip(step.outputs) {
                if name.is_empty() {
                    continue;
                }
                made = made.saturating_add(fact.bytes());
                live.insert(name.clone(), fact.bytes());
                scope.facts.insert(name.clone(), fact);
            }
            live_bytes = live_bytes.saturating_add(made);
            let now = resident
                .saturating_add(live_bytes)
                .saturating_add(step.peak);
            peak = peak.max(now);
            self.over(peak, &at)?;
            // Free what no later node reads.
            let dead: Vec<String> = live
                .keys()
                .filter(|n| !kept.contains(n.as_str()) && last.get(*n).is_none_or(|l| *l <= i))
                .cloned()
                .collect();
            for n in dead {
                if let Some(b) = live.remove(&n) {
                    live_bytes = live_bytes.saturating_sub(b);
                }
            }
        }
        let mut outputs = Vec::with_capacity(g.output.len());
        for o in &g.output {
            let fact = scope.get(&o.name).cloned().ok_or_else(|| {
                CostError::Unresolved(format!("output `{}` is computed by no node", o.name))
            })?;
            outputs.push(fact);
        }
        Ok(Costed {
            outputs,
            peak,
            work,
        })
    }

    fn node(
        &self,
        node: &pb::NodeProto,
        scope: &Scope<'_>,
        at: &str,
        depth: usize,
    ) -> Result<Costed, CostError> {
        if !(node.domain.is_empty() || node.domain == "ai.onnx") {
            return unresolved(format!(
                "{at}: operators of domain `{}` are not admitted",
                node.domain
            ));
        }
        let op = node.op_type.as_str();
        let input = |i: usize| input_of(scope, node, i, at);
        let optional = |i: usize| optional_of(scope, node, i);
        let known = |i: usize, what: &str| -> Result<Vec<i64>, CostError> {
            input(i)?.value.clone().ok_or_else(|| {
                CostError::Unresolved(format!(
                    "{at}: its {what} is computed from the data, so its shape is not known before it runs"
                ))
            })
        };
        let one = |fact: Fact, work: u64| Costed {
            outputs: vec![fact],
            peak: 0,
            work,
        };
        let dims_of = |values: &[i64], what: &str| -> Result<Vec<u64>, CostError> {
            values
                .iter()
                .map(|v| {
                    u64::try_from(*v)
                        .map_err(|_| CostError::Unresolved(format!("{at}: a negative {what}")))
                })
                .collect()
        };
        Ok(match op {
            "Identity" | "Relu" | "Sigmoid" | "Tanh" | "Exp" | "Log" | "Sqrt" | "Abs" | "Neg"
            | "Reciprocal" | "Floor" | "Ceil" | "Round" | "Sign" | "Sin" | "Cos" | "Erf"
            | "Softplus" | "Softsign" | "HardSigmoid" | "HardSwish" | "LeakyRelu" | "Elu"
            | "Selu" | "Celu" | "ThresholdedRelu" | "Gelu" | "Mish" | "Clip" | "CumSum" | "Not"
            | "IsNaN" | "IsInf" => {
                let x = input(0)?;
                let mut out = Fact::new(x.shape.clone(), x.elem);
                if matches!(op, "Not" | "IsNaN" | "IsInf") {
                    out.elem = BOOL;
                }
                if op == "Identity" {
                    out.value = x.value.clone();
                }
                if op == "Neg" {
                    out.value = x.value.as_ref().map(|v| v.iter().map(|x| -x).collect());
                }
                one(out, x.len())
            }
            "Softmax"
            | "LogSoftmax"
            | "Hardmax"
            | "BatchNormalization"
            | "LayerNormalization"
            | "InstanceNormalization"
            | "LpNormalization" => {
                let x = input(0)?;
                let out = Fact::new(x.shape.clone(), x.elem);
                // Every further output (a norm's mean and deviation) at most the input's size.
                let n = node.output.len().max(1);
                Costed {
                    outputs: vec![out; n],
                    peak: 0,
                    work: x.len().saturating_mul(4),
                }
            }
            "Dropout" => {
                let x = input(0)?;
                Costed {
                    outputs: vec![
                        Fact::new(x.shape.clone(), x.elem),
                        Fact::new(x.shape.clone(), BOOL),
                    ],
                    peak: 0,
                    work: x.len(),
                }
            }
            "Cast" => {
                let x = input(0)?;
                let to = attr_i(node, "to").unwrap_or(1) as i32;
                let elem = elem_size(to).ok_or_else(|| {
                    CostError::Unresolved(format!("{at}: a cast to type {to} is not admitted"))
                })?;
                let mut out = Fact::new(x.shape.clone(), elem);
                if is_int(to) {
                    out.value = x.value.clone();
                }
                one(out, x.len())
            }
            "Add" | "Sub" | "Mul" | "Div" | "Pow" | "Max" | "Min" | "Mean" | "Sum" | "Mod"
            | "PRelu" | "Equal" | "Less" | "Greater" | "LessOrEqual" | "GreaterOrEqual" | "And"
            | "Or" | "Xor" | "Where" | "BitShift" => {
                let count = node.input.iter().filter(|n| !n.is_empty()).count();
                if count == 0 {
                    return unresolved(format!("{at}: no inputs"));
                }
                let mut shape = input(0)?.shape.clone();
                for i in 1..count {
                    shape = broadcast(&shape, &input(i)?.shape, at)?;
                }
                let elem = match op {
                    "Equal" | "Less" | "Greater" | "LessOrEqual" | "GreaterOrEqual" | "And"
                    | "Or" | "Xor" => BOOL,
                    "Where" => input(1)?.elem,
                    _ => input(0)?.elem,
                };
                let mut out = Fact::new(shape, elem);
                if count == 2 {
                    out.value = arithmetic(op, input(0)?, input(1)?);
                }
                let work = out
                    .len()
                    .saturating_mul(count.saturating_sub(1).max(1) as u64);
                one(out, work)
            }
            "MatMul" => {
                let (a, b) = (input(0)?, input(1)?);
                let (out, work) = matmul(&a.shape, &b.shape, at)?;
                one(Fact::new(out, a.elem), work)
            }
            "Gemm" => {
                let (a, b) = (input(0)?, input(1)?);
                if a.rank() != 2 || b.rank() != 2 {
                    return unresolved(format!("{at}: Gemm takes matrices"));
                }
                let (m, k) = if attr_i(node, "transA").unwrap_or(0) != 0 {
                    (a.shape[1], a.shape[0])
                } else {
                    (a.shape[0], a.shape[1])
                };
                let (k2, n) = if attr_i(node, "transB").unwrap_or(0) != 0 {
                    (b.shape[1], b.shape[0])
                } else {
                    (b.shape[0], b.shape[1])
                };
                if k != k2 {
                    return unresolved(format!("{at}: inner dimensions {k} and {k2} differ"));
                }
                if let Some(c) = optional(2) {
                    broadcast(&[m, n], &c.shape, at)?;
                }
                let work = m.saturating_mul(k).saturating_mul(n).saturating_add(m * n);
                one(Fact::new(vec![m, n], a.elem), work)
            }
            "Constant" => {
                let fact = if let Some(t) = attr(node, "value").and_then(|a| a.t.as_ref()) {
                    tensor_fact(t, &self.limits)?
                } else if let Some(a) = attr(node, "value_int") {
                    Fact {
                        shape: vec![],
                        elem: INT64,
                        value: Some(vec![a.i]),
                    }
                } else if let Some(a) = attr(node, "value_ints") {
                    Fact {
                        shape: vec![a.ints.len() as u64],
                        elem: INT64,
                        value: Some(a.ints.clone()),
                    }
                } else if attr(node, "value_float").is_some() {
                    Fact::new(vec![], 4)
                } else if let Some(a) = attr(node, "value_floats") {
                    Fact::new(vec![a.floats.len() as u64], 4)
                } else {
                    return unresolved(format!("{at}: a constant of a kind not admitted"));
                };
                one(fact, 0)
            }
            "Shape" => {
                let x = input(0)?;
                let r = x.rank() as i64;
                let clamp = |v: i64| (if v < 0 { v + r } else { v }).clamp(0, r) as usize;
                let start = clamp(attr_i(node, "start").unwrap_or(0));
                let end = clamp(attr_i(node, "end").unwrap_or(r));
                let dims: Vec<i64> = x.shape[start..end.max(start)]
                    .iter()
                    .map(|d| *d as i64)
                    .collect();
                one(
                    Fact {
                        shape: vec![dims.len() as u64],
                        elem: INT64,
                        value: Some(dims),
                    },
                    0,
                )
            }
            "Size" => {
                let x = input(0)?;
                one(
                    Fact {
                        shape: vec![],
                        elem: INT64,
                        value: Some(vec![x.len().min(i64::MAX as u64) as i64]),
                    },
                    0,
                )
            }
            "Reshape" => {
                let x = input(0)?;
                let target = known(1, "target shape")?;
                let allowzero = attr_i(node, "allowzero").unwrap_or(0) != 0;
                let mut dims = Vec::with_capacity(target.len());
                let mut infer = None;
                for (i, d) in target.iter().enumerate() {
                    match *d {
                        -1 if infer.is_none() => {
                            infer = Some(i);
                            dims.push(1);
                        }
                        0 if !allowzero => dims.push(*x.shape.get(i).ok_or_else(|| {
                            CostError::Unresolved(format!(
                                "{at}: copies a dimension the input lacks"
                            ))
                        })?),
                        d if d >= 0 => dims.push(d as u64),
                        _ => return unresolved(format!("{at}: target shape {target:?}")),
                    }
                }
                if let Some(i) = infer {
                    let rest = product(&dims);
                    if rest == 0 || x.len() % rest != 0 {
                        return unresolved(format!("{at}: {:?} into {target:?}", x.shape));
                    }
                    dims[i] = x.len() / rest;
                }
                if product(&dims) != x.len() {
                    return unresolved(format!("{at}: {:?} into {target:?}", x.shape));
                }
                let mut out = Fact::new(dims, x.elem);
                out.value = x.value.clone();
                one(out, 0)
            }
            "Flatten" => {
                let x = input(0)?;
                let a = attr_i(node, "axis").unwrap_or(1);
                let a = if a < 0 { a + x.rank() as i64 } else { a };
                if a < 0 || a > x.rank() as i64 {
                    return unresolved(format!("{at}: axis {a}"));
                }
                let a = a as usize;
                let out = Fact::new(vec![product(&x.shape[..a]), product(&x.shape[a..])], x.elem);
                one(out, 0)
            }
            "Squeeze" | "Unsqueeze" => {
                let x = input(0)?;
                let axes = if self.opset >= 13 {
                    if node.input.len() > 1 && !node.input[1].is_empty() {
                        Some(known(1, "axes")?)
                    } else {
                        None
                    }
                } else {
                    attr_ints(node, "axes")
                };
                let mut shape = x.shape.clone();
                if op == "Squeeze" {
                    match axes {
                        None => shape.retain(|d| *d != 1),
                        Some(axes) => {
                            let mut drop: Vec<usize> = axes
                                .iter()
                                .map(|a| axis(*a, x.rank(), at))
                                .collect::<Result<_, _>>()?;
                            drop.sort_unstable();
                            drop.dedup();
                            for a in drop.into_iter().rev() {
                                shape.remove(a);
                            }
                        }
                    }
                } else {
                    let axes =
                        axes.ok_or_else(|| CostError::Unresolved(format!("{at}: no axes")))?;
                    let rank = x.rank() + axes.len();
                    let mut add: Vec<usize> = axes
                        .iter()
                        .map(|a| axis(*a, rank, at))
                        .collect::<Result<_, _>>()?;
                    add.sort_unstable();
                    for a in add {
                        if a > shape.len() {
                            return unresolved(format!("{at}: axis {a}"));
                        }
                        shape.insert(a, 1);
                    }
                }
                let mut out = Fact::new(shape, x.elem);
                out.value = x.value.clone();
                one(out, 0)
            }
            "Transpose" => {
                let x = input(0)?;
                let perm = attr_ints(node, "perm")
                    .unwrap_or_else(|| (0..x.rank() as i64).rev().collect::<Vec<_>>());
                if perm.len() != x.rank() {
                    return unresolved(format!("{at}: permutation {perm:?}"));
                }
                let shape = perm
                    .iter()
                    .map(|p| axis(*p, x.rank(), at).map(|a| x.shape[a]))
                    .collect::<Result<Vec<_>, _>>()?;
                one(Fact::new(shape, x.elem), x.len())
            }
            "Concat" => {
                let first = input(0)?;
                let a = axis(attr_i(node, "axis").unwrap_or(0), first.rank(), at)?;
                let mut shape = first.shape.clone();
                let mut values = first.value.clone();
                for i in 1..node.input.len() {
                    let x = input(i)?;
                    if x.rank() != shape.len() {
                        return unresolved(format!("{at}: inputs of different ranks"));
                    }
                    shape[a] = shape[a].saturating_add(x.shape[a]);
                    values = match (values, &x.value) {
                        (Some(mut v), Some(w)) if shape.len() == 1 => {
                            v.extend_from_slice(w);
                            Some(v)
                        }
                        _ => None,
                    };
                }
                let mut out = Fact::new(shape, first.elem);
                out.value = values;
                let work = out.len();
                one(out, work)
            }
            "Gather" => {
                let (data, idx) = (input(0)?, input(1)?);
                let a = axis(attr_i(node, "axis").unwrap_or(0), data.rank(), at)?;
                let mut shape = data.shape[..a].to_vec();
                shape.extend_from_slice(&idx.shape);
                shape.extend_from_slice(&data.shape[a + 1..]);
                let mut out = Fact::new(shape, data.elem);
                if let (Some(d), Some(ix), 1) = (&data.value, &idx.value, data.rank()) {
                    out.value = ix
                        .iter()
                        .map(|i| {
                            let n = d.len() as i64;
                            let j = if *i < 0 { i + n } else { *i };
                            usize::try_from(j).ok().and_then(|j| d.get(j).copied())
                        })
                        .collect();
                }
                let work = out.len();
                one(out, work)
            }
            "Slice" => {
                let x = input(0)?;
                let (starts, ends, axes, steps) = if self.opset >= 10 {
                    (
                        known(1, "start")?,
                        known(2, "end")?,
                        match optional(3) {
                            Some(_) => Some(known(3, "axes")?),
                            None => None,
                        },
                        match optional(4) {
                            Some(_) => Some(known(4, "steps")?),
                            None => None,
                        },
                    )
                } else {
                    (
                        attr_ints(node, "starts").unwrap_or_default(),
                        attr_ints(node, "ends").unwrap_or_default(),
                        attr_ints(node, "axes"),
                        None,
                    )
                };
                let axes = axes.unwrap_or_else(|| (0..starts.len() as i64).collect());
                let steps = steps.unwrap_or_else(|| vec![1; starts.len()]);
                if ends.len() != starts.len()
                    || axes.len() != starts.len()
                    || steps.len() != starts.len()
                {
                    return unresolved(format!(
                        "{at}: starts, ends, axes and steps differ in length"
                    ));
                }
                let mut shape = x.shape.clone();
                let mut range = None;
                for k in 0..starts.len() {
                    let a = axis(axes[k], x.rank(), at)?;
                    let dim = x.shape[a].min(i64::MAX as u64) as i64;
                    let step = steps[k];
                    if step == 0 {
                        return unresolved(format!("{at}: a step of 0"));
                    }
                    let norm = |v: i64| if v < 0 { v.saturating_add(dim) } else { v };
                    let (s, e) = if step > 0 {
                        (norm(starts[k]).clamp(0, dim), norm(ends[k]).clamp(0, dim))
                    } else {
                        (
                            norm(starts[k]).clamp(-1, dim - 1),
                            norm(ends[k]).clamp(-1, dim - 1),
                        )
                    };
                    let len = if step > 0 {
                        if e > s {
                            (e - s + step - 1) / step
                        } else {
                            0
                        }
                    } else if s > e {
                        (s - e + (-step) - 1) / (-step)
                    } else {
                        0
                    };
                    shape[a] = len as u64;
                    if x.rank() == 1 {
                        range = Some((s, step, len));
                    }
                }
                let mut out = Fact::new(shape, x.elem);
                if let (Some(v), Some((s, step, len))) = (&x.value, range) {
                    out.value = (0..len)
                        .map(|i| {
                            usize::try_from(s + i * step)
                                .ok()
                                .and_then(|j| v.get(j).copied())
                        })
                        .collect();
                }
                let work = out.len();
                one(out, work)
            }
            "Expand" => {
                let x = input(0)?;
                let target = dims_of(&known(1, "target shape")?, "dimension")?;
                let shape = broadcast(&x.shape, &target, at)?;
                let out = Fact::new(shape, x.elem);
                let work = out.len();
                one(out, work)
            }
            "Tile" => {
                let x = input(0)?;
                let repeats = dims_of(&known(1, "repeats")?, "repeat")?;
                if repeats.len() != x.rank() {
                    return unresolved(format!(
                        "{at}: {} repeats for rank {}",
                        repeats.len(),
                        x.rank()
                    ));
                }
                let shape = x
                    .shape
                    .iter()
                    .zip(&repeats)
                    .map(|(d, r)| d.saturating_mul(*r))
                    .collect();
                let out = Fact::new(shape, x.elem);
                let work = out.len();
                one(out, work)
            }
            "ConstantOfShape" => {
                let shape = dims_of(&known(0, "shape")?, "dimension")?;
                let (elem, int) = match attr(node, "value").and_then(|a| a.t.as_ref()) {
                    Some(t) => (
                        elem_size(t.data_type).ok_or_else(|| {
                            CostError::Unresolved(format!("{at}: a value of a type not admitted"))
                        })?,
                        is_int(t.data_type).then(|| int_values(t, 1)).flatten(),
                    ),
                    None => (4, None),
                };
                let mut out = Fact::new(shape, elem);
                if let Some(v) = int {
                    if out.len() <= MAX_FOLLOWED {
                        out.value = Some(vec![v.first().copied().unwrap_or(0); out.len() as usize]);
                    }
                }
                let work = out.len();
                one(out, work)
            }
            "Range" => {
                let scalar = |i: usize, what: &str| -> Result<i64, CostError> {
                    known(i, what)?
                        .first()
                        .copied()
                        .ok_or_else(|| CostError::Unresolved(format!("{at}: an empty {what}")))
                };
                let (start, limit, delta) = (
                    scalar(0, "start")?,
                    scalar(1, "limit")?,
                    scalar(2, "delta")?,
                );
                if delta == 0 {
                    return unresolved(format!("{at}: a delta of 0"));
                }
                let span = i128::from(limit) - i128::from(start);
                let n = (span + i128::from(delta) - i128::from(delta.signum())) / i128::from(delta);
                let n = n.max(0).min(i128::from(u32::MAX)) as u64;
                let mut out = Fact::new(vec![n], input(0)?.elem);
                if n <= MAX_FOLLOWED {
                    out.value = Some((0..n as i64).map(|i| start + i * delta).collect());
                }
                one(out, n)
            }
            "ReduceMean" | "ReduceSum" | "ReduceMax" | "ReduceMin" | "ReduceProd" | "ReduceL1"
            | "ReduceL2" | "ReduceLogSum" | "ReduceLogSumExp" | "ReduceSumSquare" | "ArgMax"
            | "ArgMin" => {
                let x = input(0)?;
                let keep = attr_i(node, "keepdims").unwrap_or(1) != 0;
                let axes: Option<Vec<i64>> = if op.starts_with("Arg") {
                    Some(vec![attr_i(node, "axis").unwrap_or(0)])
                } else if (op == "ReduceSum" && self.opset >= 13) || self.opset >= 18 {
                    match optional(1) {
                        Some(_) => Some(known(1, "axes")?),
                        None => None,
                    }
                } else {
                    attr_ints(node, "axes")
                };
                let noop = attr_i(node, "noop_with_empty_axes").unwrap_or(0) != 0;
                let reduced: Vec<usize> = match axes.filter(|a| !a.is_empty()) {
                    Some(a) => a
                        .iter()
                        .map(|a| axis(*a, x.rank(), at))
                        .collect::<Result<_, _>>()?,
                    None if noop => Vec::new(),
                    None => (0..x.rank()).collect(),
                };
                let shape: Vec<u64> = x
                    .shape
                    .iter()
                    .enumerate()
                    .filter_map(|(i, d)| match (reduced.contains(&i), keep) {
                        (false, _) => Some(*d),
                        (true, true) => Some(1),
                        (true, false) => None,
                    })
                    .collect();
                let elem = if op.starts_with("Arg") { INT64 } else { x.elem };
                one(Fact::new(shape, elem), x.len())
            }
            "Split" => {
                let x = input(0)?;
                let a = axis(attr_i(node, "axis").unwrap_or(0), x.rank(), at)?;
                let parts = if self.opset >= 13 {
                    match optional(1) {
                        Some(_) => Some(known(1, "split sizes")?),
                        None => None,
                    }
                } else {
                    attr_ints(node, "split")
                };
                let n = node.output.len().max(1) as u64;
                let sizes: Vec<u64> = match parts {
                    Some(p) => dims_of(&p, "split size")?,
                    None => {
                        let each = x.shape[a].div_ceil(n);
                        (0..n)
                            .map(|i| each.min(x.shape[a].saturating_sub(i * each)))
                            .collect()
                    }
                };
                let outputs = sizes
                    .iter()
                    .map(|s| {
                        let mut shape = x.shape.clone();
                        shape[a] = *s;
                        Fact::new(shape, x.elem)
                    })
                    .collect();
                Costed {
                    outputs,
                    peak: 0,
                    work: x.len(),
                }
            }
            "Loop" => self.cost_loop(node, scope, at, depth)?,
            "Scan" => self.cost_scan(node, scope, at, depth)?,
            _ => {
                return unresolved(format!(
                "{at}: operator `{op}` is not admitted (docs/tenant-code.md lists those that are)"
            ))
            }
        })
    }

    fn cost_loop(
        &self,
        node: &pb::NodeProto,
        scope: &Scope<'_>,
        at: &str,
        depth: usize,
    ) -> Result<Costed, CostError> {
        let input = |i: usize| input_of(scope, node, i, at);
        let optional = |i: usize| optional_of(scope, node, i);
        let trips = optional(0)
            .and_then(|m| m.value.as_ref())
            .and_then(|v| v.first().copied())
            .ok_or_else(|| {
                CostError::Unresolved(format!(
                    "{at}: a Loop without a constant trip count runs an unbounded number of times"
                ))
            })?;
        let trips = u64::try_from(trips).unwrap_or(0);
        let body = attr(node, "body")
            .and_then(|a| a.g.as_ref())
            .ok_or_else(|| CostError::Unresolved(format!("{at}: no body")))?;
        let carried: Vec<Fact> = (2..node.input.len())
            .map(|i| input(i).map(|f| Fact::new(f.shape.clone(), f.elem)))
            .collect::<Result<_, _>>()?;
        let mut formal = vec![Fact::new(vec![], INT64), Fact::new(vec![], BOOL)];
        formal.extend(carried.iter().cloned());
        let inner = self.graph(body, formal, Some(scope), depth + 1)?;
        let work = trips.saturating_mul(inner.work.max(1));
        self.over_work(work, at)?;
        let n = carried.len();
        if inner.outputs.len() < 1 + n {
            return unresolved(format!("{at}: the body gives too few outputs"));
        }
        for (c, o) in carried.iter().zip(&inner.outputs[1..]) {
            if c.shape != o.shape {
                return unresolved(format!(
                    "{at}: a loop-carried value changes shape from {:?} to {:?}",
                    c.shape, o.shape
                ));
            }
        }
        let mut outputs = carried;
        for o in &inner.outputs[1 + n..] {
            let mut shape = vec![trips];
            shape.extend_from_slice(&o.shape);
            outputs.push(Fact::new(shape, o.elem));
        }
        Ok(Costed {
            outputs,
            peak: inner.peak,
            work,
        })
    }

    fn cost_scan(
        &self,
        node: &pb::NodeProto,
        scope: &Scope<'_>,
        at: &str,
        depth: usize,
    ) -> Result<Costed, CostError> {
        let input = |i: usize| input_of(scope, node, i, at);
        if self.opset < 9 {
            return unresolved(format!("{at}: Scan before opset 9 is not admitted"));
        }
        let body = attr(node, "body")
            .and_then(|a| a.g.as_ref())
            .ok_or_else(|| CostError::Unresolved(format!("{at}: no body")))?;
        let scanned = attr_i(node, "num_scan_inputs").unwrap_or(0);
        let scanned = usize::try_from(scanned).unwrap_or(0);
        let total = node.input.len();
        if scanned == 0 || scanned > total {
            return unresolved(format!("{at}: num_scan_inputs {scanned}"));
        }
        let states = total - scanned;
        let in_axes = attr_ints(node, "scan_input_axes").unwrap_or_else(|| vec![0; scanned]);
        let mut formal = Vec::with_capacity(total);
        for i in 0..states {
            let f = input(i)?;
            formal.push(Fact::new(f.shape.clone(), f.elem));
        }
        let mut trips = None;
        for k in 0..scanned {
            let f = input(states + k)?;
            let a = axis(in_axes.get(k).copied().unwrap_or(0), f.rank(), at)?;
            let len = f.shape[a];
            if trips.is_some_and(|t| t != len) {
                return unresolved(format!("{at}: scan inputs of different lengths"));
            }
            trips = Some(len);
            let mut slice = f.shape.clone();
            slice.remove(a);
            formal.push(Fact::new(slice, f.elem));
        }
        let trips = trips.unwrap_or(0);
        let inner = self.graph(body, formal.clone(), Some(scope), depth + 1)?;
        let work = trips.saturating_mul(inner.work.max(1));
        self.over_work(work, at)?;
        if inner.outputs.len() < states {
            return unresolved(format!("{at}: the body gives too few outputs"));
        }
        let out_axes = attr_ints(node, "scan_output_axes").unwrap_or_default();
        let mut outputs: Vec<Fact> = formal[..states].to_vec();
        for (k, o) in inner.outputs[states..].iter().enumerate() {
            let mut shape = o.shape.clone();
            let a = axis(out_axes.get(k).copied().unwrap_or(0), o.rank() + 1, at)?;
            shape.insert(a, trips);
            outputs.push(Fact::new(shape, o.elem));
        }
        Ok(Costed {
            outputs,
            peak: inner.peak,
            work,
        })
    }
}

/// Input `i` of `node`, which must be given and known.
fn input_of<'s>(
    scope: &'s Scope<'_>,
    node: &pb::NodeProto,
    i: usize,
    at: &str,
) -> Result<&'s Fact, CostError> {
    let name = node
        .input
        .get(i)
        .filter(|n| !n.is_empty())
        .ok_or_else(|| CostError::Unresolved(format!("{at}: input {i} is missing")))?;
    scope
        .get(name)
        .ok_or_else(|| CostError::Unresolved(format!("{at}: input `{name}` is not known")))
}

/// Input `i` of `node` if it is given.
fn optional_of<'s>(scope: &'s Scope<'_>, node: &pb::NodeProto, i: usize) -> Option<&'s Fact> {
    node.input
        .get(i)
        .filter(|n| !n.is_empty())
        .and_then(|n| scope.get(n))
}

/// Integer arithmetic on small constant tensors (shape computations).
fn arithmetic(op: &str, a: &Fact, b: &Fact) -> Option<Vec<i64>> {
    let (x, y) = (a.value.as_ref()?, b.value.as_ref()?);
    let n = x.len().max(y.len());
    if !(x.len() == n || x.len() == 1) || !(y.len() == n || y.len() == 1) {
        return None;
    }
    (0..n)
        .map(|i| {
            let p = x[if x.len() == 1 { 0 } else { i }];
            let q = y[if y.len() == 1 { 0 } else { i }];
            match op {
                "Add" => p.checked_add(q),
                "Sub" => p.checked_sub(q),
                "Mul" => p.checked_mul(q),
                "Div" => p.checked_div(q),
                "Max" => Some(p.max(q)),
                "Min" => Some(p.min(q)),
                _ => None,
            }
        })
        .collect()
}

/// The shape and the multiply-adds of a (batched) matrix product, numpy rules.
fn matmul(a: &[u64], b: &[u64], at: &str) -> Result<(Vec<u64>, u64), CostError> {
    if a.is_empty() || b.is_empty() {
        return unresolved(format!("{at}: a product of scalars"));
    }
    let a2: Vec<u64> = if a.len() == 1 {
        vec![1, a[0]]
    } else {
        a.to_vec()
    };
    let b2: Vec<u64> = if b.len() == 1 {
        vec![b[0], 1]
    } else {
        b.to_vec()
    };
    let (m, k) = (a2[a2.len() - 2], a2[a2.len() - 1]);
    let (k2, n) = (b2[b2.len() - 2], b2[b2.len() - 1]);
    if k != k2 {
        return unresolved(format!(
            "{at}: shapes {a:?} and {b:?} do not multiply ({k} ≠ {k2})"
        ));
    }
    let batch = broadcast(&a2[..a2.len() - 2], &b2[..b2.len() - 2], at)?;
    let mut out = batch.clone();
    if a.len() > 1 {
        out.push(m);
    }
    if b.len() > 1 {
        out.push(n);
    }
    let work = product(&batch)
        .saturating_mul(m)
        .saturating_mul(k)
        .saturating_mul(n);
    Ok((out, work))
}

/// The cost of one prediction of `model` with input `[1, width]` f32, refused over `limits` (naming the
/// node where the limit is passed) or when a shape cannot be resolved.
pub fn estimate(
    model: &pb::ModelProto,
    width: usize,
    limits: &ModelLimits,
) -> Result<ModelCost, CostError> {
    let graph = model
        .graph
        .as_ref()
        .ok_or_else(|| CostError::Unresolved("the file has no graph".into()))?;
    if !model.functions.is_empty() {
        return unresolved("model-local functions are not admitted");
    }
    let opset = model
        .opset_import
        .iter()
        .find(|o| o.domain.is_empty() || o.domain == "ai.onnx")
        .map(|o| o.version)
        .unwrap_or(1);
    let pass = Pass {
        limits: *limits,
        opset,
    };
    let costed = pass.graph(graph, vec![Fact::new(vec![1, width as u64], 4)], None, 0)?;
    let cost = ModelCost {
        memory_bytes: costed.peak,
        work: costed.work,
    };
    cost.check(limits, "the whole graph")?;
    Ok(cost)
}

/// Hostile and heavy graphs written as bytes, for the tests of this pass and of the upload path: each has
/// input `features` `[1, 1]` and output `y`.
pub mod hostile {
    use prost::Message;
    use tract_onnx::pb;

    use crate::models::onnx::value_info;

    fn ints(name: &str, values: &[i64]) -> pb::TensorProto {
        pb::TensorProto {
            name: name.into(),
            dims: vec![values.len() as i64],
            data_type: pb::tensor_proto::DataType::Int64 as i32,
            int64_data: values.to_vec(),
            ..Default::default()
        }
    }

    fn scalar(name: &str, value: i64) -> pb::TensorProto {
        pb::TensorProto {
            name: name.into(),
            dims: vec![],
            data_type: pb::tensor_proto::DataType::Int64 as i32,
            int64_data: vec![value],
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

    fn with_attr(mut n: pb::NodeProto, a: pb::AttributeProto) -> pb::NodeProto {
        n.attribute.push(a);
        n
    }

    fn graph(
        nodes: Vec<pb::NodeProto>,
        init: Vec<pb::TensorProto>,
        inputs: Vec<pb::ValueInfoProto>,
        outputs: Vec<pb::ValueInfoProto>,
    ) -> pb::GraphProto {
        pb::GraphProto {
            name: "hostile".into(),
            node: nodes,
            initializer: init,
            input: inputs,
            output: outputs,
            ..Default::default()
        }
    }

    fn model(g: pb::GraphProto) -> Vec<u8> {
        pb::ModelProto {
            ir_version: 8,
            producer_name: "trellis-tests".into(),
            opset_import: vec![pb::OperatorSetIdProto {
                domain: String::new(),
                version: 13,
            }],
            graph: Some(g),
            ..Default::default()
        }
        .encode_to_vec()
    }

    /// The mean of every element, as `[1, 1]`.
    fn reduce_mean(input: &str) -> pb::NodeProto {
        node("ReduceMean", &[input], "y")
    }

    /// What the issue's 169-byte file does: the input expanded to `[n, n]`, then a mean.
    pub fn expand(n: i64) -> Vec<u8> {
        model(graph(
            vec![
                node("Expand", &["features", "shape"], "big"),
                reduce_mean("big"),
            ],
            vec![ints("shape", &[n, n])],
            vec![value_info("features", &[1, 1])],
            vec![value_info("y", &[1, 1])],
        ))
    }

    /// The input tiled `[n, n]` times, then a mean.
    pub fn tile(n: i64) -> Vec<u8> {
        model(graph(
            vec![
                node("Tile", &["features", "repeats"], "big"),
                reduce_mean("big"),
            ],
            vec![ints("repeats", &[n, n])],
            vec![value_info("features", &[1, 1])],
            vec![value_info("y", &[1, 1])],
        ))
    }

    /// A constant `[n, n]` of zeros added to the input, then a mean.
    pub fn constant_of_shape(n: i64) -> Vec<u8> {
        model(graph(
            vec![
                node("ConstantOfShape", &["shape"], "zeros"),
                node("Add", &["features", "zeros"], "big"),
                reduce_mean("big"),
            ],
            vec![ints("shape", &[n, n])],
            vec![value_info("features", &[1, 1])],
            vec![value_info("y", &[1, 1])],
        ))
    }

    /// The input expanded to an `[n, n]` matrix multiplied by itself `links` times, then a mean: each link
    /// costs n³ multiply-adds.
    pub fn matmul_chain(n: i64, links: usize) -> Vec<u8> {
        let mut nodes = vec![node("Expand", &["features", "shape"], "m0")];
        for i in 0..links {
            let (a, b) = (format!("m{i}"), format!("m{}", i + 1));
            nodes.push(node("MatMul", &[&a, &a], &b));
        }
        nodes.push(reduce_mean(&format!("m{links}")));
        model(graph(
            nodes,
            vec![ints("shape", &[n, n])],
            vec![value_info("features", &[1, 1])],
            vec![value_info("y", &[1, 1])],
        ))
    }

    /// Like [`matmul_chain`], but the matrix is the expanded input plus a ramp `0, 1/n², 2/n², …` (a
    /// `Range` scaled and reshaped to `[n, n]`), so no optimiser can reduce the products of a uniform matrix: `links · n³` multiply-adds
    /// really computed. The slow-but-admissible model of the tests.
    pub fn heavy(n: i64, links: usize) -> Vec<u8> {
        let to_float = with_attr(
            node("Cast", &["steps"], "stepsf"),
            pb::AttributeProto {
                name: "to".into(),
                r#type: pb::attribute_proto::AttributeType::Int as i32,
                i: pb::tensor_proto::DataType::Float as i64,
                ..Default::default()
            },
        );
        let mut nodes = vec![
            node("Range", &["zero", "count", "one"], "steps"),
            to_float,
            node("Mul", &["stepsf", "scale"], "small"),
            node("Reshape", &["small", "shape"], "ramp"),
            node("Expand", &["features", "shape"], "flat"),
            node("Add", &["flat", "ramp"], "m0"),
        ];
        for i in 0..links {
            let (a, b) = (format!("m{i}"), format!("m{}", i + 1));
            nodes.push(node("MatMul", &[&a, &a], &b));
        }
        nodes.push(reduce_mean(&format!("m{links}")));
        model(graph(
            nodes,
            vec![
                scalar("zero", 0),
                scalar("count", n * n),
                scalar("one", 1),
                pb::TensorProto {
                    name: "scale".into(),
                    dims: vec![],
                    data_type: pb::tensor_proto::DataType::Float as i32,
                    float_data: vec![1.0 / (n * n) as f32],
                    ..Default::default()
                },
                ints("shape", &[n, n]),
            ],
            vec![value_info("features", &[1, 1])],
            vec![value_info("y", &[1, 1])],
        ))
    }

    /// A `Loop` of `trips` iterations adding the input to a carried `[1, 1]`.
    pub fn long_loop(trips: i64) -> Vec<u8> {
        let body = graph(
            vec![
                node("Identity", &["cond_in"], "cond_out"),
                node("Add", &["acc_in", "features"], "acc_out"),
            ],
            vec![],
            vec![
                value_info("i", &[]),
                value_info("cond_in", &[]),
                value_info("acc_in", &[1, 1]),
            ],
            vec![value_info("cond_out", &[]), value_info("acc_out", &[1, 1])],
        );
        let looped = with_attr(
            pb::NodeProto {
                op_type: "Loop".into(),
                input: vec!["trips".into(), "".into(), "features".into()],
                output: vec!["y".into()],
                name: "loop".into(),
                ..Default::default()
            },
            pb::AttributeProto {
                name: "body".into(),
                r#type: pb::attribute_proto::AttributeType::Graph as i32,
                g: Some(body),
                ..Default::default()
            },
        );
        model(graph(
            vec![looped],
            vec![scalar("trips", trips)],
            vec![value_info("features", &[1, 1])],
            vec![value_info("y", &[1, 1])],
        ))
    }

    /// A `Scan` over `steps` rows, each step expanding the row to `[n, n]`, multiplying it by itself and
    /// adding its mean to a carried `[1, 1]`: `steps · n³` multiply-adds.
    pub fn long_scan(steps: i64, n: i64) -> Vec<u8> {
        let body = graph(
            vec![
                node("Expand", &["row", "shape"], "sq"),
                node("MatMul", &["sq", "sq"], "prod"),
                with_attr(
                    node("ReduceMean", &["prod"], "m"),
                    pb::AttributeProto {
                        name: "keepdims".into(),
                        r#type: pb::attribute_proto::AttributeType::Int as i32,
                        i: 1,
                        ..Default::default()
                    },
                ),
                node("Add", &["acc_in", "m"], "acc_out"),
            ],
            vec![],
            vec![value_info("acc_in", &[1, 1]), value_info("row", &[1])],
            vec![value_info("acc_out", &[1, 1])],
        );
        let scan = with_attr(
            with_attr(
                pb::NodeProto {
                    op_type: "Scan".into(),
                    input: vec!["features".into(), "rows".into()],
                    output: vec!["y".into()],
                    name: "scan".into(),
                    ..Default::default()
                },
                pb::AttributeProto {
                    name: "body".into(),
                    r#type: pb::attribute_proto::AttributeType::Graph as i32,
                    g: Some(body),
                    ..Default::default()
                },
            ),
            pb::AttributeProto {
                name: "num_scan_inputs".into(),
                r#type: pb::attribute_proto::AttributeType::Int as i32,
                i: 1,
                ..Default::default()
            },
        );
        model(graph(
            vec![node("Expand", &["features", "rows_shape"], "rows"), scan],
            vec![ints("rows_shape", &[steps, 1]), ints("shape", &[n, n])],
            vec![value_info("features", &[1, 1])],
            vec![value_info("y", &[1, 1])],
        ))
    }
}

#[cfg(test)]
mod tests {
    use prost::Message;

    use super::*;
    use crate::models::onnx::{linear_model, mlp_model};

    const PRO: ModelLimits = ModelLimits {
        memory_bytes: 64 << 20,
        work: 100_000_000,
    };

    fn cost(bytes: &[u8], width: usize) -> Result<ModelCost, CostError> {
        let model = pb::ModelProto::decode(bytes).expect("decodes");
        estimate(&model, width, &PRO)
    }

    #[test]
    fn a_linear_model_costs_its_weights_and_a_few_operations() {
        let c = cost(&linear_model(&[0.5, -2.0, 1.0], 0.25), 3).expect("admitted");
        // 3 + 1 weights, a [1,3] input, [1,1] intermediates: a few dozen bytes.
        assert!(c.memory_bytes > 16 && c.memory_bytes < 100, "{c:?}");
        // 3 multiply-adds and one addition.
        assert_eq!(c.work, 4, "{c:?}");
    }

    #[test]
    fn a_perceptron_costs_its_two_products() {
        let bytes = mlp_model(2, 8, vec![0.0; 16], vec![0.0; 8], vec![0.0; 8], 0.0);
        let c = cost(&bytes, 2).expect("admitted");
        // 2·8 + 8 (bias) + 8 (relu) + 8·1 + 1.
        assert_eq!(c.work, 16 + 8 + 8 + 8 + 1, "{c:?}");
    }

    #[test]
    fn the_issues_expand_to_32768_squared_is_refused_on_memory_naming_the_limit() {
        let err = cost(&hostile::expand(32_768), 1).expect_err("refused");
        let CostError::Memory { needed, limit, at } = &err else {
            panic!("{err}")
        };
        assert_eq!((*needed, *limit), (4 << 30, 64 << 20), "{err}");
        assert!(at.contains("Expand"), "{err}");
        assert!(err.to_string().contains("model_memory_bytes"), "{err}");
    }

    #[test]
    fn tile_and_constant_of_shape_are_refused_on_memory() {
        for bytes in [hostile::tile(32_768), hostile::constant_of_shape(32_768)] {
            let err = cost(&bytes, 1).expect_err("refused");
            assert!(matches!(err, CostError::Memory { .. }), "{err}");
        }
    }

    #[test]
    fn a_matmul_chain_is_refused_on_work_and_a_short_one_admitted() {
        let err = cost(&hostile::matmul_chain(1_024, 8), 1).expect_err("refused");
        assert!(matches!(err, CostError::Work { .. }), "{err}");
        assert!(err.to_string().contains("model_work_per_bar"), "{err}");
        let c = cost(&hostile::matmul_chain(256, 2), 1).expect("admitted");
        assert!(c.work >= 2 * 256 * 256 * 256, "{c:?}");
        // Two [256, 256] f32 alive at once, and not many more.
        assert!(c.memory_bytes >= 2 * 256 * 256 * 4, "{c:?}");
        assert!(c.memory_bytes <= 3 * 256 * 256 * 4 + 1_024, "{c:?}");
    }

    #[test]
    fn a_loop_and_a_scan_that_would_run_long_are_refused_on_work() {
        let err = cost(&hostile::long_loop(1_000_000_000_000), 1).expect_err("refused");
        assert!(
            matches!(&err, CostError::Work { at, .. } if at.contains("Loop")),
            "{err}"
        );
        let err = cost(&hostile::long_scan(10_000, 100), 1).expect_err("refused");
        assert!(
            matches!(&err, CostError::Work { at, .. } if at.contains("Scan")),
            "{err}"
        );
        let c = cost(&hostile::long_loop(1_000), 1).expect("a short loop is admitted");
        assert_eq!(c.work, 2_000, "{c:?}");
    }

    #[test]
    fn a_loop_whose_trip_count_comes_from_the_data_is_refused_as_unbounded() {
        let mut model = pb::ModelProto::decode(hostile::long_loop(10).as_slice()).expect("decodes");
        if let Some(g) = model.graph.as_mut() {
            g.initializer.clear();
            g.node[0].input[0] = String::new();
        }
        let err = estimate(&model, 1, &PRO).expect_err("refused");
        assert!(
            matches!(&err, CostError::Unresolved(why) if why.contains("unbounded")),
            "{err}"
        );
    }

    #[test]
    fn an_unknown_operator_is_refused_naming_it() {
        let bytes = crate::models::onnx::unary_model("NonZero", &[1.0]);
        let err = cost(&bytes, 1).expect_err("refused");
        assert!(
            err.to_string().contains("`NonZero` is not admitted"),
            "{err}"
        );
    }

    #[test]
    fn a_reshape_to_a_shape_computed_from_the_input_is_followed() {
        // Shape(x) → Reshape(x, shape): the target is known from the fixed input.
        let g = pb::GraphProto {
            node: vec![
                pb::NodeProto {
                    op_type: "Shape".into(),
                    input: vec!["features".into()],
                    output: vec!["s".into()],
                    ..Default::default()
                },
                pb::NodeProto {
                    op_type: "Reshape".into(),
                    input: vec!["features".into(), "s".into()],
                    output: vec!["y".into()],
                    ..Default::default()
                },
            ],
            input: vec![crate::models::onnx::value_info("features", &[1, 3])],
            output: vec![crate::models::onnx::value_info("y", &[1, 3])],
            ..Default::default()
        };
        let model = pb::ModelProto {
            graph: Some(g),
            opset_import: vec![pb::OperatorSetIdProto {
                domain: String::new(),
                version: 13,
            }],
            ..Default::default()
        };
        let c = estimate(&model, 3, &PRO).expect("admitted");
        assert!(c.memory_bytes < 100, "{c:?}");
    }

    #[test]
    fn a_tensor_kept_in_an_external_file_is_refused() {
        let mut model =
            pb::ModelProto::decode(linear_model(&[1.0], 0.0).as_slice()).expect("decodes");
        if let Some(g) = model.graph.as_mut() {
            g.initializer[0].data_location = Some(pb::tensor_proto::DataLocation::External as i32);
        }
        let err = estimate(&model, 1, &PRO).expect_err("refused");
        assert!(err.to_string().contains("external"), "{err}");
    }
}
