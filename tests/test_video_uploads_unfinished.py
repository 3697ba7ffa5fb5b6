"""A banked video sent in chunks that never finish (adversarial pass a58 F3): X's INIT + APPENDs
with no FINALIZE, a Google resumable upload of all but the last byte, Instagram's rupload of
all but the last byte. Every chunk was forwarded, since only the upload's end was judged and a
video's first part was never looked at: the service held every byte (or all but one) of the
banked video, the rest to be sent from elsewhere. Now an unfinished upload's first part is
looked at for a banked video as for a banked picture (its frames decoded as far as they go, an
MP4's index read from its last box), and only a match blocks.

The real catalog's routes, driven in-process; synthetic benign clips only.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from mitmproxy import http

from schoolgate.addons.uploads import UploadInspector
from schoolgate.banks.store import BankStore
from schoolgate.media.decode import VideoLimits
from schoolgate.media.video import VideoHasher
from tests.support import video_fixtures as vf
from tests.test_addons_inprocess import catalog_upload_addon, run_upload, upload_flow
from tests.test_reassembly import x_append
from tests.test_video import bank_video

X = "upload.twitter.com"
X_PATH = "/1.1/media/upload.json"
DRIVE = "www.googleapis.com"
DRIVE_SESSION = "/upload/drive/v3/files?uploadType=resumable&upload_id={}"
INSTAGRAM = "i.instagram.com"


@pytest.fixture(scope="module")
def banked_clip() -> bytes:
    return vf.encode(vf.scene_frames(seed=61, seconds=6).frames, 15)


@pytest.fixture(scope="module")
def other_clip() -> bytes:
    return vf.encode(vf.scene_frames(seed=62, seconds=6).frames, 15)


@pytest.fixture
def addon(data_dir: Path, tmp_path: Path, banked_clip: bytes) -> Iterator[UploadInspector]:
    with BankStore(data_dir / "banks.sqlite") as store:
        bank_video(store, "incident-video", "clip", VideoHasher(VideoLimits()).hash(banked_clip))
    with catalog_upload_addon(data_dir, tmp_path, None) as inspector:
        yield inspector


def _send(addon: UploadInspector, host: str, path: str, body: bytes, **headers: str) -> Any:
    flow: Any = upload_flow(host, path, body, method=headers.pop("method", "POST"), **headers)
    flow.client_conn.peername = ("10.20.0.5", 50000)
    run_upload(addon, flow)
    return flow


def _status(flow: Any) -> int:
    return flow.response.status_code if flow.response else 200


def _x_upload(addon: UploadInspector, media_id: str, video: bytes, parts: int,
              media_type: str = "video/mp4") -> list[int]:  # fmt: skip
    """INIT (the service answers with the media id), then the APPENDs; no FINALIZE."""
    init_path = f"{X_PATH}?command=INIT&total_bytes={len(video)}&media_type={media_type}"
    init = _send(addon, X, init_path, b"")
    assert init.response is None
    reply = json.dumps({"media_id": int(media_id), "media_id_string": media_id}).encode()
    init.response = http.Response.make(202, reply, {"Content-Type": "application/json"})
    addon.response(init)
    size = len(video) // parts + 1
    codes = []
    for index in range(parts):
        content_type, body = x_append(media_id, index, video[index * size : (index + 1) * size])
        codes.append(_status(_send(addon, X, X_PATH, body, Content_Type=content_type)))
    return codes


def test_x_appends_of_a_banked_video_without_finalize_are_stopped(
    addon: UploadInspector, banked_clip: bytes
) -> None:
    codes = _x_upload(addon, "710511363345354753", banked_clip, 4)
    assert codes[-1] == 403, codes  # the APPEND that makes it whole
    finalize = _send(addon, X, f"{X_PATH}?command=FINALIZE&media_id=710511363345354753", b"")
    assert _status(finalize) == 403


def test_x_appends_of_another_video_go_through(addon: UploadInspector, other_clip: bytes) -> None:
    assert _x_upload(addon, "710511363345354999", other_clip, 4) == [200, 200, 200, 200]


@pytest.mark.parametrize(
    ("which", "declared", "expected"),
    [("banked", True, 403), ("banked", False, 403), ("other", True, 200)],
)
def test_a_google_upload_of_all_but_the_last_byte_of_a_video(
    addon: UploadInspector, banked_clip: bytes, other_clip: bytes, which: str, declared: bool,
    expected: int,
) -> None:  # fmt: skip
    """`bytes 0-(n-2)/n` (a58) and `bytes 0-(n-2)/*`: the MP4's index is its last box."""
    video = banked_clip if which == "banked" else other_clip
    cut = video[:-1]
    total = str(len(video)) if declared else "*"
    flow = _send(addon, DRIVE, DRIVE_SESSION.format(f"{which}{declared}"), cut, method="PUT",
                 Content_Range=f"bytes 0-{len(cut) - 1}/{total}")  # fmt: skip
    assert _status(flow) == expected


def test_an_instagram_rupload_of_all_but_the_last_byte_of_a_banked_video_is_stopped(
    addon: UploadInspector, banked_clip: bytes
) -> None:
    cut = banked_clip[:-1]
    flow = _send(addon, INSTAGRAM, "/rupload_igvideo/clip_1", cut, X_Entity_Name="clip_1",
                 X_Entity_Length=str(len(banked_clip)), Offset="0",
                 Content_Type="application/octet-stream")  # fmt: skip
    assert _status(flow) == 403


def test_a_google_upload_of_unknown_size_is_stopped_at_the_chunk_completing_a_banked_video(
    addon: UploadInspector, banked_clip: bytes
) -> None:
    """Discord's storage upload, `bytes a-b/*` (a58): the MP4's index comes last, so no first
    part shows a frame; the chunk that makes the container whole is judged as the whole."""
    size = len(banked_clip) // 3 + 1
    codes = []
    for start in range(0, len(banked_clip), size):
        chunk = banked_clip[start : start + size]
        flow = _send(addon, DRIVE, DRIVE_SESSION.format("UNKNOWN"), chunk, method="PUT",
                     Content_Range=f"bytes {start}-{start + len(chunk) - 1}/*")  # fmt: skip
        codes.append(_status(flow))
    assert codes == [200, 200, 403]


def test_a_dropbox_session_started_with_a_whole_banked_video_is_stopped(
    addon: UploadInspector, banked_clip: bytes, other_clip: bytes
) -> None:
    """a58: delivered, with no audit record at all."""
    for video, expected in ((banked_clip, 403), (other_clip, 200)):
        flow = _send(addon, "content.dropboxapi.com", "/2/files/upload_session/start", video,
                     Dropbox_API_Arg=json.dumps({"close": False}),
                     Content_Type="application/octet-stream")  # fmt: skip
        assert _status(flow) == expected


def test_a_whole_video_container_is_told_from_its_first_parts(
    banked_clip: bytes, tmp_path: Path
) -> None:
    from schoolgate.media.containers import whole_video

    assert whole_video(banked_clip)
    for cut in (1, 8, len(banked_clip) // 2):
        assert not whole_video(banked_clip[:-cut]), cut
    webm = vf.encode(vf.scene_frames(seed=63, seconds=2).frames, 15, codec="libvpx")
    assert whole_video(webm)
    assert not whole_video(webm[:-1])
    assert not whole_video(b"\xff\xd8\xff\xe0 not a video")


def test_a_first_part_is_padded_only_by_a_little(banked_clip: bytes) -> None:
    """The declared size is the client's word: a video's first part is filled in up to 4 MiB,
    never to a claimed gigabyte."""
    from schoolgate.media.cutshort import as_shown

    cut = banked_clip[:-100]
    assert as_shown(cut, len(banked_clip)) == cut + bytes(100)
    assert as_shown(cut, len(cut) + (1 << 30)) == cut
    assert as_shown(cut, None) == cut
    assert as_shown(b"\xff\xd8\xff\xe0 a picture", 4096) == b"\xff\xd8\xff\xe0 a picture"
