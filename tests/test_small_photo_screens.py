"""A chat screenshot whose photo is small (a few of the 8x8 areas the content check compares):
at that scale the photo shares every area with the interface around it, so another screenshot
of the same thread with another photo agreed with the banked one, and its whole-screen PDQ hash
(20-26 bits away) was confirmed by those features (adversarial pass a45 F1: 7 of 240 such
screenshots blocked). `hashes add` now banks the photo's own grid; a match of the screen must
agree there too. Banked and judged as the proxy does; benign pictures only."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from PIL import Image, ImageDraw, ImageFont

from schoolgate.media.features import extract_features, photo_judge
from tests.support.imagery import EDITS, encode, skimage_photo
from tests.test_robust_precision import CTX, Bank, _bank


def thread(photo: Image.Image) -> Image.Image:
    """One dark chat thread with the keyboard open: status bar, header, three bubbles, a 220x170
    photo, the input bar and the keys (a45's: the photo is 5 of the 64 areas)."""
    text, bar, width, height = (240, 240, 240), (30, 30, 30), 540, 1170
    screen = Image.new("RGB", (width, height), (17, 17, 17))
    draw = ImageDraw.Draw(screen)
    font = ImageFont.load_default(size=22)
    draw.text((20, 12), "21:47", fill=text, font=font)
    draw.text((430, 12), "5G 87%", fill=text, font=font)
    draw.rectangle((0, 45, width, 120), fill=bar)
    draw.ellipse((20, 55, 75, 110), fill=(255, 200, 0))
    draw.text((90, 62), "jaydenxx_09", fill=text, font=ImageFont.load_default(size=26))
    for number, words in enumerate(["are you coming", "yes after tea", "bring the ball"]):
        x, y = (30 if number % 2 else 200), 140 + 70 * number
        colour = (60, 60, 200) if number % 2 else (50, 50, 50)
        draw.rounded_rectangle((x, y, x + 310, y + 52), 22, fill=colour)
        draw.text((x + 18, y + 13), words, fill=(255, 255, 255), font=font)
    screen.paste(photo.convert("RGB").resize((220, 170)), (width - 250, 360))
    top = height - 300
    draw.rectangle((0, top - 70, width, top), fill=bar)
    draw.text((40, top - 50), "Message...", fill=(140, 140, 140), font=font)
    draw.rectangle((0, top, width, height), fill=(44, 44, 46))
    keys = ImageFont.load_default(size=20)
    for row, letters in enumerate(["qwertyuiop", "asdfghjkl", "zxcvbnm"]):
        for column, letter in enumerate(letters):
            x, y = 8 + row * 20 + column * 52, top + 14 + row * 68
            draw.rounded_rectangle((x, y, x + 44, y + 56), 6, fill=(90, 90, 94))
            draw.text((x + 15, y + 14), letter, fill=(255, 255, 255), font=keys)
    return screen


@pytest.fixture(scope="module")
def bank(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Bank]:
    banked = thread(skimage_photo("chelsea"))
    assert photo_judge(extract_features(banked)) is not None  # a small photo, as a45's
    with _bank(tmp_path_factory.mktemp("small-photo"), {"shot.png": encode(banked, "PNG")}) as b:
        yield b


# Whole screens 16 to 28 PDQ bits from the banked one (coffee, 58 bits, is matched by nothing)
@pytest.mark.parametrize("other", ["coins", "moon", "text", "brick", "grass", "gravel", "coffee"])
def test_the_same_thread_with_another_small_photo_is_not_blocked(bank: Bank, other: str) -> None:
    assert not bank.blocked(thread(skimage_photo(other)), "PNG")
    assert not bank.blocked(thread(skimage_photo(other)), "JPEG")


@pytest.mark.parametrize("edit", ["jpeg_q30", "crop_5", "rotate_4", "downscale_320", "mirror"])
def test_the_banked_screenshot_edited_is_still_blocked(bank: Bank, edit: str) -> None:
    data = EDITS[edit](thread(skimage_photo("chelsea")), 3)
    assert bank.inspector.evaluate(data, CTX).blocked, edit


def test_hashes_add_says_the_small_photo_is_compared(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    import contextlib
    import io

    from schoolgate.cli import app as cli

    folder = tmp_path_factory.mktemp("say")
    (folder / "shot.png").write_bytes(encode(thread(skimage_photo("chelsea")), "PNG"))
    (folder / "c.yaml").write_text("classifier:\n  models: []\n")
    said = io.StringIO()
    with pytest.MonkeyPatch.context() as patch, contextlib.redirect_stdout(said):
        patch.setenv("SCHOOLGATE_DATA_DIR", str(folder))
        assert cli.main(["hashes", "add", str(folder / "shot.png"), "--bank", "b",
                         "--config", str(folder / "c.yaml")]) == 0  # fmt: skip
    assert (
        "its small photo (5 of 64 areas) is banked on its own as well, and compared at its own "
        "scale" in said.getvalue()
    )
