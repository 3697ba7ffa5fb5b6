"""A robust index of package-shipped photos banked as a DSL banks them (every feature view), and
the banked photo a copy is matched to, looked up as the engine looks it up (each query view in
turn)."""

from __future__ import annotations

import io

from PIL import Image

from schoolgate.matching.robust import RobustEntry, RobustIndex
from schoolgate.media.features import extract_features
from schoolgate.media.signals import bank_feature_views, query_feature_views
from tests.support.glitches import jpeg
from tests.support.imagery import skimage_photo


def photo_index(names: tuple[str, ...]) -> RobustIndex:
    entries = [
        RobustEntry("incident", name, "", features)
        for name in names
        for _, features in bank_feature_views(Image.open(io.BytesIO(jpeg(skimage_photo(name)))))
    ]
    return RobustIndex(entries)


def best_match(index: RobustIndex, data: bytes) -> str | None:
    """The banked photo the copy `data` matches first; None where it matches none."""
    image = Image.open(io.BytesIO(data))
    image.load()
    for view in query_feature_views(image):
        hits = index.match(extract_features(view))
        if hits:
            return hits[0].content_id
    return None
