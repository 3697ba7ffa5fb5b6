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

Pictures side by side with thin gutters (a gallery or profile grid, an album in a chat) join
into one region, often most of the frame: a region is also cut at its gutters (lines of one
tone across it, found at full resolution, where a 2 px gutter is still a line; XY-cut, as in
document layout analysis), recursively, and each cell is a picture of its own.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

import cv2
import numpy as np
import numpy.typing as npt
from PIL import Image

from schoolgate.media.content_grid import content_grid, photo_region, still_pixels
from schoolgate.media.features import FeatureSettings, working_grey

Crop = tuple[int, int, int, int]

_BLOCK: Final = 8  # working-frame pixels per block side
_BUSY: Final = 0.6  # a block is busy when more of its pixels than this are not in flat areas
# A region's box is at least this share busy blocks: lines of text are not, but a picture with
# text bubbles a few pixels above and below is (0.46-0.47, a59 F2); the gutter cut parts them.
_FILL: Final = 0.35
_SOLID: Final = 0.8  # a region this share busy blocks is looked at before the others
_MIN_BLOCKS: Final = 3  # a region is at least this many blocks on its short side
# A region over this share of the frame is most of it: the whole view already looks at it,
# unless gutters cut it into pictures; one over _MAX_CUT_SHARE is the picture itself (a photo).
_MAX_SHARE: Final = 0.5
_MAX_CUT_SHARE: Final = 0.85
# Luma spread (5th to 95th percentile) along a gutter: 0 in a PNG, up to 9 in a JPEG at quality
# 75 (ringing beside the pictures); a smooth photo's plainest columns (the moon's) spread 8-10,
# and so do the columns beside them, where a gutter steps into pictures (spreads of 80-220).
_GUTTER_SPREAD: Final = 12.0
_GUTTER_STEP: Final = 3.0  # the lines beside a gutter spread this many times more, at least
_GUTTER_FLOOR: Final = 4.0  # (a PNG gutter's spread of 0 is taken as this)
_SLIVER_GAP: Final = 8  # px: a sliver this close to a neighbour is a part of it
_MAX_PIECES: Final = 64  # runs between gutters along one axis: more are a pattern
_CUT_DEPTH: Final = 3  # rows of a grid, then its columns, then a cell's own split
WORK_SIDE: Final = FeatureSettings().work_side  # a region this long in the image has detail enough
# Pixels of the image on a region's short side: a smaller picture holds too little to align.
MIN_REGION_SIDE: Final = 96
MAX_REGIONS: Final = 4  # per frame (solid ones first): a screenshot shows a few pictures


def photo_regions(
    luma: npt.NDArray[np.uint8], blocks: npt.NDArray[np.uint8] | None = None
) -> list[tuple[Crop, bool]]:
    """Boxes (left, top, right, bottom, in `luma`'s pixels) of the compact textured regions of a
    working frame that cover at most _MAX_CUT_SHARE of it, solid ones (mostly busy) first and
    then the largest, each with whether it is small enough to look up whole (at most half the
    frame); none for a photo (its one region is the frame) or a frame with no texture.
    `blocks`: the frame's `busy_blocks`, where already found."""
    blocks = busy_blocks(luma) if blocks is None else blocks
    rows, columns = blocks.shape
    if min(rows, columns) < 2 * _MIN_BLOCKS:
        return []
    # One block's gap (a smooth patch of a photo, a thin line drawn across it) does not split
    # it. Closing wider, or growing regions through partly busy blocks, joined a photo to the
    # bubbles and captions beside it and lost more pictures than it found (measured).
    busy = cv2.morphologyEx(blocks, cv2.MORPH_CLOSE, np.ones((2, 2), np.uint8))
    count, _, stats, _ = cv2.connectedComponentsWithStats(busy, connectivity=8)
    found: list[tuple[tuple[bool, int], Crop, bool]] = []
    for label in range(1, count):
        left, top, wide, high, area = (int(v) for v in stats[label])
        share = wide * high / (rows * columns)
        if min(wide, high) < _MIN_BLOCKS or share > _MAX_CUT_SHARE:
            continue
        if area < _FILL * wide * high:
            continue
        box = (left * _BLOCK, top * _BLOCK, (left + wide) * _BLOCK, (top + high) * _BLOCK)
        # Solid regions first, the largest first: a picture, before columns of avatars and
        # their names (a59 F7: 24 avatars beside a chat's picture took every place).
        found.append(((area >= _SOLID * wide * high, wide * high), box, share <= _MAX_SHARE))
    found.sort(key=lambda item: item[0], reverse=True)
    return [(box, whole) for _, box, whole in found[:MAX_REGIONS]]


def busy_blocks(luma: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint8]:
    """1 for each _BLOCK-px block of the working frame that is busy (mostly not flat)."""
    rows, columns = luma.shape[0] // _BLOCK, luma.shape[1] // _BLOCK
    still = still_pixels(luma)[: rows * _BLOCK, : columns * _BLOCK]
    busy_share = 1.0 - still.reshape(rows, _BLOCK, columns, _BLOCK).mean(axis=(1, 3))
    return (busy_share > _BUSY).astype(np.uint8)


# A frame busier than this outside its photo regions (or its framed picture) may hold a picture
# that no region isolates: a chat over a photo wallpaper (media.framed_pictures).
BUSY_AROUND_FRAMED: Final = 0.15


def busy_elsewhere(busy: npt.NDArray[np.uint8], boxes: list[Crop]) -> float:
    """The share of a working frame that is busy (`busy`: its `busy_blocks`) outside `boxes`
    (in the frame's pixels): about none on a plain interface once its pictures' regions are set
    aside, most of a chat over a photo wallpaper."""
    blocks = busy.copy()
    for left, top, right, bottom in boxes:
        blocks[top // _BLOCK : -(-bottom // _BLOCK), left // _BLOCK : -(-right // _BLOCK)] = 0
    return float(blocks.mean()) if blocks.size else 0.0


def region_views(
    luma: npt.NDArray[np.uint8],
    image: Image.Image,
    finer: Callable[[], Image.Image] | None = None,
    regions: list[tuple[Crop, bool]] | None = None,
) -> list[Image.Image]:
    """The pictures in the photo regions of `image`, whose working frame is `luma`. A small
    region is one picture, and each region is cut at its gutters into more (a large one with
    none is the photo itself, already looked at whole). Each picture is at least
    MIN_REGION_SIDE pixels on its short side, with a block's margin (a photo's edge blocks are
    partly flat). A region smaller in `image` than the working side is cropped from `finer()`
    where given (the picture decoded finer, asked for once): a JPEG screenshot is decoded at a
    quarter of its size for the whole view, where a 260 px photo is 65 px. `regions`: the
    frame's `photo_regions`, where already found."""
    views = []
    for (left, top, right, bottom), whole in photo_regions(luma) if regions is None else regions:
        source = image
        if finer is not None and max(right - left, bottom - top) * image.width < (
            WORK_SIDE * luma.shape[1]  # the region's long side in `image`, against WORK_SIDE
        ):
            source = finer()
        scale_x, scale_y = source.width / luma.shape[1], source.height / luma.shape[0]
        box = (
            max(0, round((left - _BLOCK) * scale_x)),
            max(0, round((top - _BLOCK) * scale_y)),
            min(source.width, round((right + _BLOCK) * scale_x)),
            min(source.height, round((bottom + _BLOCK) * scale_y)),
        )
        region = source.crop(box)
        cells = _cut(np.asarray(region.convert("L"), np.uint8), _CUT_DEPTH)
        # A small region's pictures are its cells: several (then the region whole as well, as a
        # cut may be a plain band of one photo), or one (the picture with its plain margins and
        # the text beside it left out). A larger region's cells only where it is cut into
        # pictures (a grid): its one picture is the photo itself, already looked at whole.
        if len(cells) > 1:
            pictures = [region.crop(cell) for cell in cells] + ([region] if whole else [])
        else:
            pictures = [region.crop(cells[0])] if whole else []
        views += [view for view in pictures
                  if min(view.size) >= MIN_REGION_SIDE and not drawn(view)]  # fmt: skip
    return views


def drawn(view: Image.Image) -> bool:
    """Whether a picture is drawn (an avatar's initial, an icon, a sticker, a header), not a
    photo, by its content grid (too few photographic cells, as `hashes add` judges an item), and
    so not looked up: in the precision bench's 540 px chat screens looking up every region took
    the robust tier's p95 from 58 to 137 ms a screen. A photo with a plain sky (the rocket,
    18 of 64 cells) is still a photo."""
    return photo_region(content_grid(working_grey(view))) is None


def _cut(grey: npt.NDArray[np.uint8], depth: int) -> list[Crop]:
    """The boxes of `grey` cut at the gutters that cross it from side to side (lines of one
    tone, past its own plain margins), recursively: the pictures of a grid; the whole when it
    has none."""
    height, width = grey.shape
    whole = (0, 0, width, height)
    if depth == 0 or min(height, width) < 2 * MIN_REGION_SIDE:
        return [whole]
    for axis in (0, 1):  # rows of pictures first (a gutter runs along axis 1), then columns
        low, high = _line_percentiles(grey if axis == 0 else grey.T, (5, 95))
        runs = _between(_gutters(high - low))
        if len(runs) > _MAX_PIECES:
            continue  # stripes or lines of text, not a grid (joining slivers is quadratic)
        pieces = _pictures(runs)
        if not pieces or pieces == [(0, len(low))]:
            continue
        cells: list[Crop] = []
        for start, end in pieces:
            left, top = (0, start) if axis == 0 else (start, 0)
            part = grey[start:end] if axis == 0 else grey[:, start:end]
            cells += [(left + a, top + b, left + c, top + d)
                      for a, b, c, d in _cut(part, depth - 1)]  # fmt: skip
        return cells
    return [whole]


def _line_percentiles(lines: npt.NDArray[np.uint8], quantiles: tuple[float, float]
                      ) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:  # fmt: skip
    """Each row's percentiles, exactly as `np.percentile(lines.astype(np.float32), quantiles,
    axis=1)` (linear interpolation) gives them: from a radix sort of the bytes, several times
    faster than numpy's selection on floats (a screen's regions were a tenth of the robust
    tier's time)."""
    ordered = np.sort(lines, axis=1, kind="stable").astype(np.float32)
    last = ordered.shape[1] - 1
    found = []
    for quantile in quantiles:
        index = np.float64(quantile) / 100 * last
        below = int(np.floor(index))
        weight = np.float64(index - below)
        a, b = ordered[:, below], ordered[:, min(below + 1, last)]
        step = b - a
        # numpy's lerp, from whichever end is nearer
        found.append(b - step * (1 - weight) if weight >= 0.5 else a + step * weight)
    return found[0], found[1]


def _pictures(pieces: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Pieces too narrow to be pictures joined to a neighbour across a narrow gap (the
    narrower either side), or else left out, until every piece is a picture. A photo's own
    plain lines (a night sky's black columns) leave slivers a few pixels apart, which belong
    to it (joined one way only, they took a neighbour's gutter with them); a line of text
    beside a picture is a bubble's padding away from it, and is not a picture (a59 F2: text
    bubbles 4-20 px above and below a chat's picture joined it into one region)."""
    joined = list(pieces)
    while True:
        narrow = [n for n, (start, end) in enumerate(joined) if end - start < MIN_REGION_SIDE]
        if not narrow:
            return joined
        n = narrow[0]
        gaps = [(joined[n][0] - joined[n - 1][1], n - 1)] if n > 0 else []
        gaps += [(joined[n + 1][0] - joined[n][1], n + 1)] if n + 1 < len(joined) else []
        gap, other = min(gaps, default=(_SLIVER_GAP + 1, n))
        if gap > _SLIVER_GAP:
            del joined[n]
            continue
        low, high = min(n, other), max(n, other)
        joined[low : high + 1] = [(joined[low][0], joined[high][1])]


def _gutters(spread: npt.NDArray[np.floating]) -> npt.NDArray[np.bool_]:
    """Which lines are gutters, by each line's luma spread: runs of plain lines with a
    neighbour, two lines out on one side or the other, that spreads far more (a step into a
    picture; the picture on the other side may be as plain as the moon at its edge). A run at
    either end is a margin, a gutter too."""
    plain = spread <= _GUTTER_SPREAD
    gutters = plain.copy()
    for start, end in _between(~plain):  # runs of plain lines
        if start == 0 or end == len(spread):
            continue
        step = max(spread[max(0, start - 2)], spread[min(len(spread) - 1, end + 1)])
        if step < _GUTTER_STEP * max(float(spread[start:end].max()), _GUTTER_FLOOR):
            gutters[start:end] = False  # a plain band of a photo, not a line between two
    return gutters


def _between(lines: npt.NDArray[np.bool_]) -> list[tuple[int, int]]:
    """The runs (start, end) of lines that are not gutters: what lies between the gutters, and
    between them and the ends (plain margins at either end are left out)."""
    runs: list[tuple[int, int]] = []
    start: int | None = None
    for index, gutter in enumerate([*lines.tolist(), True]):
        if not gutter and start is None:
            start = index
        elif gutter and start is not None:
            runs.append((start, index))
            start = None
    return runs
