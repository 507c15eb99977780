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
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::{Authorized, Body, Deleted, Reply};
use crate::actors::messages::{DropDeployment, GetModelState, ModelVersionState, SetDeployment};
use crate::actors::tenant::TenantContext;
use crate::app::deployments::{apply, deployment_of, load, weights};
use crate::app::{market_data, strategies_supervisor};
use crate::domain::tenant::{ModelDeploymentSettings, ModelVersionSettings, RetrainSettings};
use crate::domain::Prediction;
use crate::domain::{Symbol, Timeframe};
use crate::http::error::ApiError;
use crate::models::deployment::Deployment;
use crate::models::manifest::Manifest;
use crate::runtime::supervisor::{GetChildren, StartChild, StopChild, SupervisionError};

/// Largest budget a deployment may give one prediction (µs): a second.
const MAX_BUDGET_US: u64 = 1_000_000;

/// A version of the deployment's model: by sha256 (`version`) or by an alias it follows (`alias`).
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DeployVersion {
    #[serde(default)]
    #[schemars(pattern(r"^[0-9a-f]{64}$"))]
    pub version: Option<String>,
    #[serde(default)]
    #[schemars(pattern(r"^[A-Za-z0-9_-]{1,64}$"))]
    pub alias: Option<String>,
    /// Share of the bars (traffic versions); ignored for shadow versions.
    #[serde(default = "one")]
    #[schemars(range(min = 0.0, max = 1000000.0))]
    pub weight: f64,
}

fn one() -> f64 {
    1.0
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateDeployment {
    #[schemars(pattern(r"^[A-Za-z0-9_-]{1,64}$"))]
    pub id: String,
    pub symbol: String,
    #[schemars(pattern(r"^(M1|M5|M15|H1|H4|D1)$"))]
    pub timeframe: String,
    #[serde(default)]
    pub traffic: Vec<DeployVersion>,
    #[serde(default)]
    pub shadow: Vec<DeployVersion>,
    /// A prediction slower than this is dropped and counted (µs, default 5 000).
    #[serde(default)]
    #[schemars(range(min = 1, max = 1000000))]
    pub budget_us: Option<u64>,
    /// Retrain the model on a schedule and promote a significantly better challenger.
    #[serde(default)]
    pub retrain: Option<RetrainSettings>,
}

/// What changes: the lists given replace the deployment's; what is left out stays.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ChangeDeployment {
    #[serde(default)]
    pub traffic: Option<Vec<DeployVersion>>,
    #[serde(default)]
    pub shadow: Option<Vec<DeployVersion>>,
    #[serde(default)]
    #[schemars(range(min = 1, max = 1000000))]
    pub budget_us: Option<u64>,
    /// A new schedule (replaces the old one).
    #[serde(default)]
    pub retrain: Option<RetrainSettings>,
    /// Stop retraining.
    #[serde(default)]
    pub no_retrain: bool,
}

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

/// Checks a retraining schedule; the error names the field.
fn checked_retrain(r: &RetrainSettings) -> Result<(), ApiError> {
    let every = crate::domain::tenant::parse_span(&r.every).ok_or_else(|| {
        ApiError::BadRequest("retrain.every: a number and s, m, h or d (`1d`)".into())
    })?;
    crate::domain::tenant::parse_span(&r.window).ok_or_else(|| {
        ApiError::BadRequest("retrain.window: a number and s, m, h or d (`90d`)".into())
    })?;
    if every < 1_000 {
        return Err(ApiError::BadRequest("retrain.every: at least 1s".into()));
    }
    if !(0.0..=1.0).contains(&r.min_improvement) {
        return Err(ApiError::BadRequest(
            "retrain.min_improvement: from 0 to 1".into(),
        ));
    }
    if !(r.alpha > 0.0 && r.alpha <= 0.5) {
        return Err(ApiError::BadRequest(
            "retrain.alpha: above 0, at most 0.5".into(),
        ));
    }
    super::valid_id("retrain.alias", &r.alias)?;
    r.train
        .validate()
        .map_err(|e| ApiError::BadRequest(format!("retrain.train.{e}")))?;
    Ok(())
}

fn checked(list: &str, versions: &[DeployVersion]) -> Result<Vec<ModelVersionSettings>, ApiError> {
    versions
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let at = format!("{list}[{i}]");
            if !v.weight.is_finite() || v.weight < 0.0 || v.weight > 1e6 {
                return Err(ApiError::BadRequest(format!(
                    "{at}.weight: from 0 to 1000000, not {}",
                    v.weight
                )));
            }
            match (&v.version, &v.alias) {
                (Some(sha), None) => {
                    if sha.len() != 64 || !sha.bytes().all(|b| b.is_ascii_hexdigit()) {
                        return Err(ApiError::BadRequest(format!(
                            "{at}.version: a version is the sha256 of its file, 64 hex digits"
                        )));
                    }
                }
                (None, Some(alias)) => super::valid_id(&format!("{at}.alias"), alias)?,
                _ => {
                    return Err(ApiError::BadRequest(format!(
                        "{at}: give either `version` or `alias`"
                    )))
                }
            }
            Ok(ModelVersionSettings {
                version: v.version.as_ref().map(|s| s.to_ascii_lowercase()),
                alias: v.alias.clone(),
                weight: v.weight,
                ..ModelVersionSettings::default()
            })
        })
        .collect()
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
    let _admin = t.admin.lock().await;
    super::valid_id("id", &body.id)?;
    crate::app::trading::traded_symbol(&t, "symbol", &body.symbol)?;
    crate::app::trading::symbol_and_timeframe(&t, &body.symbol, &body.timeframe)?;
    let budget_us = body.budget_us.unwrap_or(5_000);
    if budget_us == 0 || budget_us > MAX_BUDGET_US {
        return Err(ApiError::BadRequest(format!(
            "budget_us: from 1 to {MAX_BUDGET_US}"
        )));
    }
    if body.traffic.is_empty() && body.shadow.is_empty() {
        return Err(ApiError::BadRequest(
            "traffic: at least one version (or shadow versions)".into(),
        ));
    }
    let (exists, count) = {
        let all = t.deployments.read();
        (all.contains_key(&body.id), all.len())
    };
    if exists {
        return Err(ApiError::Conflict(format!(
            "id: deployment `{}` already exists",
            body.id
        )));
    }
    let quotas = &auth.state.settings.quotas.model_deployments;
    let quota = quotas.per_minute(&t.tier());
    if count as u32 >= quota {
        return Err(crate::app::tenants::quota_exceeded(
            quotas,
            &t.tier(),
            "model deployments",
            quota,
        ));
    }
    if let Some(r) = &body.retrain {
        checked_retrain(r)?;
    }
    let settings = ModelDeploymentSettings {
        retrain: body.retrain,
        id: body.id.clone(),
        model: Some(model.name.clone()),
        symbol: body.symbol,
        timeframe: body.timeframe,
        traffic: checked("traffic", &body.traffic)?,
        shadow: checked("shadow", &body.shadow)?,
        budget_us,
    };
    let d = load(&auth.state.runtime.model_files, &t, settings).await?;
    market_data(&t)?.send(SetDeployment(d.clone())).await?;
    let started = match strategies_supervisor(&t)?
        .send(StartChild(t.model_spec(&d.id)))
        .await?
    {
        Ok(()) | Err(SupervisionError::DuplicateChild(_)) => Ok(()),
        Err(e) => Err(ApiError::Unavailable(e.to_string())),
    };
    if let Err(e) = started {
        // Undone so the refused deployment is not left half-made (best effort: the owner may be gone).
        let _ = market_data(&t)?.send(DropDeployment(d.id.clone())).await;
        return Err(e);
    }
    crate::app::tenants::persist(&auth.state, &t).await?;
    auth.state
        .security
        .audit(
            &t.id.0,
            "model.deployed",
            auth.actor(),
            json!({"model": model.name, "deployment": d.id, "symbol": d.symbol, "timeframe": d.timeframe.as_str(), "versions": weights(&d)}),
        )
        .await?;
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
    let _admin = t.admin.lock().await;
    let before = deployment_of(&t, &path.1, &path.2)?;
    let mut settings = before.settings.clone();
    if let Some(traffic) = &body.traffic {
        settings.traffic = checked("traffic", traffic)?;
    }
    if let Some(shadow) = &body.shadow {
        settings.shadow = checked("shadow", shadow)?;
    }
    if let Some(budget) = body.budget_us {
        if budget == 0 || budget > MAX_BUDGET_US {
            return Err(ApiError::BadRequest(format!(
                "budget_us: from 1 to {MAX_BUDGET_US}"
            )));
        }
        settings.budget_us = budget;
    }
    if let Some(r) = body.retrain {
        checked_retrain(&r)?;
        settings.retrain = Some(r);
    }
    if body.no_retrain {
        settings.retrain = None;
    }
    let after = load(&auth.state.runtime.model_files, &t, settings).await?;
    apply(&t, after.clone()).await?;
    crate::app::tenants::persist(&auth.state, &t).await?;
    auth.state
        .security
        .audit(
            &t.id.0,
            "model.deployment_changed",
            auth.actor(),
            json!({"model": path.1, "deployment": after.id, "from": weights(&before), "to": weights(&after)}),
        )
        .await?;
    Ok(auth.ok(view(&t, &after, &children(&t).await).await))
}

/// `DELETE …/models/{model}/deployments/{id}`: refused (409) while a strategy trades its predictions.
pub async fn delete(
    auth: Authorized,
    path: web::Path<(String, String, String)>,
) -> Result<Reply<Deleted>, ApiError> {
    super::models::tier_gate(&auth)?;
    let t = auth.tenant()?.clone();
    let _admin = t.admin.lock().await;
    let d = deployment_of(&t, &path.1, &path.2)?;
    if let Some(s) = t
        .strategies
        .read()
        .values()
        .find(|r| r.settings.model.as_deref() == Some(&*d.id))
    {
        return Err(ApiError::Conflict(format!(
            "deployment `{}` feeds strategy `{}`: delete or change the strategy first",
            d.id, s.settings.id
        )));
    }
    match strategies_supervisor(&t)?
        .send(StopChild {
            name: format!("model:{}", d.id),
        })
        .await?
    {
        Ok(()) | Err(SupervisionError::UnknownChild(_)) => {}
        Err(e) => return Err(ApiError::Unavailable(e.to_string())),
    }
    market_data(&t)?.send(DropDeployment(d.id.clone())).await?;
    crate::app::tenants::persist(&auth.state, &t).await?;
    auth.state
        .security
        .audit(
            &t.id.0,
            "model.undeployed",
            auth.actor(),
            json!({"model": path.1, "deployment": d.id}),
        )
        .await?;
    Ok(auth.ok(Deleted {
        deleted: d.id.clone(),
    }))
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
