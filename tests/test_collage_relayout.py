"""Collages re-laid (issue 18, adversarial pass a52 F2 and F2b, goal "get a banked picture
through"): a banked 2x2 grid re-laid as a stack of its four pictures went through, with or
without lines between them, and a strip of four banked with 1 px lines was banked as three
pictures, so every re-layout of it went through. Lines too thin for the working frame are now
looked for at the picture's own scale, and a query laid out as pictures is also looked at in
pieces, each with a keypoint budget of its own. Two of four pictures are still another picture.
Banked with `schoolgate hashes add`, judged as the proxy judges."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image, ImageDraw, ImageOps

from schoolgate.media.decode import MediaLimits
from schoolgate.media.signals import decode_for_analysis, query_pieces
from tests.support.imagery import encode, skimage_photo
from tests.test_collage_panels import _photo, grid_of_four, meme, panels, strip_of
from tests.test_robust_precision import _bank

NAMES = ("astronaut", "coffee", "chelsea", "motorcycle_left")


def test_a_strip_of_four_with_one_pixel_lines_is_four_pictures() -> None:
    # 1,603 px wide: a 1 px line is a third of a pixel in the 512 px working frame.
    assert panels(strip_of(NAMES, 1)) == 4
    assert panels(strip_of(NAMES, 1, across=False)) == 4


@pytest.mark.parametrize("gutter", [0, 1])
def test_a_grid_relaid_as_a_stack_is_blocked_and_two_of_its_pictures_are_not(
    tmp_path: Path, gutter: int
) -> None:
    """a52 F2: each picture of a stack of four is a quarter of the frame, and a quarter of the
    query's keypoints fell on it: the whole view found two of the four."""
    with _bank(tmp_path, {"grid.png": encode(grid_of_four(NAMES, 1), "PNG")}) as bank:
        assert bank.blocked(strip_of(NAMES, gutter, across=False), "JPEG")
        assert bank.blocked(strip_of(NAMES[::-1], gutter, across=False), "JPEG")
        assert not bank.blocked(strip_of((NAMES[0], NAMES[3]), gutter, across=False), "JPEG")
        assert not bank.blocked(strip_of((NAMES[1], NAMES[2]), gutter), "JPEG")


@pytest.mark.parametrize("banked_as", ["PNG", "JPEG"])
def test_a_strip_banked_with_thin_lines_is_blocked_re_laid_as_a_grid(
    tmp_path: Path, banked_as: str
) -> None:
    """a52 F2b: banked as three pictures (two of them one), its pictures apart never showed
    three of the three. a53 F2: a JPEG this long is decoded at half scale for analysis, where
    its 1 px lines blur away, and it was banked as two pictures."""
    strip = encode(strip_of(NAMES, 1), banked_as)
    with _bank(tmp_path, {f"strip.{banked_as.lower()}": strip}) as bank:
        assert bank.blocked(grid_of_four(NAMES[::-1], 1), "JPEG")
        assert bank.blocked(strip_of(NAMES, 1, across=False), "JPEG")
        assert not bank.blocked(grid_of_four((NAMES[0], "camera", NAMES[2], "rocket"), 1))


def test_only_a_query_laid_out_as_pictures_is_looked_at_in_pieces() -> None:
    assert query_pieces(_photo("astronaut")) == []
    # one picture of a banked collage found (a50 N3: a pair swapped with no line between):
    # its halves and quarters, not every window
    assert len(query_pieces(_photo("astronaut"), collage_found=True)) == 6
    assert query_pieces(grid_of_four(NAMES, 24)) == []  # its gutters split it into views
    assert query_pieces(strip_of(NAMES, 0, across=False))
    assert query_pieces(grid_of_four(NAMES, 1))
    # every piece lies inside the picture: none is padded out past its edges
    for piece in query_pieces(strip_of(NAMES[:3], 0)):
        assert piece.width <= 3 * 400
        assert piece.height <= 400
    # a panorama is looked at in a bounded number of windows, however long
    assert len(query_pieces(Image.new("RGB", (12_000, 300), "grey"))) <= 7


def _lined(name: str, across: bool) -> Image.Image:
    """A photo with a 2 px black line drawn through its middle (a pole, a horizon, a border)."""
    photo = ImageOps.fit(skimage_photo(name), (640, 480))
    draw = ImageDraw.Draw(photo)
    draw.rectangle((0, 239, 640, 240) if across else (319, 0, 320, 480), fill="black")
    return photo


@pytest.mark.parametrize(("name", "across"), [("rocket", True), ("coins", False),
                                               ("immunohistochemistry", True)])  # fmt: skip
def test_a_crop_of_a_photo_split_at_a_drawn_line_is_blocked(
    tmp_path: Path, name: str, across: bool
) -> None:
    """a52 F6: a photo with a thin line drawn through it is banked as two pictures, and a crop
    that kept one part and a fifth of the other showed too little of the other to judge by
    its cells. The keypoints of that strip align where they sat: both parts are shown."""
    lined = _lined(name, across)
    assert panels(lined) >= 2
    with _bank(tmp_path, {"lined.png": encode(lined, "PNG")}) as bank:
        for keep in (
            ((0, 0, 640, 288), (0, 192, 640, 480))
            if across
            else ((0, 0, 384, 480), (256, 0, 640, 480))
        ):
            assert bank.blocked(lined.crop(keep), "JPEG"), keep


def test_one_picture_of_a_meme_with_its_edge_is_not_blocked(tmp_path: Path) -> None:
    """What keeps a crop of one part apart from one picture of a meme shared alone: a crop
    at the gutter holds no keypoint of the other picture."""
    banked = meme("astronaut", "coffee")
    with _bank(tmp_path, {"meme.png": encode(banked, "PNG")}) as bank:
        assert not bank.blocked(banked.crop((0, 120, 400 + 8, 520)), "JPEG")
        assert not bank.blocked(banked.crop((400 - 8, 120, 800, 520)), "JPEG")


def _long_chat(height: int, picture: Image.Image, at: float) -> Image.Image:
    """A scrolling chat screenshot 1,080 px wide: message bubbles, one of them a picture."""
    chat = Image.new("RGB", (1080, height), (240, 240, 240))
    draw = ImageDraw.Draw(chat)
    for top in range(0, height, 180):
        draw.rounded_rectangle((40, top + 20, 700, top + 140), 20, fill=(200, 220, 255))
        draw.text((60, top + 60), f"message {top}", fill="black")
    top = min(height - picture.height, max(0, int(height * at) - picture.height // 2))
    chat.paste(picture, (140, top))
    return chat


@pytest.mark.parametrize("at", [0.1, 0.5, 0.9])
def test_a_banked_picture_in_a_long_scrolling_screenshot_is_blocked(
    tmp_path: Path, at: float
) -> None:
    """a53 F1: in the working frame of a 1080 x 9000 screenshot the picture was a few dozen
    pixels wide; the long picture is now also looked at in tiles of a screen's shape."""
    photo = ImageOps.fit(skimage_photo("astronaut"), (800, 600))
    with _bank(tmp_path, {"photo.png": encode(photo, "PNG")}) as bank:
        assert bank.blocked(_long_chat(9000, photo, at), "JPEG")
        assert not bank.blocked(_long_chat(9000, _photo("coffee"), at), "JPEG")


def test_a_long_jpeg_is_decoded_a_screen_wide() -> None:
    """JPEGs are decoded at a reduced scale, to 512 px on their long side: a 1080 x 9000
    scrolling screenshot was 135 px wide, too little for any tile of it (a53 F1)."""
    long_chat = encode(Image.new("RGB", (1080, 9000), "grey"), "JPEG")
    assert min(decode_for_analysis(long_chat, MediaLimits()).image.size) >= 512
    photo = encode(Image.new("RGB", (4000, 3000), "grey"), "JPEG")
    assert max(decode_for_analysis(photo, MediaLimits()).image.size) < 1024


@pytest.mark.parametrize("height", [3300, 3800, 6000, 20_000])
def test_a_banked_picture_at_a_chat_size_in_a_long_screenshot_is_blocked(
    tmp_path: Path, height: int
) -> None:
    """a54 F1 and F2: at 500 px in a long chat, its PDQ hash was found in a tile's content box
    and refuted by the features of the tiles, where it was too small to align; and at the
    seam between two tiles of a 20,000 px chat it was in neither whole. a55: in a 1080 x 3800
    chat, cropped a little (so no PDQ hash finds it), it went through: tiles began at 4.5
    times longer than wide."""
    photo = ImageOps.fit(skimage_photo("astronaut"), (800, 600))
    small = photo.resize((500, 375)).crop((40, 0, 500, 375))
    with _bank(tmp_path, {"photo.png": encode(photo, "PNG")}) as bank:
        for at in (0.3, 0.5, 0.7):
            assert bank.blocked(_long_chat(height, small, at), "JPEG"), at


DARK_EDGED = {"hubble_deep_field": 450, "retina": 400, "cell": 360}  # name: width, as a54 drew


def _dark_strip(names: list[str]) -> Image.Image:
    """The pictures resized to 400 px tall in a row, 6 px black lines between them."""
    widths = [DARK_EDGED.get(name, 400) for name in names]
    canvas = Image.new("RGB", (sum(widths) + 6 * (len(names) - 1), 400), "black")
    left = 0
    for name, width in zip(names, widths, strict=True):
        canvas.paste(skimage_photo(name).resize((width, 400)), (left, 0))
        left += width + 6
    return canvas


def test_a_strip_of_dark_edged_pictures_between_black_lines_needs_all_three(
    tmp_path: Path,
) -> None:
    """a54 I2: a retina's black corners beside 6 px black lines read as writing on a bar, so
    a strip of three was banked as two pictures; and its content box, with the near-black
    first picture peeled away, was banked as a pair of its own. A copy with one of the three
    replaced was blocked."""
    strip = _dark_strip(list(DARK_EDGED))
    assert panels(strip) == 3
    with _bank(tmp_path, {"strip.jpg": encode(strip, "JPEG", quality=92)}) as bank:
        assert bank.blocked(strip, "JPEG")
        assert bank.blocked(_dark_strip(list(DARK_EDGED)[::-1]), "JPEG")
        for replaced in range(3):
            names = list(DARK_EDGED)
            names[replaced] = "chelsea"
            assert not bank.blocked(_dark_strip(names), "JPEG"), names


def _white_lined(names: tuple[str, ...]) -> Image.Image:
    """Pictures 400 x 300 in a row, 1 px white lines between them (a52's b9)."""
    canvas = Image.new("RGB", (401 * len(names) - 1, 300), "white")
    for index, name in enumerate(names):
        canvas.paste(ImageOps.fit(skimage_photo(name), (400, 300)), (index * 401, 0))
    return canvas


def test_two_pictures_of_a_strip_that_its_content_box_kept_are_not_the_strip(
    tmp_path: Path,
) -> None:
    """a52 b9, replayed with tiles from 2.5 times longer than wide: the strip's content box cut
    into its dark last picture and was banked as a collage of the two pictures it held whole,
    so a tile of another strip showing those two, as they sat, matched it."""
    banked = ("cell", "chelsea", "clock", "retina")
    with _bank(tmp_path, {"strip.png": encode(_white_lined(banked), "PNG")}) as bank:
        assert bank.blocked(_white_lined(banked), "JPEG")
        assert not bank.blocked(_white_lined(("astronaut", "chelsea", "clock")), "JPEG")
