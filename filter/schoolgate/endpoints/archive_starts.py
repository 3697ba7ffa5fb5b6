"""The files an archive's first part holds: a ZIP's, a tar's or a gzipped tar's, read from the
start, the last perhaps cut short (adversarial passes a70 F8, a71 N1-N3). A reader finds a
ZIP's files from its central directory at its end, and a tar's end blocks close it: both may
be sent from elsewhere, so an unfinished upload's first part is looked into as it grows.

- A ZIP's local headers are read in order; an entry whose sizes come after its data (a
  streamed ZIP, flag bit 3) runs to the end of its deflate stream, or when stored to the next
  header's signature.
- A tar's headers give each file's size; a gzipped tar is inflated as far as its bytes go.

Cut files give what they hold (their rows are looked at). Encrypted ZIP entries are skipped;
what is inflated is capped (ExtractLimits.max_decoded_bytes) and bombs are refused.
"""

from __future__ import annotations

import re
import zlib
from typing import Final

from schoolgate.endpoints.extract import ExtractionError, ExtractLimits
from schoolgate.endpoints.ziparchive import ZIP_MAGIC

_MAX_MEMBERS: Final = 2000
_GZIP: Final = b"\x1f\x8b"
_ZIP_SIGNATURES: Final = re.compile(b"PK\x07\x08|PK\x03\x04|PK\x01\x02")
_TAR_BLOCK: Final = 512
_TAR_FILES: Final = (b"0", b"\x00", b"7")  # regular files (a PAX or GNU long-name header is not)


def is_archive_start(data: bytes) -> bool:
    """Whether `data` starts a ZIP, a tar or a gzip stream (which may hold a tar)."""
    return data.startswith((ZIP_MAGIC, _GZIP)) or data[257:262] == b"ustar"


def archive_start_members(
    data: bytes, limits: ExtractLimits, since: int = 0
) -> list[tuple[str, bytes]]:
    """(name, bytes) of each file in the first part `data` of a ZIP, a tar or a gzipped tar
    that was not yet whole in its first `since` bytes (those were looked at before)."""
    if data.startswith(ZIP_MAGIC):
        members = _zip_members(data, limits)
    else:
        if data.startswith(_GZIP):
            since, data = _gunzipped(data, since, limits)
        members = _tar_members(data) if data[257:262] == b"ustar" else []
    return [(name, content) for name, content, end in members if end > since]


def _gunzipped(data: bytes, since: int, limits: ExtractLimits) -> tuple[int, bytes]:
    """How long the inflated `data[:since]` is, and the inflated `data` (one pass)."""
    inflater = zlib.decompressobj(zlib.MAX_WBITS | 16)
    try:
        before = inflater.decompress(data[:since], limits.max_decoded_bytes + 1)
        inflated = before + inflater.decompress(data[since:], limits.max_decoded_bytes + 1)
    except zlib.error:
        return 0, b""
    if len(inflated) > limits.max_decoded_bytes:
        raise ExtractionError("encoding_bomb", "a gzipped archive inflates past the cap")
    return len(before), inflated


def _zip_members(data: bytes, limits: ExtractLimits) -> list[tuple[str, bytes, int]]:
    """(name, bytes, where its data ends or the data does) of each entry."""
    found: list[tuple[str, bytes, int]] = []
    position, budget = 0, limits.max_decoded_bytes
    while data.startswith(ZIP_MAGIC, position) and len(found) < _MAX_MEMBERS:
        header = data[position : position + 30]
        if len(header) < 30:
            break
        flags, method, size, names, extra = (
            int.from_bytes(header[at : at + width], "little")
            for at, width in ((6, 2), (8, 2), (18, 4), (26, 2), (28, 2))
        )
        start = position + 30 + names + extra
        name = data[position + 30 : position + 30 + names].decode("utf-8", "replace")
        if size == 0xFFFFFFFF or method not in (0, 8):
            break  # ZIP64 or a method not read here
        streamed = bool(flags & 0x8) and not size
        content, end = _zip_entry(data, start, size, method, streamed, budget)
        if len(content) > budget:
            raise ExtractionError("encoding_bomb", f"{name[:80]!r} inflates past the cap")
        if not flags & 0x1 and content:
            budget -= len(content)
            found.append((name, content, len(data) if end is None else end))
        if end is None:
            break
        position = end
    return found


def _zip_entry(data: bytes, start: int, size: int, method: int, streamed: bool,
               budget: int) -> tuple[bytes, int | None]:  # fmt: skip
    """An entry's bytes (inflated), and where the next header may start (None: unknown)."""
    if method == 8:
        inflater = zlib.decompressobj(-15)
        stored = data[start:] if streamed else data[start : start + size]
        try:
            content = inflater.decompress(stored, budget + 1)
        except zlib.error:
            return b"", None
        if not streamed:
            return content, start + size
        if not inflater.eof:
            return content, None
        end = len(data) - len(inflater.unused_data)
    elif streamed:
        found = _ZIP_SIGNATURES.search(data, start)
        end = found.start() if found else len(data)
        content = data[start:end]
        if found is None:
            return content, None
    else:
        return data[start : start + size], start + size
    # A streamed entry's data descriptor: its signature (optional), CRC and two sizes.
    return content, end + (16 if data.startswith(b"PK\x07\x08", end) else 12)


def _tar_members(data: bytes) -> list[tuple[str, bytes, int]]:
    """(name, bytes, where its data ends) of each regular file."""
    found: list[tuple[str, bytes, int]] = []
    position = 0
    while position + _TAR_BLOCK <= len(data) and len(found) < _MAX_MEMBERS:
        header = data[position : position + _TAR_BLOCK]
        if not header.strip(b"\x00"):
            break  # the end blocks
        try:
            size = int(header[124:136].split(b"\x00")[0].strip() or b"0", 8)
        except ValueError:
            break
        start = position + _TAR_BLOCK
        if header[156:157] in _TAR_FILES and size:
            name = header[:100].split(b"\x00")[0].decode("utf-8", "replace")
            found.append((name, data[start : start + size], min(start + size, len(data))))
        position = start + -(-size // _TAR_BLOCK) * _TAR_BLOCK
    return found
