"""Copies squashed along one axis and turned, or squashed along a slant, still match (issue 18;
adversarial pass a16, N2b/N2c: a 2:1 squash plus a turn of 1-8 degrees, and a 2:1 squash along a
diagonal, went through: PDQ does not survive the turn and ORB does not survive the squash).

`hashes add` banks the photo squashed to half along four axes; a squashed copy aligns with the
nearest of them. Benign scikit-image photos only."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from schoolgate.media.normalise import squashed, unsquash_map
from schoolgate.media.signals import SQUASH_AXES, SQUASH_RATIO, bank_feature_views
from schoolgate.pipeline.engine import InspectionContext, Inspector
from tests.support.banked_inspector import banked_inspector
from tests.support.imagery import (
    Reshape,
    encode,
    real_photos,
    skimage_photo,
    squash_along,
    squash_then_turn,
)

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


def _photo_subject_before(background: Image.Image, subject: Image.Image) -> Image.Image:
    """a21's scene: `subject` in an oval, 64% of the frame high, pasted on `background`."""
    scene = background.convert("RGB").resize((512, 512)).resize((900, 675))
    oval = Image.new("L", (200, 420), 0)
    ImageDraw.Draw(oval).ellipse((0, 0, 200, 420), fill=255)
    person = subject.convert("RGB").resize(oval.size)
    person.putalpha(oval)
    person = person.resize((205, 432))
    scene.paste(person, (303, 236), person)
    return scene


def test_a_match_on_a_squashed_view_is_judged_on_the_picture_it_was_squashed_from(
    tmp_path: Path,
) -> None:
    """Adversarial pass a21 (finding 2): the banked background without its subject was
    refuted without the squashed views, and blocked with them: the squashed view's own 8x8 grid
    gives the subject half the cells. Each squashed view is now judged on its source view."""
    photos = real_photos()
    background = photos["q2821"]
    banked = _photo_subject_before(background, skimage_photo("moon"))
    empty = encode(background.convert("RGB").resize((512, 512)).resize((900, 675)), "PNG")
    inspector = banked_inspector(tmp_path / "bank", banked, SQUASHED)
    try:
        verdict = inspector.evaluate(empty, CTX)
        assert not verdict.blocked, (verdict.to_dict()["matches"], verdict.to_dict().get("refuted"))
        assert inspector.evaluate(encode(squash_then_turn(0.5, 1.0, 4)(banked)), CTX).blocked
    finally:
        inspector.close()


@pytest.mark.parametrize("angle", SQUASH_AXES)
def test_the_map_back_from_a_squashed_view_undoes_the_squash(angle: int) -> None:
    photo = skimage_photo("astronaut").convert("L").resize((400, 300))
    full = squashed(photo, angle, SQUASH_RATIO).convert("L")
    view = full.resize((round(full.width * 0.8), round(full.height * 0.8)))  # a working frame
    back = unsquash_map(photo.size, angle, SQUASH_RATIO, view.size)
    # Warp the view back into the photo's frame (PIL wants the photo -> view map).
    to_view = np.linalg.inv(back)
    restored = view.transform(photo.size, Image.Transform.AFFINE, tuple(to_view[:2].ravel()),
                              Image.Resampling.BILINEAR)  # fmt: skip
    error = np.abs(np.asarray(restored, float) - np.asarray(photo, float))
    assert error[20:-20, 20:-20].mean() < 12  # what halving the resolution along one axis loses


def _drawn_figure(shirt: tuple[int, int, int], seed: int) -> Image.Image:
    """a21's figure: a clothed cartoon person (RGBA), 200 x 420."""
    rng = np.random.default_rng(seed)
    figure = Image.new("RGBA", (200, 420), (0, 0, 0, 0))
    pen = ImageDraw.Draw(figure)
    skin = (*(int(v) for v in rng.integers(120, 230, 3)), 255)
    pen.ellipse((60, 10, 140, 95), fill=skin, outline=(30, 30, 30, 255), width=3)
    pen.rectangle((50, 100, 150, 260), fill=(*shirt, 255), outline=(20, 20, 20, 255), width=3)
    for _ in range(int(rng.integers(2, 6))):
        y = 110 + int(rng.integers(0, 140))
        pen.line(((52, y), (148, y)), fill=(255, 255, 255, 255), width=int(rng.integers(2, 8)))
    pen.rectangle((55, 260, 95, 410), fill=(30, 40, 90, 255))
    pen.rectangle((105, 260, 145, 410), fill=(30, 40, 90, 255))
    pen.line(((50, 110), (10, 230)), fill=skin, width=14)
    pen.line(((150, 110), (190, 230)), fill=skin, width=14)
    return figure.resize((205, 432))


def _figure_before(background: Image.Image, figure: Image.Image, left: int) -> Image.Image:
    scene = background.convert("RGB").resize((800, 600)).resize((900, 675))
    scene.paste(figure, (left, 236), figure)
    return scene


def _another_figure_squashed(views: str, tmp_path: Path) -> bool:
    """Whether another drawn figure before a banked background, squashed 2:1 and turned 3
    degrees, is blocked (adversarial pass a21, finding 1)."""
    background = real_photos()["exif-rotn-1"]
    banked = _figure_before(background, _drawn_figure((200, 30, 30), 1), 303)
    other = _figure_before(background, _drawn_figure((30, 120, 220), 7), 528)
    inspector = banked_inspector(tmp_path / "bank", banked, views)
    try:
        query = squash_then_turn(0.5, 1.0, 3)(other)
        return inspector.evaluate(encode(query, "PNG"), CTX).blocked
    finally:
        inspector.close()


def test_by_default_another_drawn_figure_squashed_is_not_blocked(tmp_path: Path) -> None:
    assert not _another_figure_squashed("", tmp_path)


@pytest.mark.xfail(
    strict=True,
    reason="issue 18 open: a drawn subject before the same background reads as a sticker over "
    "the banked picture, and the squashed views (opt-in) carry that to squashed copies (a21)",
)
def test_with_squashed_views_another_drawn_figure_squashed_is_not_blocked(
    tmp_path: Path,
) -> None:
    assert not _another_figure_squashed(SQUASHED, tmp_path)
