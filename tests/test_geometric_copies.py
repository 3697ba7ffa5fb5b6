"""Copies under a perspective or a shear (adversarial pass a15, N1 and N3): a phone photo of a
screen showing the banked picture (keystone, a slight blur, a warm tint, moire lines), and a copy
skewed in an editor, are the same picture and are blocked; other pictures under the same warps
are not. Benign scikit-image photos only, banked with `hashes add` and judged by the Inspector."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image, ImageFilter

from schoolgate.pipeline.engine import InspectionContext, Inspector
from tests.support.banked_inspector import banked_inspector
from tests.support.imagery import encode, skimage_photo

CTX = InspectionContext(client_ip="192.0.2.64", app="geometry-test")
BANKED = ("astronaut", "chelsea", "coffee")
OTHERS = (
    "rocket",
    "coins",
    "camera",
    "motorcycle_left",
    "hubble_deep_field",
    "immunohistochemistry",
)


def keystone(image: Image.Image, share: float, vertical: bool = True) -> Image.Image:
    """The picture photographed at a slant: one edge narrowed by `share` of it on each side."""
    array = np.asarray(image.convert("RGB"))
    h, w = array.shape[:2]
    src = np.array([[0, 0], [w, 0], [w, h], [0, h]], dtype=np.float32)
    if vertical:
        dst = np.array([[w * share, 0], [w * (1 - share), 0], [w, h], [0, h]], dtype=np.float32)
    else:
        dst = np.array([[0, h * share], [w, 0], [w, h], [0, h * (1 - share)]], dtype=np.float32)
    matrix = cv2.getPerspectiveTransform(src, dst)
    return Image.fromarray(cv2.warpPerspective(array, matrix, (w, h), borderValue=(250, 250, 250)))


def shear(image: Image.Image, amount: float) -> Image.Image:
    array = np.asarray(image.convert("RGB"))
    h, w = array.shape[:2]
    matrix = np.array([[1, amount, 0], [0, 1, 0]], dtype=np.float32)
    size = (int(w + abs(amount) * h), h)
    return Image.fromarray(cv2.warpAffine(array, matrix, size, borderValue=(250, 250, 250)))


def screen_photo(image: Image.Image) -> Image.Image:
    """A phone's photo of a screen: a 10% keystone, a little rotation, a blur, a warm cast and
    the screen's pixel rows showing as faint lines."""
    slanted = keystone(image, 0.10).rotate(3, expand=True, fillcolor=(40, 40, 40))
    array = np.asarray(slanted.filter(ImageFilter.GaussianBlur(1.2)), dtype=np.float32)
    array *= np.array([1.06, 1.0, 0.88], dtype=np.float32)
    array[::3] *= 0.92
    return Image.fromarray(np.clip(array, 0, 255).astype(np.uint8))


EDITS = {
    "keystone 7%": lambda im: keystone(im, 0.07),
    "keystone 15%": lambda im: keystone(im, 0.15),
    "keystone 20%": lambda im: keystone(im, 0.20),
    "keystone 20% sideways": lambda im: keystone(im, 0.20, vertical=False),
    "shear 20%": lambda im: shear(im, 0.20),
    "shear 45%": lambda im: shear(im, 0.45),
    "shear -30%": lambda im: shear(im, -0.30),
    "photo of a screen": screen_photo,
}


@pytest.fixture(scope="module")
def inspector(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Inspector]:
    checked = banked_inspector(
        tmp_path_factory.mktemp("geometry") / "bank",
        [skimage_photo(name) for name in BANKED],
        "    pdq_confirm_bits: 8\n",
        bank="incident-surround",
    )
    yield checked
    checked.close()


@pytest.mark.parametrize("edit", list(EDITS))
@pytest.mark.parametrize("name", BANKED)
def test_a_banked_picture_under_a_perspective_or_a_shear_is_blocked(
    inspector: Inspector, name: str, edit: str
) -> None:
    copy = EDITS[edit](skimage_photo(name))
    verdict = inspector.evaluate(encode(copy, "JPEG", quality=88), CTX)
    assert verdict.blocked, (name, edit)


@pytest.mark.parametrize("edit", list(EDITS))
@pytest.mark.parametrize("name", OTHERS)
def test_other_pictures_under_the_same_warps_are_not(
    inspector: Inspector, name: str, edit: str
) -> None:
    other = EDITS[edit](skimage_photo(name))
    verdict = inspector.evaluate(encode(other, "JPEG", quality=88), CTX)
    assert not verdict.blocked, (name, edit, verdict.reasons)


def test_the_match_names_its_geometry(inspector: Inspector, tmp_path: Path) -> None:
    verdict = inspector.evaluate(encode(keystone(skimage_photo("astronaut"), 0.15)), CTX)
    (match,) = [m for m in verdict.matches if m.tier == "robust"]
    evidence = dict(match.evidence)
    assert evidence["inliers"] >= 20
    assert evidence["content_agreement"] >= 0.5
