"""A banked photo shown small inside a larger frame: a 1080 x 2340 chat screenshot whose picture
is 260-420 px wide, or a long scrolling chat with one. In the query's 512 px working frame such
a picture is a few dozen pixels wide and holds a tenth of the keypoints; it was blocked 0 of 14
times at 200-300 px and 10 of 14 at 400 px (session 44's eval). Its photo region is now looked
up on its own (media/photo_regions.py). Banked with `hashes add`, judged as the proxy judges;
benign pictures only."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageOps

from schoolgate.media.features import working_grey
from schoolgate.media.photo_regions import (
    MIN_REGION_SIDE,
    _cut,
    _line_percentiles,
    photo_regions,
    region_views,
)
from tests.support.imagery import encode, procedural_scene, skimage_photo
from tests.support.screens import STYLES, chat_screenshot
from tests.test_robust_precision import Bank, _bank

BANKED = ("astronaut", "chelsea", "coffee", "rocket")
OTHERS = ("camera", "coins", "motorcycle_left", "hubble_deep_field")
WORDS = ("who took it", "omg", "is that real", "haha no way", "send it to me", "lol")


def chat(
    photo: Image.Image, width: int, seed: int = 0, height: int = 2340, gap: int = 30
) -> Image.Image:
    """A 1080-wide light chat screen: a status bar and header, a few text bubbles, `photo`
    `width` px wide in a bubble with its time, more bubbles below, and the input bar; bubbles
    `gap` px apart."""
    rng = np.random.default_rng(seed)
    screen = Image.new("RGB", (1080, height), (236, 229, 221))
    draw = ImageDraw.Draw(screen)
    draw.rectangle((0, 0, 1080, 220), fill=(7, 94, 84))
    draw.ellipse((40, 90, 160, 210), fill=(120, 90, 200))
    draw.text((190, 120), "Ruby", fill=(255, 255, 255), font_size=48)
    draw.text((40, 20), "20:51", fill=(255, 255, 255), font_size=36)
    y = 260

    def bubble(top: int) -> int:
        left = int(rng.choice([28, 560]))
        draw.rounded_rectangle((left, top, left + 480, top + 90), 30,
                               fill=(255, 255, 255) if left == 28 else (220, 248, 198))  # fmt: skip
        draw.text((left + 30, top + 25), str(rng.choice(WORDS)), fill=(20, 20, 20), font_size=36)
        return top + 90 + gap

    for _ in range(int(rng.integers(1, 4))):
        y = bubble(y)
    small = photo.resize((width, round(photo.height * width / photo.width)),
                         Image.Resampling.LANCZOS)  # fmt: skip
    left = int(rng.choice([28, 1080 - width - 52]))
    draw.rounded_rectangle((left, y, left + width + 24, y + small.height + 70), 20,
                           fill=(220, 248, 198))  # fmt: skip
    screen.paste(small, (left + 12, y + 12))
    draw.text((left + width - 80, y + small.height + 22), "15:13", fill=(90, 90, 90), font_size=28)
    y += small.height + 70 + gap
    while y < height - 400:
        y = bubble(y)
    draw.rectangle((0, height - 160, 1080, height), fill=(245, 245, 245))
    draw.rounded_rectangle((28, height - 140, 900, height - 40), 50, fill=(255, 255, 255))
    draw.text((90, height - 115), "Message", fill=(140, 140, 140), font_size=40)
    return screen


def photo_box(screen: Image.Image) -> tuple[int, int, int, int]:
    """Where `chat` put its photo: the largest textured region, in the screen's pixels."""
    grey = working_grey(screen)
    (left, top, right, bottom), _ = photo_regions(grey)[0]
    scale = screen.width / grey.shape[1]
    return (round(left * scale), round(top * scale), round(right * scale), round(bottom * scale))


# ---------------------------------------------------------------------------------------------
# Finding the regions


@pytest.mark.parametrize("width", [260, 420])
def test_a_chat_screenshots_small_photo_is_found_as_a_region(width: int) -> None:
    photo = skimage_photo("astronaut")
    screen = chat(photo, width, seed=1)
    left, top, right, bottom = photo_box(screen)
    # The photo's own box, within a block of the working frame (about 37 px here).
    assert abs((right - left) - width) <= 2 * 37
    height = round(photo.height * width / photo.width)
    assert abs((bottom - top) - height) <= 2 * 37
    views = region_views(working_grey(screen), screen)
    assert views
    assert min(views[0].size) >= min(width, height)


def test_a_plain_photo_and_a_text_only_screen_have_no_regions_to_look_up() -> None:
    """A photo's one textured region is the photo (a patch of it is too small to align); an
    interface and its text are flat areas between sharp edges."""
    for name in ("astronaut", "coffee", "chelsea", "grass", "text", "hubble_deep_field"):
        photo = skimage_photo(name)
        assert region_views(working_grey(photo), photo) == [], name
    text_only = chat(Image.new("RGB", (400, 300), (236, 229, 221)), 400)
    assert photo_regions(working_grey(text_only)) == []


@pytest.mark.parametrize(("width", "views"), [(60, 0), (200, 1)])
def test_a_picture_too_small_to_align_is_not_looked_up(width: int, views: int) -> None:
    screen = Image.new("RGB", (1080, 2340), (236, 229, 221))
    photo = skimage_photo("astronaut").resize((width, width), Image.Resampling.LANCZOS)
    screen.paste(photo, (300, 900))
    assert len(region_views(working_grey(screen), screen)) == views


# ---------------------------------------------------------------------------------------------
# Judged as the proxy judges


@pytest.fixture(scope="module")
def bank(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Bank]:
    items = {f"{name}.jpg": encode(skimage_photo(name), "JPEG", quality=92) for name in BANKED}
    with _bank(tmp_path_factory.mktemp("small-pictures"), items) as banked:
        yield banked


@pytest.mark.parametrize("width", [260, 420])
@pytest.mark.parametrize("name", BANKED)
def test_a_banked_photo_small_in_a_chat_screenshot_is_blocked(
    bank: Bank, name: str, width: int
) -> None:
    assert bank.blocked(chat(skimage_photo(name), width, seed=width), "PNG")
    assert bank.blocked(chat(skimage_photo(name), width, seed=width + 1), "JPEG")


@pytest.mark.parametrize("width", [260, 420])
@pytest.mark.parametrize("name", OTHERS)
def test_another_photo_small_in_the_same_chat_is_not_blocked(
    bank: Bank, name: str, width: int
) -> None:
    screen = chat(skimage_photo(name), width, seed=width)
    assert not bank.blocked(screen, "PNG")
    assert not bank.blocked(screen, "JPEG")


def test_a_banked_photo_small_in_a_long_chat_is_blocked(bank: Bank) -> None:
    """A scrolling screenshot is looked at in tiles; each tile's small pictures too."""
    screen = chat(skimage_photo("chelsea"), 360, seed=3, height=6000)
    assert bank.blocked(screen, "PNG")
    assert not bank.blocked(chat(skimage_photo("camera"), 360, seed=3, height=6000), "PNG")


# ---------------------------------------------------------------------------------------------
# A gallery or profile grid: pictures side by side with thin gutters join into one region


def gallery(photo: Image.Image | None, per_row: int, gutter: int, seed: int) -> Image.Image:
    """A 1080 x 2340 gallery screen: a title, then 4 rows of `per_row` square thumbnails
    (centre crops) `gutter` px apart, `photo` in one of them (none: all are other pictures)."""
    rng = np.random.default_rng(seed)
    screen = Image.new("RGB", (1080, 2340), (255, 255, 255))
    ImageDraw.Draw(screen).text((40, 60), "Recents", fill=(0, 0, 0), font_size=48)
    side = (1080 - gutter * (per_row - 1)) // per_row
    spot = int(rng.integers(per_row * 4))
    for cell in range(per_row * 4):
        shown = photo if photo is not None and cell == spot else FILLERS[int(rng.integers(8))]
        row, column = divmod(cell, per_row)
        screen.paste(ImageOps.fit(shown, (side, side)),
                     (column * (side + gutter), 300 + row * (side + gutter)))  # fmt: skip
    return screen


FILLERS = tuple(
    skimage_photo(name)
    for name in (
        "camera",
        "coins",
        "motorcycle_left",
        "grass",
        "retina",
        "gravel",
        "moon",
        "immunohistochemistry",
    )
)


def test_a_grid_region_is_cut_at_its_gutters() -> None:
    screen = gallery(None, 3, 2, seed=0)
    views = region_views(working_grey(screen), screen)
    assert len(views) == 12  # 4 rows of 3
    # Each a thumbnail, less a plain band at its edge where it has one (the camera's sky).
    assert all(300 <= view.width <= 400 and 300 <= view.height <= 400 for view in views)


@pytest.mark.parametrize("seed", range(6))
def test_a_drawing_with_flat_bands_is_not_cut_into_slivers(seed: int) -> None:
    """Plain rows between lines of text, a drawn scene's flat sky: not gutters of a grid."""
    drawn = np.asarray(procedural_scene(seed, (360, 360)).convert("L"), np.uint8)
    cells = _cut(drawn, 3)
    assert all(min(right - left, bottom - top) >= MIN_REGION_SIDE
               for left, top, right, bottom in cells), cells  # fmt: skip


def test_line_percentiles_are_numpys_exactly() -> None:
    """The gutters' line spreads come from a sort of the bytes, not np.percentile: the values
    (and their dtype) must be numpy's to the bit, or a gutter at the threshold would move."""
    rng = np.random.default_rng(5)
    shapes = [(1, 1), (1, 7), (3, 2), (40, 41), (57, 333), (400, 96)]
    for n, shape in enumerate(shapes * 3):
        lines = rng.integers(0, 256, shape).astype(np.uint8)
        if n % 3 == 1:  # a plain band with noise: many ties
            lines = np.clip(rng.normal(128, 2, shape), 0, 255).astype(np.uint8)
        for quantiles in ((5, 95), (2.5, 97.5), (0, 100)):
            expected = np.percentile(lines.astype(np.float32), quantiles, axis=1)
            found = _line_percentiles(lines, quantiles)
            for want, got in zip(expected, found, strict=True):
                assert got.dtype == want.dtype
                np.testing.assert_array_equal(got, want)


def test_stripes_are_not_a_grid() -> None:
    """A pattern of plain and busy lines every few pixels is a pattern, not pictures: it is not
    cut at all (before the bound, its 400 slivers were joined one by one into a trimmed box)."""
    rng = np.random.default_rng(3)
    stripes = rng.integers(0, 256, (1200, 600)).astype(np.uint8)
    stripes[::3] = 128
    assert _cut(stripes, 3) == [(0, 0, 600, 1200)]


@pytest.mark.parametrize(("per_row", "gutter"), [(3, 2), (4, 4)])
@pytest.mark.parametrize("name", BANKED)
def test_a_banked_photo_in_a_gallery_grid_is_blocked(
    bank: Bank, name: str, per_row: int, gutter: int
) -> None:
    screen = gallery(skimage_photo(name), per_row, gutter, seed=len(name))
    assert bank.blocked(screen, "PNG")
    assert bank.blocked(screen, "JPEG")


@pytest.mark.parametrize(("per_row", "gutter"), [(3, 2), (4, 4)])
def test_a_gallery_grid_of_other_pictures_is_not_blocked(
    bank: Bank, per_row: int, gutter: int
) -> None:
    for seed in range(3):
        screen = gallery(None, per_row, gutter, seed)
        assert not bank.blocked(screen, "PNG")
        assert not bank.blocked(screen, "JPEG")


# ---------------------------------------------------------------------------------------------
# Adversarial pass a59's cases


def between_messages(photo: Image.Image, width: int, gap: int) -> Image.Image:
    """a59 F2's layout: a `width` px picture in a white bubble with its time, and two wide white
    text bubbles above and two below it, `gap` px apart, on a light chat background."""
    screen = Image.new("RGB", (1080, 2340), (236, 229, 221))
    draw = ImageDraw.Draw(screen)
    draw.rectangle((0, 0, 1080, 200), fill=(7, 94, 84))
    small = photo.resize((width, round(photo.height * width / photo.width)),
                         Image.Resampling.LANCZOS)  # fmt: skip
    left, top = 50, 800
    bottom = top + small.height + 50
    draw.rounded_rectangle(
        (left - 10, top - 10, left + width + 10, bottom), 20, fill=(255, 255, 255)
    )
    screen.paste(small, (left, top))
    draw.text((left + width - 110, top + small.height + 8), "12:03", fill=(0, 0, 0), font_size=26)
    starts = [top - 10 - gap - 90, top - 10 - gap - 200, bottom + gap, bottom + gap + 110]
    for number, start in enumerate(starts):
        draw.rounded_rectangle((30, start, 700, start + 90), 24, fill=(255, 255, 255))
        draw.text((52, start + 24), " ".join(WORDS[number:] + WORDS[:number]), fill=(0, 0, 0),
                  font_size=34)  # fmt: skip
    return screen


@pytest.mark.parametrize("gap", [4, 10, 20])
@pytest.mark.parametrize("name", BANKED)
def test_a_banked_photo_between_text_bubbles_a_few_pixels_away_is_blocked(
    bank: Bank, name: str, gap: int
) -> None:
    """a59 F2: text bubbles 4-20 px above and below a 250 px picture joined it into one region
    that was not compact enough (2 of 28 blocked); the gutter cut now leaves the text out."""
    screen = between_messages(skimage_photo(name), 250, gap)
    assert bank.blocked(screen, "PNG")
    assert bank.blocked(screen, "JPEG")


@pytest.mark.parametrize("gap", [4, 10, 20])
@pytest.mark.parametrize("name", OTHERS)
def test_another_photo_between_text_bubbles_is_not_blocked(bank: Bank, name: str, gap: int) -> None:
    screen = between_messages(skimage_photo(name), 250, gap)
    assert not bank.blocked(screen, "PNG")
    assert not bank.blocked(screen, "JPEG")


def avatars(photo: Image.Image | None, count: int) -> Image.Image:
    """a59 F7: a 300 px picture above `count` round photo avatars with names, 4 a row."""
    screen = Image.new("RGB", (1080, 2340), (255, 255, 255))
    draw = ImageDraw.Draw(screen)
    if photo is not None:
        screen.paste(photo.resize((300, round(photo.height * 300 / photo.width))), (720, 300))
    mask = Image.new("L", (120, 120), 0)
    ImageDraw.Draw(mask).ellipse((0, 0, 119, 119), fill=255)
    for number in range(count):
        row, column = divmod(number, 4)
        x, y = 40 + column * 260, 580 + row * 200
        screen.paste(ImageOps.fit(FILLERS[number % len(FILLERS)], (120, 120)), (x, y), mask)
        draw.text((x, y + 130), WORDS[number % len(WORDS)], fill=(20, 20, 20), font_size=30)
    return screen


@pytest.mark.parametrize("name", BANKED)
def test_a_banked_photo_beside_many_photo_avatars_is_blocked(bank: Bank, name: str) -> None:
    """a59 F7: 24-32 avatars (columns of avatars and names) took every region's place."""
    assert bank.blocked(avatars(skimage_photo(name), 32), "PNG")
    assert not bank.blocked(avatars(None, 32), "PNG")


def test_drawn_regions_are_not_looked_up() -> None:
    """Avatars with initials, icons, doodles and headers are regions of a screen too; looking
    each up took the precision bench's p95 from 65 to 137 ms a screen. Only photographic ones
    are looked up: each synthetic chat screen shows one photo (and drawn avatars, doodles, a
    header, a keyboard)."""
    regions = views = 0
    for seed in range(8):
        app, theme = STYLES[seed % len(STYLES)]
        screen = chat_screenshot(skimage_photo("coffee"), app, theme, seed)
        grey = working_grey(screen)
        regions += len(photo_regions(grey))
        views += len(region_views(grey, screen))
    assert views <= 12  # the photo, its cells where a cut found some
    assert regions > views + 4  # drawn regions were found, and left out
