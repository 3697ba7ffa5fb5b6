"""Match a video's vPDQ frames against every banked video: one PDQ index over all bank frames.

The vPDQ rule (ThreatExchange vpdq README, python-threatexchange's VPDQIndex): frames below
`min_quality` are ignored on both sides and repeated frames (same hash) count once; a query frame
matches a bank frame within `max_distance` bits; a banked video matches when the share of the
query's frames that matched it is at least `query_match_percent` and the share of its own frames
that were matched is at least `bank_match_percent`. Frame order and timestamps are not used.

The two sources disagree on which share gets the 80 %: the README puts it on the banked video
(P_c = 80, P_q = 0: catches a banked clip padded with other footage, misses a short excerpt),
python-threatexchange on the query (80 / 0: catches excerpts and trimmed copies, misses padding).
schoolgate's default is query 50 % / bank 0 %: an excerpt, a trimmed or sped-up copy and a copy
padded with up to as much other footage again (a screen recording's lead-in, an added intro) all
match. Every counted frame is already a quality >= 50 PDQ match within 31 bits, and identical
frames (a still intro, black) count once, so half of an upload matching one banked video is not
a coincidence. Set 80 / 0 to reproduce python-threatexchange, 0 / 80 for the README.

Instead of comparing with every banked video, each query frame is looked up in one Hamming-radius
index over all bank frames (`pdq_index.build_index`: multi-index hashing above 10k frames), whose
rows map to the video they came from; only videos with at least one frame hit are scored.
"""

from __future__ import annotations

import statistics
from array import array
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Protocol

import numpy as np
import numpy.typing as npt

from schoolgate.banks.model import BankError, SignalType
from schoolgate.banks.store import BankStore
from schoolgate.matching.matcher import DEFAULT_MIN_QUALITY, DEFAULT_PDQ_MAX_DISTANCE, BankMatch
from schoolgate.matching.pdq_index import HASH_BITS, PdqIndex, build_index
from schoolgate.matching.snapshot import StoreSnapshot

DEFAULT_QUERY_MATCH_PERCENT = 50.0
DEFAULT_BANK_MATCH_PERCENT = 0.0


@dataclass(frozen=True)
class VideoMatchSettings:
    """The vPDQ rule's parameters (see the module docstring for the defaults)."""

    max_distance: int = DEFAULT_PDQ_MAX_DISTANCE
    min_quality: int = DEFAULT_MIN_QUALITY
    query_match_percent: float = DEFAULT_QUERY_MATCH_PERCENT
    bank_match_percent: float = DEFAULT_BANK_MATCH_PERCENT
    # Frames hashed per second of an upload (see schoolgate.video.VideoHasher): 4 puts one
    # within 1/8 s of every banked frame, whatever the trim point.
    query_samples_per_hash: int = 4

    def __post_init__(self) -> None:
        if not 0 <= self.max_distance <= HASH_BITS:
            raise BankError(f"video max_distance must be 0..{HASH_BITS}, got {self.max_distance}")
        if not 0 <= self.min_quality <= 100:
            raise BankError(f"video min_quality must be 0..100, got {self.min_quality}")
        if not 1 <= self.query_samples_per_hash <= 30:
            raise BankError(
                f"video query_samples_per_hash must be 1..30, got {self.query_samples_per_hash}"
            )
        for name in ("query_match_percent", "bank_match_percent"):
            value = getattr(self, name)
            if not 0 <= value <= 100:
                raise BankError(f"video {name} must be 0..100, got {value}")


@dataclass(frozen=True)
class VideoMatch(BankMatch):
    """A banked video that the query matched. `value` is the banked video's content id and
    `distance` the median bit distance of the query frames that matched it."""

    query_match_percent: float = 0.0
    bank_match_percent: float = 0.0
    frames_matched: int = 0

    @property
    def audit_extra(self) -> dict[str, float | int]:
        """Extra fields for the audit record."""
        return {
            "query_match_percent": round(self.query_match_percent, 1),
            "bank_match_percent": round(self.bank_match_percent, 1),
            "frames_matched": self.frames_matched,
        }


class QueryFrame(Protocol):
    """What the matcher reads from a query frame (schoolgate.video.VpdqFeature)."""

    @property
    def hex(self) -> str: ...
    @property
    def quality(self) -> int: ...
    @property
    def variants(self) -> tuple[str, ...]: ...
    @property
    def slot(self) -> int | None: ...
    @property
    def frame(self) -> int: ...


@dataclass(frozen=True)
class _BankVideo:
    bank: str
    content_id: str
    note: str
    frames: int  # distinct frames of quality >= min_quality


class VideoMatcher:
    """A read-only snapshot of every banked video's frames; safe for concurrent queries."""

    def __init__(
        self,
        *,
        version: int,
        videos: Sequence[_BankVideo],
        hashes: npt.NDArray[np.uint8],
        owners: npt.NDArray[np.int64],
        settings: VideoMatchSettings = VideoMatchSettings(),
    ) -> None:
        self.version = version
        self.settings = settings
        self._videos = tuple(videos)
        self._owners = owners
        self._index: PdqIndex = build_index(hashes)

    @property
    def videos(self) -> int:
        return len(self._videos)

    @property
    def frames(self) -> int:
        return len(self._owners)

    @classmethod
    def from_store(
        cls, store: BankStore, settings: VideoMatchSettings = VideoMatchSettings()
    ) -> VideoMatcher:
        """Snapshot every bank's vPDQ frames: low-quality frames dropped, repeats counted once."""
        version = store.version()
        ids: dict[tuple[str, str], int] = {}
        notes: dict[tuple[str, str], str] = {}
        seen: set[tuple[int, bytes]] = set()
        raws = bytearray()
        owners = array("q")
        for bank, content_id, raw, quality, note in store.iter_video_frames():
            key = (bank, content_id)
            video = ids.setdefault(key, len(ids))
            notes.setdefault(key, note)
            if quality is not None and quality < settings.min_quality:
                continue
            if (video, raw) in seen:
                continue
            seen.add((video, raw))
            raws += raw
            owners.append(video)
        counts = np.bincount(np.frombuffer(owners, dtype=np.int64), minlength=len(ids))
        videos = [
            _BankVideo(bank, content_id, notes[(bank, content_id)], int(counts[video]))
            for (bank, content_id), video in ids.items()
        ]
        return cls(
            version=version,
            videos=videos,
            hashes=np.frombuffer(bytes(raws), dtype=np.uint8).reshape(-1, 32),
            owners=np.frombuffer(owners, dtype=np.int64),
            settings=settings,
        )

    def match(
        self, query: Sequence[QueryFrame], settings: VideoMatchSettings | None = None
    ) -> list[VideoMatch]:
        """Banked videos the query matches under the vPDQ rule, best first.

        `settings` overrides the rule for this query (bank frames stay filtered by the
        quality the snapshot was built with).
        """
        settings = settings or self.settings
        frames = _distinct_frames(query, settings.min_quality)
        # The query's share is counted in slots (one per second of a densely sampled query,
        # else one per frame): a slot matches when any of its frames matches.
        slots: dict[object, int] = {}
        for number, feature in enumerate(frames):
            slots.setdefault(_slot_key(feature, number), len(slots))
        query_hits: dict[int, dict[int, int]] = {}  # video -> query slot -> best distance
        bank_hits: dict[int, set[int]] = {}  # video -> bank rows matched
        for number, feature, row, distance in self._lookups(frames, settings):
            video = int(self._owners[row])
            slot = slots[_slot_key(feature, number)]
            hits = query_hits.setdefault(video, {})
            hits[slot] = min(distance, hits.get(slot, HASH_BITS + 1))
            bank_hits.setdefault(video, set()).add(row)
        found: list[VideoMatch] = []
        for video, hits in query_hits.items():
            banked = self._videos[video]
            query_share = 100 * len(hits) / len(slots)
            bank_share = 100 * len(bank_hits[video]) / max(banked.frames, 1)
            if query_share < settings.query_match_percent:
                continue
            if bank_share < settings.bank_match_percent:
                continue
            found.append(
                VideoMatch(
                    bank=banked.bank,
                    signal_type=SignalType.VPDQ,
                    value=banked.content_id,
                    distance=int(statistics.median_low(hits.values())),
                    quality=None,
                    note=banked.note,
                    query_match_percent=query_share,
                    bank_match_percent=bank_share,
                    frames_matched=len(hits),
                )
            )
        found.sort(key=lambda m: (-m.query_match_percent, -m.bank_match_percent, m.bank, m.value))
        return found

    def frames_shown(self, query: Sequence[QueryFrame]) -> dict[tuple[str, str], set[int]]:
        """For each banked video (bank, content id), the query's frames (frame numbers) that
        show one of its frames as it is, whether or not the query as a whole matches it: what
        two videos share bit for bit (an intro, an end card), as opposed to an edited copy."""
        settings = self.settings
        shown: dict[tuple[str, str], set[int]] = {}
        frames = [feature for feature in query if feature.quality >= settings.min_quality]
        for _number, feature, row, _distance in self._lookups(frames, settings):
            banked = self._videos[int(self._owners[row])]
            shown.setdefault((banked.bank, banked.content_id), set()).add(feature.frame)
        return shown

    def _lookups(
        self, frames: Sequence[QueryFrame], settings: VideoMatchSettings
    ) -> Iterator[tuple[int, QueryFrame, int, int]]:
        """(query frame's position, the frame, bank row, distance) for each bank frame within
        `max_distance` of a query frame's hash or one of its variants."""
        if not self._videos:
            return
        for number, feature in enumerate(frames):
            for value in (feature.hex, *feature.variants):
                for row, distance in self._index.query(bytes.fromhex(value), settings.max_distance):
                    yield number, feature, row, distance


def _distinct_frames(query: Sequence[QueryFrame], min_quality: int) -> list[QueryFrame]:
    """The query's frames of at least `min_quality`, a repeated frame (same hash) once."""
    frames: dict[str, QueryFrame] = {}
    for feature in query:
        if feature.quality >= min_quality:
            frames.setdefault(feature.hex, feature)
    return list(frames.values())


def _slot_key(feature: QueryFrame, number: int) -> object:
    return ("slot", feature.slot) if feature.slot is not None else ("frame", number)


def video_matchers(
    store: BankStore, settings: VideoMatchSettings, reload_interval_s: float
) -> StoreSnapshot[VideoMatcher]:
    """A VideoMatcher kept in step with the bank store, built on first use: a proxy that never
    sees a video never pays for the index."""
    build = partial(VideoMatcher.from_store, store, settings)
    return StoreSnapshot(store, build, reload_interval_s, lazy=True)
