-- Security and administration (the same tables as migrations/sqlite/security, written in the SQL both
-- databases accept). Row-level security on every table: a transaction sees the rows of the tenant it set
-- (`app.tenant_id`) — or, for the authentication layer's cross-tenant work (finding a user by email at
-- login, loading revocations and key digests, rotating data keys), every row once it declared the platform
-- scope (`app.scope = 'platform'`). Tenant-scoped reads and writes (a tenant's users, keys, MT5 accounts,
-- audit chain) run with the tenant only, so a wrong WHERE clause cannot reach another tenant's rows.


CREATE TABLE IF NOT EXISTS tenant_registry (
    id            TEXT PRIMARY KEY,
    -- The tenant's settings (name, tier, symbols, risk limits, strategies) as JSON: what start-up runs.
    settings      TEXT NOT NULL,
    tier          TEXT NOT NULL,
    suspended     BIGINT NOT NULL DEFAULT 0,
    created_ms    BIGINT NOT NULL,
    updated_ms    BIGINT NOT NULL
);

CREATE TABLE IF NOT EXISTS users (
    id              TEXT PRIMARY KEY,
    -- NULL for platform administrators.
    tenant_id       TEXT,
    email           TEXT NOT NULL UNIQUE,
    password_hash   TEXT NOT NULL,
    role            TEXT NOT NULL,
    disabled        BIGINT NOT NULL DEFAULT 0,
    -- Access tokens issued before this time are refused (role change, disable, password change).
    valid_after_ms  BIGINT NOT NULL DEFAULT 0,
    failed_logins   BIGINT NOT NULL DEFAULT 0,
    locked_until_ms BIGINT NOT NULL DEFAULT 0,
    created_ms      BIGINT NOT NULL
);
CREATE INDEX IF NOT EXISTS users_tenant ON users (tenant_id);

-- A session is one refresh-token family: one login and every rotation after it.
CREATE TABLE IF NOT EXISTS auth_sessions (
    id            TEXT PRIMARY KEY,
    user_id       TEXT NOT NULL REFERENCES users (id),
    tenant_id     TEXT,
    created_ms    BIGINT NOT NULL,
    last_used_ms  BIGINT NOT NULL,
    revoked_ms    BIGINT,
    revoked_why   TEXT
);
CREATE INDEX IF NOT EXISTS auth_sessions_user ON auth_sessions (user_id);

CREATE TABLE IF NOT EXISTS refresh_tokens (
    -- SHA-256 of the token; the token itself is never stored.
    token_hash    TEXT PRIMARY KEY,
    session_id    TEXT NOT NULL REFERENCES auth_sessions (id),
    created_ms    BIGINT NOT NULL,
    -- Set when the token is rotated; a later use is a reuse.
    used_ms       BIGINT
);
CREATE INDEX IF NOT EXISTS refresh_tokens_session ON refresh_tokens (session_id);

-- Access tokens revoked before their expiry (logout): refused until exp.
CREATE TABLE IF NOT EXISTS revoked_tokens (
    jti           TEXT PRIMARY KEY,
    expires_ms    BIGINT NOT NULL
);

CREATE TABLE IF NOT EXISTS api_keys (
    id            TEXT PRIMARY KEY,
    tenant_id     TEXT NOT NULL,
    name          TEXT NOT NULL,
    -- HMAC-SHA256(pepper, secret), hex.
    digest        TEXT NOT NULL,
    scopes        TEXT NOT NULL,
    created_ms    BIGINT NOT NULL,
    expires_ms    BIGINT,
    revoked_ms    BIGINT,
    -- The key that replaced this one by a roll.
    rolled_to     TEXT
);
CREATE INDEX IF NOT EXISTS api_keys_tenant ON api_keys (tenant_id);

CREATE TABLE IF NOT EXISTS mt5_accounts (
    tenant_id     TEXT NOT NULL,
    login         BIGINT NOT NULL,
    server        TEXT NOT NULL,
    -- AES-256-GCM, bound to mt5_accounts|password|tenant|login|key version; base64.
    password_enc  TEXT NOT NULL,
    key_version   BIGINT NOT NULL,
    created_ms    BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, login)
);

-- Append-only, chained per tenant (`platform` for platform-wide events).
CREATE TABLE IF NOT EXISTS audit_log (
    tenant_id     TEXT NOT NULL,
    seq           BIGINT NOT NULL,
    at_ms         BIGINT NOT NULL,
    action        TEXT NOT NULL,
    -- Canonical JSON of the entry's body (what the hash covers).
    body          TEXT NOT NULL,
    hash          TEXT NOT NULL,
    PRIMARY KEY (tenant_id, seq)
);

ALTER TABLE tenant_registry ENABLE ROW LEVEL SECURITY;
ALTER TABLE tenant_registry FORCE ROW LEVEL SECURITY;
DROP POLICY IF EXISTS tenant_isolation ON tenant_registry;
CREATE POLICY tenant_isolation ON tenant_registry
    USING (current_setting('app.scope', true) = 'platform'
           OR id = NULLIF(current_setting('app.tenant_id', true), ''))
    WITH CHECK (current_setting('app.scope', true) = 'platform'
           OR id = NULLIF(current_setting('app.tenant_id', true), ''));

ALTER TABLE users ENABLE ROW LEVEL SECURITY;
ALTER TABLE users FORCE ROW LEVEL SECURITY;
DROP POLICY IF EXISTS tenant_isolation ON users;
CREATE POLICY tenant_isolation ON users
    USING (current_setting('app.scope', true) = 'platform'
           OR tenant_id = NULLIF(current_setting('app.tenant_id', true), ''))
    WITH CHECK (current_setting('app.scope', true) = 'platform'
           OR tenant_id = NULLIF(current_setting('app.tenant_id', true), ''));

ALTER TABLE auth_sessions ENABLE ROW LEVEL SECURITY;
ALTER TABLE auth_sessions FORCE ROW LEVEL SECURITY;
DROP POLICY IF EXISTS tenant_isolation ON auth_sessions;
CREATE POLICY tenant_isolation ON auth_sessions
    USING (current_setting('app.scope', true) = 'platform'
           OR tenant_id = NULLIF(current_setting('app.tenant_id', true), ''))
    WITH CHECK (current_setting('app.scope', true) = 'platform'
           OR tenant_id = NULLIF(current_setting('app.tenant_id', true), ''));

ALTER TABLE refresh_tokens ENABLE ROW LEVEL SECURITY;
ALTER TABLE refresh_tokens FORCE ROW LEVEL SECURITY;
DROP POLICY IF EXISTS tenant_isolation ON refresh_tokens;
CREATE POLICY tenant_isolation ON refresh_tokens
    USING (current_setting('app.scope', true) = 'platform')
    WITH CHECK (current_setting('app.scope', true) = 'platform');

ALTER TABLE revoked_tokens ENABLE ROW LEVEL SECURITY;
ALTER TABLE revoked_tokens FORCE ROW LEVEL SECURITY;
DROP POLICY IF EXISTS tenant_isolation ON revoked_tokens;
CREATE POLICY tenant_isolation ON revoked_tokens
    USING (current_setting('app.scope', true) = 'platform')
    WITH CHECK (current_setting('app.scope', true) = 'platform');

ALTER TABLE api_keys ENABLE ROW LEVEL SECURITY;
ALTER TABLE api_keys FORCE ROW LEVEL SECURITY;
DROP POLICY IF EXISTS tenant_isolation ON api_keys;
CREATE POLICY tenant_isolation ON api_keys
    USING (current_setting('app.scope', true) = 'platform'
           OR tenant_id = NULLIF(current_setting('app.tenant_id', true), ''))
    WITH CHECK (current_setting('app.scope', true) = 'platform'
           OR tenant_id = NULLIF(current_setting('app.tenant_id', true), ''));

ALTER TABLE mt5_accounts ENABLE ROW LEVEL SECURITY;
ALTER TABLE mt5_accounts FORCE ROW LEVEL SECURITY;
DROP POLICY IF EXISTS tenant_isolation ON mt5_accounts;
CREATE POLICY tenant_isolation ON mt5_accounts
    USING (current_setting('app.scope', true) = 'platform'
           OR tenant_id = NULLIF(current_setting('app.tenant_id', true), ''))
    WITH CHECK (current_setting('app.scope', true) = 'platform'
           OR tenant_id = NULLIF(current_setting('app.tenant_id', true), ''));

ALTER TABLE audit_log ENABLE ROW LEVEL SECURITY;
ALTER TABLE audit_log FORCE ROW LEVEL SECURITY;
DROP POLICY IF EXISTS tenant_isolation ON audit_log;
CREATE POLICY tenant_isolation ON audit_log
    USING (current_setting('app.scope', true) = 'platform'
           OR tenant_id = NULLIF(current_setting('app.tenant_id', true), ''))
    WITH CHECK (current_setting('app.scope', true) = 'platform'
           OR tenant_id = NULLIF(current_setting('app.tenant_id', true), ''));

-- The audit log is append-only for the application: no UPDATE or DELETE.
GRANT SELECT, INSERT, UPDATE ON tenant_registry, users, auth_sessions, refresh_tokens, api_keys TO trellis_app;
GRANT SELECT, INSERT, UPDATE, DELETE ON mt5_accounts TO trellis_app;
GRANT SELECT, INSERT, DELETE ON revoked_tokens TO trellis_app;
GRANT SELECT, INSERT ON audit_log TO trellis_app;
