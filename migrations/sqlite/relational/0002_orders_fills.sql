-- Orders trellis sent (or refused to send), with their state machine position. Decimals as text: exact.
CREATE TABLE IF NOT EXISTS orders (
    tenant_id       TEXT NOT NULL,
    client_order_id TEXT NOT NULL,
    -- Per-tenant counter the client order id was made from; the next one continues after the largest.
    seq             INTEGER NOT NULL,
    account         INTEGER NOT NULL,
    strategy_id     TEXT,
    symbol          TEXT NOT NULL,
    side            TEXT NOT NULL CHECK (side IN ('buy', 'sell')),
    kind            TEXT NOT NULL CHECK (kind IN ('market', 'limit', 'stop')),
    volume          TEXT NOT NULL,
    price           TEXT,
    status          TEXT NOT NULL,
    filled_volume   TEXT NOT NULL,
    avg_price       TEXT,
    retcode         INTEGER,
    broker_order    INTEGER,
    reason          TEXT,
    created_ms      INTEGER NOT NULL,
    updated_ms      INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, client_order_id)
);
CREATE INDEX IF NOT EXISTS orders_by_status ON orders (tenant_id, status);

-- Deals from MT5 terminals. The key makes recording idempotent: a deal re-sent after a reconnect is ignored.
CREATE TABLE IF NOT EXISTS fills (
    tenant_id       TEXT NOT NULL,
    account         INTEGER NOT NULL,
    deal_ticket     INTEGER NOT NULL,
    order_ticket    INTEGER NOT NULL,
    client_order_id TEXT,
    strategy_id     TEXT,
    symbol          TEXT NOT NULL,
    side            TEXT NOT NULL CHECK (side IN ('buy', 'sell')),
    volume          TEXT NOT NULL,
    price           TEXT NOT NULL,
    position_id     INTEGER NOT NULL,
    entry           TEXT NOT NULL,
    commission      TEXT NOT NULL,
    swap            TEXT NOT NULL,
    profit          TEXT NOT NULL,
    time_msc        INTEGER NOT NULL,
    recorded_ms     INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, account, deal_ticket)
);
CREATE INDEX IF NOT EXISTS fills_by_time ON fills (tenant_id, time_msc);
