"""The body formats media travels in: multipart (RFC 7578/2046, nested), header parameters
(RFC 2231/5987), base64 (strict, and lenient as PHP and Python read it), and where a JPEG, PNG
or GIF's image data starts and ends. `schoolgate.endpoints.bodyscan` walks a body with them.

Everything is bounded (header sizes, part counts, nesting) and every refusal is an
`ExtractionError` with a stable `reason`, so hostile bodies reach the fail policy, never a
traceback.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Final
from urllib.parse import unquote_to_bytes

from schoolgate.errors import SchoolgateError
from schoolgate.media.containers import gif_blocks

_MiB: Final = 1 << 20
_MAX_NESTING: Final = 4
_MAX_HEADER_BYTES: Final = 16 * 1024
_MIN_BASE64_CHARS: Final = 16
_BASE64_RE: Final = re.compile(rb"[A-Za-z0-9+/\-_]+={0,2}")
_WHITESPACE: Final = re.compile(rb"\s+")
# A string that is mostly (at least half) base64 alphabet is decoded leniently, junk skipped as
# PHP's base64_decode and Python's b64decode(validate=False) do, whatever the junk: a '.' after
# every character is half junk and those decoders still recover the file. Prose decoded this way
# gives random bytes, which the scanner drops (only media, a ZIP or markup is kept).
_LENIENT_SHARE: Final = 0.5
_NOT_BASE64_BYTES: Final = bytes(
    sorted(
        set(range(256)) - set(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/-_")
    )
)


class ExtractionError(SchoolgateError):
    """A body that is refused on purpose. `reason` is a stable code for metrics and policy:

    "oversize", "encoding_bomb", "bad_encoding", "malformed_multipart", "too_many_parts",
    "too_many_items", "malformed_json", "json_too_deep", "malformed_form", "unknown_format",
    "encrypted" (media in a password-protected archive, or an archive whose names are hidden by
    one), "unreadable" (an archive's file compressed in a way not read here).
    """

    def __init__(self, reason: str, message: str) -> None:
        self.reason = reason
        super().__init__(message)


@dataclass(frozen=True)
class ExtractLimits:
    """Caps applied while decoding and parsing one request body."""

    max_body_bytes: int = 64 * _MiB
    max_decoded_bytes: int = 64 * _MiB
    max_ratio: int = 100
    max_parts: int = 1000
    max_items: int = 64
    max_json_depth: int = 64


@dataclass(frozen=True)
class MultipartPart:
    """One leaf part of a multipart body (nested multiparts are flattened)."""

    name: str | None
    filename: str | None
    content_type: str | None
    headers: tuple[tuple[str, str], ...]
    data: bytes
    locator: str


# ---------------------------------------------------------------------------------------------
# Header parameters (Content-Type, Content-Disposition) with RFC 2231 / 5987 extended values


def parse_header_params(value: str) -> tuple[str, dict[str, str]]:
    """Split `type/sub; a=b; c="d"` into the lower-cased main value and its parameters.

    Extended parameters (`filename*=UTF-8''%E2%82%AC.jpg`, continuations `name*0*`, `name*1`)
    are decoded and take precedence over the plain ones. Names are lower-cased.
    """
    main, _, rest = value.partition(";")
    plain: dict[str, str] = {}
    pieces: dict[str, dict[int, tuple[str, bool]]] = {}
    for name, raw in _param_pairs(rest):
        match = re.fullmatch(r"([^*]+)(?:\*(\d+))?(\*)?", name)
        if match is None:
            continue
        base, index, star = match.group(1), match.group(2), match.group(3)
        if index is None and star is None:
            plain.setdefault(base, raw)
        elif len(pieces.setdefault(base, {})) < 64:
            pieces[base][int(index or 0)] = (raw, star is not None)
    for base, parts in pieces.items():
        decoded = _join_extended([parts[i] for i in sorted(parts)])
        if decoded is not None:
            plain[base] = decoded
    return main.strip().lower(), plain


def _param_pairs(text: str) -> Iterator[tuple[str, str]]:
    position = 0
    length = len(text)
    while position < length:
        while position < length and text[position] in " \t;":
            position += 1
        equals = text.find("=", position)
        if equals < 0:
            return
        name = text[position:equals].strip().lower()
        position = equals + 1
        while position < length and text[position] in " \t":
            position += 1
        if position < length and text[position] == '"':
            position += 1
            value: list[str] = []
            while position < length and text[position] != '"':
                if text[position] == "\\" and position + 1 < length:
                    position += 1
                value.append(text[position])
                position += 1
            position += 1
            yield name, "".join(value)
        else:
            end = text.find(";", position)
            end = length if end < 0 else end
            yield name, text[position:end].strip()
            position = end


def _join_extended(parts: list[tuple[str, bool]]) -> str | None:
    charset = "utf-8"
    data = bytearray()
    for number, (raw, encoded) in enumerate(parts):
        text = raw
        if number == 0 and encoded:
            fields = raw.split("'", 2)
            if len(fields) == 3:
                charset = fields[0] or "utf-8"
                text = fields[2]
        data += unquote_to_bytes(text) if encoded else text.encode("utf-8", "replace")
    try:
        return bytes(data).decode(charset, "replace")
    except LookupError:
        return bytes(data).decode("utf-8", "replace")


# ---------------------------------------------------------------------------------------------
# Multipart


def parse_multipart(
    body: bytes, content_type: str | None, limits: ExtractLimits
) -> list[MultipartPart]:
    """Leaf parts of a multipart body (multipart/form-data, /mixed, /related, nested).

    One pass over the body with bounded header sections, part count and nesting; preamble and
    epilogue are ignored; `Content-Transfer-Encoding: base64` parts are decoded.
    """
    parts: list[MultipartPart] = []
    _parse_multipart_into(body, content_type, limits, parts, "multipart", 0)
    return parts


def _boundary(content_type: str | None) -> bytes:
    if not content_type:
        raise ExtractionError("malformed_multipart", "no Content-Type for a multipart body")
    main, params = parse_header_params(content_type)
    boundary = params.get("boundary", "")
    if not main.startswith("multipart/") or not 0 < len(boundary) <= 200:
        raise ExtractionError("malformed_multipart", "Content-Type has no usable boundary")
    try:
        return boundary.encode("ascii")
    except UnicodeEncodeError as error:
        raise ExtractionError("malformed_multipart", "boundary is not ASCII") from error


def _parse_multipart_into(
    body: bytes,
    content_type: str | None,
    limits: ExtractLimits,
    out: list[MultipartPart],
    prefix: str,
    depth: int,
) -> None:
    if depth >= _MAX_NESTING:
        raise ExtractionError("malformed_multipart", "multipart nested too deeply")
    delimiter = b"--" + _boundary(content_type)
    position = _first_delimiter(body, delimiter)
    seen: dict[str, int] = {}
    while True:
        position += len(delimiter)
        if body.startswith(b"--", position):
            return  # close delimiter; the epilogue is ignored
        position = _skip_line_end(body, position)
        next_delimiter = _next_delimiter(body, delimiter, position)
        if next_delimiter < 0:
            raise ExtractionError("malformed_multipart", "multipart body has no closing boundary")
        header_end, data_start = _header_end(body, position)
        if data_start > next_delimiter:
            raise ExtractionError("malformed_multipart", "part headers run into the next part")
        headers = _parse_part_headers(body[position:header_end])
        data_end = next_delimiter - (
            2 if body[next_delimiter - 2 : next_delimiter] == b"\r\n" else 1
        )
        data = body[data_start : max(data_end, data_start)]
        _add_part(headers, data, limits, out, prefix, depth, seen)
        position = next_delimiter


def _first_delimiter(body: bytes, delimiter: bytes) -> int:
    if body.startswith(delimiter):
        return 0
    found = _next_delimiter(body, delimiter, 0)
    if found < 0:
        raise ExtractionError("malformed_multipart", "boundary not found in the body")
    return found


def _next_delimiter(body: bytes, delimiter: bytes, start: int) -> int:
    """Offset of the next delimiter that starts a line (after LF), or -1."""
    found = body.find(b"\n" + delimiter, start)
    return found + 1 if found >= 0 else -1


def _skip_line_end(body: bytes, position: int) -> int:
    # Transport padding (spaces, tabs) may follow a delimiter before the line break.
    while position < len(body) and body[position] in b" \t":
        position += 1
    if body.startswith(b"\r\n", position):
        return position + 2
    if body.startswith(b"\n", position):
        return position + 1
    raise ExtractionError("malformed_multipart", "delimiter line is not terminated")


def _header_end(body: bytes, start: int) -> tuple[int, int]:
    window = body[start : start + _MAX_HEADER_BYTES + 4]
    if window.startswith((b"\r\n", b"\n")):  # a part with no headers
        return start, start + (2 if window.startswith(b"\r\n") else 1)
    candidates = [(window.find(b"\r\n\r\n"), 4), (window.find(b"\n\n"), 2)]
    found = [(offset, size) for offset, size in candidates if offset >= 0]
    if not found:
        raise ExtractionError("malformed_multipart", "part headers are unterminated or too long")
    offset, size = min(found)
    return start + offset, start + offset + size


def _parse_part_headers(raw: bytes) -> list[tuple[str, str]]:
    headers: list[tuple[str, str]] = []
    # Clients send UTF-8 file names raw; invalid bytes are replaced, not fatal.
    for line in raw.decode("utf-8", "replace").replace("\r\n", "\n").split("\n"):
        if line[:1] in (" ", "\t") and headers:  # obsolete line folding
            name, value = headers[-1]
            headers[-1] = (name, value + " " + line.strip())
        elif ":" in line:
            name, _, value = line.partition(":")
            headers.append((name.strip().lower(), value.strip()))
        if len(headers) > 64:
            raise ExtractionError("malformed_multipart", "too many headers in one part")
    return headers


def _add_part(
    headers: list[tuple[str, str]],
    data: bytes,
    limits: ExtractLimits,
    out: list[MultipartPart],
    prefix: str,
    depth: int,
    seen: dict[str, int],
) -> None:
    header_map = dict(headers)
    _, disposition = parse_header_params(header_map.get("content-disposition", ""))
    name = disposition.get("name")
    filename = disposition.get("filename")
    content_type = header_map.get("content-type")
    key = name or ""
    index = seen.get(key, 0)
    seen[key] = index + 1
    locator = f"{prefix}:{key}[{index}]"
    data = transfer_decoded(data, header_map.get("content-transfer-encoding", ""), locator)
    if content_type and content_type.strip().lower().startswith("multipart/"):
        _parse_multipart_into(data, content_type, limits, out, f"{locator}/multipart", depth + 1)
        return
    if len(out) >= limits.max_parts:
        raise ExtractionError("too_many_parts", f"more than {limits.max_parts} multipart parts")
    out.append(MultipartPart(name, filename, content_type, tuple(headers), data, locator))


def transfer_decoded(data: bytes, encoding: str, locator: str) -> bytes:
    """A MIME part's bytes with its Content-Transfer-Encoding undone: base64, or the
    quoted-printable that mail clients write (adversarial pass a46 F1: a picture attached
    quoted-printable to a mail sent through Gmail's or Graph's API passed)."""
    kind = encoding.strip().lower()
    if kind == "base64":
        decoded = b64decode(data)
        if decoded is None:
            raise ExtractionError("malformed_multipart", f"{locator}: invalid base64 part")
        return decoded
    if kind == "quoted-printable":
        return binascii.a2b_qp(data)
    return data


# ---------------------------------------------------------------------------------------------
# Base64 and data: URLs


def b64decode(data: bytes) -> bytes | None:
    """Standard or URL-safe base64, padded or not, line-wrapped or not; None if it is not."""
    compact = _WHITESPACE.sub(b"", data)
    if len(compact) < _MIN_BASE64_CHARS or _BASE64_RE.fullmatch(compact) is None:
        return None
    if b"-" in compact or b"_" in compact:
        if b"+" in compact or b"/" in compact:
            return None
        compact = compact.replace(b"-", b"+").replace(b"_", b"/")
    compact = compact.rstrip(b"=")
    if len(compact) % 4 == 1:
        return None
    try:
        return base64.b64decode(compact + b"=" * (-len(compact) % 4), validate=True)
    except binascii.Error:
        return None


def lenient_b64_readings(data: bytes) -> list[bytes]:
    """Base64 as lenient decoders read it: characters outside the alphabet are skipped, '='
    included (PHP's base64_decode, Python's b64decode(validate=False), Node's Buffer); [] for
    text that is not at least half base64 alphabet.

    Which characters are junk depends on the decoder when both alphabets appear: PHP and Python
    skip '-' and '_' (so a '-' after every 4 characters is junk to them), a URL-safe decoder
    skips '+' and '/', Node reads both alphabets as one. Then there are three readings, in that
    order; else one. The caller picks the one that gives a picture."""
    if len(data) < _MIN_BASE64_CHARS:
        return []
    residue = data.translate(None, _NOT_BASE64_BYTES)
    if len(residue) + data.count(b"=") < _LENIENT_SHARE * len(data):
        return []
    combined = residue.replace(b"-", b"+").replace(b"_", b"/")
    readings = [combined]
    if any(c in residue for c in b"+/") and any(c in residue for c in b"-_"):
        readings = [
            residue.translate(None, b"-_"),
            residue.translate(None, b"+/").replace(b"-", b"+").replace(b"_", b"/"),
            combined,
        ]
    return [decoded for reading in readings if (decoded := _decode_alphabet(reading)) is not None]


def _decode_alphabet(alphabet: bytes) -> bytes | None:
    """Standard-alphabet characters only, no padding: decoded; a last lone character (six bits,
    not a byte) is dropped, as PHP drops it."""
    usable = len(alphabet) - (len(alphabet) % 4 == 1)
    if usable < _MIN_BASE64_CHARS:
        return None
    try:
        return base64.b64decode(alphabet[:usable] + b"=" * (-usable % 4), validate=True)
    except binascii.Error:
        return None


# ---------------------------------------------------------------------------------------------
# Where a picture's image data starts and where the picture ends, by its structure (JPEG, PNG,
# GIF): for pictures found inside other bytes, and for quoted headers that are not pictures


def media_end(data: bytes, offset: int) -> int:
    """Where a picture found at `offset` ends, so what follows it (a PDF's `endstream`, more
    junk) is not judged as part of it and its own thumbnail is not carved again. JPEG: the EOI
    after the first scan (segments before it are skipped by length, so an EXIF thumbnail's EOI
    does not count); PNG: after IEND; JPEG 2000: after its codestream box; anything else: the
    end of the data."""
    if data.startswith(b"\xff\xd8", offset):
        position = offset + 2
        while position + 4 <= len(data) and data[position] == 0xFF:
            marker = data[position + 1]
            if marker == 0xDA:  # start of scan: entropy-coded data up to EOI
                eoi = data.find(b"\xff\xd9", position)
                return eoi + 2 if eoi >= 0 else len(data)
            if marker == 0xFF:
                position += 1
                continue
            position += 2 + int.from_bytes(data[position + 2 : position + 4], "big")
        return len(data)
    if data.startswith(b"\x89PNG", offset):
        iend = data.find(b"IEND", offset)
        return iend + 8 if iend >= 0 else len(data)
    if data.startswith(b"\x00\x00\x00\x0cjP  ", offset):
        return _jp2_end(data, offset + 12)
    return len(data)


def whole_picture(data: bytes) -> bool:
    """Whether `data` starts with a picture that has come to its end (JPEG: its EOI after the
    scan; PNG: IEND; WebP: as long as its RIFF header says): the first part of an upload that a
    service already holds whole, whatever follows. Only ends that cannot appear earlier count (a
    GIF's trailer byte can): a picture judged before its end would be refused as truncated."""
    if data.startswith(b"\xff\xd8\xff"):
        end = media_end(data, 0)
        return data[end - 2 : end] == b"\xff\xd9"
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        end = media_end(data, 0)
        return data[end - 8 : end - 4] == b"IEND"
    if data.startswith(b"RIFF") and data[8:12] == b"WEBP":
        return int.from_bytes(data[4:8], "little") + 8 <= len(data)
    return False


def _jp2_end(data: bytes, position: int) -> int:
    """JPEG 2000: after the codestream box (to its EOC marker when its size is "to the end")."""
    for _ in range(64):
        if position + 8 > len(data):
            break
        size = int.from_bytes(data[position : position + 4], "big")
        kind = data[position + 4 : position + 8]
        if size == 1:
            size = int.from_bytes(data[position + 8 : position + 16], "big")
        if kind == b"jp2c" and size == 0:
            eoc = data.find(b"\xff\xd9", position)
            return eoc + 2 if eoc >= 0 else len(data)
        if size < 8:
            break
        position += size
        if kind == b"jp2c":
            return min(position, len(data))
    return len(data)


def has_image_data(data: bytes) -> bool:
    """Whether a JPEG, PNG or GIF goes on past its headers into image data (JPEG: a byte after
    its first start-of-scan header; PNG: IDAT payload; GIF: a byte after its first image
    descriptor). False for a header alone, and for anything else."""
    if data.startswith(b"\xff\xd8"):
        return _jpeg_has_scan_data(data)
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return _png_has_image_data(data)
    if data.startswith((b"GIF87a", b"GIF89a")):
        return _gif_has_image_data(data)
    return False


def _jpeg_has_scan_data(data: bytes) -> bool:
    position = 2
    while position + 4 <= len(data):
        if data[position] != 0xFF:
            return False  # not a marker where one must be: no scan follows
        marker = data[position + 1]
        if marker == 0xFF:
            position += 1
            continue
        if 0xD0 <= marker <= 0xD7 or marker == 0x01:
            position += 2
            continue
        end = position + 2 + int.from_bytes(data[position + 2 : position + 4], "big")
        if marker == 0xDA:
            return len(data) > end
        position = end
    return False


def _png_has_image_data(data: bytes) -> bool:
    position = 8
    while position + 8 <= len(data):
        length = int.from_bytes(data[position : position + 4], "big")
        if data[position + 4 : position + 8] == b"IDAT" and length > 0:
            return len(data) > position + 8
        position += 12 + length
    return False


def _gif_has_image_data(data: bytes) -> bool:
    for block, position in gif_blocks(data):
        if block == 0x2C:  # image descriptor, its local colour table, then the LZW data
            if position + 10 > len(data):
                return False
            local = data[position + 9]
            start = position + 10 + (3 << ((local & 0x07) + 1) if local & 0x80 else 0)
            return len(data) > start
        if block != 0x21:
            return False  # the trailer: no image
    return False
