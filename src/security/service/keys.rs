//! API keys: created with scopes and an optional expiry (the secret shown once), rolled, revoked.

use super::*;

impl Security {
    pub async fn create_key(
        &self,
        tenant: &str,
        name: &str,
        scopes: &[Scope],
        expires_ms: Option<i64>,
        actor: &str,
    ) -> Result<(ApiKeyRow, String), AuthError> {
        let new =
            api_keys::generate(&self.pepper).map_err(|e| AuthError::Internal(e.to_string()))?;
        let row = ApiKeyRow {
            id: new.id.clone(),
            tenant_id: tenant.to_owned(),
            name: name.to_owned(),
            digest: hex(&new.hash),
            scopes: scopes
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(" "),
            created_ms: now_ms(),
            expires_ms,
            revoked_ms: None,
            rolled_to: None,
        };
        self.store.insert_key(&row).await?;
        self.cache_key(&row);
        self.audit(
            tenant,
            "api_key.created",
            actor,
            json!({"key": row.id, "name": name, "scopes": row.scopes}),
        )
        .await?;
        Ok((row, new.full))
    }

    pub async fn key_of(&self, tenant: &str, id: &str) -> Result<ApiKeyRow, AuthError> {
        self.store
            .keys_of(tenant)
            .await?
            .into_iter()
            .find(|k| k.id == id)
            .ok_or(AuthError::NotFound)
    }

    /// A new key with the same name and scopes; the old one keeps working for `overlap_secs`.
    pub async fn roll_key(
        &self,
        tenant: &str,
        id: &str,
        overlap_secs: Option<u64>,
        actor: &str,
    ) -> Result<(ApiKeyRow, String), AuthError> {
        let old = self.key_of(tenant, id).await?;
        if old.revoked_ms.is_some() {
            return Err(AuthError::Conflict("the key is revoked".into()));
        }
        if old.rolled_to.is_some() {
            return Err(AuthError::Conflict(
                "the key was already rolled: roll its successor".into(),
            ));
        }
        let overlap = overlap_secs
            .unwrap_or(self.settings.key_overlap_secs)
            .min(self.settings.key_overlap_secs);
        let now = now_ms();
        let old_expires = now + overlap as i64 * 1000;
        let old_expires = old.expires_ms.map_or(old_expires, |e| e.min(old_expires));
        let new =
            api_keys::generate(&self.pepper).map_err(|e| AuthError::Internal(e.to_string()))?;
        let row = ApiKeyRow {
            id: new.id.clone(),
            tenant_id: tenant.to_owned(),
            name: old.name.clone(),
            digest: hex(&new.hash),
            scopes: old.scopes.clone(),
            created_ms: now,
            expires_ms: None,
            revoked_ms: None,
            rolled_to: None,
        };
        self.store.roll_key(&old.id, old_expires, &row).await?;
        self.cache_key(&row);
        if let Some(mut rec) = self.keys.get_mut(&old.id) {
            rec.expires_ms = Some(old_expires);
        }
        self.audit(
            tenant,
            "api_key.rolled",
            actor,
            json!({"key": old.id, "successor": row.id, "old_valid_until_ms": old_expires}),
        )
        .await?;
        Ok((row, new.full))
    }

    pub async fn revoke_key(&self, tenant: &str, id: &str, actor: &str) -> Result<(), AuthError> {
        let key = self.key_of(tenant, id).await?;
        self.store.revoke_key(tenant, &key.id, now_ms()).await?;
        if let Some(mut rec) = self.keys.get_mut(&key.id) {
            rec.revoked = true;
        }
        self.audit(tenant, "api_key.revoked", actor, json!({"key": key.id}))
            .await?;
        Ok(())
    }
}

/// A stored API key as the API shows it (never its secret or digest).
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct KeyView {
    pub id: String,
    pub name: String,
    pub scopes: Vec<String>,
    pub created_ms: i64,
    pub expires_ms: Option<i64>,
    pub revoked_ms: Option<i64>,
    pub rolled_to: Option<String>,
}

impl From<&ApiKeyRow> for KeyView {
    fn from(k: &ApiKeyRow) -> Self {
        Self {
            id: k.id.clone(),
            name: k.name.clone(),
            scopes: k.scopes.split(' ').map(str::to_owned).collect(),
            created_ms: k.created_ms,
            expires_ms: k.expires_ms,
            revoked_ms: k.revoked_ms,
            rolled_to: k.rolled_to.clone(),
        }
    }
}
