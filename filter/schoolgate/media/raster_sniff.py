"""Still formats outside the common ones, named by their signature or, for the formats that have
none, by a fully consistent header: JPEG 2000, SGI, QOI, PSD, DDS, Sun raster, farbfeld, MSP, IM,
Netpbm and PAM, XBM and XPM, PCX, ICO, headerless DIB, TGA, SPIDER and FITS. Random bytes must not
become a "broken picture" that fails closed, so weak signatures need more; a TGA without its
version 2 footer (compressed or palette, no size to check) is claimed only when Pillow decodes it
whole (once per distinct body).
"""

from __future__ import annotations

import io
import math
import re
import struct
from typing import Final

# Netpbm: "P4 2 3" / "P6 2 3 255" and one whitespace byte before binary samples; the text
# variants' first sample follows their header ("P1 team meeting", "P2 10 20 done" are messages).
_NETPBM_COMMENTS: Final = rb"(?:\s+(?:#[^\n]*\n\s*)*|(?:#[^\n]*\n\s*)+)"
_NETPBM: Final = re.compile(
    rb"\A(?:P4(?:%(c)s\d+){2}\s|P[56](?:%(c)s\d+){3}\s|P1(?:%(c)s\d+){2}\s*[01]"
    rb"|P[23](?:%(c)s\d+){3}\s+\d)" % {b"c": _NETPBM_COMMENTS}
)
# PAM ("P7"): a header of keyword lines up to ENDHDR, which Pillow does not read (decode.py does).
# X11 bitmaps and pixmaps are C source (editors and ImageMagick still write them); a C header
# that only defines a width and a height is not one (its bits array must follow).
_XBM: Final = re.compile(
    rb"\A\s*#define[ \t]+\w*_width[ \t]+\d+\s+#define[ \t]+\w*_height[ \t]+\d+\s"
    rb"(?:#define[^\n]*\n\s*){0,2}(?:static\s+)?(?:unsigned\s+)?char\s+\w*_bits\s*\[\s*\]"
)
_PAM: Final = re.compile(rb"\AP7\n(?:#[^\n]*\n)*(?:WIDTH|HEIGHT|DEPTH|MAXVAL|TUPLTYPE) ")
_DIB_SIZES: Final = frozenset({40, 52, 56, 64, 108, 124})  # BITMAPINFOHEADER and its successors
_TGA_TYPES: Final = frozenset({1, 2, 3, 9, 10, 11})
_TGA_DEPTHS: Final = frozenset({8, 15, 16, 24, 32})
_TGA_MAP_DEPTHS: Final = frozenset({15, 16, 24, 32})
_TGA_FOOTER: Final = b"TRUEVISION-XFILE.\x00"
# A compressed or palette TGA without the version 2 footer has no size to check: it is claimed
# when Pillow decodes the whole declared picture from it (up to this many pixels; a larger one
# is claimed on its header, and the decoder's caps judge it), and the answer is remembered for
# the next sniff of the same bytes (a body is sniffed several times on its way through).
_TGA_VERIFY_PIXELS: Final = 16_000_000
_TGA_VERIFIED: dict[bytes, bool] = {}
_TGA_VERIFIED_KEEP: Final = 64


def raster_format(data: bytes) -> str | None:
    """The Pillow plugin for a still format outside the common ones, from its signature (and,
    for the formats without one, a fully consistent header); None if it is none of them. Random
    bytes must not become a "broken picture" that fails closed, so weak signatures need more.
    "PAM" is not a Pillow plugin: decode.py reads it."""
    head = bytes(data[:64])
    if head.startswith((b"\x00\x00\x00\x0cjP  \r\n\x87\n", b"\xff\x4f\xff\x51")):
        return "JPEG2000"
    if head.startswith(b"\x01\xda") and len(head) >= 12 and head[2] in (0, 1) and head[3] in (1, 2):
        return "SGI"
    if head.startswith(b"qoif") and len(head) >= 14 and head[12] in (3, 4) and head[13] in (0, 1):
        return "QOI"
    if head.startswith(b"8BPS\x00\x01"):
        return "PSD"
    if head.startswith(b"DDS |\x00\x00\x00"):  # DirectDraw Surface: a game texture
        return "DDS"
    # Formats of old workstations and paint programs that converters still write (pass a5).
    if head.startswith(b"\x59\xa6\x6a\x95") and len(head) >= 32:  # Sun raster
        return "SUN"
    if head.startswith(b"farbfeld") and len(head) >= 16:  # suckless farbfeld; decode.py reads it
        return "FARBFELD"
    if head.startswith((b"DanM", b"LinS")) and len(head) >= 32:  # Microsoft Paint
        return "MSP"
    if head.startswith(b"Image type: ") and b"\r\n" in head[:40]:  # the PIL/IFUNC IM format
        return "IM"
    if _NETPBM.match(head):
        return "PPM"
    if _PAM.match(head):
        return "PAM"
    if _XBM.match(data[:512]):
        return "XBM"
    if re.match(rb"/\* XPM \*/\s*(?:static\s+)?(?:const\s+)?char\s*\*", data[:256]):
        return "XPM"
    if (
        len(head) >= 8
        and head[0] == 0x0A
        and head[1] in (0, 2, 3, 4, 5)
        and head[2] == 1
        and head[3] in (1, 2, 4, 8)
    ):
        return "PCX"
    if (
        len(head) >= 16
        and head[:4] == b"\x00\x00\x01\x00"
        and 0 < int.from_bytes(head[4:6], "little") <= 64
        and head[10:12] in (b"\x00\x00", b"\x01\x00")  # planes of the first entry
    ):
        return "ICO"
    if _plausible_dib(head):
        return "DIB"
    if _consistent_spider(data):
        return "SPIDER"
    # FITS, the astronomers' format that macOS Preview and GIMP open (adversarial pass a42 F7):
    # its first header card, fixed-width.
    if head.startswith(b"SIMPLE  =") and head[29:30] == b"T" and len(data) >= 2880:
        return "FITS"
    if _plausible_tga(data):
        return "TGA"
    return None


def _consistent_spider(data: bytes) -> bool:
    """SPIDER (an electron-microscopy format Pillow and ImageJ read: adversarial pass a40 sent a
    banked picture as one) has no signature: a header of float fields, each a whole number where
    one is due, describing one 2D image whose float samples fill the rest of the file exactly."""
    if len(data) < 1024:
        return False
    for order in "<>":
        fields = struct.unpack(f"{order}23f", data[:92])
        nslice, nrow, iform, nsam, labrec, labbyt, lenbyt = (
            fields[0], fields[1], fields[4], fields[11], fields[12], fields[21], fields[22],
        )  # fmt: skip
        whole = all(
            math.isfinite(v) and v == int(v) and 0 < v < 1 << 24
            for v in (nslice, nrow, iform, nsam, labrec, labbyt, lenbyt)
        )
        if (
            whole
            and nslice == 1
            and iform == 1
            and labbyt == labrec * lenbyt
            and labbyt + nsam * nrow * 4 == len(data)
        ):
            return True
    return False


def _plausible_dib(head: bytes) -> bool:
    """A headerless DIB (a BMP without its file header, as the clipboard holds it): its header
    size, one plane and a bit depth, in the OS/2 (12 bytes) or the Windows layout."""
    if len(head) < 16:
        return False
    size = int.from_bytes(head[0:4], "little")
    if size == 12:
        planes, depth = head[8:10], int.from_bytes(head[10:12], "little")
        return planes == b"\x01\x00" and depth in (1, 4, 8, 24) and head[4:8] != bytes(4)
    planes, depth = head[12:14], int.from_bytes(head[14:16], "little")
    return size in _DIB_SIZES and planes == b"\x01\x00" and depth in (1, 4, 8, 16, 24, 32)


def _plausible_tga(data: bytes) -> bool:
    """TGA has no signature: a header whose every field is valid, and then a version 2 footer,
    pixel data that fits the file exactly (uncompressed), or a successful decode of the whole
    declared picture (compressed or palette files without the footer)."""
    if len(data) < 18:
        return False
    id_length, colormap, kind = data[0], data[1], data[2]
    width = int.from_bytes(data[12:14], "little")
    height = int.from_bytes(data[14:16], "little")
    depth, descriptor = data[16], data[17]
    if colormap not in (0, 1) or kind not in _TGA_TYPES or depth not in _TGA_DEPTHS:
        return False
    if width < 1 or height < 1 or descriptor & 0xC0:  # interleaving: obsolete, never written
        return False
    palette = 0
    if colormap:
        first, entries, entry_depth = (
            int.from_bytes(data[3:5], "little"),
            int.from_bytes(data[5:7], "little"),
            data[7],
        )
        if entry_depth not in _TGA_MAP_DEPTHS or entries < 1 or first + entries > 65536:
            return False
        palette = entries * ((entry_depth + 7) // 8)
    elif data[3:8] != bytes(5) or kind in (1, 9):
        return False  # a palette image needs its palette
    if data.endswith(_TGA_FOOTER):
        return True
    if kind in (1, 2, 3):
        pixels = width * height * ((depth + 7) // 8)
        return len(data) == 18 + id_length + palette + pixels
    if width * height > _TGA_VERIFY_PIXELS:
        return True
    return _tga_decodes(data)


def _tga_decodes(data: bytes) -> bool:
    """Whether Pillow decodes a whole TGA picture from these bytes (remembered by digest)."""
    import hashlib

    from PIL import Image

    key = hashlib.blake2b(data, digest_size=16).digest()
    known = _TGA_VERIFIED.get(key)
    if known is not None:
        return known
    try:
        with Image.open(io.BytesIO(data), formats=["TGA"]) as image:
            image.load()
        decodes = True
    except Exception:  # Pillow says "not this" with many exception types
        decodes = False
    if len(_TGA_VERIFIED) >= _TGA_VERIFIED_KEEP:
        _TGA_VERIFIED.clear()
    _TGA_VERIFIED[key] = decodes
    return decodes
