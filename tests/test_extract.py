"""Media extraction from HTTP bodies: content decoding, multipart, raw, base64 in JSON and forms."""

from __future__ import annotations

import base64
import gzip
import io
import json
import random
import tracemalloc
import zlib
from urllib.parse import quote, urlencode

import brotli
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from schoolgate.endpoints.bodyscan import extract_items, is_media
from schoolgate.endpoints.encoding import decode_content_encoding
from schoolgate.endpoints.extract import (
    ExtractionError,
    ExtractLimits,
    parse_header_params,
    parse_multipart,
)
from tests.conftest import encode, zstd_compress, zstd_compressor

LIMITS = ExtractLimits()
REASONS = {
    "oversize",
    "encoding_bomb",
    "bad_encoding",
    "malformed_multipart",
    "too_many_parts",
    "too_many_items",
    "malformed_json",
    "json_too_deep",
    "unknown_format",
}


@pytest.fixture(scope="module")
def jpeg(benign_photos: dict[str, Image.Image]) -> bytes:
    return encode(benign_photos["coffee"].resize((64, 48)), "JPEG")


@pytest.fixture(scope="module")
def png(benign_photos: dict[str, Image.Image]) -> bytes:
    return encode(benign_photos["chelsea"].resize((32, 24)), "PNG")


def multipart(parts: list[tuple[bytes, bytes]], boundary: bytes = b"XyZ123") -> bytes:
    """Build a multipart body from (header block, data) pairs, CRLF line endings."""
    out = io.BytesIO()
    out.write(b"preamble to ignore\r\n")
    for headers, data in parts:
        out.write(b"--" + boundary + b"\r\n" + headers + b"\r\n\r\n" + data + b"\r\n")
    out.write(b"--" + boundary + b"--\r\nepilogue to ignore\r\n")
    return out.getvalue()


# --- Content-Encoding -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("encoding", "compress"),
    [
        ("gzip", gzip.compress),
        ("x-gzip", gzip.compress),
        ("deflate", zlib.compress),
        ("deflate", lambda d: zlib.compress(d)[2:-4]),  # raw deflate, as some clients send
        ("br", brotli.compress),
        ("zstd", zstd_compress),
        ("identity", lambda d: d),
        (None, lambda d: d),
    ],
)
def test_decode_each_encoding(encoding: str | None, compress: object, jpeg: bytes) -> None:
    assert callable(compress)
    assert decode_content_encoding(compress(jpeg), encoding, LIMITS) == jpeg


def test_decode_chained_encodings_in_reverse_order(jpeg: bytes) -> None:
    body = brotli.compress(gzip.compress(jpeg))  # gzip applied first, then br
    assert decode_content_encoding(body, "gzip, br", LIMITS) == jpeg
    with pytest.raises(ExtractionError) as caught:
        decode_content_encoding(body, "br, gzip", LIMITS)
    assert caught.value.reason == "bad_encoding"


def test_concatenated_gzip_members(jpeg: bytes) -> None:
    body = gzip.compress(jpeg[:100]) + gzip.compress(jpeg[100:])
    assert decode_content_encoding(body, "gzip", LIMITS) == jpeg


def test_gzip_members_past_the_first_read_chunk() -> None:
    """A second member that starts after the first 16 KiB read was refused as corrupt (the
    offset of the first member's end was taken from the whole body, not the bytes read)."""
    noise = random.Random(7).randbytes(100_000)  # incompressible: members span several reads
    body = gzip.compress(noise[:1000]) + gzip.compress(noise[1000:]) + gzip.compress(b"end")
    assert decode_content_encoding(body, "gzip", LIMITS) == noise + b"end"


def test_concatenated_zstd_frames(jpeg: bytes) -> None:
    body = zstd_compress(jpeg[:100]) + zstd_compress(jpeg[100:5000]) + zstd_compress(jpeg[5000:])
    assert decode_content_encoding(body, "zstd", LIMITS) == jpeg


def test_truncated_zstd_is_refused_not_judged_as_partial_media(jpeg: bytes) -> None:
    for cut in (1, 10, len(jpeg) // 3):
        with pytest.raises(ExtractionError) as caught:
            decode_content_encoding(zstd_compress(jpeg)[:-cut], "zstd", LIMITS)
        assert caught.value.reason == "bad_encoding"


def test_zstd_frame_asking_for_a_huge_window_is_refused() -> None:
    # A 1 GiB window (window_log 30) would let one frame claim that much decoder memory.
    # Streamed, so no content size is pledged and the header keeps the window it was given.
    compressor = zstd_compressor(window_log=30)
    frame = compressor.compress(b"x" * 4096) + compressor.flush()
    with pytest.raises(ExtractionError) as caught:
        decode_content_encoding(frame, "zstd", LIMITS)
    assert caught.value.reason == "bad_encoding"


@pytest.mark.parametrize(
    ("encoding", "compress"),
    [
        ("gzip", lambda d: gzip.compress(d, 9)),
        ("deflate", lambda d: zlib.compress(d, 9)),
        ("br", lambda d: brotli.compress(d, quality=5)),
        ("zstd", lambda d: zstd_compress(d, level=3)),
    ],
)
def test_bomb_is_refused_without_allocating_the_output(encoding: str, compress: object) -> None:
    assert callable(compress)
    limits = ExtractLimits(max_decoded_bytes=8 * 1024 * 1024)
    bomb = compress(b"\0" * (128 * 1024 * 1024))  # 128 MiB of zeros
    assert len(bomb) < 1024 * 1024
    tracemalloc.start()
    try:
        with pytest.raises(ExtractionError) as caught:
            decode_content_encoding(bomb, encoding, limits)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert caught.value.reason == "encoding_bomb"
    assert peak < 3 * limits.max_decoded_bytes  # bounded by the cap, not by the 128 MiB


def test_ratio_cap_applies_below_the_size_cap() -> None:
    limits = ExtractLimits(max_ratio=10)
    body = gzip.compress(b"a" * (4 * 1024 * 1024))
    with pytest.raises(ExtractionError) as caught:
        decode_content_encoding(body, "gzip", limits)
    assert caught.value.reason == "encoding_bomb"


def test_oversize_decoded_body_that_is_not_a_bomb() -> None:
    data = bytes(range(256)) * 8192  # 2 MiB that barely compresses with level 0
    body = zlib.compress(data, 0)
    with pytest.raises(ExtractionError) as caught:
        decode_content_encoding(body, "deflate", ExtractLimits(max_decoded_bytes=1024 * 1024))
    assert caught.value.reason == "oversize"


@pytest.mark.parametrize(
    ("body", "encoding"),
    [
        (b"plain", "compress"),
        (b"plain", "gzip"),
        (gzip.compress(b"x" * 1000, mtime=0)[:-20], "gzip"),
        (brotli.compress(b"y" * 5000)[:-3], "br"),
        (b"\x28\xb5\x2f\xfd garbage", "zstd"),
        (b"x", "gzip, gzip, gzip, gzip, gzip"),
    ],
)
def test_bad_encodings(body: bytes, encoding: str) -> None:
    with pytest.raises(ExtractionError) as caught:
        decode_content_encoding(body, encoding, LIMITS)
    assert caught.value.reason == "bad_encoding"


def test_oversize_input() -> None:
    with pytest.raises(ExtractionError) as caught:
        decode_content_encoding(b"x" * 100, None, ExtractLimits(max_body_bytes=99))
    assert caught.value.reason == "oversize"


# --- Header parameters ------------------------------------------------------------------------


def test_header_params_quoted_and_extended() -> None:
    main, params = parse_header_params(
        'form-data; name="fi\\"le"; filename="fallback.jpg"; '
        "filename*=UTF-8''%E2%82%AC%20rates.jpg"
    )
    assert main == "form-data"
    assert params["name"] == 'fi"le'
    assert params["filename"] == "€ rates.jpg"
    _, continued = parse_header_params(
        "attachment; title*0*=us-ascii'en'This%20is; title*1=\" ok\""
    )
    assert continued["title"] == "This is ok"


# --- Multipart --------------------------------------------------------------------------------


def test_multipart_finds_media_parts_by_magic_bytes(jpeg: bytes, png: bytes) -> None:
    body = multipart(
        [
            (b'Content-Disposition: form-data; name="caption"', b"hello"),
            # Lies about its type and name: the bytes decide.
            (
                b'Content-Disposition: form-data; name="file"; filename="notes.txt"\r\n'
                b"Content-Type: text/plain",
                jpeg,
            ),
            (b'Content-Disposition: form-data; name="file"; filename="b.png"', png),
            (b'Content-Disposition: form-data; name="doc"; filename="x.jpg"', b"%PDF-1.4 nope"),
        ]
    )
    items = extract_items(body, 'multipart/form-data; boundary="XyZ123"', LIMITS)
    assert [item.data for item in items] == [jpeg, png, b"%PDF-1.4 nope"]
    assert [item.locator for item in items] == [
        "body/multipart:file[0]",
        "body/multipart:file[1]",
        "body/multipart:doc[0]",
    ]
    assert items[0].filename == "notes.txt"
    assert items[0].declared_type == "text/plain"
    # Sent as a picture but not one: kept, so the engine calls it not_analysed.
    assert [item.claimed for item in items] == [True, True, True]


def test_multipart_lf_only_and_no_preamble(jpeg: bytes) -> None:
    body = b"--b\nContent-Disposition: form-data; name=media; filename=a\n\n" + jpeg + b"\n--b--"
    items = extract_items(body, "multipart/form-data; boundary=b", LIMITS)
    assert [item.data for item in items] == [jpeg]


def test_multipart_data_containing_boundary_like_bytes(jpeg: bytes) -> None:
    tricky = jpeg + b"\r\n--XyZ12 not the boundary\r\n--XyZ1234"
    body = multipart([(b'Content-Disposition: form-data; name="f"', tricky)])
    with pytest.raises(ExtractionError) as caught:
        # "--XyZ1234" starts with the delimiter "--XyZ123" but is not followed by a line end.
        extract_items(body, "multipart/form-data; boundary=XyZ123", LIMITS)
    assert caught.value.reason == "malformed_multipart"
    safe = jpeg + b"\r\n--XyZ12 not the boundary"
    body = multipart([(b'Content-Disposition: form-data; name="f"', safe)])
    items = extract_items(body, "multipart/form-data; boundary=XyZ123", LIMITS)
    assert items[0].data == safe


def test_nested_multipart_mixed(jpeg: bytes, png: bytes) -> None:
    inner = multipart(
        [
            (b'Content-Disposition: file; filename="one.jpg"', jpeg),
            (b'Content-Disposition: file; filename="two.png"', png),
        ],
        boundary=b"inner",
    )
    body = multipart(
        [
            (b'Content-Disposition: form-data; name="field1"', b"Joe"),
            (
                b'Content-Disposition: form-data; name="files"\r\n'
                b"Content-Type: multipart/mixed; boundary=inner",
                inner,
            ),
        ],
        boundary=b"outer",
    )
    items = extract_items(body, "multipart/form-data; boundary=outer", LIMITS)
    assert [item.data for item in items] == [jpeg, png]
    assert items[1].locator == "body/multipart:files[0]/multipart:[1]"
    assert items[1].filename == "two.png"


def test_multipart_invalid_utf8_and_rfc5987_filenames(jpeg: bytes) -> None:
    body = multipart(
        [
            (b'Content-Disposition: form-data; name="a"; filename="caf\xe9\xff.jpg"', jpeg),
            (
                b"Content-Disposition: form-data; name=\"b\"; filename*=UTF-8''%F0%9F%90%88.jpg",
                jpeg,
            ),
        ]
    )
    items = extract_items(body, "multipart/form-data; boundary=XyZ123", LIMITS)
    assert items[0].filename is not None
    assert items[0].filename.startswith("caf")
    assert items[1].filename == "\U0001f408.jpg"


def test_multipart_base64_transfer_encoding_and_base64_text_fields(jpeg: bytes) -> None:
    encoded = base64.encodebytes(jpeg)  # line-wrapped
    body = multipart(
        [
            (
                b"Content-Disposition: form-data; name=a\r\nContent-Transfer-Encoding: base64",
                encoded,
            ),
            (b"Content-Disposition: form-data; name=media_data", base64.b64encode(jpeg)),
        ]
    )
    items = extract_items(body, "multipart/related; boundary=XyZ123", LIMITS)
    assert [item.data for item in items] == [jpeg, jpeg]
    assert items[1].locator == "body/multipart:media_data[0]:base64"


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        (None, b"--a\r\n\r\nx\r\n--a--"),
        ("multipart/form-data", b"--a\r\n\r\nx\r\n--a--"),
        ("application/json; boundary=a", b"--a\r\n\r\nx\r\n--a--"),
        ("multipart/form-data; boundary=a", b"no boundary here"),
    ],
)
def test_a_body_that_is_not_multipart_is_read_as_what_it_is(
    content_type: str | None, body: bytes
) -> None:
    """Only a body that declares a boundary and holds it is parsed as multipart; anything else
    is read as what it parses as (no media here), never refused for its label."""
    assert extract_items(body, content_type, LIMITS) == []


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        ("multipart/form-data; boundary=a", b"--a\r\nContent-Type: x\r\n\r\nunterminated"),
        ("multipart/form-data; boundary=a", b"--a\r\n" + b"X: y\r\n" * 5000),
        ("multipart/form-data; boundary=a", b"--aXX\r\n\r\nx\r\n--a--"),
    ],
)
def test_malformed_multipart(content_type: str | None, body: bytes) -> None:
    with pytest.raises(ExtractionError) as caught:
        extract_items(body, content_type, LIMITS)
    assert caught.value.reason == "malformed_multipart"


def test_too_many_parts() -> None:
    body = multipart([(b"Content-Disposition: form-data; name=x", b"1")] * 11)
    with pytest.raises(ExtractionError) as caught:
        parse_multipart(body, "multipart/form-data; boundary=XyZ123", ExtractLimits(max_parts=10))
    assert caught.value.reason == "too_many_parts"
    assert len(parse_multipart(body, "multipart/form-data; boundary=XyZ123", LIMITS)) == 11


def test_too_many_items(jpeg: bytes) -> None:
    body = multipart([(b"Content-Disposition: form-data; name=x", jpeg)] * 3)
    with pytest.raises(ExtractionError) as caught:
        extract_items(body, "multipart/form-data; boundary=XyZ123", ExtractLimits(max_items=2))
    assert caught.value.reason == "too_many_items"


def test_deeply_nested_multipart_is_refused() -> None:
    body = b"x"
    for level in range(6):
        boundary = f"b{level}".encode()
        body = multipart(
            [(b"Content-Type: multipart/mixed; boundary=b" + str(level - 1).encode(), body)]
            if level
            else [(b"Content-Type: text/plain", body)],
            boundary=boundary,
        )
    with pytest.raises(ExtractionError) as caught:
        extract_items(body, "multipart/mixed; boundary=b5", LIMITS)
    assert caught.value.reason == "malformed_multipart"


# --- Raw, JSON, form, by structure -----------------------------------------------------------


def test_a_whole_body_is_one_item_even_when_not_media() -> None:
    items = extract_items(
        b"middle-of-a-video-chunk", "application/octet-stream", LIMITS, whole=True
    )
    assert len(items) == 1
    assert items[0].locator == "raw:body"
    assert extract_items(b"", None, LIMITS, whole=True) == []


def test_json_base64_any_field(jpeg: bytes, png: bytes) -> None:
    doc = {
        "text": "hello there, this is a long caption",
        "media": {"data": base64.b64encode(jpeg).decode()},
        "attachments": [
            {"thumb": base64.urlsafe_b64encode(png).decode().rstrip("=")},
            {"url": "data:image/png;base64," + base64.b64encode(png).decode()},
            {"not_media": base64.b64encode(b"just some words, not an image").decode()},
        ],
    }
    items = extract_items(json.dumps(doc).encode(), "application/json", LIMITS)
    assert [item.data for item in items] == [jpeg, png, png]
    assert all(item.locator.startswith("body/json#") for item in items)


@pytest.mark.parametrize(
    "body",
    [
        b"{not json",
        b"[" * 100000 + b"]" * 100000,  # nesting costs nothing: the document is never built
        b"[" + b"[]," * 300000 + b"[]]",  # nor does width
    ],
)
def test_json_that_holds_no_media_is_no_media(body: bytes) -> None:
    assert extract_items(body, "application/json", LIMITS) == []


def test_json_scan_does_not_build_the_document() -> None:
    """4 MiB of empty arrays once cost about 290 MiB and 1.3 s on the event loop (issue 16)."""
    body = b"[" + b"[]," * (4 * 1024 * 1024 // 3) + b"[]]"
    tracemalloc.start()
    try:
        assert extract_items(body, "application/json", LIMITS) == []
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 8 * 1024 * 1024


def test_json_escapes_are_undone(jpeg: bytes) -> None:
    escaped = base64.b64encode(jpeg).decode().replace("/", "\\/")
    body = ('{"media": "' + escaped + '"}').encode()
    assert [item.data for item in extract_items(body, "application/json", LIMITS)] == [jpeg]


def test_form_base64_and_binary_fields(jpeg: bytes, png: bytes) -> None:
    body = urlencode(
        {"type": "base64", "image": base64.b64encode(jpeg).decode(), "other": "x"}
    ).encode()
    body += b"&raw=" + quote(png, safe="").encode()
    # A client that forgets to escape '+' in base64.
    body += b"&sloppy=" + base64.b64encode(jpeg).replace(b"/", b"%2F").replace(b"=", b"%3D")
    items = extract_items(body, "application/x-www-form-urlencoded", LIMITS)
    assert [(item.locator, item.data) for item in items] == [
        ("body/form:image[1]:base64", jpeg),
        ("body/form:raw[3]", png),
        ("body/form:sloppy[4]:base64", jpeg),
    ]


def test_the_structure_is_found_whatever_the_label(jpeg: bytes) -> None:
    encoded = base64.b64encode(jpeg).decode()
    form = urlencode({"image": encoded}).encode()
    as_json = json.dumps({"image": encoded}).encode()
    parts = multipart([(b"Content-Disposition: form-data; name=image", jpeg)])
    cases = [
        (jpeg, "application/json"),  # bytes beat the label
        (form, "application/x-www-form-urlencoded"),
        (form, None),
        (as_json, "text/plain"),
        (
            as_json,
            "multipart/form-data; boundary=nowhere",
        ),  # Discord chat: JSON on a multipart route
        (parts, "multipart/form-data; boundary=XyZ123"),
        (encoded.encode(), None),
        (b"\x00junk before the picture" + jpeg, "application/octet-stream"),
    ]
    for body, content_type in cases:
        items = extract_items(body, content_type, LIMITS)
        assert [item.data for item in items] == [jpeg], (body[:40], content_type)
    assert extract_items(b"just text", "text/plain", LIMITS) == []


def test_oversize() -> None:
    with pytest.raises(ExtractionError) as caught:
        extract_items(b"xx", None, ExtractLimits(max_body_bytes=1))
    assert caught.value.reason == "oversize"


def test_injected_probe_decides_what_carving_keeps(jpeg: bytes) -> None:
    body = b"prefix" + jpeg
    assert extract_items(body, None, LIMITS, probe=lambda data: False) == []
    assert [i.data for i in extract_items(body, None, LIMITS, probe=lambda data: True)] == [jpeg]


# --- Fuzz -------------------------------------------------------------------------------------

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FUZZ
@given(
    body=st.binary(max_size=2048),
    boundary=st.text(min_size=0, max_size=30),
    whole=st.booleans(),
)
def test_fuzz_arbitrary_bodies_only_raise_extraction_error(
    body: bytes, boundary: str, whole: bool
) -> None:
    content_type = f"multipart/form-data; boundary={boundary}"
    reason = None
    try:
        items = extract_items(
            body, content_type, ExtractLimits(max_parts=50, max_items=8), whole=whole
        )
    except ExtractionError as error:
        reason = error.reason
    else:
        assert all(isinstance(item.data, bytes) for item in items)
    assert reason is None or reason in REASONS


@FUZZ
@given(
    chunks=st.lists(
        st.sampled_from(
            [
                b"--b",
                b"\r\n",
                b"\n",
                b"--",
                b"Content-Type: multipart/mixed; boundary=b",
                b"Content-Disposition: form-data; name=\"x\"; filename*=utf-8''%ff",
                b"\r\n\r\n",
                b"\xff\xd8\xff",
                b"data",
                b" ",
            ]
        ),
        max_size=40,
    )
)
def test_fuzz_multipart_structure(chunks: list[bytes]) -> None:
    reason = None
    try:
        extract_items(b"".join(chunks), "multipart/mixed; boundary=b", LIMITS)
    except ExtractionError as error:
        reason = error.reason
    assert reason is None or reason in REASONS


@FUZZ
@given(
    body=st.binary(max_size=512),
    encoding=st.sampled_from(["gzip", "deflate", "br", "zstd", "gzip, br", "bogus", ""]),
)
def test_fuzz_content_encoding(body: bytes, encoding: str) -> None:
    reason = None
    try:
        decode_content_encoding(body, encoding, LIMITS)
    except ExtractionError as error:
        reason = error.reason
    assert reason is None or reason in {"bad_encoding", "encoding_bomb", "oversize"}


@FUZZ
@given(
    doc=st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(max_size=40),
        lambda children: (
            st.lists(children, max_size=4)
            | st.dictionaries(st.text(max_size=5), children, max_size=4)
        ),
        max_leaves=30,
    )
)
def test_fuzz_json_documents(doc: object) -> None:
    items = extract_items(json.dumps(doc).encode(), "application/json", LIMITS)
    assert all(is_media(item.data) for item in items)
