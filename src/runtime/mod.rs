//! The supervision engine every actor runs under, apart from what the actors do.
//!
//! - `supervisor`: restart policies, intensity, back-off, escalation and panic containment (`contain`).
//! - `slot`: the current address of a supervised actor, empty while it restarts.
//! - `task`: supervised background tasks (restarted on panic) and the fault points the crash tests use.
//! - `published`: immutable snapshots an actor publishes for readers (`tokio::sync::watch`).
//! - `events`: the bounded history of supervision events shown by the admin API.
//! - `bus`: the per-tenant event bus (in-process broadcast, relayed through Redis between nodes).
//! - `priority`: thread niceness for the threads that must yield to trading.
//!
//! Why a layer of its own: storage writers, model hosts, the log writer and the tenant's actors all run under
//! the same supervision; when the engine sat among the trading actors, every store imported the actors' folder.
//! It depends on `config` (supervision settings), `metrics` and `domain` only.

pub mod bus;
pub mod events;
pub mod priority;
pub mod published;
pub mod slot;
pub mod supervisor;
pub mod task;
