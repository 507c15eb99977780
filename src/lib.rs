//! trellis: a multi-tenant, actor-based trading runtime for MetaTrader 5.
//!
//! MT5 terminals connect through a bridge over WebSocket; their ticks become bars, strategies decide, risk
//! approves, orders go back to the terminal and fills become positions — per tenant, in supervised actors.
//! See `shared/DESIGN.md` for the architecture.
//!
//! # Layout
//! - `domain`: pure trading types (ticks, bars, orders, positions, PnL) shared by live, backtest and sim.
//! - `backtest`: `trellis backtest`, the live decision code run over history.
//! - `bench`: `trellis bench`, the benchmark suite (figures in BENCHMARKS.md).
//! - `config`: settings from `config/*.toml` and `TRELLIS__…` variables, validated at start-up.
//! - `demo`: `trellis demo`, the runtime with a demo tenant and a simulated terminal.
//! - `startup`: `Application` — builds the tree and the HTTP server, runs, shuts down in order.
//! - `actors`: the supervision layer and the supervision tree.
//! - `http`: the HTTP routes (health, readiness, metrics, later the admin API) and their error type.
//! - `storage`: storage actors (embedded SQLite by default) and their health board.
//! - `security`: authentication, authorisation, encryption and audit (filled by the security issue).
//! - `strategies`: the `Strategy` trait and the built-in strategies.
//! - `sim`: the simulated MT5 terminal and broker (`trellis mt5-sim`, the demo, tests, benchmarks).
//! - `models`: features, drift statistics and ONNX inference for model actors.
//! - `metrics`: Prometheus metrics.
//! - `telemetry`: logging set-up.

pub mod actors;
pub mod backtest;
pub mod bench;
pub mod cluster;
pub mod config;
pub mod demo;
pub mod domain;
pub mod http;
pub mod metrics;
pub mod models;
pub mod security;
pub mod sim;
pub mod startup;
pub mod storage;
pub mod strategies;
pub mod telemetry;
