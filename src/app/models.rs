//! Model registry use cases shared by the API and the training jobs: moving an alias (and the deployments
//! that follow it).

use std::sync::Arc;

use serde_json::json;

use super::{App, AppError};
use crate::actors::tenant::TenantContext;

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
    let follow =
        super::deployments::following(&app.runtime.model_files, t, model, alias, version).await?;
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
