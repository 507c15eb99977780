//! The strategy optimisation use case: the request (what to search, on which history, ranked how) checked
//! into a [`Plan`] the optimisation job runs, and the shapes of its results.
//!
//! The job (`app::jobs::optimisations`) backtests parameter sets of a strategy on the tenant's stored ticks —
//! the live bar, strategy, risk and ledger code — by grid, random or genetic search, optionally walk-forward,
//! and ranks them by an objective under constraints (the engine of `trellis optimise`).

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::AppError;
use crate::actors::tenant::TenantContext;
use crate::app::jobs::optimisations::Plan;
use crate::backtest::optimise::{
    Constraints, Dimension, Method, Objective, Space, WalkForwardSpec,
};
use crate::backtest::BacktestConfig;
use crate::strategies::Params;

/// The least tier that may optimise.
pub const TIER: &str = "professional";

/// Most backtests one job may run (a grid's size, random samples, or population × generations).
pub const MAX_RUNS: u64 = 20_000;

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OptimiseRequest {
    /// A strategy kind (`ema_cross`, `rsi_reversion`, `donchian_breakout`, …).
    pub kind: String,
    #[schemars(pattern(r"^[!-~]{1,32}$"), example = &"EURUSD")]
    pub symbol: String,
    #[schemars(pattern(r"^(M1|M5|M15|H1|H4|D1)$"))]
    pub timeframe: String,
    /// The stored ticks to use, [from_ms, to_ms].
    pub from_ms: i64,
    pub to_ms: i64,
    /// Each parameter's candidate values (the space every method searches).
    pub grid: BTreeMap<String, Vec<f64>>,
    #[serde(default)]
    #[schemars(schema_with = "crate::domain::schema::positive_decimal_or_null")]
    pub volume: Option<crate::domain::schema::PositiveDecimal>,
    /// `net_profit` (default; `total_pnl` is the same), `sharpe`, `profit_factor` or `recovery_factor`.
    #[serde(default)]
    #[schemars(regex(pattern = r"^(net_profit|total_pnl|sharpe|profit_factor|recovery_factor)$"))]
    pub objective: Option<String>,
    /// How the space is searched (default: the whole grid).
    #[serde(default)]
    pub search: Option<SearchSpec>,
    /// Candidates with fewer closed trades are not ranked.
    #[serde(default)]
    pub min_trades: Option<u64>,
    /// Candidates with a deeper drawdown (account currency) are not ranked.
    #[serde(default)]
    pub max_drawdown: Option<f64>,
    /// Optimise in-sample, test the best out-of-sample, window after window.
    #[serde(default)]
    pub walk_forward: Option<WalkForwardRequest>,
    /// The genetic and random searches' seed: the same seed, the same result.
    #[serde(default)]
    pub seed: Option<u64>,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "method", rename_all = "snake_case", deny_unknown_fields)]
pub enum SearchSpec {
    Grid,
    Random {
        #[schemars(range(min = 1, max = 20000))]
        samples: u64,
    },
    Genetic {
        #[serde(default)]
        #[schemars(range(min = 2, max = 1000))]
        population: Option<usize>,
        #[serde(default)]
        #[schemars(range(min = 1, max = 1000))]
        max_generations: Option<u32>,
        #[serde(default)]
        #[schemars(range(min = 1, max = 1000))]
        patience: Option<u32>,
        #[serde(default)]
        elitism: Option<usize>,
        #[serde(default)]
        #[schemars(range(min = 0.0, max = 1.0))]
        crossover: Option<f64>,
        #[serde(default)]
        #[schemars(range(min = 0.0, max = 1.0))]
        mutation: Option<f64>,
    },
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WalkForwardRequest {
    #[schemars(range(min = 1))]
    pub in_sample_ms: i64,
    #[schemars(range(min = 1))]
    pub out_of_sample_ms: i64,
    #[serde(default)]
    pub anchored: bool,
}

/// One candidate of a finished optimisation, as `app::jobs::optimisations` writes it (the schema of
/// `OptimisationView::results`' items).
#[derive(Debug, JsonSchema)]
pub struct Candidate {
    /// The parameter set.
    pub params: BTreeMap<String, f64>,
    /// The objective's value; `null` when the run failed or broke a constraint (`min_trades`,
    /// `max_drawdown`).
    pub score: Option<f64>,
    /// The backtest report of the run (trades, PnL, drawdown, Sharpe, …), when it ran.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub report: Option<serde_json::Map<String, serde_json::Value>>,
    /// Why the run failed, when it did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// A walk-forward optimisation's result, as `app::jobs::optimisations` writes it (the schema of
/// `OptimisationView::walk_forward`).
#[derive(Debug, JsonSchema)]
pub struct WalkForwardResult {
    /// The windows' lengths, as asked.
    pub spec: WalkForwardWindows,
    /// Window after window.
    pub windows: Vec<WalkForwardWindow>,
    /// The out-of-sample equity, window after window, each starting where the previous ended: `[time_ms,
    /// equity]` pairs.
    pub stitched: Vec<(i64, f64)>,
    /// The out-of-sample net profit of every window.
    pub out_net_profit: f64,
    /// (Out-of-sample profit per unit time) / (in-sample profit per unit time); `null` when the in-sample
    /// profit is not positive.
    pub efficiency: Option<f64>,
}

/// The lengths of a walk-forward's windows.
#[derive(Debug, JsonSchema)]
pub struct WalkForwardWindows {
    pub in_sample_ms: i64,
    pub out_of_sample_ms: i64,
    /// In-sample windows all start at the history's start (else they roll forward).
    pub anchored: bool,
}

/// One window of a walk-forward.
#[derive(Debug, JsonSchema)]
pub struct WalkForwardWindow {
    pub bounds: WindowBounds,
    /// The best parameter set in sample; `null` when no candidate was feasible.
    pub best: Option<BTreeMap<String, f64>>,
    /// Its in-sample score.
    pub in_score: Option<f64>,
    pub in_net_profit: f64,
    /// What the best set made out of sample.
    pub out_net_profit: f64,
    pub out_trades: usize,
    /// Candidates tried in sample.
    pub candidates: usize,
}

/// In-sample `[in_from_ms, in_to_ms)`, out-of-sample `[out_from_ms, out_to_ms)`.
#[derive(Debug, JsonSchema)]
pub struct WindowBounds {
    pub in_from_ms: i64,
    pub in_to_ms: i64,
    pub out_from_ms: i64,
    pub out_to_ms: i64,
}

fn bad(e: impl std::fmt::Display) -> AppError {
    AppError::BadRequest(e.to_string())
}

/// The search the request asks for, checked.
pub fn plan(t: &TenantContext, req: &OptimiseRequest) -> Result<Plan, AppError> {
    crate::app::trading::traded_symbol(t, "symbol", &req.symbol)?;
    let timeframe = crate::app::trading::symbol_and_timeframe(t, &req.symbol, &req.timeframe)?;
    if req.to_ms <= req.from_ms {
        return Err(bad("to_ms: must be after from_ms"));
    }
    if req.grid.is_empty() || req.grid.values().any(Vec::is_empty) {
        return Err(bad("grid: every parameter needs at least one value"));
    }
    if req.grid.values().flatten().any(|v| !v.is_finite()) {
        return Err(bad("grid: values must be finite numbers"));
    }
    let space = Space::new(
        req.grid
            .iter()
            .map(|(name, values)| Dimension {
                name: name.clone(),
                values: values.clone(),
            })
            .collect(),
    )
    .map_err(|e| bad(format!("grid: {e}")))?;
    let method = match &req.search {
        None | Some(SearchSpec::Grid) => Method::Grid,
        Some(SearchSpec::Random { samples }) => Method::Random { samples: *samples },
        Some(SearchSpec::Genetic {
            population,
            max_generations,
            patience,
            elitism,
            crossover,
            mutation,
        }) => {
            let Method::Genetic {
                population: p,
                max_generations: g,
                patience: k,
                elitism: e,
                crossover: c,
                mutation: m,
            } = Method::genetic()
            else {
                return Err(AppError::Internal(anyhow::anyhow!("genetic defaults")));
            };
            Method::Genetic {
                population: population.unwrap_or(p),
                max_generations: max_generations.unwrap_or(g),
                patience: patience.unwrap_or(k),
                elitism: elitism.unwrap_or(e),
                crossover: crossover.unwrap_or(c),
                mutation: mutation.unwrap_or(m),
            }
        }
    };
    method
        .validate(&space)
        .map_err(|e| bad(format!("search: {e}")))?;
    let runs = match &method {
        Method::Grid => space.size(),
        Method::Random { samples } => (*samples).min(space.size()),
        Method::Genetic {
            population,
            max_generations,
            ..
        } => (*population as u64).saturating_mul(u64::from(*max_generations)),
    };
    if runs > MAX_RUNS {
        return Err(bad(format!(
            "search: up to {runs} backtests; at most {MAX_RUNS} per job"
        )));
    }
    let objective = Objective::parse(req.objective.as_deref().unwrap_or("net_profit"))
        .map_err(|e| bad(format!("objective: {e}")))?;
    if req
        .max_drawdown
        .is_some_and(|d| !(d.is_finite() && d >= 0.0))
    {
        return Err(bad("max_drawdown: a non-negative amount"));
    }
    let walk_forward = req.walk_forward.as_ref().map(|w| WalkForwardSpec {
        in_sample_ms: w.in_sample_ms,
        out_of_sample_ms: w.out_of_sample_ms,
        anchored: w.anchored,
    });
    if walk_forward.is_some_and(|w| w.in_sample_ms <= 0 || w.out_of_sample_ms <= 0) {
        return Err(bad(
            "walk_forward: in_sample_ms and out_of_sample_ms must be positive",
        ));
    }
    let mut template = BacktestConfig::new(&req.symbol, &req.kind, Params::new(), timeframe);
    template.contract_size = t.contract_size(&req.symbol);
    template.risk = t.risk_limits();
    if let Some(v) = req.volume {
        template.volume = v.get();
    }
    // The strategy must accept some parameter set of the space; a kind it does not know is refused now.
    if !t.registry.kinds().iter().any(|k| k == &req.kind) {
        return Err(bad(format!("kind: unknown strategy kind `{}`", req.kind)));
    }
    Ok(Plan {
        template,
        registry: t.registry.clone(),
        space,
        method,
        objective,
        constraints: Constraints {
            min_trades: req.min_trades,
            max_drawdown: req.max_drawdown,
        },
        walk_forward,
        seed: req.seed.unwrap_or(1),
        from_ms: req.from_ms,
        to_ms: req.to_ms,
    })
}
