"""A banked picture in a 7z archive, an lz4 stream or a brotli file (formats Python's standard
library does not read; brotli has no signature): sent whole, it went through as bytes with no
picture in them (adversarial pass a73 L1-L4). 7z and lz4 are now read by libarchive, brotli
tried on binary bodies. The real catalog's Drive upload, a resumable session and tus, driven
in-process; benign photos only."""

from __future__ import annotations

import os
import subprocess
from typing import Any

import brotli
import pytest
from PIL import Image

from schoolgate.addons.uploads import UploadInspector
from schoolgate.endpoints.archive_starts import archive_start_members
from schoolgate.endpoints.bodyscan import extract_items
from schoolgate.endpoints.extract import ExtractionError, ExtractLimits
from schoolgate.endpoints.libarchive import archive_members
from tests.conftest import encode
from tests.support.sevenzip import seven_zip
from tests.test_addons_inprocess import run_upload, upload_flow
from tests.test_archive_starts import FORMS, _tar
from tests.test_google_sessions import _send

DRIVE = "www.googleapis.com"
COMPRESSIONS = ["copy", "lzma2", "lzma1", "deflate", "bzip2", "ppmd"]


@pytest.mark.parametrize("compression", COMPRESSIONS)
def test_a_7z_archives_files_are_read(compression: str) -> None:
    files = {"notes.txt": b"holiday notes\n" * 500, "album/photo.jpg": os.urandom(200_000)}
    archive = seven_zip(files, compression)
    assert dict(archive_members(archive, ExtractLimits())) == files


def test_a_7z_bomb_is_refused_and_a_cut_one_gives_nothing() -> None:
    bomb = seven_zip({"zeros.bin": bytes(300_000_000)})
    assert len(bomb) < 100_000
    with pytest.raises(ExtractionError) as refused:
        archive_members(bomb, ExtractLimits())
    assert refused.value.reason == "encoding_bomb"
    archive = seven_zip({"photo.jpg": os.urandom(50_000)})
    # Its directory is at its end: a first part shows nothing (the docs say so).
    assert archive_members(archive[: len(archive) - 20], ExtractLimits()) == []


def test_a_picture_in_a_7z_in_a_body_is_an_item(benign_photos: dict[str, Image.Image]) -> None:
    picture = encode(benign_photos["coffee"], "JPEG", quality=90)
    archive = seven_zip({"readme.txt": b"hello\n", "photo.jpg": picture})
    items = extract_items(archive, "application/x-7z-compressed", ExtractLimits())
    assert [item.data for item in items] == [picture]
    assert items[0].locator.endswith("7z:photo.jpg")


def _drive(addon: UploadInspector, body: bytes) -> int:
    flow: Any = upload_flow(DRIVE, "/upload/drive/v3/files?uploadType=media", body,
                            method="POST", content_type="application/x-7z-compressed")  # fmt: skip
    flow.client_conn.peername = ("10.20.0.5", 50000)
    run_upload(addon, flow)
    return flow.response.status_code if flow.response else 200


@pytest.mark.parametrize("compression", ["copy", "lzma2"])
def test_a_banked_picture_in_a_7z_is_blocked(
    catalog_addon: UploadInspector, benign_photos: dict[str, Image.Image], compression: str
) -> None:
    banned = encode(benign_photos["chelsea"], "JPEG", quality=90)
    archive = seven_zip({"notes.txt": b"notes\n" * 100, "photo.jpg": banned}, compression)
    assert _drive(catalog_addon, archive) == 403
    innocent = encode(benign_photos["coffee"], "JPEG", quality=90)
    assert _drive(catalog_addon, seven_zip({"photo.jpg": innocent}, compression)) == 200


def test_a_banked_picture_in_a_7z_sent_in_chunks_is_refused_at_its_end(
    catalog_addon: UploadInspector, benign_photos: dict[str, Image.Image]
) -> None:
    banned = encode(benign_photos["chelsea"], "JPEG", quality=90)
    archive = seven_zip({"photo.jpg": banned})
    size = len(archive) // 3 + 1
    spans = [(archive[a : a + size], f"bytes {a}-{min(a + size, len(archive)) - 1}/{len(archive)}")
             for a in range(0, len(archive), size)]  # fmt: skip
    assert [_send(catalog_addon, body, span) for body, span in spans][-1] == 403


def _lz4(data: bytes, *flags: str) -> bytes:
    """`lz4` (the command, a test system dependency) of `data`."""
    return subprocess.run(["lz4", "-q", "-c", *flags], input=data, capture_output=True,
                          check=True).stdout  # fmt: skip


LZ4_FORMS = {"default": (), "64 KiB blocks": ("-B4",), "legacy": ("-l",)}


@pytest.mark.parametrize("form", LZ4_FORMS)
def test_a_banked_picture_in_an_lz4_tar_is_blocked(
    catalog_addon: UploadInspector, benign_photos: dict[str, Image.Image], form: str
) -> None:
    """a73 L1, L4: a .tar.lz4 or a legacy-format .jpg.lz4 went through whole, 108 of 108."""
    banned = encode(benign_photos["chelsea"], "JPEG", quality=90)
    assert _drive(catalog_addon, _lz4(_tar({"photo.jpg": banned}), *LZ4_FORMS[form])) == 403
    assert _drive(catalog_addon, _lz4(banned, *LZ4_FORMS[form])) == 403
    innocent = _tar(
        {
            "photo.jpg": encode(benign_photos["coffee"], "JPEG", quality=90),
            "drawing.png": encode(benign_photos["coffee"].crop((0, 0, 300, 200)), "PNG"),
        }
    )
    assert _drive(catalog_addon, _lz4(innocent, *LZ4_FORMS[form])) == 200  # a73 I2: refused


def test_a_banked_picture_in_a_brotli_file_is_blocked(
    catalog_addon: UploadInspector, benign_photos: dict[str, Image.Image]
) -> None:
    """a73 L2: a .tar.br (brotli has no signature) went through whole, 12 of 12."""
    banned = encode(benign_photos["chelsea"], "JPEG", quality=90)
    assert _drive(catalog_addon, brotli.compress(_tar({"photo.jpg": banned}))) == 403
    assert _drive(catalog_addon, brotli.compress(banned)) == 403
    innocent = encode(benign_photos["coffee"], "JPEG", quality=90)
    assert _drive(catalog_addon, brotli.compress(_tar({"photo.jpg": innocent}))) == 200


@pytest.mark.parametrize("form", LZ4_FORMS)
def test_an_lz4_tars_first_part_gives_its_files_as_far_as_its_bytes_go(form: str) -> None:
    """a74 F3: a block cut short gave nothing (`lz4` writes 4 MiB blocks by default)."""
    files = {"notes.txt": b"holiday notes\n" * 300, "photo.jpg": os.urandom(300_000)}
    packed = _lz4(_tar(files), *LZ4_FORMS[form])
    first = dict(archive_start_members(packed[: len(packed) * 2 // 3], ExtractLimits()))
    assert first["notes.txt"] == files["notes.txt"]
    assert len(first["photo.jpg"]) > 150_000
    assert files["photo.jpg"].startswith(first["photo.jpg"])
    assert dict(archive_start_members(packed, ExtractLimits()))["photo.jpg"] == files["photo.jpg"]


@pytest.mark.parametrize("form", LZ4_FORMS)
def test_a_banked_picture_in_an_lz4_tar_sent_in_chunks_is_refused_before_its_end(
    catalog_addon: UploadInspector, benign_photos: dict[str, Image.Image], form: str
) -> None:
    banned = encode(benign_photos["chelsea"], "JPEG", quality=90)
    packed = _lz4(_tar({"notes.txt": b"notes\n" * 4000, "photo.jpg": banned,
                        "more.txt": os.urandom(300_000)}), *LZ4_FORMS[form])  # fmt: skip
    codes = FORMS["tus"](catalog_addon, f"/files/lz4-tar-{form}".replace(" ", "-"), packed,
                         len(packed) - 4096)  # fmt: skip
    assert 403 in codes, codes


@pytest.mark.parametrize("compression", ["copy", "lzma2", "lzma1"])
def test_a_banked_picture_in_a_7z_is_refused_before_the_archives_end(
    catalog_addon: UploadInspector, benign_photos: dict[str, Image.Image], compression: str
) -> None:
    """a73 L3: a 7z's directory is at its end, and the phone may send it. Its packed data is
    undone from the start as 7-Zip's default coders undo it, and the pictures carved."""
    files = {"notes.txt": b"holiday notes\n" * 2000,
             "a.jpg": encode(benign_photos["coffee"], "JPEG"),
             "photo.jpg": encode(benign_photos["chelsea"], "JPEG", quality=90),
             "b.jpg": encode(benign_photos["astronaut"], "JPEG")}  # fmt: skip
    archive = seven_zip(files, compression)
    school = len(archive) - 2048  # the end, and the directory, from elsewhere
    codes = FORMS["tus"](catalog_addon, f"/files/7z-{compression}", archive, school)
    assert 403 in codes, codes
    innocent = seven_zip({k: v for k, v in files.items() if k != "photo.jpg"}, compression)
    codes = FORMS["tus"](catalog_addon, f"/files/7z-inn-{compression}", innocent, len(innocent))
    assert set(codes) == {200}, codes
