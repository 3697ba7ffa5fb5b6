"""Copies squashed along one axis and turned, or squashed along a slant, still match (issue 18;
adversarial pass a16, N2b/N2c: a 2:1 squash plus a turn of 1-8 degrees, and a 2:1 squash along a
diagonal, went through: PDQ does not survive the turn and ORB does not survive the squash).

`hashes add` banks the photo squashed to half along four axes; a squashed copy aligns with the
nearest of them. Benign scikit-image photos only."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image, ImageDraw

from schoolgate.media.signals import SQUASH_AXES, bank_feature_views
from schoolgate.pipeline.engine import InspectionContext, Inspector
from tests.support.banked_inspector import banked_inspector
from tests.support.imagery import Reshape, encode, skimage_photo, squash_along, squash_then_turn

CTX = InspectionContext(client_ip="192.0.2.64", app="squash-test")
SQUASHED = "    bank_squashed: true\n"  # opt-in (see docs/configuration.md)


EDITS: dict[str, Reshape] = {
    **{f"half height, turned {d}": squash_then_turn(0.5, 1.0, d) for d in (1, 3, 8)},
    **{f"60% height, turned {d}": squash_then_turn(0.6, 1.0, d) for d in (1, -5)},
    "half width, turned 2": squash_then_turn(1.0, 0.5, 2),
    **{f"half along {d} degrees": squash_along(d, 0.5) for d in (30, 45, 60)},
    **{f"60% along {d} degrees": squash_along(d, 0.6) for d in (20, 60)},
}


def _misses(inspector: Inspector, photo: Image.Image) -> list[str]:
    return [
        name
        for name, edit in EDITS.items()
        if not inspector.evaluate(encode(edit(photo), "JPEG", quality=88), CTX).blocked
    ]


@pytest.mark.parametrize("name", ["astronaut", "coffee", "rocket", "chelsea"])
def test_a_squashed_and_turned_copy_is_blocked(tmp_path: Path, name: str) -> None:
    photo = skimage_photo(name).convert("RGB")
    inspector = banked_inspector(tmp_path / "bank", photo, SQUASHED)
    try:
        assert _misses(inspector, photo) == []
    finally:
        inspector.close()


def test_without_the_squashed_views_such_copies_pass(tmp_path: Path) -> None:
    """Without `banks.robust.bank_squashed` (the default) no squashed views are banked, and the
    copies that need them go through: the views, not some other tier, are what catches them."""
    photo = skimage_photo("astronaut").convert("RGB")
    inspector = banked_inspector(tmp_path / "bank", photo)
    try:
        assert set(_misses(inspector, photo)) >= {"half height, turned 3", "half along 45 degrees"}
    finally:
        inspector.close()


def test_another_photo_squashed_the_same_way_is_not_blocked(tmp_path: Path) -> None:
    astronaut = skimage_photo("astronaut").convert("RGB")
    inspector = banked_inspector(tmp_path / "bank", astronaut, SQUASHED)
    try:
        for other in ("coffee", "rocket", "chelsea", "camera"):
            photo = skimage_photo(other).convert("RGB")
            assert _misses(inspector, photo) == list(EDITS), other
    finally:
        inspector.close()


def test_a_photo_is_banked_squashed_along_four_axes_and_a_document_is_not() -> None:
    coffee = skimage_photo("coffee").convert("RGB")
    photo = [name for name, _ in bank_feature_views(coffee, squashes=True)]
    assert photo[-len(SQUASH_AXES) :] == [f"squashed-{axis}" for axis in SQUASH_AXES]
    notes = Image.new("RGB", (600, 800), "white")
    pen = ImageDraw.Draw(notes)
    for line in range(30):
        pen.text((20, 20 + 25 * line), f"Homework due Friday: chapter {line}", fill="black")
    # A document is judged on its layout, which squashed views would only blur.
    assert [name for name, _ in bank_feature_views(notes, squashes=True)] == ["whole", "mirror"]
    unsquashed = bank_feature_views(coffee)
    assert not [name for name, _ in unsquashed if name.startswith("squashed")]
