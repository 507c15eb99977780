-- Tenants' strategy modules (WebAssembly, docs/strategy-modules.md): immutable content-addressed versions,
-- the module encrypted like model files, with the manifest it was uploaded with. Row-level security like
-- the model registry (the platform scope re-encrypts them on key rotation).
CREATE TABLE IF NOT EXISTS strategy_modules (
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

ALTER TABLE strategy_modules ENABLE ROW LEVEL SECURITY;
ALTER TABLE strategy_modules FORCE ROW LEVEL SECURITY;
DROP POLICY IF EXISTS tenant_isolation ON strategy_modules;
CREATE POLICY tenant_isolation ON strategy_modules
    USING (current_setting('app.scope', true) = 'platform'
           OR tenant_id = NULLIF(current_setting('app.tenant_id', true), ''))
    WITH CHECK (current_setting('app.scope', true) = 'platform'
           OR tenant_id = NULLIF(current_setting('app.tenant_id', true), ''));

GRANT SELECT, INSERT, UPDATE, DELETE ON strategy_modules TO trellis_app;
