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
proposed where runs meet at a corner (or both stop short of it: a rounded corner), as a box
from one corner and its two runs, from two corners on one side and the lines most seamed
opposite, or from two opposite corners; every proposal is then judged by the share of seam
along each of its sides and half sides, and by how far its sides run on past its corners. The
frame's own sides count as seams: a picture pasted into a corner of the photo has two of its
sides there. So does a thin line (a picture's thin white border, whose two edges lie too near
each other for either to be a seam; media.seam_maps). On a fine texture (gravel, grass, a
crowd) seams lie everywhere and runs bridged across their gaps carry on past a picture's
corners, so the runs' straight stretches propose boxes as well (a89 F3).

A picture turned a few degrees has no straight edge along the frame's axes (a87 F1: turned 4-8
degrees, 97 of 120 went through). Where no upright box matched, the frame's clearest turn
(media.turns) is taken, the frame turned back by it, and the search run again there; its boxes
are cut upright from the finer decode. Turned pastes are boxed about as often as upright ones
(54 and 52 of 72 at 30% of the side on six photos); the search misses where a photo's own
slanted lines are clearer than the picture's edges.

A photo's own rectangles (a window, a door, a screen, a picture on a wall) are boxes too; each
box costs a lookup (about 10 ms here), and is matched like any query, so a box over an innocent
photo's window can only find what the window shows. The search takes 13-17 ms a photo at
DETECT_SHORT here, and runs only where nothing else matched; the turn's estimate about 11 ms
and the turned search 15-20 ms more, only where no upright box matched either.

Why one module of this length: proposing boxes, judging them and ranking them share the runs,
the corners and their constants, and are read together; the seam maps and their tables
(media.seam_maps) and the turn (media.turns) are modules of their own already.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Final

import cv2
import numpy as np
import numpy.typing as npt
from PIL import Image

from schoolgate.media.content_grid import content_grid
from schoolgate.media.framed_pictures import DETECT_SHORT, FLAT_RANGE, Box, overlap
from schoolgate.media.photo_regions import drawn, photo_regions
from schoolgate.media.seam_maps import Lines, SeamTables, seam_maps, transposed, with_lines
from schoolgate.media.turns import Turned, clearest_turns, turn_back, turned_size, upright_crop

# Boxes looked up per query, best first (each about 10 ms). A banked picture pasted beside two
# others on a busy photo was boxed in 59 of 90 frames with two, 77 with three; on 81 innocent
# frames 42 boxes were looked up with two, 57 with three.
MAX_INSETS: Final = 3
# A side's seam pixels join into one run across gaps up to this (px at DETECT_SHORT): where the
# picture meets a background of its own colour its edge fades for a while.
_GAP: Final = 12
_NEAR: Final = 3  # px: a run ending this near another meets it (a corner)
# Boxes are proposed from the seams' runs, and from their stretches straight for this far (px)
# (a89's pastes on gravel 3 -> 13 of 39 blocked, grass 15 -> 23 of 57, crowd 4 -> 8 of 39).
_STRAIGHT: Final = 7
# On a frame whose pixels are this much seam at least (gravel 0.2, grass 0.15, a crowd 0.14,
# a cluttered workshop 0.11; package photos mostly 0.01-0.08): each search about 8 ms more.
_TEXTURED: Final = 0.1
# A side on the frame's own edge counts this much towards a box's rank (its own sides count
# their seam share): a box with four seamed sides outranks a photo's own in its corner (a89's
# upright pastes 76 -> 80 of 84).
_FRAME_SIDE: Final = 0.5
# A box with _PATTERN_OTHERS or more others of its size (within _SAME_SIZE of its side) apart
# from it, among the _PATTERN_CHECKED best, is a photo's own pattern: it ranks _PATTERN lower.
_PATTERN_OTHERS: Final = 4
_PLACE: Final = 8  # px: boxes whose corners fall in one cell of this side are in one place
_SAME_SIZE: Final = 0.04
_PATTERN_CHECKED: Final = 200
_PATTERN: Final = 0.5
# A rounded corner's runs stop short of it by up to 1/_ROUNDING of the shorter run, and a side
# is judged on its line less 1/_TRIM of the box's shorter side at each end as well (of 120
# pastes onto busy photos, with a corner radius of an eighth of the side 69 were boxed, 97 so;
# a fifth 21 and 89; square corners 99 and 102).
_ROUNDING: Final = 3
_TRIM: Final = 5
# A run is at least this share of the frame's short side: a picture of 6% of it or more (pastes
# at a tenth of the side, 72 px high in a 1080 px frame: at 8% 4 of 15 were boxed, at 6% 10 of
# 15, with 39 boxes on 108 package photos where there were 32).
_MIN_SIDE: Final = 0.06
_MIN_RUN: Final = 20  # px, whatever the frame's size
# A crop this small still matches (pastes at a tenth or an eighth of a 1080 px side, 72-130 px
# across: 30 of 30 cropped by hand matched).
_MIN_CROP: Final = 64
# The longest runs and the strongest corners of each kind kept (a lawn's or a brick wall's
# texture is all short seams: the work stays bounded).
_MAX_RUNS: Final = 150
_MAX_CORNERS: Final = 48
_MAX_PAIRS: Final = 64  # pairs of corners on one side, each looked across for the opposite
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
_INSIDE: Final = 0.98  # a turned box lies this much inside the frame (not on the canvas beyond)
# A larger picture is seen in the whole view near its banked scale, or sighted there and looked
# at closer (robust_tier); such boxes are a frame's or a meme's picture, the query itself.
MAX_INSET_SHARE: Final = 0.3  # of the frame's area
# A frame with this many photographic cells of 64 is mostly photo (a story's, a photo's), not an
# app's screen (the precision bench's chat screenshots: 1-28; stories over photos: 31-64, but
# 7-19 over a brick wall scaled up, which has no photo region apart from the frame instead).
_MOSTLY_PHOTO: Final = 32


type Corners = npt.NDArray[np.int64]  # rows: x, y, the far end of its row run, of its column run


def inset_pictures(
    image: Image.Image, finer: Callable[[], Image.Image] | None = None
) -> Iterator[Image.Image]:
    """The pictures pasted onto `image` (drawn boxes left out), cropped from `finer()` (the
    picture decoded finer) where given, at least _MIN_CROP px across there: the upright ones,
    the most clearly seamed first (at most MAX_INSETS), then those turned by the frame's
    clearest turn (at most MAX_INSETS more; looked for only once the upright ones are taken)."""
    source: Image.Image | None = None
    if finer is not None and min(image.size) < DETECT_SHORT:
        # A video's key frame is sampled at 512 px on its longer side, a story's at 288 x 512:
        # half a still's detection scale (a90 F3: 7 of 12 story clips with a turned picture
        # went through whose frames, sent as stills, were blocked). Searched on its finer frame.
        image = source = finer()
    search = _Search(image)
    for left, top, right, bottom in search.upright():
        source = source or (finer() if finer is not None else image)
        # The boxes are at detection scale (search.factor below the image's own).
        scale_x = search.factor * source.width / image.width
        scale_y = search.factor * source.height / image.height
        view = source.crop((round(left * scale_x), round(top * scale_y),
                            round(right * scale_x), round(bottom * scale_y)))  # fmt: skip
        if min(view.size) >= _MIN_CROP and not drawn(view):
            yield view
    for turned in search.turned():
        source = source or (finer() if finer is not None else image)
        view = upright_crop(source, turned, search.factor * source.width / image.width)
        if min(view.size) >= _MIN_CROP and not drawn(view):
            yield view


def searched_on_a_screen(luma: npt.NDArray[np.uint8]) -> bool:
    """Whether a screen-shaped frame (its working grey, media.features.working_grey) is
    searched for insets: an app's screen shows its pictures as photo regions among its
    interface (media.photo_regions), which the screen searches look at; a story over a photo
    is mostly photographic cells, or, over a smooth or fine photo that reads as drawn cells
    (a brick wall scaled up: 7-19 of 64), has no photo region apart from the frame."""
    return content_grid(luma).photo_cells >= _MOSTLY_PHOTO or not photo_regions(luma)


def inset_boxes(image: Image.Image) -> list[Box]:
    """Boxes (in `image`'s pixels) of busy rectangles with a straight seam on each side that
    meet at corners, at most MAX_INSET_SHARE of the frame, the most clearly seamed first, at
    most MAX_INSETS (none overlapping another by _OVERLAP)."""
    search = _Search(image)
    return [(round(x0 * search.factor), round(y0 * search.factor), round(x1 * search.factor),
             round(y1 * search.factor)) for x0, y0, x1, y1 in search.upright()]  # fmt: skip


def inset_turns(image: Image.Image) -> list[Turned]:
    """The turned insets of `image`: each one's turn (degrees, counter-clockwise as PIL's
    `rotate`) and its box on the frame turned back by it (at DETECT_SHORT)."""
    return list(_Search(image).turned())


class _Search:
    """One frame at detection scale, its seam maps, and the insets found on them."""

    def __init__(self, image: Image.Image) -> None:
        self.factor = max(1.0, min(image.size) / DETECT_SHORT)
        rgb = image.convert("RGB")
        if self.factor > 1:
            size = (max(1, round(image.width / self.factor)),
                    max(1, round(image.height / self.factor)))  # fmt: skip
            rgb = rgb.resize(size, Image.Resampling.BOX)
        self.pixels = np.asarray(rgb, np.uint8)
        height, width, _ = self.pixels.shape
        self.min_run = max(_MIN_RUN, round(_MIN_SIDE * min(height, width)))
        self.small = min(height, width) < 2 * self.min_run
        if not self.small:
            self.seams = seam_maps(self.pixels)
            self.textured = (self.seams[0].mean() + self.seams[1].mean()) / 2 >= _TEXTURED
            self.across, self.along = with_lines(self.pixels, self.seams)

    def upright(self) -> list[Box]:
        if self.small:
            return []
        height, width, _ = self.pixels.shape
        tables = SeamTables(self.across, self.along)
        proposed = _snapped(self._proposed(self.across, self.along, tables), width, height)
        return _kept(_judged(tables, self.pixels, proposed, self.min_run))

    def turned(self) -> Iterator[Turned]:
        """Boxes on the frame turned back by each of its clearest turns (turns.clearest_turns),
        wholly inside the frame: the next turn searched once the caller asks past the boxes
        of the one before."""
        if self.small:
            return
        # The turn is judged on the seams alone: a thin line of a photo's own (a wire, a blade
        # of grass) is no picture's edge (a87's turns: 106 of 120 right, with the lines 92).
        for degrees in clearest_turns(*self.seams, self.min_run):
            yield from self._turned_by(degrees)

    def _turned_by(self, degrees: float) -> list[Turned]:
        height, width, _ = self.pixels.shape
        turn, size = turn_back(degrees, (width, height)), turned_size(degrees, (width, height))
        # The seams found again on the frame turned back: the picture's edges lie along the
        # axes there, two pixels wide as upright (the maps turned instead wander a pixel either
        # way of the line, and a side's run breaks up).
        pixels = np.asarray(cv2.warpAffine(self.pixels, turn, size, flags=cv2.INTER_LINEAR),
                            np.uint8)  # fmt: skip
        # The seams alone: with the thin lines too, the turned search blocked 26 more of a88's
        # 858 turned pastes on busy photos, and took about 14 ms more on each innocent photo.
        across, along = seam_maps(pixels)
        frame = np.ones((height, width), np.uint8)
        inside = cv2.integral(cv2.warpAffine(frame, turn, size, flags=cv2.INTER_NEAREST))
        tables = SeamTables(across, along)
        proposed = self._proposed(across, along, tables)
        left, top, right, bottom = proposed.T
        filled = (inside[bottom, right] - inside[top, right] - inside[bottom, left]
                  + inside[top, left]) / np.maximum((right - left) * (bottom - top), 1)  # fmt: skip
        boxes = _kept(_judged(tables, pixels, proposed[filled >= _INSIDE], self.min_run))
        return [Turned(degrees, box) for box in boxes]

    def _proposed(self, across: npt.NDArray[np.bool_], along: npt.NDArray[np.bool_],
                  tables: SeamTables) -> Lines:  # fmt: skip
        columns = _runs(transposed(across).view(np.uint8), self.min_run)  # (x, top, bottom)
        rows = _runs(along.view(np.uint8), self.min_run)  # (y, left, right)
        proposed = _proposals(columns, rows, tables, self.min_run)
        # On a fine texture (gravel, grass, a crowd) seams lie everywhere, and bridging their
        # gaps carries a side's run on past the picture's corners: its straight stretches
        # alone propose boxes too.
        if not self.textured:
            return proposed
        columns = _runs(_straight(transposed(across)), self.min_run)
        rows = _runs(_straight(along), self.min_run)
        return _once(np.concatenate([proposed, _proposals(columns, rows, tables, self.min_run)]))


def _straight(lines: npt.NDArray[np.bool_]) -> npt.NDArray[np.uint8]:
    """The seam pixels of each row of `lines` that lie on a stretch _STRAIGHT long."""
    straight = np.ones((1, _STRAIGHT), np.uint8)
    return np.asarray(cv2.morphologyEx(lines.view(np.uint8), cv2.MORPH_OPEN, straight), np.uint8)


def _kept(ranked: list[list[int]]) -> list[Box]:
    """The best MAX_INSETS of `ranked`, none overlapping a better one by _OVERLAP."""
    kept: list[Box] = []
    for candidate in ranked:
        box = (candidate[0], candidate[1], candidate[2], candidate[3])
        if all(overlap(box, other) < _OVERLAP for other in kept):
            kept.append(box)
            if len(kept) == MAX_INSETS:
                break
    return kept


def _judged(tables: SeamTables, pixels: npt.NDArray[np.uint8], boxes: Lines, min_run: int
            ) -> list[list[int]]:  # fmt: skip
    """The boxes that pass as a picture's, best first: each side seamed (the frame's sides
    count), each half of each side, the sides not running on past the corners, busy inside,
    no larger than MAX_INSET_SHARE and not a band across the frame."""
    if not len(boxes):
        return []
    width, height = tables.width, tables.height
    left, top, right, bottom = boxes.T
    framed = np.stack([top == 0, bottom == height, left == 0, right == width])
    # Two of the frame's sides facing each other bound a band across it, not a picture.
    band = (framed[0] & framed[1]) | (framed[2] & framed[3])
    area = (right - left) * (bottom - top)
    lines, shares, trimmed = _side_lines(tables, boxes)
    # A picture's rounded corners leave its sides' ends unseamed: they are judged on the rest.
    seamed = np.where(framed, 1.0, np.maximum(shares, trimmed))
    # The cheap tests first, on every box; the halves and the run past the corners on the rest.
    possible = ((seamed.min(axis=0) >= _SIDE) & (seamed.mean(axis=0) >= _SEAMED)
                & (area <= MAX_INSET_SHARE * width * height) & ~band
                & (_busy_share(pixels, boxes) >= _BUSY))  # fmt: skip
    boxes, lines = boxes[possible], lines[:, possible]
    # Ranked halfway between the sides' shares whole and less their ends: whole alone, a
    # picture with rounded corners ranks under a photo's own boxes; less their ends alone, a
    # brick wall's bricks rank over a picture (a89's landscape video on brick).
    seamed = (seamed + shares)[:, possible] / 2  # (the frame's sides are ranked apart below)
    framed = framed[:, possible]
    halves, run_on = _halves_and_run_on(tables, boxes, lines, reach=min_run // 2)
    own_sides = np.maximum(4 - framed.sum(axis=0), 1)
    run_on = np.where(framed, 0.0, run_on).sum(axis=0) / own_sides
    passing = (np.where(framed, 1.0, halves).min(axis=0) >= _HALF) & (run_on <= _RUN_ON)
    # Ranked by how clearly its sides are seamed, less how far they run on; the frame's side is
    # no evidence either way (a photo's own box in its corner ranked over a picture's).
    rank = np.where(framed, _FRAME_SIDE, seamed).sum(axis=0) / 4 - run_on / 3
    boxes, rank = boxes[passing], rank[passing]
    order = np.argsort(-rank, kind="stable")[:_PATTERN_CHECKED]
    rank[order] -= _PATTERN * _repeated(boxes[order])
    ranked: list[list[int]] = boxes[np.argsort(-rank, kind="stable")].tolist()
    return ranked


def _repeated(boxes: Lines) -> npt.NDArray[np.bool_]:
    """Whether each box has _PATTERN_OTHERS or more others of its size (within _SAME_SIZE) apart
    from it: a photo's own pattern (floor tiles, bricks, a façade's windows), not a pasted
    picture (two or three pictures pasted at one size are not a pattern)."""
    left, top, right, bottom = boxes.T
    width, height = right - left, bottom - top
    tolerance = np.maximum(_SAME_SIZE * np.minimum(width, height), 3)
    same = ((np.abs(width[:, None] - width[None, :]) <= tolerance[:, None])
            & (np.abs(height[:, None] - height[None, :]) <= tolerance[:, None]))  # fmt: skip
    apart = ((np.minimum(right[:, None], right[None, :])
              <= np.maximum(left[:, None], left[None, :]))
             | (np.minimum(bottom[:, None], bottom[None, :])
                <= np.maximum(top[:, None], top[None, :])))  # fmt: skip
    # Others in distinct places: a box's near copies (a pixel this way or that) are one.
    places = (left // _PLACE) * 4096 + top // _PLACE
    others = [len(np.unique(places[row])) for row in same & apart]
    return np.asarray(others) >= _PATTERN_OTHERS


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


def _corners(columns: npt.NDArray[np.int64], rows: npt.NDArray[np.int64], tables: SeamTables,
             top: bool, left: bool, min_run: int) -> Corners:  # fmt: skip
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
    # Both runs end there, or stop short of it by up to half min_run each, or by up to a
    # third of the shorter run: a rounded corner (pairs: column x row). A corner's radius of
    # an eighth of the picture's short side leaves each side's straight edge three quarters of
    # it, a fifth three fifths.
    lengths = np.minimum((x_end - x_start)[:, None], (y_end - y_start)[None, :])
    rounding = np.maximum(min_run // 2, lengths // _ROUNDING)
    short_of_row = (column_end[:, None] - y[None, :]) * (1 if top else -1)
    short_of_column = (row_end[None, :] - x[:, None]) * (1 if left else -1)
    ends = ((short_of_row >= -_NEAR) & (short_of_row <= rounding)
            & (short_of_column >= -_NEAR) & (short_of_column <= rounding))  # fmt: skip
    rounded = np.nonzero(ends)
    column = np.concatenate([at_column[0], column_at, rounded[0]])
    row = np.concatenate([at_column[1], row_at, rounded[1]])
    # Where a rounded corner's arms begin: its runs' ends (the others' begin at the corner).
    starts = np.zeros((2, len(column)), np.int64)
    starts[:, len(column) - len(rounded[0]) :] = np.maximum(
        [short_of_row[rounded], short_of_column[rounded]], 0
    )
    _, once = np.unique(column * len(rows) + row, return_index=True)
    column, row, starts = column[once], row[once], starts[:, once]
    corner_x, corner_y = x[column], y[row]
    # A picture's corner: both its arms seamed for min_run into the box from where they begin,
    # neither running on past it (a busy photo's long edges cross by the hundred).
    down, right = (1 if top else -1), (1 if left else -1)
    reach = min_run // 2
    begin_y, begin_x = corner_y + down * starts[0], corner_x + right * starts[1]
    arms = np.minimum(
        tables.columns(corner_x, *np.sort([begin_y, begin_y + down * min_run], axis=0)),
        tables.rows(corner_y, *np.sort([begin_x, begin_x + right * min_run], axis=0)),
    )
    past = (
        tables.columns(corner_x, *np.sort([corner_y, corner_y - down * reach], axis=0))
        + tables.rows(corner_y, *np.sort([corner_x, corner_x - right * reach], axis=0))
    ) / 2
    strongest = np.argsort(past - arms, kind="stable")[:_MAX_CORNERS]
    column, row = column[strongest], row[strongest]
    return np.stack([x[column], y[row], row_far[row], column_far[column]], axis=1)


def _proposals(columns: npt.NDArray[np.int64], rows: npt.NDArray[np.int64], tables: SeamTables,
               min_run: int) -> npt.NDArray[np.int64]:  # fmt: skip
    """Boxes (left, top, right, bottom) proposed by the corners: one corner and its two runs,
    two corners on one side and either one's run across or the lines most seamed opposite,
    two opposite corners; each once."""
    kinds = ((True, True), (True, False), (False, True), (False, False))  # top?, left?
    tl, tr, bl, br = (_corners(columns, rows, tables, top, left, min_run) for top, left in kinds)
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
    return _once(proposed[(proposed[:, 2] - proposed[:, 0] >= min_run)
                          & (proposed[:, 3] - proposed[:, 1] >= min_run)])  # fmt: skip


def _once(boxes: Lines) -> Lines:
    """Each box once, in the order first proposed (coordinates are under 2^15 at DETECT_SHORT:
    one integer each)."""
    key = (boxes[:, 0] << 45) | (boxes[:, 1] << 30) | (boxes[:, 2] << 15) | boxes[:, 3]
    _, first = np.unique(key, return_index=True)
    return np.asarray(boxes[np.sort(first)], np.int64)


def _level(a: Corners, b: Corners, axis: int, tables: SeamTables, min_run: int
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


def _side_lines(tables: SeamTables, boxes: Lines
                ) -> tuple[Lines, npt.NDArray[np.float64], npt.NDArray[np.float64]]:  # fmt: skip
    """Each box's sides (4 x boxes: top, bottom, left, right): the line each lies on, the most
    seamed of its own and the lines either side of it (a seam lies a pixel either way of a
    picture's edge), that line's share of seam along the side, and along the side less
    1/_TRIM of the box's shorter side at each end (a rounded corner's)."""
    left, top, right, bottom = boxes.T
    trim = np.minimum(right - left, bottom - top) // _TRIM
    lines, shares, trimmed = [], [], []
    for start, (first, last), along_rows in (
        (top, (left, right), True), (bottom - 1, (left, right), True),
        (left, (top, bottom), False), (right - 1, (top, bottom), False),
    ):  # fmt: skip
        measure = tables.rows if along_rows else tables.columns
        tried = np.stack([measure(start + shift, first, last) for shift in (-1, 0, 1)])
        chosen = np.argmax(tried, axis=0)
        lines.append(start + chosen - 1)
        shares.append(np.take_along_axis(tried, chosen[None, :], axis=0)[0])
        trimmed.append(measure(lines[-1], first + trim, last - trim))
    return np.stack(lines), np.stack(shares), np.stack(trimmed)


def _halves_and_run_on(tables: SeamTables, boxes: Lines, lines: Lines, reach: int
                       ) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:  # fmt: skip
    """Per side (4 x boxes), on its line: the lesser share of seam of its two halves, and how
    far the line runs on past the box's corners (its share of seam within `reach` beyond each
    end, weighted by how far the frame leaves room)."""
    left, top, right, bottom = boxes.T
    width, height = tables.width, tables.height
    halves, run_on = [], []
    for n, (start, end, limit, measure) in enumerate((
        (left, right, width, tables.rows), (left, right, width, tables.rows),
        (top, bottom, height, tables.columns), (top, bottom, height, tables.columns),
    )):  # fmt: skip
        line, middle = lines[n], (start + end) // 2
        halves.append(np.minimum(measure(line, start, middle), measure(line, middle, end)))
        before, after = np.maximum(start - reach, 0), np.minimum(end + reach, limit)
        room = np.maximum(start - before + after - end, 1)
        run_on.append((measure(line, before, start) * (start - before)
                       + measure(line, end, after) * (after - end)) / room)  # fmt: skip
    return np.stack(halves), np.stack(run_on)


def _snapped(boxes: Lines, width: int, height: int) -> Lines:
    """Boxes whose side lies on the frame's own first or last line, on the frame's side."""
    left, top, right, bottom = boxes.T
    return np.stack([np.where(left <= 1, 0, left), np.where(top <= 1, 0, top),
                     np.where(right >= width - 2, width, right),
                     np.where(bottom >= height - 2, height, bottom)], axis=1)  # fmt: skip


def _busy_share(pixels: npt.NDArray[np.uint8], boxes: Lines) -> npt.NDArray[np.float64]:
    """The share of each box's pixels that are not in a flat area (their 3x3 range over
    FLAT_RANGE)."""
    grey = cv2.cvtColor(pixels, cv2.COLOR_RGB2GRAY)
    kernel = np.ones((3, 3), np.uint8)
    flat = cv2.subtract(cv2.dilate(grey, kernel), cv2.erode(grey, kernel)) <= FLAT_RANGE
    busy = np.asarray(cv2.integral((~flat).astype(np.uint8)), np.int64)
    left, top, right, bottom = boxes.T
    inside = busy[bottom, right] - busy[top, right] - busy[bottom, left] + busy[top, left]
    return np.asarray(inside / np.maximum((right - left) * (bottom - top), 1), np.float64)
