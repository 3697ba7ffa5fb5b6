"""A banked video is found by more than one moment of it, not by what it shares with others.

Adversarial pass a57 (F1): a banked clip that opens with a channel's intro card blocked 8 of 9
other clips that open with the same card, even for half a second, because one key frame
matching the robust tier decided. Now a banked video needs two different moments of it in the
upload's key frames, or half of them (matching.key_frames); a banked picture is still found
by one key frame.

Synthetic benign clips (tests.video_edits.panning_frames) and procedural scenes only.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from schoolgate.config import parse_config
from schoolgate.pipeline.engine import InspectionContext, Inspector
from tests.support import video_edits as ve
from tests.support import video_fixtures as vf
from tests.support.imagery import procedural_scene, skimage_photo
from tests.test_cli_scan import schoolgate

os.environ.setdefault("SVT_LOG", "1")

STUDENT = InspectionContext(client_ip="192.0.2.20", app="testapp")
FPS = 15
SIZE = (320, 180)
HASH_ONLY = "banks:\n  reload_interval_s: 0.1\nclassifier: {models: []}\n"


def _card() -> vf.Frame:
    """A channel's intro card: a textured logo, a name and a line of text on a dark ground."""
    card = Image.new("RGB", SIZE, (20, 20, 40))
    card.paste(procedural_scene(903, (110, 110)).convert("RGB"), (24, 35))
    draw = ImageDraw.Draw(card)
    draw.text((150, 70), "@funny_clips_uk", fill=(255, 200, 0))
    draw.text((150, 95), "subscribe for more", fill=(200, 200, 200))
    return np.asarray(card, dtype=np.uint8)


def _animated_card(index: int) -> vf.Frame:
    """The card's logo sliding in and its name growing, a step each frame (footage, not held)."""
    card = Image.new("RGB", SIZE, (40, 10, 30))
    card.paste(procedural_scene(905, (110, 110)).convert("RGB"), (-100 + 6 * index, 35))
    ImageDraw.Draw(card).text((150, 70), "@daily_memes"[: 1 + index // 2], fill=(255, 255, 255))
    return np.asarray(card, dtype=np.uint8)


def _with_intro(content: vf.Clip, seconds: float, animated: bool = False) -> vf.Clip:
    count = round(seconds * FPS)
    intro = tuple(_animated_card(i) for i in range(count)) if animated else (_card(),) * count
    return vf.Clip(intro + content.frames, FPS)


def _bank(tmp_path: Path, name: str, data: bytes) -> None:
    config = tmp_path / "hash-only.yaml"
    config.write_text(HASH_ONLY)
    path = tmp_path / name
    path.write_bytes(data)
    added = schoolgate("hashes", "add", str(path), "--bank", "incident-1", config=config)
    assert added.returncode == 0, added.stderr


@pytest.fixture(scope="module")
def banked_clip() -> vf.Clip:
    return _with_intro(ve.panning_frames(seed=11, seconds=8, fps=FPS, size=SIZE), 1.5)


@pytest.fixture
def inspector(data_dir: Path, tmp_path: Path, banked_clip: vf.Clip) -> Iterator[Inspector]:
    _bank(tmp_path, "incident.mp4", vf.encode(banked_clip.frames, FPS))
    inspector = Inspector.from_config(parse_config(HASH_ONLY, "t.yaml"))
    yield inspector
    inspector.close()


def test_other_clips_opening_with_the_same_animated_intro_are_allowed(
    data_dir: Path, tmp_path: Path
) -> None:
    """An animated intro is footage, not a held picture: what gives it away as shared is that
    the other clip shows it as it is (the hash tier matches those frames, not the clip)."""
    banked = _with_intro(ve.panning_frames(seed=14, seconds=8, fps=FPS, size=SIZE), 2.0, True)
    _bank(tmp_path, "animated.mp4", vf.encode(banked.frames, FPS))
    inspector = Inspector.from_config(parse_config(HASH_ONLY, "t.yaml"))
    try:
        for seed in (26, 27):
            other = ve.panning_frames(seed=seed, seconds=8, fps=FPS, size=SIZE)
            verdict = inspector.evaluate(vf.encode(_with_intro(other, 2.0, True).frames, FPS),
                                         STUDENT)  # fmt: skip
            assert not verdict.blocked, (seed, verdict.reasons)
        copy = ve.captioned()(banked)
        assert inspector.evaluate(vf.encode(copy.frames, FPS), STUDENT).blocked
    finally:
        inspector.close()


@pytest.mark.parametrize("intro_s", [0.5, 1.0, 2.0])
def test_other_clips_opening_with_the_banked_clips_intro_are_allowed(
    inspector: Inspector, intro_s: float
) -> None:
    for seed in (21, 22):
        other = _with_intro(ve.panning_frames(seed=seed, seconds=8, fps=FPS, size=SIZE), intro_s)
        for edit in (lambda clip: clip, ve.captioned()):
            verdict = inspector.evaluate(vf.encode(edit(other).frames, FPS), STUDENT)
            assert not verdict.blocked, (seed, intro_s, verdict.reasons)


def test_copies_of_the_banked_clip_with_or_without_its_intro_are_blocked(
    inspector: Inspector, banked_clip: vf.Clip
) -> None:
    copies = {
        "captioned": ve.captioned()(banked_clip),
        "recorded, captioned": ve.screen_recording()(ve.captioned()(banked_clip)),
        "intro cut, captioned": ve.captioned()(vf.trimmed(2.0, 0)(banked_clip)),
        "a 3 s excerpt, captioned": ve.captioned()(vf.trimmed(4.0, 2.5)(banked_clip)),
        "after 8 s of another clip, captioned": ve.captioned()(
            vf.Clip(ve.panning_frames(seed=23, seconds=8).frames + banked_clip.frames, FPS)
        ),
    }
    for name, copy in copies.items():
        verdict = inspector.evaluate(vf.encode(copy.frames, FPS), STUDENT)
        assert verdict.blocked, (name, verdict.reasons)
        record = verdict.to_dict()["matches"][0]
        assert record["tier"] == "robust", (name, record)
        evidence = record["evidence"]
        # What decided it is on the record: the banked key frame it aligned with, and how
        # many of the upload's key frames and of the video's moments matched.
        assert {"banked_frame", "key_frames_matched", "moments"} <= set(evidence), evidence
        assert evidence["key_frames_matched"] >= 1, (name, evidence)


def test_a_banked_video_of_one_held_picture_is_found_by_half_its_key_frames(
    data_dir: Path, tmp_path: Path
) -> None:
    """Every key frame of a copy of a still-picture video is held still and shows one moment:
    the share of key frames that match decides. Its captioned copy is blocked; another clip
    that shows that picture for a second among other footage is not a copy of it."""
    held = np.asarray(procedural_scene(904, SIZE).convert("RGB"), dtype=np.uint8)
    _bank(tmp_path, "held.mp4", vf.encode([held] * (6 * FPS), FPS))
    inspector = Inspector.from_config(parse_config(HASH_ONLY, "t.yaml"))
    try:
        copy = ve.captioned()(vf.Clip((held,) * (5 * FPS), FPS))
        verdict = inspector.evaluate(vf.encode(copy.frames, FPS), STUDENT)
        assert verdict.blocked, verdict.reasons
        assert verdict.to_dict()["matches"][0]["evidence"]["moments"] == 1
        footage = ve.panning_frames(seed=25, seconds=8, fps=FPS, size=SIZE).frames
        brief = vf.Clip((held,) * FPS + footage, FPS)
        assert not inspector.evaluate(vf.encode(brief.frames, FPS), STUDENT).blocked
    finally:
        inspector.close()


def test_a_banked_picture_is_still_found_by_one_key_frame(data_dir: Path, tmp_path: Path) -> None:
    """A banked photo shown captioned for two seconds of an eight-second clip: one key frame
    shows it, and that decides (the photo is the whole banked item)."""
    photo = skimage_photo("astronaut").convert("RGB")
    _bank(tmp_path, "photo.png", _png(photo))
    content = ve.panning_frames(seed=24, seconds=8, fps=FPS, size=SIZE)
    shown = np.asarray(photo.resize((180, 180)), dtype=np.uint8)
    frames = list(content.frames)
    for index in range(3 * FPS, 5 * FPS):
        frame = np.zeros_like(frames[index])
        frame[:, 70:250] = shown
        frames[index] = frame
    clip = ve.captioned()(vf.Clip(tuple(frames), FPS))
    inspector = Inspector.from_config(parse_config(HASH_ONLY, "t.yaml"))
    try:
        verdict = inspector.evaluate(vf.encode(clip.frames, FPS), STUDENT)
    finally:
        inspector.close()
    assert verdict.blocked, verdict.reasons
    record = verdict.to_dict()["matches"][0]
    assert record["tier"] == "robust", record
    assert "banked_frame" not in record["evidence"], record


def _png(image: Image.Image) -> bytes:
    import io

    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def test_key_frames_say_whether_they_are_held_still() -> None:
    """A card held for 2.2 s, then footage: each key frame on the card is held still, the last
    one too (it is the same as the sample before it), and footage is not."""
    from schoolgate.media.decode import VideoLimits
    from schoolgate.media.video import VideoHasher

    clip = vf.Clip(
        (_card(),) * round(2.2 * FPS) + ve.panning_frames(seed=28, seconds=4, fps=FPS).frames,
        FPS,
    )
    hasher = VideoHasher(VideoLimits(), fast=True, samples_per_hash=4, key_frames=8)
    held = {
        round(k.timestamp): k.held_still
        for k in hasher.hash(vf.encode(clip.frames, FPS)).key_frames
    }
    assert [held[second] for second in (0, 1, 2)] == [True, True, True], held
    assert [held[second] for second in (3, 4, 5)] == [False, False, False], held


def test_a_banked_clips_middle_inside_a_compilation_is_still_blocked(
    inspector: Inspector, banked_clip: vf.Clip
) -> None:
    """a58: four seconds of the banked clip between 15 s of other footage on each side: too
    little of the upload for the hash tier, and the one key frame that lands on it shows a
    banked frame as it is. Copied into the middle, that is an excerpt, not a shared intro."""
    before = ve.panning_frames(seed=29, seconds=15, fps=FPS, size=SIZE).frames
    after = ve.panning_frames(seed=30, seconds=15, fps=FPS, size=SIZE).frames
    excerpt = banked_clip.frames[3 * FPS : 7 * FPS]  # on the banked time grid
    verdict = inspector.evaluate(vf.encode(before + excerpt + after, FPS), STUDENT)
    assert verdict.blocked, verdict.reasons
    assert verdict.to_dict()["matches"][0]["tier"] == "robust"
