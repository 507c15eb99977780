//! Strategy optimisation (the professional tier and above, shared/DESIGN.md): a grid of parameter sets run
//! through the backtester — the live bar, strategy, risk and ledger code — on the tenant's stored ticks, and
//! ranked. The runs are CPU work and go to the blocking pool, off the actors' threads.

use std::collections::BTreeMap;

use actix_web::HttpResponse;
use rust_decimal::Decimal;
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::json;

use super::{Authorized, Body};
use crate::backtest::{self, BacktestConfig};
use crate::domain::Timeframe;
use crate::http::error::ApiError;
use crate::strategies::Params;

/// The least tier that may optimise.
pub const TIER: &str = "professional";
/// Most parameter sets one request may run.
pub const MAX_RUNS: usize = 200;

#[derive(Debug, Deserialize, JsonSchema)]
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
    /// Each parameter's candidate values; every combination is run.
    pub grid: BTreeMap<String, Vec<f64>>,
    #[serde(default)]
    pub volume: Option<Decimal>,
    /// `total_pnl` (default), `sharpe` or `profit_factor`.
    #[serde(default)]
    pub objective: Option<String>,
}

fn combinations(grid: &BTreeMap<String, Vec<f64>>) -> Vec<Params> {
    let mut out = vec![Params::new()];
    for (name, values) in grid {
        out = out
            .into_iter()
            .flat_map(|p| {
                values.iter().map(move |v| {
                    let mut p = p.clone();
                    p.insert(name.clone(), *v);
                    p
                })
            })
            .collect();
    }
    out
}

pub async fn optimise(
    auth: Authorized,
    Body(req): Body<OptimiseRequest>,
) -> Result<HttpResponse, ApiError> {
    let t = auth.tenant()?.clone();
    super::tenants::require_tier(&t, TIER, "strategy optimisation")?;
    if !t.symbols.contains(&req.symbol) {
        return Err(ApiError::BadRequest(format!(
            "symbol: `{}` is not one of the tenant's symbols",
            req.symbol
        )));
    }
    let timeframe = Timeframe::parse(&req.timeframe).ok_or_else(|| {
        ApiError::BadRequest(format!(
            "timeframe: `{}` is not M1, M5, M15, H1, H4 or D1",
            req.timeframe
        ))
    })?;
    if req.to_ms <= req.from_ms {
        return Err(ApiError::BadRequest("to_ms: must be after from_ms".into()));
    }
    if req.grid.is_empty() || req.grid.values().any(Vec::is_empty) {
        return Err(ApiError::BadRequest(
            "grid: every parameter needs at least one value".into(),
        ));
    }
    // Saturating: a hundred parameters of a few values each are more combinations than a usize counts.
    let runs = req
        .grid
        .values()
        .fold(1usize, |n, values| n.saturating_mul(values.len()));
    if runs > MAX_RUNS {
        return Err(ApiError::BadRequest(format!(
            "grid: {runs} combinations; at most {MAX_RUNS} per request"
        )));
    }
    let objective = req.objective.clone().unwrap_or_else(|| "total_pnl".into());
    if !["total_pnl", "sharpe", "profit_factor"].contains(&objective.as_str()) {
        return Err(ApiError::BadRequest(format!(
            "objective: `{objective}` is not total_pnl, sharpe or profit_factor"
        )));
    }
    let settings = &auth.state.settings.storage;
    let ticks = match settings.clickhouse() {
        Some(cfg) => {
            crate::storage::clickhouse::load_ticks(
                &cfg,
                &t.id.0,
                &req.symbol,
                req.from_ms,
                req.to_ms,
            )
            .await
        }
        None => {
            crate::storage::timeseries::load_ticks(
                &settings.data_dir,
                &t.id.0,
                &req.symbol,
                req.from_ms,
                req.to_ms,
            )
            .await
        }
    }?;
    let registry = t.registry.clone();
    let contract_size = t.contract_size(&req.symbol);
    let risk = t.risk_limits();
    let (kind, symbol, volume) = (req.kind.clone(), req.symbol.clone(), req.volume);
    let tick_count = ticks.len();
    let results = tokio::task::spawn_blocking(move || {
        combinations(&req.grid)
            .into_iter()
            .map(|params| {
                let mut cfg = BacktestConfig::new(&symbol, &kind, params.clone(), timeframe);
                cfg.contract_size = contract_size;
                cfg.risk = risk.clone();
                if let Some(v) = volume {
                    cfg.volume = v;
                }
                match backtest::run(cfg, &registry, &ticks) {
                    Ok((report, _)) => json!({"params": params, "report": report}),
                    Err(e) => json!({"params": params, "error": e.to_string()}),
                }
            })
            .collect::<Vec<_>>()
    })
    .await
    .map_err(|e| ApiError::Internal(anyhow::anyhow!(e)))?;
    let score = |r: &serde_json::Value| {
        r["report"][objective.as_str()]
            .as_f64()
            .or_else(|| {
                r["report"][objective.as_str()]
                    .as_str()
                    .and_then(|s| s.parse().ok())
            })
            .unwrap_or(f64::NEG_INFINITY)
    };
    let mut results = results;
    results.sort_by(|a, b| score(b).total_cmp(&score(a)));
    Ok(auth.ok(json!({
        "objective": objective,
        "ticks": tick_count,
        "runs": results.len(),
        "results": results,
    })))
}
