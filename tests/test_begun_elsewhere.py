"""An upload begun on the phone's own data and continued at school (adversarial pass a70 F2), or
sent last chunk first (F5). With a declared size, a chunk past the bytes seen here was kept
while its start might follow, and forwarded: the phone sent the first 2 KiB of a banked picture,
the school the rest, and only the chunk that completed it was refused (the service held 65-99.9%
of it, the phone then sent the last chunk). X's segments sent last to first left all but the
first with the service. A chunk whose earlier bytes are not here now waits a little for them
(a client sending chunks side by side sends them soon), then is refused, and so is the rest of
its upload.

The real catalog's Google resumable and X routes, driven in-process; benign photos only."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from mitmproxy import http
from PIL import Image

from schoolgate.addons.uploads import UploadInspector
from tests.conftest import encode
from tests.test_addons_inprocess import run_upload, upload_flow
from tests.test_reassembly import x_append

DRIVE = "www.googleapis.com"
SESSION = "/upload/drive/v3/files?uploadType=resumable&upload_id={}"
X = "upload.twitter.com"
X_PATH = "/1.1/media/upload.json"
CHUNK = 16 * 1024


def _drive_flow(data: bytes, start: int, total: int, upload: str) -> Any:
    end = start + len(data) - 1
    flow: Any = upload_flow(DRIVE, SESSION.format(upload), data, method="PUT",
                            content_range=f"bytes {start}-{end}/{total}")  # fmt: skip
    flow.client_conn.peername = ("10.20.0.5", 50000)
    return flow


def _status(flow: Any) -> int:
    return flow.response.status_code if flow.response else 200


def _drive(addon: UploadInspector, data: bytes, start: int, total: int, upload: str) -> int:
    flow = _drive_flow(data, start, total, upload)
    run_upload(addon, flow)
    return _status(flow)


def test_an_upload_begun_on_the_phone_is_refused_at_its_first_chunk_here(
    catalog_addon: UploadInspector, benign_photos: dict[str, Image.Image]
) -> None:
    banned = encode(benign_photos["chelsea"], "JPEG", quality=90)
    total, head = len(banned), 2048  # the first 2 KiB went from the phone's own data
    codes = [_drive(catalog_addon, banned[at : at + CHUNK], at, total, "phone")
             for at in range(head, total, CHUNK)]  # fmt: skip
    assert set(codes) == {403}, codes


def test_an_innocent_upload_sent_from_its_start_goes_through(
    catalog_addon: UploadInspector, benign_photos: dict[str, Image.Image]
) -> None:
    photo = encode(benign_photos["coffee"], "JPEG", quality=90)
    codes = [_drive(catalog_addon, photo[at : at + CHUNK], at, len(photo), "school")
             for at in range(0, len(photo), CHUNK)]  # fmt: skip
    assert set(codes) == {200}, codes


def test_chunks_sent_side_by_side_wait_for_the_start(
    catalog_addon: UploadInspector, benign_photos: dict[str, Image.Image]
) -> None:
    """The second chunk arrives first; the first follows while it waits: both go on."""
    photo = encode(benign_photos["coffee"], "JPEG", quality=90)
    total, half = len(photo), len(photo) // 2
    second = _drive_flow(photo[half:], half, total, "side")
    first = _drive_flow(photo[:half], 0, total, "side")

    async def send() -> None:
        catalog_addon.requestheaders(second)
        catalog_addon.requestheaders(first)

        async def later() -> None:
            await asyncio.sleep(0.1)
            await catalog_addon.request(first)

        await asyncio.gather(catalog_addon.request(second), later())

    catalog_addon.start_wait_s = 3.0
    asyncio.run(send())
    assert (_status(first), _status(second)) == (200, 200)


def _x(addon: UploadInspector, body: bytes, content_type: str, path: str = X_PATH) -> Any:
    flow: Any = upload_flow(X, path, body, method="POST", Content_Type=content_type)
    flow.client_conn.peername = ("10.20.0.5", 50000)
    run_upload(addon, flow)
    return flow


def test_x_segments_sent_last_to_first_are_refused(
    catalog_addon: UploadInspector, benign_photos: dict[str, Image.Image]
) -> None:
    banned = encode(benign_photos["chelsea"], "PNG")
    init = _x(catalog_addon, b"", "application/x-www-form-urlencoded",
              f"{X_PATH}?command=INIT&total_bytes={len(banned)}&media_type=image/png")  # fmt: skip
    assert init.response is None
    reply = json.dumps({"media_id": 70, "media_id_string": "70"}).encode()
    init.response = http.Response.make(202, reply, {"Content-Type": "application/json"})
    catalog_addon.response(init)
    pieces = [banned[at : at + 64 * 1024] for at in range(0, len(banned), 64 * 1024)]
    assert len(pieces) >= 3
    codes = []
    for index in reversed(range(len(pieces))):
        content_type, body = x_append("70", index, pieces[index])
        codes.append(_status(_x(catalog_addon, body, content_type)))
    assert set(codes) == {403}, codes
