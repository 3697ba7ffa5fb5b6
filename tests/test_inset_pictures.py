"""A banked picture pasted onto another photo at a fraction of its side (an inset) is found by
its straight edges and looked up at its own scale (media.inset_pictures): in the whole view it
is too small to draw votes (adversarial passes a85 and a86: pasted at 25-30% of the side onto
busy photos, 21 of 24 went through). What the edges find is looked up like any picture, so an
innocent picture pasted so is still judged on what it shows.

Benign pictures only: scikit-image photos."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFont, ImageOps

from schoolgate.media.features import working_grey
from schoolgate.media.framed_pictures import overlap
from schoolgate.media.inset_pictures import (
    MAX_INSET_SHARE,
    MAX_INSETS,
    inset_boxes,
    inset_pictures,
    searched_on_a_screen,
)
from schoolgate.pipeline.engine import InspectionContext, Inspector
from tests.support.banked_inspector import photo_inspector
from tests.support.imagery import brick_wall, encode, gravel_floor, skimage_photo

CTX = InspectionContext(client_ip="192.0.2.66", app="inset-test")

inspector = photo_inspector("rocket", "astronaut")

Box = tuple[int, int, int, int]


def pasted(background: str, picture: str | Image.Image, share: float, at: tuple[float, float],
           canvas: tuple[int, int] = (1080, 1080)) -> tuple[bytes, Box]:  # fmt: skip
    """`picture` shrunk to fit `share` of the canvas's sides, pasted with its top left corner
    at `at` (shares of the room left) onto a photo: the JPEG, and where the picture is."""
    photo = ImageOps.fit(skimage_photo(background).convert("RGB"), canvas)
    inset = picture if isinstance(picture, Image.Image) else skimage_photo(picture)
    inset = inset.convert("RGB")
    inset.thumbnail((round(canvas[0] * share), round(canvas[1] * share)))
    left = round((canvas[0] - inset.width) * at[0])
    top = round((canvas[1] - inset.height) * at[1])
    photo.paste(inset, (left, top))
    return encode(photo, "JPEG", quality=85), (left, top, left + inset.width, top + inset.height)


def decoded(data: bytes) -> Image.Image:
    return Image.open(io.BytesIO(data)).convert("RGB")


@pytest.mark.parametrize(
    ("background", "picture", "share", "at", "canvas"),
    [
        ("coins", "rocket", 0.15, (0.3, 0.6), (1080, 1080)),
        ("camera", "astronaut", 0.2, (0.8, 0.2), (1200, 900)),
        ("hubble_deep_field", "coffee", 0.25, (0.1, 0.9), (1080, 1350)),
        ("immunohistochemistry", "rocket", 0.3, (0.5, 0.5), (1920, 1080)),
        ("motorcycle_left", "astronaut", 0.2, (0.6, 0.4), (1080, 1080)),
    ],
)
def test_a_picture_pasted_onto_a_photo_is_boxed_by_its_edges(
    background: str, picture: str, share: float, at: tuple[float, float],
    canvas: tuple[int, int],
) -> None:  # fmt: skip
    """Among the boxes looked up (at most MAX_INSETS): on the motorcycle photo a box in its
    corner ranks first since sides are also judged less their ends (rounded corners)."""
    data, where = pasted(background, picture, share, at, canvas)
    boxes = inset_boxes(decoded(data))
    assert boxes, "no inset found"
    assert any(overlap(box, where) > 0.8 for box in boxes), (boxes, where)


@pytest.mark.parametrize("at", [(0.0, 0.0), (1.0, 0.0), (0.0, 1.0), (1.0, 1.0)])
def test_a_picture_pasted_into_a_corner_has_the_frame_for_two_of_its_sides(
    at: tuple[float, float],
) -> None:
    data, where = pasted("coins", "astronaut", 0.25, at)
    boxes = inset_boxes(decoded(data))
    assert any(overlap(box, where) > 0.8 for box in boxes), (boxes, where)


@pytest.mark.parametrize(
    ("background", "canvas", "side", "radius"),
    [
        ("coins", (1080, 1080), 240, 30),
        ("camera", (1080, 1350), 240, 30),
        # A radius of an eighth and of a fifth of a larger picture's side: its sides stop
        # short of the corners by more than half a run (of 120 pastes onto busy photos, 99
        # were boxed with square corners; at 1/8 69, now 93; at 1/5 21, now 87).
        ("coins", (1080, 1920), 480, 60),
        ("gravel", (1080, 1920), 480, 60),
        ("motorcycle_left", (1080, 1080), 420, 84),
        ("coins", (1920, 1080), 400, 80),
    ],
)
def test_a_picture_with_rounded_corners_is_boxed_by_its_sides(
    background: str, canvas: tuple[int, int], side: int, radius: int
) -> None:
    """Phone editors round a pasted picture's corners: its sides stop short of the corners,
    where no seam meets another."""
    picture = skimage_photo("astronaut").convert("RGB").resize((side, side))
    mask = Image.new("L", picture.size, 0)
    ImageDraw.Draw(mask).rounded_rectangle((0, 0, side - 1, side - 1), radius=radius, fill=255)
    photo = ImageOps.fit(skimage_photo(background).convert("RGB"), canvas)
    photo.paste(picture, (500, 380), mask)
    boxes = inset_boxes(decoded(encode(photo, "JPEG", quality=85)))
    assert any(overlap(box, (500, 380, 500 + side, 380 + side)) > 0.8 for box in boxes), boxes


def bordered(picture: str, share: float) -> Image.Image:
    """`picture` fitted to `share` of a 1080 px side, in a thin white border (2.5% of its
    width, 5 px at a fifth of the side), as phone editors frame a pasted picture."""
    inset = skimage_photo(picture).convert("RGB")
    inset.thumbnail((round(1080 * share), round(1080 * share)))
    return ImageOps.expand(inset, border=max(4, inset.width // 40), fill="white")


@pytest.mark.parametrize(
    ("background", "picture"),
    [("coins", "astronaut"), ("camera", "coffee"), ("hubble_deep_field", "astronaut"),
     ("motorcycle_left", "coffee"), ("immunohistochemistry", "astronaut")],
)  # fmt: skip
def test_a_picture_in_a_thin_white_border_is_boxed(background: str, picture: str) -> None:
    """The border's two edges lie too near each other for either to be a seam (each is beside
    the other): the border is found as a thin line (9 of these 10 were missed without)."""
    data, where = pasted(background, bordered(picture, 0.2), 1.0, (0.4, 0.3))
    boxes = inset_boxes(decoded(data))
    assert any(overlap(box, where) > 0.8 for box in boxes), (boxes, where)


def test_a_band_across_the_frame_is_not_an_inset() -> None:
    """Two of the frame's own sides facing each other, and a seam across it (a horizon, the
    edge of a banner across a photo), bound a band: not a picture pasted on it."""
    photo = ImageOps.fit(skimage_photo("coins").convert("RGB"), (1080, 1080))
    photo.paste(ImageOps.fit(skimage_photo("camera").convert("RGB"), (1080, 200)), (0, 300))
    boxes = inset_boxes(decoded(encode(photo, "JPEG", quality=85)))
    assert not any(box[0] == 0 and box[2] == 1080 for box in boxes), boxes


def test_boxes_are_few_and_small() -> None:
    """At most MAX_INSETS, none over MAX_INSET_SHARE of the frame (a larger picture is seen in
    the whole view), whatever a photo of many rectangles holds."""
    photo = ImageOps.fit(skimage_photo("coins").convert("RGB"), (1080, 1080))
    for n in range(9):
        tile = ImageOps.fit(skimage_photo("astronaut").convert("RGB"), (180, 180))
        photo.paste(tile, (40 + (n % 3) * 340, 40 + (n // 3) * 340))
    image = decoded(encode(photo, "JPEG", quality=85))
    boxes = inset_boxes(image)
    assert 1 <= len(boxes) <= MAX_INSETS
    for left, top, right, bottom in boxes:
        assert (right - left) * (bottom - top) <= MAX_INSET_SHARE * image.width * image.height


@pytest.mark.parametrize(("app", "theme"), [("chatty", "light"), ("snappy", "dark")])
def test_an_apps_screen_is_not_searched_for_insets(app: str, theme: str) -> None:
    """A chat screenshot is all boxes (bubbles, avatars, bars) whose pictures the screen
    searches look at."""
    from tests.support.screens import chat_screenshot

    chat = chat_screenshot(skimage_photo("coffee"), app, theme, seed=1)
    assert not searched_on_a_screen(working_grey(chat))


@pytest.mark.parametrize("background", ["camera", "coins", "brick"])
def test_a_story_over_a_photo_is_searched_for_insets(background: str) -> None:
    """A story's tall frame over a photo, though the photo reads as drawn cells (the brick
    wall, smooth when scaled up to a story's size: 7-19 photographic cells of 64, where the
    precision bench's chat screenshots have 1-28)."""
    story, _ = pasted(background, "rocket", 0.3, (0.3, 0.3), (1080, 1920))
    assert searched_on_a_screen(working_grey(decoded(story)))


def test_a_drawn_box_is_not_looked_up() -> None:
    """A flat box with writing (a caption, a label, a sticker) has straight edges too, but
    shows no photo: it is left out, as drawn regions are everywhere else."""
    label = Image.new("RGB", (300, 220), (250, 250, 245))
    ImageDraw.Draw(label).text((20, 90), "SCIENCE FAIR FRIDAY", fill=(20, 20, 20))
    data, _ = pasted("coins", label, 0.3, (0.5, 0.5))
    # The coins around it may hold boxes of their own (looked up like any picture).
    for crop in inset_pictures(decoded(data)):
        assert np.asarray(crop.convert("L")).mean() < 200, "the label was looked up"


@pytest.mark.parametrize(
    ("background", "picture", "share", "at", "canvas"),
    [
        ("coins", "rocket", 0.15, (0.3, 0.6), (1080, 1080)),
        ("camera", "astronaut", 0.2, (0.8, 0.2), (1200, 900)),
        ("hubble_deep_field", "rocket", 0.25, (0.1, 0.9), (1080, 1350)),
        ("immunohistochemistry", "astronaut", 0.2, (1.0, 0.0), (1920, 1080)),
        ("motorcycle_left", "rocket", 0.25, (0.4, 0.4), (1080, 1080)),
        # In a story's tall frame, over a photo.
        ("camera", "rocket", 0.2, (0.3, 0.3), (1080, 1920)),
        ("coins", "astronaut", 0.2, (0.7, 0.6), (1080, 1920)),
        ("brick", "rocket", 0.35, (0.4, 0.3), (1080, 1920)),
    ],
)
def test_a_banked_picture_pasted_small_onto_another_photo_is_blocked(
    inspector: Inspector, background: str, picture: str, share: float,
    at: tuple[float, float], canvas: tuple[int, int],
) -> None:  # fmt: skip
    data, _ = pasted(background, picture, share, at, canvas)
    verdict = inspector.evaluate(data, CTX)
    assert verdict.blocked, verdict.reasons


@pytest.mark.parametrize("fmt", ["PNG", "WEBP"])
@pytest.mark.parametrize(
    ("background", "picture", "at"),
    [("camera", "rocket", (0.4, 0.5)), ("coins", "astronaut", (0.5, 0.45))],
)  # fmt: skip
def test_a_banked_picture_pasted_small_onto_a_large_png_or_webp_is_blocked(
    inspector: Inspector, fmt: str, background: str, picture: str, at: tuple[float, float]
) -> None:
    """a89 F1: a PNG is decoded at full size, not reduced as a JPEG is, and its boxes, found
    at detection scale, were cut from the full-size frame unscaled: the wrong part of it (the
    coffee cup at 35% went through on all six busy photos; PNG pastes 50 of 130 blocked, JPEG
    111 of 270)."""
    data, _ = pasted(background, picture, 0.3, at, (1080, 1080))
    photo = decoded(data)
    verdict = inspector.evaluate(encode(photo, fmt, **({"quality": 90} if fmt == "WEBP" else {})),
                                 CTX)  # fmt: skip
    assert verdict.blocked, verdict.reasons


@pytest.mark.parametrize("background", ["coins", "camera", "motorcycle_left"])
def test_a_banked_picture_in_a_thin_white_border_pasted_small_is_blocked(
    inspector: Inspector, background: str
) -> None:
    data, _ = pasted(background, bordered("astronaut", 0.2), 1.0, (0.6, 0.4))
    verdict = inspector.evaluate(data, CTX)
    assert verdict.blocked, verdict.reasons


@pytest.mark.parametrize(
    "background",
    [
        "hubble_deep_field",
        pytest.param("motorcycle_left", marks=pytest.mark.xfail(
            strict=True,
            reason="issue 18 open: at a tenth of the side the rocket's box is the fourth best; "
            "the motorcycle's thin lines make two better ones (counted as seams since a thin "
            "border hid pictures: a87's pastes at a tenth 20 -> 31 of 48 blocked with them)",
        )),
    ],
)  # fmt: skip
def test_a_banked_picture_at_a_tenth_of_the_side_is_looked_up_though_its_crop_is_small(
    inspector: Inspector, background: str
) -> None:
    """The rocket at a tenth of a 1080 px side is 108 x 72 px: its crop matches as it is (a87
    F4: 38 of 48 such pastes through), where crops under 96 px were not looked up."""
    data, _ = pasted(background, "rocket", 0.1, (0.7, 0.2))
    verdict = inspector.evaluate(data, CTX)
    assert verdict.blocked, verdict.reasons


@pytest.mark.parametrize("picture", ["coffee", "chelsea", "motorcycle_left"])
def test_an_innocent_picture_pasted_small_onto_a_photo_is_not_blocked(
    inspector: Inspector, picture: str
) -> None:
    data, _ = pasted("coins", picture, 0.25, (0.4, 0.3))
    verdict = inspector.evaluate(data, CTX)
    assert not verdict.blocked, verdict.reasons


def story(background: str, picture: str, width_share: float, at: tuple[int, int],
          turn: float = 0.0) -> bytes:  # fmt: skip
    """A 9:16 story over a photo: `picture` at `width_share` of the width, its corners rounded,
    turned `turn` degrees, with a caption above it (as a87 made them)."""
    canvas = ImageOps.fit(skimage_photo(background).convert("RGB"), (1080, 1920))
    inset = skimage_photo(picture).convert("RGB")
    inset = inset.resize((round(1080 * width_share),
                          round(1080 * width_share * inset.height / inset.width)))  # fmt: skip
    mask = Image.new("L", inset.size, 0)
    ImageDraw.Draw(mask).rounded_rectangle(
        (0, 0, inset.width - 1, inset.height - 1), radius=min(inset.size) // 8, fill=255
    )
    if turn:
        inset, mask = (part.rotate(turn, expand=True, resample=Image.Resampling.BICUBIC)
                       for part in (inset, mask))  # fmt: skip
    canvas.paste(inset, at, mask)
    ImageDraw.Draw(canvas).text((at[0], at[1] - 60), "story time", fill=(255, 255, 255),
                                font=ImageFont.load_default(size=48))  # fmt: skip
    return encode(canvas, "JPEG", quality=90)


@pytest.mark.parametrize(
    ("background", "picture", "at"),
    [("camera", "astronaut", (300, 900)), ("coins", "rocket", (400, 700)),
     ("coins", "rocket", (600, 400))],
)  # fmt: skip
def test_a_banked_picture_in_a_story_with_rounded_corners_and_a_caption_is_blocked(
    inspector: Inspector, background: str, picture: str, at: tuple[int, int]
) -> None:
    """a87 F3: a story over a photo, the picture at a quarter of the width, rounded, captioned:
    13 of 16 reached the server before tall frames that are mostly photo were searched."""
    verdict = inspector.evaluate(story(background, picture, 0.25, at), CTX)
    assert verdict.blocked, verdict.reasons


def test_a_banked_picture_turned_a_few_degrees_and_pasted_small_is_blocked(
    inspector: Inspector,
) -> None:
    """a87 F1 (turned 4-8 degrees at 20-40% onto busy photos, 97 of 120 through): found on the
    seam maps turned back by the frame's clearest turn (media.turns; tests/test_turned_insets)."""
    picture = skimage_photo("astronaut").convert("RGB").resize((270, 270))
    turned = picture.rotate(4, expand=True, resample=Image.Resampling.BICUBIC)
    mask = Image.new("L", picture.size, 255).rotate(4, expand=True)
    photo = ImageOps.fit(skimage_photo("coins").convert("RGB"), (1080, 1080))
    photo.paste(turned, (500, 300), mask)
    verdict = inspector.evaluate(encode(photo, "JPEG", quality=90), CTX)
    assert verdict.blocked, verdict.reasons


@pytest.mark.parametrize("background", ["grass", "brick"])
def test_a_banked_picture_pasted_beside_two_others_is_blocked(
    inspector: Inspector, background: str
) -> None:
    """a88 F4: two or three pictures in one frame (three: 11 of 30 blocked in-process). Here the
    banked rocket's box ranks third of three (MAX_INSETS looked up; of 90 frames with three
    pastes on busy photos the banked one was boxed in 59 with two looked up, 77 with three)."""
    canvas = ImageOps.fit(skimage_photo(background).convert("RGB"), (1920, 1080))
    for number, name in enumerate(("chelsea", "hubble_deep_field", "rocket")):
        picture = skimage_photo(name).convert("RGB")
        picture.thumbnail((420, 320))
        canvas.paste(picture, (120 + number * 600, 200 + (number % 2) * 400))
    verdict = inspector.evaluate(encode(canvas, "JPEG", quality=88), CTX)
    assert verdict.blocked, verdict.reasons


@pytest.mark.parametrize("picture", ["rocket", "astronaut"])
def test_a_banked_picture_turned_and_bordered_on_gravel_is_blocked(
    inspector: Inspector, picture: str
) -> None:
    """a89 F3: on a fine texture seams lie everywhere, and a side's run, its gaps bridged, ran
    on past the picture's corners into the stones (a89's pastes on gravel: 3 of 39 blocked).
    Boxes are proposed from the runs' straight stretches as well."""
    inset = ImageOps.expand(skimage_photo(picture).convert("RGB").resize((330, 250)), 6,
                            fill=(255, 255, 255))  # fmt: skip
    mask = Image.new("L", inset.size, 0)
    ImageDraw.Draw(mask).rounded_rectangle((0, 0, inset.width - 1, inset.height - 1), radius=30,
                                           fill=255)  # fmt: skip
    inset = inset.rotate(12, expand=True, resample=Image.Resampling.BICUBIC)
    floor = gravel_floor()
    floor.paste(inset, (500, 200), mask.rotate(12, expand=True))
    verdict = inspector.evaluate(encode(floor, "PNG"), CTX)
    assert verdict.blocked, verdict.reasons


@pytest.mark.parametrize(
    ("picture", "at"), [("rocket", (430, 128)), ("coffee", (430, 128)), ("coffee", (300, 20))]
)
def test_a_picture_on_a_brick_wall_is_boxed_among_the_bricks(
    picture: str, at: tuple[int, int]
) -> None:
    """a89 F5's landscape video (a picture at 30% of a 640x360 frame over a brick wall): ranked
    on its sides less their ends (rounded corners), the bricks outranked the picture."""
    wall = brick_wall((640, 360))
    inset = skimage_photo(picture).convert("RGB")
    inset.thumbnail((108, 108))
    wall.paste(inset, at)
    where = (at[0], at[1], at[0] + inset.width, at[1] + inset.height)
    assert any(overlap(box, where) > 0.7 for box in inset_boxes(wall)), inset_boxes(wall)


def tiled_floor(size: tuple[int, int] = (1440, 1080), tile: int = 120) -> Image.Image:
    """Grey and terracotta floor tiles with grout between them, all of it grainy (as a90 made
    its floors)."""
    floor = Image.new("RGB", size, (90, 90, 90))
    draw = ImageDraw.Draw(floor)
    for y in range(0, size[1], tile):
        for x in range(0, size[0], tile):
            colour = (200, 195, 185) if (x // tile + y // tile) % 2 == 0 else (150, 60, 50)
            draw.rectangle((x + 3, y + 3, x + tile - 4, y + tile - 4), fill=colour)
    grain = np.random.default_rng(90).integers(-18, 18, (size[1], size[0], 1), dtype=np.int16)
    return Image.fromarray(np.clip(np.asarray(floor, np.int16) + grain, 0, 255).astype(np.uint8))


@pytest.mark.parametrize(("picture", "at"), [("rocket", (520, 322)), ("coffee", (802, 263))])
def test_a_picture_on_a_tiled_floor_ranks_over_the_tiles(picture: str, at: tuple[int, int]) -> None:
    """a90 F1: every floor tile is a box with four seamed sides, as the pasted picture is; the
    three looked up were tiles. A box with two or more others of its size apart from it is a
    photo's own pattern and ranks lower."""
    floor = tiled_floor()
    inset = skimage_photo(picture).convert("RGB").resize((360, 240))
    floor.paste(inset, at)
    where = (at[0], at[1], at[0] + 360, at[1] + 240)
    boxes = inset_boxes(decoded(encode(floor, "PNG")))
    assert any(overlap(box, where) > 0.8 for box in boxes), boxes
