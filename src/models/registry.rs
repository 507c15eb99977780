//! Registry versions as deployments use them.
//!
//! A deployment made through the API names its versions in the tenant's registry — by sha256, or by an
//! alias it follows — and the tenant's stored document keeps those names, not the bytes. Whenever the
//! tenant starts (the process restarted, the tenant was restarted, the node took it over) the names are
//! resolved again through [`ModelFiles`], which the security service implements: it reads the encrypted
//! file, decrypts it, and hands it over with its manifest. An alias therefore resolves to where it points
//! *now*. The actors never see the store or the keys; the runtime holds the source, connected once at
//! start-up like the audit sink.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use futures_util::future::BoxFuture;

use super::manifest::Manifest;
use crate::domain::tenant::{ModelDeploymentSettings, VersionRef, VersionSource};
use crate::storage::StorageError;

/// A registry version's file and manifest, decrypted.
#[derive(Clone)]
pub struct RegistryVersion {
    /// sha256 of the file, hex.
    pub version: String,
    pub manifest: Manifest,
    pub bytes: Arc<zeroize::Zeroizing<Vec<u8>>>,
}

impl std::fmt::Debug for RegistryVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryVersion")
            .field("version", &self.version)
            .field("bytes", &self.bytes.len())
            .finish()
    }
}

/// A tenant's strategy module version, decrypted, with its manifest as stored (JSON).
#[derive(Clone)]
pub struct ModuleFile {
    pub manifest: String,
    pub bytes: Arc<zeroize::Zeroizing<Vec<u8>>>,
}

/// Where registry versions come from (the security service: the store and the data keys). Strategy
/// modules, the other tenant code stored encrypted, come from the same place.
pub trait ModelFiles: Send + Sync + 'static {
    /// Version `version` (sha256) of `tenant`'s strategy module `name`; `Ok(None)` when there is none.
    fn module(
        &self,
        tenant: String,
        name: String,
        version: String,
    ) -> BoxFuture<'static, Result<Option<ModuleFile>, StorageError>>;

    /// The version `reference` names in `tenant`'s model `model`; `Ok(None)` when there is none (no such
    /// model, version or alias).
    fn fetch(
        &self,
        tenant: String,
        model: String,
        reference: OwnedRef,
    ) -> BoxFuture<'static, Result<Option<RegistryVersion>, StorageError>>;
}

/// [`VersionRef`] owned, to cross an await.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum OwnedRef {
    Version(String),
    Alias(String),
}

impl From<VersionRef<'_>> for OwnedRef {
    fn from(r: VersionRef<'_>) -> Self {
        match r {
            VersionRef::Version(v) => Self::Version(v.to_owned()),
            VersionRef::Alias(a) => Self::Alias(a.to_owned()),
        }
    }
}

impl std::fmt::Display for OwnedRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Version(v) => write!(f, "version `{v}`"),
            Self::Alias(a) => write!(f, "alias `{a}`"),
        }
    }
}

/// The registry versions a set of deployments names, resolved.
pub type Resolved = HashMap<(String, OwnedRef), RegistryVersion>;

/// The runtime's handle on [`ModelFiles`], connected once the security service runs.
#[derive(Clone, Default)]
pub struct ModelFilesSlot(Arc<OnceLock<Arc<dyn ModelFiles>>>);

/// Why registry versions could not be resolved.
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    /// The deployment names something the registry does not have (rejected).
    #[error("model deployment `{deployment}`: model `{model}` has no {reference}")]
    Missing {
        deployment: String,
        model: String,
        reference: OwnedRef,
    },
    #[error("model deployment `{0}`: registry versions need the deployment's `model`")]
    NoModel(String),
    #[error("model deployment `{0}`: {1}")]
    Invalid(String, String),
    /// The registry is not reachable now (retry).
    #[error("model deployment `{0}`: the model registry is unavailable: {1}")]
    Unavailable(String, String),
}

impl ResolveError {
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::Unavailable(..))
    }
}

impl ModelFilesSlot {
    pub fn connect(&self, files: Arc<dyn ModelFiles>) {
        let _ = self.0.set(files);
    }

    /// Version `version` of `tenant`'s strategy module `name`: `Ok(None)` when there is none, `Err`
    /// (retry) when the store is not reachable or not connected yet.
    pub async fn module(
        &self,
        tenant: &str,
        name: &str,
        version: &str,
    ) -> Result<Option<ModuleFile>, StorageError> {
        let files = self.0.get().ok_or_else(|| {
            StorageError::Unavailable("the module store is not connected yet".into())
        })?;
        files
            .module(tenant.to_owned(), name.to_owned(), version.to_owned())
            .await
    }

    /// One registry version, for deployment `deployment` (named in errors).
    pub async fn fetch(
        &self,
        deployment: &str,
        tenant: &str,
        model: &str,
        reference: OwnedRef,
    ) -> Result<RegistryVersion, ResolveError> {
        let files = self.0.get().ok_or_else(|| {
            ResolveError::Unavailable(deployment.to_owned(), "not connected yet".into())
        })?;
        files
            .fetch(tenant.to_owned(), model.to_owned(), reference.clone())
            .await
            .map_err(|e| ResolveError::Unavailable(deployment.to_owned(), e.to_string()))?
            .ok_or_else(|| ResolveError::Missing {
                deployment: deployment.to_owned(),
                model: model.to_owned(),
                reference,
            })
    }

    /// Resolves every registry version the deployments name (file versions need nothing).
    pub async fn resolve(
        &self,
        tenant: &str,
        deployments: &[ModelDeploymentSettings],
    ) -> Result<Resolved, ResolveError> {
        let mut resolved = Resolved::new();
        for d in deployments {
            for v in d.traffic.iter().chain(&d.shadow) {
                let reference = match v.source() {
                    Ok(VersionSource::File { .. }) => continue,
                    Ok(VersionSource::Registry(r)) => OwnedRef::from(r),
                    Err(e) => return Err(ResolveError::Invalid(d.id.clone(), e)),
                };
                let model = d
                    .model
                    .clone()
                    .ok_or_else(|| ResolveError::NoModel(d.id.clone()))?;
                let key = (model.clone(), reference.clone());
                if resolved.contains_key(&key) {
                    continue;
                }
                let found = self.fetch(&d.id, tenant, &model, reference).await?;
                resolved.insert(key, found);
            }
        }
        Ok(resolved)
    }
}
