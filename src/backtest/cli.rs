//! The backtesting commands — `trellis backtest`, `trellis optimise`, `trellis export-ticks` — as library
//! code, so `main.rs` stays a dispatcher and the tests drive exactly what users run.
//!
//! A backtest streams its ticks (constant memory whatever the history's length); an optimisation decodes
//! the symbol's ticks once into a [`History`] and shares it between its runs and threads.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rust_decimal::prelude::ToPrimitive;
use rust_decimal::Decimal;
use serde_json::json;

use super::history::{Format, HistoryError, HistoryOptions, SourceZone};
use super::input::{Store, Stored, Ticks};
use super::optimise::{
    Candidate, Constraints, Control, Dimension, Method, Objective, Outcome, Space, StrategyRuns,
    WalkForwardSpec,
};
use super::portfolio;
use super::tape::History;
use super::{render, report, write_trades, Backtest, BacktestConfig};
use crate::domain::positions::Deal;
use crate::domain::{Symbol, Timeframe};
use crate::runtime::supervisor::contain;
use crate::storage::clickhouse::ClickHouseConfig;
use crate::strategies::wasm::{WasmLimits, WasmManifest, WasmModule};
use crate::strategies::{Params, StrategyRegistry};

/// A command that could not run: the message for the user (exit status 2).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct CliError(pub String);

fn err(msg: impl Into<String>) -> CliError {
    CliError(msg.into())
}

/// Where the ticks come from.
#[derive(clap::Args, Debug, Clone)]
pub struct SourceArgs {
    /// A history file: trellis CSV (`time_msc,bid,ask[,symbol]`), MT5 tick or bar export, HistData or
    /// Dukascopy CSV (detected from the first line), or Parquet; `-` reads standard input.
    #[arg(long, visible_alias = "csv", value_name = "FILE", conflicts_with_all = ["data_dir", "clickhouse_url"])]
    pub input: Option<PathBuf>,
    /// Force the text format: csv, mt5-ticks, mt5-bars, histdata.
    #[arg(long)]
    pub format: Option<String>,
    /// The zone of the file's date-times: an offset like +02:00 (`-05:00` for HistData's EST) or an IANA
    /// zone like Europe/Athens (daylight saving followed, e.g. an MT5 server's EET/EEST); applies to
    /// date-time columns, not to epoch milliseconds.
    #[arg(long, default_value = "+00:00", allow_hyphen_values = true)]
    pub tz: String,
    /// Ticks stored by trellis in this embedded data directory (with --tenant, --from, --to).
    #[arg(
        long,
        value_name = "DIR",
        requires = "tenant",
        conflicts_with = "clickhouse_url"
    )]
    pub data_dir: Option<PathBuf>,
    /// Ticks stored by trellis in ClickHouse at this HTTP URL (with --tenant, --from, --to).
    #[arg(long, value_name = "URL", requires = "tenant")]
    pub clickhouse_url: Option<String>,
    /// ClickHouse database trellis writes to.
    #[arg(long, default_value = "trellis")]
    pub clickhouse_database: String,
    /// Tenant whose stored ticks to read.
    #[arg(long)]
    pub tenant: Option<String>,
    /// First tick time (ms since the epoch) of stored ticks to read.
    #[arg(long, default_value_t = i64::MIN, allow_hyphen_values = true)]
    pub from: i64,
    /// Last tick time (ms since the epoch) of stored ticks to read.
    #[arg(long, default_value_t = i64::MAX)]
    pub to: i64,
    /// Size of a point (10^-digits): rounds Parquet doubles, prices MT5 bar spreads, sizes slippage.
    #[arg(long, default_value = "0.00001")]
    pub point: Decimal,
    /// Skip (and count) bad lines instead of stopping at the first.
    #[arg(long)]
    pub skip_bad: bool,
}

impl SourceArgs {
    /// What the ticks are read from, to prefix errors with.
    pub fn describe(&self) -> String {
        match (&self.input, &self.data_dir, &self.clickhouse_url) {
            (Some(p), _, _) if p.as_os_str() == "-" => "standard input".into(),
            (Some(p), _, _) => p.display().to_string(),
            (None, Some(d), _) => format!("stored ticks in {}", d.display()),
            (None, None, Some(u)) => format!("stored ticks at {u}"),
            _ => "input".into(),
        }
    }

    /// A bad tick of this source, named with it.
    pub fn error(&self, e: HistoryError) -> CliError {
        err(format!("{}: {e}", self.describe()))
    }

    /// Opens the ticks; `symbol` is the symbol of lines without a symbol column.
    pub fn open(&self, symbol: Option<&str>) -> Result<Ticks, CliError> {
        let options = HistoryOptions {
            format: self
                .format
                .as_deref()
                .map(Format::parse)
                .transpose()
                .map_err(|e| err(format!("--format: {e}")))?,
            symbol: symbol.map(str::to_owned),
            tz: parse_tz(&self.tz).map_err(|e| err(format!("--tz: {e}")))?,
            skip_bad: self.skip_bad,
            point: self.point,
        };
        if let Some(path) = &self.input {
            return Ticks::file(path, options).map_err(|e| err(format!("{}: {e}", path.display())));
        }
        let tenant = self.tenant.clone().ok_or_else(|| {
            err("give --input FILE, --data-dir DIR with --tenant, or --clickhouse-url URL with --tenant")
        })?;
        let store = match (&self.data_dir, &self.clickhouse_url) {
            (Some(dir), _) => Store::Embedded(dir.clone()),
            (None, Some(url)) => Store::ClickHouse(ClickHouseConfig {
                url: url.clone(),
                database: self.clickhouse_database.clone(),
                buffer_rows: 0,
                spill_dir: PathBuf::new(),
            }),
            (None, None) => return Err(err("--tenant needs --data-dir or --clickhouse-url")),
        };
        let symbol = symbol
            .ok_or_else(|| err("stored ticks are read per symbol: give --symbol"))?
            .to_owned();
        Ok(Ticks::stored(Stored {
            store,
            tenant,
            symbol,
            from_ms: self.from,
            to_ms: self.to,
        }))
    }
}

/// `+02:00`, `-05:00`, `-0500`, `-5`, `Z`, `UTC`, or an IANA zone like `Europe/Athens`: the zone of a
/// history file's date-times (see [`SourceZone::parse`]).
pub fn parse_tz(s: &str) -> Result<SourceZone, String> {
    SourceZone::parse(s)
}

/// `30d`, `12h`, `90m`, `2w`, or milliseconds.
pub fn parse_duration_ms(s: &str) -> Result<i64, String> {
    let t = s.trim();
    let (num, unit) = t.split_at(t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len()));
    let n: i64 = num
        .parse()
        .map_err(|_| format!("`{s}` is not a length like 30d, 12h, 90m or 2w"))?;
    let unit_ms = match unit {
        "" | "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        "w" => 7 * 86_400_000,
        _ => return Err(format!("`{s}`: the unit is one of ms, s, m, h, d, w")),
    };
    n.checked_mul(unit_ms)
        .filter(|v| *v > 0)
        .ok_or_else(|| format!("`{s}` is not a positive length"))
}

/// How orders execute and what the account holds.
#[derive(clap::Args, Debug, Clone)]
pub struct ExecutionArgs {
    /// Lots per position.
    #[arg(long, default_value = "0.1")]
    pub volume: Decimal,
    /// Market orders fill this many points worse than the next tick's quote.
    #[arg(long, default_value_t = 0)]
    pub slippage_points: u32,
    /// Commission per lot and side, in account currency.
    #[arg(long, default_value = "0")]
    pub commission_per_lot: Decimal,
    /// Units per lot.
    #[arg(long, default_value = "100000")]
    pub contract_size: Decimal,
    /// Starting balance.
    #[arg(long, default_value = "100000")]
    pub balance: Decimal,
}

impl ExecutionArgs {
    pub(super) fn apply(&self, cfg: &mut BacktestConfig, point: Decimal) {
        cfg.volume = self.volume;
        cfg.slippage_points = self.slippage_points;
        cfg.point = point;
        cfg.commission_per_lot = self.commission_per_lot;
        cfg.contract_size = self.contract_size;
        cfg.balance = self.balance;
    }
}

#[derive(clap::Args, Debug)]
pub struct BacktestArgs {
    #[command(flatten)]
    pub source: SourceArgs,
    /// The symbol to trade (ticks of other symbols are ignored; lines without a symbol column are this one).
    /// Not needed with --spec.
    #[arg(long, required_unless_present = "spec")]
    pub symbol: Option<String>,
    /// A strategy kind, or `wasm` for the WebAssembly module given with --module.
    #[arg(long, default_value = "ema_cross")]
    pub strategy: String,
    /// A WebAssembly strategy module (with `--strategy wasm`; docs/strategy-modules.md), run under the
    /// default limits: 1 MiB, 64 MiB of memory, 10 million units of fuel per call.
    #[arg(long, value_name = "FILE.wasm")]
    pub module: Option<PathBuf>,
    /// The module's manifest (JSON: `{"params": [{"name", "default", "min", "max"}]}`); without it the
    /// module takes no parameters.
    #[arg(long, value_name = "FILE.json", requires = "module")]
    pub module_manifest: Option<PathBuf>,
    /// A strategy parameter, `name=value`; repeat for several.
    #[arg(long = "param", value_name = "NAME=VALUE")]
    pub params: Vec<String>,
    /// A portfolio: a TOML file of strategies on several symbols and timeframes, run through one ledger
    /// and one risk gate (see README "Backtesting").
    #[arg(long, value_name = "FILE.toml", conflicts_with_all = ["model", "strategy"])]
    pub spec: Option<PathBuf>,
    /// An ONNX model whose predictions feed the strategy (`model_signal`, or any strategy with
    /// `on_prediction`); needs `--manifest`.
    #[arg(long, value_name = "FILE.onnx", requires = "manifest")]
    pub model: Option<PathBuf>,
    /// The model's manifest (JSON: features, output, horizon_bars).
    #[arg(long, value_name = "FILE.json", requires = "model")]
    pub manifest: Option<PathBuf>,
    #[arg(long, default_value = "M1")]
    pub timeframe: String,
    #[command(flatten)]
    pub execution: ExecutionArgs,
    /// Print one JSON object instead of the summary.
    #[arg(long)]
    pub json: bool,
    /// Write every fill as CSV.
    #[arg(long, value_name = "FILE")]
    pub trades: Option<PathBuf>,
    /// Write a self-contained HTML report (equity, drawdown, monthly returns, trades).
    #[arg(long, value_name = "FILE.html")]
    pub report: Option<PathBuf>,
}

fn timeframe(s: &str) -> Result<Timeframe, CliError> {
    Timeframe::parse(s).ok_or_else(|| {
        err(format!(
            "--timeframe `{s}` is not M1, M5, M15, H1, H4 or D1"
        ))
    })
}

fn fixed_params(specs: &[String]) -> Result<Params, CliError> {
    let mut params = Params::new();
    for p in specs {
        let Some((name, value)) = p.split_once('=') else {
            return Err(err(format!("--param `{p}` is not name=value")));
        };
        let Ok(value) = value.trim().parse::<f64>() else {
            return Err(err(format!("--param {name}: `{value}` is not a number")));
        };
        params.insert(name.trim().to_owned(), value);
    }
    Ok(params)
}

pub(super) fn write_file(
    path: &std::path::Path,
    write: impl FnOnce(&mut dyn std::io::Write) -> std::io::Result<()>,
) -> Result<(), CliError> {
    let written = std::fs::File::create(path)
        .map(std::io::BufWriter::new)
        .and_then(|mut f| {
            write(&mut f)?;
            f.flush()
        });
    written.map_err(|e| err(format!("writing {}: {e}", path.display())))
}

/// A run as the HTML report shows it.
pub fn report_run(
    heading: &str,
    balance: Decimal,
    r: &super::Report,
    deals: &[Deal],
) -> report::Run {
    let f = |d: Decimal| d.round_dp(2).to_string();
    let opt = |v: Option<f64>| v.map(|x| format!("{x:.3}")).unwrap_or_else(|| "n/a".into());
    report::Run {
        heading: heading.to_owned(),
        summary: vec![
            ("Strategy".into(), r.strategy.clone()),
            ("Symbol".into(), format!("{} {}", r.symbol, r.timeframe)),
            ("Ticks".into(), r.ticks.to_string()),
            ("Bars".into(), r.bars.to_string()),
            (
                "Orders".into(),
                format!("{} ({} rejected by risk)", r.orders, r.orders_rejected),
            ),
            ("Fills".into(), r.fills.to_string()),
            ("Net profit".into(), f(r.total_pnl)),
            ("Commission".into(), f(r.commission)),
            ("Closed trades".into(), r.trades.to_string()),
            ("Win rate".into(), format!("{:.1}%", r.win_rate * 100.0)),
            ("Profit factor".into(), opt(r.profit_factor)),
            ("Max drawdown".into(), f(r.max_drawdown)),
            ("Sharpe (daily)".into(), opt(r.sharpe)),
        ],
        starting_balance: balance.to_f64().unwrap_or(0.0),
        equity: r.equity.clone(),
        trades: deals
            .iter()
            .map(|d| report::TradeRow {
                time_msc: d.fill.time_msc,
                strategy: d.strategy_id.clone().unwrap_or_default(),
                symbol: d.fill.symbol.as_str().to_owned(),
                side: d.fill.side.as_str().to_owned(),
                volume: d.fill.volume.normalize().to_string(),
                price: d.fill.price.to_string(),
                entry: format!("{:?}", d.fill.entry).to_lowercase(),
                commission: d.fill.commission.normalize().to_string(),
                profit: d.profit.normalize().to_string(),
            })
            .collect(),
    }
}

pub fn backtest(a: BacktestArgs) -> Result<(), CliError> {
    if let Some(spec) = &a.spec {
        return portfolio::run_cli(spec, &a);
    }
    let symbol = a.symbol.clone().unwrap_or_default();
    let tf = timeframe(&a.timeframe)?;
    let params = fixed_params(&a.params)?;
    let registry = StrategyRegistry::default();
    let kind = strategy_kind(
        &registry,
        &a.strategy,
        a.module.as_deref(),
        a.module_manifest.as_deref(),
    )?;
    let mut cfg = BacktestConfig::new(&symbol, &kind, params, tf);
    a.execution.apply(&mut cfg, a.source.point);
    cfg.record_equity = a.report.is_some();
    let balance = cfg.balance;
    let strategy = build_strategy(
        &registry,
        &cfg.strategy,
        &cfg.params,
        cfg.volume,
        a.model.as_deref().zip(a.manifest.as_deref()),
    )
    .map_err(err)?;
    let mut bt = Backtest::with_strategy(cfg, strategy);
    let mut ticks = a.source.open(Some(&symbol))?;
    // A module's trap or exhausted fuel panics (so that live, only its actor fails): here it ends the run
    // with the module's message instead of a crash.
    let ran = contain(|| -> Result<(), CliError> {
        for t in ticks.by_ref() {
            bt.on_tick(&t.map_err(|e| a.source.error(e))?);
        }
        Ok(())
    });
    ran.map_err(|why| err(format!("the strategy failed: {why}")))??;
    let (report, deals) = bt.finish();
    if let Some(path) = &a.trades {
        write_file(path, |f| write_trades(f, &deals))?;
    }
    if let Some(path) = &a.report {
        let doc = report::Document {
            title: format!(
                "Backtest: {} {} {}",
                report.strategy, report.symbol, report.timeframe
            ),
            runs: vec![report_run(&report.strategy, balance, &report, &deals)],
            optimisation: None,
        };
        write_file(path, |f| f.write_all(report::html(&doc).as_bytes()))?;
    }
    let (skipped, first) = ticks.skipped();
    if a.json {
        let mut v = serde_json::to_value(&report).unwrap_or_default();
        if let Some(map) = v.as_object_mut() {
            map.insert("lines_skipped".into(), skipped.into());
        }
        println!("{v}");
    } else {
        print!("{}", render(&report));
        if let Some(first) = first {
            println!("  lines skipped     {skipped} (first: {first})");
        }
    }
    Ok(())
}

/// The strategy kind to run: `--strategy` itself, or for `--strategy wasm` the module of `--module`
/// (with its manifest), loaded and registered as `wasm:<file stem>`.
fn strategy_kind(
    registry: &StrategyRegistry,
    strategy: &str,
    module: Option<&Path>,
    module_manifest: Option<&Path>,
) -> Result<String, CliError> {
    let Some(path) = module.filter(|_| strategy == "wasm") else {
        return match (strategy, module) {
            ("wasm", None) => Err(err("--strategy wasm needs --module FILE.wasm")),
            (_, Some(_)) => Err(err("--module runs with --strategy wasm")),
            (kind, None) => Ok(kind.to_owned()),
        };
    };
    let bytes = std::fs::read(path).map_err(|e| err(format!("{}: {e}", path.display())))?;
    let manifest = match module_manifest {
        Some(m) => {
            let text =
                std::fs::read_to_string(m).map_err(|e| err(format!("{}: {e}", m.display())))?;
            serde_json::from_str(&text).map_err(|e| err(format!("{}: {e}", m.display())))?
        }
        None => WasmManifest::default(),
    };
    let module = WasmModule::load(&bytes, manifest, WasmLimits::default())
        .map_err(|e| err(format!("{}: {e}", path.display())))?;
    let name = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "module".into());
    Ok(registry.register_wasm(&name, module))
}

/// A strategy of the registry, fed by a model's predictions when `model` gives its ONNX file and manifest.
pub(super) fn build_strategy(
    registry: &StrategyRegistry,
    kind: &str,
    params: &Params,
    volume: Decimal,
    model: Option<(&std::path::Path, &std::path::Path)>,
) -> Result<Box<dyn crate::strategies::Strategy>, String> {
    let inner = registry
        .build(kind, params, volume)
        .map_err(|e| e.to_string())?;
    let Some((model, manifest)) = model else {
        return Ok(inner);
    };
    let version = load_model(model, manifest)?;
    Ok(Box::new(crate::models::driven::ModelDriven::new(
        inner, &version,
    )?))
}

/// A model version from its ONNX file and manifest, validated as a deployment's would be.
fn load_model(
    model: &std::path::Path,
    manifest: &std::path::Path,
) -> Result<crate::models::deployment::LoadedVersion, String> {
    let bytes = std::fs::read(model).map_err(|e| format!("{}: {e}", model.display()))?;
    let text =
        std::fs::read_to_string(manifest).map_err(|e| format!("{}: {e}", manifest.display()))?;
    let parsed: crate::models::manifest::Manifest =
        serde_json::from_str(&text).map_err(|e| format!("{}: {e}", manifest.display()))?;
    crate::models::deployment::LoadedVersion::from_bytes(&bytes, parsed, 1.0)
        .map_err(|e| format!("{}: {e}", model.display()))
}

#[derive(clap::Args, Debug)]
pub struct OptimiseArgs {
    #[command(flatten)]
    pub source: SourceArgs,
    #[arg(long)]
    pub symbol: String,
    #[arg(long, default_value = "ema_cross")]
    pub strategy: String,
    /// A WebAssembly strategy module to optimise (with `--strategy wasm`): its manifest's parameters are
    /// searchable like a built-in's. Runs under fuel alone, so every run is deterministic.
    #[arg(long, value_name = "FILE.wasm")]
    pub module: Option<PathBuf>,
    /// The module's manifest (JSON, as for `trellis backtest --module-manifest`).
    #[arg(long, value_name = "FILE.json", requires = "module")]
    pub module_manifest: Option<PathBuf>,
    #[arg(long, default_value = "M1")]
    pub timeframe: String,
    /// A parameter to search: `name=start:stop:step`, `name=a,b,c`, or `name=value` (fixed). Repeat.
    #[arg(long = "param", value_name = "NAME=VALUES", required = true)]
    pub params: Vec<String>,
    /// grid, random or genetic.
    #[arg(long, default_value = "grid")]
    pub method: String,
    /// Combinations a random search draws.
    #[arg(long, default_value_t = 100)]
    pub samples: u64,
    /// Genetic search: population per generation.
    #[arg(long, default_value_t = 50)]
    pub population: usize,
    /// Genetic search: most generations.
    #[arg(long, default_value_t = 100)]
    pub generations: u32,
    /// Genetic search: stop after this many generations without a better best.
    #[arg(long, default_value_t = 10)]
    pub patience: u32,
    /// Genetic search: best candidates kept unchanged per generation.
    #[arg(long, default_value_t = 2)]
    pub elitism: usize,
    #[arg(long, default_value_t = 0.9)]
    pub crossover: f64,
    #[arg(long, default_value_t = 0.1)]
    pub mutation: f64,
    /// net_profit, sharpe, profit_factor or recovery_factor.
    #[arg(long, default_value = "net_profit")]
    pub objective: String,
    /// Candidates with fewer closed trades are not ranked.
    #[arg(long)]
    pub min_trades: Option<u64>,
    /// Candidates with a deeper drawdown (account currency) are not ranked.
    #[arg(long)]
    pub max_drawdown: Option<f64>,
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Walk-forward: in-sample window length (30d, 12h, …); needs --out-of-sample.
    #[arg(long, requires = "out_of_sample")]
    pub in_sample: Option<String>,
    /// Walk-forward: out-of-sample window length.
    #[arg(long, requires = "in_sample")]
    pub out_of_sample: Option<String>,
    /// Walk-forward: in-sample windows grow from the start instead of rolling.
    #[arg(long, requires = "in_sample")]
    pub anchored: bool,
    /// Worker threads (default: every core).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Candidates to print.
    #[arg(long, default_value_t = 10)]
    pub top: usize,
    #[command(flatten)]
    pub execution: ExecutionArgs,
    /// Print one JSON object instead of the table.
    #[arg(long)]
    pub json: bool,
    /// Write a self-contained HTML report (heatmap, best run, walk-forward curve).
    #[arg(long, value_name = "FILE.html")]
    pub report: Option<PathBuf>,
}

/// The method from the command line's settings.
fn method(a: &OptimiseArgs) -> Result<Method, CliError> {
    Ok(match a.method.as_str() {
        "grid" => Method::Grid,
        "random" => Method::Random { samples: a.samples },
        "genetic" => Method::Genetic {
            population: a.population,
            crossover: a.crossover,
            mutation: a.mutation,
            elitism: a.elitism,
            patience: a.patience,
            max_generations: a.generations,
        },
        m => {
            return Err(err(format!(
                "--method `{m}` is not grid, random or genetic"
            )))
        }
    })
}

pub fn optimise(a: OptimiseArgs) -> Result<(), CliError> {
    let tf = timeframe(&a.timeframe)?;
    let space = Space::new(
        a.params
            .iter()
            .map(|p| Dimension::parse(p))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| err(format!("--param {e}")))?,
    )
    .map_err(|e| err(format!("--param: {e}")))?;
    let method = method(&a)?;
    method
        .validate(&space)
        .map_err(|e| err(format!("--method {}: {e}", method.name())))?;
    let objective = Objective::parse(&a.objective).map_err(|e| err(format!("--objective: {e}")))?;
    let constraints = Constraints {
        min_trades: a.min_trades,
        max_drawdown: a.max_drawdown,
    };
    let walk = match (&a.in_sample, &a.out_of_sample) {
        (Some(i), Some(o)) => Some(WalkForwardSpec {
            in_sample_ms: parse_duration_ms(i).map_err(|e| err(format!("--in-sample: {e}")))?,
            out_of_sample_ms: parse_duration_ms(o)
                .map_err(|e| err(format!("--out-of-sample: {e}")))?,
            anchored: a.anchored,
        }),
        _ => None,
    };
    let registry = StrategyRegistry::default();
    let kind = strategy_kind(
        &registry,
        &a.strategy,
        a.module.as_deref(),
        a.module_manifest.as_deref(),
    )?;
    let mut template = BacktestConfig::new(&a.symbol, &kind, Params::new(), tf);
    a.execution.apply(&mut template, a.source.point);

    let started = Instant::now();
    let symbol = Symbol::new(a.symbol.clone());
    let history = History::collect(&symbol, a.source.open(Some(&a.symbol))?)
        .map_err(|e| a.source.error(e))?;
    if history.is_empty() {
        return Err(err(format!("no ticks of {} in the input", a.symbol)));
    }
    let decoded = started.elapsed();
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(a.threads.unwrap_or(0))
        .build()
        .map_err(|e| err(format!("cannot start worker threads: {e}")))?;
    let runs = StrategyRuns {
        template: &template,
        registry: &registry,
        objective,
        constraints: &constraints,
        space: &space,
    };
    let control = Arc::new(Control::default());
    let progress = Progress::start(Arc::clone(&control), !a.json);
    let searched = pool.install(|| match walk {
        Some(spec) => runs
            .walk_forward(&history, spec, &method, a.seed, &control)
            .map(|w| w.map(Searched::WalkForward)),
        None => {
            let tape = history.tape(tf);
            runs.optimise(&tape, &method, a.seed, &control)
                .map(|c| Ok(Searched::Candidates(tape, c)))
        }
    });
    progress.finish();
    let searched = searched
        .map_err(|_| err("cancelled"))?
        .map_err(|e| err(format!("walk-forward: {e}")))?;
    let elapsed = started.elapsed();
    let evaluated = control.done.load(Ordering::Relaxed);
    let view = |c: &Candidate<Outcome>| {
        let mut v = json!({"params": space.params(&c.values), "score": c.score});
        match &c.outcome {
            Ok(r) => v["report"] = serde_json::to_value(r).unwrap_or_default(),
            Err(e) => v["error"] = e.clone().into(),
        }
        v
    };
    let mut out = json!({
        "strategy": a.strategy, "symbol": a.symbol, "timeframe": tf.as_str(),
        "method": method, "objective": objective, "seed": a.seed,
        "ticks": history.len(), "runs": evaluated,
        "decode_ms": decoded.as_secs_f64() * 1e3, "elapsed_ms": elapsed.as_secs_f64() * 1e3,
    });
    let mut best_run = None;
    let doc_optimisation = match &searched {
        Searched::Candidates(tape, candidates) => {
            out["results"] = candidates.iter().take(a.top).map(view).collect();
            if let Some(best) = candidates.first().filter(|c| c.score.is_some()) {
                let mut cfg = template.clone();
                cfg.params = space.params(&best.values);
                cfg.record_equity = true;
                if let Ok(bt) = Backtest::new(cfg, &registry) {
                    best_run = Some(bt.run_tape(tape));
                }
            }
            report_optimisation(&space, &method, objective, candidates, None)
        }
        Searched::WalkForward(w) => {
            out["walk_forward"] = serde_json::to_value(w).unwrap_or_default();
            let windows = w
                .windows
                .iter()
                .map(|r| report::Window {
                    in_from_ms: r.bounds.in_from_ms,
                    in_to_ms: r.bounds.in_to_ms,
                    out_from_ms: r.bounds.out_from_ms,
                    out_to_ms: r.bounds.out_to_ms,
                    params: r.best.clone().unwrap_or_default(),
                    in_score: r.in_score,
                    out_net_profit: r.out_net_profit,
                })
                .collect();
            report_optimisation(
                &space,
                &method,
                objective,
                &[],
                Some(report::WalkForward {
                    mode: if w.spec.anchored {
                        "anchored"
                    } else {
                        "rolling"
                    }
                    .into(),
                    windows,
                    stitched: w.stitched.clone(),
                    efficiency: w.efficiency,
                }),
            )
        }
    };
    if let Some(path) = &a.report {
        let runs = best_run
            .iter()
            .map(|(r, deals)| report_run("Best candidate", template.balance, r, deals))
            .collect();
        let doc = report::Document {
            title: format!("Optimisation: {} {} {}", a.strategy, a.symbol, tf.as_str()),
            runs,
            optimisation: Some(doc_optimisation),
        };
        write_file(path, |f| f.write_all(report::html(&doc).as_bytes()))?;
    }
    if a.json {
        println!("{out}");
        return Ok(());
    }
    println!(
        "optimise {} {} {}: {} runs ({}) on {} ticks in {:.2} s (decoding {:.2} s), objective {}",
        a.strategy,
        a.symbol,
        tf.as_str(),
        evaluated,
        method.name(),
        history.len(),
        elapsed.as_secs_f64(),
        decoded.as_secs_f64(),
        objective.as_str()
    );
    match &searched {
        Searched::Candidates(_, candidates) => {
            for (i, c) in candidates.iter().take(a.top).enumerate() {
                println!("  {:>3}. {}", i + 1, line(&space, c));
            }
        }
        Searched::WalkForward(w) => {
            for r in &w.windows {
                println!(
                    "  in {}..{}  out {}..{}  best {}  in-sample {:.2}  out-of-sample {:.2}",
                    report::date_time(r.bounds.in_from_ms),
                    report::date_time(r.bounds.in_to_ms),
                    report::date_time(r.bounds.out_from_ms),
                    report::date_time(r.bounds.out_to_ms),
                    r.best
                        .as_ref()
                        .map(|v| format!("{:?}", space.params(v)))
                        .unwrap_or_else(|| "none feasible".into()),
                    r.in_net_profit,
                    r.out_net_profit
                );
            }
            println!(
                "  out-of-sample net profit {:.2}, walk-forward efficiency {}",
                w.out_net_profit,
                w.efficiency
                    .map(|e| format!("{e:.2}"))
                    .unwrap_or_else(|| "n/a (no in-sample profit)".into())
            );
        }
    }
    Ok(())
}

enum Searched {
    Candidates(super::tape::Tape, Vec<Candidate<Outcome>>),
    WalkForward(super::optimise::WalkForward),
}

fn line(space: &Space, c: &Candidate<Outcome>) -> String {
    let params: Vec<String> = space
        .params(&c.values)
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    let score = c
        .score
        .map(|s| format!("{s:.4}"))
        .unwrap_or_else(|| "infeasible".into());
    match &c.outcome {
        Ok(r) => format!(
            "{:<28} score {score:>12}  net {:>10}  trades {:>5}  max dd {:>9}",
            params.join(" "),
            r.total_pnl.round_dp(2),
            r.trades,
            r.max_drawdown.round_dp(2)
        ),
        Err(e) => format!("{:<28} refused: {e}", params.join(" ")),
    }
}

fn report_optimisation(
    space: &Space,
    method: &Method,
    objective: Objective,
    candidates: &[Candidate<Outcome>],
    walk_forward: Option<report::WalkForward>,
) -> report::Optimisation {
    report::Optimisation {
        objective: objective.as_str().into(),
        method: method.name().into(),
        param_names: space.names(),
        results: candidates
            .iter()
            .map(|c| {
                let r = c.outcome.as_ref().ok();
                report::Candidate {
                    params: c.values.clone(),
                    score: c.score,
                    net_profit: r.and_then(|r| r.total_pnl.to_f64()).unwrap_or(0.0),
                    trades: r.map(|r| r.trades as u64).unwrap_or(0),
                    max_drawdown: r.and_then(|r| r.max_drawdown.to_f64()).unwrap_or(0.0),
                    feasible: c.score.is_some(),
                }
            })
            .collect(),
        walk_forward,
    }
}

/// A progress bar on standard error while a search runs (hidden when standard error is not a terminal).
struct Progress {
    stop: Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Progress {
    fn start(control: Arc<Control>, show: bool) -> Self {
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let thread = show.then(|| {
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || {
                let bar = indicatif::ProgressBar::new(0);
                bar.set_style(
                    indicatif::ProgressStyle::with_template(
                        "{elapsed_precise} [{bar:40}] {pos}/{len} runs ({per_sec}, eta {eta})",
                    )
                    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
                );
                while !stop.load(Ordering::Relaxed) {
                    bar.set_length(control.total.load(Ordering::Relaxed));
                    bar.set_position(control.done.load(Ordering::Relaxed));
                    std::thread::sleep(Duration::from_millis(100));
                }
                bar.finish_and_clear();
            })
        });
        Self { stop, thread }
    }

    fn finish(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[derive(clap::Args, Debug)]
pub struct ExportArgs {
    #[command(flatten)]
    pub source: SourceArgs,
    /// Symbol of lines without a symbol column (and of stored ticks).
    #[arg(long)]
    pub symbol: Option<String>,
    /// The Parquet file to write.
    #[arg(long, value_name = "FILE.parquet")]
    pub output: PathBuf,
    /// Leave out the symbol column (a one-symbol file, smaller).
    #[arg(long)]
    pub no_symbol: bool,
}

/// `trellis export-ticks`: any input to Parquet (zstd), streamed.
pub fn export_ticks(a: ExportArgs) -> Result<(), CliError> {
    let started = Instant::now();
    let ticks = a.source.open(a.symbol.as_deref())?;
    let file = std::fs::File::create(&a.output)
        .map_err(|e| err(format!("{}: {e}", a.output.display())))?;
    let rows = super::parquet::write_ticks(std::io::BufWriter::new(file), ticks, !a.no_symbol)
        .map_err(|e| {
            let _ = std::fs::remove_file(&a.output);
            a.source.error(e)
        })?;
    let size = std::fs::metadata(&a.output).map(|m| m.len()).unwrap_or(0);
    println!(
        "wrote {rows} ticks to {} ({:.1} MB, {:.1} bytes per tick) in {:.2} s",
        a.output.display(),
        size as f64 / 1e6,
        if rows > 0 {
            size as f64 / rows as f64
        } else {
            0.0
        },
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

#[cfg(test)]
mod guest_examples;
#[cfg(test)]
mod wasm_tests;
