//! Training jobs of a tenant's model: started, watched with their progress, cancelled.
//!
//! `POST …/models/{model}/jobs` queues a job that trains a direction model on the tenant's stored bars with
//! walk-forward validation and stores it as a version of the model (see `app::jobs::training`); with
//! `promote` the version takes the alias (default `champion`) only if it beats the version holding it out
//! of sample, by the margin and significantly. The professional tier and up may train, like uploads.

use actix_web::web;
use schemars::JsonSchema;
use serde::Serialize;
use serde_json::json;

use super::{Authorized, Body, Reply};
use crate::app::jobs::training::{
    CancelJob, GetJob, JobError, JobRequest, JobView, ListJobs, SubmitJob,
};
use crate::http::error::ApiError;

/// A training job.
#[derive(Debug, Serialize, JsonSchema)]
pub struct JobAnswer {
    pub job: JobView,
}

/// A model's training jobs.
#[derive(Debug, Serialize, JsonSchema)]
pub struct JobList {
    /// Newest first.
    pub jobs: Vec<JobView>,
}

fn jobs(
    auth: &Authorized,
) -> Result<actix::Addr<crate::app::jobs::training::TrainingJobs>, ApiError> {
    auth.state
        .jobs
        .get()
        .ok_or_else(|| ApiError::Unavailable("training jobs are not running".into()))
}

fn job_error(e: JobError) -> ApiError {
    match e {
        JobError::NotFound => ApiError::NotFound,
        e @ JobError::Finished(_) => ApiError::Conflict(e.to_string()),
    }
}

/// `POST …/models/{model}/jobs`: queues a training job (its spec checked now, its data when it runs).
pub async fn create(
    auth: Authorized,
    path: web::Path<(String, String)>,
    Body(body): Body<serde_json::Value>,
) -> Result<Reply<JobAnswer, 201>, ApiError> {
    let body: JobRequest = super::docs::decode(body)?;
    super::models::tier_gate(&auth)?;
    let model = super::models::model_of(&auth, &path.1).await?;
    let t = auth.tenant()?.clone();
    crate::app::trading::traded_symbol(&t, "symbol", &body.symbol)?;
    crate::app::trading::symbol_and_timeframe(&t, &body.symbol, &body.timeframe)?;
    if let (Some(from), Some(to)) = (body.from_ms, body.to_ms) {
        if from > to {
            return Err(ApiError::BadRequest("from_ms: after to_ms".into()));
        }
    }
    body.train
        .validate()
        .map_err(|e| ApiError::BadRequest(format!("train.{e}")))?;
    if body.promote.is_some() && body.train.kind == crate::domain::tenant::ModelKind::RegimeHmm {
        return Err(ApiError::BadRequest(
            "promote: a regime detector has no direction to compare; point an alias at its version instead"
                .into(),
        ));
    }
    if let Some(p) = &body.promote {
        super::valid_id("promote.alias", &p.alias)?;
        if !(0.0..=1.0).contains(&p.min_improvement) {
            return Err(ApiError::BadRequest(
                "promote.min_improvement: from 0 to 1".into(),
            ));
        }
        if !(p.alpha > 0.0 && p.alpha <= 0.5) {
            return Err(ApiError::BadRequest(
                "promote.alpha: above 0, at most 0.5".into(),
            ));
        }
    }
    let view = jobs(&auth)?
        .send(SubmitJob {
            tenant: t.id.0.clone(),
            model: model.name.clone(),
            actor: auth.actor().to_owned(),
            request: body,
        })
        .await?;
    auth.state
        .security
        .audit(
            &t.id.0,
            "model.training_queued",
            auth.actor(),
            json!({"model": model.name, "job": view.id}),
        )
        .await?;
    Ok(auth.created(JobAnswer { job: view }))
}

/// `GET …/models/{model}/jobs`: the model's jobs, newest first.
pub async fn list(
    auth: Authorized,
    path: web::Path<(String, String)>,
) -> Result<Reply<JobList>, ApiError> {
    let model = super::models::model_of(&auth, &path.1).await?;
    let t = auth.tenant()?;
    let all = jobs(&auth)?
        .send(ListJobs {
            tenant: t.id.0.clone(),
            model: model.name,
        })
        .await?;
    Ok(auth.ok(JobList { jobs: all }))
}

/// `GET …/jobs/{job}`: one job of the tenant.
pub async fn get(
    auth: Authorized,
    path: web::Path<(String, String)>,
) -> Result<Reply<JobAnswer>, ApiError> {
    let t = auth.tenant()?;
    let view = jobs(&auth)?
        .send(GetJob {
            tenant: t.id.0.clone(),
            id: path.1.clone(),
        })
        .await?
        .map_err(job_error)?;
    Ok(auth.ok(JobAnswer { job: view }))
}

/// `DELETE …/jobs/{job}`: cancels a queued or running job (409 once it finished).
pub async fn cancel(
    auth: Authorized,
    path: web::Path<(String, String)>,
) -> Result<Reply<JobAnswer>, ApiError> {
    super::models::tier_gate(&auth)?;
    let t = auth.tenant()?;
    let view = jobs(&auth)?
        .send(CancelJob {
            tenant: t.id.0.clone(),
            id: path.1.clone(),
        })
        .await?
        .map_err(job_error)?;
    auth.state
        .security
        .audit(
            &t.id.0,
            "model.training_cancelled",
            auth.actor(),
            json!({"model": view.model, "job": view.id}),
        )
        .await?;
    Ok(auth.ok(JobAnswer { job: view }))
}
