"""Media found by its signature inside other bytes: after junk, inside a PDF or an archive the
scan cannot open, and after or inside another picture (an EXIF thumbnail, an MPO's second image,
a motion photo's video, a file appended to a picture: adversarial pass a5).

Random binary holds a JPEG signature every 16 MiB or so; a candidate is kept only when it parses
as media (`probe_carved`), so noise is never judged, or refused, as a broken picture.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator
from typing import Final

from schoolgate.endpoints.extract import media_end
from schoolgate.media.sniff import MediaKind, ebml_header_end, sniff

_MAX_CARVED: Final = 32  # media signatures followed per blob

# Where a media file can start inside other bytes, and how far before the match it starts.
SIGNATURES: Final[tuple[tuple[bytes, int], ...]] = (
    (b"\xff\xd8\xff", 0),
    (b"\x89PNG\r\n\x1a\n", 0),
    (b"GIF87a", 0),
    (b"GIF89a", 0),
    (b"WEBPVP8", 8),
    (b"ftyp", 4),
    (b"\x1a\x45\xdf\xa3", 0),
    (b"\x00\x00\x00\x0cjP  \r\n\x87\n", 0),  # JPEG 2000 (a PDF's JPXDecode image)
)


def probe_carved(data: bytes) -> bool:
    """Whether bytes found by their signature inside other bytes really start a media file.

    Random binary holds a JPEG signature every 16 MiB or so; those must not be judged (and
    refused) as broken pictures, so an image must parse as far as its size, and a video box
    must be a sane `ftyp`."""
    media = sniff(data)
    if media.kind is MediaKind.UNKNOWN:
        return False
    if media.kind is MediaKind.VIDEO:
        return _container_start(data)
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as image:
            width, height = image.size
    except Image.DecompressionBombError:
        return True  # a picture, and the decoder's limits will refuse it
    except Exception:
        return False
    return width > 0 and height > 0


_SEGMENT: Final = b"\x18\x53\x80\x67"  # the Matroska Segment element, after the EBML header


def _container_start(data: bytes) -> bool:
    """Whether video bytes found inside other bytes start a container as a muxer writes one:
    an `ftyp` box of sane size followed by another box (a size, a four-character type), or an
    EBML header naming its DocType followed by the Segment. A signature's four bytes also turn
    up by chance in a picture's compressed data (adversarial pass a67: one in 238 MB), or in its
    comment, and what followed was judged, and refused, as a broken video (a67 F1)."""
    if data[4:8] == b"ftyp":
        size = int.from_bytes(data[:4], "big")
        following = data[size : size + 8] if 16 <= size <= 512 else b""
        if len(following) < 8:
            return False
        box_size = int.from_bytes(following[:4], "big")
        return (box_size in (0, 1) or box_size >= 8) and all(
            0x20 <= byte < 0x7F for byte in following[4:8]
        )
    end = ebml_header_end(data)
    return end is not None and data[end : end + 4] == _SEGMENT


def carved(
    data: bytes, probe: Callable[[bytes], bool] = probe_carved
) -> Iterator[tuple[int, bytes]]:
    """(offset, bytes) of each media file that starts after offset 0 in `data` and probes as
    media; what lies inside one already found (its thumbnail, its frames) is not looked at again."""
    found: list[int] = []
    for signature, back in SIGNATURES:
        start = 1
        while len(found) < 4 * _MAX_CARVED:
            offset = data.find(signature, start)
            if offset < 0:
                break
            start = offset + 1
            if offset - back > 0:
                found.append(offset - back)
    kept_until = 0
    tried = 0
    for offset in sorted(set(found)):
        if offset < kept_until or tried >= _MAX_CARVED:
            continue
        tried += 1
        end = media_end(data, offset)
        candidate = data[offset:end]
        if probe(candidate):
            yield offset, candidate
            kept_until = end


_PNG_SIGNATURE: Final = b"\x89PNG\r\n\x1a\n"
# Markers a JPEG's first segment after its start-of-image carries: APPn, a comment, quantisation
# or Huffman tables, a restart interval, a frame header.
_FIRST_SEGMENTS: Final = frozenset({*range(0xE0, 0xF0), 0xFE, 0xDB, 0xC4, 0xDD, 0xC0, 0xC1, 0xC2})


def restored_start(data: bytes) -> bytes | None:
    """A JPEG or PNG that lacks only its first bytes, with them put back; None otherwise.

    A body that is a picture less its first byte or two has no signature, and was taken for no
    media, while a service joined it to the byte sent apart (a tus `Upload-Concat`, a storage
    bucket's compose, a resumable session begun on another network: adversarial pass a47
    F1-F3). The missing bytes are the format's fixed start, so the picture is whole again."""
    candidates: list[bytes] = []
    if len(data) > 4 and data[0] == 0xD8 and data[1] == 0xFF and data[2] in _FIRST_SEGMENTS:
        candidates.append(b"\xff" + data)
    if len(data) > 4 and data[0] == 0xFF and data[1] in _FIRST_SEGMENTS:
        candidates.append(b"\xff\xd8" + data)
    if len(data) > 8 and data[0] in _FIRST_SEGMENTS and data[3:7] in (b"JFIF", b"Exif"):
        candidates.append(b"\xff\xd8\xff" + data)
    for cut in range(1, len(_PNG_SIGNATURE)):
        rest = _PNG_SIGNATURE[cut:]
        if data.startswith(rest) and data[len(rest) + 4 : len(rest) + 8] == b"IHDR":
            candidates.append(_PNG_SIGNATURE[:cut] + data)
    for candidate in candidates:
        if probe_carved(candidate):
            return candidate
    return None
