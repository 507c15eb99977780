//! `trellis backtest`: a strategy on history with the code that trades it live.
//!
//! Bars come from `domain::bars::BarBuilder` (what `MarketData` runs), decisions from the same `Strategy`
//! objects, orders from `domain::ledger::Ledger` (what `Portfolio` runs) through `domain::risk::RiskGate`
//! (what `Risk` runs). Only the terminal is simulated, by the simulator's broker (`sim::Broker`): an order
//! decided on a bar is executed on the next tick — market orders at that tick's ask (buy) or bid (sell) plus
//! the configured slippage and commission per lot, limit and stop orders when a later tick touches them.
//! Everything is single-threaded and free of clocks and randomness, so the same input gives the same orders,
//! fills and figures; only the measured throughput differs between runs.

pub mod cli;
pub mod history;
pub mod input;
pub mod optimise;
pub mod parquet;
pub mod portfolio;
pub mod report;
pub mod tape;

use std::io::Write as _;
use std::time::Instant;

use rust_decimal::Decimal;
use serde::Serialize;

use crate::bridge::protocol::OrderRequest;
use crate::domain::bars::{BarBuilder, TickOutcome};
use crate::domain::ledger::{Ledger, OrderResult};
use crate::domain::orders::{action, mt5_order_type, Order, OrderStatus};
use crate::domain::positions::{AccountMode, Deal, EquityCurve};
use crate::domain::risk::RiskGate;
use crate::domain::tenant::RiskSettings;
use crate::domain::{Bar, Login, Symbol, Tick, Timeframe};
use crate::sim::broker::{Broker, BrokerConfig};
use crate::strategies::{ParamError, Params, Strategy, StrategyRegistry};

/// The account the backtest trades on.
const ACCOUNT: Login = Login::new(1);
const STRATEGY_ID: &str = "backtest";

/// What to test and how to execute.
#[derive(Debug, Clone)]
pub struct BacktestConfig {
    pub symbol: Symbol,
    pub strategy: String,
    pub params: Params,
    pub timeframe: Timeframe,
    /// Lots per position.
    pub volume: Decimal,
    pub contract_size: Decimal,
    /// Points (10^-digits) of the symbol, for slippage.
    pub point: Decimal,
    /// Market orders fill this many points worse than the quote.
    pub slippage_points: u32,
    pub commission_per_lot: Decimal,
    pub balance: Decimal,
    pub risk: RiskSettings,
    /// Keep the equity curve (sampled at bar closes, at most [`MAX_CURVE_POINTS`]) for a report.
    pub record_equity: bool,
}

/// Most equity points a run keeps; past it every other point is dropped and the sampling interval doubles,
/// so memory stays bounded however long the history.
pub const MAX_CURVE_POINTS: usize = 20_000;

impl BacktestConfig {
    pub fn new(symbol: &str, strategy: &str, params: Params, timeframe: Timeframe) -> Self {
        Self {
            symbol: Symbol::new(symbol.to_owned()),
            strategy: strategy.to_owned(),
            params,
            timeframe,
            volume: Decimal::new(1, 1),
            contract_size: Decimal::from(100_000),
            point: Decimal::new(1, 5),
            slippage_points: 0,
            commission_per_lot: Decimal::ZERO,
            balance: Decimal::from(100_000),
            risk: RiskSettings::default(),
            record_equity: false,
        }
    }
}

/// The figures of a run.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Report {
    pub symbol: String,
    pub strategy: String,
    pub timeframe: String,
    pub ticks: u64,
    /// Ticks of other symbols in the input, ignored.
    pub ticks_ignored: u64,
    pub out_of_order: u64,
    /// Order state changes the state machine refused (a bug if ever non-zero; each is logged).
    #[serde(skip_serializing_if = "is_zero")]
    pub illegal_transitions: u64,
    pub bars: u64,
    pub orders: usize,
    pub orders_rejected: usize,
    pub fills: usize,
    pub final_position: Decimal,
    pub total_pnl: Decimal,
    pub realised_pnl: Decimal,
    pub unrealised_pnl: Decimal,
    pub commission: Decimal,
    pub trades: usize,
    pub win_rate: f64,
    pub profit_factor: Option<f64>,
    pub max_drawdown: Decimal,
    pub sharpe: Option<f64>,
    /// Wall-clock figures: the only fields that differ between identical runs.
    pub elapsed_ms: f64,
    pub ticks_per_sec: f64,
    /// (time, balance + PnL) at bar closes, when `record_equity` was set.
    #[serde(skip)]
    pub equity: Vec<(i64, f64)>,
}

/// A strategy of the run on one symbol and timeframe.
pub struct Leg {
    /// Its strategy id in the ledger (orders and deals carry it).
    pub id: String,
    pub kind: String,
    pub symbol: Symbol,
    pub timeframe: Timeframe,
    pub strategy: Box<dyn Strategy>,
}

/// A symbol the run trades: its latest quote and the orders waiting for its next tick.
struct Instrument {
    symbol: Symbol,
    last: Option<(Decimal, Decimal, i64)>,
    queued: Vec<OrderRequest>,
}

/// One strategy's figures in a portfolio run.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct LegReport {
    pub id: String,
    pub strategy: String,
    pub symbol: String,
    pub timeframe: String,
    pub orders: usize,
    pub fills: usize,
    pub final_position: Decimal,
    pub total_pnl: Decimal,
    pub realised_pnl: Decimal,
    pub unrealised_pnl: Decimal,
    pub commission: Decimal,
    pub trades: usize,
    pub win_rate: f64,
    pub profit_factor: Option<f64>,
    pub max_drawdown: Decimal,
    pub sharpe: Option<f64>,
}

pub struct Backtest {
    cfg: BacktestConfig,
    legs: Vec<Leg>,
    /// The curve of each leg's own PnL, for its drawdown and Sharpe.
    leg_curves: Vec<EquityCurve>,
    instruments: Vec<Instrument>,
    builder: BarBuilder,
    ledger: Ledger,
    gate: RiskGate,
    broker: Broker,
    ticks: u64,
    ignored: u64,
    out_of_order: u64,
    illegal_transitions: u64,
    bars: u64,
    started: Instant,
    curve: Vec<(i64, f64)>,
    /// Marks seen since the last kept point, and how many to skip between kept points.
    curve_skip: (u64, u64),
}

impl Backtest {
    pub fn new(cfg: BacktestConfig, registry: &StrategyRegistry) -> Result<Self, ParamError> {
        let strategy = registry.build(&cfg.strategy, &cfg.params, cfg.volume)?;
        Ok(Self::with_strategy(cfg, strategy))
    }

    /// A backtest of a strategy already built (e.g. one fed by a model, `models::driven::ModelDriven`).
    pub fn with_strategy(cfg: BacktestConfig, strategy: Box<dyn Strategy>) -> Self {
        let leg = Leg {
            id: STRATEGY_ID.into(),
            kind: cfg.strategy.clone(),
            symbol: cfg.symbol.clone(),
            timeframe: cfg.timeframe,
            strategy,
        };
        Self::portfolio(cfg, vec![leg])
    }

    /// Several strategies on several symbols and timeframes through one ledger, one risk gate and one
    /// account, as a tenant trades live. `cfg` gives the execution settings, balance and risk limits (its
    /// symbol, strategy and timeframe are not used).
    pub fn portfolio(cfg: BacktestConfig, legs: Vec<Leg>) -> Self {
        let broker = Broker::new(BrokerConfig {
            login: ACCOUNT.get(),
            mode: AccountMode::Netting,
            balance: cfg.balance,
            contract_size: cfg.contract_size,
            point: cfg.point,
            max_slippage_points: cfg.slippage_points,
            fixed_slippage: true,
            commission_per_lot: cfg.commission_per_lot,
            volume_min: Decimal::new(1, 2),
            volume_max: Decimal::from(1_000_000),
            leverage: 1_000_000,
            ..BrokerConfig::default()
        });
        let mut instruments: Vec<Instrument> = Vec::new();
        let mut timeframes: Vec<Timeframe> = Vec::new();
        for leg in &legs {
            if !instruments.iter().any(|i| i.symbol == leg.symbol) {
                instruments.push(Instrument {
                    symbol: leg.symbol.clone(),
                    last: None,
                    queued: Vec::new(),
                });
            }
            if !timeframes.contains(&leg.timeframe) {
                timeframes.push(leg.timeframe);
            }
        }
        timeframes.sort();
        let gate = RiskGate::new(
            cfg.risk.clone(),
            instruments.iter().map(|i| i.symbol.as_str().to_owned()),
        );
        Self {
            builder: BarBuilder::new(&timeframes),
            leg_curves: vec![EquityCurve::default(); legs.len()],
            legs,
            instruments,
            ledger: Ledger::new(),
            gate,
            broker,
            ticks: 0,
            ignored: 0,
            out_of_order: 0,
            illegal_transitions: 0,
            bars: 0,
            started: Instant::now(),
            curve: Vec::new(),
            curve_skip: (0, 1),
            cfg,
        }
    }

    fn waiting(&self, at: usize) -> bool {
        !self.instruments[at].queued.is_empty() || self.broker.has_pending()
    }

    pub fn on_tick(&mut self, tick: &Tick) {
        let Some(at) = self
            .instruments
            .iter()
            .position(|i| i.symbol == tick.symbol)
        else {
            self.ignored += 1;
            return;
        };
        self.ticks += 1;
        if self.waiting(at) {
            self.execute(at, tick.time_msc, tick.bid, tick.ask);
        }
        match self.builder.on_tick(tick) {
            TickOutcome::OutOfOrder { .. } => self.out_of_order += 1,
            TickOutcome::Accepted(closed) => {
                self.instruments[at].last = Some((tick.bid, tick.ask, tick.time_msc));
                for bar in closed {
                    self.on_bar(&bar, tick.time_msc);
                }
            }
        }
    }

    /// A bar closed: marks equity and asks the strategies trading its symbol and timeframe.
    fn on_bar(&mut self, bar: &Bar, now_ms: i64) {
        if !self
            .legs
            .iter()
            .any(|l| l.symbol == bar.symbol && l.timeframe == bar.timeframe)
        {
            return;
        }
        self.bars += 1;
        self.mark(bar.open_time_ms + bar.timeframe.millis(), Some(bar));
        for i in 0..self.legs.len() {
            let leg = &mut self.legs[i];
            if leg.symbol != bar.symbol || leg.timeframe != bar.timeframe {
                continue;
            }
            if let Some(target) = leg.strategy.on_bar(bar) {
                self.decide(i, target, now_ms);
            }
        }
    }

    /// Replays a tape: the same decisions, fills and figures as feeding its ticks to [`Self::on_tick`] one
    /// by one, visiting only the ticks that close a bar or that an order waits for (see [`tape`]). A run of
    /// one strategy on the tape's symbol and timeframe.
    pub fn run_tape(mut self, tape: &tape::Tape) -> (Report, Vec<Deal>) {
        let quotes = tape.quotes();
        let mut next = 0usize;
        for (at, bar) in &tape.closes {
            let at = *at;
            if at >= next {
                while next < at && self.waiting(0) {
                    let q = quotes[next];
                    self.execute(0, q.time_msc, q.bid, q.ask);
                    next += 1;
                }
                let q = quotes[at];
                if self.waiting(0) {
                    self.execute(0, q.time_msc, q.bid, q.ask);
                }
                self.instruments[0].last = Some((q.bid, q.ask, q.time_msc));
                next = at + 1;
            }
            self.on_bar(bar, quotes[at].time_msc);
        }
        while next < quotes.len() && self.waiting(0) {
            let q = quotes[next];
            self.execute(0, q.time_msc, q.bid, q.ask);
            next += 1;
        }
        self.instruments[0].last = tape
            .last_accepted
            .map(|i| (quotes[i].bid, quotes[i].ask, quotes[i].time_msc));
        self.ticks = quotes.len() as u64;
        self.ignored = tape.ignored;
        self.out_of_order = tape.out_of_order;
        self.finish()
    }

    /// Executes an instrument's queued orders (and pending limit/stop orders) at its tick.
    fn execute(&mut self, at: usize, time_msc: i64, bid: Decimal, ask: Decimal) {
        let instrument = &mut self.instruments[at];
        let mut executions = self
            .broker
            .on_tick(instrument.symbol.as_str(), time_msc, bid, ask);
        for req in std::mem::take(&mut instrument.queued) {
            executions.push(self.broker.execute(&req));
        }
        for exec in executions {
            if let Some(r) = exec.result {
                let result = OrderResult {
                    client_order_id: r.client_order_id,
                    retcode: r.retcode,
                    order: r.order,
                    comment: r.comment,
                };
                // Rejections (volume, money) end the order here, as a terminal's answer does live.
                self.ledger.apply_result(ACCOUNT, &result, time_msc);
            }
            for d in exec.deals {
                let Some(deal) = d.to_deal(ACCOUNT, &self.ledger) else {
                    continue;
                };
                let side = deal.fill.side;
                if self
                    .ledger
                    .apply_deal(&deal, true, self.cfg.contract_size, time_msc)
                {
                    let owner = deal.strategy_id.as_deref();
                    if let Some(leg) = self
                        .legs
                        .iter_mut()
                        .find(|l| Some(l.id.as_str()) == owner && l.symbol == deal.fill.symbol)
                    {
                        leg.strategy
                            .on_fill(deal.fill.volume * side.sign(), deal.fill.price);
                    }
                }
            }
        }
    }

    fn decide(&mut self, leg: usize, target: Decimal, now_ms: i64) {
        let (id, symbol) = (&self.legs[leg].id, &self.legs[leg].symbol);
        let Some((seq, mut order, facts)) = self.ledger.plan(id, ACCOUNT, symbol, target, now_ms)
        else {
            return;
        };
        match self.gate.check(&facts) {
            Ok(()) => {
                self.step(&mut order, OrderStatus::Sent, now_ms);
                let request = OrderRequest {
                    seq,
                    client_order_id: order.client_order_id.clone(),
                    action: action::DEAL,
                    symbol: order.symbol.as_str().to_owned(),
                    order_type: mt5_order_type(order.side, order.kind),
                    volume: order.volume,
                    price: Decimal::ZERO,
                    sl: Decimal::ZERO,
                    tp: Decimal::ZERO,
                    deviation: 0,
                    magic: 0,
                    comment: order.client_order_id.clone(),
                    type_filling: 1,
                    type_time: 0,
                    position: 0,
                };
                if let Some(i) = self
                    .instruments
                    .iter_mut()
                    .find(|i| i.symbol == order.symbol)
                {
                    i.queued.push(request);
                }
            }
            Err(rejection) => {
                self.step(&mut order, OrderStatus::Rejected, now_ms);
                order.reason = Some(rejection.to_string());
            }
        }
        self.ledger.remember(seq, order);
    }

    fn quote(&self, symbol: &Symbol) -> Option<(Decimal, Decimal)> {
        self.instruments
            .iter()
            .find(|i| i.symbol == *symbol)
            .and_then(|i| i.last)
            .map(|(b, a, _)| (b, a))
    }

    fn pnl(&self) -> (Decimal, Decimal, Decimal) {
        self.ledger
            .pnl(|s| self.quote(s), |_| self.cfg.contract_size)
    }

    /// Marks equity at a bar's close (`bar`), or at the end (`None`). Each strategy's own curve is marked
    /// at its own bars' closes, as a run of that strategy alone would be.
    fn mark(&mut self, at_ms: i64, bar: Option<&Bar>) {
        let (realised, unrealised, commission) = self.pnl();
        let pnl = realised + unrealised - commission;
        self.ledger.curve.mark(at_ms, pnl);
        if self.legs.len() > 1 {
            for (i, leg) in self.legs.iter().enumerate() {
                if bar.is_some_and(|b| b.symbol != leg.symbol || b.timeframe != leg.timeframe) {
                    continue;
                }
                let own = self.ledger.strategy_pnl(
                    &leg.id,
                    |s| self.quote(s),
                    |_| self.cfg.contract_size,
                );
                self.leg_curves[i].mark(at_ms, own);
            }
        }
        if self.cfg.record_equity {
            self.sample(at_ms, pnl);
        }
        self.gate.on_pnl(at_ms, realised, unrealised, commission);
    }

    fn sample(&mut self, at_ms: i64, pnl: Decimal) {
        use rust_decimal::prelude::ToPrimitive;
        let (seen, every) = &mut self.curve_skip;
        *seen += 1;
        if *seen < *every {
            return;
        }
        *seen = 0;
        let equity = (self.cfg.balance + pnl).to_f64().unwrap_or(f64::NAN);
        self.curve.push((at_ms, equity));
        if self.curve.len() >= MAX_CURVE_POINTS {
            let mut keep = false;
            self.curve.retain(|_| {
                keep = !keep;
                keep
            });
            *every *= 2;
        }
    }

    /// Moves `order` to `next`; a change the state machine refuses is logged and counted in the report.
    fn step(&mut self, order: &mut Order, next: OrderStatus, at_ms: i64) {
        if let Err(e) = order.transition(next, at_ms) {
            self.illegal_transitions += 1;
            tracing::error!(error = %e, "backtest: illegal order state transition");
        }
    }

    /// The report, and every fill in order.
    pub fn finish(self) -> (Report, Vec<Deal>) {
        let (report, _, deals) = self.finish_portfolio();
        (report, deals)
    }

    /// The report of the whole run, each strategy's figures, and every fill in order.
    pub fn finish_portfolio(mut self) -> (Report, Vec<LegReport>, Vec<Deal>) {
        if let Some(t) = self
            .instruments
            .iter()
            .filter_map(|i| i.last)
            .map(|l| l.2)
            .max()
        {
            self.mark(t, None);
        }
        let elapsed = self.started.elapsed();
        let (_, unrealised, _) = self.pnl();
        let perf = self.ledger.performance(unrealised);
        let orders = self.ledger.orders();
        let single = self.legs.len() == 1;
        let legs: Vec<LegReport> = self
            .legs
            .iter()
            .zip(&self.leg_curves)
            .map(|(leg, curve)| {
                let p = self.ledger.strategy_performance(
                    &leg.id,
                    |s| self.quote(s),
                    |_| self.cfg.contract_size,
                    if single { &self.ledger.curve } else { curve },
                );
                let mine = |owner: Option<&str>| owner == Some(leg.id.as_str());
                LegReport {
                    id: leg.id.clone(),
                    strategy: leg.kind.clone(),
                    symbol: leg.symbol.as_str().to_owned(),
                    timeframe: leg.timeframe.to_string(),
                    orders: orders
                        .iter()
                        .filter(|o| mine(o.strategy_id.as_deref()))
                        .count(),
                    fills: self
                        .ledger
                        .deals()
                        .iter()
                        .filter(|d| mine(d.strategy_id.as_deref()))
                        .count(),
                    final_position: self.ledger.strategy_net(&leg.id, &leg.symbol).normalize(),
                    total_pnl: p.total_pnl.normalize(),
                    realised_pnl: p.realised_pnl.normalize(),
                    unrealised_pnl: p.unrealised_pnl.normalize(),
                    commission: p.commission.normalize(),
                    trades: p.trades,
                    win_rate: p.win_rate,
                    profit_factor: p.profit_factor,
                    max_drawdown: p.max_drawdown.normalize(),
                    sharpe: p.sharpe,
                }
            })
            .collect();
        let final_position = if single {
            self.ledger
                .strategy_net(&self.legs[0].id, &self.legs[0].symbol)
                .normalize()
        } else {
            self.legs
                .iter()
                .map(|l| self.ledger.strategy_net(&l.id, &l.symbol).abs())
                .sum::<Decimal>()
                .normalize()
        };
        let (symbol, strategy, timeframe) = if single {
            (
                self.legs[0].symbol.as_str().to_owned(),
                self.legs[0].kind.clone(),
                self.legs[0].timeframe.to_string(),
            )
        } else {
            let mut symbols: Vec<&str> =
                self.instruments.iter().map(|i| i.symbol.as_str()).collect();
            symbols.dedup();
            (symbols.join(","), "portfolio".into(), "mixed".into())
        };
        let report = Report {
            symbol,
            strategy,
            timeframe,
            ticks: self.ticks,
            ticks_ignored: self.ignored,
            out_of_order: self.out_of_order,
            illegal_transitions: self.illegal_transitions,
            bars: self.bars,
            orders: orders.len(),
            orders_rejected: orders
                .iter()
                .filter(|o| o.status == OrderStatus::Rejected)
                .count(),
            fills: self.ledger.deals().len(),
            final_position,
            total_pnl: perf.total_pnl.normalize(),
            realised_pnl: perf.realised_pnl.normalize(),
            unrealised_pnl: perf.unrealised_pnl.normalize(),
            commission: perf.commission.normalize(),
            trades: perf.trades,
            win_rate: perf.win_rate,
            profit_factor: perf.profit_factor,
            max_drawdown: perf.max_drawdown.normalize(),
            sharpe: perf.sharpe,
            elapsed_ms: elapsed.as_secs_f64() * 1e3,
            ticks_per_sec: if elapsed.as_secs_f64() > 0.0 {
                self.ticks as f64 / elapsed.as_secs_f64()
            } else {
                0.0
            },
            equity: std::mem::take(&mut self.curve),
        };
        (report, legs, self.ledger.deals().to_vec())
    }

    /// Orders so far (for comparisons with a live run).
    pub fn orders(&self) -> Vec<crate::domain::orders::Order> {
        self.ledger.orders()
    }
}

/// Runs a whole series.
pub fn run(
    cfg: BacktestConfig,
    registry: &StrategyRegistry,
    ticks: &[Tick],
) -> Result<(Report, Vec<Deal>), ParamError> {
    let mut bt = Backtest::new(cfg, registry)?;
    for t in ticks {
        bt.on_tick(t);
    }
    Ok(bt.finish())
}

/// Writes fills as CSV: `time_msc,ticket,client_order_id,symbol,side,volume,price,entry,commission,profit`.
pub fn write_trades(
    out: &mut (impl std::io::Write + ?Sized),
    deals: &[Deal],
) -> std::io::Result<()> {
    writeln!(
        out,
        "time_msc,ticket,client_order_id,symbol,side,volume,price,entry,commission,profit"
    )?;
    for d in deals {
        writeln!(
            out,
            "{},{},{},{},{},{},{},{},{},{}",
            d.fill.time_msc,
            d.ticket,
            d.client_order_id.as_deref().unwrap_or(""),
            d.fill.symbol,
            d.fill.side.as_str(),
            d.fill.volume.normalize(),
            d.fill.price,
            d.fill.entry.code(),
            d.fill.commission.normalize(),
            d.profit.normalize()
        )?;
    }
    Ok(())
}

/// The human-readable summary.
pub fn render(r: &Report) -> String {
    let mut s = Vec::new();
    let opt = |v: Option<f64>| v.map(|x| format!("{x:.3}")).unwrap_or_else(|| "n/a".into());
    let _ = writeln!(s, "backtest {} {} {}", r.strategy, r.symbol, r.timeframe);
    let _ = writeln!(
        s,
        "  ticks processed   {} ({} other symbols ignored, {} out of order)",
        r.ticks, r.ticks_ignored, r.out_of_order
    );
    let _ = writeln!(s, "  bars              {}", r.bars);
    let _ = writeln!(
        s,
        "  orders            {} ({} rejected by risk)",
        r.orders, r.orders_rejected
    );
    let _ = writeln!(s, "  fills             {}", r.fills);
    let _ = writeln!(s, "  final position    {} lots", r.final_position);
    let _ = writeln!(
        s,
        "  total PnL         {} (realised {}, unrealised {}, commission {})",
        r.total_pnl.round_dp(2),
        r.realised_pnl.round_dp(2),
        r.unrealised_pnl.round_dp(2),
        r.commission.round_dp(2)
    );
    let _ = writeln!(
        s,
        "  closed trades     {}, win rate {:.1}%, profit factor {}",
        r.trades,
        r.win_rate * 100.0,
        opt(r.profit_factor)
    );
    let _ = writeln!(s, "  max drawdown      {}", r.max_drawdown.round_dp(2));
    let _ = writeln!(s, "  Sharpe (daily)    {}", opt(r.sharpe));
    let _ = writeln!(
        s,
        "  throughput        {:.0} ticks/s ({:.1} ms)",
        r.ticks_per_sec, r.elapsed_ms
    );
    String::from_utf8_lossy(&s).into_owned()
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}
