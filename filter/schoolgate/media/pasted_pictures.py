"""Pictures pasted straight onto a busy background: a chat's picture over a photo wallpaper with
no bubble around it (adversarial pass a65: four of five such chats were banked whole, and the
same phone's other chats matched them on the wallpaper).

With no plain frame to find (media.framed_pictures), what sets such a picture apart is its
edge: four straight seams, where the colour jumps across a line far more than it changes just
beside it on either side. A photo's own edges (an object's outline, a horizon) are rarely
straight, axis-aligned and closed on four sides; text bubbles are, but hold plain areas, and
drawn boxes hold no photo (the caller's checks). A picture whose edge is the colour of the
wallpaper behind it (a black-bordered photo over a night sky) shows no seam there and is not
found; one half side of the eight may fade so.

A patterned wallpaper is all straight lines: a brick wall's joints and courses, a tile grid, a
facade's windows. Candidate sides are ranked by their longest seamed run, tops and bottoms by
how clearly they stop at the sides (a brick course runs on past a picture), so the wallpaper's
short or endless lines do not take the picture's places (a66 F1). A picture pasted against the
screen's side has the screen's side for its own, where its top and bottom run to it and stop
at its other side; one filling the screen's width is not found (nothing sets its sides apart
from a band of the wallpaper between two of its lines).

Looked for at about a phone screen's width (framed_pictures.DETECT_SHORT), with framed pictures'
measures of a picture (mostly busy, at most MAX_PICTURE_SHARE of the frame): at banking where no
frame is found, and in a query screen textured around its photo regions (robust_tier): 26 ms
a 540 x 1170 chat screen of the precision bench here (39 before the pairs of columns were judged
at once and the running sums taken from summed-area tables), the work bounded whatever the
screen holds.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Final

import cv2
import numpy as np
import numpy.typing as npt
from PIL import Image

from schoolgate.media.framed_pictures import (
    BUSY_PICTURE,
    DETECT_LONG,
    DETECT_SHORT,
    FLAT_RANGE,
    MAX_FRAMED,
    MAX_PICTURE_SHARE,
    Box,
    Place,
)
from schoolgate.media.photo_regions import drawn

# A seam: the largest colour channel's jump across a line (from the pixel before to the pixel
# after it, so a seam blurred over one pixel by a reduction counts) is at least this, and more
# than _SEAM_RATIO times each step beside it (two pixels either side).
_SEAM_JUMP: Final = 24
_SEAM_RATIO: Final = 2
# A side counts where this share of its pixels are seam pixels, in each half of it, and a box
# where all four do and their mean is _SEAMED: over a fine texture (grass) a true seam's pixels
# are found at 50-90%, and a picture's edge fades where it meets a wallpaper of its own colour.
_SIDE: Final = 0.45
_SEAMED: Final = 0.65
# And where each half of each side is seen all along but for gaps of at most _GAP px, over
# _SEEN of it: a true side's misses are scattered (a65's, and pictures pasted on grass: 0.77
# to 1.0), where sides put together from the edges of text bubbles, or of a picture and the
# header above it, leave long stretches with none (0.1 to 0.65). (Over gravel, the texture's
# own seam pixels leave no long gap: the half's share of seam pixels tells it apart there.)
_GAP: Final = 12
_SEEN: Final = 0.75
# A picture's edge fades where it meets a wallpaper of its own colour: one half side may, where
# the other seven are seamed and seen this clearly (share, seen). Measured on 213 photo x
# wallpaper screens: 117 -> 124 found, wrong boxes 7 both; at (0.65, 0.85) 130 but 14 wrong.
_CLEAR: Final = (0.8, 0.95)
# A picture pasted against the screen's side: its top and bottom stop at its other side, seamed
# on no more than this share of the next min_side px past it.
_STOPPED: Final = 0.3
# A chat's picture is at least a quarter of its screen's width (a brick wallpaper's bricks
# have straight edges all round too).
_MIN_WIDTH: Final = 0.25
_LINE: Final = 0.6  # a column is a side's candidate where a min_side window of it is this seamed
_CANDIDATES: Final = 24  # columns, and rows between two of them, looked at (best first)
_APART: Final = 3  # px: candidates nearer than this to a better one are the same line
_VERIFIED: Final = 64  # boxes checked side by side, at most, best-seamed first


def pasted_pictures(
    image: Image.Image, min_side: int, finer: Callable[[], Image.Image] | None = None
) -> list[tuple[Place, Image.Image]]:
    """The pasted photos of `image` (drawn boxes left out), each with where it is (shares of
    the frame), at least `min_side` px across, looked for and cropped in `finer()` (the picture
    decoded finer) where `image` is under DETECT_SHORT on its short side (a JPEG screen decoded
    reduced); the most clearly seamed first, at most MAX_FRAMED."""
    source = finer() if finer is not None and min(image.size) < DETECT_SHORT else image
    found = []
    # (Each box costs a content grid to tell a photo from a drawn box: the best few only.)
    for left, top, right, bottom in seamed_boxes(source, min_side)[: 2 * MAX_FRAMED]:
        place = (left / source.width, top / source.height,
                 right / source.width, bottom / source.height)  # fmt: skip
        view = source.crop((left, top, right, bottom))
        if min(view.size) >= min_side and not drawn(view):
            found.append((place, view))
            if len(found) == MAX_FRAMED:
                break
    return found


def seamed_boxes(image: Image.Image, min_side: int) -> list[Box]:
    """Boxes (in `image`'s pixels) of busy rectangles with a straight seam on each side, at
    least `min_side` px on each side and at most MAX_PICTURE_SHARE of the image, the most clearly
    seamed first."""
    factor = max(1, min(image.size) // DETECT_SHORT, -(-max(image.size) // DETECT_LONG))
    rgb = np.asarray(image.convert("RGB").reduce(factor), np.uint8)
    height, width, _ = rgb.shape
    side = max(8, round(min_side / factor))
    if min(height, width) < side + 8:
        return []
    planes = [np.asarray(plane, np.uint8) for plane in cv2.split(rgb)]
    across = seams(planes)  # seams between columns (a picture's left and right sides)
    along = seams([np.asarray(cv2.transpose(plane), np.uint8) for plane in planes]).T
    # Running sums down each column (`down`) and along each row (`over`), in 32 bits, as the
    # differences of a summed-area table's neighbouring columns and rows: numpy's running sum
    # down the columns took 4 ms of a 540 x 1170 screen, the table under 1.
    down = np.diff(cv2.integral(across.view(np.uint8)), axis=1)
    over = np.diff(cv2.integral(np.ascontiguousarray(along).view(np.uint8)), axis=0)
    grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    kernel = np.ones((3, 3), np.uint8)
    flat = cv2.subtract(cv2.dilate(grey, kernel), cv2.erode(grey, kernel)) <= FLAT_RANGE
    # Busy pixels counted per box in constant time (a summed-area table).
    busy = np.asarray(cv2.integral((~flat).astype(np.uint8)), np.int32)
    windows = (down[side:] - down[:-side]) / side
    # The longest seamed first: a brick wallpaper's short joints are seamed all along a
    # min_side window too, and took every place of a picture's sides (387 columns passed).
    score = windows.max(axis=0)
    seamed = np.flatnonzero(score >= _LINE)
    runs = np.zeros(width)
    runs[seamed] = _longest_runs(across[:, seamed])
    columns = sorted(_peaks(score, _LINE, runs))
    # Each box's sides and texture from the sums first, for every top and bottom of a pair of
    # columns at once; the costly check, each half of each side seen all along, only for the
    # best-seamed boxes that pass them (an app's plain interface is all straight edges: box
    # by box, one screen took 3 s).
    # Boxes seamed all round, and boxes against the screen's side, each best first: the second
    # are looked at after the first (over a drawn facade, the wallpaper between the screen's
    # side and the picture's, and two of its lines that stop at the picture, is boxed so too).
    # The screen's own sides too (0 and width): a picture pasted touching one has no seam there.
    lines = [0, *columns, width]
    scored = _scored_boxes(lines, side, (width, height), down, over, busy)
    found: list[Box] = []
    for candidates in scored:
        candidates.sort(key=lambda candidate: -candidate[0])
        found += _verified([box for _, box in candidates[:_VERIFIED]], along, across, factor)
    return found


type _Scored = tuple[list[tuple[float, Box]], list[tuple[float, Box]]]


def _scored_boxes(lines: list[int], side: int, size: tuple[int, int],
                  down: npt.NDArray[np.int32], over: npt.NDArray[np.int32],
                  busy: npt.NDArray[np.int32]) -> _Scored:  # fmt: skip
    """The boxes between two of the candidate columns `lines` (and the candidate rows between
    them) that pass the sums' tests, each with its rank: those seamed all round, and those
    against the screen's side. Every pair of columns at once (one at a time, a chat screen's
    few hundred pairs took 40-55 ms of small array operations); each pair's rows still come
    from its own seams."""
    width, height = size
    scored: _Scored = ([], [])
    pairs = [(left, right) for n, left in enumerate(lines) for right in lines[n + 1 :]
             if right - left >= max(side, _MIN_WIDTH * width)
             and (left, right) != (0, width)]  # fmt: skip
    if not pairs:
        return scored
    lefts, rights = (np.array(ends, np.int64) for ends in zip(*pairs, strict=True))
    rows_seamed = ((over[:, rights] - over[:, lefts]) / (rights - lefts)).T  # pair x row
    # Those that stop at the columns first: a picture's top and bottom, where a wallpaper's
    # lines (brick courses) run on past it and took their places.
    before, after = np.minimum(side, lefts), np.minimum(side, width - rights)
    run_on = over[:, lefts] - over[:, lefts - before] + over[:, rights + after] - over[:, rights]
    outside = (run_on / np.maximum(before + after, 1)).T
    stops = rows_seamed - outside
    found = [sorted(_peaks(seamed, _SIDE, stop))
             for seamed, stop in zip(rows_seamed, stops, strict=True)]  # fmt: skip
    most = max(map(len, found))
    if not most:
        return scored
    rows = np.zeros((len(pairs), most), np.int64)
    listed = np.zeros((len(pairs), most), bool)
    for number, peaks in enumerate(found):
        rows[number, : len(peaks)] = peaks
        listed[number, : len(peaks)] = True
    pair = np.arange(len(pairs))[:, None, None]
    tops, bottoms = np.broadcast_arrays(rows[:, :, None], rows[:, None, :])  # pair x top x bottom
    left, right = lefts[:, None, None], rights[:, None, None]
    high = np.maximum(bottoms - tops, 1)
    sides = np.stack([
        rows_seamed[pair, tops], rows_seamed[pair, bottoms],
        _side_share(down, left, tops, bottoms), _side_share(down, right, tops, bottoms),
    ])  # fmt: skip
    area = (right - left) * high
    textured = (busy[bottoms, right] - busy[tops, right] - busy[bottoms, left]
                + busy[tops, left]) / area  # fmt: skip
    passing = ((bottoms - tops >= side) & (sides.min(axis=0) >= _SIDE)
               & (sides.mean(axis=0) >= _SEAMED) & (textured >= BUSY_PICTURE)
               & (area <= MAX_PICTURE_SHARE * width * height)
               & listed[:, :, None] & listed[:, None, :])  # fmt: skip
    # Ranked by how clearly its own sides are seamed (not the screen's), less how far its top
    # and bottom run on past its sides, and its sides past its top and bottom (a picture's
    # corners end its edges; a wallpaper's lines that stop at a picture, and the picture's
    # side between them, box a piece of wallpaper).
    edges = (left == 0).astype(np.int64) + (right == width)
    seamed_mean = (sides.sum(axis=0) - edges) / (4 - edges)
    sides_on = (_runs_on(down, left, tops, bottoms, side)
                + _runs_on(down, right, tops, bottoms, side)) / (2 - edges)  # fmt: skip
    ranks = seamed_mean - (outside[pair, tops] + outside[pair, bottoms] + sides_on) / 3
    # Against the screen's side, its top and bottom run to that side (not a picture and a strip
    # of wallpaper beside it: 10 -> 106 wrong boxes without) and stop at its other side (a brick
    # course, or a box between a wallpaper's lines, runs on), where its other side stops too.
    reach_left = over[:, side] / side >= _SEAMED
    reach_right = (over[:, width] - over[:, width - side]) / side >= _SEAMED
    reaches = np.where((lefts == 0)[:, None], reach_left, reach_right)
    against = (reaches[pair, tops] & reaches[pair, bottoms] & (sides_on <= _STOPPED)
               & (outside[pair, tops] <= _STOPPED)
               & (outside[pair, bottoms] <= _STOPPED))  # fmt: skip
    passing &= (edges == 0) | against
    for number, i, j in zip(*np.nonzero(passing), strict=True):
        box = (int(lefts[number]), int(rows[number, i]), int(rights[number]), int(rows[number, j]))
        scored[bool(edges[number, 0, 0])].append((float(ranks[number, i, j]), box))
    return scored


def _runs_on(down: npt.NDArray[np.int32], columns: npt.NDArray[np.int64],
             tops: npt.NDArray[np.int64], bottoms: npt.NDArray[np.int64], reach: int
             ) -> npt.NDArray[np.float64]:  # fmt: skip
    """The share of seam pixels down each of `columns` in the `reach` px above each top and
    below each bottom (0 at the screen's sides)."""
    height, width = down.shape[0] - 1, down.shape[1]
    column = np.minimum(columns, width - 1)
    up, on = np.minimum(reach, tops), np.minimum(reach, height - bottoms)
    seams = (down[tops, column] - down[tops - up, column]
             + down[bottoms + on, column] - down[bottoms, column])  # fmt: skip
    shares = seams / np.maximum(up + on, 1)
    return np.asarray(np.where((columns == 0) | (columns == width), 0.0, shares), np.float64)


def _verified(boxes: list[Box], along: npt.NDArray[np.bool_], across: npt.NDArray[np.bool_],
              factor: int) -> list[Box]:  # fmt: skip
    """The `boxes` whose sides are seamed and seen half by half (`_sides_seamed`; the screen's
    own sides count as seamed), scaled up by `factor`."""
    width = across.shape[1]
    found: list[Box] = []
    for left, top, right, bottom in boxes:
        edge = np.ones(bottom - top, bool)  # the screen's side
        sides_seen = (along[top, left:right], along[bottom, left:right],
                      edge if left == 0 else across[top:bottom, left],
                      edge if right == width else across[top:bottom, right])  # fmt: skip
        halves = [half for line in sides_seen for half in _halves(line)]
        if _sides_seamed([(float(half.mean()), _seen(half)) for half in halves]):
            found.append((left * factor, top * factor, right * factor, bottom * factor))
    return found


def _side_share(down: npt.NDArray[np.int32], columns: npt.NDArray[np.int64],
                tops: npt.NDArray[np.int64], bottoms: npt.NDArray[np.int64]
                ) -> npt.NDArray[np.float64]:  # fmt: skip
    """The share of seam pixels down each of `columns` between each top and bottom (`down`:
    the seams' running sums down each column); 1 at the screen's sides (0 and width)."""
    width = down.shape[1]
    column = np.minimum(columns, width - 1)
    share = (down[bottoms, column] - down[tops, column]) / np.maximum(bottoms - tops, 1)
    return np.asarray(np.where((columns == 0) | (columns == width), 1.0, share), np.float64)


def _sides_seamed(halves: list[tuple[float, float]]) -> bool:
    """Whether a box's eight half sides, each (its share of seam pixels, _seen), are a picture's
    edge: each seamed (_SIDE) and seen (_SEEN); or all but one, and those clearly (_CLEAR)."""
    weak = [(share, seen) for share, seen in halves if share < _SIDE or seen < _SEEN]
    if len(weak) > 1:
        return False
    return not weak or all(share >= _CLEAR[0] and seen >= _CLEAR[1]
                           for share, seen in halves if (share, seen) not in weak)  # fmt: skip


def seams(planes: Sequence[npt.NDArray[np.uint8]]) -> npt.NDArray[np.bool_]:
    """Where a line between columns lies at each pixel (x: between x - 1 and x + 1) of an image
    given as its three colour planes, widened by a column (a seam may fall either side of a
    pixel)."""
    height, width = planes[0].shape
    step = _largest_change(planes, 1)  # step[x]: from x to x + 1
    jump = np.zeros((height, width), np.int16)
    jump[:, 1:-1] = _largest_change(planes, 2)
    beside = np.full((height, width), np.iinfo(np.int16).max // _SEAM_RATIO, np.int16)
    beside[:, 3:-3] = np.maximum(
        np.maximum(step[:, 0:-5], step[:, 1:-4]), np.maximum(step[:, 4:-1], step[:, 5:])
    )
    seam = (jump >= _SEAM_JUMP) & (jump > _SEAM_RATIO * beside)
    seam[:, 1:] |= seam[:, :-1]
    return seam


def _largest_change(planes: Sequence[npt.NDArray[np.uint8]], apart: int) -> npt.NDArray[np.int16]:
    """Per pixel, the largest of the three channels' absolute changes to the pixel `apart`
    columns on (one plane at a time: numpy's reduction over a 3-long axis took most of the
    time)."""
    changes = [cv2.absdiff(plane[:, apart:], plane[:, :-apart]) for plane in planes]
    largest = cv2.max(cv2.max(changes[0], changes[1]), changes[2])
    return np.asarray(largest, np.int16)


def _halves(line: npt.NDArray[np.bool_]) -> tuple[npt.NDArray[np.bool_], ...]:
    middle = len(line) // 2
    return line[:middle], line[middle:]


def _seen(line: npt.NDArray[np.bool_]) -> float:
    """The share of a line outside its gaps (runs with no seam pixel) longer than _GAP."""
    bounded = np.ones(len(line) + 2, bool)
    bounded[1:-1] = line
    changes = np.flatnonzero(bounded[1:] != bounded[:-1])  # where each gap starts and ends
    lengths = changes[1::2] - changes[::2]
    return 1.0 - float(lengths[lengths > _GAP].sum()) / len(line)


def _longest_runs(seams: npt.NDArray[np.bool_]) -> npt.NDArray[np.float64]:
    """Per column, its longest run of seam pixels, across gaps of up to _GAP px."""
    if not seams.size:
        return np.zeros(seams.shape[1])
    bridge = np.ones((_GAP + 1, 1), np.uint8)
    closed = cv2.morphologyEx(seams.astype(np.uint8), cv2.MORPH_CLOSE, bridge).astype(bool)
    count = np.cumsum(closed, axis=0, dtype=np.int32)
    before = np.maximum.accumulate(np.where(closed, 0, count), axis=0)  # count at the last miss
    return np.asarray((count - before).max(axis=0), np.float64)


def _peaks(
    score: npt.NDArray[np.float64], floor: float, rank: npt.NDArray[np.float64] | None = None
) -> list[int]:
    """Up to _CANDIDATES indices of `score` at least `floor`, best first (by `rank`, then
    `score`, where `rank` is given), each more than _APART from a better one."""
    above = np.flatnonzero(score >= floor)
    order = np.lexsort((-score[above],) if rank is None else (-score[above], -rank[above]))
    kept: list[int] = []
    near = bytearray(len(score) + 2 * _APART)  # 1 within _APART of a kept index (shifted)
    for index in above[order].tolist():
        if len(kept) == _CANDIDATES:
            break
        if not near[index + _APART]:
            kept.append(index)
            near[index : index + 2 * _APART + 1] = b"\x01" * (2 * _APART + 1)
    return kept
