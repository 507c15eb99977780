//! MT5 accounts: the terminal's password stored encrypted (AES-256-GCM, bound to tenant and login).

use super::*;

impl Security {
    pub(super) fn field<'a>(tenant: &'a str, login: &'a str) -> FieldRef<'a> {
        FieldRef {
            table: "mt5_accounts",
            column: "password",
            tenant,
            row_id: login,
        }
    }

    pub async fn register_account(
        &self,
        tenant: &str,
        login: u64,
        server: &str,
        password: &str,
        actor: &str,
    ) -> Result<Mt5AccountRow, AuthError> {
        let login_s = login.to_string();
        let (blob, version) = {
            let ring = self.keyring();
            (
                ring.encrypt(Self::field(tenant, &login_s), password.as_bytes())?,
                ring.primary(),
            )
        };
        let row = Mt5AccountRow {
            tenant_id: tenant.to_owned(),
            login: login as i64,
            server: server.to_owned(),
            password_enc: base64::engine::general_purpose::STANDARD.encode(blob),
            key_version: i64::from(version),
            created_ms: now_ms(),
        };
        match self.store.insert_account(&row).await {
            Err(StorageError::Rejected(_)) => {
                return Err(AuthError::Conflict(format!(
                    "login: account {login} is already registered"
                )))
            }
            other => other?,
        }
        self.audit(
            tenant,
            "mt5_account.registered",
            actor,
            json!({"login": login, "server": server}),
        )
        .await?;
        Ok(row)
    }

    /// The MT5 password of a stored account (for connecting to the broker); fails if the ciphertext does
    /// not belong to this tenant and login.
    pub fn decrypt_password(&self, row: &Mt5AccountRow) -> Result<Zeroizing<Vec<u8>>, AuthError> {
        let blob = base64::engine::general_purpose::STANDARD
            .decode(&row.password_enc)
            .map_err(|_| AuthError::Internal("a stored ciphertext is not base64".into()))?;
        let login = row.login.to_string();
        Ok(self
            .keyring()
            .decrypt(Self::field(&row.tenant_id, &login), &blob)?)
    }
}
