//! WebSocket endpoints: `/ws/mt5` for MT5 bridges.

pub mod mt5;
pub mod protocol;
