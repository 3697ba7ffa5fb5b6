"""Video through the real proxy: `schoolgate run` between real clients and a recording HTTPS
upstream on 127.0.0.1. A synthetic benign clip is banked (its vPDQ frames only, as `schoolgate
hashes add` stores them); its edited copies are refused before the upstream receives a byte, in
every upload shape (multipart, raw, chunked) and as a CDN download."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from schoolgate.banks.model import SignalInput, SignalType
from schoolgate.banks.store import BankStore
from schoolgate.media.decode import VideoLimits
from schoolgate.media.video import VideoHasher
from tests.support import video_fixtures as vf
from tests.support.proxy_harness import (
    CDN_HOST,
    MEDIA_HOST,
    ProxyProcess,
    RunningUpstream,
    client_ssl_context,
    multipart_body,
)
from tests.support.stack import needs_private_hosts, recording_stack

os.environ.setdefault("SVT_LOG", "1")

pytestmark = [pytest.mark.slow, needs_private_hosts]

BANK = "incident-video"


@dataclass
class Stack:
    upstream: RunningUpstream
    proxy: ProxyProcess
    upstream_ca: Path
    clip: vf.Clip

    def client(self) -> httpx.Client:
        context = client_ssl_context(self.proxy.ca_pem, self.upstream_ca)
        return httpx.Client(proxy=self.proxy.url, verify=context, timeout=60)

    def url(self, host: str, path: str) -> str:
        return f"https://{host}:{self.upstream.upstream.port}{path}"

    def received(self, prefix: str) -> list[str]:
        return [r.sha256 for r in self.upstream.upstream.requests(prefix)]


def bank_video(data_dir: Path, video: bytes) -> None:
    """Bank a video's frame hashes (not the video) in the proxy's data dir."""
    hashes = VideoHasher(VideoLimits()).hash(video)
    with BankStore(data_dir / "banks.sqlite") as store:
        store.ensure_bank(BANK)
        store.add_signals(
            BANK,
            [
                SignalInput(SignalType.VPDQ, f.hex, f.quality, "", "incident.mp4", f.frame,
                            f.timestamp)
                for f in hashes.features
            ],
            source="test",
        )  # fmt: skip


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    clip = vf.scene_frames(seed=41, seconds=6)
    banked = vf.encode(clip.frames, clip.fps, crf=18)
    work = tmp_path_factory.mktemp("proxy-video")
    with recording_stack(work, seed=lambda data_dir: bank_video(data_dir, banked)) as running:
        yield Stack(running.upstream, running.proxy, running.upstream_ca, clip)


def test_reencoded_copy_uploaded_as_multipart_never_reaches_upstream(stack: Stack) -> None:
    copy = vf.encode(stack.clip.frames, stack.clip.fps, "libvpx-vp9", bitrate=200_000)
    body, content_type = multipart_body("file", "clip.webm", copy, "video/webm")
    before = len(stack.upstream.upstream.requests())
    with stack.client() as client:
        response = client.post(
            stack.url(MEDIA_HOST, "/upload/multipart"),
            content=body,
            headers={"Content-Type": content_type, "Accept": "application/json"},
        )
    assert response.status_code == 403
    assert response.json()["error"] == "blocked_by_school_network"
    assert len(stack.upstream.upstream.requests()) == before  # the upstream received nothing
    record = stack.proxy.audit_records()[-1]
    assert record["decision"] == "block"
    assert record["media_type"] == "webm"
    match = record["matches"][0]
    assert (match["bank"], match["signal_type"], match["value"]) == (BANK, "vpdq", "incident.mp4")
    assert match["query_match_percent"] >= 50
    assert record["hashes"]["video_frames_hashed"] > 0


def test_trimmed_and_letterboxed_raw_uploads_are_blocked(stack: Stack) -> None:
    clip = stack.clip
    trimmed = vf.encode(vf.trimmed(1.3, 1.0)(clip).frames, clip.fps)
    story = vf.encode(vf.letterboxed(360, 640)(vf.resized(480, 270)(clip)).frames, clip.fps)
    with stack.client() as client:
        for name, video in (("trimmed.mp4", trimmed), ("story.mp4", story)):
            response = client.put(stack.url(MEDIA_HOST, f"/upload/raw/{name}"), content=video)
            assert response.status_code == 403, name
            assert stack.received(f"/upload/raw/{name}") == []


def test_benign_video_arrives_byte_identical(stack: Stack) -> None:
    other = vf.scene_frames(seed=42, seconds=4)
    video = vf.encode(other.frames, other.fps)
    with stack.client() as client:
        response = client.put(stack.url(MEDIA_HOST, "/upload/raw/holiday.mp4"), content=video)
    assert response.status_code == 200
    assert hashlib.sha256(video).hexdigest() in stack.received("/upload/raw/holiday.mp4")
    record = [r for r in stack.proxy.audit_records() if r["media_type"] == "mp4"][-1]
    assert record["decision"] == "allow"
    assert record["failure"] is None


def test_broken_video_upload_is_refused_and_proxy_keeps_serving(stack: Stack) -> None:
    video = vf.encode(stack.clip.frames[:30], stack.clip.fps)
    with stack.client() as client:
        response = client.put(
            stack.url(MEDIA_HOST, "/upload/raw/cut.mp4"), content=video[: len(video) // 2]
        )
        assert response.status_code == 403  # refused media: fail closed by default
    assert stack.received("/upload/raw/cut.mp4") == []
    record = stack.proxy.audit_records()[-1]
    assert record["failure"] == "refused"
    assert "truncated" in record["failure_detail"]
    assert stack.proxy.process.poll() is None


def test_chunked_video_upload_is_judged_whole(stack: Stack) -> None:
    media = vf.encode(vf.sped_up(2.0)(stack.clip).frames, stack.clip.fps)
    half = len(media) // 2
    path = "/upload/chunked/video-session"
    statuses = []
    with stack.client() as client:
        for offset, piece in ((0, media[:half]), (half, media[half:])):
            response = client.post(
                stack.url(MEDIA_HOST, path),
                content=piece,
                headers={"Content-Range": f"bytes {offset}-{offset + len(piece) - 1}/{len(media)}"},
            )
            statuses.append(response.status_code)
    assert statuses == [200, 403]  # the first chunk alone is no video; the last one is held
    assert hashlib.sha256(media[half:]).hexdigest() not in stack.received(path)
    record = stack.proxy.audit_records()[-1]
    assert record["hashes"]["sha256"] == hashlib.sha256(media).hexdigest()
    assert record["matches"][0]["signal_type"] == "vpdq"


def test_banked_video_download_from_cdn_is_replaced(stack: Stack) -> None:
    copy = vf.encode(vf.resized(640, 360)(stack.clip).frames, stack.clip.fps, crf=30)
    stack.upstream.upstream.files["reel.mp4"] = copy
    with stack.client() as client:
        response = client.get(stack.url(CDN_HOST, "/files/reel.mp4"))
    assert response.status_code == 403
    assert copy not in response.content
    record = [r for r in stack.proxy.audit_records() if r["client"].get("direction") == "download"]
    assert record[-1]["decision"] == "block"


def test_a_banked_clip_as_the_second_video_stream_is_blocked(stack: Stack) -> None:
    """Only a file's first video stream was hashed (issue 16)."""
    decoy = vf.scene_frames(seed=43, seconds=6)
    hidden = vf.two_video_streams(decoy, stack.clip)
    with stack.client() as client:
        response = client.put(stack.url(MEDIA_HOST, "/upload/raw/two-streams.mp4"), content=hidden)
    assert response.status_code == 403
    assert stack.received("/upload/raw/two-streams.mp4") == []


def test_a_codec_not_decoded_here_is_not_analysed_and_blocked(stack: Stack) -> None:
    """FFV1 was `not_analysed` and allowed by default: any banked clip re-encoded to a codec
    outside the decoders passed (issue 16). It now fails closed for students."""
    ffv1 = vf.encode(stack.clip.frames[:20], stack.clip.fps, "ffv1", fmt="matroska")
    with stack.client() as client:
        response = client.put(stack.url(MEDIA_HOST, "/upload/raw/ffv1.mkv"), content=ffv1)
    assert response.status_code == 403
    assert stack.received("/upload/raw/ffv1.mkv") == []
