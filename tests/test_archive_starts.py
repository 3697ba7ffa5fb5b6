"""A banked picture inside an archive sent in chunks, the archive's end sent from elsewhere
(adversarial passes a70 F8, a71 N1-N3): a reader finds a ZIP's files from its central directory,
at its end, so the first part of the upload showed nothing, and nothing was refused while the
school sent every byte up to the end of the picture's entry; the phone then sent the last 77
bytes (a tar's end blocks alike): 24 of 24 reached the service. Then a tar's file cut short, a
streamed ZIP's entries (their sizes after their data) and a gzipped tar were not read, and in
uploads of undeclared size a file could start and end between two looks (72 of 222, and 47 of
80 with the end from the phone). An archive's first part is now read from its start at every
chunk, its files not yet whole at the last look judged. The real catalog's tus and Google
resumable routes, driven in-process; benign photos only."""

from __future__ import annotations

import gzip
import io
import tarfile
import zipfile
import zlib

import pytest
from PIL import Image

from schoolgate.addons.uploads import UploadInspector
from schoolgate.endpoints.archive_starts import archive_start_members
from schoolgate.endpoints.extract import ExtractLimits
from tests.conftest import encode
from tests.test_google_sessions import _send
from tests.test_tus_uploads import _create, _patches

CHUNK = 16 * 1024
KINDS = ["zip-stored", "zip-deflated", "zip-streamed", "tar", "tar.gz"]


class _Unseekable(io.RawIOBase):
    """A stream zipfile cannot seek back in: it writes each entry's sizes after its data."""

    def __init__(self) -> None:
        self.data = bytearray()

    def writable(self) -> bool:
        return True

    def write(self, data: bytes) -> int:  # type: ignore[override]
        self.data += data
        return len(data)


def _zip(files: dict[str, bytes], kind: str) -> bytes:
    method = zipfile.ZIP_STORED if kind == "zip-stored" else zipfile.ZIP_DEFLATED
    stream: io.BytesIO | _Unseekable = _Unseekable() if kind == "zip-streamed" else io.BytesIO()
    with zipfile.ZipFile(stream, "w") as archive:
        for name, data in files.items():
            archive.writestr(name, data, compress_type=method)
    return bytes(stream.data) if isinstance(stream, _Unseekable) else stream.getvalue()


def _tar(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as archive:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def _files(picture: bytes) -> dict[str, bytes]:
    """The picture among other files (a tar's picture first was whole before the first look)."""
    return {"notes.txt": b"holiday notes\n" * 300, "photo.jpg": picture,
            "more.txt": b"and more notes\n" * 4000}  # fmt: skip


def _archive(kind: str, picture: bytes) -> tuple[bytes, int]:
    """The archive, and how much of it the school sends: up to the end of the picture's entry
    (the rest, from the phone, is not sent here)."""
    files = _files(picture)
    if kind.startswith("zip"):
        data = _zip(files, kind)
        return data, data.find(b"PK\x03\x04", data.find(b"photo.jpg"))  # the next entry
    data = _tar(files)
    end = data.find(picture) + len(picture)
    if kind == "tar":
        return data, end
    zipped = gzip.compress(data, mtime=0)
    inflater, inflated = zlib.decompressobj(zlib.MAX_WBITS | 16), 0
    for at in range(0, len(zipped), 256):  # where the gzip stream has given the picture whole
        inflated += len(inflater.decompress(zipped[at : at + 256]))
        if inflated >= end:
            return zipped, at + 256
    return zipped, len(zipped)


def _tus(addon: UploadInspector, upload: str, data: bytes, school: int) -> list[int]:
    assert _create(addon, upload, Upload_Length=str(len(data))) == 201
    return _patches(addon, upload, data[:school], list(range(CHUNK, school, CHUNK)))


def _unsized(addon: UploadInspector, upload: str, data: bytes, school: int) -> list[int]:
    """A Google resumable upload that never says its size (`bytes a-b/*`)."""
    path = f"/upload/drive/v3/files?uploadType=resumable&upload_id={upload}"
    return [_send(addon, data[at : min(at + CHUNK, school)],
                  f"bytes {at}-{min(at + CHUNK, school) - 1}/*", path=path)
            for at in range(0, school, CHUNK)]  # fmt: skip


FORMS = {"tus": _tus, "unsized": _unsized}


def _sent(addon: UploadInspector, photo: Image.Image, kind: str, form: str) -> list[int]:
    """The answers to an archive holding `photo`, sent in `form` up to its picture's end."""
    data, school = _archive(kind, encode(photo, "JPEG", quality=90))
    return FORMS[form](addon, f"{id(photo)}-{kind}-{form}".replace(".", ""), data, school)


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("kind", KINDS)
def test_a_banked_picture_in_an_archive_is_refused_before_its_end(
    catalog_addon: UploadInspector, benign_photos: dict[str, Image.Image], kind: str, form: str
) -> None:
    codes = _sent(catalog_addon, benign_photos["chelsea"], kind, form)
    assert 403 in codes, codes


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("kind", KINDS)
def test_an_innocent_picture_in_an_archive_goes_through(
    catalog_addon: UploadInspector, benign_photos: dict[str, Image.Image], kind: str, form: str
) -> None:
    codes = _sent(catalog_addon, benign_photos["coffee"], kind, form)
    assert set(codes) == {200}, codes


@pytest.mark.parametrize("kind", KINDS)
def test_an_archives_first_part_gives_its_files_whole_and_cut(kind: str) -> None:
    picture = bytes(range(256)) * 200
    data, school = _archive(kind, picture)
    limits = ExtractLimits()
    members = dict(archive_start_members(data[:school], limits))
    assert members["notes.txt"] == b"holiday notes\n" * 300
    assert members["photo.jpg"].startswith(picture[: len(picture) // 2])
    half = dict(archive_start_members(data[: school * 2 // 3], limits))
    assert picture.startswith(half["photo.jpg"][:1000])
    # Files already whole at the last look are not given again.
    later = dict(archive_start_members(data[:school], limits, since=school * 2 // 3))
    assert "notes.txt" not in later
    assert "photo.jpg" in later
