"""How text carries a file's bytes besides base64: JSON escapes, hex, arrays of byte values.

A JavaScript client that serialises a `Uint8Array` with `JSON.stringify` sends
`{"0":255,"1":216,...}`; `Array.from(bytes)` or Python's `list(data)` sends `[255,216,...]`;
`bytes.hex()` and `Buffer.toString("hex")` send hex, maybe grouped with spaces or colons. Servers
that accept them rebuild the file, so the filter does too (adversarial pass a4 follow-up). Only
runs long enough to hold a picture are read, and each is read once, in linear time.
"""

from __future__ import annotations

import binascii
import json
import re
from collections.abc import Iterator
from typing import Final
from urllib.parse import unquote_to_bytes

_MIN_BYTES: Final = 64  # shorter runs cannot hold a picture worth judging
_BYTE_LIST: Final = re.compile(rb"\[\s*\d{1,3}(?:\s*,\s*\d{1,3}){63,}+\s*\]")
_BYTE_OBJECT: Final = re.compile(
    rb'\{\s*"0"\s*:\s*\d{1,3}(?:\s*,\s*"\d{1,9}"\s*:\s*\d{1,3}){63,}+\s*\}'
)
_OBJECT_VALUE: Final = re.compile(rb":\s*(\d{1,3})")
_NUMBER: Final = re.compile(rb"\d{1,3}")
# Hex as tools print it: plain, or in groups with spaces, colons or commas, with 0x / \x marks.
_HEX_MARKS: Final = re.compile(rb"0x|\\x|[\s:,-]")
_HEX: Final = re.compile(rb"(?:[0-9A-Fa-f]{2}){%d,}" % _MIN_BYTES)
_HEX_START: Final = re.compile(rb"\s*(?:(?:0x|\\x)?[0-9A-Fa-f]{2}[\s:,-]*){32}")


def byte_arrays(data: bytes) -> Iterator[tuple[int, bytes]]:
    """(offset, bytes) for each JSON array or index-keyed object of byte values in `data`."""
    for pattern, values in ((_BYTE_LIST, _NUMBER), (_BYTE_OBJECT, _OBJECT_VALUE)):
        for match in pattern.finditer(data):
            try:
                yield match.start(), bytes(map(int, values.findall(match[0])))
            except ValueError:
                continue  # a number over 255: a list of something else


def hex_reading(text: bytes) -> bytes | None:
    """The bytes a string of hex spells (grouped or marked as tools print it), else None."""
    if _HEX_START.match(text) is None:
        return None  # base64 and prose fail here, before the whole string is copied
    compact = _HEX_MARKS.sub(b"", text)
    if _HEX.fullmatch(compact) is None:
        return None
    return binascii.unhexlify(compact)


# `xxd` (offset, groups of hex, the bytes as text), octal escapes as C and `printf` write them,
# and percent-encoding: each an undo away for a pupil who can paste (adversarial pass a5).
_XXD_LINE: Final = re.compile(rb"^\s*[0-9a-fA-F]{4,16}:\s+((?:[0-9a-fA-F]{2,8}\s)+)", re.M)
_OCTAL_START: Final = re.compile(rb"\s*(?:\\[0-3][0-7]{2}){8}")
_OCTAL: Final = re.compile(rb"\\([0-3][0-7]{2})")
_PERCENT_START: Final = re.compile(rb"\s*(?:%[0-9A-Fa-f]{2}){8}")


def escaped_reading(text: bytes) -> bytes | None:
    """The bytes of an `xxd` dump, a string of octal escapes or a percent-encoded string."""
    if _XXD_LINE.match(text):
        groups = b"".join(_XXD_LINE.findall(text))
        digits = re.sub(rb"\s", b"", groups)
        return (
            binascii.unhexlify(digits[: len(digits) // 2 * 2])
            if len(digits) >= 2 * _MIN_BYTES
            else None
        )
    if _OCTAL_START.match(text):
        return _OCTAL.sub(lambda escape: bytes([int(escape[1], 8)]), text.strip())
    if _PERCENT_START.match(text):
        return unquote_to_bytes(text.strip())
    return None


def unescape_json(literal: bytes) -> bytes:
    """A JSON string literal's bytes: `\\u00XX` escapes carry bytes 1:1."""
    if b"\\" not in literal:
        return literal
    try:
        text: str = json.loads(b'"' + literal + b'"')
    except ValueError:
        return literal.replace(b"\\/", b"/")
    try:
        return text.encode("latin-1")
    except UnicodeEncodeError:
        return text.encode("utf-8", "replace")
