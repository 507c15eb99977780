//! The MT5 bridge's side of trellis that is not HTTP: the wire protocol spoken on `/ws/mt5`.
//!
//! Why its own layer: the protocol's frames are used by the session actor (live), the simulated terminal and
//! broker (`sim`), the backtester and the HTTP endpoint that carries them. It sits just above `domain`, so
//! every one of them can reach it without importing the HTTP layer. `docs/mt5-protocol.md` is its reference.

pub mod bars;
pub mod protocol;
