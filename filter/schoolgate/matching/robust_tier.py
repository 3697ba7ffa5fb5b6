"""The robust tier as matching uses it: the banked feature sets loaded into an index, how a query
is looked up, and how a verified match is reported.

Which views are banked and looked up is `schoolgate.media.signals` (`bank_feature_views`,
`query_feature_views`), beside the PDQ views, so banking and matching cannot drift apart. Works on
any decoded still image, so video frames can use it unchanged.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Iterator, Sequence
from dataclasses import dataclass, replace
from functools import partial

from PIL import Image, ImageOps

from schoolgate.banks.model import SignalType
from schoolgate.banks.store import BankStore
from schoolgate.matching.matcher import BankMatch
from schoolgate.matching.robust import (
    IndexLimits,
    RobustEntry,
    RobustHit,
    RobustIndex,
    RobustThresholds,
    Shown,
    Tally,
)
from schoolgate.matching.settings import BanksConfig
from schoolgate.matching.snapshot import StoreSnapshot
from schoolgate.media.content_grid import small_photo_box
from schoolgate.media.features import (
    FEATURE_KIND,
    PHOTO_JUDGE_VIEW,
    LocalFeatures,
    band_judge_of,
    extract_features,
    framed_judge_of,
    judge_map,
    starved_features,
    with_starved,
    working_grey,
)
from schoolgate.media.framed_pictures import screen_shaped
from schoolgate.media.inset_pictures import inset_pictures, searched_on_a_screen
from schoolgate.media.normalise import unsquash_map
from schoolgate.media.signals import (
    NEGATIVE_VIEW,
    SQUASH_RATIO,
    closer_views,
    query_feature_views,
    query_pieces,
    screens,
    squashed_view_base,
)
from schoolgate.media.small_pictures import small_pictures

log = logging.getLogger(__name__)

TIER = "robust"
SIGNAL = "orb"  # how a robust match names its signal type in verdicts and audit records


def to_bank_match(hit: RobustHit) -> BankMatch:
    """A verified robust hit as a bank match: its value is the banked item's content id."""
    return BankMatch(
        bank=hit.bank,
        signal_type=SIGNAL,
        value=hit.content_id,
        distance=0,
        quality=None,
        note=hit.note,
        tier=TIER,
        evidence=tuple(hit.evidence().items()),
    )


@dataclass(frozen=True)
class _Loaded:
    index: RobustIndex
    # (bank, banked PDQ hex) -> the items with feature sets that the hash was banked for, so a
    # distant PDQ match can be checked against the picture it claims (see RobustTier.confirm).
    items_by_pdq: dict[tuple[str, str], tuple[str, ...]]
    # (bank, banked PDQ hex) of the hashes banked for an item judged on a picture inside it.
    pictured_pdq: frozenset[tuple[str, str]] = frozenset()


def _load(store: BankStore, config: BanksConfig) -> _Loaded:
    index, pictured = build_index(store, config)
    loaded = index.content_ids()
    items: dict[tuple[str, str], list[str]] = {}
    for bank in {bank for bank, _ in loaded}:
        for signal in store.iter_signals(bank, SignalType.PDQ):
            if signal.content_id and (bank, signal.content_id) in loaded:
                items.setdefault((bank, signal.value), []).append(signal.content_id)
    pictured_pdq = frozenset(
        (bank, value) for (bank, value), ids in items.items()
        if any((bank, content_id) in pictured for content_id in ids)
    )  # fmt: skip
    return _Loaded(index, {key: tuple(ids) for key, ids in items.items()}, pictured_pdq)


def _judged_on_their_pictures(
    entries: list[RobustEntry], views: dict[tuple[str, str], dict[str, int]]
) -> list[RobustEntry]:
    """Each squashed view tied to the view it was squashed from, which judges its matches; a
    squashed view whose source view is not loaded is dropped (it would be judged on itself)."""
    dropped: set[int] = set()
    for named in views.values():
        for name, number in named.items():
            found = squashed_view_base(name, named)
            if found is None:
                continue
            base, angle = found
            if base not in named:
                dropped.add(number)
                continue
            source = entries[named[base]].features
            view = entries[number].features
            to_judged = unsquash_map((source.width, source.height), angle, SQUASH_RATIO,
                                     (view.width, view.height))  # fmt: skip
            entries[number] = replace(entries[number], judged_on=(source, to_judged))
    return [entry for number, entry in enumerate(entries) if number not in dropped]


def _with_their_photos(
    entries: list[RobustEntry], views: dict[tuple[str, str], dict[str, int]]
) -> list[RobustEntry]:
    """Each small-photo grid (PHOTO_JUDGE_VIEW, no keypoints) tied to its item's whole view,
    and each framed picture's grid (FRAMED_JUDGE_VIEW) to the view it names, which must agree
    with it to match, and each band's grid (BAND_JUDGE_VIEW) to the view it names, which must
    show no other photograph there and agree where it shows the band's photographic cells; the
    grid is not a view to look up itself."""
    dropped: set[int] = set()
    for named in views.values():
        for judge, number in named.items():
            lead, colon, view_name = judge.rpartition(":")  # a video key frame's "frame12:..."
            target = _judged_view(view_name)
            if target is None:
                continue
            dropped.add(number)
            base_name, box, band = target
            base = f"{lead}{colon}{base_name}"
            if base not in named:
                continue
            view = entries[named[base]]
            grid = view.features.grid
            if box is None and grid is not None:
                box = small_photo_box(grid, view.features.width, view.features.height)
            photo = entries[number].features
            if box is None or (box[2] - box[0], box[3] - box[1]) != (photo.width, photo.height):
                continue  # not the grid of this view's photo: not used
            grid_of = (photo, judge_map(box))
            if band:
                entries[named[base]] = replace(view, bands=(*view.bands, grid_of))
            else:
                entries[named[base]] = replace(view, photo=grid_of)
    return [entry for number, entry in enumerate(entries) if number not in dropped]


_PHOTO_JUDGES = {PHOTO_JUDGE_VIEW: "whole", f"mirror-{PHOTO_JUDGE_VIEW}": "mirror"}


def _judged_view(name: str) -> tuple[str, tuple[int, int, int, int] | None, bool] | None:
    """For a judge grid's view name: the view it judges, the photo's box in that view where
    the name gives it (a framed picture's or a band's; a small photo's is found from the
    view's grid), and whether it is a band. None for a view that judges nothing."""
    band = band_judge_of(name)
    if band is not None:
        return (*band, True)
    framed = framed_judge_of(name)
    if framed is not None:
        return (*framed, False)
    base = _PHOTO_JUDGES.get(name)
    return None if base is None else (base, None, False)


def _is_negative(view: str) -> bool:
    """Whether a banked view (an image's, or a video key frame's "frame12:negative") is a
    negative of its item's photo."""
    return view.rpartition(":")[2] in (NEGATIVE_VIEW, f"mirror-{NEGATIVE_VIEW}")


def build_index(
    store: BankStore, config: BanksConfig
) -> tuple[RobustIndex, frozenset[tuple[str, str]]]:
    """Load the feature sets of every bank that runs the robust tier, newest items first, up to
    `robust.max_items` items (a bound on memory: ~70 KB per banked view); and the items among
    them banked with a picture found inside (a screenshot's photo, a framed or pasted picture:
    `_banked_a_picture`), whose surround is not evidence."""
    robust = config.robust
    banks = [b.name for b in store.banks() if config.runs(b.name, TIER)]
    entries: list[RobustEntry] = []
    views: dict[tuple[str, str], dict[str, int]] = {}  # item -> view name -> entry number
    items: set[tuple[str, str]] = set()
    skipped = 0
    for bank, content_id, view, data, note in store.iter_features(FEATURE_KIND, banks):
        if not config.match_inverted and _is_negative(view):
            continue  # negatives are not matched (banks.match_inverted: false)
        key = (bank, content_id)
        if key not in items and len(items) >= robust.max_items:
            skipped += 1
            continue
        try:
            features = LocalFeatures.from_bytes(data)
        except ValueError as exc:
            log.warning("bank %s item %s: unreadable feature set: %s", bank, content_id, exc)
            continue
        items.add(key)
        views.setdefault(key, {})[view] = len(entries)
        entries.append(RobustEntry.of_view(bank, content_id, note, view, features))
    entries = _judged_on_their_pictures(entries, views)
    entries = _with_their_photos(entries, views)
    if skipped:
        log.warning(
            "robust tier: %d feature sets over banks.robust.max_items=%d not loaded (oldest "
            "items); they are still matched by their hashes",
            skipped,
            robust.max_items,
        )
    thresholds = {
        bank: RobustThresholds(min_inliers=rule.min_inliers, min_spread=rule.min_spread)
        for bank in banks
        for rule in (robust.rule_for(bank),)
    }
    default = RobustThresholds(
        min_inliers=robust.rule.min_inliers, min_spread=robust.rule.min_spread
    )
    limits = IndexLimits(max_candidates=robust.max_candidates)
    pictured = frozenset(item for item, named in views.items() if _banked_a_picture(named))
    return RobustIndex(entries, thresholds, default, limits), pictured


def _banked_a_picture(names: Collection[str]) -> bool:
    """Whether an item's views (by name) show a picture was found inside it: its picture banked
    on its own (or mirrored), or a grid that judges a view on it."""
    for name in names:
        view = name.rpartition(":")[2]  # a video key frame's "frame12:..."
        judged = _judged_view(view)
        if view in ("picture", "mirror-picture") or (judged is not None and not judged[2]):
            return True
    return False


class RobustTier:
    """The robust index over a bank store, rebuilt when the store changes. Thread-safe."""

    def __init__(self, store: BankStore, config: BanksConfig) -> None:
        self._loaded = StoreSnapshot(store, partial(_load, store, config), config.reload_interval_s)

    @property
    def index(self) -> RobustIndex:
        return self._loaded.get().index

    def _current(self) -> _Loaded:
        return self._loaded.get()

    def __len__(self) -> int:
        """Banked feature sets (views) in the current index."""
        return len(self.index)

    def judges_a_picture(self, match: BankMatch) -> bool:
        """Whether a PDQ match is of a hash banked for an item judged on a picture inside it (a
        chat screenshot whose picture was found): near as it may be, the hash of the whole
        screen is mostly its interface, and the same screen around another picture of the
        same tone came within 8 bits (a69 F1), so the match is checked like a distant one."""
        return (match.bank, str(match.value)) in self._current().pictured_pdq

    def match(
        self,
        image: Image.Image,
        views: Sequence[Image.Image] | None = None,
        tiles: Sequence[Image.Image] | None = None,
        finer: Callable[[], Image.Image] | None = None,
        noisy: bool = False,
    ) -> list[BankMatch]:
        """Robust matches of a decoded, upright image (empty when no bank holds feature sets).

        `views`: the image's `analysis_views`, and `tiles` its `screens`, if already
        computed; `finer`: the picture decoded finer, where `image` was decoded reduced (its
        small pictures are cropped from it); `noisy`: it was stored lossy (a JPEG, a video's
        frame), so the frames of its pictures may be noisy. Stops at the first view that
        matches: one match decides. A banked collage's pictures found in any view of the query
        count together: they are all in the picture sent.
        """
        index = self.index
        if not len(index):
            return []
        shown: Shown = {}
        tiles = screens(image) if tiles is None else tiles
        whole: LocalFeatures | None = None
        whole_tally: Tally | None = None  # its stage 1, for the lookup and the sighting both
        aligned: set[int] = set()  # banked views some view of the query lined up with
        for view in [*query_feature_views(image, views), *tiles]:
            features = extract_features(view, grid=False)
            tally = None
            if view is image:
                whole, whole_tally = features, index.tally(features)
                tally = whole_tally
            hits = index.match(features, shown=shown, aligned=aligned, tally=tally)
            if hits:
                return [to_bank_match(hit) for hit in hits]
        # A picture shown small in the frame (a chat screenshot's, a grid's thumbnail), on its own.
        luma = None if whole is None else whole.luma
        for region in small_pictures(image, luma, finer, noisy):
            hits = index.match(extract_features(region, grid=False), shown=shown,
                               aligned=aligned)  # fmt: skip
            if hits:
                return [to_bank_match(hit) for hit in hits]
        # A query laid out as pictures, or showing some pictures of a banked collage: its other
        # pictures may be too small in the whole view to be found (a grid re-laid as a stack).
        pieces = query_pieces(image, collage_found=bool(shown)) if index.collages else []
        for piece in pieces:
            hits = index.match(extract_features(piece, grid=False), shown=shown,
                               collages_only=True)  # fmt: skip
            if hits:
                return [to_bank_match(hit) for hit in hits]
        screen = screen_shaped(image)
        if whole is not None and not screen:  # screens have the searches above
            hits = self._closer_look(image, whole, whole_tally, aligned, shown, finer)
            if hits:
                return [to_bank_match(hit) for hit in hits]
        # A picture pasted smaller still draws no votes (a85, a86: at a quarter of the side),
        # on a photo or in a story's tall frame: found by its straight edges, and looked up at
        # its own scale. (An app's screen holds boxes by the dozen, its pictures looked at
        # above: a screen is searched so only where it looks like a story.)
        insets = not screen or searched_on_a_screen(working_grey(image) if luma is None else luma)
        for inset in inset_pictures(image, finer) if insets else []:
            hits = index.match(extract_features(inset, grid=False), shown=shown,
                               aligned=aligned)  # fmt: skip
            if hits:
                return [to_bank_match(hit) for hit in hits]
        return []

    def _closer_look(
        self,
        image: Image.Image,
        whole: LocalFeatures,
        tally: Tally | None,
        aligned: set[int],
        shown: Shown,
        finer: Callable[[], Image.Image] | None,
    ) -> list[RobustHit]:
        """A banked picture shown smaller inside another photo: looked at closer, where some
        banked item drew votes enough from the whole view to be there, other than those some
        view lined up with (innocent photos seldom draw any; a query that lines up with a
        banked picture's surround, a chat's interface or a shared overlay, and shows another
        picture in it, shows the same through a window; a85: a banked video's frame of the
        workshop photo lined up with the rocket pasted on that photo, was refused, and no
        window was looked at for the rocket)."""
        index = self.index
        sighted = index.sighting(whole, _CLOSER_VOTES, _CLOSER_AREA, aligned, tally)
        starved = None
        if sighted is None:
            # A dark or smooth picture on a cluttered photo draws its votes from the keypoints
            # the clutter took its cells' places from (a83: the rocket on a workshop photo
            # drew 1-9 from the whole view, 20-57 from those): about 5 ms, and a tally.
            starved = starved_features(whole)
            if starved is not None:
                sighted = index.sighting(starved, _CLOSER_VOTES, _CLOSER_AREA, aligned)
        if sighted is None:
            return []
        for window in closer_views(finer() if finer else image, sighted.at):
            seen = extract_features(window, grid=False)
            # Sighted so, the picture's cells may be starved in the window too.
            hits = index.match(seen if starved is None else with_starved(seen), shown=shown,
                               whole_only=True, among=sighted.views)  # fmt: skip
            if hits:
                return hits
        return []

    def refuted(
        self,
        image: Image.Image,
        matches: Sequence[BankMatch],
        views: Sequence[Image.Image] | None = None,
        tiles: Sequence[Image.Image] | None = None,
        mirrored: bool = False,
        recoloured: bool = False,
    ) -> list[BankMatch]:
        """The PDQ matches that the banked items' own feature sets refute: where a view of the
        item aligns and the content check refuses it, or where both sides have keypoints enough
        to align a copy and none aligns, and no view verifies. Matches of hashes banked without
        feature sets, or with too little texture to tell, stand.

        `recoloured`: `image` is a colour variant of the query that the matches were found on
        (the engine's false-colour lookup). A match of an item judged on a picture found in it
        (`judges_a_picture`) then stands only where a view verifies it: a variant of an innocent
        screen is itself in false colours, its features align with nothing, so nothing refuted
        the banked chat's screen around another picture, found among twenty variants (a69 K6).

        A whole-image PDQ hash can be carried by what two different pictures share: adversarial
        pass a7 and the precision suite found a fixed background behind another subject within
        30 bits.

        `mirrored`: the matches may be of a mirrored variant (PDQ's dihedral lookup). ORB's
        keypoints turn with a picture but do not mirror, and an item banks a mirrored set of its
        whole view only, so the query's mirrored views are tried too where the upright ones
        verify nothing: a screenshot's part matched mirrored by PDQ was refuted (a63 F3).
        """
        loaded = self._current()
        claims = [(m, loaded.items_by_pdq.get((m.bank, str(m.value)), ())) for m in matches]
        if not any(items for _, items in claims):
            return []
        # The query's views are extracted once, whatever the number of matches to check.
        tiles = screens(image) if tiles is None else tiles
        looked_at = [*query_feature_views(image, views), *tiles]
        upright = [extract_features(view, grid=False) for view in looked_at]
        flipped: list[LocalFeatures] = []

        def queries() -> Iterator[LocalFeatures]:
            yield from upright
            if mirrored and not flipped:
                flipped.extend(
                    extract_features(ImageOps.mirror(view), grid=False) for view in looked_at
                )
            yield from flipped

        refuted: list[BankMatch] = []
        for match, items in claims:
            verdicts = (loaded.index.confirm(q, item) for q in queries() for item in items)
            seen: set[bool | None] = set()
            for verdict in verdicts:
                seen.add(verdict)
                if verdict:
                    break  # a view verifies: the match stands
            if True in seen:
                continue
            unconfirmed = recoloured and (match.bank, str(match.value)) in loaded.pictured_pdq
            if unconfirmed or (False in seen and not _stretched_copy(loaded, image, items)):
                refuted.append(match)
        return refuted


# Votes (stage 1 of the index) that some banked view must draw from a query's whole view before
# it is looked at closer. The a82 pictures pasted at 25-65% drew 14-31; of a82's 50 innocent
# lookalikes of the banked pictures, those with no banked background drew 0-27, most under 10.
_CLOSER_VOTES = 12
# The share of the frame that the keypoints voting for it (their middle 80% each way) may span:
# a82's pasted pictures' voters spanned 0.05 of it at most; a frame or overlay two pictures
# share draws votes from all over.
_CLOSER_AREA = 0.25


# An aspect ratio this far from the banked view's is a stretched copy to try undoing.
_STRETCH_TO_UNDO = 1.2


def _stretched_copy(loaded: _Loaded, image: Image.Image, items: Sequence[str]) -> bool:
    """Whether the query, stretched back to a banked view's shape, verifies against it.

    PDQ hashes a picture squeezed to a square, so a copy stretched or squashed on one axis keeps
    its hash near the banked one; its local features do not survive a squash to half the
    height, and "nothing aligns" would drop a true match (adversarial pass a15: every copy
    squashed near 2:1 went through). Undoing the stretch is exact for such a copy, and the
    content check still refuses another picture in the same surround."""
    aspect = image.width / max(1, image.height)
    for item in items:
        for width, height in loaded.index.shapes(item):
            ratio = (width / max(1, height)) / aspect
            if max(ratio, 1 / ratio) < _STRETCH_TO_UNDO:
                continue
            # The query's own area, in the banked view's shape.
            scale = (image.width * image.height / (width * height)) ** 0.5
            size = (max(1, round(width * scale)), max(1, round(height * scale)))
            reshaped = image.convert("RGB").resize(size, Image.Resampling.BICUBIC)
            if loaded.index.confirm(extract_features(reshaped, grid=False), item):
                return True
    return False
