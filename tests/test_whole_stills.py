"""A whole BMP, TIFF, HEIC or AVIF in an upload session's first request (adversarial pass a70
F4): a Dropbox upload_session/start, SharePoint's StartUpload or one X APPEND holding the whole
banked picture was forwarded, and only the closing request refused (SharePoint refused nothing):
15 of 15 reached the service. GIFs, WebPs, JPEGs and PNGs were judged at once. The real catalog's
Dropbox route, driven in-process; benign photos only."""

from __future__ import annotations

import io
from typing import Any

import pillow_heif
import pytest
from PIL import Image

from schoolgate.addons.uploads import UploadInspector
from schoolgate.media.containers import whole_still
from tests.test_session_starts import _dropbox_start

pillow_heif.register_heif_opener()

FORMATS: dict[str, dict[str, Any]] = {
    "BMP": {},
    "TIFF": {},
    "TIFF-LZW": {"compression": "tiff_lzw"},
    "HEIF": {"quality": 90},
    "AVIF": {"quality": 90},
}


def _encoded(photo: Image.Image, name: str) -> bytes:
    buffer = io.BytesIO()
    photo.save(buffer, format=name.split("-")[0], **FORMATS[name])
    return buffer.getvalue()


@pytest.mark.parametrize("name", FORMATS)
def test_a_session_started_with_a_whole_banked_picture_is_blocked(
    catalog_addon: UploadInspector, benign_photos: dict[str, Image.Image], name: str
) -> None:
    assert _dropbox_start(catalog_addon, _encoded(benign_photos["chelsea"], name)) == 403


@pytest.mark.parametrize("name", FORMATS)
def test_a_session_started_with_an_innocent_picture_goes_through(
    catalog_addon: UploadInspector, benign_photos: dict[str, Image.Image], name: str
) -> None:
    assert _dropbox_start(catalog_addon, _encoded(benign_photos["coffee"], name)) == 200


@pytest.mark.parametrize("name", FORMATS)
def test_a_picture_is_whole_only_with_all_its_bytes(
    benign_photos: dict[str, Image.Image], name: str
) -> None:
    data = _encoded(benign_photos["coffee"], name)
    assert whole_still(data)
    assert whole_still(data + b"\0" * 100)  # whatever follows
    assert not any(whole_still(data[:cut]) for cut in (8, 100, len(data) // 2, len(data) - 1))
    assert not whole_still(b"BM" + bytes(40))
    assert not whole_still(b"II*\0" + bytes(4))
