"""Collages: a banked picture made of separate photos side by side or stacked (a two-panel meme,
a before/after pair, a grid of photos), found when it is banked (issue 18, adversarial passes a47
F10, a48 F6, a49).

Banking a meme that pairs a popular reaction photo with another picture must not block every
post of the reaction photo: a copy of one panel alone is not a copy of the banked picture. The
robust tier aligns such a copy perfectly (the panel is all there) and its content agrees, so the
layout has to be known: `collage_panels` splits a banked view's photo into its pictures and marks
which panel each grid cell lies in; a match must then show at least two of the panels, each as
banked (`content_grid.agreement`), or every panel rearranged (each banked as a view of its own,
`signals.panel_boxes`). A DSL who must block one panel on its own banks that panel.

Pictures are told apart at a *gutter*, a plain strip down the whole photo with pictures starting
sharply on both sides (not writing on a caption bar), whatever the pictures hold; or at a *seam*,
where one photo ends and another begins: a straight line at one column (or row), near the middle
of the photo (between 30% and 70% of it, as collage layouts put it), across which the luma steps
in most rows of one long run, while the columns beside it step far less (an edge in a photo, a
door frame or a horizon, is rarely straight, sharp and unbroken for most of the photo), with
texture on both sides, or on one side where nearly every row steps (a photo whose edge is a plain
sky). More than two such lines on one axis are a pattern (bricks, tiles, a checkerboard), not a
collage. Two noise-like pictures meeting without a gutter show no seam. A gutter of two or three
pixels blurs into noise-like pictures in the working frame: a banked picture larger than it is
searched for gutters again at a finer scale (`collage_boxes(finer=...)`).

A panel map is derived data like the grid: one small number per cell.
"""

from __future__ import annotations

import itertools
from typing import Final

import numpy as np
import numpy.typing as npt

_STEP: Final = 14  # luma step across a seam, measured between the pixels either side of it
_MIN_STEP_ROWS: Final = 0.3  # share of the rows stepping at a seam
_MIN_RUN: Final = 0.6  # the stepping rows run unbroken (small gaps allowed) along this share
_GAP: Final = 0.03  # largest gap in the run, as a share of the side
_AROUND: Final = 0.5  # the columns beside a seam step in at most this share of its rows
_TEXTURE: Final = 8.0  # luma std of the 12 px band either side of a seam (past a gutter)
# A seam with texture on one side only (a photo whose edge is a plain sky, stacked under
# another) steps in this share of its rows: a horizon wavers, a pasted edge does not (a49).
_ONE_SIDED_STEP: Final = 0.8
_BAND: Final = 12
_REACH: Final = 40  # past a gutter up to this wide
_FLAT_COLUMN: Final = 2.0  # band columns plainer than this (a gutter) are not texture
_MIDDLE: Final = (0.3, 0.7)
_MAX_SEAMS: Final = 2  # per axis: more are a pattern
_GUTTER_RANGE: Final = 12  # luma range down a gutter column (JPEG ringing beside its edges)
_RINGING: Final = 2  # a column of up to this many times that range is looked at trimmed
_TRIMMED: Final = (2, 98)  # percentiles of a trimmed column's luma
_GUTTER_MAX: Final = 0.1  # a gutter is at most this share of the photo's width
# Beside a plain strip, lines that are mostly its tone are writing on a bar (a caption), not a
# picture: text is a few strokes; a dark-edged photo beside a black gutter is less of its tone.
_WRITING: Final = 0.75
_PICTURE_EDGE: Final = 20  # luma range down one of the first two columns of a picture beside it
# A line of writing is a thin band on its bar: the bar's tone still fills this share of the
# photo's side past the strip; a photo with a dark edge (a retina's black corners) fills it.
_WRITING_DEPTH: Final = 0.05
PANEL_MIN_SIDE: Final = 64  # photo regions (working frame pixels) narrower are not split
_DEPTH: Final = 2


def collage_panels(
    luma: npt.NDArray[np.uint8],
    photo_box: tuple[int, int, int, int],
    grid: int,
    finer: npt.NDArray[np.uint8] | None = None,
) -> npt.NDArray[np.uint8] | None:
    """Per cell of a grid x grid content grid of `luma` (row-major), the panel its centre lies
    in (0, 1, ...), for a collage whose photo spans `photo_box` (left, top, right, bottom in
    pixels); None when the photo has no seam. `finer`: the same picture at a finer scale."""
    boxes = collage_boxes(luma, photo_box, finer=finer)
    if len(boxes) < 2:
        return None
    height, width = luma.shape
    centres_x = (np.arange(grid) + 0.5) * width / grid
    centres_y = (np.arange(grid) + 0.5) * height / grid
    panels = np.full((grid, grid), len(boxes), np.uint8)  # outside the photo: a panel of its own
    for number, (left, top, right, bottom) in enumerate(boxes):
        rows = (centres_y >= top) & (centres_y < bottom)
        columns = (centres_x >= left) & (centres_x < right)
        panels[np.ix_(rows, columns)] = number
    return panels.ravel()


def collage_boxes(
    luma: npt.NDArray[np.uint8],
    photo_box: tuple[int, int, int, int],
    seams: bool = True,
    finer: npt.NDArray[np.uint8] | None = None,
) -> list[tuple[int, int, int, int]]:
    """The pixel boxes (left, top, right, bottom) of a collage's panels in `luma`; the photo's
    own box alone when it has no seam. `seams`: False splits at gutters only. `finer`, the
    same picture at a finer scale, is searched for gutters wherever `luma` shows none: a line
    of one to three pixels between two pictures blurs into them in the working frame (a50 N8:
    every one of the pictures alone was then blocked as the banked collage; a52 F2b: a strip of
    four with 1 px lines was split at its middle only, and banked as three pictures)."""
    coarse = luma.astype(np.int16)
    fine = None if finer is None else finer.astype(np.int16)
    return _split(coarse, photo_box, _DEPTH, seams, fine)


def _split(
    luma: npt.NDArray[np.int16],
    box: tuple[int, int, int, int],
    depth: int,
    seams: bool = True,
    finer: npt.NDArray[np.int16] | None = None,
) -> list[tuple[int, int, int, int]]:
    """The panels of the photo in `box`: split at its seams down one axis (columns first), then
    each part again (a 2x2 grid, a wide panel over two small ones), `depth` levels deep; at the
    gutters of `finer` where `luma` shows no line (and below that, at those gutters only)."""
    left, top, right, bottom = box
    photo = luma[top:bottom, left:right]
    if depth == 0 or min(photo.shape) < PANEL_MIN_SIDE:
        return [box]
    axis, cuts = _cuts(photo, seams)
    if not cuts and finer is not None:
        axis, cuts = _finer_cuts(finer, luma.shape, box)
        seams = seams and not cuts  # what a finer gutter bounds is searched at gutters only
    if not cuts:
        return [box]
    if axis == 1:
        edges = [left, *(left + x for x in cuts), right]
        parts = [(a, top, b, bottom) for a, b in itertools.pairwise(edges)]
    else:
        edges = [top, *(top + y for y in cuts), bottom]
        parts = [(left, a, right, b) for a, b in itertools.pairwise(edges)]
    return [panel for part in parts for panel in _split(luma, part, depth - 1, seams, finer)]


def _cuts(photo: npt.NDArray[np.int16], seams: bool) -> tuple[int, list[int]]:
    """(axis, positions) to split a photo at: down its columns (axis 1) first, else across its
    rows (axis 0); no positions where it has no line."""
    columns = _splits(photo, seams)
    if columns:
        return 1, columns
    return 0, _splits(photo.T, seams)


def _finer_cuts(
    finer: npt.NDArray[np.int16], shape: tuple[int, ...], box: tuple[int, int, int, int]
) -> tuple[int, list[int]]:
    """_cuts at the gutters of the finer frame's part of `box` (a box of a frame of `shape`),
    in the coarse frame's pixels from the box's edge."""
    scale_y, scale_x = finer.shape[0] / shape[0], finer.shape[1] / shape[1]
    left, top, right, bottom = box
    part = finer[round(top * scale_y) : round(bottom * scale_y),
                 round(left * scale_x) : round(right * scale_x)]  # fmt: skip
    if min(part.shape) < PANEL_MIN_SIDE:
        return 1, []
    axis, cuts = _cuts(part, seams=False)
    scale = scale_x if axis == 1 else scale_y
    return axis, [round(cut / scale) for cut in cuts]


def _splits(photo: npt.NDArray[np.int16], seams: bool = True) -> list[int]:
    """The columns to split a photo at: its gutters' middles and its seams (a seam along a
    gutter's edge is that gutter)."""
    gutters = _gutters(photo)
    lines = _seams(photo) if seams else []
    lines = [x for x in lines if not any(a - 4 <= x <= b + 4 for a, b in gutters)]
    found = sorted([*((a + b) // 2 for a, b in gutters), *lines])
    return found if len(found) <= _MAX_SEAMS else []


def _gutters(photo: npt.NDArray[np.int16]) -> list[tuple[int, int]]:
    """The plain strips [start, end) that run down the whole photo between two pictures (a
    collage's white or black gutter), found whatever the pictures hold, even noise, where no
    seam shows. A photo's own plain column is rarely one tone from top to bottom, and where it
    is (a microscope's empty field) the picture beside it does not start at a sharp edge."""
    width = photo.shape[1]
    spread = photo.max(axis=0) - photo.min(axis=0)
    plain = spread <= _GUTTER_RANGE
    # A line of a pixel or two in a JPEG rings where the pictures beside it have strong edges:
    # the range of all but its few most extreme pixels (a53 F2: 1 px lines spanned 13 and 15).
    ringing = np.flatnonzero(~plain & (spread <= _RINGING * _GUTTER_RANGE))
    if ringing.size:
        low, high = np.percentile(photo[:, ringing], _TRIMMED, axis=0)
        plain[ringing] = high - low <= _GUTTER_RANGE
    found: list[tuple[int, int]] = []
    start = None
    for x, flat in enumerate([*plain.tolist(), False]):
        if flat and start is None:
            start = x
        elif not flat and start is not None:
            middle = (start + x) // 2
            inside = start > 0 and x < width  # pictures on both sides, not a border
            if (
                inside
                and x - start <= width * _GUTTER_MAX
                and _MIDDLE[0] * width <= middle <= _MIDDLE[1] * width
                and min(spread[max(0, start - 2) : start].max(), spread[x : x + 2].max())
                >= _PICTURE_EDGE
                and _pictures_beside(photo, start, x)
            ):
                found.append((start, x))
            start = None
    return found


def _pictures_beside(photo: npt.NDArray[np.int16], start: int, end: int) -> bool:
    """Whether pictures start right beside a plain strip, not writing on it: a caption bar's
    plain rows run beside rows of text, mostly the bar's own tone there and a little further
    on. A photo with a dark edge beside a black gutter is mostly its tone at the edge only (a54
    I2: a retina's corners beside 6 px black lines, and a strip of three banked as two)."""
    tone = float(np.median(photo[:, start:end]))
    depth = max(_BAND, round(photo.shape[1] * _WRITING_DEPTH))
    for near, deep in (
        (photo[:, max(0, start - 2) : start], photo[:, max(0, start - depth) : start]),
        (photo[:, end : end + 2], photo[:, end : end + depth]),
    ):
        if min(_tone_share(near, tone), _tone_share(deep, tone)) >= _WRITING:
            return False
    return True


def _tone_share(pixels: npt.NDArray[np.int16], tone: float) -> float:
    return float((np.abs(pixels - tone) <= _GUTTER_RANGE).mean())


def _seams(photo: npt.NDArray[np.int16]) -> list[int]:
    """The columns of a photo where one picture meets another (see the module docstring)."""
    height, width = photo.shape
    stepping = np.abs(photo[:, 2:] - photo[:, :-2]) >= _STEP  # [:, i]: across column i + 1
    share = stepping.mean(axis=0)
    found: list[int] = []
    for x in range(max(13, int(width * _MIDDLE[0])), min(width - 13, int(width * _MIDDLE[1]) + 1)):
        i = x - 1
        if share[i] < _MIN_STEP_ROWS or share[i] < share[i - 1] or share[i] < share[i + 1]:
            continue
        around = max(np.median(share[i - 12 : i - 3]), np.median(share[i + 4 : i + 13]))
        if around > share[i] * _AROUND:
            continue
        rows = stepping[:, i]
        if _longest_run(rows, round(height * _GAP)) < _MIN_RUN * height:
            continue
        before = photo[rows, max(0, x - 1 - _REACH) : x - 1]
        after = photo[rows, x + 2 : x + 2 + _REACH]
        textured = _textured(before[:, ::-1]) + _textured(after)
        if textured == 0 or (
            textured == 1
            and (share[i] < _ONE_SIDED_STEP or _banded(before[:, ::-1]) or _banded(after))
        ):
            continue  # one smooth side (a photo's sky) where nearly every row steps, not a band
        if found and x - found[-1] <= 3:
            continue  # the same seam, blurred over a pixel or two
        found.append(x)
    return found if len(found) <= _MAX_SEAMS else []


def _longest_run(flags: npt.NDArray[np.bool_], max_gap: int) -> int:
    """The longest run of set flags, gaps of at most max_gap bridged (and counted in)."""
    best = run = gap = 0
    for flag in flags.tolist():
        if flag:
            run, gap = run + 1 + gap, 0
        elif run:
            gap += 1
            if gap > max_gap:
                run = gap = 0
        best = max(best, run)
    return best


def _banded(beside: npt.NDArray[np.int16]) -> bool:
    """Whether what lies beside a seam starts with a plain strip (a caption bar, a border)."""
    return beside.size > 0 and float(beside[:, : _BAND // 3].std(axis=0).min()) < _FLAT_COLUMN


def _textured(beside: npt.NDArray[np.int16]) -> bool:
    """Whether what lies beside a seam (columns ordered away from it) is a picture: the first
    _BAND columns that are not plain (past a gutter between panels) spread in luma."""
    if beside.size == 0:
        return False
    plain = beside.std(axis=0) < _FLAT_COLUMN
    band = beside[:, ~plain][:, :_BAND]
    if band.shape[1] < _BAND or float(band.std()) < _TEXTURE:
        return False
    if plain[0]:  # past a plain strip: a picture, not writing on a caption bar of that tone
        tone = float(np.median(beside[:, : int(np.argmin(plain))]))
        return float((np.abs(band - tone) <= _GUTTER_RANGE).mean()) < _WRITING
    return True
