//! trellis: a multi-tenant, actor-based trading runtime for MetaTrader 5.
//!
//! MT5 terminals connect through a bridge over WebSocket; their ticks become bars, strategies decide, risk
//! approves, orders go back to the terminal and fills become positions — per tenant, in supervised actors.
//! See `shared/DESIGN.md` for the architecture.
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

pub mod actors;
pub mod app;
pub mod backtest;
pub mod bridge;
// The benchmark suite (`trellis bench`) is a default feature: release builds have it, and the test command
// builds without it (`--no-default-features`), so its 3k lines are not compiled into every test binary.
#[cfg(feature = "bench")]
pub mod bench;
pub mod cluster;
pub mod config;
pub mod demo;
pub mod domain;
pub mod http;
pub mod metrics;
pub mod models;
pub mod runtime;
pub mod security;
pub mod sim;
pub mod startup;
pub mod storage;
pub mod strategies;
pub mod telemetry;

#[cfg(test)]
mod layers;
