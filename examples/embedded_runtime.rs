//! trellis inside another program's process, without its HTTP front door: the host program builds the
//! settings, starts the supervision tree headless (only the MT5 bridges' listener, on any free port), adds a
//! tenant in code, lets the simulated MT5 terminal trade through it, watches the tenant's orders and fills
//! through the public API (its portfolio actor and its event stream), checks them against the terminal's own
//! deals, and stops everything in order.
//!
//! ```sh
//! cargo run --example embedded_runtime
//! ```
//!
//! Nothing here speaks HTTP: there is no REST API, dashboard or `/metrics` in this process, and the only port
//! bound is the bridges' (`/ws/mt5`), which the simulated terminal (or the Python bridge) connects to.

use std::time::{Duration, Instant};

use rust_decimal::Decimal;
use trellis::{
    Application, EventKind, GetPortfolio, OrderStatus, PortfolioSnapshot, Profile, RiskSettings,
    Settings, Side, StrategySettings, TenantContext, TenantSettings,
};

const TENANT: &str = "embedded";
const KEY: &str = "trk_embedded_host-program";
const LOGIN: u64 = 5101;
/// Market time between two ticks: three ticks a one-minute bar.
const TICK_STEP_MS: i64 = 20_000;
/// 300 M1 bars of EURUSD.
const TICKS: usize = 900;

/// The tenant, as the host program would build it from its own configuration: EURUSD, one `ema_cross` 5/20
/// on M1 trading 0.1 lots.
fn tenant() -> anyhow::Result<TenantSettings> {
    let strategy = StrategySettings {
        id: "ema-eurusd".into(),
        kind: "ema_cross".into(),
        symbol: "EURUSD".into(),
        timeframe: "M1".into(),
        volume: "0.1".parse().map_err(anyhow::Error::msg)?,
        account: None,
        params: [("fast".to_owned(), 5.0), ("slow".to_owned(), 20.0)].into(),
        enabled: true,
        on_failure: Default::default(),
        model: None,
    };
    Ok(TenantSettings {
        id: TENANT.into(),
        name: "Embedded Ltd".into(),
        tier: "professional".into(),
        api_keys: vec![KEY.into()],
        symbols: vec!["EURUSD".into()],
        contract_sizes: Default::default(),
        risk: RiskSettings::default(),
        strategies: vec![strategy],
        models: Vec::new(),
    })
}

/// The tenant's books, from its portfolio actor (retried while the actor (re)starts).
async fn portfolio(tenant: &TenantContext) -> anyhow::Result<PortfolioSnapshot> {
    for _ in 0..200 {
        if let Some(p) = tenant.portfolio.get() {
            if let Ok(snapshot) = p.send(GetPortfolio).await {
                return Ok(snapshot);
            }
        }
        actix_rt::time::sleep(Duration::from_millis(10)).await;
    }
    anyhow::bail!("the portfolio of `{TENANT}` did not answer")
}

/// (ticket, buy?, lots, price, position, time) of a deal, as trellis booked it or as the terminal made it.
type DealLine = (u64, bool, Decimal, Decimal, u64, i64);

async fn run() -> anyhow::Result<()> {
    let started = Instant::now();
    let dir = tempfile::tempdir()?;
    // The embedded profile (SQLite under the data directory), with the bridges' listener on any free port.
    let settings = Settings::load(
        Profile::Embedded,
        None,
        [
            (
                "TRELLIS__STORAGE__DATA_DIR",
                dir.path().display().to_string(),
            ),
            ("TRELLIS__HTTP__BRIDGE_LISTENER", "true".into()),
            ("TRELLIS__HTTP__BRIDGE_PORT", "0".into()),
        ]
        .map(|(k, v)| (k.to_owned(), v)),
    )?;
    let app = Application::build_headless(settings).await?;
    if let Some(port) = app.api_port() {
        anyhow::bail!("a headless trellis serves no API, yet port {port} is bound");
    }
    let bridge_port = app.bridge_port();
    println!("trellis runs headless in this process: no HTTP API, bridges on port {bridge_port}");

    let tenant = app.runtime().start_tenant(tenant()?).await?;
    // The tenant's events as they happen (what `/ws/events` streams to a client of `trellis serve`).
    let mut events = app.runtime().bus.subscribe(TENANT);
    let stop = app.stop_handle();
    let serving = actix_rt::spawn(app.run_until_stopped());

    // The simulated terminal connects to the bridges' listener with the tenant's key.
    let mut cfg =
        trellis::SimConfig::new(format!("ws://127.0.0.1:{bridge_port}/ws/mt5"), KEY, LOGIN);
    cfg.heartbeat_ms = 200;
    let sim = trellis::spawn_simulator(cfg);
    let connecting = Instant::now();
    while !sim.stats().connected {
        if connecting.elapsed() > Duration::from_secs(10) {
            anyhow::bail!("the simulated terminal did not connect to port {bridge_port}");
        }
        actix_rt::time::sleep(Duration::from_millis(10)).await;
    }
    // A random walk of EURUSD, paced at about 500 ticks a second: each order reaches the terminal within
    // the bar that decided it.
    let walk = trellis::RandomWalk::new(
        trellis::RandomWalk::default_symbols(&["EURUSD".to_owned()]),
        1_700_000_040_000,
        TICK_STEP_MS,
        7,
    )
    .with_steps(8, 2);
    let ticks: Vec<_> = walk.take(TICKS).collect();
    for chunk in ticks.chunks(5) {
        for t in chunk {
            sim.tick(t.clone());
        }
        actix_rt::time::sleep(Duration::from_millis(10)).await;
    }

    // Wait until every order is final and trellis has booked every deal the terminal made.
    let terminal_deals = || -> anyhow::Result<Vec<DealLine>> {
        Ok(sim
            .broker
            .lock()
            .map_err(|_| anyhow::anyhow!("the simulator's broker is poisoned"))?
            .deals()
            .iter()
            .map(|d| {
                (
                    d.ticket,
                    d.deal_type == 0,
                    d.volume,
                    d.price,
                    d.position_id,
                    d.time_msc,
                )
            })
            .collect())
    };
    let booked = |p: &PortfolioSnapshot| -> Vec<DealLine> {
        p.deals
            .iter()
            .filter(|d| !d.is_reconciliation())
            .map(|d| {
                (
                    d.ticket,
                    d.fill.side == Side::Buy,
                    d.fill.volume,
                    d.fill.price,
                    d.fill.position_id,
                    d.fill.time_msc,
                )
            })
            .collect()
    };
    let settling = Instant::now();
    let snapshot = loop {
        let snapshot = portfolio(&tenant).await?;
        let settled = snapshot.orders.iter().all(|o| o.status.is_final())
            && booked(&snapshot).len() == terminal_deals()?.len();
        if settled {
            break snapshot;
        }
        if settling.elapsed() > Duration::from_secs(10) {
            anyhow::bail!(
                "the books never settled: {} orders ({} not final), {} deals booked, {} made by the terminal",
                snapshot.orders.len(),
                snapshot
                    .orders
                    .iter()
                    .filter(|o| !o.status.is_final())
                    .count(),
                booked(&snapshot).len(),
                terminal_deals()?.len()
            );
        }
        actix_rt::time::sleep(Duration::from_millis(20)).await;
    };

    // Orders placed and filled, whole.
    let orders = &snapshot.orders;
    if orders.is_empty() {
        anyhow::bail!("ema_cross 5/20 placed no order in {} bars", TICKS / 3);
    }
    if let Some(o) = orders
        .iter()
        .find(|o| o.status != OrderStatus::Filled || o.filled_volume != o.volume)
    {
        anyhow::bail!("order {} is not filled: {o:?}", o.client_order_id);
    }
    println!(
        "the strategy placed {} orders; all filled (the first: {} {} EURUSD)",
        orders.len(),
        orders[0].side.as_str(),
        orders[0].volume
    );

    // trellis's fills are the terminal's deals: ticket, side, lots, price, position and time.
    let mut ours = booked(&snapshot);
    let mut theirs = terminal_deals()?;
    ours.sort();
    theirs.sort();
    if ours != theirs {
        anyhow::bail!("trellis's fills differ from the terminal's deals:\ntrellis  {ours:?}\nterminal {theirs:?}");
    }
    // The same fills, as events (the channel holds the last 1024; this run makes far fewer).
    let (mut order_events, mut fill_events) = (0usize, 0usize);
    while let Ok(e) = events.try_recv() {
        match e.kind {
            EventKind::Order => order_events += 1,
            EventKind::Fill => fill_events += 1,
            _ => {}
        }
    }
    if fill_events != ours.len() {
        anyhow::bail!("{fill_events} fill events for {} fills booked", ours.len());
    }
    let net: Decimal = snapshot
        .positions
        .iter()
        .map(|p| p.position.signed_volume())
        .sum();
    println!(
        "trellis booked {} fills, each one of the terminal's {} deals ({order_events} order and \
         {fill_events} fill events); net position {net} lots",
        ours.len(),
        theirs.len()
    );

    // Stop in order: the terminal, then trellis (listener, sessions, tenants, storage).
    sim.stop().await?;
    stop.stop();
    serving.await??;
    println!(
        "stopped cleanly via the stop handle after {:.1} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

#[actix_rt::main]
async fn main() -> anyhow::Result<()> {
    match actix_rt::time::timeout(Duration::from_secs(30), run()).await {
        Ok(result) => result,
        Err(_) => anyhow::bail!("the example did not finish within 30 s"),
    }
}
