"""Media found by structure (issue 16): containers, decoys, junk, lenient base64, documents."""

from __future__ import annotations

import base64
import io
import json
import os
import random
import zipfile

import pytest
from PIL import Image

from schoolgate.endpoints.bodyscan import extract_items
from schoolgate.endpoints.carving import probe_carved
from schoolgate.endpoints.extract import ExtractionError, ExtractLimits
from tests.conftest import encode

LIMITS = ExtractLimits()


@pytest.fixture(scope="module")
def photo() -> bytes:
    image = Image.new("RGB", (96, 64))
    image.putdata(
        [((x * 5) % 256, (y * 7) % 256, (x * y) % 256) for y in range(64) for x in range(96)]
    )
    return encode(image, "JPEG", quality=90)


@pytest.fixture(scope="module")
def decoy() -> bytes:
    return encode(Image.new("RGB", (32, 32), (200, 200, 30)), "JPEG", quality=80)


def multipart(
    parts: list[tuple[str, bytes]], boundary: str = "B0und", preamble: bytes = b""
) -> bytes:
    body = preamble
    for headers, data in parts:
        body += f"--{boundary}\r\n{headers}\r\n\r\n".encode() + data + b"\r\n"
    return body + f"--{boundary}--\r\n".encode()


def datas(body: bytes, content_type: str | None) -> list[bytes]:
    return [item.data for item in extract_items(body, content_type, LIMITS)]


def test_a_decoy_before_the_first_boundary_does_not_hide_the_parts(
    photo: bytes, decoy: bytes
) -> None:
    body = multipart(
        [('Content-Disposition: form-data; name="files[0]"; filename="a.jpg"', photo)],
        preamble=decoy + b"\r\n",
    )
    found = datas(body, "multipart/form-data; boundary=B0und")
    assert photo in found  # the part the server reads
    assert found[0].startswith(decoy)  # and the body as the picture it starts with


def test_a_decoy_at_the_start_of_a_form_does_not_hide_the_fields(
    photo: bytes, decoy: bytes
) -> None:
    body = decoy + b"&file=" + base64.b64encode(photo).replace(b"+", b"%2B")
    assert photo in datas(body, "application/x-www-form-urlencoded")


def test_junk_before_a_picture_and_a_misleading_label(photo: bytes) -> None:
    for label in ("text/plain", "application/octet-stream", None, "application/json"):
        assert datas(os.urandom(37) + photo, label) == [photo]


def test_base64_with_junk_characters_is_read_as_lenient_servers_read_it(photo: bytes) -> None:
    text = base64.b64encode(photo).decode()
    junked = text[:100] + "!" + text[100:200] + "." + text[200:]
    assert datas(json.dumps({"media_data": junked}).encode(), "application/json") == [photo]
    mixed = text.replace("+", "-", 3)  # URL-safe and standard alphabets mixed
    assert datas(json.dumps({"m": mixed}).encode(), "application/json") == [photo]


def test_stringified_json_inside_json(photo: bytes) -> None:
    inner = json.dumps({"image": base64.b64encode(photo).decode()})
    assert datas(json.dumps({"payload": inner}).encode(), "application/json") == [photo]


def test_pictures_inside_a_zip_and_an_office_file(photo: bytes) -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("[Content_Types].xml", "<Types/>")
        archive.writestr("word/document.xml", "<w:document>homework</w:document>")
        archive.writestr("word/media/image1.jpeg", photo)
    items = extract_items(buffer.getvalue(), "application/vnd.openxmlformats", LIMITS)
    assert [item.data for item in items] == [photo]
    assert items[0].locator.endswith("zip:word/media/image1.jpeg")


def test_a_document_without_pictures_is_no_media() -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("word/document.xml", "<w:document>" + "essay " * 5000 + "</w:document>")
    assert datas(buffer.getvalue(), "application/zip") == []
    assert datas(b"%PDF-1.7\n1 0 obj << >> endobj\n" + b"text " * 1000 + b"%%EOF", None) == []


def test_a_zip_bomb_is_refused() -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("zeros.bin", bytes(32 * 1024 * 1024))
    with pytest.raises(ExtractionError) as caught:
        extract_items(buffer.getvalue(), "application/zip", LIMITS)
    assert caught.value.reason == "encoding_bomb"


def test_the_jpeg_images_of_a_pdf_are_found(photo: bytes) -> None:
    pdf = (
        b"%PDF-1.4\n1 0 obj\n<< /Type /XObject /Subtype /Image /Filter /DCTDecode /Length "
        + str(len(photo)).encode()
        + b" >>\nstream\n"
        + photo
        + b"\nendstream\nendobj\ntrailer << >>\n%%EOF\n"
    )
    items = extract_items(pdf, "application/pdf", LIMITS)
    assert [item.data for item in items] == [photo]  # cut at its end marker: exact hash holds


def test_an_svg_data_url(photo: bytes) -> None:
    wrapped = base64.encodebytes(photo).decode()  # line-wrapped, as editors write it
    svg = (
        '<svg xmlns="http://www.w3.org/2000/svg"><image width="96" height="64" '
        f'href="data:image/jpeg;base64,{wrapped}"/></svg>'
    ).encode()
    assert datas(svg, "image/svg+xml") == [photo]
    html = b"<html><body><img src='data:image/jpeg;base64," + base64.b64encode(photo) + b"'></body>"
    assert datas(html, "text/html") == [photo]


def test_random_binary_is_not_carved_into_broken_pictures() -> None:
    rng = random.Random(16)
    blob = bytearray(rng.randbytes(1 << 20))
    for offset in range(1000, len(blob) - 100, 50_000):
        blob[offset : offset + 3] = b"\xff\xd8\xff"  # signatures with nothing behind them
    assert extract_items(bytes(blob), "application/octet-stream", LIMITS) == []
    assert not probe_carved(b"\xff\xd8\xff" + bytes(64))


def test_what_claims_to_be_media_but_is_not_recognised_is_kept_as_claimed() -> None:
    jxl = b"\xff\x0a" + bytes(200)  # a JPEG XL codestream signature: a format we do not read
    items = extract_items(jxl, "image/jxl", LIMITS)
    assert [(item.data, item.claimed) for item in items] == [(jxl, True)]
    part = multipart([('Content-Disposition: form-data; name="f"; filename="clip.avi"', b"x" * 50)])
    items = extract_items(part, "multipart/form-data; boundary=B0und", LIMITS)
    assert [item.claimed for item in items] == [True]
    assert extract_items(b"x" * 50, "application/pdf", LIMITS) == []
    unlabelled = b"\x00\x00\x00\x0cJXL \r\n\x87\n" + bytes(100)
    assert [item.claimed for item in extract_items(unlabelled, None, LIMITS)] == [True]


def test_a_chat_message_is_no_media() -> None:
    message = {"content": "see you at lunch, bring the maths homework please", "tts": False}
    assert datas(json.dumps(message).encode(), "application/json") == []
    form = b"message=see+you+at+lunch+bring+the+maths+homework&channel=1234567890123456789"
    assert datas(form, "application/x-www-form-urlencoded") == []


def test_svg_and_icons_are_not_claimed_as_pictures() -> None:
    """Web pages embed SVG icons as data: URLs by the dozen, and chat apps take SVG files: an
    SVG is looked into, never blocked as 'a picture we cannot read'."""
    icon = b'<svg xmlns="http://www.w3.org/2000/svg"><circle r="4"/></svg>'
    html = b'<html><img src="data:image/svg+xml;base64,' + base64.b64encode(icon) + b'"></html>'
    assert extract_items(html, "text/html", LIMITS) == []
    part = multipart(
        [
            (
                'Content-Disposition: form-data; name="f"; filename="logo.svg"\r\n'
                "Content-Type: image/svg+xml",
                icon,
            )
        ]
    )
    assert extract_items(part, "multipart/form-data; boundary=B0und", LIMITS) == []
    favicon = b"data:image/x-icon;base64," + base64.b64encode(b"\x00\x00\x01\x00" + bytes(60))
    assert extract_items(favicon, "text/plain", LIMITS) == []
