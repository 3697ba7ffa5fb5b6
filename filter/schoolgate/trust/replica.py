"""A gateway's copy of a subscription's banks, kept in its own bank database.

A subscription owns the banks its bundles name; applying a bundle replaces them in one SQLite
transaction (readers see the old banks or the new, never half), and records the version applied,
so that an older bundle served again is refused. A bundle that names a bank the school made
itself, or one another subscription owns, is left out of it (withheld, and the refusal
counted): a trust cannot overwrite a school's incident bank by naming it, and one such clash
does not hold back the rest of its banks.
"""

from __future__ import annotations

import hashlib
import json
import logging
import sqlite3
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Any, Final

from schoolgate.banks.model import BankError, SignalType
from schoolgate.banks.store import BankStore
from schoolgate.trust.bundle import BankContent, Bundle, BundleError

log = logging.getLogger("schoolgate.trust")

# Refusals are counted here, not in the syncing process's memory: whichever process serves the
# metrics (the proxy) reads them at scrape time (monitoring.metrics).
_SCHEMA = """CREATE TABLE IF NOT EXISTS subscriptions (
    name TEXT PRIMARY KEY,
    version INTEGER,
    published_at REAL,
    applied_at REAL,
    checked_at REAL,
    banks TEXT NOT NULL,
    refusals TEXT NOT NULL,
    last_error TEXT NOT NULL
)"""
# Banks of the last bundle left out for a clash: the next sync takes the full snapshot, so that
# they come whole once the clash is gone (a delta carries only what changed).
_WITHHELD = "ALTER TABLE subscriptions ADD COLUMN withheld TEXT NOT NULL DEFAULT '[]'"
# The publication folder pinned with the first version applied (trust.bundle.Bundle.folder).
_FOLDER = "ALTER TABLE subscriptions ADD COLUMN folder TEXT NOT NULL DEFAULT ''"
# When a sync last ended well (the publisher's current version verified, applied or already
# applied), and the fetches that failed (unreachable, 404, oversize, timeout): a gateway that
# is asking but getting nothing shows (adversarial pass a30, monitoring).
_SYNCED = "ALTER TABLE subscriptions ADD COLUMN synced_at REAL"
_FAILURES = "ALTER TABLE subscriptions ADD COLUMN fetch_failures INTEGER NOT NULL DEFAULT 0"
# What each owned bank held (a fingerprint of its hashes and feature sets) when a version was
# applied: a bank emptied or cut here since (`hashes remove --all`, a35 F1), or with rows changed
# in place (a39 F1: the count stayed, the picture no longer matched), no longer matches its
# version, and the next sync takes the full snapshot again instead of calling it current.
# Databases from before fingerprints hold counts; the next version applied records both.
_COUNTS = "ALTER TABLE subscriptions ADD COLUMN counts TEXT NOT NULL DEFAULT '{}'"
# The id of the publication applied (trust.publish.lineage): a later index whose lineage does
# not hold it comes from a fork of the folder (adversarial pass a35 F3).
_LINK = "ALTER TABLE subscriptions ADD COLUMN link TEXT NOT NULL DEFAULT ''"
# The prefix its banks were applied under: a prefix added later (to follow a school's share)
# must replace the banks named without it, not leave them frozen beside a delta (a41 F8).
_PREFIX = "ALTER TABLE subscriptions ADD COLUMN prefix TEXT NOT NULL DEFAULT ''"
# Every row of a bank that decides a match, in a fixed order: a bank's fingerprint.
_SIGNAL_ROWS = (
    "SELECT s.signal_type, s.value, s.quality, s.content_id, s.frame FROM signals s "
    "JOIN banks b ON b.id = s.bank_id WHERE b.name = ? "
    "ORDER BY s.signal_type, s.value, s.content_id, s.frame"
)
_FEATURE_ROWS = (
    "SELECT f.content_id, f.view, f.kind, f.data FROM features f "
    "JOIN banks b ON b.id = f.bank_id WHERE b.name = ? ORDER BY f.content_id, f.view, f.kind"
)


@dataclass(frozen=True)
class Applied:
    """Where one subscription stands on this gateway (version None: nothing applied yet)."""

    name: str
    version: int | None
    published_at: float | None
    applied_at: float | None
    checked_at: float | None
    banks: tuple[str, ...]
    refusals: dict[str, int]
    last_error: str
    withheld: tuple[str, ...] = ()
    folder: str = ""
    synced_at: float | None = None
    fetch_failures: int = 0
    link: str = ""  # the id of the publication applied, in its folder's lineage
    prefix: str = ""  # the prefix its banks were applied under


class Replica:
    """The subscriptions' state and banks in a BankStore."""

    def __init__(self, store: BankStore, clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.clock = clock
        with store.write() as cur:
            cur.execute(_SCHEMA)
            columns = {row[1] for row in cur.execute("PRAGMA table_info(subscriptions)")}
            later = (("withheld", _WITHHELD), ("folder", _FOLDER), ("synced_at", _SYNCED),
                     ("fetch_failures", _FAILURES), ("counts", _COUNTS),
                     ("link", _LINK), ("prefix", _PREFIX))  # fmt: skip
            for column, added in later:
                if column not in columns:
                    cur.execute(added)

    def state(self, name: str) -> Applied | None:
        found = [a for a in self.states() if a.name == name]
        return found[0] if found else None

    def states(self) -> list[Applied]:
        return read_states(self.store)

    def checked(self, name: str, refused: BundleError | None = None, error: str = "") -> None:
        """Record one sync: its time, and a refusal (counted by reason) or a failed fetch
        (counted), or neither: the publisher's current version is the one applied."""
        with self.store.write() as cur:
            self._ensure(cur, name)
            now = self.clock()
            cur.execute(
                "UPDATE subscriptions SET checked_at = ?, last_error = ? WHERE name = ?",
                (now, str(refused or error), name),
            )
            if refused is None and not error:
                cur.execute("UPDATE subscriptions SET synced_at = ? WHERE name = ?", (now, name))
            elif refused is None:
                cur.execute(
                    "UPDATE subscriptions SET fetch_failures = fetch_failures + 1 WHERE name = ?",
                    (name,),
                )
            if refused is not None:
                (text,) = cur.execute(
                    "SELECT refusals FROM subscriptions WHERE name = ?", (name,)
                ).fetchone()
                counts = json.loads(text)
                counts[refused.reason] = counts.get(refused.reason, 0) + 1
                cur.execute(
                    "UPDATE subscriptions SET refusals = ? WHERE name = ?",
                    (json.dumps(counts), name),
                )

    @staticmethod
    def _ensure(cur: sqlite3.Cursor, name: str) -> None:
        cur.execute(
            "INSERT OR IGNORE INTO subscriptions (name, version, published_at, applied_at, "
            "checked_at, banks, refusals, last_error) VALUES (?, NULL, NULL, NULL, NULL, "
            "'[]', '{}', '')",
            (name,),
        )

    def clash_cleared(self, name: str) -> bool:
        """Whether a bank withheld from subscription `name` for a clash no longer clashes."""
        current = self.state(name)
        if current is None or not current.withheld:
            return False
        with self.store.write() as cur:
            still = self._clashes(cur, name, set(current.withheld), set(current.banks))
        return set(still) != set(current.withheld)

    def drifted(self, name: str) -> tuple[str, ...]:
        """The banks of subscription `name` that no longer hold what its applied version put
        there (removed or emptied on this gateway): only a full snapshot brings them back."""
        current = self.state(name)
        if current is None:
            return ()
        recorded = _recorded_fingerprints(self.store, name)
        return tuple(
            bank
            for bank in current.banks
            if bank in recorded and not _same(recorded[bank], _fingerprint(self.store.read, bank))
        )

    def reset(self, name: str) -> bool:
        """Forget the version applied for `name`, keeping its banks and folder: the next sync
        takes the full snapshot of whatever version the folder names (a gateway that applied
        a version from a publisher's wrong clock; docs/trust.md). False when there is none."""
        with self.store.write() as cur:
            cur.execute("UPDATE subscriptions SET version = NULL, link = '' WHERE name = ?",
                        (name,))  # fmt: skip
            return cur.rowcount > 0

    def adopt(self, name: str, folder: str, configured: Collection[str]) -> str | None:
        """Take over the state and banks of a subscription no longer configured that followed
        `folder`: the same publication, renamed in the configuration. Its banks were withheld as
        another subscription's and frozen, and deleting them as the log advised left none
        (adversarial pass a41 F7). The name it had, or None."""
        if not folder or self.state(name) is not None:
            return None
        for state in self.states():
            if state.folder == folder and state.name not in configured:
                with self.store.write() as cur:
                    cur.execute("UPDATE subscriptions SET name = ? WHERE name = ?",
                                (name, state.name))  # fmt: skip
                return state.name
        return None

    def repin(self, name: str) -> bool:
        """Forget the folder pinned for `name` (the trust moved its publication on purpose):
        the next index pins its own. False when there is no such subscription here."""
        with self.store.write() as cur:
            cur.execute("UPDATE subscriptions SET folder = '', link = '' WHERE name = ?", (name,))
            return cur.rowcount > 0

    def apply(
        self,
        name: str,
        bundle: Bundle,
        *,
        again: bool = False,
        folder: str = "",
        configured: bool = False,
        link: str = "",
        prefix: str = "",
        subscriptions: Collection[str] | None = None,
    ) -> Applied:
        """Apply a full or delta bundle for subscription `name`; BundleError when refused (the
        banks stay as they were). `again`: a full snapshot of the version applied may be
        applied once more (banks a clash withheld). `folder` is pinned where none is, or
        always where the configuration names it (`configured`); `link`: the publication's id
        in its folder's lineage."""
        current = self.state(name)
        have = current.version if current is not None else None
        same = again and bundle.kind == "full" and bundle.version == have
        if have is not None and bundle.version <= have and not same:
            raise BundleError(
                "replayed",
                f"bundle version {bundle.version} is not newer than "
                f"the version applied, {have}: an old bundle served again",
            )
        if bundle.kind == "delta" and bundle.base != have:
            raise BundleError(
                "base", f"the delta applies to version {bundle.base}, this gateway has {have}"
            )
        owned = set(current.banks) if current is not None else set()
        renamed = current is not None and current.prefix != prefix  # the old names all go
        if (
            bundle.kind == "full"
            and not renamed
            and owned - set(bundle.banks) - set(bundle.removed_banks)
        ):
            left_out = ", ".join(sorted(owned - set(bundle.banks) - set(bundle.removed_banks)))
            raise BundleError(
                "shrunk",
                f"the full snapshot leaves out bank(s) {left_out} without naming them as "
                "dropped (a publication from another folder of the same channel?): the "
                "publisher drops a bank with --drop",
            )
        now = self.clock()
        with self.store.write(bump=True) as cur:
            if subscriptions is not None:
                owned |= self._take_over(cur, name, set(bundle.banks), subscriptions)
            clash = self._clashes(cur, name, set(bundle.banks), owned)
            if renamed and clash:
                # The new prefix names a bank this gateway has from elsewhere: renamed, the
                # trust's bank would be withheld and its old name dropped, enforced nowhere
                # (adversarial pass a43 F7). The banks keep their names until it is resolved.
                raise BundleError("clash", f"the prefix {prefix!r} names bank(s) "
                                  f"{', '.join(sorted(clash))} that this gateway has from "
                                  "elsewhere: the subscription's banks keep their names "
                                  f"({', '.join(sorted(owned))}); choose another prefix, or "
                                  "rename this gateway's bank")  # fmt: skip
            named = {bank: content for bank, content in bundle.banks.items() if bank not in clash}
            if bundle.kind == "full":
                for gone in owned - set(named):
                    BankStore.drop_bank(cur, gone)
                    _note_dropped(cur, gone, bundle)
                for bank, content in named.items():
                    BankStore.drop_bank(cur, bank)
                    _write_bank(self.store, cur, bank, content, name, bundle.version, now)
                banks = set(named)
            else:
                for gone in set(bundle.removed_banks) & owned:
                    BankStore.drop_bank(cur, gone)
                    _note_dropped(cur, gone, bundle)
                for bank, content in named.items():
                    _write_bank(self.store, cur, bank, content, name, bundle.version, now)
                banks = (owned - set(bundle.removed_banks)) | set(named)
            self._ensure(cur, name)
            counts = {bank: _fingerprint(_reader(cur), bank) for bank in banks}
            cur.execute(
                "UPDATE subscriptions SET version = ?, published_at = ?, applied_at = ?, "
                "checked_at = ?, synced_at = ?, banks = ?, last_error = '', withheld = ?, "
                "folder = CASE WHEN folder = '' OR ? THEN ? ELSE folder END, counts = ?, "
                "link = ?, prefix = ? WHERE name = ?",
                (bundle.version, bundle.created_at, now, now, now, json.dumps(sorted(banks)),
                 json.dumps(sorted(clash)), configured, folder, json.dumps(counts), link, prefix,
                 name),
            )  # fmt: skip
        if clash:
            # Which bank, and whose: the school's DSL or IT must know what to rename (a35 F5).
            owners = "; ".join(f"{bank} is {owner}" for bank, owner in sorted(clash.items()))
            why = (f"bank(s) {', '.join(sorted(clash))} withheld, the rest applied: {owners}. "
                   "The trust's bank of that name does not block here until one is renamed: "
                   "ask the trust to publish it under a name of its own (trust-...), or rename "
                   "this gateway's (export it, import it under a new name, then "
                   "`schoolgate hashes remove --bank NAME --all`); the next sync then brings "
                   "it whole")  # fmt: skip
            log.error("schoolgate banks: subscription %s: %s", name, why)
            # The rest of the bundle is applied: one clash must not freeze a subscription
            # (a28 P3: a school's share, followed as well, that the trust published on).
            self.checked(name, BundleError("clash", why))
        applied = self.state(name)
        assert applied is not None
        return applied

    def _take_over(
        self, cur: sqlite3.Cursor, name: str, named: set[str], subscriptions: Collection[str]
    ) -> set[str]:
        """The banks this bundle names that a subscription no longer in the configuration
        (`subscriptions`) applied: this one's now. They were withheld as that one's for good,
        frozen, even once deleted (adversarial pass a43 F2: a subscription renamed as the trust
        moved to a new folder kept no trust bank at all)."""
        taken: set[str] = set()
        for other, text in cur.execute("SELECT name, banks FROM subscriptions").fetchall():
            if other == name or other in subscriptions:
                continue
            banks = set(json.loads(text))
            mine = banks & named
            if not mine:
                continue
            taken |= mine
            log.warning("schoolgate banks: subscription %s takes over bank(s) %s from "
                        "subscription %s, which is no longer configured", name,
                        ", ".join(sorted(mine)), other)  # fmt: skip
            if banks - mine:
                cur.execute("UPDATE subscriptions SET banks = ? WHERE name = ?",
                            (json.dumps(sorted(banks - mine)), other))  # fmt: skip
            else:
                cur.execute("DELETE FROM subscriptions WHERE name = ?", (other,))
        return taken

    def _clashes(
        self, cur: sqlite3.Cursor, name: str, named: set[str], owned: set[str]
    ) -> dict[str, str]:
        """The banks a bundle names that this gateway has from elsewhere, with whose they are."""
        others: dict[str, str] = {}
        for other, banks in cur.execute(
            "SELECT name, banks FROM subscriptions WHERE name != ?", (name,)
        ):
            others |= dict.fromkeys(json.loads(banks), f"subscription {other}'s")
        local = {row[0] for row in cur.execute("SELECT name FROM banks")} - owned - set(others)
        return dict.fromkeys(named & local, "this school's own bank") | {
            bank: others[bank] for bank in named & set(others)
        }


DROPPED: Final = "dropped by its source "  # + a bank's name, in meta: the version


def _note_dropped(cur: sqlite3.Cursor, bank: str, bundle: Bundle) -> None:
    """A bank its publisher dropped on purpose: a central box that publishes it on drops it
    too, rather than failing every publication for a bank it no longer has (a41 F9)."""
    if bank in bundle.removed_banks:
        cur.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (DROPPED + bank, bundle.version))


def dropped_by_source(store: BankStore, bank: str) -> bool:
    return bool(store.read("SELECT 1 FROM meta WHERE key = ?", (DROPPED + bank,)))


def read_states(store: BankStore) -> list[Applied]:
    """Every subscription's state; none where no sync ever ran (the metrics read this at
    scrape time, without creating anything)."""
    try:
        columns = [row[1] for row in store.read("PRAGMA table_info(subscriptions)")]
        if not columns:
            return []
        rows = store.read("SELECT * FROM subscriptions ORDER BY name")
    except BankError as exc:
        if "no such table" in str(exc):
            return []
        raise
    states = []
    for row in rows:
        # by name: a database of an earlier version lacks the later columns until a sync
        got = dict(zip(columns, row, strict=True))
        states.append(Applied(
            got["name"], got["version"], got["published_at"], got["applied_at"],
            got["checked_at"], tuple(json.loads(got["banks"])), json.loads(got["refusals"]),
            got["last_error"], tuple(json.loads(got.get("withheld", "[]"))),
            got.get("folder", ""), got.get("synced_at"), got.get("fetch_failures", 0),
            got.get("link", ""), got.get("prefix", ""),
        ))  # fmt: skip
    return states


def _reader(cur: sqlite3.Cursor) -> Callable[[str, tuple[Any, ...]], list[Any]]:
    return lambda sql, params: cur.execute(sql, params).fetchall()


def _fingerprint(read: Callable[[str, tuple[Any, ...]], list[Any]], bank: str) -> str:
    """`COUNT:SHA256` over every row of `bank` that decides a match ("-1:" where the bank is
    gone). Each field is written with its length, so no two row sets hash alike."""
    digest = hashlib.sha256()
    count = 0
    for query in (_SIGNAL_ROWS, _FEATURE_ROWS):
        for row in read(query, (bank,)):
            count += 1
            for field in row:
                raw = field if isinstance(field, bytes) else str(field).encode()
                digest.update(len(raw).to_bytes(8, "big") + raw)
        digest.update(b"|")
    if count == 0 and not read("SELECT 1 FROM banks WHERE name = ?", (bank,)):
        return "-1:"
    return f"{count}:{digest.hexdigest()}"


def _same(recorded: str | int, now: str) -> bool:
    """A recorded count (a database from before fingerprints) compares by count alone."""
    if isinstance(recorded, int):
        return now.split(":", 1)[0] == str(recorded)
    return recorded == now


def _recorded_fingerprints(store: BankStore, name: str) -> dict[str, str | int]:
    """What subscription `name`'s banks held when its version was applied ({} before any)."""
    try:
        rows = store.read("SELECT counts FROM subscriptions WHERE name = ?", (name,))
    except BankError:
        return {}
    if not rows:
        return {}
    return {str(k): v if isinstance(v, str) else int(v) for k, v in json.loads(rows[0][0]).items()}


def _write_bank(
    store: BankStore,
    cur: sqlite3.Cursor,
    bank: str,
    content: BankContent,
    name: str,
    version: int,
    now: float,
) -> None:
    """Create the bank if missing, then add and remove what the content says."""
    source = f"subscription {name} v{version}" + (f": {content.source}" if content.source else "")
    row = cur.execute("SELECT id FROM banks WHERE name = ?", (bank,)).fetchone()
    if row is None:
        cur.execute(
            "INSERT INTO banks (name, description, source, created_at, updated_at) "
            "VALUES (?, ?, ?, ?, ?)",
            (bank, content.description, source, now, now),
        )
        (bank_id,) = cur.execute("SELECT id FROM banks WHERE name = ?", (bank,)).fetchone()
    else:
        bank_id = row[0]
        cur.execute(
            "UPDATE banks SET description = ?, source = ?, updated_at = ? WHERE id = ?",
            (content.description, source, now, bank_id),
        )
    store.set_provenance(cur, bank, content.provenance)  # shown in every match of the bank
    for kind, value, content_id, frame in content.removed_signals:
        cur.execute(
            "DELETE FROM signals WHERE bank_id = ? AND signal_type = ? AND value = ? AND "
            "content_id = ? AND frame = ?",
            (bank_id, SignalType(kind).value, bytes.fromhex(value), content_id, frame),
        )
    for content_id, view, kind in content.removed_features:
        cur.execute(
            "DELETE FROM features WHERE bank_id = ? AND content_id = ? AND view = ? AND kind = ?",
            (bank_id, content_id, view, kind),
        )
    store.insert_signals(cur, bank_id, content.signals, source, now)
    cur.executemany(
        "INSERT OR IGNORE INTO features (bank_id, content_id, view, kind, data, note, "
        "source, added_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        [
            (bank_id, f.content_id, f.view, f.kind, f.data, f.note, source, now)
            for f in content.features
        ],
    )
