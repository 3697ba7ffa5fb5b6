"""The alert outbox's tables: one row per alert, one delivery row per alert and receiver."""

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS alerts (
    id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    state TEXT NOT NULL,
    dedup_key TEXT NOT NULL,
    details TEXT NOT NULL,
    count INTEGER NOT NULL,
    first_seen REAL NOT NULL,
    last_seen REAL NOT NULL,
    audit_ids TEXT NOT NULL,
    follow_up_of TEXT,
    due_at REAL NOT NULL,
    retry_from REAL NOT NULL,
    sent_once INTEGER NOT NULL DEFAULT 0,
    finished_at REAL
);
CREATE INDEX IF NOT EXISTS alerts_by_state ON alerts (state, due_at);
CREATE INDEX IF NOT EXISTS alerts_by_key ON alerts (dedup_key, first_seen);
CREATE TABLE IF NOT EXISTS deliveries (
    alert_id TEXT NOT NULL REFERENCES alerts (id) ON DELETE CASCADE,
    receiver TEXT NOT NULL,
    state TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_at REAL NOT NULL,
    last_outcome TEXT,
    last_error TEXT,
    finished_at REAL,
    PRIMARY KEY (alert_id, receiver)
);
"""
