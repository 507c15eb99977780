//! trellis: a multi-tenant, actor-based trading runtime for MetaTrader 5.
//!
//! MT5 terminals connect through a bridge over WebSocket; their ticks become bars, strategies decide, risk
//! approves, orders go back to the terminal and fills become positions — per tenant, in supervised actors.
//! See `shared/DESIGN.md` for the architecture.
//!
//! # Embedding trellis
//!
//! The items at the root of this crate are its embedding API, the surface kept stable (`docs/embedding.md`
//! lists it, and a test fails when an item is added to it without being listed there): build settings
//! ([`Settings`]), start the supervision tree with or without the HTTP front door ([`Application`]),
//! register your own strategy kinds ([`Strategy`], [`StrategyRegistry`]) or load WebAssembly modules
//! ([`WasmModule`]), add tenants ([`Runtime::start_tenant`]), feed them a terminal (the bridge protocol, or
//! the simulated terminal [`spawn_simulator`]), backtest ([`backtest`]) and stop cleanly ([`StopHandle`]).
//! The modules below are the implementation: public so that the integration tests and the benchmarks can
//! drive it, hidden from this documentation, and not covered by any stability promise.
//!
//! A strategy written outside the crate, backtested on generated ticks:
//!
//! ```
//! use rust_decimal::Decimal;
//! use trellis::{Bar, ParamError, ParamReader, Params, Strategy, StrategyRegistry};
//!
//! /// Long after `n` rising closes in a row, flat otherwise.
//! struct Streak { n: usize, seen: usize, last: Option<Decimal>, volume: Decimal }
//!
//! impl Strategy for Streak {
//!     fn on_bar(&mut self, bar: &Bar) -> Option<Decimal> {
//!         let rising = self.last.is_some_and(|l| bar.close > l);
//!         self.last = Some(bar.close);
//!         self.seen = if rising { self.seen + 1 } else { 0 };
//!         Some(if self.seen >= self.n { self.volume } else { Decimal::ZERO })
//!     }
//! }
//!
//! fn build(params: &Params, volume: Decimal) -> Result<Box<dyn Strategy>, ParamError> {
//!     let mut p = ParamReader::new("streak", params);
//!     let n = p.period("n", 3, 1, 100)?;
//!     p.finish()?;
//!     Ok(Box::new(Streak { n, seen: 0, last: None, volume }))
//! }
//!
//! let registry = StrategyRegistry::default();
//! registry.register("streak", build);
//! let ticks: Vec<_> = trellis::RandomWalk::new(
//!     trellis::RandomWalk::default_symbols(&["EURUSD".into()]), 1_700_000_000_000, 1_000, 7,
//! )
//! .take(20_000)
//! .collect();
//! let cfg = trellis::BacktestConfig::new("EURUSD", "streak", Params::new(), trellis::Timeframe::M1);
//! let (report, _deals) = trellis::backtest(cfg, &registry, &ticks).expect("runs");
//! assert_eq!(report.ticks, 20_000);
//! assert!(report.fills > 0);
//! ```
//!
//! `examples/custom_strategy.rs` goes on to trade such a strategy live against the simulated terminal, and
//! `examples/embedded_runtime.rs` runs the supervision tree inside another program.
//!
//! # Layout
//! Dependencies point down: a module imports only from the modules below it in this list (the rule and its
//! check are in `layers.rs`; `docs/architecture.md` walks through it and the path of one tick).
//!
//! - `main`, `startup`, `demo`, `bench`: the binary's commands and the wiring of one process — `startup`
//!   builds the tree, the cluster, the jobs and the HTTP server, runs them and shuts them down in order.
//! - `http`: the adapter — extract a request, call `app`, shape the reply: REST handlers, the client and bridge
//!   WebSockets, OpenAPI/AsyncAPI, the dashboard, forwarding to the node that owns a tenant.
//! - `app`: the use cases (tenants, strategies, trading, deployments, models, optimisation, tickets) with
//!   their own error type, and the job actors (training, optimisation) that call them.
//! - `cluster`: nodes and placement under fenced leases (implements `actors::tree::Placement`).
//! - `actors`: the tenant's actors (session, market data, strategy, model, risk, portfolio, feed), their
//!   messages, and the tree of tenants (`actors::tree::Runtime`).
//! - `backtest`, `sim`: the live decision code over history, and the simulated MT5 terminal and broker.
//! - `security`, `telemetry`: authentication, authorisation, encryption and audit; logging set-up.
//! - `models`, `strategies`: features, inference, training and drift; the `Strategy` trait, the built-ins
//!   and tenant strategies as sandboxed WebAssembly modules (`strategies::wasm`).
//! - `storage`: stores (SQLite, PostgreSQL, ClickHouse, Redis), the group commit of orders and deals
//!   (`storage::journal`), leases and the log tiers.
//! - `bridge`: the MT5 wire protocol, used by the session, the simulator, the backtester and `http`.
//! - `runtime`: the supervision engine — supervisors, slots, supervised tasks, published snapshots, the
//!   supervision event log and the event bus.
//! - `config`, `metrics`: process settings; Prometheus metrics.
//! - `domain`: pure types and maths: ids, tiers, the tenant document, bars, orders, positions, ledger, risk,
//!   correlation, predictions.

// Crate lints: unsafe code is refused but for the one documented call (`runtime::priority`: renice a thread).
#![deny(unsafe_code)]
#![warn(rust_2018_idioms)]

// The implementation: hidden from the documentation, outside the stable surface (see the crate docs).
#[doc(hidden)]
pub mod actors;
#[doc(hidden)]
pub mod app;
#[doc(hidden)]
pub mod backtest;
#[doc(hidden)]
pub mod bridge;
// The benchmark suite (`trellis bench`) is a default feature: release builds have it, and the test command
// builds without it (`--no-default-features`), so its 3k lines are not compiled into every test binary.
#[cfg(feature = "bench")]
#[doc(hidden)]
pub mod bench;
#[doc(hidden)]
pub mod cluster;
#[doc(hidden)]
pub mod config;
#[doc(hidden)]
pub mod demo;
#[doc(hidden)]
pub mod domain;
#[doc(hidden)]
pub mod http;
#[doc(hidden)]
pub mod metrics;
#[doc(hidden)]
pub mod models;
#[doc(hidden)]
pub mod runtime;
#[doc(hidden)]
pub mod security;
#[doc(hidden)]
pub mod sim;
#[doc(hidden)]
pub mod startup;
#[doc(hidden)]
pub mod storage;
#[doc(hidden)]
pub mod strategies;
#[doc(hidden)]
pub mod telemetry;

// ---- The embedding API: every item here is listed in docs/embedding.md (`public_api` checks it). ----

// Settings and the process.
pub use config::{Profile, Settings};
pub use startup::{Application, StopHandle};
// The tree of tenants, a tenant, and what an embedding program reads of one.
pub use actors::messages::{GetPortfolio, PortfolioSnapshot};
pub use actors::tenant::TenantContext;
pub use actors::tree::Runtime;
pub use domain::events::EventKind;
pub use domain::tenant::{OnFailure, RiskSettings, StrategySettings, TenantSettings};
pub use runtime::bus::{EventBus, TenantEvent};
// Strategies: the contract, its parameters, the registry of kinds; WebAssembly modules.
pub use strategies::wasm::{WasmError, WasmLimits, WasmManifest, WasmModule, WasmParam};
pub use strategies::{
    ParamError, ParamReader, Params, Strategy, StrategyFactory, StrategyRegistry,
};
// What strategies see and produce.
pub use domain::orders::{Order, OrderStatus};
pub use domain::positions::{Deal, Fill};
pub use domain::{Bar, Prediction, Side, Symbol, Tick, Timeframe};
// Backtests on the live decision code.
pub use backtest::history::{open as open_history, HistoryOptions};
pub use backtest::{run as backtest, Backtest, BacktestConfig, Report};
// A terminal to trade against: the simulated one, speaking the bridge protocol over a real WebSocket.
pub use sim::feed::RandomWalk;
pub use sim::{spawn as spawn_simulator, SimConfig, SimHandle};

#[cfg(test)]
mod layers;
#[cfg(test)]
mod public_api;
