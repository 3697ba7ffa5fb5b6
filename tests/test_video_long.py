"""Long videos are sampled less densely, so they are judged within the time budget.

Adversarial pass a57 (F4): a 3-minute 720p clip and a 9.5-minute 320x180 one ran past the 10 s
time budget and were blocked (`timeout`), innocent as they were: the proxy sampled 4 frames a
second of every video. A query now samples densely only up to `video.DENSE_SAMPLES` frames in
all, and a longer video fewer per second, never fewer than vPDQ's one.

Synthetic benign clips only (tests.video_fixtures), small so they encode quickly.
"""

from __future__ import annotations

import pytest

from schoolgate.banks.store import BankStore
from schoolgate.matching.video import VideoMatcher
from schoolgate.media.decode import VideoLimits
from schoolgate.media.video import DENSE_SAMPLES, VideoHasher
from schoolgate.media.video_sources import sparser_interval
from tests.support import video_fixtures as vf
from tests.test_video import bank_video

PROXY = VideoHasher(VideoLimits(), fast=True, variants=True, samples_per_hash=4, stills=True)


@pytest.mark.parametrize(
    ("duration_s", "interval"),
    [(None, 0.25), (8.0, 0.25), (90.0, 0.25), (100.0, 1 / 3), (180.0, 0.5), (361.0, 1.0),
     (9.5 * 60, 1.0)],
)  # fmt: skip
def test_the_query_samples_fewer_frames_a_second_of_a_longer_video(
    duration_s: float | None, interval: float
) -> None:
    assert sparser_interval(0.25, 1.0, duration_s, DENSE_SAMPLES) == pytest.approx(interval)
    assert sparser_interval(0.25, 1.0, duration_s, None) == 0.25  # banking: as asked


@pytest.fixture(scope="module")
def long_clip() -> bytes:
    """Four minutes at 96x54, 5 frames a second: long enough to be sampled once a second."""
    return vf.encode(vf.scene_frames(seed=31, seconds=240, fps=5, size=(96, 54)).frames, 5)


def test_a_long_video_is_sampled_once_a_second_and_still_matches(
    tmp_path_factory: pytest.TempPathFactory, long_clip: bytes
) -> None:
    query = PROXY.hash(long_clip)
    assert query.refused is None
    slots = {feature.slot for feature in query.features}
    assert len(slots) == 240
    assert len({feature.frame for feature in query.features}) == 240  # one sample per slot
    store = BankStore(tmp_path_factory.mktemp("long") / "banks.sqlite")
    bank_video(store, "incident-1", "long", VideoHasher(VideoLimits()).hash(long_clip))
    try:
        found = VideoMatcher.from_store(store).match(query.features)
    finally:
        store.close()
    assert [(m.bank, m.value) for m in found] == [("incident-1", "long")], found
    assert found[0].query_match_percent >= 95


def test_a_short_video_is_still_sampled_four_times_a_second() -> None:
    short = vf.encode(vf.scene_frames(seed=32, seconds=6, fps=8, size=(96, 54)).frames, 8)
    query = PROXY.hash(short)
    assert len({feature.frame for feature in query.features}) == 6 * 4
