-- The model registry: model names, their immutable content-addressed versions (the ONNX file encrypted like
-- MT5 passwords), aliases and the history of which version served under which alias, and when.
CREATE TABLE model_registry (
    tenant_id     TEXT NOT NULL,
    name          TEXT NOT NULL,
    description   TEXT NOT NULL,
    created_ms    BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, name)
);

CREATE TABLE model_versions (
    tenant_id     TEXT NOT NULL,
    name          TEXT NOT NULL,
    -- sha256 of the ONNX file, hex.
    version       TEXT NOT NULL,
    manifest      TEXT NOT NULL,
    -- AES-256-GCM, bound to model_versions|file|tenant|name:version|key version; base64.
    file_enc      TEXT NOT NULL,
    key_version   BIGINT NOT NULL,
    size_bytes    BIGINT NOT NULL,
    created_ms    BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, name, version)
);

CREATE TABLE model_aliases (
    tenant_id     TEXT NOT NULL,
    name          TEXT NOT NULL,
    alias         TEXT NOT NULL,
    seq           BIGINT NOT NULL,
    version       TEXT NOT NULL,
    from_ms       BIGINT NOT NULL,
    -- NULL while the alias still points here.
    to_ms         BIGINT,
    PRIMARY KEY (tenant_id, name, alias, seq)
);
