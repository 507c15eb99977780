-- Tenants' strategy modules (WebAssembly, docs/strategy-modules.md): immutable content-addressed versions,
-- the module encrypted like model files, with the manifest it was uploaded with.
CREATE TABLE strategy_modules (
    tenant_id     TEXT NOT NULL,
    name          TEXT NOT NULL,
    -- sha256 of the module, hex.
    version       TEXT NOT NULL,
    manifest      TEXT NOT NULL,
    -- AES-256-GCM, bound to strategy_modules|file|tenant|name:version|key version; base64.
    file_enc      TEXT NOT NULL,
    key_version   BIGINT NOT NULL,
    size_bytes    BIGINT NOT NULL,
    created_ms    BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, name, version)
);
