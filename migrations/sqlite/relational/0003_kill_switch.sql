-- The kill switch outlives a restart: an operator who stopped trading must not see it resume by itself.
CREATE TABLE IF NOT EXISTS kill_switches (
    tenant_id  TEXT PRIMARY KEY,
    reason     TEXT NOT NULL,
    automatic  INTEGER NOT NULL,
    at_ms      INTEGER NOT NULL
);
