//! The tenant's actors (shared/DESIGN.md, "The supervision tree") and the tree of tenants.
//!
//! Per tenant: `mt5_session` (one per connected terminal), `market_data` (ticks → bars, routes to
//! strategies and models), `strategy` (one per strategy instance), `model` (one host per deployment),
//! `risk` (pre-trade checks, limits, kill switch), `portfolio` (orders, fills, positions, the write-ahead
//! record) and `feed` (what trading clients see). `tenant` builds a tenant's subtree and holds its context;
//! `tree` is the process's root: storage first, then the tenants (`Runtime`). `messages` holds the typed
//! messages between them.
//!
//! The engine they run under (supervisors, slots, tasks, published snapshots, the event bus) is
//! `crate::runtime`; the use cases that drive them from outside are `crate::app`.

pub mod feed;
pub mod market_data;
pub mod messages;
pub mod model;
pub mod mt5_session;
pub mod portfolio;
pub mod risk;
pub mod strategy;
pub mod tenant;
pub mod tree;
