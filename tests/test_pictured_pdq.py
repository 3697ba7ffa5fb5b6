"""A PDQ match of a chat screenshot banked with its picture found in it is checked against the
item's features at any distance (adversarial pass a69 F1).

The whole screen's hash is mostly its interface: the banked chat's screen with another picture
of the same tones in the picture's box came within 8 bits (`banks.robust.pdq_confirm_bits`), a
match that stood unchecked, although `hashes add` had told the DSL that what surrounds the
picture is not evidence. Here the match and confirmation distances are raised so far that the
same screen around any other picture is a PDQ match that would stand unchecked: the test shows
the check, not a chance hash. Benign pictures only.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from PIL import Image

from schoolgate.media.hashing import pdq_hash
from tests.support.imagery import encode
from tests.support.screens import chat_screenshot, distinct_pictures
from tests.test_robust_precision import Bank, _bank

APPS = (("chatty", "light"), ("snappy", "light"))


def _distance(a: Image.Image, b: Image.Image) -> int:
    return (int(pdq_hash(a).hex, 16) ^ int(pdq_hash(b).hex, 16)).bit_count()


@pytest.fixture(scope="module")
def pictures() -> list[Image.Image]:
    return distinct_pictures(12)


@pytest.fixture(scope="module")
def screens(
    tmp_path_factory: pytest.TempPathFactory, pictures: list[Image.Image]
) -> Iterator[Bank]:
    tmp = tmp_path_factory.mktemp("pictured")
    config = tmp / "pictured.yaml"
    config.write_text(
        "classifier:\n  models: []\nbanks:\n  pdq_max_distance: 128\n"
        "  robust:\n    pdq_confirm_bits: 128\n"
    )
    items = {f"{app}-{theme}.png": encode(chat_screenshot(pictures[0], app, theme, 3), "PNG")
             for app, theme in APPS}  # fmt: skip
    with _bank(tmp, items, config) as bank:
        yield bank


@pytest.mark.parametrize(("app", "theme"), APPS)
def test_the_same_screen_around_a_picture_of_the_same_tones_is_not_blocked(
    screens: Bank, pictures: list[Image.Image], app: str, theme: str
) -> None:
    banked = chat_screenshot(pictures[0], app, theme, 3)
    for picture in pictures[5:9]:
        other = chat_screenshot(picture, app, theme, 3)
        assert _distance(banked, other) <= 128  # a PDQ match within the confirmation distance
        assert not screens.blocked(other, "PNG")


@pytest.mark.parametrize(("app", "theme"), APPS)
def test_the_banked_screen_and_its_picture_are_still_blocked(
    screens: Bank, pictures: list[Image.Image], app: str, theme: str
) -> None:
    banked = chat_screenshot(pictures[0], app, theme, 3)
    assert screens.blocked(banked, "JPEG")
    assert screens.blocked(banked.resize((360, 780), Image.Resampling.LANCZOS), "JPEG")
    assert screens.blocked(pictures[0], "JPEG")
