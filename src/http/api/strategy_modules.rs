//! A tenant's strategy modules (WebAssembly, `docs/strategy-modules.md`): upload, list, read, delete.
//!
//! The use cases are `app::strategy_modules`; this adapter reads the upload in either of its forms — JSON
//! (`name`, `manifest`, `file_base64`: the form the OpenAPI document describes and the fuzzer exercises)
//! or the module itself as the body (`application/wasm` or `application/octet-stream`) with `name` and the
//! manifest (JSON) in the query — bounded by the module size limit before anything parses it.

use actix_web::{web, HttpRequest};
use base64::Engine as _;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{Authorized, Deleted, Reply, Stored};
use crate::app::strategy_modules;
use crate::http::error::ApiError;
use crate::strategies::wasm::{self, WasmLimits, WasmManifest};

/// An upload as JSON.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UploadModule {
    #[schemars(pattern(r"^[A-Za-z0-9_-]{1,64}$"))]
    pub name: String,
    /// Parameters, symbols and timeframe (none: no parameters, any symbol and timeframe).
    #[serde(default)]
    pub manifest: WasmManifest,
    /// The module (a WebAssembly binary), base64 (standard alphabet, padded).
    pub file_base64: String,
}

/// What an upload answers (201 when the version is new, 200 when the same bytes were stored already).
#[derive(Debug, Serialize, JsonSchema)]
pub struct ModuleUploaded {
    pub name: String,
    /// The sha256 of the module: the version's name.
    pub version: String,
    /// The strategy kind that runs this version: `wasm:<name>@<version>`.
    pub kind: String,
    pub size_bytes: i64,
    /// `false`: the same bytes were stored already, nothing changed.
    pub created: bool,
}

/// A stored version of a module (its bytes are never shown).
#[derive(Debug, Serialize, JsonSchema)]
pub struct ModuleVersionView {
    /// The sha256 of the module, 64 lower-case hex digits.
    pub version: String,
    /// The strategy kind that runs it.
    pub kind: String,
    /// Its manifest as stored (`null` if the stored text does not parse).
    #[schemars(with = "Option<WasmManifest>")]
    pub manifest: serde_json::Value,
    pub size_bytes: i64,
    pub created_ms: i64,
    /// The strategies that run it (a version in use cannot be deleted).
    pub used_by: Vec<String>,
}

/// A module: its versions, oldest first.
#[derive(Debug, Serialize, JsonSchema)]
pub struct ModuleView {
    pub name: String,
    pub versions: Vec<ModuleVersionView>,
}

/// The tenant's modules, by name.
#[derive(Debug, Serialize, JsonSchema)]
pub struct ModuleList {
    pub modules: Vec<ModuleView>,
}

async fn modules(auth: &Authorized) -> Result<Vec<ModuleView>, ApiError> {
    let t = auth.tenant()?;
    let rows = auth.state.security.store.modules_of(&t.id.0).await?;
    let mut out: Vec<ModuleView> = Vec::new();
    for row in rows {
        let view = ModuleVersionView {
            kind: wasm::kind_of(&row.name, &row.version),
            used_by: strategy_modules::users_of(t, &row.name, &row.version),
            manifest: serde_json::from_str(&row.manifest).unwrap_or_default(),
            size_bytes: row.size_bytes,
            created_ms: row.created_ms,
            version: row.version,
        };
        match out.last_mut() {
            Some(m) if m.name == row.name => m.versions.push(view),
            _ => out.push(ModuleView {
                name: row.name,
                versions: vec![view],
            }),
        }
    }
    Ok(out)
}

/// `GET …/strategy-modules`: the tenant's modules with their versions and the strategies using each.
pub async fn list(auth: Authorized) -> Result<Reply<ModuleList>, ApiError> {
    let modules = modules(&auth).await?;
    Ok(auth.ok(ModuleList { modules }))
}

/// `GET …/strategy-modules/{module}`: one module's versions.
pub async fn get(
    auth: Authorized,
    path: web::Path<(String, String)>,
) -> Result<Reply<ModuleView>, ApiError> {
    let module = modules(&auth)
        .await?
        .into_iter()
        .find(|m| m.name == path.1)
        .ok_or(ApiError::NotFound)?;
    Ok(auth.ok(module))
}

#[derive(Debug, Deserialize)]
struct RawQuery {
    name: String,
    #[serde(default)]
    manifest: Option<String>,
}

/// The manifest's largest JSON text (in a query or a JSON body).
const MAX_MANIFEST_BYTES: usize = 64 * 1024;

/// Reads an upload: (name, manifest, module bytes, the field errors name).
async fn read_upload(
    req: &HttpRequest,
    payload: web::Payload,
    max: usize,
) -> Result<(String, WasmManifest, Vec<u8>, &'static str), ApiError> {
    let content_type = req
        .headers()
        .get("Content-Type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    let too_large =
        |n: &str| ApiError::BadRequest(format!("{n}: the module is over the limit of {max} bytes"));
    if content_type.starts_with("application/json") {
        let limit = max.saturating_mul(4) / 3 + 4 + MAX_MANIFEST_BYTES;
        let body = payload
            .to_bytes_limited(limit)
            .await
            .map_err(|_| ApiError::TooLarge(format!("body: larger than {limit} bytes")))?
            .map_err(|e| ApiError::BadRequest(format!("body: {e}")))?;
        let body: serde_json::Value = super::parse_json(&body)?;
        let body: UploadModule = super::docs::decode(body)?;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(body.file_base64.trim())
            .map_err(|e| ApiError::BadRequest(format!("file_base64: not base64 ({e})")))?;
        if bytes.len() > max {
            return Err(too_large("file_base64"));
        }
        return Ok((body.name, body.manifest, bytes, "file_base64"));
    }
    if content_type.starts_with("application/wasm")
        || content_type.starts_with("application/octet-stream")
    {
        let q = web::Query::<RawQuery>::from_query(req.query_string()).map_err(|_| {
            ApiError::BadRequest(
                "name: a raw upload names its module in the `name` query parameter (and may give its manifest as JSON in `manifest`)"
                    .into(),
            )
        })?;
        let manifest = match q.manifest.as_deref() {
            None => WasmManifest::default(),
            Some(m) if m.len() > MAX_MANIFEST_BYTES => {
                return Err(ApiError::BadRequest(format!(
                    "manifest: larger than {MAX_MANIFEST_BYTES} bytes"
                )))
            }
            Some(m) => super::parse_json(m.as_bytes())
                .map_err(|e| ApiError::BadRequest(format!("manifest: {e}")))?,
        };
        let body = payload
            .to_bytes_limited(max)
            .await
            .map_err(|_| too_large("file"))?
            .map_err(|e| ApiError::BadRequest(format!("body: {e}")))?;
        return Ok((q.name.clone(), manifest, body.to_vec(), "file"));
    }
    Err(ApiError::BadRequest(
        "body: Content-Type must be application/json, application/wasm or application/octet-stream"
            .into(),
    ))
}

/// `POST …/strategy-modules`: uploads a module version (validated within the tier's limits, stored
/// encrypted, named by its sha256), as JSON or as the raw module (see [`read_upload`]).
pub async fn upload(
    auth: Authorized,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<Stored<ModuleUploaded>, ApiError> {
    let t = auth.tenant()?.clone();
    crate::app::tenants::require_tier(&t, strategy_modules::TIER, "a strategy module")?;
    let max = WasmLimits::default().max_module_bytes;
    let (name, manifest, bytes, field) = read_upload(&req, payload, max).await?;
    let stored = strategy_modules::upload(
        &auth.state,
        &t,
        auth.actor(),
        name.clone(),
        manifest,
        bytes,
        field,
    )
    .await?;
    let body = ModuleUploaded {
        kind: wasm::kind_of(&name, &stored.version),
        name,
        version: stored.version,
        size_bytes: stored.size_bytes,
        created: stored.created,
    };
    Ok(if stored.created {
        Stored::Created(auth.created(body))
    } else {
        Stored::Existing(auth.ok(body))
    })
}

/// `DELETE …/strategy-modules/{module}/versions/{version}`: refused (409) while a strategy runs it.
pub async fn delete_version(
    auth: Authorized,
    path: web::Path<(String, String, String)>,
) -> Result<Reply<Deleted>, ApiError> {
    let t = auth.tenant()?.clone();
    strategy_modules::delete_version(&auth.state, &t, auth.actor(), &path.1, &path.2).await?;
    Ok(auth.ok(Deleted {
        deleted: path.2.clone(),
    }))
}
