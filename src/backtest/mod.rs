//! `trellis backtest`: a strategy on history with the code that trades it live.
//!
//! Bars come from `domain::bars::BarBuilder` (what `MarketData` runs), decisions from the same `Strategy`
//! objects, orders from `domain::ledger::Ledger` (what `Portfolio` runs) through `domain::risk::RiskGate`
//! (what `Risk` runs). Only the terminal is simulated, by the simulator's broker (`sim::Broker`): an order
//! decided on a bar is executed on the next tick — market orders at that tick's ask (buy) or bid (sell) plus
//! the configured slippage and commission per lot, limit and stop orders when a later tick touches them.
//! Everything is single-threaded and free of clocks and randomness, so the same input gives the same orders,
//! fills and figures; only the measured throughput differs between runs.

use std::io::Write as _;
use std::time::Instant;

use rust_decimal::Decimal;
use serde::Serialize;

use crate::config::RiskSettings;
use crate::domain::bars::{BarBuilder, TickOutcome};
use crate::domain::ledger::{Ledger, OrderResult};
use crate::domain::orders::{action, mt5_order_type, OrderStatus};
use crate::domain::positions::{AccountMode, Deal};
use crate::domain::risk::RiskGate;
use crate::domain::{Login, Symbol, Tick, Timeframe};
use crate::http::ws::protocol::OrderRequest;
use crate::sim::broker::{Broker, BrokerConfig};
use crate::strategies::{ParamError, Params, Strategy, StrategyRegistry};

/// The account the backtest trades on.
const ACCOUNT: Login = Login(1);
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
}

impl BacktestConfig {
    pub fn new(symbol: &str, strategy: &str, params: Params, timeframe: Timeframe) -> Self {
        Self {
            symbol: Symbol(symbol.to_owned()),
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
}

pub struct Backtest {
    cfg: BacktestConfig,
    strategy: Box<dyn Strategy>,
    builder: BarBuilder,
    ledger: Ledger,
    gate: RiskGate,
    broker: Broker,
    /// Orders decided on a bar, executed on the next tick.
    queued: Vec<OrderRequest>,
    last: Option<(Decimal, Decimal, i64)>,
    ticks: u64,
    ignored: u64,
    out_of_order: u64,
    bars: u64,
    started: Instant,
}

impl Backtest {
    pub fn new(cfg: BacktestConfig, registry: &StrategyRegistry) -> Result<Self, ParamError> {
        let strategy = registry.build(&cfg.strategy, &cfg.params, cfg.volume)?;
        Ok(Self::with_strategy(cfg, strategy))
    }

    /// A backtest of a strategy already built (e.g. one fed by a model, `models::driven::ModelDriven`).
    pub fn with_strategy(cfg: BacktestConfig, strategy: Box<dyn Strategy>) -> Self {
        let broker = Broker::new(BrokerConfig {
            login: ACCOUNT.0,
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
        let gate = RiskGate::new(cfg.risk.clone(), [cfg.symbol.0.clone()]);
        Self {
            builder: BarBuilder::new(&[cfg.timeframe]),
            strategy,
            ledger: Ledger::new(),
            gate,
            broker,
            queued: Vec::new(),
            last: None,
            ticks: 0,
            ignored: 0,
            out_of_order: 0,
            bars: 0,
            started: Instant::now(),
            cfg,
        }
    }

    pub fn on_tick(&mut self, tick: &Tick) {
        if tick.symbol != self.cfg.symbol {
            self.ignored += 1;
            return;
        }
        self.ticks += 1;
        if !self.queued.is_empty() || self.broker.has_pending() {
            self.execute(tick);
        }
        match self.builder.on_tick(tick) {
            TickOutcome::OutOfOrder { .. } => self.out_of_order += 1,
            TickOutcome::Accepted(closed) => {
                self.last = Some((tick.bid, tick.ask, tick.time_msc));
                for bar in closed {
                    self.bars += 1;
                    self.mark(bar.open_time_ms + bar.timeframe.millis());
                    if let Some(target) = self.strategy.on_bar(&bar) {
                        self.decide(target, tick.time_msc);
                    }
                }
            }
        }
    }

    /// Executes queued orders (and pending limit/stop orders) at this tick.
    fn execute(&mut self, tick: &Tick) {
        let fired = self
            .broker
            .on_tick(tick.symbol.as_str(), tick.time_msc, tick.bid, tick.ask);
        let mut executions = fired;
        for req in std::mem::take(&mut self.queued) {
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
                self.ledger.apply_result(ACCOUNT, &result, tick.time_msc);
            }
            for d in exec.deals {
                let Some(deal) = d.to_deal(ACCOUNT, &self.ledger) else {
                    continue;
                };
                let side = deal.fill.side;
                if self
                    .ledger
                    .apply_deal(&deal, true, self.cfg.contract_size, tick.time_msc)
                {
                    self.strategy
                        .on_fill(deal.fill.volume * side.sign(), deal.fill.price);
                }
            }
        }
    }

    fn decide(&mut self, target: Decimal, now_ms: i64) {
        let Some((seq, mut order, facts)) =
            self.ledger
                .plan(STRATEGY_ID, ACCOUNT, &self.cfg.symbol, target, now_ms)
        else {
            return;
        };
        match self.gate.check(&facts) {
            Ok(()) => {
                let _ = order.transition(OrderStatus::Sent, now_ms);
                self.queued.push(OrderRequest {
                    seq,
                    client_order_id: order.client_order_id.clone(),
                    action: action::DEAL,
                    symbol: order.symbol.0.clone(),
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
                });
            }
            Err(rejection) => {
                let _ = order.transition(OrderStatus::Rejected, now_ms);
                order.reason = Some(rejection.to_string());
            }
        }
        self.ledger.remember(seq, order);
    }

    fn pnl(&self) -> (Decimal, Decimal, Decimal) {
        let last = self.last;
        let symbol = self.cfg.symbol.clone();
        self.ledger.pnl(
            move |s| last.filter(|_| *s == symbol).map(|(b, a, _)| (b, a)),
            |_| self.cfg.contract_size,
        )
    }

    fn mark(&mut self, at_ms: i64) {
        let (realised, unrealised, commission) = self.pnl();
        self.ledger
            .curve
            .mark(at_ms, realised + unrealised - commission);
        self.gate.on_pnl(at_ms, realised, unrealised, commission);
    }

    /// The report, and every fill in order.
    pub fn finish(mut self) -> (Report, Vec<Deal>) {
        if let Some((_, _, t)) = self.last {
            self.mark(t);
        }
        let elapsed = self.started.elapsed();
        let (_, unrealised, _) = self.pnl();
        let perf = self.ledger.performance(unrealised);
        let orders = self.ledger.orders();
        let report = Report {
            symbol: self.cfg.symbol.0.clone(),
            strategy: self.cfg.strategy.clone(),
            timeframe: self.cfg.timeframe.to_string(),
            ticks: self.ticks,
            ticks_ignored: self.ignored,
            out_of_order: self.out_of_order,
            bars: self.bars,
            orders: orders.len(),
            orders_rejected: orders
                .iter()
                .filter(|o| o.status == OrderStatus::Rejected)
                .count(),
            fills: self.ledger.deals().len(),
            final_position: self
                .ledger
                .strategy_net(STRATEGY_ID, &self.cfg.symbol)
                .normalize(),
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
        };
        (report, self.ledger.deals().to_vec())
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
pub fn write_trades(out: &mut impl std::io::Write, deals: &[Deal]) -> std::io::Result<()> {
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
