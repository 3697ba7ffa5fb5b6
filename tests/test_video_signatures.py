"""Video that players take from files no demuxer here is asked to read fails closed (adversarial
pass a44 F10: NUT, raw H.264 and HEVC, IVF, Y4M, RealMedia, DV, MXF and SWF files of a banked
clip, which VLC, mpv and ffplay play, were forwarded as "no media"; a48 F1: GXF, WTV, SMJPEG,
raw MPEG-2 and MPEG-4 streams, VP8 in Ogg). The streams here are
written by PyAV (FFmpeg's muxers), not by the code under test."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import av
import numpy as np
import pytest

from schoolgate.config import parse_config
from schoolgate.media.sniff import unanalysed_format
from schoolgate.pipeline.engine import InspectionContext, Inspector

PUPIL = InspectionContext(client_ip="192.0.2.9", app="testapp")
STREAMS = {  # container format: codec
    "nut": "libx264", "h264": "libx264", "hevc": "libx265", "ivf": "libvpx",
    "yuv4mpegpipe": "rawvideo", "rm": "rv20", "dv": "dvvideo", "mxf": "mpeg2video", "swf": "flv",
    # a48 F1
    "gxf": "mpeg2video", "wtv": "mpeg2video", "mpeg2video": "mpeg2video", "m4v": "mpeg4",
    "smjpeg": "mjpeg", "ogg": "libvpx",
}  # fmt: skip


def stream(container: str) -> bytes:
    out = io.BytesIO()
    codec = STREAMS[container]
    with av.open(out, "w", format=container) as muxer:
        video = muxer.add_stream(codec, rate=25)
        assert isinstance(video, av.VideoStream)
        video.width, video.height = (720, 576) if codec == "dvvideo" else (64, 48)
        video.pix_fmt = "yuvj420p" if codec == "mjpeg" else "yuv420p"
        for number in range(5):
            frame = np.full((video.height, video.width, 3), number * 40, np.uint8)
            for packet in video.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                muxer.mux(packet)
        for packet in video.encode():
            muxer.mux(packet)
    return out.getvalue()


@pytest.fixture
def inspector(data_dir: Path) -> Iterator[Inspector]:
    inspector = Inspector.from_config(parse_config("classifier: {models: []}\n", "test.yaml"))
    yield inspector
    inspector.close()


@pytest.mark.parametrize("container", sorted(STREAMS))
def test_a_video_stream_no_demuxer_here_reads_fails_closed(
    inspector: Inspector, container: str
) -> None:
    try:
        data = stream(container)
    except (av.error.FFmpegError, ValueError) as missing:  # an encoder this FFmpeg lacks
        pytest.skip(f"PyAV cannot write {container}: {missing}")
    assert unanalysed_format(data) is not None
    verdict = inspector.evaluate(data, PUPIL)
    assert verdict.to_dict()["failure"] == "not_analysed"
    assert verdict.blocked


@pytest.mark.parametrize(
    "text", [b"FWS meeting notes", b"FWS\x01abc", b"DKIF", b"\x00\x00\x00\x01"]
)
def test_text_and_short_bytes_are_not_taken_for_video(text: bytes) -> None:
    assert unanalysed_format(text) is None
