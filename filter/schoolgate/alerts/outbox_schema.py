"""The alert outbox's tables (one row per alert, one delivery row per alert and receiver) and
the records it hands out."""

from __future__ import annotations

from dataclasses import dataclass

from schoolgate.alerts.model import Alert

PENDING, DELIVERED, DEAD = "pending", "delivered", "dead"
NOT_ROUTED = "not_routed"  # a delivery's outcome: settled unsent, not the receiver's groups

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
    leased_until REAL,
    PRIMARY KEY (alert_id, receiver)
);
"""
# Outboxes made before leases were told apart from back-off waits: added when opened. Older
# schoolgates ignore the column, so the schema version stays.
LEASE_COLUMN = "ALTER TABLE deliveries ADD COLUMN leased_until REAL"


@dataclass(frozen=True)
class OutboxStats:
    """For metrics: alerts not yet delivered everywhere, the oldest one's age, dead letters."""

    pending: int
    oldest_pending_age_s: float  # 0.0 when nothing is pending
    dead: int


@dataclass(frozen=True)
class Enqueued:
    alert_id: str
    count: int  # 1 for a new alert, more when merged into a pending one
    merged: bool


@dataclass(frozen=True)
class Claim:
    """One delivery the sender now owns until `lease_until`."""

    alert: Alert
    receiver: str
    attempts: int  # failed attempts so far
    retry_from: float  # the dead-letter age counts from here
    lease_until: float
