"""Pictures pasted onto a photo at a fraction of its size (an inset), found by their edges so
that they can be looked up at their own scale.

The robust tier looks at a query through its whole view at 512 px. A banked picture pasted at a
quarter of the side of another photo is 3-5 times smaller there than when it was banked, below
what ORB's pyramid spans: it draws a handful of votes, no sighting, and no closer look
(adversarial passes a85 and a86: pasted at 25-30% of the side onto busy photos, 21 of 24 went
through). Cropped from the finer decode and looked up on its own, the same picture matches: 100
of 100 such crops at 15-35% of the side, where the query itself matched 20.

What gives such a picture away is its edge: four straight seams (media.pasted_pictures: the
colour jumps across a line far more than beside it) that meet at its corners. A chat's picture
on a wallpaper is found by its sides, ranked by how long they run; on a photo the sides of a
small picture are short beside the photo's own edges, and broken where the picture meets a
background of its own colour. So here the seams are followed into runs, and a picture is
proposed where runs meet at a corner, as a box from one corner and its two runs, from two corners
on one side and a run, or from two opposite corners; every proposal is then judged by the share
of seam along each of its four sides. The frame's own sides count as seams: a picture pasted
into a corner of the photo has two of its sides there.

A photo's own rectangles (a window, a door, a screen, a picture on a wall) are boxes too; each
box costs a lookup (about 10 ms here), and is matched like any query, so a box over an innocent
photo's window can only find what the window shows. About 12 ms a photo at DETECT_SHORT, looked
for only where nothing else matched.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final, NamedTuple

import cv2
import numpy as np
import numpy.typing as npt
from PIL import Image

from schoolgate.media.framed_pictures import DETECT_SHORT, FLAT_RANGE, Box, Place
from schoolgate.media.pasted_pictures import seams
from schoolgate.media.photo_regions import MIN_REGION_SIDE, drawn

MAX_INSETS: Final = 2  # boxes looked up per query, best first
# A side's seam pixels join into one run across gaps up to this (px at DETECT_SHORT): where the
# picture meets a background of its own colour its edge fades for a while.
_GAP: Final = 12
_NEAR: Final = 3  # px: a run ending this near another meets it (a corner)
# A run is at least this share of the frame's short side: a picture of 8% of it or more.
_MIN_SIDE: Final = 0.08
_MIN_RUN: Final = 20  # px, whatever the frame's size
# The longest runs and the strongest corners of each kind kept (a lawn's or a brick wall's
# texture is all short seams: the work stays bounded).
_MAX_RUNS: Final = 200
_MAX_CORNERS: Final = 48
_MAX_PAIRS: Final = 64  # pairs of corners on one side, each looked across for the opposite
_OPPOSITES: Final = 4  # lines tried for the opposite side
# A box is a picture's where each side's seam share is at least _SIDE and their mean _SEAMED (as
# media.pasted_pictures measures them: a pasted picture's sides measured 0.44-1.0, mean 0.6-1.0).
_SIDE: Final = 0.45
_SEAMED: Final = 0.65
# Each half of each side at least this: a box whose top is a caption's edge on one half and the
# photo on the other is not a picture's.
_HALF: Final = 0.3
# A picture's sides stop at its corners: its own sides' lines seamed past them over this share
# of min_run / 2 each way, on average, are a longer line's (a band across the frame, a wall's
# joints), not a picture's edge.
_RUN_ON: Final = 0.5
# And where this share of its pixels is busy: a photo with a plain sky (the rocket) has 0.4.
_BUSY: Final = 0.25
_OVERLAP: Final = 0.3  # a box overlapping a better one this much (IoU) is the same picture
# A larger picture is seen in the whole view near its banked scale, or sighted there and looked
# at closer (robust_tier); such boxes are a frame's or a meme's picture, the query itself.
MAX_INSET_SHARE: Final = 0.3  # of the frame's area


type Corners = npt.NDArray[np.int64]  # rows: x, y, the far end of its row run, of its column run
type Lines = npt.NDArray[np.int64]


class _Seams:
    """The seam maps' running sums (summed-area tables): the share of seam pixels along any
    stretch of a row or column in constant time."""

    def __init__(self, across: npt.NDArray[np.bool_], along: npt.NDArray[np.bool_]) -> None:
        self.height, self.width = across.shape
        self.down = np.diff(cv2.integral(across.view(np.uint8)), axis=1)  # (h + 1) x w
        self.over = np.diff(cv2.integral(along.view(np.uint8)), axis=0)  # h x (w + 1)

    def columns(self, x: Lines, top: Lines, bottom: Lines) -> npt.NDArray[np.float64]:
        """The share of seam down column x between top and bottom (broadcast)."""
        x = np.clip(x, 0, self.width - 1)
        return np.asarray((self.down[bottom, x] - self.down[top, x]) / np.maximum(bottom - top, 1))

    def rows(self, y: Lines, left: Lines, right: Lines) -> npt.NDArray[np.float64]:
        """The share of seam along row y between left and right (broadcast)."""
        y = np.clip(y, 0, self.height - 1)
        return np.asarray((self.over[y, right] - self.over[y, left]) / np.maximum(right - left, 1))

    def opposite(self, start: Lines, end: Lines, at: Lines, after: bool, rows: bool,
                 min_run: int) -> list[Lines]:  # fmt: skip
        """For each side (from start to end, at row or column `at`), the _OPPOSITES lines most
        seamed over the same stretch, at least min_run past it (after it, or before), a few
        apart: the picture's opposite side, where no corner of it was found (the picture's own
        lines may be more seamed than its edge: a few are tried)."""
        count = self.height if rows else self.width
        lines = np.arange(count)[:, None]
        if rows:
            shares = self.rows(lines, start[None, :], end[None, :])
        else:
            shares = self.columns(lines, start[None, :], end[None, :])
        far = lines >= at[None, :] + min_run if after else lines <= at[None, :] - min_run
        shares = np.where(far, shares, -1.0)
        # A line index is the side's own line: past it for an end (bottom, right).
        shift = 1 if after else 0
        found = []
        for _ in range(_OPPOSITES):
            best = np.argmax(shares, axis=0)
            found.append(best + shift)
            shares[np.abs(lines - best[None, :]) <= _NEAR] = -1.0
        return found


def inset_pictures(
    image: Image.Image, finer: Callable[[], Image.Image] | None = None
) -> list[tuple[Place, Image.Image]]:
    """The pictures pasted onto `image` (drawn boxes left out), each with where it is (shares
    of the frame), cropped from `finer()` (the picture decoded finer) where given, at least
    MIN_REGION_SIDE px across there; the most clearly seamed first, at most MAX_INSETS."""
    boxes = inset_boxes(image)
    if not boxes:
        return []
    source = finer() if finer is not None else image
    scale_x, scale_y = source.width / image.width, source.height / image.height
    found = []
    for left, top, right, bottom in boxes:
        place = (left / image.width, top / image.height, right / image.width, bottom / image.height)
        view = source.crop((round(left * scale_x), round(top * scale_y),
                            round(right * scale_x), round(bottom * scale_y)))  # fmt: skip
        if min(view.size) >= MIN_REGION_SIDE and not drawn(view):
            found.append((place, view))
    return found


def inset_boxes(image: Image.Image) -> list[Box]:
    """Boxes (in `image`'s pixels) of busy rectangles with a straight seam on each side that
    meet at corners, at most MAX_INSET_SHARE of the frame, the most clearly seamed first, at
    most MAX_INSETS (none overlapping another by _OVERLAP)."""
    factor = max(1.0, min(image.size) / DETECT_SHORT)
    rgb = image.convert("RGB")
    if factor > 1:
        size = (max(1, round(image.width / factor)), max(1, round(image.height / factor)))
        rgb = rgb.resize(size, Image.Resampling.BOX)
    pixels = np.asarray(rgb, np.uint8)
    height, width, _ = pixels.shape
    min_run = max(_MIN_RUN, round(_MIN_SIDE * min(height, width)))
    if min(height, width) < 2 * min_run:
        return []
    planes = [np.asarray(plane, np.uint8) for plane in cv2.split(pixels)]
    across = seams(planes)  # between columns: a picture's left and right sides
    turned = [np.asarray(cv2.transpose(plane), np.uint8) for plane in planes]
    along = _transposed(seams(turned))  # between rows
    across[:, 0] = across[:, width - 1] = True  # the frame's own sides
    along[0, :] = along[height - 1, :] = True
    columns = _runs(_transposed(across).view(np.uint8), min_run)  # (x, top, bottom)
    rows = _runs(along.view(np.uint8), min_run)  # (y, left, right)
    tables = _Seams(across, along)
    proposed = _proposals(columns, rows, tables, min_run)
    if not len(proposed):
        return []
    # A side on the frame's own first or last line is the frame's side.
    left = np.where(proposed[:, 0] <= 1, 0, proposed[:, 0])
    top = np.where(proposed[:, 1] <= 1, 0, proposed[:, 1])
    right = np.where(proposed[:, 2] >= width - 2, width, proposed[:, 2])
    bottom = np.where(proposed[:, 3] >= height - 2, height, proposed[:, 3])
    sides = _sides(tables, left, top, right, bottom, reach=min_run // 2)
    grey = cv2.cvtColor(pixels, cv2.COLOR_RGB2GRAY)
    kernel = np.ones((3, 3), np.uint8)
    flat = cv2.subtract(cv2.dilate(grey, kernel), cv2.erode(grey, kernel)) <= FLAT_RANGE
    busy = np.asarray(cv2.integral((~flat).astype(np.uint8)), np.int64)
    area = (right - left) * (bottom - top)
    textured = (busy[bottom, right] - busy[top, right] - busy[bottom, left]
                + busy[top, left]) / np.maximum(area, 1)  # fmt: skip
    framed = np.stack([top == 0, bottom == height, left == 0, right == width])
    shares = np.where(framed, 1.0, sides.shares)
    halves = np.where(framed, 1.0, sides.halves)
    own_sides = np.maximum(4 - framed.sum(axis=0), 1)
    run_on = np.where(framed, 0.0, sides.run_on).sum(axis=0) / own_sides
    # Two of the frame's sides facing each other bound a band across it, not a picture.
    band = (framed[0] & framed[1]) | (framed[2] & framed[3])
    passing = ((shares.min(axis=0) >= _SIDE) & (shares.mean(axis=0) >= _SEAMED)
               & (halves.min(axis=0) >= _HALF) & (run_on <= _RUN_ON)
               & (textured >= _BUSY) & (area <= MAX_INSET_SHARE * width * height)
               & ~band)  # fmt: skip
    # Ranked by how clearly its own sides are seamed, not the frame's, less how far they run on.
    own = np.where(framed, 0.0, shares).sum(axis=0) / own_sides
    rank = own - run_on / 3
    boxes = np.stack([left, top, right, bottom], axis=1)[passing]
    ranked = boxes[np.argsort(-rank[passing], kind="stable")]
    kept: list[Box] = []
    for candidate in ranked.tolist():
        box = (candidate[0], candidate[1], candidate[2], candidate[3])
        if all(_overlap(box, other) < _OVERLAP for other in kept):
            kept.append(box)
            if len(kept) == MAX_INSETS:
                break
    return [(round(x0 * factor), round(y0 * factor), round(x1 * factor), round(y1 * factor))
            for x0, y0, x1, y1 in kept]  # fmt: skip


def _runs(lines: npt.NDArray[np.uint8], min_run: int) -> npt.NDArray[np.int64]:
    """The runs of seam pixels along each row of `lines` (gaps up to _GAP bridged) at least
    `min_run` long, the longest _MAX_RUNS: rows (line, start, end)."""
    closed = cv2.morphologyEx(lines, cv2.MORPH_CLOSE, np.ones((1, _GAP + 1), np.uint8))
    count, length = closed.shape
    padded = np.zeros((count, length + 2), np.int8)  # a clear pixel at each end of each line
    padded[:, 1:-1] = closed
    # Line by line, a run's start (+1) and end (-1, exclusive) come in turn: one pass finds both.
    changes = np.flatnonzero(np.diff(padded, axis=1))
    line, start = np.divmod(changes[0::2], length + 1)
    end = changes[1::2] % (length + 1)
    long = end - start >= min_run
    runs = np.stack([line[long], start[long], end[long]], axis=1).astype(np.int64)
    return runs[np.argsort(runs[:, 1] - runs[:, 2], kind="stable")[:_MAX_RUNS]]


def _corners(columns: npt.NDArray[np.int64], rows: npt.NDArray[np.int64], top: bool, left: bool,
             min_run: int) -> Corners:  # fmt: skip
    """The corners of one kind (a top or bottom, left or right one), the _MAX_CORNERS whose
    shorter run is longest: where a column's run ends on a row's run that goes on the box's way
    from there, or a row's run ends so on a column's (a side's run may stop short of the corner
    where the picture's edge fades, and a side may run on past it into the photo's own edge)."""
    x, x_start, x_end = columns[:, 0], columns[:, 1], columns[:, 2]  # a column, its rows
    y, y_start, y_end = rows[:, 0], rows[:, 1], rows[:, 2]  # a row, its columns
    half = min_run // 2
    column_end, column_far = (x_start, x_end) if top else (x_end, x_start)
    row_end, row_far = (y_start, y_end) if left else (y_end, y_start)
    # A column's end on a row's run that goes on from it (pairs: column x row).
    meets = np.abs(column_end[:, None] - y[None, :]) <= _NEAR
    if left:
        meets &= (x[:, None] >= y_start[None, :] - _NEAR) & (x[:, None] <= y_end[None, :] - half)
    else:
        meets &= (x[:, None] <= y_end[None, :] + _NEAR) & (x[:, None] >= y_start[None, :] + half)
    at_column = np.nonzero(meets)
    # A row's end on a column's run that goes on from it (pairs: row x column).
    meets = np.abs(row_end[:, None] - x[None, :]) <= _NEAR
    if top:
        meets &= (y[:, None] >= x_start[None, :] - _NEAR) & (y[:, None] <= x_end[None, :] - half)
    else:
        meets &= (y[:, None] <= x_end[None, :] + _NEAR) & (y[:, None] >= x_start[None, :] + half)
    row_at, column_at = np.nonzero(meets)
    column = np.concatenate([at_column[0], column_at])
    row = np.concatenate([at_column[1], row_at])
    _, once = np.unique(column * len(rows) + row, return_index=True)
    column, row = column[once], row[once]
    # Where both runs end there, it is a corner (an L); where one crosses on, a T, which a
    # busy photo's long edges make by the hundred: the Ls first, each kind longest first.
    ends = ((np.abs(row_end[row] - x[column]) <= _NEAR)
            & (np.abs(column_end[column] - y[row]) <= _NEAR))  # fmt: skip
    shorter = np.minimum(x_end[column] - x_start[column], y_end[row] - y_start[row])
    strongest = np.lexsort((-shorter, ~ends))[:_MAX_CORNERS]
    column, row = column[strongest], row[strongest]
    return np.stack([x[column], y[row], row_far[row], column_far[column]], axis=1)


def _proposals(columns: npt.NDArray[np.int64], rows: npt.NDArray[np.int64], tables: _Seams,
               min_run: int) -> npt.NDArray[np.int64]:  # fmt: skip
    """Boxes (left, top, right, bottom) proposed by the corners: one corner and its two runs,
    two corners on one side and either one's run across or the lines most seamed opposite,
    two opposite corners; each once."""
    kinds = ((True, True), (True, False), (False, True), (False, False))  # top?, left?
    tl, tr, bl, br = (_corners(columns, rows, top, left, min_run) for top, left in kinds)
    X, Y, FAR_X, FAR_Y = range(4)
    boxes = [
        np.stack([tl[:, X], tl[:, Y], tl[:, FAR_X], tl[:, FAR_Y]], axis=1),
        np.stack([tr[:, FAR_X], tr[:, Y], tr[:, X], tr[:, FAR_Y]], axis=1),
        np.stack([bl[:, X], bl[:, FAR_Y], bl[:, FAR_X], bl[:, Y]], axis=1),
        np.stack([br[:, FAR_X], br[:, FAR_Y], br[:, X], br[:, Y]], axis=1),
    ]

    def pairs(first: Corners, second: Corners) -> tuple[Corners, Corners]:
        a, b = np.broadcast_arrays(first[:, None, :], second[None, :, :])
        return a.reshape(-1, 4), b.reshape(-1, 4)

    a, b = pairs(tl, br)
    boxes.append(np.stack([a[:, X], a[:, Y], b[:, X], b[:, Y]], axis=1))
    a, b = pairs(tr, bl)
    boxes.append(np.stack([b[:, X], a[:, Y], a[:, X], b[:, Y]], axis=1))
    a, b = _level(tl, tr, Y, tables, min_run)  # the top side
    opposite = tables.opposite(a[:, X], b[:, X], a[:, Y], after=True, rows=True, min_run=min_run)
    boxes += [np.stack([a[:, X], a[:, Y], b[:, X], far], axis=1)
              for far in (a[:, FAR_Y], b[:, FAR_Y], *opposite)]  # fmt: skip
    a, b = _level(bl, br, Y, tables, min_run)  # the bottom side
    opposite = tables.opposite(a[:, X], b[:, X], a[:, Y], after=False, rows=True, min_run=min_run)
    boxes += [np.stack([a[:, X], far, b[:, X], a[:, Y]], axis=1)
              for far in (a[:, FAR_Y], b[:, FAR_Y], *opposite)]  # fmt: skip
    a, b = _level(tl, bl, X, tables, min_run)  # the left side
    opposite = tables.opposite(a[:, Y], b[:, Y], a[:, X], after=True, rows=False, min_run=min_run)
    boxes += [np.stack([a[:, X], a[:, Y], far, b[:, Y]], axis=1)
              for far in (a[:, FAR_X], b[:, FAR_X], *opposite)]  # fmt: skip
    a, b = _level(tr, br, X, tables, min_run)  # the right side
    opposite = tables.opposite(a[:, Y], b[:, Y], a[:, X], after=False, rows=False, min_run=min_run)
    boxes += [np.stack([far, a[:, Y], a[:, X], b[:, Y]], axis=1)
              for far in (a[:, FAR_X], b[:, FAR_X], *opposite)]  # fmt: skip
    proposed = np.concatenate(boxes).astype(np.int64)
    proposed = proposed[(proposed[:, 2] - proposed[:, 0] >= min_run)
                        & (proposed[:, 3] - proposed[:, 1] >= min_run)]  # fmt: skip
    # Each box once (coordinates are under 2^15 at DETECT_SHORT: one integer each).
    key = ((proposed[:, 0] << 45) | (proposed[:, 1] << 30) | (proposed[:, 2] << 15)
           | proposed[:, 3])  # fmt: skip
    _, first = np.unique(key, return_index=True)
    return np.asarray(proposed[np.sort(first)], np.int64)


def _level(a: Corners, b: Corners, axis: int, tables: _Seams, min_run: int
           ) -> tuple[Corners, Corners]:  # fmt: skip
    """The pairs of corners on one line (the same row or column, give or take 2 * _NEAR) at
    least min_run apart, the _MAX_PAIRS whose line between them is the most seamed."""
    level = np.abs(a[:, axis][:, None] - b[:, axis][None, :]) <= 2 * _NEAR
    level &= b[:, 1 - axis][None, :] - a[:, 1 - axis][:, None] >= min_run
    first, second = np.nonzero(level)
    a, b = a[first], b[second]
    line = (a[:, axis] + b[:, axis]) // 2
    if axis == 1:  # a row: the top or the bottom side
        seamed = tables.rows(line, a[:, 0], b[:, 0])
    else:
        seamed = tables.columns(line, a[:, 1], b[:, 1])
    best = np.argsort(-seamed, kind="stable")[:_MAX_PAIRS]
    return a[best], b[best]


class _Sides(NamedTuple):
    """Per box (4 x boxes: top, bottom, left, right): each side's share of seam pixels, its
    halves' lesser share, and how far its line runs on past the box's corners (the share of
    seam within `reach` of each end, the frame's sides none)."""

    shares: npt.NDArray[np.float64]
    halves: npt.NDArray[np.float64]
    run_on: npt.NDArray[np.float64]


def _sides(tables: _Seams, left: Lines, top: Lines, right: Lines, bottom: Lines, reach: int
           ) -> _Sides:  # fmt: skip
    """Each box's sides, each measured along the best of its line and the lines either side of
    it (a seam lies a pixel either way of a picture's edge)."""
    width, height = tables.width, tables.height
    across_middle, down_middle = (left + right) // 2, (top + bottom) // 2
    before_left, after_right = np.maximum(left - reach, 0), np.minimum(right + reach, width)
    above_top, below_bottom = np.maximum(top - reach, 0), np.minimum(bottom + reach, height)

    def row(y: Lines) -> tuple[npt.NDArray[np.float64], ...]:
        run_on = (tables.rows(y, before_left, left) * (left - before_left)
                  + tables.rows(y, right, after_right) * (after_right - right)
                  ) / np.maximum(left - before_left + after_right - right, 1)  # fmt: skip
        return (tables.rows(y, left, right), np.minimum(tables.rows(y, left, across_middle),
                tables.rows(y, across_middle, right)), run_on)  # fmt: skip

    def column(x: Lines) -> tuple[npt.NDArray[np.float64], ...]:
        run_on = (tables.columns(x, above_top, top) * (top - above_top)
                  + tables.columns(x, bottom, below_bottom) * (below_bottom - bottom)
                  ) / np.maximum(top - above_top + below_bottom - bottom, 1)  # fmt: skip
        return (tables.columns(x, top, bottom), np.minimum(tables.columns(x, top, down_middle),
                tables.columns(x, down_middle, bottom)), run_on)  # fmt: skip

    def best(measure: Callable[[Lines], tuple[npt.NDArray[np.float64], ...]], line: Lines
             ) -> tuple[npt.NDArray[np.float64], ...]:  # fmt: skip
        measured = [np.stack(measure(line + shift)) for shift in (-1, 0, 1)]  # 3 x 3 x boxes
        stacked = np.stack(measured)
        chosen = np.argmax(stacked[:, 0], axis=0)  # the line where the side is most seamed
        picked = np.take_along_axis(stacked, chosen[None, None, :], axis=0)[0]
        return picked[0], picked[1], picked[2]

    measured = [best(row, top), best(row, bottom - 1), best(column, left), best(column, right - 1)]
    return _Sides(*(np.stack([side[n] for side in measured]) for n in range(3)))


def _transposed(mask: npt.NDArray[np.bool_]) -> npt.NDArray[np.bool_]:
    return np.asarray(cv2.transpose(mask.view(np.uint8)), np.uint8).view(np.bool_)


def _overlap(a: Box, b: Box) -> float:
    """Intersection over union of two boxes."""
    across = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    down = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    shared = across * down
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - shared
    return shared / union if union else 0.0
