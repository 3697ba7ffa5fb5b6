"""Photographs shown small inside a larger frame: a chat screenshot's picture, a profile grid's
thumbnail, a screen recording's attachment.

In a query's 512 px working frame a picture 300 px wide in a 1080 x 2340 screenshot is 66 px
wide, and it holds a tenth of the frame's keypoints: the robust tier never saw it (a banked
photo at 200-300 px in a chat screenshot was blocked 0 of 14 times, at 400 px 10 of 14). The
content box does not isolate it (the interface around it is not uniform), nor do gutters.

What sets such a picture apart from the interface is its texture: a photo has few pixels in
flat areas (content_grid.still_pixels), an interface, text and drawings mostly such pixels
between sharp edges. The query's working frame is cut into 8 px blocks, the busy ones (mostly
not flat) are joined into connected regions, and each region that is a compact, mid-sized part
of the frame is looked up on its own, cropped from the full-resolution image: a photo's own
view, as a screenshot's photo is banked (signals.picture_box). A picture before a textured
background (a photo pasted on gravel) is not separated so; a region is never more than a
picture the query shows, so it is judged by the same content check as any upload.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

import cv2
import numpy as np
import numpy.typing as npt
from PIL import Image

from schoolgate.media.content_grid import still_pixels

Crop = tuple[int, int, int, int]

_BLOCK: Final = 8  # working-frame pixels per block side
_BUSY: Final = 0.6  # a block is busy when more of its pixels than this are not in flat areas
_FILL: Final = 0.5  # a region's box is at least this share busy blocks (text lines are not)
_MIN_BLOCKS: Final = 3  # a region is at least this many blocks on its short side
# A region over this share of the frame is most of it: the whole view already looks at it.
_MAX_SHARE: Final = 0.5
# Pixels of the image on a region's short side: a smaller picture holds too little to align.
MIN_REGION_SIDE: Final = 96
MAX_REGIONS: Final = 4  # per frame, the largest first: a screenshot shows a few pictures


def photo_regions(luma: npt.NDArray[np.uint8]) -> list[Crop]:
    """Boxes (left, top, right, bottom, in `luma`'s pixels) of the compact textured regions of a
    working frame that cover at most half of it, the largest first; none for a photo (its one
    region is the frame) or a frame with no texture."""
    height, width = luma.shape
    rows, columns = height // _BLOCK, width // _BLOCK
    if min(rows, columns) < 2 * _MIN_BLOCKS:
        return []
    still = still_pixels(luma)[: rows * _BLOCK, : columns * _BLOCK]
    busy_share = 1.0 - still.reshape(rows, _BLOCK, columns, _BLOCK).mean(axis=(1, 3))
    blocks = (busy_share > _BUSY).astype(np.uint8)
    # One block's gap (a smooth patch of a photo, a thin line drawn across it) does not split
    # it. Closing wider, or growing regions through partly busy blocks, joined a photo to the
    # bubbles and captions beside it and lost more pictures than it found (measured).
    busy = cv2.morphologyEx(blocks, cv2.MORPH_CLOSE, np.ones((2, 2), np.uint8))
    count, _, stats, _ = cv2.connectedComponentsWithStats(busy, connectivity=8)
    found: list[tuple[int, Crop]] = []
    for label in range(1, count):
        left, top, wide, high, area = (int(v) for v in stats[label])
        if min(wide, high) < _MIN_BLOCKS or wide * high > _MAX_SHARE * rows * columns:
            continue
        if area < _FILL * wide * high:
            continue
        box = (left * _BLOCK, top * _BLOCK, (left + wide) * _BLOCK, (top + high) * _BLOCK)
        found.append((wide * high, box))
    found.sort(key=lambda item: -item[0])
    return [box for _, box in found[:MAX_REGIONS]]


def region_views(
    luma: npt.NDArray[np.uint8], picture: Callable[[], Image.Image]
) -> list[Image.Image]:
    """The photo regions of a working frame `luma` at least MIN_REGION_SIDE pixels of the
    stored picture on their short side, cropped with a block's margin (a photo's edge blocks
    are partly flat) from `picture()`: the picture at the finest scale at hand (a JPEG is
    decoded at a quarter of a screenshot's size for the whole view, where a 260 px photo is 65
    px), asked for only when there is a region."""
    boxes = photo_regions(luma)
    if not boxes:
        return []
    image = picture()
    scale_x, scale_y = image.width / luma.shape[1], image.height / luma.shape[0]
    views = []
    for left, top, right, bottom in boxes:
        if min((right - left) * scale_x, (bottom - top) * scale_y) < MIN_REGION_SIDE:
            continue
        box = (
            max(0, round((left - _BLOCK) * scale_x)),
            max(0, round((top - _BLOCK) * scale_y)),
            min(image.width, round((right + _BLOCK) * scale_x)),
            min(image.height, round((bottom + _BLOCK) * scale_y)),
        )
        views.append(image.crop(box))
    return views
