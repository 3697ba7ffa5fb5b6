"""The inspection engine in-process: banks picked up while running, failures, classifier errors."""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest
from PIL import Image, ImageOps

from schoolgate.banks.model import SignalInput, SignalType
from schoolgate.banks.store import BankStore
from schoolgate.config import Config, parse_config
from schoolgate.matching.matcher import Matcher
from schoolgate.media.hashing import exact_hashes, pdq_hash
from schoolgate.pipeline.engine import InspectionContext, Inspector
from tests.conftest import encode
from tests.support.onnx_models import make_failing_model, pattern_image

STUDENT = InspectionContext(client_ip="192.0.2.20", app="testapp")


def _config(data_dir: Path, extra: str = "") -> Config:
    return parse_config(
        "banks:\n  reload_interval_s: 0.1\nclassifier:\n  models: []\n" + extra, "test.yaml"
    )


@pytest.fixture
def inspector(data_dir: Path) -> Iterator[Inspector]:
    inspector = Inspector.from_config(_config(data_dir))
    yield inspector
    inspector.close()


def test_bank_added_while_running_is_picked_up(
    inspector: Inspector, benign_photos: dict[str, Image.Image]
) -> None:
    photo = encode(benign_photos["coffee"], "JPEG", quality=90)
    assert not inspector.evaluate(photo, STUDENT).blocked

    # Another process (the CLI) adds the photo's PDQ hash to a bank.
    with BankStore(inspector.config.banks.path) as store:
        store.create_bank("incident-live")
        pdq = pdq_hash(benign_photos["coffee"])
        store.add_signals(
            "incident-live", [SignalInput(SignalType.PDQ, pdq.hex, quality=pdq.quality)], "test"
        )
    deadline = time.monotonic() + 5
    verdict = inspector.evaluate(photo, STUDENT)
    while not verdict.blocked and time.monotonic() < deadline:
        time.sleep(0.1)
        verdict = inspector.evaluate(photo, STUDENT)
    assert verdict.blocked
    assert verdict.matches[0].bank == "incident-live"
    assert verdict.to_dict()["hashes"]["pdq"]


def test_uploads_judged_while_the_matcher_is_rebuilt_see_the_new_banks(
    inspector: Inspector, benign_photos: dict[str, Image.Image], monkeypatch: pytest.MonkeyPatch
) -> None:
    """a41 F1: after a trust publication, one upload rebuilt the matcher and the uploads judged
    meanwhile were judged on the old banks: 4 of 18 newly banked pictures sent at once passed."""
    photo = encode(benign_photos["coffee"], "JPEG", quality=90)
    assert not inspector.evaluate(photo, STUDENT).blocked
    with BankStore(inspector.config.banks.path) as store:
        store.create_bank("trust-incidents")
        digest = exact_hashes(photo).sha256
        store.add_signals("trust-incidents", [SignalInput(SignalType.SHA256, digest)], "sync")
    build = Matcher.from_store

    def slow_build(*args: Any, **kwargs: Any) -> Matcher:
        time.sleep(0.5)  # a large bank on a Pi
        return build(*args, **kwargs)

    monkeypatch.setattr(Matcher, "from_store", slow_build)
    time.sleep(0.15)  # past reload_interval_s
    with ThreadPoolExecutor(4) as pool:
        verdicts = list(pool.map(lambda _: inspector.evaluate(photo, STUDENT), range(4)))
    assert [v.blocked for v in verdicts] == [True] * 4


def test_exact_hash_bank_blocks_a_video_file(inspector: Inspector, tmp_path: Path) -> None:
    clip = _tiny_video(tmp_path / "clip.mp4")
    with BankStore(inspector.config.banks.path) as store:
        store.create_bank("incident-video")
        digest = exact_hashes(clip).sha256
        store.add_signals("incident-video", [SignalInput(SignalType.SHA256, digest)], "test")
    inspector._matchers._checked_at = 0.0  # skip the reload interval for the test
    verdict = inspector.evaluate(clip, STUDENT)
    assert verdict.blocked
    assert verdict.media_type == "mp4"
    # Another video is decoded and its frames hashed: nothing matches, nothing failed.
    other = inspector.evaluate(_tiny_video(tmp_path / "other.mp4", colour=(0, 0, 200)), STUDENT)
    assert not other.blocked
    assert other.findings.failure is None
    assert other.findings.hashes["video_frames_hashed"] == 4  # one second, 4 query samples


def test_refused_media_follows_the_fail_policy(inspector: Inspector) -> None:
    truncated = encode(Image.new("RGB", (400, 300), (10, 120, 30)), "JPEG")[:300]
    verdict = inspector.evaluate(truncated, STUDENT)
    assert verdict.findings.failure == "refused"
    assert verdict.blocked
    assert any("refused" in reason for reason in verdict.reasons)


@pytest.mark.parametrize(
    ("declared_type", "filename", "failure"),
    [
        ("image/jxl", None, "not_analysed"),  # sent as a picture, in a format we do not read
        (None, "clip.avi", "not_analysed"),
        ("application/octet-stream", "notes.bin", None),  # not media, and not said to be
        (None, None, None),
    ],
)
def test_what_is_sent_as_media_but_not_readable_is_not_analysed(
    inspector: Inspector, declared_type: str | None, filename: str | None, failure: str | None
) -> None:
    ctx = replace(STUDENT, declared_type=declared_type, filename=filename)
    verdict = inspector.evaluate(b"\xff\x0a" + bytes(300), ctx)
    assert verdict.findings.failure == failure
    assert verdict.blocked is (failure is not None)  # not_analysed fails closed for students


@pytest.mark.parametrize(
    ("data", "failure"),
    [
        (b"\x00\x00\x00\x0cJXL \r\n\x87\n" + bytes(300), "not_analysed"),  # JPEG XL
        # JPEG 2000 is decoded (tests/test_raster_formats.py): a broken one is refused.
        (b"\x00\x00\x00\x0cjP  \r\n\x87\n" + bytes(300), "refused"),
    ],
)
def test_image_formats_viewers_show_but_we_do_not_read_are_not_analysed(
    inspector: Inspector, data: bytes, failure: str
) -> None:
    """Safari shows JPEG XL and JPEG 2000: unlabelled, they must not pass as "not media"."""
    verdict = inspector.evaluate(data, STUDENT)
    assert verdict.findings.failure == failure
    assert verdict.blocked


def test_unavailable_verdicts(inspector: Inspector) -> None:
    oversize = inspector.evaluate_unavailable(STUDENT, "oversize", "70 MB body")
    assert oversize.blocked
    catalog_allow = inspector.evaluate_unavailable(
        STUDENT, "not_inspectable", "WhatsApp media", action="allow"
    )
    assert not catalog_allow.blocked
    with pytest.raises(ValueError, match="unknown failure"):
        inspector.evaluate_unavailable(STUDENT, "gremlins", "")


@pytest.mark.parametrize(("fail_action", "blocked"), [("allow", False), ("block", True)])
def test_classifier_failure_is_never_silently_clean(
    data_dir: Path, tmp_path: Path, fail_action: str, blocked: bool
) -> None:
    model = make_failing_model(tmp_path / "fails.onnx")
    config = parse_config(
        "classifier:\n  models:\n"
        f"    - {{name: fragile, adapter: onnx, path: {model}, input_size: 16,"
        " labels: [score], thresholds: {score: 0.9}}\n"
        "policy:\n  groups:\n    - name: everyone\n"
        f"      fail: {{classifier_error: {fail_action}}}\n",
        "test.yaml",
    )
    inspector = Inspector.from_config(config)
    try:
        verdict = inspector.evaluate(encode(pattern_image(), "PNG"), STUDENT)
    finally:
        inspector.close()
    assert verdict.findings.failure == "classifier_error"
    assert "fragile" in (verdict.findings.failure_detail or "")
    assert verdict.blocked is blocked


def test_missing_model_does_not_stop_hash_matching(
    data_dir: Path, tmp_path: Path, benign_photos: dict[str, Image.Image]
) -> None:
    config = parse_config(
        "classifier:\n  models:\n"
        f"    - {{name: gone, adapter: onnx, path: {tmp_path / 'missing.onnx'},"
        " labels: [x], thresholds: {x: 0.5}}\n",
        "test.yaml",
    )
    with BankStore(config.banks.path) as store:
        store.create_bank("b")
        pdq = pdq_hash(benign_photos["rocket"])
        store.add_signals("b", [SignalInput(SignalType.PDQ, pdq.hex, quality=pdq.quality)], "t")
    inspector = Inspector.from_config(config)
    try:
        assert inspector.model_errors
        verdict = inspector.evaluate(encode(benign_photos["rocket"], "JPEG"), STUDENT)
        assert verdict.blocked
        assert verdict.matches[0].bank == "b"
        records = inspector.audit.path.read_text() if inspector.audit else ""
        assert "model_load_failed" in records
    finally:
        inspector.close()


def _tiny_video(path: Path, colour: tuple[int, int, int] = (200, 0, 0)) -> bytes:
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=5)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for i in range(5):
            frame = np.full((48, 64, 3), colour, dtype=np.uint8)
            frame[:, i * 10 : i * 10 + 8] = 255
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path.read_bytes()


def test_a_colour_inverted_copy_of_a_banked_picture_is_matched(
    data_dir: Path, benign_photos: dict[str, Image.Image]
) -> None:
    """A negative (one tap in any editor) was delivered unjudged by the adversarial pass: its
    PDQ hash is the complement of the banked one, so the complement is queried as well."""
    banked = benign_photos["chelsea"]
    with BankStore(data_dir / "banks.sqlite") as store:
        store.create_bank("incident-neg")
        pdq = pdq_hash(banked)
        store.add_signals(
            "incident-neg", [SignalInput(SignalType.PDQ, pdq.hex, quality=pdq.quality)], "test"
        )
    negative = encode(ImageOps.invert(banked.convert("RGB")), "JPEG", quality=85)
    inspector = Inspector.from_config(_config(data_dir))
    try:
        verdict = inspector.evaluate(negative, STUDENT)
        assert verdict.blocked
        assert "colours inverted" in " ".join(verdict.reasons)
        # Innocent photos and their negatives stay innocent.
        for name in ("coffee", "astronaut", "rocket"):
            photo = benign_photos[name].convert("RGB")
            for image in (photo, ImageOps.invert(photo)):
                assert not inspector.evaluate(encode(image, "JPEG"), STUDENT).blocked, name
    finally:
        inspector.close()
    # match_channels reads each channel's negative too, so it finds a whole negative as well
    text = "banks:\n  match_inverted: false\n  match_channels: false\nclassifier:\n  models: []\n"
    off = Inspector.from_config(parse_config(text, "test.yaml"))
    try:
        assert not off.evaluate(negative, STUDENT).blocked
    finally:
        off.close()


@pytest.mark.parametrize("channels", ["G", "R", "RG"])
def test_a_copy_with_colour_channels_inverted_is_matched(
    inspector: Inspector, benign_photos: dict[str, Image.Image], channels: str
) -> None:
    """a42 F5: the banked picture with its green (or red, or both) channel inverted, in false
    colours but plain to see, passed every tier."""
    photo = benign_photos["astronaut"]
    with BankStore(inspector.config.banks.path) as store:
        store.create_bank("incident-channels")
        pdq = pdq_hash(photo)
        store.add_signals(
            "incident-channels", [SignalInput(SignalType.PDQ, pdq.hex, quality=pdq.quality)], "t"
        )
    inspector._matchers._checked_at = 0.0
    bands = dict(zip("RGB", photo.split(), strict=True))
    edited = Image.merge("RGB", [ImageOps.invert(bands[c]) if c in channels else bands[c]
                                 for c in "RGB"])  # fmt: skip
    verdict = inspector.evaluate(encode(edited, "PNG"), STUDENT)
    assert verdict.blocked, verdict.to_dict()
    assert verdict.matches[0].bank == "incident-channels"
    others = [inspector.evaluate(encode(benign_photos[n], "JPEG"), STUDENT) for n in
              ("coffee", "chelsea", "rocket", "camera", "coins", "moon", "page")]  # fmt: skip
    assert not any(v.blocked for v in others)
