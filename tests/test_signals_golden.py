"""Banking and matching hash exactly as they did before their code moved into one module.

tests/support/golden/signals.json was written by the code as it was before
`schoolgate.media.signals` existed (bank-side hashing in the CLI, match-side in the engine and the
robust tier): hashes and SHA-256 digests of feature sets only, never an image. Every banked hash
must stay matchable, so any difference here is a change to what banks mean. A dependency upgrade
that changes decoding (Pillow, libjpeg, OpenCV) would show here too: that needs a decision (re-hash
the banks), not a new golden file.

Decisions taken so far: 2026-12-04 (issue 18, adversarial pass a10), a drawing's content box
smaller than 15% of it is no longer banked as a view (a letter's letterhead matched every letter):
`edit:screenshot` of a procedural drawing lost its content PDQ and content features. Banks made
before keep those rows; they match only what such a box matched before. 2026-12-06 (issue 18,
a54 I2): the content box's own content box is judged by the same rule, in the whole image's
frame (a collage's second box had peeled one of its pictures away): `edit:downscale_320` and
`edit:jpeg_q30` of that drawing lost their second content PDQ, a band of 14% of it.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

from schoolgate.config import load_config
from schoolgate.media.features import LocalFeatures, extract_features
from schoolgate.media.normalise import analysis_views
from schoolgate.media.signals import (
    bank_feature_views,
    decode_for_analysis,
    item_signals,
    query_feature_views,
    view_pdq,
)
from tests.support import video_fixtures as vf
from tests.support.imagery import (
    EDITS,
    REFERENCE_PHOTOS,
    SHARED_REFERENCE,
    encode,
    procedural_scene,
    reference_photo,
    skimage_photo,
)

GOLDEN = Path(__file__).parent / "support" / "golden" / "signals.json"
_ADDED_VIEWS = (
    "picture",
    "squashed-",
    "photo-grid",
    "mirror-photo-grid",
    "panel-",
    "mirror-panel-",
    "negative",
    "mirror-negative",
    "mirror-picture",
    "framed-grid(",
)  # added later


def _items() -> dict[str, bytes]:
    items: dict[str, bytes] = {}
    if SHARED_REFERENCE.is_dir():
        for relative in REFERENCE_PHOTOS:
            items[f"ref:{relative}"] = encode(reference_photo(relative), "JPEG", quality=90)
    for name in ("astronaut", "coffee", "page"):
        items[f"skimage:{name}"] = encode(skimage_photo(name), "PNG")
    scene = procedural_scene(3)
    for edit, make in EDITS.items():
        items[f"edit:{edit}"] = make(scene, 7)
    items["video:scene1"] = vf.encode(vf.scene_frames(1, seconds=4.0).frames, 15, "libx264")
    return items


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _features_digest(features: LocalFeatures) -> str:
    """Keypoints and descriptors only, as banked before content grids were added beside them
    (issue 18): what must not change is what a banked descriptor means."""
    legacy = LocalFeatures(features.points, features.descriptors, features.width, features.height)
    return _digest(legacy.to_bytes())


def _signals(data: bytes) -> dict[str, Any]:
    config = load_config(None)
    item = item_signals(
        data, config, key_frames=config.banks.robust.video_key_frames, features=True
    )
    record: dict[str, Any] = {
        "media_type": item.media_type,
        "size": item.size,
        "sha256": item.exact.sha256,
        "md5": item.exact.md5,
        "sha1": item.exact.sha1,
        "key_frames": [[f.frame, _digest(f.image().tobytes())] for f in item.key_frames],
    }
    if item.video is not None:
        record["vpdq"] = [feature.line() for feature in item.video.features]
        record["vpdq_frames"] = len(item.video.features)
        if item.video.duration_s is not None:
            record["duration_s"] = round(item.video.duration_s, 3)
    if item.pdq is not None:
        record["pdq"], record["pdq_quality"] = item.pdq.hex, item.pdq.quality
        record["bank_content_pdq"] = [h.hex for h in item.content_pdq]
        # A view added later (issue 18's "picture" region and squashed copies) is new banked
        # data, not a change to what the views banked before it mean: the golden file holds the
        # older views.
        record["bank_features"] = [
            [name, _features_digest(f)]
            for name, f in item.features
            if not name.startswith(_ADDED_VIEWS)
        ]
        image = decode_for_analysis(data, config.limits).image
        views = analysis_views(image)
        record["query_pdq"] = [[h.hex for h in hashes] for hashes in view_pdq(views, True)]
        record["query_features"] = [
            _features_digest(extract_features(v)) for v in query_feature_views(image, views)
        ]
        # The feature views the robust tier banks for an image are bank_feature_views'.
        negative = config.banks.match_inverted
        assert [name for name, _ in bank_feature_views(image, negative=negative)] == [
            name for name, _ in item.features
        ]
    return record


ITEMS = _items()


@pytest.mark.parametrize("key", sorted(ITEMS))
def test_item_hashes_as_before_the_move(key: str) -> None:
    golden = json.loads(GOLDEN.read_text())
    assert _signals(ITEMS[key]) == golden[key]


def test_golden_file_covers_every_item() -> None:
    golden = json.loads(GOLDEN.read_text())
    expected = (
        set(golden)
        if SHARED_REFERENCE.is_dir()
        else {k for k in golden if not k.startswith("ref:")}
    )
    assert set(ITEMS) == expected
