"""What a picture cut short still shows: the rows a viewer draws from the bytes that arrived
(adversarial passes a46 O1 and a51). A picture cut short is refused all the same; these rows are
looked at for a banked picture, so the DSL hears of one, and an unfinished upload's first part
can be stopped before the rest of a banked picture follows it.

- A JPEG's rows decode once its end marker is restored: the decoder fills the rest grey.
- A BMP's or an uncompressed TIFF's are where they would be once the rest is padded grey to the
  length its header gives (a BMP's first rows are its bottom ones).
- A PNG's complete scanlines, inflated as far as the deflate stream goes, are packed again into
  a PNG of the same size, its missing rows grey (a51: the first 7 of 8 parts of a banked PNG were
  stored by a Dropbox upload session). An interlaced PNG's first passes are the whole picture at
  an eighth, a quarter or half its size: the finest complete one is scaled up.
- A GIF's first frame and a lossy WebP's rows decode as far as the data goes (a70 F3: a GIF or
  a WebP cut short showed nothing, and all but its last chunk reached the service).

- A video's first part: its frames decode as far as the data goes (the engine's video analysis
  hashes them, then refuses it cut short). An MP4 whose index (moov) is its last box is read
  from a first part padded with zeros to the upload's declared size: the service holds all but
  its last bytes, and those may be sent from elsewhere (adversarial pass a58 F3).

The work is bounded by the decoder's own pixel cap, and what is built is decoded like any
other picture.
"""

from __future__ import annotations

import io
import struct
import zlib
from typing import Final

import av
import numpy as np
from PIL import Image

from schoolgate.media.containers import tiff_extent
from schoolgate.media.sniff import MediaKind, sniff

JPEG_START: Final = b"\xff\xd8\xff"
JPEG_END: Final = b"\xff\xd9"
PNG_SIGNATURE: Final = b"\x89PNG\r\n\x1a\n"
_CHANNELS: Final = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}  # PNG colour type -> samples per pixel
_GREY: Final = 0x80  # the missing rows' samples (a palette picture's take index 0)
_KEPT: Final = (b"PLTE", b"tRNS")  # what decoding the rows needs besides IHDR
_MAX_ROWS_BYTES: Final = 64 * 1024 * 1024  # inflated rows rebuilt at most (a 4000x3000 RGB photo)
_MAX_PADDING: Final = 4 * 1024 * 1024  # a video's missing end filled in at most (its moov, ~1%)
_UNCOMPRESSED: Final = (b"BM", b"II*\x00", b"MM\x00*")  # BMP, TIFF: rows stored as they are
_GIF: Final = (b"GIF87a", b"GIF89a")
_VP8_START: Final = b"\x9d\x01\x2a"  # a VP8 key frame's start code, before its size
# Adam7: each pass's first column and row, and its steps; passes 1, 3 and 5 complete a grid.
_ADAM7: Final = ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4),
                 (1, 0, 2, 2), (0, 1, 1, 2))  # fmt: skip
_GRIDS: Final = ((1, 8), (3, 4), (5, 2))  # (passes complete, the grid's step)


def shows_rows(data: bytes) -> bool:
    """Whether `data` starts a format whose first part shows some of the picture's rows."""
    return data.startswith((JPEG_START, PNG_SIGNATURE, *_UNCOMPRESSED, *_GIF)) or _is_webp(data)


def _is_webp(data: bytes) -> bool:
    return data[:4] == b"RIFF" and data[8:12] == b"WEBP"


def shows_part(data: bytes) -> bool:
    """Whether a first part of `data` shows something: a picture's top rows, a video's frames."""
    return shows_rows(data) or sniff(data).kind is MediaKind.VIDEO


def as_shown(part: bytes, total: int | None) -> bytes:
    """The first part of an upload of `total` bytes (None: not declared) as it is looked at: a
    video's padded with zeros to its size when at most _MAX_PADDING is missing (an index in its
    last box is then read; a declared size is the client's word, so the padding is bounded);
    else as is."""
    if total is None or not 0 < total - len(part) <= _MAX_PADDING:
        return part
    return part + bytes(total - len(part)) if sniff(part).kind is MediaKind.VIDEO else part


def shown_rows(data: bytes, max_pixels: int) -> bytes | None:
    """A whole picture made of the rows `data` holds (the rest grey); None when it holds no
    row, is not a JPEG or PNG, or is not cut short."""
    if data.startswith(JPEG_START):
        return None if data.endswith(JPEG_END) else data + JPEG_END
    if data.startswith(PNG_SIGNATURE):
        return _png_rows(data, max_pixels)
    if data.startswith(_GIF):
        return _gif_rows(data, max_pixels)
    if _is_webp(data):
        return _webp_rows(data, max_pixels)
    return _padded(data)


def _gif_rows(data: bytes, max_pixels: int) -> bytes | None:
    """A GIF's first frame as far as its data goes, as a PNG (the rest its palette's first
    colour). Pillow's own decoder is fed what there is: its loader refuses a cut file, and the
    switch that lets it (LOAD_TRUNCATED_IMAGES) is global to every thread."""
    try:
        picture = Image.open(io.BytesIO(data))
        if picture.width * picture.height > max_pixels or not picture.tile:
            return None
        picture.load_prepare()
        codec, extents, offset, args = picture.tile[0]
        decoder = Image._getdecoder(picture.mode, codec, args, picture.decoderconfig)
        decoder.setimage(picture.im, extents)
        try:
            decoder.decode(data[offset:])
        finally:
            decoder.cleanup()
        picture.tile = []
        return _png(picture.convert("RGB"))
    except (OSError, ValueError, SyntaxError, struct.error, IndexError):
        return None


def _webp_rows(data: bytes, max_pixels: int) -> bytes | None:
    """A lossy WebP's rows as far as its data goes, as a PNG: its VP8 frame decoded by FFmpeg,
    which draws what it holds (Pillow's libwebp decoder refuses a cut file). Lossless and
    animated WebPs are not rebuilt."""
    at = 12
    while at + 8 <= len(data):
        kind, length = data[at : at + 4], int.from_bytes(data[at + 4 : at + 8], "little")
        if kind == b"VP8 ":
            frame = data[at + 8 : at + 8 + length]
            break
        at += 8 + length + (length & 1)
    else:
        return None
    if frame[3:6] != _VP8_START:
        return None
    width = int.from_bytes(frame[6:8], "little") & 0x3FFF
    height = int.from_bytes(frame[8:10], "little") & 0x3FFF
    if not width or not height or width * height > max_pixels:
        return None
    try:
        decoded = av.CodecContext.create("vp8", "r").decode(av.Packet(frame))
    except (av.FFmpegError, ValueError):
        return None
    if not decoded:
        return None
    return _png(Image.fromarray(decoded[0].to_ndarray(format="rgb24")))


def _png(picture: Image.Image) -> bytes:
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def _padded(data: bytes) -> bytes | None:
    """A BMP or an uncompressed TIFF cut short, padded grey to the length its header gives: its
    rows are where they would be, the missing ones grey (a70 F3: all but the last 54 bytes of a
    banked BMP or TIFF reached the service; a BMP's first part holds its bottom rows)."""
    if data.startswith(b"BM") and len(data) >= 26:
        end: int | None = int.from_bytes(data[2:6], "little")
    elif (extent := tiff_extent(data)) is not None and not extent[1]:
        end = extent[0]
    else:
        return None
    if end is None or not len(data) < end <= len(data) + _MAX_ROWS_BYTES:
        return None
    return data + bytes([_GREY]) * (end - len(data))


def _png_rows(data: bytes, max_pixels: int) -> bytes | None:
    header = b""
    kept: list[tuple[bytes, bytes]] = []
    compressed = bytearray()
    at = len(PNG_SIGNATURE)
    while at + 8 <= len(data):
        length, kind = struct.unpack_from(">I4s", data, at)
        body = data[at + 8 : at + 8 + length]  # the last one may be cut
        if kind == b"IHDR" and len(body) >= 13:
            header = body[:13]
        elif kind in _KEPT and len(body) == length:
            kept.append((kind, body))
        elif kind == b"IDAT":
            compressed += body
        elif kind == b"IEND":
            return None  # whole: nothing was cut
        at += 12 + length
    if not header or not compressed:
        return None
    width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", header)
    channels = _CHANNELS.get(colour)
    if channels is None or depth not in (1, 2, 4, 8, 16) or not width or not height:
        return None
    stride = 1 + (width * channels * depth + 7) // 8  # a filter byte, then the row
    if width * height > max_pixels or stride * height > _MAX_ROWS_BYTES:
        return None
    try:
        raw = zlib.decompressobj().decompress(bytes(compressed), stride * height)
    except zlib.error:
        return None  # not a deflate stream: nothing a viewer shows either
    if interlace:
        return _passes(header, kept, raw, channels * depth)
    rows = len(raw) // stride
    if not rows:
        return None
    grey = 0 if colour == 3 else _GREY
    missing = (b"\x00" + bytes([grey]) * (stride - 1)) * (height - rows)  # filter 0: as is
    packed = zlib.compress(raw[: rows * stride] + missing, 1)
    chunks = [(b"IHDR", header), *kept, (b"IDAT", packed), (b"IEND", b"")]
    return PNG_SIGNATURE + b"".join(_chunk(kind, body) for kind, body in chunks)


def _passes(header: bytes, kept: list[tuple[bytes, bytes]], raw: bytes, bits: int) -> bytes | None:
    """An interlaced PNG's finest grid its complete passes make (every 8th, 4th or 2nd pixel
    each way), scaled up to the picture's size, as a PNG; None before the first pass ends."""
    width, height = struct.unpack(">II", header[:8])
    ends, at = [], 0
    for column, row, step_x, step_y in _ADAM7:
        columns, rows = -(-(width - column) // step_x), -(-(height - row) // step_y)
        at += rows * (1 + (columns * bits + 7) // 8) if columns > 0 and rows > 0 else 0
        ends.append(at)
    grids = [step for passes, step in _GRIDS if ends[passes - 1] <= len(raw)]
    if not grids:
        return None
    # The passes not here are zeros (filter 0, every sample 0): decoded, then left out.
    whole = raw[: ends[-1]] + bytes(max(0, ends[-1] - len(raw)))
    chunks = [(b"IHDR", header), *kept, (b"IDAT", zlib.compress(whole, 1)), (b"IEND", b"")]
    rebuilt = PNG_SIGNATURE + b"".join(_chunk(kind, body) for kind, body in chunks)
    try:
        with Image.open(io.BytesIO(rebuilt)) as picture:
            pixels = np.asarray(picture.convert("RGB"))
    except (OSError, ValueError, SyntaxError):
        return None
    step = grids[-1]
    grid = Image.fromarray(np.ascontiguousarray(pixels[::step, ::step]))
    return _png(grid.resize((width, height), Image.Resampling.BILINEAR))


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
