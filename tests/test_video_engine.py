"""Video through the command line and the inspection engine: bank a clip without keeping it,
block its edited copies, classify sampled frames k-of-n, refuse broken video under the fail
policy. Synthetic benign clips only; the classifier is the generated red-square model."""

from __future__ import annotations

import functools
import hashlib
import io
import json
import os
import re
from collections.abc import Iterator
from pathlib import Path

import av
import numpy as np
import pytest

from schoolgate.banks.model import SignalInput, SignalType
from schoolgate.banks.store import BankStore
from schoolgate.config import Config, parse_config
from schoolgate.media import signals
from schoolgate.media.decode import VideoLimits
from schoolgate.media.sniff import MediaKind, sniff
from schoolgate.media.video import VideoHasher
from schoolgate.pipeline.engine import InspectionContext, Inspector
from tests.support import video_fixtures as vf
from tests.support.onnx_models import PATTERN_INPUT_SIZE, PATTERN_LABEL, make_pattern_model
from tests.test_cli_scan import schoolgate

os.environ.setdefault("SVT_LOG", "1")

STUDENT = InspectionContext(client_ip="192.0.2.20", app="testapp")


@pytest.fixture(scope="module")
def clip() -> vf.Clip:
    return vf.scene_frames(seed=31, seconds=6)


@pytest.fixture(scope="module")
def clip_mp4(clip: vf.Clip) -> bytes:
    return vf.encode(clip.frames, clip.fps, crf=18)


def test_cli_banks_a_video_and_scan_blocks_its_copies(
    tmp_path: Path, data_dir: Path, clip: vf.Clip, clip_mp4: bytes
) -> None:
    config = tmp_path / "hash-only.yaml"
    config.write_text("classifier:\n  models: []\n")
    video = tmp_path / "incident.mp4"
    video.write_bytes(clip_mp4)

    # `--format vpdq` prints exactly the reference lines, and nothing else.
    printed = schoolgate("hashes", "compute", str(video), "--format", "vpdq", config=config)
    assert printed.returncode == 0, printed.stderr
    expected = VideoHasher(VideoLimits()).hash(clip_mp4).lines()
    assert printed.stdout == expected
    assert re.fullmatch(r"(\d+,\d+,[0-9a-f]{64},\d+\.\d{3}\n){6}", printed.stdout)

    added = schoolgate(
        "hashes", "add", str(video), "--bank", "incident-2026-11", "--note", "ref 7", config=config
    )
    assert added.returncode == 0, added.stderr
    assert "vpdq" in added.stdout
    video.unlink()  # the school keeps the hashes, not the video

    exported = schoolgate(
        "hashes", "export", "--bank", "incident-2026-11", "--format", "vpdq", "--type", "vpdq",
        config=config,
    )  # fmt: skip
    assert exported.stdout == expected

    copies = tmp_path / "copies"
    copies.mkdir()
    (copies / "reencoded.webm").write_bytes(vf.encode(clip.frames, clip.fps, "libvpx-vp9"))
    (copies / "trimmed.mp4").write_bytes(vf.encode(vf.trimmed(1.4, 0)(clip).frames, clip.fps))
    (copies / "story.mp4").write_bytes(vf.encode(vf.letterboxed(320, 568)(clip).frames, clip.fps))
    other = vf.scene_frames(seed=32, seconds=6)
    benign = tmp_path / "other.mp4"
    benign.write_bytes(vf.encode(other.frames, other.fps))

    scanned = schoolgate("scan", "--json", str(copies), str(benign), config=config)
    assert scanned.returncode == 1, scanned.stderr  # something was blocked
    verdicts = {Path(v["file"]).name: v for v in map(json.loads, scanned.stdout.splitlines())}
    for name in ("reencoded.webm", "trimmed.mp4", "story.mp4"):
        assert verdicts[name]["decision"] == "block", verdicts[name]
        match = verdicts[name]["matches"][0]
        assert match["bank"] == "incident-2026-11"
        assert match["signal_type"] == "vpdq"
        assert match["query_match_percent"] >= 50
    assert verdicts["other.mp4"]["decision"] == "allow"
    assert verdicts["other.mp4"]["failure"] is None


def test_cli_refuses_to_bank_a_broken_video(
    tmp_path: Path, data_dir: Path, clip_mp4: bytes
) -> None:
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(clip_mp4[: len(clip_mp4) // 2])
    result = schoolgate("hashes", "add", str(broken), "--bank", "incident")
    assert result.returncode == 2
    assert "truncated" in result.stderr
    vpdq = schoolgate("hashes", "compute", str(broken), "--format", "vpdq")
    assert vpdq.returncode == 2
    assert vpdq.stdout == ""


# ---------------------------------------------------------------------------------------------
# The engine


def _config(extra: str = "") -> Config:
    return parse_config("banks:\n  reload_interval_s: 0.1\n" + extra, "test.yaml")


def _pattern_models(path: Path) -> str:
    make_pattern_model(path)
    return (
        "classifier:\n"
        "  models:\n"
        f"    - {{name: pattern, adapter: onnx, path: '{path}',"
        f" thresholds: {{{PATTERN_LABEL}: 0.5}}, input_size: {PATTERN_INPUT_SIZE},"
        f" labels: [{PATTERN_LABEL}], time_budget_ms: 10000}}\n"
    )


@pytest.fixture
def inspector(data_dir: Path, tmp_path: Path) -> Iterator[Inspector]:
    inspector = Inspector.from_config(_config(_pattern_models(tmp_path / "pattern.onnx")))
    yield inspector
    inspector.close()


def _with_red_seconds(clip: vf.Clip, seconds: set[int]) -> bytes:
    """The clip with the whole frame pure red (the benign pattern) during `seconds`."""
    frames = [
        np.full_like(f, (255, 0, 0)) if int(i / clip.fps) in seconds else f
        for i, f in enumerate(clip.frames)
    ]
    return vf.encode(frames, clip.fps)


def test_classifier_flags_a_video_on_k_of_n_frames(
    inspector: Inspector, clip: vf.Clip, data_dir: Path, tmp_path: Path
) -> None:
    assert inspector.config.classifier.video.min_flagged_frames == 2
    mostly_red = inspector.evaluate(_with_red_seconds(clip, {1, 2, 3}), STUDENT)
    assert mostly_red.blocked
    result = mostly_red.scores[0]
    assert result.flagged == (PATTERN_LABEL,)
    assert result.scores[PATTERN_LABEL] >= 0.5  # the 2nd-highest frame score
    assert any("classifier pattern" in reason for reason in mostly_red.reasons)

    # One red second of six: one frame, under the 2-frame rule.
    one_red = _with_red_seconds(clip, {2})
    glimpse = inspector.evaluate(one_red, STUDENT)
    assert not glimpse.blocked
    assert glimpse.scores[0].flagged == ()
    assert glimpse.findings.failure is None

    # The rule is configuration: one frame is enough when k = 1.
    strict = Inspector.from_config(
        _config(
            _pattern_models(tmp_path / "p2.onnx") + "  video: {frames: 8, min_flagged_frames: 1}\n"
        )
    )
    try:
        assert strict.evaluate(one_red, STUDENT).blocked
    finally:
        strict.close()


def test_a_clip_shorter_than_k_frames_is_judged_on_all_of_its_frames(
    inspector: Inspector, clip: vf.Clip
) -> None:
    one_second = vf.Clip(clip.frames[:15], clip.fps)
    verdict = inspector.evaluate(_with_red_seconds(one_second, {0}), STUDENT)
    assert verdict.blocked  # one sampled frame, and it is red


def test_broken_video_follows_the_fail_policy(
    inspector: Inspector, clip: vf.Clip, clip_mp4: bytes
) -> None:
    truncated = inspector.evaluate(clip_mp4[: len(clip_mp4) // 2], STUDENT)
    assert truncated.findings.failure == "refused"
    assert "truncated" in (truncated.findings.failure_detail or "")
    assert truncated.blocked  # students: fail closed
    assert any("could not inspect: refused" in r for r in truncated.reasons)

    # A codec this appliance does not decode: exact hashes only, then "not_analysed", which
    # blocks for students by default (an unusual codec must not be a way round the filter).
    undecoded = vf.encode(clip.frames[:15], clip.fps, "utvideo", fmt="avi")
    unknown = inspector.evaluate(undecoded, STUDENT)
    assert unknown.findings.failure == "not_analysed"
    assert "utvideo" in (unknown.findings.failure_detail or "")
    assert unknown.blocked


def test_video_over_its_time_budget_is_a_timeout(
    data_dir: Path, clip_mp4: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A budget no decoder can meet, so the test does not depend on the machine's speed.
    # The engine gets its video hasher from schoolgate.media.signals.
    monkeypatch.setattr(signals, "VideoHasher", functools.partial(VideoHasher, time_budget_s=1e-9))
    slow = Inspector.from_config(_config("classifier: {models: []}\n"))
    try:
        verdict = slow.evaluate(clip_mp4, STUDENT)
    finally:
        slow.close()
    assert verdict.findings.failure == "timeout"
    assert "time_budget" in (verdict.findings.failure_detail or "")
    assert verdict.blocked


def test_every_video_stream_of_a_file_is_judged(
    tmp_path: Path, data_dir: Path, clip: vf.Clip, clip_mp4: bytes
) -> None:
    """Only the first video stream was hashed: a file whose banked clip is its second stream
    passed (issue 16)."""
    config = tmp_path / "hash-only.yaml"
    config.write_text("classifier:\n  models: []\n")
    video = tmp_path / "incident.mp4"
    video.write_bytes(clip_mp4)
    added = schoolgate("hashes", "add", str(video), "--bank", "incident", config=config)
    assert added.returncode == 0, added.stderr
    decoy = vf.scene_frames(seed=33, seconds=6)
    hidden = tmp_path / "hidden.mp4"
    hidden.write_bytes(vf.two_video_streams(decoy, clip))
    benign = tmp_path / "benign.mp4"
    benign.write_bytes(vf.two_video_streams(decoy, vf.scene_frames(seed=34, seconds=6)))
    scanned = schoolgate("scan", "--json", str(hidden), str(benign), config=config)
    verdicts = {Path(v["file"]).name: v for v in map(json.loads, scanned.stdout.splitlines())}
    assert verdicts["hidden.mp4"]["decision"] == "block", verdicts["hidden.mp4"]
    assert verdicts["hidden.mp4"]["hashes"]["video_streams"] == 2
    assert verdicts["hidden.mp4"]["matches"][0]["bank"] == "incident"
    assert verdicts["benign.mp4"]["decision"] == "allow", verdicts["benign.mp4"]


def test_a_second_stream_is_judged_when_the_first_cannot_be_decoded(
    tmp_path: Path, data_dir: Path, clip: vf.Clip
) -> None:
    """A Ut Video decoy first (not decoded here: not_analysed) must not hide an H.264 second."""
    buffer = io.BytesIO()
    with av.open(buffer, "w", format="avi") as out:
        decoy = out.add_stream("utvideo", rate=clip.fps)
        h264 = out.add_stream("libx264", rate=clip.fps)
        height, width = clip.frames[0].shape[:2]
        for stream, pix_fmt in ((decoy, "yuv420p"), (h264, "yuv420p")):
            assert isinstance(stream, av.VideoStream)
            stream.width, stream.height = width - width % 2, height - height % 2
            stream.pix_fmt = pix_fmt
        for pixels in clip.frames[:30]:
            for stream in (decoy, h264):
                assert isinstance(stream, av.VideoStream)
                frame = av.VideoFrame.from_ndarray(
                    np.ascontiguousarray(pixels[: stream.height, : stream.width]), format="rgb24"
                )
                for packet in stream.encode(frame):
                    out.mux(packet)
        for stream in (decoy, h264):
            for packet in stream.encode():
                out.mux(packet)
    inspector = Inspector.from_config(_config("classifier: {models: []}\n"), with_audit=False)
    try:
        verdict = inspector.evaluate(buffer.getvalue(), STUDENT)
    finally:
        inspector.close()
    assert verdict.findings.hashes["video_streams"] == 2
    assert verdict.findings.hashes["video_frames_hashed"]  # the H.264 stream was hashed
    assert verdict.findings.failure == "not_analysed"  # and the FFV1 one reported


@pytest.mark.parametrize(
    ("container", "codec"),
    [("mpegts", "libx264"), ("flv", "libx264"), ("asf", "mpeg4"), ("asf", "wmv2"), ("flv", "flv")],
)
def test_a_banked_video_in_a_broadcast_flash_or_windows_container_is_blocked(
    data_dir: Path, clip: vf.Clip, container: str, codec: str
) -> None:
    """Sent raw with no file name, MPEG-TS, FLV and ASF were "no media" and forwarded
    (adversarial pass a4); WMV and Flash video codecs were refused, innocent ones blocked."""
    data = vf.encode(clip.frames[:30], clip.fps, codec, fmt=container)
    with BankStore(data_dir / "banks.sqlite") as store:
        store.create_bank("incident-containers")
        store.add_signals(
            "incident-containers",
            [SignalInput(SignalType.SHA256, hashlib.sha256(data).hexdigest())],
            "t",
        )
    inspector = Inspector.from_config(_config("classifier: {models: []}\n"), with_audit=False)
    try:
        verdict = inspector.evaluate(data, STUDENT)
        other = inspector.evaluate(
            vf.encode(clip.frames[30:60], clip.fps, codec, fmt=container), STUDENT
        )
    finally:
        inspector.close()
    assert sniff(data).kind is MediaKind.VIDEO  # so a body's scan takes it as media
    assert verdict.blocked
    assert not other.blocked, other.findings.failure_detail
    assert other.findings.hashes.get("video_frames_hashed")  # decoded, not only digested


def test_a_colour_inverted_copy_of_a_banked_video_is_blocked(
    tmp_path: Path, data_dir: Path, clip: vf.Clip, clip_mp4: bytes
) -> None:
    """Adversarial pass a4: the inverted photo was caught, the inverted video was not."""
    config = tmp_path / "hash-only.yaml"
    config.write_text("classifier:\n  models: []\n")
    video = tmp_path / "incident.mp4"
    video.write_bytes(clip_mp4)
    added = schoolgate("hashes", "add", str(video), "--bank", "incident-neg", config=config)
    assert added.returncode == 0, added.stderr
    negative = tmp_path / "negative.mp4"
    negative.write_bytes(vf.encode([255 - frame for frame in clip.frames], clip.fps))
    other = vf.scene_frames(seed=33, seconds=6)
    other_negative = tmp_path / "other-negative.mp4"
    other_negative.write_bytes(vf.encode([255 - frame for frame in other.frames], other.fps))
    scanned = schoolgate("scan", "--json", str(negative), str(other_negative), config=config)
    verdicts = {Path(v["file"]).name: v for v in map(json.loads, scanned.stdout.splitlines())}
    assert verdicts["negative.mp4"]["decision"] == "block", verdicts["negative.mp4"]
    assert "colours inverted" in " ".join(verdicts["negative.mp4"]["reasons"])
    assert verdicts["other-negative.mp4"]["decision"] == "allow"
    off = tmp_path / "no-inverted.yaml"
    off.write_text("classifier:\n  models: []\nbanks:\n  match_inverted: false\n")
    plain = schoolgate("scan", "--json", str(negative), config=off)
    assert json.loads(plain.stdout.splitlines()[0])["decision"] == "allow"
