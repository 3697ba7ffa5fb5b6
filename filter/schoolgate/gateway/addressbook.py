"""Which names the gateway's resolver gave out which addresses for (an SQLite file in data_dir).

The resolver records every A/AAAA answer it gives pupils' devices; the proxy reads the book to
tell whether a TLS connection's server name belongs to the address it was opened to. A pupil
who opens a connection to a catalogued service's address with another name in the ClientHello
(domain fronting: the name of a site we pass uninspected) is then refused. Answers are kept for
their TTL, and at least `min_ttl_s`, because devices keep using an address after the TTL ends.
"""

from __future__ import annotations

import ipaddress
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Final

from schoolgate.errors import SchoolgateError

_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS answers (
    address TEXT NOT NULL,
    name TEXT NOT NULL,
    expires REAL NOT NULL,
    PRIMARY KEY (address, name)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS answers_by_name ON answers (name);
CREATE INDEX IF NOT EXISTS answers_by_expiry ON answers (expires)
"""
MAX_TTL_S: Final = 86_400.0
ADDRESS_BOOK: Final = "addresses.sqlite"  # in data_dir, shared by the resolver and the proxy


class AddressBookError(SchoolgateError):
    """The address book file cannot be opened or written."""


def _address(text: str) -> str | None:
    try:
        address = ipaddress.ip_address(text.strip())
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return str(address)


class AddressBook:
    """name <-> address pairs the resolver handed out, with expiry. Thread- and process-safe."""

    def __init__(
        self,
        path: Path,
        *,
        min_ttl_s: float = 1800.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.path = Path(path)
        self.min_ttl_s = min_ttl_s
        self.clock = clock
        self._lock = threading.Lock()
        self._last_prune = 0.0
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path, timeout=5, isolation_level=None,
                                       check_same_thread=False)  # fmt: skip
            self._db.execute("PRAGMA journal_mode = WAL")
            self._db.execute("PRAGMA synchronous = NORMAL")  # a lost answer is re-learnt
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    self._db.execute(statement)
        except sqlite3.Error as error:
            raise AddressBookError(f"cannot open the address book {self.path}: {error}") from error

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def record(self, name: str, addresses: Iterable[str], ttl_s: float) -> None:
        """`name` resolved to `addresses` for `ttl_s` seconds (kept at least min_ttl_s)."""
        name = name.strip().rstrip(".").lower()
        now = self.clock()
        expires = now + min(max(ttl_s, self.min_ttl_s), MAX_TTL_S)
        rows = [(a, name, expires) for text in addresses if (a := _address(text))]
        if not name or not rows:
            return
        with self._lock:
            try:
                self._db.executemany(
                    "INSERT INTO answers (address, name, expires) VALUES (?, ?, ?) "
                    "ON CONFLICT (address, name) DO UPDATE SET "
                    "expires = max(expires, excluded.expires)",
                    rows,
                )
                if now - self._last_prune > 60:
                    self._last_prune = now
                    self._db.execute("DELETE FROM answers WHERE expires < ?", (now,))
            except sqlite3.Error as error:
                raise AddressBookError(f"cannot write the address book: {error}") from error

    def forget(self, address: str, names: Iterable[str]) -> int:
        """Drop these names' answers for `address`; how many went."""
        key = _address(address)
        wanted = [n.strip().rstrip(".").lower() for n in names]
        if key is None or not wanted:
            return 0
        marks = ",".join("?" * len(wanted))
        with self._lock:
            try:
                cursor = self._db.execute(
                    f"DELETE FROM answers WHERE address = ? AND name IN ({marks})", (key, *wanted)
                )
            except sqlite3.Error as error:
                raise AddressBookError(f"cannot write the address book: {error}") from error
        return int(cursor.rowcount)

    def live(self) -> int:
        """How many answers have not expired (the resolver renews every catalogued name's
        every ten minutes, so none while it runs means it does not)."""
        with self._lock:
            try:
                row = self._db.execute(
                    "SELECT count(*) FROM answers WHERE expires >= ?", (self.clock(),)
                ).fetchone()
            except sqlite3.Error as error:
                raise AddressBookError(f"cannot read the address book: {error}") from error
        return int(row[0])

    def answers(self, limit: int = 100_000) -> dict[str, tuple[list[str], float]]:
        """Every unexpired answer: name -> (addresses, seconds left), at most `limit` rows."""
        now = self.clock()
        with self._lock:
            try:
                rows = self._db.execute(
                    "SELECT name, address, expires FROM answers WHERE expires >= ? LIMIT ?",
                    (now, limit),
                ).fetchall()
            except sqlite3.Error:
                return {}
        found: dict[str, tuple[list[str], float]] = {}
        for name, address, expires in rows:
            addresses, left = found.get(name, ([], expires - now))
            addresses.append(address)
            found[name] = (addresses, min(left, expires - now))
        return found

    def names_for(self, address: str) -> frozenset[str]:
        """Every unexpired name the resolver gave out `address` for."""
        key = _address(address)
        if key is None:
            return frozenset()
        with self._lock:
            try:
                rows = self._db.execute(
                    "SELECT name FROM answers WHERE address = ? AND expires >= ?",
                    (key, self.clock()),
                ).fetchall()
            except sqlite3.Error:
                return frozenset()  # unreadable: nothing known, the caller decides
        return frozenset(row[0] for row in rows)


def fronting_unchecked(transparent: bool, refuse: bool, book: AddressBook | None) -> str | None:
    """Why the gateway does not check for domain fronting although `proxy.sni_mismatch` asks
    it to (`refuse`, in `transparent` mode), read from the resolver's address `book` (None: the
    resolver is off); None where it checks (adversarial pass a80 F1: with the resolver off, a
    pupil reached a catalogued upload host under another server name, uninspected, and nothing
    said so)."""
    if not transparent or not refuse:
        return None
    if book is None:
        return (
            "domain fronting is not checked: proxy.sni_mismatch needs the gateway's resolver "
            "(resolver.enabled: true, service schoolgate-resolver), and without it a pupil "
            "can reach a catalogued site under another server name uninspected"
        )
    if book.live() == 0:
        return (
            "domain fronting is not checked yet: the resolver's address book holds no answer "
            "(is schoolgate-resolver running?)"
        )
    return None
