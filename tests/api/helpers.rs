//! Starting the real application for a test, and small typed request helpers.

use std::time::Duration;

use serde_json::Value;
use tempfile::TempDir;
use trellis::actors::tree::Runtime;
use trellis::config::{Profile, Settings};
use trellis::startup::{Application, StopHandle};

/// A running trellis on a free port with fresh stores.
pub struct TestApp {
    pub address: String,
    pub port: u16,
    pub runtime: Runtime,
    pub security: std::sync::Arc<trellis::security::service::Security>,
    pub stop: StopHandle,
    pub serving: actix_rt::task::JoinHandle<anyhow::Result<()>>,
    pub data_dir: TempDir,
    /// The `TRELLIS__STORAGE__…` settings of the real profile (empty for the embedded one).
    pub store_vars: Vec<(String, String)>,
}

/// The stores of a stopped app, for starting another on the same data.
pub struct KeptStore {
    pub data_dir: TempDir,
    pub vars: Vec<(String, String)>,
}

impl KeptStore {
    pub fn path(&self) -> &std::path::Path {
        self.data_dir.path()
    }
}

/// `TRELLIS_TEST_PROFILE=real` runs the suite on PostgreSQL, ClickHouse and Redis (started by scripts/test.sh);
/// otherwise on the embedded SQLite store.
pub fn real_profile() -> bool {
    std::env::var("TRELLIS_TEST_PROFILE").is_ok_and(|p| p == "real")
}

/// A fresh PostgreSQL database and ClickHouse database for one app, as `TRELLIS__STORAGE__…` settings.
pub async fn real_store_vars() -> Vec<(String, String)> {
    let admin = std::env::var("TRELLIS_TEST_POSTGRES_URL")
        .expect("TRELLIS_TEST_POSTGRES_URL (scripts/test.sh sets it)");
    let clickhouse = std::env::var("TRELLIS_TEST_CLICKHOUSE_URL")
        .expect("TRELLIS_TEST_CLICKHOUSE_URL (scripts/test.sh sets it)");
    let redis = std::env::var("TRELLIS_TEST_REDIS_URL")
        .expect("TRELLIS_TEST_REDIS_URL (scripts/test.sh sets it)");
    let (name, owner_url, app_url) = new_pg_database(&admin, "t").await;
    vec![
        ("TRELLIS__STORAGE__REDIS_URL".into(), redis),
        ("TRELLIS__STORAGE__POSTGRES_MIGRATE_URL".into(), owner_url),
        ("TRELLIS__STORAGE__POSTGRES_URL".into(), app_url),
        ("TRELLIS__STORAGE__CLICKHOUSE_URL".into(), clickhouse),
        ("TRELLIS__STORAGE__CLICKHOUSE_DATABASE".into(), name),
    ]
}

/// Creates an empty database (named `<prefix>_<uuid>`) with the superuser at `admin`; returns its name, its
/// owner URL (the superuser's, which migrations use) and the application role's URL.
pub async fn new_pg_database(admin: &str, prefix: &str) -> (String, String, String) {
    let name = format!("{prefix}_{}", uuid::Uuid::new_v4().simple());
    let pool = sqlx::PgPool::connect(admin)
        .await
        .expect("PostgreSQL reachable");
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&pool)
        .await
        .expect("database created");
    pool.close().await;
    let (base, _) = admin.rsplit_once('/').expect("URL with a database");
    let host = base
        .rsplit_once('@')
        .map(|(_, h)| h)
        .expect("URL with a user");
    let app_url = format!("postgres://trellis_app@{host}/{name}");
    let owner_url = format!("{base}/{name}");
    (name, owner_url, app_url)
}

/// Test settings (`config/test.toml`) on `store`, with the given `TRELLIS__…` overrides.
pub fn test_settings(store: &KeptStore, overrides: &[(&str, &str)]) -> Settings {
    let mut vars: Vec<(String, String)> = vec![(
        "TRELLIS__STORAGE__DATA_DIR".into(),
        store.data_dir.path().display().to_string(),
    )];
    vars.extend(store.vars.iter().cloned());
    vars.extend(
        overrides
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string())),
    );
    Settings::load(Profile::Test, None, vars).expect("test settings are valid")
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(&[]).await
}

pub async fn spawn_app_with(overrides: &[(&str, &str)]) -> TestApp {
    let vars = if real_profile() {
        real_store_vars().await
    } else {
        Vec::new()
    };
    let store = KeptStore {
        data_dir: tempfile::tempdir().expect("temp dir"),
        vars,
    };
    spawn_app_on(store, overrides).await
}

/// Starts an app on the stores another one left.
pub async fn spawn_app_on(store: KeptStore, overrides: &[(&str, &str)]) -> TestApp {
    let settings = test_settings(&store, overrides);
    let app = Application::build(settings)
        .await
        .expect("application builds");
    let port = app.port();
    let runtime = app.runtime().clone();
    let security = app.security().clone();
    let stop = app.stop_handle();
    let serving = actix_rt::spawn(app.run_until_stopped());
    TestApp {
        address: format!("http://127.0.0.1:{port}"),
        port,
        runtime,
        security,
        stop,
        serving,
        data_dir: store.data_dir,
        store_vars: store.vars,
    }
}

impl TestApp {
    /// GET `path`, returning the status and the body parsed as JSON (or as a JSON string when it is not).
    pub async fn get(&self, path: &str) -> (u16, Value) {
        let (status, body) = self.get_text(path).await;
        let json = serde_json::from_str(&body).unwrap_or(Value::String(body));
        (status, json)
    }

    pub async fn get_text(&self, path: &str) -> (u16, String) {
        let mut resp = awc::Client::default()
            .get(format!("{}{}", self.address, path))
            .timeout(Duration::from_secs(10))
            .send()
            .await
            .expect("request sent");
        let body = resp
            .body()
            .limit(16 * 1024 * 1024)
            .await
            .expect("body read");
        (
            resp.status().as_u16(),
            String::from_utf8_lossy(&body).into_owned(),
        )
    }

    /// Polls `/ready` until it answers 200 (storage open) or the time runs out.
    pub async fn wait_ready(&self) -> Value {
        let mut last = Value::Null;
        for _ in 0..200 {
            let (status, body) = self.get("/ready").await;
            if status == 200 {
                return body;
            }
            last = body;
            actix_rt::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("trellis never became ready: {last}");
    }

    /// Fires the shutdown and waits for `run_until_stopped` to return.
    pub async fn shutdown(self) {
        drop(self.shutdown_keeping_data().await);
    }

    /// Shuts down and hands back the stores, for a restart on the same data.
    pub async fn shutdown_keeping_data(self) -> KeptStore {
        self.stop.stop();
        let result = tokio::time::timeout(Duration::from_secs(20), self.serving)
            .await
            .expect("shutdown completes in time")
            .expect("serve task did not panic");
        result.expect("run_until_stopped returns Ok");
        KeptStore {
            data_dir: self.data_dir,
            vars: self.store_vars,
        }
    }
}

// ---- trading helpers ------------------------------------------------------------------------------------

use std::collections::BTreeMap;
use std::sync::Arc;

use rust_decimal::Decimal;
use trellis::actors::messages::{GetPortfolio, PortfolioSnapshot};
use trellis::actors::tenant::TenantContext;
use trellis::domain::tenant::{RiskSettings, StrategySettings, TenantSettings};
use trellis::domain::{Symbol, Tick};
use trellis::sim::{SimConfig, SimHandle};

/// Minute-aligned start of scripted tick times.
pub const T0: i64 = 1_700_000_040_000;
pub const MINUTE: i64 = 60_000;

pub fn d(s: &str) -> Decimal {
    s.parse().expect("decimal literal")
}

/// A lot size or a money limit (greater than 0).
pub fn p(s: &str) -> trellis::domain::schema::PositiveDecimal {
    s.parse().expect("positive decimal literal")
}

/// A tenant trading EURUSD (and GBPUSD) with one ema_cross 2/3 on EURUSD M1, 0.1 lots.
pub fn tenant(id: &str, key: &str) -> TenantSettings {
    TenantSettings {
        id: id.into(),
        name: format!("{id} Ltd"),
        tier: "professional".into(),
        api_keys: vec![key.into()],
        symbols: vec!["EURUSD".into(), "GBPUSD".into()],
        contract_sizes: Default::default(),
        risk: RiskSettings::default(),
        strategies: vec![ema("ema-eurusd", "EURUSD")],
        models: Vec::new(),
    }
}

pub fn ema(id: &str, symbol: &str) -> StrategySettings {
    StrategySettings {
        id: id.into(),
        kind: "ema_cross".into(),
        symbol: symbol.into(),
        timeframe: "M1".into(),
        volume: p("0.1"),
        account: None,
        params: BTreeMap::from([("fast".to_owned(), 2.0), ("slow".to_owned(), 3.0)]),
        enabled: true,
        on_failure: Default::default(),
        model: None,
    }
}

/// `n` EURUSD ticks a minute apart from T0, bids 1.1000, 1.1010, 1.1020, …: with ema_cross 2/3 the fourth
/// closes the third bar and the strategy buys 0.1.
pub fn rising(sim: &SimHandle, n: i64) {
    for i in 0..n {
        sim.tick(tick(
            "EURUSD",
            T0 + i * MINUTE,
            &format!("1.10{i}0"),
            &format!("1.10{i}2"),
        ));
    }
}

pub fn tick(symbol: &str, t: i64, bid: &str, ask: &str) -> Tick {
    Tick {
        symbol: Symbol::new(symbol),
        time_msc: t,
        bid: d(bid),
        ask: d(ask),
    }
}

impl TestApp {
    pub fn ws_url(&self) -> String {
        format!("ws://127.0.0.1:{}/ws/mt5", self.port)
    }

    pub async fn add_tenant(&self, settings: TenantSettings) -> Arc<TenantContext> {
        self.runtime
            .start_tenant(settings)
            .await
            .expect("tenant starts")
    }

    /// A simulated terminal for `login`, connected (waits for the welcome).
    pub async fn sim(&self, key: &str, login: u64) -> SimHandle {
        let mut cfg = SimConfig::new(self.ws_url(), key, login);
        cfg.heartbeat_ms = 200;
        let sim = trellis::sim::spawn(cfg);
        wait_for("the simulator to connect", || sim.stats().connected).await;
        sim
    }

    pub async fn portfolio(&self, tenant: &str) -> PortfolioSnapshot {
        let t = self.runtime.tenant(tenant).expect("tenant runs");
        for _ in 0..200 {
            if let Some(p) = t.portfolio.get() {
                if let Ok(snap) = p.send(GetPortfolio).await {
                    return snap;
                }
            }
            actix_rt::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("portfolio of {tenant} unreachable");
    }

    /// Waits until the tenant's portfolio satisfies `done`.
    pub async fn wait_portfolio(
        &self,
        tenant: &str,
        what: &str,
        done: impl Fn(&PortfolioSnapshot) -> bool,
    ) -> PortfolioSnapshot {
        for _ in 0..500 {
            let snap = self.portfolio(tenant).await;
            if done(&snap) {
                return snap;
            }
            actix_rt::time::sleep(Duration::from_millis(10)).await;
        }
        let snap = self.portfolio(tenant).await;
        panic!("timed out waiting for {what}: {snap:#?}");
    }
}

impl TestApp {
    /// The entries (as JSON) of `tenant`'s audit chain with `action`, once at least `at_least` are there —
    /// actors append asynchronously — or whatever is there after 2 s.
    pub async fn audited(&self, tenant: &str, action: &str, at_least: usize) -> Vec<Value> {
        let filter = trellis::storage::security::AuditFilter {
            action: Some(action.into()),
            limit: 100,
            ..Default::default()
        };
        let mut entries = Vec::new();
        for _ in 0..100 {
            entries = self
                .security
                .audit_entries(tenant, &filter)
                .await
                .expect("audit");
            if entries.len() >= at_least {
                break;
            }
            actix_rt::time::sleep(Duration::from_millis(20)).await;
        }
        entries.into_iter().map(|e| e.entry).collect()
    }
}

/// Polls `done` every 10 ms for up to 15 s (a loaded CI machine stretches restarts and reconnects; a wait
/// that succeeds returns at once, so only a failure pays the whole budget).
pub async fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    for _ in 0..1_500 {
        if done() {
            return;
        }
        actix_rt::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("timed out waiting for {what}");
}

impl TestApp {
    /// Waits until `strategy` of `tenant` has handled the bar opened at `bar_open_ms` and the portfolio has
    /// no order in flight: every consequence of that bar is then recorded. (The strategy answers a query only
    /// after the bars before it, and its signal reaches the portfolio before the portfolio query does.)
    pub async fn settle(&self, tenant: &str, strategy: &str, bar_open_ms: i64) {
        let t = self.runtime.tenant(tenant).expect("tenant runs");
        let mut seen = None;
        for _ in 0..1_000 {
            let host = t.strategy_host(strategy);
            if let Some(host) = host {
                if let Ok(state) = host.send(trellis::actors::messages::GetStrategyState).await {
                    seen = state.last_bar_ms;
                    if seen.is_some_and(|b| b >= bar_open_ms) {
                        break;
                    }
                }
            }
            actix_rt::time::sleep(Duration::from_millis(5)).await;
        }
        assert!(
            seen.is_some_and(|b| b >= bar_open_ms),
            "{strategy} never handled bar {bar_open_ms} (last {seen:?})"
        );
        self.wait_portfolio(tenant, "no order in flight", |p| {
            p.orders.iter().all(|o| o.status.is_final())
        })
        .await;
    }
}

impl TestApp {
    /// GET `path` with an API key: status, the rate-limit headers (`Retry-After`, `RateLimit`,
    /// `RateLimit-Policy`, when present) and the JSON body.
    pub async fn get_as(
        &self,
        path: &str,
        key: Option<&str>,
    ) -> (u16, std::collections::HashMap<String, String>, Value) {
        let mut req = awc::Client::default()
            .get(format!("{}{}", self.address, path))
            .timeout(Duration::from_secs(10));
        if let Some(k) = key {
            req = req.insert_header(("X-API-Key", k));
        }
        let mut resp = req.send().await.expect("request sent");
        let headers = ["retry-after", "ratelimit", "ratelimit-policy"]
            .iter()
            .filter_map(|h| {
                resp.headers()
                    .get(*h)
                    .and_then(|v| v.to_str().ok())
                    .map(|v| (h.to_string(), v.to_owned()))
            })
            .collect();
        let body = resp.body().await.expect("body");
        (
            resp.status().as_u16(),
            headers,
            serde_json::from_slice(&body).unwrap_or(Value::Null),
        )
    }
}

/// The URL of a test server from `var` (set by scripts/test.sh), or `None` with a note outside CI; under CI a
/// missing server is a failure.
///
/// A test that asks for a server by name sets up its stores itself, so it does the same in both passes of
/// the suite; it runs in the real-profile pass (`TRELLIS_TEST_PROFILE=real`) only, instead of twice.
pub fn service_url(var: &str) -> Option<String> {
    if !real_profile() {
        eprintln!("skipped in the embedded pass: a test of {var} runs in the real-profile pass");
        return None;
    }
    match std::env::var(var) {
        Ok(url) if !url.is_empty() => Some(url),
        _ if std::env::var("CI").is_ok_and(|v| v == "true") => {
            panic!("{var} is not set under CI: scripts/test.sh starts it")
        }
        _ => {
            eprintln!("skipped: {var} is not set (run scripts/test.sh to start the test servers)");
            None
        }
    }
}

/// A TCP port nothing listens on right now, for a server a test starts itself.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

// ---- admin API helpers ----------------------------------------------------------------------------------

/// An answer of the HTTP API.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: std::collections::HashMap<String, String>,
    pub body: Value,
}

/// The platform administrator the admin-API tests start with.
pub const ROOT_EMAIL: &str = "root@trellis.test";
pub const ROOT_PASSWORD: &str = "root-password-for-tests";
/// A known JWT signing secret (`k1`), so tests can forge tokens the way an attacker would try to.
pub const JWT_SECRET: &[u8; 32] = b"test-signing-secret-32-bytes-abc";

pub fn jwt_secrets_var() -> String {
    use base64::Engine as _;
    format!(
        "k1:{}",
        base64::engine::general_purpose::STANDARD.encode(JWT_SECRET)
    )
}

impl TestApp {
    /// Any request: `auth` is a bearer token or API key; `body` is sent as JSON.
    pub async fn call(
        &self,
        method: &str,
        path: &str,
        auth: Option<&str>,
        body: Option<&Value>,
    ) -> Reply {
        match body {
            Some(b) => {
                let bytes = serde_json::to_vec(b).expect("JSON body");
                self.call_raw(method, path, auth, "application/json", bytes)
                    .await
            }
            None => self.call_raw(method, path, auth, "", Vec::new()).await,
        }
    }

    /// A request with a body of any content type (none when `content_type` is empty).
    pub async fn call_raw(
        &self,
        method: &str,
        path: &str,
        auth: Option<&str>,
        content_type: &str,
        body: Vec<u8>,
    ) -> Reply {
        let method = awc::http::Method::from_bytes(method.as_bytes()).expect("method");
        let mut req = awc::Client::default()
            .request(method, format!("{}{}", self.address, path))
            .timeout(Duration::from_secs(20));
        if let Some(a) = auth {
            req = req.insert_header(("Authorization", format!("Bearer {a}")));
        }
        let mut resp = if content_type.is_empty() {
            req.send().await
        } else {
            req.insert_header(("Content-Type", content_type))
                .send_body(body)
                .await
        }
        .expect("request sent");
        let headers = resp
            .headers()
            .iter()
            .filter_map(|(k, v)| Some((k.as_str().to_owned(), v.to_str().ok()?.to_owned())))
            .collect();
        let bytes = resp.body().limit(16 * 1024 * 1024).await.expect("body");
        Reply {
            status: resp.status().as_u16(),
            headers,
            body: serde_json::from_slice(&bytes)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned())),
        }
    }

    /// Signs in; panics unless it works. Answers the access and refresh tokens.
    pub async fn login(&self, email: &str, password: &str) -> (String, String) {
        let r = self
            .call(
                "POST",
                "/api/v1/auth/login",
                None,
                Some(&serde_json::json!({"email": email, "password": password})),
            )
            .await;
        assert_eq!(r.status, 200, "login of {email}: {:?}", r.body);
        (
            r.body["access_token"].as_str().expect("access").to_owned(),
            r.body["refresh_token"]
                .as_str()
                .expect("refresh")
                .to_owned(),
        )
    }

    /// `call` that must answer `status`; returns the body.
    pub async fn expect(
        &self,
        status: u16,
        method: &str,
        path: &str,
        auth: Option<&str>,
        body: Option<&Value>,
    ) -> Value {
        let r = self.call(method, path, auth, body).await;
        assert_eq!(r.status, status, "{method} {path}: {:?}", r.body);
        r.body
    }
}

/// An app with the bootstrap platform administrator (and a known JWT secret); answers it with the
/// administrator's access token.
pub async fn spawn_admin_app(extra: &[(&str, &str)]) -> (TestApp, String) {
    let secrets = jwt_secrets_var();
    let mut overrides: Vec<(&str, &str)> = vec![
        ("TRELLIS__BOOTSTRAP__ADMIN_EMAIL", ROOT_EMAIL),
        ("TRELLIS__BOOTSTRAP__ADMIN_PASSWORD", ROOT_PASSWORD),
        ("TRELLIS__SECURITY__JWT_SECRETS", &secrets),
    ];
    overrides.extend_from_slice(extra);
    let app = spawn_app_with(&overrides).await;
    let (token, _) = app.login(ROOT_EMAIL, ROOT_PASSWORD).await;
    (app, token)
}

/// Creates a tenant through the API (as `admin`).
pub async fn create_tenant(app: &TestApp, admin: &str, id: &str, tier: &str) {
    app.expect(
        201,
        "POST",
        "/api/v1/tenants",
        Some(admin),
        Some(&serde_json::json!({"id": id, "name": id, "tier": tier, "symbols": ["EURUSD", "GBPUSD"]})),
    )
    .await;
}

/// Creates a user of `tenant` with `role` and signs them in; answers (user id, access token).
pub async fn create_user(
    app: &TestApp,
    admin: &str,
    tenant: &str,
    email: &str,
    role: &str,
) -> (String, String) {
    let password = "a-password-of-twelve+";
    let body = app
        .expect(
            201,
            "POST",
            &format!("/api/v1/tenants/{tenant}/users"),
            Some(admin),
            Some(&serde_json::json!({"email": email, "password": password, "role": role})),
        )
        .await;
    let id = body["id"].as_str().expect("user id").to_owned();
    let (token, _) = app.login(email, password).await;
    (id, token)
}

/// Creates an API key of `tenant` with `scopes`; answers (key id, secret).
pub async fn create_key(
    app: &TestApp,
    admin: &str,
    tenant: &str,
    scopes: &[&str],
) -> (String, String) {
    let body = app
        .expect(
            201,
            "POST",
            &format!("/api/v1/tenants/{tenant}/api-keys"),
            Some(admin),
            Some(&serde_json::json!({"name": "test", "scopes": scopes})),
        )
        .await;
    (
        body["key"]["id"].as_str().expect("key id").to_owned(),
        body["secret"].as_str().expect("secret").to_owned(),
    )
}

/// An optimisation's ranked candidates without their wall-clock figures: (params, score, fills).
pub fn ranked(
    v: &serde_json::Value,
) -> Vec<(serde_json::Value, serde_json::Value, serde_json::Value)> {
    v["results"]
        .as_array()
        .map(|r| {
            r.iter()
                .map(|c| {
                    (
                        c["params"].clone(),
                        c["score"].clone(),
                        c["report"]["fills"].clone(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// What the app's hot log tier holds for `tenant` today (and yesterday, around midnight), in time order.
pub async fn hot_log(app: &TestApp, tenant: &str) -> Vec<trellis::storage::logs::LogEntry> {
    let Some(store) = app.runtime.logs.as_ref().and_then(|l| l.store()) else {
        return Vec::new();
    };
    let today = trellis::storage::logs::day_of(trellis::domain::now_ms());
    let mut out = store
        .hot
        .read_day(tenant, today - 1)
        .await
        .expect("hot tier");
    out.extend(store.hot.read_day(tenant, today).await.expect("hot tier"));
    out
}
