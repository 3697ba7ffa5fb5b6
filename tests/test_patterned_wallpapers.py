"""Chats over patterned or dark wallpapers: a brick wall, drawn tiles, a drawn facade, a star
field (adversarial pass a66 F1: the same phone's other chats were blocked 15 to 19 of 19 on
three phones).

Over such wallpapers the banked chat's picture was often not found: the wallpaper's own straight
lines (brick joints, window frames, tile edges) took every place among the candidate sides of a
pasted picture, and a dark-edged picture on a night sky shows no seam at all. The screen was then
banked around its picture: its content box (the chat area) unjudged, or cut into a "collage" at
the dark sky above the picture, and other chats matched the wallpaper. Benign pictures only.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
from PIL import Image, ImageDraw

from schoolgate.media.features import PANEL_VIEW, band_judge_of, framed_judge_of
from schoolgate.media.pasted_pictures import seamed_boxes
from schoolgate.media.signals import bank_feature_views
from tests.conftest import encode
from tests.support.imagery import skimage_photo
from tests.test_robust_precision import Bank, _bank

WORDS = ("hey are you coming later", "yeah 10 mins", "ok bring the charger", "lol fine")
TOP = 860  # the picture's top, 600 px wide at x = 430 unless told


def facade() -> Image.Image:
    """A drawn facade: rows of framed windows on a noisy render, repeating every 140 x 160 px."""
    rng = np.random.default_rng(2)
    image = Image.new("RGB", (1080, 2340), (180, 160, 140))
    draw = ImageDraw.Draw(image)
    for y in range(0, 2340, 160):
        draw.line((0, y, 1080, y), fill=(120, 100, 90), width=6)
        for x in range(20, 1080, 140):
            draw.rectangle((x, y + 30, x + 80, y + 130), fill=(60, 70, 90),
                           outline=(240, 240, 240), width=5)  # fmt: skip
            draw.line((x + 40, y + 30, x + 40, y + 130), fill=(240, 240, 240), width=3)
    noise = rng.integers(-12, 12, (2340, 1080, 1), dtype=np.int16)
    return Image.fromarray(np.clip(np.asarray(image, np.int16) + noise, 0, 255).astype(np.uint8))


def tiles() -> Image.Image:
    """Drawn tiles: 90 px squares of random colours, each with a ring, on grout."""
    rng = np.random.default_rng(1)
    image = Image.new("RGB", (1080, 2340), (200, 190, 170))
    draw = ImageDraw.Draw(image)
    for y in range(0, 2340, 90):
        for x in range(0, 1080, 90):
            colour = tuple(int(v) for v in rng.integers(120, 230, 3))
            draw.rectangle((x + 3, y + 3, x + 86, y + 86), fill=colour)
            draw.ellipse((x + 25, y + 25, x + 64, y + 64), outline=(90, 80, 60), width=3)
    return image


def wallpaper(name: str) -> Image.Image:
    if name == "facade":
        return facade()
    if name == "tiles":
        return tiles()
    return skimage_photo(name).resize((1080, 2340), Image.Resampling.BICUBIC)


def patterned_chat(photo: str | None, name: str, seed: int = 0, left: int = 430,
                   width: int = 600) -> Image.Image:  # fmt: skip
    """A 1080 x 2340 chat over wallpaper `name`: status bar and header, four text bubbles in an
    order of `seed`, `photo` pasted straight on the wallpaper where given, and the input bar."""
    rng = np.random.default_rng(seed)
    screen = wallpaper(name)
    draw = ImageDraw.Draw(screen)
    draw.rectangle((0, 0, 1080, 80), fill=(17, 17, 17))
    draw.rectangle((0, 80, 1080, 240), fill=(7, 94, 84))
    draw.text((150, 130), "Alex", fill=(255, 255, 255), font_size=48)
    y = 280
    for number, words in enumerate(rng.permutation(WORDS).tolist()):
        x = 30 if number % 2 == 0 else 560
        bubble = (255, 255, 255) if number % 2 == 0 else (220, 248, 198)
        draw.rounded_rectangle((x, y, x + 490, y + 90), 22, fill=bubble)
        draw.text((x + 24, y + 24), words, fill=(20, 20, 20), font_size=34)
        y += 130
    if photo is not None:
        picture = skimage_photo(photo)
        screen.paste(picture.resize((width, round(picture.height * width / picture.width))),
                     (left, TOP))  # fmt: skip
    draw.rectangle((0, 2180, 1080, 2340), fill=(240, 240, 240))
    draw.rounded_rectangle((30, 2210, 900, 2300), 40, fill=(255, 255, 255))
    return screen


PHOTOS = ("astronaut", "chelsea", "coins", "camera", "motorcycle_left", "retina", "coffee",
          "rocket")  # fmt: skip


def _found(photo: str, name: str) -> bool | None:
    """Whether the first seamed box is the picture (within 12 px); None where there is none."""
    picture = skimage_photo(photo)
    truth = (430, TOP, 1030, TOP + round(picture.height * 600 / picture.width))
    boxes = seamed_boxes(patterned_chat(photo, name), 96)
    if not boxes:
        return None
    return all(abs(a - b) <= 12 for a, b in zip(boxes[0], truth, strict=True))


def test_a_picture_over_a_brick_wall_or_drawn_tiles_is_found_by_its_seams() -> None:
    """A brick wallpaper's joints are seamed along a min_side window too: ranked by that alone
    they took every place among the candidate sides (brick: 0 of 8 found before). Sides are now
    ranked by their longest seamed run, and tops and bottoms by how clearly they stop at the
    sides (a brick course's mortar runs on past the picture). One half side may fade into a
    wallpaper of its colour where the other seven are clearly seamed (chelsea's top right
    corner on the brick). Measured: brick 6 of 8, drawn tiles 8 of 8 (7 before), no box
    wrong."""
    brick = [_found(photo, "brick") for photo in PHOTOS]
    assert brick.count(True) >= 5, brick
    drawn = [_found(photo, "tiles") for photo in PHOTOS]
    assert drawn.count(True) >= 7, drawn
    assert False not in brick + drawn


BANKS = (("astronaut", "hubble_deep_field"), ("astronaut", "facade"), ("chelsea", "brick"))
OTHERS = ("coins", "camera", "retina", "rocket", "page", "moon", None)


@pytest.fixture(scope="module")
def patterned(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Bank]:
    items = {f"{name}-{photo}.png": encode(patterned_chat(photo, name), "PNG")
             for photo, name in BANKS}  # fmt: skip
    with _bank(tmp_path_factory.mktemp("patterned"), items) as bank:
        yield bank


@pytest.mark.parametrize(("photo", "name"), BANKS)
def test_the_same_phones_other_chats_are_not_blocked(
    patterned: Bank, photo: str, name: str
) -> None:
    """Another photo (grey and low-detail ones too) or none in the picture's place, the text
    bubbles in another order (before: 7 of 7 over the star field, 2 of 7 over the facade)."""
    blocked = [other for other in OTHERS
               if patterned.blocked(patterned_chat(other, name, seed=5))]  # fmt: skip
    assert blocked == []


@pytest.mark.parametrize(("photo", "name"), BANKS)
def test_the_banked_chat_is_still_blocked(patterned: Bank, photo: str, name: str) -> None:
    """The banked picture in the same phone's other chat (bubbles in another order), as a JPEG."""
    assert patterned.blocked(patterned_chat(photo, name, seed=7), "JPEG")


def test_a_star_field_is_cut_into_no_collage() -> None:
    """The dark sky above a picture read as a collage's gutter: the screen was banked as two
    "pictures", wallpaper both, and the same phone's chats matched both. A screen judged whole
    over a photo wallpaper banks no panels; its whole view, mirror and content box are judged
    band by band."""
    names = [
        name for name, _ in bank_feature_views(patterned_chat("astronaut", "hubble_deep_field"))
    ]
    assert not any(PANEL_VIEW in name for name in names), names
    judged = {band[0] for name in names if (band := band_judge_of(name)) is not None}
    assert judged == {"whole", "mirror", "content"}


def test_a_content_box_that_cuts_rows_off_the_picture_still_judges_it() -> None:
    """Over the facade the chat's content box ended two rows short of the pasted picture: it
    was banked with no judge, and matched the same phone's other chats."""
    names = [name for name, _ in bank_feature_views(patterned_chat("astronaut", "facade"))]
    judged = {framed[0] for name in names if (framed := framed_judge_of(name)) is not None}
    assert "picture" in names
    assert judged == {"whole", "mirror", "content"}


@pytest.fixture(scope="module")
def at_the_side(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Bank]:
    """A chat whose picture touches the screen's side (no seam there: not found, so the screen
    is judged whole, band by band)."""
    items = {f"side-{photo}.png": encode(patterned_chat(photo, "brick", seed, 0, 640), "PNG")
             for seed, photo in enumerate(("astronaut", "chelsea"))}  # fmt: skip
    with _bank(tmp_path_factory.mktemp("side"), items) as bank:
        yield bank


def test_a_wallpaper_where_the_picture_was_is_not_the_picture(at_the_side: Bank) -> None:
    """A band of a screen judged whole must agree where it shows photographic cells: the
    wallpaper in the picture's place is no other photograph, and passed (the chat with no
    picture, bubbles in another order, was blocked; this test fails on the band rule before).
    The banked chat's copies still match."""
    for seed in (5, 11):
        for other in OTHERS:
            screen = patterned_chat(other, "brick", seed=seed, left=0, width=640)
            assert not at_the_side.blocked(screen), (other, seed)
    banked = patterned_chat("astronaut", "brick", left=0, width=640)
    assert at_the_side.blocked(banked, "JPEG")
    assert at_the_side.blocked(banked.resize((720, 1560), Image.Resampling.LANCZOS), "JPEG")
    assert at_the_side.blocked(banked.crop((0, 240, 1080, 2180)))
    assert at_the_side.blocked(patterned_chat("astronaut", "brick", seed=7, left=0, width=640))
