//! Model registry use cases: register a model, add a version (validated off the actor threads, stored
//! encrypted), delete a version nothing uses, and, shared by the API and the training jobs, move an alias
//! (and the deployments that follow it).

use std::sync::Arc;

use serde_json::json;

use super::{App, AppError};
use crate::actors::tenant::TenantContext;
use crate::models::cost::ModelLimits;
use crate::models::deployment::LoadedVersion;
use crate::models::manifest::Manifest;
use crate::models::pool::Validation;
use crate::storage::security::{ModelRow, ModelVersionRow};
use crate::storage::StorageError;

/// What moving an alias did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct AliasMoved {
    pub previous: Option<String>,
    /// The deployments that follow the alias and now serve the version.
    pub deployments: Vec<String>,
}

/// Points `alias` of `tenant`'s model `model` at `version`, audited, and moves the deployments that follow
/// it (each loaded with the version first, so a version that cannot serve one refuses the move). Used by
/// the API and by promotions.
pub async fn point_alias(
    app: &App,
    t: &Arc<TenantContext>,
    model: &str,
    alias: &str,
    version: &str,
    actor: &str,
) -> Result<AliasMoved, AppError> {
    let store = &app.security.store;
    let tenant = t.id.0.as_str();
    if store.model_file(tenant, model, version).await?.is_none() {
        // Well formed, but not what the registry holds: a conflict with its state.
        return Err(AppError::Conflict(format!(
            "version: model `{model}` has no version `{version}`"
        )));
    }
    let follow = super::deployments::following(
        &app.runtime.model_files,
        t,
        tenant_limits(app, tenant),
        model,
        alias,
        version,
    )
    .await?;
    let _admin = t.admin.lock().await;
    let previous = store
        .move_alias(tenant, model, alias, version, crate::domain::now_ms())
        .await?;
    app.security
        .audit(
            tenant,
            "model.alias_moved",
            actor,
            json!({"model": model, "alias": alias, "from": previous, "to": version}),
        )
        .await?;
    let mut deployments = Vec::with_capacity(follow.len());
    for d in follow {
        super::deployments::apply(t, d.clone()).await?;
        app
            .security
            .audit(
                tenant,
                "model.deployment_followed_alias",
                actor,
                json!({"model": model, "deployment": d.id, "alias": alias, "from": previous, "to": version}),
            )
            .await?;
        deployments.push(d.id.clone());
    }
    if !deployments.is_empty() {
        crate::app::tenants::persist(app, t).await?;
    }
    Ok(AliasMoved {
        previous,
        deployments,
    })
}

/// Registers model `name` of the tenant for `actor` (a name taken is a conflict), audited.
pub async fn register(
    app: &App,
    t: &TenantContext,
    actor: &str,
    name: String,
    description: String,
) -> Result<ModelRow, AppError> {
    super::valid_id("name", &name)?;
    if description.chars().count() > 500 || description.contains('\0') {
        return Err(AppError::BadRequest(
            "description: at most 500 characters, no NUL".into(),
        ));
    }
    let row = ModelRow {
        tenant_id: t.id.0.clone(),
        name,
        description,
        created_ms: crate::domain::now_ms(),
    };
    match app.security.store.insert_model(&row).await {
        Err(StorageError::Rejected(_)) => {
            return Err(AppError::Conflict(format!(
                "name: model `{}` already exists",
                row.name
            )))
        }
        other => other?,
    }
    app.security
        .audit(
            &t.id.0,
            "model.registered",
            actor,
            json!({"model": row.name}),
        )
        .await?;
    Ok(row)
}

/// A version as stored.
#[derive(Debug, Clone)]
pub struct StoredVersion {
    /// The sha256 of its file.
    pub version: String,
    pub size_bytes: i64,
    /// False when the same file was stored already (nothing changed).
    pub created: bool,
}

/// What one prediction of a model of `tier` may cost (`[quotas] model_memory_bytes`, `model_work_per_bar`),
/// never above [`ModelLimits::CEILING`].
pub fn limits(app: &App, tier: &str) -> ModelLimits {
    let q = &app.settings.quotas;
    ModelLimits {
        memory_bytes: q
            .model_memory_bytes
            .of(tier)
            .min(ModelLimits::CEILING.memory_bytes),
        work: q.model_work_per_bar.of(tier).min(ModelLimits::CEILING.work),
    }
}

/// The limits of the tier of tenant `tenant` (the free tier's when it does not run here).
pub fn tenant_limits(app: &App, tenant: &str) -> ModelLimits {
    let tier = app
        .runtime
        .tenant(tenant)
        .map_or_else(|| "free".to_owned(), |t| t.tier());
    limits(app, &tier)
}

/// Runs a validation of `tenant`'s model on the bounded validation pool ([`Validation`]): a deadline
/// passed is a refusal (400, prefixed with `field`), a full pool a retry (503).
pub(crate) async fn validate<T, F>(tenant: &str, field: &str, job: F) -> Result<T, AppError>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    Validation::global()
        .run(tenant, job)
        .await
        .map_err(|e| match e {
            e if e.is_retryable() => AppError::Unavailable(e.to_string()),
            e => AppError::BadRequest(format!("{field}: {e}")),
        })
}

/// Adds a version (an ONNX file and its manifest) to `model` for `actor`: costed against the tenant's tier
/// before anything runs it, then loaded and dry-run on the bounded validation pool (a file over a limit or
/// that cannot serve its manifest is refused, the error prefixed with `field`), stored encrypted under its
/// sha256 with its cost in the manifest, audited when new.
pub async fn add_version(
    app: &App,
    model: &ModelRow,
    actor: &str,
    manifest: Manifest,
    bytes: Vec<u8>,
    field: &str,
) -> Result<StoredVersion, AppError> {
    let limits = tenant_limits(app, &model.tenant_id);
    let (bytes, checked) = validate(&model.tenant_id, field, move || {
        let checked = LoadedVersion::from_bytes_within(&bytes, manifest, 1.0, &limits)
            .map(|v| (v.version.clone(), v.manifest));
        (bytes, checked)
    })
    .await?;
    let (version, manifest) = checked.map_err(|e| AppError::BadRequest(format!("{field}: {e}")))?;
    let security = &app.security;
    let (file_enc, key_version) =
        security.encrypt_model_file(&model.tenant_id, &model.name, &version, &bytes)?;
    let row = ModelVersionRow {
        tenant_id: model.tenant_id.clone(),
        name: model.name.clone(),
        version: version.clone(),
        manifest: serde_json::to_string(&manifest)
            .map_err(|e| AppError::Internal(anyhow::anyhow!(e)))?,
        key_version,
        size_bytes: bytes.len() as i64,
        created_ms: crate::domain::now_ms(),
    };
    let created = security.store.insert_version(&row, &file_enc).await?;
    if created {
        security
            .audit(
                &model.tenant_id,
                "model.version_uploaded",
                actor,
                json!({"model": model.name, "version": version, "size_bytes": row.size_bytes}),
            )
            .await?;
    }
    Ok(StoredVersion {
        version,
        size_bytes: row.size_bytes,
        created,
    })
}

/// Deletes `version` of `model` for `actor`; refused (conflict) while a deployment serves it or an alias
/// points at it, not found when the model has no such version.
pub async fn delete_version(
    app: &App,
    t: &TenantContext,
    actor: &str,
    model: &ModelRow,
    version: &str,
) -> Result<(), AppError> {
    let serving = t.deployments.read().values().find_map(|d| {
        let serves = d.settings.model.as_deref() == Some(&*model.name)
            && d.traffic
                .iter()
                .chain(&d.shadow)
                .any(|v| v.version == version);
        serves.then(|| d.id.clone())
    });
    if let Some(d) = serving {
        return Err(AppError::Conflict(format!(
            "version `{version}` is in use by deployment `{d}`"
        )));
    }
    let store = &app.security.store;
    if let Some(a) = store
        .aliases_of(&model.tenant_id, &model.name)
        .await?
        .into_iter()
        .find(|a| a.to_ms.is_none() && a.version == version)
    {
        return Err(AppError::Conflict(format!(
            "version `{version}` is what alias `{}` points at: move the alias first",
            a.alias
        )));
    }
    if !store
        .delete_version(&model.tenant_id, &model.name, version)
        .await?
    {
        return Err(AppError::NotFound);
    }
    app.security
        .audit(
            &model.tenant_id,
            "model.version_deleted",
            actor,
            json!({"model": model.name, "version": version}),
        )
        .await?;
    Ok(())
}
