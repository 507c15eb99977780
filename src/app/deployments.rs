//! Model deployment use cases shared by the API and the training jobs: resolve a deployment's registry
//! versions and load them (off the actor and HTTP threads), hand a changed deployment to the tenant's market
//! data and model host, and find the deployments that follow an alias about to move.

use std::sync::Arc;

use serde_json::json;

use super::{market_data, AppError};
use crate::actors::messages::{Redeploy, SetDeployment};
use crate::actors::tenant::TenantContext;
use crate::domain::tenant::ModelDeploymentSettings;
use crate::models::deployment::Deployment;
use crate::models::registry::{ModelFilesSlot, OwnedRef, ResolveError};

/// Resolves the settings' registry versions and loads them (off the HTTP workers); the error names
/// what is wrong.
pub async fn load(
    files: &ModelFilesSlot,
    t: &TenantContext,
    settings: ModelDeploymentSettings,
) -> Result<Arc<Deployment>, AppError> {
    load_moved(files, t, settings, None).await
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
    tokio::task::spawn_blocking(move || Deployment::load(&settings, &resolved))
        .await
        .map_err(|e| AppError::Internal(anyhow::anyhow!("loading task: {e}")))?
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
        out.push(load_moved(files, t, s, Some((alias, version))).await?);
    }
    Ok(out)
}
