"""How text carries a file's bytes besides base64: JSON escapes, hex, arrays of byte values.

A JavaScript client that serialises a `Uint8Array` with `JSON.stringify` sends
`{"0":255,"1":216,...}`; `Array.from(bytes)` or Python's `list(data)` sends `[255,216,...]`;
`bytes.hex()` and `Buffer.toString("hex")` send hex, maybe grouped with spaces or colons. Servers
that accept them rebuild the file, so the filter does too (adversarial pass a4 follow-up). Only
runs long enough to hold a picture are read, and each is read once, in linear time.
"""

from __future__ import annotations

import base64
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


_C_ARRAY: Final = re.compile(rb"\{\s*0[xX][0-9a-fA-F]{2}\s*,")  # `xxd -i` (pass a7)
_C_BYTE: Final = re.compile(rb"0[xX]([0-9a-fA-F]{2})\b")
# The other encodings with a standard tool (`base32`, `uuencode`, Python's and Adobe's base85):
# a file in one of them is one command away from a picture (pass a7).
_BASE32: Final = re.compile(rb"\s*[A-Z2-7]{96,}=*\s*", re.I)
# A uuencoded block starts a line anywhere: after a mail's or a message's text too (a48 F5).
_UUENCODE: Final = re.compile(
    rb"(?:\A|\n)\s*begin(?:-base64)? [0-7]{3,4} [^\n]{0,255}\n(.*?)\n`?\s*end\b", re.S
)
_ASCII85: Final = re.compile(rb"\s*<~(.{80,}?)~>", re.S)
_BASE85: Final = re.compile(rb"\s*[0-9A-Za-z!#$%&()*+;<=>?@^_`{|}~-]{100,}\s*")


def escaped_readings(text: bytes) -> list[bytes]:
    """What `text` spells as an `xxd` dump or C array, octal escapes, percent-encoding, base32,
    uuencode, base85 or hex: every reading that decodes (the caller keeps the one that is a
    file)."""
    readings = []
    # hex_reading too: hex spaced in pairs (`hexdump`-style) breaks into runs too short for the
    # base64 run search (adversarial pass a51).
    for reader in (_standard_reading, _escaped, hex_reading):
        try:
            reading = reader(text)
        except (ValueError, binascii.Error):
            continue
        if reading:
            readings.append(reading)
    return readings


def _standard_reading(text: bytes) -> bytes | None:
    if _C_ARRAY.search(text[:4096]):
        start = text.index(b"{")
        body = text[start : text.find(b"}", start) if b"}" in text[start:] else len(text)]
        values = _C_BYTE.findall(body)
        return binascii.unhexlify(b"".join(values)) if len(values) >= _MIN_BYTES else None
    if (uu := _UUENCODE.search(text)) is not None:
        return b"".join(binascii.a2b_uu(line) for line in uu[1].splitlines() if line.strip())
    if (a85 := _ASCII85.match(text)) is not None:
        return base64.a85decode(a85[1], ignorechars=b" \t\r\n")
    if _BASE32.fullmatch(text) and not _HEX_START.match(text):
        compact = re.sub(rb"\s", b"", text).upper()
        return base64.b32decode(compact + b"=" * (-len(compact) % 8))
    if _BASE85.fullmatch(text) and re.search(rb"[!#$%&()*+;<=>?@^_`{|}~-]", text[:512]):
        return base64.b85decode(re.sub(rb"\s", b"", text))
    return None


def _escaped(text: bytes) -> bytes | None:
    start = text.find(b"00000000:", 0, 64)  # after a form's field name too
    if start >= 0 and b"\n" not in text.strip():
        return _joined_xxd(text[start:])
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


def _joined_xxd(text: bytes) -> bytes | None:
    """An `xxd` dump whose line breaks were taken out (`curl -d @dump` strips them: adversarial
    pass a52 F5): each line found by the offset it must have, in order, its hex up to the text
    column."""
    out = bytearray()
    at = 0
    while (at := text.find(b"%08x:" % len(out), at)) >= 0:
        groups = _XXD_GROUPS.match(text, at + 9)
        digits = b"" if groups is None else re.sub(rb"\s", b"", groups[1])
        if len(digits) < 2:
            break
        out += binascii.unhexlify(digits[: len(digits) // 2 * 2])
        at = groups.end() if groups is not None else at + 9
    return bytes(out) if len(out) >= _MIN_BYTES else None


_XXD_GROUPS: Final = re.compile(rb" +((?:[0-9a-fA-F]{2,8} )+)")


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


def declared_reading(data: bytes, charset: str) -> bytes | None:
    """The body as UTF-8 where its declared charset reads ASCII otherwise (EBCDIC's cp500, UTF-7):
    a recipient's text viewer shows that text, and base64 in it (a52 F4: base64 of a banked
    picture sent as cp500 or UTF-7 went through). Charsets Python does not know are read as sent."""
    if not charset or len(data) < 64:
        return None
    try:
        if _PRINTABLE.decode(charset, "replace") == _PRINTABLE.decode("latin-1"):
            return None  # ASCII as itself: the bytes as sent are that text
        return data.decode(charset, "replace").encode("utf-8")
    except (LookupError, ValueError):
        return None


_PRINTABLE: Final = bytes(range(32, 127))
