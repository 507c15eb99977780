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
    /// Test a strategy (or a portfolio of them, --spec) on history with the live decision code: ticks
    /// streamed from a file (trellis CSV, MT5 tick/bar export, HistData, Dukascopy, Parquet) or a store.
    Backtest(Box<trellis::backtest::cli::BacktestArgs>),
    /// Search a strategy's parameters (grid, random, genetic), optionally walk-forward, in parallel.
    Optimise(Box<trellis::backtest::cli::OptimiseArgs>),
    /// Write ticks from any supported input to a Parquet file (zstd), the fastest backtest input.
    ExportTicks(Box<trellis::backtest::cli::ExportArgs>),
    /// Run a benchmark and print its figures: backtest, latency, ingest, tree, supervision, auth, recovery, models, training, clients, failover, logs, journal, beside, strategies, or all.
    #[cfg(feature = "bench")]
    Bench {
        #[arg(default_value = "all")]
        name: String,
        /// `bench strategies`: measure this WebAssembly module instead of target/wasm-examples/ema_cross_rust.wasm.
        #[arg(long, value_name = "FILE.wasm")]
        module: Option<PathBuf>,
        /// The manifest of --module (JSON); without it the module takes no parameters.
        #[arg(long, value_name = "FILE.json", requires = "module")]
        module_manifest: Option<PathBuf>,
    },
    /// The load side of `trellis bench latency` and `bench clients` (a simulated bridge and trading clients),
    /// which those benchmarks start as a child process so that theirs holds trellis alone. Not for people.
    #[cfg(feature = "bench")]
    #[command(hide = true)]
    BenchDriver(Box<trellis::bench::driver::DriverArgs>),
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
struct SimArgs {
    /// trellis's bridge endpoint.
    #[arg(long, default_value = "ws://127.0.0.1:8081/ws/mt5")]
    url: String,
    /// Other trellis nodes' bridge endpoints to fail over to (several nodes; comma separated or repeated).
    #[arg(long, value_delimiter = ',')]
    fallback_url: Vec<String>,
    /// Drop the link when nothing came from trellis for this long (a frozen node); 0 = never.
    #[arg(long, default_value_t = 15_000)]
    silence_ms: u64,
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
    /// Replay ticks from a history file (any format `trellis backtest` reads) instead of the random walk.
    #[arg(long, value_name = "FILE")]
    csv: Option<PathBuf>,
    /// Symbol of lines without a symbol column.
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
        Command::Backtest(args) => return offline(trellis::backtest::cli::backtest(*args)),
        Command::Optimise(args) => return offline(trellis::backtest::cli::optimise(*args)),
        Command::ExportTicks(args) => return offline(trellis::backtest::cli::export_ticks(*args)),
        // Needs no settings: it drives a trellis the parent benchmark started.
        #[cfg(feature = "bench")]
        Command::BenchDriver(args) => {
            return exit(actix_rt::System::new().block_on(trellis::bench::driver::run(*args)))
        }
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
            let _log = trellis::telemetry::init(&settings.log);
            trellis::telemetry::install_panic_hook();
            run_to_exit(async move {
                let app = Application::build(settings).await?;
                app.run_until_stopped().await
            })
        }
        Command::Demo => {
            let _log = trellis::telemetry::init(&settings.log);
            trellis::telemetry::install_panic_hook();
            run_to_exit(trellis::demo::run(settings))
        }
        Command::Migrate => {
            let _log = trellis::telemetry::init(&settings.log);
            exit(actix_rt::System::new().block_on(trellis::storage::migrate_all(&settings)))
        }
        Command::Keys {
            action: KeysAction::Rotate,
        } => {
            let _log = trellis::telemetry::init(&settings.log);
            exit(actix_rt::System::new().block_on(async {
                let r = trellis::security::service::rotate_data_keys(&settings).await?;
                println!(
                    "data key {} is primary; {} secrets re-encrypted, {} already current",
                    r.new_version, r.reencrypted, r.already_current
                );
                Ok(())
            }))
        }
        #[cfg(feature = "bench")]
        Command::Bench {
            name,
            module,
            module_manifest,
        } => {
            if cfg!(debug_assertions) {
                eprintln!("trellis bench: this is a debug build; figures are only meaningful with --release");
            }
            let options = trellis::bench::Options {
                module,
                module_manifest,
            };
            run_to_exit(trellis::bench::run_with(&name, &options))
        }
        Command::Mt5Sim(_)
        | Command::Backtest(_)
        | Command::Optimise(_)
        | Command::ExportTicks(_) => ExitCode::SUCCESS,
        #[cfg(feature = "bench")]
        Command::BenchDriver(_) => ExitCode::SUCCESS,
    }
}

/// An offline command's result: its message and status 2 when it could not run.
fn offline(result: Result<(), trellis::backtest::cli::CliError>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("trellis: {e}");
            ExitCode::from(2)
        }
    }
}

/// Runs a long-lived command on an actix system and answers its status without dropping the system: the
/// application has shut itself down in order by then (sessions closed, tenants and storage drained), and what
/// is left — a background job's future holding a database connection, say — would be dropped outside any
/// runtime, where sqlx panics returning the connection. The process ends right after.
fn run_to_exit(f: impl std::future::Future<Output = anyhow::Result<()>>) -> ExitCode {
    let system = actix_rt::System::new();
    let code = exit(system.block_on(f));
    std::mem::forget(system);
    code
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
    use trellis::sim::feed::{pace, RandomWalk};
    use trellis::sim::{spawn, SimConfig};

    let _log = trellis::telemetry::init(&trellis::config::LogSettings {
        format: trellis::config::LogFormat::Pretty,
        level: "info".into(),
    });
    let mut cfg = SimConfig::new(a.url.clone(), a.api_key.clone(), a.login);
    cfg.fallback_urls = a.fallback_url.clone();
    cfg.silence_ms = a.silence_ms;
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
        // Streamed like a backtest's input, in any format it reads; a bad line ends the replay, logged.
        Some(path) => {
            let options = trellis::backtest::history::HistoryOptions {
                symbol: a.csv_symbol.clone(),
                ..Default::default()
            };
            match trellis::backtest::history::open(path, options) {
                Ok(reader) => {
                    let path = path.clone();
                    Box::new(reader.map_while(move |t| {
                        t.map_err(|e| {
                            tracing::error!("{}: {e}; the replay stops here", path.display())
                        })
                        .ok()
                    }))
                }
                Err(e) => {
                    eprintln!("trellis mt5-sim: {}: {e}", path.display());
                    return ExitCode::from(2);
                }
            }
        }
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
