"""Local features for the robust tier: ORB keypoints and binary descriptors, stored compactly.

ORB (OpenCV) is fast (~10 ms for a 512 px image), binary (32 bytes a descriptor, Hamming
distance) and invariant to rotation and moderate scale changes. It is not invariant to mirroring;
mirrored copies are covered by PDQ's dihedral variants and by banking the mirrored view as well.

A feature set is derived data, not the media: keypoint positions (in a 512 px working frame) and
their descriptors, a few kilobytes to ~20 KB per banked item. The picture cannot be rebuilt from
it. Feature sets are tagged with FEATURE_KIND so a later change of algorithm or parameters can tell
old sets from new ones instead of silently comparing incompatible descriptors.
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass, field
from typing import Final

import cv2
import numpy as np
from PIL import Image

from schoolgate.media.content_grid import BYTES as GRID_BYTES
from schoolgate.media.content_grid import (
    GRID,
    PANELS_BYTES,
    ContentGrid,
    content_grid,
    photo_pixels,
    small_photo_box,
)
from schoolgate.media.panels import collage_panels

# The proxy parallelises across items with its own worker pool; OpenCV's internal threads would
# only oversubscribe the appliance's cores.
cv2.setNumThreads(1)

FEATURE_KIND = "orb-512-v1"
DESCRIPTOR_BYTES = 32
_MAGIC = b"SGF1"  # keypoints and descriptors only (banked before content grids)
_MAGIC_GRID = b"SGF2"  # followed by the content grid
_MAGIC_PANELS = b"SGF3"  # followed by the content grid and its panel map (a collage)
_GRID_BYTES = {_MAGIC: 0, _MAGIC_GRID: GRID_BYTES, _MAGIC_PANELS: GRID_BYTES + PANELS_BYTES}
_HEADER = struct.Struct("<4sHHH")  # magic, count, width, height
_MIN_GRID_SIDE = 40  # a sliver (a 512 x 30 banner) has no grid: matched on features alone


@dataclass(frozen=True)
class FeatureSettings:
    """How features are extracted. Banked and query sets must use the same settings."""

    max_features: int = 500  # per view: caps bank size and query time
    work_side: int = 512  # images are scaled so their longer side is this many pixels
    grid: int = 8  # keypoints are spread over grid x grid cells, best first in each
    fast_threshold: int = 10  # low enough to find corners in dim or low-contrast photos


@dataclass(frozen=True)
class LocalFeatures:
    """Keypoints (x, y) in a working frame of `width` x `height` pixels, and their descriptors.

    `grid` is the view's content grid (`content_grid`), banked with the features; sets banked
    before grids existed have none. `luma` is the working frame itself, kept on queries only
    (never stored) so a match can warp it onto the banked picture and compare their grids."""

    points: np.ndarray  # (n, 2) float32
    descriptors: np.ndarray  # (n, 32) uint8
    width: int
    height: int
    grid: ContentGrid | None = None
    luma: np.ndarray | None = field(default=None, repr=False, compare=False)

    def __len__(self) -> int:
        return int(self.points.shape[0])

    def to_bytes(self) -> bytes:
        magic = _MAGIC if self.grid is None else _MAGIC_GRID
        if self.grid is not None and self.grid.panels is not None:
            magic = _MAGIC_PANELS
        header = _HEADER.pack(magic, len(self), self.width, self.height)
        points = np.ascontiguousarray(self.points, dtype="<f4").tobytes()
        grid = b"" if self.grid is None else self.grid.to_bytes()
        return header + points + np.ascontiguousarray(self.descriptors, np.uint8).tobytes() + grid

    @classmethod
    def from_bytes(cls, data: bytes) -> LocalFeatures:
        """Inverse of to_bytes; raises ValueError for anything malformed."""
        if len(data) < _HEADER.size:
            raise ValueError("feature set too short")
        magic, count, width, height = _HEADER.unpack_from(data)
        if magic not in _GRID_BYTES:
            raise ValueError("not a schoolgate feature set")
        features_end = _HEADER.size + count * (8 + DESCRIPTOR_BYTES)
        expected = features_end + _GRID_BYTES[magic]
        if len(data) != expected or width < 1 or height < 1:
            raise ValueError(f"feature set of {len(data)} bytes, expected {expected}")
        start = _HEADER.size
        points = np.frombuffer(data, "<f4", count * 2, start).reshape(count, 2)
        descriptors = np.frombuffer(data, np.uint8, count * DESCRIPTOR_BYTES, start + count * 8)
        grid = ContentGrid.from_bytes(data[features_end:]) if magic != _MAGIC else None
        return cls(
            points=points.astype(np.float32),
            descriptors=descriptors.reshape(count, DESCRIPTOR_BYTES).copy(),
            width=width,
            height=height,
            grid=grid,
        )


def _working_grey(image: Image.Image, side: int) -> np.ndarray:
    grey = image.convert("L") if image.mode != "L" else image
    scale = side / max(grey.size)
    size = (max(1, round(grey.width * scale)), max(1, round(grey.height * scale)))
    if size != grey.size:
        # Upscaling small images too: both sides of a comparison then live in the same frame,
        # and ORB's 31 px patches fit more of a thumbnail.
        resample = Image.Resampling.BILINEAR if scale < 1 else Image.Resampling.BICUBIC
        grey = grey.resize(size, resample, reducing_gap=2.0 if scale < 1 else None)
    return np.asarray(grey, dtype=np.uint8)


def _spread_pick(points: np.ndarray, responses: np.ndarray, size: tuple[int, int], grid: int,
                 limit: int) -> np.ndarray:  # fmt: skip
    """Indices of at most `limit` keypoints, round-robin over grid cells, strongest first.

    Keeping only the strongest corners overall would spend the whole budget on text and other
    high-contrast overlays (a caption bar, a sticker), leaving nothing on the photo they cover.
    """
    cell = _cells(points, size, grid)
    order = np.lexsort((-responses, cell))  # by cell, strongest first within a cell
    sorted_cells = cell[order]
    starts = np.flatnonzero(np.r_[True, sorted_cells[1:] != sorted_cells[:-1]])
    run_lengths = np.diff(np.r_[starts, len(order)])
    rank = np.empty(len(order), np.int64)
    rank[order] = np.arange(len(order)) - np.repeat(starts, run_lengths)
    picked: np.ndarray = np.lexsort((-responses, rank))[:limit]
    return picked


# The view banked to judge a small photo inside a drawn item (its content grid, no keypoints).
PHOTO_JUDGE_VIEW = "photo-grid"
# The views banked for a collage's pictures ("panel-0", "panel-1", ...): two of them found in a
# copy are a match of the collage, one alone is not (media/panels.py).
PANEL_VIEW = "panel-"


# The view banked to judge a framed picture inside a view (a chat's picture in its bubble over
# a photo wallpaper, media.framed_pictures): FRAMED_JUDGE_VIEW(view;left,top,right,bottom),
# the box in that view's working frame. The grid alone cannot say where the picture is.
FRAMED_JUDGE_VIEW = "framed-grid"
# The views banked to judge a screen banked whole over a photo wallpaper, band by band
# (overlapping thirds of its height): BAND_JUDGE_VIEW(view;left,top,right,bottom). At 8 x 8 a
# chat's picture spans a few areas of a whole screen, and another picture in the same bubble
# reads as a sticker over it (a64 F1); in a third of the screen it spans many.
BAND_JUDGE_VIEW = "band-grid"
_JUDGE_NAME = re.compile(
    rf"({FRAMED_JUDGE_VIEW}|{BAND_JUDGE_VIEW})\(([a-z-]+);(\d+),(\d+),(\d+),(\d+)\)"
)


def framed_judge_name(view: str, box: tuple[int, int, int, int]) -> str:
    """The name a framed picture's judge of `view` is banked under."""
    return _judge_name(FRAMED_JUDGE_VIEW, view, box)


def band_judge_name(view: str, box: tuple[int, int, int, int]) -> str:
    """The name a band's judge of `view` is banked under."""
    return _judge_name(BAND_JUDGE_VIEW, view, box)


def framed_judge_of(name: str) -> tuple[str, tuple[int, int, int, int]] | None:
    """(the view it judges, its box in that view's frame) for a framed judge's name; None for
    any other view's."""
    return _judge_of(FRAMED_JUDGE_VIEW, name)


def band_judge_of(name: str) -> tuple[str, tuple[int, int, int, int]] | None:
    """(the view it judges, its box in that view's frame) for a band judge's name; None for
    any other view's."""
    return _judge_of(BAND_JUDGE_VIEW, name)


def _judge_name(kind: str, view: str, box: tuple[int, int, int, int]) -> str:
    return f"{kind}({view};{','.join(map(str, box))})"


def _judge_of(kind: str, name: str) -> tuple[str, tuple[int, int, int, int]] | None:
    found = _JUDGE_NAME.fullmatch(name)
    if found is None or found.group(1) != kind:
        return None
    left, top, right, bottom = (int(found.group(n)) for n in range(3, 7))
    return found.group(2), (left, top, right, bottom)


def photo_judge(
    whole: LocalFeatures, box: tuple[int, int, int, int] | None = None
) -> tuple[LocalFeatures, np.ndarray] | None:
    """For a whole view whose photo is small (`small_photo_box`), or for a view and the `box`
    of a picture in it: that photo's own content grid, as a feature set without keypoints in
    the frame of that box, and the 3x3 map from the view's frame to it. A match of the view
    must agree there too, at the photo's own scale, not only on the interface (or wallpaper)
    around it. None for any other view, or a box too small for a grid."""
    if whole.grid is None or whole.luma is None:
        return None
    box = box or small_photo_box(whole.grid, whole.width, whole.height)
    if box is None:
        return None
    left, top, right, bottom = box
    crop = whole.luma[top:bottom, left:right]
    if min(crop.shape) < _MIN_GRID_SIDE:
        return None
    empty = LocalFeatures(np.zeros((0, 2), np.float32), np.zeros((0, DESCRIPTOR_BYTES), np.uint8),
                          right - left, bottom - top, content_grid(crop))  # fmt: skip
    return empty, judge_map(box)


def judge_map(box: tuple[int, int, int, int]) -> np.ndarray:
    """The map from a whole view's frame to the frame of a box in it."""
    return np.array([[1.0, 0.0, -box[0]], [0.0, 1.0, -box[1]], [0.0, 0.0, 1.0]])


def working_grey(image: Image.Image, settings: FeatureSettings | None = None) -> np.ndarray:
    """An image's grey working frame, as extract_features sees it."""
    return _working_grey(image, (settings or FeatureSettings()).work_side)


def whole_grid(
    image: Image.Image, settings: FeatureSettings | None = None, finer: Image.Image | None = None
) -> ContentGrid | None:
    """The content grid of an image's whole view, as extract_features banks it (with its panel
    map where it is a collage; None for a sliver), without the keypoints."""
    grey = working_grey(image, settings)
    if min(grey.shape) < _MIN_GRID_SIDE:
        return None
    return _banked_grid(grey, finer_grey(finer or image, settings))


def _banked_grid(grey: np.ndarray, finer: np.ndarray | None = None) -> ContentGrid:
    """A banked view's content grid, with its panel map where its photo is a collage (`finer`:
    the view at a finer scale, for thin gutters)."""
    found = content_grid(grey)
    box = photo_pixels(found, grey.shape[1], grey.shape[0])
    panels = None if box is None else collage_panels(grey, box, GRID, finer)
    return found if panels is None else ContentGrid(found.bits, found.kinds, panels)


_FINER_SIDES: Final = 4
FINER_SIDE: Final = _FINER_SIDES * FeatureSettings().work_side  # at the default working side


def finer_grey(image: Image.Image, settings: FeatureSettings | None = None) -> np.ndarray | None:
    """A banked image's grey frame at up to four times the working side (never enlarged),
    where that is finer than the working frame: thin gutters are looked for there. A line of
    one pixel survives only at about its own scale (a52 F2b: a 1603 px strip's 1 px lines were
    lost at 1024 px)."""
    work = (settings or FeatureSettings()).work_side
    side = min(_FINER_SIDES * work, max(image.size))
    return _working_grey(image, side) if side > 1.25 * work else None


def extract_features(
    image: Image.Image,
    settings: FeatureSettings | None = None,
    *,
    grid: bool = True,
    finer: Image.Image | None = None,
) -> LocalFeatures:
    """ORB features of an (upright, already decoded) image, at most settings.max_features.
    `grid`: compute the view's content grid (what banking stores; a query's is computed on the
    query warped onto a banked picture instead, so lookups pass False). `finer`: the same
    picture decoded at a finer scale, where the grid's thin gutters are looked for."""
    settings = settings or FeatureSettings()
    grey = _working_grey(image, settings.work_side)
    height, width = grey.shape
    orb = cv2.ORB.create(
        nfeatures=settings.max_features * 4,
        fastThreshold=settings.fast_threshold,
    )
    keypoints, descriptors = orb.detectAndCompute(grey, None)
    content = (_banked_grid(grey, finer_grey(finer or image, settings))
               if grid and min(width, height) >= _MIN_GRID_SIDE else None)  # fmt: skip
    if descriptors is None or not keypoints:
        return LocalFeatures(
            np.zeros((0, 2), np.float32),
            np.zeros((0, DESCRIPTOR_BYTES), np.uint8),
            width,
            height,
            content,
            grey,
        )
    points = np.array([k.pt for k in keypoints], dtype=np.float32)
    if len(keypoints) > settings.max_features:
        responses = np.array([k.response for k in keypoints], dtype=np.float32)
        keep = _spread_pick(points, responses, (width, height), settings.grid,
                            settings.max_features)  # fmt: skip
        points, descriptors = points[keep], descriptors[keep]
    descriptors = np.ascontiguousarray(descriptors, np.uint8)
    return LocalFeatures(points, descriptors, width, height, content, grey)


def starved_features(
    features: LocalFeatures, settings: FeatureSettings | None = None
) -> LocalFeatures | None:
    """Keypoints of a query's working frame (`features.luma`) in the cells of the spread grid
    where `features` kept fewer than _STARVED: ORB keeps its strongest corners, and where a
    smooth or dark picture is pasted onto a cluttered photo, the photo's corners take the pool
    before the spread pick sees the picture's (a83: 7 of 500 keypoints fell inside the banked
    rocket pasted at half the width of a workshop photo). Every corner in those cells is
    detected, picked as extract_features picks (up to max_features), and only those picked
    described. None where no cell is starved or the frame was not kept."""
    settings = settings or FeatureSettings()
    grey = features.luma
    if grey is None:
        return None
    height, width = grey.shape
    size = (width, height)
    kept = np.bincount(_cells(features.points, size, settings.grid), minlength=settings.grid**2)
    starved = kept < _STARVED
    if not starved.any():
        return None
    orb = cv2.ORB.create(nfeatures=settings.max_features * _EVERY_CORNER,
                         fastThreshold=settings.fast_threshold)  # fmt: skip
    # Detected in the starved cells only (a mask: 5 ms, where the whole frame's corners took 7
    # and reading them all back 3 more).
    cells = starved.reshape(settings.grid, settings.grid).astype(np.uint8) * 255
    keypoints = orb.detect(grey, cv2.resize(cells, size, interpolation=cv2.INTER_NEAREST))
    if not keypoints:
        return None
    points = np.array([k.pt for k in keypoints], dtype=np.float32)
    inside = np.flatnonzero(starved[_cells(points, size, settings.grid)])
    if not len(inside):
        return None
    responses = np.array([k.response for k in keypoints], dtype=np.float32)[inside]
    picked = inside[_spread_pick(points[inside], responses, size, settings.grid,
                                 settings.max_features)]  # fmt: skip
    described, descriptors = orb.compute(grey, [keypoints[i] for i in picked.tolist()])
    if descriptors is None or not described:
        return None
    points = np.array([k.pt for k in described], dtype=np.float32)
    return LocalFeatures(points, np.ascontiguousarray(descriptors, np.uint8), width, height,
                         None, grey)  # fmt: skip


def with_starved(features: LocalFeatures, settings: FeatureSettings | None = None) -> LocalFeatures:
    """A query view's features and its starved cells' (`starved_features`), as one set."""
    more = starved_features(features, settings)
    if more is None:
        return features
    return LocalFeatures(np.concatenate([features.points, more.points]),
                         np.concatenate([features.descriptors, more.descriptors]),
                         features.width, features.height, features.grid,
                         features.luma)  # fmt: skip


def _cells(points: np.ndarray, size: tuple[int, int], grid: int) -> np.ndarray:
    """The spread grid's cell (row * grid + column) of each point."""
    width, height = size
    column = np.minimum(grid - 1, (points[:, 0] * grid / width).astype(np.int64))
    row = np.minimum(grid - 1, (points[:, 1] * grid / height).astype(np.int64))
    cell: np.ndarray = row * grid + column
    return cell


_STARVED: Final = 4  # keypoints a cell of the spread grid kept (its share is ~8)
_EVERY_CORNER: Final = 40  # ORB's pool, times max_features: every corner of a 512 px frame
