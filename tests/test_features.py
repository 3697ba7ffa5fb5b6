"""ORB feature sets: capped, spread over the picture, serialised without loss, and refused when
malformed."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from schoolgate.media.features import FeatureSettings, LocalFeatures, extract_features
from tests.support.imagery import EDITS, skimage_photo


def test_features_are_capped_and_inside_the_working_frame() -> None:
    features = extract_features(skimage_photo("astronaut"), FeatureSettings(max_features=300))
    assert 200 <= len(features) <= 300
    assert (features.width, features.height) == (512, 512)
    assert features.points.min() >= 0
    assert features.points.max() < 512
    assert features.descriptors.shape == (len(features), 32)


def test_caption_text_does_not_take_the_whole_budget() -> None:
    """The strongest corners of a captioned photo are the caption's letters; keypoints are spread
    over a grid so the photo around it keeps most of them."""
    coffee = skimage_photo("coffee")
    captioned = Image.open(io.BytesIO(EDITS["caption_middle"](coffee, 2)))
    features = extract_features(captioned)
    band_top, band_bottom = 0.44 * features.height, 0.56 * features.height
    in_band = ((features.points[:, 1] >= band_top) & (features.points[:, 1] <= band_bottom)).mean()
    assert in_band < 0.3


def test_round_trip_and_malformed_sets() -> None:
    features = extract_features(skimage_photo("rocket"))
    data = features.to_bytes()
    back = LocalFeatures.from_bytes(data)
    assert (back.width, back.height) == (features.width, features.height)
    assert np.array_equal(back.points, features.points)
    assert np.array_equal(back.descriptors, features.descriptors)
    assert back.grid is not None
    assert features.grid is not None
    assert np.array_equal(back.grid.bits, features.grid.bits)
    assert np.array_equal(back.grid.kinds, features.grid.kinds)
    assert back.luma is None  # the working frame is never stored
    # Derived data only: far smaller than the picture it came from (a 576-byte content grid).
    assert len(data) <= 500 * 40 + 16 + 576
    legacy = LocalFeatures(features.points, features.descriptors, 512, 340).to_bytes()
    assert legacy[:4] == b"SGF1"
    assert LocalFeatures.from_bytes(legacy).grid is None  # sets banked before grids still load
    for broken in (b"", data[:-1], b"XXXX" + data[4:], data + b"\0"):
        with pytest.raises(ValueError, match="feature set"):
            LocalFeatures.from_bytes(broken)


def test_flat_and_tiny_images_give_empty_sets() -> None:
    assert len(extract_features(Image.new("RGB", (640, 480), (90, 120, 200)))) == 0
    tiny = extract_features(Image.new("L", (3, 2), 0))
    assert len(tiny) == 0
    assert LocalFeatures.from_bytes(tiny.to_bytes()).descriptors.shape == (0, 32)
