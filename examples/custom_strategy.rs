//! Write your own strategy: a Bollinger-band mean reversion written outside trellis, registered as a strategy
//! kind, backtested on a CSV file, then trading live in a trellis started inside this program against the
//! simulated MT5 terminal — and the live trades checked against the backtest's.
//!
//! ```sh
//! cargo run --example custom_strategy            # writes its own CSV of EURUSD ticks
//! cargo run --example custom_strategy -- my.csv  # or reads yours (header: time_msc,bid,ask[,symbol])
//! ```
//!
//! The strategy is plain code: it sees closed bars and answers the position it wants (signed lots); trellis's
//! portfolio turns the difference into orders, its risk gate checks each one, and the same object runs live
//! (in its own supervised actor) and in the backtester.

use std::collections::VecDeque;
use std::time::Duration;

use rust_decimal::prelude::ToPrimitive;
use rust_decimal::Decimal;
use trellis::{Bar, ParamError, ParamReader, Params, Strategy, StrategyRegistry, Tick};

/// Long when the close falls `width` standard deviations below its `period`-bar mean, short when it rises
/// as far above, flat again when it crosses the mean.
struct BollingerReversion {
    period: usize,
    width: f64,
    closes: VecDeque<f64>,
    volume: Decimal,
    target: Decimal,
}

impl BollingerReversion {
    /// The factory trellis calls with a strategy's `params` and `volume` (unknown parameters are refused).
    fn build(params: &Params, volume: Decimal) -> Result<Box<dyn Strategy>, ParamError> {
        let mut p = ParamReader::new("bollinger_reversion", params);
        let period = p.period("period", 20, 2, 10_000)?;
        let width = p.number("width", 2.0, 0.1, 10.0)?;
        p.finish()?;
        Ok(Box::new(Self {
            period,
            width,
            closes: VecDeque::with_capacity(period + 1),
            volume,
            target: Decimal::ZERO,
        }))
    }
}

impl Strategy for BollingerReversion {
    fn on_bar(&mut self, bar: &Bar) -> Option<Decimal> {
        let close = bar.close.to_f64()?;
        self.closes.push_back(close);
        if self.closes.len() > self.period {
            self.closes.pop_front();
        }
        if self.closes.len() < self.period {
            return None;
        }
        let n = self.period as f64;
        let mean = self.closes.iter().sum::<f64>() / n;
        let sd = (self.closes.iter().map(|c| (c - mean).powi(2)).sum::<f64>() / n).sqrt();
        self.target = if close < mean - self.width * sd {
            self.volume
        } else if close > mean + self.width * sd {
            -self.volume
        } else if (self.target > Decimal::ZERO && close >= mean)
            || (self.target < Decimal::ZERO && close <= mean)
        {
            Decimal::ZERO
        } else {
            self.target
        };
        Some(self.target)
    }

    /// The window must be full before the first decision.
    fn warm_up_bars(&self) -> usize {
        self.period
    }

    /// The window and the position held: after a restart trellis restores them and replays the bars after.
    fn snapshot(&self) -> Option<serde_json::Value> {
        Some(serde_json::json!({"closes": self.closes, "target": self.target}))
    }

    fn restore(&mut self, state: &serde_json::Value) -> Result<(), String> {
        let closes: VecDeque<f64> =
            serde_json::from_value(state["closes"].clone()).map_err(|e| e.to_string())?;
        let target: Decimal =
            serde_json::from_value(state["target"].clone()).map_err(|e| e.to_string())?;
        if closes.len() > self.period {
            return Err("the snapshot is of a longer window".into());
        }
        (self.closes, self.target) = (closes, target);
        Ok(())
    }
}

const KIND: &str = "bollinger_reversion";
const KEY: &str = "trk_example1_custom-strategy";

fn params() -> Params {
    [("period".to_owned(), 20.0), ("width".to_owned(), 1.5)].into()
}

/// Two hundred M1 bars of EURUSD as CSV (three ticks a bar), from the simulator's random walk.
fn write_csv(path: &std::path::Path) -> std::io::Result<()> {
    use std::io::Write as _;
    let names = vec!["EURUSD".to_owned()];
    let walk = trellis::RandomWalk::new(
        trellis::RandomWalk::default_symbols(&names),
        1_700_000_020_000,
        20_000,
        11,
    )
    .with_steps(8, 2);
    let mut out = std::io::BufWriter::new(std::fs::File::create(path)?);
    writeln!(out, "time_msc,symbol,bid,ask")?;
    for t in walk.take(600) {
        writeln!(out, "{},{},{},{}", t.time_msc, t.symbol, t.bid, t.ask)?;
    }
    out.flush()
}

fn read_csv(path: &std::path::Path) -> anyhow::Result<Vec<Tick>> {
    let opts = trellis::HistoryOptions {
        symbol: Some("EURUSD".into()),
        ..Default::default()
    };
    let reader = trellis::open_history(path, opts)
        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    reader
        .map(|t| t.map_err(|e| anyhow::anyhow!("{}: {e}", path.display())))
        .collect()
}

/// (minute, buy?, lots) of each deal, to compare a backtest with a live run.
type Trade = (i64, bool, Decimal);

fn backtest(ticks: &[Tick]) -> anyhow::Result<Vec<Trade>> {
    let registry = StrategyRegistry::default();
    registry.register(KIND, BollingerReversion::build);
    let cfg = trellis::BacktestConfig::new("EURUSD", KIND, params(), trellis::Timeframe::M1);
    let (report, deals) = trellis::backtest(cfg, &registry, ticks)?;
    println!(
        "backtest: {} ticks, {} bars, {} fills, PnL {} (max drawdown {})",
        report.ticks, report.bars, report.fills, report.total_pnl, report.max_drawdown
    );
    Ok(deals
        .iter()
        .map(|d| {
            (
                d.fill.time_msc / 60_000,
                d.fill.side == trellis::Side::Buy,
                d.fill.volume,
            )
        })
        .collect())
}

/// The same ticks through a trellis started in this process, fed by the simulated terminal.
async fn live(ticks: &[Tick]) -> anyhow::Result<Vec<Trade>> {
    let dir = tempfile::tempdir()?;
    let settings = trellis::Settings::load(
        trellis::Profile::Test,
        None,
        vec![(
            "TRELLIS__STORAGE__DATA_DIR".to_owned(),
            dir.path().display().to_string(),
        )],
    )?;
    let app = trellis::Application::build(settings).await?;
    // The kind must be known before a tenant names it.
    app.runtime()
        .strategies
        .register(KIND, BollingerReversion::build);
    let tenant = trellis::TenantSettings {
        id: "example".into(),
        name: "Example Ltd".into(),
        tier: "professional".into(),
        api_keys: vec![KEY.into()],
        symbols: vec!["EURUSD".into()],
        contract_sizes: Default::default(),
        risk: Default::default(),
        strategies: vec![serde_json::from_value(serde_json::json!({
            "id": "bollinger", "kind": KIND, "symbol": "EURUSD", "timeframe": "M1", "volume": 0.1,
            "params": params(),
        }))?],
        models: Vec::new(),
    };
    app.runtime().start_tenant(tenant).await?;
    let url = format!("ws://127.0.0.1:{}/ws/mt5", app.port());
    let stop = app.stop_handle();
    let serving = actix_rt::spawn(app.run_until_stopped());

    let mut cfg = trellis::SimConfig::new(url, KEY, 5001);
    cfg.heartbeat_ms = 200;
    let sim = trellis::spawn_simulator(cfg);
    while !sim.stats().connected {
        actix_rt::time::sleep(Duration::from_millis(10)).await;
    }
    // About 500 ticks a second: each order reaches the terminal within the bar that decided it.
    for chunk in ticks.chunks(5) {
        for t in chunk {
            sim.tick(t.clone());
        }
        actix_rt::time::sleep(Duration::from_millis(10)).await;
    }
    actix_rt::time::sleep(Duration::from_millis(700)).await;
    let trades: Vec<Trade> = sim
        .broker
        .lock()
        .map_err(|_| anyhow::anyhow!("the simulator's broker is poisoned"))?
        .deals()
        .iter()
        .map(|d| (d.time_msc / 60_000, d.deal_type == 0, d.volume))
        .collect();
    println!("live: the terminal made {} deals", trades.len());
    sim.stop().await?;
    stop.stop();
    serving.await??;
    Ok(trades)
}

#[actix_rt::main]
async fn main() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let path = match std::env::args().nth(1) {
        Some(p) => std::path::PathBuf::from(p),
        None => {
            let p = dir.path().join("eurusd.csv");
            write_csv(&p)?;
            p
        }
    };
    let ticks = read_csv(&path)?;
    let tested = backtest(&ticks)?;
    let traded = live(&ticks).await?;
    // The same decisions: sides, lots and order exactly; each live deal in the backtest's bar or the next
    // (a live order executes at the terminal's next tick).
    let same = tested.len() == traded.len()
        && tested
            .iter()
            .zip(&traded)
            .all(|(a, b)| a.1 == b.1 && a.2 == b.2 && (b.0 - a.0).abs() <= 1);
    if !same {
        anyhow::bail!(
            "live trades differ from the backtest's:\nbacktest {tested:?}\nlive     {traded:?}"
        );
    }
    println!(
        "the {} live trades are the backtest's, bar for bar",
        traded.len()
    );
    Ok(())
}
