"""The console's own records in SQLite: accounts, sessions, each incident's workflow and action
history, and the access log. Never media, never a link to it: an incident's evidence stays in
the alert outbox (hashes and metadata), which the console reads and does not copy.

Passwords are argon2id hashes (argon2-cffi's defaults, rehashed when those change). A session
is a random token whose SHA-256 alone is stored, so a copy of the database cannot be used to
sign in; each session has its own CSRF token.
"""

from __future__ import annotations

import hashlib
import secrets
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from schoolgate.console.usernames import reads_like, valid_username
from schoolgate.errors import SchoolgateError
from schoolgate.sqlite_schema import apply_schema

SCHEMA_VERSION: Final = 1
ROLES: Final = ("dsl", "it", "admin")
NEW, ACKNOWLEDGED, CLOSED = "new", "acknowledged", "closed"
STATUSES: Final = (NEW, ACKNOWLEDGED, CLOSED)
# Outcomes a DSL closes an incident with (mapped onto CPOMS / MyConcern categories in docs/dsl.md).
OUTCOMES: Final = {
    "referred_police_ceop": "Referred to police / CEOP",
    "referred_social_care": "Referred to children's social care",
    "pupil_supported": "Pupil supported in school",
    "no_further_action": "No further action",
    "false_positive": "False positive (not what was matched)",
}
MIN_PASSWORD: Final = 12
_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS accounts (
    username TEXT PRIMARY KEY,
    role TEXT NOT NULL,
    password TEXT NOT NULL,
    created_at REAL NOT NULL,
    failed INTEGER NOT NULL DEFAULT 0,
    locked_until REAL NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS sessions (
    token TEXT PRIMARY KEY,
    username TEXT NOT NULL REFERENCES accounts (username) ON DELETE CASCADE,
    csrf TEXT NOT NULL,
    created_at REAL NOT NULL,
    last_seen REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS incidents (
    id TEXT PRIMARY KEY,
    status TEXT NOT NULL,
    assignee TEXT,
    outcome TEXT,
    updated_at REAL NOT NULL,
    closed_at REAL
);
CREATE TABLE IF NOT EXISTS actions (
    id INTEGER PRIMARY KEY,
    incident TEXT NOT NULL,
    at REAL NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    detail TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS actions_by_incident ON actions (incident, at);
CREATE TABLE IF NOT EXISTS access_log (
    id INTEGER PRIMARY KEY,
    at REAL NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    target TEXT NOT NULL,
    remote TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS access_by_time ON access_log (at);
CREATE TABLE IF NOT EXISTS proposals (
    incident TEXT NOT NULL,
    label TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    proposed_by TEXT NOT NULL,
    reason TEXT NOT NULL,
    at REAL NOT NULL,
    PRIMARY KEY (incident, label)
);
"""


class ConsoleError(SchoolgateError):
    """A console record could not be read or written, or an account request is invalid."""


@dataclass(frozen=True)
class Account:
    username: str
    role: str
    created_at: float
    failed: int
    locked_until: float


@dataclass(frozen=True)
class Session:
    token: str  # the cookie's value (only its hash is stored)
    username: str
    role: str
    csrf: str


@dataclass(frozen=True)
class Action:
    at: float
    actor: str
    action: str  # acknowledged, assigned, note, closed, exempted, reopened
    detail: str


@dataclass(frozen=True)
class Workflow:
    status: str = NEW
    assignee: str | None = None
    outcome: str | None = None
    closed_at: float | None = None  # when it was last closed (None while open)


@dataclass(frozen=True)
class Proposal:
    """An exemption one DSL asked for, waiting for a second DSL to approve it."""

    incident: str
    label: str  # "bank:NAME" | "model:NAME"
    sha256: str
    proposed_by: str
    reason: str
    at: float

    @property
    def token(self) -> str:
        """Names this proposal as the approver saw it: a withdrawn and re-made proposal (another
        reason, another time) has another token, so an approval loaded before cannot pass for
        it (adversarial pass a14)."""
        fields = "\x1f".join((self.incident, self.label, self.sha256, self.proposed_by,
                               self.reason, repr(self.at)))  # fmt: skip
        return hashlib.sha256(fields.encode()).hexdigest()[:32]


@dataclass(frozen=True)
class AccessEntry:
    at: float
    actor: str
    action: str
    target: str
    remote: str


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class ConsoleStore:
    """One SQLite file; safe to share between the server's threads."""

    def __init__(self, path: Path, clock: Callable[[], float] = time.time) -> None:
        self.path = Path(path)
        self.clock = clock
        self._lock = threading.RLock()
        self._hasher = PasswordHasher()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode = WAL")
            self._db.execute("PRAGMA foreign_keys = ON")
            self._db.execute("PRAGMA busy_timeout = 10000")
            with self._transaction() as cur:
                apply_schema(cur, _SCHEMA, SCHEMA_VERSION, what="console", path=self.path,
                             error=ConsoleError)  # fmt: skip
        except (sqlite3.Error, OSError) as exc:
            raise ConsoleError(f"cannot open the console database {self.path}: {exc}") from exc
        self._dummy_hash = self._hasher.hash(secrets.token_hex(16))
        self._unknown: dict[str, tuple[int, float]] = {}  # failed tries of names with no account

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> ConsoleStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Cursor]:
        with self._lock:
            cur = self._db.cursor()
            try:
                cur.execute("BEGIN IMMEDIATE")
                yield cur
                cur.execute("COMMIT")
            except BaseException:
                if self._db.in_transaction:
                    cur.execute("ROLLBACK")
                raise

    def _rows(self, sql: str, params: tuple[object, ...] = ()) -> list[Any]:
        with self._lock:
            try:
                return self._db.execute(sql, params).fetchall()
            except sqlite3.Error as exc:
                raise ConsoleError(f"console database {self.path}: {exc}") from exc

    # -- accounts ------------------------------------------------------------------------------

    def add_account(self, username: str, role: str, password: str) -> Account:
        username = username.strip()
        if not valid_username(username):
            raise ConsoleError(
                f"{username!r} is not a username: up to 64 ASCII letters, digits, '.', '-' and "
                "'_', starting with a letter or digit"
            )
        for other in self.accounts():
            if reads_like(other.username, username):
                raise ConsoleError(
                    f"{username!r} can be mistaken for the account {other.username!r}: "
                    "choose a name that reads differently"
                    if other.username != username
                    else f"an account named {username!r} exists already"
                )
        if role not in ROLES:
            raise ConsoleError(f"unknown role {role!r}; expected one of {', '.join(ROLES)}")
        _check_password(password)
        now = self.clock()
        try:
            with self._transaction() as cur:
                cur.execute(
                    "INSERT INTO accounts (username, role, password, created_at) "
                    "VALUES (?, ?, ?, ?)",
                    (username, role, self._hasher.hash(password), now),
                )
        except sqlite3.IntegrityError:
            raise ConsoleError(f"an account named {username!r} exists already") from None
        return Account(username, role, now, 0, 0.0)

    def set_password(self, username: str, password: str) -> None:
        _check_password(password)
        with self._transaction() as cur:
            cur.execute(
                "UPDATE accounts SET password = ?, failed = 0, locked_until = 0 WHERE username = ?",
                (self._hasher.hash(password), username),
            )
            if not cur.rowcount:
                raise ConsoleError(f"no account named {username!r}")
            cur.execute("DELETE FROM sessions WHERE username = ?", (username,))

    def remove_account(self, username: str) -> bool:
        with self._transaction() as cur:
            cur.execute("DELETE FROM accounts WHERE username = ?", (username,))
            return cur.rowcount > 0

    def unlock(self, username: str) -> bool:
        with self._transaction() as cur:
            cur.execute(
                "UPDATE accounts SET failed = 0, locked_until = 0 WHERE username = ?", (username,)
            )
            return cur.rowcount > 0

    def accounts(self) -> list[Account]:
        rows = self._rows(
            "SELECT username, role, created_at, failed, locked_until FROM accounts "
            "ORDER BY username"
        )
        return [Account(str(u), str(r), float(c), int(f), float(lk)) for u, r, c, f, lk in rows]

    def authenticate(
        self, username: str, password: str, *, max_failed: int, lockout_s: float
    ) -> tuple[Account | None, str]:
        """The account and "ok", or None and why not ("locked" or "invalid", never which of
        username and password was wrong). Every attempt costs one argon2 verification, so an
        unknown name answers no faster than a wrong password, and an unknown name locks after
        as many tries as a real one, so that "locked" does not tell that an account exists.

        An attempt is counted before its password is checked, in one transaction with the
        lock-out test: concurrent guesses cannot all be checked against one count (adversarial
        pass a12 got 16 guesses checked per lock-out by sending them at once)."""
        now = self.clock()
        until = 0.0
        with self._transaction() as cur:
            row = cur.execute(
                "SELECT role, password, created_at, failed, locked_until FROM accounts "
                "WHERE username = ?",
                (username,),
            ).fetchone()
            if row is not None and row[4] <= now:
                failed = row[3] + 1
                until = now + lockout_s if failed >= max_failed else 0.0
                cur.execute(
                    "UPDATE accounts SET failed = ?, locked_until = ? WHERE username = ?",
                    (0 if until else failed, until, username),
                )
        if row is None:
            self._verify(self._dummy_hash, password)
            return None, self._unknown_name(username, now, max_failed, lockout_s)
        role, stored, created, _, locked_until = row
        if locked_until > now:
            self._verify(self._dummy_hash, password)
            return None, "locked"
        if not self._verify(stored, password):
            return None, "locked" if until else "invalid"
        with self._transaction() as cur:
            update = "failed = 0, locked_until = 0"
            params: tuple[object, ...] = (username,)
            if self._hasher.check_needs_rehash(stored):
                update += ", password = ?"
                params = (self._hasher.hash(password), username)
            cur.execute(f"UPDATE accounts SET {update} WHERE username = ?", params)
        return Account(username, role, created, 0, 0.0), "ok"

    def _unknown_name(self, username: str, now: float, max_failed: int, lockout_s: float) -> str:
        with self._lock:
            failed, until = self._unknown.get(username, (0, 0.0))
            if until > now:
                return "locked"
            failed += 1
            if len(self._unknown) > 10_000:  # bounded: a flood of names forgets the oldest
                self._unknown.clear()
            locked = failed >= max_failed
            self._unknown[username] = (0, now + lockout_s) if locked else (failed, 0.0)
            return "locked" if locked else "invalid"

    def _verify(self, stored: str, password: str) -> bool:
        try:
            return self._hasher.verify(stored, password)
        except (VerificationError, InvalidHashError):
            return False

    # -- sessions ------------------------------------------------------------------------------

    def open_session(self, account: Account) -> Session:
        token, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
        now = self.clock()
        with self._transaction() as cur:
            cur.execute(
                "INSERT INTO sessions VALUES (?, ?, ?, ?, ?)",
                (_digest(token), account.username, csrf, now, now),
            )
        return Session(token, account.username, account.role, csrf)

    def session(self, token: str, *, idle_s: float, max_s: float) -> Session | None:
        """The live session for a cookie (touching it), or None: unknown, idle or too old."""
        now = self.clock()
        key = _digest(token)
        with self._transaction() as cur:
            row = cur.execute(
                "SELECT s.username, a.role, s.csrf, s.created_at, s.last_seen FROM sessions s "
                "JOIN accounts a ON a.username = s.username WHERE s.token = ?",
                (key,),
            ).fetchone()
            if row is None:
                return None
            username, role, csrf, created, last_seen = row
            if now - last_seen > idle_s or now - created > max_s:
                cur.execute("DELETE FROM sessions WHERE token = ?", (key,))
                return None
            cur.execute("UPDATE sessions SET last_seen = ? WHERE token = ?", (now, key))
        return Session(token, username, role, csrf)

    def close_session(self, token: str) -> None:
        with self._transaction() as cur:
            cur.execute("DELETE FROM sessions WHERE token = ?", (_digest(token),))

    # -- incidents -----------------------------------------------------------------------------

    def workflows(self) -> dict[str, Workflow]:
        rows = self._rows("SELECT id, status, assignee, outcome, closed_at FROM incidents")
        return {str(row[0]): Workflow(*row[1:]) for row in rows}

    def act(
        self,
        incident: str,
        actor: str,
        action: str,
        detail: str = "",
        *,
        status: str | None = None,
        assignee: str | None = None,
        outcome: str | None = None,
    ) -> None:
        """Record one action on an incident and apply its change of state, in one transaction."""
        if status is not None and status not in STATUSES:
            raise ConsoleError(f"unknown status {status!r}")
        if outcome is not None and outcome not in OUTCOMES:
            raise ConsoleError(f"unknown outcome {outcome!r}")
        now = self.clock()
        with self._transaction() as cur:
            row = cur.execute(
                "SELECT status, assignee, outcome, closed_at FROM incidents WHERE id = ?",
                (incident,),
            ).fetchone()
            current = Workflow(*row) if row is not None else Workflow()
            new_status = status or current.status
            closed_at = current.closed_at if status is None else (now if status == CLOSED else None)
            cur.execute(
                "INSERT OR REPLACE INTO incidents VALUES (?, ?, ?, ?, ?, ?)",
                (
                    incident,
                    new_status,
                    assignee if assignee is not None else current.assignee,
                    outcome if outcome is not None else current.outcome,
                    now,
                    closed_at,
                ),
            )
            cur.execute(
                "INSERT INTO actions (incident, at, actor, action, detail) VALUES (?, ?, ?, ?, ?)",
                (incident, now, actor, action, detail),
            )

    def actions(self, incident: str) -> list[Action]:
        rows = self._rows(
            "SELECT at, actor, action, detail FROM actions WHERE incident = ? ORDER BY at, id",
            (incident,),
        )
        return [Action(*row) for row in rows]

    # -- exemptions waiting for a second DSL -------------------------------------------------

    def propose(self, incident: str, label: str, sha256: str, by: str, reason: str) -> None:
        with self._transaction() as cur:
            cur.execute(
                "INSERT OR REPLACE INTO proposals VALUES (?, ?, ?, ?, ?, ?)",
                (incident, label, sha256, by, reason, self.clock()),
            )

    def proposals(self, incident: str) -> list[Proposal]:
        rows = self._rows("SELECT * FROM proposals WHERE incident = ? ORDER BY at", (incident,))
        return [Proposal(*row) for row in rows]

    def take_proposal(self, incident: str, label: str, token: str) -> Proposal | None:
        """Remove and return the proposal the decider saw (approved or refused); None, and
        nothing removed, when none with that token is waiting."""
        with self._transaction() as cur:
            row = cur.execute(
                "SELECT * FROM proposals WHERE incident = ? AND label = ?", (incident, label)
            ).fetchone()
            if row is None or Proposal(*row).token != token:
                return None
            cur.execute("DELETE FROM proposals WHERE incident = ? AND label = ?", (incident, label))
        return Proposal(*row)

    def drop_proposals(self, incident: str) -> None:
        with self._transaction() as cur:
            cur.execute("DELETE FROM proposals WHERE incident = ?", (incident,))

    # -- access log and retention --------------------------------------------------------------

    def log_access(self, actor: str, action: str, target: str, remote: str) -> None:
        with self._transaction() as cur:
            cur.execute(
                "INSERT INTO access_log (at, actor, action, target, remote) VALUES (?, ?, ?, ?, ?)",
                (self.clock(), actor, action, target, remote),
            )

    def access_log(self, limit: int = 500) -> list[AccessEntry]:
        rows = self._rows(
            "SELECT at, actor, action, target, remote FROM access_log ORDER BY at DESC, id DESC "
            "LIMIT ?",
            (limit,),
        )
        return [AccessEntry(*row) for row in rows]

    def forget_before(self, cutoff: float, incidents: set[str]) -> int:
        """Retention: delete access-log entries older than `cutoff` and the workflow and
        actions of the given incidents (those whose last activity is older). Returns rows."""
        with self._transaction() as cur:
            cur.execute("DELETE FROM access_log WHERE at < ?", (cutoff,))
            removed = cur.rowcount
            for incident in incidents:
                cur.execute("DELETE FROM actions WHERE incident = ?", (incident,))
                removed += cur.rowcount
                cur.execute("DELETE FROM incidents WHERE id = ?", (incident,))
                removed += cur.rowcount
                cur.execute("DELETE FROM proposals WHERE incident = ?", (incident,))
            cur.execute("DELETE FROM sessions WHERE last_seen < ?", (cutoff,))
        return removed


def _check_password(password: str) -> None:
    if len(password) < MIN_PASSWORD:
        raise ConsoleError(f"a console password has at least {MIN_PASSWORD} characters")
