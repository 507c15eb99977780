//! Tenant code at rest: model files in the registry and strategy modules, encrypted per tenant, decrypted
//! for the runtime's deployments and strategies.

use super::*;

impl Security {
    /// The field a tenant's file of `table` (model versions, strategy modules) is encrypted for: its
    /// ciphertext decrypts only as that tenant's `name:version` of that table.
    fn file_field<'a>(table: &'a str, tenant: &'a str, name_version: &'a str) -> FieldRef<'a> {
        FieldRef {
            table,
            column: "file",
            tenant,
            row_id: name_version,
        }
    }

    pub(super) fn model_field<'a>(tenant: &'a str, name_version: &'a str) -> FieldRef<'a> {
        Self::file_field("model_versions", tenant, name_version)
    }

    pub(super) fn module_field<'a>(tenant: &'a str, name_version: &'a str) -> FieldRef<'a> {
        Self::file_field("strategy_modules", tenant, name_version)
    }

    /// `bytes` encrypted for `field` under the primary key (base64), with that key's version.
    fn encrypt_file(&self, field: FieldRef<'_>, bytes: &[u8]) -> Result<(String, i64), AuthError> {
        let ring = self.keyring();
        let blob = ring.encrypt(field, bytes)?;
        Ok((
            base64::engine::general_purpose::STANDARD.encode(blob),
            i64::from(ring.primary()),
        ))
    }

    /// A stored ciphertext (base64) of `field`, decrypted; fails if it does not belong to that field.
    fn decrypt_file(
        &self,
        field: FieldRef<'_>,
        stored: &str,
    ) -> Result<Zeroizing<Vec<u8>>, AuthError> {
        let blob = base64::engine::general_purpose::STANDARD
            .decode(stored)
            .map_err(|_| AuthError::Internal("a stored ciphertext is not base64".into()))?;
        Ok(self.keyring().decrypt(field, &blob)?)
    }

    /// A strategy module encrypted for storage (base64), with the key version that encrypted it.
    pub fn encrypt_module_file(
        &self,
        tenant: &str,
        name: &str,
        version: &str,
        bytes: &[u8],
    ) -> Result<(String, i64), AuthError> {
        let id = format!("{name}:{version}");
        self.encrypt_file(Self::module_field(tenant, &id), bytes)
    }

    /// A stored strategy module version with its manifest, decrypted (`None` when there is no such
    /// version); fails if the ciphertext does not belong to this tenant and version.
    pub async fn module_version(
        &self,
        tenant: &str,
        name: &str,
        version: &str,
    ) -> Result<Option<crate::models::registry::ModuleFile>, StorageError> {
        let Some(row) = self.store.module_file(tenant, name, version).await? else {
            return Ok(None);
        };
        let id = format!("{name}:{version}");
        let bytes = self
            .decrypt_file(Self::module_field(tenant, &id), &row.file_enc)
            .map_err(|e| {
                StorageError::Rejected(format!("stored module `{name}` {version}: {e}"))
            })?;
        Ok(Some(crate::models::registry::ModuleFile {
            manifest: row.manifest,
            bytes: std::sync::Arc::new(bytes),
        }))
    }

    /// A model file encrypted for storage (base64), with the key version that encrypted it.
    pub fn encrypt_model_file(
        &self,
        tenant: &str,
        name: &str,
        version: &str,
        bytes: &[u8],
    ) -> Result<(String, i64), AuthError> {
        let id = format!("{name}:{version}");
        self.encrypt_file(Self::model_field(tenant, &id), bytes)
    }

    /// A stored model file, decrypted; fails if the ciphertext does not belong to this tenant and version.
    pub fn decrypt_model_file(&self, row: &ModelFileRow) -> Result<Zeroizing<Vec<u8>>, AuthError> {
        let id = format!("{}:{}", row.name, row.version);
        self.decrypt_file(Self::model_field(&row.tenant_id, &id), &row.file_enc)
    }

    /// A registry version of `tenant`'s model `name`, by sha256 or by the alias pointing at it now:
    /// manifest and decrypted file (`None` when the model, version or alias does not exist).
    pub async fn registry_version(
        &self,
        tenant: &str,
        name: &str,
        reference: &crate::models::registry::OwnedRef,
    ) -> Result<Option<crate::models::registry::RegistryVersion>, StorageError> {
        use crate::models::registry::{OwnedRef, RegistryVersion};
        let version = match reference {
            OwnedRef::Version(v) => v.clone(),
            OwnedRef::Alias(a) => match self
                .store
                .aliases_of(tenant, name)
                .await?
                .into_iter()
                .find(|row| row.to_ms.is_none() && &row.alias == a)
            {
                Some(row) => row.version,
                None => return Ok(None),
            },
        };
        let Some(row) = self
            .store
            .versions_of(tenant, name)
            .await?
            .into_iter()
            .find(|v| v.version == version)
        else {
            return Ok(None);
        };
        let Some(file) = self.store.model_file(tenant, name, &version).await? else {
            return Ok(None);
        };
        let manifest = serde_json::from_str(&row.manifest).map_err(|e| {
            StorageError::Rejected(format!("stored manifest of `{name}` {version}: {e}"))
        })?;
        let bytes = self.decrypt_model_file(&file).map_err(|e| {
            StorageError::Rejected(format!("stored file of `{name}` {version}: {e}"))
        })?;
        Ok(Some(RegistryVersion {
            version,
            manifest,
            bytes: std::sync::Arc::new(bytes),
        }))
    }
}

/// The registry's versions for the runtime (tenant starts, deployments).
pub struct RegistryFiles(pub Arc<Security>);

impl crate::models::registry::ModelFiles for RegistryFiles {
    fn fetch(
        &self,
        tenant: String,
        model: String,
        reference: crate::models::registry::OwnedRef,
    ) -> futures_util::future::BoxFuture<
        'static,
        Result<Option<crate::models::registry::RegistryVersion>, StorageError>,
    > {
        let security = self.0.clone();
        Box::pin(async move { security.registry_version(&tenant, &model, &reference).await })
    }

    fn module(
        &self,
        tenant: String,
        name: String,
        version: String,
    ) -> futures_util::future::BoxFuture<
        'static,
        Result<Option<crate::models::registry::ModuleFile>, StorageError>,
    > {
        let security = self.0.clone();
        Box::pin(async move { security.module_version(&tenant, &name, &version).await })
    }
}
