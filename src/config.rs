//! Settings: `config/default.toml` (the embedded profile), then `config/<TRELLIS_ENV>.toml`, then
//! `TRELLIS__SECTION__KEY` environment variables, in that order of precedence.
//!
//! The profile files are compiled into the binary so `trellis` runs from any directory; an extra file can be
//! layered on top with `--config`. Every section denies unknown keys and every value is typed, so a typo or a
//! bad value stops start-up with one line naming the key instead of running with a silent default.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use config::{Config, Environment, File, FileFormat};
use serde::Deserialize;

use crate::domain::tenant::TenantSettings;

const DEFAULT_TOML: &str = include_str!("../config/default.toml");
const TEST_TOML: &str = include_str!("../config/test.toml");
const PRODUCTION_TOML: &str = include_str!("../config/production.toml");

/// Name of the variable that chooses the profile.
pub const ENV_VAR: &str = "TRELLIS_ENV";
/// Prefix of the variables that override single keys: `TRELLIS__HTTP__PORT=9000`.
pub const OVERRIDE_PREFIX: &str = "TRELLIS";

/// A configuration that cannot be used. The message names the key and the problem.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration: {0}")]
pub struct ConfigError(pub String);

/// The profiles shipped with trellis.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Profile {
    /// `config/default.toml` alone: SQLite under `storage.data_dir`, no servers needed.
    Embedded,
    /// Quiet logs, port 0, fast back-off: what the test suite runs.
    Test,
    /// JSON logs, all interfaces.
    Production,
}

impl Profile {
    /// Parses the value of `TRELLIS_ENV`.
    pub fn parse(name: &str) -> Result<Self, ConfigError> {
        match name.trim().to_ascii_lowercase().as_str() {
            "" | "embedded" | "default" | "demo" => Ok(Self::Embedded),
            "test" => Ok(Self::Test),
            "production" | "prod" => Ok(Self::Production),
            other => Err(ConfigError(format!(
                "{ENV_VAR}: unknown profile `{other}` (expected embedded, test or production)"
            ))),
        }
    }

    fn overlay(self) -> Option<&'static str> {
        match self {
            Self::Embedded => None,
            Self::Test => Some(TEST_TOML),
            Self::Production => Some(PRODUCTION_TOML),
        }
    }
}

/// Everything trellis reads from configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    pub http: HttpSettings,
    pub storage: StorageSettings,
    pub log: LogSettings,
    pub supervision: SupervisionSettings,
    pub shutdown: ShutdownSettings,
    pub mt5: Mt5Settings,
    /// Requests per minute per tenant, by tier.
    pub rate_limits: crate::domain::tier::TierLimits,
    /// Tokens, keys and secrets (shared/SECURITY.md).
    pub security: SecuritySettings,
    /// The first platform administrator.
    pub bootstrap: BootstrapSettings,
    /// What each tier may create.
    pub quotas: QuotaSettings,
    /// The model registry.
    #[serde(default)]
    pub models: ModelSettings,
    /// Several nodes sharing one PostgreSQL (docs/cluster.md); off by default.
    #[serde(default)]
    pub cluster: ClusterSettings,
    /// Logs kept in three tiers and moved between them (`storage::logs`, `storage::logs::mover`).
    #[serde(default)]
    pub log_tiers: LogTierSettings,
    /// Tenants defined in configuration: stored on the first start, managed through the admin API after.
    #[serde(default)]
    pub tenants: Vec<TenantSettings>,
    /// Threads for trading, bridges and the API.
    #[serde(default)]
    pub threads: ThreadSettings,
}

/// Secrets and token lifetimes. An empty secret is read from (or generated once into) `<data_dir>/secrets.json`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecuritySettings {
    /// HS256 signing secrets as `kid:base64[,kid:base64…]`; the first signs, all verify.
    pub jwt_secrets: String,
    /// The HMAC key API-key digests are computed with (base64).
    pub api_key_pepper: String,
    /// The HMAC key of the audit chain (base64).
    pub audit_key: String,
    /// AES-256-GCM data keys as `version:base64[,…]`; the highest version encrypts.
    pub data_keys: String,
    pub issuer: String,
    pub audience: String,
    pub access_ttl_secs: u64,
    pub refresh_idle_secs: u64,
    pub refresh_absolute_secs: u64,
    /// A refresh token repeated within this window is refused without revoking its family.
    pub refresh_grace_ms: u64,
    /// How long a rolled API key keeps working next to its successor.
    pub key_overlap_secs: u64,
    /// Login attempts per minute per account and per client address.
    pub login_per_account_per_min: u32,
    pub login_per_ip_per_min: u32,
    /// Failed logins after which an account waits (doubling from 1 s, at most 15 min).
    pub lockout_after_failures: u32,
    /// How often revocations, disabled users, keys and suspensions are reloaded from the store (what
    /// another trellis node changed applies here within this time).
    pub cache_refresh_ms: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BootstrapSettings {
    /// Created as platform administrator on a start that finds none.
    pub admin_email: String,
    pub admin_password: String,
    /// With no email configured, create `admin@localhost` with a generated password printed once (demo).
    pub generate_admin: bool,
}

/// Per-tier quotas.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuotaSettings {
    pub strategies: crate::domain::tier::TierLimits,
    pub mt5_accounts: crate::domain::tier::TierLimits,
    /// Model deployments a tenant may run.
    pub model_deployments: crate::domain::tier::TierLimits,
    /// Predictions a tenant's models may make per minute, all deployments and versions together; beyond
    /// it a prediction is skipped and counted (`over_quota`).
    pub predictions: crate::domain::tier::TierLimits,
    /// Peak memory one prediction of a model version may need (weights included), in bytes: a version
    /// over it is refused at upload (docs/tenant-code.md).
    #[serde(default = "model_memory_bytes")]
    pub model_memory_bytes: crate::domain::tier::TierLimits<u64>,
    /// Work (multiply-adds) one prediction of a model version may take: a version over it is refused at
    /// upload.
    #[serde(default = "model_work_per_bar")]
    pub model_work_per_bar: crate::domain::tier::TierLimits<u64>,
    /// Strategy module versions (WebAssembly) a tenant may store.
    #[serde(default = "strategy_modules")]
    pub strategy_modules: crate::domain::tier::TierLimits,
    /// Strategies of an uploaded module a tenant may run.
    #[serde(default = "strategy_modules")]
    pub wasm_strategies: crate::domain::tier::TierLimits,
    /// Linear memory one instance of a tenant's module may have, in bytes (never above 64 MiB): declared
    /// beyond it, refused at upload; grown beyond it, the call fails.
    #[serde(default = "wasm_memory_bytes")]
    pub wasm_memory_bytes: crate::domain::tier::TierLimits<u64>,
    /// Fuel (about one unit per instruction) of one call into a tenant's module (never above 10^7).
    #[serde(default = "wasm_fuel_per_call")]
    pub wasm_fuel_per_call: crate::domain::tier::TierLimits<u64>,
}

fn strategy_modules() -> crate::domain::tier::TierLimits {
    crate::domain::tier::TierLimits {
        free: 0,
        basic: 0,
        professional: 20,
        enterprise: 500,
    }
}

fn wasm_memory_bytes() -> crate::domain::tier::TierLimits<u64> {
    crate::domain::tier::TierLimits {
        free: 16 << 20,
        basic: 16 << 20,
        professional: 64 << 20,
        enterprise: 64 << 20,
    }
}

fn wasm_fuel_per_call() -> crate::domain::tier::TierLimits<u64> {
    crate::domain::tier::TierLimits {
        free: 1_000_000,
        basic: 1_000_000,
        professional: 10_000_000,
        enterprise: 10_000_000,
    }
}

fn model_memory_bytes() -> crate::domain::tier::TierLimits<u64> {
    crate::domain::tier::TierLimits {
        free: 16 << 20,
        basic: 32 << 20,
        professional: 64 << 20,
        enterprise: 256 << 20,
    }
}

fn model_work_per_bar() -> crate::domain::tier::TierLimits<u64> {
    crate::domain::tier::TierLimits {
        free: 10_000_000,
        basic: 50_000_000,
        professional: 100_000_000,
        enterprise: 1_000_000_000,
    }
}

/// The model registry's limits.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSettings {
    /// Largest ONNX file accepted by an upload, in bytes.
    pub max_file_bytes: usize,
}

impl Default for ModelSettings {
    fn default() -> Self {
        Self {
            max_file_bytes: 8 * 1024 * 1024,
        }
    }
}

/// Limits and timings of the MT5 bridge protocol.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Mt5Settings {
    /// Largest accepted frame; a larger one closes the connection with 1009.
    pub max_frame_bytes: usize,
    /// Sustained frames per second one connection may send; beyond the burst the connection is closed (1008).
    pub max_frames_per_sec: u32,
    pub frame_burst: u32,
    /// Bad frames tolerated on one connection before it is closed (1008).
    pub max_bad_frames: u32,
    pub hello_timeout_ms: u64,
    pub heartbeat_interval_ms: u64,
    /// Silence after which a session is declared lost.
    pub heartbeat_timeout_ms: u64,
    /// After a start, how long strategies wait for a terminal to fill the gap between the stored bars and now
    /// before they warm up from the store alone (a terminal attaching later still fills it: the warm
    /// strategies catch up with those bars). 0: never wait.
    pub warm_up_wait_ms: u64,
}

/// Several trellis nodes on one PostgreSQL, each tenant owned by one node under a fenced lease.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterSettings {
    /// Run tenants only under a lease (needs `storage.postgres_url`). Off: this node runs every tenant.
    pub enabled: bool,
    /// This node's name, unique in the cluster; empty: `<hostname>-<port>`.
    pub node_id: String,
    /// Where bridges and clients reach this node (`http://host:port`); empty: `http://127.0.0.1:<port>`.
    /// Bridges are redirected to `<url>/ws/mt5`, admin calls forwarded to `<url>/api/v1/…`.
    pub advertise_url: String,
    /// How long a lease lives without renewal: a dead node's tenants move after at most this long.
    pub lease_ms: u64,
    /// How often leases are renewed and placement runs; well inside `lease_ms`.
    pub renew_ms: u64,
    /// A node whose last heartbeat is older than this is dead for placement (fair shares).
    pub node_timeout_ms: u64,
    /// Move tenants to a node that joins (graceful hand-off) so each node holds its fair share.
    pub rebalance: bool,
}

impl Default for ClusterSettings {
    fn default() -> Self {
        Self {
            enabled: false,
            node_id: String::new(),
            advertise_url: String::new(),
            lease_ms: 6_000,
            renew_ms: 1_000,
            node_timeout_ms: 6_000,
            rebalance: true,
        }
    }
}

/// The log tiers: what moves when, where the cold tier lives, and what each tier costs.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogTierSettings {
    /// Keep logs at all (trade log, audit, supervision, application logs at `app_level` and above).
    pub enabled: bool,
    /// A day moves hot → warm once it ended this long ago (entries stay hot 24 to 48 hours).
    pub hot_ms: u64,
    /// A day moves warm → cold once it ended this many days ago.
    pub warm_days: u64,
    /// Cold files older than this many days are deleted (7 years).
    pub cold_retention_days: u64,
    /// How often the mover runs.
    pub interval_ms: u64,
    /// Where the cold tier's files go: empty = `<data_dir>/logs`; or `s3://bucket/prefix` with `s3_*`.
    pub cold_url: String,
    /// S3-compatible endpoint (empty = AWS), region and credentials for an `s3://` cold tier.
    pub s3_endpoint: String,
    pub s3_region: String,
    pub s3_access_key_id: String,
    pub s3_secret_access_key: String,
    /// Application (tracing) events kept, at this level and above: error, warn, info, debug.
    pub app_level: String,
    /// Dollars per GB-month of each tier (defaults: the prices the cost comparison was made with).
    pub price_hot: f64,
    pub price_warm: f64,
    pub price_cold: f64,
}

impl Default for LogTierSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            hot_ms: 24 * 3_600_000,
            warm_days: 30,
            cold_retention_days: 2_555,
            interval_ms: 60_000,
            cold_url: String::new(),
            s3_endpoint: String::new(),
            s3_region: "us-east-1".into(),
            s3_access_key_id: String::new(),
            s3_secret_access_key: String::new(),
            app_level: "info".into(),
            price_hot: 0.90,
            price_warm: 0.425,
            price_cold: 0.18,
        }
    }
}

impl ClusterSettings {
    pub fn lease(&self) -> Duration {
        Duration::from_millis(self.lease_ms)
    }

    pub fn renew(&self) -> Duration {
        Duration::from_millis(self.renew_ms)
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpSettings {
    pub host: IpAddr,
    /// 0 binds any free port; `Application::port` tells which.
    pub port: u16,
    /// Largest accepted HTTP request body in bytes.
    pub max_body_bytes: usize,
    /// Serve `/ws/mt5` on a listener of its own ([`Self::bridge_port`]) with threads of its own, so that a
    /// bridge's ticks and orders never queue behind REST calls or trading clients' writes. `/ws/mt5` stays
    /// on [`Self::port`] too (clusters redirect bridges there), sharing the API's threads.
    #[serde(default)]
    pub bridge_listener: bool,
    /// The bridges' listener port; 0 binds any free port (`Application::bridge_port` tells which).
    #[serde(default)]
    pub bridge_port: u16,
}

/// How trellis spreads its work over threads (docs/architecture.md, "Threads"): trading never waits for
/// a thread that serves clients, the API or background jobs.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ThreadSettings {
    /// Threads (actix arbiters) that run the tenants' trading actors: sessions, market data, strategies,
    /// models, risk and portfolio. 0 = one per core, at most 8.
    #[serde(default)]
    pub trading_threads: usize,
    /// Threads of the bridges' own listener (socket reads, frame decoding, order frames written).
    #[serde(default = "one")]
    pub bridge_threads: usize,
    /// Threads of the API server: REST, the dashboard, `/ws/v1/client` fan-out. 0 = one per core.
    #[serde(default)]
    pub api_threads: usize,
    /// The API threads' niceness (0-19) when bridges have their own listener: under load the kernel gives
    /// trading the larger share of the cores. 0 leaves them equal to trading.
    #[serde(default = "api_nice")]
    pub api_nice: i32,
    /// Threads that run the strategies of tenants' WebAssembly modules, apart from the trading threads:
    /// a module that spins until its limit delays other modules, never a native strategy. 0 = one.
    #[serde(default = "one")]
    pub module_threads: usize,
    /// Wall time one call into a module may take live, in µs, besides its fuel (0: fuel only). Backtests
    /// and optimisations use fuel alone, so they stay deterministic.
    #[serde(default = "module_call_deadline_us")]
    pub module_call_deadline_us: u64,
}

fn module_call_deadline_us() -> u64 {
    2_000
}

fn one() -> usize {
    1
}

fn api_nice() -> i32 {
    5
}

impl Default for ThreadSettings {
    fn default() -> Self {
        Self {
            trading_threads: 0,
            bridge_threads: one(),
            api_threads: 0,
            api_nice: api_nice(),
            module_threads: one(),
            module_call_deadline_us: module_call_deadline_us(),
        }
    }
}

impl ThreadSettings {
    /// Trading threads to start: the setting, or one per core (at most 8) when 0.
    pub fn trading(&self) -> usize {
        match self.trading_threads {
            0 => std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(2)
                .clamp(1, 8),
            n => n,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorageSettings {
    /// Directory of the embedded SQLite store (and of ClickHouse spill files).
    pub data_dir: PathBuf,
    /// PostgreSQL URL of the application role (neither superuser nor BYPASSRLS) for tenants, orders and
    /// fills; the embedded store when empty.
    #[serde(default)]
    pub postgres_url: String,
    /// PostgreSQL URL of the owner role that runs migrations (`trellis migrate`, and at start-up when set).
    #[serde(default)]
    pub postgres_migrate_url: String,
    /// Redis for the hot cache (latest ticks, position snapshots); none when empty.
    #[serde(default)]
    pub redis_url: String,
    /// ClickHouse HTTP endpoint for ticks, bars and fills; the embedded store when empty.
    #[serde(default)]
    pub clickhouse_url: String,
    #[serde(default = "default_clickhouse_database")]
    pub clickhouse_database: String,
    /// Rows held in memory while ClickHouse is away before spilling to `<data_dir>/spill/`.
    #[serde(default = "default_buffer_rows")]
    pub clickhouse_buffer_rows: usize,
    /// This deployment's name in stores it may share with others (Redis keys and channels); empty: derived
    /// from its PostgreSQL database or data directory (`Settings::namespace`).
    #[serde(default)]
    pub namespace: String,
}

fn default_clickhouse_database() -> String {
    "trellis".to_owned()
}

fn default_buffer_rows() -> usize {
    1_000_000
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Pretty,
    Json,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogSettings {
    pub format: LogFormat,
    /// `tracing_subscriber::EnvFilter` directives; `RUST_LOG` wins when set.
    pub level: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SupervisionSettings {
    pub max_restarts: u32,
    pub window_secs: u64,
    pub backoff_base_ms: u64,
    pub backoff_max_ms: u64,
    pub history: usize,
}

impl SupervisionSettings {
    pub fn window(&self) -> Duration {
        Duration::from_secs(self.window_secs)
    }
    pub fn backoff_base(&self) -> Duration {
        Duration::from_millis(self.backoff_base_ms)
    }
    pub fn backoff_max(&self) -> Duration {
        Duration::from_millis(self.backoff_max_ms)
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShutdownSettings {
    pub grace_secs: u64,
}

impl Settings {
    /// A short name for this deployment in stores shared with others (Redis keys and channels): nodes of one
    /// deployment share its PostgreSQL database (or, without one, its data directory), so the name is a
    /// digest of that database's address (credentials left out) or of the directory's absolute path.
    pub fn namespace(&self) -> String {
        use sha2::Digest;
        if !self.storage.namespace.is_empty() {
            return self.storage.namespace.clone();
        }
        let pg = self.storage.postgres_url.trim();
        let place = if pg.is_empty() {
            std::path::absolute(&self.storage.data_dir)
                .unwrap_or_else(|_| self.storage.data_dir.clone())
                .display()
                .to_string()
        } else {
            let rest = pg.split_once("://").map_or(pg, |(_, r)| r);
            let rest = rest.rsplit_once('@').map_or(rest, |(_, r)| r);
            rest.split('?').next().unwrap_or(rest).to_owned()
        };
        sha2::Sha256::digest(place.as_bytes())[..6]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    /// Loads the profile named by `TRELLIS_ENV` with the process environment's overrides.
    pub fn from_env(extra_file: Option<&Path>) -> Result<Self, ConfigError> {
        let profile = Profile::parse(&std::env::var(ENV_VAR).unwrap_or_default())?;
        Self::load(profile, extra_file, std::env::vars())
    }

    /// Loads `profile`, then `extra_file`, then the `TRELLIS__…` entries of `vars` (other entries are ignored).
    /// Tests pass their own `vars` so they never touch the process environment.
    pub fn load(
        profile: Profile,
        extra_file: Option<&Path>,
        vars: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let prefix = format!("{OVERRIDE_PREFIX}__");
        let overrides: HashMap<String, String> = vars
            .into_iter()
            .filter(|(k, _)| k.starts_with(&prefix))
            .collect();
        let mut builder =
            Config::builder().add_source(File::from_str(DEFAULT_TOML, FileFormat::Toml));
        if let Some(overlay) = profile.overlay() {
            builder = builder.add_source(File::from_str(overlay, FileFormat::Toml));
        }
        if let Some(path) = extra_file {
            builder = builder.add_source(File::from(path).required(true));
        }
        builder = builder.add_source(
            Environment::with_prefix(OVERRIDE_PREFIX)
                .prefix_separator("__")
                .separator("__")
                .try_parsing(true)
                .source(Some(overrides)),
        );
        let raw = builder.build().map_err(|e| ConfigError(e.to_string()))?;
        let settings: Settings = raw
            .try_deserialize()
            .map_err(|e| ConfigError(describe(e)))?;
        settings.validate()?;
        Ok(settings)
    }

    /// Checks the relations serde can't express.
    fn validate(&self) -> Result<(), ConfigError> {
        let fail = |key: &str, why: &str| Err(ConfigError(format!("{key}: {why}")));
        if self.http.max_body_bytes == 0 {
            return fail("http.max_body_bytes", "must be greater than 0");
        }
        if !(0..=19).contains(&self.threads.api_nice) {
            return fail("threads.api_nice", "must be between 0 and 19");
        }
        if self.threads.bridge_threads == 0 {
            return fail("threads.bridge_threads", "must be at least 1");
        }
        if self.http.bridge_listener
            && self.http.bridge_port != 0
            && self.http.bridge_port == self.http.port
        {
            return fail("http.bridge_port", "must differ from http.port");
        }
        if !self
            .storage
            .namespace
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return fail("storage.namespace", "letters, digits, '-' and '_' only");
        }
        let lt = &self.log_tiers;
        if lt.interval_ms == 0 || lt.warm_days == 0 || lt.cold_retention_days <= lt.warm_days {
            return fail(
                "log_tiers",
                "interval_ms and warm_days must be positive and cold_retention_days longer than warm_days",
            );
        }
        if !["error", "warn", "info", "debug"].contains(&lt.app_level.as_str()) {
            return fail("log_tiers.app_level", "must be error, warn, info or debug");
        }
        if [lt.price_hot, lt.price_warm, lt.price_cold]
            .iter()
            .any(|p| !p.is_finite() || *p < 0.0)
        {
            return fail("log_tiers.price_*", "must be finite and not negative");
        }
        if !lt.cold_url.is_empty() && !lt.cold_url.starts_with("s3://") {
            return fail(
                "log_tiers.cold_url",
                "must be empty (local files) or s3://bucket[/prefix]",
            );
        }
        if !self.storage.clickhouse_url.trim().is_empty()
            && !self.storage.clickhouse_url.starts_with("http")
        {
            return fail(
                "storage.clickhouse_url",
                "must be an http:// or https:// URL of ClickHouse's HTTP interface",
            );
        }
        if !self
            .storage
            .clickhouse_database
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_')
            || self.storage.clickhouse_database.is_empty()
        {
            return fail(
                "storage.clickhouse_database",
                "must be letters, digits or _",
            );
        }
        if self.supervision.window_secs == 0 {
            return fail("supervision.window_secs", "must be greater than 0");
        }
        if self.supervision.backoff_max_ms < self.supervision.backoff_base_ms {
            return fail(
                "supervision.backoff_max_ms",
                "must not be smaller than supervision.backoff_base_ms",
            );
        }
        if self.supervision.history == 0 {
            return fail("supervision.history", "must be greater than 0");
        }
        if self.log.level.trim().is_empty() {
            return fail("log.level", "must not be empty");
        }
        if self.mt5.max_frame_bytes < 256 {
            return fail("mt5.max_frame_bytes", "must be at least 256");
        }
        if self.mt5.max_frames_per_sec == 0 || self.mt5.frame_burst == 0 {
            return fail(
                "mt5.max_frames_per_sec",
                "the frame budget must be greater than 0",
            );
        }
        if self.mt5.heartbeat_interval_ms == 0
            || self.mt5.heartbeat_timeout_ms <= self.mt5.heartbeat_interval_ms
        {
            return fail(
                "mt5.heartbeat_timeout_ms",
                "must be greater than mt5.heartbeat_interval_ms (and the interval greater than 0)",
            );
        }
        if self.cluster.enabled {
            if self.storage.postgres_url.trim().is_empty() {
                return fail(
                    "cluster.enabled",
                    "a cluster shares PostgreSQL: set storage.postgres_url",
                );
            }
            if self.cluster.renew_ms == 0 || self.cluster.renew_ms * 3 > self.cluster.lease_ms {
                return fail(
                    "cluster.renew_ms",
                    "must be greater than 0 and at most a third of cluster.lease_ms",
                );
            }
            if self.cluster.node_timeout_ms < self.cluster.renew_ms * 2 {
                return fail(
                    "cluster.node_timeout_ms",
                    "must be at least twice cluster.renew_ms",
                );
            }
            if !self.cluster.advertise_url.is_empty()
                && !self.cluster.advertise_url.starts_with("http")
            {
                return fail(
                    "cluster.advertise_url",
                    "must be an http:// or https:// URL",
                );
            }
        }
        let mut ids = std::collections::HashSet::new();
        let mut keys = std::collections::HashSet::new();
        for (i, t) in self.tenants.iter().enumerate() {
            let at = |field: &str| format!("tenants[{i}].{field}");
            if t.id.is_empty()
                || !t
                    .id
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            {
                return Err(ConfigError(format!(
                    "{}: `{}` must be non-empty letters, digits, - or _",
                    at("id"),
                    t.id
                )));
            }
            if !ids.insert(t.id.clone()) {
                return Err(ConfigError(format!(
                    "{}: duplicate tenant `{}`",
                    at("id"),
                    t.id
                )));
            }
            if !crate::domain::tier::TIERS.contains(&t.tier.as_str()) {
                return Err(ConfigError(format!(
                    "{}: `{}` is not a tier (free, basic, professional, enterprise)",
                    at("tier"),
                    t.tier
                )));
            }
            for key in &t.api_keys {
                if key.len() < 16 {
                    return Err(ConfigError(format!(
                        "{}: an API key must have at least 16 characters",
                        at("api_keys")
                    )));
                }
                if !keys.insert(key.clone()) {
                    return Err(ConfigError(format!(
                        "{}: an API key is used twice",
                        at("api_keys")
                    )));
                }
            }
            let mut strategy_ids = std::collections::HashSet::new();
            for (j, s) in t.strategies.iter().enumerate() {
                let at = |field: &str| format!("tenants[{i}].strategies[{j}].{field}");
                if !strategy_ids.insert(s.id.clone()) {
                    return Err(ConfigError(format!(
                        "{}: duplicate strategy `{}`",
                        at("id"),
                        s.id
                    )));
                }
                if !t.symbols.contains(&s.symbol) {
                    return Err(ConfigError(format!(
                        "{}: `{}` is not one of the tenant's symbols",
                        at("symbol"),
                        s.symbol
                    )));
                }
                if crate::domain::Timeframe::parse(&s.timeframe).is_none() {
                    return Err(ConfigError(format!(
                        "{}: `{}` is not M1, M5, M15, H1, H4 or D1",
                        at("timeframe"),
                        s.timeframe
                    )));
                }
            }
        }
        Ok(())
    }
}

/// Makes config's messages name the key even for unknown fields, which it reports without a path.
fn describe(error: config::ConfigError) -> String {
    let text = error.to_string();
    match text.find("unknown field") {
        Some(_) if !text.contains(" for key ") => {
            format!("{text} (check the section names in config/default.toml)")
        }
        _ => text,
    }
}
