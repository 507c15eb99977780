-- The log mover's batches (a tenant's day crossing a tier boundary, or a whole day leaving the warm tier):
-- their state survives a crash and is shared by the nodes, whichever of them holds the mover's lease
-- (tenant_leases row `@log_tiers`).
CREATE TABLE IF NOT EXISTS log_batches (
    id         TEXT PRIMARY KEY,
    state      TEXT NOT NULL,
    entries    BIGINT NOT NULL,
    hash       TEXT NOT NULL,
    updated_ms BIGINT NOT NULL
);

ALTER TABLE log_batches ENABLE ROW LEVEL SECURITY;
ALTER TABLE log_batches FORCE ROW LEVEL SECURITY;
DROP POLICY IF EXISTS platform_only ON log_batches;
CREATE POLICY platform_only ON log_batches
    USING (current_setting('app.scope', true) = 'platform')
    WITH CHECK (current_setting('app.scope', true) = 'platform');

GRANT SELECT, INSERT, UPDATE, DELETE ON log_batches TO trellis_app;
