"""Collages re-laid (issue 18, adversarial pass a52 F2 and F2b, goal "get a banked picture
through"): a banked 2x2 grid re-laid as a stack of its four pictures went through, with or
without lines between them, and a strip of four banked with 1 px lines was banked as three
pictures, so every re-layout of it went through. Lines too thin for the working frame are now
looked for at the picture's own scale, and a query laid out as pictures is also looked at in
pieces, each with a keypoint budget of its own. Two of four pictures are still another picture.
Banked with `schoolgate hashes add`, judged as the proxy judges."""

from __future__ import annotations

from pathlib import Path

import pytest

from schoolgate.media.signals import query_pieces
from tests.support.imagery import encode
from tests.test_collage_panels import _photo, grid_of_four, panels, strip_of
from tests.test_robust_precision import _bank

NAMES = ("astronaut", "coffee", "chelsea", "motorcycle_left")


def test_a_strip_of_four_with_one_pixel_lines_is_four_pictures() -> None:
    # 1,603 px wide: a 1 px line is a third of a pixel in the 512 px working frame.
    assert panels(strip_of(NAMES, 1)) == 4
    assert panels(strip_of(NAMES, 1, across=False)) == 4


@pytest.mark.parametrize("gutter", [0, 1])
def test_a_grid_relaid_as_a_stack_is_blocked_and_two_of_its_pictures_are_not(
    tmp_path: Path, gutter: int
) -> None:
    """a52 F2: each picture of a stack of four is a quarter of the frame, and a quarter of the
    query's keypoints fell on it: the whole view found two of the four."""
    with _bank(tmp_path, {"grid.png": encode(grid_of_four(NAMES, 1), "PNG")}) as bank:
        assert bank.blocked(strip_of(NAMES, gutter, across=False), "JPEG")
        assert bank.blocked(strip_of(NAMES[::-1], gutter, across=False), "JPEG")
        assert not bank.blocked(strip_of((NAMES[0], NAMES[3]), gutter, across=False), "JPEG")
        assert not bank.blocked(strip_of((NAMES[1], NAMES[2]), gutter), "JPEG")


def test_a_strip_banked_with_thin_lines_is_blocked_re_laid_as_a_grid(tmp_path: Path) -> None:
    """a52 F2b: banked as three pictures (two of them one), its pictures apart never showed
    three of the three."""
    with _bank(tmp_path, {"strip.png": encode(strip_of(NAMES, 1), "PNG")}) as bank:
        assert bank.blocked(grid_of_four(NAMES[::-1], 1), "JPEG")
        assert bank.blocked(strip_of(NAMES, 1, across=False), "JPEG")
        assert not bank.blocked(grid_of_four((NAMES[0], "camera", NAMES[2], "rocket"), 1))


def test_only_a_query_laid_out_as_pictures_is_looked_at_in_pieces() -> None:
    photo = _photo("astronaut")
    assert query_pieces(photo, collage_found=False) == []
    assert query_pieces(strip_of(NAMES, 0, across=False), collage_found=False)
    assert query_pieces(grid_of_four(NAMES, 1), collage_found=False)
    assert query_pieces(photo, collage_found=True)
    # every piece lies inside the picture: none is padded out past its edges
    for piece in query_pieces(strip_of(NAMES[:3], 0), collage_found=True):
        assert piece.width <= 3 * 400
        assert piece.height <= 400
