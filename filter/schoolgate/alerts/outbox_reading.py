"""The alert outbox's reads of alerts (one by id, the newest, those since a time, one media's
from one device), for the command line, the DSL's console and the sender."""

from __future__ import annotations

import json
import sqlite3
import threading

from schoolgate.alerts.model import Alert, AlertDetails
from schoolgate.alerts.outbox_schema import DELIVERED, NOT_ROUTED


class OutboxReading:
    """Mixed into AlertOutbox, whose connection and lock these share."""

    _db: sqlite3.Connection
    _lock: threading.RLock

    def get(self, alert_id: str) -> Alert | None:
        with self._lock:
            row = self._db.execute("SELECT * FROM alerts WHERE id = ?", (alert_id,)).fetchone()
            return self._alert(row) if row is not None else None

    def list(
        self, state: str | None = None, limit: int = 100, *, deliveries: bool = True
    ) -> list[Alert]:
        """Newest first; `state` one of pending, delivered, dead (None: all). Without
        `deliveries` the per-receiver state is not read (attempts 0, delivered_to empty):
        the DSL's console lists thousands and needs none of it."""
        where, params = ("", (limit,)) if state is None else ("WHERE state = ? ", (state, limit))
        with self._lock:
            rows = self._db.execute(
                f"SELECT * FROM alerts {where}ORDER BY first_seen DESC LIMIT ?", params
            ).fetchall()
            return [self._alert(row, deliveries) for row in rows]

    def since(self, first_seen: float, limit: int = 5_000) -> tuple[Alert, ...]:
        """Alerts first seen after `first_seen`, oldest first (delivery state not read)."""
        with self._lock:
            rows = self._db.execute(
                "SELECT * FROM alerts WHERE first_seen > ? ORDER BY first_seen LIMIT ?",
                (first_seen, limit),
            ).fetchall()
            return tuple(self._alert(row, deliveries=False) for row in rows)

    def with_key(self, dedup_key: str) -> tuple[Alert, ...]:
        """Every alert of one media from one device (an alert and its follow-ups), oldest first."""
        with self._lock:
            rows = self._db.execute(
                "SELECT * FROM alerts WHERE dedup_key = ? ORDER BY first_seen", (dedup_key,)
            ).fetchall()
            return tuple(self._alert(row, deliveries=False) for row in rows)

    def _alert(self, row: sqlite3.Row, deliveries: bool = True) -> Alert:
        found = (
            self._db.execute(
                "SELECT receiver, state, attempts, last_error, last_outcome FROM deliveries "
                "WHERE alert_id = ? ORDER BY receiver",
                (row["id"],),
            ).fetchall()
            if deliveries
            else []
        )
        errors = [d[3] for d in found if d[3]]
        return Alert(
            id=row["id"],
            kind=row["kind"],
            state=row["state"],
            dedup_key=row["dedup_key"],
            details=AlertDetails.from_json(row["details"]),
            count=row["count"],
            first_seen=row["first_seen"],
            last_seen=row["last_seen"],
            audit_ids=tuple(json.loads(row["audit_ids"])),
            follow_up_of=row["follow_up_of"],
            attempts=sum(d[2] for d in found),
            last_error=errors[-1] if errors else None,
            # not a receiver whose groups left the alert out (settled unsent: "not_routed")
            delivered_to=tuple(d[0] for d in found if d[1] == DELIVERED and d[4] != NOT_ROUTED),
        )
