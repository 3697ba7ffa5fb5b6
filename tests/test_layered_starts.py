"""A banked picture inside a compressed file or an archive inside an archive, sent in chunks
(adversarial pass a72 B, C): a .tar.xz, a .tar.zst, a tar split over two gzip members and a ZIP
inside a ZIP were refused only at their last chunk, after the whole picture had reached the
service; on X a .jpg.gz, a .tar.bz2, a ZIP in a ZIP, a tar in a ZIP or a ZIP in a tar had every
APPEND forwarded and only FINALIZE refused (the phone could send FINALIZE). And a banked JPEG
after other bytes in a Dropbox upload_session/start went through whole. An archive's or a
compressed file's first part is now read through every layer as far as its bytes go, and a first
part that is no picture has its pictures carved. The real catalog's tus, Google, X and Dropbox
routes, driven in-process; benign photos only."""

from __future__ import annotations

import bz2
import gzip
import lzma
import os
import sys
from collections.abc import Callable

import pytest
from PIL import Image

from schoolgate.addons.uploads import UploadInspector
from schoolgate.endpoints.archive_starts import archive_start_members, is_archive_start
from schoolgate.endpoints.extract import ExtractLimits
from tests.conftest import encode
from tests.test_archive_starts import CHUNK, FORMS, _files, _tar, _zip
from tests.test_session_starts import _dropbox_start
from tests.test_video_uploads_unfinished import X_PATH, X, _send, _status, _x_upload

if sys.version_info >= (3, 14):
    from compression import zstd
else:
    from backports import zstd

PICTURE = "photo.jpg"


def _two_gzip_members(data: bytes) -> bytes:
    """A tar split over two gzip members (`cat a.gz b.gz`), the picture in the second."""
    return gzip.compress(data[:2048], mtime=0) + gzip.compress(data[2048:], mtime=0)


def _zip_in_zip(files: dict[str, bytes]) -> bytes:
    inner = _zip(files, "zip-deflated")
    return _zip({"readme.txt": b"read me\n" * 500, "inner.zip": inner,
                 "after.txt": b"after\n" * 3000}, "zip-stored")  # fmt: skip


def _tar_in_zip(files: dict[str, bytes]) -> bytes:
    return _zip({"readme.txt": b"read me\n" * 500, "inner.tar": _tar(files)}, "zip-deflated")


def _zip_in_tar(files: dict[str, bytes]) -> bytes:
    return _tar({"readme.txt": b"read me\n" * 500, "inner.zip": _zip(files, "zip-streamed")})


def _zstd(data: bytes) -> bytes:
    return zstd.compress(data)


LAYERED: dict[str, Callable[[dict[str, bytes]], bytes]] = {
    "tar.xz": lambda files: lzma.compress(_tar(files)),
    "tar.bz2": lambda files: bz2.compress(_tar(files)),
    "tar.zst": lambda files: _zstd(_tar(files)),
    "tar.gz-two-members": lambda files: _two_gzip_members(_tar(files)),
    "zip-in-zip": _zip_in_zip,
    "tar-in-zip": _tar_in_zip,
    "zip-in-tar": _zip_in_tar,
}


def _whole_from(data: bytes, picture: bytes) -> int:
    """The shortest prefix, in whole chunks, whose files include the picture whole: what the
    school sends (the rest, from the phone, is not sent here)."""
    limits = ExtractLimits()
    for end in range(CHUNK, len(data) + CHUNK, CHUNK):
        if any(file == picture for _, file in _members(data[:end], limits)):
            return min(end, len(data))
    raise AssertionError("the picture is never whole")


def _members(data: bytes, limits: ExtractLimits) -> list[tuple[str, bytes]]:
    return archive_start_members(data, limits)


@pytest.mark.parametrize("kind", LAYERED)
def test_a_layered_archives_first_part_gives_the_picture(kind: str) -> None:
    picture = encode(Image.new("RGB", (64, 48), "teal"), "PNG") + os.urandom(60_000)
    files = _files(picture)
    data = LAYERED[kind](files)
    assert is_archive_start(data)
    school = _whole_from(data, picture)
    limits = ExtractLimits()
    # Cut inside the picture: its first bytes are given (its rows are looked at).
    earlier = dict(_members(data[: school - CHUNK], limits)) if school > CHUNK else {}
    shown = [file for name, file in earlier.items() if name.endswith(PICTURE)]
    assert not shown or picture.startswith(shown[0][:1000])
    # Files whole at the last look are not given again; the picture, grown since, is.
    later = archive_start_members(data[:school], limits, since=max(0, school - CHUNK))
    assert [name for name, _ in later if name.endswith(PICTURE)], later
    whole_before = {name for name, file in earlier.items() if file in files.values()}
    assert not whole_before & {name for name, _ in later}


def test_a_compressed_picture_is_its_own_file() -> None:
    # Random bytes after it: zstd gives a block that does not compress as it comes.
    picture = encode(Image.new("RGB", (64, 48), "teal"), "JPEG") + os.urandom(200_000)
    for packed in (gzip.compress(picture), lzma.compress(picture), _zstd(picture)):
        files = archive_start_members(packed[: len(packed) * 3 // 4], ExtractLimits())
        assert len(files) == 1
        assert len(files[0][1]) > len(picture) // 2
        assert picture.startswith(files[0][1])
    # bzip2 gives nothing of a block (900 kB) before its end: a picture in it is read whole.
    assert archive_start_members(bz2.compress(picture), ExtractLimits()) == [("", picture)]


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("kind", LAYERED)
def test_a_banked_picture_in_a_layered_archive_is_refused_before_its_end(
    catalog_addon: UploadInspector, benign_photos: dict[str, Image.Image], kind: str, form: str
) -> None:
    picture = encode(benign_photos["chelsea"], "JPEG", quality=90)
    data = LAYERED[kind](_files(picture))
    school = _whole_from(data, picture)
    codes = FORMS[form](catalog_addon, f"/files/layered-{kind}-{form}", data, school)
    assert 403 in codes, codes


@pytest.mark.parametrize("kind", LAYERED)
def test_an_innocent_picture_in_a_layered_archive_goes_through(
    catalog_addon: UploadInspector, benign_photos: dict[str, Image.Image], kind: str
) -> None:
    data = LAYERED[kind](_files(encode(benign_photos["coffee"], "JPEG", quality=90)))
    codes = FORMS["tus"](catalog_addon, f"/files/innocent-{kind}", data, len(data))
    assert set(codes) == {200}, codes


def _x_appends(addon: UploadInspector, media_id: str, data: bytes, parts: int) -> list[int]:
    """INIT, the APPENDs, then FINALIZE."""
    codes = _x_upload(addon, media_id, data, parts, media_type="image/jpeg")
    finalize = _send(addon, X, f"{X_PATH}?command=FINALIZE&media_id={media_id}", b"")
    return [*codes, _status(finalize)]


X_CONTAINERS: dict[str, Callable[[bytes], bytes]] = {
    "jpg.gz": gzip.compress,
    "jpg.xz": lzma.compress,
    "tar.bz2": lambda picture: bz2.compress(_tar({PICTURE: picture})),
    "zip-in-zip": lambda picture: _zip(
        {"inner.zip": _zip({PICTURE: picture}, "zip-deflated")}, "zip-deflated"
    ),
    "tar-in-zip": lambda picture: _zip({"inner.tar": _tar({PICTURE: picture})}, "zip-stored"),
    "zip-in-tar": lambda picture: _tar({"inner.zip": _zip({PICTURE: picture}, "zip-stored")}),
}


@pytest.mark.parametrize("kind", X_CONTAINERS)
def test_x_appends_of_a_banked_picture_in_a_container_are_refused_before_finalize(
    catalog_addon: UploadInspector, benign_photos: dict[str, Image.Image], kind: str
) -> None:
    data = X_CONTAINERS[kind](encode(benign_photos["chelsea"], "JPEG", quality=90))
    codes = _x_appends(catalog_addon, "710511363345350001", data, 4)
    assert 403 in codes[:4], codes


@pytest.mark.parametrize("kind", X_CONTAINERS)
def test_x_appends_of_an_innocent_picture_in_a_container_go_through(
    catalog_addon: UploadInspector, benign_photos: dict[str, Image.Image], kind: str
) -> None:
    data = X_CONTAINERS[kind](encode(benign_photos["coffee"], "JPEG", quality=90))
    assert _x_appends(catalog_addon, "710511363345350002", data, 4)[:4] == [200] * 4


def _after_junk(picture: bytes) -> bytes:
    return bytes(range(256)) * 4 + picture


def test_a_banked_picture_after_other_bytes_in_a_dropbox_start_is_refused(
    catalog_addon: UploadInspector, benign_photos: dict[str, Image.Image]
) -> None:
    banked = _after_junk(encode(benign_photos["chelsea"], "JPEG", quality=90))
    assert _dropbox_start(catalog_addon, banked) == 403
    assert _dropbox_start(catalog_addon, banked[: len(banked) * 9 // 10]) == 403
    innocent = _after_junk(encode(benign_photos["coffee"], "JPEG", quality=90))
    assert _dropbox_start(catalog_addon, innocent) == 200


def test_a_banked_picture_after_other_bytes_is_refused_before_its_end(
    catalog_addon: UploadInspector, benign_photos: dict[str, Image.Image]
) -> None:
    data = _after_junk(encode(benign_photos["chelsea"], "JPEG", quality=90))
    codes = FORMS["tus"](catalog_addon, "/files/after-junk", data, len(data))
    assert 403 in codes[:-1], codes
