"""A banked picture inside a ZIP or a tar sent in chunks, the archive's end sent from elsewhere
(adversarial pass a70 F8): a reader finds a ZIP's files from its central directory, at its end,
so the first part of the upload showed nothing, and nothing was refused while the school sent
every byte up to the end of the picture's entry; the phone then sent the last 77-132 bytes (a
tar's end blocks alike): 24 of 24 reached the service. The files an archive's first part holds
are now looked at as it grows. The real catalog's tus route (Vimeo), driven in-process."""

from __future__ import annotations

import io
import tarfile
import zipfile

import pytest
from PIL import Image

from schoolgate.addons.uploads import UploadInspector
from tests.conftest import encode
from tests.test_tus_uploads import _create, _patches

CHUNK = 16 * 1024


def _zip(files: dict[str, bytes], method: int) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in files.items():
            archive.writestr(name, data, compress_type=method)
    return buffer.getvalue()


def _tar(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as archive:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def _archive(kind: str, picture: bytes) -> tuple[bytes, int]:
    """The archive, and where the part sent from elsewhere starts (its end)."""
    files = {"notes.txt": b"holiday notes\n" * 200, "photo.jpg": picture}
    if kind == "tar":
        data = _tar(files)
        return data, data.rfind(picture[-512:]) + 512  # the end blocks after the picture
    data = _zip(files, zipfile.ZIP_STORED if kind == "zip-stored" else zipfile.ZIP_DEFLATED)
    return data, data.rfind(b"PK\x01\x02")  # the central directory


def _codes(addon: UploadInspector, upload: str, data: bytes, school: int) -> list[int]:
    assert _create(addon, upload, Upload_Length=str(len(data))) == 201
    return _patches(addon, upload, data[:school], list(range(CHUNK, school, CHUNK)))


@pytest.mark.parametrize("kind", ["zip-stored", "zip-deflated", "tar"])
def test_a_banked_picture_in_an_archive_is_refused_before_its_end(
    catalog_addon: UploadInspector, benign_photos: dict[str, Image.Image], kind: str
) -> None:
    data, school = _archive(kind, encode(benign_photos["chelsea"], "JPEG", quality=90))
    codes = _codes(catalog_addon, f"/files/{kind}", data, school)
    assert 403 in codes, codes


@pytest.mark.parametrize("kind", ["zip-stored", "zip-deflated", "tar"])
def test_an_innocent_picture_in_an_archive_goes_through(
    catalog_addon: UploadInspector, benign_photos: dict[str, Image.Image], kind: str
) -> None:
    data, school = _archive(kind, encode(benign_photos["coffee"], "JPEG", quality=90))
    assert set(_codes(catalog_addon, f"/files/i-{kind}", data, school)) == {200}
