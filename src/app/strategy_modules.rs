//! Strategy module use cases: a tenant's own strategies as WebAssembly modules (`docs/strategy-modules.md`).
//!
//! An upload is never trusted: it is loaded (validated, compiled, its interface version asked) on the
//! bounded validation pool within the tenant's tier limits before anything stores it, then stored encrypted
//! under the sha256 of its bytes — versions are content-addressed and immutable like model versions — and
//! audited. A strategy names a version as its kind, `wasm:<name>@<version>`; `wasm:<name>` is pinned to
//! the newest version when the strategy is created, so the tenant's document always says which bytes
//! trade and a restart runs the same ones. A version a strategy names cannot be deleted (409).
//!
//! Each tenant's registry is a layer of its own over the process's strategy kinds (see
//! `StrategyRegistry::layer`): a module is a kind of its tenant only, so another tenant can neither see,
//! run nor delete it.

use std::sync::Arc;

use serde_json::json;
use sha2::{Digest, Sha256};

use super::{App, AppError};
use crate::actors::tenant::TenantContext;
use crate::actors::tree::ModuleLoadError;
use crate::domain::tenant::StrategySettings;
use crate::storage::security::ModuleVersionRow;
use crate::strategies::wasm::{self, WasmError, WasmManifest, WasmModule};

/// The tier from which strategy modules may be uploaded and run.
pub const TIER: &str = "professional";

/// A module version as stored.
#[derive(Debug, Clone)]
pub struct Uploaded {
    /// The sha256 of its bytes.
    pub version: String,
    pub size_bytes: i64,
    /// False when the same bytes were stored under this name already (nothing changed).
    pub created: bool,
}

/// Uploads version `bytes` of module `name` for `actor`: within the tier (403) and its quota of stored
/// versions, loaded on the validation pool within the tier's limits (400 naming the problem, the message
/// prefixed with `field`, or `manifest` for the manifest's), stored encrypted, audited when new.
pub async fn upload(
    app: &App,
    t: &TenantContext,
    actor: &str,
    name: String,
    manifest: WasmManifest,
    bytes: Vec<u8>,
    field: &str,
) -> Result<Uploaded, AppError> {
    super::tenants::require_tier(t, TIER, "a strategy module")?;
    super::valid_id("name", &name)?;
    let tenant = t.id.0.as_str();
    let tier = t.tier();
    let limits = app.runtime.wasm_limits(&tier);
    if bytes.len() > limits.max_module_bytes {
        return Err(AppError::BadRequest(format!(
            "{field}: {}",
            WasmError::TooLarge {
                bytes: bytes.len(),
                limit: limits.max_module_bytes
            }
        )));
    }
    let version = crate::domain::hex(&Sha256::digest(&bytes));
    let store = &app.security.store;
    let stored = store.modules_of(tenant).await?;
    if let Some(row) = stored
        .iter()
        .find(|r| r.name == name && r.version == version)
    {
        return Ok(Uploaded {
            version,
            size_bytes: row.size_bytes,
            created: false,
        });
    }
    let quotas = &app.settings.quotas.strategy_modules;
    let quota = quotas.of(&tier);
    if stored.len() as u64 >= u64::from(quota) {
        return Err(super::tenants::quota_exceeded(
            quotas,
            &tier,
            "stored strategy module versions",
            quota,
        ));
    }
    let manifest_text =
        serde_json::to_string(&manifest).map_err(|e| AppError::Internal(anyhow::anyhow!(e)))?;
    let (bytes, checked) = super::models::validate(tenant, field, move || {
        let checked = WasmModule::load(&bytes, manifest, limits).map(|_| ());
        (bytes, checked)
    })
    .await?;
    checked.map_err(|e| match e {
        WasmError::Manifest(m) => AppError::BadRequest(format!("manifest: {m}")),
        e => AppError::BadRequest(format!("{field}: {e}")),
    })?;
    let (file_enc, key_version) = app
        .security
        .encrypt_module_file(tenant, &name, &version, &bytes)?;
    let row = ModuleVersionRow {
        tenant_id: tenant.to_owned(),
        name: name.clone(),
        version: version.clone(),
        manifest: manifest_text,
        key_version,
        size_bytes: bytes.len() as i64,
        created_ms: crate::domain::now_ms(),
    };
    let created = store.insert_module(&row, &file_enc).await?;
    if created {
        app.security
            .audit(
                tenant,
                "strategy_module.uploaded",
                actor,
                json!({"module": name, "version": version, "size_bytes": row.size_bytes}),
            )
            .await?;
    }
    Ok(Uploaded {
        version,
        size_bytes: row.size_bytes,
        created,
    })
}

/// The strategies of `t` that run version `version` of module `name`, by id.
pub fn users_of(t: &TenantContext, name: &str, version: &str) -> Vec<String> {
    let kind = wasm::kind_of(name, version);
    t.strategies
        .read()
        .values()
        .filter(|r| r.settings.kind == kind)
        .map(|r| r.settings.id.clone())
        .collect()
}

/// Deletes version `version` of module `name` for `actor`: refused (409) while a strategy names it, not
/// found when there is no such version; audited.
pub async fn delete_version(
    app: &App,
    t: &TenantContext,
    actor: &str,
    name: &str,
    version: &str,
) -> Result<(), AppError> {
    // Under the document's lock: a strategy created meanwhile cannot pin the version being deleted.
    let _admin = t.admin.lock().await;
    if let Some(s) = users_of(t, name, version).first() {
        return Err(AppError::Conflict(format!(
            "version `{version}` of module `{name}` is in use by strategy `{s}`: delete or change the strategy first"
        )));
    }
    if !app
        .security
        .store
        .delete_module(&t.id.0, name, version)
        .await?
    {
        return Err(AppError::NotFound);
    }
    t.registry.unregister_wasm(&wasm::kind_of(name, version));
    app.security
        .audit(
            &t.id.0,
            "strategy_module.deleted",
            actor,
            json!({"module": name, "version": version}),
        )
        .await?;
    Ok(())
}

/// Makes kind `kind` one the tenant's registry can build when it names one of its modules: a kind
/// `wasm:<name>` becomes the newest version's `wasm:<name>@<version>` (answered), and the version is
/// loaded from the store within the tier's limits. Other kinds are answered unchanged.
pub async fn resolve_kind(app: &App, t: &TenantContext, kind: &str) -> Result<String, AppError> {
    let Some((name, version)) = wasm::parse_kind(kind) else {
        return Ok(kind.to_owned());
    };
    super::tenants::require_tier(t, TIER, "a strategy of a module")?;
    super::valid_id("kind", name)?;
    let kind = match version {
        Some(v) => wasm::kind_of(name, v),
        None => {
            let newest = app
                .security
                .store
                .modules_of(&t.id.0)
                .await?
                .into_iter()
                .filter(|r| r.name == name)
                .max_by_key(|r| r.created_ms)
                .ok_or_else(|| {
                    AppError::BadRequest(format!("kind: there is no strategy module `{name}`"))
                })?;
            wasm::kind_of(name, &newest.version)
        }
    };
    app.runtime
        .load_module(&t.id.0, &t.tier(), &t.registry, &kind)
        .await
        .map_err(|e| match e {
            ModuleLoadError::Unavailable(m) => AppError::Unavailable(m),
            e => AppError::BadRequest(format!("kind: {e}")),
        })?;
    Ok(kind)
}

/// Before a strategy of a module is created: its kind resolved and pinned ([`resolve_kind`]), its symbol
/// and timeframe among those the module's manifest names, and the tier's quota of strategies of modules
/// (`[quotas] wasm_strategies`) not spent. Nothing to do for other kinds.
pub async fn prepare(
    app: &App,
    t: &Arc<TenantContext>,
    s: &mut StrategySettings,
) -> Result<(), AppError> {
    if wasm::parse_kind(&s.kind).is_none() {
        return Ok(());
    }
    s.kind = resolve_kind(app, t, &s.kind).await?;
    let Some(module) = t.registry.module(&s.kind) else {
        return Err(AppError::Unavailable(format!(
            "the strategy kind `{}` was unloaded meanwhile, retry",
            s.kind
        )));
    };
    let manifest = module.manifest();
    if !manifest.symbols.is_empty() && !manifest.symbols.contains(&s.symbol) {
        return Err(AppError::BadRequest(format!(
            "symbol: the module trades {} only, not `{}`",
            manifest.symbols.join(", "),
            s.symbol
        )));
    }
    if let Some(tf) = manifest
        .timeframe
        .as_deref()
        .filter(|tf| *tf != s.timeframe)
    {
        return Err(AppError::BadRequest(format!(
            "timeframe: the module is written for {tf}, not `{}`",
            s.timeframe
        )));
    }
    let running = t
        .strategies
        .read()
        .values()
        .filter(|r| r.settings.id != s.id && wasm::parse_kind(&r.settings.kind).is_some())
        .count();
    let quotas = &app.settings.quotas.wasm_strategies;
    let tier = t.tier();
    let quota = quotas.of(&tier);
    if running as u64 >= u64::from(quota) {
        return Err(super::tenants::quota_exceeded(
            quotas,
            &tier,
            "strategies of modules",
            quota,
        ));
    }
    Ok(())
}
