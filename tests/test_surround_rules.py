"""The robust tier refuses matches carried by a surround two pictures share (issue 18, second
half): a frame or border around two different pictures, another photographed subject before the
same background, and a whole-image PDQ hash carried by a shared layout.

Benign pictures only: scikit-image photos and Pillow drawings (tests/support/screens.py)."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from PIL import Image

from schoolgate.matching.robust import RobustEntry, RobustIndex
from schoolgate.media.features import extract_features
from schoolgate.media.hashing import pdq_hash
from schoolgate.media.signals import bank_feature_views, query_feature_views
from schoolgate.pipeline.engine import InspectionContext, Inspector
from tests.support.banked_inspector import banked_inspector
from tests.support.imagery import encode, procedural_scene, real_photos, skimage_photo
from tests.support.screens import background_overlay, frame_overlay, procedural_scene_pair

CTX = InspectionContext(client_ip="192.0.2.63", app="surround-test")


def jpeg(image: Image.Image, quality: int = 90) -> Image.Image:
    return Image.open(io.BytesIO(encode(image, "JPEG", quality=quality))).convert("RGB")


def index_of(banked: Image.Image) -> RobustIndex:
    return RobustIndex([RobustEntry.of_view("incident", "banked", "", v, f)
                        for v, f in bank_feature_views(jpeg(banked, 92))])  # fmt: skip


def matched(index: RobustIndex, image: Image.Image) -> bool:
    return any(index.match(extract_features(view, grid=False))
               for view in query_feature_views(jpeg(image)))  # fmt: skip


# Seeds whose pairs the content-share check alone let through (it judged a framed drawing on its
# frame's cells, or a new subject on the shared background's); with the surround rules they fail.
@pytest.mark.parametrize("seed", [0, 3, 8, 9])
def test_two_drawings_in_the_same_frame_do_not_match(seed: int) -> None:
    framed, other = frame_overlay([procedural_scene(500 + seed), procedural_scene(600 + seed)],
                                  seed)  # fmt: skip
    index = index_of(framed)
    assert matched(index, framed)  # the banked picture itself
    assert not matched(index, other)


@pytest.mark.parametrize(
    ("seed", "subjects", "background"),
    [
        (0, ("astronaut", "brick"), "bridge-1-original"),
        (2, ("chelsea", "coffee"), "coins"),
        (5, ("logo", "moon"), "motorcycle_left"),
        (7, ("q0746", "q1050"), "q2821"),
    ],
)
def test_another_photographed_subject_before_the_same_background_does_not_match(
    seed: int, subjects: tuple[str, str], background: str
) -> None:
    photos = real_photos()
    first, second = background_overlay([photos[name] for name in (*subjects, background)], seed)
    index = index_of(first)
    assert matched(index, first)
    assert not matched(index, second)


def test_a_framed_copy_of_the_banked_picture_still_matches() -> None:
    """The frame rule asks for inliers in the middle: a framed copy of a banked photo has them."""
    photo = skimage_photo("astronaut")
    index = index_of(photo)
    framed, _ = frame_overlay([photo, photo], 2)
    assert matched(index, framed)


# ---------------------------------------------------------------------------------------------
# A whole-image PDQ match checked against the banked item's own features


def _inspector(data_dir: Path, banked: Image.Image, confirm_bits: int) -> Inspector:
    return banked_inspector(
        data_dir, banked, f"    pdq_confirm_bits: {confirm_bits}\n", bank="incident-surround"
    )


def test_a_pdq_match_refuted_by_the_banked_features_does_not_block(tmp_path: Path) -> None:
    banked, other = procedural_scene_pair()
    checked = _inspector(tmp_path / "checked", banked, confirm_bits=8)
    unchecked = _inspector(tmp_path / "unchecked", banked, confirm_bits=256)
    try:
        query = encode(other, "JPEG", quality=90)
        distance = (int(pdq_hash(banked).hex, 16) ^ int(pdq_hash(other).hex, 16)).bit_count()
        assert 8 < distance <= 31, "the pair no longer shows the PDQ false block it was made for"
        # Its subject is found as a picture in it at banking, so the match is checked even
        # where pdq_confirm_bits would let it stand (a69 F1: the same surround, another picture).
        assert not unchecked.evaluate(query, CTX).blocked
        after = checked.evaluate(query, CTX)
        assert not after.blocked
        # The overruled near-match is in the audit record (adversarial pass a15: it was not).
        (refuted,) = after.to_dict()["refuted"]
        assert (refuted["bank"], refuted["signal_type"]) == ("incident-surround", "pdq")
        assert refuted["distance"] > 8
        assert checked.evaluate(encode(banked, "JPEG", quality=80), CTX).blocked  # still a copy
    finally:
        checked.close()
        unchecked.close()


@pytest.mark.parametrize(
    ("name", "size"),
    [("astronaut", (512, 256)), ("chelsea", (451, 150)), ("coffee", (600, 200)),
     ("rocket", (427, 214)), ("astronaut", (1024, 512)), ("coffee", (300, 800))],
)  # fmt: skip
def test_a_copy_squashed_or_stretched_near_two_to_one_still_matches(
    tmp_path: Path, name: str, size: tuple[int, int]
) -> None:
    """Adversarial pass a15 (N2): every copy squashed to about half its height (or stretched to
    twice its width) went through: PDQ, which hashes a square, stayed near, but the feature
    check found nothing aligned and dropped the match. The check now also tries the copy
    stretched back to the banked picture's shape."""
    photo = skimage_photo(name)
    checked = _inspector(tmp_path / "checked", photo, confirm_bits=8)
    try:
        squashed = photo.resize(size, Image.Resampling.BICUBIC)
        verdict = checked.evaluate(encode(squashed, "JPEG", quality=88), CTX)
        assert verdict.blocked, (name, size, verdict.to_dict().get("refuted"))
    finally:
        checked.close()
