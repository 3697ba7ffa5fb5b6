"""The alert outbox: every alert is committed to SQLite (WAL, fsync on commit) before the proxy
answers the upload, then delivered from here by the sender, however long the receivers are down.

Each alert has one delivery row per receiver ("channel"), so a Teams success and a webhook failure
retry only the webhook. A delivery is *claimed* by pushing its next attempt time past a lease; a
sender that dies mid-send (SIGKILL, power cut) leaves the claim to expire and the alert is sent
again: delivery is at least once, and the alert id is the receivers' idempotency key.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import replace
from pathlib import Path

from schoolgate.alerts.model import KIND_DECISION, Alert, AlertDetails, dedup_key
from schoolgate.alerts.outbox_reading import OutboxReading
from schoolgate.alerts.outbox_schema import DEAD as DEAD
from schoolgate.alerts.outbox_schema import DELIVERED as DELIVERED
from schoolgate.alerts.outbox_schema import LEASE_COLUMN
from schoolgate.alerts.outbox_schema import NOT_ROUTED as NOT_ROUTED
from schoolgate.alerts.outbox_schema import PENDING as PENDING
from schoolgate.alerts.outbox_schema import SCHEMA as _SCHEMA
from schoolgate.alerts.outbox_schema import Claim as Claim
from schoolgate.alerts.outbox_schema import Enqueued as Enqueued
from schoolgate.alerts.outbox_schema import OutboxStats as OutboxStats
from schoolgate.errors import SchoolgateError
from schoolgate.sqlite_schema import apply_schema

SCHEMA_VERSION = 1
# Longer than any wait the outbox schedules (a retry is at most retry_max_s away, a follow-up a
# de-duplication window, a lease minutes): a due time further ahead was set by a clock that ran
# ahead since corrected.
CLOCK_WAS_AHEAD_S = 86_400.0
MAX_AUDIT_IDS = 100  # a flood of repeats keeps the first hundred decision ids and the count

STATES = (PENDING, DELIVERED, DEAD)


class OutboxError(SchoolgateError):
    """The outbox database cannot be opened or written (disk full, read-only, corrupt)."""


class AlertOutbox(OutboxReading):
    """Durable alert queue in one SQLite file. Safe to share between threads and processes."""

    def __init__(
        self,
        path: Path,
        channels: Sequence[str] = (),
        *,
        dedup_window_s: float = 600.0,
        clock: Callable[[], float] = time.time,
        busy_timeout_s: float = 10.0,
    ) -> None:
        self.path = Path(path)
        self.channels = tuple(channels)
        self.dedup_window_s = dedup_window_s
        self.clock = clock
        self._lock = threading.RLock()
        self._enqueue_listeners: list[Callable[[], None]] = []
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(
                self.path, timeout=busy_timeout_s, isolation_level=None, check_same_thread=False
            )
            self._db.row_factory = sqlite3.Row
            self._db.execute(f"PRAGMA busy_timeout = {int(busy_timeout_s * 1000)}")
            self._db.execute("PRAGMA journal_mode = WAL")
            # FULL: the WAL is fsynced at every commit, so an alert survives a power cut the
            # moment the proxy answers the upload.
            self._db.execute("PRAGMA synchronous = FULL")
            self._db.execute("PRAGMA foreign_keys = ON")
            with self._transaction() as cur:
                apply_schema(cur, _SCHEMA, SCHEMA_VERSION, what="outbox", path=self.path,
                             error=OutboxError)  # fmt: skip
                columns = {row[1] for row in cur.execute("PRAGMA table_info(deliveries)")}
                if "leased_until" not in columns:
                    cur.execute(LEASE_COLUMN)
        except (sqlite3.Error, OSError) as exc:
            raise OutboxError(f"cannot open the alert outbox {self.path}: {exc}") from exc

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> AlertOutbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def on_enqueue(self, listener: Callable[[], None]) -> None:
        """Call `listener` after each committed enqueue (the sender's wake-up)."""
        self._enqueue_listeners.append(listener)

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Cursor]:
        with self._lock:
            cur = self._db.cursor()
            cur.execute("BEGIN IMMEDIATE")
            try:
                yield cur
                cur.execute("COMMIT")
            except BaseException:
                # SQLite has already rolled back after some errors (SQLITE_FULL); a failing
                # ROLLBACK must not hide the error that says what went wrong.
                if self._db.in_transaction:
                    with suppress(sqlite3.Error):
                        self._db.execute("ROLLBACK")
                raise

    # -- writing -------------------------------------------------------------------------------

    def enqueue(
        self, details: AlertDetails, audit_id: str | None = None, *, kind: str = KIND_DECISION
    ) -> Enqueued:
        """Commit an alert (or merge a repeat into a pending one); durable when this returns.

        A repeat of the same media from the same device within the window is merged into the
        pending alert's count. Once that alert has been sent, repeats collect in one follow-up
        alert that waits for the end of the window, so a burst costs the DSL two messages at most.
        Raises OutboxError when the database cannot be written.
        """
        now = self.clock()
        key = dedup_key(details)
        audit = [audit_id] if audit_id else []
        try:
            with self._transaction() as cur:
                result = self._enqueue(cur, details, key, audit, kind, now)
        except sqlite3.Error as exc:
            raise OutboxError(f"alert not written to {self.path}: {exc}") from exc
        for listener in self._enqueue_listeners:
            listener()
        return result

    def _enqueue(
        self,
        cur: sqlite3.Cursor,
        details: AlertDetails,
        key: str,
        audit: list[str],
        kind: str,
        now: float,
    ) -> Enqueued:
        previous = None
        if self.dedup_window_s > 0:
            previous = cur.execute(
                "SELECT id, state, sent_once, count, audit_ids, first_seen FROM alerts "
                "WHERE dedup_key = ? AND kind = ? AND first_seen >= ? "
                "ORDER BY first_seen DESC LIMIT 1",
                (key, kind, now - self.dedup_window_s),
            ).fetchone()
        if previous is not None:
            alert_id, state, sent_once, count, audit_json, _ = previous
            if state == PENDING and not sent_once:
                ids = json.loads(audit_json)
                ids.extend(audit[: max(0, MAX_AUDIT_IDS - len(ids))])
                cur.execute(
                    "UPDATE alerts SET count = count + 1, last_seen = ?, audit_ids = ? "
                    "WHERE id = ?",
                    (now, json.dumps(ids), alert_id),
                )
                return Enqueued(alert_id, count + 1, merged=True)
        alert_id = uuid.uuid4().hex
        follow_up_of = previous[0] if previous is not None else None
        due_at = max(now, previous[5] + self.dedup_window_s) if previous is not None else now
        cur.execute(
            "INSERT INTO alerts (id, kind, state, dedup_key, details, count, first_seen, "
            "last_seen, audit_ids, follow_up_of, due_at, retry_from) "
            "VALUES (?, ?, ?, ?, ?, 1, ?, ?, ?, ?, ?, ?)",
            (
                alert_id,
                kind,
                PENDING,
                key,
                details.to_json(),
                now,
                now,
                json.dumps(audit),
                follow_up_of,
                due_at,
                due_at,
            ),
        )
        return Enqueued(alert_id, 1, merged=False)

    def claim(
        self, lease_s: float, limit: int = 50, *, receivers: Sequence[str] | None = None
    ) -> list[Claim]:
        """Take the deliveries that are due now, for every configured channel or only these
        `receivers` (each receiver's worker claims its own, so none waits for another)."""
        channels = self._channels(receivers)
        if not channels:
            return []
        now = self.clock()
        # A time further ahead than any wait this outbox schedules was set while the clock ran
        # ahead: due now, not once the clock has caught up, days later (a41 F4).
        ahead = now + CLOCK_WAS_AHEAD_S
        marks = ",".join("?" * len(channels))
        claims: list[Claim] = []
        with self._transaction() as cur:
            rows = cur.execute(
                f"SELECT * FROM alerts a WHERE a.state = ? AND (a.due_at <= ? OR a.due_at > ?) "
                f"AND ((SELECT COUNT(*) FROM deliveries d WHERE d.alert_id = a.id"
                f"  AND d.receiver IN ({marks})) < ?"
                f" OR EXISTS (SELECT 1 FROM deliveries d WHERE d.alert_id = a.id AND d.receiver"
                f"  IN ({marks}) AND d.state = ? AND (d.next_at <= ? OR d.next_at > ?)))"
                f" ORDER BY a.first_seen LIMIT ?",
                (PENDING, now, ahead, *channels, len(channels), *channels, PENDING, now, ahead,
                 limit),
            ).fetchall()  # fmt: skip
            for row in rows:
                alert = self._alert(row)
                for receiver in channels:
                    delivery = cur.execute(
                        "SELECT state, attempts, next_at FROM deliveries "
                        "WHERE alert_id = ? AND receiver = ?",
                        (alert.id, receiver),
                    ).fetchone()
                    if delivery is None:
                        cur.execute(
                            "INSERT INTO deliveries (alert_id, receiver, state, next_at, "
                            "leased_until) VALUES (?, ?, ?, ?, ?)",
                            (alert.id, receiver, PENDING, now + lease_s, now + lease_s),
                        )
                        attempts = 0
                    elif delivery[0] == PENDING and not now < delivery[2] <= ahead:
                        cur.execute(
                            "UPDATE deliveries SET next_at = ?, leased_until = ? "
                            "WHERE alert_id = ? AND receiver = ?",
                            (now + lease_s, now + lease_s, alert.id, receiver),
                        )
                        attempts = delivery[1]
                    else:
                        continue
                    claims.append(
                        Claim(alert, receiver, attempts, row["retry_from"], now + lease_s)
                    )
                cur.execute("UPDATE alerts SET sent_once = 1 WHERE id = ?", (alert.id,))
        return claims

    def renew(self, claim: Claim, lease_s: float) -> Claim | None:
        """The claim, its lease from now; None once it lapsed and another sender took it (a
        slow receiver's batch outlived it while `alerts retry` ran: it would be sent twice)."""
        now = self.clock()
        with self._transaction() as cur:
            cur.execute("UPDATE deliveries SET next_at = ?, leased_until = ? WHERE alert_id = ? "
                        "AND receiver = ? AND state = ? AND next_at = ?", (now + lease_s,
                        now + lease_s, claim.alert.id, claim.receiver, PENDING,
                        claim.lease_until))  # fmt: skip
            kept = cur.rowcount == 1
        return replace(claim, lease_until=now + lease_s) if kept else None

    def _channels(self, receivers: Sequence[str] | None) -> tuple[str, ...]:
        if receivers is None:
            return self.channels
        return tuple(r for r in self.channels if r in receivers)

    def delivered(
        self,
        alert_id: str,
        receiver: str,
        outcome: str = "delivered",
        *,
        wanted: Sequence[str] = (),
    ) -> None:
        """Record a delivery (or "not_routed": settled unsent); `wanted` as in `_settle`."""
        now = self.clock()
        with self._transaction() as cur:
            cur.execute(
                "UPDATE deliveries SET state = ?, last_outcome = ?, last_error = NULL, "
                "finished_at = ?, leased_until = NULL WHERE alert_id = ? AND receiver = ?",
                (DELIVERED, outcome, now, alert_id, receiver),
            )
            self._settle(cur, alert_id, now, wanted)

    def failed(
        self,
        alert_id: str,
        receiver: str,
        outcome: str,
        error: str,
        *,
        next_at: float | None,
        wanted: Sequence[str] = (),
    ) -> None:
        """Record a failed attempt: try again at `next_at`, or dead-letter it (None)."""
        now = self.clock()
        with self._transaction() as cur:
            cur.execute(
                "UPDATE deliveries SET attempts = attempts + 1, last_outcome = ?, last_error = ?, "
                "state = ?, next_at = ?, finished_at = ?, leased_until = NULL "
                "WHERE alert_id = ? AND receiver = ?",
                (
                    outcome,
                    error[:500],
                    PENDING if next_at is not None else DEAD,
                    next_at if next_at is not None else now,
                    None if next_at is not None else now,
                    alert_id,
                    receiver,
                ),
            )
            self._settle(cur, alert_id, now, wanted)

    def _settle(
        self, cur: sqlite3.Cursor, alert_id: str, now: float, wanted: Sequence[str] = ()
    ) -> None:
        """An alert is finished once every configured channel has delivered or died. `wanted`:
        the receivers whose groups take it now; one of them settled unsent by the groups it had
        before a reload is due again first (adversarial pass a35 F4)."""
        if not self.channels:
            return
        if taken := self._channels(wanted):
            self._reopen(cur, alert_id, taken, now)
        marks = ",".join("?" * len(self.channels))
        states = [
            r[0]
            for r in cur.execute(
                f"SELECT state FROM deliveries WHERE alert_id = ? AND receiver IN ({marks})",
                (alert_id, *self.channels),
            )
        ]
        if len(states) < len(self.channels) or PENDING in states:
            return
        final = DEAD if DEAD in states else DELIVERED
        if (
            final == DELIVERED
            and not cur.execute(
                f"SELECT 1 FROM deliveries WHERE alert_id = ? AND receiver IN ({marks}) AND "
                "last_outcome != ?",
                (alert_id, *self.channels, NOT_ROUTED),
            ).fetchone()
        ):
            # Every receiver left it out, each by the groups it had when asked: a reload gave
            # the group to one that was asked before (adversarial pass a30 AL7f). Asked again,
            # by today's groups; never finished as delivered to nobody.
            cur.execute(
                f"UPDATE deliveries SET state = ?, next_at = ?, finished_at = NULL, "
                f"last_outcome = NULL WHERE alert_id = ? AND receiver IN ({marks})",
                (PENDING, now, alert_id, *self.channels),
            )
            return
        cur.execute(
            "UPDATE alerts SET state = ?, finished_at = ? WHERE id = ?", (final, now, alert_id)
        )

    def _reopen(
        self, cur: sqlite3.Cursor, alert_id: str, receivers: Sequence[str], now: float
    ) -> int:
        """Make these receivers' deliveries of a pending alert that were settled "not_routed"
        due now, as if never asked; a delivered or dead one stays as it is."""
        marks = ",".join("?" * len(receivers))
        cur.execute(
            f"UPDATE deliveries SET state = ?, next_at = ?, finished_at = NULL, last_outcome = "
            f"NULL WHERE alert_id = ? AND state = ? AND last_outcome = ? AND receiver IN "
            f"({marks}) AND alert_id IN (SELECT id FROM alerts WHERE state = ?)",
            (PENDING, now, alert_id, DELIVERED, NOT_ROUTED, *receivers, PENDING),
        )
        return cur.rowcount

    def reroute(self, receiver: str, takes: Callable[[Alert], bool]) -> int:
        """Re-open `receiver`'s deliveries settled unsent for pending alerts that `takes` says
        are its now (a reload gave it their group); how many."""
        if receiver not in self.channels:
            return 0
        with self._lock:  # read first: a pass that finds nothing takes no write lock
            rows = self._db.execute(
                "SELECT a.* FROM alerts a JOIN deliveries d ON d.alert_id = a.id WHERE a.state = ?"
                " AND d.receiver = ? AND d.state = ? AND d.last_outcome = ?",
                (PENDING, receiver, DELIVERED, NOT_ROUTED),
            ).fetchall()
            ids = [row["id"] for row in rows if takes(self._alert(row, deliveries=False))]
        if not ids:
            return 0
        now = self.clock()
        with self._transaction() as cur:
            return sum(self._reopen(cur, alert_id, (receiver,), now) for alert_id in ids)

    def retry(self, alert_ids: Sequence[str] = ()) -> int:
        """Dead or pending alerts (all, or these ids) back to due now, their age clock restarted.
        A delivery another sender holds (the proxy, another `alerts retry`) is left to it: made
        due again, it was claimed and sent a second time while the first was on its way
        (adversarial pass a39 F3: 9 duplicates of 5 alerts)."""
        now = self.clock()
        where = "state IN (?, ?)"
        params: list[object] = [PENDING, DEAD]
        if alert_ids:
            where += f" AND id IN ({','.join('?' * len(alert_ids))})"
            params.extend(alert_ids)
        with self._transaction() as cur:
            ids = [r[0] for r in cur.execute(f"SELECT id FROM alerts WHERE {where}", params)]
            for alert_id in ids:
                cur.execute(
                    "UPDATE alerts SET state = ?, due_at = ?, retry_from = ?, finished_at = NULL "
                    "WHERE id = ?",
                    (PENDING, now, now, alert_id),
                )
                cur.execute(
                    "UPDATE deliveries SET state = ?, next_at = ?, finished_at = NULL "
                    "WHERE alert_id = ? AND (state = ? OR (state = ? AND "
                    "(leased_until IS NULL OR leased_until <= ?)))",
                    (PENDING, now, alert_id, DEAD, PENDING, now),
                )
        return len(ids)

    # -- reading -------------------------------------------------------------------------------

    def stats(self) -> OutboxStats:
        now = self.clock()
        with self._lock:
            pending, oldest = self._db.execute(
                "SELECT COUNT(*), MIN(first_seen) FROM alerts WHERE state = ?", (PENDING,)
            ).fetchone()
            (dead,) = self._db.execute(
                "SELECT COUNT(*) FROM alerts WHERE state = ?", (DEAD,)
            ).fetchone()
        age = max(0.0, now - oldest) if oldest is not None else 0.0
        return OutboxStats(pending=pending, oldest_pending_age_s=age, dead=dead)

    def next_due(self, receivers: Sequence[str] | None = None) -> float | None:
        """When the next delivery (of all, or of these receivers) is due (None: nothing is
        waiting), for the sender's sleep."""
        channels = self._channels(receivers)
        if not channels:
            return None
        marks = ",".join("?" * len(channels))
        with self._lock:
            (new_due,) = self._db.execute(
                f"SELECT MIN(a.due_at) FROM alerts a WHERE a.state = ? AND "
                f"(SELECT COUNT(*) FROM deliveries d WHERE d.alert_id = a.id "
                f"AND d.receiver IN ({marks})) < ?",
                (PENDING, *channels, len(channels)),
            ).fetchone()
            (retry_due,) = self._db.execute(
                f"SELECT MIN(MAX(d.next_at, a.due_at)) FROM deliveries d "
                f"JOIN alerts a ON a.id = d.alert_id WHERE a.state = ? AND d.state = ? "
                f"AND d.receiver IN ({marks})",
                (PENDING, PENDING, *channels),
            ).fetchone()
        candidates = [t for t in (new_due, retry_due) if t is not None]
        return min(candidates) if candidates else None

    def forget(self, alert_ids: Sequence[str]) -> int:
        """Delete these alerts (retention of the DSL's console); one still pending stays."""
        with self._transaction() as cur:
            removed = 0
            for alert_id in alert_ids:
                cur.execute("DELETE FROM alerts WHERE id = ? AND state != ?", (alert_id, PENDING))
                removed += cur.rowcount
        return removed

    def has_decision(self, audit_id: str) -> bool:
        """Whether an alert names this audit log decision (a spool read back twice)."""
        try:
            with self._lock:
                found = self._db.execute("SELECT 1 FROM alerts WHERE instr(audit_ids, ?) > 0",
                                         (json.dumps(audit_id),)).fetchone()  # fmt: skip
        except sqlite3.Error as exc:
            raise OutboxError(f"cannot read the alert outbox {self.path}: {exc}") from exc
        return found is not None
