"""Query-side normalisation: find the picture inside screenshots, letterboxes and padded copies.

A copy of an incident photo often circulates inside something else: a phone screenshot (the photo
on a dark canvas between the status bar and the home indicator), a story with letterbox bars, a
meme with white padding. Perceptual hashes of the whole canvas miss the photo, so matching also
hashes the *content box*: the canvas with its uniform outer bands peeled off.

A band is a run of rows (or columns) each of which is nearly one colour along its length; the
colour may change from one row to the next, so gradient backgrounds peel too. Thin busy runs
between uniform bands (the status bar's clock and battery, a home indicator, a one-line caption on
the canvas) peel with them; a thick busy run is content and stops the peeling. Peeling only goes
inwards from the edges, so a caption bar across the middle of a photo is never cut out.

This is a heuristic, and it can peel a real photo's plain sky or night background: callers hash the
content box *as well as* the whole image, never instead of it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import numpy as np
from PIL import Image

# Trimming works on a thumbnail: a 1080x2340 screenshot is 384 px tall here, which still resolves
# its status bar (~40 px) and the gap under it. Box precision is 1/384 of a side.
_WORK_SIDE = 384
# A line is uniform when this share of its pixels is within _TOLERANCE luma levels of the line's
# mean. The share leaves room for JPEG ringing and the odd stray pixel; the mean (not a median,
# ~10x slower) moves at most 3% x 255 levels for 3% outliers, well inside the tolerance.
_UNIFORM_SHARE = 0.97
_TOLERANCE = 24
# A busy run at most this share of the side, with uniform bands beyond it, is chrome, not content.
_THIN_SHARE = 0.08
# Keep at least this share of the area, and 16 px a side: less than that is not the photo.
_MIN_AREA_SHARE = 0.05
_MIN_SIDE = 16
# Ignore trims that keep nearly everything: they would only add a near-duplicate hash.
_MAX_AREA_SHARE = 0.97


@dataclass(frozen=True)
class Box:
    """A crop box in pixels: left and top inclusive, right and bottom exclusive."""

    left: int
    top: int
    right: int
    bottom: int

    @property
    def width(self) -> int:
        return self.right - self.left

    @property
    def height(self) -> int:
        return self.bottom - self.top

    def as_tuple(self) -> tuple[int, int, int, int]:
        return (self.left, self.top, self.right, self.bottom)


def _uniform_lines(luma: np.ndarray, axis: int) -> np.ndarray:
    """For each line of a 2-D float32 luma array (rows: axis=1, columns: axis=0): is it (nearly)
    one tone along its length? Luma alone: canvases of two colours with one brightness are rare,
    and per-channel reductions cost several times as much."""
    mean = luma.mean(axis=axis, keepdims=True)
    close = np.abs(luma - mean) <= _TOLERANCE
    return np.asarray(close.mean(axis=axis) >= _UNIFORM_SHARE)


def _runs(flags: np.ndarray) -> list[tuple[bool, int, int]]:
    """(uniform, start, end) runs of equal flags."""
    if len(flags) == 0:
        return []
    edges = np.flatnonzero(np.diff(flags.astype(np.int8))) + 1
    starts = [0, *edges.tolist()]
    ends = [*edges.tolist(), len(flags)]
    return [(bool(flags[s]), s, e) for s, e in zip(starts, ends, strict=True)]


def _peel(flags: np.ndarray, thin: int) -> tuple[int, int]:
    """The [start, end) span left after peeling uniform bands and thin chrome from both ends."""
    runs = _runs(flags)
    start, end = 0, len(flags)
    i = 0
    while i < len(runs):
        uniform, _, run_end = runs[i]
        if uniform:
            start = run_end
            i += 1
        elif run_end - runs[i][1] <= thin and i + 1 < len(runs) and runs[i + 1][0]:
            start = runs[i + 1][2]
            i += 2
        else:
            break
    j = len(runs) - 1
    while j > i:
        uniform, run_start, run_end = runs[j]
        if uniform:
            end = run_start
            j -= 1
        elif run_end - run_start <= thin and j - 1 > i and runs[j - 1][0]:
            end = runs[j - 1][1]
            j -= 2
        else:
            break
    return start, max(start, end)


def content_box(image: Image.Image) -> Box | None:
    """The box of the picture inside uniform outer bands, or None if there is nothing to trim.

    Returns None too when the box would be implausibly small (a near-blank image) or would keep
    almost the whole image.
    """
    width, height = image.size
    if width < _MIN_SIDE or height < _MIN_SIDE:
        return None
    factor = max(1, max(width, height) // _WORK_SIDE)
    small = image
    if factor > 1:
        # Nearest-neighbour sampling: ~10x faster than filtering, and flat stays flat.
        size = (max(1, width // factor), max(1, height // factor))
        small = small.resize(size, Image.Resampling.NEAREST)
    luma = np.asarray(small.convert("L"), dtype=np.float32)
    rows, cols = luma.shape
    top, bottom = _peel(_uniform_lines(luma, axis=1), max(1, int(rows * _THIN_SHARE)))
    if bottom - top < 2:
        return None
    left, right = _peel(_uniform_lines(luma[top:bottom], axis=0), max(1, int(cols * _THIN_SHARE)))
    if right - left < 2:
        return None
    # Back to full-size pixels, rounding outwards so no content is lost.
    scale_x, scale_y = width / cols, height / rows
    box = Box(
        left=int(left * scale_x),
        top=int(top * scale_y),
        right=min(width, int(np.ceil(right * scale_x))),
        bottom=min(height, int(np.ceil(bottom * scale_y))),
    )
    area_share = box.width * box.height / (width * height)
    if box.width < _MIN_SIDE or box.height < _MIN_SIDE or area_share < _MIN_AREA_SHARE:
        return None
    if area_share > _MAX_AREA_SHARE:
        return None
    return box


CONTENT_DEPTH: Final = 2  # content boxes within content boxes that analysis_views looks at


def analysis_views(image: Image.Image, depth: int = CONTENT_DEPTH) -> list[Image.Image]:
    """The whole image, then its content box and that box's own (a screenshot of a padded copy),
    up to `depth` levels: what banking and matching hash."""
    views = [image]
    for _ in range(depth):
        box = content_box(views[-1])
        if box is None:
            break
        views.append(views[-1].crop(box.as_tuple()))
    return views


def _squash(
    size: tuple[float, float], angle: float, ratio: float
) -> tuple[np.ndarray, np.ndarray, tuple[float, float]]:
    """(linear map, top-left of the squashed picture's box, the box's size) of a squash of a
    picture of `size` to `ratio` along `angle` degrees from its width."""
    theta = np.radians(angle)
    axis = np.array([np.cos(theta), np.sin(theta)])
    # Identity, less (1 - ratio) of each point's component along the axis.
    linear = np.eye(2) - (1.0 - ratio) * np.outer(axis, axis)
    width, height = size
    corners = np.array([[0, 0], [width, 0], [width, height], [0, height]], float) @ linear.T
    low, high = corners.min(axis=0), corners.max(axis=0)
    return linear, low, (float(high[0] - low[0]), float(high[1] - low[1]))


def squashed(image: Image.Image, angle: float, ratio: float) -> Image.Image:
    """`image` squashed to `ratio` of its extent along the direction `angle` degrees from its
    width (0: narrower, 90: shorter), on a white canvas that holds all of it."""
    linear, low, extent = _squash(image.size, angle, ratio)
    size = (max(1, round(extent[0])), max(1, round(extent[1])))
    # PIL's affine transform maps each output pixel back to its source pixel.
    inverse = np.linalg.inv(linear)
    offset = inverse @ low
    coefficients = (*inverse[0], offset[0], *inverse[1], offset[1])
    return image.convert("RGB").transform(
        size, Image.Transform.AFFINE, coefficients, Image.Resampling.BICUBIC, fillcolor="white"
    )


def unsquash_map(
    source: tuple[float, float], angle: float, ratio: float, view: tuple[float, float]
) -> np.ndarray:
    """The 3x3 map from a squashed view's frame (`view`: its size, any uniform scale of the
    squashed picture) back to the frame of the picture it was made from (`source`: its size)."""
    linear, low, extent = _squash(source, angle, ratio)
    scale = view[0] / extent[0] if extent[0] else 1.0
    inverse = np.linalg.inv(linear)
    back = np.eye(3)
    back[:2, :2] = inverse / scale
    back[:2, 2] = inverse @ low
    return back
