"""Collages (issue 18; adversarial passes a47 F10 and a48 F6, goal "get an innocent picture
blocked"): banking a meme that pairs a popular reaction photo with another picture blocked every
post of the reaction photo, alone, captioned, small, in a chat screenshot or in a new meme beside
another picture, with a DSL alert each time. A banked collage is now split at its seams, and a
copy must show two of its panels, each as banked. Banked with `schoolgate hashes add`, judged as
the proxy judges."""

from __future__ import annotations

import contextlib
import io
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageOps

from schoolgate.cli import app as cli
from schoolgate.media.content_grid import judged_panels
from schoolgate.media.features import LocalFeatures, extract_features
from tests.support.imagery import EDITS, SKIMAGE_PHOTOS, encode, procedural_scene, skimage_photo
from tests.support.screens import chat_screenshot
from tests.test_robust_precision import CTX, Bank, _bank

SIDE = 400


def _photo(name: str) -> Image.Image:
    return ImageOps.fit(skimage_photo(name), (SIDE, SIDE))


def meme(left: str, right: str, caption: str = "me vs the homework", gutter: int = 0
         ) -> Image.Image:  # fmt: skip
    """A caption band above two photos side by side, as a47 and a48 drew their memes."""
    canvas = Image.new("RGB", (2 * SIDE + gutter, SIDE + 120), "white")
    canvas.paste(_photo(left), (0, 120))
    canvas.paste(_photo(right), (SIDE + gutter, 120))
    ImageDraw.Draw(canvas).text((20, 40), caption, fill="black")
    return canvas


def grid_of_four(names: tuple[str, str, str, str], gutter: int) -> Image.Image:
    canvas = Image.new("RGB", (2 * SIDE + gutter, 2 * SIDE + gutter), "black")
    for index, name in enumerate(names):
        canvas.paste(_photo(name), ((index % 2) * (SIDE + gutter), (index // 2) * (SIDE + gutter)))
    return canvas


def panels(image: Image.Image) -> int:
    grid = extract_features(image).grid
    assert grid is not None
    return len(judged_panels(grid))


@pytest.mark.parametrize("gutter", [0, 4, 24])
def test_a_collage_is_split_at_its_seams(gutter: int) -> None:
    assert panels(meme("astronaut", "coffee", gutter=gutter)) == 2
    assert panels(grid_of_four(("astronaut", "coffee", "chelsea", "motorcycle_left"), gutter)) >= 3


def test_a_single_photo_is_not_a_collage() -> None:
    """A door frame, a horizon or a page edge is not a seam: it is not straight, sharp and
    unbroken across most of the photo with texture on both sides."""
    split = [name for name in SKIMAGE_PHOTOS if panels(skimage_photo(name)) > 0]
    assert not split


def test_a_collage_banked_before_panels_still_loads() -> None:
    found = extract_features(meme("astronaut", "coffee"))
    assert found.grid is not None
    assert found.grid.panels is not None
    again = LocalFeatures.from_bytes(found.to_bytes())
    assert again.grid is not None
    assert again.grid.panels is not None
    assert np.array_equal(again.grid.panels, found.grid.panels)
    old = LocalFeatures(found.points, found.descriptors, found.width, found.height,
                        type(found.grid)(found.grid.bits, found.grid.kinds))  # fmt: skip
    assert LocalFeatures.from_bytes(old.to_bytes()).grid.panels is None  # type: ignore[union-attr]


@pytest.fixture(scope="module")
def meme_bank(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Bank]:
    banked = {"meme.png": encode(meme("astronaut", "coffee"), "PNG")}
    with _bank(tmp_path_factory.mktemp("collage"), banked) as bank:
        yield bank


@pytest.mark.parametrize("edit", ["jpeg_q30", "downscale_320", "crop_5", "screenshot", "mirror"])
def test_copies_of_a_banked_collage_are_blocked(meme_bank: Bank, edit: str) -> None:
    copy = EDITS[edit](meme("astronaut", "coffee"), 3)
    assert meme_bank.inspector.evaluate(copy, CTX).blocked


def _alone_captioned(name: str) -> Image.Image:
    picture = _photo(name)
    ImageDraw.Draw(picture).rectangle((0, 170, SIDE, 230), fill="black")
    ImageDraw.Draw(picture).text((150, 190), "MOOD", fill="white")
    return picture


INNOCENT = {
    "reaction photo alone": lambda: _photo("astronaut"),
    "reaction photo at 200 px": lambda: _photo("astronaut").resize((200, 200)),
    "reaction photo captioned": lambda: _alone_captioned("astronaut"),
    "reaction photo in a chat": lambda: chat_screenshot(_photo("astronaut"), "chatty", "light"),
    "other picture alone": lambda: _photo("coffee"),
    "other picture in a chat": lambda: chat_screenshot(_photo("coffee"), "snappy", "dark"),
    "a new meme with the reaction photo": lambda: meme("astronaut", "rocket", "monday again"),
    "a new meme with the other picture": lambda: meme("camera", "coffee", "monday again"),
}


@pytest.mark.parametrize("case", sorted(INNOCENT))
def test_one_picture_of_a_banked_collage_is_not_blocked(meme_bank: Bank, case: str) -> None:
    assert not meme_bank.blocked(INNOCENT[case](), "JPEG")


def test_hashes_add_says_a_collage_was_banked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                              ) -> None:  # fmt: skip
    monkeypatch.setenv("SCHOOLGATE_DATA_DIR", str(tmp_path))
    config = tmp_path / "c.yaml"
    config.write_text("classifier:\n  models: []\n")
    (tmp_path / "meme.png").write_bytes(encode(meme("astronaut", "coffee"), "PNG"))
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = cli.main(["hashes", "add", str(tmp_path / "meme.png"), "--bank", "b",
                         "--config", str(config)])  # fmt: skip
    assert code == 0
    assert "a collage of 2 pictures" in out.getvalue()


def gutter_collage(first: Image.Image, second: Image.Image, gutter: int, colour: str,
                   stacked: bool = False) -> Image.Image:  # fmt: skip
    """Two pictures with a plain gutter between them and around them (a49 L1, L2, col_gut)."""
    a, b = (ImageOps.fit(p, (SIDE, SIDE)) for p in (first, second))
    long, short = 2 * SIDE + 3 * gutter, SIDE + 2 * gutter
    size = (short, long) if stacked else (long, short)
    canvas = Image.new("RGB", size, colour)
    canvas.paste(a, (gutter, gutter))
    canvas.paste(b, (gutter, 2 * gutter + SIDE) if stacked else (2 * gutter + SIDE, gutter))
    return canvas


GUTTERED = {
    # a49 F2: retina's dark edge peeled with the black gutters, leaving coins as the content box
    "black gutters, a dark-edged photo": (
        skimage_photo("retina"),
        skimage_photo("coins"),
        "black",
        False,
    ),
    # a49 L1, L2: noisy drawn panels (the noise-textured kind of scene), where no seam
    # shows, between white gutters
    "white gutter, side by side": (procedural_scene(14), procedural_scene(24), "white", False),
    "white gutter, stacked": (procedural_scene(19), procedural_scene(29), "white", True),
}


@pytest.mark.parametrize("case", sorted(GUTTERED))
def test_a_guttered_collage_is_split_and_its_pictures_alone_pass(tmp_path: Path, case: str
                                                                  ) -> None:  # fmt: skip
    first, second, colour, stacked = GUTTERED[case]
    collage = gutter_collage(first, second, 20, colour, stacked)
    assert panels(collage) == 2
    with _bank(tmp_path, {"collage.png": encode(collage, "PNG")}) as bank:
        assert bank.blocked(collage, "JPEG")
        for picture in (first, second):
            assert not bank.blocked(ImageOps.fit(picture, (SIDE, SIDE)), "JPEG")


def test_a_crop_keeping_a_row_of_the_other_picture_is_blocked(meme_bank: Bank) -> None:
    """a49 F4: a photo taken for a collage (a textured sky over the sea), cropped to keep one
    side and a little of the other, went through; a copy that shows an eighth of a second
    panel shows the collage."""
    collage = meme("astronaut", "coffee")
    assert meme_bank.blocked(collage.crop((0, 120, SIDE + SIDE // 3, collage.height)), "JPEG")


def test_a_banked_collage_with_its_pictures_swapped_is_blocked(meme_bank: Bank) -> None:
    """a49: each picture of a collage is banked as a view of its own; a copy that shows every
    one of them, rearranged, is the collage."""
    swapped = meme("coffee", "astronaut")
    assert meme_bank.blocked(swapped, "JPEG")
    three = Image.new("RGB", (3 * SIDE, SIDE), "white")  # beside a third, unrelated picture
    for number, name in enumerate(("coffee", "rocket", "astronaut")):
        three.paste(_photo(name), (number * SIDE, 0))
    assert meme_bank.blocked(three, "JPEG")


@pytest.mark.parametrize("name", ["astronaut", "chelsea", "coffee", "rocket", "motorcycle_left"])
def test_a_photo_with_a_caption_bar_is_not_a_collage(name: str) -> None:
    """The bar's plain rows run beside its writing, not beside another picture."""
    for seed in (1, 2, 3):
        captioned = Image.open(io.BytesIO(EDITS["caption_middle"](skimage_photo(name), seed)))
        assert panels(captioned) == 0


def test_a_photo_stacked_on_one_whose_top_is_plain_sky_is_split(tmp_path: Path) -> None:
    """a49 F1 (col_stack): chelsea over the rocket's dark, plain sky; the seam has texture on
    one side only, and each picture alone was blocked."""
    stacked = Image.new("RGB", (SIDE, 2 * SIDE))
    stacked.paste(_photo("chelsea"), (0, 0))
    stacked.paste(_photo("rocket"), (0, SIDE))
    assert panels(stacked) == 2
    with _bank(tmp_path, {"stack.png": encode(stacked, "PNG")}) as bank:
        assert bank.blocked(stacked, "JPEG")
        assert not bank.blocked(_photo("chelsea"), "JPEG")
        assert not bank.blocked(_photo("rocket"), "JPEG")


def test_a_banked_collage_with_one_picture_mirrored_where_it_sits_is_blocked(
    meme_bank: Bank,
) -> None:
    """a50 F2: the whole view's content check sees the mirrored half as another picture; each
    picture's mirror image is banked too."""
    collage = meme("astronaut", "coffee")
    half = collage.crop((SIDE, 120, 2 * SIDE, collage.height))
    collage.paste(ImageOps.mirror(half), (SIDE, 120))
    assert meme_bank.blocked(collage, "JPEG")


def test_a_grid_with_one_picture_replaced_is_blocked_and_with_two_is_not(tmp_path: Path) -> None:
    """a50 F3: three of four pictures in place is the grid; two of four (a template whose two
    fixed pictures agree) is another picture."""
    names = ("astronaut", "coffee", "chelsea", "motorcycle_left")
    banked = grid_of_four(names, 10)
    assert panels(banked) == 4
    with _bank(tmp_path, {"grid.png": encode(banked, "PNG")}) as bank:
        assert bank.blocked(grid_of_four(("astronaut", "coffee", "chelsea", "rocket"), 10))
        assert not bank.blocked(grid_of_four(("astronaut", "camera", "chelsea", "rocket"), 10))


def strip_of(names: tuple[str, ...], gutter: int, *, across: bool = True) -> Image.Image:
    """Pictures in one row (or one column), `gutter` px of black between them."""
    long = len(names) * SIDE + (len(names) - 1) * gutter
    canvas = Image.new("RGB", (long, SIDE) if across else (SIDE, long), "black")
    for index, name in enumerate(names):
        at = index * (SIDE + gutter)
        canvas.paste(_photo(name), (at, 0) if across else (0, at))
    return canvas


@pytest.mark.parametrize("across", [True, False])
def test_a_grid_relaid_as_a_strip_is_blocked_and_two_of_its_pictures_are_not(
    tmp_path: Path, across: bool
) -> None:
    """a50: a banked 2x2 grid relaid as a strip (or a stack) of its four pictures went through:
    each picture, a quarter of the strip, was found only in its own view of the query split
    at its gutters, and one picture a view is not the grid. The pictures found in any view of
    the query now count together; two of the four are still another picture."""
    names = ("astronaut", "coffee", "chelsea", "motorcycle_left")
    with _bank(tmp_path, {"grid.png": encode(grid_of_four(names, 10), "PNG")}) as bank:
        assert bank.blocked(strip_of(names[::-1], 10, across=across), "JPEG")
        assert not bank.blocked(strip_of((names[0], names[3]), 10, across=across), "JPEG")
        # a52 F1: two of the four as they sat in the grid (its top row, or its left column:
        # the same as a crop of it) are a new meme of two of its pictures
        two = names[:2] if across else names[::2]
        assert not bank.blocked(strip_of(two, 10, across=across), "JPEG")


def _noisy_drawing(seed: int) -> Image.Image:
    """Shapes on colour noise, as a50 drew the pictures of its collages."""
    rng = np.random.default_rng(seed)
    picture = Image.fromarray(rng.integers(0, 256, (360, 480, 3), dtype=np.uint8))
    draw = ImageDraw.Draw(picture)
    for _ in range(25):
        x, y = int(rng.integers(0, 440)), int(rng.integers(0, 320))
        w, h = int(rng.integers(15, 60)), int(rng.integers(15, 60))
        fill = tuple(int(v) for v in rng.integers(0, 256, 3))
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)((x, y, x + w, y + h), fill=fill)
    return picture


def test_a_collage_split_by_a_thin_line_is_split_and_its_pictures_alone_pass(
    tmp_path: Path,
) -> None:
    """a50 N8: two noise-like pictures with a 3 px black line between them. In the working
    frame (512 px) the line blurs into the noise, so the collage was banked as one picture and
    each picture alone was blocked (13 of 14 innocent sends). Gutters are now looked for again
    at twice that scale when a banked picture is larger."""
    first, second = _noisy_drawing(1), _noisy_drawing(2)
    collage = gutter_collage(first, second, 3, "black")
    assert panels(collage) == 2
    with _bank(tmp_path, {"collage.png": encode(collage, "PNG")}) as bank:
        assert bank.blocked(collage, "JPEG")
        for picture in (first, second):
            assert not bank.blocked(picture, "JPEG")


def test_swapped_pictures_are_found_among_other_collages_of_the_same_pictures(
    tmp_path: Path,
) -> None:
    """a50 F1: with other banked collages showing the same pictures, their views took the
    candidates' places; the other pictures of a collage are looked for with the first."""
    items = {
        "meme.png": encode(meme("astronaut", "coffee"), "PNG"),
        "other.png": encode(meme("coffee", "camera", "other"), "PNG"),
        "third.png": encode(meme("camera", "astronaut", "third"), "PNG"),
    }
    with _bank(tmp_path, items) as bank:
        assert bank.blocked(meme("coffee", "astronaut"), "JPEG")
        assert not bank.blocked(_photo("astronaut"), "JPEG")


@pytest.mark.parametrize("name", ["astronaut", "coffee", "motorcycle_left"])
def test_a_banked_photo_cut_in_two_with_a_gutter_between_is_blocked(
    tmp_path: Path, name: str
) -> None:
    """a50 F4: the halves of a banked photo 40 px apart on white matched neither half's place;
    a query split at its gutters is looked up picture by picture."""
    photo = skimage_photo(name)
    width, height = photo.size
    cut = Image.new("RGB", (width + 40, height), "white")
    cut.paste(photo.crop((0, 0, width // 2, height)), (0, 0))
    cut.paste(photo.crop((width // 2, 0, width, height)), (width // 2 + 40, 0))
    with _bank(tmp_path, {"photo.png": encode(photo, "PNG")}) as bank:
        assert bank.blocked(cut, "JPEG")
