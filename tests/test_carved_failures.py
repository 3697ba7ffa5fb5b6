"""Bytes that only start like a picture, inside other bytes (adversarial pass a73 I1, I2): an lz4
or 7z archive keeps a photo's first bytes as they were, and what follows them (the compressor's
block and sequence bytes) does not decode. Carved out and refused as a broken picture, the
innocent archive was blocked (12 of 32 innocent 7z uploads, 4 of 4 tar.lz4). Such bytes are now
judged for a match on what they show, and allowed when they match nothing; a picture at the
start of a body, or one said to be a picture, is refused as before when it does not decode."""

from __future__ import annotations

import os

from PIL import Image

from schoolgate.addons.uploads import UploadInspector
from tests.conftest import encode
from tests.test_libarchive_formats import _drive

BLOCK = 16 * 1024


def _interrupted(picture: bytes) -> bytes:
    """A picture with four bytes of something else every BLOCK bytes, after other bytes: as a
    compressor's blocks leave an incompressible photo."""
    pieces = [picture[at : at + BLOCK] for at in range(0, len(picture), BLOCK)]
    return os.urandom(300) + b"".join(b"\x00\x40\x00\x80" + piece for piece in pieces)


def test_an_innocent_picture_broken_inside_other_bytes_goes_through(
    catalog_addon: UploadInspector, benign_photos: dict[str, Image.Image]
) -> None:
    innocent = encode(benign_photos["coffee"], "JPEG", quality=90)
    assert _drive(catalog_addon, _interrupted(innocent)) == 200  # libjpeg reads past the breaks
    png = encode(benign_photos["coffee"].crop((0, 0, 300, 200)), "PNG")
    assert _drive(catalog_addon, _interrupted(png)) == 200


def test_a_banked_picture_broken_inside_other_bytes_is_still_a_match(
    catalog_addon: UploadInspector, benign_photos: dict[str, Image.Image]
) -> None:
    """Its first block shows its top rows: they match."""
    banned = encode(benign_photos["chelsea"], "JPEG", quality=90, progressive=True)
    assert _drive(catalog_addon, _interrupted(banned)) == 403


def test_a_broken_picture_at_the_start_is_still_refused(
    catalog_addon: UploadInspector, benign_photos: dict[str, Image.Image]
) -> None:
    png = encode(benign_photos["coffee"].crop((0, 0, 300, 200)), "PNG")
    assert _drive(catalog_addon, _interrupted(png)[300 + 4 :]) == 403
