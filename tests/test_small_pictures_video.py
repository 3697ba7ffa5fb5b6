"""A banked photo shown small in a screen recording: a GIF of a few chat screens, an MP4 that
scrolls a long chat past the picture. Video frames are hashed at 512 px, where a chat's 300 px
(of 1080) picture is about 65 px, under what a lookup can use; the adversarial pass a59 (F4) got
it through 0 of 4 times as a GIF and 0 of 4 as a recording, while the same frame as a PNG was
blocked. A query's key frames are now kept finer as well (media/video_frames.FINER_FRAME_SIDE),
and their small pictures are cropped from that. Benign pictures only."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from schoolgate.config import parse_config
from schoolgate.media.signals import banking_video_hasher, matching_video_hasher
from schoolgate.media.video_frames import FINER_FRAME_SIDE, PDQ_SIDE
from tests.support.imagery import skimage_photo
from tests.support.video_fixtures import encode as encode_video
from tests.test_robust_precision import CTX, Bank
from tests.test_small_pictures import BANKED, OTHERS, bank, chat

__all__ = ["bank"]  # the banked photos of test_small_pictures, banked with `hashes add`


def gif(screens: list[Image.Image], size: tuple[int, int] = (540, 1170)) -> bytes:
    """The screens as a GIF shown one second each, at `size` (a phone's screen capture)."""
    frames = [screen.resize(size, Image.Resampling.LANCZOS) for screen in screens]
    buffer = io.BytesIO()
    frames[0].save(buffer, "GIF", save_all=True, append_images=frames[1:], duration=1000, loop=0)
    return buffer.getvalue()


def recording(photo: Image.Image, seconds: int = 6, fps: int = 5) -> bytes:
    """An H.264 720 x 1560 screen recording scrolling a 1080 x 5000 chat, with `photo` 300 px
    wide half way down, from top to bottom."""
    long_chat = chat(photo, 300, seed=7, height=5000)
    tops = np.linspace(0, 5000 - 2340, seconds * fps).round().astype(int)
    frames = (
        np.asarray(long_chat.crop((0, top, 1080, top + 2340)).resize((720, 1560)), np.uint8)
        for top in tops
    )
    return encode_video(frames, fps, crf=23)


def screens_around(photo: Image.Image) -> list[Image.Image]:
    """Three chat screens, the middle one showing `photo` 300 px wide."""
    before, after = skimage_photo("grass"), skimage_photo("retina")
    return [chat(before, 300, seed=1), chat(photo, 300, seed=2), chat(after, 300, seed=3)]


def judged(bank: Bank, data: bytes) -> bool:
    return bank.inspector.evaluate(data, CTX).blocked


@pytest.mark.parametrize("name", BANKED)
def test_a_banked_photo_in_a_chat_recorded_as_a_gif_is_blocked(bank: Bank, name: str) -> None:
    assert judged(bank, gif(screens_around(skimage_photo(name))))


@pytest.mark.parametrize("name", OTHERS)
def test_another_photo_in_the_same_gif_recording_is_not_blocked(bank: Bank, name: str) -> None:
    assert not judged(bank, gif(screens_around(skimage_photo(name))))


@pytest.mark.parametrize("name", ["chelsea", "coffee", "camera", "coins"])
def test_a_photo_scrolled_past_in_a_screen_recording_is_judged_as_itself(
    bank: Bank, name: str
) -> None:
    assert judged(bank, recording(skimage_photo(name))) is (name in BANKED)


def test_a_querys_key_frames_are_kept_finer_and_banked_ones_are_not() -> None:
    config = parse_config("classifier: {models: []}\n", "test.yaml")
    screens = [chat(skimage_photo("camera"), 300, seed=seed) for seed in range(3)]
    tall = gif(screens, (1080, 2340))
    query = matching_video_hasher(config, key_frames=4).hash(tall)
    assert query.key_frames
    for frame in query.key_frames:
        assert max(frame.rgb.shape[:2]) == PDQ_SIDE
        assert frame.finer is not None
        assert frame.finer.shape[:2] == (FINER_FRAME_SIDE, round(1080 * FINER_FRAME_SIDE / 2340))
        finer = frame.finer_image
        assert finer is not None
        assert finer().size == (591, 1280)
    banked = banking_video_hasher(config, key_frames=4).hash(tall)
    assert banked.key_frames
    assert all(frame.finer is None for frame in banked.key_frames)
    # A recording no larger than the hashing scale has nothing finer to keep.
    small = matching_video_hasher(config, key_frames=4).hash(gif(screens, (236, 512)))
    assert small.key_frames
    assert all(frame.finer_image is None for frame in small.key_frames)
