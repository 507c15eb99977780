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

use actix_web::{web, HttpRequest};
use base64::Engine as _;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{Authorized, Body, Deleted, Page, Reply, Stored};
use crate::app::models::{self, point_alias};
use crate::http::error::ApiError;
use crate::models::manifest::Manifest;
use crate::storage::security::{AliasRow, ModelRow};

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

/// A registered model name.
#[derive(Debug, Serialize, JsonSchema)]
pub struct ModelView {
    pub tenant_id: String,
    pub name: String,
    pub description: String,
    pub created_ms: i64,
}

impl From<ModelRow> for ModelView {
    fn from(row: ModelRow) -> Self {
        let ModelRow {
            tenant_id,
            name,
            description,
            created_ms,
        } = row;
        Self {
            tenant_id,
            name,
            description,
            created_ms,
        }
    }
}

/// A model of the list: its name, how many versions it has and where its aliases point now.
#[derive(Debug, Serialize, JsonSchema)]
pub struct ModelSummary {
    pub name: String,
    pub description: String,
    pub created_ms: i64,
    /// How many versions are stored.
    pub versions: usize,
    /// Alias → the version (sha256) it points at now.
    pub aliases: BTreeMap<String, String>,
}

/// A page of the tenant's models.
#[derive(Debug, Serialize, JsonSchema)]
pub struct ModelPage {
    /// By name.
    pub models: Vec<ModelSummary>,
    /// Models across every page.
    pub total: i64,
}

/// What registering a model answers.
#[derive(Debug, Serialize, JsonSchema)]
pub struct ModelRegistered {
    pub model: ModelView,
}

/// A stored version of a model (its file is never shown).
#[derive(Debug, Serialize, JsonSchema)]
pub struct VersionView {
    /// The sha256 of its ONNX file, 64 lower-case hex digits.
    pub version: String,
    /// Its manifest as stored (`null` if the stored text does not parse).
    #[schemars(with = "Option<Manifest>")]
    pub manifest: serde_json::Value,
    /// The ONNX file's size.
    pub size_bytes: i64,
    pub created_ms: i64,
}

/// Where an alias pointed, from when until when.
#[derive(Debug, Serialize, JsonSchema)]
pub struct AliasPointing {
    pub alias: String,
    /// The order of the alias's pointings (1 first).
    pub seq: i64,
    /// The version (sha256) it pointed at.
    pub version: String,
    pub from_ms: i64,
    /// `null` while it still points there.
    pub to_ms: Option<i64>,
}

impl From<AliasRow> for AliasPointing {
    fn from(row: AliasRow) -> Self {
        let AliasRow {
            alias,
            seq,
            version,
            from_ms,
            to_ms,
        } = row;
        Self {
            alias,
            seq,
            version,
            from_ms,
            to_ms,
        }
    }
}

/// A model with its versions and its aliases, past and present.
#[derive(Debug, Serialize, JsonSchema)]
pub struct ModelDetail {
    pub model: ModelView,
    /// Oldest first.
    pub versions: Vec<VersionView>,
    /// Alias → the version (sha256) it points at now.
    pub aliases: BTreeMap<String, String>,
    /// Every pointing of every alias.
    pub alias_history: Vec<AliasPointing>,
}

/// What an upload answers (201 when the version is new, 200 when the same file was stored already).
#[derive(Debug, Serialize, JsonSchema)]
pub struct VersionUploaded {
    pub model: String,
    /// The sha256 of the file: the version's name.
    pub version: String,
    pub size_bytes: i64,
    /// `false`: the same file was stored already, nothing changed.
    pub created: bool,
}

/// What pointing an alias answers.
#[derive(Debug, Serialize, JsonSchema)]
pub struct AliasPointed {
    pub model: String,
    pub alias: String,
    /// The version it points at now.
    pub version: String,
    /// The version it pointed at before (`null`: none).
    pub previous: Option<String>,
    /// The deployments that follow the alias and now serve the version.
    pub deployments: Vec<String>,
}

pub(super) fn tier_gate(auth: &Authorized) -> Result<(), ApiError> {
    crate::app::tenants::require_tier(auth.tenant()?, TIER, "a custom model")
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
pub async fn list(auth: Authorized, req: HttpRequest) -> Result<Reply<ModelPage>, ApiError> {
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
        items.push(ModelSummary {
            name: m.name,
            description: m.description,
            created_ms: m.created_ms,
            versions,
            aliases,
        });
    }
    Ok(auth.ok(ModelPage {
        models: items,
        total,
    }))
}

/// `POST …/models`: registers a model name.
pub async fn register(
    auth: Authorized,
    Body(body): Body<serde_json::Value>,
) -> Result<Reply<ModelRegistered, 201>, ApiError> {
    let body: RegisterModel = super::docs::decode(body)?;
    tier_gate(&auth)?;
    let t = auth.tenant()?.clone();
    let row = models::register(&auth.state, &t, auth.actor(), body.name, body.description).await?;
    Ok(auth.created(ModelRegistered { model: row.into() }))
}

/// `GET …/models/{model}`: a model, its versions (with manifests) and every alias pointing, past and present.
pub async fn get(
    auth: Authorized,
    path: web::Path<(String, String)>,
) -> Result<Reply<ModelDetail>, ApiError> {
    let m = model_of(&auth, &path.1).await?;
    let store = &auth.state.security.store;
    let versions: Vec<_> = store
        .versions_of(&m.tenant_id, &m.name)
        .await?
        .into_iter()
        .map(|v| VersionView {
            version: v.version,
            manifest: serde_json::from_str(&v.manifest).unwrap_or_default(),
            size_bytes: v.size_bytes,
            created_ms: v.created_ms,
        })
        .collect();
    let history = store.aliases_of(&m.tenant_id, &m.name).await?;
    let aliases: BTreeMap<String, String> = history
        .iter()
        .filter(|a| a.to_ms.is_none())
        .map(|a| (a.alias.clone(), a.version.clone()))
        .collect();
    Ok(auth.ok(ModelDetail {
        model: m.into(),
        versions,
        aliases,
        alias_history: history.into_iter().map(AliasPointing::from).collect(),
    }))
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
) -> Result<Stored<VersionUploaded>, ApiError> {
    tier_gate(&auth)?;
    let m = model_of(&auth, &path.1).await?;
    let max = auth.state.settings.models.max_file_bytes;
    let (manifest, bytes, field) = read_upload(&req, payload, max).await?;
    let stored = models::add_version(&auth.state, &m, auth.actor(), manifest, bytes, field).await?;
    let created = stored.created;
    let body = VersionUploaded {
        model: m.name,
        version: stored.version,
        size_bytes: stored.size_bytes,
        created,
    };
    Ok(if created {
        Stored::Created(auth.created(body))
    } else {
        Stored::Existing(auth.ok(body))
    })
}

/// `PUT …/models/{model}/aliases/{alias}`: points an alias at a version; the previous pointing ends now.
pub async fn move_alias(
    auth: Authorized,
    path: web::Path<(String, String, String)>,
    Body(body): Body<serde_json::Value>,
) -> Result<Reply<AliasPointed>, ApiError> {
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
    Ok(auth.ok(AliasPointed {
        model: m.name,
        alias: path.2.clone(),
        version: body.version,
        previous: moved.previous,
        deployments: moved.deployments,
    }))
}

/// `DELETE …/models/{model}/versions/{version}`: refused (409) while a deployment serves the version or an
/// alias points at it.
pub async fn delete_version(
    auth: Authorized,
    path: web::Path<(String, String, String)>,
) -> Result<Reply<Deleted>, ApiError> {
    let m = model_of(&auth, &path.1).await?;
    let t = auth.tenant()?;
    models::delete_version(&auth.state, t, auth.actor(), &m, &path.2).await?;
    Ok(auth.ok(Deleted {
        deleted: path.2.clone(),
    }))
}
