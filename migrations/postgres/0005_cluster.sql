-- Several trellis nodes on one PostgreSQL: who is alive, and which node owns each tenant.
--
-- A tenant is owned under a lease: the node, a fencing token that only grows (each takeover adds one) and an
-- expiry kept by the database's own clock (clock_timestamp()), so nodes whose clocks disagree still agree on
-- who owns what. Every write of a tenant's actors first locks the tenant's lease row FOR SHARE and compares
-- the token it holds with the row's: a takeover (an UPDATE of that row) waits for writes in flight and every
-- write after it sees the new token, so a node that lost its lease (paused, partitioned) cannot write again.

CREATE TABLE IF NOT EXISTS cluster_nodes (
    id            TEXT PRIMARY KEY,
    -- Advertised URLs as a JSON array (where bridges and clients are redirected).
    urls          TEXT NOT NULL,
    started_at    TIMESTAMPTZ NOT NULL,
    heartbeat_at  TIMESTAMPTZ NOT NULL
);

CREATE TABLE IF NOT EXISTS tenant_leases (
    tenant_id    TEXT PRIMARY KEY,
    node_id      TEXT NOT NULL,
    token        BIGINT NOT NULL,
    acquired_at  TIMESTAMPTZ NOT NULL,
    -- '-infinity' once released: free to take at once.
    expires_at   TIMESTAMPTZ NOT NULL
);

ALTER TABLE cluster_nodes ENABLE ROW LEVEL SECURITY;
ALTER TABLE cluster_nodes FORCE ROW LEVEL SECURITY;
DROP POLICY IF EXISTS platform_only ON cluster_nodes;
CREATE POLICY platform_only ON cluster_nodes
    USING (current_setting('app.scope', true) = 'platform')
    WITH CHECK (current_setting('app.scope', true) = 'platform');

-- A tenant's own transaction reads (and locks) its lease row to fence its writes; only the platform scope
-- (the cluster's placement loop) takes, renews or releases leases.
ALTER TABLE tenant_leases ENABLE ROW LEVEL SECURITY;
ALTER TABLE tenant_leases FORCE ROW LEVEL SECURITY;
DROP POLICY IF EXISTS tenant_isolation ON tenant_leases;
CREATE POLICY tenant_isolation ON tenant_leases
    USING (current_setting('app.scope', true) = 'platform'
           OR tenant_id = NULLIF(current_setting('app.tenant_id', true), ''))
    WITH CHECK (current_setting('app.scope', true) = 'platform');

GRANT SELECT, INSERT, UPDATE, DELETE ON cluster_nodes, tenant_leases TO trellis_app;
