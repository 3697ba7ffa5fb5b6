"""Copies in false colours, banked the way a DSL banks (`schoolgate hashes add`, which stores
feature sets too). Adversarial pass a44 F1: with feature sets banked, a copy with its green
channel inverted was refuted by them (the false-colour copy's brightness aligns with nothing)
and passed, as did a synthetic picture's channels in another order; a red+green inversion was
not even tried, a near miss of its negative standing in the way."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
import pytest
from PIL import Image, ImageOps

from schoolgate.config import load_config
from schoolgate.pipeline.engine import Inspector
from tests.support.imagery import encode
from tests.test_robust_precision import CTX, Bank, _bank


def _inverted(channels: str) -> Callable[[Image.Image], Image.Image]:
    def edit(picture: Image.Image) -> Image.Image:
        bands = dict(zip("RGB", picture.convert("RGB").split(), strict=True))
        return Image.merge("RGB", [ImageOps.invert(bands[c]) if c in channels else bands[c]
                                   for c in "RGB"])  # fmt: skip

    return edit


def _reordered(order: str) -> Callable[[Image.Image], Image.Image]:
    def edit(picture: Image.Image) -> Image.Image:
        bands = dict(zip("RGB", picture.convert("RGB").split(), strict=True))
        return Image.merge("RGB", [bands[c] for c in order])

    return edit


EDITS: dict[str, Callable[[Image.Image], Image.Image]] = {
    "green inverted": _inverted("G"),
    "red and green inverted": _inverted("RG"),
    "blue inverted": _inverted("B"),
    "negative": _inverted("RGB"),
    "channels BRG": _reordered("BRG"),
    "channels GBR": _reordered("GBR"),
    "red and blue swapped": _reordered("BGR"),
}


def synthetic(seed: int) -> Image.Image:
    """A colourful textured picture (a44 banked one like it): smooth colour fields and noise."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:480, 0:640] / 80.0
    fields = [np.sin(x * rng.uniform(0.5, 2) + rng.uniform(0, 6)) * np.cos(y * rng.uniform(0.5, 2))
              for _ in range(3)]  # fmt: skip
    pixels = np.stack(fields, axis=2) * 90 + 128 + rng.normal(0, 12, (480, 640, 3))
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


@pytest.fixture(scope="module")
def pictures(benign_photos: dict[str, Image.Image]) -> dict[str, Image.Image]:
    return {"astronaut": benign_photos["astronaut"], "synthetic": synthetic(4)}


@pytest.fixture(scope="module")
def bank(
    tmp_path_factory: pytest.TempPathFactory, pictures: dict[str, Image.Image]
) -> Iterator[Bank]:
    items = {
        f"{name}.jpg": encode(picture, "JPEG", quality=92) for name, picture in pictures.items()
    }
    with _bank(tmp_path_factory.mktemp("false-colour"), items) as banked:
        yield banked


@pytest.mark.parametrize("edit", sorted(EDITS))
@pytest.mark.parametrize("name", ["astronaut", "synthetic"])
def test_a_banked_picture_in_false_colours_is_blocked(
    bank: Bank, pictures: dict[str, Image.Image], name: str, edit: str
) -> None:
    assert bank.blocked(EDITS[edit](pictures[name]), "PNG")


@pytest.mark.parametrize("edit", sorted(EDITS))
def test_innocent_pictures_in_false_colours_are_not_blocked(
    bank: Bank, benign_photos: dict[str, Image.Image], edit: str
) -> None:
    for name in ("coffee", "chelsea", "rocket", "camera", "coins"):
        verdict = bank.inspector.evaluate(encode(EDITS[edit](benign_photos[name]), "PNG"), CTX)
        assert not verdict.blocked, (name, verdict.to_dict())


def _turned(degrees: float) -> Callable[[Image.Image], Image.Image]:
    def edit(picture: Image.Image) -> Image.Image:
        return picture.convert("RGB").rotate(degrees, Image.Resampling.BICUBIC, expand=True,
                                             fillcolor="white")  # fmt: skip

    return edit


def _cropped(picture: Image.Image) -> Image.Image:
    width, height = picture.size
    return picture.crop((width // 10, 0, width, height * 9 // 10))


def _stickered(picture: Image.Image) -> Image.Image:
    stickered = picture.convert("RGB")
    side = round((0.10 * stickered.width * stickered.height) ** 0.5)
    left, top = stickered.width // 5, stickered.height // 4
    stickered.paste((250, 200, 0), (left, top, left + side, top + side))
    return stickered


NEGATIVE_AND = {
    "mirrored and turned 3 degrees": lambda picture: _turned(3)(ImageOps.mirror(picture)),
    "turned 3 degrees": _turned(3),
    "turned -6 degrees": _turned(-6),
    "cropped 10%": _cropped,
    "stickered": _stickered,
}


@pytest.mark.parametrize("edit", sorted(NEGATIVE_AND))
@pytest.mark.parametrize("name", ["astronaut", "synthetic"])
def test_a_banked_negative_turned_cropped_or_stickered_is_blocked(
    bank: Bank, pictures: dict[str, Image.Image], name: str, edit: str
) -> None:
    """a55 F6: PDQ finds a negative only whole and upright, and ORB's keypoints of a negative
    describe another picture: a banked photo inverted and turned 3 degrees went through, 15 of
    15. The banked photo's negative is banked as a view of its own, and its mirror image (a56
    F1: inverted, mirrored and turned went through 21 of 27)."""
    negative = ImageOps.invert(pictures[name].convert("RGB"))
    assert bank.blocked(NEGATIVE_AND[edit](negative), "JPEG")


@pytest.mark.parametrize("edit", sorted(NEGATIVE_AND))
def test_innocent_negatives_turned_are_not_blocked(
    bank: Bank, benign_photos: dict[str, Image.Image], edit: str
) -> None:
    for name in ("coffee", "chelsea", "rocket", "camera", "coins"):
        negative = ImageOps.invert(benign_photos[name].convert("RGB"))
        verdict = bank.inspector.evaluate(encode(NEGATIVE_AND[edit](negative), "JPEG"), CTX)
        assert not verdict.blocked, (name, verdict.to_dict())


def test_negatives_are_not_matched_when_match_inverted_is_off(
    bank: Bank, pictures: dict[str, Image.Image]
) -> None:
    """banks.match_inverted: false switches the banked negatives off as well (they are banked
    while it is on, and stay in the bank)."""
    negative = _turned(3)(ImageOps.invert(pictures["astronaut"].convert("RGB")))
    assert bank.blocked(negative, "JPEG")
    off = bank.folder / "no-inverted.yaml"
    off.write_text("classifier:\n  models: []\nbanks:\n  match_inverted: false\n")
    inspector = Inspector.from_config(load_config(off), with_audit=False)
    try:
        assert not inspector.evaluate(encode(negative, "JPEG"), CTX).blocked
    finally:
        inspector.close()
