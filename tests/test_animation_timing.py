"""Animations timed as browsers show them (adversarial pass a60 F6). A GIF, WebP or APNG frame of
0 or 10 ms is shown for about 100 ms by Chromium and Firefox, but was sampled by its own delay:
two frames [innocent, banked] at 10 ms each hashed only the first, and a 40-frame chat scroll at
10 ms a frame read as 0.4 s long, so 2 of its frames were looked at. Now such delays count as
100 ms, and a frame that changes the picture between two samples (a loop of two frames, a
flicker) is asked about too, as a video's scene cuts are. Benign pictures only."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from schoolgate.config import parse_config
from schoolgate.media.signals import matching_video_hasher
from tests.support.imagery import skimage_photo
from tests.test_robust_precision import CTX, Bank
from tests.test_small_pictures import OTHERS, bank, chat

__all__ = ["bank"]  # the banked photos of test_small_pictures, banked with `hashes add`

SIZE = (400, 300)


def animated(frames: list[Image.Image], fmt: str, delay_ms: int) -> bytes:
    buffer = io.BytesIO()
    frames = [frame.convert("RGB").resize(SIZE) for frame in frames]
    options = {"disposal": 1} if fmt == "GIF" else {}
    frames[0].save(buffer, fmt, save_all=True, append_images=frames[1:], duration=delay_ms,
                   loop=0, **options)  # fmt: skip
    return buffer.getvalue()


def blocked(bank: Bank, data: bytes) -> bool:
    return bank.inspector.evaluate(data, CTX).blocked


@pytest.mark.parametrize("fmt", ["GIF", "WEBP", "PNG"])
@pytest.mark.parametrize("delay_ms", [0, 10])
def test_a_banked_photo_as_the_second_of_two_quick_frames_is_blocked(
    bank: Bank, fmt: str, delay_ms: int
) -> None:
    frames = [skimage_photo("camera"), skimage_photo("astronaut")]
    assert blocked(bank, animated(frames, fmt, delay_ms))


@pytest.mark.parametrize("delay_ms", [0, 10])
def test_two_quick_frames_of_other_photos_are_not_blocked(bank: Bank, delay_ms: int) -> None:
    for fmt in ("GIF", "WEBP", "PNG"):
        assert not blocked(bank, animated([skimage_photo(name) for name in OTHERS[:2]], fmt,
                                          delay_ms)), fmt  # fmt: skip


def test_a_banked_photo_flickered_among_others_is_blocked(bank: Bank) -> None:
    names = ["camera", "coins", "coffee", "motorcycle_left", "hubble_deep_field"]
    assert blocked(bank, animated([skimage_photo(name) for name in names], "GIF", 10))


def test_a_chat_scrolled_at_ten_ms_a_frame_is_sampled_at_a_hundred(bank: Bank) -> None:
    """40 frames of a chat scrolling past a banked picture, 10 ms each: shown for 4 s."""
    long_chat = chat(skimage_photo("chelsea"), 400, seed=5, height=4000)
    tops = np.linspace(0, 4000 - 2340, 40).round().astype(int)
    frames = [long_chat.crop((0, top, 1080, top + 2340)).resize((540, 1170)) for top in tops]
    buffer = io.BytesIO()
    frames[0].save(buffer, "GIF", save_all=True, append_images=frames[1:], duration=10, loop=0)
    config = parse_config("classifier: {models: []}\n", "test.yaml")
    hashed = matching_video_hasher(config, key_frames=8).hash(buffer.getvalue())
    assert hashed.duration_s == pytest.approx(4.0)
    assert len(hashed.key_frames) >= 4
    assert blocked(bank, buffer.getvalue())
