//! Users of a tenant (or platform administrators): created with a role, changed, disabled.

use super::*;

impl Security {
    pub async fn create_user(
        &self,
        tenant: Option<&str>,
        email: &str,
        password: &str,
        role: Role,
        actor: &str,
    ) -> Result<UserRow, AuthError> {
        let email = email.trim().to_ascii_lowercase();
        if !email.contains('@') || email.len() > 254 {
            return Err(AuthError::Invalid("email: not an email address".into()));
        }
        if password.chars().count() < 12 || password.len() > 1024 {
            return Err(AuthError::Invalid(
                "password: must have 12 to 1024 characters".into(),
            ));
        }
        let pw = password.to_owned();
        let hash = tokio::task::spawn_blocking(move || passwords::hash(&pw))
            .await
            .map_err(|e| AuthError::Internal(e.to_string()))?
            .map_err(|e| AuthError::Internal(e.to_string()))?;
        let user = UserRow {
            id: uuid::Uuid::new_v4().to_string(),
            tenant_id: tenant.map(str::to_owned),
            email: email.clone(),
            password_hash: hash,
            role: role.as_str().into(),
            disabled: 0,
            valid_after_ms: 0,
            failed_logins: 0,
            locked_until_ms: 0,
            created_ms: now_ms(),
        };
        match self.store.insert_user(&user).await {
            Err(StorageError::Rejected(_)) => {
                return Err(AuthError::Conflict(format!(
                    "email: `{email}` is already registered"
                )))
            }
            other => other?,
        }
        self.users
            .insert(user.id.clone(), UserGate { disabled: false });
        self.audit(
            tenant.unwrap_or(PLATFORM),
            "user.created",
            actor,
            json!({"user": user.id, "email": email, "role": role.as_str()}),
        )
        .await?;
        Ok(user)
    }

    /// Changes a user's role and/or disables them; their sessions are revoked either way.
    pub async fn change_user(
        &self,
        user: &UserRow,
        role: Role,
        disabled: bool,
        actor: &str,
    ) -> Result<(), AuthError> {
        let now = now_ms();
        let sessions = self.store.sessions_of(&user.id).await?;
        self.store
            .update_user_access(
                &user.id,
                role.as_str(),
                disabled,
                now,
                "role or status changed",
            )
            .await?;
        for s in sessions {
            self.revoked_sessions.insert(s, ());
        }
        self.users.insert(user.id.clone(), UserGate { disabled });
        let chain = user.tenant_id.clone().unwrap_or_else(|| PLATFORM.into());
        self.audit(&chain, if disabled { "user.disabled" } else { "user.role_changed" }, actor,
            json!({"user": user.id, "from": user.role, "role": role.as_str(), "disabled": disabled}))
            .await?;
        Ok(())
    }
}

/// A user as the API shows it (never the password hash).
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct UserView {
    pub id: String,
    pub tenant_id: Option<String>,
    pub email: String,
    pub role: String,
    pub disabled: bool,
    pub created_ms: i64,
}

impl From<&UserRow> for UserView {
    fn from(u: &UserRow) -> Self {
        Self {
            id: u.id.clone(),
            tenant_id: u.tenant_id.clone(),
            email: u.email.clone(),
            role: u.role.clone(),
            disabled: u.disabled != 0,
            created_ms: u.created_ms,
        }
    }
}
