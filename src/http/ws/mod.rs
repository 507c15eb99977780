//! WebSocket endpoints: `/ws/mt5` for MT5 bridges, `/ws/v1/client` (and the older `/ws/events`) for trading
//! clients.

pub mod asyncapi;
pub mod client;
pub mod events;
pub mod mt5;
pub mod relay;
