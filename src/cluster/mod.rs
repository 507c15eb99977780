//! Several trellis nodes sharing one PostgreSQL: tenant ownership under fenced leases.
//!
//! Failover is a restart on another node: a tenant's actors restore from the store and reconcile with the
//! terminals when they reconnect (the crash-safety protocol), so what this module adds is *who* runs a tenant
//! and the guarantee that a node that lost a tenant can no longer write for it. See
//! `migrations/postgres/0005_cluster.sql` for the tables and [`crate::storage::lease`] for the rules.
//!
//! [`node::Cluster`] is the actor that holds this node's leases, renews them, places tenants and hands them
//! over; `docs/cluster.md` tells what is built and what is not.

pub mod node;

pub use node::{ClusterHandle, ClusterView};
