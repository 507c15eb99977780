//! `trellis bench models`: what a model costs on the live path.
//!
//! - Inference alone, in process: a two-layer perceptron 32 → 64 → 1 ([`mlp_model`]) and a forest of
//!   100 full binary trees of depth 6 over 32 features ([`forest_model`]), each loaded with
//!   [`OnnxModel::load`] (parsed, optimised, validated as a deployment loads it) and run through one
//!   [`Inference`](crate::models::onnx::Inference): 2 000 warm-up runs, then 50 000 timed runs (or as
//!   many as fit in 20 s) on rows that vary (1 024 random rows in turn). Every run is timed on its own
//!   and recorded in nanoseconds in an HDR histogram; the maximum is the true one. Weights, thresholds and
//!   inputs come from a seeded `SmallRng`, so every run of the bench times the same models on the same
//!   rows. The forest is written as an `ai.onnx.ml` `TreeEnsembleRegressor`, which tract-onnx 0.23 does not
//!   implement: `OnnxModel::load` serves it with the native evaluator of [`crate::models::trees`].
//! - Tick → order with a model between bar and strategy: the `latency` bench's closed-loop bridge
//!   ([`drive`]) at 10 000 ticks/s, 10 ticks a bar, against a tenant whose only strategy is `model_signal`
//!   trading a linear model on `return_1` and `return_2` of EURUSD M1. The weights and thresholds are
//!   chosen for `drive`'s price path so that every bar's prediction lands in another band (long, flat,
//!   short) than the bar before: every bar yields one order, which `drive` needs (it opens the next bar
//!   only once the previous bar's order has arrived). That is checked before the run
//!   ([`check_trades_every_bar`]), and two bars are fed beforehand on another connection so the model's
//!   features are warm at the first bar `drive` closes.
//! - 1 000 model actors: 200 tenants × 5 deployments of one small linear model (one file on disk, loaded
//!   by every deployment as configuration would), started through the runtime like the `tree` bench's
//!   tenants: the time until every `ModelHost` runs, and the process's resident memory then.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use awc::ws;
use futures_util::SinkExt;
use hdrhistogram::Histogram;
use prost::Message as _;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde_json::json;
use tract_onnx::pb;

use super::{bench_tenant, drive, open_bridge, report_latency, rss_mb, start, strategy};
use crate::actors::messages::{GetModelState, GetRecentBars};
use crate::actors::tenant::TenantContext;
use crate::domain::tenant::{ModelDeploymentSettings, ModelVersionSettings};
use crate::domain::{Symbol, Timeframe};
use crate::models::onnx::{linear_model, mlp_model, value_info, OnnxModel};

/// Input features of the inference benchmarks.
const WIDTH: usize = 32;
const WARM_UP_RUNS: usize = 2_000;
const TIMED_RUNS: usize = 50_000;
/// The timed runs of one model stop here if not done: a model slow enough to hit it (the forest, at about
/// 1.5 ms a run with tract-onnx 0.23) would otherwise keep the bench busy for over a minute.
const TIMED_CAP: Duration = Duration::from_secs(20);
/// Distinct input rows, used in turn.
const ROWS: usize = 1_024;
const SEED: u64 = 0x7e11_15b3;

pub async fn run() -> anyhow::Result<()> {
    let dir = super::tempfile_dir()?;
    let result = run_in(&dir).await;
    let _ = std::fs::remove_dir_all(&dir);
    result
}

async fn run_in(dir: &Path) -> anyhow::Result<()> {
    let mut rng = SmallRng::seed_from_u64(SEED);
    let rows: Vec<Vec<f32>> = (0..ROWS)
        .map(|_| (0..WIDTH).map(|_| rng.gen_range(-1.0f32..1.0)).collect())
        .collect();
    perceptron(&mut rng, &rows)?;
    forest(&mut rng, &rows)?;
    tick_to_order(dir).await?;
    many_model_hosts(dir).await
}

// ---- inference ------------------------------------------------------------------------------------------

/// Latencies in nanoseconds, every sample kept, with the true maximum.
struct Nanos {
    hist: Histogram<u64>,
    max: u64,
}

impl Nanos {
    fn new() -> anyhow::Result<Self> {
        Ok(Self {
            // 1 ns to 60 s, 3 significant digits.
            hist: Histogram::new_with_bounds(1, 60_000_000_000, 3)?,
            max: 0,
        })
    }

    fn record(&mut self, d: Duration) {
        let ns = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX).max(1);
        self.hist.saturating_record(ns);
        self.max = self.max.max(ns);
    }

    /// The value at quantile `q`, in µs; never above the true maximum.
    fn at_us(&self, q: f64) -> f64 {
        self.hist.value_at_quantile(q).min(self.max) as f64 / 1e3
    }

    fn summary(&self) -> String {
        format!(
            "p50 {:.2} µs, p99 {:.2} µs, p99.9 {:.2} µs, max {:.2} µs",
            self.at_us(0.5),
            self.at_us(0.99),
            self.at_us(0.999),
            self.max as f64 / 1e3
        )
    }
}

fn verdict(met: bool) -> &'static str {
    if met {
        "met"
    } else {
        "MISSED"
    }
}

/// Times `Inference::run` of `model`: [`WARM_UP_RUNS`] untimed, then [`TIMED_RUNS`] timed one by one, or as
/// many as fit in [`TIMED_CAP`] (the printed count says which).
fn time_inference(label: &str, model: &OnnxModel, rows: &[Vec<f32>]) -> anyhow::Result<()> {
    let mut inference = model.inference()?;
    let mut sink = 0.0f32;
    for row in rows.iter().cycle().take(WARM_UP_RUNS) {
        sink += inference.run(row)?.first().copied().unwrap_or(0.0);
    }
    let mut times = Nanos::new()?;
    let cap = Instant::now() + TIMED_CAP;
    let mut capped = false;
    for row in rows.iter().cycle().take(TIMED_RUNS) {
        let started = Instant::now();
        if started >= cap {
            capped = true;
            break;
        }
        let out = inference.run(std::hint::black_box(row))?;
        let took = started.elapsed();
        sink += out.first().copied().unwrap_or(0.0);
        times.record(took);
    }
    std::hint::black_box(sink);
    let p99 = times.at_us(0.99);
    println!(
        "models: {label}: {} runs after {WARM_UP_RUNS} warm-up{}: {}; target p99 < 50 µs: {}",
        times.hist.len(),
        if capped {
            format!(
                " (stopped at the {} s cap, short of {TIMED_RUNS})",
                TIMED_CAP.as_secs()
            )
        } else {
            String::new()
        },
        times.summary(),
        verdict(p99 < 50.0)
    );
    Ok(())
}

fn small(rng: &mut SmallRng, n: usize) -> Vec<f32> {
    (0..n).map(|_| rng.gen_range(-0.1f32..0.1)).collect()
}

fn perceptron(rng: &mut SmallRng, rows: &[Vec<f32>]) -> anyhow::Result<()> {
    let hidden = 64;
    let (w1, b1, w2) = (
        small(rng, WIDTH * hidden),
        small(rng, hidden),
        small(rng, hidden),
    );
    let b2 = rng.gen_range(-0.1f32..0.1);
    let bytes = mlp_model(WIDTH, hidden, w1, b1, w2, b2);
    let model = OnnxModel::load(&bytes, WIDTH).context("the perceptron")?;
    time_inference(
        &format!("MLP {WIDTH} → {hidden} → 1 (ReLU), Inference::run"),
        &model,
        rows,
    )
}

/// Trees in the forest benchmark.
const TREES: usize = 100;
/// Splits from a tree's root to any of its leaves.
const DEPTH: u32 = 6;

fn forest(rng: &mut SmallRng, rows: &[Vec<f32>]) -> anyhow::Result<()> {
    let forest = Forest::random(rng, WIDTH, TREES, DEPTH);
    let label = format!(
        "tree ensemble, {TREES} trees of depth {DEPTH} ({} nodes) over {WIDTH} features",
        forest.nodes()
    );
    // tract-onnx 0.23 does not implement `TreeEnsembleRegressor` (and its `TreeEnsembleClassifier` kernel
    // steps through every leaf of the trees before each tree, about 1.5 ms a run here): a lone tree-ensemble
    // node is evaluated by trellis's native evaluator (`models::trees`), one root-to-leaf walk per tree.
    let model = OnnxModel::load(&forest_model(&forest), WIDTH)
        .context("the forest as a TreeEnsembleRegressor")?;
    time_inference(
        &format!("{label}, TreeEnsembleRegressor (native)"),
        &model,
        rows,
    )
}

/// Full binary trees in breadth-first order: node `k`'s children are `2k + 1` (feature ≤ threshold) and
/// `2k + 2`; the first `2^depth − 1` nodes split, the last `2^depth` are leaves.
struct Forest {
    trees: usize,
    splits_per_tree: usize,
    leaves_per_tree: usize,
    /// Per tree, per split: the feature compared and its threshold.
    features: Vec<i64>,
    thresholds: Vec<f32>,
    /// Per tree, per leaf.
    weights: Vec<f32>,
}

impl Forest {
    fn random(rng: &mut SmallRng, width: usize, trees: usize, depth: u32) -> Self {
        let leaves_per_tree = 1usize << depth;
        let splits_per_tree = leaves_per_tree - 1;
        let features = (0..trees * splits_per_tree)
            .map(|_| rng.gen_range(0..width as i64))
            .collect();
        // Inputs are uniform in [-1, 1): thresholds there too, so every path gets taken.
        let thresholds = (0..trees * splits_per_tree)
            .map(|_| rng.gen_range(-1.0f32..1.0))
            .collect();
        let weights = small(rng, trees * leaves_per_tree);
        Self {
            trees,
            splits_per_tree,
            leaves_per_tree,
            features,
            thresholds,
            weights,
        }
    }

    fn nodes(&self) -> usize {
        self.trees * (self.splits_per_tree + self.leaves_per_tree)
    }
}

fn attribute(name: &str, kind: pb::attribute_proto::AttributeType) -> pb::AttributeProto {
    pb::AttributeProto {
        name: name.into(),
        r#type: kind as i32,
        ..Default::default()
    }
}

fn ints(name: &str, values: Vec<i64>) -> pb::AttributeProto {
    pb::AttributeProto {
        ints: values,
        ..attribute(name, pb::attribute_proto::AttributeType::Ints)
    }
}

fn floats(name: &str, values: Vec<f32>) -> pb::AttributeProto {
    pb::AttributeProto {
        floats: values,
        ..attribute(name, pb::attribute_proto::AttributeType::Floats)
    }
}

fn strings(name: &str, values: Vec<&str>) -> pb::AttributeProto {
    pb::AttributeProto {
        strings: values.into_iter().map(|s| s.as_bytes().to_vec()).collect(),
        ..attribute(name, pb::attribute_proto::AttributeType::Strings)
    }
}

fn int(name: &str, value: i64) -> pb::AttributeProto {
    pb::AttributeProto {
        i: value,
        ..attribute(name, pb::attribute_proto::AttributeType::Int)
    }
}

fn string(name: &str, value: &str) -> pb::AttributeProto {
    pb::AttributeProto {
        s: value.as_bytes().to_vec(),
        ..attribute(name, pb::attribute_proto::AttributeType::String)
    }
}

/// An ONNX file (`ai.onnx.ml` opset 1, default opset 13) computing `forest` over `[1, width]` f32 inputs:
/// one `ai.onnx.ml.TreeEnsembleRegressor`, one target, summed over the trees (`y` is `[1, 1]`).
fn forest_model(forest: &Forest) -> Vec<u8> {
    let per_tree = forest.splits_per_tree + forest.leaves_per_tree;
    let n = forest.trees * per_tree;
    let (mut tree_ids, mut node_ids, mut feature_ids) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    let (mut modes, mut values, mut true_ids, mut false_ids) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    let leaves = forest.trees * forest.leaves_per_tree;
    let (mut leaf_tree_ids, mut leaf_node_ids) =
        (Vec::with_capacity(leaves), Vec::with_capacity(leaves));
    for tree in 0..forest.trees {
        for node in 0..per_tree {
            tree_ids.push(tree as i64);
            node_ids.push(node as i64);
            if node < forest.splits_per_tree {
                let at = tree * forest.splits_per_tree + node;
                modes.push("BRANCH_LEQ");
                feature_ids.push(forest.features.get(at).copied().unwrap_or(0));
                values.push(forest.thresholds.get(at).copied().unwrap_or(0.0));
                true_ids.push(2 * node as i64 + 1);
                false_ids.push(2 * node as i64 + 2);
            } else {
                modes.push("LEAF");
                feature_ids.push(0);
                values.push(0.0);
                true_ids.push(0);
                false_ids.push(0);
                leaf_tree_ids.push(tree as i64);
                leaf_node_ids.push(node as i64);
            }
        }
    }
    let attributes = vec![
        ints("nodes_treeids", tree_ids),
        ints("nodes_nodeids", node_ids),
        ints("nodes_featureids", feature_ids),
        strings("nodes_modes", modes),
        floats("nodes_values", values),
        ints("nodes_truenodeids", true_ids),
        ints("nodes_falsenodeids", false_ids),
        string("post_transform", "NONE"),
        ints("target_treeids", leaf_tree_ids),
        ints("target_nodeids", leaf_node_ids),
        ints("target_ids", vec![0; leaves]),
        floats("target_weights", forest.weights.clone()),
        int("n_targets", 1),
        string("aggregate_function", "SUM"),
    ];
    let node = pb::NodeProto {
        op_type: "TreeEnsembleRegressor".into(),
        domain: "ai.onnx.ml".into(),
        input: vec!["features".into()],
        output: vec!["y".to_owned()],
        name: "forest".into(),
        attribute: attributes,
        ..Default::default()
    };
    let graph = pb::GraphProto {
        name: "trellis-bench-forest".into(),
        node: vec![node],
        input: vec![value_info("features", &[1, WIDTH as i64])],
        output: vec![value_info("y", &[1, 1])],
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
                domain: "ai.onnx.ml".into(),
                version: 1,
            },
        ],
        graph: Some(graph),
        ..Default::default()
    }
    .encode_to_vec()
}

// ---- tick → order through a model -----------------------------------------------------------------------

const KEY: &str = "trk_modellat_bench-secret-key";
/// The login `drive` trades on (set on the strategy: the feeding connection's session also exists).
const LOGIN: u64 = 4343;
/// The login of the connection that feeds the bars before `drive`'s.
const FEED_LOGIN: u64 = 4344;
const DEPLOYMENT: &str = "flip-eurusd";
/// The first tick `drive` sends is at this time plus one step; its bars open on the minute from here.
const DRIVE_FIRST_MSC: i64 = 1_700_000_040_000;
/// `drive`'s ticks per bar at this bench's rate.
const PER_BAR: u64 = 10;
const RATE: u64 = 10_000;
const SECONDS: u64 = 5;
/// The bid of the two bars fed before `drive` starts (bars −2 and −1, one tick each).
const FEED_BID: f64 = 1.1006;
/// `y = SCALE · (return_1 − 0.4 · return_2)`: about the move in pips (`SCALE` ≈ 1.1 / 0.0001).
const SCALE: f32 = 11_000.0;
const RETURN_2_WEIGHT: f32 = -0.4;
/// `model_signal`'s bands: long above, short below, flat between.
const UPPER: f64 = 1.5;
const LOWER: f64 = -1.5;

fn deployment(id: &str, symbol: &str, version: ModelVersionSettings) -> ModelDeploymentSettings {
    ModelDeploymentSettings {
        id: id.into(),
        model: None,
        symbol: symbol.into(),
        timeframe: "M1".into(),
        traffic: vec![version],
        shadow: Vec::new(),
        // Generous: a run over budget gives no prediction, no order, and `drive` would wait for one.
        budget_us: 1_000_000,
        retrain: None,
    }
}

/// Writes a model file and its manifest into `dir`.
fn write_version(
    dir: &Path,
    name: &str,
    bytes: &[u8],
    manifest: &serde_json::Value,
) -> anyhow::Result<ModelVersionSettings> {
    let file = dir.join(format!("{name}.onnx"));
    let man = dir.join(format!("{name}.json"));
    std::fs::write(&file, bytes)?;
    std::fs::write(&man, manifest.to_string())?;
    Ok(ModelVersionSettings::file(
        file.display().to_string(),
        man.display().to_string(),
        1.0,
    ))
}

/// `model_signal`'s band for a prediction: 1 long, −1 short, 0 flat.
fn band(y: f64) -> i8 {
    if y > UPPER {
        1
    } else if y < LOWER {
        -1
    } else {
        0
    }
}

/// Runs `model` over the closes of the bars this bench feeds and `drive` sends (`drive`'s bid is
/// `1.1 + (n mod 7) · 0.0001` for its `n`-th tick, and a bar's close is its last tick, number
/// `PER_BAR·j + PER_BAR − 2` for bar `j`) and checks that every bar's band differs from the previous bar's,
/// the first being long or short: one order per bar. A change to `drive`'s price path fails here, not as
/// a run whose bars wait for orders that never come.
fn check_trades_every_bar(model: &OnnxModel) -> anyhow::Result<()> {
    let mut closes = vec![FEED_BID, FEED_BID];
    closes.extend((0..140u64).map(|j| {
        let n = PER_BAR * j + PER_BAR - 2;
        1.1 + (n % 7) as f64 * 0.0001
    }));
    let mut inference = model.inference()?;
    let mut previous = 0i8;
    for (j, w) in closes.windows(3).enumerate() {
        let (r1, r2) = (w[2] / w[1] - 1.0, w[2] / w[0] - 1.0);
        let y = inference
            .run(&[r1 as f32, r2 as f32])?
            .first()
            .copied()
            .context("no output")?;
        let now = band(f64::from(y));
        if now == previous {
            bail!(
                "bar {j} of drive's price path would give no order (prediction {y:.3}, band {now} as before); \
                 pick other weights or thresholds"
            );
        }
        previous = now;
    }
    Ok(())
}

/// Feeds bars −2 and −1 (before `drive`'s first bar) on another connection, so `return_2` is defined at the
/// first bar `drive` closes; waits until market data has closed bar −2 (bar −1 is closed by `drive`'s first
/// tick; its prediction is not defined yet: two closes).
async fn feed_two_bars(port: u16, tenant: &TenantContext) -> anyhow::Result<()> {
    let (mut sink, stream) = open_bridge(port, KEY, FEED_LOGIN).await?;
    for (seq, minutes_before) in [(2u64, 2i64), (3, 1)] {
        let time_msc = DRIVE_FIRST_MSC - minutes_before * 60_000;
        let tick = format!(
            r#"{{"type":"tick","seq":{seq},"symbol":"EURUSD","time_msc":{time_msc},"bid":{FEED_BID:.5},"ask":{:.5}}}"#,
            FEED_BID + 0.0002
        );
        sink.send(ws::Message::Text(tick.into())).await?;
    }
    let md = tenant
        .market_data
        .get()
        .context("the tenant's market data")?;
    let mut fed = false;
    for _ in 0..1_000 {
        let bars = md
            .send(GetRecentBars {
                symbol: Symbol::new("EURUSD"),
                timeframe: Timeframe::M1,
                limit: 10,
            })
            .await?;
        if !bars.is_empty() {
            fed = true;
            break;
        }
        actix_web::rt::time::sleep(Duration::from_millis(5)).await;
    }
    let _ = sink.send(ws::Message::Close(None)).await;
    drop(stream);
    if !fed {
        bail!("the bars fed before the run never closed");
    }
    Ok(())
}

async fn tick_to_order(dir: &Path) -> anyhow::Result<()> {
    let bytes = linear_model(&[SCALE, RETURN_2_WEIGHT * SCALE], 0.0);
    check_trades_every_bar(&*OnnxModel::load(&bytes, 2)?)?;
    let manifest =
        json!({"features": ["return_1", "return_2"], "output": {"kind": "expected_return"}});
    let version = write_version(dir, "flip", &bytes, &manifest)?;

    let app = start(&[]).await?;
    let mut settings = bench_tenant("modellat", KEY, Vec::new());
    settings.models = vec![deployment(DEPLOYMENT, "EURUSD", version)];
    let mut signal = strategy("signal", "model_signal", "EURUSD");
    signal.params = [("upper".to_owned(), UPPER), ("lower".to_owned(), LOWER)].into();
    signal.model = Some(DEPLOYMENT.into());
    signal.account = Some(LOGIN);
    settings.strategies = vec![signal];
    let tenant = app.runtime.start_tenant(settings).await?;
    for _ in 0..1_000 {
        if !tenant.model_hosts.read().is_empty() {
            break;
        }
        actix_web::rt::time::sleep(Duration::from_millis(2)).await;
    }
    feed_two_bars(app.bridge, &tenant).await?;

    let driven = drive(app.bridge, KEY, LOGIN, RATE, SECONDS, PER_BAR).await?;
    report_latency(
        &format!(
            "models: tick → order @ {RATE} ticks/s, linear model between bar and model_signal"
        ),
        &driven,
        SECONDS,
    );
    let host = tenant.model_hosts.read().get(DEPLOYMENT).cloned();
    let state = match host {
        Some(host) => Some(host.send(GetModelState).await?),
        None => None,
    };
    let p99 = driven.samples.at(0.99);
    let mut line = format!(
        "models: tick → order p99 {} µs; target p99 < 1 ms: {}",
        p99.as_micros(),
        verdict(driven.samples.len() > 0 && p99 < Duration::from_millis(1))
    );
    match state
        .as_ref()
        .and_then(|s| s.versions.first().map(|v| (s, v)))
    {
        Some((s, v)) => {
            let mut own: Vec<u64> = s.recent.iter().map(|p| p.latency_us).collect();
            own.sort_unstable();
            let at = |q: f64| {
                own.get(((own.len().saturating_sub(1)) as f64 * q).round() as usize)
                    .copied()
                    .unwrap_or(0)
            };
            line.push_str(&format!(
                "; the model served {} predictions ({} failed, {} not finite, {} over budget), features + inference p50 {} µs, p99 {} µs, max {} µs (last {})",
                v.served,
                v.failed,
                v.not_finite,
                v.over_budget,
                at(0.5),
                at(0.99),
                own.last().copied().unwrap_or(0),
                own.len()
            ));
        }
        None => line.push_str("; the model host is not running"),
    }
    println!("{line}");
    app.stop().await;
    Ok(())
}

// ---- 1 000 model actors ---------------------------------------------------------------------------------

const TENANTS: usize = 200;
const DEPLOYMENTS_PER_TENANT: usize = 5;

fn running_hosts(tenants: &[Arc<TenantContext>]) -> usize {
    tenants.iter().map(|t| t.model_hosts.read().len()).sum()
}

async fn many_model_hosts(dir: &Path) -> anyhow::Result<()> {
    let manifest =
        json!({"features": ["return_1", "bar_range"], "output": {"kind": "expected_return"}});
    let version = write_version(dir, "small", &linear_model(&[2.0, -0.5], 0.0001), &manifest)?;
    let expected = TENANTS * DEPLOYMENTS_PER_TENANT;

    let before = rss_mb();
    let app = start(&[]).await?;
    let booted = rss_mb();
    let started = Instant::now();
    let mut tenants = Vec::with_capacity(TENANTS);
    for i in 0..TENANTS {
        let mut settings = bench_tenant(
            &format!("m{i}"),
            &format!("trk_mdls{i:04}_bench-secret-key"),
            Vec::new(),
        );
        settings.models = (0..DEPLOYMENTS_PER_TENANT)
            .map(|j| {
                let symbol = if j % 2 == 0 { "EURUSD" } else { "GBPUSD" };
                deployment(&format!("d{j}"), symbol, version.clone())
            })
            .collect();
        tenants.push(app.runtime.start_tenant(settings).await?);
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while running_hosts(&tenants) < expected && Instant::now() < deadline {
        actix_web::rt::time::sleep(Duration::from_millis(1)).await;
    }
    let elapsed = started.elapsed();
    let hosts = running_hosts(&tenants);
    let rss = rss_mb();
    println!(
        "models: {TENANTS} tenants × {DEPLOYMENTS_PER_TENANT} deployments: {hosts} of {expected} model hosts running {:.0} ms after the first tenant started; resident memory {rss:.1} MB (app started at {booted:.1} MB, {before:.1} MB before); target < 256 MB: {}",
        elapsed.as_secs_f64() * 1e3,
        verdict(hosts == expected && rss < 256.0)
    );
    app.stop().await;
    if hosts != expected {
        bail!("only {hosts} of {expected} model hosts ran");
    }
    Ok(())
}
