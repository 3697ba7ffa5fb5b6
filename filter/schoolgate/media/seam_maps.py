"""A frame's seam maps for the inset search (media.inset_pictures): where a seam lies between
columns and between rows (media.pasted_pictures.seams), and where a thin line runs."""

from __future__ import annotations

from typing import Final

import cv2
import numpy as np
import numpy.typing as npt

from schoolgate.media.pasted_pictures import seams

_RIDGE: Final = 2  # px: a thin line's pixels differ from those this far either side of them
_RIDGE_JUMP: Final = 24  # as much as a seam's colour jump (media.pasted_pictures)
_RIDGE_LINE: Final = 7  # px: a line runs on this far at least


type Maps = tuple[npt.NDArray[np.bool_], npt.NDArray[np.bool_]]


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


def transposed(mask: npt.NDArray[np.bool_]) -> npt.NDArray[np.bool_]:
    return np.asarray(cv2.transpose(mask.view(np.uint8)), np.uint8).view(np.bool_)
