//! WebSocket endpoints: `/ws/mt5` for MT5 bridges, `/ws/events` for trading clients.

pub mod events;
pub mod mt5;
pub mod protocol;
