"""A coarse signature of what a picture shows where: the robust tier's check that an aligned
copy shows the same *picture*, not only the same surroundings (issue 18).

Local features match whatever two images share. Two screenshots of one chat app share its status
bar, header, bubbles and input bar; two pictures under one overlay (lines, a watermark, a frame, a
meme template) share the overlay. RANSAC then finds a perfectly consistent transform, and the
different photos inside are never looked at. So after alignment the query is warped onto the
banked picture and compared cell by cell on an 8x8 grid:

- each cell holds a 40-bit difference hash (5x5 block means of its luma, each compared with its
  right and lower neighbour), robust to re-encoding, scaling, colour and contrast changes;
- each cell is classed as *flat* (no structure to compare), *graphic* (mostly flat areas with
  sharp edges: text, interface, icons, stickers, captions, drawings) or *photographic*.

The verdict is taken on the banked picture's photographic cells that the copy covers: a copy
agrees on most of them (a caption or sticker hides a few); a *different* photo in the same place
(another picture in the same chat screen, another subject before the same background, an empty
thread) disagrees on most. A copy may hide part of the banked photo under a caption, a sticker or
a bar, but it does not show *another* photograph there: banked cells with structure (the photo,
and what is drawn or written beside it) that the copy shows as unrelated photographic content
(nearly half their bits differ, as between unrelated pictures) are counted apart where they fill
an area (writing across a plain sky reads so too, a line of cells at a time), and a few of them
are enough to tell another subject before the same background, another picture under the
same dense overlay or beside the same meme panel; so is a patch of photographic cells, three
or more each way, that the copy shows clearly different (a smooth subject differs by less than
unrelated content does). A copy that leaves out most of the banked
photo does not show it, whatever else aligns (the interface around a screenshot's photo is never
evidence). Banked items with few photographic cells (drawings, text memes) are judged on every
cell with structure on both sides.

A grid is derived data, like a PDQ hash: 64 x 40 bits of brighter/darker comparisons between
neighbouring blocks, and a class per cell. No picture can be rebuilt from it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import IntEnum
from typing import Final

import cv2
import numpy as np
import numpy.typing as npt

GRID: Final = 8
BLOCKS: Final = 5  # block means per cell side
_CELL_BITS: Final = 2 * BLOCKS * (BLOCKS - 1)  # 40
# A cell whose 5x5 block means spread less than this (luma std) has nothing to compare: plain
# colour, or a fine texture (brick, gravel, grain) whose blocks all look alike, so its hash bits
# are noise that any edit flips.
_FLAT_STD: Final = 3.0
_STILL_RANGE: Final = 3  # a pixel whose 3x3 luma range is at most this is in a flat area
_GRAPHIC_STILL_SHARE: Final = 0.45  # cells with more flat-area pixels than this are graphic
_COVERED: Final = 0.9  # a query cell counts only where the warped query covers this share
BYTES: Final = GRID * GRID * 9
PANELS_BYTES: Final = GRID * GRID  # a collage's panel map, after the grid (media/panels.py)
_MAX_PANELS: Final = (2 + 1) * (2 + 1) + 1  # and the cells outside the photo


class Cell(IntEnum):
    FLAT = 0
    GRAPHIC = 1
    PHOTO = 2
    UNCOVERED = 3  # a query cell outside the warped copy (cropped away)


@dataclass(frozen=True)
class ContentGrid:
    """Per cell, row-major: a 40-bit difference hash and a Cell class; for a banked collage,
    the panel each cell lies in (`panels`, see media/panels.py)."""

    bits: npt.NDArray[np.uint64]  # (GRID * GRID,)
    kinds: npt.NDArray[np.uint8]  # (GRID * GRID,)
    panels: npt.NDArray[np.uint8] | None = None  # (GRID * GRID,)

    def to_bytes(self) -> bytes:
        panels = b"" if self.panels is None else self.panels.astype(np.uint8).tobytes()
        return self.bits.astype("<u8").tobytes() + self.kinds.astype(np.uint8).tobytes() + panels

    @classmethod
    def from_bytes(cls, data: bytes) -> ContentGrid:
        if len(data) not in (BYTES, BYTES + PANELS_BYTES):
            raise ValueError(f"content grid of {len(data)} bytes, expected {BYTES}")
        cells = GRID * GRID
        bits = np.frombuffer(data, "<u8", cells).astype(np.uint64)
        kinds = np.frombuffer(data, np.uint8, cells, cells * 8).copy()
        if int(kinds.max(initial=0)) > Cell.UNCOVERED:
            raise ValueError("content grid with an unknown cell class")
        panels = np.frombuffer(data, np.uint8, cells, BYTES).copy() if len(data) > BYTES else None
        if panels is not None and int(panels.max(initial=0)) >= _MAX_PANELS:
            raise ValueError("content grid with an unknown panel")
        return cls(bits, kinds, panels)

    @property
    def photo_cells(self) -> int:
        return int((self.kinds == Cell.PHOTO).sum())


PICTURE_MAX_CELLS: Final = 40  # of 64: a photo region larger than this is the whole picture


def _is_a_part(region: tuple[int, int, int, int] | None) -> bool:
    """Whether a photo region is a part of its item (a screenshot's or a frame's picture), not
    the whole picture (a photo whose plain sky or wall reads as drawn spans it from its edges)."""
    if region is None:
        return False
    left, top, right, bottom = region
    return (right - left) * (bottom - top) <= PICTURE_MAX_CELLS


def photo_pixels(grid: ContentGrid, width: int, height: int) -> tuple[int, int, int, int] | None:
    """The pixel box (left, top, right, bottom) of photo_region in a width x height frame."""
    region = photo_region(grid)
    if region is None:
        return None
    left, top, right, bottom = region
    return (round(left * width / GRID), round(top * height / GRID),
            round(right * width / GRID), round(bottom * height / GRID))  # fmt: skip


def photo_region(grid: ContentGrid) -> tuple[int, int, int, int] | None:
    """The cells (left, top, right, bottom; right and bottom exclusive) that bound a grid's
    photographic cells: a screenshot's or a frame's picture. None when there are too few for
    a photographic item (an interface, text, a drawing)."""
    if grid.photo_cells < _MIN_PHOTO_CELLS:
        return None
    rows, columns = np.nonzero(grid.kinds.reshape(GRID, GRID) == Cell.PHOTO)
    return int(columns.min()), int(rows.min()), int(columns.max()) + 1, int(rows.max()) + 1


def small_photo_box(grid: ContentGrid, width: int, height: int) -> tuple[int, int, int, int] | None:
    """The pixel box (left, top, right, bottom) of a small photo inside a mostly drawn item (2 to
    5 photographic cells: a chat screenshot's thumbnail-sized picture), widened by half a cell;
    None otherwise. At 8x8 such a photo shares every cell with the interface around it, and
    two screenshots of one thread with different photos agree there (a45 F1)."""
    count = grid.photo_cells
    if not _MIN_SMALL_PHOTO <= count < _MIN_PHOTO_CELLS:
        return None
    rows, columns = np.nonzero(grid.kinds.reshape(GRID, GRID) == Cell.PHOTO)
    cell_w, cell_h = width / GRID, height / GRID
    return (
        max(0, round((int(columns.min()) - 0.5) * cell_w)),
        max(0, round((int(rows.min()) - 0.5) * cell_h)),
        min(width, round((int(columns.max()) + 1.5) * cell_w)),
        min(height, round((int(rows.max()) + 1.5) * cell_h)),
    )


def content_grid(
    luma: npt.NDArray[np.uint8], covered: npt.NDArray[np.bool_] | None = None
) -> ContentGrid:
    """The grid of a picture's luma (H x W, both at least GRID * BLOCKS pixels). `covered`
    marks the pixels a warped query really has (cells mostly outside are UNCOVERED)."""
    height, width = luma.shape
    bits, spread = _difference_hashes(luma)
    rows = np.linspace(0, height, GRID + 1).astype(int)
    columns = np.linspace(0, width, GRID + 1).astype(int)
    kinds = np.full(GRID * GRID, Cell.PHOTO, np.uint8)
    kinds[_cell_shares(still_pixels(luma), rows, columns) > _GRAPHIC_STILL_SHARE] = Cell.GRAPHIC
    kinds[spread < _FLAT_STD] = Cell.FLAT
    if covered is not None:
        kinds[_cell_shares(covered, rows, columns) < _COVERED] = Cell.UNCOVERED
    return ContentGrid(bits, kinds)


def _cell_shares(
    mask: npt.NDArray[np.bool_], rows: npt.NDArray[np.int_], columns: npt.NDArray[np.int_]
) -> npt.NDArray[np.float64]:
    """The share of each cell's pixels set in `mask`, row-major (what `mask[cell].mean()`
    gives, to the bit, without 64 slices)."""
    counts = np.add.reduceat(np.add.reduceat(mask, rows[:-1], axis=0, dtype=np.int64),
                             columns[:-1], axis=1)  # fmt: skip
    sizes = np.outer(np.diff(rows), np.diff(columns))
    shares: npt.NDArray[np.float64] = (counts / sizes).ravel()
    return shares


def _difference_hashes(
    luma: npt.NDArray[np.uint8],
) -> tuple[npt.NDArray[np.uint64], npt.NDArray[np.float32]]:
    """Every cell's 40 bits: its 5x5 block means (an area-averaged 40x40 thumbnail, never kept),
    each compared with the block to its right and the block below, within the cell; and how
    much those means spread."""
    side = GRID * BLOCKS
    means = cv2.resize(luma.astype(np.float32), (side, side), interpolation=cv2.INTER_AREA)
    cells = means.reshape(GRID, BLOCKS, GRID, BLOCKS).transpose(0, 2, 1, 3)
    across = cells[:, :, :, 1:] > cells[:, :, :, :-1]  # (8, 8, 5, 4)
    down = cells[:, :, 1:, :] > cells[:, :, :-1, :]  # (8, 8, 4, 5)
    flags = np.concatenate(
        [across.reshape(GRID * GRID, -1), down.reshape(GRID * GRID, -1)], axis=1
    )  # (64, 40)
    packed = np.packbits(flags, axis=1)  # (64, 5) bytes, big-endian bit order
    padded = np.zeros((GRID * GRID, 8), np.uint8)
    padded[:, 3:] = packed
    hashes: npt.NDArray[np.uint64] = padded.view(">u8").ravel().astype(np.uint64)
    spread: npt.NDArray[np.float32] = cells.reshape(GRID * GRID, -1).std(axis=1).astype(np.float32)
    return hashes, spread


def still_pixels(luma: npt.NDArray[np.uint8]) -> npt.NDArray[np.bool_]:
    """Pixels in flat areas: the luma range of their 3x3 neighbourhood is at most _STILL_RANGE.
    Interfaces, text and drawings are mostly such areas between sharp edges; photos (grain,
    texture, gradients, sensor noise) have few."""
    # A 3x3 max filter less a 3x3 min filter, the edge repeated beyond the border.
    high = cv2.dilate(luma, _NEIGHBOURS, borderType=cv2.BORDER_REPLICATE)
    low = cv2.erode(luma, _NEIGHBOURS, borderType=cv2.BORDER_REPLICATE)
    still: npt.NDArray[np.bool_] = cv2.subtract(high, low) <= _STILL_RANGE
    return still


_NEIGHBOURS: Final = np.ones((3, 3), np.uint8)


@dataclass(frozen=True)
class Agreement:
    """How an aligned query agrees with a banked grid."""

    share: float  # agreeing share of the cells that were judged
    judged: int  # cells judged (photographic ones, or all structured ones for a graphic item)
    photographic: bool  # whether the banked item was judged on its photographic cells
    replaced: int = 0  # banked picture cells the copy shows as an unrelated photograph
    # Agreeing share of the middle quarter (the 4x4 middle cells, where the copy covers at
    # least half of them, and what differs there is not drawn over the banked photo around
    # which it agrees; None otherwise): plain on both sides agrees here, plain on one side
    # only does not. The robust tier asks it when the alignment rests on the surround alone.
    middle: float | None = None

    def evidence(self) -> dict[str, float]:
        return {
            "content_agreement": round(self.share, 3),
            "content_cells": float(self.judged),
            "content_replaced": float(self.replaced),
        }


CELL_MATCH_BITS: Final = 10  # of 40: chance agreement of unrelated cells is ~0.1%
# Of 40: unrelated photographic cells differ in 20 +- 3 bits. Measured on the precision and robust
# suites (940 verified copies over 26 edits): a cell of a true copy differed this much in at most
# 3 cells of one copy (where a caption's edge half covers a cell), another subject or picture in
# 5 to 29.
_UNRELATED_BITS: Final = 17
_SUBJECT_BITS: Final = 10  # of 40: a photographic cell that differs clearly
_SUBJECT_CELLS: Final = 6
_MIN_PHOTO_CELLS: Final = 6  # a banked item with fewer photographic cells is judged as graphic
_MIN_JUDGED: Final = 4  # covered photographic cells, for the photographic judgement
_PANEL_AGREEMENT: Final = 0.5  # a panel a copy of a collage shows agrees this much
# Of the pictures of a collage that a copy shows, this share (and two at least) must agree: one of
# a 2x2 grid replaced is still the grid; a meme template whose two fixed pictures agree and
# whose two others differ is another meme.
SHOWN_PICTURES: Final = 0.75
# Aligned keypoints in a collage's picture that the copy shows too little of to judge by its
# cells: as many as a crop keeping a sixth of one half of a photo split at a line brings (a52
# F6); a crop's edge cuts into the next picture by less than ORB's 31 px patch holds none.
_SIGHTED_INLIERS: Final = 5
_MIN_SMALL_PHOTO: Final = 2  # a small photo inside a graphic item is judged from this many cells


def agreement(
    banked: ContentGrid, query: ContentGrid, inliers: npt.NDArray[np.int64] | None = None
) -> Agreement:
    """Compare an aligned query's grid (computed on the query warped into the banked frame)
    with the banked grid (see the module docstring for which cells count). `inliers`: the
    aligned keypoints in each banked cell, where known."""
    distance = np.bitwise_count(banked.bits ^ query.bits)
    agrees = distance <= CELL_MATCH_BITS
    covered = query.kinds != Cell.UNCOVERED
    photo = covered & (banked.kinds == Cell.PHOTO)
    unrelated = (_shown_cells(banked) & covered & (query.kinds == Cell.PHOTO)
                 & (distance >= _UNRELATED_BITS))  # fmt: skip
    both_flat = (banked.kinds == Cell.FLAT) & (query.kinds == Cell.FLAT)
    replaced = int((unrelated & _in_patches(covered & ~agrees & ~both_flat)).sum())
    # Photographic cells the copy shows photographic and clearly different: another subject
    # photographed before the same background where they form a patch (a drawn cell in either
    # is left out: a sticker or a caption over a drawing looks no different from a new one).
    shows_photo = photo & (query.kinds == Cell.PHOTO)
    replaced = max(replaced, _other_subject(shows_photo & (distance >= _SUBJECT_BITS)))
    middle = _middle_agreement(banked, query, agrees, covered)
    if _is_a_part(photo_region(banked)) and 3 * int(photo.sum()) < banked.photo_cells:
        # The copy leaves out most of the photo inside the banked screen or frame: what aligned
        # is the interface around it (a45 F2: two chat screenshots matched on their header).
        return Agreement(0.0, int(photo.sum()), False, replaced, middle)
    judged = judged_panels(banked)
    panels = _panel_shares(judged, photo, agrees, None if inliers is None else inliers * ~covered)
    agreeing = 0 if panels is None else sum(share >= _PANEL_AGREEMENT for share in panels)
    if panels is not None and (
        agreeing < SHOWN_PICTURES * len(panels) or agreeing < pictures_needed(len(judged))
    ):
        # One photo of a banked collage, alone, in another layout or beside another picture:
        # not the banked picture (a47 F10, a48 F6: every post of a meme's popular reaction
        # photo matched the banked meme). Nor two of a grid's four, side by side as they sat
        # in it: a new meme of two of its pictures is that same crop (a52 F1).
        return Agreement(0.0, int(photo.sum()), False, replaced, middle)
    photographic = banked.photo_cells >= _MIN_PHOTO_CELLS and int(photo.sum()) >= _MIN_JUDGED
    if photographic:
        return Agreement(float(agrees[photo].mean()), int(photo.sum()), True, replaced, middle)
    # A drawing, a text meme, a screenshot around a small photo, or a photo the copy turned
    # graphic (posterised, cartooned): every cell with structure on both sides is judged, and a
    # small photo, where there is one, must agree as well (adversarial pass a7: a banked dark
    # chat screenshot with the keyboard open matched every other one on its interface).
    judged = covered & (banked.kinds != Cell.FLAT) & (query.kinds != Cell.FLAT)
    count = int(judged.sum())
    share = float(agrees[judged].mean()) if count else 0.0
    if int(photo.sum()) >= _MIN_SMALL_PHOTO:
        share = min(share, float(agrees[photo].mean()))
    return Agreement(share, count, False, replaced, middle)


def _in_patches(differing: npt.NDArray[np.bool_]) -> npt.NDArray[np.bool_]:
    """The cells of `differing` that lie in patches of them holding two by two cells, or three
    one above another: another subject or picture fills an area, or stands. Writing over a
    photo (a meme's lines of capitals, a caption set at a slant) reads as photographic where it
    crosses plain sky or a wall, and differs a line of cells high, the cells beside it agreeing
    (a82 H3: a caption at the top, a word across the middle: 3 and 4 cells); a smooth subject
    differs all over, and reads as photographic at its edges; a standing one may be a column
    of cells wide (a21's)."""
    cells = differing.reshape(GRID, GRID)
    squares = cells[:-1, :-1] & cells[1:, :-1] & cells[:-1, 1:] & cells[1:, 1:]
    columns = cells[:-2] & cells[1:-1] & cells[2:]
    _, labels = cv2.connectedComponents(cells.astype(np.uint8), connectivity=4)
    thick = np.unique(np.r_[labels[:-1, :-1][squares], labels[:-2][columns]])
    inside: npt.NDArray[np.bool_] = np.isin(labels, thick[thick > 0]).ravel()
    return inside


def _other_subject(differing: npt.NDArray[np.bool_]) -> int:
    """The cells of the largest patch of photographic cells that differ clearly (beyond what
    re-encoding or a tint changes) and spans three rows and three columns or more: another
    subject photographed before the same background. 0 where there is none."""
    count, _, stats, _ = cv2.connectedComponentsWithStats(
        differing.reshape(GRID, GRID).astype(np.uint8), connectivity=4
    )
    sizes = [int(stats[label, cv2.CC_STAT_AREA]) for label in range(1, count)
             if stats[label, cv2.CC_STAT_WIDTH] >= 3 and stats[label, cv2.CC_STAT_HEIGHT] >= 3
             and stats[label, cv2.CC_STAT_AREA] >= _SUBJECT_CELLS]  # fmt: skip
    return max(sizes, default=0)


def pictures_needed(pictures: int) -> int:
    """How many pictures of a collage a copy must show: two of two, three of three or four
    (one of a 2x2 grid replaced is still the grid; one of a meme's two is a new meme)."""
    return max(2, math.ceil(pictures * SHOWN_PICTURES))


def _panel_shares(
    panels: list[tuple[npt.NDArray[np.bool_], int]],
    photo: npt.NDArray[np.bool_],
    agrees: npt.NDArray[np.bool_],
    inliers: npt.NDArray[np.int64] | None = None,
) -> list[float] | None:
    """For a banked collage (`panels`, its judged_panels: two or more): the agreeing share of
    each panel the copy shows (covers an eighth of its photo cells); None otherwise."""
    if len(panels) < 2:
        return None
    shares: list[float] = []
    for inside, cells in panels:
        shown = photo & inside
        # Shown where the copy covers an eighth of it: a crop that keeps one side of a photo
        # wrongly split at a straight horizon keeps a row of cells of the other (a49 F4).
        if int(shown.sum()) >= max(1, cells // 8):
            shares.append(float(agrees[shown].mean()))
        elif inliers is not None and int(inliers[inside].sum()) >= _SIGHTED_INLIERS:
            # A strip of it narrower than a cell (`inliers` counts those in cells the copy does
            # not cover), whose keypoints align where they sat: a crop that keeps a fifth of one
            # part of a photo split at a drawn line (a52 F6). Where the copy covers cells of it,
            # they are judged: a picture wrongly banked with another beside it is not shown by
            # its neighbour alone.
            shares.append(1.0)
    return shares


def judged_panels(grid: ContentGrid) -> list[tuple[npt.NDArray[np.bool_], int]]:
    """A collage's panels with photo cells enough to judge (not a gutter, a caption band or the
    interface beside a collage): each panel's cells and its photo cell count."""
    if grid.panels is None:
        return []
    photo = grid.kinds == Cell.PHOTO
    panels = [(grid.panels == panel) for panel in np.unique(grid.panels).tolist()]
    counted = [(inside, int((photo & inside).sum())) for inside in panels]
    return [(inside, cells) for inside, cells in counted if cells >= _MIN_JUDGED]


def _shown_cells(banked: ContentGrid) -> npt.NDArray[np.bool_]:
    """The banked cells a copy shows no unrelated photograph over: the photo and the drawn
    cells it encloses (a drawn subject in a photographed room; a10), and what is drawn or
    written away from the photo (a45 F3: another picture beside a shared meme panel, where the
    banked one's smooth sky read as drawn). The cells along the photo's edge are left out:
    they hold the photo's border and its surround, which another app shows differently."""
    photo = (banked.kinds == Cell.PHOTO).reshape(GRID, GRID)
    padded = np.pad(photo, 1)
    near = np.zeros_like(photo)
    for dy in range(3):
        for dx in range(3):
            near |= padded[dy : dy + GRID, dx : dx + GRID]
    away: npt.NDArray[np.bool_] = (banked.kinds == Cell.GRAPHIC) & ~near.ravel()
    return _picture_cells(banked) | away


def _picture_cells(banked: ContentGrid) -> npt.NDArray[np.bool_]:
    """The banked photo's cells and the drawn ones it encloses."""
    photo: npt.NDArray[np.bool_] = banked.kinds == Cell.PHOTO
    region = photo_region(banked)
    if region is None:
        return photo
    left, top, right, bottom = region
    enclosed = np.zeros((GRID, GRID), bool)
    enclosed[top:bottom, left:right] = True
    picture: npt.NDArray[np.bool_] = photo | (enclosed.ravel() & (banked.kinds == Cell.GRAPHIC))
    return picture


_MIDDLE = np.zeros((GRID, GRID), bool)
_MIDDLE[GRID // 4 : GRID - GRID // 4, GRID // 4 : GRID - GRID // 4] = True
_MIDDLE_CELLS: Final = _MIDDLE.ravel()


def _middle_agreement(
    banked: ContentGrid,
    query: ContentGrid,
    agrees: npt.NDArray[np.bool_],
    covered: npt.NDArray[np.bool_],
) -> float | None:
    judged = _MIDDLE_CELLS & covered
    count = int(judged.sum())
    if count < int(_MIDDLE_CELLS.sum()) // 2 or _drawn_over(banked, query, agrees, covered):
        return None
    banked_flat = banked.kinds == Cell.FLAT
    same = np.where(banked_flat, query.kinds == Cell.FLAT, agrees)
    return float(same[judged].mean())


def _drawn_over(
    banked: ContentGrid,
    query: ContentGrid,
    agrees: npt.NDArray[np.bool_],
    covered: npt.NDArray[np.bool_],
) -> bool:
    """Whether what differs in the middle is drawn over the banked photo (a large sticker or
    emoji over its middle: a82 H3, at a quarter of the picture), where the photo around it
    agrees: most of the middle's differing cells are the banked photo's and show drawn, and
    the photo's cells around the middle agree. A shared frame around two pictures agrees on
    drawn cells only; another drawn subject stands where the banked picture had a drawn one."""
    photo = banked.kinds == Cell.PHOTO
    differing = _MIDDLE_CELLS & covered & ~agrees
    drawn_over = differing & photo & (query.kinds != Cell.PHOTO)
    around = ~_MIDDLE_CELLS & covered & photo
    return (
        3 * int(drawn_over.sum()) >= 2 * max(1, int(differing.sum()))
        and int(around.sum()) >= _AROUND_PHOTO
        and float(agrees[around].mean()) >= _AROUND_AGREEMENT
    )


# The banked photo's cells around the middle quarter that show it with a sticker over the middle
# (of 48), and the share of them that agree: a picture's own re-encoded copies agree on 0.9 or
# more of their photo cells.
_AROUND_PHOTO: Final = 12
_AROUND_AGREEMENT: Final = 0.85
