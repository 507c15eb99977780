-- Tenants: the unit of isolation, tier and quotas.
CREATE TABLE IF NOT EXISTS tenants (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    tier        TEXT NOT NULL CHECK (tier IN ('free', 'basic', 'professional', 'enterprise')),
    created_ms  INTEGER NOT NULL
);
