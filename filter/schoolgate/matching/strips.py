"""Copies whose parts moved apart: where a copy's strips are displaced from one another, each
cell of the content check is compared where the copy's own keypoints put it.

A JPEG with a few bytes of its entropy-coded data damaged still shows its picture, in horizontal
bands each shifted sideways by whole blocks (and tinted): the decoder loses a block or gains one
and carries on (adversarial pass a74 F1: the banked astronaut with 10-40 bytes flipped, plainly
recognisable in a browser, aligned on one band, and the content check saw the other bands' cells
as another picture). Glitch and slice effects do the same on purpose.

Asked only where the plain comparison refused a copy that shows a part of the banked picture
where it lies (robust._check, `shows_a_part`), each cell is moved by:

- its own matched keypoints: at least `_MIN_SUPPORT` of the matches near it agree on one
  sideways offset from the global transform. Matches in a different picture point every which
  way, so nowhere do they agree on an offset;
- a search of its row of cells, where a band lost its keypoints to a tint or a clipped
  brightness: one sideways offset at which most of the row agrees, on comparisons the copy
  makes clearly, and at no other place (what agrees anywhere along a row, a bar's edge or a
  texture, moves nothing); where no row moves, the same search of each column of cells up
  and down (a slice effect's columns: a77 J1);
- a neighbour's offset, where it agrees under it (a band's edge cells hold few keypoints).

A cell across the seam of two bands shows part of each, and a band thinner than a row of cells
leaves its row's other cells in pieces: where such a cell (at a seam, or in a row where a band
moved) disagrees, it is taken as not shown, as a cell cropped away, not as another picture
(a76 H1, H2). A band whose offset is found nowhere is still judged where it lies.
"""

from __future__ import annotations

from typing import Final

import cv2
import numpy as np

from schoolgate.matching.geometry import mapped
from schoolgate.media.content_grid import (
    BLOCKS,
    CELL_MATCH_BITS,
    GRID,
    Cell,
    ContentGrid,
    content_grid,
)

_MIN_SUPPORT: Final = 4  # matches near a cell agreeing on its offset
_MAX_SHIFT: Final = 0.25  # of the frame's larger side: farther is another place, not a strip
_MARGIN: Final = 0.25  # of a cell: matches this near a cell count for it
_MIN_ROW_AGREEING: Final = 3  # cells of a row agreeing at one sideways shift
_ROW_SHARE: Final = 0.5  # and this share of the row's cells with structure
# A cell of a searched row agrees where at least _MIN_CLEAR of its 40 comparisons are clear (the
# blocks differ by _CLEAR_STEP grey levels or more) and all but one in _CLEAR_AGREEMENT of
# those are as banked: an unrelated cell with 20 clear comparisons does so about once in 800
# tries, and a row needs three cells or more agreeing at one offset, and at no other.
_CLEAR_STEP: Final = 3.0
_MIN_CLEAR: Final = 20
_CLEAR_AGREEMENT: Final = 6
_COARSE_STEPS: Final = 128  # offsets first tried across a frame's width
_MIN_SHOWN: Final = 3  # cells of the banked picture a copy in parts shows where it lies


def cell_shifts(
    source: np.ndarray, target: np.ndarray, transform: np.ndarray, size: tuple[int, int],
    tolerance: float,
) -> np.ndarray:  # fmt: skip
    """Each grid cell's sideways offset (GRID * GRID, 2; row-major, in pixels of the `size`
    frame) from where `transform` puts the query's content to where its matched keypoints say
    it is: zero unless at least _MIN_SUPPORT matches near the cell (`source` query points ->
    `target` points in the frame) agree on one offset within `tolerance`, more of them than
    agree on the transform itself, along half a cell or more. A strip moves sideways (a
    decoder that lost its place in the rows, a slice effect); an offset up or down is one
    element repeated (a chat's avatars and bubbles), and matches on one small spot are one
    element too."""
    width, height = size
    shifts = np.zeros((GRID * GRID, 2))
    if len(source) < _MIN_SUPPORT:
        return shifts
    offsets = target - mapped(transform, source)
    limit = _MAX_SHIFT * max(width, height)
    sideways = ((np.abs(offsets[:, 0]) > tolerance) & (np.abs(offsets[:, 0]) <= limit)
                & (np.abs(offsets[:, 1]) <= tolerance))  # fmt: skip
    if int(sideways.sum()) < _MIN_SUPPORT:
        return shifts
    at_rest = np.abs(offsets).max(axis=1) <= tolerance
    rows = np.linspace(0, height, GRID + 1)
    columns = np.linspace(0, width, GRID + 1)
    moved, moved_at = offsets[sideways], target[sideways]
    resting_at = target[at_rest]
    for row in range(GRID):
        top, bottom = _widened(rows, row)
        for column in range(GRID):
            left, right = _widened(columns, column)
            near = _within(moved_at, left, top, right, bottom)
            if int(near.sum()) < _MIN_SUPPORT:
                continue
            resting = int(_within(resting_at, left, top, right, bottom).sum())
            shifts[row * GRID + column] = _agreed_offset(
                moved[near], moved_at[near], resting, tolerance, width / GRID / 2
            )
    return shifts


def _within(points: np.ndarray, left: float, top: float, right: float, bottom: float
            ) -> np.ndarray:  # fmt: skip
    inside: np.ndarray = ((points[:, 0] >= left) & (points[:, 0] < right)
                          & (points[:, 1] >= top) & (points[:, 1] < bottom))  # fmt: skip
    return inside


def _widened(edges: np.ndarray, index: int) -> tuple[float, float]:
    margin = _MARGIN * float(edges[1] - edges[0])
    return float(edges[index]) - margin, float(edges[index + 1]) + margin


def _agreed_offset(
    offsets: np.ndarray, points: np.ndarray, resting: int, tolerance: float, span: float
) -> np.ndarray:
    """The sideways offset most of `offsets` agree on, where at least _MIN_SUPPORT agree, more
    than the `resting` matches that agree with the transform, and their `points` lie along
    `span` pixels or more; zero otherwise."""
    apart = np.abs(offsets[:, None, :] - offsets[None, :, :]).max(axis=2)
    best = int(np.argmax((apart <= tolerance).sum(axis=1)))
    together = apart[best] <= tolerance
    if (
        int(together.sum()) < _MIN_SUPPORT
        or int(together.sum()) <= resting
        or np.ptp(points[together, 0]) < span
    ):
        return np.zeros(2)
    return np.asarray(np.median(offsets[together], axis=0))


def shows_a_part(grid: ContentGrid, banked: ContentGrid) -> bool:
    """Whether an aligned copy (`grid`, warped into the banked frame) shows a part of the
    `banked` picture where it lies: a copy whose parts moved apart aligns on one of them, whose
    photo cells agree (drawn cells, for a drawing), `_MIN_SHOWN` of them or more. Another
    photo in the same chat screen or frame, which only what surrounds it aligned, shows none,
    and no part of it is searched for elsewhere."""
    photo = banked.photo_cells >= _MIN_SHOWN
    judged = banked.kinds == (Cell.PHOTO if photo else Cell.GRAPHIC)
    return int((agreeing(grid, banked) & judged).sum()) >= _MIN_SHOWN


def warp_in_strips(
    luma: np.ndarray,
    transform: np.ndarray,
    size: tuple[int, int],
    shifts: np.ndarray,
    banked: ContentGrid,
    plain: tuple[np.ndarray, np.ndarray, ContentGrid] | None = None,
) -> tuple[np.ndarray, np.ndarray, ContentGrid] | None:
    """`luma` warped by `transform` into a `size` frame, the mask of the pixels it covers and
    its grid, each grid cell taken from the warp moved by its shift (`cell_shifts`, or a
    search of the rows that disagree with the `banked` grid); None where nothing moved. A cell that
    disagrees and has no shift of its own takes a neighbour's where the copy agrees there: a
    strip's edge cells hold too few keypoints to say their offset. `plain`: the warp and its
    grid, where already made."""
    if plain is None:
        warped, inside = warp(luma, transform, size)
        plain = (warped, inside, content_grid(warped, inside))
    warped, inside = plain[0].copy(), plain[1].copy()
    rounded = _searched_rows(np.round(shifts).astype(int), warped, inside, banked, plain[2])
    if not rounded.any():
        rounded = _searched_columns(rounded, warped, inside, banked, plain[2])
    moved = {shift: warp(luma, _moved(transform, shift), size)
             for shift in {tuple(s) for s in rounded.tolist() if s != [0, 0]}}  # fmt: skip
    if not moved:
        return None
    rounded = _borrowed(rounded, moved, plain[2], banked)
    boxes = _boxes(size)
    for shift, (shifted, shifted_inside) in moved.items():
        for cell in np.flatnonzero((rounded == shift).all(axis=1)).tolist():
            warped[boxes[cell]] = shifted[boxes[cell]]
            inside[boxes[cell]] = shifted_inside[boxes[cell]]
    # A cell across the seam of two strips shows part of each, neither where it belongs, and a
    # row where a strip moved holds pieces of others: where it disagrees, the copy is taken not
    # to show it (as a cell cropped away).
    sideways = (rounded[:, 0] != 0).reshape(GRID, GRID)
    upright = (rounded[:, 1] != 0).reshape(GRID, GRID)
    in_moved = np.repeat(sideways.any(axis=1), GRID) | np.tile(upright.any(axis=0), GRID)
    grid = content_grid(warped, inside)
    torn = (_seams(rounded) | in_moved) & ~agreeing(grid, banked)
    for cell in np.flatnonzero(torn).tolist():
        inside[boxes[cell]] = False
    kinds = grid.kinds.copy()
    kinds[torn] = Cell.UNCOVERED  # what content_grid gives for a cell none of which is covered
    return warped, inside, ContentGrid(grid.bits, kinds)


def _seams(shifts: np.ndarray) -> np.ndarray:
    """The cells whose shift differs from a neighbour's (above, below, left or right)."""
    field = shifts.reshape(GRID, GRID, 2)
    seam = np.zeros((GRID, GRID), bool)
    differs_down = (field[1:] != field[:-1]).any(axis=2)
    differs_right = (field[:, 1:] != field[:, :-1]).any(axis=2)
    seam[1:] |= differs_down
    seam[:-1] |= differs_down
    seam[:, 1:] |= differs_right
    seam[:, :-1] |= differs_right
    return seam.ravel()


def _borrowed(
    shifts: np.ndarray,
    moved: dict[tuple[int, ...], tuple[np.ndarray, np.ndarray]],
    grid: ContentGrid,
    banked: ContentGrid,
) -> np.ndarray:
    """`shifts` with each unshifted cell that disagrees where it lies given the first of its
    neighbours' shifts under which it agrees."""
    agrees: dict[tuple[int, ...], np.ndarray] = {(0, 0): agreeing(grid, banked)}
    for shift, (shifted, shifted_inside) in moved.items():
        agrees[shift] = agreeing(content_grid(shifted, shifted_inside), banked)
    own = shifts.reshape(GRID, GRID, 2)
    result = shifts.copy()
    for cell in np.flatnonzero(~agrees[(0, 0)] & (shifts == 0).all(axis=1)).tolist():
        row, column = divmod(cell, GRID)
        around = own[max(0, row - 1) : row + 2, max(0, column - 1) : column + 2].reshape(-1, 2)
        for shift in dict.fromkeys(tuple(s) for s in around.tolist() if s != [0, 0]):
            if agrees[shift][cell]:
                result[cell] = shift
                break
    return result


def agreeing(query: ContentGrid, banked: ContentGrid) -> np.ndarray:
    close: np.ndarray = np.bitwise_count(query.bits ^ banked.bits) <= CELL_MATCH_BITS
    agrees: np.ndarray = close & (query.kinds != Cell.UNCOVERED)
    return agrees


def _boxes(size: tuple[int, int]) -> list[tuple[slice, slice]]:
    width, height = size
    rows = np.linspace(0, height, GRID + 1).astype(int)
    columns = np.linspace(0, width, GRID + 1).astype(int)
    return [np.s_[rows[r] : rows[r + 1], columns[c] : columns[c + 1]]
            for r in range(GRID) for c in range(GRID)]  # fmt: skip


def _moved(transform: np.ndarray, shift: tuple[int, ...]) -> np.ndarray:
    """`transform` followed by a shift, in its own form (2x3 or 3x3)."""
    full = transform if transform.shape[0] == 3 else np.vstack([transform, [0.0, 0.0, 1.0]])
    moved: np.ndarray = (
        np.array([[1.0, 0.0, shift[0]], [0.0, 1.0, shift[1]], [0.0, 0.0, 1.0]]) @ full
    )
    return moved if transform.shape[0] == 3 else moved[:2]


def warp(luma: np.ndarray, transform: np.ndarray, size: tuple[int, int]
         ) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """`luma` warped by `transform` (2x3 or 3x3) into a `size` frame, and the pixels it covers."""
    warp = cv2.warpPerspective if transform.shape[0] == 3 else cv2.warpAffine
    warped = np.asarray(warp(luma, transform, size, flags=cv2.INTER_LINEAR), np.uint8)
    inside = np.asarray(warp(np.ones_like(luma), transform, size, flags=cv2.INTER_NEAREST), bool)
    return warped, inside


def _searched_rows(
    shifts: np.ndarray,
    warped: np.ndarray,
    inside: np.ndarray,
    banked: ContentGrid,
    grid: ContentGrid,
) -> np.ndarray:
    """`shifts` with a sideways shift for the cells of each row of cells that has none and
    disagrees where it lies, where one shift makes most of the row agree, and no other: a
    strip that moved sideways and lost its keypoints to a tint or a clipped brightness (a74
    F1: a damaged JPEG's lower bands, yellow and shifted by three blocks). `grid`: the
    copy's grid where it lies."""
    agrees = agreeing(grid, banked).reshape(GRID, GRID)
    counted = (banked.kinds != Cell.FLAT).reshape(GRID, GRID)
    moved = shifts.reshape(GRID, GRID, 2).any(axis=(1, 2))
    wanting = (counted & ~agrees).sum(axis=1) >= _MIN_ROW_AGREEING - 1
    rows = np.flatnonzero(wanting & ~moved)
    if not len(rows):
        return shifts
    offsets, found = _row_offsets(warped, inside, banked, rows, counted[rows])
    result = shifts.reshape(GRID, GRID, 2).copy()
    for row, offset, cells in zip(rows.tolist(), offsets, found, strict=True):
        if offset and int(cells.sum()) >= int((agrees[row] & counted[row]).sum()) + 2:
            result[row][cells] = (offset, 0)
    return result.reshape(GRID * GRID, 2)


def _searched_columns(
    shifts: np.ndarray,
    warped: np.ndarray,
    inside: np.ndarray,
    banked: ContentGrid,
    grid: ContentGrid,
) -> np.ndarray:
    """`_searched_rows` on the picture turned on its side: a column of cells slid up or down
    (a slice effect's columns; a77 J1)."""
    on_side = (np.ascontiguousarray(warped.T), np.ascontiguousarray(inside.T))
    searched = _searched_rows(_turned_shifts(shifts), *on_side, turned(banked), turned(grid))
    return _turned_shifts(searched)


def _turned_shifts(shifts: np.ndarray) -> np.ndarray:
    """Cell shifts of the picture turned on its side (rows and columns, x and y swapped)."""
    on_side: np.ndarray = shifts.reshape(GRID, GRID, 2).transpose(1, 0, 2)[..., ::-1]
    return on_side.reshape(GRID * GRID, 2).copy()


def turned(grid: ContentGrid) -> ContentGrid:
    """The grid of the picture turned on its side: cells transposed, and each cell's
    comparisons across become those down and the other way round."""
    flags = grid_flags(grid).reshape(GRID, GRID, -1)
    across = BLOCKS * (BLOCKS - 1)
    right = flags[..., :across].reshape(GRID, GRID, BLOCKS, BLOCKS - 1)
    below = flags[..., across:].reshape(GRID, GRID, BLOCKS - 1, BLOCKS)
    swapped = np.concatenate(
        [below.transpose(1, 0, 3, 2).reshape(GRID, GRID, -1),
         right.transpose(1, 0, 3, 2).reshape(GRID, GRID, -1)], axis=2
    )  # fmt: skip
    packed = np.zeros((GRID * GRID, 8), np.uint8)
    packed[:, 3:] = np.packbits(swapped.reshape(GRID * GRID, -1), axis=1)
    bits = packed.view(">u8").ravel().astype(np.uint64)
    kinds = grid.kinds.reshape(GRID, GRID).T.ravel().copy()
    return ContentGrid(bits, kinds)


def _row_offsets(
    warped: np.ndarray, inside: np.ndarray, banked: ContentGrid, rows: np.ndarray,
    counted: np.ndarray,
) -> tuple[list[int], np.ndarray]:  # fmt: skip
    """For each row of cells in `rows`: the sideways offset (pixels; 0 for none) at which
    most of its `counted` cells agree with the banked row, and at no other place, and which
    agree there. Searched every _COARSE_STEPS-th of the frame's width, then pixel by pixel
    around each row's best."""
    width = warped.shape[1]
    step = max(1, width // _COARSE_STEPS)
    rows_of = _RowsOf(warped, inside, banked, rows)
    offsets = np.arange(-int(_MAX_SHIFT * width), int(_MAX_SHIFT * width) + 1, step)
    totals = rows_of.agreeing(np.arange(len(rows)), offsets, counted).sum(axis=2)
    found: list[int] = []
    cells = np.zeros((len(rows), GRID), bool)
    for number, row_totals in enumerate(totals):
        best = int(np.argmax(row_totals))
        needed = max(_MIN_ROW_AGREEING, int(np.ceil(_ROW_SHARE * int(counted[number].sum()))))
        if int(row_totals[best]) < needed - 1:
            found.append(0)  # a pixel or two from the best does not make up two cells
            continue
        fine = np.arange(offsets[best] - step + 1, offsets[best] + step)
        agreeing = rows_of.agreeing(np.array([number]), fine, counted[number : number + 1])[0]
        peak = int(np.argmax(agreeing.sum(axis=1)))
        # Found at one place: a row that agrees as well a block away or more agrees on
        # something that looks alike anywhere along it (a bar's edge, a gradient, a texture).
        elsewhere = np.abs(offsets - fine[peak]) > width / (GRID * BLOCKS)
        if (
            int(agreeing[peak].sum()) < needed
            or fine[peak] == 0
            or int(row_totals[elsewhere].max(initial=0)) >= int(agreeing[peak].sum()) - 1
        ):
            found.append(0)
            continue
        found.append(int(fine[peak]))
        cells[number] = agreeing[peak]
    return found, cells


class _RowsOf:
    """Rows of cells of a warped copy, compared with the banked grid's at sideways offsets."""

    def __init__(self, warped: np.ndarray, inside: np.ndarray, banked: ContentGrid,
                 rows: np.ndarray) -> None:  # fmt: skip
        height, self.width = warped.shape
        # Every block row (of the grid's 40) summed down each column, then along the row:
        # the integral image's rows at the block rows' edges, less those above them.
        edges = np.linspace(0, height, GRID * BLOCKS + 1).astype(int)
        lines = (rows[:, None] * BLOCKS + np.arange(BLOCKS)).ravel()
        integral = cv2.integral(warped, sdepth=cv2.CV_32F)
        sums = integral[edges[lines + 1]] - integral[edges[lines]]
        sums /= np.diff(edges)[lines].astype(np.float32)[:, None]
        self.sums = sums.reshape(len(rows), BLOCKS, -1)  # (row, block row, width + 1)
        # A column counts as shown where the copy covers all of it, across the row of cells.
        cell_edges = np.linspace(0, height, GRID + 1).astype(int)
        full = np.stack([inside[cell_edges[r] : cell_edges[r + 1]].all(axis=0) for r in rows])
        self.present = np.hstack([np.zeros((len(rows), 1)), np.cumsum(full, axis=1)])
        wanted = grid_flags(banked).reshape(GRID, GRID, -1)[rows][:, None]  # (row, 1, cell, 40)
        across = BLOCKS * (BLOCKS - 1)
        self.across = wanted[..., :across].reshape(*wanted.shape[:3], BLOCKS, BLOCKS - 1)
        self.down = wanted[..., across:].reshape(*wanted.shape[:3], BLOCKS - 1, BLOCKS)

    def agreeing(self, rows: np.ndarray, offsets: np.ndarray, counted: np.ndarray) -> np.ndarray:
        """(row, offset, cell): whether each cell of `rows` (indices into this set) agrees
        with the banked cell when the copy is moved `offset` pixels sideways."""
        width = self.width
        block_edges = np.linspace(0, width, GRID * BLOCKS + 1)
        starts = np.round(block_edges[:-1][None, :] - offsets[:, None]).astype(int)
        ends = np.round(block_edges[1:][None, :] - offsets[:, None]).astype(int)
        within = (starts >= 0) & (ends <= width)
        starts, ends = starts.clip(0, width), ends.clip(0, width)
        sums = self.sums[rows]
        spans = np.maximum(ends - starts, 1).astype(np.float32)
        means = (sums[:, :, ends] - sums[:, :, starts]) / spans  # (row, block row, offset, 40)
        means = means.reshape(len(rows), BLOCKS, len(offsets), GRID, BLOCKS)
        # (row, offset, cell, block row, block column), each cell's blocks together.
        blocks = np.ascontiguousarray(means.transpose(0, 2, 3, 1, 4))
        # Only comparisons the copy makes clearly count: two blocks of one texture or of
        # noise compare either way, and a cell of them would agree at one offset in a few.
        wrong = np.zeros(blocks.shape[:3], np.int64)
        judged = np.zeros(blocks.shape[:3], np.int64)
        for steps, as_banked in (
            (blocks[..., 1:] - blocks[..., :-1], self.across[rows]),
            (blocks[..., 1:, :] - blocks[..., :-1, :], self.down[rows]),
        ):
            clear = np.abs(steps) >= _CLEAR_STEP
            wrong += (((steps > 0) != as_banked) & clear).sum(axis=(3, 4))
            judged += clear.sum(axis=(3, 4))
        present = self.present[rows]
        shown_blocks = within[None] & (present[:, ends] - present[:, starts] == ends - starts)
        shown = shown_blocks.reshape(len(rows), len(offsets), GRID, BLOCKS).all(axis=3)
        agreeing: np.ndarray = ((judged >= _MIN_CLEAR) & (wrong * _CLEAR_AGREEMENT <= judged)
                                & shown & counted[:, None, :])  # fmt: skip
        return agreeing


def grid_flags(grid: ContentGrid) -> np.ndarray:
    """A grid's 40 comparison flags per cell (GRID * GRID, 40), as content_grid packed them."""
    packed = grid.bits.astype(">u8").view(np.uint8).reshape(-1, 8)[:, 3:]
    flags: np.ndarray = np.unpackbits(packed, axis=1).astype(bool)
    return flags
