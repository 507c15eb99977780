//! The `trellis` command: parses the command line and hands over to the library.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use trellis::config::Settings;
use trellis::startup::Application;

#[derive(Parser)]
#[command(
    name = "trellis",
    version,
    about = "Multi-tenant, actor-based trading runtime for MetaTrader 5"
)]
struct Cli {
    /// An extra TOML file layered over the profile chosen by TRELLIS_ENV (embedded, test, production).
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Start the runtime: supervision tree, storage, HTTP (/health, /ready, /metrics) until Ctrl-C or SIGTERM.
    Serve,
    /// Run the demo: trellis on its embedded store, a demo tenant with ema_cross strategies, and a simulated
    /// MT5 terminal connected over WebSocket, trading until Ctrl-C.
    Demo,
    /// Run a simulated MT5 terminal and broker that connects to a trellis over the bridge protocol.
    Mt5Sim(Box<SimArgs>),
    /// Test a strategy on history with the live decision code: a CSV of ticks `time_msc,bid,ask[,symbol]`.
    Backtest(Box<BacktestArgs>),
    /// Run a benchmark and print its figures: backtest, latency, ingest, tree, supervision, auth, recovery, models, or all.
    Bench {
        #[arg(default_value = "all")]
        name: String,
    },
    /// Apply the migrations of every configured store (embedded SQLite, ClickHouse) and exit.
    Migrate,
    /// Validate the configuration and print the effective settings.
    CheckConfig,
    /// Manage the data keys that encrypt stored secrets (MT5 passwords).
    Keys {
        #[command(subcommand)]
        action: KeysAction,
    },
}

#[derive(Subcommand)]
enum KeysAction {
    /// Make a new data key primary and re-encrypt every stored secret under it.
    Rotate,
}

#[derive(clap::Args)]
struct BacktestArgs {
    /// Ticks as CSV with a header line: `time_msc,bid,ask[,symbol]`.
    #[arg(
        long,
        value_name = "FILE",
        required_unless_present = "data_dir",
        conflicts_with = "data_dir"
    )]
    csv: Option<PathBuf>,
    /// Ticks stored by trellis in this embedded data directory (with --tenant, --from, --to).
    #[arg(long, value_name = "DIR", requires = "tenant")]
    data_dir: Option<PathBuf>,
    /// Ticks stored by trellis in ClickHouse at this HTTP URL (with --tenant, --from, --to).
    #[arg(long, value_name = "URL", requires = "tenant", conflicts_with_all = ["csv", "data_dir"])]
    clickhouse_url: Option<String>,
    /// ClickHouse database trellis writes to.
    #[arg(long, default_value = "trellis")]
    clickhouse_database: String,
    /// Tenant whose stored ticks to read.
    #[arg(long)]
    tenant: Option<String>,
    /// First tick time (ms since the epoch) of stored ticks to read.
    #[arg(long, default_value_t = i64::MIN)]
    from: i64,
    /// Last tick time (ms since the epoch) of stored ticks to read.
    #[arg(long, default_value_t = i64::MAX)]
    to: i64,
    /// The symbol to trade (lines of other symbols are ignored; lines without a symbol column are this one).
    #[arg(long)]
    symbol: String,
    #[arg(long, default_value = "ema_cross")]
    strategy: String,
    /// A strategy parameter, `name=value`; repeat for several.
    #[arg(long = "param", value_name = "NAME=VALUE")]
    params: Vec<String>,
    /// An ONNX model whose predictions feed the strategy (`model_signal`, or any strategy with
    /// `on_prediction`); needs `--manifest`.
    #[arg(long, value_name = "FILE.onnx", requires = "manifest")]
    model: Option<PathBuf>,
    /// The model's manifest (JSON: features, output, horizon_bars).
    #[arg(long, value_name = "FILE.json", requires = "model")]
    manifest: Option<PathBuf>,
    #[arg(long, default_value = "M1")]
    timeframe: String,
    /// Lots per position.
    #[arg(long, default_value = "0.1")]
    volume: rust_decimal::Decimal,
    /// Market orders fill this many points worse than the next tick's quote.
    #[arg(long, default_value_t = 0)]
    slippage_points: u32,
    /// Size of a point (10^-digits).
    #[arg(long, default_value = "0.00001")]
    point: rust_decimal::Decimal,
    /// Commission per lot and side, in account currency.
    #[arg(long, default_value = "0")]
    commission_per_lot: rust_decimal::Decimal,
    /// Units per lot.
    #[arg(long, default_value = "100000")]
    contract_size: rust_decimal::Decimal,
    /// Skip (and count) bad lines instead of stopping at the first.
    #[arg(long)]
    skip_bad: bool,
    /// Print one JSON object instead of the summary.
    #[arg(long)]
    json: bool,
    /// Write every fill as CSV.
    #[arg(long, value_name = "FILE")]
    trades: Option<PathBuf>,
}

#[derive(clap::Args)]
struct SimArgs {
    /// trellis's bridge endpoint.
    #[arg(long, default_value = "ws://127.0.0.1:8080/ws/mt5")]
    url: String,
    /// The tenant's API key (as configured in [[tenants]].api_keys).
    #[arg(long, env = "TRELLIS_SIM_API_KEY")]
    api_key: String,
    /// MT5 account login to present.
    #[arg(long, default_value_t = 5001)]
    login: u64,
    /// Symbols to stream, comma separated (random walk).
    #[arg(long, value_delimiter = ',', default_value = "EURUSD,GBPUSD,USDJPY")]
    symbols: Vec<String>,
    /// Ticks per second (0 = as fast as possible).
    #[arg(long, default_value_t = 20)]
    rate: u64,
    /// Market time added per tick, in ms (1000 with rate 60 runs market time 60× faster than the clock).
    #[arg(long, default_value_t = 250)]
    time_step_ms: i64,
    /// Largest random move per tick, in points.
    #[arg(long, default_value_t = 8)]
    step_points: i64,
    /// Spread in points.
    #[arg(long, default_value_t = 2)]
    spread_points: i64,
    /// Replay ticks from a CSV `time_msc,bid,ask[,symbol]` instead of the random walk.
    #[arg(long, value_name = "FILE")]
    csv: Option<PathBuf>,
    /// Symbol of CSV lines without a symbol column.
    #[arg(long)]
    csv_symbol: Option<String>,
    /// Hedging account (default netting).
    #[arg(long)]
    hedging: bool,
    /// Market orders fill up to this many points worse than the quote.
    #[arg(long, default_value_t = 0)]
    slippage_points: u32,
    /// Fill only this fraction of market orders (MT5 DONE_PARTIAL), e.g. 0.5.
    #[arg(long)]
    partial_fill: Option<rust_decimal::Decimal>,
    /// Starting balance.
    #[arg(long, default_value = "100000")]
    balance: rust_decimal::Decimal,
    #[arg(long, default_value_t = 7)]
    seed: u64,
    /// Append every deal the simulated broker executes to this CSV as it happens
    /// (`ticket,order,client_order_id,symbol,side,volume,price,time_msc`), flushed per line.
    #[arg(long, value_name = "FILE")]
    deals_csv: Option<PathBuf>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let cli = match cli.command {
        Command::Mt5Sim(args) => return run_sim(*args),
        Command::Backtest(args) => return run_backtest(*args),
        command => Cli { command, ..cli },
    };
    let settings = match Settings::from_env(cli.config.as_deref()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("trellis: {e}");
            return ExitCode::from(2);
        }
    };
    match cli.command {
        Command::CheckConfig => {
            println!("{settings:#?}");
            ExitCode::SUCCESS
        }
        Command::Serve => {
            trellis::telemetry::init(&settings.log);
            trellis::telemetry::install_panic_hook();
            exit(actix_rt::System::new().block_on(async move {
                let app = Application::build(settings).await?;
                app.run_until_stopped().await
            }))
        }
        Command::Demo => {
            trellis::telemetry::init(&settings.log);
            trellis::telemetry::install_panic_hook();
            exit(actix_rt::System::new().block_on(trellis::demo::run(settings)))
        }
        Command::Migrate => {
            trellis::telemetry::init(&settings.log);
            exit(actix_rt::System::new().block_on(trellis::storage::migrate_all(&settings)))
        }
        Command::Keys {
            action: KeysAction::Rotate,
        } => {
            trellis::telemetry::init(&settings.log);
            exit(actix_rt::System::new().block_on(async {
                let r = trellis::security::service::rotate_data_keys(&settings).await?;
                println!(
                    "data key {} is primary; {} secrets re-encrypted, {} already current",
                    r.new_version, r.reencrypted, r.already_current
                );
                Ok(())
            }))
        }
        Command::Bench { name } => {
            if cfg!(debug_assertions) {
                eprintln!("trellis bench: this is a debug build; figures are only meaningful with --release");
            }
            exit(actix_rt::System::new().block_on(trellis::bench::run(&name)))
        }
        Command::Mt5Sim(_) | Command::Backtest(_) => ExitCode::SUCCESS,
    }
}

fn exit(result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("trellis: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run_sim(a: SimArgs) -> ExitCode {
    use trellis::domain::positions::AccountMode;
    use trellis::sim::feed::{pace, read_ticks_csv, RandomWalk};
    use trellis::sim::{spawn, SimConfig};

    trellis::telemetry::init(&trellis::config::LogSettings {
        format: trellis::config::LogFormat::Pretty,
        level: "info".into(),
    });
    let mut cfg = SimConfig::new(a.url.clone(), a.api_key.clone(), a.login);
    cfg.broker.mode = if a.hedging {
        AccountMode::Hedging
    } else {
        AccountMode::Netting
    };
    cfg.broker.max_slippage_points = a.slippage_points;
    cfg.broker.partial_fill = a.partial_fill;
    cfg.broker.balance = a.balance;
    cfg.broker.seed = a.seed;
    if let Some(path) = &a.deals_csv {
        if let Err(e) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
        {
            eprintln!("trellis mt5-sim: --deals-csv {}: {e}", path.display());
            return ExitCode::from(2);
        }
    }
    cfg.broker.deals_csv = a.deals_csv.clone();
    let ticks: Box<dyn Iterator<Item = trellis::domain::Tick>> = match &a.csv {
        Some(path) => match read_ticks_csv(path, a.csv_symbol.as_deref(), false) {
            Ok(read) => Box::new(read.ticks.into_iter()),
            Err(e) => {
                eprintln!("trellis mt5-sim: {}: {e}", path.display());
                return ExitCode::from(2);
            }
        },
        None => Box::new(
            RandomWalk::new(
                RandomWalk::default_symbols(&a.symbols),
                trellis::domain::now_ms(),
                a.time_step_ms,
                a.seed,
            )
            .with_steps(a.step_points, a.spread_points),
        ),
    };
    let result = actix_rt::System::new().block_on(async move {
        let mut sim = spawn(cfg);
        let feeder = sim.feeder();
        let ended = tokio::select! {
            sent = pace(&feeder, ticks, a.rate) => {
                tracing::info!(sent, "feed finished");
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                None
            }
            _ = tokio::signal::ctrl_c() => None,
            ended = &mut sim.task => Some(ended.unwrap_or(Ok(()))),
        };
        let stats = sim.stats();
        let outcome = match ended {
            Some(outcome) => outcome,
            None => sim.stop().await,
        };
        tracing::info!(
            ticks = stats.ticks_sent,
            orders = stats.orders_received,
            deals = stats.deals_sent,
            connects = stats.connects,
            "simulator stopped"
        );
        outcome
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("trellis mt5-sim: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run_backtest(a: BacktestArgs) -> ExitCode {
    use trellis::backtest::{render, write_trades, Backtest, BacktestConfig};
    use trellis::domain::Timeframe;
    use trellis::sim::feed::read_ticks_csv;
    use trellis::strategies::StrategyRegistry;

    let fail = |msg: String| {
        eprintln!("trellis backtest: {msg}");
        ExitCode::from(2)
    };
    let Some(timeframe) = Timeframe::parse(&a.timeframe) else {
        return fail(format!(
            "--timeframe `{}` is not M1, M5, M15, H1, H4 or D1",
            a.timeframe
        ));
    };
    let mut params = trellis::strategies::Params::new();
    for p in &a.params {
        let Some((name, value)) = p.split_once('=') else {
            return fail(format!("--param `{p}` is not name=value"));
        };
        let Ok(value) = value.trim().parse::<f64>() else {
            return fail(format!("--param {name}: `{value}` is not a number"));
        };
        params.insert(name.trim().to_owned(), value);
    }
    let read = match (&a.csv, &a.data_dir, &a.tenant) {
        (Some(csv), _, _) => match read_ticks_csv(csv, Some(&a.symbol), a.skip_bad) {
            Ok(r) => r,
            Err(e) => return fail(format!("{}: {e}", csv.display())),
        },
        (None, Some(dir), Some(tenant)) => {
            let loaded = actix_rt::System::new().block_on(
                trellis::storage::timeseries::load_ticks(dir, tenant, &a.symbol, a.from, a.to),
            );
            match loaded {
                Ok(ticks) => trellis::sim::feed::CsvTicks {
                    ticks,
                    skipped: Vec::new(),
                },
                Err(e) => return fail(format!("{}: {e}", dir.display())),
            }
        }
        (None, None, Some(tenant)) if a.clickhouse_url.is_some() => {
            let cfg = trellis::storage::clickhouse::ClickHouseConfig {
                url: a.clickhouse_url.clone().unwrap_or_default(),
                database: a.clickhouse_database.clone(),
                buffer_rows: 0,
                spill_dir: PathBuf::new(),
            };
            let loaded = actix_rt::System::new().block_on(
                trellis::storage::clickhouse::load_ticks(&cfg, tenant, &a.symbol, a.from, a.to),
            );
            match loaded {
                Ok(ticks) => trellis::sim::feed::CsvTicks {
                    ticks,
                    skipped: Vec::new(),
                },
                Err(e) => return fail(format!("{}: {e}", cfg.url)),
            }
        }
        _ => return fail(
            "give --csv FILE, --data-dir DIR with --tenant, or --clickhouse-url URL with --tenant"
                .into(),
        ),
    };
    let mut cfg = BacktestConfig::new(&a.symbol, &a.strategy, params, timeframe);
    cfg.volume = a.volume;
    cfg.slippage_points = a.slippage_points;
    cfg.point = a.point;
    cfg.commission_per_lot = a.commission_per_lot;
    cfg.contract_size = a.contract_size;
    let registry = StrategyRegistry::default();
    let mut bt = match (&a.model, &a.manifest) {
        (Some(model), Some(manifest)) => {
            let driven = load_model(model, manifest).and_then(|version| {
                let inner = registry
                    .build(&cfg.strategy, &cfg.params, cfg.volume)
                    .map_err(|e| e.to_string())?;
                trellis::models::driven::ModelDriven::new(inner, &version)
            });
            match driven {
                Ok(s) => Backtest::with_strategy(cfg, Box::new(s)),
                Err(e) => return fail(e),
            }
        }
        _ => match Backtest::new(cfg, &registry) {
            Ok(bt) => bt,
            Err(e) => return fail(e.to_string()),
        },
    };
    for t in &read.ticks {
        bt.on_tick(t);
    }
    let (report, deals) = bt.finish();
    if let Some(path) = &a.trades {
        let written = std::fs::File::create(path)
            .map(std::io::BufWriter::new)
            .and_then(|mut f| {
                write_trades(&mut f, &deals).and_then(|_| std::io::Write::flush(&mut f))
            });
        if let Err(e) = written {
            return fail(format!("writing {}: {e}", path.display()));
        }
    }
    if a.json {
        let mut v = serde_json::to_value(&report).unwrap_or_default();
        if let Some(map) = v.as_object_mut() {
            map.insert("lines_skipped".into(), read.skipped.len().into());
        }
        println!("{v}");
    } else {
        print!("{}", render(&report));
        if !read.skipped.is_empty() {
            println!(
                "  lines skipped     {} (first: {})",
                read.skipped.len(),
                read.skipped[0]
            );
        }
    }
    ExitCode::SUCCESS
}

/// A model version from its ONNX file and manifest, validated as a deployment's would be.
fn load_model(
    model: &std::path::Path,
    manifest: &std::path::Path,
) -> Result<trellis::models::deployment::LoadedVersion, String> {
    let bytes = std::fs::read(model).map_err(|e| format!("{}: {e}", model.display()))?;
    let text =
        std::fs::read_to_string(manifest).map_err(|e| format!("{}: {e}", manifest.display()))?;
    let parsed: trellis::models::manifest::Manifest =
        serde_json::from_str(&text).map_err(|e| format!("{}: {e}", manifest.display()))?;
    trellis::models::deployment::LoadedVersion::from_bytes(&bytes, parsed, 1.0)
        .map_err(|e| format!("{}: {e}", model.display()))
}
