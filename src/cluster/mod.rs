//! Several trellis nodes sharing one PostgreSQL: tenant ownership under fenced leases.
//!
//! Failover is a restart on another node: a tenant's actors restore from the store and reconcile with the
//! terminals when they reconnect (the crash-safety protocol), so what this module adds is *who* runs a tenant
//! and the guarantee that a node that lost a tenant can no longer write for it. See
//! `migrations/postgres/0005_cluster.sql` for the tables and [`lease`] for the rules.
//!
//! State of the work: the lease store and its fencing are built and tested against PostgreSQL; placement,
//! renewal in the background, redirects and forwarding (the rest of the scale-out issue) are not yet.

pub mod lease;
