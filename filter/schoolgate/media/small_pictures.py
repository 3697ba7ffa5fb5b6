"""The pictures shown small in a query's frame, each looked up on its own by the robust tier:
a chat screenshot's, a grid's thumbnails, a long picture's tiles.

In the whole view such a picture is a few dozen pixels across, below the scale it was banked at;
cropped (from the finer decode, where the query was decoded reduced) it is looked up at its own.
Where they are: the photo regions of the frame (media.photo_regions), pictures in plain frames (a
chat's bubble over a photo wallpaper: media.framed_pictures), and on a screen's wallpaper those
pasted straight on (media.pasted_pictures).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from itertools import islice

import numpy as np
from PIL import Image

from schoolgate.media.features import working_grey
from schoolgate.media.framed_pictures import framed_pictures, lies_in, screen_shaped
from schoolgate.media.pasted_pictures import pasted_pictures
from schoolgate.media.photo_regions import (
    BUSY_AROUND_FRAMED,
    MIN_REGION_SIDE,
    busy_blocks,
    busy_elsewhere,
    photo_regions,
    region_views,
)
from schoolgate.media.signals import query_tiles

# Small pictures looked up on their own per query: a gallery screen of 4 x 5 thumbnails, or a
# long chat's tiles, each showing a few (each costs a lookup, about 10-15 ms here).
MAX_SMALL_PICTURES = 20


def small_pictures(
    image: Image.Image,
    luma: np.ndarray | None,
    finer: Callable[[], Image.Image] | None,
    noisy: bool = False,
) -> Iterator[Image.Image]:
    """The pictures in the photo regions (media.photo_regions) of the image's working frame
    (`luma`, when the whole view's features kept it), cropped from `finer()` where the image
    was decoded reduced and a region is small in it, then of a long picture's tiles, at most
    MAX_SMALL_PICTURES; each frame is searched only when the ones before matched nothing."""

    def frames() -> Iterator[list[Image.Image]]:
        yield _pictures_in(image, working_grey(image) if luma is None else luma, finer, noisy)
        for tile in query_tiles(image):  # a long picture keeps its short side when decoded
            yield _pictures_in(tile, working_grey(tile))

    return islice((view for views in frames() for view in views), MAX_SMALL_PICTURES)


def _pictures_in(
    frame: Image.Image,
    luma: np.ndarray,
    finer: Callable[[], Image.Image] | None = None,
    noisy: bool = False,
) -> list[Image.Image]:
    """A frame's pictures in plain frames (a chat's bubble over a photo wallpaper), or where
    there are none, pasted straight on with straight edges (screen-shaped frames only), where
    its photo regions leave texture around them; then those of its photo regions. A framed or
    pasted picture inside a region small enough to be looked up whole is not looked up again."""
    blocks = busy_blocks(luma)  # (one pass for the regions and for what they leave)
    regions = photo_regions(luma, blocks)
    pictures = region_views(luma, frame, finer, regions)
    looked_at = [box for box, whole in regions if whole]
    # On a plain interface every picture is a region already; looking for frames costs 5 ms.
    textured = busy_elsewhere(blocks, looked_at) >= BUSY_AROUND_FRAMED
    if pictures and not textured:
        return pictures
    height, width = luma.shape
    places = [(left / width, top / height, right / width, bottom / height)
              for left, top, right, bottom in looked_at]  # fmt: skip
    found = framed_pictures(frame, MIN_REGION_SIDE, finer, noisy)
    if not found and textured and screen_shaped(frame):
        # A chat's picture pasted straight on its wallpaper, by its straight edges: 26 ms, only
        # over a wallpaper (on the precision bench's plain chats it took the p95 to 147 ms).
        found = pasted_pictures(frame, MIN_REGION_SIDE, finer)
    framed = [view for place, view in found
              if not any(lies_in(place, region) for region in places)]  # fmt: skip
    return [*framed, *pictures]
