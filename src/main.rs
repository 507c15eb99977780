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
    /// Validate the configuration and print the effective settings.
    CheckConfig,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
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
            let result = actix_rt::System::new().block_on(async move {
                let app = Application::build(settings).await?;
                app.run_until_stopped().await
            });
            match result {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("trellis: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}
