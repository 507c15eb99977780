//! `trellis mt5-sim`: a simulated MT5 terminal and broker that speaks the bridge protocol for real, over a
//! WebSocket. The demo, the tests and the benchmarks drive trellis with it.

pub mod broker;
pub mod client;
pub mod feed;
pub mod history;
pub mod node;
pub mod terminal;

pub use broker::{Broker, BrokerConfig};
pub use terminal::{spawn, Control, Feeder, SimConfig, SimError, SimHandle, SimStats};
