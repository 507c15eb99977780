//! Model deployment use cases: create, change and remove a deployment (the API), and, shared with the
//! training jobs, resolve a deployment's registry versions and load them (off the actor and HTTP threads),
//! hand a changed deployment to the tenant's market data and model host, and find the deployments that
//! follow an alias about to move.

use std::sync::Arc;

use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::json;

use super::{market_data, strategies_supervisor, valid_id, App, AppError};
use crate::actors::messages::{DropDeployment, Redeploy, SetDeployment};
use crate::actors::tenant::TenantContext;
use crate::domain::tenant::{ModelDeploymentSettings, ModelVersionSettings, RetrainSettings};
use crate::models::cost::ModelLimits;
use crate::models::deployment::Deployment;
use crate::models::registry::{ModelFilesSlot, OwnedRef, ResolveError};
use crate::runtime::supervisor::{StartChild, StopChild, SupervisionError};

/// Resolves the settings' registry versions and loads them within `limits` (on the bounded validation
/// pool, off the HTTP workers and the tenant's thread); the error names what is wrong.
pub async fn load(
    files: &ModelFilesSlot,
    t: &TenantContext,
    limits: ModelLimits,
    settings: ModelDeploymentSettings,
) -> Result<Arc<Deployment>, AppError> {
    load_moved(files, t, limits, settings, None).await
}

pub(crate) fn resolve_error(e: ResolveError) -> AppError {
    match e {
        e @ ResolveError::Unavailable(..) => AppError::Unavailable(e.to_string()),
        e => AppError::BadRequest(e.to_string()),
    }
}

/// [`load`], with alias `moved.0` taken to point at version `moved.1` already.
pub(crate) async fn load_moved(
    files: &ModelFilesSlot,
    t: &TenantContext,
    limits: ModelLimits,
    settings: ModelDeploymentSettings,
    moved: Option<(&str, &str)>,
) -> Result<Arc<Deployment>, AppError> {
    let mut resolved = files
        .resolve(&t.id.0, std::slice::from_ref(&settings))
        .await
        .map_err(resolve_error)?;
    if let (Some((alias, version)), Some(model)) = (moved, settings.model.as_deref()) {
        let reference = OwnedRef::Version(version.to_owned());
        let found = files
            .fetch(&settings.id, &t.id.0, model, reference)
            .await
            .map_err(resolve_error)?;
        resolved.insert((model.to_owned(), OwnedRef::Alias(alias.to_owned())), found);
    }
    let id = settings.id.clone();
    super::models::validate(&t.id.0, &format!("model deployment `{id}`"), move || {
        Deployment::load(&settings, &resolved, &limits)
    })
    .await?
    .map(Arc::new)
    .map_err(AppError::BadRequest)
}

/// Hands a changed deployment to its owner and tells its host (a host restarting reads it anyway).
pub async fn apply(t: &Arc<TenantContext>, d: Arc<Deployment>) -> Result<(), AppError> {
    let id = d.id.clone();
    market_data(t)?.send(SetDeployment(d)).await?;
    if let Some(host) = t.model_hosts.read().get(&id).filter(|h| h.connected()) {
        host.do_send(Redeploy);
    }
    Ok(())
}

/// The deployment `id` of model `model`, as published.
pub(crate) fn deployment_of(
    t: &TenantContext,
    model: &str,
    id: &str,
) -> Result<Arc<Deployment>, AppError> {
    t.deployments
        .read()
        .get(id)
        .filter(|d| d.settings.model.as_deref() == Some(model))
        .cloned()
        .ok_or(AppError::NotFound)
}

/// Weights by version, for the audit trail.
pub(crate) fn weights(d: &Deployment) -> serde_json::Value {
    json!({
        "traffic": d.traffic.iter().map(|v| json!({"version": v.version, "alias": v.alias, "weight": v.weight})).collect::<Vec<_>>(),
        "shadow": d.shadow.iter().map(|v| json!({"version": v.version, "alias": v.alias})).collect::<Vec<_>>(),
        "budget_us": d.budget_us,
    })
}

/// The deployments that follow alias `alias` of model `model`, loaded with `version`, where the alias is
/// about to point. Made before the alias moves in the store, so a version that cannot serve one of them
/// refuses the move.
pub async fn following(
    files: &ModelFilesSlot,
    t: &TenantContext,
    limits: ModelLimits,
    model: &str,
    alias: &str,
    version: &str,
) -> Result<Vec<Arc<Deployment>>, AppError> {
    let follow: Vec<ModelDeploymentSettings> = t
        .deployments
        .read()
        .values()
        .filter(|d| {
            d.settings.model.as_deref() == Some(model)
                && d.settings
                    .traffic
                    .iter()
                    .chain(&d.settings.shadow)
                    .any(|v| v.alias.as_deref() == Some(alias))
        })
        .map(|d| d.settings.clone())
        .collect();
    let mut out = Vec::with_capacity(follow.len());
    for s in follow {
        out.push(load_moved(files, t, limits, s, Some((alias, version))).await?);
    }
    Ok(out)
}

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

/// Checks a retraining schedule; the error names the field.
pub(crate) fn checked_retrain(r: &RetrainSettings) -> Result<(), AppError> {
    let every = crate::domain::tenant::parse_span(&r.every).ok_or_else(|| {
        AppError::BadRequest("retrain.every: a number and s, m, h or d (`1d`)".into())
    })?;
    crate::domain::tenant::parse_span(&r.window).ok_or_else(|| {
        AppError::BadRequest("retrain.window: a number and s, m, h or d (`90d`)".into())
    })?;
    if every < 1_000 {
        return Err(AppError::BadRequest("retrain.every: at least 1s".into()));
    }
    if !(0.0..=1.0).contains(&r.min_improvement) {
        return Err(AppError::BadRequest(
            "retrain.min_improvement: from 0 to 1".into(),
        ));
    }
    if !(r.alpha > 0.0 && r.alpha <= 0.5) {
        return Err(AppError::BadRequest(
            "retrain.alpha: above 0, at most 0.5".into(),
        ));
    }
    valid_id("retrain.alias", &r.alias)?;
    r.train
        .validate()
        .map_err(|e| AppError::BadRequest(format!("retrain.train.{e}")))?;
    Ok(())
}

pub(crate) fn checked(
    list: &str,
    versions: &[DeployVersion],
) -> Result<Vec<ModelVersionSettings>, AppError> {
    versions
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let at = format!("{list}[{i}]");
            if !v.weight.is_finite() || v.weight < 0.0 || v.weight > 1e6 {
                return Err(AppError::BadRequest(format!(
                    "{at}.weight: from 0 to 1000000, not {}",
                    v.weight
                )));
            }
            match (&v.version, &v.alias) {
                (Some(sha), None) => {
                    if sha.len() != 64 || !sha.bytes().all(|b| b.is_ascii_hexdigit()) {
                        return Err(AppError::BadRequest(format!(
                            "{at}.version: a version is the sha256 of its file, 64 hex digits"
                        )));
                    }
                }
                (None, Some(alias)) => valid_id(&format!("{at}.alias"), alias)?,
                _ => {
                    return Err(AppError::BadRequest(format!(
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

/// Deploys versions of registry model `model` for `actor`: checked (symbol, timeframe, budget, versions,
/// retraining), within the tier's quota, loaded (a version that cannot serve refuses the deployment), handed
/// to market data, its host started, stored and audited. A deployment that cannot start is not left half-made.
pub async fn create(
    app: &App,
    t: &Arc<TenantContext>,
    actor: &str,
    model: &str,
    body: CreateDeployment,
) -> Result<Arc<Deployment>, AppError> {
    let _admin = t.admin.lock().await;
    valid_id("id", &body.id)?;
    super::trading::traded_symbol(t, "symbol", &body.symbol)?;
    super::trading::symbol_and_timeframe(t, &body.symbol, &body.timeframe)?;
    let budget_us = body.budget_us.unwrap_or(5_000);
    if budget_us == 0 || budget_us > MAX_BUDGET_US {
        return Err(AppError::BadRequest(format!(
            "budget_us: from 1 to {MAX_BUDGET_US}"
        )));
    }
    if body.traffic.is_empty() && body.shadow.is_empty() {
        return Err(AppError::BadRequest(
            "traffic: at least one version (or shadow versions)".into(),
        ));
    }
    let (exists, count) = {
        let all = t.deployments.read();
        (all.contains_key(&body.id), all.len())
    };
    if exists {
        return Err(AppError::Conflict(format!(
            "id: deployment `{}` already exists",
            body.id
        )));
    }
    let quotas = &app.settings.quotas.model_deployments;
    let quota = quotas.per_minute(&t.tier());
    if count as u32 >= quota {
        return Err(super::tenants::quota_exceeded(
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
        model: Some(model.to_owned()),
        symbol: body.symbol,
        timeframe: body.timeframe,
        traffic: checked("traffic", &body.traffic)?,
        shadow: checked("shadow", &body.shadow)?,
        budget_us,
    };
    let limits = super::models::limits(app, &t.tier());
    let d = load(&app.runtime.model_files, t, limits, settings).await?;
    market_data(t)?.send(SetDeployment(d.clone())).await?;
    let started = match strategies_supervisor(t)?
        .send(StartChild(t.model_spec(&d.id)))
        .await?
    {
        Ok(()) | Err(SupervisionError::DuplicateChild(_)) => Ok(()),
        Err(e) => Err(AppError::Unavailable(e.to_string())),
    };
    if let Err(e) = started {
        // Undone so the refused deployment is not left half-made (best effort: the owner may be gone).
        let _ = market_data(t)?.send(DropDeployment(d.id.clone())).await;
        return Err(e);
    }
    super::tenants::persist(app, t).await?;
    app.security
        .audit(
            &t.id.0,
            "model.deployed",
            actor,
            json!({"model": model, "deployment": d.id, "symbol": d.symbol, "timeframe": d.timeframe.as_str(), "versions": weights(&d)}),
        )
        .await?;
    Ok(d)
}

/// Changes deployment `id` of model `model` for `actor` (versions, weights, budget, retraining) while it
/// runs: loaded first, then applied, stored and audited.
pub async fn change(
    app: &App,
    t: &Arc<TenantContext>,
    actor: &str,
    model: &str,
    id: &str,
    body: ChangeDeployment,
) -> Result<Arc<Deployment>, AppError> {
    let _admin = t.admin.lock().await;
    let before = deployment_of(t, model, id)?;
    let mut settings = before.settings.clone();
    if let Some(traffic) = &body.traffic {
        settings.traffic = checked("traffic", traffic)?;
    }
    if let Some(shadow) = &body.shadow {
        settings.shadow = checked("shadow", shadow)?;
    }
    if let Some(budget) = body.budget_us {
        if budget == 0 || budget > MAX_BUDGET_US {
            return Err(AppError::BadRequest(format!(
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
    let limits = super::models::limits(app, &t.tier());
    let after = load(&app.runtime.model_files, t, limits, settings).await?;
    apply(t, after.clone()).await?;
    super::tenants::persist(app, t).await?;
    app.security
        .audit(
            &t.id.0,
            "model.deployment_changed",
            actor,
            json!({"model": model, "deployment": after.id, "from": weights(&before), "to": weights(&after)}),
        )
        .await?;
    Ok(after)
}

/// Removes deployment `id` of model `model` for `actor`; refused (conflict) while a strategy trades its
/// predictions. Answers the deployment's id.
pub async fn delete(
    app: &App,
    t: &Arc<TenantContext>,
    actor: &str,
    model: &str,
    id: &str,
) -> Result<String, AppError> {
    let _admin = t.admin.lock().await;
    let d = deployment_of(t, model, id)?;
    if let Some(s) = t
        .strategies
        .read()
        .values()
        .find(|r| r.settings.model.as_deref() == Some(&*d.id))
    {
        return Err(AppError::Conflict(format!(
            "deployment `{}` feeds strategy `{}`: delete or change the strategy first",
            d.id, s.settings.id
        )));
    }
    match strategies_supervisor(t)?
        .send(StopChild {
            name: format!("model:{}", d.id),
        })
        .await?
    {
        Ok(()) | Err(SupervisionError::UnknownChild(_)) => {}
        Err(e) => return Err(AppError::Unavailable(e.to_string())),
    }
    market_data(t)?.send(DropDeployment(d.id.clone())).await?;
    super::tenants::persist(app, t).await?;
    app.security
        .audit(
            &t.id.0,
            "model.undeployed",
            actor,
            json!({"model": model, "deployment": d.id}),
        )
        .await?;
    Ok(d.id.clone())
}
