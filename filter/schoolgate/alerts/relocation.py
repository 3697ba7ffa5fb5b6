"""An outbox moved in the configuration takes its undelivered alerts along.

The outbox is the only copy of an alert that is not delivered yet. IT moves it (`alerts.outbox`)
when the disk it was on filled up, which is exactly when alerts are waiting; the new file
started empty and the old one was read by nobody, so every pending or dead-lettered alert was
stranded without a word (adversarial passes a38 A23, a39 F4). The outbox last used is recorded
in the data directory; when the configuration names another, the alerts not yet delivered move
into the new one (delivered ones stay behind as history), before any sender starts.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
from pathlib import Path
from typing import Final

from schoolgate.alerts.outbox import DELIVERED
from schoolgate.files import append_line, write_atomic

log = logging.getLogger("schoolgate.alerts")

RECORD: Final = "alerts.outbox-path"  # in data_dir: the outbox last used, one absolute path
DEFAULT: Final = "alerts.sqlite"  # in data_dir: where the outbox is when nothing says otherwise
_ALERT_COLUMNS: Final = (
    "id, kind, state, dedup_key, details, count, first_seen, last_seen, audit_ids, "
    "follow_up_of, due_at, retry_from, sent_once, finished_at"
)
_DELIVERY_COLUMNS: Final = (
    "alert_id, receiver, state, attempts, next_at, last_outcome, last_error, finished_at"
)


class MoveError(Exception):
    """The previous outbox holds alerts that could not be moved."""


def previous_outbox(outbox: Path, data_dir: Path) -> Path | None:
    """The outbox used before, where it is not `outbox`: the one recorded, else the default
    one (an appliance from before the record, or one that never moved it)."""
    record = data_dir / RECORD
    try:
        named = record.read_text("utf-8").strip()
    except FileNotFoundError:
        named = ""
    previous = Path(named) if named else data_dir / DEFAULT
    return None if _same(previous, outbox) else previous


def undelivered(path: Path) -> int:
    """Alerts in the outbox at `path` not yet delivered everywhere (0 if there is none)."""
    if not path.exists():
        return 0
    try:
        with contextlib.closing(sqlite3.connect(path, timeout=10)) as db:
            row = db.execute("SELECT count(*) FROM alerts WHERE state != ?", (DELIVERED,))
            return int(row.fetchone()[0])
    except sqlite3.Error as exc:
        raise MoveError(f"{path}: {exc}") from exc


def follow(outbox: Path, data_dir: Path) -> int:
    """Move the previous outbox's undelivered alerts into `outbox` (whose schema is already in
    place) and record `outbox` as the one in use; how many moved. On failure the record is left
    as it was, so the next start tries again, and MoveError says what is stranded where."""
    previous = previous_outbox(outbox, data_dir)
    moved = 0
    if previous is not None and previous.exists():
        try:
            moved = _move(previous, outbox)
        except sqlite3.Error as exc:
            raise MoveError(
                f"the previous alert outbox {previous} could not be read or emptied ({exc}): its "
                f"undelivered alerts are not sent from {outbox}. Make it readable and restart, "
                f"or set alerts.outbox back to {previous}"
            ) from exc
        if moved:
            log.warning("alerts.outbox moved: %d undelivered alert(s) moved from %s to %s",
                        moved, previous, outbox)  # fmt: skip
    if previous is not None:
        _move_spool(_spool_of(previous), _spool_of(outbox))
    with contextlib.suppress(OSError):  # a read-only data_dir: the default is looked at again
        write_atomic(data_dir / RECORD, f"{outbox.resolve()}\n".encode(), 0o644)
    return moved


def _move(previous: Path, outbox: Path) -> int:
    """Copy first, then delete: a crash between the two sends an alert twice, never not at all."""
    with contextlib.closing(sqlite3.connect(previous, timeout=10, isolation_level=None)) as old:
        old.execute("PRAGMA busy_timeout = 10000")
        alerts = old.execute(
            f"SELECT {_ALERT_COLUMNS} FROM alerts WHERE state != ?", (DELIVERED,)
        ).fetchall()
        if not alerts:
            return 0
        ids = [row[0] for row in alerts]
        deliveries = [
            row
            for chunk in _chunks(ids)
            for row in old.execute(
                f"SELECT {_DELIVERY_COLUMNS} FROM deliveries WHERE alert_id IN "
                f"({','.join('?' * len(chunk))})",
                chunk,
            )
        ]
        with contextlib.closing(sqlite3.connect(outbox, timeout=10, isolation_level=None)) as new:
            new.execute("PRAGMA busy_timeout = 10000")
            new.execute("PRAGMA synchronous = FULL")
            new.execute("BEGIN IMMEDIATE")
            new.executemany(
                f"INSERT OR IGNORE INTO alerts ({_ALERT_COLUMNS}) "
                f"VALUES ({_marks(_ALERT_COLUMNS)})",
                alerts,
            )
            new.executemany(
                f"INSERT OR IGNORE INTO deliveries ({_DELIVERY_COLUMNS}) "
                f"VALUES ({_marks(_DELIVERY_COLUMNS)})",
                deliveries,
            )
            new.execute("COMMIT")
        old.execute("BEGIN IMMEDIATE")
        for chunk in _chunks(ids):
            marks = ",".join("?" * len(chunk))
            old.execute(f"DELETE FROM deliveries WHERE alert_id IN ({marks})", chunk)
            old.execute(f"DELETE FROM alerts WHERE id IN ({marks})", chunk)
        old.execute("COMMIT")
    return len(ids)


def _spool_of(outbox: Path) -> Path:
    return outbox.with_name(outbox.name + ".spool.jsonl")  # as alerts.spool.spool_paths


def _move_spool(previous: Path, spool: Path) -> None:
    """Alerts a full disk kept out of the previous outbox are spooled beside it: they go to
    the spool beside the new one, which the service reads back into the outbox."""
    try:
        lines = previous.read_bytes()
    except FileNotFoundError:
        return
    except OSError as exc:
        raise MoveError(f"the alert spool {previous} cannot be read ({exc})") from exc
    if lines.strip():
        try:
            spool.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(spool, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o600)
            try:
                append_line(fd, lines if lines.endswith(b"\n") else lines + b"\n")
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as exc:
            raise MoveError(f"the alert spool {previous} cannot go to {spool} ({exc})") from exc
        log.warning("alerts.outbox moved: the alert spool %s moved to %s", previous, spool)
    with contextlib.suppress(FileNotFoundError):
        previous.unlink()


def _chunks(ids: list[str], size: int = 500) -> list[list[str]]:
    return [ids[start : start + size] for start in range(0, len(ids), size)]


def _marks(columns: str) -> str:
    return ",".join("?" * len(columns.split(",")))


def _same(one: Path, other: Path) -> bool:
    try:
        return one.resolve() == other.resolve()
    except OSError:
        return False


def notes(outbox: Path, data_dir: Path) -> list[str]:
    """For `check-config`: undelivered alerts in an outbox the configuration no longer names."""
    previous = previous_outbox(outbox, data_dir)
    if previous is None:
        return []
    try:
        waiting = undelivered(previous)
    except MoveError as exc:
        return [f"the previous alert outbox cannot be read ({exc}): its alerts would be stranded"]
    if not waiting:
        return []
    return [
        f"alerts.outbox is {outbox}, and the outbox used before, {previous}, holds {waiting} "
        "undelivered alert(s): they move to the new one when schoolgate next starts or reloads"
    ]
