"""A banked picture as a GIF or an animated WebP, sent whole in an upload protocol's data request
and never finished (adversarial pass a60 F1): X's APPEND (v1.1 and v2), TikTok's parts, a
Facebook transfer, a Dropbox session's start, SharePoint's StartUpload. The service held every
byte, and only the closing request was refused: a GIF's end was not told from its first part
(its trailer byte may appear inside its image data), and a first part that is not a JPEG's or
PNG's rows or a video's frames was not looked at. Now a GIF's end is found by walking its
blocks, and a first part that holds a whole picture of any kind is looked at.

The real catalog's routes, driven in-process; benign pictures only.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image

from schoolgate.addons.uploads import UploadInspector
from schoolgate.media.containers import whole_gif
from tests.support.imagery import skimage_photo
from tests.test_addons_inprocess import catalog_upload_addon
from tests.test_video_uploads_unfinished import _send, _status, _x_upload

BANKED = skimage_photo("astronaut").convert("RGB").resize((320, 320))
OTHER = skimage_photo("coffee").convert("RGB").resize((320, 320))


def animation(frames: list[Image.Image], fmt: str) -> bytes:
    buffer = io.BytesIO()
    frames[0].save(buffer, fmt, save_all=True, append_images=frames[1:], duration=500, loop=0)
    return buffer.getvalue()


@pytest.fixture
def addon(data_dir: Path, tmp_path: Path) -> Iterator[UploadInspector]:
    with catalog_upload_addon(data_dir, tmp_path, BANKED) as inspector:
        yield inspector


@pytest.mark.parametrize("fmt", ["GIF", "WEBP"])
def test_x_appends_of_a_whole_banked_animation_without_finalize_are_stopped(
    addon: UploadInspector, fmt: str
) -> None:
    data = animation([OTHER, BANKED], fmt)
    codes = _x_upload(addon, "710511363345355001", data, 2)
    assert codes == [200, 403]  # the APPEND that makes it whole


@pytest.mark.parametrize("fmt", ["GIF", "WEBP"])
def test_x_appends_of_another_animation_go_through(addon: UploadInspector, fmt: str) -> None:
    data = animation([OTHER, OTHER.rotate(180)], fmt)
    assert _x_upload(addon, "710511363345355002", data, 2) == [200, 200]


def test_a_dropbox_session_started_with_a_whole_banked_gif_is_stopped(
    addon: UploadInspector,
) -> None:
    for data, expected in ((animation([OTHER, BANKED], "GIF"), 403),
                           (animation([OTHER, OTHER.rotate(180)], "GIF"), 200)):  # fmt: skip
        flow = _send(addon, "content.dropboxapi.com", "/2/files/upload_session/start", data,
                     Dropbox_API_Arg=json.dumps({"close": False}),
                     Content_Type="application/octet-stream")  # fmt: skip
        assert _status(flow) == expected


def test_a_gifs_end_is_found_by_its_blocks_not_by_its_trailer_byte() -> None:
    data = animation([BANKED, OTHER], "GIF")
    assert whole_gif(data)
    assert whole_gif(data + b"trailing bytes after the picture")
    # The trailer byte (0x3B) appears inside the image data long before the end.
    inside = data.index(b"\x3b", 800)
    assert inside < len(data) - 1
    for cut in (inside + 1, len(data) // 2, len(data) - 1, 13):
        assert not whole_gif(data[:cut]), cut
    assert not whole_gif(b"GIF89a")
    assert not whole_gif(b"\x89PNG\r\n\x1a\n")
