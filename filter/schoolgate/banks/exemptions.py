"""Reviewed exemptions: one exact file (its SHA-256) no longer counts for one bank or one model.

When the DSL closes an incident as a false positive (an innocent picture that a bank's perceptual
or robust match, or a classifier, took for another), the same file would be blocked again the next
time a pupil sends it. An exemption says "this exact file, for this bank (or this model), was
reviewed and is not what it matched", with who, when, why and the incident it came from. It is
kept in the bank database, so a change reaches every proxy worker the way a bank change does.

Exemptions are narrow on purpose: an exact file, one source. An edited copy of the file has
another SHA-256 and is judged afresh; another bank or model still counts for the same file.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from typing import Final

from schoolgate.banks.model import BankError
from schoolgate.banks.store import BankStore

BANK: Final = "bank"
MODEL: Final = "model"
KINDS: Final = (BANK, MODEL)

_SHA256 = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class Exemption:
    sha256: str
    kind: str  # "bank" | "model"
    source: str  # the bank's or the model's name
    reason: str
    incident: str  # the console incident it was decided on ("" when made elsewhere)
    added_by: str
    added_at: float

    @property
    def label(self) -> str:
        return f"{self.kind}:{self.source}"


@dataclass(frozen=True)
class ExemptionSet:
    """A snapshot for matching: SHA-256 -> the sources that no longer count for that file."""

    by_file: dict[str, frozenset[str]]

    def of(self, sha256: str | None) -> frozenset[str]:
        """Labels ("bank:NAME", "model:NAME") exempted for this file; empty for most files."""
        return self.by_file.get(sha256 or "", frozenset())

    def __len__(self) -> int:
        return len(self.by_file)


EMPTY: Final = ExemptionSet({})


class Exemptions:
    """The exemptions table of a bank database (its schema is the store's)."""

    def __init__(self, store: BankStore) -> None:
        self._store = store

    def add(
        self, sha256: str, kind: str, source: str, *, added_by: str, reason: str, incident: str = ""
    ) -> Exemption:
        """Exempt one file for one source (replacing an earlier exemption of the same pair)."""
        sha256 = sha256.strip().lower()
        if not _SHA256.match(sha256):
            raise BankError(f"{sha256!r} is not a SHA-256 (64 hexadecimal digits)")
        if kind not in KINDS:
            raise BankError(f"unknown exemption kind {kind!r}; expected one of {KINDS}")
        if not source.strip():
            raise BankError("an exemption names the bank or model it applies to")
        if not reason.strip() or not added_by.strip():
            raise BankError("an exemption records who decided it and why")
        exemption = Exemption(sha256, kind, source, reason.strip(), incident, added_by, time.time())
        with self._store.write(bump=True) as cur:
            cur.execute(
                "INSERT OR REPLACE INTO exemptions VALUES (?, ?, ?, ?, ?, ?, ?)",
                (sha256, kind, source, exemption.reason, incident, added_by, exemption.added_at),
            )
        return exemption

    def remove(self, sha256: str, kind: str, source: str) -> bool:
        with self._store.write(bump=True) as cur:
            cur.execute(
                "DELETE FROM exemptions WHERE sha256 = ? AND kind = ? AND source = ?",
                (sha256.strip().lower(), kind, source),
            )
            return cur.rowcount > 0

    def list(self) -> list[Exemption]:
        rows = self._store.read("SELECT * FROM exemptions ORDER BY added_at")
        return [Exemption(*row) for row in rows]

    def snapshot(self) -> ExemptionSet:
        by_file: dict[str, set[str]] = {}
        for sha256, kind, source in self._store.read("SELECT sha256, kind, source FROM exemptions"):
            by_file.setdefault(sha256, set()).add(f"{kind}:{source}")
        return ExemptionSet({sha: frozenset(labels) for sha, labels in by_file.items()})
