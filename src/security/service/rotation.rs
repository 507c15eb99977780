//! Data-key rotation (`trellis keys rotate`): a new primary key, and every stored secret re-encrypted.

use super::*;

impl Security {
    /// A stored ciphertext (base64) re-encrypted under the primary key, with that key's version; `None` when
    /// it is current already.
    fn rotated(
        &self,
        field: FieldRef<'_>,
        stored: &str,
    ) -> Result<Option<(String, i64)>, AuthError> {
        let blob = base64::engine::general_purpose::STANDARD
            .decode(stored)
            .map_err(|_| AuthError::Internal("a stored ciphertext is not base64".into()))?;
        let ring = self.keyring();
        if !ring.needs_rotation(&blob) {
            return Ok(None);
        }
        let plain = ring.decrypt(field, &blob)?;
        let fresh = ring.encrypt(field, &plain)?;
        Ok(Some((
            base64::engine::general_purpose::STANDARD.encode(fresh),
            i64::from(ring.primary()),
        )))
    }

    /// Re-encrypts every stored secret under the primary key. Answers (re-encrypted, already current).
    pub async fn reencrypt_all(&self) -> Result<(usize, usize), AuthError> {
        let (mut done, mut current) = (0, 0);
        for row in self.store.all_model_files().await? {
            let id = format!("{}:{}", row.name, row.version);
            match self.rotated(Self::model_field(&row.tenant_id, &id), &row.file_enc)? {
                None => current += 1,
                Some((fresh, version)) => {
                    if self
                        .store
                        .reencrypt_model_file(&row, &fresh, version)
                        .await?
                    {
                        done += 1;
                    }
                }
            }
        }
        for row in self.store.all_module_files().await? {
            let id = format!("{}:{}", row.name, row.version);
            match self.rotated(Self::module_field(&row.tenant_id, &id), &row.file_enc)? {
                None => current += 1,
                Some((fresh, version)) => {
                    if self
                        .store
                        .reencrypt_module_file(&row, &fresh, version)
                        .await?
                    {
                        done += 1;
                    }
                }
            }
        }
        for row in self.store.all_accounts().await? {
            let login = row.login.to_string();
            match self.rotated(Self::field(&row.tenant_id, &login), &row.password_enc)? {
                None => current += 1,
                Some((fresh, version)) => {
                    if self
                        .store
                        .reencrypt_account(
                            &row.tenant_id,
                            row.login,
                            &row.password_enc,
                            &fresh,
                            version,
                        )
                        .await?
                    {
                        done += 1;
                    }
                }
            }
        }
        Ok((done, current))
    }

    /// Makes `keyring` the one in force (after `trellis keys rotate` added a key).
    pub fn replace_keyring(&self, keyring: Keyring) {
        *self.keyring.write().unwrap_or_else(|p| p.into_inner()) = keyring;
    }
}

/// What `trellis keys rotate` did.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct KeyRotation {
    pub new_version: u32,
    pub reencrypted: usize,
    pub already_current: usize,
}

/// `trellis keys rotate`: adds a data key to the secrets file and makes it primary, then re-encrypts every
/// stored secret under it. The older keys stay in the file as decrypt-only (so a secret written meanwhile by
/// a node still on the old key decrypts); run it while trellis is stopped or restart trellis afterwards so
/// running nodes encrypt with the new key.
pub async fn rotate_data_keys(settings: &Settings) -> anyhow::Result<KeyRotation> {
    let mut secrets = Secrets::load(&settings.security, &settings.storage.data_dir)?;
    let new_version = secrets.add_data_key()?;
    let store = SecurityStore::for_settings(&settings.storage).await?;
    let security = Security::start(settings, store.clone()).await?;
    let (reencrypted, already_current) = security
        .reencrypt_all()
        .await
        .map_err(|e| anyhow::anyhow!("re-encrypting: {e}"))?;
    security
        .audit(
            PLATFORM,
            "data_key.rotated",
            "cli",
            json!({"version": new_version, "reencrypted": reencrypted}),
        )
        .await?;
    store.close().await;
    Ok(KeyRotation {
        new_version,
        reencrypted,
        already_current,
    })
}
