"""The robust tier's index: edited copies verify, unrelated pictures and partial overlaps do not,
thresholds are per bank, and the work per query is bounded."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from schoolgate.matching.robust import IndexLimits, RobustEntry, RobustIndex, RobustThresholds
from schoolgate.media.features import LocalFeatures, extract_features
from schoolgate.media.signals import bank_feature_views, query_feature_views
from tests.support.imagery import EDITS, phone_screenshot, procedural_scene, skimage_photo

BANKED = ("astronaut", "coffee", "rocket")
UNRELATED = ("chelsea", "camera", "coins", "immunohistochemistry", "motorcycle_left")


def _query(data: bytes) -> list[LocalFeatures]:
    image = Image.open(io.BytesIO(data))
    image.load()
    return [extract_features(view) for view in query_feature_views(image)]


def _entries(names: tuple[str, ...], bank: str = "incident") -> list[RobustEntry]:
    return [
        RobustEntry(bank, name, "", features)
        for name in names
        for _, features in bank_feature_views(skimage_photo(name))
    ]


@pytest.fixture(scope="module")
def index() -> RobustIndex:
    return RobustIndex(_entries(BANKED))


def _best(index: RobustIndex, data: bytes) -> str | None:
    for features in _query(data):
        hits = index.match(features)
        if hits:
            return hits[0].content_id
    return None


@pytest.mark.parametrize(
    "edit", ["crop_10", "rotate_4", "screenshot", "caption_middle", "sticker_10", "mirror"]
)
def test_edited_copies_verify_with_evidence(index: RobustIndex, edit: str) -> None:
    for seed, name in enumerate(BANKED):
        assert _best(index, EDITS[edit](skimage_photo(name), seed)) == name, f"{name}/{edit}"


def test_evidence_is_reported(index: RobustIndex) -> None:
    features = _query(EDITS["rotate_4"](skimage_photo("coffee"), 0))[-1]
    hit = index.match(features)[0]
    assert hit.inliers >= 20
    assert hit.spread >= 0.3
    assert abs(hit.rotation_deg) == pytest.approx(4, abs=1.5)  # the copy was turned 4 degrees
    assert set(hit.evidence()) == {
        "inliers", "spread", "scale", "rotation_deg", "votes", "content_agreement", "content_cells",
        "content_replaced",
    }  # fmt: skip
    assert hit.evidence()["content_agreement"] >= 0.5


def test_unrelated_pictures_and_their_screenshots_do_not_match(index: RobustIndex) -> None:
    queries = [EDITS[e](skimage_photo(n), 5) for n in UNRELATED for e in ("jpeg_q30", "screenshot")]
    queries += [_jpeg(procedural_scene(seed)) for seed in range(20)]
    for data in queries:
        assert _best(index, data) is None


def _jpeg(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def test_banked_screenshot_does_not_match_other_screenshots() -> None:
    """A DSL may bank the incident as received (a screenshot). Other screenshots share its status
    bar and canvas, and must not match through them."""
    shot = Image.open(io.BytesIO(phone_screenshot(skimage_photo("astronaut"), 0)))
    shot.load()
    index = RobustIndex(
        [RobustEntry.of_view("incident", "shot", "", v, f) for v, f in bank_feature_views(shot)]
    )
    for seed, name in enumerate(UNRELATED):
        assert _best(index, phone_screenshot(skimage_photo(name), seed)) is None
    assert _best(index, EDITS["jpeg_q30"](skimage_photo("astronaut"), 0)) == "shot"


def test_spread_rejects_matches_crowded_in_a_corner() -> None:
    """A quarter of a banked photo matches geometrically with plenty of inliers, but all in one
    corner of it: the spread test (not the inlier count) is what turns it away."""
    photo = skimage_photo("astronaut")
    quarter = photo.crop((0, 0, 256, 256)).resize((512, 512), Image.Resampling.BICUBIC)
    entries = [RobustEntry("incident", "astronaut", "", extract_features(photo))]
    query = extract_features(quarter)
    every_candidate = IndexLimits(min_votes=0)
    strict = RobustIndex(entries, limits=every_candidate)
    loose = RobustIndex(entries, default=RobustThresholds(min_spread=0.0), limits=every_candidate)
    assert not strict.match(query)
    hits = loose.match(query)
    assert hits
    assert hits[0].inliers >= RobustThresholds().min_inliers
    assert hits[0].spread < RobustThresholds().min_spread


def test_thresholds_are_per_bank() -> None:
    entries = _entries(("coffee",), bank="strict") + _entries(("rocket",), bank="normal")
    index = RobustIndex(entries, {"strict": RobustThresholds(min_inliers=100_000)})
    coffee_copy = _query(EDITS["crop_10"](skimage_photo("coffee"), 0))[-1]
    rocket_copy = _query(EDITS["sticker_10"](skimage_photo("rocket"), 0))[-1]
    assert not index.match(coffee_copy)
    assert [h.bank for h in index.match(rocket_copy)] == ["normal"]


def test_verification_is_bounded_by_max_candidates(monkeypatch: pytest.MonkeyPatch) -> None:
    """However many banked items get votes, only max_candidates of them are verified."""
    entries = _entries(BANKED + UNRELATED)
    index = RobustIndex(entries, limits=IndexLimits(max_candidates=3, min_votes=0))
    calls: list[int] = []
    check = index._check

    def counting(query: LocalFeatures, entry_id: int, votes: int, whole_only: bool) -> object:
        calls.append(entry_id)
        return check(query, entry_id, votes, whole_only)

    monkeypatch.setattr(index, "_check", counting)
    hits = index.match(extract_features(skimage_photo("coffee")), max_hits=None)
    assert len(calls) == 3
    assert {h.content_id for h in hits} == {"coffee"}  # its whole view (and no other item)


def test_empty_index_and_featureless_queries() -> None:
    empty = RobustIndex([])
    photo_features = extract_features(skimage_photo("coffee"))
    assert empty.match(photo_features) == []
    index = RobustIndex(_entries(("coffee",)))
    flat = extract_features(Image.new("RGB", (640, 480), (200, 200, 200)))
    assert len(flat) == 0
    assert index.match(flat) == []
    few = LocalFeatures(
        photo_features.points[:5], photo_features.descriptors[:5], photo_features.width,
        photo_features.height,
    )  # fmt: skip
    assert index.match(few) == []
    assert index.match(photo_features)[0].content_id == "coffee"
