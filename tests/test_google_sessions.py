"""Google resumable uploads of unknown size (adversarial pass a40 F3): with `Content-Range:
bytes a-b/*` every chunk was forwarded, the one that completes a banked picture too, and only
the request that ends the upload (no data) was judged; a second `upload_id`, or a PATCH, ended
the session without it. The real catalog's Drive routes, driven in-process."""

from __future__ import annotations

import base64
from typing import Any

import pytest
from PIL import Image

from schoolgate.addons.uploads import UploadInspector
from schoolgate.endpoints.extract import whole_picture
from schoolgate.endpoints.reassembly import Chunk, UploadSessions
from tests.conftest import encode
from tests.test_addons_inprocess import run_upload, upload_flow

DRIVE = "www.googleapis.com"
SESSION = "/upload/drive/v3/files?uploadType=resumable&upload_id=ABC"


def _send(catalog_addon: UploadInspector, body: bytes, content_range: str, *, method: str = "PUT",
          path: str = SESSION) -> int:  # fmt: skip
    flow: Any = upload_flow(DRIVE, path, body, method=method, content_range=content_range)
    flow.client_conn.peername = ("10.20.0.5", 50000)
    run_upload(catalog_addon, flow)
    return flow.response.status_code if flow.response else 200


def _chunks(data: bytes, size: int) -> list[tuple[bytes, str]]:
    return [(data[a : a + size], f"bytes {a}-{min(a + size, len(data)) - 1}/*")
            for a in range(0, len(data), size)]  # fmt: skip


def test_the_chunk_that_completes_a_banked_picture_is_blocked(
    catalog_addon: UploadInspector, benign_photos: dict[str, Image.Image]
) -> None:
    banned = encode(benign_photos["chelsea"], "JPEG", quality=90)
    codes = [
        _send(catalog_addon, body, span) for body, span in _chunks(banned, len(banned) // 3 + 1)
    ]
    assert codes == [200, 200, 403]


def test_an_innocent_upload_of_unknown_size_goes_through_and_ends(
    catalog_addon: UploadInspector, benign_photos: dict[str, Image.Image]
) -> None:
    photo = encode(benign_photos["coffee"], "JPEG", quality=90)
    codes = [_send(catalog_addon, body, span) for body, span in _chunks(photo, len(photo) // 3 + 1)]
    codes.append(_send(catalog_addon, b"", f"bytes */{len(photo)}"))
    assert codes == [200, 200, 200, 200]


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("PUT", SESSION + "&upload_id=DECOY"),  # the service reads the first upload_id
        ("PATCH", SESSION),
        ("POST", SESSION),
    ],
)
def test_a_banked_upload_cannot_be_ended_around_the_filter(
    catalog_addon: UploadInspector, benign_photos: dict[str, Image.Image], method: str, path: str
) -> None:
    """The request that ends the upload (no data, `bytes */N`) is refused whichever way it names
    the session. A Netpbm picture's first part is looked at as a body is (a72): the chunk that
    completes it is refused, and the session with it."""
    banned = encode(benign_photos["chelsea"], "PPM")
    codes = [
        _send(catalog_addon, body, span) for body, span in _chunks(banned, len(banned) // 2 + 1)
    ]
    assert codes == [200, 403]
    assert _send(catalog_addon, b"", f"bytes */{len(banned)}", method=method, path=path) == 403


def test_an_interim_prefix_is_judged_once_it_is_whole_and_again_only_when_much_longer() -> None:
    sessions = UploadSessions()
    picture = (
        b"\xff\xd8\xff\xe0"
        + (16).to_bytes(2, "big")
        + bytes(14)
        + b"\xff\xda"
        + bytes(100)
        + b"\xff\xd9"
    )
    assert whole_picture(picture)
    assert not whole_picture(picture[:-1])
    sessions.add("c", "drive", Chunk("s", picture[:50], offset=0))
    assert sessions.interim("c", "drive", "s", whole_picture) is None
    sessions.add("c", "drive", Chunk("s", picture[50:], offset=50))
    assert sessions.interim("c", "drive", "s", whole_picture) == picture
    sessions.add("c", "drive", Chunk("s", bytes(10), offset=len(picture)))
    assert sessions.interim("c", "drive", "s", whole_picture) is None  # 8% longer: not again
    sessions.add("c", "drive", Chunk("s", bytes(100), offset=len(picture) + 10))
    assert sessions.interim("c", "drive", "s", whole_picture) is not None


@pytest.mark.parametrize(
    "path",
    [
        "/resumable/upload/drive/v3/files?uploadType=resumable&upload_id=R1",
        "/upload/storage/v1/b/bucket/o?uploadType=resumable&upload_id=S1",
        "/resumable/upload/storage/v1/b/bucket/o?uploadType=resumable&upload_id=S2",
    ],
)
def test_every_resumable_session_path_is_a_session(
    catalog_addon: UploadInspector, benign_photos: dict[str, Image.Image], path: str
) -> None:
    """a50 F7, F8: the discovery documents' /resumable/upload/ path and Cloud Storage's upload
    API on the same host were forwarded as plain requests: the first 869 bytes sent from the
    phone's own data and the rest at school got the banked picture through, and an innocent
    picture's first chunk was refused as a cut-off JPEG."""
    banned = encode(benign_photos["chelsea"], "JPEG", quality=90)
    total = len(banned)
    assert _send(catalog_addon, banned[869:], f"bytes 869-{total - 1}/{total}", path=path) == 403
    photo = encode(benign_photos["coffee"], "JPEG", quality=90)
    half, total = len(photo) // 2, len(photo)
    other = path.replace("_id=", "_id=innocent")
    assert _send(catalog_addon, photo[:half], f"bytes 0-{half - 1}/{total}", path=other) == 200
    assert (
        _send(catalog_addon, photo[half:], f"bytes {half}-{total - 1}/{total}", path=other) == 200
    )


@pytest.mark.parametrize("spelling", ["base64", "hex"])
def test_a_banked_picture_spelt_as_text_under_a_form_label_is_blocked(
    catalog_addon: UploadInspector, benign_photos: dict[str, Image.Image], spelling: str
) -> None:
    """Adversarial pass a51 F1: `curl --data-binary @photo.b64` labels the body a URL-encoded
    form, and Drive's uploadType=media stores it as sent: the banked picture's base64 went
    through (labelled text/plain it was blocked)."""
    banned = encode(benign_photos["chelsea"], "JPEG", quality=90)
    body = base64.b64encode(banned) if spelling == "base64" else banned.hex().encode()
    path = "/upload/drive/v3/files?uploadType=media"
    flow: Any = upload_flow(DRIVE, path, body, method="POST",
                            content_type="application/x-www-form-urlencoded")  # fmt: skip
    flow.client_conn.peername = ("10.20.0.5", 50000)
    run_upload(catalog_addon, flow)
    assert flow.response is not None
    assert flow.response.status_code == 403


@pytest.mark.parametrize("spelling", ["base64", "hex"])
def test_a_banked_picture_spelt_as_text_in_a_sessions_chunks_is_blocked(
    catalog_addon: UploadInspector, benign_photos: dict[str, Image.Image], spelling: str
) -> None:
    """Adversarial pass a52 F7: the text of a banked picture sent in a resumable session's
    chunks went through (18 of 18 on Drive, OneDrive and Dropbox); the reassembled bytes were
    judged as a picture, and text is none. They are now read as a body is."""
    banned = encode(benign_photos["chelsea"], "JPEG", quality=90)
    text = base64.encodebytes(banned) if spelling == "base64" else banned.hex().encode()
    size = len(text) // 3 + 1
    spans = [(text[a : a + size], f"bytes {a}-{min(a + size, len(text)) - 1}/{len(text)}")
             for a in range(0, len(text), size)]  # fmt: skip
    assert [_send(catalog_addon, body, span) for body, span in spans] == [200, 200, 403]
