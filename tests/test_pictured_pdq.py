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

import contextlib
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image

from schoolgate.media.hashing import pdq_hash
from tests.support.imagery import encode
from tests.support.screens import chat_screenshot, distinct_pictures
from tests.test_false_colour import EDITS
from tests.test_robust_precision import CTX, Bank, _bank

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
    with _far_matching(tmp_path_factory.mktemp("pictured"), pictures[0], APPS) as bank:
        yield bank


@contextlib.contextmanager
def _far_matching(
    tmp: Path, picture: Image.Image, styles: tuple[tuple[str, str], ...]
) -> Iterator[Bank]:
    """The chat screens of `picture` in `styles` banked, PDQ matches and their confirmation
    reaching 128 bits: the same screen around any other picture is a PDQ match."""
    config = tmp / "pictured.yaml"
    config.write_text(
        "classifier:\n  models: []\nbanks:\n  pdq_max_distance: 128\n"
        "  robust:\n    pdq_confirm_bits: 128\n"
    )
    items = {f"{app}-{theme}.png": encode(chat_screenshot(picture, app, theme, 3), "PNG")
             for app, theme in styles}  # fmt: skip
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


DARK = (("chatty", "dark"), ("snappy", "dark"))


@pytest.fixture(scope="module")
def dark_screens(
    tmp_path_factory: pytest.TempPathFactory, benign_photos: dict[str, Image.Image]
) -> Iterator[Bank]:
    tmp = tmp_path_factory.mktemp("pictured-dark")
    with _far_matching(tmp, benign_photos["astronaut"], DARK) as bank:
        yield bank


@pytest.mark.parametrize(("app", "theme"), DARK)
def test_a_colour_variant_of_the_same_screen_around_another_picture_is_not_blocked(
    dark_screens: Bank, pictures: list[Image.Image], app: str, theme: str
) -> None:
    """a69 K6: refuted in its own colours, the banked screen around another picture was found
    again by the false-colour lookup (twenty variants of the query), and stood: the variant of
    an innocent screen is itself in false colours, and its features aligned with nothing. Such
    a match now stands only where the variant's features verify it."""
    for picture in pictures[1:4]:
        findings = dark_screens.inspector.evaluate(
            encode(chat_screenshot(picture, app, theme, 3), "PNG"), CTX
        ).findings
        assert not findings.matches
        assert any(("channel", 1.0) in m.evidence for m in findings.refuted)  # looked up so


@pytest.mark.parametrize("edit", ["channels BRG", "green inverted", "red and blue swapped"])
def test_the_banked_screen_in_false_colours_is_still_blocked(
    dark_screens: Bank, benign_photos: dict[str, Image.Image], edit: str
) -> None:
    screen = chat_screenshot(benign_photos["astronaut"], "chatty", "dark", 3)
    copy = EDITS[edit](screen)
    verdict = dark_screens.inspector.evaluate(encode(copy, "JPEG", quality=90), CTX)
    assert verdict.blocked
    assert verdict.findings.matches
