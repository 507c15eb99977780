-- A strategy's state after its last bar (issue 36): after a restart (or on the node that takes the tenant
-- over) it is restored and only the bars after it are replayed, so decisions continue as if nothing happened.
-- `fingerprint` names the kind, parameters, symbol and timeframe it belongs to.
CREATE TABLE IF NOT EXISTS strategy_snapshots (
    tenant_id    TEXT NOT NULL REFERENCES tenants (id),
    strategy_id  TEXT NOT NULL,
    fingerprint  TEXT NOT NULL,
    bar_open_ms  BIGINT NOT NULL,
    state        TEXT NOT NULL,
    PRIMARY KEY (tenant_id, strategy_id)
);
ALTER TABLE strategy_snapshots ENABLE ROW LEVEL SECURITY;
ALTER TABLE strategy_snapshots FORCE ROW LEVEL SECURITY;
DROP POLICY IF EXISTS tenant_isolation ON strategy_snapshots;
CREATE POLICY tenant_isolation ON strategy_snapshots
    USING (tenant_id = NULLIF(current_setting('app.tenant_id', true), ''))
    WITH CHECK (tenant_id = NULLIF(current_setting('app.tenant_id', true), ''));
GRANT SELECT, INSERT, UPDATE, DELETE ON strategy_snapshots TO trellis_app;
