"""A banked chat screenshot over a photo wallpaper banks its picture, not the wallpaper.

Over a photo wallpaper the whole screen is photographic and no picture region stands out, so
`hashes add` banked the screen whole: the same phone's other chats, with other photos in their
bubbles, matched it on the wallpaper (adversarial pass a61, F1: 15 of 114 innocent chats
blocked). Now the picture in its plain frame is banked on its own, and every view around it is
judged on it: a match must show that picture. Banked with `hashes add`, judged as the proxy
judges; benign pictures only.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image, ImageDraw, ImageFilter, ImageOps

from schoolgate.banks.media import describe_banked
from schoolgate.config import parse_config
from schoolgate.media.features import (
    FRAMED_JUDGE_VIEW,
    band_judge_of,
    framed_judge_name,
    framed_judge_of,
)
from schoolgate.media.signals import bank_feature_views, item_signals
from tests.conftest import encode
from tests.support.imagery import skimage_photo
from tests.test_framed_pictures import wallpaper_chat
from tests.test_robust_precision import CTX, Bank, _bank
from tests.test_small_pictures import chat

# (photo, wallpaper, picture width, layout seed, dark theme): one pupil's phone each.
BANKED = (("astronaut", "grass", 480, 1, False), ("chelsea", "gravel", 560, 2, True),
          ("coffee", "brick", 500, 3, False))  # fmt: skip
OTHERS = ("camera", "coins", "motorcycle_left", "hubble_deep_field", "moon", "retina")


def _banked_chat(number: int, photo: str | None = None, seed: int | None = None) -> Image.Image:
    """The banked chat `number`, or the same phone's chat with another photo and layout."""
    name, wallpaper, width, banked_seed, dark = BANKED[number]
    screen, _ = wallpaper_chat(skimage_photo(photo or name), width, wallpaper,
                               seed=banked_seed if seed is None else seed, dark=dark)  # fmt: skip
    return screen


@pytest.fixture(scope="module")
def chats(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Bank]:
    items = {f"chat-{n}.png": encode(_banked_chat(n), "PNG") for n in range(len(BANKED))}
    with _bank(tmp_path_factory.mktemp("framed-banking"), items) as bank:
        yield bank


@pytest.mark.parametrize("number", range(len(BANKED)))
@pytest.mark.parametrize("other", OTHERS)
def test_the_same_phones_other_chats_are_not_blocked(chats: Bank, number: int, other: str) -> None:
    """Another photo over the same wallpaper: in the banked chat's own layout (a45 F1's case)
    and in another. With the old banking 5 of these 18 cases blocked a screen (the camera, the
    moon and the retina over the grass wallpaper, the motorcycle over gravel and brick)."""
    for seed in (BANKED[number][3], 20 + number):
        screen = _banked_chat(number, other, seed)
        assert not chats.blocked(screen, "PNG"), seed
        assert not chats.blocked(screen, "JPEG"), seed


@pytest.mark.parametrize("number", range(len(BANKED)))
def test_the_banked_chat_and_its_picture_are_still_blocked(chats: Bank, number: int) -> None:
    """The banked screen recompressed and at half size, and its picture on its own and in a
    chat of another app (the old banking missed the picture alone, 3 of 3)."""
    screen = _banked_chat(number)
    photo = skimage_photo(BANKED[number][0]).convert("RGB")
    assert chats.inspector.evaluate(encode(screen, "JPEG", quality=70), CTX).blocked
    assert chats.blocked(screen.resize((540, 1170), Image.Resampling.LANCZOS), "JPEG")
    assert chats.blocked(photo, "JPEG")
    assert chats.blocked(chat(photo, 420, seed=number), "PNG")


@pytest.mark.parametrize("number", range(len(BANKED)))
def test_the_banked_chats_picture_flipped_is_blocked(chats: Bank, number: int) -> None:
    """The picture mirrored on its own and in another chat: the whole screen's mirror was
    banked, not the picture's (a62 F3: 0 of 40 were found)."""
    flipped = ImageOps.mirror(skimage_photo(BANKED[number][0]).convert("RGB"))
    assert chats.blocked(flipped, "JPEG")
    assert chats.blocked(chat(flipped, 420, seed=number), "PNG")


def test_a_plain_interface_chats_picture_flipped_is_blocked(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """The same for a picture region found by its texture on a plain interface."""
    photo = skimage_photo("coffee").convert("RGB")
    items = {"plain-chat.png": encode(chat(photo, 560, seed=3), "PNG")}
    with _bank(tmp_path_factory.mktemp("plain-chat"), items) as bank:
        assert bank.blocked(ImageOps.mirror(photo), "JPEG")
        assert not bank.blocked(ImageOps.mirror(skimage_photo("camera").convert("RGB")), "JPEG")


def test_a_chats_picture_region_that_holds_its_wallpaper_gives_way_to_its_framed_picture() -> None:
    """On a 720 px screen whose wallpaper is partly plain, the picture region found by texture
    was the wallpaper around the bubble (a62 F1: its wallpaper alone and text-only chats over
    it were blocked). The framed picture inside that region is banked instead."""
    screen, (left, top, right, bottom) = wallpaper_chat(skimage_photo("coffee"), 480, "rocket", 5)
    screen = screen.resize((720, 1560), Image.Resampling.LANCZOS)
    views = dict(bank_feature_views(screen))
    picture = views["picture"]
    assert picture.width / picture.height == pytest.approx((right - left) / (bottom - top), rel=0.1)


def test_the_picture_is_banked_and_judges_every_view_around_it() -> None:
    views = dict(bank_feature_views(_banked_chat(0)))
    judges = [found for found in map(framed_judge_of, views) if found is not None]
    assert "picture" in views
    assert {view for view, _ in judges} == {"whole", "mirror"} | set(views) & {"content"}
    for view, (left, top, right, bottom) in judges:  # the picture's box, in its view's frame
        assert 0 <= left < right <= views[view].width
        assert 0 <= top < bottom <= views[view].height


def test_hashes_add_says_it_banked_the_framed_picture() -> None:
    item = item_signals(encode(_banked_chat(1), "PNG"), parse_config("", "t.yaml"), features=True)
    (said,) = describe_banked(item)
    assert said.startswith("picture over a busy wallpaper")
    assert "the background around it is not evidence" in said


def test_a_framed_print_in_a_camera_photo_is_not_banked_on_its_own() -> None:
    """A print framed on a brick wall behind the subject is background: banked on its own it
    would block other photos of that room. Only a screen-shaped item (taller than 1.6:1) banks
    its framed picture."""
    wall = skimage_photo("brick").convert("RGB").resize((1200, 900), Image.Resampling.BICUBIC)
    draw = ImageDraw.Draw(wall)
    draw.rectangle((390, 190, 810, 610), fill=(250, 250, 250))
    wall.paste(skimage_photo("coffee").convert("RGB").resize((400, 400)), (400, 200))
    names = [name for name, _ in bank_feature_views(wall)]
    assert not any(name.startswith(FRAMED_JUDGE_VIEW) for name in names)
    tall = wall.crop((300, 0, 900, 900)).resize((600, 1300), Image.Resampling.BICUBIC)
    assert any(name.startswith(FRAMED_JUDGE_VIEW) for name, _ in bank_feature_views(tall))
    # An upright video's frame is shaped as a screen is, but is a camera's more often.
    names = [name for name, _ in bank_feature_views(tall, still=False)]
    assert not any(name.startswith(FRAMED_JUDGE_VIEW) or "picture" in name for name in names)


def test_a_framed_judges_name_says_its_view_and_box() -> None:
    name = framed_judge_name("mirror", (12, 181, 118, 291))
    assert name == "framed-grid(mirror;12,181,118,291)"
    assert framed_judge_of(name) == ("mirror", (12, 181, 118, 291))
    assert framed_judge_of(f"frame12:{name}") is None  # a key frame's prefix is split off first
    assert framed_judge_of("photo-grid") is None


def test_hashes_add_warns_that_a_screen_judged_whole_holds_its_wallpaper() -> None:
    """Where no frame is found, a screenshot is banked whole, wallpaper and all (a62: the same
    phone's text-only chats and its wallpaper alone were blocked): `hashes add` says so."""
    config = parse_config("", "t.yaml")
    wall = skimage_photo("grass").convert("RGB").resize((540, 1170), Image.Resampling.BICUBIC)
    said = describe_banked(item_signals(encode(wall, "PNG"), config, features=True))
    assert said[0].startswith("judged as a whole picture")
    assert any("a photo wallpaper too" in line for line in said)
    photo = skimage_photo("chelsea").convert("RGB")
    said = describe_banked(item_signals(encode(photo, "PNG"), config, features=True))
    assert not any("wallpaper" in line for line in said)


# A dark chat over a dark wallpaper: the picture's bubble is the screen's content box (inside
# plain bands), and the region found by texture holds the picture and wallpaper beside it.
DARK_BANKED = ("chelsea", "astronaut", "coffee")
DARK_OTHERS = ("camera", "coins", "motorcycle_left", "rocket")


def _dark_chat(photo: str) -> Image.Image:
    screen, _ = wallpaper_chat(skimage_photo(photo), 600, "moon", seed=1, dark=True)
    return screen


@pytest.fixture(scope="module")
def dark_chats(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Bank]:
    items = {f"dark-{name}.png": encode(_dark_chat(name), "PNG") for name in DARK_BANKED}
    with _bank(tmp_path_factory.mktemp("dark-chats"), items) as bank:
        yield bank


@pytest.mark.parametrize("name", DARK_BANKED)
def test_a_screens_picture_inside_plain_bands_is_found_mirrored(
    dark_chats: Bank, name: str
) -> None:
    """The picture mirrored on its own and in another chat (a63 F3: a dark chat banked whole,
    whose picture was its content box, 0 of 5). The old banking mirrored the whole screen,
    and a picture region of picture and wallpaper: 0 of 6 here."""
    photo = skimage_photo(name).convert("RGB")
    flipped = ImageOps.mirror(photo)
    assert dark_chats.blocked(photo, "JPEG")
    assert dark_chats.blocked(flipped, "JPEG")
    assert dark_chats.blocked(chat(flipped, 420, seed=1), "PNG")
    views = [view for view, _ in bank_feature_views(_dark_chat(name))]
    assert "mirror-picture" in views
    assert "picture" not in views  # the content view is that picture
    item = item_signals(encode(_dark_chat(name), "PNG"), parse_config("", "t.yaml"), features=True)
    assert describe_banked(item)[0].startswith("picture region")


@pytest.mark.parametrize("other", DARK_OTHERS)
def test_the_dark_chats_other_pictures_are_not_blocked(dark_chats: Bank, other: str) -> None:
    """Other photos in the banked chats' layout, over the same wallpaper, plain and mirrored."""
    photo = skimage_photo(other).convert("RGB")
    assert not dark_chats.blocked(_dark_chat(other), "PNG")
    assert not dark_chats.blocked(_dark_chat(other), "JPEG")
    assert not dark_chats.blocked(ImageOps.mirror(photo), "JPEG")
    assert not dark_chats.blocked(chat(ImageOps.mirror(photo), 420, seed=1), "PNG")


def test_a_pdq_match_of_a_mirrored_copy_is_confirmed_mirrored(tmp_path: Path) -> None:
    """Without mirrored feature sets (`bank_mirrored: false`, or an item banked before its
    picture's mirror was), a mirrored copy is found by PDQ's dihedral lookup only. Beyond
    `pdq_confirm_bits` the item's features must confirm it, and ORB's keypoints do not mirror:
    every such match was refuted (a63 F3, 0 of 5). The query's mirror is now tried too."""
    config_path = tmp_path / "unmirrored.yaml"
    config_path.write_text(
        "classifier:\n  models: []\nbanks:\n  robust:\n    bank_mirrored: false\n"
    )
    items = {f"dark-{name}.png": encode(_dark_chat(name), "PNG") for name in DARK_BANKED}
    with _bank(tmp_path, items, config_path) as bank:
        for name in DARK_BANKED:
            flipped = ImageOps.mirror(skimage_photo(name).convert("RGB"))
            verdict = bank.inspector.evaluate(encode(flipped, "JPEG", quality=90), CTX)
            assert verdict.blocked, name
            assert verdict.matches[0].distance > bank.inspector.config.banks.robust.pdq_confirm_bits
        for other in DARK_OTHERS:
            assert not bank.blocked(ImageOps.mirror(skimage_photo(other).convert("RGB")), "JPEG")


def _unframed_chat(photo: str) -> Image.Image:
    """A screen over a photo wallpaper with a picture blended into it, no frame and no straight
    edge (media.pasted_pictures finds a picture pasted with straight edges): no picture stands
    out, and the screen is banked whole."""
    screen = skimage_photo("grass").convert("RGB").resize((1080, 2340), Image.Resampling.BICUBIC)
    draw = ImageDraw.Draw(screen)
    draw.rectangle((0, 0, 1080, 200), fill=(7, 94, 84))
    draw.rectangle((0, 2200, 1080, 2340), fill=(7, 94, 84))
    picture = skimage_photo(photo).convert("RGB")
    picture = picture.resize((600, round(picture.height * 600 / picture.width)))
    fade = Image.new("L", picture.size, 0)
    ImageDraw.Draw(fade).rectangle((30, 30, picture.width - 30, picture.height - 30), fill=255)
    screen.paste(picture, (430, 700), fade.filter(ImageFilter.GaussianBlur(12)))
    return screen


def test_a_screen_banked_whole_is_judged_band_by_band(tmp_path: Path) -> None:
    """At 8 x 8 the picture spans a few areas of the whole screen, and another photo in its
    place was blocked on the wallpaper around it (a64 F1: 16 of 30 of the same phone's chats;
    here the old banking blocked coins, astronaut and coffee). Each band of a third of the
    screen is judged too: none may show another photograph. Copies of the screen still match.
    Its content box (the chat area) is judged so too."""
    banked = _unframed_chat("chelsea")
    names = [name for name, _ in bank_feature_views(banked)]
    judged = [band[0] for name in names if (band := band_judge_of(name)) is not None]
    assert sorted(set(judged)) == ["content", "mirror", "whole"]
    assert len(judged) == 15
    with _bank(tmp_path, {"unframed.png": encode(banked, "PNG")}) as bank:
        for other in ("coins", "astronaut", "coffee", "camera", "motorcycle_left"):
            assert not bank.blocked(_unframed_chat(other), "PNG"), other
        assert bank.blocked(banked, "JPEG")
        assert bank.blocked(banked.resize((720, 1560), Image.Resampling.LANCZOS), "JPEG")
        assert bank.blocked(banked.crop((0, 200, 1080, 2200)), "PNG")
