//! Strategy optimisation jobs (the professional tier and above, shared/DESIGN.md).
//!
//! `POST …/optimisations` checks the request and queues a job (202); the job backtests parameter sets of a
//! strategy on the tenant's stored ticks — the live bar, strategy, risk and ledger code — by grid, random or
//! genetic search, optionally walk-forward, and ranks them by an objective under constraints
//! (`app::jobs::optimisations`, the engine of `trellis optimise`). `GET …/optimisations/{id}` shows its
//! progress and, once done, the best candidates; `DELETE` cancels it.

use actix_web::web;
use schemars::JsonSchema;
use serde::Serialize;
use serde_json::json;

use super::{Authorized, Body, Reply};
use crate::app::jobs::optimisations::{
    CancelOptimisation, GetOptimisation, ListOptimisations, OptimisationView, Optimisations,
    SubmitOptimisation,
};
use crate::app::jobs::training::JobError;
use crate::app::optimise::{plan, OptimiseRequest, TIER};
use crate::http::error::ApiError;

/// An optimisation job.
#[derive(Debug, Serialize, JsonSchema)]
pub struct OptimisationAnswer {
    pub optimisation: OptimisationView,
}

/// The tenant's optimisation jobs (without their results).
#[derive(Debug, Serialize, JsonSchema)]
pub struct OptimisationList {
    /// Newest first.
    pub optimisations: Vec<OptimisationView>,
}

fn actor(auth: &Authorized) -> Result<actix::Addr<Optimisations>, ApiError> {
    auth.state
        .optimisations
        .get()
        .ok_or_else(|| ApiError::Unavailable("optimisation jobs are not running".into()))
}

fn job_error(e: JobError) -> ApiError {
    match e {
        JobError::NotFound => ApiError::NotFound,
        e @ JobError::Finished(_) => ApiError::Conflict(e.to_string()),
    }
}

/// `POST …/optimisations`: queues a job (202).
pub async fn create(
    auth: Authorized,
    Body(req): Body<serde_json::Value>,
) -> Result<Reply<OptimisationAnswer, 202>, ApiError> {
    let mut req: OptimiseRequest = super::docs::decode(req)?;
    let t = auth.tenant()?.clone();
    crate::app::tenants::require_tier(&t, TIER, "strategy optimisation")?;
    // A module's kind is loaded into the tenant's registry (and `wasm:<name>` pinned to its newest version).
    req.kind = crate::app::strategy_modules::resolve_kind(&auth.state, &t, &req.kind).await?;
    let plan = plan(&t, &req)?;
    let view = actor(&auth)?
        .send(SubmitOptimisation {
            tenant: t.id.0.clone(),
            actor: auth.actor().to_owned(),
            request: req,
            plan,
        })
        .await?;
    auth.state
        .security
        .audit(
            &t.id.0,
            "optimisation.queued",
            auth.actor(),
            json!({"optimisation": view.id, "kind": view.request.kind, "symbol": view.request.symbol}),
        )
        .await?;
    Ok(auth.accepted(OptimisationAnswer { optimisation: view }))
}

/// `GET …/optimisations`: the tenant's jobs, newest first, without results.
pub async fn list(auth: Authorized) -> Result<Reply<OptimisationList>, ApiError> {
    let t = auth.tenant()?;
    let all = actor(&auth)?
        .send(ListOptimisations {
            tenant: t.id.0.clone(),
        })
        .await?;
    Ok(auth.ok(OptimisationList { optimisations: all }))
}

/// `GET …/optimisations/{id}`: progress, and the best candidates once done.
pub async fn get(
    auth: Authorized,
    path: web::Path<(String, String)>,
) -> Result<Reply<OptimisationAnswer>, ApiError> {
    let t = auth.tenant()?;
    let view = actor(&auth)?
        .send(GetOptimisation {
            tenant: t.id.0.clone(),
            id: path.1.clone(),
        })
        .await?
        .map_err(job_error)?;
    Ok(auth.ok(OptimisationAnswer { optimisation: view }))
}

/// `DELETE …/optimisations/{id}`: cancels a queued or running job (409 once it finished).
pub async fn cancel(
    auth: Authorized,
    path: web::Path<(String, String)>,
) -> Result<Reply<OptimisationAnswer>, ApiError> {
    let t = auth.tenant()?.clone();
    crate::app::tenants::require_tier(&t, TIER, "strategy optimisation")?;
    let view = actor(&auth)?
        .send(CancelOptimisation {
            tenant: t.id.0.clone(),
            id: path.1.clone(),
        })
        .await?
        .map_err(job_error)?;
    auth.state
        .security
        .audit(
            &t.id.0,
            "optimisation.cancelled",
            auth.actor(),
            json!({"optimisation": view.id}),
        )
        .await?;
    Ok(auth.ok(OptimisationAnswer { optimisation: view }))
}
