"""Pictures in a plain frame over a busy background: a chat's picture in its bubble over a photo
wallpaper, a print on a patterned wall.

`photo_regions` finds a small picture by its texture among the flat areas of an interface, at
8 px blocks of the 512 px working frame. Over a photo wallpaper everything is busy, and the one
thing that sets the picture apart is the bubble around it: a band of one tone about 10 px wide
in a 1080 px screenshot, 2 px in the working frame. A banked picture of 250-600 px in such a
chat was blocked 4 of 105 times (adversarial pass a59, F1).

So, at about a phone screen's width (DETECT_SHORT), where such a band is 3-5 flat pixels
(their 3 x 3 neighbourhood within a few grey levels, a few more for a JPEG's ringing): a frame
is two long straight runs of flat pixels of one tone, as
wide as each other, one above the other (its top and its bottom, the time's strip under a
chat picture), with runs of that tone down both sides, around a box that is mostly busy. The
sides are not joined at the corners (a rounded corner is anti-aliased; closing the gap also
joined the frame to the picture's own flat parts across its edge). A frame within a frame keeps
the inner one. A brick wall's mortar makes such frames too, around little texture: the box must
be mostly busy. The matcher looks for frames only where photo regions leave texture around
them (robust_tier), so a chat on a plain interface costs nothing more.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

import cv2
import numpy as np
import numpy.typing as npt
from PIL import Image

from schoolgate.media.photo_regions import WORK_SIDE, drawn

Box = tuple[int, int, int, int]
Place = tuple[float, float, float, float]  # left, top, right, bottom as shares of the frame

# Frames are looked for at a whole factor down to about a phone screen's width on the short side,
# at least DETECT_SHORT px: a 1080 px screen's bubble (10 px) at half its size is 5 px, and a
# 720 px screen's (5-7 px) is kept whole (a61 F3: at half its size, 0 of 63 were found). A long
# screenshot is reduced further, to DETECT_LONG px at most.
DETECT_SHORT: Final = 540
DETECT_LONG: Final = 4096
# Grey levels within a flat pixel's 3 x 3 neighbourhood, tried in turn until a frame is found:
# a PNG's frame is flat to 1-3 levels, a JPEG's at quality 80 or less is spread 5-10 by its
# ringing (a61 F2: such screens' frames were found 33 times in 90 at 4 levels alone, 65 with 8
# and 12 after it). The strictest first: a looser one finds flat runs in textures too.
FLAT_RANGE: Final = 4  # the strictest
_FLAT_RANGES: Final = (FLAT_RANGE, 8, 12)
# A screen's shape (a phone's, upright: 19.5:9 is 2.17): a camera photo's 4:3 or 3:2 is not.
_SCREEN_ASPECT: Final = 1.6
# Colour levels (any channel) within a flat pixel's 3 x 3 neighbourhood in a screen's colour
# pass: a pale green bubble against a cream cup in the wallpaper is one grey, and the frame's
# top ran on into the cup (a62 F1, a63 F2). On those sets 16 found the most frames; a JPEG's
# chroma ringing breaks some frames at any such level, hence a pass of its own.
_HUE: Final = 16
_CORNER: Final = 8  # px: how far a bar may end short of the frame's side (a rounded corner)
_TONE: Final = 6.0  # grey levels between a frame's top and bottom
_SIDE: Final = 0.8  # share of the box's height its left and right sides run flat
_MAX_BARS: Final = 200  # bars paired, at most (text bubbles each give one or two)
# Share of the picture's pixels that are not flat: a photo's 0.85-0.98, the rocket's under its
# plain sky 0.47; a text bubble's a tenth to a fifth, and a brick wall's between two lines of
# mortar 0.28-0.44 (mortar runs straight and flat, as a frame does).
BUSY_PICTURE: Final = 0.45
MAX_PICTURE_SHARE: Final = 0.6  # of the frame: a larger hole is the frame's own content
_INNER: Final = 0.5  # a frame holding a framed picture this share of it gives way to it
MAX_FRAMED: Final = 4  # per frame, the most photographic first


def framed_pictures(
    image: Image.Image,
    min_side: int,
    finer: Callable[[], Image.Image] | None = None,
    noisy: bool = False,
) -> list[tuple[Place, Image.Image]]:
    """The framed photos of `image` (drawn pictures left out, as `photo_regions` leaves them),
    each with where it is (shares of the frame), at least `min_side` px across, cropped from
    `finer()` (the picture decoded finer, asked for once) where it is small in `image`. Frames
    are looked for in `finer()` where `image` is under DETECT_SHORT on its short side (a 1080
    x 2340 JPEG decoded at a quarter of its size, a 720 x 1560 one at half). `noisy`: the
    picture was stored lossy (a JPEG): in a screen-shaped one, looser flatness is tried too."""
    looked_at = image
    if finer is not None and min(image.size) < DETECT_SHORT:
        looked_at = finer()
    # A whole factor: a box reduce is cheap.
    factor = max(1, min(looked_at.size) // DETECT_SHORT, -(-max(looked_at.size) // DETECT_LONG))
    grey = np.asarray(looked_at.convert("L").reduce(factor), np.uint8)
    height, width = grey.shape
    screen = screen_shaped(image)

    def colour() -> npt.NDArray[np.uint8]:  # a screen's frame is also looked for by its colour
        return np.asarray(looked_at.convert("RGB").reduce(factor), np.uint8)

    found = []
    # Three passes cost 2-6 ms more where no frame is found: only for a lossy screen, where the
    # frames of a chat's pictures are (on the overlay bench's photos: 1.2 -> 3.3 ms p50).
    ranges = _FLAT_RANGES if noisy and screen else _FLAT_RANGES[:1]
    for left, top, right, bottom in frame_holes(grey, max(1, round(min_side / factor)), ranges,
                                                colour if screen else None):  # fmt: skip
        place = (left / width, top / height, right / width, bottom / height)
        small = max(right - left, bottom - top) / width * image.width < WORK_SIDE
        source = finer() if finer is not None and small else looked_at
        crop = (round(place[0] * source.width), round(place[1] * source.height),
                round(place[2] * source.width), round(place[3] * source.height))  # fmt: skip
        view = source.crop(crop)
        if min(view.size) >= min_side and not drawn(view):
            found.append((place, view))
    return found


def screen_shaped(image: Image.Image) -> bool:
    """Whether an image has a phone screen's upright shape (taller than _SCREEN_ASPECT)."""
    return image.height >= _SCREEN_ASPECT * image.width


def overlap(a: Box, b: Box) -> float:
    """Intersection over union of two boxes (left, top, right, bottom)."""
    across = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    down = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    shared = across * down
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - shared
    return shared / union if union else 0.0


def lies_in(place: Place, region: Place, share: float = 0.8) -> bool:
    """Whether most of a place (shares of a frame) lies in a region of the same frame."""
    wide = min(place[2], region[2]) - max(place[0], region[0])
    high = min(place[3], region[3]) - max(place[1], region[1])
    area = (place[2] - place[0]) * (place[3] - place[1])
    return wide > 0 and high > 0 and wide * high >= share * area


def frame_holes(
    grey: npt.NDArray[np.uint8],
    min_side: int,
    ranges: tuple[int, ...] = _FLAT_RANGES[:1],
    colour: Callable[[], npt.NDArray[np.uint8]] | None = None,
) -> list[Box]:
    """Boxes (left, top, right, bottom) of the pictures in `grey` held in a plain frame, at
    least `min_side` px on each side and at most MAX_PICTURE_SHARE of the frame, inner ones
    before the frames around them, the most photographic first, at most MAX_FRAMED; at the
    strictest flatness of `ranges` (grey levels within a flat pixel's 3 x 3 neighbourhood)
    that finds any; where none does and `colour` (the same frame in RGB, asked for then) is
    given, with its changes of colour as edges too, at the strictest."""
    height, width = grey.shape
    if min(height, width) < min_side + 2:
        return []
    kernel = np.ones((3, 3), np.uint8)
    spread = np.asarray(cv2.dilate(grey, kernel) - cv2.erode(grey, kernel), np.uint8)
    for flat_range in ranges:
        found = _frame_holes(grey, spread, min_side, flat_range)
        if found:
            return found
    if colour is None:
        return []
    # Then with colour edges too, at the strictest flatness: where a frame's tone runs on into
    # a flat part of the wallpaper of the same grey (only then: a JPEG's chroma ringing breaks
    # some frames).
    rgb = colour()
    shades = cv2.split(cv2.subtract(cv2.dilate(rgb, kernel), cv2.erode(rgb, kernel)))
    spread[cv2.max(cv2.max(shades[0], shades[1]), shades[2]) > _HUE] = 255  # a colour's edge
    return _frame_holes(grey, spread, min_side, ranges[0])


def _frame_holes(
    grey: npt.NDArray[np.uint8], spread: npt.NDArray[np.uint8], min_side: int, flat_range: int
) -> list[Box]:
    """frame_holes, where a pixel is flat when its 3 x 3 neighbourhood (`spread`: its range) is
    within `flat_range` grey levels."""
    height, width = grey.shape
    flat = (spread <= flat_range).astype(np.uint8)
    run = max(3, min_side // 2)  # a frame's side is at least this long a straight flat run
    across = np.asarray(
        cv2.morphologyEx(flat, cv2.MORPH_OPEN, np.ones((1, run), np.uint8)), np.uint8
    )
    # (Contours, not connected components: those took 7 ms on an empty 640 px mask here.)
    outlines, _ = cv2.findContours(across, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    bars = np.array([cv2.boundingRect(outline) for outline in outlines], np.int64).reshape(-1, 4)
    bars = bars[bars[:, 2] >= min_side][:_MAX_BARS]  # (left, top, width, height)
    tones = np.array([_tone(grey, across, bar) for bar in bars], np.float64)
    pairs = _pairs(bars, tones, min_side)
    if not len(pairs):
        return []
    down = np.asarray(cv2.morphologyEx(flat, cv2.MORPH_OPEN, np.ones((run, 1), np.uint8)), np.uint8)
    found: list[tuple[float, Box]] = []
    for upper, lower in pairs:
        left = int(max(bars[upper, 0], bars[lower, 0]))
        right = int(min(bars[upper, 0] + bars[upper, 2], bars[lower, 0] + bars[lower, 2]))
        box = (left, int(bars[upper, 1] + bars[upper, 3]), right, int(bars[lower, 1]))
        if not _sided(down, grey, box, tones[upper]):
            continue
        left, top, right, bottom = box = _inside_sides(flat, box)
        if min(right - left, bottom - top) < min_side:
            continue
        if (right - left) * (bottom - top) > MAX_PICTURE_SHARE * width * height:
            continue
        busy = 1.0 - float(flat[top:bottom, left:right].mean())
        if busy < BUSY_PICTURE:
            continue
        found.append((busy, box))
    found.sort(reverse=True)  # the most photographic first
    boxes = [box for _, box in found]
    inner = [box for box in boxes if not any(_holds(box, other) for other in boxes)]
    return inner[:MAX_FRAMED]


def _tone(
    grey: npt.NDArray[np.uint8], runs: npt.NDArray[np.uint8], bar: npt.NDArray[np.int64]
) -> float:
    """A bar's grey level: the mean of the pixels of its flat runs (`runs`) in its box."""
    left, top, wide, high = (int(v) for v in bar)
    rows, columns = slice(top, top + high), slice(left, left + wide)
    pixels = grey[rows, columns][runs[rows, columns] > 0]
    return float(pixels.mean()) if pixels.size else -1.0


def _pairs(
    bars: npt.NDArray[np.int64], tones: npt.NDArray[np.float64], min_side: int
) -> list[tuple[int, int]]:
    """Pairs of bars (indices) that could be a frame's top and bottom: as wide as each other
    (each end within _CORNER px), of one tone (a bubble's colour, not the background's below
    it), the second at least `min_side` px below the first."""
    left, top, wide, high = bars.T
    right, bottom = left + wide, top + high
    upper, lower = np.nonzero(
        (np.abs(left[:, None] - left[None, :]) <= _CORNER)
        & (np.abs(right[:, None] - right[None, :]) <= _CORNER)
        & (np.abs(tones[:, None] - tones[None, :]) <= _TONE)
        & (top[None, :] - bottom[:, None] >= min_side)
    )
    return list(zip(upper.tolist(), lower.tolist(), strict=True))


def _sided(down: npt.NDArray[np.uint8], grey: npt.NDArray[np.uint8], box: Box, tone: float) -> bool:
    """Whether straight flat runs (`down`) of the frame's tone flank the box on the left and on
    the right for most of its height (within 2 * _CORNER px of its sides: a rounded corner's
    bar ends short of the side)."""
    left, top, right, bottom = box
    inward = _CORNER // 2  # a bar may also reach a few pixels past the side's flat middle
    sides = (
        slice(max(0, left - 2 * _CORNER), left + inward),
        slice(max(0, right - inward), right + 2 * _CORNER),
    )
    for columns in sides:
        runs = down[top:bottom, columns] > 0
        framed = runs & (np.abs(grey[top:bottom, columns].astype(np.float64) - tone) <= _TONE)
        if not framed.size or float(framed.mean(axis=0).max()) < _SIDE:
            return False
    return True


def _inside_sides(flat: npt.NDArray[np.uint8], box: Box) -> Box:
    """The box less the frame's sides where a bar reached across them: within _CORNER columns
    of each side, up to the innermost column that is flat all down the box."""
    left, top, right, bottom = box
    plain = np.flatnonzero(flat[top:bottom, left:right].mean(axis=0) >= _SIDE)
    width = right - left
    on_left, on_right = plain[plain < _CORNER], plain[plain >= width - _CORNER]
    return (
        left + (int(on_left[-1]) + 1 if on_left.size else 0),
        top,
        left + (int(on_right[0]) if on_right.size else width),
        bottom,
    )


def _holds(outer: Box, inner: Box) -> bool:
    """Whether `inner` lies within `outer` and covers at least _INNER of it."""
    if inner == outer:
        return False
    within = (inner[0] >= outer[0] and inner[1] >= outer[1]
              and inner[2] <= outer[2] and inner[3] <= outer[3])  # fmt: skip
    outer_area = (outer[2] - outer[0]) * (outer[3] - outer[1])
    inner_area = (inner[2] - inner[0]) * (inner[3] - inner[1])
    return within and inner_area >= _INNER * outer_area
