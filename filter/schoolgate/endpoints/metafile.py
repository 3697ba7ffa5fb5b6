"""Pictures a Windows metafile draws from a device-independent bitmap (adversarial pass a42 F8).

A WMF (on its own, or the `\\wmetafile8` picture of an RTF document, or inside an Office file)
and an EMF (`\\emfblip`) draw a bitmap with a record that carries it as a DIB: its header, its
colours and its pixels, with no image signature, so the carve never saw them. Word, LibreOffice
and Windows render them. Each DIB is given back as a headerless DIB, which the decoder reads
as it reads a BMP. Bounded: records walked, pictures and their bytes.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from typing import Final

_PLACEABLE: Final = b"\xd7\xcd\xc6\x9a"  # the 22-byte "Aldus" header before a file's WMF
# A WMF header: type 1 (memory) or 2 (disk), 9 words long, version 1.0 or 3.0.
_WMF_HEADERS: Final = tuple(
    kind + b"\x09\x00" + version
    for kind in (b"\x01\x00", b"\x02\x00")
    for version in (b"\x00\x01", b"\x00\x03")
)
_WMF_HEADER_SIZE: Final = 18
# WMF records that carry a packed DIB, and where it starts in their parameters:
# META_DIBBITBLT, META_DIBSTRETCHBLT, META_STRETCHDIB, META_SETDIBTODEV, META_DIBCREATEPATTERNBRUSH.
_WMF_DIB_AT: Final = {0x0940: 16, 0x0B41: 20, 0x0F43: 22, 0x0D33: 18, 0x0142: 4}
_EMF_SIGNATURE: Final = b" EMF"
# EMF records with a bitmap, and where their offBmiSrc field is (offBmi, cbBmi, offBits, cbBits
# follow it, each measured from the record's start): BITBLT, STRETCHBLT, MASKBLT, PLGBLT,
# SETDIBITSTODEVICE, STRETCHDIBITS, ALPHABLEND, TRANSPARENTBLT, CREATEMONOBRUSH,
# CREATEDIBPATTERNBRUSHPT.
_EMF_BMI_AT: Final = {76: 84, 77: 84, 78: 84, 79: 96, 80: 48, 81: 48, 114: 84, 116: 84, 93: 16,
                      94: 16}  # fmt: skip
_MAX_RECORDS: Final = 100_000
_MAX_PICTURES: Final = 32
_MAX_FOUND: Final = 16  # metafiles looked for inside other bytes (an RTF's \bin, an Office file)
_MIN_DIB: Final = 40 + 4  # a BITMAPINFOHEADER and at least one pixel's bytes


def is_metafile(data: bytes) -> bool:
    """Whether `data` starts as a WMF (placeable or not) or an EMF."""
    return data.startswith((_PLACEABLE, *_WMF_HEADERS)) or (
        data.startswith(b"\x01\x00\x00\x00") and data[40:44] == _EMF_SIGNATURE
    )


def metafile_pictures(data: bytes, budget: int) -> list[bytes]:
    """The DIBs (headerless) that the metafiles in `data` draw, at most `budget` bytes in all.

    A metafile is looked for at the start and, bounded, inside an RTF (raw after `\\bin`) or an
    OLE file (Word, Visio)."""
    pictures: list[bytes] = []
    for start in _metafile_starts(data):
        for dib in _dibs(data, start):
            if len(pictures) >= _MAX_PICTURES or len(dib) > budget:
                return pictures
            budget -= len(dib)
            pictures.append(dib)
    return pictures


# Documents that hold a metafile's raw bytes: RTF (after `\\binN`) and OLE files (Word, Visio).
_HOLDERS: Final = (b"{\\rtf", b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1")


def _metafile_starts(data: bytes) -> Iterator[int]:
    if is_metafile(data):
        yield 0
        return
    if not data[:64].lstrip().startswith(_HOLDERS):
        return  # other bodies are not searched: each of them would cost six scans
    found = 0
    for signature in (_PLACEABLE, *_WMF_HEADERS, _EMF_SIGNATURE):
        position = data.find(signature, 1)
        while position > 0 and found < _MAX_FOUND:
            start = position - 40 if signature == _EMF_SIGNATURE else position
            if start >= 0 and is_metafile(data[start : start + 44]):
                found += 1
                yield start
            position = data.find(signature, position + 1)


def _dibs(data: bytes, start: int) -> Iterator[bytes]:
    if data.startswith(_EMF_SIGNATURE, start + 40):
        yield from _emf_dibs(data, start)
        return
    if data.startswith(_PLACEABLE, start):
        start += 22
    if not data.startswith(_WMF_HEADERS, start):
        return
    position = start + _WMF_HEADER_SIZE
    for _ in range(_MAX_RECORDS):
        if position + 6 > len(data):
            return
        words, function = struct.unpack_from("<IH", data, position)
        if words < 3 or function == 0:  # META_EOF, or a record that cannot be
            return
        end = min(
            position + 2 * words, len(data)
        )  # a cut-off last record is read as far as it goes
        at = _WMF_DIB_AT.get(function)
        if at is not None and end - (position + 6 + at) >= _MIN_DIB:
            yield data[position + 6 + at : end]
        position += 2 * words


def _emf_dibs(data: bytes, start: int) -> Iterator[bytes]:
    position = start
    for _ in range(_MAX_RECORDS):
        if position + 8 > len(data):
            return
        kind, size = struct.unpack_from("<II", data, position)
        if size < 8 or size % 4:
            return
        at = _EMF_BMI_AT.get(kind)
        end = min(position + size, len(data))
        if at is not None and position + at + 16 <= end:
            bmi_at, bmi_size, bits_at, bits_size = struct.unpack_from("<IIII", data, position + at)
            info = data[position + bmi_at : position + bmi_at + bmi_size] if bmi_size else b""
            bits = data[position + bits_at : position + bits_at + bits_size] if bits_size else b""
            if len(info) >= 40 and bits and position + bmi_at + bmi_size <= end:
                yield info + bits
        if kind == 14:  # EMR_EOF
            return
        position += size
