"""Audio is not a picture, but cover art is (adversarial pass, issue 16).

A voice note (audio-only MP4/M4A, 3GP, WebM, Matroska; or audio with timed text) has nothing to
judge and is allowed, recorded as audio. A container that carries a still picture beside the
audio (an M4A's cover art, a Matroska cover attachment) is a picture carrier: the picture is
decoded as a still upload is and judged, whatever the recording's length.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from schoolgate.banks.model import SignalInput, SignalType
from schoolgate.banks.store import BankStore
from schoolgate.config import parse_config
from schoolgate.media.decode import VideoLimits
from schoolgate.media.hashing import pdq_hash
from schoolgate.media.video import VideoHasher
from schoolgate.pipeline.engine import InspectionContext, Inspector
from tests.conftest import encode

PUPIL = InspectionContext(client_ip="192.0.2.20", app="testapp")
RATE = 16000
SAMPLES = 1024


def _audio_frames(seconds: float) -> Iterator[av.AudioFrame]:
    for index in range(max(1, int(seconds * RATE / SAMPLES))):
        frame = av.AudioFrame.from_ndarray(
            np.zeros((1, SAMPLES), dtype=np.float32), format="fltp", layout="mono"
        )
        frame.sample_rate = RATE
        frame.pts = index * SAMPLES
        yield frame


def recording(
    container: str,
    codec: str = "aac",
    seconds: float = 1.0,
    *,
    cover: bytes | None = None,
    cover_codec: str = "mjpeg",
    attachment: bytes | None = None,
    timed_text: bool = False,
) -> bytes:
    """A silent mono recording as a phone writes it, optionally with cover art (an attached
    picture stream), a cover attachment (Matroska) or a timed-text track."""
    buffer = io.BytesIO()
    with av.open(buffer, "w", format=container) as output:
        audio = output.add_stream(codec, rate=RATE)
        assert isinstance(audio, av.AudioStream)
        audio.layout = "mono"
        picture = None
        if cover is not None:
            picture = output.add_mux_stream(cover_codec, width=64, height=48)
            picture.disposition = av.stream.Disposition.attached_pic
        if attachment is not None:
            output.add_attachment("cover.jpg", "image/jpeg", attachment)
        text = output.add_mux_stream("mov_text") if timed_text else None
        for frame in _audio_frames(seconds):
            for packet in audio.encode(frame):
                output.mux(packet)
        for packet in audio.encode():
            output.mux(packet)
        if picture is not None and cover is not None:
            packet = av.Packet(cover)
            packet.stream = picture
            packet.pts = packet.dts = 0
            output.mux(packet)
        if text is not None:
            words = b"voice note"
            packet = av.Packet(len(words).to_bytes(2, "big") + words)
            packet.stream = text
            packet.pts = packet.dts = 0
            packet.duration = 1000
            output.mux(packet)
    return buffer.getvalue()


def m4a(data: bytes) -> bytes:
    """The same file with the major brand iTunes and phones write for audio ("M4A ")."""
    assert data[4:8] == b"ftyp"
    return data[:8] + b"M4A " + data[12:]


@pytest.fixture
def inspector(data_dir: Path, benign_photos: dict[str, Image.Image]) -> Iterator[Inspector]:
    with BankStore(data_dir / "banks.sqlite") as store:
        store.create_bank("incident-cover")
        pdq = pdq_hash(benign_photos["chelsea"])
        signal = SignalInput(SignalType.PDQ, pdq.hex, quality=pdq.quality)
        store.add_signals("incident-cover", [signal], "test")
    inspector = Inspector.from_config(parse_config("classifier: {models: []}\n", "test.yaml"))
    yield inspector
    inspector.close()


@pytest.mark.parametrize(
    ("container", "codec", "timed_text"),
    [
        ("mp4", "aac", True),  # a recording with a transcript track, no video
        ("3gp", "aac", False),  # an older phone's voice message
        ("ipod", "aac", False),
        ("webm", "libopus", False),
    ],
)
def test_a_voice_note_is_allowed_as_audio(
    inspector: Inspector, container: str, codec: str, timed_text: bool
) -> None:
    verdict = inspector.evaluate(recording(container, codec, timed_text=timed_text), PUPIL)
    record = verdict.to_dict()
    assert not verdict.blocked, record
    assert record.get("failure") is None
    assert record["hashes"]["audio_only"] == 1


@pytest.mark.parametrize(("fmt", "codec"), [("mp3", "libmp3lame"), ("ogg", "libopus")])
def test_mp3_and_ogg_recordings_are_still_allowed(
    inspector: Inspector, fmt: str, codec: str
) -> None:
    verdict = inspector.evaluate(recording(fmt, codec), PUPIL)
    assert not verdict.blocked, verdict.to_dict()
    assert verdict.to_dict().get("failure") is None


@pytest.mark.parametrize(("fmt", "codec"), [("JPEG", "mjpeg"), ("PNG", "png")])
@pytest.mark.parametrize("seconds", [1.0, 700.0])  # 700 s: past the video duration cap
def test_a_banked_picture_as_cover_art_is_blocked(
    inspector: Inspector,
    benign_photos: dict[str, Image.Image],
    fmt: str,
    codec: str,
    seconds: float,
) -> None:
    cover = encode(benign_photos["chelsea"], fmt)
    data = m4a(recording("mp4", seconds=seconds, cover=cover, cover_codec=codec))
    verdict = inspector.evaluate(data, PUPIL)
    assert verdict.blocked, verdict.to_dict()
    assert [match.bank for match in verdict.matches] == ["incident-cover"]


@pytest.mark.parametrize(("fmt", "codec"), [("JPEG", "mjpeg"), ("PNG", "png")])
def test_a_song_with_innocent_cover_art_is_allowed_and_its_picture_judged(
    inspector: Inspector, benign_photos: dict[str, Image.Image], fmt: str, codec: str
) -> None:
    cover = encode(benign_photos["coffee"], fmt)
    data = m4a(recording("mp4", seconds=700.0, cover=cover, cover_codec=codec))
    verdict = inspector.evaluate(data, PUPIL)
    record = verdict.to_dict()
    assert not verdict.blocked, record
    assert record.get("failure") is None
    assert "audio_only" not in record["hashes"]
    assert record["hashes"]["video_frames_hashed"] == 1
    assert "attached picture" in str(record["hashes"]["video_codec"])


def test_a_banked_picture_as_a_matroska_cover_attachment_is_blocked(
    inspector: Inspector, benign_photos: dict[str, Image.Image]
) -> None:
    cover = encode(benign_photos["chelsea"], "JPEG")
    data = recording("matroska", "libopus", attachment=cover)
    verdict = inspector.evaluate(data, PUPIL)
    assert verdict.blocked, verdict.to_dict()
    assert [match.bank for match in verdict.matches] == ["incident-cover"]


def test_cover_art_that_cannot_be_decoded_is_refused(inspector: Inspector) -> None:
    """A picture carrier whose picture cannot be read fails closed, like a broken still."""
    data = m4a(recording("mp4", cover=b"\x89PNG\r\n\x1a\n" + bytes(40), cover_codec="png"))
    verdict = inspector.evaluate(data, PUPIL)
    record = verdict.to_dict()
    assert verdict.blocked, record
    assert record["failure"] == "refused"


def test_cover_art_is_hashed_as_one_still_frame(benign_photos: dict[str, Image.Image]) -> None:
    cover = encode(benign_photos["chelsea"], "PNG")
    video = VideoHasher(VideoLimits(), stills=True).hash(
        m4a(recording("mp4", seconds=700.0, cover=cover, cover_codec="png"))
    )
    assert video.refused is None
    assert (video.width, video.height) == benign_photos["chelsea"].size
    assert len(video.features) == len(video.stills) == 1
    assert video.features[0].timestamp == 0.0
    assert video.duration_s is None  # the recording's length is not the picture's
