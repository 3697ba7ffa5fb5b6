"""A frame's seam maps for the inset search (media.inset_pictures): where a seam lies between
columns and between rows (media.pasted_pictures.seams), and where a thin line runs; and their
running sums, which measure any stretch of a row or column."""

from __future__ import annotations

from typing import Final

import cv2
import numpy as np
import numpy.typing as npt

from schoolgate.media.pasted_pictures import seams

_RIDGE: Final = 2  # px: a thin line's pixels differ from those this far either side of them
_RIDGE_JUMP: Final = 24  # as much as a seam's colour jump (media.pasted_pictures)
_RIDGE_LINE: Final = 7  # px: a line runs on this far at least
_OPPOSITES: Final = 4  # lines tried for a picture's opposite side
_APART: Final = 3  # px: lines this near a better one are the same line


type Maps = tuple[npt.NDArray[np.bool_], npt.NDArray[np.bool_]]
type Lines = npt.NDArray[np.int64]  # row or column numbers, one per side measured


def seam_maps(pixels: npt.NDArray[np.uint8]) -> Maps:
    """Where a seam lies between columns (`across`: a picture's left and right sides) and
    between rows (`along`: its top and bottom), the frame's own sides counting as seams."""
    planes = [np.asarray(plane, np.uint8) for plane in cv2.split(pixels)]
    across = seams(planes)
    along = transposed(seams([np.asarray(cv2.transpose(plane), np.uint8) for plane in planes]))
    height, width = across.shape
    across[:, 0] = across[:, width - 1] = True
    along[0, :] = along[height - 1, :] = True
    return across, along


def with_lines(pixels: npt.NDArray[np.uint8], maps: Maps) -> Maps:
    """`maps` (seam_maps) with the thin lines that run down the columns and along the rows
    (_ridges)."""
    planes = [np.asarray(plane, np.uint8) for plane in cv2.split(pixels)]
    across, along = _ridge_maps(planes)
    return maps[0] | across, maps[1] | along


def _ridge_maps(planes: list[npt.NDArray[np.uint8]]) -> Maps:
    """Where a thin line runs down the columns, and along the rows (_ridges)."""
    along = _ridges([np.asarray(cv2.transpose(plane), np.uint8) for plane in planes])
    return _ridges(planes), transposed(along)


def _ridges(planes: list[npt.NDArray[np.uint8]]) -> npt.NDArray[np.bool_]:
    """Where a thin line runs down the columns: a pixel brighter (or darker) than both pixels
    _RIDGE away across it by _RIDGE_JUMP in some channel. A picture's thin border is such a
    line; its two edges lie too near each other for either to be a seam (each is beside the
    other), and a thin white border hid 9 of 24 pastes (15 of 24 boxed; 23 with the line)."""
    height, width = planes[0].shape
    found = np.zeros((height, width), np.uint8)
    for plane in planes:
        middle = plane[:, _RIDGE:-_RIDGE]
        before, after = plane[:, : -2 * _RIDGE], plane[:, 2 * _RIDGE :]
        brighter = cv2.min(cv2.subtract(middle, before), cv2.subtract(middle, after))
        darker = cv2.min(cv2.subtract(before, middle), cv2.subtract(after, middle))
        found[:, _RIDGE:-_RIDGE] = cv2.max(found[:, _RIDGE:-_RIDGE], cv2.max(brighter, darker))
    # A line, not a dot: a star in the night sky or a speck of gravel is brighter than either
    # side of it too.
    line = np.ones((_RIDGE_LINE, 1), np.uint8)
    return np.asarray(cv2.morphologyEx((found >= _RIDGE_JUMP).view(np.uint8), cv2.MORPH_OPEN,
                                       line), np.uint8).view(np.bool_)  # fmt: skip


class SeamTables:
    """The seam maps' running sums (summed-area tables): the share of seam pixels along any
    stretch of a row or column in constant time."""

    def __init__(self, across: npt.NDArray[np.bool_], along: npt.NDArray[np.bool_]) -> None:
        self.height, self.width = across.shape
        self.down = np.diff(cv2.integral(across.view(np.uint8)), axis=1)  # (h + 1) x w
        self.over = np.diff(cv2.integral(along.view(np.uint8)), axis=0)  # h x (w + 1)

    def columns(self, x: Lines, top: Lines, bottom: Lines) -> npt.NDArray[np.float64]:
        """The share of seam down column x between top and bottom (broadcast; clipped to the
        frame)."""
        x = np.clip(x, 0, self.width - 1)
        top, bottom = np.clip(top, 0, self.height), np.clip(bottom, 0, self.height)
        return np.asarray((self.down[bottom, x] - self.down[top, x]) / np.maximum(bottom - top, 1))

    def rows(self, y: Lines, left: Lines, right: Lines) -> npt.NDArray[np.float64]:
        """The share of seam along row y between left and right (broadcast; clipped to the
        frame)."""
        y = np.clip(y, 0, self.height - 1)
        left, right = np.clip(left, 0, self.width), np.clip(right, 0, self.width)
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
            shares[np.abs(lines - best[None, :]) <= _APART] = -1.0
        return found


def transposed(mask: npt.NDArray[np.bool_]) -> npt.NDArray[np.bool_]:
    return np.asarray(cv2.transpose(mask.view(np.uint8)), np.uint8).view(np.bool_)
