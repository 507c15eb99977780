//! Model deployments of a tenant: made from registry versions, changed live, removed, and monitored.
//!
//! A deployment (`POST …/models/{model}/deployments`) runs one registry model on one symbol and timeframe:
//! `traffic` versions split the bars by weight (deterministically per bar, see `models::deployment::pick`),
//! `shadow` versions predict beside them and never trade. A version is named by its sha256 or by an alias
//! (`champion`, `challenger`, …); a deployment that names an alias follows it: when the alias moves, the
//! deployment serves the version it points at from then on (audited). Weights, versions and budget change
//! live (`PUT`), audited with what they were and what they became; the versions kept keep their warm
//! features and monitoring. Every change is stored in the tenant's document by name, so a restart (of the
//! process, of the tenant, or on another node) serves the same deployment — an alias resolved to where it
//! points then.
//!
//! The deployments are owned by the tenant's `MarketData` (which routes bars to them): these handlers load
//! and validate the versions off the HTTP workers, hand the deployment to its owner, start or tell its
//! `ModelHost`, then store the document. Custom models need the professional tier; the number of
//! deployments is a per-tier quota (`[quotas] model_deployments`).

use std::collections::BTreeMap;
use std::sync::Arc;

use actix_web::web;
use schemars::JsonSchema;
use serde::Serialize;

use super::{Authorized, Body, Deleted, Reply};
use crate::actors::messages::{GetModelState, ModelVersionState};
use crate::actors::tenant::TenantContext;
use crate::app::deployments::{self, deployment_of, ChangeDeployment, CreateDeployment};
use crate::domain::tenant::RetrainSettings;
use crate::domain::Prediction;
use crate::domain::{Symbol, Timeframe};
use crate::http::error::ApiError;
use crate::models::deployment::Deployment;
use crate::models::manifest::Manifest;
use crate::runtime::supervisor::GetChildren;

/// Where a deployment's model host is: `running`, `restarting` (between a failure and its restart) or
/// `failed` (disabled for failing too often; `last_error` says why).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum DeploymentState {
    Running,
    Restarting,
    Failed,
}

/// A deployment as it runs: its versions with their configured and live weights, counts and monitoring.
#[derive(Debug, Serialize, JsonSchema)]
pub struct DeploymentView {
    /// The deployment's id.
    pub deployment: String,
    /// The registry model; `null` for a deployment of configured files.
    pub model: Option<String>,
    pub symbol: Symbol,
    pub timeframe: Timeframe,
    /// A prediction slower than this is dropped and counted (µs).
    pub budget_us: u64,
    /// The retraining schedule, if any.
    pub retrain: Option<RetrainSettings>,
    pub state: DeploymentState,
    /// Why the model host was disabled (`state: failed`).
    pub last_error: Option<String>,
    /// The traffic versions, then the shadow versions.
    pub versions: Vec<DeployedVersion>,
    /// The last (at most 20) predictions, newest last; `null` while the host does not run.
    pub recent: Option<Vec<Prediction>>,
}

/// A version of a deployment.
#[derive(Debug, Serialize, JsonSchema)]
pub struct DeployedVersion {
    /// The sha256 of its ONNX file.
    pub version: String,
    /// The alias it was resolved from and follows; `null` when named by its sha256.
    pub alias: Option<String>,
    /// A shadow version predicts beside the traffic and never trades.
    pub shadow: bool,
    /// Its share of the bars as configured (0 for a shadow version).
    pub configured_weight: f64,
    pub manifest: Manifest,
    /// What the running host reports of it; `null` while the host does not run.
    pub live: Option<ModelVersionState>,
}

/// Every model deployment of the tenant.
#[derive(Debug, Serialize, JsonSchema)]
pub struct DeploymentList {
    pub models: Vec<DeploymentView>,
}

/// A model's deployments.
#[derive(Debug, Serialize, JsonSchema)]
pub struct ModelMonitoringView {
    pub model: String,
    pub deployments: Vec<DeploymentView>,
}

/// `POST …/models/{model}/deployments`: deploys registry versions of the model on a symbol and timeframe.
pub async fn create(
    auth: Authorized,
    path: web::Path<(String, String)>,
    Body(body): Body<serde_json::Value>,
) -> Result<Reply<DeploymentView, 201>, ApiError> {
    let body: CreateDeployment = super::docs::decode(body)?;
    super::models::tier_gate(&auth)?;
    let model = super::models::model_of(&auth, &path.1).await?;
    let t = auth.tenant()?.clone();
    let d = deployments::create(&auth.state, &t, auth.actor(), &model.name, body).await?;
    Ok(auth.created(view(&t, &d, &children(&t).await).await))
}

/// `PUT …/models/{model}/deployments/{id}`: changes versions, weights or budget live.
pub async fn change(
    auth: Authorized,
    path: web::Path<(String, String, String)>,
    Body(body): Body<serde_json::Value>,
) -> Result<Reply<DeploymentView>, ApiError> {
    let body: ChangeDeployment = super::docs::decode(body)?;
    super::models::tier_gate(&auth)?;
    let t = auth.tenant()?.clone();
    let after = deployments::change(&auth.state, &t, auth.actor(), &path.1, &path.2, body).await?;
    Ok(auth.ok(view(&t, &after, &children(&t).await).await))
}

/// `DELETE …/models/{model}/deployments/{id}`: refused (409) while a strategy trades its predictions.
pub async fn delete(
    auth: Authorized,
    path: web::Path<(String, String, String)>,
) -> Result<Reply<Deleted>, ApiError> {
    super::models::tier_gate(&auth)?;
    let t = auth.tenant()?.clone();
    let id = deployments::delete(&auth.state, &t, auth.actor(), &path.1, &path.2).await?;
    Ok(auth.ok(Deleted { deleted: id }))
}

/// What the strategies supervisor knows of each model host: (running, why disabled), by deployment.
async fn children(t: &TenantContext) -> BTreeMap<String, (bool, Option<String>)> {
    let Some(sup) = t.strategy_supervisor.get() else {
        return BTreeMap::new();
    };
    sup.send(GetChildren)
        .await
        .unwrap_or_default()
        .into_iter()
        .filter_map(|c| {
            let id = c.name.strip_prefix("model:")?.to_owned();
            Some((id, (c.running, c.disabled)))
        })
        .collect()
}

/// A deployment as it runs: its versions with their configured and live weights, counts and monitoring.
async fn view(
    t: &TenantContext,
    d: &Deployment,
    children: &BTreeMap<String, (bool, Option<String>)>,
) -> DeploymentView {
    let (running, disabled) = children.get(&d.id).cloned().unwrap_or((false, None));
    let state = match (running, &disabled) {
        (_, Some(_)) => DeploymentState::Failed,
        (true, None) => DeploymentState::Running,
        (false, None) => DeploymentState::Restarting,
    };
    let host = t.model_hosts.read().get(&d.id).cloned();
    let live = match host {
        Some(h) if state == DeploymentState::Running => h.send(GetModelState).await.ok(),
        _ => None,
    };
    let versions: Vec<_> = d
        .traffic
        .iter()
        .map(|v| (v, false))
        .chain(d.shadow.iter().map(|v| (v, true)))
        .map(|(v, shadow)| {
            let now = live.as_ref().and_then(|l| {
                l.versions
                    .iter()
                    .find(|s| s.version == v.version && s.shadow == shadow)
            });
            DeployedVersion {
                version: v.version.clone(),
                alias: v.alias.clone(),
                shadow,
                configured_weight: if shadow { 0.0 } else { v.weight },
                manifest: v.manifest.clone(),
                live: now.cloned(),
            }
        })
        .collect();
    DeploymentView {
        deployment: d.id.clone(),
        model: d.settings.model.clone(),
        symbol: d.symbol.clone(),
        timeframe: d.timeframe,
        budget_us: d.budget_us,
        retrain: d.settings.retrain.clone(),
        state,
        last_error: disabled,
        versions,
        recent: live.map(|l| l.recent[l.recent.len().saturating_sub(20)..].to_vec()),
    }
}

async fn views(t: &TenantContext, model: Option<&str>) -> Vec<DeploymentView> {
    let all: Vec<Arc<Deployment>> = t
        .deployments
        .read()
        .values()
        .filter(|d| model.is_none() || d.settings.model.as_deref() == model)
        .cloned()
        .collect();
    let children = children(t).await;
    let mut items = Vec::with_capacity(all.len());
    for d in all {
        items.push(view(t, &d, &children).await);
    }
    items
}

/// `GET …/deployments`: every model deployment of the tenant, with its monitoring.
pub async fn list(auth: Authorized) -> Result<Reply<DeploymentList>, ApiError> {
    let t = auth.tenant()?;
    Ok(auth.ok(DeploymentList {
        models: views(t, None).await,
    }))
}

/// `GET …/models/{model}/monitoring`: the model's deployments and how each version does.
pub async fn monitoring(
    auth: Authorized,
    path: web::Path<(String, String)>,
) -> Result<Reply<ModelMonitoringView>, ApiError> {
    let model = super::models::model_of(&auth, &path.1).await?;
    let t = auth.tenant()?;
    let deployments = views(t, Some(&model.name)).await;
    Ok(auth.ok(ModelMonitoringView {
        model: model.name,
        deployments,
    }))
}

/// `GET …/models/{model}/deployments/{id}`: one deployment with its monitoring.
pub async fn get(
    auth: Authorized,
    path: web::Path<(String, String, String)>,
) -> Result<Reply<DeploymentView>, ApiError> {
    let t = auth.tenant()?;
    let d = deployment_of(t, &path.1, &path.2)?;
    Ok(auth.ok(view(t, &d, &children(t).await).await))
}
