-- Security and administration: tenants as managed through the API, users, sessions and refresh tokens,
-- API keys, MT5 accounts (password encrypted), the audit log. Times are Unix milliseconds; hashes hex;
-- ciphertexts base64, so the same statements run on SQLite and PostgreSQL.

CREATE TABLE tenant_registry (
    id            TEXT PRIMARY KEY,
    -- The tenant's settings (name, tier, symbols, risk limits, strategies) as JSON: what start-up runs.
    settings      TEXT NOT NULL,
    tier          TEXT NOT NULL,
    suspended     BIGINT NOT NULL DEFAULT 0,
    created_ms    BIGINT NOT NULL,
    updated_ms    BIGINT NOT NULL
);

CREATE TABLE users (
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
CREATE INDEX users_tenant ON users (tenant_id);

-- A session is one refresh-token family: one login and every rotation after it.
CREATE TABLE auth_sessions (
    id            TEXT PRIMARY KEY,
    user_id       TEXT NOT NULL REFERENCES users (id),
    tenant_id     TEXT,
    created_ms    BIGINT NOT NULL,
    last_used_ms  BIGINT NOT NULL,
    revoked_ms    BIGINT,
    revoked_why   TEXT
);
CREATE INDEX auth_sessions_user ON auth_sessions (user_id);

CREATE TABLE refresh_tokens (
    -- SHA-256 of the token; the token itself is never stored.
    token_hash    TEXT PRIMARY KEY,
    session_id    TEXT NOT NULL REFERENCES auth_sessions (id),
    created_ms    BIGINT NOT NULL,
    -- Set when the token is rotated; a later use is a reuse.
    used_ms       BIGINT
);
CREATE INDEX refresh_tokens_session ON refresh_tokens (session_id);

-- Access tokens revoked before their expiry (logout): refused until exp.
CREATE TABLE revoked_tokens (
    jti           TEXT PRIMARY KEY,
    expires_ms    BIGINT NOT NULL
);

CREATE TABLE api_keys (
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
CREATE INDEX api_keys_tenant ON api_keys (tenant_id);

CREATE TABLE mt5_accounts (
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
CREATE TABLE audit_log (
    tenant_id     TEXT NOT NULL,
    seq           BIGINT NOT NULL,
    at_ms         BIGINT NOT NULL,
    action        TEXT NOT NULL,
    -- Canonical JSON of the entry's body (what the hash covers).
    body          TEXT NOT NULL,
    hash          TEXT NOT NULL,
    PRIMARY KEY (tenant_id, seq)
);
