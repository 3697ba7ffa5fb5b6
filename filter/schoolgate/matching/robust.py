"""The robust tier: match edited copies (crops, screenshots, captions, stickers, small rotations)
against the feature sets of small incident banks, with geometric verification.

Three stages, each bounded:

1. Candidates. Every banked descriptor is indexed by its 16 16-bit chunks (multi-index hashing):
   a query descriptor within ~40 bits of a banked one shares an exact chunk with it more often
   than not. The chunks' hits are checked with the exact Hamming distance, and each banked item
   gets one vote per query descriptor that has a near neighbour in it. Chunk values shared by
   more than `bucket_cap` banked descriptors (flat regions, stripes) are skipped: they carry
   little evidence and would make the time depend on the bank's content. Where one banked
   item's votes gather in a small part of the query (`sighting`), the tier looks there closer:
   a picture pasted onto another photo keeps few keypoints in the whole view.
2. Verification, for at most `max_candidates` items with enough votes: nearest neighbours between
   the query and that item (ratio test, mutual nearest), then a transform estimated with RANSAC:
   a similarity (rotation, uniform scale, translation), an affine one (a stretch, a shear) or a
   perspective (a photo of a screen), each preferred only where it explains clearly more
   matches than the simpler one. A match needs `min_inliers` inliers whose
   positions cover at least `min_spread` of the banked image's 4x4 grid cells, and a plausible
   scale. Repetitive textures give many consistent matches crowded in one place; the spread
   test is what rejects them.
3. Content, for a geometric match: the query is warped onto the banked picture and their content
   grids compared (`schoolgate.media.content_grid`). What two *different* pictures share (a chat
   app's interface around two photos, one overlay or frame over two drawings) aligns perfectly
   and passes stage 2; the pictures themselves disagree here. At least `min_agreement` of the
   banked photo cells the copy covers must agree (`min_graphic_agreement` of all structured cells
   for an item with few photo cells), and few of the banked photo cells may show an unrelated
   photograph instead (`max_replaced`: another subject before the same background). A match
   whose inliers all lie around the banked picture's middle quarter while the middle itself
   disagrees rests on a shared frame or border alone, and is refused. A banked screen whose
   photo is small (a few of the 64 areas, `features.photo_judge`) also carries that photo's own
   grid: the copy warped into the photo's frame must agree there as well, or the same thread
   around another photo would match (a45 F1). Feature sets banked before grids existed skip
   this stage.

The index is immutable once built, so one instance serves every worker thread.

Why one module of this length: the stages (candidates, alignment, the content check, the pictures
of collages) read the index's arrays and one set of thresholds; apart, each would be handed the
index's insides.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Final, NamedTuple, cast

import cv2
import numpy as np

from schoolgate.matching.bands import banded_copy, moved_ways
from schoolgate.matching.geometry import jacobian, mapped, then, transform_is_plausible
from schoolgate.matching.strips import cell_shifts, shows_a_part, warp, warp_in_strips
from schoolgate.media.content_grid import (
    GRID,
    Agreement,
    ContentGrid,
    agreement,
    content_grid,
    pictures_needed,
)
from schoolgate.media.features import PANEL_VIEW, LocalFeatures

type Shown = dict[tuple[str, str, str], set[str]]  # a collage -> its pictures a query shows
_CHUNKS = 16  # 16-bit chunks of a 256-bit ORB descriptor
_SPREAD_GRID = 4
# RANSAC draws for the homography: a copy's matches are mostly inliers (half of them or more
# needs under 100 draws at 99.5% confidence), and this caps the time on a candidate that is not.
_PERSPECTIVE_ITERATIONS = 2000
# Keypoints on both sides above which a copy aligns: on the robust bench every edited copy
# with this many that PDQ found beyond 8 bits also verified here (the six that did not were of a
# flat colour wheel, with fewer).
_JUDGEABLE_KEYPOINTS = 250
_PIECE_CANDIDATES = 3  # a piece of a query shows a picture or two, maybe banked twice


@dataclass(frozen=True)
class RobustThresholds:
    """What counts as a robust match (per bank; config `banks.robust`)."""

    min_inliers: int = 20
    min_spread: float = 0.3  # share of the banked image's 4x4 cells holding inliers
    ratio: float = 0.85  # nearest / second-nearest Hamming distance, per query keypoint
    max_hamming: int = 64  # bits; farther descriptors are never paired
    max_scale: float = 6.0  # the copy may be at most this much larger or smaller
    max_stretch: float = 1.6  # one axis at most this much more scaled than the other
    min_agreement: float = 0.5  # of the banked photo cells the aligned copy covers
    # A banked item with few photo cells (a drawing, a text meme, a screenshot around a drawing)
    # is judged on all its structured cells, an interface's among them: more must agree.
    min_graphic_agreement: float = 0.75
    # Banked picture cells the copy may show as an unrelated photograph (content_grid). Of 940
    # verified true copies on the precision and robust suites, 939 had at most 2 (one had 3: a
    # caption's edges half covering cells of a low-texture photo); another subject or picture
    # under the same surround had 3 or more.
    max_replaced: int = 2


@dataclass(frozen=True)
class IndexLimits:
    """Bounds on the work per query, whatever the bank holds."""

    max_candidates: int = 8
    # Chunk values shared by more banked descriptors than this are skipped; None: 16, or 1.5x the
    # mean bucket size in banks over ~700k descriptors, so the cap follows the bank's growth.
    # Measured with 1,000 banked items (tuning split): a cap of 16 kept >= 43 votes for the true
    # item of every hard edit while no unrelated query got more than 9; a cap of 128 let
    # unrelated queries reach 114 votes and tripled the time. Sampling crowded buckets instead
    # of skipping them was worse still (unrelated queries up to 473 votes): crowded values come
    # from flat regions and stripes, and carry no evidence. The price: more than ~16 banked
    # near-identical copies of one picture dilute each other's votes (PDQ still matches them).
    bucket_cap: int | None = None
    # Stage 1 counts a query keypoint as a vote when a banked descriptor is this close. Measured
    # on the tuning split: at 40 bits the true item of an edited copy got >= 100 votes, while an
    # unrelated item's median was 9 (p99 84); at 64 bits the unrelated median rose to 98.
    vote_hamming: int = 40
    min_votes: int = 20
    ransac_iterations: int = 2000
    ransac_threshold: float = 0.012  # reprojection error, as a share of the working frame's side


@dataclass(frozen=True)
class RobustEntry:
    """One banked feature set: a view (whole image, content box, mirror) of one banked item."""

    bank: str
    content_id: str
    note: str
    features: LocalFeatures
    # A view banked only to align a distorted copy (a squashed copy of the item's picture): the
    # aligned copy's content is judged on the view it was made from, mapped there by the 3x3
    # map (this view's frame -> that view's). On the squashed view's own grid another subject
    # covers half the cells (adversarial pass a21).
    judged_on: tuple[LocalFeatures, np.ndarray] | None = None
    # A whole view with a small photo in it (a chat screenshot's): that photo's own grid and the
    # map to its frame; the aligned copy must show that photo too (a45 F1, features.photo_judge).
    photo: tuple[LocalFeatures, np.ndarray] | None = None
    # A screen banked whole over a photo wallpaper: its bands' grids and the maps to their
    # frames; the aligned copy must show no other photograph in any of them (a64 F1), and
    # must agree where it shows a band's photographic cells (a wallpaper where the picture
    # was is no other photograph).
    bands: tuple[tuple[LocalFeatures, np.ndarray], ...] = ()
    # One picture of a banked collage, banked on its own (its view's name): a copy must show
    # two of them to match, one alone is not the collage (a49: swapped halves).
    panel: str | None = None
    # The banked video's key frame this view is of ("frame12:..."); None for a picture.
    frame: int | None = None

    @classmethod
    def of_view(cls, bank: str, content_id: str, note: str, view: str,
                features: LocalFeatures) -> RobustEntry:  # fmt: skip
        """The entry for a banked view by its name (`bank_feature_views`): a collage's
        picture is marked as one."""
        frame, colon, name = view.rpartition(":")
        picture = name.removeprefix("mirror-")  # its mirror image is the same picture
        panel = f"{frame}{colon}{picture}" if picture.startswith(PANEL_VIEW) else None
        number = frame.removeprefix("frame")
        key_frame = int(number) if frame.startswith("frame") and number.isdigit() else None
        return cls(bank, content_id, note, features, panel=panel, frame=key_frame)


@dataclass(frozen=True)
class RobustHit:
    """A verified match and its evidence."""

    bank: str
    content_id: str
    note: str
    inliers: int
    spread: float
    scale: float
    rotation_deg: float
    votes: int
    content: Agreement | None = None  # None: banked before content grids
    panels: int = 0  # a collage matched picture by picture: how many of its pictures
    banked_frame: int | None = None  # the banked video's key frame that matched
    banked_at_end: bool = False  # that frame is among the banked video's first or last two

    def evidence(self) -> dict[str, float]:
        found = {"inliers": float(self.inliers), "spread": round(self.spread, 3),
                 "scale": round(self.scale, 3), "rotation_deg": round(self.rotation_deg, 1),
                 "votes": float(self.votes)}  # fmt: skip
        found |= {"panels": float(self.panels)} if self.panels else {}
        found |= {"banked_frame": float(self.banked_frame)} if self.banked_frame is not None else {}
        found |= {"banked_at_end": 1.0} if self.banked_at_end else {}
        return found | (self.content.evidence() if self.content is not None else {})


@dataclass(frozen=True)
class Sighting:
    """A banked item whose votes gather in a small part of a query (`RobustIndex.sighting`):
    its views (a mask over the index's entries) and the middle of its voters (shares of the
    query's frame)."""

    views: np.ndarray
    at: tuple[float, float]


class Tally(NamedTuple):
    """Stage 1 for one query view (`RobustIndex.tally`): what each banked entry drew."""

    votes: np.ndarray  # per entry
    distinctive: np.ndarray  # per entry
    keypoint: np.ndarray  # per vote: the query keypoint
    entry: np.ndarray  # per vote: the entry it voted for


def hamming_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Hamming distances between two sets of 32-byte descriptors, (len(a), len(b)) uint16.

    Four 64-bit words at a time, _HAMMING_ROWS rows of `a` at once into buffers that stay in
    the cache (1.1 ms for 500 x 500, not 1.8), without BLAS (whose threads would contend with
    the proxy's workers).
    """
    a64 = np.ascontiguousarray(a).view(np.uint64)
    b64 = np.ascontiguousarray(np.ascontiguousarray(b).view(np.uint64).T)
    distances = np.empty((a64.shape[0], b64.shape[1]), np.uint16)
    xor = np.empty((_HAMMING_ROWS, b64.shape[1]), np.uint64)
    bits = np.empty((_HAMMING_ROWS, b64.shape[1]), np.uint8)
    for start in range(0, a64.shape[0], _HAMMING_ROWS):
        rows = a64[start : start + _HAMMING_ROWS]
        into, words, count = (
            distances[start : start + len(rows)],
            xor[: len(rows)],
            bits[: len(rows)],
        )
        for word in range(a64.shape[1]):
            np.bitwise_xor(rows[:, word, None], b64[word][None, :], out=words)
            np.bitwise_count(words, out=count)
            if word:
                into += count
            else:
                into[...] = count
    return distances


_HAMMING_ROWS: Final = 64


class RobustIndex:
    """Feature sets of the banks that run the robust tier, ready for candidate search."""

    def __init__(
        self,
        entries: Sequence[RobustEntry],
        thresholds: Mapping[str, RobustThresholds] | None = None,
        default: RobustThresholds | None = None,
        limits: IndexLimits | None = None,
    ) -> None:
        self._entries = tuple(entries)
        self._default = default or RobustThresholds()
        self._thresholds = dict(thresholds or {})
        self._limits = limits or IndexLimits()
        counts = np.array([len(e.features) for e in self._entries], dtype=np.int64)
        self._offsets = np.r_[0, np.cumsum(counts)].astype(np.int64)
        self._owner = np.repeat(np.arange(len(self._entries), dtype=np.int32), counts)
        if counts.sum():
            self._descriptors = np.ascontiguousarray(
                np.concatenate([e.features.descriptors for e in self._entries])
            )
        else:
            self._descriptors = np.zeros((0, 32), np.uint8)
        self._items = {key: n for n, key in enumerate(dict.fromkeys(
            (e.bank, e.content_id) for e in self._entries))}  # fmt: skip
        self._item_of = np.array([self._items[(e.bank, e.content_id)] for e in self._entries],
                                 dtype=np.int64)  # fmt: skip
        self._panels_of: dict[tuple[str, str, str], list[int]] = {}
        for number, entry in enumerate(self._entries):
            if entry.panel is not None:
                self._panels_of.setdefault(_collage_of(entry), []).append(number)
        self._panel_counts = {collage: len({self._entries[n].panel for n in numbers})
                              for collage, numbers in self._panels_of.items()}  # fmt: skip
        self.collages = bool(self._panels_of)  # whether any item is banked as its pictures too
        self._is_panel = np.array([e.panel is not None for e in self._entries], dtype=bool)
        self._views_of: dict[str, list[int]] = {}
        for number, entry in enumerate(self._entries):
            self._views_of.setdefault(entry.content_id, []).append(number)
        # A banked video's first two and last two key frames: where an intro or an end card
        # shows (a quarter of a clip banked with the default eight).
        frames: dict[tuple[str, str], set[int]] = {}
        for entry in self._entries:
            if entry.frame is not None:
                frames.setdefault((entry.bank, entry.content_id), set()).add(entry.frame)
        self._end_frames = {item: {*sorted(numbers)[:2], *sorted(numbers)[-2:]}
                            for item, numbers in frames.items()}  # fmt: skip
        mean_bucket = self._descriptors.shape[0] / 65536
        self._bucket_cap = self._limits.bucket_cap or max(16, round(1.5 * mean_bucket))
        chunks = self._descriptors.view("<u2")  # (n, 16)
        self._chunk_order: list[np.ndarray] = []
        self._chunk_sorted: list[np.ndarray] = []
        for chunk in range(_CHUNKS):
            values = chunks[:, chunk]
            order = np.argsort(values, kind="stable").astype(np.int32)
            self._chunk_order.append(order)
            self._chunk_sorted.append(values[order])

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def descriptor_count(self) -> int:
        return int(self._descriptors.shape[0])

    def content_ids(self) -> set[tuple[str, str]]:
        """(bank, content id) of every item with a feature set here."""
        return set(self._items)

    def thresholds(self, bank: str) -> RobustThresholds:
        return self._thresholds.get(bank, self._default)

    def match(self, query: LocalFeatures, max_hits: int | None = 1, shown: Shown | None = None,
              collages_only: bool = False, whole_only: bool = False,
              aligned: set[int] | None = None, among: np.ndarray | None = None,
              tally: Tally | None = None) -> list[RobustHit]:  # fmt: skip
        """Verified matches for one query view, best-voted candidates first.

        Verification stops after `max_hits` matches (one is enough to decide; None checks every
        candidate, for reports and benchmarks). `shown` carries the pictures of each collage
        found in the query's other views: a grid re-laid as a strip of four shows each picture
        where only its own view (the query split at its gutters) finds it (a50).
        `collages_only`: only the pictures of banked collages are looked for (a piece of the
        query, not a view of it: signals.query_pieces). `whole_only`: a match must show the
        banked view whole (the query is a window of the picture sent, signals.closer_views:
        a part of a banked picture is judged in the whole view, beside what surrounds it).
        `aligned`: where given, the banked views the query aligned with (verified or refused by
        the content check) are added to it. `among`: only these banked views (a mask over them,
        a `Sighting`'s) are candidates. `tally`: the query's `tally`, where already taken."""
        shown = {} if shown is None else shown
        if not self._entries or len(query) < self._default_floor():
            return []
        hits: list[RobustHit] = []
        looked: set[tuple[str, str, str]] = set()  # collages whose pictures were looked for
        allowed = self._pictures_to_find(shown) if collages_only else among
        for entry_id, votes in self._candidates(query, allowed, tally):
            hit, lined_up = self._check(query, entry_id, votes, whole_only)
            if lined_up and aligned is not None:
                aligned.add(entry_id)
            if hit is None:
                continue
            panel = self._entries[entry_id].panel
            if panel is not None:
                collage = _collage_of(self._entries[entry_id])
                if collage in looked:
                    continue
                # The other pictures of the collage are looked for at once (in a view, not a
                # piece: the other pieces show them): other banked items showing the same
                # pictures can take their places among the candidates.
                found = {panel} | {
                    self._entries[other].panel or ""
                    for other in self._panels_of[collage]
                    if allowed is None and other != entry_id
                    and self._check(query, other, 0, whole_only)[0] is not None
                }  # fmt: skip
                looked.add(collage)
                shown[collage] = everywhere = shown.get(collage, set()) | found
                if len(everywhere) < pictures_needed(self._panel_counts[collage]):
                    # Some of its pictures alone, or a photo wrongly split at a pasted box, whose
                    # other halves match what another picture shares (a shared background).
                    continue
                hit = replace(hit, panels=len(everywhere))
            hits.append(hit)
            if max_hits is not None and len(hits) >= max_hits:
                break
        return hits

    def _default_floor(self) -> int:
        floors = [self._default.min_inliers, *(t.min_inliers for t in self._thresholds.values())]
        return max(4, min(floors))

    def _pictures_to_find(self, shown: Shown) -> np.ndarray:
        """The banked pictures of collages a piece of a query is matched against: those it does
        not show yet (of any collage: banked collages may share a picture). Each piece then
        costs a few verifications (a53: 16 pieces verifying eight candidates each took 1.9 s)."""
        allowed = self._is_panel.copy()
        for number in np.flatnonzero(allowed).tolist():
            entry = self._entries[number]
            allowed[number] = entry.panel not in shown.get(_collage_of(entry), ())
        return allowed

    def _candidates(self, query: LocalFeatures, allowed: np.ndarray | None = None,
                    tally: Tally | None = None) -> list[tuple[int, int]]:  # fmt: skip
        """(entry, votes) for the best-voted entries, at most limits.max_candidates (only
        `allowed` ones, at most _PIECE_CANDIDATES, where given)."""
        tally = self.tally(query) if tally is None else tally
        if tally is None:
            return []
        votes, distinctive = tally.votes, tally.distinctive
        limits = self._limits
        eligible = votes >= limits.min_votes
        most = limits.max_candidates
        if allowed is not None:
            eligible &= allowed
            most = _PIECE_CANDIDATES
        ranked = np.argsort(-np.where(eligible, distinctive, -1.0), kind="stable")
        return [(int(e), int(votes[e])) for e in ranked[:most] if eligible[e]]

    def sighting(self, query: LocalFeatures, min_votes: int, most_area: float,
                 passed: Collection[int] = (), tally: Tally | None = None
                 ) -> Sighting | None:  # fmt: skip
        """Where in the query the best-voted banked item's votes (stage 1) gather: where it has
        `min_votes` or more and the keypoints that voted for it (their middle 80% each way)
        lie in at most `most_area` of the frame, as a picture shown small in it; with the views
        of every item that has `min_votes` (the windows there are matched against them, the
        best few by their votes). The items of the views `passed` (some view of the query
        lined up with them, and they were judged there) are left out. `tally`: the query's
        `tally`, where already taken. None otherwise."""
        tally = self.tally(query) if tally is None else tally
        if tally is None:
            return None
        votes = tally.votes.copy()
        if passed:
            votes[np.isin(self._item_of, self._item_of[list(passed)])] = 0
        best = int(votes.argmax())
        if votes[best] < min_votes:
            return None
        points = query.points[tally.keypoint[tally.entry == best]]
        low, middle, high = np.percentile(points, (10, 50, 90), axis=0)
        width, height = (high - low) / (query.width, query.height)
        if width * height > most_area:
            return None
        # Every item voted for so much is looked for there, not the best alone: a banked video
        # whose frames pan over the banked photo shares its votes.
        views = np.isin(self._item_of, self._item_of[votes >= min_votes])
        return Sighting(views, (float(middle[0] / query.width), float(middle[1] / query.height)))

    def tally(self, query: LocalFeatures) -> Tally | None:
        """Per banked entry, its votes and its distinctive votes (see `_candidates`), and each
        vote's query keypoint and entry; None where no chunk of the query's descriptors is
        banked (or the index or the query is empty). A lookup and a sighting of one view
        share it."""
        if not self._entries or not len(query):
            return None
        limits = self._limits
        query_chunks = np.ascontiguousarray(query.descriptors).view("<u2")
        pair_query: list[np.ndarray] = []
        pair_bank: list[np.ndarray] = []
        for chunk in range(_CHUNKS):
            ordered = self._chunk_sorted[chunk]
            values = query_chunks[:, chunk]
            low = np.searchsorted(ordered, values, "left")
            high = np.searchsorted(ordered, values, "right")
            counts = high - low
            counts[counts > self._bucket_cap] = 0
            total = int(counts.sum())
            if not total:
                continue
            starts = np.repeat(low - (np.cumsum(counts) - counts), counts)
            positions = np.arange(total) + starts
            pair_query.append(np.repeat(np.arange(len(values), dtype=np.int32), counts))
            pair_bank.append(self._chunk_order[chunk][positions])
        if not pair_query:
            return None
        queries = np.concatenate(pair_query)
        banked = np.concatenate(pair_bank)
        q64 = np.ascontiguousarray(query.descriptors).view(np.uint64)[queries]
        b64 = self._descriptors.view(np.uint64)[banked]
        distance = np.bitwise_count(q64 ^ b64).sum(axis=1, dtype=np.uint16)
        close = distance <= limits.vote_hamming
        # One vote per (query keypoint, entry), however many chunks or neighbours found it.
        entries = len(self._entries)
        pairs = np.unique(queries[close].astype(np.int64) * entries + self._owner[banked[close]])
        keypoint, entry = pairs // entries, pairs % entries
        votes = np.bincount(entry, minlength=entries)
        # Ranked by distinctive votes: a query keypoint that finds many banked items (an app's
        # interface, a font, a common logo) says little about which one it shows, so its vote
        # is shared among them, as a word common to many documents weighs less in text search.
        # Without this, a banked screenshot's photo shown in the same app as other banked
        # screenshots lost its place among the candidates to theirs.
        items = len(self._items)
        found = np.unique(keypoint * items + self._item_of[entry])
        items_per_keypoint = np.bincount(found // items, minlength=len(query))
        weight = 1.0 / np.maximum(items_per_keypoint, 1)
        distinctive = np.bincount(entry, weights=weight[keypoint], minlength=entries)
        return Tally(votes, distinctive, keypoint, entry)

    def _align(
        self, source: np.ndarray, target: np.ndarray, threshold: float, rules: RobustThresholds
    ) -> tuple[np.ndarray | None, np.ndarray]:
        """The transform from query to banked frame and its inliers: a similarity (rotation,
        uniform scale, shift) or, where it explains more of the matches, an affine one whose axes
        may be stretched differently (adversarial pass a7: a picture stretched by a tenth on one
        axis and framed matched neither tier; a similarity misaligns it, and the content check
        then sees disagreement). (None, no inliers) when neither fits."""
        best: tuple[np.ndarray | None, np.ndarray] = (None, np.zeros(len(source), bool))
        iterations = self._limits.ransac_iterations
        consensus = 0  # the most matches any model explained, plausible or not
        for model in ("similarity", "affine", "perspective"):
            if model == "perspective":
                # Only where an affine model already explained a good part of the matches: a
                # perspective copy is nearly affine over much of the picture, and the costly
                # homography is not tried for the many candidates that are other pictures.
                if len(source) < 4 or consensus < rules.min_inliers // 2:
                    break
                # USAC's local optimisation reaches RANSAC's consensus at a twentieth of the
                # time (0.3 against 5 ms a candidate on the precision suite's screenshots).
                found = cv2.findHomography(source, target, cv2.USAC_FAST, threshold,
                                           maxIters=_PERSPECTIVE_ITERATIONS,
                                           confidence=0.995)  # fmt: skip
            else:
                estimate = (cv2.estimateAffinePartial2D if model == "similarity"
                            else cv2.estimateAffine2D)  # fmt: skip
                found = estimate(source, target, method=cv2.RANSAC,
                                 ransacReprojThreshold=threshold, maxIters=iterations,
                                 confidence=0.995)  # fmt: skip
            # OpenCV's stubs say otherwise, but both are None when no model fits.
            transform, mask = cast(tuple[np.ndarray | None, np.ndarray | None], found)
            if transform is None or mask is None:
                continue
            inliers = mask.ravel().astype(bool)
            count = int(inliers.sum())
            consensus = max(consensus, count)
            # Each model has more degrees of freedom than the one before: it must explain
            # clearly more of the matches to be preferred.
            margin = 0 if best[0] is None else int(best[1].sum()) * 11 // 10 + 2
            if (
                count >= rules.min_inliers
                and count >= margin
                and transform_is_plausible(transform, source, rules.max_scale, rules.max_stretch)
            ):
                best = (transform, inliers)
        return best

    def shapes(self, content_id: str) -> list[tuple[int, int]]:
        """(width, height) of every banked view of an item that shows it undistorted (not a
        squashed view), in its working frame."""
        views = [self._entries[e] for e in self._views_of.get(content_id, ())]
        found = [entry.features for entry in views if entry.judged_on is None
                 and entry.panel is None]  # fmt: skip
        return list(dict.fromkeys((f.width, f.height) for f in found))

    def confirm(self, query: LocalFeatures, content_id: str) -> bool | None:
        """Whether one query view shows one banked item, by every banked view of it: True when
        a view verifies; False when a view aligns but shows another picture (the content check
        refused it), or when both sides have keypoints enough to align a copy and none aligns;
        None otherwise (too little texture to say either way)."""
        refuted = False
        for entry_id in self._views_of.get(content_id, ()):
            entry = self._entries[entry_id]
            if entry.panel is not None:
                continue  # one picture of a collage neither confirms nor refutes it
            hit, aligned = self._check(query, entry_id, 0)
            if hit is not None:
                return True
            textured = min(len(query), len(entry.features)) >= _JUDGEABLE_KEYPOINTS
            refuted = refuted or aligned or textured
        return False if refuted else None

    def _check(
        self, query: LocalFeatures, entry_id: int, votes: int, whole_only: bool = False
    ) -> tuple[RobustHit | None, bool]:
        """(the verified hit or None, whether the geometry aligned at all)."""
        entry = self._entries[entry_id]
        rules = self.thresholds(entry.bank)
        banked = entry.features
        distances = hamming_matrix(query.descriptors, banked.descriptors)
        if distances.shape[0] < 2 or distances.shape[1] < 2:
            return None, False
        nearest_two = np.partition(distances, 1, axis=1)[:, :2]
        best = distances.argmin(axis=1)
        best_distance = nearest_two[:, 0].astype(np.float32)
        ratio_ok = best_distance < rules.ratio * nearest_two[:, 1]
        # Mutual nearest: the banked keypoint's own nearest query keypoint is this one.
        mutual = distances.argmin(axis=0)[best] == np.arange(len(best))
        keep = ratio_ok & mutual & (best_distance <= rules.max_hamming)
        if int(keep.sum()) < rules.min_inliers:
            return None, False
        source = query.points[keep]
        target = banked.points[best[keep]]
        threshold = self._limits.ransac_threshold * max(banked.width, banked.height)
        transform, inliers = self._align(source, target, threshold, rules)
        if transform is None:
            return None, False
        count = int(inliers.sum())
        linear = jacobian(transform, source[inliers].mean(axis=0))
        scale = float(np.sqrt(abs(np.linalg.det(linear))))
        spread = _spread(target[inliers], banked.width, banked.height)
        if spread < rules.min_spread:
            return None, False
        if whole_only and _shown_share(transform, query, banked) < _WHOLE_SHOWN:
            return None, True  # a part of the banked picture, seen through a window
        judged, onto, matched = banked, transform, target
        if entry.judged_on is not None:
            judged, back = entry.judged_on
            onto = then(transform, back)
            matched = target @ back[:2, :2].T + back[:2, 2]
        points = matched[inliers]
        banked_grid, luma = judged.grid, query.luma
        content = None
        if banked_grid is not None and luma is not None:  # a set banked before grids has none
            aligned = _aligned(luma, judged, onto)
            content = _agreement_of(aligned[2], banked_grid, judged, points)
            if not _same_picture(content, points, judged, rules):
                # A copy whose parts moved apart aligns on one of them (a74 F1, a77 J1).
                matches = (source, matched, threshold)
                content = _in_parts(luma, onto, judged, aligned, matches, points, rules)
                if content is None:
                    return None, True  # aligned on what surrounds the pictures; they differ
        if entry.photo is not None and content is not None:
            photo, to_photo = entry.photo
            seen = _aligned_agreement(query, photo, then(transform, to_photo), np.empty((0, 2)))
            if seen is not None and (seen.share < rules.min_agreement
                                     or seen.replaced > rules.max_replaced):  # fmt: skip
                return None, True  # the same screen around another small photo
            content = seen or content
        for band, to_band in entry.bands if content is not None else ():
            seen = _aligned_agreement(query, band, then(transform, to_band), np.empty((0, 2)))
            if seen is not None and (
                seen.replaced > rules.max_replaced
                or (seen.photographic and seen.share < _BAND_AGREEMENT)
            ):
                return None, True  # the same screen around another picture, or none
        rotation = float(np.degrees(np.arctan2(linear[1, 0], linear[0, 0])))
        hit = RobustHit(
            bank=entry.bank,
            content_id=entry.content_id,
            note=entry.note,
            inliers=count,
            spread=spread,
            scale=scale,
            rotation_deg=rotation,
            votes=votes,
            content=content,
            banked_frame=entry.frame,
            banked_at_end=entry.frame in self._end_frames.get((entry.bank, entry.content_id), ()),
        )
        return hit, True


def _in_parts(luma: np.ndarray, onto: np.ndarray, judged: LocalFeatures,
              aligned: tuple[np.ndarray, np.ndarray, ContentGrid],
              matches: tuple[np.ndarray, np.ndarray, float], points: np.ndarray,
              rules: RobustThresholds) -> Agreement | None:  # fmt: skip
    """How a copy that the plain comparison refused agrees with the `judged` banked picture
    once its parts are compared where they belong: each cell where the copy's own keypoints,
    or its rows or columns of cells, put it (strips), else its bands of any width slid back
    (bands). None where neither makes it the banked picture, or where it shows no part of the
    banked picture where it lies (it aligned on what surrounds the pictures). `luma`: the
    query's, `onto` its alignment, `aligned` its plain warp and grid, `matches` its matched
    keypoints (query points, banked-frame points, the tolerance), `points` the inliers."""
    banked_grid = judged.grid
    if banked_grid is None or not shows_a_part(aligned[2], banked_grid):
        return None
    source, matched, threshold = matches
    size = (judged.width, judged.height)
    shifts = cell_shifts(source, matched, onto, size, threshold)
    moved = warp_in_strips(luma, onto, size, shifts, banked_grid, aligned)
    if moved is not None:
        content = _agreement_of(moved[2], banked_grid, judged, points)
        if _same_picture(content, points, judged, rules):
            return content
    ways = moved_ways(source, matched, onto, size, threshold)
    banded = banded_copy(aligned, banked_grid, ways)
    if banded is None:
        return None
    content = _agreement_of(banded[2], banked_grid, judged, points)
    needed = _PUT_BACK_AGREEMENT if content.photographic else _PUT_BACK_GRAPHIC
    if content.share < needed or not _same_picture(content, points, judged, rules):
        return None
    return content


# A copy put back from its bands (bands.py) agrees nearly everywhere it is judged: on a77's and
# a78's sliced and damaged copies, 0.82 to 1.0 of its photo cells. Bands found in another picture
# under a shared background put back a part of it: 0.54 and 0.70 on the precision bench's, and
# 0.81 of a drawing's structured cells.
_PUT_BACK_AGREEMENT: Final = 0.8
_PUT_BACK_GRAPHIC: Final = 0.9

# Of a band's photographic cells that an aligned copy shows, the share that must agree. Copies
# of a screen (re-encoded, resized, its bars cropped) agree on 0.95-1.0 of them; another picture
# (or none) in the place of the banked one, a quarter of the band, leaves 0.4-0.8.
_BAND_AGREEMENT: Final = 0.85


def _collage_of(entry: RobustEntry) -> tuple[str, str, str]:
    """The collage a panel view belongs to: its item, and its video frame where it has one."""
    return entry.bank, entry.content_id, (entry.panel or "").rpartition(":")[0]


def _aligned_agreement(query: LocalFeatures, banked: LocalFeatures, transform: np.ndarray,
                       inliers: np.ndarray) -> Agreement | None:  # fmt: skip
    """The query warped by `transform` (query frame -> banked frame) compared with the banked
    content grid; None when either side has no grid to compare (a set banked before grids).
    `inliers`: the aligned keypoints, in the banked frame."""
    if banked.grid is None or query.luma is None:
        return None
    return _agreement_of(_aligned(query.luma, banked, transform)[2], banked.grid, banked, inliers)


def _aligned(luma: np.ndarray, banked: LocalFeatures, transform: np.ndarray
             ) -> tuple[np.ndarray, np.ndarray, ContentGrid]:  # fmt: skip
    """A query's luma warped into the banked frame, the pixels it covers there, and its grid."""
    warped, inside = warp(luma, transform, (banked.width, banked.height))
    return warped, inside, content_grid(warped, inside)


def _agreement_of(grid: ContentGrid, banked_grid: ContentGrid, banked: LocalFeatures,
                  inliers: np.ndarray) -> Agreement:  # fmt: skip
    """A warped query's grid compared with the banked one (`banked_grid`, of `banked`)."""
    frame = [[0, banked.height], [0, banked.width]]  # the inliers in each cell of the grid:
    per_cell = np.histogram2d(inliers[:, 1], inliers[:, 0], GRID, frame)[0].ravel().astype(int)
    return agreement(banked_grid, grid, per_cell)


def _same_picture(
    content: Agreement, inliers: np.ndarray, banked: LocalFeatures, rules: RobustThresholds
) -> bool:
    """Whether an aligned copy shows the banked picture, not only what surrounds it."""
    needed = rules.min_agreement if content.photographic else rules.min_graphic_agreement
    if content.share < needed or content.replaced > rules.max_replaced:
        return False
    # A frame, border or template shared by two pictures: every inlier lies around the middle
    # quarter, and the middle disagrees. On the precision and robust suites no true copy had
    # fewer than 6 inliers there (a central sticker or caption leaves some); every frame pair 0.
    # A sticker as large as the middle leaves none, and is told by the photo agreeing around
    # it (content_grid: `middle` is None then).
    middle_inliers = int(_in_middle(inliers, banked.width, banked.height).sum())
    return not (
        middle_inliers <= max(2, len(inliers) // 50)
        and content.middle is not None
        and content.middle < 0.5
    )


def _shown_share(transform: np.ndarray, query: LocalFeatures, banked: LocalFeatures) -> float:
    """The share of the banked frame that the query's frame covers, aligned by `transform`."""
    corners = np.array([[0, 0], [query.width, 0], [query.width, query.height],
                        [0, query.height]], np.float64)  # fmt: skip
    shown = mapped(transform, corners).astype(np.float32)
    frame = np.array([[0, 0], [banked.width, 0], [banked.width, banked.height],
                      [0, banked.height]], np.float32)  # fmt: skip
    area, _ = cv2.intersectConvexConvex(shown, frame)
    return float(area) / (banked.width * banked.height)


# A window of the picture sent (signals.closer_views) shows a banked view where it covers this
# much of it: the whole picture, pasted onto another or set in a collage's cell, cropped by a
# fifth at most. A window over a part of a banked scene, beside another subject standing where
# the banked one stood, shows that part alone (a79's and a80's: 5 of 8 matched so).
_WHOLE_SHOWN: Final = 0.8


def _in_middle(points: np.ndarray, width: int, height: int) -> np.ndarray:
    x, y = points[:, 0] / width, points[:, 1] / height
    inside: np.ndarray = (x > 0.25) & (x < 0.75) & (y > 0.25) & (y < 0.75)
    return inside


def _spread(points: np.ndarray, width: int, height: int) -> float:
    """Share of the 4x4 grid cells of a width x height frame that hold at least one point."""
    column = np.minimum(_SPREAD_GRID - 1, (points[:, 0] * _SPREAD_GRID / width).astype(np.int64))
    row = np.minimum(_SPREAD_GRID - 1, (points[:, 1] * _SPREAD_GRID / height).astype(np.int64))
    cells = np.unique(row * _SPREAD_GRID + column)
    return len(cells) / _SPREAD_GRID**2
