-- The model registry: model names, their immutable content-addressed versions (the ONNX file encrypted like
-- MT5 passwords), aliases and the history of which version served under which alias, and when.
CREATE TABLE IF NOT EXISTS model_registry (
    tenant_id     TEXT NOT NULL,
    name          TEXT NOT NULL,
    description   TEXT NOT NULL,
    created_ms    BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, name)
);

CREATE TABLE IF NOT EXISTS model_versions (
    tenant_id     TEXT NOT NULL,
    name          TEXT NOT NULL,
    version       TEXT NOT NULL,
    manifest      TEXT NOT NULL,
    file_enc      TEXT NOT NULL,
    key_version   BIGINT NOT NULL,
    size_bytes    BIGINT NOT NULL,
    created_ms    BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, name, version)
);

CREATE TABLE IF NOT EXISTS model_aliases (
    tenant_id     TEXT NOT NULL,
    name          TEXT NOT NULL,
    alias         TEXT NOT NULL,
    seq           BIGINT NOT NULL,
    version       TEXT NOT NULL,
    from_ms       BIGINT NOT NULL,
    to_ms         BIGINT,
    PRIMARY KEY (tenant_id, name, alias, seq)
);

ALTER TABLE model_registry ENABLE ROW LEVEL SECURITY;
ALTER TABLE model_registry FORCE ROW LEVEL SECURITY;
DROP POLICY IF EXISTS tenant_isolation ON model_registry;
CREATE POLICY tenant_isolation ON model_registry
    USING (current_setting('app.scope', true) = 'platform'
           OR tenant_id = NULLIF(current_setting('app.tenant_id', true), ''))
    WITH CHECK (current_setting('app.scope', true) = 'platform'
           OR tenant_id = NULLIF(current_setting('app.tenant_id', true), ''));

ALTER TABLE model_versions ENABLE ROW LEVEL SECURITY;
ALTER TABLE model_versions FORCE ROW LEVEL SECURITY;
DROP POLICY IF EXISTS tenant_isolation ON model_versions;
CREATE POLICY tenant_isolation ON model_versions
    USING (current_setting('app.scope', true) = 'platform'
           OR tenant_id = NULLIF(current_setting('app.tenant_id', true), ''))
    WITH CHECK (current_setting('app.scope', true) = 'platform'
           OR tenant_id = NULLIF(current_setting('app.tenant_id', true), ''));

ALTER TABLE model_aliases ENABLE ROW LEVEL SECURITY;
ALTER TABLE model_aliases FORCE ROW LEVEL SECURITY;
DROP POLICY IF EXISTS tenant_isolation ON model_aliases;
CREATE POLICY tenant_isolation ON model_aliases
    USING (current_setting('app.scope', true) = 'platform'
           OR tenant_id = NULLIF(current_setting('app.tenant_id', true), ''))
    WITH CHECK (current_setting('app.scope', true) = 'platform'
           OR tenant_id = NULLIF(current_setting('app.tenant_id', true), ''));

GRANT SELECT, INSERT, UPDATE, DELETE ON model_registry, model_versions, model_aliases TO trellis_app;
