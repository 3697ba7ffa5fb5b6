"""The turn of the clearest rectangle in a frame's seam maps: how far a picture pasted onto a
photo was turned (a phone editor's sticker tool turns it a few degrees by hand).

A picture pasted upright is found by its seams along the frame's axes (media.inset_pictures).
Turned by a few degrees, its edges cross the frame's rows and columns at a slant and no run of
seam follows them (adversarial pass a87 F1: turned 4-8 degrees at 20-40% of the side onto busy
photos, 97 of 120 went through). Its four edges still lie on two families of straight lines at
right angles, all at the picture's turn. So each seam pixel is projected along every turn tried
(a Hough transform, the two directions voting together): a long straight edge piles its pixels
into one place. The turn where both families hold two such edges a picture's side apart
is the frame's clearest turn; the inset search then runs once more on the frame turned back by
it, and cuts what it finds there upright (`upright_crop`).
"""

from __future__ import annotations

from typing import Final, NamedTuple

import cv2
import numpy as np
import numpy.typing as npt
from PIL import Image

# Turns tried, in degrees either way: from the smallest that the upright search misses (its
# runs bridge a drift of a pixel or two) to 45 (a turn of 50 is one of -40 with the sides
# swapped), every half degree (a search 2 degrees off the picture's turn found it in 21 of a87's
# 120 turned files, at the turn in 99). Up to 20 only, a88 got 282 of 342 pastes turned 22-45
# degrees onto busy photos through (in-process: 279 of 342 through, 159 to 45); it doubles the
# estimate's cost (5 to 11 ms).
_SMALLEST: Final = 1.5
_LARGEST: Final = 45.0
_STEP: Final = 0.5
DEGREES: Final = np.concatenate(
    [-np.arange(_LARGEST, _SMALLEST - 1e-6, -_STEP), np.arange(_SMALLEST, _LARGEST + 1e-6, _STEP)]
)
# The frame's own upright lines (a brick wall's courses, a crowd of square portraits, the tiles
# of a floor) are scored too: spread over a turn of a few degrees they still outscore a
# picture's edges at its true turn, which they hid in a third of a89's wrong turns. A turn up
# to _NEAR_UPRIGHT degrees that they score as well as is theirs (a89's turned pastes on busy
# photos: turns right in 183 of 363, 160 without).
_SCORED: Final = np.append(DEGREES, 0.0)
_NEAR_UPRIGHT: Final = 6.0
# Each turn's slope (1/1024 px across per px along, integer arithmetic: a third faster than
# floating point here), turned back.
_SLOPES: Final = np.rint(np.tan(np.radians(-_SCORED)) * 1024).astype(np.int32)
# A family's second edge holds at least this share of min_run in seam pixels (one per row it
# crosses): a picture's side is min_run or longer, and seamed over 0.45 or more of it.
_EDGE: Final = 0.45
# The turns searched, at most. A photo's own slanted lines (a road, a roof) may be clearer than
# the picture's edges: of a87's 120 turned files the picture's turn was the clearest in 108, one
# of the two clearest in 116. Searching two turns blocked 98 of them where one blocked 97, and
# took the search on innocent photos from 18 to 36 ms (median) and its boxes from 77 to 149 on
# 108 package photos.
TURNS: Final = 1
_APART: Final = 1.0  # degrees: a turn this near a clearer one is the same edges'
# Seam pixels projected per family, at most (evenly in reading order): a straight edge's still
# pile up.
_PIXELS: Final = 16_000


def clearest_turns(
    across: npt.NDArray[np.bool_], along: npt.NDArray[np.bool_], min_run: int
) -> list[float]:
    """The turns (degrees, counter-clockwise as PIL's `rotate`) at which the seam maps (`across`:
    seams between columns; `along`: between rows; the frame's own sides left out) hold two
    straight edges at least min_run apart in each direction, the strongest first, at most
    TURNS, each over a degree from a stronger one."""
    height, width = across.shape
    # A seam is two pixels wide (media.pasted_pictures.seams): its first pixel is enough.
    ys, xs = np.nonzero(across[1:-1, 2:-1] & ~across[1:-1, 1:-2])
    every = max(1, -(-len(xs) // _PIXELS))
    columns = _edges(xs[::every], ys[::every], width, min_run) * every
    ys, xs = np.nonzero(along[2:-1, 1:-1] & ~along[1:-2, 1:-1])
    every = max(1, -(-len(xs) // _PIXELS))
    rows = _edges(ys[::every], -xs[::every], height, min_run) * every
    score, upright = np.minimum(columns, rows)[:-1], min(columns[-1], rows[-1])
    turns: list[float] = []
    for best in np.argsort(-score, kind="stable"):
        if score[best] < _EDGE * min_run or len(turns) == TURNS:
            break
        if abs(DEGREES[best]) <= _NEAR_UPRIGHT and upright >= score[best]:
            continue
        if all(abs(DEGREES[best] - turn) > _APART for turn in turns):
            turns.append(float(DEGREES[best]))
    return turns


def _edges(
    across: npt.NDArray[np.int64], along: npt.NDArray[np.int64], span: int, min_run: int
) -> npt.NDArray[np.int64]:
    """Per turn scored (_SCORED), the seam pixels on the second strongest line of a family
    (pixels at `across` and `along` it; `across` under `span`), at least min_run from the
    strongest."""
    # How far a line's pixels move across as they are projected along it.
    longest = int(np.abs(along).max()) if len(along) else 0
    reach = int(np.ceil(longest * float(np.max(np.abs(_SLOPES))) / 1024)) + 1
    bins = span + 2 * reach
    start = (across.astype(np.int32) + reach) * 1024 + 512
    where = (start[None, :] + along.astype(np.int32)[None, :] * _SLOPES[:, None]) >> 10
    where += (np.arange(len(_SCORED), dtype=np.int32) * bins)[:, None]
    votes = np.bincount(where.ravel(), minlength=len(_SCORED) * bins).reshape(len(_SCORED), bins)
    strongest = np.argmax(votes, axis=1)
    offsets = np.arange(bins)[None, :] - strongest[:, None]
    second = np.where(np.abs(offsets) >= min_run, votes, 0)
    return np.asarray(second.max(axis=1), np.int64)


class Turned(NamedTuple):
    """A picture found on a frame turned back by `degrees`: its box there (left, top, right,
    bottom, at the scale it was found)."""

    degrees: float
    box: tuple[int, int, int, int]


def turned_size(degrees: float, size: tuple[int, int]) -> tuple[int, int]:
    """The size of the canvas that holds a frame of `size` turned by `degrees`."""
    cos, sin = abs(np.cos(np.radians(degrees))), abs(np.sin(np.radians(degrees)))
    width, height = size
    return int(height * sin + width * cos) + 1, int(height * cos + width * sin) + 1


def turn_back(degrees: float, size: tuple[int, int]) -> npt.NDArray[np.float64]:
    """The affine map (for cv2.warpAffine) turning a frame of `size` back by `degrees`
    (clockwise, for a picture turned counter-clockwise) about its centre, onto the canvas that
    holds it (turned_size)."""
    width, height = size
    turn = np.asarray(cv2.getRotationMatrix2D((width / 2, height / 2), -degrees, 1.0), np.float64)
    canvas = turned_size(degrees, size)
    turn[:, 2] += np.array([canvas[0] - width, canvas[1] - height]) / 2
    return turn


def upright_crop(source: Image.Image, turned: Turned, scale: float) -> Image.Image:
    """`turned`'s picture from `source` (`scale` times the frame it was found on), upright:
    only the box's own pixels are resampled."""
    left, top, right, bottom = (round(side * scale) for side in turned.box)
    turn = turn_back(turned.degrees, (source.width, source.height))
    turn[:, 2] -= np.array([left, top], np.float64)
    pixels = cv2.warpAffine(np.asarray(source.convert("RGB")), turn,
                            (max(1, right - left), max(1, bottom - top)),
                            flags=cv2.INTER_LINEAR)  # fmt: skip
    return Image.fromarray(np.asarray(pixels, np.uint8))
