//! Portfolio backtests: several strategies (plain or model-driven) on several symbols and timeframes,
//! through one ledger, one risk gate and one account — as a tenant trades them live, where one
//! strategy's position counts against limits the others share.
//!
//! The spec is a TOML file:
//!
//! ```toml
//! balance = 100000            # optional; the command line's --balance otherwise
//! [risk]                      # the tenant's risk limits (config's RiskSettings), optional
//! max_net_position = 1.0
//! [[strategies]]
//! id = "eu-fast"              # the strategy id orders and deals carry
//! kind = "ema_cross"
//! symbol = "EURUSD"
//! timeframe = "M5"
//! volume = 0.2                # lots; the command line's --volume otherwise
//! params = { fast = 5, slow = 20 }
//! # model = "m.onnx"          # a model feeding the strategy, with its manifest
//! # manifest = "m.json"
//! ```
//!
//! The ticks of every symbol come from one input (a file with a symbol column, or standard input), in
//! time order across symbols as a terminal would have sent them.

use std::collections::BTreeSet;
use std::path::Path;

use rust_decimal::Decimal;
use serde::Deserialize;
use serde_json::json;

use super::cli::{report_run, BacktestArgs, CliError};
use super::{render, report, write_trades, Backtest, BacktestConfig, Leg, LegReport, Report};
use crate::domain::tenant::RiskSettings;
use crate::domain::{Symbol, Timeframe};
use crate::strategies::{Params, StrategyRegistry};

/// Most strategies in one spec.
pub const MAX_LEGS: usize = 200;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Spec {
    #[serde(default)]
    pub balance: Option<Decimal>,
    #[serde(default)]
    pub risk: RiskSettings,
    pub strategies: Vec<LegSpec>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LegSpec {
    pub id: String,
    pub kind: String,
    pub symbol: String,
    pub timeframe: String,
    #[serde(default)]
    pub volume: Option<Decimal>,
    #[serde(default)]
    pub params: Params,
    #[serde(default)]
    pub model: Option<std::path::PathBuf>,
    #[serde(default)]
    pub manifest: Option<std::path::PathBuf>,
}

impl Spec {
    pub fn load(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        Self::parse(&text).map_err(|e| format!("{}: {e}", path.display()))
    }

    pub fn parse(text: &str) -> Result<Self, String> {
        let spec: Spec = config::Config::builder()
            .add_source(config::File::from_str(text, config::FileFormat::Toml))
            .build()
            .and_then(|c| c.try_deserialize())
            .map_err(|e| e.to_string())?;
        if spec.strategies.is_empty() {
            return Err("strategies: at least one [[strategies]]".into());
        }
        if spec.strategies.len() > MAX_LEGS {
            return Err(format!("strategies: at most {MAX_LEGS}"));
        }
        let mut ids = BTreeSet::new();
        for (i, leg) in spec.strategies.iter().enumerate() {
            crate::domain::valid_id(&format!("strategies[{i}].id"), &leg.id)?;
            if !ids.insert(leg.id.as_str()) {
                return Err(format!("strategies[{i}].id: `{}` is given twice", leg.id));
            }
            if Timeframe::parse(&leg.timeframe).is_none() {
                return Err(format!(
                    "strategies[{i}].timeframe: `{}` is not M1, M5, M15, H1, H4 or D1",
                    leg.timeframe
                ));
            }
            if leg.model.is_some() != leg.manifest.is_some() {
                return Err(format!("strategies[{i}]: model and manifest go together"));
            }
        }
        Ok(spec)
    }

    /// The portfolio's symbols, each once.
    pub fn symbols(&self) -> BTreeSet<&str> {
        self.strategies.iter().map(|l| l.symbol.as_str()).collect()
    }

    /// The backtest of this spec: `template` gives execution settings, overridden by the spec's.
    pub fn build(
        &self,
        mut template: BacktestConfig,
        registry: &StrategyRegistry,
    ) -> Result<Backtest, String> {
        if let Some(b) = self.balance {
            template.balance = b;
        }
        template.risk = self.risk.clone();
        let mut legs = Vec::with_capacity(self.strategies.len());
        for (i, l) in self.strategies.iter().enumerate() {
            let volume = l.volume.unwrap_or(template.volume);
            let strategy = super::cli::build_strategy(
                registry,
                &l.kind,
                &l.params,
                volume,
                l.model.as_deref().zip(l.manifest.as_deref()),
            )
            .map_err(|e| format!("strategies[{i}] ({}): {e}", l.id))?;
            legs.push(Leg {
                id: l.id.clone(),
                kind: l.kind.clone(),
                symbol: Symbol::new(l.symbol.clone()),
                timeframe: Timeframe::parse(&l.timeframe).unwrap_or(Timeframe::M1),
                strategy,
            });
        }
        Ok(Backtest::portfolio(template, legs))
    }
}

/// The per-strategy table of a portfolio run.
pub fn render_legs(total: &Report, legs: &[LegReport]) -> String {
    let mut s = render(total);
    s.push_str("  per strategy:\n");
    for l in legs {
        s.push_str(&format!(
            "    {:<16} {:<18} {:<7} {:<4} net {:>10}  trades {:>4}  fills {:>4}  max dd {:>9}  position {}\n",
            l.id,
            l.strategy,
            l.symbol,
            l.timeframe,
            l.total_pnl.round_dp(2),
            l.trades,
            l.fills,
            l.max_drawdown.round_dp(2),
            l.final_position
        ));
    }
    s
}

/// `trellis backtest --spec FILE.toml`.
pub fn run_cli(path: &Path, a: &BacktestArgs) -> Result<(), CliError> {
    let spec = Spec::load(path).map_err(CliError)?;
    let mut template = BacktestConfig::new("", "portfolio", Params::new(), Timeframe::M1);
    a.execution.apply(&mut template, a.source.point);
    template.record_equity = a.report.is_some();
    let balance = spec.balance.unwrap_or(template.balance);
    let registry = StrategyRegistry::default();
    let mut bt = spec.build(template, &registry).map_err(CliError)?;
    let symbols = spec.symbols();
    // A file without a symbol column is one symbol's: only possible when the portfolio trades one.
    let default_symbol = (symbols.len() == 1)
        .then(|| symbols.iter().next().copied())
        .flatten();
    let mut ticks = a.source.open(default_symbol)?;
    for t in ticks.by_ref() {
        bt.on_tick(&t.map_err(|e| a.source.error(e))?);
    }
    let (total, legs, deals) = bt.finish_portfolio();
    if let Some(p) = &a.trades {
        super::cli::write_file(p, |f| write_trades(f, &deals))?;
    }
    if let Some(p) = &a.report {
        let mut run = report_run("Portfolio", balance, &total, &deals);
        for l in &legs {
            run.summary.push((
                format!("{} ({} {} {})", l.id, l.strategy, l.symbol, l.timeframe),
                format!(
                    "net {}, {} trades, max drawdown {}",
                    l.total_pnl.round_dp(2),
                    l.trades,
                    l.max_drawdown.round_dp(2)
                ),
            ));
        }
        let doc = report::Document {
            title: format!("Portfolio backtest: {}", path.display()),
            runs: vec![run],
            optimisation: None,
        };
        super::cli::write_file(p, |f| f.write_all(report::html(&doc).as_bytes()))?;
    }
    if a.json {
        println!(
            "{}",
            json!({"total": total, "strategies": legs, "lines_skipped": ticks.skipped().0})
        );
    } else {
        print!("{}", render_legs(&total, &legs));
    }
    Ok(())
}
