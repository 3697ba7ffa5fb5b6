"""Audio is not a picture: a voice note is allowed, not refused as a broken video (issue 16)."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import av
import numpy as np
import pytest

from schoolgate.config import parse_config
from schoolgate.pipeline.engine import InspectionContext, Inspector

PUPIL = InspectionContext(client_ip="192.0.2.20", app="testapp")


def voice_note(container: str, codec: str, seconds: float = 1.0) -> bytes:
    """A short silent mono recording, as a phone's voice memo app writes it."""
    buffer = io.BytesIO()
    with av.open(buffer, "w", format=container) as output:
        stream = output.add_stream(codec, rate=16000)
        assert isinstance(stream, av.AudioStream)
        stream.layout = "mono"
        for index in range(int(seconds * 16000 / 1024)):
            frame = av.AudioFrame.from_ndarray(
                np.zeros((1, 1024), dtype=np.float32), format="fltp", layout="mono"
            )
            frame.sample_rate = 16000
            frame.pts = index * 1024
            for packet in stream.encode(frame):
                output.mux(packet)
        for packet in stream.encode():
            output.mux(packet)
    return buffer.getvalue()


@pytest.fixture
def inspector(data_dir: Path) -> Iterator[Inspector]:
    inspector = Inspector.from_config(parse_config("classifier: {models: []}\n", "test.yaml"))
    yield inspector
    inspector.close()


@pytest.mark.parametrize(
    ("container", "codec"),
    [("ipod", "aac"), ("mp4", "aac"), ("webm", "libopus"), ("matroska", "aac")],
)
def test_an_audio_only_recording_is_allowed_and_recorded_as_audio(
    inspector: Inspector, container: str, codec: str
) -> None:
    verdict = inspector.evaluate(voice_note(container, codec), PUPIL)
    record = verdict.to_dict()
    assert not verdict.blocked
    assert record.get("failure") is None
    assert record["hashes"]["audio_only"] == 1
