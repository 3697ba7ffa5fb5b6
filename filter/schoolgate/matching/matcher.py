"""Match media hashes against every bank: exact digests by dict lookup, PDQ by Hamming radius.

A `Matcher` is a read-only snapshot of the bank store taken at one store version; the engine
builds a new one when `BankStore.version()` moves on. Being immutable, one Matcher serves any
number of threads at once without locks.

The PDQ quality rule: PDQ hashes of images with little structure (flat colour, tiny or heavily
blurred pictures) carry a quality score below 50 and match many unrelated images, so a query
hash whose quality is below `min_quality` (default 50) yields no PDQ matches at all. Exact digest
matches do not depend on quality.
"""

from __future__ import annotations

from array import array
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Protocol

import numpy as np

from schoolgate.banks.exemptions import EMPTY as NO_EXEMPTIONS
from schoolgate.banks.exemptions import Exemptions, ExemptionSet
from schoolgate.banks.model import BankError, SignalType
from schoolgate.banks.store import BankStore
from schoolgate.matching.pdq_index import HASH_BITS, PdqIndex, build_index

DEFAULT_PDQ_MAX_DISTANCE = 31
DEFAULT_MIN_QUALITY = 50
_EXACT_TYPES = (SignalType.SHA256, SignalType.MD5, SignalType.SHA1)


class ExactDigests(Protocol):
    """What match_exact reads (schoolgate.hashing.ExactHashes has these fields)."""

    @property
    def sha256(self) -> str: ...
    @property
    def md5(self) -> str: ...
    @property
    def sha1(self) -> str: ...


class PdqQuery(Protocol):
    """What match_pdq reads (schoolgate.hashing.PdqHash)."""

    @property
    def quality(self) -> int: ...
    def to_bytes(self) -> bytes: ...


@dataclass(frozen=True)
class BankMatch:
    """One bank entry that a piece of media matched."""

    bank: str
    signal_type: SignalType | str  # a SignalType, or "orb" for the robust tier's local features
    value: str  # the banked hash; for the robust tier, the banked item's content id (SHA-256)
    distance: int  # 0 for exact digests; Hamming bits for PDQ
    quality: int | None  # the banked hash's quality, where the list gave one
    note: str
    tier: str = "hash"  # "hash" (exact digests, PDQ) or "robust" (schoolgate.robust_tier)
    evidence: tuple[tuple[str, float], ...] = ()  # the robust tier's inliers, spread, scale...
    provenance: str = ""  # a shared bank's origin: school, when, why (schoolgate.trust)

    @property
    def where(self) -> str:
        """Where in the media the match was found, for the verdict's reason ("" = the whole)."""
        return ""


@dataclass(frozen=True)
class FrameMatch(BankMatch):
    """An image-bank match found in one sampled frame of an animation or a video."""

    frame: int = 0
    timestamp: float = 0.0

    @classmethod
    def at(cls, match: BankMatch, frame: int, timestamp: float) -> FrameMatch:
        """`match`, found in `frame` shown at `timestamp`."""
        copied = {f.name: getattr(match, f.name) for f in fields(BankMatch)}
        return cls(**copied, frame=frame, timestamp=timestamp)

    @property
    def where(self) -> str:
        return f"frame {self.frame} at {self.timestamp:.2f} s"

    @property
    def audit_extra(self) -> dict[str, float | int]:
        """Extra fields for the audit record: the frame that matched and when it is shown."""
        return {"frame": self.frame, "timestamp_s": round(self.timestamp, 3)}


def _check_distance(what: str, value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= HASH_BITS:
        raise BankError(f"{what} must be an integer 0..{HASH_BITS} bits, got {value!r}")
    return value


class Matcher:
    """Exact and PDQ matching over a snapshot of every bank. Thread-safe for concurrent reads."""

    def __init__(
        self,
        *,
        version: int,
        exact: dict[SignalType, dict[str, tuple[BankMatch, ...]]],
        pdq_hashes: np.ndarray,
        pdq_bank: np.ndarray,
        pdq_quality: np.ndarray,
        pdq_notes: dict[int, str],
        bank_names: Sequence[str],
        pdq_max_distance: int = DEFAULT_PDQ_MAX_DISTANCE,
        per_bank_distance: Mapping[str, int] | None = None,
        exemptions: ExemptionSet = NO_EXEMPTIONS,
        provenance: Mapping[str, str] | None = None,
    ) -> None:
        self.version = version
        self.exemptions = exemptions  # files reviewed as not what a bank or model took them for
        self.provenance = dict(provenance or {})  # bank -> where a shared bank came from
        self._exact = exact
        self._pdq_hashes = pdq_hashes
        self._pdq_bank = pdq_bank
        self._pdq_quality = pdq_quality
        self._pdq_notes = pdq_notes
        self._bank_names = tuple(bank_names)
        self._default_distance = _check_distance("pdq_max_distance", pdq_max_distance)
        limits = dict(per_bank_distance or {})
        for bank, limit in limits.items():
            _check_distance(f"the PDQ distance for bank {bank!r}", limit)
        self._bank_distance = tuple(
            limits.get(name, self._default_distance) for name in self._bank_names
        )
        self._radius = max((self._default_distance, *self._bank_distance))
        self._index: PdqIndex = build_index(pdq_hashes)
        sizes = dict.fromkeys(self._bank_names, 0)
        for by_value in exact.values():
            for matches in by_value.values():
                for match in matches:
                    sizes[match.bank] += 1
        for bank_id, count in enumerate(np.bincount(pdq_bank, minlength=len(self._bank_names))):
            sizes[self._bank_names[bank_id]] += int(count)
        self._sizes = sizes

    @classmethod
    def from_store(
        cls,
        store: BankStore,
        pdq_max_distance: int = DEFAULT_PDQ_MAX_DISTANCE,
        per_bank_distance: Mapping[str, int] | None = None,
    ) -> Matcher:
        """Snapshot every bank. vPDQ frames are left to the video matcher.

        `per_bank_distance` may name banks that do not exist (yet): they are ignored until they do.
        """
        # Read the version first: a change made while we load makes us look stale, not fresh.
        version = store.version()
        bank_names = [bank.name for bank in store.banks()]
        bank_ids = {name: i for i, name in enumerate(bank_names)}
        exact: dict[SignalType, dict[str, tuple[BankMatch, ...]]] = {}
        for signal_type in _EXACT_TYPES:
            by_value: dict[str, tuple[BankMatch, ...]] = {}
            for bank, raw, quality, note in store.iter_raw(signal_type):
                if bank not in bank_ids:
                    continue  # a bank created after we listed them: next reload has it
                value = raw.hex()
                match = BankMatch(bank, signal_type, value, 0, quality, note)
                by_value[value] = (*by_value.get(value, ()), match)
            exact[signal_type] = by_value
        raws = bytearray()
        banks = array("H")
        qualities = array("h")
        notes: dict[int, str] = {}
        for bank, raw, quality, note in store.iter_raw(SignalType.PDQ):
            if bank not in bank_ids:
                continue
            if note:
                notes[len(banks)] = note  # sparse: most banked hashes carry no note
            raws += raw
            banks.append(bank_ids[bank])
            qualities.append(-1 if quality is None else quality)
        return cls(
            version=version,
            exact=exact,
            pdq_hashes=np.frombuffer(raws, dtype=np.uint8).reshape(-1, 32),
            pdq_bank=np.frombuffer(banks, dtype=np.uint16).astype(np.intp),
            pdq_quality=np.frombuffer(qualities, dtype=np.int16),
            pdq_notes=notes,
            bank_names=bank_names,
            pdq_max_distance=pdq_max_distance,
            per_bank_distance=per_bank_distance,
            exemptions=Exemptions(store).snapshot(),
            provenance=store.provenance(),
        )

    def match_exact(self, hashes: ExactDigests) -> list[BankMatch]:
        """Bank entries equal to the media's SHA-256, MD5 or SHA-1 digest."""
        found: list[BankMatch] = []
        for signal_type, digest in (
            (SignalType.SHA256, hashes.sha256),
            (SignalType.MD5, hashes.md5),
            (SignalType.SHA1, hashes.sha1),
        ):
            found.extend(self._exact.get(signal_type, {}).get(digest.lower(), ()))
        return found

    def match_pdq(
        self, queries: Sequence[PdqQuery], min_quality: int = DEFAULT_MIN_QUALITY
    ) -> list[BankMatch]:
        """Banked PDQ hashes within each bank's distance of any query, nearest first.

        `queries` may be the 8 dihedral variants of one image: a banked hash matched by several
        appears once, with the smallest distance. Queries below `min_quality` are ignored (see
        the module docstring).
        """
        if isinstance(min_quality, bool) or not isinstance(min_quality, int):
            raise BankError(f"min_quality must be an integer 0..100, got {min_quality!r}")
        best: dict[int, int] = {}
        for query in queries:
            if query.quality < min_quality:
                continue
            for row, distance in self._index.query(query.to_bytes(), self._radius):
                if distance > self._bank_distance[self._pdq_bank[row]]:
                    continue
                if distance < best.get(row, HASH_BITS + 1):
                    best[row] = distance
        matches = [self._pdq_match(row, distance) for row, distance in best.items()]
        matches.sort(key=lambda m: (m.distance, m.bank, m.value))
        return matches

    def _pdq_match(self, row: int, distance: int) -> BankMatch:
        quality = int(self._pdq_quality[row])
        return BankMatch(
            bank=self._bank_names[self._pdq_bank[row]],
            signal_type=SignalType.PDQ,
            value=self._pdq_hashes[row].tobytes().hex(),
            distance=distance,
            quality=None if quality < 0 else quality,
            note=self._pdq_notes.get(row, ""),
        )

    def sizes(self) -> dict[str, int]:
        """Signals loaded per bank (exact + PDQ), for metrics."""
        return dict(self._sizes)
