//! The actors of the supervision tree (shared/DESIGN.md) and the supervision layer they run under.
//!
//! - `supervisor`: restart policies, intensity, back-off, escalation, panic containment.
//! - `events`: the bounded history of supervision events shown by the admin API.
//! - `tree`: builds the root of the tree (storage first, then tenants) and hands out its handles.

pub mod bus;
pub mod events;
pub mod feed;
pub mod log_tiers;
pub mod market_data;
pub mod messages;
pub mod model;
pub mod mt5_session;
pub mod optimisations;
pub mod portfolio;
pub mod published;
pub mod risk;
pub mod slot;
pub mod strategy;
pub mod supervisor;
pub mod task;
pub mod tenant;
pub mod training;
pub mod tree;
