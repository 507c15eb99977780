//! Sign-in: passwords checked on the blocking pool under per-account and per-address limits, access and
//! refresh tokens issued, refresh rotation with reuse detection (a reused refresh token revokes the whole
//! session), logout.

use super::*;

impl Security {
    fn limited<K: std::hash::Hash + Eq + Clone>(
        limiter: &DefaultKeyedRateLimiter<K>,
        key: &K,
    ) -> Result<(), AuthError> {
        limiter.check_key(key).map_err(|not_until| {
            let wait = not_until.wait_time_from(DefaultClock::default().now());
            AuthError::TooMany(wait.as_secs_f64().ceil().max(1.0) as u64)
        })
    }

    pub async fn login(
        &self,
        email: &str,
        password: &str,
        ip: Option<IpAddr>,
    ) -> Result<TokenPair, AuthError> {
        let email = email.trim().to_ascii_lowercase();
        if let Some(ip) = ip {
            Self::limited(&self.login_ip, &ip)?;
        }
        Self::limited(&self.login_account, &email)?;
        let denied = || AuthError::Unauthenticated("invalid email or password".into());
        let now = now_ms();
        let Some(user) = self.store.user_by_email(&email).await? else {
            let pw = password.to_owned();
            let _ = tokio::task::spawn_blocking(move || passwords::verify_unknown_user(&pw)).await;
            self.audit(
                PLATFORM,
                "login.failed",
                "anonymous",
                json!({"email": email, "reason": "unknown user"}),
            )
            .await?;
            return Err(denied());
        };
        let chain = user.tenant_id.clone().unwrap_or_else(|| PLATFORM.into());
        if user.locked_until_ms > now {
            return Err(AuthError::TooMany(
                ((user.locked_until_ms - now) as u64).div_ceil(1000),
            ));
        }
        let (pw, phc) = (password.to_owned(), user.password_hash.clone());
        let ok = tokio::task::spawn_blocking(move || passwords::verify(&pw, &phc))
            .await
            .map_err(|e| AuthError::Internal(e.to_string()))?;
        if !ok || user.disabled != 0 {
            let failures = user.failed_logins + 1;
            let threshold = i64::from(self.settings.lockout_after_failures.max(1));
            let locked_until = if ok || failures < threshold {
                0
            } else {
                let exp = (failures - threshold).min(10) as u32;
                now + (1000i64 << exp).min(15 * 60 * 1000)
            };
            self.store.login_failed(&user.id, locked_until).await?;
            let reason = if ok {
                "user disabled"
            } else {
                "wrong password"
            };
            self.audit(
                &chain,
                "login.failed",
                &format!("user:{}", user.id),
                json!({"email": email, "reason": reason}),
            )
            .await?;
            return Err(denied());
        }
        if let Some(t) = &user.tenant_id {
            if self.is_suspended(t) {
                return Err(AuthError::Forbidden(format!("tenant `{t}` is suspended")));
            }
        }
        self.store.login_succeeded(&user.id).await?;
        let refresh = new_refresh_token();
        let session = SessionRow {
            id: uuid::Uuid::new_v4().to_string(),
            user_id: user.id.clone(),
            tenant_id: user.tenant_id.clone(),
            created_ms: now,
            last_used_ms: now,
            revoked_ms: None,
        };
        self.store
            .create_session(&session, &sha256_hex(refresh.as_bytes()))
            .await?;
        self.audit(
            &chain,
            "login.ok",
            &format!("user:{}", user.id),
            json!({"email": email, "session": session.id}),
        )
        .await?;
        self.pair(&user, &session.id, refresh)
    }

    fn pair(&self, user: &UserRow, sid: &str, refresh: String) -> Result<TokenPair, AuthError> {
        let now = (now_ms() / 1000) as u64;
        let (access, _) = self
            .jwt
            .issue(
                &user.id,
                user.tenant_id.as_deref().unwrap_or(""),
                &user.role,
                sid,
                now,
            )
            .map_err(|e| AuthError::Internal(e.to_string()))?;
        Ok(TokenPair {
            access_token: access,
            refresh_token: refresh,
            token_type: "Bearer",
            expires_in: self.settings.access_ttl_secs,
        })
    }

    pub async fn refresh(&self, token: &str) -> Result<TokenPair, AuthError> {
        let invalid =
            || AuthError::Unauthenticated("the refresh token is invalid or expired".into());
        let next = new_refresh_token();
        let s = &self.settings;
        let outcome = self
            .store
            .rotate_refresh(
                &sha256_hex(token.trim().as_bytes()),
                &sha256_hex(next.as_bytes()),
                now_ms(),
                s.refresh_idle_secs as i64 * 1000,
                s.refresh_absolute_secs as i64 * 1000,
                s.refresh_grace_ms as i64,
            )
            .await?;
        match outcome {
            Rotation::Rotated(session) => {
                let user = self
                    .store
                    .user(&session.user_id)
                    .await?
                    .ok_or_else(invalid)?;
                if user.disabled != 0 {
                    return Err(invalid());
                }
                if let Some(t) = &user.tenant_id {
                    if self.is_suspended(t) {
                        return Err(AuthError::Forbidden(format!("tenant `{t}` is suspended")));
                    }
                }
                self.pair(&user, &session.id, next)
            }
            Rotation::RecentlyUsed => Err(AuthError::Unauthenticated(
                "the refresh token was already used; use the newer one".into(),
            )),
            Rotation::Reused { session } => {
                self.revoked_sessions.insert(session.id.clone(), ());
                let chain = session.tenant_id.clone().unwrap_or_else(|| PLATFORM.into());
                tracing::warn!(user = %session.user_id, session = %session.id, "refresh token reused: session revoked");
                self.audit(
                    &chain,
                    "refresh.reuse",
                    &format!("user:{}", session.user_id),
                    json!({"session": session.id, "outcome": "session revoked"}),
                )
                .await?;
                Err(AuthError::Unauthenticated(
                    "the refresh token was reused: the session is revoked, sign in again".into(),
                ))
            }
            Rotation::Invalid => Err(invalid()),
        }
    }

    /// Ends the caller's session: its refresh tokens stop working and the presented access token is refused.
    pub async fn logout(&self, p: &Principal) -> Result<(), AuthError> {
        let Credential::User { sid, jti, exp, .. } = &p.credential else {
            return Err(AuthError::Invalid("only a user session can log out".into()));
        };
        self.store
            .revoke_session(sid, now_ms(), "logout", Some((jti, *exp as i64 * 1000)))
            .await?;
        self.revoked_sessions.insert(sid.clone(), ());
        self.revoked_jti.insert(jti.clone(), *exp as i64 * 1000);
        let chain = p.tenant.clone().unwrap_or_else(|| PLATFORM.into());
        self.audit(&chain, "logout", &p.actor, json!({"session": sid}))
            .await?;
        Ok(())
    }
}

/// What a login or refresh answers (the OAuth token response).
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct TokenPair {
    pub access_token: String,
    pub refresh_token: String,
    pub token_type: &'static str,
    pub expires_in: u64,
}

fn new_refresh_token() -> String {
    let mut bytes = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut bytes);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}
