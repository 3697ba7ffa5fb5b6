"""Writing and large stickers over a banked picture (adversarial pass a82 H3): a meme's lines
of capitals at the top and bottom, a caption set at a slant across the middle, and an emoji a
quarter of the picture's size over its middle. Writing across plain sky or a wall reads as
photographic, a line of cells at a time, and is not another subject; a sticker over the middle
is told from a frame shared by two pictures by the photo agreeing around it. A frame around
another picture, or a drawing, is still another picture.

Benign pictures only: scikit-image photos and Pillow drawings."""

from __future__ import annotations

import pytest
from PIL import Image, ImageDraw, ImageFont

from schoolgate.pipeline.engine import InspectionContext, Inspector
from tests.support.banked_inspector import opened_inspector, photo_inspector
from tests.support.imagery import encode, procedural_scene, skimage_photo
from tests.support.screens import frame_overlay

CTX = InspectionContext(client_ip="192.0.2.65", app="overlay-test")


inspector = photo_inspector("astronaut", "rocket")


def blocked(inspector: Inspector, image: Image.Image) -> bool:
    return inspector.evaluate(encode(image, "JPEG", quality=85), CTX).blocked


def meme_lines(image: Image.Image, share: float, bottom: bool = True) -> Image.Image:
    """White capitals outlined in black, `share` of the height tall, at the top (and bottom)."""
    meme = image.convert("RGB")
    draw = ImageDraw.Draw(meme)
    font = ImageFont.load_default(size=round(meme.height * share))
    lines = [("WHEN THE BUS IS LATE", 0.02)] + ([("AGAIN AND AGAIN", 0.86)] if bottom else [])
    for text, top in lines:
        draw.text((meme.width / 2, meme.height * top), text, font=font, fill="white",
                  stroke_width=5, stroke_fill="black", anchor="ma")  # fmt: skip
    return meme


def slanted_caption(image: Image.Image) -> Image.Image:
    """A yellow caption across the middle, turned 30 degrees."""
    layer = Image.new("RGBA", image.size)
    font = ImageFont.load_default(size=round(image.height * 0.12))
    ImageDraw.Draw(layer).text((image.width / 2, image.height / 2), "SCIENCE TRIP", font=font,
                               fill=(255, 255, 0, 230), stroke_width=4, stroke_fill="black",
                               anchor="mm")  # fmt: skip
    return Image.alpha_composite(image.convert("RGBA"), layer.rotate(30)).convert("RGB")


def emoji_over_middle(image: Image.Image, radius: float) -> Image.Image:
    """A smiley `radius` of the width across the middle, and two small hearts."""
    covered = image.convert("RGB")
    draw = ImageDraw.Draw(covered)
    width, height = covered.size
    r, cx, cy = round(width * radius), width // 2, height // 2
    draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=(255, 204, 0), outline=(120, 80, 0),
                 width=max(1, r // 15))  # fmt: skip
    for eye in (-0.35, 0.35):
        draw.ellipse((cx + (eye - 0.1) * r, cy - 0.35 * r, cx + (eye + 0.1) * r, cy - 0.05 * r),
                     fill="black")  # fmt: skip
    draw.arc((cx - 0.55 * r, cy - 0.3 * r, cx + 0.55 * r, cy + 0.6 * r), 20, 160, fill="black",
             width=max(2, r // 8))  # fmt: skip
    for hx, hy in ((0.15, 0.2), (0.85, 0.8)):
        s = round(width * 0.06)
        x, y = round(width * hx), round(height * hy)
        draw.ellipse((x - s, y - s, x + s, y + s), fill=(230, 20, 60))
    return covered


@pytest.mark.parametrize("share", [0.08, 0.1])
def test_a_meme_caption_over_a_banked_photo_is_blocked(inspector: Inspector, share: float) -> None:
    assert blocked(inspector, meme_lines(skimage_photo("astronaut"), share))


def test_a_meme_caption_at_the_top_only_is_blocked(inspector: Inspector) -> None:
    assert blocked(inspector, meme_lines(skimage_photo("astronaut"), 0.1, bottom=False))


@pytest.mark.parametrize("name", ["rocket", "astronaut"])
def test_a_caption_at_a_slant_across_a_banked_photo_is_blocked(
    inspector: Inspector, name: str
) -> None:
    assert blocked(inspector, slanted_caption(skimage_photo(name)))


@pytest.mark.parametrize("radius", [0.22, 0.28])
def test_a_large_emoji_over_a_banked_photos_middle_is_blocked(
    inspector: Inspector, radius: float
) -> None:
    assert blocked(inspector, emoji_over_middle(skimage_photo("astronaut"), radius))


def test_the_banked_photos_frame_around_a_drawing_is_not_blocked(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    banked, other = frame_overlay([skimage_photo("coffee"), procedural_scene(512)], 4)
    with opened_inspector(tmp_path_factory.mktemp("framed") / "data", banked) as inspector:
        assert blocked(inspector, banked)
        assert not blocked(inspector, other)


@pytest.mark.parametrize("name", ["camera", "coffee", "coins"])
def test_writing_and_stickers_over_innocent_photos_are_not_blocked(
    inspector: Inspector, name: str
) -> None:
    photo = skimage_photo(name)
    for edited in (meme_lines(photo, 0.1), slanted_caption(photo), emoji_over_middle(photo, 0.28)):
        assert not blocked(inspector, edited)
