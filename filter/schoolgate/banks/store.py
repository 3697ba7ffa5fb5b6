"""Persistent hash banks: named lists of signals (hashes) with provenance, stored in SQLite.

One file holds every bank. WAL mode and a busy timeout let several processes (the proxy workers,
the CLI importing a list) open the same file at once. Every change bumps a version counter so a
running matcher can tell cheaply whether it must reload."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from itertools import islice
from pathlib import Path
from typing import Any

from schoolgate.banks.model import (
    Bank,
    BankError,
    Signal,
    SignalInput,
    SignalType,
    check_signal,
    normalise_value,
    validate_bank_name,
)
from schoolgate.sqlite_schema import apply_schema

SCHEMA_VERSION = 1
_BATCH = 20_000  # rows written or read per round trip
# Sentinels instead of NULL so the UNIQUE index treats "no content id / no frame" as equal.
_NO_CONTENT = ""
_NO_FRAME = -1


def _dt(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, tz=UTC)


_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS banks (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    description TEXT NOT NULL,
    source TEXT NOT NULL,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS signals (
    id INTEGER PRIMARY KEY,
    bank_id INTEGER NOT NULL REFERENCES banks(id) ON DELETE CASCADE,
    signal_type TEXT NOT NULL,
    value BLOB NOT NULL,
    quality INTEGER,
    note TEXT NOT NULL,
    source TEXT NOT NULL,
    added_at REAL NOT NULL,
    content_id TEXT NOT NULL,
    frame INTEGER NOT NULL,
    timestamp REAL
);
CREATE UNIQUE INDEX IF NOT EXISTS signals_key
    ON signals (bank_id, signal_type, value, content_id, frame);
CREATE TABLE IF NOT EXISTS features (
    id INTEGER PRIMARY KEY,
    bank_id INTEGER NOT NULL REFERENCES banks(id) ON DELETE CASCADE,
    content_id TEXT NOT NULL,
    view TEXT NOT NULL,
    kind TEXT NOT NULL,
    data BLOB NOT NULL,
    note TEXT NOT NULL,
    source TEXT NOT NULL,
    added_at REAL NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS features_key ON features (bank_id, content_id, view, kind);
CREATE TABLE IF NOT EXISTS provenance (
    bank_id INTEGER PRIMARY KEY REFERENCES banks(id) ON DELETE CASCADE,
    text TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS exemptions (
    sha256 TEXT NOT NULL,
    kind TEXT NOT NULL,
    source TEXT NOT NULL,
    reason TEXT NOT NULL,
    incident TEXT NOT NULL,
    added_by TEXT NOT NULL,
    added_at REAL NOT NULL,
    PRIMARY KEY (sha256, kind, source)
);
"""


class BankStore:
    """Every bank in one SQLite file. Safe to share between threads and processes."""

    def __init__(self, path: Path, busy_timeout_s: float = 30.0) -> None:
        self.path = Path(path)
        self._lock = threading.RLock()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._conn = sqlite3.connect(
                self.path, timeout=busy_timeout_s, isolation_level=None, check_same_thread=False
            )
            self._conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_s * 1000)}")
            self._conn.execute("PRAGMA journal_mode = WAL")
            self._conn.execute("PRAGMA synchronous = NORMAL")
            self._conn.execute("PRAGMA foreign_keys = ON")
            # Big imports insert random 32-byte keys into the unique index: a larger page cache
            # keeps most of it in memory (measured ~3x faster at 1M rows than the 2 MiB default).
            self._conn.execute("PRAGMA cache_size = -65536")
            self._init_schema()
        except (sqlite3.Error, OSError) as exc:
            raise BankError(f"cannot open the bank database {self.path}: {exc}") from exc

    def _init_schema(self) -> None:
        with self.write() as cur:
            new = apply_schema(cur, _SCHEMA, SCHEMA_VERSION, what="bank", path=self.path,
                               error=BankError, key="schema_version")  # fmt: skip
            if new:
                cur.execute("INSERT INTO meta VALUES ('version', 0)")

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def __enter__(self) -> BankStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- transactions --------------------------------------------------------------------------

    class _Tx:
        """BEGIN IMMEDIATE ... COMMIT under the store lock; ROLLBACK on any error."""

        def __init__(self, store: BankStore, bump: bool) -> None:
            self.store = store
            self.bump = bump

        def __enter__(self) -> sqlite3.Cursor:
            self.store._lock.acquire()
            try:
                self.cur = self.store._conn.cursor()
                self.cur.execute("BEGIN IMMEDIATE")
            except BaseException:
                self.store._lock.release()
                raise
            return self.cur

        def __exit__(
            self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: object
        ) -> None:
            try:
                if exc_type is None:
                    if self.bump:
                        self.cur.execute("UPDATE meta SET value = value + 1 WHERE key = 'version'")
                    self.cur.execute("COMMIT")
                else:
                    self.cur.execute("ROLLBACK")
            except sqlite3.Error as failure:
                raise BankError(f"bank database {self.store.path}: {failure}") from failure
            finally:
                self.store._lock.release()
            if isinstance(exc, sqlite3.Error):
                raise BankError(f"bank database {self.store.path}: {exc}") from exc

    def write(self, bump: bool = False) -> BankStore._Tx:
        """A write transaction; `bump` tells running matchers that what they match changed."""
        return BankStore._Tx(self, bump)

    def read(self, sql: str, params: tuple[Any, ...] = ()) -> list[Any]:
        """Rows of one query, under the store lock."""
        with self._lock:
            try:
                return self._conn.execute(sql, params).fetchall()
            except sqlite3.Error as exc:
                raise BankError(f"bank database {self.path}: {exc}") from exc

    def _bank_id(self, cur: sqlite3.Cursor, name: str) -> int:
        row = cur.execute("SELECT id FROM banks WHERE name = ?", (name,)).fetchone()
        if row is None:
            raise BankError(f"no bank named {name!r}")
        return int(row[0])

    # -- banks ---------------------------------------------------------------------------------

    def create_bank(self, name: str, description: str = "", source: str = "") -> Bank:
        """Create an empty bank. Raises BankError if the name is invalid or taken."""
        validate_bank_name(name)
        now = time.time()
        with self.write(bump=True) as cur:
            if cur.execute("SELECT 1 FROM banks WHERE name = ?", (name,)).fetchone():
                raise BankError(f"a bank named {name!r} already exists")
            cur.execute(
                "INSERT INTO banks (name, description, source, created_at, updated_at) "
                "VALUES (?, ?, ?, ?, ?)",
                (name, description, source, now, now),
            )
        return self.bank(name)

    def ensure_bank(self, name: str, description: str = "", source: str = "") -> Bank:
        """The bank called `name`, created if missing (existing metadata is kept)."""
        validate_bank_name(name)
        if not self.read("SELECT 1 FROM banks WHERE name = ?", (name,)):
            try:
                return self.create_bank(name, description, source)
            except BankError:
                pass  # another process created it between our check and insert
        return self.bank(name)

    def delete_bank(self, name: str) -> None:
        """Delete a bank and every signal in it."""
        with self.write(bump=True) as cur:
            self._bank_id(cur, name)  # a clear error for an unknown bank
            self.drop_bank(cur, name)

    @staticmethod
    def drop_bank(cur: sqlite3.Cursor, name: str) -> None:
        """Delete a bank, if there is one, within the caller's write transaction."""
        row = cur.execute("SELECT id FROM banks WHERE name = ?", (name,)).fetchone()
        if row is not None:
            cur.execute("DELETE FROM signals WHERE bank_id = ?", (row[0],))
            cur.execute("DELETE FROM features WHERE bank_id = ?", (row[0],))
            cur.execute("DELETE FROM banks WHERE id = ?", (row[0],))

    def banks(self) -> list[Bank]:
        """Every bank, sorted by name, with per-type counts."""
        counts: dict[int, dict[SignalType, int]] = {}
        for bank_id, signal_type, count in self.read(
            "SELECT bank_id, signal_type, count(*) FROM signals GROUP BY bank_id, signal_type"
        ):
            counts.setdefault(bank_id, {})[SignalType(signal_type)] = count
        rows = self.read(
            "SELECT id, name, description, source, created_at, updated_at FROM banks ORDER BY name"
        )
        return [
            Bank(name, desc, source, _dt(created), _dt(updated), counts.get(bank_id, {}))
            for bank_id, name, desc, source, created, updated in rows
        ]

    def bank(self, name: str) -> Bank:
        """One bank by name. Raises BankError if there is none."""
        rows = self.read(
            "SELECT id, description, source, created_at, updated_at FROM banks WHERE name = ?",
            (name,),
        )
        if not rows:
            raise BankError(f"no bank named {name!r}")
        bank_id, desc, source, created, updated = rows[0]
        counts = {
            SignalType(t): c
            for t, c in self.read(
                "SELECT signal_type, count(*) FROM signals WHERE bank_id = ? GROUP BY signal_type",
                (bank_id,),
            )
        }
        return Bank(name, desc, source, _dt(created), _dt(updated), counts)

    # -- signals -------------------------------------------------------------------------------

    def add_signals(self, bank: str, signals: Iterable[SignalInput], source: str) -> int:
        """Add signals to `bank` in one transaction; return how many were new.

        Duplicates (same type, value, content id and frame) are ignored. Any invalid signal
        aborts the whole import (nothing is added) with a BankError naming its position.
        """
        now = time.time()
        with self.write(bump=True) as cur:
            bank_id = self._bank_id(cur, bank)
            added = self.insert_signals(cur, bank_id, signals, source, now)
            if added:
                cur.execute("UPDATE banks SET updated_at = ? WHERE id = ?", (now, bank_id))
        return added

    def insert_signals(
        self, cur: sqlite3.Cursor, bank_id: int, signals: Iterable[SignalInput], source: str,
        now: float,
    ) -> int:  # fmt: skip
        """Add signals within the caller's write transaction (trust.replica applies a bundle in
        one); return how many were new."""
        before = self._conn.total_changes
        rows = self._rows(bank_id, signals, source, now)
        while batch := list(islice(rows, _BATCH)):
            cur.executemany(
                "INSERT OR IGNORE INTO signals (bank_id, signal_type, value, quality, note, "
                "source, added_at, content_id, frame, timestamp) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                batch,
            )
        return self._conn.total_changes - before

    @staticmethod
    def _rows(
        bank_id: int, signals: Iterable[SignalInput], source: str, now: float
    ) -> Iterator[tuple[Any, ...]]:
        for position, signal in enumerate(signals, start=1):
            try:
                raw, quality = check_signal(signal)
            except BankError as exc:
                raise BankError(f"signal #{position}: {exc}") from None
            yield (
                bank_id,
                str(signal.signal_type),
                raw,
                quality,
                signal.note,
                source,
                now,
                signal.content_id or _NO_CONTENT,
                _NO_FRAME if signal.frame is None else signal.frame,
                signal.timestamp,
            )

    def remove_signal(self, bank: str, signal_type: SignalType, value: str) -> bool:
        """Remove a value (every frame of it for vpdq) from a bank; False if it was not there."""
        signal_type = SignalType(signal_type)
        raw = normalise_value(signal_type, value)
        with self.write(bump=True) as cur:
            bank_id = self._bank_id(cur, bank)
            cur.execute(
                "DELETE FROM signals WHERE bank_id = ? AND signal_type = ? AND value = ?",
                (bank_id, signal_type.value, raw),
            )
            removed = cur.rowcount > 0
            if removed:
                cur.execute("UPDATE banks SET updated_at = ? WHERE id = ?", (time.time(), bank_id))
        return removed

    def iter_signals(
        self, bank: str | None = None, signal_type: SignalType | None = None
    ) -> Iterator[Signal]:
        """Stored signals in insertion order, optionally only one bank and/or one type."""
        for name, stype, raw, quality, note, source, added, content, frame, ts in self._select(
            "s.signal_type, s.value, s.quality, s.note, s.source, s.added_at, s.content_id, "
            "s.frame, s.timestamp",
            bank,
            signal_type,
        ):
            yield Signal(
                bank=name,
                signal_type=SignalType(stype),
                value=raw.hex(),
                quality=quality,
                note=note,
                source=source,
                added_at=_dt(added),
                content_id=content or None,
                frame=None if frame == _NO_FRAME else frame,
                timestamp=ts,
            )

    def iter_raw(
        self, signal_type: SignalType, bank: str | None = None
    ) -> Iterator[tuple[str, bytes, int | None, str]]:
        """(bank, value bytes, quality, note) tuples: the cheap path for building big indexes."""
        yield from self._select("s.value, s.quality, s.note", bank, signal_type)

    def iter_video_frames(
        self, bank: str | None = None
    ) -> Iterator[tuple[str, str, bytes, int | None, str]]:
        """(bank, content id, frame hash, quality, note) of every vPDQ frame, video by video."""
        yield from self._select("s.content_id, s.value, s.quality, s.note", bank, SignalType.VPDQ)

    def _select(
        self, columns: str, bank: str | None, signal_type: SignalType | None
    ) -> Iterator[tuple[Any, ...]]:
        where: list[str] = []
        params: list[Any] = []
        if bank is not None:
            self.bank(bank)  # a clear error for an unknown bank
            where.append("b.name = ?")
            params.append(bank)
        if signal_type is not None:
            where.append("s.signal_type = ?")
            params.append(SignalType(signal_type).value)
        sql = f"SELECT b.name, {columns} FROM signals s JOIN banks b ON b.id = s.bank_id"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY s.id"
        # A separate read connection: iterating must not hold the lock that writers need.
        conn = sqlite3.connect(self.path, timeout=30.0, check_same_thread=False)
        try:
            cursor = conn.execute(sql, params)
            while rows := cursor.fetchmany(_BATCH):
                yield from rows
        except sqlite3.Error as exc:
            raise BankError(f"bank database {self.path}: {exc}") from exc
        finally:
            conn.close()

    # -- local feature sets (the robust tier) ---------------------------------------------------
    # Derived data, never the media: keypoint positions and descriptors of a banked item's views
    # (whole image, content box, mirror), grouped by the item's content id. The store treats the
    # data as opaque bytes; schoolgate.media.features defines the format, `kind` names its version.

    def add_features(
        self,
        bank: str,
        content_id: str,
        kind: str,
        views: Iterable[tuple[str, bytes]],
        note: str = "",
        source: str = "",
    ) -> int:
        """Store (view name, feature bytes) sets for one item; return how many were new."""
        if not content_id:
            raise BankError("a feature set needs a content_id (which item it belongs to)")
        now = time.time()
        with self.write(bump=True) as cur:
            bank_id = self._bank_id(cur, bank)
            before = self._conn.total_changes
            cur.executemany(
                "INSERT OR IGNORE INTO features (bank_id, content_id, view, kind, data, note, "
                "source, added_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    (bank_id, content_id, view, kind, data, note, source, now)
                    for view, data in views
                ],
            )
            added = self._conn.total_changes - before
            if added:
                cur.execute("UPDATE banks SET updated_at = ? WHERE id = ?", (now, bank_id))
        return added

    def iter_features(
        self, kind: str, banks: Iterable[str] | None = None, limit: int | None = None
    ) -> Iterator[tuple[str, str, str, bytes, str]]:
        """(bank, content_id, view, data, note) of one feature kind, newest items first.

        `limit` caps the number of rows read, so a huge bank cannot exhaust memory.
        """
        sql = (
            "SELECT b.name, f.content_id, f.view, f.data, f.note FROM features f "
            "JOIN banks b ON b.id = f.bank_id WHERE f.kind = ?"
        )
        params: list[Any] = [kind]
        if banks is not None:
            names = list(banks)
            sql += f" AND b.name IN ({', '.join('?' * len(names))})" if names else " AND 0"
            params += names
        sql += " ORDER BY f.id DESC"
        if limit is not None:
            sql += " LIMIT ?"
            params.append(int(limit))
        for row in self.read(sql, tuple(params)):
            yield row[0], row[1], row[2], bytes(row[3]), row[4]

    def provenance(self) -> dict[str, str]:
        """Where shared banks came from (school, when, why), by bank; a bank made here has none."""
        rows = self.read("SELECT b.name, p.text FROM provenance p JOIN banks b ON b.id = p.bank_id")
        return dict(rows)

    def set_provenance(self, cur: sqlite3.Cursor, bank: str, text: str) -> None:
        """Within the caller's write transaction (trust.replica, trust.publish)."""
        bank_id = self._bank_id(cur, bank)
        if text:
            cur.execute("INSERT OR REPLACE INTO provenance VALUES (?, ?)", (bank_id, text))
        else:
            cur.execute("DELETE FROM provenance WHERE bank_id = ?", (bank_id,))

    def feature_kinds(self, bank: str) -> list[str]:
        """The feature kinds (format versions) one bank holds."""
        rows = self.read("SELECT DISTINCT f.kind FROM features f JOIN banks b ON b.id = f.bank_id "
                         "WHERE b.name = ? ORDER BY f.kind", (bank,))  # fmt: skip
        return [kind for (kind,) in rows]

    def remove_item(self, bank: str, content_id: str) -> int:
        """Remove everything banked for one item (its hashes, the views' PDQs, its frames and
        feature sets, all filed under its SHA-256); how many rows went."""
        with self.write(bump=True) as cur:
            bank_id = self._bank_id(cur, bank)
            query = "DELETE FROM {} WHERE bank_id = ? AND content_id = ?"
            return sum(int(cur.execute(query.format(table), (bank_id, content_id)).rowcount)
                       for table in ("signals", "features"))  # fmt: skip

    def feature_counts(self) -> dict[str, int]:
        """Items with feature sets, per bank (banks without any are left out)."""
        rows = self.read(
            "SELECT b.name, count(DISTINCT f.content_id) FROM features f "
            "JOIN banks b ON b.id = f.bank_id GROUP BY b.name"
        )
        return {name: int(count) for name, count in rows}

    # -- bookkeeping ---------------------------------------------------------------------------

    def version(self) -> int:
        """A counter that increments on every change, across processes."""
        return int(self.read("SELECT value FROM meta WHERE key = 'version'")[0][0])

    def stats(self) -> dict[str, Any]:
        """Per-bank per-type counts with created/updated times, the total and the file size."""
        banks = self.banks()
        feature_items = self.feature_counts()
        size = 0
        for suffix in ("", "-wal", "-shm"):
            part = Path(f"{self.path}{suffix}")
            if part.exists():
                size += part.stat().st_size
        return {
            "path": str(self.path),
            "version": self.version(),
            "db_bytes": size,
            "total": sum(b.total for b in banks),
            "banks": {
                b.name: {
                    "source": b.source,
                    "created_at": b.created_at.isoformat(),
                    "updated_at": b.updated_at.isoformat(),
                    "counts": {t.value: c for t, c in sorted(b.counts.items())},
                    "total": b.total,
                    "feature_items": feature_items.get(b.name, 0),
                }
                for b in banks
            },
        }
