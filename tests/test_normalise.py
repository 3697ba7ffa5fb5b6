"""Query-side normalisation: the picture is found inside screenshots, padding and letterboxes,
and a real photo is never cut into by a caption bar."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image, ImageDraw

from schoolgate.media.normalise import analysis_views, content_box
from tests.support.imagery import EDITS, phone_screenshot, skimage_photo


def _open(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


@pytest.fixture(scope="module")
def coffee() -> Image.Image:
    return skimage_photo("coffee")


def test_screenshot_box_is_the_photo(coffee: Image.Image) -> None:
    shot = _open(phone_screenshot(coffee, seed=3))
    box = content_box(shot)
    assert box is not None
    # The photo is fitted to the 1080 px width, so its height is 720 and it sits mid-canvas.
    assert box.left <= 6
    assert box.right >= 1074
    assert box.height == pytest.approx(720, abs=12)
    inner = shot.crop(box.as_tuple()).resize(coffee.size)
    difference = np.abs(np.asarray(inner, np.int16) - np.asarray(coffee, np.int16)).mean()
    assert difference < 12  # the same picture, not a band of canvas


def test_white_padding_and_gradient_letterbox_are_trimmed(coffee: Image.Image) -> None:
    padded = _open(EDITS["pad_white_20"](coffee, 0))
    box = content_box(padded)
    assert box is not None
    assert (box.width, box.height) == pytest.approx(coffee.size, abs=4)

    # A story-style canvas: a vertical gradient above and below the photo.
    canvas = Image.new("RGB", (600, 900))
    draw = ImageDraw.Draw(canvas)
    for y in range(900):
        draw.line((0, y, 600, y), fill=(y // 4, 40, 200 - y // 5))
    canvas.paste(coffee, (0, 250))
    box = content_box(canvas)
    assert box is not None
    assert (box.top, box.bottom) == pytest.approx((250, 650), abs=4)


def test_caption_bar_across_the_middle_is_not_cut_out(coffee: Image.Image) -> None:
    captioned = _open(EDITS["caption_middle"](coffee, 1))
    box = content_box(captioned)
    # Peeling goes inwards from the edges only: the bar in the middle is content.
    assert box is None or box.width * box.height >= 0.9 * coffee.width * coffee.height


def test_blank_and_tiny_images_have_no_box() -> None:
    assert content_box(Image.new("RGB", (800, 600), (30, 30, 30))) is None
    assert content_box(Image.new("RGB", (10, 10), (255, 255, 255))) is None
    assert content_box(Image.new("L", (300, 200), 128)) is None


def test_analysis_views_nest_and_keep_the_whole(coffee: Image.Image) -> None:
    assert analysis_views(coffee) == [coffee]
    padded = _open(EDITS["pad_white_20"](coffee, 0))
    shot_of_padded = _open(phone_screenshot(padded, seed=0))
    views = analysis_views(shot_of_padded)
    assert views[0] is shot_of_padded
    assert len(views) >= 2  # the photo is found through both the canvas and the padding
    assert views[-1].size[0] / views[-1].size[1] == pytest.approx(1.5, rel=0.03)
