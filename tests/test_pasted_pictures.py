"""A banked photo pasted straight onto a chat's photo wallpaper, with no bubble around it.

Adversarial pass a65 banked five such chats: four were "judged as a whole picture", and the same
phone's other chats (another photo, a grey or low-detail one, a drawing or no picture in that
place; the wallpaper alone) were blocked 79 times in 227 on the wallpaper around the picture.
The picture is now found at banking by the straight seams of its four sides
(media/pasted_pictures.py), banked on its own, and judges every view around it, as a picture in
a plain frame does (test_framed_banking.py). Benign pictures only.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageOps

from schoolgate.banks.media import describe_banked
from schoolgate.config import parse_config
from schoolgate.media.features import band_judge_of, framed_judge_of
from schoolgate.media.pasted_pictures import pasted_pictures, seamed_boxes
from schoolgate.media.signals import bank_feature_views, item_signals
from tests.conftest import encode
from tests.support.imagery import skimage_photo
from tests.test_robust_precision import Bank, _bank
from tests.test_small_pictures import chat

WORDS = ("hey are you coming later", "yeah 10 mins", "ok bring the charger", "lol fine")
PLACE = (430, 860)  # where the picture's top left corner is pasted, 600 px wide
WALLPAPERS = ("grass", "coffee", "immunohistochemistry", "gravel", "brick", "hubble_deep_field")


def pasted_chat(photo: Image.Image | None, wallpaper: str | Image.Image, seed: int = 0,
                left: int = PLACE[0], width: int = 600) -> Image.Image:  # fmt: skip
    """A 1080 x 2340 chat over a photo wallpaper (a scikit-image photo's name, or the picture):
    status bar and header, four text bubbles in an order of `seed`, `photo` `width` px wide
    pasted straight onto the wallpaper (no bubble, no frame) at `left` where it is given, and
    the input bar."""
    rng = np.random.default_rng(seed)
    if isinstance(wallpaper, str):
        wallpaper = skimage_photo(wallpaper).resize((1080, 2340), Image.Resampling.BICUBIC)
    screen = wallpaper.copy()
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
        small = photo.convert("RGB").resize((width, round(photo.height * width / photo.width)))
        screen.paste(small, (left, PLACE[1]))
    draw.rectangle((0, 2180, 1080, 2340), fill=(240, 240, 240))
    draw.rounded_rectangle((30, 2210, 900, 2300), 40, fill=(255, 255, 255))
    return screen


def _truth(photo: str) -> tuple[int, int, int, int]:
    picture = skimage_photo(photo)
    return (*PLACE, PLACE[0] + 600, PLACE[1] + round(picture.height * 600 / picture.width))


PHOTOS = (
    "astronaut",
    "chelsea",
    "coins",
    "camera",
    "motorcycle_left",
    "retina",
    "coffee",
    "rocket",
)


def test_a_picture_pasted_on_a_photo_wallpaper_is_found_by_its_seams() -> None:
    """Eight photos pasted on four textured wallpapers (31 screens): found where its edge
    stands out from the wallpaper along most of each side (measured: 20 of 31; and one box
    whose top is the edge of a text bubble above the rocket). Not found: where the rocket's
    plain sky meets a texture (the texture's own steps beside the seam are as large as the
    seam's); on a brick wallpaper (0 of 8), or a dark photo on a night sky (2 of 8 on the
    Hubble deep field): those screens are still banked whole."""
    found, wrong = 0, []
    for wallpaper in ("grass", "coffee", "immunohistochemistry", "gravel"):
        for photo in PHOTOS:
            if photo == wallpaper:
                continue
            boxes = seamed_boxes(pasted_chat(skimage_photo(photo), wallpaper), 96)
            if boxes and all(
                abs(a - b) <= 12 for a, b in zip(boxes[0], _truth(photo), strict=True)
            ):
                found += 1
            elif boxes:
                wrong.append((photo, wallpaper, boxes[0]))
    assert found >= 19, found
    assert len(wrong) <= 1, wrong


@pytest.mark.parametrize("wallpaper", WALLPAPERS)
def test_no_picture_is_found_in_a_wallpaper_alone_or_between_text_bubbles(wallpaper: str) -> None:
    """A text bubble's edges are straight too, but a side put together from two bubbles' edges
    leaves long stretches with no seam; a brick's mortar is straight all round, but a brick is
    narrower than a chat's picture."""
    plain = skimage_photo(wallpaper).resize((1080, 2340), Image.Resampling.BICUBIC)
    assert pasted_pictures(plain, 96) == []
    assert pasted_pictures(pasted_chat(None, wallpaper), 96) == []


def test_a_pasted_picture_is_banked_and_judges_every_view_around_it() -> None:
    """The picture is banked on its own and mirrored, the whole screen and its mirror carry its
    grid (a match must show it), and the screen is no longer banked whole (no band judges)."""
    screen = pasted_chat(skimage_photo("astronaut"), "coffee")
    names = [name for name, _ in bank_feature_views(screen)]
    assert {"picture", "mirror-picture"} <= set(names)
    judged = {framed[0] for name in names if (framed := framed_judge_of(name)) is not None}
    assert {"whole", "mirror"} <= judged
    assert not any(band_judge_of(name) for name in names)
    said = describe_banked(item_signals(encode(screen, "PNG"), parse_config("", "t.yaml"),
                                        features=True))  # fmt: skip
    assert said[0].startswith("picture over a busy wallpaper"), said[0]


BANKED = (("astronaut", "coffee"), ("motorcycle_left", "immunohistochemistry"),
          ("retina", "coffee"))  # fmt: skip
OTHERS = ("camera", "coins", "moon", "clock", "page")  # moon and page: low-detail, grey


@pytest.fixture(scope="module")
def pasted(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Bank]:
    items = {f"pasted-{photo}.png": encode(pasted_chat(skimage_photo(photo), wallpaper), "PNG")
             for photo, wallpaper in BANKED}  # fmt: skip
    with _bank(tmp_path_factory.mktemp("pasted"), items) as bank:
        yield bank


@pytest.mark.parametrize(("photo", "wallpaper"), BANKED)
def test_the_same_phones_other_chats_are_not_blocked(
    pasted: Bank, photo: str, wallpaper: str
) -> None:
    """Another photo (a grey or plain one too) in the banked picture's place, a text-only chat
    and the wallpaper alone (a65 F1, F2: blocked before on the wallpaper around the picture)."""
    for other in OTHERS:
        screen = pasted_chat(skimage_photo(other), wallpaper, seed=1)
        assert not pasted.blocked(screen, "PNG"), other
        assert not pasted.blocked(screen, "JPEG"), other
    assert not pasted.blocked(pasted_chat(None, wallpaper, seed=2), "PNG")
    alone = skimage_photo(wallpaper).resize((1080, 2340), Image.Resampling.BICUBIC)
    assert not pasted.blocked(alone, "PNG")


@pytest.mark.parametrize(("photo", "wallpaper"), BANKED)
def test_the_banked_chat_and_its_picture_are_still_blocked(
    pasted: Bank, photo: str, wallpaper: str
) -> None:
    screen = pasted_chat(skimage_photo(photo), wallpaper)
    assert pasted.blocked(screen, "JPEG")
    assert pasted.blocked(screen.resize((720, 1560), Image.Resampling.LANCZOS), "JPEG")
    assert pasted.blocked(screen.crop((0, 240, 1080, 2180)), "PNG")  # bars cropped off
    # The picture alone: cropped from the screen, the original, mirrored, in another app.
    assert pasted.blocked(screen.crop(_truth(photo)), "PNG")
    picture = skimage_photo(photo)
    assert pasted.blocked(picture, "JPEG")
    assert pasted.blocked(ImageOps.mirror(picture), "JPEG")
    assert pasted.blocked(chat(picture, 420, seed=1), "PNG")


def _pasted_at(photo: str, wallpaper: str, left: int, top: int, width: int) -> Image.Image:
    picture = skimage_photo(photo)
    screen = pasted_chat(None, wallpaper, seed=3)
    screen.paste(
        picture.resize((width, round(picture.height * width / picture.width))), (left, top)
    )
    return screen


def test_a_banked_picture_pasted_into_other_wallpaper_chats_is_blocked(pasted: Bank) -> None:
    """The banked picture pasted straight into chats over other wallpapers, left and right, 600
    and 420 px wide, and in its own chat moved down or shrunk (a66 F2: 1 of 18 and 0 of 12
    before, when only banking looked for pasted pictures): a query screen's pasted pictures are
    looked up too, where its edge stands out (measured: 25 of 36, and 10 of 12)."""
    others = {"coffee": ("grass", "gravel", "immunohistochemistry"),
              "immunohistochemistry": ("grass", "gravel", "coffee")}  # fmt: skip
    blocked = 0
    for photo, wallpaper in BANKED:
        for other in others[wallpaper]:
            for left, width in ((60, 600), (430, 600), (60, 420), (430, 420)):
                blocked += pasted.blocked(_pasted_at(photo, other, left, 860, width), "PNG")
    assert blocked >= 22, blocked
    moved = sum(
        pasted.blocked(_pasted_at(photo, wallpaper, left, top, width), "PNG")
        for photo, wallpaper in BANKED
        for left, top, width in (
            (430, 1060, 600),
            (430, 1160, 600),
            (490, 860, 480),
            (430, 860, 540),
        )
    )
    assert moved >= 9, moved
