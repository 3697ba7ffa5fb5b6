"""Text bodies as servers read them: UTF-16/32 JSON and forms, base64 with junk in it, and
quoted header snippets that are not pictures (adversarial pass, issue 16)."""

from __future__ import annotations

import base64
import json
from urllib.parse import quote

import pytest
from PIL import Image

from schoolgate.endpoints.bodyscan import extract_items
from schoolgate.endpoints.extract import ExtractLimits
from tests.conftest import encode

LIMITS = ExtractLimits()


@pytest.fixture(scope="module")
def photo(benign_photos: dict[str, Image.Image]) -> bytes:
    return encode(benign_photos["astronaut"].resize((160, 160)), "JPEG", quality=80)


def found(body: bytes, content_type: str) -> list[bytes]:
    return [item.data for item in extract_items(body, content_type, LIMITS)]


@pytest.mark.parametrize(
    ("encoding", "content_type"),
    [
        ("utf-16", "application/json"),  # with a BOM
        ("utf-16-le", "application/json"),  # none: told by the zero bytes (RFC 4627)
        ("utf-32-be", "application/json"),
        ("utf-32", "application/octet-stream"),  # BOM, and a type that says nothing
        ("utf-16-be", "application/json; charset=UTF-16BE"),
    ],
)
def test_json_in_utf16_and_utf32_is_read(photo: bytes, encoding: str, content_type: str) -> None:
    text = json.dumps({"image": base64.b64encode(photo).decode(), "type": "base64"})
    assert found(text.encode(encoding), content_type) == [photo]


def test_a_form_in_utf16_is_read(photo: bytes) -> None:
    form = "image=" + quote(base64.b64encode(photo).decode(), safe="") + "&type=base64"
    body = form.encode("utf-16")
    assert found(body, "application/x-www-form-urlencoded; charset=utf-16") == [photo]


def test_binary_that_starts_with_zero_bytes_is_not_taken_for_text() -> None:
    mp4_like = b"\x00\x00\x00\x18ftypisom" + bytes(300)
    assert found(mp4_like, "application/octet-stream") == [mp4_like]  # still claimed as video


@pytest.mark.parametrize("junk", [".", " ", "*", "\n", "\r\n"])
def test_base64_with_junk_every_four_characters_is_decoded_as_servers_do(
    photo: bytes, junk: str
) -> None:
    """PHP's base64_decode and Python's b64decode(validate=False) skip what is not base64."""
    plain = base64.b64encode(photo).decode()
    spoiled = junk.join(plain[i : i + 4] for i in range(0, len(plain), 4))
    assert found(json.dumps({"image": spoiled}).encode(), "application/json") == [photo]


def test_spaces_sent_as_plus_in_a_form_are_skipped(photo: bytes) -> None:
    """`+` in a form is a space; a server decodes the base64 around it. The innocent photo was
    blocked as a broken JPEG, the banked one passed as garbage."""
    plain = base64.b64encode(photo).decode()
    spaced = " ".join(plain[i : i + 4] for i in range(0, len(plain), 4))
    form = "image=" + quote(spaced, safe=" ").replace(" ", "+")
    assert found(form.encode(), "application/x-www-form-urlencoded") == [photo]


def test_a_quoted_header_is_not_a_picture(photo: bytes) -> None:
    """A pupil asking why their PNG will not open pastes its first bytes: not an upload."""
    for snippet in (photo[:40], b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x02\x00"):
        message = {"content": f"why does {base64.b64encode(snippet).decode()} fail?"}
        assert found(json.dumps(message).encode(), "application/json") == []
        field = {"content": base64.b64encode(snippet).decode()}
        assert found(json.dumps(field).encode(), "application/json") == []
    # The control: a picture cut short after kilobytes of data is still taken (and refused).
    cut = photo[: len(photo) // 2]
    assert found(json.dumps({"image": base64.b64encode(cut).decode()}).encode(),
                 "application/json") == [cut]  # fmt: skip
