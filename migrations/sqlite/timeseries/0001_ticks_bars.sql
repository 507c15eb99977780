-- Ticks as received from MT5 terminals; prices as text to keep the terminal's exact decimal quote.
CREATE TABLE IF NOT EXISTS ticks (
    tenant_id   TEXT NOT NULL,
    symbol      TEXT NOT NULL,
    time_msc    INTEGER NOT NULL,
    bid         TEXT NOT NULL,
    ask         TEXT NOT NULL,
    last        TEXT,
    volume      REAL
);
CREATE INDEX IF NOT EXISTS ticks_by_symbol_time ON ticks (tenant_id, symbol, time_msc);

-- Closed bars per timeframe (OHLC from bid, tick volume).
CREATE TABLE IF NOT EXISTS bars (
    tenant_id    TEXT NOT NULL,
    symbol       TEXT NOT NULL,
    timeframe    TEXT NOT NULL,
    open_time_ms INTEGER NOT NULL,
    open         TEXT NOT NULL,
    high         TEXT NOT NULL,
    low          TEXT NOT NULL,
    close        TEXT NOT NULL,
    tick_volume  INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, symbol, timeframe, open_time_ms)
);
