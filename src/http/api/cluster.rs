//! `GET /api/v1/cluster` (platform admin): the nodes, which tenants each holds, and every lease with its
//! fencing token and age — as this node saw them at its last placement round (`cluster.renew_ms` ago at
//! most). Without cluster mode the answer describes this node alone.

use schemars::JsonSchema;
use serde::Serialize;

use super::{Authorized, Reply};
use crate::cluster::node::NodeView;
use crate::cluster::ClusterView;
use crate::http::error::ApiError;

#[derive(Debug, Serialize, JsonSchema)]
pub struct ClusterAnswer {
    /// `cluster.enabled` on this node.
    pub enabled: bool,
    #[serde(flatten)]
    pub view: ClusterView,
}

pub async fn get(auth: Authorized) -> Result<Reply<ClusterAnswer>, ApiError> {
    let runtime = &auth.state.runtime;
    let answer = match &auth.state.cluster {
        Some(cluster) => ClusterAnswer {
            enabled: true,
            view: cluster.view.get(),
        },
        None => {
            let mut tenants: Vec<String> = runtime.tenants.iter().map(|t| t.id.0.clone()).collect();
            tenants.sort();
            ClusterAnswer {
                enabled: false,
                view: ClusterView {
                    node: "local".into(),
                    url: String::new(),
                    at_ms: crate::domain::now_ms(),
                    fair_share: tenants.len(),
                    nodes: vec![NodeView {
                        id: "local".into(),
                        url: None,
                        live: true,
                        heartbeat_age_ms: 0,
                        up_ms: 0,
                        tenants,
                    }],
                    leases: Vec::new(),
                },
            }
        }
    };
    Ok(auth.ok(answer))
}
