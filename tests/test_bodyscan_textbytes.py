"""A file's bytes written as text other than base64 (adversarial pass a4 follow-up): hex (as
`bytes.hex()`, `xxd -p`, Wireshark or C arrays print it) and JSON arrays of byte values (as
`Array.from(bytes)`, Python's `list(data)` or `JSON.stringify(new Uint8Array(...))` send them).
Each is rebuilt and judged; number lists and hex that spell no file give nothing.

Benign pictures only: scikit-image's astronaut (via the benign_photos fixture)."""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
from urllib.parse import urlencode

import pytest
from PIL import Image

from schoolgate.endpoints.bodyscan import extract_items
from schoolgate.endpoints.extract import ExtractLimits
from tests.conftest import encode

LIMITS = ExtractLimits()


@pytest.fixture(scope="module")
def photo(benign_photos: dict[str, Image.Image]) -> bytes:
    return encode(benign_photos["astronaut"].resize((120, 120)), "JPEG", quality=80)


def found(body: bytes, content_type: str | None) -> list[bytes]:
    return [item.data for item in extract_items(body, content_type, LIMITS)]


def hex_forms(photo: bytes) -> dict[str, str]:
    plain = photo.hex()
    return {
        "plain": plain,
        "upper": plain.upper(),
        "spaced": photo.hex(" "),
        "colons": photo.hex(":"),
        "xxd -p lines": "\n".join(plain[i : i + 60] for i in range(0, len(plain), 60)),
        "c array": ", ".join(f"0x{byte:02x}" for byte in photo),
        "escaped": "".join(f"\\x{byte:02x}" for byte in photo),
    }


@pytest.mark.parametrize(
    "form", ["plain", "upper", "spaced", "colons", "xxd -p lines", "c array", "escaped"]
)
def test_hex_in_json_forms_and_text_is_the_picture(photo: bytes, form: str) -> None:
    text = hex_forms(photo)[form]
    assert found(json.dumps({"file": text}).encode(), "application/json") == [photo]
    assert found(urlencode({"file": text}).encode(), "application/x-www-form-urlencoded") == [photo]
    if form in ("plain", "upper", "xxd -p lines"):
        assert found(f"see {text} end".encode(), "text/plain") == [photo]


def test_json_arrays_of_byte_values_are_the_picture(photo: bytes) -> None:
    as_list = json.dumps({"data": list(photo)}).encode()
    as_object = json.dumps({"file": {str(i): byte for i, byte in enumerate(photo)}}).encode()
    compact = json.dumps(list(photo), separators=(",", ":")).encode()
    for body in (as_list, as_object, compact):
        assert found(body, "application/json") == [photo]


def test_number_lists_and_hex_that_spell_no_file_give_nothing() -> None:
    """Innocent bodies: telemetry, coordinates, digests and random hex are not media."""
    readings = json.dumps({"samples": list(range(200)), "ids": [7] * 500}).encode()
    big_numbers = json.dumps({"points": [1000 + i for i in range(300)]}).encode()
    digests = json.dumps({"sha256": [hashlib.sha256(b"%d" % i).hexdigest() for i in range(40)]})
    random_hex = json.dumps({"nonce": os.urandom(4096).hex()})
    for body in (readings, big_numbers, digests.encode(), random_hex.encode()):
        assert found(body, "application/json") == []
    assert found(os.urandom(2048).hex(" ").encode(), "text/plain") == []


def xxd(data: bytes) -> str:
    """`xxd` as it prints by default: offset, eight groups of two bytes, the bytes as text."""
    lines = []
    for offset in range(0, len(data), 16):
        chunk = data[offset : offset + 16]
        groups = " ".join(chunk[i : i + 2].hex() for i in range(0, len(chunk), 2))
        text = "".join(chr(b) if 32 <= b < 127 else "." for b in chunk)
        lines.append(f"{offset:08x}: {groups:<40}  {text}")
    return "\n".join(lines)


@pytest.mark.parametrize("form", ["xxd", "octal", "percent"])
def test_dumps_and_escapes_in_messages_are_the_picture(photo: bytes, form: str) -> None:
    """Adversarial pass a5: a picture pasted as an `xxd` dump, as octal escapes, or
    percent-encoded, in a chat message, passed unjudged."""
    text = {
        "xxd": xxd(photo),
        "octal": "".join(f"\\{byte:03o}" for byte in photo),
        "percent": "".join(f"%{byte:02X}" for byte in photo),
    }[form]
    assert found(json.dumps({"content": text}).encode(), "application/json") == [photo]
    assert found(urlencode({"content": text}).encode(), "application/x-www-form-urlencoded") == [
        photo
    ]


def test_dumps_of_other_bytes_and_ordinary_escapes_give_nothing() -> None:
    assert found(json.dumps({"content": xxd(os.urandom(2048))}).encode(), "application/json") == []
    path = "\\101\\102\\103\\104\\105\\106\\107\\110 are letters, %41%42%43%44%45%46%47%48 too"
    assert found(json.dumps({"content": path}).encode(), "application/json") == []


def c_array(data: bytes) -> str:
    """What `xxd -i` prints."""
    rows = [", ".join(f"0x{b:02x}" for b in data[i : i + 12]) for i in range(0, len(data), 12)]
    return (
        "unsigned char photo_jpg[] = {\n  "
        + ",\n  ".join(rows)
        + f"\n}};\nunsigned int photo_jpg_len = {len(data)};\n"
    )


@pytest.mark.parametrize("form", ["xxd -i", "base32", "uuencode", "ascii85", "base85"])
def test_standard_text_encodings_in_messages_are_the_picture(photo: bytes, form: str) -> None:
    """Adversarial pass a7: `xxd -i`, base32, uuencode and base85 in a chat message passed."""
    text = {
        "xxd -i": c_array(photo),
        "base32": base64.b32encode(photo).decode(),
        "uuencode": "begin 644 photo.jpg\n"
        + "".join(binascii.b2a_uu(photo[i : i + 45]).decode() for i in range(0, len(photo), 45))
        + "`\nend\n",
        "ascii85": base64.a85encode(photo, adobe=True, wrapcol=76).decode(),
        "base85": base64.b85encode(photo).decode(),
    }[form]
    assert found(json.dumps({"content": text}).encode(), "application/json") == [photo]


def test_rtf_pictures_and_zstd_are_opened(photo: bytes) -> None:
    """Adversarial pass a7: an RTF document's \\pict group holds its picture as hex (Word and
    LibreOffice show it); an RTF body starts with a brace and was read as JSON. Base64 of a zstd
    file in a message was not opened either."""
    wrapped = "\n".join(photo.hex()[i : i + 128] for i in range(0, 2 * len(photo), 128))
    rtf = "{\\rtf1\\ansi{\\fonttbl\\f0 Arial;}\\f0 trip\\par{\\pict\\jpegblip\\picw120\\pich120\n"
    assert found((rtf + wrapped + "}}").encode(), "application/rtf") == [photo]
    from backports import zstd

    packed = zstd.compress(photo)
    message = json.dumps({"content": base64.b64encode(packed).decode()}).encode()
    assert found(message, "application/json") == [photo]
    assert found(packed, "application/zstd") == [photo]
