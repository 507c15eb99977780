//! Authentication, sessions, API keys, MT5 credentials and the audit log, over the security store.
//!
//! Every request authenticates in memory: the JWT is verified (µs), then checked against caches of revoked
//! tokens and sessions, disabled users and suspended tenants that this process keeps in step with the store
//! (it writes them itself, and reloads them from the store every `security.cache_refresh_ms`, so what another
//! node changed applies here within that time). API keys are looked up by their public id and their secret
//! compared as HMAC digests in constant time. Only logins, refreshes and administration touch the database.
//!
//! Passwords are hashed and verified on the blocking pool (Argon2id takes tens of milliseconds).

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::{Arc, RwLock};

use base64::Engine as _;
use dashmap::DashMap;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};
use rand::RngCore;
use serde::Serialize;
use serde_json::json;
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use super::audit::{self, AuditError, Entry};
use super::crypto::{CryptoError, FieldRef, Keyring};
use super::jwt::{Claims, JwtError, JwtKeys};
use super::rbac::{Access, Role, Scope};
use super::secrets::Secrets;
use super::{api_keys, passwords};
use crate::config::{SecuritySettings, Settings};
use crate::storage::security::{
    ApiKeyRow, AuditFilter, AuditRow, ModelFileRow, Mt5AccountRow, Rotation, SecurityStore,
    SessionRow, UserRow,
};
use crate::storage::StorageError;

/// The audit chain of events that belong to no tenant (platform administration, unknown-user logins).
pub const PLATFORM: &str = "platform";

/// Why a request is refused, in the terms the HTTP layer answers with.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// 401: no usable credentials. The message never says which part was wrong.
    #[error("{0}")]
    Unauthenticated(String),
    /// 403: known caller, not allowed.
    #[error("{0}")]
    Forbidden(String),
    /// 429 with the wait.
    #[error("too many attempts; retry in {0} s")]
    TooMany(u64),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Invalid(String),
    #[error("not found")]
    NotFound,
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("{0}")]
    Internal(String),
}

impl From<CryptoError> for AuthError {
    fn from(e: CryptoError) -> Self {
        Self::Internal(e.to_string())
    }
}

/// How the caller proved who they are.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub enum Credential {
    /// A user's access token.
    User {
        user_id: String,
        sid: String,
        jti: String,
        exp: u64,
    },
    /// An API key stored through the API.
    Key { key_id: String },
    /// An API key listed in configuration (`[[tenants]] api_keys`): every scope.
    ConfigKey,
}

/// An authenticated caller.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct Principal {
    /// `None` for platform administrators.
    pub tenant: Option<String>,
    pub role: Option<Role>,
    pub scopes: Vec<Scope>,
    /// For the audit log: `user:<id>` or `key:<id>`.
    pub actor: String,
    pub credential: Credential,
}

impl Principal {
    pub fn is_platform(&self) -> bool {
        self.role == Some(Role::PlatformAdmin)
    }

    /// Whether the caller's role or scopes allow `access` (tenant ownership is checked separately).
    pub fn may(&self, access: Access) -> bool {
        match self.role {
            Some(role) => access.allows_role(role),
            None => access.allows_scopes(&self.scopes),
        }
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

/// An audit entry as the API shows it.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct AuditView {
    pub seq: i64,
    pub at_ms: i64,
    pub action: String,
    pub entry: serde_json::Value,
    pub hash: String,
}

/// The result of checking a chain.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct ChainCheck {
    pub tenant: String,
    pub entries: usize,
    pub intact: bool,
    /// The first entry that does not verify, and why.
    pub first_broken: Option<BrokenEntry>,
}

#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct BrokenEntry {
    pub seq: u64,
    pub reason: String,
}

impl From<AuditError> for BrokenEntry {
    fn from(e: AuditError) -> Self {
        match e {
            AuditError::Broken { seq, reason } => Self {
                seq,
                reason: reason.into(),
            },
            AuditError::Key => Self {
                seq: 0,
                reason: "the audit key is unusable".into(),
            },
        }
    }
}

#[derive(Debug, Clone)]
struct UserGate {
    disabled: bool,
}

#[derive(Debug, Clone)]
struct KeyRecord {
    tenant: String,
    digest: [u8; 32],
    scopes: Vec<Scope>,
    expires_ms: Option<i64>,
    revoked: bool,
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default()
}

fn sha256_hex(data: &[u8]) -> String {
    hex(&Sha256::digest(data))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex32(s: &str) -> Option<[u8; 32]> {
    let bytes: Vec<u8> = (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect::<Option<_>>()?;
    bytes.try_into().ok()
}

fn new_refresh_token() -> String {
    let mut bytes = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut bytes);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn per_minute(n: u32) -> Quota {
    Quota::per_minute(NonZeroU32::new(n.max(1)).unwrap_or(NonZeroU32::MIN))
}

pub struct Security {
    pub store: SecurityStore,
    settings: SecuritySettings,
    jwt: JwtKeys,
    pepper: Zeroizing<Vec<u8>>,
    audit_key: Zeroizing<Vec<u8>>,
    keyring: RwLock<Keyring>,
    revoked_sessions: DashMap<String, ()>,
    revoked_jti: DashMap<String, i64>,
    users: DashMap<String, UserGate>,
    keys: DashMap<String, KeyRecord>,
    suspended: DashMap<String, ()>,
    audit_lock: tokio::sync::Mutex<()>,
    /// Audit entries also go to the hot log tier when Redis is configured.
    logs: std::sync::OnceLock<crate::storage::logs::writer::LogWriter>,
    login_account: DefaultKeyedRateLimiter<String>,
    login_ip: DefaultKeyedRateLimiter<IpAddr>,
}

impl Security {
    /// Loads the secrets and the caches. `store` must be open.
    pub async fn start(settings: &Settings, store: SecurityStore) -> anyhow::Result<Arc<Self>> {
        let secrets = Secrets::load(&settings.security, &settings.storage.data_dir)?;
        let cfg = settings.security.clone();
        let mut jwt_keys = secrets.jwt.iter();
        let (kid, secret) = jwt_keys
            .next()
            .ok_or_else(|| anyhow::anyhow!("no JWT signing key"))?;
        let mut jwt = JwtKeys::new(&cfg.issuer, &cfg.audience, kid, secret, cfg.access_ttl_secs);
        for (kid, secret) in jwt_keys {
            jwt.add_key(kid, secret, false);
        }
        let this = Self {
            store,
            jwt,
            pepper: secrets.pepper,
            audit_key: secrets.audit_key,
            keyring: RwLock::new(secrets.data_keys),
            revoked_sessions: DashMap::new(),
            revoked_jti: DashMap::new(),
            users: DashMap::new(),
            keys: DashMap::new(),
            suspended: DashMap::new(),
            audit_lock: tokio::sync::Mutex::new(()),
            logs: std::sync::OnceLock::new(),
            login_account: governor::RateLimiter::keyed(per_minute(cfg.login_per_account_per_min)),
            login_ip: governor::RateLimiter::keyed(per_minute(cfg.login_per_ip_per_min)),
            settings: cfg,
        };
        this.reload().await?;
        Ok(Arc::new(this))
    }

    /// Refills the caches from the store.
    pub async fn reload(&self) -> Result<(), StorageError> {
        let now = now_ms();
        for u in self.store.all_users().await? {
            self.users.insert(
                u.id.clone(),
                UserGate {
                    disabled: u.disabled != 0,
                },
            );
        }
        for k in self.store.keys().await? {
            self.cache_key(&k);
        }
        // Sessions revoked longer ago than an access token lives can no longer be presented.
        let horizon = now - (self.settings.access_ttl_secs as i64 + 60) * 1000;
        let (sessions, tokens) = self.store.revocations(horizon, now).await?;
        for s in sessions {
            self.revoked_sessions.insert(s, ());
        }
        for (jti, exp) in tokens {
            self.revoked_jti.insert(jti, exp);
        }
        let tenants = self.store.tenants().await?;
        self.suspended
            .retain(|id, _| tenants.iter().any(|t| &t.id == id && t.suspended != 0));
        for t in tenants {
            if t.suspended != 0 {
                self.suspended.insert(t.id, ());
            }
        }
        Ok(())
    }

    /// Reloads the caches every `security.cache_refresh_ms` while the service lives, so what another trellis
    /// node changed (a revoked session or key, a disabled user, a suspension) is enforced here within that
    /// time.
    /// A supervised task (`security.refresh`), recorded in `events`; it ends with the service.
    pub fn refresh_periodically(this: &Arc<Self>, events: Option<crate::actors::events::EventLog>) {
        let every = std::time::Duration::from_millis(this.settings.cache_refresh_ms.max(100));
        crate::actors::task::spawn_supervised(
            "security.refresh",
            events,
            Arc::downgrade(this),
            move |weak| async move {
                let weak = weak.lock().await.clone();
                loop {
                    tokio::time::sleep(every).await;
                    let Some(security) = weak.upgrade() else {
                        return;
                    };
                    crate::actors::task::fault_point("security.refresh");
                    if let Err(e) = security.reload().await {
                        tracing::warn!(error = %e, "refreshing the security caches failed; retrying");
                    }
                }
            },
        );
    }

    fn cache_key(&self, k: &ApiKeyRow) {
        if let Some(digest) = unhex32(&k.digest) {
            self.keys.insert(
                k.id.clone(),
                KeyRecord {
                    tenant: k.tenant_id.clone(),
                    digest,
                    scopes: k.scopes.split(' ').filter_map(Scope::parse).collect(),
                    expires_ms: k.expires_ms,
                    revoked: k.revoked_ms.is_some(),
                },
            );
        }
    }

    /// Sends audit entries to the hot log tier too.
    pub fn set_log_writer(&self, logs: crate::storage::logs::writer::LogWriter) {
        let _ = self.logs.set(logs);
    }

    pub fn set_suspended(&self, tenant: &str, suspended: bool) {
        if suspended {
            self.suspended.insert(tenant.to_owned(), ());
        } else {
            self.suspended.remove(tenant);
        }
    }

    pub fn is_suspended(&self, tenant: &str) -> bool {
        self.suspended.contains_key(tenant)
    }

    pub fn access_ttl_secs(&self) -> u64 {
        self.settings.access_ttl_secs
    }

    // -- authentication -----------------------------------------------------------------------------------

    /// A bearer credential: an access token, or an API key (`trk_…`).
    pub fn authenticate(&self, credential: &str) -> Result<Principal, AuthError> {
        let credential = credential.trim();
        if credential.starts_with("trk_") || !credential.contains('.') {
            return self.authenticate_key(credential);
        }
        let claims = self.jwt.verify(credential).map_err(|e| {
            AuthError::Unauthenticated(match e {
                JwtError::Malformed => "the access token is malformed".into(),
                JwtError::UnknownKey => "the access token's key is unknown".into(),
                JwtError::Invalid(why) if why.contains("ExpiredSignature") => {
                    "the access token has expired".into()
                }
                JwtError::Invalid(_) => "the access token is invalid".into(),
            })
        })?;
        self.check_claims(&claims)
    }

    fn check_claims(&self, c: &Claims) -> Result<Principal, AuthError> {
        let revoked = || AuthError::Unauthenticated("the access token has been revoked".into());
        if self.revoked_jti.contains_key(&c.jti) || self.revoked_sessions.contains_key(&c.sid) {
            return Err(revoked());
        }
        match self.users.get(&c.sub) {
            Some(g) if !g.disabled => {}
            _ => return Err(revoked()),
        }
        let role = Role::parse(&c.role)
            .ok_or_else(|| AuthError::Unauthenticated("the access token is invalid".into()))?;
        let tenant = (!c.tid.is_empty()).then(|| c.tid.clone());
        if let Some(t) = &tenant {
            if self.is_suspended(t) {
                return Err(AuthError::Forbidden(format!("tenant `{t}` is suspended")));
            }
        }
        Ok(Principal {
            tenant,
            role: Some(role),
            scopes: Vec::new(),
            actor: format!("user:{}", c.sub),
            credential: Credential::User {
                user_id: c.sub.clone(),
                sid: c.sid.clone(),
                jti: c.jti.clone(),
                exp: c.exp,
            },
        })
    }

    /// Whether a principal authenticated earlier may still act: its session, token or key not revoked or
    /// expired, its user not disabled, its tenant not suspended — what [`Self::authenticate`] would check
    /// now, by the ids the principal carries. Long-lived connections ask it periodically, so revoking a key
    /// or suspending a tenant also ends the streams already open (here, and on other nodes once their caches
    /// refresh).
    pub fn still_valid(&self, p: &Principal) -> Result<(), AuthError> {
        let revoked =
            |what: &str| AuthError::Unauthenticated(format!("the {what} has been revoked"));
        match &p.credential {
            Credential::User {
                user_id, sid, jti, ..
            } => {
                if self.revoked_jti.contains_key(jti) || self.revoked_sessions.contains_key(sid) {
                    return Err(revoked("access token"));
                }
                if self.users.get(user_id).is_none_or(|g| g.disabled) {
                    return Err(AuthError::Unauthenticated("the user is disabled".into()));
                }
            }
            Credential::Key { key_id } => match self.keys.get(key_id).map(|r| r.clone()) {
                Some(rec) if rec.revoked => return Err(revoked("API key")),
                Some(rec) if rec.expires_ms.is_some_and(|e| e <= now_ms()) => {
                    return Err(AuthError::Unauthenticated("the API key has expired".into()))
                }
                Some(_) => {}
                None => return Err(revoked("API key")),
            },
            Credential::ConfigKey => {}
        }
        match &p.tenant {
            Some(t) if self.is_suspended(t) => {
                Err(AuthError::Forbidden(format!("tenant `{t}` is suspended")))
            }
            _ => Ok(()),
        }
    }

    /// A stored API key, by its id and the digest of its secret. (Keys listed in configuration are the
    /// runtime's: see `http::api::authenticate`.)
    pub fn authenticate_key(&self, key: &str) -> Result<Principal, AuthError> {
        let unknown = || AuthError::Unauthenticated("unknown or revoked API key".into());
        if let Some((id, secret)) = api_keys::parse(key) {
            if let Some(rec) = self.keys.get(id).map(|r| r.clone()) {
                if !api_keys::matches(&self.pepper, secret, &rec.digest) {
                    return Err(unknown());
                }
                if rec.revoked {
                    return Err(AuthError::Unauthenticated("the API key is revoked".into()));
                }
                if rec.expires_ms.is_some_and(|e| e <= now_ms()) {
                    return Err(AuthError::Unauthenticated("the API key has expired".into()));
                }
                if self.is_suspended(&rec.tenant) {
                    return Err(AuthError::Forbidden(format!(
                        "tenant `{}` is suspended",
                        rec.tenant
                    )));
                }
                return Ok(Principal {
                    tenant: Some(rec.tenant.clone()),
                    role: None,
                    scopes: rec.scopes.clone(),
                    actor: format!("key:{id}"),
                    credential: Credential::Key {
                        key_id: id.to_owned(),
                    },
                });
            }
        }
        Err(unknown())
    }

    // -- login, refresh, logout ---------------------------------------------------------------------------

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

    // -- users --------------------------------------------------------------------------------------------

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

    // -- API keys -----------------------------------------------------------------------------------------

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

    // -- MT5 accounts -------------------------------------------------------------------------------------

    fn field<'a>(tenant: &'a str, login: &'a str) -> FieldRef<'a> {
        FieldRef {
            table: "mt5_accounts",
            column: "password",
            tenant,
            row_id: login,
        }
    }

    fn keyring(&self) -> std::sync::RwLockReadGuard<'_, Keyring> {
        self.keyring.read().unwrap_or_else(|p| p.into_inner())
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

    fn model_field<'a>(tenant: &'a str, name_version: &'a str) -> FieldRef<'a> {
        FieldRef {
            table: "model_versions",
            column: "file",
            tenant,
            row_id: name_version,
        }
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
        let ring = self.keyring();
        let blob = ring.encrypt(Self::model_field(tenant, &id), bytes)?;
        Ok((
            base64::engine::general_purpose::STANDARD.encode(blob),
            i64::from(ring.primary()),
        ))
    }

    /// A stored model file, decrypted; fails if the ciphertext does not belong to this tenant and version.
    pub fn decrypt_model_file(&self, row: &ModelFileRow) -> Result<Zeroizing<Vec<u8>>, AuthError> {
        let blob = base64::engine::general_purpose::STANDARD
            .decode(&row.file_enc)
            .map_err(|_| AuthError::Internal("a stored ciphertext is not base64".into()))?;
        let id = format!("{}:{}", row.name, row.version);
        Ok(self
            .keyring()
            .decrypt(Self::model_field(&row.tenant_id, &id), &blob)?)
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

    // -- audit --------------------------------------------------------------------------------------------

    /// Appends to `tenant`'s chain (`platform` for platform events). Never pass secrets in `detail`.
    pub async fn audit(
        &self,
        tenant: &str,
        action: &str,
        actor: &str,
        detail: serde_json::Value,
    ) -> Result<(), StorageError> {
        let _guard = self.audit_lock.lock().await;
        let mut attempt = 0;
        loop {
            let at_ms = now_ms();
            let last = self.store.last_audit(tenant).await?.map(|r| Entry {
                seq: r.seq as u64,
                body: serde_json::Value::Null,
                hash: r.hash,
            });
            let body = json!({"action": action, "actor": actor, "at_ms": at_ms, "tenant": tenant, "detail": detail});
            let entry = audit::append(&self.audit_key, last.as_ref(), body)
                .map_err(|e| StorageError::Rejected(e.to_string()))?;
            let row = AuditRow {
                tenant_id: tenant.to_owned(),
                seq: entry.seq as i64,
                at_ms,
                action: action.to_owned(),
                body: entry.body.to_string(),
                hash: entry.hash,
            };
            match self.store.insert_audit(&row).await {
                // Another node appended the same sequence number first: chain after its entry.
                Err(StorageError::Rejected(_)) if attempt < 3 => attempt += 1,
                Ok(()) => {
                    if let Some(logs) = self.logs.get() {
                        // The whole entry, hash included: the chain can be checked from the log tiers.
                        logs.push(
                            tenant,
                            "audit",
                            "info",
                            action,
                            json!({"seq": row.seq, "entry": entry.body, "hash": row.hash}),
                        );
                    }
                    return Ok(());
                }
                other => return other,
            }
        }
    }

    pub async fn audit_entries(
        &self,
        tenant: &str,
        filter: &AuditFilter,
    ) -> Result<Vec<AuditView>, AuthError> {
        Ok(self
            .store
            .audit(tenant, filter)
            .await?
            .into_iter()
            .map(|r| AuditView {
                seq: r.seq,
                at_ms: r.at_ms,
                action: r.action,
                entry: serde_json::from_str(&r.body).unwrap_or(serde_json::Value::Null),
                hash: r.hash,
            })
            .collect())
    }

    /// Checks `tenant`'s whole chain and names the first entry that does not verify.
    pub async fn verify_audit(&self, tenant: &str) -> Result<ChainCheck, AuthError> {
        let rows = self.store.audit_chain(tenant).await?;
        let mut entries = Vec::with_capacity(rows.len());
        let mut broken = None;
        for r in &rows {
            let body: serde_json::Value = match serde_json::from_str(&r.body) {
                Ok(b) => b,
                Err(_) => {
                    broken.get_or_insert(BrokenEntry {
                        seq: r.seq as u64,
                        reason: "content is not valid JSON".into(),
                    });
                    serde_json::Value::Null
                }
            };
            if broken.is_none() && (body["action"] != r.action.as_str() || body["at_ms"] != r.at_ms)
            {
                broken = Some(BrokenEntry {
                    seq: r.seq as u64,
                    reason: "indexed columns do not match the hashed content".into(),
                });
            }
            entries.push(Entry {
                seq: r.seq as u64,
                body,
                hash: r.hash.clone(),
            });
        }
        let chain = audit::verify(&self.audit_key, &entries)
            .err()
            .map(BrokenEntry::from);
        let first_broken = match (broken, chain) {
            (Some(a), Some(b)) => Some(if a.seq <= b.seq { a } else { b }),
            (a, b) => a.or(b),
        };
        Ok(ChainCheck {
            tenant: tenant.to_owned(),
            entries: rows.len(),
            intact: first_broken.is_none(),
            first_broken,
        })
    }

    /// Checks a copy of `tenant`'s chain kept elsewhere (the log tiers), with the same key: in sequence from
    /// the first entry, every hash matching its content, and as long as the stored chain.
    pub async fn verify_audit_copy(
        &self,
        tenant: &str,
        mut entries: Vec<Entry>,
    ) -> Result<ChainCheck, AuthError> {
        entries.sort_by_key(|e| e.seq);
        entries.dedup_by_key(|e| e.seq);
        let stored = self.store.audit_chain(tenant).await?.len();
        let mut first_broken = audit::verify(&self.audit_key, &entries)
            .err()
            .map(BrokenEntry::from);
        if first_broken.is_none() && entries.len() < stored {
            first_broken = Some(BrokenEntry {
                seq: entries.len() as u64 + 1,
                reason: format!(
                    "missing from the log tiers ({} of {stored} entries there)",
                    entries.len()
                ),
            });
        }
        Ok(ChainCheck {
            tenant: tenant.to_owned(),
            entries: entries.len(),
            intact: first_broken.is_none(),
            first_broken,
        })
    }

    /// A MAC over `data` with the audit key, for tokens trellis hands out and must recognise (log cursors).
    pub fn mac(&self, purpose: &str, data: &[u8]) -> String {
        use hmac::Mac;
        let Ok(mut mac) = <hmac::Hmac<sha2::Sha256> as Mac>::new_from_slice(&self.audit_key) else {
            return String::new();
        };
        mac.update(purpose.as_bytes());
        mac.update(&[0]);
        mac.update(data);
        mac.finalize()
            .into_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    /// Creates the first platform administrator if there is none. Answers the generated password when one
    /// was generated (to print once).
    pub async fn bootstrap(
        &self,
        settings: &Settings,
    ) -> Result<Option<(String, String)>, AuthError> {
        if self.store.has_platform_admin().await? {
            return Ok(None);
        }
        let b = &settings.bootstrap;
        if !b.admin_email.trim().is_empty() {
            if b.admin_password.chars().count() < 12 {
                return Err(AuthError::Invalid(
                    "bootstrap.admin_password: must have at least 12 characters".into(),
                ));
            }
            self.create_user(
                None,
                &b.admin_email,
                &b.admin_password,
                Role::PlatformAdmin,
                "bootstrap",
            )
            .await?;
            tracing::info!(email = %b.admin_email.trim(), "platform administrator created");
            return Ok(None);
        }
        if !b.generate_admin {
            return Ok(None);
        }
        let password = api_keys::generate(&self.pepper)
            .map_err(|e| AuthError::Internal(e.to_string()))?
            .full
            .split_off(13);
        let email = "admin@localhost".to_owned();
        self.create_user(None, &email, &password, Role::PlatformAdmin, "bootstrap")
            .await?;
        Ok(Some((email, password)))
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
}
