-- Model predictions with the version that made them (shadow ones too); a replayed bar replaces its row.
CREATE TABLE IF NOT EXISTS predictions (
    tenant_id    TEXT NOT NULL,
    deployment   TEXT NOT NULL,
    version      TEXT NOT NULL,
    symbol       TEXT NOT NULL,
    bar_open_ms  INTEGER NOT NULL,
    value        REAL NOT NULL,
    latency_us   INTEGER NOT NULL,
    shadow       INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, deployment, version, bar_open_ms)
);
