//! The security store: tenants as managed through the admin API, users, sessions and refresh tokens, API
//! keys, MT5 accounts and the audit log (`migrations/sqlite/security`).
//!
//! Unlike the trading stores this is not an actor: every HTTP request authenticates, so reads must run
//! concurrently, and each statement is one short query or one transaction on a pool — the pool is the
//! concurrency control and a failed query fails only its request (as `Unavailable`, 503 + `Retry-After`).
//! The statements are written once in the SQL that SQLite and PostgreSQL share (`$n` parameters, TEXT and
//! BIGINT columns, hashes in hex, ciphertexts in base64) and run through sqlx's `Any` driver.
//!
//! Refresh-token rotation is one transaction whose `UPDATE … WHERE used_ms IS NULL` decides the race: of two
//! concurrent uses of one token exactly one rotates, the other is a reuse.

use std::path::Path;
use std::time::Duration;

use sqlx::any::AnyPoolOptions;
use sqlx::migrate::Migrator;
use sqlx::{Any, AnyPool, FromRow, Transaction};

use super::StorageError;

static MIGRATOR: Migrator = sqlx::migrate!("./migrations/sqlite/security");

/// The migrations of this store.
pub fn migrator() -> &'static Migrator {
    &MIGRATOR
}

/// How a refresh token fared.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rotation {
    /// Rotated: the session continues with the new token.
    Rotated(SessionRow),
    /// Already rotated within the grace window (a client that lost the answer): refused, nothing revoked.
    RecentlyUsed,
    /// Used again after the grace window: the session (the whole family) is now revoked.
    Reused { session: SessionRow },
    /// Unknown, or its session is revoked or expired.
    Invalid,
}

#[derive(Debug, Clone, PartialEq, Eq, FromRow)]
pub struct TenantRow {
    pub id: String,
    pub settings: String,
    pub tier: String,
    pub suspended: i64,
    pub created_ms: i64,
    pub updated_ms: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, FromRow)]
pub struct UserRow {
    pub id: String,
    pub tenant_id: Option<String>,
    pub email: String,
    pub password_hash: String,
    pub role: String,
    pub disabled: i64,
    pub valid_after_ms: i64,
    pub failed_logins: i64,
    pub locked_until_ms: i64,
    pub created_ms: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, FromRow)]
pub struct SessionRow {
    pub id: String,
    pub user_id: String,
    pub tenant_id: Option<String>,
    pub created_ms: i64,
    pub last_used_ms: i64,
    pub revoked_ms: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Eq, FromRow)]
pub struct ApiKeyRow {
    pub id: String,
    pub tenant_id: String,
    pub name: String,
    pub digest: String,
    pub scopes: String,
    pub created_ms: i64,
    pub expires_ms: Option<i64>,
    pub revoked_ms: Option<i64>,
    pub rolled_to: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, FromRow)]
pub struct Mt5AccountRow {
    pub tenant_id: String,
    pub login: i64,
    pub server: String,
    pub password_enc: String,
    pub key_version: i64,
    pub created_ms: i64,
}

/// A registered model name.
#[derive(Debug, Clone, PartialEq, Eq, FromRow, serde::Serialize)]
pub struct ModelRow {
    pub tenant_id: String,
    pub name: String,
    pub description: String,
    pub created_ms: i64,
}

/// A stored model version (without its file).
#[derive(Debug, Clone, PartialEq, Eq, FromRow, serde::Serialize)]
pub struct ModelVersionRow {
    pub tenant_id: String,
    pub name: String,
    pub version: String,
    pub manifest: String,
    pub key_version: i64,
    pub size_bytes: i64,
    pub created_ms: i64,
}

/// A model version's encrypted file.
#[derive(Debug, Clone, PartialEq, Eq, FromRow)]
pub struct ModelFileRow {
    pub tenant_id: String,
    pub name: String,
    pub version: String,
    pub file_enc: String,
    pub key_version: i64,
}

/// A stored version of a tenant's strategy module (without its bytes).
#[derive(Debug, Clone, PartialEq, Eq, FromRow, serde::Serialize)]
pub struct ModuleVersionRow {
    pub tenant_id: String,
    pub name: String,
    pub version: String,
    pub manifest: String,
    pub key_version: i64,
    pub size_bytes: i64,
    pub created_ms: i64,
}

/// A strategy module version's encrypted bytes.
#[derive(Debug, Clone, PartialEq, Eq, FromRow)]
pub struct ModuleFileRow {
    pub tenant_id: String,
    pub name: String,
    pub version: String,
    pub manifest: String,
    pub file_enc: String,
    pub key_version: i64,
}

/// Where an alias pointed, from when until when (`to_ms` is empty while it still does).
#[derive(Debug, Clone, PartialEq, Eq, FromRow, serde::Serialize)]
pub struct AliasRow {
    pub alias: String,
    pub seq: i64,
    pub version: String,
    pub from_ms: i64,
    pub to_ms: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Eq, FromRow)]
pub struct AuditRow {
    pub tenant_id: String,
    pub seq: i64,
    pub at_ms: i64,
    pub action: String,
    pub body: String,
    pub hash: String,
}

/// Filters of an audit query.
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    pub action: Option<String>,
    pub from_ms: Option<i64>,
    pub to_ms: Option<i64>,
    pub after_seq: Option<i64>,
    pub limit: i64,
}

/// Whose rows a transaction may see on PostgreSQL (row-level security; SQLite has one tenant per file
/// anyway, and the same statements run there unscoped).
#[derive(Debug, Clone, Copy)]
pub enum Scope<'a> {
    /// The authentication layer's cross-tenant work: logins by email, caches, rotation.
    Platform,
    /// One tenant's rows only.
    Tenant(&'a str),
}

#[derive(Clone)]
pub struct SecurityStore {
    pool: AnyPool,
    postgres: bool,
}

impl SecurityStore {
    /// The store the settings choose: PostgreSQL (as the application role) when `storage.postgres_url` is
    /// set, else the embedded `<data_dir>/security.db`.
    pub async fn for_settings(
        storage: &crate::config::StorageSettings,
    ) -> Result<Self, StorageError> {
        match storage.postgres_url.trim() {
            "" => Self::open_embedded(&storage.data_dir).await,
            url => Self::open(url).await,
        }
    }

    /// Opens the embedded store (`<dir>/security.db`, created if missing) and applies its migrations.
    pub async fn open_embedded(dir: &Path) -> Result<Self, StorageError> {
        std::fs::create_dir_all(dir).map_err(|e| {
            StorageError::Unavailable(format!("cannot create {}: {e}", dir.display()))
        })?;
        let url = format!("sqlite://{}?mode=rwc", dir.join("security.db").display());
        Self::open(&url).await
    }

    /// Opens any supported URL: `sqlite://…` (migrated here) or `postgres://…` as the application role.
    pub async fn open(url: &str) -> Result<Self, StorageError> {
        sqlx::any::install_default_drivers();
        let sqlite = url.starts_with("sqlite:");
        let pool = AnyPoolOptions::new()
            .max_connections(if sqlite { 4 } else { 8 })
            .acquire_timeout(Duration::from_secs(5))
            .after_connect(move |conn, _| {
                Box::pin(async move {
                    if sqlite {
                        sqlx::query("PRAGMA journal_mode = WAL")
                            .execute(&mut *conn)
                            .await?;
                        sqlx::query("PRAGMA busy_timeout = 5000")
                            .execute(&mut *conn)
                            .await?;
                        sqlx::query("PRAGMA foreign_keys = ON")
                            .execute(&mut *conn)
                            .await?;
                    }
                    Ok(())
                })
            })
            .connect(url)
            .await?;
        if sqlite {
            MIGRATOR.run(&pool).await.map_err(|e| {
                StorageError::Unavailable(format!("migrating the security store: {e}"))
            })?;
        }
        // On PostgreSQL the owner applied migrations/postgres (`trellis migrate`); the application role
        // cannot create tables.
        Ok(Self {
            pool,
            postgres: !sqlite,
        })
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// A transaction scoped as `scope` says (`set_config(…, true)` lasts until it ends).
    async fn begin(&self, scope: Scope<'_>) -> Result<Transaction<'static, Any>, StorageError> {
        let mut tx = self.pool.begin().await?;
        if self.postgres {
            match scope {
                Scope::Platform => {
                    sqlx::query("SELECT set_config('app.scope', 'platform', true)")
                        .execute(&mut *tx)
                        .await?;
                }
                Scope::Tenant(t) => {
                    sqlx::query("SELECT set_config('app.tenant_id', $1, true)")
                        .bind(t)
                        .execute(&mut *tx)
                        .await?;
                }
            }
        }
        Ok(tx)
    }

    // -- tenants ------------------------------------------------------------------------------------------

    /// Stores a tenant unless it exists; answers the stored row either way.
    pub async fn seed_tenant(&self, row: &TenantRow) -> Result<TenantRow, StorageError> {
        let mut tx = self.begin(Scope::Platform).await?;
        sqlx::query(
            "INSERT INTO tenant_registry (id, settings, tier, suspended, created_ms, updated_ms)
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (id) DO NOTHING",
        )
        .bind(&row.id)
        .bind(&row.settings)
        .bind(&row.tier)
        .bind(row.suspended)
        .bind(row.created_ms)
        .bind(row.updated_ms)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        self.tenant(&row.id)
            .await?
            .ok_or_else(|| StorageError::Unavailable("tenant vanished after insert".into()))
    }

    /// Inserts a new tenant; `Rejected` if the id is taken.
    pub async fn insert_tenant(&self, row: &TenantRow) -> Result<(), StorageError> {
        let mut tx = self.begin(Scope::Platform).await?;
        sqlx::query(
            "INSERT INTO tenant_registry (id, settings, tier, suspended, created_ms, updated_ms)
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&row.id)
        .bind(&row.settings)
        .bind(&row.tier)
        .bind(row.suspended)
        .bind(row.created_ms)
        .bind(row.updated_ms)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn update_tenant(&self, row: &TenantRow) -> Result<(), StorageError> {
        let mut tx = self.begin(Scope::Tenant(&row.id)).await?;
        sqlx::query(
            "UPDATE tenant_registry SET settings = $2, tier = $3, suspended = $4, updated_ms = $5
             WHERE id = $1",
        )
        .bind(&row.id)
        .bind(&row.settings)
        .bind(&row.tier)
        .bind(row.suspended)
        .bind(row.updated_ms)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn tenant(&self, id: &str) -> Result<Option<TenantRow>, StorageError> {
        let mut tx = self.begin(Scope::Tenant(id)).await?;
        Ok(
            sqlx::query_as::<_, TenantRow>("SELECT * FROM tenant_registry WHERE id = $1")
                .bind(id)
                .fetch_optional(&mut *tx)
                .await?,
        )
    }

    pub async fn tenants(&self) -> Result<Vec<TenantRow>, StorageError> {
        let mut tx = self.begin(Scope::Platform).await?;
        Ok(
            sqlx::query_as::<_, TenantRow>("SELECT * FROM tenant_registry ORDER BY id")
                .fetch_all(&mut *tx)
                .await?,
        )
    }

    // -- users --------------------------------------------------------------------------------------------

    pub async fn insert_user(&self, u: &UserRow) -> Result<(), StorageError> {
        let mut tx = self
            .begin(
                u.tenant_id
                    .as_deref()
                    .map_or(Scope::Platform, Scope::Tenant),
            )
            .await?;
        sqlx::query(
            "INSERT INTO users (id, tenant_id, email, password_hash, role, disabled, valid_after_ms,
                                failed_logins, locked_until_ms, created_ms)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        )
        .bind(&u.id)
        .bind(&u.tenant_id)
        .bind(&u.email)
        .bind(&u.password_hash)
        .bind(&u.role)
        .bind(u.disabled)
        .bind(u.valid_after_ms)
        .bind(u.failed_logins)
        .bind(u.locked_until_ms)
        .bind(u.created_ms)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn user_by_email(&self, email: &str) -> Result<Option<UserRow>, StorageError> {
        let mut tx = self.begin(Scope::Platform).await?;
        Ok(
            sqlx::query_as::<_, UserRow>("SELECT * FROM users WHERE email = $1")
                .bind(email)
                .fetch_optional(&mut *tx)
                .await?,
        )
    }

    pub async fn user(&self, id: &str) -> Result<Option<UserRow>, StorageError> {
        let mut tx = self.begin(Scope::Platform).await?;
        Ok(
            sqlx::query_as::<_, UserRow>("SELECT * FROM users WHERE id = $1")
                .bind(id)
                .fetch_optional(&mut *tx)
                .await?,
        )
    }

    pub async fn users_of(&self, tenant: &str) -> Result<Vec<UserRow>, StorageError> {
        let mut tx = self.begin(Scope::Tenant(tenant)).await?;
        Ok(sqlx::query_as::<_, UserRow>(
            "SELECT * FROM users WHERE tenant_id = $1 ORDER BY created_ms, id",
        )
        .bind(tenant)
        .fetch_all(&mut *tx)
        .await?)
    }

    pub async fn all_users(&self) -> Result<Vec<UserRow>, StorageError> {
        let mut tx = self.begin(Scope::Platform).await?;
        Ok(sqlx::query_as::<_, UserRow>("SELECT * FROM users")
            .fetch_all(&mut *tx)
            .await?)
    }

    pub async fn has_platform_admin(&self) -> Result<bool, StorageError> {
        let mut tx = self.begin(Scope::Platform).await?;
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM users WHERE role = 'platform_admin'")
            .fetch_one(&mut *tx)
            .await?;
        Ok(n > 0)
    }

    /// Role, disabled flag and "valid after" of a user, and revokes every session of the user.
    pub async fn update_user_access(
        &self,
        id: &str,
        role: &str,
        disabled: bool,
        valid_after_ms: i64,
        why: &str,
    ) -> Result<(), StorageError> {
        let mut tx = self.begin(Scope::Platform).await?;
        sqlx::query("UPDATE users SET role = $2, disabled = $3, valid_after_ms = $4 WHERE id = $1")
            .bind(id)
            .bind(role)
            .bind(i64::from(disabled))
            .bind(valid_after_ms)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "UPDATE auth_sessions SET revoked_ms = $2, revoked_why = $3
             WHERE user_id = $1 AND revoked_ms IS NULL",
        )
        .bind(id)
        .bind(valid_after_ms)
        .bind(why)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Records a failed login; answers the new count.
    pub async fn login_failed(&self, id: &str, locked_until_ms: i64) -> Result<(), StorageError> {
        let mut tx = self.begin(Scope::Platform).await?;
        sqlx::query(
            "UPDATE users SET failed_logins = failed_logins + 1, locked_until_ms = $2 WHERE id = $1",
        )
        .bind(id)
        .bind(locked_until_ms)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn login_succeeded(&self, id: &str) -> Result<(), StorageError> {
        let mut tx = self.begin(Scope::Platform).await?;
        sqlx::query("UPDATE users SET failed_logins = 0, locked_until_ms = 0 WHERE id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    // -- sessions and refresh tokens ----------------------------------------------------------------------

    /// A new session with its first refresh token.
    pub async fn create_session(
        &self,
        session: &SessionRow,
        token_hash: &str,
    ) -> Result<(), StorageError> {
        let mut tx = self.begin(Scope::Platform).await?;
        sqlx::query(
            "INSERT INTO auth_sessions (id, user_id, tenant_id, created_ms, last_used_ms)
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(&session.id)
        .bind(&session.user_id)
        .bind(&session.tenant_id)
        .bind(session.created_ms)
        .bind(session.last_used_ms)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO refresh_tokens (token_hash, session_id, created_ms) VALUES ($1, $2, $3)",
        )
        .bind(token_hash)
        .bind(&session.id)
        .bind(session.created_ms)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Rotates `old_hash` to `new_hash` in one transaction (see [`Rotation`]). `idle_ms` and `absolute_ms`
    /// bound the session's life; `grace_ms` is how long after a rotation a repeat is treated as a lost answer.
    pub async fn rotate_refresh(
        &self,
        old_hash: &str,
        new_hash: &str,
        now_ms: i64,
        idle_ms: i64,
        absolute_ms: i64,
        grace_ms: i64,
    ) -> Result<Rotation, StorageError> {
        let mut tx = self.begin(Scope::Platform).await?;
        let token: Option<(String, Option<i64>)> =
            sqlx::query_as("SELECT session_id, used_ms FROM refresh_tokens WHERE token_hash = $1")
                .bind(old_hash)
                .fetch_optional(&mut *tx)
                .await?;
        let Some((session_id, used_ms)) = token else {
            return Ok(Rotation::Invalid);
        };
        let Some(session) =
            sqlx::query_as::<_, SessionRow>("SELECT id, user_id, tenant_id, created_ms, last_used_ms, revoked_ms FROM auth_sessions WHERE id = $1")
                .bind(&session_id)
                .fetch_optional(&mut *tx)
                .await?
        else {
            return Ok(Rotation::Invalid);
        };
        if session.revoked_ms.is_some() {
            return Ok(Rotation::Invalid);
        }
        if let Some(used) = used_ms {
            if now_ms - used <= grace_ms {
                return Ok(Rotation::RecentlyUsed);
            }
            sqlx::query(
                "UPDATE auth_sessions SET revoked_ms = $2, revoked_why = 'refresh token reused'
                 WHERE id = $1",
            )
            .bind(&session.id)
            .bind(now_ms)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            return Ok(Rotation::Reused { session });
        }
        if now_ms - session.last_used_ms > idle_ms || now_ms - session.created_ms > absolute_ms {
            return Ok(Rotation::Invalid);
        }
        let claimed = sqlx::query(
            "UPDATE refresh_tokens SET used_ms = $2 WHERE token_hash = $1 AND used_ms IS NULL",
        )
        .bind(old_hash)
        .bind(now_ms)
        .execute(&mut *tx)
        .await?;
        if claimed.rows_affected() != 1 {
            return Ok(Rotation::RecentlyUsed);
        }
        sqlx::query(
            "INSERT INTO refresh_tokens (token_hash, session_id, created_ms) VALUES ($1, $2, $3)",
        )
        .bind(new_hash)
        .bind(&session.id)
        .bind(now_ms)
        .execute(&mut *tx)
        .await?;
        sqlx::query("UPDATE auth_sessions SET last_used_ms = $2 WHERE id = $1")
            .bind(&session.id)
            .bind(now_ms)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(Rotation::Rotated(session))
    }

    /// The unrevoked sessions of a user.
    pub async fn sessions_of(&self, user: &str) -> Result<Vec<String>, StorageError> {
        let mut tx = self.begin(Scope::Platform).await?;
        let rows: Vec<(String,)> = sqlx::query_as(
            "SELECT id FROM auth_sessions WHERE user_id = $1 AND revoked_ms IS NULL",
        )
        .bind(user)
        .fetch_all(&mut *tx)
        .await?;
        Ok(rows.into_iter().map(|(s,)| s).collect())
    }

    pub async fn revoke_session(
        &self,
        id: &str,
        now_ms: i64,
        why: &str,
        jti: Option<(&str, i64)>,
    ) -> Result<(), StorageError> {
        let mut tx = self.begin(Scope::Platform).await?;
        sqlx::query(
            "UPDATE auth_sessions SET revoked_ms = $2, revoked_why = $3
             WHERE id = $1 AND revoked_ms IS NULL",
        )
        .bind(id)
        .bind(now_ms)
        .bind(why)
        .execute(&mut *tx)
        .await?;
        if let Some((jti, expires_ms)) = jti {
            sqlx::query(
                "INSERT INTO revoked_tokens (jti, expires_ms) VALUES ($1, $2)
                 ON CONFLICT (jti) DO NOTHING",
            )
            .bind(jti)
            .bind(expires_ms)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Sessions revoked since `since_ms` (to refuse their access tokens) and unexpired revoked `jti`s.
    pub async fn revocations(
        &self,
        since_ms: i64,
        now_ms: i64,
    ) -> Result<(Vec<String>, Vec<(String, i64)>), StorageError> {
        let mut tx = self.begin(Scope::Platform).await?;
        let sessions: Vec<(String,)> =
            sqlx::query_as("SELECT id FROM auth_sessions WHERE revoked_ms >= $1")
                .bind(since_ms)
                .fetch_all(&mut *tx)
                .await?;
        let tokens: Vec<(String, i64)> =
            sqlx::query_as("SELECT jti, expires_ms FROM revoked_tokens WHERE expires_ms > $1")
                .bind(now_ms)
                .fetch_all(&mut *tx)
                .await?;
        Ok((sessions.into_iter().map(|(s,)| s).collect(), tokens))
    }

    // -- API keys -----------------------------------------------------------------------------------------

    pub async fn insert_key(&self, k: &ApiKeyRow) -> Result<(), StorageError> {
        let mut tx = self.begin(Scope::Tenant(&k.tenant_id)).await?;
        write_key(&mut tx, k).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Stores the new key of a roll and shortens the old one's life to the overlap, in one transaction.
    pub async fn roll_key(
        &self,
        old_id: &str,
        old_expires_ms: i64,
        new: &ApiKeyRow,
    ) -> Result<(), StorageError> {
        let mut tx = self.begin(Scope::Tenant(&new.tenant_id)).await?;
        write_key(&mut tx, new).await?;
        sqlx::query("UPDATE api_keys SET expires_ms = $2, rolled_to = $3 WHERE id = $1")
            .bind(old_id)
            .bind(old_expires_ms)
            .bind(&new.id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn revoke_key(
        &self,
        tenant: &str,
        id: &str,
        now_ms: i64,
    ) -> Result<(), StorageError> {
        let mut tx = self.begin(Scope::Tenant(tenant)).await?;
        sqlx::query("UPDATE api_keys SET revoked_ms = $2 WHERE id = $1 AND revoked_ms IS NULL")
            .bind(id)
            .bind(now_ms)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn keys(&self) -> Result<Vec<ApiKeyRow>, StorageError> {
        let mut tx = self.begin(Scope::Platform).await?;
        Ok(sqlx::query_as::<_, ApiKeyRow>("SELECT * FROM api_keys")
            .fetch_all(&mut *tx)
            .await?)
    }

    pub async fn keys_of(&self, tenant: &str) -> Result<Vec<ApiKeyRow>, StorageError> {
        let mut tx = self.begin(Scope::Tenant(tenant)).await?;
        Ok(sqlx::query_as::<_, ApiKeyRow>(
            "SELECT * FROM api_keys WHERE tenant_id = $1 ORDER BY created_ms, id",
        )
        .bind(tenant)
        .fetch_all(&mut *tx)
        .await?)
    }

    // -- MT5 accounts -------------------------------------------------------------------------------------

    pub async fn insert_account(&self, a: &Mt5AccountRow) -> Result<(), StorageError> {
        let mut tx = self.begin(Scope::Tenant(&a.tenant_id)).await?;
        sqlx::query(
            "INSERT INTO mt5_accounts (tenant_id, login, server, password_enc, key_version, created_ms)
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&a.tenant_id)
        .bind(a.login)
        .bind(&a.server)
        .bind(&a.password_enc)
        .bind(a.key_version)
        .bind(a.created_ms)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn accounts_of(&self, tenant: &str) -> Result<Vec<Mt5AccountRow>, StorageError> {
        let mut tx = self.begin(Scope::Tenant(tenant)).await?;
        Ok(sqlx::query_as::<_, Mt5AccountRow>(
            "SELECT * FROM mt5_accounts WHERE tenant_id = $1 ORDER BY login",
        )
        .bind(tenant)
        .fetch_all(&mut *tx)
        .await?)
    }

    pub async fn all_accounts(&self) -> Result<Vec<Mt5AccountRow>, StorageError> {
        let mut tx = self.begin(Scope::Platform).await?;
        Ok(
            sqlx::query_as::<_, Mt5AccountRow>("SELECT * FROM mt5_accounts")
                .fetch_all(&mut *tx)
                .await?,
        )
    }

    /// Replaces a stored password ciphertext (key rotation); only if it is still the one that was read.
    pub async fn reencrypt_account(
        &self,
        tenant: &str,
        login: i64,
        old_enc: &str,
        new_enc: &str,
        key_version: i64,
    ) -> Result<bool, StorageError> {
        let mut tx = self.begin(Scope::Platform).await?;
        let done = sqlx::query(
            "UPDATE mt5_accounts SET password_enc = $4, key_version = $5
             WHERE tenant_id = $1 AND login = $2 AND password_enc = $3",
        )
        .bind(tenant)
        .bind(login)
        .bind(old_enc)
        .bind(new_enc)
        .bind(key_version)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(done.rows_affected() == 1)
    }

    pub async fn delete_account(&self, tenant: &str, login: i64) -> Result<bool, StorageError> {
        let mut tx = self.begin(Scope::Tenant(tenant)).await?;
        let done = sqlx::query("DELETE FROM mt5_accounts WHERE tenant_id = $1 AND login = $2")
            .bind(tenant)
            .bind(login)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(done.rows_affected() == 1)
    }

    // -- model registry -----------------------------------------------------------------------------------

    /// Registers a model name; `Rejected` when the tenant has it already.
    pub async fn insert_model(&self, m: &ModelRow) -> Result<(), StorageError> {
        let mut tx = self.begin(Scope::Tenant(&m.tenant_id)).await?;
        sqlx::query(
            "INSERT INTO model_registry (tenant_id, name, description, created_ms) VALUES ($1, $2, $3, $4)",
        )
        .bind(&m.tenant_id)
        .bind(&m.name)
        .bind(&m.description)
        .bind(m.created_ms)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// A page of the tenant's models, by name, and how many there are.
    pub async fn models_of(
        &self,
        tenant: &str,
        limit: i64,
        offset: i64,
    ) -> Result<(Vec<ModelRow>, i64), StorageError> {
        let mut tx = self.begin(Scope::Tenant(tenant)).await?;
        let rows = sqlx::query_as::<_, ModelRow>(
            "SELECT * FROM model_registry WHERE tenant_id = $1 ORDER BY name LIMIT $2 OFFSET $3",
        )
        .bind(tenant)
        .bind(limit)
        .bind(offset)
        .fetch_all(&mut *tx)
        .await?;
        let (total,): (i64,) =
            sqlx::query_as("SELECT COUNT(*) FROM model_registry WHERE tenant_id = $1")
                .bind(tenant)
                .fetch_one(&mut *tx)
                .await?;
        Ok((rows, total))
    }

    pub async fn model(&self, tenant: &str, name: &str) -> Result<Option<ModelRow>, StorageError> {
        let mut tx = self.begin(Scope::Tenant(tenant)).await?;
        Ok(sqlx::query_as::<_, ModelRow>(
            "SELECT * FROM model_registry WHERE tenant_id = $1 AND name = $2",
        )
        .bind(tenant)
        .bind(name)
        .fetch_optional(&mut *tx)
        .await?)
    }

    /// Stores a version once: a second upload of the same file answers `false` and changes nothing.
    pub async fn insert_version(
        &self,
        v: &ModelVersionRow,
        file_enc: &str,
    ) -> Result<bool, StorageError> {
        let mut tx = self.begin(Scope::Tenant(&v.tenant_id)).await?;
        let done = sqlx::query(
            "INSERT INTO model_versions (tenant_id, name, version, manifest, file_enc, key_version, size_bytes, created_ms)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (tenant_id, name, version) DO NOTHING",
        )
        .bind(&v.tenant_id)
        .bind(&v.name)
        .bind(&v.version)
        .bind(&v.manifest)
        .bind(file_enc)
        .bind(v.key_version)
        .bind(v.size_bytes)
        .bind(v.created_ms)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(done.rows_affected() == 1)
    }

    pub async fn versions_of(
        &self,
        tenant: &str,
        name: &str,
    ) -> Result<Vec<ModelVersionRow>, StorageError> {
        let mut tx = self.begin(Scope::Tenant(tenant)).await?;
        Ok(sqlx::query_as::<_, ModelVersionRow>(
            "SELECT tenant_id, name, version, manifest, key_version, size_bytes, created_ms FROM model_versions
             WHERE tenant_id = $1 AND name = $2 ORDER BY created_ms, version",
        )
        .bind(tenant)
        .bind(name)
        .fetch_all(&mut *tx)
        .await?)
    }

    pub async fn model_file(
        &self,
        tenant: &str,
        name: &str,
        version: &str,
    ) -> Result<Option<ModelFileRow>, StorageError> {
        let mut tx = self.begin(Scope::Tenant(tenant)).await?;
        Ok(sqlx::query_as::<_, ModelFileRow>(
            "SELECT tenant_id, name, version, file_enc, key_version FROM model_versions
             WHERE tenant_id = $1 AND name = $2 AND version = $3",
        )
        .bind(tenant)
        .bind(name)
        .bind(version)
        .fetch_optional(&mut *tx)
        .await?)
    }

    /// Every stored model file (key rotation).
    pub async fn all_model_files(&self) -> Result<Vec<ModelFileRow>, StorageError> {
        let mut tx = self.begin(Scope::Platform).await?;
        Ok(sqlx::query_as::<_, ModelFileRow>(
            "SELECT tenant_id, name, version, file_enc, key_version FROM model_versions",
        )
        .fetch_all(&mut *tx)
        .await?)
    }

    /// Replaces a model file's ciphertext (key rotation); only if it is still the one that was read.
    pub async fn reencrypt_model_file(
        &self,
        row: &ModelFileRow,
        new_enc: &str,
        key_version: i64,
    ) -> Result<bool, StorageError> {
        let mut tx = self.begin(Scope::Platform).await?;
        let done = sqlx::query(
            "UPDATE model_versions SET file_enc = $5, key_version = $6
             WHERE tenant_id = $1 AND name = $2 AND version = $3 AND file_enc = $4",
        )
        .bind(&row.tenant_id)
        .bind(&row.name)
        .bind(&row.version)
        .bind(&row.file_enc)
        .bind(new_enc)
        .bind(key_version)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(done.rows_affected() == 1)
    }

    /// Deletes a version (the alias history that names it stays: it is history); `false` when there was no
    /// such version.
    pub async fn delete_version(
        &self,
        tenant: &str,
        name: &str,
        version: &str,
    ) -> Result<bool, StorageError> {
        let mut tx = self.begin(Scope::Tenant(tenant)).await?;
        let done = sqlx::query(
            "DELETE FROM model_versions WHERE tenant_id = $1 AND name = $2 AND version = $3",
        )
        .bind(tenant)
        .bind(name)
        .bind(version)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(done.rows_affected() == 1)
    }

    /// Stores a strategy module version once: a second upload of the same bytes under the same name
    /// answers `false` and changes nothing.
    pub async fn insert_module(
        &self,
        v: &ModuleVersionRow,
        file_enc: &str,
    ) -> Result<bool, StorageError> {
        let mut tx = self.begin(Scope::Tenant(&v.tenant_id)).await?;
        let done = sqlx::query(
            "INSERT INTO strategy_modules (tenant_id, name, version, manifest, file_enc, key_version, size_bytes, created_ms)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (tenant_id, name, version) DO NOTHING",
        )
        .bind(&v.tenant_id)
        .bind(&v.name)
        .bind(&v.version)
        .bind(&v.manifest)
        .bind(file_enc)
        .bind(v.key_version)
        .bind(v.size_bytes)
        .bind(v.created_ms)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(done.rows_affected() == 1)
    }

    /// Every strategy module version of `tenant`, by name, oldest first within a name.
    pub async fn modules_of(&self, tenant: &str) -> Result<Vec<ModuleVersionRow>, StorageError> {
        let mut tx = self.begin(Scope::Tenant(tenant)).await?;
        Ok(sqlx::query_as::<_, ModuleVersionRow>(
            "SELECT tenant_id, name, version, manifest, key_version, size_bytes, created_ms FROM strategy_modules
             WHERE tenant_id = $1 ORDER BY name, created_ms, version",
        )
        .bind(tenant)
        .fetch_all(&mut *tx)
        .await?)
    }

    pub async fn module_file(
        &self,
        tenant: &str,
        name: &str,
        version: &str,
    ) -> Result<Option<ModuleFileRow>, StorageError> {
        let mut tx = self.begin(Scope::Tenant(tenant)).await?;
        Ok(sqlx::query_as::<_, ModuleFileRow>(
            "SELECT tenant_id, name, version, manifest, file_enc, key_version FROM strategy_modules
             WHERE tenant_id = $1 AND name = $2 AND version = $3",
        )
        .bind(tenant)
        .bind(name)
        .bind(version)
        .fetch_optional(&mut *tx)
        .await?)
    }

    /// Every stored strategy module (key rotation).
    pub async fn all_module_files(&self) -> Result<Vec<ModuleFileRow>, StorageError> {
        let mut tx = self.begin(Scope::Platform).await?;
        Ok(sqlx::query_as::<_, ModuleFileRow>(
            "SELECT tenant_id, name, version, manifest, file_enc, key_version FROM strategy_modules",
        )
        .fetch_all(&mut *tx)
        .await?)
    }

    /// Replaces a module's ciphertext (key rotation); only if it is still the one that was read.
    pub async fn reencrypt_module_file(
        &self,
        row: &ModuleFileRow,
        new_enc: &str,
        key_version: i64,
    ) -> Result<bool, StorageError> {
        let mut tx = self.begin(Scope::Platform).await?;
        let done = sqlx::query(
            "UPDATE strategy_modules SET file_enc = $5, key_version = $6
             WHERE tenant_id = $1 AND name = $2 AND version = $3 AND file_enc = $4",
        )
        .bind(&row.tenant_id)
        .bind(&row.name)
        .bind(&row.version)
        .bind(&row.file_enc)
        .bind(new_enc)
        .bind(key_version)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(done.rows_affected() == 1)
    }

    /// Deletes a strategy module version; `false` when there was no such version.
    pub async fn delete_module(
        &self,
        tenant: &str,
        name: &str,
        version: &str,
    ) -> Result<bool, StorageError> {
        let mut tx = self.begin(Scope::Tenant(tenant)).await?;
        let done = sqlx::query(
            "DELETE FROM strategy_modules WHERE tenant_id = $1 AND name = $2 AND version = $3",
        )
        .bind(tenant)
        .bind(name)
        .bind(version)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(done.rows_affected() == 1)
    }

    /// Points `alias` at `version` from `at_ms`: the current pointing (if any) ends then, a new one begins.
    /// One transaction, so the history has no gap and no overlap.
    pub async fn move_alias(
        &self,
        tenant: &str,
        name: &str,
        alias: &str,
        version: &str,
        at_ms: i64,
    ) -> Result<Option<String>, StorageError> {
        let mut tx = self.begin(Scope::Tenant(tenant)).await?;
        let current: Option<(i64, String)> = sqlx::query_as(
            "SELECT seq, version FROM model_aliases
             WHERE tenant_id = $1 AND name = $2 AND alias = $3 AND to_ms IS NULL",
        )
        .bind(tenant)
        .bind(name)
        .bind(alias)
        .fetch_optional(&mut *tx)
        .await?;
        let next = current.as_ref().map_or(1, |c| c.0 + 1);
        if let Some((seq, _)) = &current {
            sqlx::query(
                "UPDATE model_aliases SET to_ms = $5
                 WHERE tenant_id = $1 AND name = $2 AND alias = $3 AND seq = $4",
            )
            .bind(tenant)
            .bind(name)
            .bind(alias)
            .bind(*seq)
            .bind(at_ms)
            .execute(&mut *tx)
            .await?;
        }
        sqlx::query(
            "INSERT INTO model_aliases (tenant_id, name, alias, seq, version, from_ms, to_ms)
             VALUES ($1, $2, $3, $4, $5, $6, NULL)",
        )
        .bind(tenant)
        .bind(name)
        .bind(alias)
        .bind(next)
        .bind(version)
        .bind(at_ms)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(current.map(|c| c.1))
    }

    /// Every alias pointing of a model, current and past, oldest first.
    pub async fn aliases_of(
        &self,
        tenant: &str,
        name: &str,
    ) -> Result<Vec<AliasRow>, StorageError> {
        let mut tx = self.begin(Scope::Tenant(tenant)).await?;
        Ok(sqlx::query_as::<_, AliasRow>(
            "SELECT alias, seq, version, from_ms, to_ms FROM model_aliases
             WHERE tenant_id = $1 AND name = $2 ORDER BY alias, seq",
        )
        .bind(tenant)
        .bind(name)
        .fetch_all(&mut *tx)
        .await?)
    }

    // -- audit log ----------------------------------------------------------------------------------------

    pub async fn last_audit(&self, tenant: &str) -> Result<Option<AuditRow>, StorageError> {
        let mut tx = self.begin(Scope::Tenant(tenant)).await?;
        Ok(sqlx::query_as::<_, AuditRow>(
            "SELECT * FROM audit_log WHERE tenant_id = $1 ORDER BY seq DESC LIMIT 1",
        )
        .bind(tenant)
        .fetch_optional(&mut *tx)
        .await?)
    }

    pub async fn insert_audit(&self, row: &AuditRow) -> Result<(), StorageError> {
        let mut tx = self.begin(Scope::Tenant(&row.tenant_id)).await?;
        sqlx::query(
            "INSERT INTO audit_log (tenant_id, seq, at_ms, action, body, hash)
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&row.tenant_id)
        .bind(row.seq)
        .bind(row.at_ms)
        .bind(&row.action)
        .bind(&row.body)
        .bind(&row.hash)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn audit(
        &self,
        tenant: &str,
        f: &AuditFilter,
    ) -> Result<Vec<AuditRow>, StorageError> {
        let mut tx = self.begin(Scope::Tenant(tenant)).await?;
        // Conditions are added only for the filters given, so no parameter's type has to be inferred from
        // NULL (which PostgreSQL refuses).
        let mut sql = String::from("SELECT * FROM audit_log WHERE tenant_id = $1 AND seq > $2");
        let mut n = 2;
        let mut next = |cond: &str| {
            n += 1;
            format!(" AND {cond} ${n}")
        };
        if f.action.is_some() {
            sql.push_str(&next("action ="));
        }
        if f.from_ms.is_some() {
            sql.push_str(&next("at_ms >="));
        }
        if f.to_ms.is_some() {
            sql.push_str(&next("at_ms <"));
        }
        sql.push_str(&format!(" ORDER BY seq LIMIT {}", f.limit.clamp(1, 1000)));
        let mut q = sqlx::query_as::<_, AuditRow>(&sql)
            .bind(tenant)
            .bind(f.after_seq.unwrap_or(0));
        if let Some(a) = &f.action {
            q = q.bind(a.clone());
        }
        if let Some(t) = f.from_ms {
            q = q.bind(t);
        }
        if let Some(t) = f.to_ms {
            q = q.bind(t);
        }
        Ok(q.fetch_all(&mut *tx).await?)
    }

    /// Every entry of a tenant's chain, in order, for verification.
    pub async fn audit_chain(&self, tenant: &str) -> Result<Vec<AuditRow>, StorageError> {
        let mut tx = self.begin(Scope::Tenant(tenant)).await?;
        Ok(sqlx::query_as::<_, AuditRow>(
            "SELECT * FROM audit_log WHERE tenant_id = $1 ORDER BY seq",
        )
        .bind(tenant)
        .fetch_all(&mut *tx)
        .await?)
    }
}

/// The one INSERT of an API key, inside the caller's transaction.
async fn write_key(conn: &mut sqlx::AnyConnection, k: &ApiKeyRow) -> Result<(), StorageError> {
    sqlx::query(
        "INSERT INTO api_keys (id, tenant_id, name, digest, scopes, created_ms, expires_ms,
                               revoked_ms, rolled_to)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    )
    .bind(&k.id)
    .bind(&k.tenant_id)
    .bind(&k.name)
    .bind(&k.digest)
    .bind(&k.scopes)
    .bind(k.created_ms)
    .bind(k.expires_ms)
    .bind(k.revoked_ms)
    .bind(&k.rolled_to)
    .execute(conn)
    .await?;
    Ok(())
}
