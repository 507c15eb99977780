//! Authentication, sessions, API keys, MT5 credentials and the audit log, over the security store.
//!
//! This file holds the service, its caches and the checks every request makes; each concern that changes
//! stored state has its own file: `signin` (login, refresh, logout), `users`, `keys`, `accounts` (MT5
//! passwords), `model_files`, `audit_log`, `rotation` (data keys).
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
use crate::domain::{hex, now_ms};
use crate::storage::security::{
    ApiKeyRow, AuditFilter, AuditRow, ModelFileRow, Mt5AccountRow, Rotation, SecurityStore,
    SessionRow, UserRow,
};
use crate::storage::StorageError;

mod accounts;
mod audit_log;
mod keys;
mod model_files;
mod rotation;
mod signin;
mod users;

pub use audit_log::{AuditView, BrokenEntry, ChainCheck};
pub use keys::KeyView;
pub use model_files::RegistryFiles;
pub use rotation::{rotate_data_keys, KeyRotation};
pub use signin::TokenPair;
pub use users::UserView;

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

fn sha256_hex(data: &[u8]) -> String {
    hex(&Sha256::digest(data))
}

fn unhex32(s: &str) -> Option<[u8; 32]> {
    let bytes: Vec<u8> = (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect::<Option<_>>()?;
    bytes.try_into().ok()
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
    pub fn refresh_periodically(
        this: &Arc<Self>,
        events: Option<crate::runtime::events::EventLog>,
    ) {
        let every = std::time::Duration::from_millis(this.settings.cache_refresh_ms.max(100));
        crate::runtime::task::spawn_supervised(
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
                    crate::runtime::task::fault_point("security.refresh");
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

    // -- users --------------------------------------------------------------------------------------------

    // -- API keys -----------------------------------------------------------------------------------------

    // -- MT5 accounts -------------------------------------------------------------------------------------

    fn keyring(&self) -> std::sync::RwLockReadGuard<'_, Keyring> {
        self.keyring.read().unwrap_or_else(|p| p.into_inner())
    }

    // -- audit --------------------------------------------------------------------------------------------

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
