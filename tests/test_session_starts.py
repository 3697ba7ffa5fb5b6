"""What the first request of an upload session carries (adversarial pass a49 F7, F8): the
service stores it as it arrives, before the session has an id this gateway could key it by, and
the rest of the upload may be sent from the phone's own data. A Dropbox upload_session/start
holding the whole banked picture was forwarded unjudged; a tus creation POST holding its first
95% too. The real catalog's Dropbox and Vimeo routes, driven in-process."""

from __future__ import annotations

import json
from typing import Any

import pytest
from PIL import Image

from schoolgate.addons.uploads import UploadInspector
from tests.conftest import encode
from tests.test_addons_inprocess import run_upload, upload_flow

DROPBOX = "content.dropboxapi.com"
TUS = "files.tus.vimeo.com"


def _status(
    catalog_addon: UploadInspector, host: str, path: str, body: bytes, **headers: str
) -> int:
    flow: Any = upload_flow(host, path, body, method="POST", **headers)
    flow.client_conn.peername = ("10.20.0.5", 50000)
    run_upload(catalog_addon, flow)
    return flow.response.status_code if flow.response else 200


def _dropbox_start(catalog_addon: UploadInspector, body: bytes) -> int:
    """A start that leaves the session open: appends and the finish may come from elsewhere."""
    return _status(catalog_addon, DROPBOX, "/2/files/upload_session/start", body,
                   Dropbox_API_Arg=json.dumps({"close": False}),
                   Content_Type="application/octet-stream")  # fmt: skip


def _tus_create(catalog_addon: UploadInspector, body: bytes, total: int) -> int:
    return _status(catalog_addon, TUS, "/files/", body, Tus_Resumable="1.0.0",
                   Upload_Length=str(total),
                   Content_Type="application/offset+octet-stream")  # fmt: skip


@pytest.mark.parametrize("share", [100, 95, 90])
def test_a_dropbox_session_started_with_a_banked_picture_is_blocked(
    catalog_addon: UploadInspector, benign_photos: dict[str, Image.Image], share: int
) -> None:
    banned = encode(benign_photos["chelsea"], "JPEG")
    assert _dropbox_start(catalog_addon, banned[: len(banned) * share // 100]) == 403


@pytest.mark.parametrize("share", [95, 90])
def test_a_tus_upload_created_with_most_of_a_banked_picture_is_blocked(
    catalog_addon: UploadInspector, benign_photos: dict[str, Image.Image], share: int
) -> None:
    banned = encode(benign_photos["chelsea"], "JPEG")
    assert _tus_create(catalog_addon, banned[: len(banned) * share // 100], len(banned)) == 403


def test_innocent_first_requests_go_through(
    catalog_addon: UploadInspector, benign_photos: dict[str, Image.Image]
) -> None:
    photo = encode(benign_photos["coffee"], "JPEG")
    assert _dropbox_start(catalog_addon, photo) == 200
    assert _dropbox_start(catalog_addon, photo[: len(photo) * 95 // 100]) == 200
    assert _tus_create(catalog_addon, photo[: len(photo) * 95 // 100], len(photo)) == 200
