"""The pictures of a document as files: a PDF's pixel images (`schoolgate.endpoints.pdfimages`),
and what a PostScript or EPS file draws with `image` / `colorimage` (its width, height, bits and
matrix, a procedure reading hex, ASCII85 or binary from the file, the samples after it), or
reads through filters in a level 2 image dictionary (a JPEG in ASCII85: a44 F11). A DOS EPS
also carries a TIFF preview.
"""

from __future__ import annotations

import base64
import binascii
import re
import struct
import zlib
from typing import Final

from schoolgate.endpoints.extract import ExtractLimits
from schoolgate.endpoints.pdfimages import (
    MAX_IMAGES,
    MAX_PIXELS,
    MAX_SIDE,
    Colours,
    hex_string,
    pdf_images,
    samples_png,
)

_DOS_EPS: Final = b"\xc5\xd0\xd3\xc6"
_PS_IMAGE: Final = re.compile(
    rb"(\d{1,5})\s+(\d{1,5})\s+(\d{1,2})\s*\[(?:\s*-?[\d.]{1,12}){6}\s*\]\s*"
    rb"(?P<reader>\{[^{}]{0,300}\}(?:\s*bind)?|currentfile[^\n]{0,200})\s*"
    rb"(?:(?:false|true)\s+(?P<colours>[134])\s+colorimage|image)[ \t]*\r?\n"
)

# A PostScript level 2 image dictionary reading its data from the file through filters (what
# editors write for a JPEG: `/DataSource currentfile /ASCII85Decode filter /DCTDecode filter`).
_PS_DICT_IMAGE: Final = re.compile(
    rb"/DataSource\s+currentfile\s+((?:/\w{2,20}Decode\s+filter\s+){1,4})>>\s*image\s"
)


def ps_filtered_jpegs(data: bytes) -> list[bytes]:
    """The JPEGs that level 2 image dictionaries read through text filters (a44 F11: an EPS
    whose ASCII85 data decodes to the banked JPEG passed)."""
    found: list[bytes] = []
    for match in _PS_DICT_IMAGE.finditer(data):
        if len(found) >= MAX_IMAGES:
            break
        filters = re.findall(rb"/(\w+)Decode", match[1])
        if not filters or filters[-1] != b"DCT":
            continue  # pixels through filters: not read here (editors write JPEGs so)
        stream = data[match.end() :]
        try:
            for name in filters[:-1]:
                if name == b"ASCII85":
                    stream = base64.a85decode(stream.split(b"~>")[0].removeprefix(b"<~"),
                                              adobe=False, ignorechars=b" \t\r\n")  # fmt: skip
                elif name == b"ASCIIHex":
                    stream = hex_string(stream)
                elif name == b"Flate":
                    stream = zlib.decompressobj().decompress(stream, 64 << 20)
                else:
                    stream = b""
        except (ValueError, binascii.Error, zlib.error):
            continue
        if stream.startswith(b"\xff\xd8\xff"):
            found.append(stream)
    return found


def document_images(data: bytes, limits: ExtractLimits) -> list[bytes]:
    """The pixel pictures in a PDF, PostScript or EPS document (JPEGs are found by the carve)."""
    if b"%PDF-" in data[:1024]:  # readers accept a header after up to 1 KiB of junk
        return pdf_images(data, limits)
    if data.startswith(_DOS_EPS) and len(data) >= 30:
        start, length, _, _, tiff_start, tiff_length = struct.unpack("<6I", data[4:28])
        preview = [data[tiff_start : tiff_start + tiff_length]] if tiff_length else []
        return preview + ps_images(data[start : start + length], limits)
    if data.startswith(b"%!"):
        return ps_images(data, limits) + ps_filtered_jpegs(data)
    return []


def ps_images(data: bytes, limits: ExtractLimits) -> list[bytes]:
    """PNG files for the pictures a PostScript program draws with `image` / `colorimage`."""
    images: list[bytes] = []
    budget = limits.max_decoded_bytes
    for match in _PS_IMAGE.finditer(data):
        if len(images) >= MAX_IMAGES:
            break
        width, height, bits = int(match[1]), int(match[2]), int(match[3])
        components = int(match["colours"] or 1)
        size = height * -(-width * components * bits // 8)
        if not width or not height or bits not in (1, 2, 4, 8) or size > budget:
            continue
        if max(width, height) > MAX_SIDE or width * height > MAX_PIXELS:
            continue
        samples = _ps_samples(match["reader"], data[match.end() :], size)
        if samples is None or len(samples) < size:
            continue
        png = samples_png(width, height, bits, Colours(components), samples)
        if png is not None:
            budget -= len(png)
            images.append(png)
    return images


def _ps_samples(reader: bytes, after: bytes, size: int) -> bytes | None:
    try:
        if b"ASCII85Decode" in reader:
            return base64.a85decode(
                after.split(b"~>")[0].removeprefix(b"<~"), adobe=False, ignorechars=b" \t\r\n"
            )[:size]
        if b"readhexstring" in reader or b"ASCIIHexDecode" in reader:
            hexed = re.match(rb"[0-9A-Fa-f\s]*", after[: size * 3])
            digits = re.sub(rb"\s", b"", hexed[0]) if hexed else b""
            return binascii.unhexlify(digits[: size * 2 // 2 * 2])
    except (ValueError, binascii.Error):
        return None
    if b"readstring" in reader:
        return after[:size]
    return None  # a data source we do not know (a DCT filter's JPEG is found by the carve)
