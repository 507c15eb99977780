-- The kill switch outlives a restart: an operator who stopped trading must not see it resume by itself.
CREATE TABLE IF NOT EXISTS kill_switches (
    tenant_id  TEXT PRIMARY KEY REFERENCES tenants (id),
    reason     TEXT NOT NULL,
    automatic  BOOLEAN NOT NULL,
    at_ms      BIGINT NOT NULL
);
ALTER TABLE kill_switches ENABLE ROW LEVEL SECURITY;
ALTER TABLE kill_switches FORCE ROW LEVEL SECURITY;
DROP POLICY IF EXISTS tenant_isolation ON kill_switches;
CREATE POLICY tenant_isolation ON kill_switches
    USING (tenant_id = NULLIF(current_setting('app.tenant_id', true), ''))
    WITH CHECK (tenant_id = NULLIF(current_setting('app.tenant_id', true), ''));
GRANT SELECT, INSERT, UPDATE, DELETE ON kill_switches TO trellis_app;
