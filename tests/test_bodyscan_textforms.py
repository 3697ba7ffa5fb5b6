"""Text bodies read every way a server may read them (adversarial pass, issue 16, second round):
UTF-16/32 whatever the label says, base64 with any junk a lenient decoder skips, base64 pasted
inside a message, and quoted headers that are fragments, not pictures.

Benign pictures only: scikit-image's astronaut (via the benign_photos fixture) and drawings."""

from __future__ import annotations

import base64
import io
import json
from urllib.parse import quote, urlencode

import pytest
from PIL import Image

from schoolgate.endpoints.bodyscan import extract_items
from schoolgate.endpoints.extract import ExtractLimits
from tests.conftest import encode
from tests.test_bodyscan_textbytes import xxd

LIMITS = ExtractLimits()


@pytest.fixture(scope="module")
def photo(benign_photos: dict[str, Image.Image]) -> bytes:
    return encode(benign_photos["astronaut"].resize((160, 160)), "JPEG", quality=80)


@pytest.fixture(scope="module")
def b64(photo: bytes) -> str:
    text = base64.b64encode(photo).decode()
    # both standard-only characters, for the junk cases
    assert "+" in text
    assert "/" in text
    return text


def found(body: bytes, content_type: str | None) -> list[bytes]:
    return [item.data for item in extract_items(body, content_type, LIMITS)]


def every(text: str, step: int, junk: str) -> str:
    return junk.join(text[i : i + step] for i in range(0, len(text), step))


# -- UTF-16 / UTF-32 ----------------------------------------------------------------------------


def test_a_utf16_charset_on_a_multipart_body_does_not_hide_its_parts(photo: bytes) -> None:
    """Boundaries are bytes: servers ignore a charset on multipart. Reading the whole body as
    UTF-16 turned the parts into noise."""
    body = (
        b'--xx\r\nContent-Disposition: form-data; name="f"; filename="a.jpg"\r\n'
        b"Content-Type: image/jpeg\r\n\r\n" + photo + b"\r\n--xx--\r\n"
    )
    assert found(body, "multipart/form-data; boundary=xx; charset=utf-16") == [photo]


def test_a_utf16_charset_on_binary_does_not_hide_a_picture_in_it(photo: bytes) -> None:
    assert found(b"junk-before" + photo, "application/octet-stream; charset=utf-16") == [photo]


@pytest.mark.parametrize("kind", ["json", "form"])
def test_ascii_text_labelled_utf16_is_read_as_sent_too(b64: str, photo: bytes, kind: str) -> None:
    """PHP ignores the charset of a form and Node's raw readers ignore it in JSON: the bytes
    as sent are what they store."""
    if kind == "json":
        body, main = json.dumps({"image": b64}).encode(), "application/json"
    else:
        body, main = urlencode({"image": b64}).encode(), "application/x-www-form-urlencoded"
    assert found(body, f"{main}; charset=UTF-16") == [photo]


@pytest.mark.parametrize(
    ("encoding", "charset"),
    [
        ("utf-16-be", "utf-16"),  # no BOM: byte order from the zero bytes (RFC 2781: BE)
        ("utf-16-le", "utf16"),  # Python's alias spelling
        ("utf-32-be", "utf-32"),
        ("utf-32-le", "UTF-32"),
    ],
)
def test_a_bare_utf16_or_utf32_charset_without_bom_is_read_in_its_byte_order(
    b64: str, photo: bytes, encoding: str, charset: str
) -> None:
    body = json.dumps({"image": b64}).encode(encoding)
    assert found(body, f"application/json; charset={charset}") == [photo]


def test_utf16_with_a_broken_last_unit_is_read_as_java_and_dotnet_read_it(
    b64: str, photo: bytes
) -> None:
    """An odd byte at the end: Java and .NET decode the rest (U+FFFD for the last unit)."""
    body = json.dumps({"image": b64}).encode("utf-16-le") + b"\x00\x00\x00"
    assert found(body, "application/json") == [photo]


def test_utf16_with_a_lone_surrogate_is_read_as_python_reads_it(b64: str, photo: bytes) -> None:
    """json.loads(bytes) decodes with surrogatepass, so a lone surrogate does not stop it."""
    text = '\ufeff{"x":"\ud800","image":"' + b64 + '"}'
    body = text.encode("utf-16-le", "surrogatepass")
    assert found(body, "application/json") == [photo]


def test_an_svg_in_utf16_is_opened_for_its_data_url(b64: str, photo: bytes) -> None:
    svg = (
        '\ufeff<svg xmlns="http://www.w3.org/2000/svg">'
        f'<image href="data:image/jpeg;base64,{b64}"/></svg>'
    )
    assert found(svg.encode("utf-16-le"), "image/svg+xml") == [photo]


def test_a_utf16_json_gives_its_picture_once(b64: str, photo: bytes) -> None:
    """Both readings (as sent, and as text) find it: it is judged once."""
    body = json.dumps({"image": b64}).encode("utf-16")
    assert found(body, "application/json; charset=utf-16") == [photo]


def test_utf16_chat_without_media_has_none() -> None:
    text = {"content": "GIF89a is the gif version with transparency, see RFC 2781 🙂 " * 20}
    for encoding in ("utf-16", "utf-16-be", "utf-32-le"):
        assert found(json.dumps(text).encode(encoding), "application/json") == []


# -- base64 with junk ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("step", "junk"),
    [
        (4, "-"),  # URL-safe characters are junk to PHP and Python beside '+' and '/'
        (4, "_"),
        (4, ".."),
        (4, ".,"),
        (2, "."),  # a third junk
        (1, "."),  # half junk: PHP still recovers the file
    ],
)
def test_base64_with_any_junk_lenient_decoders_skip(
    b64: str, photo: bytes, step: int, junk: str
) -> None:
    spoiled = every(b64, step, junk)
    assert found(json.dumps({"image": spoiled}).encode(), "application/json") == [photo]
    form = "image=" + quote(spoiled, safe="")
    assert found(form.encode(), "application/x-www-form-urlencoded") == [photo]


def test_base64_pasted_inside_a_message_is_found(b64: str, photo: bytes) -> None:
    """A recipient copies it out and decodes it: the exact file travels in the message."""
    for message in (f"look at this: {b64}", f"{b64} thanks!", f"eyJ0 {b64} ok"):
        assert found(json.dumps({"content": message}).encode(), "application/json") == [photo]


def test_prose_and_tokens_are_not_decoded_into_media() -> None:
    texts = [
        "the quick brown fox jumps over the lazy dog " * 30,
        "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U",
        "R0lGODlh but in words, please explain the gif header " * 10,
    ]
    for text in texts:
        assert found(json.dumps({"content": text}).encode(), "application/json") == []


# -- quoted fragments ---------------------------------------------------------------------------


def _jpeg_header_length(data: bytes) -> int:
    """Offset of the first start-of-scan marker's segment end (where the image data begins)."""
    position = 2
    while data[position + 1] != 0xDA:
        position += 2 + int.from_bytes(data[position + 2 : position + 4], "big")
    return position + 2 + int.from_bytes(data[position + 2 : position + 4], "big")


def test_a_quoted_jpeg_header_with_its_tables_is_not_a_picture(photo: bytes) -> None:
    """Quantisation and Huffman tables make a JPEG header about 600 bytes: quoted whole in a
    coding question it holds not one pixel. (Refused as a broken picture before: blocked.)"""
    header = photo[: _jpeg_header_length(photo)]
    assert 300 < len(header) < 1000
    snippet = base64.b64encode(header).decode()
    for message in (snippet, f"why does my jpeg start with {snippet} ?"):
        assert found(json.dumps({"content": message}).encode(), "application/json") == []


def test_a_quoted_png_or_gif_header_is_not_a_picture() -> None:
    png = encode(Image.new("RGB", (64, 64), (10, 120, 200)), "PNG")
    idat = png.index(b"IDAT")
    gif = encode(Image.new("P", (64, 64), 3), "GIF")
    image_descriptor = gif.index(b",", 13)
    for header in (png[: idat + 4], gif[:image_descriptor], gif[:13]):
        snippet = base64.b64encode(header + b"\x00" * 300 if header is png else header).decode()
        message = {"content": f"what is {snippet} in this file"}
        assert found(json.dumps(message).encode(), "application/json") == []


def test_a_header_only_data_url_in_a_message_is_not_a_picture(photo: bytes) -> None:
    header = base64.b64encode(photo[:120]).decode()
    message = {"content": f"my <img src='data:image/jpeg;base64,{header}'> shows nothing, why"}
    assert found(json.dumps(message).encode(), "application/json") == []


def test_a_picture_cut_after_some_image_data_is_still_taken(photo: bytes) -> None:
    """Fail-closed: a few hundred bytes into the scan, it is a picture cut short (refused)."""
    cut = photo[: _jpeg_header_length(photo) + 400]
    body = json.dumps({"image": base64.b64encode(cut).decode()}).encode()
    assert found(body, "application/json") == [cut]


def test_a_picture_cut_after_a_thumbnail_is_still_taken(photo: bytes) -> None:
    """Cut before its own image data, but its EXIF holds a thumbnail (itself a picture)."""
    thumbnail = encode(Image.new("RGB", (24, 16), (90, 30, 160)), "JPEG", quality=50)
    exif = b"Exif\x00\x00" + b"II*\x00" + bytes(8) + thumbnail
    app1 = b"\xff\xe1" + (len(exif) + 2).to_bytes(2, "big") + exif
    with_thumbnail = photo[:2] + app1 + photo[2:]
    cut = with_thumbnail[: 2 + len(app1) + 200]
    assert len(cut) < 4096
    body = json.dumps({"image": base64.b64encode(cut).decode()}).encode()
    assert found(body, "application/json") == [cut, thumbnail]  # the thumbnail is judged too


def test_big_header_only_cuts_are_still_taken() -> None:
    """Kilobytes of header (an ICC profile) cut before the image data: not a quoted snippet."""
    image = Image.new("RGB", (64, 64), (200, 40, 40))
    out = io.BytesIO()
    image.save(out, "JPEG", icc_profile=bytes(range(256)) * 24)
    data = out.getvalue()
    cut = data[: _jpeg_header_length(data)]
    assert len(cut) > 4096
    body = json.dumps({"image": base64.b64encode(cut).decode()}).encode()
    assert found(body, "application/json") == [cut]


@pytest.mark.parametrize(
    "text",
    [
        "GIF89a is the gif version with transparency",
        "GIF89a is the version of the gif format that supports transparency, GIF87a is older",
        "https://example.org/files/GIF89a-spec.txt",
        'magic = "GIF87a" if old else "GIF89a"',
    ],
)
def test_chat_that_mentions_gif89a_is_not_a_gif(text: str) -> None:
    assert found(json.dumps({"content": text}).encode(), "application/json") == []
    assert found(text.encode(), "text/plain") == []
    assert found(urlencode({"text": text}).encode(), "application/x-www-form-urlencoded") == []


@pytest.mark.parametrize("junk", [".", "*", "-"])
def test_a_data_url_with_junk_in_its_base64_is_read_leniently(
    b64: str, photo: bytes, junk: str
) -> None:
    """Discord's emoji and avatar fields take a data: URL; a server decoding it with Python's
    b64decode (or PHP's) skips the junk, so the scan must not stop at the first '.'."""
    url = "data:image/jpeg;base64," + every(b64, 4, junk)
    assert found(json.dumps({"name": "x", "image": url}).encode(), "application/json") == [photo]
    html = f'<p>hi</p><img src="{url}" alt="">'.encode()
    assert found(html, "text/html") == [photo]


@pytest.mark.parametrize("spelling", ["padded", "unpadded", "wrapped at 76", "hex dump", "hex"])
def test_a_picture_spelt_as_text_and_labelled_a_form_is_found(photo: bytes, spelling: str) -> None:
    """Adversarial pass a51 F1: base64 of a banked picture sent with curl's default label for
    --data-binary (application/x-www-form-urlencoded) went through to a raw upload route,
    which stores the body as sent: read as a form it was one field name, its padding the value.
    The same bytes labelled text/plain were blocked."""
    text = base64.b64encode(photo)
    body = {
        "padded": text,
        "unpadded": text.rstrip(b"="),
        "wrapped at 76": base64.encodebytes(photo),
        "hex dump": b"\n".join(
            photo[i : i + 16].hex(" ").encode() for i in range(0, len(photo), 16)
        ),
        "hex": photo.hex().encode(),
    }[spelling]
    assert found(body, "application/x-www-form-urlencoded") == [photo]
    assert found(body, "text/plain") == [photo]


def test_an_ordinary_form_read_as_text_finds_nothing() -> None:
    form = urlencode({"q": "homework help", "token": "A" * 40 + "/+" * 20}).encode()
    assert found(form, "application/x-www-form-urlencoded") == []


@pytest.mark.parametrize("width", [20, 50, 64])
@pytest.mark.parametrize("label", ["text/plain", "application/x-www-form-urlencoded", None])
def test_base64_wrapped_at_any_width_is_found(photo: bytes, width: int, label: str | None) -> None:
    """Adversarial pass a52 F3: `base64 -w 50` went through; only lines of 56 or more
    characters started a run of base64 to read."""
    text = base64.b64encode(photo)
    body = b"\n".join(text[i : i + width] for i in range(0, len(text), width))
    assert found(body, label) == [photo]


@pytest.mark.parametrize("charset", ["cp500", "ibm037", "utf-7"])
@pytest.mark.parametrize("spelling", ["base64", "hex"])
def test_text_in_a_charset_that_reads_ascii_otherwise_is_read_in_it(
    photo: bytes, charset: str, spelling: str
) -> None:
    """Adversarial pass a52 F4: base64 or hex of a banked picture sent as EBCDIC (cp500) or
    UTF-7, labelled so, went through: the bytes as sent spell no base64."""
    text = base64.b64encode(photo).decode() if spelling == "base64" else photo.hex()
    assert found(text.encode(charset), f"text/plain; charset={charset}") == [photo]


@pytest.mark.parametrize("junk", [".", "*", " ", "#", "\x00"])
@pytest.mark.parametrize("step", [4, 50])
def test_base64_cut_by_junk_in_a_text_body_is_found(photo: bytes, junk: str, step: int) -> None:
    """Adversarial pass a52 F3: base64 with a separator every 4 to 200 characters, sent as a
    text body, went through to raw upload routes; a lenient decoder (PHP's, Python's without
    validation) skips the separators and gives back the picture."""
    body = every(base64.b64encode(photo).decode(), step, junk).encode()
    assert found(body, "text/plain") == [photo]


@pytest.mark.parametrize("label", ["text/plain", "application/x-www-form-urlencoded"])
def test_an_xxd_dump_with_its_line_breaks_taken_out_is_read(photo: bytes, label: str) -> None:
    """Adversarial pass a52 F5: `curl -d data=@dump` strips the line breaks of an xxd dump, and
    only its first line was read."""
    joined = xxd(photo).replace("\n", "").encode()
    body = b"data=" + joined if label.endswith("urlencoded") else joined
    assert found(body, label) == [photo]
    assert found(xxd(photo).encode(), "text/plain") == [photo]  # with its line breaks
