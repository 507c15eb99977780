//! `trellis demo`: the runtime on its embedded store, a demo tenant with `ema_cross` strategies on three
//! symbols, and an in-process simulated MT5 terminal connected over a real WebSocket — trading visibly
//! (a line per order and fill, a PnL summary every 10 seconds) until Ctrl-C.
//!
//! Market time in the demo runs 60× faster than the wall clock (each tick advances it by one second, about
//! 60 ticks a second), so M1 bars close about once a second and the first trades come within seconds.

use std::time::Duration;

use anyhow::Context as _;

use crate::actors::messages::{GetModelState, GetPortfolio};
use crate::config::Settings;
use crate::domain::schema::PositiveDecimal;
use crate::domain::tenant::{
    ModelDeploymentSettings, ModelVersionSettings, RiskSettings, StrategySettings, TenantSettings,
};
use crate::sim::feed::{pace, RandomWalk};
use crate::sim::{self, SimConfig};
use crate::startup::Application;

pub const DEMO_TENANT: &str = "demo";
pub const DEMO_LOGIN: u64 = 5_001;
/// The dashboard user the demo creates (a tenant administrator of the demo tenant).
pub const DEMO_USER: &str = "demo@trellis.local";
/// All quoted in USD, the demo account's currency: trellis reports PnL in each symbol's quote currency.
const SYMBOLS: [&str; 3] = ["EURUSD", "GBPUSD", "AUDUSD"];

/// The demo tenant: a random API key (printed once), three symbols, an `ema_cross` per symbol.
pub fn demo_tenant(api_key: String) -> TenantSettings {
    let d = |s: &str| s.parse::<PositiveDecimal>().ok();
    TenantSettings {
        id: DEMO_TENANT.into(),
        name: "Demo Trading Ltd".into(),
        tier: "professional".into(),
        api_keys: vec![api_key],
        symbols: SYMBOLS.iter().map(|s| s.to_string()).collect(),
        contract_sizes: Default::default(),
        risk: RiskSettings {
            max_order_volume: d("1"),
            max_net_position: d("0.5"),
            max_open_positions: Some(5),
            allowed_symbols: Vec::new(),
            max_daily_loss: d("5000"),
            max_drawdown: d("10000"),
            flatten_on_breach: true,
            ..RiskSettings::default()
        },
        strategies: SYMBOLS
            .iter()
            .map(|s| StrategySettings {
                id: format!("ema-{}", s.to_ascii_lowercase()),
                kind: "ema_cross".into(),
                symbol: s.to_string(),
                timeframe: "M1".into(),
                volume: d("0.1").unwrap_or(PositiveDecimal::ONE),
                account: Some(DEMO_LOGIN),
                params: [("fast".to_owned(), 3.0), ("slow".to_owned(), 8.0)].into(),
                enabled: true,
                on_failure: Default::default(),
                model: None,
            })
            .collect(),
        models: Vec::new(),
    }
}

/// A random API key in the `trk_<id>_<secret>` shape.
pub fn random_api_key() -> String {
    use rand::distributions::Alphanumeric;
    use rand::Rng;
    let mut rng = rand::thread_rng();
    let id: String = (&mut rng)
        .sample_iter(&Alphanumeric)
        .take(8)
        .map(char::from)
        .collect();
    let secret: String = (&mut rng)
        .sample_iter(&Alphanumeric)
        .take(40)
        .map(char::from)
        .collect();
    format!("trk_{id}_{secret}")
}

/// The demo's model: a hand-set linear model (momentum with a little mean reversion; not trained, so its
/// accuracy is whatever the random walk makes it), deployed in shadow on EURUSD M1: it predicts and is
/// monitored, and never trades. Written as an ONNX file with its manifest under `dir`.
pub fn demo_model(dir: &std::path::Path) -> anyhow::Result<ModelDeploymentSettings> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let file = dir.join("demo-momentum.onnx");
    let manifest = dir.join("demo-momentum.json");
    // features: log_return_1, ema_ratio_5_20, rsi_14 (0..1), tod_sin, tod_cos → expected return next bar
    let onnx = crate::models::onnx::linear_model(&[0.3, 0.5, -0.001, 0.0, 0.0], 0.0005);
    std::fs::write(&file, onnx).with_context(|| format!("writing {}", file.display()))?;
    let text = serde_json::json!({
        "features": ["log_return_1", "ema_ratio_5_20", "rsi_14", "tod_sin", "tod_cos"],
        "output": {"kind": "expected_return"},
        "horizon_bars": 1,
        "metrics": {},
    });
    std::fs::write(&manifest, text.to_string())
        .with_context(|| format!("writing {}", manifest.display()))?;
    Ok(ModelDeploymentSettings {
        id: "momentum-eurusd".into(),
        model: None,
        symbol: "EURUSD".into(),
        timeframe: "M1".into(),
        traffic: Vec::new(),
        shadow: vec![ModelVersionSettings::file(
            file.display().to_string(),
            manifest.display().to_string(),
            1.0,
        )],
        budget_us: 5_000,
        retrain: None,
    })
}

pub async fn run(mut settings: Settings) -> anyhow::Result<()> {
    // The demo's terminal starts with a fresh account each time, so its book starts fresh too: a throwaway
    // store under `<data_dir>/demo`, never the one `trellis serve` uses.
    settings.storage.data_dir = settings.storage.data_dir.join("demo");
    if settings.storage.data_dir.exists() {
        std::fs::remove_dir_all(&settings.storage.data_dir)
            .with_context(|| format!("clearing {}", settings.storage.data_dir.display()))?;
    }
    let api_key = random_api_key();
    settings.tenants.retain(|t| t.id != DEMO_TENANT);
    let mut tenant = demo_tenant(api_key.clone());
    tenant
        .models
        .push(demo_model(&settings.storage.data_dir.join("models"))?);
    settings.tenants.push(tenant);
    let app = Application::build(settings)
        .await
        .context("starting trellis")?;
    let port = app.port();
    let bridge_port = app.bridge_port();
    let runtime = app.runtime().clone();
    // A trader of the demo tenant for the dashboard, with a fresh password each run (printed below).
    let password = random_api_key().replacen("trk_", "", 1);
    app.security()
        .create_user(
            Some(DEMO_TENANT),
            DEMO_USER,
            &password,
            crate::security::rbac::Role::TenantAdmin,
            "demo",
        )
        .await
        .context("creating the demo's dashboard user")?;
    println!();
    println!("  trellis demo — http://127.0.0.1:{port}  (health: /health, readiness: /ready, metrics: /metrics)");
    println!("  demo tenant `{DEMO_TENANT}`, MT5 bridge URL ws://127.0.0.1:{bridge_port}/ws/mt5, API key {api_key}");
    println!(
        "  a simulated terminal (account {DEMO_LOGIN}) streams {} — Ctrl-C to stop",
        SYMBOLS.join(", ")
    );
    println!("  dashboard: http://127.0.0.1:{port}/ — sign in as {DEMO_USER} / {password}");
    println!();
    let serving = actix_web::rt::spawn(app.run_until_stopped());

    let terminal = sim::spawn(SimConfig::new(
        format!("ws://127.0.0.1:{bridge_port}/ws/mt5"),
        api_key,
        DEMO_LOGIN,
    ));
    let names: Vec<String> = SYMBOLS.iter().map(|s| s.to_string()).collect();
    let start = crate::domain::now_ms() - 86_400_000;
    let walk =
        RandomWalk::new(RandomWalk::default_symbols(&names), start, 1_000, 42).with_steps(8, 2);
    let feeder = terminal.feeder();
    let feeding = actix_web::rt::spawn(async move { pace(&feeder, walk, 60).await });

    let summary = actix_web::rt::spawn(async move {
        let mut every = tokio::time::interval(Duration::from_secs(10));
        every.tick().await;
        loop {
            every.tick().await;
            let Some(portfolio) = runtime.tenant(DEMO_TENANT).and_then(|t| t.portfolio.get())
            else {
                continue;
            };
            let Ok(snap) = portfolio.send(GetPortfolio).await else {
                continue;
            };
            let p = &snap.performance;
            let positions: Vec<String> = snap
                .positions
                .iter()
                .map(|p| {
                    format!(
                        "{} {} {}",
                        p.position.symbol,
                        p.position.side.as_str(),
                        p.position.volume
                    )
                })
                .collect();
            let model = match runtime
                .tenant(DEMO_TENANT)
                .and_then(|t| t.model_hosts.read().get("momentum-eurusd").cloned())
            {
                Some(host) => host.send(GetModelState).await.ok(),
                None => None,
            };
            let model = model
                .and_then(|m| {
                    let last = m.recent.last()?.clone();
                    let v = m.versions.first()?;
                    Some(format!(
                        " | shadow model: {} predictions, last {:+.5} in {} µs, accuracy {}",
                        v.served,
                        last.value,
                        last.latency_us,
                        v.monitoring
                            .directional_accuracy
                            .map_or("–".to_owned(), |a| format!("{:.0}%", a * 100.0))
                    ))
                })
                .unwrap_or_default();
            println!(
                "  PnL {:.2} (realised {:.2}, unrealised {:.2}) | {} orders, {} fills, {} closed trades, win rate {:.0}% | positions: {}{model}",
                p.total_pnl,
                p.realised_pnl,
                p.unrealised_pnl,
                snap.orders.len(),
                snap.deals.len(),
                p.trades,
                p.win_rate * 100.0,
                if positions.is_empty() { "flat".to_owned() } else { positions.join(", ") }
            );
        }
    });

    let result = serving.await.context("the server task failed")?;
    summary.abort();
    feeding.abort();
    let _ = terminal.stop().await;
    result
}
