-- ClickHouse schema of trellis (applied by `trellis migrate` and at start-up when ClickHouse is configured).
-- Kept to SQL that ClickHouse 18.16 and current releases both accept. Every table is a ReplacingMergeTree on a
-- key that includes a unique row id, so a batch retried after a lost answer is stored once (query with FINAL,
-- or let merges collapse duplicates).

CREATE TABLE IF NOT EXISTS ticks (
    tenant_id String,
    symbol String,
    time_msc Int64,
    bid Float64,
    ask Float64,
    id UInt64
) ENGINE = ReplacingMergeTree()
PARTITION BY toYYYYMM(toDateTime(intDiv(time_msc, 1000)))
ORDER BY (tenant_id, symbol, time_msc, id);

CREATE TABLE IF NOT EXISTS bars (
    tenant_id String,
    symbol String,
    timeframe String,
    open_time_ms Int64,
    open Float64,
    high Float64,
    low Float64,
    close Float64,
    tick_volume UInt64
) ENGINE = ReplacingMergeTree()
PARTITION BY toYYYYMM(toDateTime(intDiv(open_time_ms, 1000)))
ORDER BY (tenant_id, symbol, timeframe, open_time_ms);

-- Fills for analytics (the relational store holds the books). Prices and money as exact decimal text.
CREATE TABLE IF NOT EXISTS fills (
    tenant_id String,
    account UInt64,
    deal_ticket UInt64,
    client_order_id String,
    strategy_id String,
    symbol String,
    side String,
    volume String,
    price String,
    commission String,
    time_msc Int64
) ENGINE = ReplacingMergeTree()
PARTITION BY toYYYYMM(toDateTime(intDiv(time_msc, 1000)))
ORDER BY (tenant_id, account, deal_ticket);

-- Model predictions (written by model actors once they exist).
CREATE TABLE IF NOT EXISTS predictions (
    tenant_id String,
    model String,
    version String,
    symbol String,
    time_msc Int64,
    value Float64,
    id UInt64
) ENGINE = ReplacingMergeTree()
PARTITION BY toYYYYMM(toDateTime(intDiv(time_msc, 1000)))
ORDER BY (tenant_id, model, symbol, time_msc, id);

-- The warm log tier's table, `log_entries`, is created by src/storage/logs/clickhouse.rs: its column types
-- depend on the server's version (codecs and LowCardinality from 19.x on).
