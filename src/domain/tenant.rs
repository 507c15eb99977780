//! The tenant document: what a tenant trades and how — symbols, risk limits, strategies, model deployments
//! and their retraining — as stored, configured in `config/*.toml` and edited through the API.
//!
//! Why in `domain`: the document is data that the risk engine, the tenant's actors, the use cases and the
//! storage all read. When it sat among the process settings (`config`), the pure risk code imported the
//! configuration and the configuration imported training and HTTP schema helpers. Its JSON form is the one
//! stored in the tenants table and returned by the API: changing a field here changes both.

use serde::{Deserialize, Serialize};

use super::schema::{Fraction, PositiveDecimal};

/// A tenant: its keys, symbols, risk limits and strategies.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TenantSettings {
    pub id: String,
    pub name: String,
    #[serde(default = "default_tier")]
    pub tier: String,
    /// API keys its MT5 bridges present in `hello` (configuration only: never written to storage).
    #[serde(default, skip_serializing)]
    pub api_keys: Vec<String>,
    /// Symbols it trades; ticks of other symbols are refused.
    pub symbols: Vec<String>,
    /// Contract size per symbol (units per lot); 100000 when not listed.
    #[serde(default)]
    pub contract_sizes: std::collections::BTreeMap<String, rust_decimal::Decimal>,
    #[serde(default)]
    pub risk: RiskSettings,
    #[serde(default)]
    pub strategies: Vec<StrategySettings>,
    /// Model deployments: ONNX models predicting on closed bars, their predictions routed to the strategies
    /// that name them (`model`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub models: Vec<ModelDeploymentSettings>,
}

/// One model deployment (tenant × model × symbol × timeframe): the versions that trade, split by weight
/// per bar, and shadow versions that predict and are recorded but never trade.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ModelDeploymentSettings {
    pub id: String,
    /// The registry model its versions come from (deployments made through the API); `None` for versions
    /// given as files in configuration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    pub symbol: String,
    pub timeframe: String,
    pub traffic: Vec<ModelVersionSettings>,
    #[serde(default)]
    pub shadow: Vec<ModelVersionSettings>,
    /// A prediction slower than this is dropped and counted (µs).
    #[serde(default = "default_model_budget_us")]
    pub budget_us: u64,
    /// Retrain the registry model on a schedule, promoting a significantly better challenger.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retrain: Option<RetrainSettings>,
}

/// A deployment's retraining schedule: every `every`, a challenger is trained on the last `window` of the
/// deployment's symbol and timeframe, validated walk-forward, and takes `alias` only if it beats the
/// version holding it out of sample by `min_improvement` and significantly (McNemar at `alpha`).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RetrainSettings {
    /// How often: a number and a unit, `s`, `m`, `h` or `d` (`1d`, `6h`); at least `1s`.
    #[schemars(pattern(r"^[1-9][0-9]{0,5}[smhd]$"))]
    pub every: String,
    /// How much history: the same form (`90d`).
    #[schemars(pattern(r"^[1-9][0-9]{0,5}[smhd]$"))]
    pub window: String,
    #[serde(default = "default_min_improvement")]
    pub min_improvement: f64,
    #[serde(default = "default_alpha")]
    pub alpha: f64,
    #[serde(default = "default_alias")]
    pub alias: String,
    pub train: TrainSpec,
}

fn default_min_improvement() -> f64 {
    0.01
}
fn default_alpha() -> f64 {
    0.05
}
fn default_alias() -> String {
    "champion".into()
}

/// A span written as a number and a unit (`s`, `m`, `h`, `d`), in milliseconds.
pub fn parse_span(s: &str) -> Option<i64> {
    let unit = match s.chars().last()? {
        's' => 1_000,
        'm' => 60_000,
        'h' => 3_600_000,
        'd' => 86_400_000,
        _ => return None,
    };
    let n: i64 = s.get(..s.len() - 1)?.parse().ok()?;
    (n > 0 && n <= 999_999).then_some(n * unit)
}

fn default_model_budget_us() -> u64 {
    5_000
}

/// A model version and its share of the traffic: either an ONNX file and its manifest (JSON) on disk
/// (`file` and `manifest`), or a version of the deployment's registry model, named by its sha256
/// (`version`) or by an alias it follows when the alias moves (`alias`).
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ModelVersionSettings {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manifest: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alias: Option<String>,
    #[serde(default = "default_weight")]
    pub weight: f64,
}

impl ModelVersionSettings {
    /// A version given as a file and its manifest.
    pub fn file(file: impl Into<String>, manifest: impl Into<String>, weight: f64) -> Self {
        Self {
            file: Some(file.into()),
            manifest: Some(manifest.into()),
            weight,
            ..Self::default()
        }
    }

    /// Where the version comes from, checked: exactly one of a file (with its manifest), a registry
    /// version or a registry alias.
    pub fn source(&self) -> Result<VersionSource<'_>, String> {
        match (&self.file, &self.manifest, &self.version, &self.alias) {
            (Some(f), Some(m), None, None) => Ok(VersionSource::File {
                file: f,
                manifest: m,
            }),
            (None, None, Some(v), None) => Ok(VersionSource::Registry(VersionRef::Version(v))),
            (None, None, None, Some(a)) => Ok(VersionSource::Registry(VersionRef::Alias(a))),
            _ => Err(
                "a version is `file` with `manifest`, or a registry `version`, or an `alias`: exactly one"
                    .into(),
            ),
        }
    }
}

/// Where a deployed version comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VersionSource<'a> {
    File { file: &'a str, manifest: &'a str },
    Registry(VersionRef<'a>),
}

/// A registry version by its sha256, or by the alias pointing at it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum VersionRef<'a> {
    Version(&'a str),
    Alias(&'a str),
}

fn default_weight() -> f64 {
    1.0
}

fn default_tier() -> String {
    "free".to_owned()
}

/// Pre-trade limits of a tenant. A missing limit does not apply.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RiskSettings {
    #[serde(default)]
    #[schemars(schema_with = "crate::domain::schema::positive_decimal_or_null")]
    pub max_order_volume: Option<PositiveDecimal>,
    /// Largest absolute net position per symbol, in lots.
    #[serde(default)]
    #[schemars(schema_with = "crate::domain::schema::positive_decimal_or_null")]
    pub max_net_position: Option<PositiveDecimal>,
    #[serde(default)]
    pub max_open_positions: Option<usize>,
    /// Symbols orders may be sent for; all of the tenant's symbols when empty.
    #[serde(default)]
    pub allowed_symbols: Vec<String>,
    /// Largest loss of the UTC day (realised + unrealised), in account currency, as a positive number.
    #[serde(default)]
    #[schemars(schema_with = "crate::domain::schema::positive_decimal_or_null")]
    pub max_daily_loss: Option<PositiveDecimal>,
    /// Largest fall of PnL from its peak, in account currency.
    #[serde(default)]
    #[schemars(schema_with = "crate::domain::schema::positive_decimal_or_null")]
    pub max_drawdown: Option<PositiveDecimal>,
    /// Close every position when a loss limit trips the kill switch.
    #[serde(default)]
    pub flatten_on_breach: bool,
    /// Largest one-bar (M1) volatility of an account's positions, in account currency: √(wᵀΣw) with w the
    /// positions' values and Σ the Ledoit–Wolf covariance of the tenant's symbols' M1 log returns over the
    /// last `correlation_window` bars. An order that would take the figure beyond the limit, and raise it,
    /// is refused; hedges pass. Applies once the window holds 30 bars.
    #[serde(default)]
    #[schemars(schema_with = "crate::domain::schema::positive_decimal_or_null")]
    pub max_portfolio_volatility: Option<PositiveDecimal>,
    /// M1 bars the correlation engine keeps (default 240, 30 to 10 000).
    #[serde(default)]
    pub correlation_window: Option<usize>,
    /// Limits scaled by the market regime a `regime_hmm` deployment sees.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub regime: Option<RegimeRisk>,
}

/// While deployment `deployment` (a `regime_hmm`) says the market is in state `state` (a label of its
/// manifest, e.g. `volatile`), `max_order_volume` and `max_net_position` are multiplied by `scale`.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RegimeRisk {
    pub deployment: String,
    #[serde(default = "volatile")]
    pub state: String,
    /// From 0 to 1 (0.5 halves the limits).
    #[schemars(schema_with = "crate::domain::schema::fraction_decimal")]
    pub scale: Fraction,
}

fn volatile() -> String {
    "volatile".into()
}

/// One strategy instance.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StrategySettings {
    #[schemars(pattern(r"^[A-Za-z0-9_-]{1,64}$"))]
    pub id: String,
    /// `ema_cross`, `rsi_reversion`, `donchian_breakout`, or a kind registered by the embedding program.
    pub kind: String,
    #[schemars(pattern(r"^[!-~]{1,32}$"), example = &"EURUSD")]
    pub symbol: String,
    #[schemars(pattern(r"^(M1|M5|M15|H1|H4|D1)$"))]
    pub timeframe: String,
    /// Lots per position.
    #[schemars(schema_with = "crate::domain::schema::positive_decimal")]
    pub volume: PositiveDecimal,
    /// The MT5 login to trade on; the tenant's only connected account when omitted.
    #[serde(default)]
    pub account: Option<u64>,
    #[serde(default)]
    pub params: std::collections::BTreeMap<String, f64>,
    /// A stopped strategy keeps its settings but receives no bars.
    #[serde(default = "enabled")]
    pub enabled: bool,
    /// What happens to the strategy's position when it is disabled for failing too often: `hold` (default)
    /// keeps it, `flatten` closes it.
    #[serde(default)]
    pub on_failure: OnFailure,
    /// The model deployment whose predictions this strategy receives (`on_prediction`), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
}

/// A disabled strategy's position.
#[derive(
    Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq, schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum OnFailure {
    /// Keep the position; a person decides.
    #[default]
    Hold,
    /// Close the position with a market order through risk.
    Flatten,
}

fn enabled() -> bool {
    true
}

/// What to train.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TrainSpec {
    /// `logistic` (a direction classifier) or `regime_hmm` (the regime detector).
    #[serde(default)]
    pub kind: ModelKind,
    /// Hidden states of a `regime_hmm` (2 or 3).
    #[serde(default = "two")]
    pub states: usize,
    /// Feature names from the feature library, in the model's input order.
    pub features: Vec<String>,
    /// Bars after which the direction is judged.
    #[serde(default = "one")]
    pub horizon_bars: u32,
    /// Walk-forward folds (test blocks), 1 to 20.
    #[serde(default = "five")]
    pub folds: usize,
    /// L2 penalty of the logistic regression (on standardised features).
    #[serde(default = "l2")]
    pub l2: f64,
    /// `model_signal`'s bands for the walk-forward Sharpe: long above, short below.
    #[serde(default = "upper")]
    pub upper: f64,
    #[serde(default = "lower")]
    pub lower: f64,
    /// Cost of one unit of position change, as a return (0.0001 = one pip on EURUSD near 1.0).
    #[serde(default = "cost")]
    pub cost: f64,
}

fn one() -> u32 {
    1
}
fn two() -> usize {
    2
}

/// What a training job fits.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum ModelKind {
    /// Logistic regression of the direction after the horizon, exported to ONNX.
    #[default]
    Logistic,
    /// A Gaussian hidden Markov model of the features (e.g. `log_return_1`, `volatility_20`), fitted by
    /// Baum–Welch; served as an online filter giving the state probabilities, state 0 the calmest.
    RegimeHmm,
}
fn five() -> usize {
    5
}
fn l2() -> f64 {
    1.0
}
fn upper() -> f64 {
    0.55
}
fn lower() -> f64 {
    0.45
}
fn cost() -> f64 {
    0.00005
}
