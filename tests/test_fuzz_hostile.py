"""Property fuzzing of what hostile uploads reach first: content decoding, multipart parsing,
item extraction, chunk parsing and reassembly, sniffing and image decoding. Budgets come from the
hypothesis profile in conftest ("ci" by default; SCHOOLGATE_FUZZ=long for a deeper run).

Properties, not just "does not crash": well-formed input round-trips exactly, any mutation of it
either still parses or is refused with a stable reason, and nothing else escapes."""

from __future__ import annotations

import base64
import functools
import gzip
import io
import itertools
import json
import zlib
from collections.abc import Callable

import brotli
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st
from PIL import Image

from schoolgate.endpoints.bodyscan import extract_items
from schoolgate.endpoints.catalog import PROTOCOLS
from schoolgate.endpoints.encoding import decode_content_encoding
from schoolgate.endpoints.extract import (
    ExtractionError,
    ExtractLimits,
    parse_multipart,
)
from schoolgate.endpoints.protocols import parse_chunk
from schoolgate.endpoints.reassembly import (
    Chunk,
    ChunkError,
    SessionState,
    SessionStatus,
    UploadSessions,
)
from schoolgate.errors import MediaRefused
from schoolgate.media.decode import DecodedImage, MediaLimits, decode_image
from schoolgate.media.sniff import MediaType, sniff
from tests.conftest import zstd_compress

LIMITS = ExtractLimits(max_body_bytes=1 << 20, max_decoded_bytes=1 << 20, max_parts=200)
EXTRACT_REASONS = {
    "oversize", "encoding_bomb", "bad_encoding", "malformed_multipart", "too_many_parts",
    "too_many_items", "malformed_json", "json_too_deep", "malformed_form", "unknown_format",
}  # fmt: skip
MEDIA_REASONS = {
    "empty",
    "byte_cap",
    "unsupported",
    "pixel_cap",
    "frame_cap",
    "truncated",
    "corrupt",
}

ENCODERS: dict[str, Callable[[bytes], bytes]] = {
    "gzip": gzip.compress,
    "deflate": zlib.compress,
    "br": brotli.compress,
    "zstd": zstd_compress,
}


def attempt(call: Callable[[], object]) -> tuple[object, str | None]:
    """(result, None), or (None, reason) when `call` refused its input on purpose."""
    try:
        return call(), None
    except (ExtractionError, ChunkError, MediaRefused) as error:
        return None, error.reason


def mutate(data: bytes, edits: list[tuple[int, int]], cut: int | None) -> bytes:
    out = bytearray(data if cut is None else data[:cut])
    for offset, value in edits:
        if out:
            out[offset % len(out)] = value
    return bytes(out)


edits_strategy = st.lists(st.tuples(st.integers(0, 1 << 16), st.integers(0, 255)), max_size=8)


# --- Content decoding ---------------------------------------------------------------------------


@given(data=st.binary(max_size=4096), coding=st.sampled_from(sorted(ENCODERS)))
def test_content_encoding_round_trips(data: bytes, coding: str) -> None:
    assert decode_content_encoding(ENCODERS[coding](data), coding, LIMITS) == data


@given(
    unit=st.binary(min_size=1, max_size=64),
    size=st.integers(1, LIMITS.max_decoded_bytes),
    coding=st.sampled_from(sorted(ENCODERS)),
)
def test_highly_compressible_bodies_round_trip(unit: bytes, size: int, coding: str) -> None:
    # Under the decoded-size cap a high ratio is legitimate (flat images, repetitive JSON).
    data = (unit * (size // len(unit) + 1))[:size]
    assert decode_content_encoding(ENCODERS[coding](data), coding, LIMITS) == data


@given(
    data=st.binary(max_size=2048),
    coding=st.sampled_from(sorted(ENCODERS)),
    edits=edits_strategy,
    cut=st.none() | st.integers(0, 4096),
)
def test_mutated_compressed_bodies_decode_or_are_refused(
    data: bytes, coding: str, edits: list[tuple[int, int]], cut: int | None
) -> None:
    body = mutate(ENCODERS[coding](data), edits, cut)
    decoded, reason = attempt(lambda: decode_content_encoding(body, coding, LIMITS))
    if reason is None:
        assert isinstance(decoded, bytes)
        assert len(decoded) <= LIMITS.max_decoded_bytes
    else:
        assert reason in {"bad_encoding", "encoding_bomb", "oversize"}


@pytest.mark.parametrize("coding", sorted(ENCODERS))
def test_bombs_are_refused_whatever_the_coding(coding: str) -> None:
    bomb = ENCODERS[coding](b"\0" * (6 << 20))  # 6 MiB from a few bytes, over the 1 MiB cap
    _, reason = attempt(lambda: decode_content_encoding(bomb, coding, LIMITS))
    assert reason in {"encoding_bomb", "oversize"}


# --- Multipart ------------------------------------------------------------------------------------

boundary_chars = st.sampled_from(
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789'()+_,-./:=?"
)
part_strategy = st.tuples(
    st.text(st.characters(codec="utf-8", exclude_characters='"\r\n\\'), max_size=12),
    st.none() | st.text(st.characters(codec="utf-8", exclude_characters='"\r\n\\'), max_size=24),
    st.binary(max_size=300),
)


def build_multipart(boundary: str, parts: list[tuple[str, str | None, bytes]]) -> bytes:
    body = b"preamble\r\n"
    for name, filename, data in parts:
        disposition = f'form-data; name="{name}"'
        if filename is not None:
            disposition += f'; filename="{filename}"'
        body += f"--{boundary}\r\nContent-Disposition: {disposition}\r\n\r\n".encode()
        body += data + b"\r\n"
    return body + f"--{boundary}--\r\nepilogue".encode()


@given(
    boundary=st.text(boundary_chars, min_size=1, max_size=70),
    parts=st.lists(part_strategy, max_size=8),
)
def test_well_formed_multipart_round_trips(
    boundary: str, parts: list[tuple[str, str | None, bytes]]
) -> None:
    # A delimiter line inside the data would end the part early: that is the format, not a bug.
    assume(all(b"\n--" + boundary.encode() not in b"\n" + data for _, _, data in parts))
    body = build_multipart(boundary, parts)
    parsed = parse_multipart(body, f'multipart/form-data; boundary="{boundary}"', LIMITS)
    assert [(p.name, p.filename, p.data) for p in parsed] == [
        (name, filename, data) for name, filename, data in parts
    ]


@given(
    parts=st.lists(part_strategy, min_size=1, max_size=6),
    edits=edits_strategy,
    cut=st.none() | st.integers(0, 3000),
)
def test_mutated_multipart_parses_or_is_refused(
    parts: list[tuple[str, str | None, bytes]], edits: list[tuple[int, int]], cut: int | None
) -> None:
    body = mutate(build_multipart("bnd", parts), edits, cut)
    parsed, reason = attempt(
        lambda: parse_multipart(body, "multipart/form-data; boundary=bnd", LIMITS)
    )
    if reason is not None:
        assert reason in EXTRACT_REASONS
    else:
        assert isinstance(parsed, list)
        assert len(parsed) <= LIMITS.max_parts
        assert sum(len(p.data) for p in parsed) <= len(body)


@given(content_type=st.text(max_size=120), body=st.binary(max_size=1024))
def test_arbitrary_content_types_never_escape(content_type: str, body: bytes) -> None:
    for whole in (False, True):
        call = functools.partial(extract_items, body, content_type, LIMITS, whole=whole)
        _, reason = attempt(call)
        assert reason is None or reason in EXTRACT_REASONS


# --- Items hidden in JSON -------------------------------------------------------------------------

TINY_PNG = b""


def tiny_png() -> bytes:
    global TINY_PNG
    if not TINY_PNG:
        buffer = io.BytesIO()
        Image.new("RGB", (8, 8), (10, 200, 30)).save(buffer, "PNG")
        TINY_PNG = buffer.getvalue()
    return TINY_PNG


json_leaf = st.none() | st.booleans() | st.integers() | st.text(max_size=20)
json_doc = st.recursive(
    json_leaf,
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=6), children, max_size=3)
    ),
    max_leaves=12,
)


@given(doc=json_doc, path=st.lists(st.text(max_size=6), max_size=10), urlsafe=st.booleans())
def test_base64_media_is_found_wherever_it_sits_in_json(
    doc: object, path: list[str], urlsafe: bool
) -> None:
    encoder = base64.urlsafe_b64encode if urlsafe else base64.b64encode
    value: object = encoder(tiny_png()).decode()
    for key in reversed(path):
        value = {key: value}
    body = json.dumps({"noise": doc, "payload": value}).encode()
    items = extract_items(body, "application/json", LIMITS)
    assert tiny_png() in [item.data for item in items]


# --- Chunk parsing and reassembly -----------------------------------------------------------------

header_names = st.sampled_from(
    [
        "Content-Range", "X-Goog-Upload-Command", "X-Goog-Upload-Offset",
        "X-Goog-Upload-Header-Content-Length", "X-Entity-Length", "X-Entity-Name", "Offset",
        "Dropbox-API-Arg", "Content-Type",
    ]
)  # fmt: skip
header_values = st.one_of(
    st.text(max_size=40),
    st.from_regex(r"bytes (\d{1,6}-\d{1,6}|\*)/(\d{1,6}|\*)", fullmatch=True),
    st.sampled_from(["upload, finalize", "start", "query", "-1", "9" * 30, '{"cursor": 1}']),
    st.from_regex(r"multipart/form-data; boundary=[a-z]{1,8}", fullmatch=True),
)


@given(
    protocol=st.sampled_from(PROTOCOLS),
    method=st.sampled_from(["POST", "PUT", "GET", "PATCH"]),
    path=st.text(max_size=60).map(lambda text: "/" + text),
    headers=st.lists(st.tuples(header_names, header_values), max_size=5),
    body=st.binary(max_size=300),
)
def test_chunk_requests_parse_or_raise_chunk_error(
    protocol: str, method: str, path: str, headers: list[tuple[str, str]], body: bytes
) -> None:
    chunk, reason = attempt(lambda: parse_chunk(protocol, method, path, headers, body, LIMITS))
    assert reason in (None, "bad_chunk")
    if not isinstance(chunk, Chunk):
        return
    sessions = UploadSessions(max_session_bytes=1 << 20, max_total_bytes=1 << 21)
    state, reason = attempt(lambda: sessions.add("client", "app", chunk))
    assert reason in (None, "bad_chunk")
    if isinstance(state, SessionState):
        assert state.received_bytes <= 1 << 20


@given(
    media=st.binary(min_size=1, max_size=3000),
    cuts=st.lists(st.integers(0, 3000), max_size=8),
    overlap=st.integers(0, 64),
    order=st.randoms(use_true_random=False),
)
def test_chunks_in_any_order_before_the_last_reassemble_exactly(
    media: bytes, cuts: list[int], overlap: int, order: object
) -> None:
    points = sorted({0, len(media), *(c % len(media) for c in cuts)})
    pieces = []
    for start, end in itertools.pairwise(points):
        start = max(0, start - overlap)  # overlapping pieces agree byte for byte
        pieces.append((start, media[start:end]))
    # Any order, except that the piece that ends the upload comes last: a last chunk that
    # arrives while parts are missing ends the upload with parts unseen (refused, issue 16).
    last = pieces.pop()
    order.shuffle(pieces)  # type: ignore[attr-defined]
    pieces.append(last)
    sessions = UploadSessions(max_session_bytes=1 << 20)
    headers = {"Content-Range": ""}
    state = None
    for offset, piece in pieces:
        headers["Content-Range"] = f"bytes {offset}-{offset + len(piece) - 1}/{len(media)}"
        chunk = parse_chunk("content_range", "PUT", "/u/1", headers, piece)
        assert chunk is not None
        state = sessions.add("c", "a", chunk)
        assert not state.failed
    assert state is not None
    assert state.status is SessionStatus.COMPLETE
    assert sessions.assemble("c", "a", "/u/1") == media


@given(media=st.binary(min_size=8, max_size=2000), where=st.integers(0, 2000))
def test_disagreeing_overlap_is_flagged_never_assembled(media: bytes, where: int) -> None:
    at = where % len(media)
    forged = bytearray(media[at:])
    forged[0] ^= 0xFF
    sessions = UploadSessions()
    first = parse_chunk(
        "content_range", "PUT", "/u/2", {"Content-Range": f"bytes 0-{len(media) - 1}/*"}, media
    )
    second = parse_chunk(
        "content_range",
        "PUT",
        "/u/2",
        {"Content-Range": f"bytes {at}-{len(media) - 1}/{len(media)}"},
        bytes(forged),
    )
    assert first is not None
    assert second is not None
    sessions.add("c", "a", first)
    assert sessions.add("c", "a", second).status is SessionStatus.CONFLICTING_CHUNKS


# --- Sniffing and decoding ------------------------------------------------------------------------


@given(head=st.binary(max_size=5000), tail=st.binary(max_size=200))
def test_sniff_reads_only_the_first_4_kib(head: bytes, tail: bytes) -> None:
    kind = sniff(head)
    assert isinstance(kind, MediaType)
    if len(head) >= 4096:
        assert sniff(head + tail) is kind


FORMATS = ["JPEG", "PNG", "GIF", "WEBP", "BMP", "TIFF"]


@given(
    width=st.integers(1, 80),
    height=st.integers(1, 80),
    fmt=st.sampled_from(FORMATS),
    colour=st.tuples(st.integers(0, 255), st.integers(0, 255), st.integers(0, 255)),
    junk=st.binary(max_size=64),
)
def test_any_small_valid_image_decodes_to_its_size(
    width: int, height: int, fmt: str, colour: tuple[int, int, int], junk: bytes
) -> None:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), colour).save(buffer, fmt)
    decoded = decode_image(buffer.getvalue() + junk, MediaLimits(max_pixels=10_000))
    assert (decoded.width, decoded.height) == (width, height)
    assert decoded.image.mode == "RGB"


@pytest.mark.filterwarnings("ignore::UserWarning")  # Pillow warns about the corrupt TIFF tags
@given(
    fmt=st.sampled_from(FORMATS),
    edits=edits_strategy,
    cut=st.none() | st.integers(0, 4000),
)
def test_mutated_images_decode_or_are_refused(
    fmt: str, edits: list[tuple[int, int]], cut: int | None
) -> None:
    buffer = io.BytesIO()
    Image.effect_mandelbrot((48, 40), (-2, -1.2, 1, 1.2), 40).convert("RGB").save(buffer, fmt)
    data = mutate(buffer.getvalue(), edits, cut)
    decoded, reason = attempt(
        lambda: decode_image(data, MediaLimits(max_pixels=1_000_000, max_frames=50))
    )
    if reason is not None:
        assert reason in MEDIA_REASONS
    else:
        assert isinstance(decoded, DecodedImage)
        assert decoded.width * decoded.height <= 1_000_000
