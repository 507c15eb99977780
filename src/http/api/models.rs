//! Models of a tenant: the registry (model names, immutable content-addressed versions, aliases with their
//! history) and the deployments running.
//!
//! An uploaded version is never trusted: its manifest is checked, its file must load (tract-onnx), take
//! exactly the manifest's features and give finite outputs on a dry run, else 400 naming the problem. The
//! validation runs off the HTTP workers (`web::block`). The file is stored encrypted with the data keys,
//! bound to its tenant and version, and re-encrypted by `trellis keys rotate`. A version is named by the
//! sha256 of its file: uploading the same file again changes nothing. Custom models need the professional
//! tier. Uploads come as JSON (`manifest` and the file in base64: the form the OpenAPI document describes
//! and the fuzzer exercises), as `multipart/form-data` (parts `manifest` and `file`), or as a raw
//! `application/octet-stream` body with the manifest in the `manifest` query parameter.
//!
//! Moving an alias moves the deployments that follow it (see `deployments`): each is loaded with the new
//! version before the alias moves, so a version that cannot serve one of them refuses the move, and then
//! served live, audited.

use std::collections::BTreeMap;
use std::sync::Arc;

use actix_web::{web, HttpRequest, HttpResponse};
use base64::Engine as _;
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::json;

use super::{Authorized, Body, Page};
use crate::actors::tenant::TenantContext;
use crate::http::error::ApiError;
use crate::http::AppState;
use crate::models::deployment::LoadedVersion;
use crate::models::manifest::Manifest;
use crate::storage::security::ModelRow;
use crate::storage::StorageError;

/// The tier from which custom models may be uploaded and deployed.
const TIER: &str = "professional";

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RegisterModel {
    #[schemars(pattern(r"^[A-Za-z0-9_-]{1,64}$"))]
    pub name: String,
    /// At most 500 characters, no NUL.
    #[serde(default)]
    #[schemars(length(max = 500), regex(pattern = super::docs::NO_NUL))]
    pub description: String,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UploadVersion {
    pub manifest: Manifest,
    /// The ONNX file, base64 (standard alphabet, padded).
    pub file_base64: String,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MoveAlias {
    /// The version (sha256 of its file, 64 lower-case hex digits) the alias points at from now.
    #[schemars(regex(pattern = r"^[0-9a-f]{64}$"))]
    pub version: String,
}

pub(super) fn tier_gate(auth: &Authorized) -> Result<(), ApiError> {
    super::tenants::require_tier(auth.tenant()?, TIER, "a custom model")
}

pub(super) async fn model_of(auth: &Authorized, name: &str) -> Result<ModelRow, ApiError> {
    let t = auth.tenant()?;
    auth.state
        .security
        .store
        .model(&t.id.0, name)
        .await?
        .ok_or(ApiError::NotFound)
}

/// `GET …/models`: the registered models, by name, with their versions and current aliases.
pub async fn list(auth: Authorized, req: HttpRequest) -> Result<HttpResponse, ApiError> {
    let page = Page::from_query(&req)?;
    let limit = page.limit.unwrap_or(50).clamp(1, 500) as i64;
    let offset = page.offset.unwrap_or(0).min(i64::MAX as usize) as i64;
    let t = auth.tenant()?;
    let store = &auth.state.security.store;
    let (rows, total) = store.models_of(&t.id.0, limit, offset).await?;
    let mut items = Vec::with_capacity(rows.len());
    for m in rows {
        let versions = store.versions_of(&t.id.0, &m.name).await?.len();
        let aliases: BTreeMap<String, String> = store
            .aliases_of(&t.id.0, &m.name)
            .await?
            .into_iter()
            .filter(|a| a.to_ms.is_none())
            .map(|a| (a.alias, a.version))
            .collect();
        items.push(json!({
            "name": m.name,
            "description": m.description,
            "created_ms": m.created_ms,
            "versions": versions,
            "aliases": aliases,
        }));
    }
    Ok(auth.ok(json!({ "models": items, "total": total })))
}

/// `POST …/models`: registers a model name.
pub async fn register(
    auth: Authorized,
    Body(body): Body<serde_json::Value>,
) -> Result<HttpResponse, ApiError> {
    let body: RegisterModel = super::docs::decode(body)?;
    tier_gate(&auth)?;
    super::valid_id("name", &body.name)?;
    if body.description.chars().count() > 500 || body.description.contains('\0') {
        return Err(ApiError::BadRequest(
            "description: at most 500 characters, no NUL".into(),
        ));
    }
    let t = auth.tenant()?.clone();
    let row = ModelRow {
        tenant_id: t.id.0.clone(),
        name: body.name.clone(),
        description: body.description,
        created_ms: crate::domain::now_ms(),
    };
    match auth.state.security.store.insert_model(&row).await {
        Err(StorageError::Rejected(_)) => {
            return Err(ApiError::Conflict(format!(
                "name: model `{}` already exists",
                body.name
            )))
        }
        other => other?,
    }
    auth.state
        .security
        .audit(
            &t.id.0,
            "model.registered",
            auth.actor(),
            json!({"model": row.name}),
        )
        .await?;
    Ok(auth.created(json!({ "model": row })))
}

/// `GET …/models/{model}`: a model, its versions (with manifests) and every alias pointing, past and present.
pub async fn get(
    auth: Authorized,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    let m = model_of(&auth, &path.1).await?;
    let store = &auth.state.security.store;
    let versions: Vec<_> = store
        .versions_of(&m.tenant_id, &m.name)
        .await?
        .into_iter()
        .map(|v| {
            json!({
                "version": v.version,
                "manifest": serde_json::from_str::<serde_json::Value>(&v.manifest).unwrap_or_default(),
                "size_bytes": v.size_bytes,
                "created_ms": v.created_ms,
            })
        })
        .collect();
    let history = store.aliases_of(&m.tenant_id, &m.name).await?;
    let aliases: BTreeMap<&str, &str> = history
        .iter()
        .filter(|a| a.to_ms.is_none())
        .map(|a| (a.alias.as_str(), a.version.as_str()))
        .collect();
    Ok(auth.ok(json!({
        "model": m,
        "versions": versions,
        "aliases": aliases,
        "alias_history": history,
    })))
}

/// The largest manifest accepted in a multipart upload or a query string (reference histograms included).
const MAX_MANIFEST_BYTES: usize = 1024 * 1024;

#[derive(Debug, Deserialize)]
struct ManifestQuery {
    manifest: String,
}

/// Reads an upload in any of its three forms: JSON (`manifest` and `file_base64`), `multipart/form-data`
/// (parts `manifest`, JSON, and `file`, the ONNX bytes) or `application/octet-stream` (the file as the body,
/// the manifest as JSON in the `manifest` query parameter). Answers the manifest, the file, and the name
/// the file goes by in errors.
async fn read_upload(
    req: &HttpRequest,
    payload: web::Payload,
    max: usize,
) -> Result<(Manifest, Vec<u8>, &'static str), ApiError> {
    use futures_util::StreamExt as _;
    let content_type = req
        .headers()
        .get("Content-Type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    let too_large = |what: &str, n: usize| {
        ApiError::BadRequest(format!(
            "{what}: the file has {n} bytes, at most {max} are accepted (models.max_file_bytes)"
        ))
    };
    async fn read(payload: web::Payload, limit: usize) -> Result<web::Bytes, ApiError> {
        payload
            .to_bytes_limited(limit)
            .await
            .map_err(|_| ApiError::TooLarge(format!("body: larger than {limit} bytes")))?
            .map_err(|e| ApiError::BadRequest(format!("body: {e}")))
    }
    if content_type.starts_with("application/json") {
        let body = read(payload, max.saturating_mul(4) / 3 + MAX_MANIFEST_BYTES).await?;
        let body: serde_json::Value = super::parse_json(&body)?;
        let body: UploadVersion = super::docs::decode(body)?;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(body.file_base64.trim())
            .map_err(|e| ApiError::BadRequest(format!("file_base64: not base64 ({e})")))?;
        if bytes.len() > max {
            return Err(too_large("file_base64", bytes.len()));
        }
        return Ok((body.manifest, bytes, "file_base64"));
    }
    if content_type.starts_with("application/octet-stream") {
        let q = web::Query::<ManifestQuery>::from_query(req.query_string()).map_err(|_| {
            ApiError::BadRequest(
                "manifest: an octet-stream upload takes its manifest as JSON in the `manifest` query parameter"
                    .into(),
            )
        })?;
        let manifest: Manifest = super::parse_json(q.manifest.as_bytes())
            .map_err(|e| ApiError::BadRequest(format!("manifest: {e}")))?;
        let body = read(payload, max).await.map_err(|e| match e {
            ApiError::TooLarge(_) => too_large("file", max + 1),
            e => e,
        })?;
        return Ok((manifest, body.to_vec(), "file"));
    }
    if content_type.starts_with("multipart/form-data") {
        // The whole request is bounded too: a part over its limit is otherwise read to its end.
        let limit = max.saturating_add(2 * MAX_MANIFEST_BYTES);
        let mut seen = 0usize;
        let bounded = payload.map(move |chunk| {
            let chunk = chunk?;
            seen += chunk.len();
            if seen > limit {
                return Err(actix_web::error::PayloadError::Overflow);
            }
            Ok(chunk)
        });
        let mut parts = actix_multipart::Multipart::new(req.headers(), bounded);
        let (mut manifest, mut file) = (None, None);
        while let Some(part) = parts.next().await {
            let mut part = part.map_err(|e| ApiError::BadRequest(format!("body: {e}")))?;
            let name = part.name().unwrap_or("").to_owned();
            let limit = match name.as_str() {
                "manifest" => MAX_MANIFEST_BYTES,
                "file" => max,
                other => {
                    return Err(ApiError::BadRequest(format!(
                        "body: unknown part `{other}` (the parts are `manifest` and `file`)"
                    )))
                }
            };
            let bytes = match part.bytes(limit).await {
                Ok(Ok(b)) => b,
                Ok(Err(e)) => return Err(ApiError::BadRequest(format!("{name}: {e}"))),
                Err(_) if name == "file" => return Err(too_large("file", max + 1)),
                Err(_) => {
                    return Err(ApiError::BadRequest(format!(
                        "manifest: larger than {MAX_MANIFEST_BYTES} bytes"
                    )))
                }
            };
            if name == "manifest" {
                let m: Manifest = super::parse_json(&bytes)
                    .map_err(|e| ApiError::BadRequest(format!("manifest: {e}")))?;
                manifest = Some(m);
            } else {
                file = Some(bytes.to_vec());
            }
        }
        let manifest =
            manifest.ok_or_else(|| ApiError::BadRequest("manifest: the part is missing".into()))?;
        let file = file.ok_or_else(|| ApiError::BadRequest("file: the part is missing".into()))?;
        return Ok((manifest, file, "file"));
    }
    Err(ApiError::BadRequest(
        "body: Content-Type must be application/json, multipart/form-data or application/octet-stream"
            .into(),
    ))
}

/// `POST …/models/{model}/versions`: uploads a version (validated, encrypted, content-addressed), as JSON,
/// multipart or a raw octet stream (see [`read_upload`]).
pub async fn upload(
    auth: Authorized,
    path: web::Path<(String, String)>,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    tier_gate(&auth)?;
    let m = model_of(&auth, &path.1).await?;
    let max = auth.state.settings.models.max_file_bytes;
    let (manifest, bytes, field) = read_upload(&req, payload, max).await?;
    let (bytes, checked) = web::block(move || {
        let checked = LoadedVersion::from_bytes(&bytes, manifest.clone(), 1.0)
            .map(|v| (v.version.clone(), manifest));
        (bytes, checked)
    })
    .await
    .map_err(|e| ApiError::Internal(anyhow::anyhow!("validation task: {e}")))?;
    let (version, manifest) = checked.map_err(|e| ApiError::BadRequest(format!("{field}: {e}")))?;
    let security = &auth.state.security;
    let (file_enc, key_version) =
        security.encrypt_model_file(&m.tenant_id, &m.name, &version, &bytes)?;
    let row = crate::storage::security::ModelVersionRow {
        tenant_id: m.tenant_id.clone(),
        name: m.name.clone(),
        version: version.clone(),
        manifest: serde_json::to_string(&manifest)
            .map_err(|e| ApiError::Internal(anyhow::anyhow!(e)))?,
        key_version,
        size_bytes: bytes.len() as i64,
        created_ms: crate::domain::now_ms(),
    };
    let created = security.store.insert_version(&row, &file_enc).await?;
    if created {
        security
            .audit(
                &m.tenant_id,
                "model.version_uploaded",
                auth.actor(),
                json!({"model": m.name, "version": version, "size_bytes": row.size_bytes}),
            )
            .await?;
    }
    let body = json!({"model": m.name, "version": version, "size_bytes": row.size_bytes, "created": created});
    Ok(if created {
        auth.created(body)
    } else {
        auth.ok(body)
    })
}

/// `PUT …/models/{model}/aliases/{alias}`: points an alias at a version; the previous pointing ends now.
pub async fn move_alias(
    auth: Authorized,
    path: web::Path<(String, String, String)>,
    Body(body): Body<serde_json::Value>,
) -> Result<HttpResponse, ApiError> {
    let body: MoveAlias = super::docs::decode(body)?;
    tier_gate(&auth)?;
    super::valid_id("alias", &path.2)?;
    if body.version.len() != 64
        || !body
            .version
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return Err(ApiError::BadRequest(
            "version: a version is the sha256 of its file, 64 lower-case hex digits".into(),
        ));
    }
    let m = model_of(&auth, &path.1).await?;
    let t = auth.tenant()?.clone();
    let moved = point_alias(
        &auth.state,
        &t,
        &m.name,
        &path.2,
        &body.version,
        auth.actor(),
    )
    .await?;
    Ok(auth.ok(json!({
        "model": m.name,
        "alias": path.2,
        "version": body.version,
        "previous": moved.previous,
        "deployments": moved.deployments,
    })))
}

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
    state: &AppState,
    t: &Arc<TenantContext>,
    model: &str,
    alias: &str,
    version: &str,
    actor: &str,
) -> Result<AliasMoved, ApiError> {
    let store = &state.security.store;
    let tenant = t.id.0.as_str();
    if store.model_file(tenant, model, version).await?.is_none() {
        // Well formed, but not what the registry holds: a conflict with its state.
        return Err(ApiError::Conflict(format!(
            "version: model `{model}` has no version `{version}`"
        )));
    }
    let follow =
        super::deployments::following(&state.runtime.model_files, t, model, alias, version).await?;
    let _admin = t.admin.lock().await;
    let previous = store
        .move_alias(tenant, model, alias, version, crate::domain::now_ms())
        .await?;
    state
        .security
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
        state
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
        super::tenants::persist(state, t).await?;
    }
    Ok(AliasMoved {
        previous,
        deployments,
    })
}

/// `DELETE …/models/{model}/versions/{version}`: refused (409) while a deployment serves the version or an
/// alias points at it.
pub async fn delete_version(
    auth: Authorized,
    path: web::Path<(String, String, String)>,
) -> Result<HttpResponse, ApiError> {
    let m = model_of(&auth, &path.1).await?;
    let t = auth.tenant()?;
    let version = &path.2;
    let serving = t.deployments.read().values().find_map(|d| {
        let serves = d.settings.model.as_deref() == Some(&*m.name)
            && d.traffic
                .iter()
                .chain(&d.shadow)
                .any(|v| &v.version == version);
        serves.then(|| d.id.clone())
    });
    if let Some(d) = serving {
        return Err(ApiError::Conflict(format!(
            "version `{version}` is in use by deployment `{d}`"
        )));
    }
    let store = &auth.state.security.store;
    if let Some(a) = store
        .aliases_of(&m.tenant_id, &m.name)
        .await?
        .into_iter()
        .find(|a| a.to_ms.is_none() && &a.version == version)
    {
        return Err(ApiError::Conflict(format!(
            "version `{version}` is what alias `{}` points at: move the alias first",
            a.alias
        )));
    }
    if !store.delete_version(&m.tenant_id, &m.name, version).await? {
        return Err(ApiError::NotFound);
    }
    auth.state
        .security
        .audit(
            &m.tenant_id,
            "model.version_deleted",
            auth.actor(),
            json!({"model": m.name, "version": version}),
        )
        .await?;
    Ok(auth.ok(json!({ "deleted": version })))
}
