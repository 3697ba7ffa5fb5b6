"""Copies whose bands moved apart: a JPEG damaged in its scan data (adversarial pass a74 F1) and
the same damage drawn directly still match the banked picture, while what only looks alike
along a row (a bar's edge) or one repeated element moves nothing."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from schoolgate.matching.robust import RobustIndex
from schoolgate.matching.strips import cell_shifts, turned, warp, warp_in_strips
from schoolgate.media.content_grid import GRID, content_grid
from schoolgate.media.hashing import pdq_hash
from tests.support.banked_index import best_match, photo_index
from tests.support.glitches import flipped_jpeg, jpeg, slid_columns, slipped_bands
from tests.support.imagery import skimage_photo

PHOTOS = ("astronaut", "coffee", "rocket", "motorcycle_left", "chelsea", "camera",
          "immunohistochemistry")  # fmt: skip
IDENTITY = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])


@pytest.fixture(scope="module")
def index() -> RobustIndex:
    return photo_index(PHOTOS)


@pytest.mark.parametrize(
    ("name", "seed"),
    [("astronaut", 0), ("astronaut", 2), ("astronaut", 3), ("motorcycle_left", 1),
     ("motorcycle_left", 2), ("coffee", 1), ("coffee", 2), ("chelsea", 0), ("chelsea", 1),
     ("camera", 0), ("camera", 1),
     # A band whose offset was not found leaves its row's other cells unjudged, not replaced.
     ("immunohistochemistry", 0), ("immunohistochemistry", 2), ("motorcycle_left", 3),
     ("coffee", 4)],
)  # fmt: skip
def test_bands_slipped_sideways_and_tinted_still_match(index: RobustIndex, name: str,
                                                       seed: int) -> None:  # fmt: skip
    assert best_match(index, jpeg(slipped_bands(skimage_photo(name), seed))) == name


@pytest.mark.parametrize(
    ("name", "seed"),
    [("astronaut", 0), ("astronaut", 1), ("astronaut", 4), ("astronaut", 5), ("motorcycle_left", 1),
     ("motorcycle_left", 4), ("camera", 0), ("camera", 4)],
)  # fmt: skip
def test_a_jpeg_with_bytes_of_its_scan_flipped_still_matches(index: RobustIndex, name: str,
                                                             seed: int) -> None:  # fmt: skip
    original = jpeg(skimage_photo(name))
    damaged = flipped_jpeg(original, 10, seed)
    image = Image.open(io.BytesIO(damaged)).convert("RGB")
    # Damaged enough that the whole-picture hash no longer finds it: the bands moved.
    assert (
        bin(int(pdq_hash(image).hex, 16) ^ int(pdq_hash(skimage_photo(name)).hex, 16)).count("1")
        > 31
    )
    assert best_match(index, damaged) == name


@pytest.mark.parametrize(
    ("name", "seed"),
    [("astronaut", 0), ("astronaut", 2), ("astronaut", 3), ("coffee", 0), ("coffee", 2),
     ("motorcycle_left", 0), ("motorcycle_left", 1), ("immunohistochemistry", 0),
     ("immunohistochemistry", 2), ("chelsea", 1), ("chelsea", 2), ("camera", 1), ("camera", 2)],
)  # fmt: skip
def test_columns_slid_up_or_down_still_match(index: RobustIndex, name: str, seed: int) -> None:
    """a77 J1: a slice effect's columns slid up or down went through (17 of 21)."""
    assert best_match(index, jpeg(slid_columns(skimage_photo(name), seed))) == name


def test_a_grid_turned_on_its_side_is_the_grid_of_the_turned_picture() -> None:
    luma = np.asarray(skimage_photo("astronaut").convert("L").resize((512, 384)), np.uint8)
    on_side = turned(content_grid(luma))
    expected = content_grid(np.ascontiguousarray(luma.T))
    assert np.array_equal(on_side.bits, expected.bits)
    assert np.array_equal(on_side.kinds, expected.kinds)


def test_other_pictures_in_slipped_bands_do_not_match(index: RobustIndex) -> None:
    for name in ("coins", "moon", "page", "brick", "retina"):
        for seed in range(3):
            assert best_match(index, jpeg(slipped_bands(skimage_photo(name), seed))) is None
            assert best_match(index, jpeg(slid_columns(skimage_photo(name), seed))) is None


def _band_matches(offset: tuple[float, float], spots: int, seed: int = 0
                  ) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """Matches in a 512 x 512 frame: its top half in place, its band at rows 320-384 moved by
    `offset`, over `spots` places spread along the band."""
    rng = np.random.default_rng(seed)
    still = rng.uniform([0, 0], [512, 256], (60, 2))
    xs = np.repeat(np.linspace(40, 470, spots), max(1, 24 // spots))
    band = np.column_stack([xs + rng.uniform(-3, 3, len(xs)), rng.uniform(330, 374, len(xs))])
    source = np.vstack([still, band - np.asarray(offset)])
    target = np.vstack([still, band])
    return source, target


def test_a_band_moved_sideways_is_found_from_its_own_matches() -> None:
    source, target = _band_matches((-24.0, 0.0), spots=12)
    shifts = cell_shifts(source, target, IDENTITY, (512, 512), 4.0).reshape(GRID, GRID, 2)
    assert np.allclose(shifts[5, 1:7, 0], -24.0, atol=1.0)  # the band's row of cells
    assert not shifts[:4].any()  # the top half stays where the transform put it


def test_an_offset_up_or_down_or_on_one_spot_moves_nothing() -> None:
    # One element repeated lower down (a chat's avatar, a bubble) is not a strip that moved.
    source, target = _band_matches((0.0, -60.0), spots=12)
    assert not cell_shifts(source, target, IDENTITY, (512, 512), 4.0).any()
    # Matches on one small spot agreeing on an offset are one element, not a band.
    source, target = _band_matches((-24.0, 0.0), spots=1)
    assert not cell_shifts(source, target, IDENTITY, (512, 512), 4.0).any()


def test_random_offsets_move_nothing() -> None:
    rng = np.random.default_rng(3)
    target = rng.uniform(0, 512, (300, 2))
    source = target - rng.uniform(-100, 100, (300, 2))
    assert not cell_shifts(source, target, IDENTITY, (512, 512), 4.0).any()


def _luma(name: str) -> np.ndarray:
    image = skimage_photo(name).convert("L").resize((512, 512))
    return np.asarray(image, np.uint8)


def test_a_row_that_slipped_without_keypoints_is_searched_back() -> None:
    banked = _luma("astronaut")
    copy = banked.copy()
    copy[320:384] = np.roll(copy[320:384], 20, axis=1) // 2  # moved and darkened
    grid = content_grid(banked)
    plain, covered = warp(copy, IDENTITY, (512, 512))
    before = np.bitwise_count(content_grid(plain, covered).bits ^ grid.bits).reshape(GRID, GRID)
    found = warp_in_strips(copy, IDENTITY, (512, 512), np.zeros((GRID * GRID, 2)), grid)
    assert found is not None
    warped, inside, _ = found
    after = np.bitwise_count(content_grid(warped, inside).bits ^ grid.bits).reshape(GRID, GRID)
    assert int((before[5] <= 10).sum()) <= 4
    assert int((after[5] <= 10).sum()) >= 6


def test_a_bar_edge_that_agrees_anywhere_moves_nothing() -> None:
    # A caption bar's lower edge across a row agrees at any sideways shift: no shift is taken.
    banked = np.full((512, 512), 240, np.uint8)
    banked[340:] = 30
    banked[340:] += (np.random.default_rng(1).integers(0, 40, (172, 512))).astype(np.uint8)
    copy = banked.copy()
    copy[340:] = 30 + np.random.default_rng(2).integers(0, 40, (172, 512)).astype(np.uint8)
    banked_grid = content_grid(banked)
    assert (
        warp_in_strips(copy, IDENTITY, (512, 512), np.zeros((GRID * GRID, 2)), banked_grid) is None
    )
