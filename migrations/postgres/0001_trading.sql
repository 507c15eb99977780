-- PostgreSQL schema of trellis, applied by `trellis migrate` as the owner role.
--
-- Tenant isolation is enforced by the database too: every tenant table has row-level security ENABLEd and
-- FORCEd, with a policy on the tenant set per transaction (`set_config('app.tenant_id', $1, true)`). trellis
-- connects as `trellis_app`, a role that is neither superuser nor BYPASSRLS, and refuses to start otherwise.
-- Foreign keys are composite (tenant_id, …), so a constraint can never reach, or reveal, another tenant's row.

DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'trellis_app') THEN
        CREATE ROLE trellis_app LOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE;
    END IF;
END
$$;

CREATE TABLE IF NOT EXISTS tenants (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    tier        TEXT NOT NULL CHECK (tier IN ('free', 'basic', 'professional', 'enterprise')),
    created_ms  BIGINT NOT NULL
);

CREATE TABLE IF NOT EXISTS orders (
    tenant_id       TEXT NOT NULL REFERENCES tenants (id),
    client_order_id TEXT NOT NULL,
    seq             BIGINT NOT NULL,
    account         BIGINT NOT NULL,
    strategy_id     TEXT,
    symbol          TEXT NOT NULL,
    side            TEXT NOT NULL CHECK (side IN ('buy', 'sell')),
    kind            TEXT NOT NULL CHECK (kind IN ('market', 'limit', 'stop')),
    volume          NUMERIC NOT NULL,
    price           NUMERIC,
    status          TEXT NOT NULL,
    filled_volume   NUMERIC NOT NULL,
    avg_price       NUMERIC,
    retcode         INTEGER,
    broker_order    BIGINT,
    reason          TEXT,
    created_ms      BIGINT NOT NULL,
    updated_ms      BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, client_order_id)
);
CREATE INDEX IF NOT EXISTS orders_by_status ON orders (tenant_id, status);

CREATE TABLE IF NOT EXISTS fills (
    tenant_id       TEXT NOT NULL REFERENCES tenants (id),
    account         BIGINT NOT NULL,
    deal_ticket     BIGINT NOT NULL,
    order_ticket    BIGINT NOT NULL,
    client_order_id TEXT,
    strategy_id     TEXT,
    symbol          TEXT NOT NULL,
    side            TEXT NOT NULL CHECK (side IN ('buy', 'sell')),
    volume          NUMERIC NOT NULL,
    price           NUMERIC NOT NULL,
    position_id     BIGINT NOT NULL,
    entry           TEXT NOT NULL,
    commission      NUMERIC NOT NULL,
    swap            NUMERIC NOT NULL,
    profit          NUMERIC NOT NULL,
    time_msc        BIGINT NOT NULL,
    recorded_ms     BIGINT NOT NULL,
    recorded_seq    BIGSERIAL,
    PRIMARY KEY (tenant_id, account, deal_ticket),
    FOREIGN KEY (tenant_id, client_order_id) REFERENCES orders (tenant_id, client_order_id)
);
CREATE INDEX IF NOT EXISTS fills_by_time ON fills (tenant_id, time_msc);

ALTER TABLE tenants ENABLE ROW LEVEL SECURITY;
ALTER TABLE tenants FORCE ROW LEVEL SECURITY;
ALTER TABLE orders ENABLE ROW LEVEL SECURITY;
ALTER TABLE orders FORCE ROW LEVEL SECURITY;
ALTER TABLE fills ENABLE ROW LEVEL SECURITY;
ALTER TABLE fills FORCE ROW LEVEL SECURITY;

DROP POLICY IF EXISTS tenant_isolation ON tenants;
CREATE POLICY tenant_isolation ON tenants
    USING (id = NULLIF(current_setting('app.tenant_id', true), ''))
    WITH CHECK (id = NULLIF(current_setting('app.tenant_id', true), ''));
DROP POLICY IF EXISTS tenant_isolation ON orders;
CREATE POLICY tenant_isolation ON orders
    USING (tenant_id = NULLIF(current_setting('app.tenant_id', true), ''))
    WITH CHECK (tenant_id = NULLIF(current_setting('app.tenant_id', true), ''));
DROP POLICY IF EXISTS tenant_isolation ON fills;
CREATE POLICY tenant_isolation ON fills
    USING (tenant_id = NULLIF(current_setting('app.tenant_id', true), ''))
    WITH CHECK (tenant_id = NULLIF(current_setting('app.tenant_id', true), ''));

GRANT SELECT, INSERT, UPDATE ON tenants, orders, fills TO trellis_app;
GRANT USAGE, SELECT ON SEQUENCE fills_recorded_seq_seq TO trellis_app;
