"""Pictures a PDF stores as pixels (Flate, ASCIIHex, ASCII85 image streams), as PNG files.

PDF writers embed a PNG as an image XObject: the PNG's own compressed scanlines (FlateDecode
with the PNG predictors) plus the width, height and colour space in the stream's dictionary. No
image signature is left in the file, so the carve that finds JPEGs (DCTDecode keeps the JPEG
whole) never saw them (adversarial pass a4). Each such stream becomes a PNG file again: for the
PNG predictors the compressed bytes are already PNG image data and are wrapped unchanged;
otherwise the rows are re-filtered. Bounded by the body's decoded-size cap, a pixel cap and count
caps; an image past them is not opened (a document is never refused for its images' size).
"""

from __future__ import annotations

import base64
import binascii
import io
import re
import struct
import zlib
from typing import Final

from schoolgate.endpoints.extract import ExtractLimits

_MAX_IMAGES: Final = 32
_MAX_STREAMS: Final = 4096  # stream objects looked at in one PDF (pages, fonts, images)
_MAX_SIDE: Final = 20_000
_MAX_PIXELS: Final = 40_000_000  # the engine's own caps refuse bigger; a PDF is not refused for it
_STREAM: Final = re.compile(rb"<<((?:[^<>]|<<[^<>]*>>){0,4096})>>\s*stream\r?\n", re.S)
_NUMBER: Final = rb"\s*(\d{1,6})"
_COLOURS: Final = {b"/DeviceGray": (0, 1), b"/DeviceRGB": (2, 3), b"/CalGray": (0, 1),
                   b"/CalRGB": (2, 3)}  # fmt: skip


def _value(dictionary: bytes, key: bytes) -> int | None:
    match = re.search(re.escape(key) + _NUMBER + rb"(?!\s+\d+\s+R)", dictionary)
    return int(match[1]) if match else None


def pdf_images(data: bytes, limits: ExtractLimits) -> list[bytes]:
    """PNG files for the pixel images in a PDF (JPEG images are found by the carve)."""
    images: list[bytes] = []
    budget = limits.max_decoded_bytes
    for tried, match in enumerate(_STREAM.finditer(data)):
        if len(images) >= _MAX_IMAGES or tried >= _MAX_STREAMS:
            break
        dictionary = match[1]
        if (
            b"/Image" not in dictionary
            or b"/DCTDecode" in dictionary
            or b"/JPXDecode" in dictionary
        ):
            continue
        end = data.find(b"endstream", match.end())
        if end < 0:
            break  # no later stream can end either (and each search would read to the end)
        raw = data[match.end() : end].rstrip(b"\r\n")
        png = _image(dictionary, raw, budget)
        if png is not None:
            budget -= len(png)
            images.append(png)
    return images


def _image(dictionary: bytes, raw: bytes, budget: int) -> bytes | None:
    width, height = _value(dictionary, b"/Width"), _value(dictionary, b"/Height")
    bits = _value(dictionary, b"/BitsPerComponent") or 8
    colour = next((c for name, c in _COLOURS.items() if name in dictionary), None)
    if not width or not height or colour is None or bits != 8:
        return None  # palettes, CMYK, 1/16-bit and masks are left to the carve
    if max(width, height) > _MAX_SIDE or width * height > _MAX_PIXELS:
        return None  # a poster-sized scan: left to the carve; a document is never refused for it
    kind, channels = colour
    row = width * channels
    try:
        if b"/ASCIIHexDecode" in dictionary or b"/AHx" in dictionary:
            raw = binascii.unhexlify(re.sub(rb"[^0-9A-Fa-f]", b"", raw.split(b">")[0]))
        elif b"/ASCII85Decode" in dictionary or b"/A85" in dictionary:
            raw = base64.a85decode(raw.split(b"~>")[0] + b"~>", adobe=False, ignorechars=b" \t\r\n")
    except (ValueError, binascii.Error):
        return None
    predicted = (_value(dictionary, b"/Predictor") or 1) >= 10
    if b"/FlateDecode" in dictionary or b"/Fl" in dictionary:
        if predicted:
            return _png(width, height, kind, raw)  # already PNG image data
        pixels = _inflate(raw, (row + 1) * height, budget)
    else:
        pixels = raw
    if len(pixels) < row * height:
        return None
    rows = b"".join(b"\x00" + pixels[i * row : (i + 1) * row] for i in range(height))
    return _png(width, height, kind, zlib.compress(rows, 1))


def _inflate(data: bytes, expected: int, budget: int) -> bytes:
    if expected > budget:
        return b""  # past the body's decoded-size cap: not opened
    decompressor = zlib.decompressobj()
    try:
        return decompressor.decompress(data, expected)
    except zlib.error:
        return b""


def _png(width: int, height: int, kind: int, idat: bytes) -> bytes:
    def chunk(name: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body))
            + name
            + body
            + struct.pack(">I", zlib.crc32(name + body) & 0xFFFFFFFF)
        )

    header = struct.pack(">IIBBBBB", width, height, 8, kind, 0, 0, 0)
    out = io.BytesIO()
    out.write(b"\x89PNG\r\n\x1a\n")
    out.write(chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b""))
    return out.getvalue()
