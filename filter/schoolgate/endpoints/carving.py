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
from schoolgate.media.sniff import MediaKind, sniff

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
        size = int.from_bytes(data[:4], "big")
        return data[4:8] != b"ftyp" or 16 <= size <= 512
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as image:
            width, height = image.size
    except Image.DecompressionBombError:
        return True  # a picture, and the decoder's limits will refuse it
    except Exception:
        return False
    return width > 0 and height > 0


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
