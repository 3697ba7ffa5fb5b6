"""Frame geometry for video hashing: the PDQ scale, upright rotation, and letterbox and pillarbox
bars."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

PDQ_SIDE = 512  # frames are scaled to this longer side before PDQ, as images are
# A key frame is also kept this fine, for the small pictures in it: a chat recording's 250 px
# (of 1080) picture is 56 px at PDQ_SIDE, under what a lookup can use, and 137 px here.
FINER_FRAME_SIDE = 1280


def scaled_size(width: int, height: int, side: int = PDQ_SIDE) -> tuple[int, int]:
    longer = max(width, height)
    if longer <= side:
        return width, height
    scale = side / longer
    return max(1, round(width * scale)), max(1, round(height * scale))


def upright(rgb: npt.NDArray[np.uint8], rotation: int) -> npt.NDArray[np.uint8]:
    """Apply a display-matrix rotation (degrees counter-clockwise, as libavutil reports it)."""
    turns = round(rotation / 90) % 4
    return np.ascontiguousarray(np.rot90(rgb, turns)) if turns else rgb


class Letterbox:
    """Finds uniform bars (letterbox or pillarbox) around a frame's content.

    A copy re-shared in another aspect ratio (a landscape clip in a portrait story, a screen
    recording) gets bars that change PDQ beyond any useful distance; hashing the content inside
    them as well recovers the match. Bars must be flat and on both opposite sides, so ordinary
    frames with a plain sky or wall are rarely cropped (and a wrong crop only adds a variant).
    """

    MAX_LINE_STD = 6.0
    MIN_BAR_SHARE = 0.03
    MIN_CONTENT_SHARE = 0.2

    @classmethod
    def content_box(cls, rgb: npt.NDArray[np.uint8]) -> tuple[int, int, int, int] | None:
        """(top, bottom, left, right) of the content inside bars, or None without bars."""
        height, width = rgb.shape[:2]
        # Every step-th pixel is plenty to find bars, and ~20x cheaper than every pixel.
        step = max(1, min(height, width) // 96)
        luma = rgb[::step, ::step].astype(np.float32).mean(axis=2)
        top, bottom, left, right = (
            bars * step for pair in (cls._bars(luma), cls._bars(luma.T)) for bars in pair
        )
        rows = top >= cls.MIN_BAR_SHARE * height and bottom >= cls.MIN_BAR_SHARE * height
        cols = left >= cls.MIN_BAR_SHARE * width and right >= cls.MIN_BAR_SHARE * width
        if not rows and not cols:
            return None
        box = (
            top if rows else 0,
            height - bottom if rows else height,
            left if cols else 0,
            width - right if cols else width,
        )
        if (box[1] - box[0]) < cls.MIN_CONTENT_SHARE * height or (
            box[3] - box[2]
        ) < cls.MIN_CONTENT_SHARE * width:
            return None  # a flat frame (black, one colour), not content inside bars
        return box

    @classmethod
    def _bars(cls, luma: npt.NDArray[np.float32]) -> tuple[int, int]:
        """Flat lines at the start and at the end of axis 0 (rows of `luma`)."""
        flat = luma.std(axis=1) <= cls.MAX_LINE_STD
        means = luma.mean(axis=1)
        return cls._run(flat, means), cls._run(flat[::-1], means[::-1])

    @staticmethod
    def _run(flat: npt.NDArray[np.bool_], means: npt.NDArray[np.float32]) -> int:
        if not flat.size or not flat[0]:
            return 0
        # Bars are one colour: stop at the first line that is not flat or not the same colour.
        same = np.abs(means - means[0]) <= 12.0
        stops = np.flatnonzero(~(flat & same))
        return int(stops[0]) if stops.size else int(flat.size)


Box = tuple[int, int, int, int]
