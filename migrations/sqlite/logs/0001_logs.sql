-- The embedded profile's hot and warm log tiers (one table each, same shape) and the mover's batches.
-- An entry's id is unique in a tier, so a copy repeated after a crash inserts nothing twice.
CREATE TABLE IF NOT EXISTS log_hot (
    id      TEXT PRIMARY KEY,
    tenant  TEXT NOT NULL,
    day     INTEGER NOT NULL,
    at_ms   INTEGER NOT NULL,
    kind    TEXT NOT NULL,
    level   TEXT NOT NULL,
    message TEXT NOT NULL,
    data    TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS log_hot_tenant_time ON log_hot (tenant, at_ms, id);
CREATE INDEX IF NOT EXISTS log_hot_day ON log_hot (day, tenant);

CREATE TABLE IF NOT EXISTS log_warm (
    id      TEXT PRIMARY KEY,
    tenant  TEXT NOT NULL,
    day     INTEGER NOT NULL,
    at_ms   INTEGER NOT NULL,
    kind    TEXT NOT NULL,
    level   TEXT NOT NULL,
    message TEXT NOT NULL,
    data    TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS log_warm_tenant_time ON log_warm (tenant, at_ms, id);
CREATE INDEX IF NOT EXISTS log_warm_day ON log_warm (day, tenant);

-- One row per batch (a tenant's day crossing a tier boundary): its state survives a crash, so the mover
-- resumes at the step it reached.
CREATE TABLE IF NOT EXISTS log_batches (
    id         TEXT PRIMARY KEY,
    state      TEXT NOT NULL,
    entries    INTEGER NOT NULL,
    hash       TEXT NOT NULL,
    updated_ms INTEGER NOT NULL
);
