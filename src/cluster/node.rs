//! The `Cluster` actor: this node's membership, its tenant leases and placement.
//!
//! Every `cluster.renew_ms` one round runs, and nothing else runs in this actor meanwhile (`ctx.wait`), so
//! the leases it holds have one writer:
//!
//! 1. **Heartbeat**: the node's row in `cluster_nodes` (id, advertised URL) is touched.
//! 2. **Renew** every held lease. A lease that could not be renewed (taken, expired) stops its tenant here at
//!    once; so does one that could not be *confirmed* for almost a whole lease (the database away): a node
//!    that cannot prove it owns a tenant stops trading it before another node may take it.
//! 3. **Acquire** tenants without a live lease while this node holds fewer than its fair share (tenants ÷
//!    live nodes, rounded up); each acquired tenant starts from the store with the lease's fencing token, so
//!    its writes are refused the moment another node takes it over.
//! 4. **Hand off** one tenant per round while this node holds more than its share and another live node
//!    holds less (a node joined): stop the tenant (its actors drain and its sessions close, so bridges
//!    reconnect and are redirected), then release the lease so the other node takes it at once.
//!
//! A round's view of the cluster (nodes, leases) is published for the HTTP side: bridges are redirected to
//! the owner and `GET /api/v1/cluster` reads it, without messaging this actor.

use std::collections::hash_map::DefaultHasher;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use schemars::JsonSchema;
use serde::Serialize;

use crate::actors::tenant::{TenantContext, TenantError};
use crate::actors::tree::Runtime;
use crate::config::{ClusterSettings, Settings};
use crate::domain::tenant::TenantSettings;
use crate::runtime::published::{publish, Published, Publisher};
use crate::runtime::slot::Slot;
use crate::security::service::Security;
use crate::storage::lease::{Lease, LeaseStore, NodeRow, Owner};
use crate::storage::security::TenantRow;

/// How long a tenant that moves away may take to drain before its lease is released anyway.
const DRAIN: Duration = Duration::from_secs(10);

/// A node as the cluster sees it.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct NodeView {
    pub id: String,
    /// Its advertised URL (`http://host:port`).
    pub url: Option<String>,
    /// Heartbeat younger than `cluster.node_timeout_ms`.
    pub live: bool,
    pub heartbeat_age_ms: i64,
    pub up_ms: i64,
    /// Tenants it holds a live lease on.
    pub tenants: Vec<String>,
}

/// A tenant's lease as the cluster sees it.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct LeaseView {
    pub tenant: String,
    pub node: String,
    /// The fencing token: one more at every change of owner.
    pub token: i64,
    pub live: bool,
    /// Since the lease was acquired.
    pub age_ms: i64,
}

/// The cluster as of this node's last round (`GET /api/v1/cluster`).
#[derive(Debug, Clone, Default, Serialize, JsonSchema)]
pub struct ClusterView {
    /// The node answering.
    pub node: String,
    pub url: String,
    /// When the round that saw this ended (ms since the Unix epoch); 0 before the first.
    pub at_ms: i64,
    /// Tenants ÷ live nodes, rounded up: what each node aims to hold.
    pub fair_share: usize,
    pub nodes: Vec<NodeView>,
    pub leases: Vec<LeaseView>,
}

impl ClusterView {
    /// Whether the tenant has ever had a lease (it exists in the cluster), live or not.
    pub fn knows(&self, tenant: &str) -> bool {
        self.leases.iter().any(|l| l.tenant == tenant)
    }

    /// The node that owns `tenant` under a live lease, and its URL.
    pub fn owner(&self, tenant: &str) -> Option<(&str, Option<&str>)> {
        let lease = self.leases.iter().find(|l| l.tenant == tenant && l.live)?;
        let url = self
            .nodes
            .iter()
            .find(|n| n.id == lease.node)
            .and_then(|n| n.url.as_deref());
        Some((lease.node.as_str(), url))
    }
}

/// What the rest of trellis holds of the cluster: the published view and the actor.
#[derive(Clone)]
pub struct ClusterHandle {
    pub node: String,
    pub url: String,
    pub view: Published<ClusterView>,
    pub addr: Slot<Cluster>,
}

impl crate::actors::tree::Placement for ClusterHandle {
    fn adopt(
        &self,
        settings: TenantSettings,
    ) -> futures_util::future::BoxFuture<'static, Result<Arc<TenantContext>, TenantError>> {
        let addr = self.addr.get();
        Box::pin(async move {
            addr.ok_or(TenantError::Unavailable)?
                .send(Adopt(settings))
                .await
                .map_err(|_| TenantError::Unavailable)?
        })
    }
}

/// Where a tenant that does not run on this node is, as the last placement round saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// Another node owns it under a live lease and advertises this URL.
    Remote { node: String, url: String },
    /// A tenant of the cluster that no reachable node runs this moment (between owners, or the view is a
    /// round behind): retry shortly.
    Moving,
    /// Not a tenant of the cluster.
    Unknown,
}

impl ClusterHandle {
    /// Where `tenant` runs when it does not run here (the bridge redirect, API forwarding and the client
    /// relay all ask this).
    pub fn locate(&self, tenant: &str) -> Location {
        let view = self.view.read();
        match view.owner(tenant) {
            Some((node, Some(url))) if node != self.node => Location::Remote {
                node: node.to_owned(),
                url: url.to_owned(),
            },
            _ if view.knows(tenant) => Location::Moving,
            _ => Location::Unknown,
        }
    }
}

/// This node's name and advertised URL from the settings (defaults: `<hostname>-<port>`,
/// `http://127.0.0.1:<port>`).
pub fn identity(settings: &ClusterSettings, port: u16) -> (String, String) {
    let node = match settings.node_id.trim() {
        "" => {
            let host = std::fs::read_to_string("/etc/hostname")
                .ok()
                .map(|h| h.trim().to_owned())
                .filter(|h| !h.is_empty())
                .unwrap_or_else(|| "node".into());
            format!("{host}-{port}")
        }
        id => id.to_owned(),
    };
    let url = match settings.advertise_url.trim() {
        "" => format!("http://127.0.0.1:{port}"),
        url => url.trim_end_matches('/').to_owned(),
    };
    (node, url)
}

/// The bridge endpoint of a node's advertised URL.
pub fn bridge_url(url: &str) -> String {
    ws_url(url, "/ws/mt5")
}

/// A WebSocket endpoint (`path`) of a node's advertised URL.
pub fn ws_url(url: &str, path: &str) -> String {
    let ws = if let Some(rest) = url.strip_prefix("https://") {
        format!("wss://{rest}")
    } else if let Some(rest) = url.strip_prefix("http://") {
        format!("ws://{rest}")
    } else {
        url.to_owned()
    };
    format!("{}{path}", ws.trim_end_matches('/'))
}

/// The tenant document that runs: the stored one, with the configuration's own API keys and the stored tier.
pub fn tenant_document(settings: &Settings, row: &TenantRow) -> Result<TenantSettings, String> {
    let mut doc: TenantSettings = serde_json::from_str(&row.settings)
        .map_err(|e| format!("the stored settings of tenant `{}`: {e}", row.id))?;
    if let Some(configured) = settings.tenants.iter().find(|t| t.id == row.id) {
        doc.api_keys = configured.api_keys.clone();
    }
    doc.tier = row.tier.clone();
    Ok(doc)
}

/// What a round needs, shared with its future.
struct Env {
    node: String,
    url: String,
    cluster: ClusterSettings,
    settings: Arc<Settings>,
    leases: LeaseStore,
    runtime: Runtime,
    security: Arc<Security>,
}

struct Held {
    lease: Lease,
    renewed: Instant,
}

pub struct Cluster {
    env: Arc<Env>,
    held: HashMap<String, Held>,
    publisher: Publisher<ClusterView>,
    first: bool,
    /// Set when the node shuts down: leases are still renewed, nothing new is taken.
    leaving: bool,
}

impl Cluster {
    /// Starts the actor on a pool of the application role; answers the handle HTTP and the runtime use.
    pub fn start(
        settings: Arc<Settings>,
        port: u16,
        pool: sqlx::PgPool,
        runtime: Runtime,
        security: Arc<Security>,
    ) -> (ClusterHandle, Addr<Cluster>) {
        let (node, url) = identity(&settings.cluster, port);
        let (publisher, view) = publish(ClusterView {
            node: node.clone(),
            url: url.clone(),
            ..ClusterView::default()
        });
        let env = Arc::new(Env {
            node: node.clone(),
            url: url.clone(),
            cluster: settings.cluster.clone(),
            settings,
            leases: LeaseStore::new(pool),
            runtime,
            security,
        });
        let addr = Cluster {
            env,
            held: HashMap::new(),
            publisher,
            first: true,
            leaving: false,
        }
        .start();
        let slot = Slot::default();
        slot.set(addr.clone());
        (
            ClusterHandle {
                node,
                url,
                view,
                addr: slot,
            },
            addr,
        )
    }

    fn round(&mut self, ctx: &mut Context<Self>) {
        let env = self.env.clone();
        let held = std::mem::take(&mut self.held);
        let (first, leaving) = (self.first, self.leaving);
        ctx.wait(
            async move { env.round(held, first, leaving).await }
                .into_actor(self)
                .map(|(held, view), act, _| {
                    act.held = held;
                    act.first = false;
                    if let Some(view) = view {
                        act.publisher.set(view);
                    }
                }),
        );
    }
}

impl Actor for Cluster {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        tracing::info!(node = %self.env.node, url = %self.env.url, lease_ms = self.env.cluster.lease_ms,
            renew_ms = self.env.cluster.renew_ms, "cluster node starting");
        self.round(ctx);
        ctx.run_interval(self.env.cluster.renew(), |act, ctx| act.round(ctx));
    }
}

/// A spread that differs per node: which free tenants a node tries first, so racing nodes mostly try
/// different ones.
fn rank(tenant: &str, node: &str) -> u64 {
    let mut h = DefaultHasher::new();
    (tenant, node).hash(&mut h);
    h.finish()
}

impl Env {
    async fn round(
        &self,
        mut held: HashMap<String, Held>,
        first: bool,
        leaving: bool,
    ) -> (HashMap<String, Held>, Option<ClusterView>) {
        let ttl = self.cluster.lease();
        let metrics = &self.runtime.metrics;
        if let Err(e) = self.leases.heartbeat(&self.node, &self.url, first).await {
            tracing::warn!(node = %self.node, error = %e, "cluster heartbeat not recorded");
        }
        // 2. Renew; stop what is lost or can no longer be confirmed.
        let mut lost = Vec::new();
        for (tenant, h) in held.iter_mut() {
            match self.leases.renew(&h.lease, ttl).await {
                Ok(true) => h.renewed = Instant::now(),
                Ok(false) => {
                    lost.push((tenant.clone(), "the lease was taken or ran out".to_owned()))
                }
                Err(e) if h.renewed.elapsed() + self.cluster.renew() >= ttl => {
                    lost.push((tenant.clone(), format!("the lease cannot be renewed: {e}")))
                }
                Err(e) => {
                    tracing::warn!(tenant = %tenant, error = %e, "lease renewal failed; retrying")
                }
            }
        }
        for (tenant, why) in lost {
            held.remove(&tenant);
            tracing::warn!(node = %self.node, tenant = %tenant, reason = %why, "lease lost: stopping the tenant here");
            self.runtime.stop_tenant(&tenant, DRAIN).await;
            metrics.ownership("lost", held.len());
        }
        let (nodes, owners, rows) = match self.read().await {
            Ok(read) => read,
            Err(e) => {
                tracing::warn!(node = %self.node, error = %e, "cluster state unreadable this round");
                return (held, None);
            }
        };
        let live = nodes.iter().filter(|n| n.live).count().max(1);
        let share = rows.len().div_ceil(live);
        let owner_of: HashMap<&str, &Owner> =
            owners.iter().map(|o| (o.tenant_id.as_str(), o)).collect();
        // Leases of tenants no longer in the registry (deleted) go back.
        let gone: Vec<String> = held
            .keys()
            .filter(|t| !rows.iter().any(|r| &r.id == *t))
            .cloned()
            .collect();
        for tenant in gone {
            if let Some(h) = held.remove(&tenant) {
                self.runtime.stop_tenant(&tenant, DRAIN).await;
                let _ = self.leases.release(&h.lease).await;
                metrics.ownership("released", held.len());
            }
        }
        let mut free: Vec<&TenantRow> = rows
            .iter()
            .filter(|r| !held.contains_key(&r.id))
            .filter(|r| owner_of.get(r.id.as_str()).is_none_or(|o| !o.live))
            .collect();
        free.sort_by_key(|r| rank(&r.id, &self.node));
        // Up to the fair share; beyond it only the least-loaded live node (lowest id on a tie), so a tenant
        // never stays unowned because every node counts a node that is leaving or failing as live.
        let want = if held.len() < share {
            share - held.len()
        } else if self.least_loaded(&nodes, &owners, held.len()) {
            free.len()
        } else {
            0
        };
        if !leaving && want > 0 {
            for row in free.into_iter().take(want) {
                self.take(row, owner_of.get(row.id.as_str()).copied(), &mut held)
                    .await;
            }
        } else if !leaving && self.cluster.rebalance && held.len() > share {
            let mut counts: HashMap<&str, usize> = nodes
                .iter()
                .filter(|n| n.live)
                .map(|n| (n.id.as_str(), 0))
                .collect();
            for o in owners.iter().filter(|o| o.live) {
                if let Some(c) = counts.get_mut(o.node_id.as_str()) {
                    *c += 1;
                }
            }
            let starved = counts
                .iter()
                .any(|(node, c)| *node != self.node && *c < share);
            let pick = held.keys().max_by_key(|t| rank(t, &self.node)).cloned();
            if let (true, Some(tenant)) = (starved, pick) {
                if let Some(h) = held.remove(&tenant) {
                    tracing::info!(node = %self.node, tenant = %tenant, held = held.len() + 1, share,
                        "handing the tenant over to a node below its share");
                    self.runtime.stop_tenant(&tenant, DRAIN).await;
                    match self.leases.release(&h.lease).await {
                        Ok(_) => metrics.ownership("released", held.len()),
                        Err(e) => {
                            tracing::warn!(tenant = %tenant, error = %e, "lease not released; it runs out instead")
                        }
                    }
                }
            }
        }
        let view = match (
            self.leases.nodes(self.timeout()).await,
            self.leases.owners().await,
        ) {
            (Ok(nodes), Ok(owners)) => Some(self.view(nodes, owners, share)),
            _ => None,
        };
        (held, view)
    }

    /// Whether this node holds the fewest live leases of the live nodes (the lowest id among equals).
    fn least_loaded(&self, nodes: &[NodeRow], owners: &[Owner], held: usize) -> bool {
        nodes
            .iter()
            .filter(|n| n.live && n.id != self.node)
            .all(|n| {
                let theirs = owners
                    .iter()
                    .filter(|o| o.live && o.node_id == n.id)
                    .count();
                (held, self.node.as_str()) < (theirs, n.id.as_str())
            })
    }

    fn timeout(&self) -> Duration {
        Duration::from_millis(self.cluster.node_timeout_ms)
    }

    async fn read(
        &self,
    ) -> Result<(Vec<NodeRow>, Vec<Owner>, Vec<TenantRow>), crate::storage::StorageError> {
        let nodes = self.leases.nodes(self.timeout()).await?;
        let owners = self.leases.owners().await?;
        let rows = self.security.store.tenants().await?;
        Ok((nodes, owners, rows))
    }

    /// Acquires one free tenant and starts it here; a tenant that will not start gives its lease back.
    async fn take(
        &self,
        row: &TenantRow,
        previous: Option<&Owner>,
        held: &mut HashMap<String, Held>,
    ) {
        let metrics = &self.runtime.metrics;
        let lease = match self
            .leases
            .acquire(&row.id, &self.node, self.cluster.lease())
            .await
        {
            Ok(Some(lease)) => lease,
            Ok(None) => return, // another node was quicker
            Err(e) => {
                tracing::warn!(tenant = %row.id, error = %e, "lease not acquired");
                return;
            }
        };
        let started = match tenant_document(&self.settings, row) {
            Ok(doc) => {
                self.security.set_suspended(&row.id, row.suspended != 0);
                self.runtime
                    .start_tenant_fenced(doc, Some(lease.token))
                    .await
                    .map(|_| ())
                    .map_err(|e| e.to_string())
            }
            Err(e) => Err(e),
        };
        if let Err(e) = started {
            tracing::error!(tenant = %row.id, error = %e, "tenant did not start; lease given back");
            let _ = self.leases.release(&lease).await;
            return;
        }
        let took_over = previous.is_some_and(|p| p.expired_ms.is_some() && p.node_id != self.node);
        if let Some(gap) = previous.and_then(|p| p.expired_ms) {
            metrics.unowned_for(gap as f64 / 1000.0);
        }
        tracing::info!(node = %self.node, tenant = %row.id, token = lease.token,
            previous = previous.map(|p| p.node_id.as_str()).unwrap_or("-"), took_over, "tenant owned");
        held.insert(
            row.id.clone(),
            Held {
                lease,
                renewed: Instant::now(),
            },
        );
        metrics.ownership(if took_over { "took_over" } else { "acquired" }, held.len());
    }

    fn view(&self, nodes: Vec<NodeRow>, owners: Vec<Owner>, share: usize) -> ClusterView {
        ClusterView {
            node: self.node.clone(),
            url: self.url.clone(),
            at_ms: crate::domain::now_ms(),
            fair_share: share,
            nodes: nodes
                .iter()
                .map(|n| NodeView {
                    id: n.id.clone(),
                    url: n.url(),
                    live: n.live,
                    heartbeat_age_ms: n.heartbeat_age_ms,
                    up_ms: n.up_ms,
                    tenants: owners
                        .iter()
                        .filter(|o| o.live && o.node_id == n.id)
                        .map(|o| o.tenant_id.clone())
                        .collect(),
                })
                .collect(),
            leases: owners
                .into_iter()
                .map(|o| LeaseView {
                    tenant: o.tenant_id,
                    node: o.node_id,
                    token: o.token,
                    live: o.live,
                    age_ms: o.age_ms,
                })
                .collect(),
        }
    }
}

/// Starts a tenant created through the API (or restarted after a failure) on this node: under the lease
/// this node holds on it, or a new one.
#[derive(Message)]
#[rtype(result = "Result<Arc<TenantContext>, TenantError>")]
pub struct Adopt(pub TenantSettings);

impl Handler<Adopt> for Cluster {
    type Result = AtomicResponse<Self, Result<Arc<TenantContext>, TenantError>>;

    fn handle(&mut self, msg: Adopt, _ctx: &mut Self::Context) -> Self::Result {
        let env = self.env.clone();
        let id = msg.0.id.clone();
        let kept = self.held.get(&id).map(|h| h.lease.clone());
        AtomicResponse::new(Box::pin(
            async move {
                let lease = match kept {
                    Some(lease) => Some(lease),
                    None => env
                        .leases
                        .acquire(&id, &env.node, env.cluster.lease())
                        .await
                        .map_err(|e| TenantError::Invalid {
                            tenant: id.clone(),
                            message: format!("taking its lease: {e}"),
                        })?,
                };
                let Some(lease) = lease else {
                    return Err(TenantError::Invalid {
                        tenant: id,
                        message: "another node owns it".into(),
                    });
                };
                match env
                    .runtime
                    .start_tenant_fenced(msg.0, Some(lease.token))
                    .await
                {
                    Ok(t) => Ok((t, lease)),
                    Err(e) => {
                        let _ = env.leases.release(&lease).await;
                        Err(e)
                    }
                }
            }
            .into_actor(self)
            .map(|started, act, _| {
                let (tenant, lease) = started?;
                act.held.insert(
                    tenant.id.0.clone(),
                    Held {
                        lease,
                        renewed: Instant::now(),
                    },
                );
                act.env
                    .runtime
                    .metrics
                    .ownership("acquired", act.held.len());
                Ok(tenant)
            }),
        ))
    }
}

/// The node is shutting down: take nothing more (leases are still renewed while tenants drain).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Leave;

impl Handler<Leave> for Cluster {
    type Result = ();

    fn handle(&mut self, _: Leave, _ctx: &mut Self::Context) {
        self.leaving = true;
    }
}

/// The node's tenants have drained: give every lease back so other nodes take them at once instead of
/// waiting for them to run out.
#[derive(Message)]
#[rtype(result = "usize")]
pub struct ReleaseAll;

impl Handler<ReleaseAll> for Cluster {
    type Result = AtomicResponse<Self, usize>;

    fn handle(&mut self, _: ReleaseAll, _ctx: &mut Self::Context) -> Self::Result {
        self.leaving = true;
        let env = self.env.clone();
        let held: Vec<Lease> = self.held.drain().map(|(_, h)| h.lease).collect();
        AtomicResponse::new(Box::pin(
            async move {
                let mut released = 0;
                for lease in held {
                    if matches!(env.leases.release(&lease).await, Ok(true)) {
                        released += 1;
                    }
                }
                // Gone at once for the others' fair shares, so they take the released tenants now.
                if let Err(e) = env.leases.leave(&env.node).await {
                    tracing::warn!(error = %e, "node not marked gone; it times out instead");
                }
                released
            }
            .into_actor(self)
            .map(|released, act, ctx| {
                act.env.runtime.metrics.ownership("released", 0);
                ctx.stop();
                released
            }),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_nodes_bridge_url_follows_its_advertised_scheme() {
        assert_eq!(
            bridge_url("http://10.0.0.5:8080"),
            "ws://10.0.0.5:8080/ws/mt5"
        );
        assert_eq!(
            bridge_url("https://trellis.example/"),
            "wss://trellis.example/ws/mt5"
        );
    }

    #[test]
    fn the_owner_is_the_node_of_the_live_lease_with_its_url() {
        let view = ClusterView {
            nodes: vec![NodeView {
                id: "b".into(),
                url: Some("http://127.0.0.1:2".into()),
                live: true,
                heartbeat_age_ms: 0,
                up_ms: 0,
                tenants: vec!["acme".into()],
            }],
            leases: vec![
                LeaseView {
                    tenant: "acme".into(),
                    node: "b".into(),
                    token: 3,
                    live: true,
                    age_ms: 1,
                },
                LeaseView {
                    tenant: "beta".into(),
                    node: "b".into(),
                    token: 1,
                    live: false,
                    age_ms: 1,
                },
            ],
            ..ClusterView::default()
        };
        assert_eq!(view.owner("acme"), Some(("b", Some("http://127.0.0.1:2"))));
        assert_eq!(view.owner("beta"), None);
        assert_eq!(view.owner("gamma"), None);
    }
}
