"""Quoted fragments: the first bytes of a file pasted as text, which are not an upload of a
picture (see the rule below)."""

from __future__ import annotations

import io
from typing import Final

from schoolgate.endpoints.carving import SIGNATURES
from schoolgate.endpoints.extract import has_image_data
from schoolgate.media.sniff import MediaKind, MediaType, sniff

# Quoted fragments. A pupil asking why a file will not open pastes its first bytes as base64
# (into a chat message, a JSON value, a data: URL); those bytes are not an upload of a picture.
# Decoded media from text is a fragment, and not claimed, when it is no complete image and
#  - it ends before any image data (JPEG: no byte after its first start-of-scan header; PNG: no
#    IDAT payload; GIF: no byte after its first image descriptor): only a header, which cannot
#    show a single pixel, however it is decoded; it must also be under _MAX_FRAGMENT_BYTES and
#    hold no second media signature, so a photo cut after kilobytes of metadata (with its EXIF
#    thumbnail, itself a picture) is still refused; or
#  - it is under _MIN_PICTURE_BYTES (any format, and the only test for those whose header is not
#    walked here: WebP, BMP, TIFF, HEIF, video): a cut that short holds at most a sliver of an
#    8x8 picture (an 8x8 24-bit BMP alone is 246 bytes; a JPEG's own tables are ~600).
# A picture cut short after some of its image data is still taken (and refused): fail-closed.
_MIN_PICTURE_BYTES: Final = 256
# Bigger than a chat message can be (Discord allows 4000 characters, 3000 bytes of base64), and
# than the header of a JPEG with its quantisation and Huffman tables (about 600 bytes).
_MAX_FRAGMENT_BYTES: Final = 4096


def quoted_fragment(data: bytes) -> bool:
    """Whether media decoded out of text is a quoted fragment rather than a picture (see
    _MIN_PICTURE_BYTES above for the rule and its reasons)."""
    media = sniff(data)
    if media.kind is MediaKind.UNKNOWN or len(data) >= _MAX_FRAGMENT_BYTES:
        return False
    walked = media in (MediaType.JPEG, MediaType.PNG, MediaType.GIF)
    header_only = walked and not has_image_data(data)
    if not header_only and len(data) >= _MIN_PICTURE_BYTES:
        return False
    if any(data.find(signature, 1) >= 0 for signature, _ in SIGNATURES):
        return False  # another picture inside (an EXIF thumbnail): not only a header
    return not _complete_image(data)


def _complete_image(data: bytes) -> bool:
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()
    except Exception:
        return False
    return True
