"""The pictures of an RTF document (WordPad, Word, LibreOffice): each `{\\pict ...}` group holds
one as hex digits, which RTF readers take with any whitespace between them (adversarial pass
a44 F5: a `\\jpegblip` written two digits to a line was read by Word and passed here, where
only unbroken runs of hex were decoded). Pictures written raw after `\\binN` are found by the
carve. Bounded: groups read, and the bytes of each."""

from __future__ import annotations

import binascii
import re
from typing import Final

_PICT: Final = re.compile(rb"\{\\pict\b")
_BRACE: Final = re.compile(rb"(?<!\\)[{}]")
# Inside a picture: ignorable destinations ({\*\blipuid ...}) carry no picture data and are
# dropped; other groups ({hex}{hex}, a48 F4) are read as if their braces were not there.
_IGNORABLE: Final = re.compile(rb"\{\\\*[^{}]*\}")
_BRACES: Final = re.compile(rb"(?<!\\)[{}]")
_CONTROL: Final = re.compile(rb"\\[a-zA-Z]{1,32}-?\d{0,10} ?")
_SPACE: Final = re.compile(rb"\s+")
_HEX: Final = re.compile(rb"[0-9a-fA-F]*")
_MAX_PICTURES: Final = 64


def is_rtf(data: bytes) -> bool:
    return data.lstrip()[:5] == b"{\\rtf"


def rtf_pictures(data: bytes, budget: int) -> list[bytes]:
    """The bytes of each hex-written picture, at most `budget` bytes in all."""
    pictures: list[bytes] = []
    for found in _PICT.finditer(data):
        if len(pictures) >= _MAX_PICTURES:
            break
        end = _group_end(data, found.end())
        group = data[found.end() : end]
        if b"\\bin" in group:
            continue  # raw bytes: the carve reads them
        # A nested group ends the control word before it, as a space would: keep it apart.
        inner = _BRACES.sub(b" ", _IGNORABLE.sub(b" ", group))
        digits = _SPACE.sub(b"", _CONTROL.sub(b"", inner))
        if len(digits) < 64 or _HEX.fullmatch(digits) is None or len(digits) // 2 > budget:
            continue
        picture = binascii.unhexlify(digits[: len(digits) // 2 * 2])
        budget -= len(picture)
        pictures.append(picture)
    return pictures


def _group_end(data: bytes, start: int) -> int:
    depth = 1
    for brace in _BRACE.finditer(data, start):
        depth += 1 if brace[0] == b"{" else -1
        if depth == 0:
            return brace.start()
    return len(data)
