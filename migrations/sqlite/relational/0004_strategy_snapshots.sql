-- A strategy's state after its last bar (issue 36): after a restart it is restored and only the bars after it
-- are replayed, so decisions continue as if nothing happened. `fingerprint` names the kind, parameters, symbol
-- and timeframe it belongs to: a strategy whose settings changed starts from its warm-up instead.
CREATE TABLE IF NOT EXISTS strategy_snapshots (
    tenant_id    TEXT NOT NULL,
    strategy_id  TEXT NOT NULL,
    fingerprint  TEXT NOT NULL,
    bar_open_ms  INTEGER NOT NULL,
    state        TEXT NOT NULL,
    PRIMARY KEY (tenant_id, strategy_id)
);
