"""What an item is hashed as, for banking and for matching, in one place.

A banked hash only ever matches a query hash computed the same way: the same decode (a reduced
JPEG scale), the same views (the whole image, then the picture inside a screenshot's or padded
copy's uniform bands), the same PDQ and the same local features. `schoolgate hashes add` (banking)
and the inspection engine (matching) both call this module, so that rule lives in one file.
Where the two sides differ on purpose (a query is also hashed in its 8 dihedral orientations,
a query video is sampled 4 times a second), the difference is written here, beside its twin.

Why one module of this length: the rule above; a bank-side view split off from its query-side
twin is how the two came to differ before (the content box banked at one level and looked up at
two).
"""

from __future__ import annotations

import math
from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass, field, replace
from functools import cache, partial
from typing import Final

import numpy as np
from PIL import Image, ImageOps

from schoolgate.config import Config
from schoolgate.errors import MediaRefused
from schoolgate.media.content_grid import (
    GRID,
    PICTURE_MAX_CELLS,
    ContentGrid,
    content_grid,
    judged_panels,
    photo_pixels,
    photo_region,
    small_photo_box,
)
from schoolgate.media.decode import (
    LONG_PICTURE,
    DecodedImage,
    MediaLimits,
    decode_finer,
    decode_image,
)
from schoolgate.media.features import (
    FINER_SIDE,
    PANEL_VIEW,
    PHOTO_JUDGE_VIEW,
    FeatureSettings,
    LocalFeatures,
    band_judge_name,
    extract_features,
    finer_grey,
    framed_judge_name,
    photo_judge,
    whole_grid,
    working_grey,
)
from schoolgate.media.framed_pictures import framed_pictures, lies_in, overlap, screen_shaped
from schoolgate.media.hashing import ExactHashes, PdqHash, exact_hashes, pdq_dihedral, pdq_hash
from schoolgate.media.normalise import (
    CONTENT_DEPTH,
    Box,
    analysis_views,
    content_box,
    squashed,
)
from schoolgate.media.panels import PANEL_MIN_SIDE, collage_boxes
from schoolgate.media.pasted_pictures import pasted_pictures
from schoolgate.media.photo_regions import (
    BUSY_AROUND_FRAMED,
    MIN_REGION_SIDE,
    busy_blocks,
    busy_elsewhere,
)
from schoolgate.media.sniff import MediaKind, sniff
from schoolgate.media.video import SampledFrame, VideoHasher, VideoHashes

# Banking may take longer than the proxy's per-upload budget: a long clip is hashed whole.
BANKING_TIME_BUDGET_S = 600.0


# ---------------------------------------------------------------------------------------------
# Images: both sides


def decode_for_analysis(data: bytes, limits: MediaLimits) -> DecodedImage:
    """Decode an image the one way both banking and matching use, so their hashes agree.

    PDQ hashes a 512 px image and the models take at most 320 px, so JPEGs may be decoded at a
    reduced DCT scale (the caps still judge the stored size): about 2x faster at 12 MP. Such a
    decode's `finer` gives the picture decoded again, once, when first asked, at least
    FINER_SIDE across (never past its stored size): a screenshot's small pictures are cropped
    from it (media.photo_regions)."""
    decoded = decode_image(data, limits, reduce_to=512)
    if decoded.scale >= 1:
        return decoded
    return replace(decoded, finer=cache(partial(decode_finer, data, decoded, limits, FINER_SIDE)))


def view_pdq(views: Sequence[Image.Image], dihedral: bool) -> list[list[PdqHash]]:
    """PDQ of each analysis view: its own orientation first, then (a query, with `dihedral`)
    the 7 other rotations and mirrors. Banking stores the first of each; matching looks up all."""
    return [pdq_dihedral(view) if dihedral else [pdq_hash(view)] for view in views]


# ORB's descriptors do not survive a squash to about half along one axis (adversarial pass a16:
# a copy squashed 2:1 and turned by a degree, or squashed along a slanted axis, went through),
# and no lookup-side view can undo a squash whose axis it does not know. So an item's photo can
# also be banked squashed to half along four axes 45 degrees apart, as ASIFT samples tilts: a
# copy squashed along any axis is then within a 1.8:1 squash of one of them (1.5:1 for an axis
# within 15 degrees of one). Opt-in (banks.robust.bank_squashed): see docs/configuration.md.
SQUASH_AXES = (0, 45, 90, 135)
SQUASH_RATIO = 0.5
NEGATIVE_VIEW = "negative"  # a photographic item's photo inverted (banks.match_inverted)
_PICTURE_IN_SCREEN = 0.5  # a screen's content box no larger than this share may be its picture


def bank_feature_views(
    image: Image.Image,
    mirrored: bool = True,
    settings: FeatureSettings | None = None,
    squashes: bool = False,
    finer: Image.Image | None = None,
    negative: bool = False,
    still: bool = True,
) -> Iterator[tuple[str, LocalFeatures]]:
    """(view name, local features) to bank for one item: the whole image, its content box when
    it has one, its picture region when that is a part of it (a screenshot's or a frame's photo,
    at its own scale: a copy shown at another size in another app matches it), (ORB does not
    match mirror images) its mirror image, and (with `squashes`) its photo (the picture region, or
    the whole image; none for a drawing or a document) squashed along each of SQUASH_AXES, and
    (with `negative`) that photo's negative. `finer`: the same picture decoded at a finer
    scale, where thin gutters are looked for. A screen whose picture is framed (or pasted with
    straight edges) over a busy background (`screen_framed_picture`) banks that picture as its
    picture region, and each view around it carries the picture's grid to judge its matches by
    (FRAMED_JUDGE_VIEW).
    A screen's picture (however found; its content box where that is a small part of it inside
    the textured region) is banked mirrored too, and a screen judged whole over a photo
    wallpaper carries its bands' grids (BAND_JUDGE_VIEW, `band_judges`).
    `still`: a still picture, which if screen-shaped is a screenshot; an upright video's frames
    are shaped so too, but are a camera's more often, and a framed print on a wall is
    background, so a video's key frames bank no picture apart."""
    finer = finer or image
    whole = extract_features(image, settings, finer=finer)
    yield "whole", whole
    judge = photo_judge(whole)
    if judge is not None:
        yield PHOTO_JUDGE_VIEW, judge[0]
    full = (0, 0, image.width, image.height)
    around = [("whole", whole, full)]  # views that a framed picture judges, and where they lie
    box = content_box(image)
    if box is not None:
        content = extract_features(image.crop(box.as_tuple()), settings)
        if banks_content_view(image, box, whole.grid, content.grid):
            yield "content", content
            around.append(("content", content, box.as_tuple()))
    screen = still and screen_shaped(image)
    picture = picture_box(whole, image.size)
    # A screen's banked content box that is a part of it, not its whole chat area, is its
    # picture inside plain bands, where the textured region holds it (and some wallpaper).
    boxed = _screen_picture(image, around) if screen else None
    if boxed is not None and (picture is None or lies_in(boxed, picture)):
        picture = None
    elif picture is not None and box is not None and overlap(picture, box.as_tuple()) >= 0.8:
        picture = None  # the content box is that picture
    else:
        boxed = None
    shown = None if picture is None else image.crop(picture)  # the picture region's pixels
    seen = None if shown is None else extract_features(shown, settings)
    if picture is not None and not banks_content_view(image, Box(*picture), whole.grid,
                                                      seen.grid if seen else None):  # fmt: skip
        picture = shown = seen = None
    if judge is not None and picture is None and whole.grid is not None and screen:
        # A small photo on a screen's plain interface: judged in the whole view, and banked on
        # its own too, from the finer decode (at 512 px it is a thumbnail), so that the photo
        # shared alone, or flipped, is found. (In a drawing, a photo patch is often its
        # background: banked alone, it took the overlay bench's false blocks from 20 to 22.)
        small = small_photo_box(whole.grid, whole.width, whole.height)
        if small is not None:
            picture = _mapped(small, (0, 0, whole.width, whole.height), image.size)
            shown = finer.crop(_mapped(picture, full, finer.size))
            seen = extract_features(shown, settings)
    framed = None if judge or not screen else screen_framed_picture(image, whole, finer)
    if framed is not None and picture is not None and not lies_in(framed[0], picture):
        framed = None  # the textured region found is another picture than the framed one
    if framed is not None:
        # The framed picture, where the textured region is that picture and the wallpaper
        # around it (a62 F1: a 720 px chat's "picture region" was its wallpaper).
        picture, shown = framed
        seen = extract_features(shown, settings)
    if seen is not None:
        yield "picture", seen
    # A picture small in a screen is not in the whole view's mirror at its own scale (a62 F3: a
    # chat's picture flipped was found 0 times in 40). A picture region of a photo is (and its
    # mirror, banked, took false blocks on the overlay bench from 20 to 22 of 120).
    # A screen's content box, where that is its picture, too (a63 F3: a dark chat's picture
    # inside plain bands, mirrored alone or in another app: 0 of 5).
    flippable = None
    if screen:
        flippable = shown if shown is not None or boxed is None else image.crop(boxed)
    photographic = whole.grid is not None and photo_region(whole.grid) is not None
    # A screen over a photo wallpaper with no picture found in it is judged whole, band by band
    # (below).
    unplaced = screen and photographic and judge is None and flippable is None and not framed
    # A wallpaper's own lines cut it into no collage: a brick wallpaper's mortar reads as
    # gutters, and so did the dark sky above a picture over a star field (the same phone's
    # other chats then matched both "pictures" of it, 13 of 13).
    collage = not (framed or unplaced)
    panels = panel_boxes(whole, image.size, finer_grey(finer, settings)) if collage else []
    for number, panel in enumerate(panels):
        yield f"{PANEL_VIEW}{number}", extract_features(image.crop(panel), settings)
    if mirrored:
        flipped_image = ImageOps.mirror(image)
        flipped_finer = flipped_image if finer is image else ImageOps.mirror(finer)
        mirror = extract_features(flipped_image, settings, finer=flipped_finer)
        yield "mirror", mirror
        if flippable is not None:
            yield "mirror-picture", extract_features(ImageOps.mirror(flippable), settings)
        if framed is not None:
            left, top, right, bottom = framed[0]
            flipped_box = (image.width - right, top, image.width - left, bottom)
            yield from framed_judges([("mirror", mirror, full)], flipped_box)
        for number, panel in enumerate(panels):  # one picture mirrored where it sits (a50 F2)
            flipped = ImageOps.mirror(image.crop(panel))
            yield f"mirror-{PANEL_VIEW}{number}", extract_features(flipped, settings)
        mirror_judge = photo_judge(mirror)
        if mirror_judge is not None:
            yield f"mirror-{PHOTO_JUDGE_VIEW}", mirror_judge[0]
    if framed is not None:
        yield from framed_judges(around, framed[0])
    if unplaced:
        # A screen judged whole over a photo wallpaper: no picture found in it, so its matches
        # are judged band by band too (a64 F1: the same phone's chats with another picture in
        # the bubble were blocked 16 of 30 on the wallpaper around it). Its content box (the
        # chat area) too.
        judged = [(name, features) for name, features, _ in around]
        judged += [("mirror", mirror)] if mirrored else []
        for name, features in judged:
            yield from band_judges(name, features)
    # The photo, not the interface around it: squashed or inverted interfaces would only add
    # candidates that other screens of the same app (or its other theme) vote for.
    photo = image.crop(picture or boxed) if picture or boxed else image
    if negative and photographic:
        # A negative (one tap in any editor) that is also turned, cropped or stickered: PDQ
        # finds a negative only whole and upright, and a negative's keypoints describe another
        # picture (a55 F6: a banked photo inverted and turned 3 degrees went through, 15 of 15;
        # a56 F1: inverted, mirrored and turned, 21 of 27).
        inverted = ImageOps.invert(photo.convert("RGB"))
        yield NEGATIVE_VIEW, extract_features(inverted, settings)
        if mirrored:
            yield f"mirror-{NEGATIVE_VIEW}", extract_features(ImageOps.mirror(inverted), settings)
    if squashes and photographic:
        # A squashed view is a banked view's own picture, so a match is judged on that view
        # (squashed_view_base).
        # Half the keypoints: a squashed view has half the area, and they are four more views
        # to hold in memory (measured: every axis-squashed copy still caught).
        base = settings or FeatureSettings()
        fewer = replace(base, max_features=base.max_features // 2)
        for angle in SQUASH_AXES:
            view = squashed(photo, angle, SQUASH_RATIO)
            yield f"squashed-{angle}", extract_features(view, fewer)


def screen_framed_picture(
    image: Image.Image, whole: LocalFeatures, finer: Image.Image
) -> tuple[Crop, Image.Image] | None:
    """The box (in `image`'s pixels) and the view of the most photographic framed picture
    (media.framed_pictures; where none, the most clearly seamed pasted one,
    media.pasted_pictures) of a screen-shaped image (`whole`: its whole view) that is busy
    around it: a chat's picture in its bubble over a photo wallpaper, where the wallpaper makes
    the whole screen photographic and no picture region stands out (a61 F1: a banked chat
    banked its wallpaper too, and the same phone's other chats matched it). None for any other
    image (on a plain interface the picture region is found by its texture)."""
    # In a camera photo (4:3, 3:2) a framed picture (a print on the wall behind the subject) is
    # background, and banked on its own it would block other photos of that room.
    if not screen_shaped(image) or whole.luma is None:
        return None
    # Banking tries the looser flatness too, whatever the format: it is not timed. With no
    # frame, a picture pasted straight on the wallpaper is set apart by its seams (a65).
    found = (framed_pictures(image, MIN_REGION_SIDE, lambda: finer, noisy=True)
             or pasted_pictures(image, MIN_REGION_SIDE, lambda: finer))  # fmt: skip
    in_whole = [_mapped(place, _SHARES, (whole.width, whole.height)) for place, _ in found]
    # Nothing busy outside the frames: the pictures of a collage with plain gutters.
    if not found or busy_elsewhere(busy_blocks(whole.luma), in_whole) < BUSY_AROUND_FRAMED:
        return None
    place, view = found[0]
    return _mapped(place, _SHARES, image.size), view


_SHARES = (0.0, 0.0, 1.0, 1.0)  # a frame, when boxes in it are given as shares of it


def _mapped(
    box: tuple[float, float, float, float],
    frame: tuple[float, float, float, float],
    size: tuple[int, int],
) -> Crop:
    """A box, given where `frame` is the area of a view, in that view's pixels (`size`)."""
    scale_x = size[0] / (frame[2] - frame[0])
    scale_y = size[1] / (frame[3] - frame[1])
    return (round((box[0] - frame[0]) * scale_x), round((box[1] - frame[1]) * scale_y),
            round((box[2] - frame[0]) * scale_x), round((box[3] - frame[1]) * scale_y))  # fmt: skip


_BANDS = 5  # overlapping bands, each a third of a screen's height, a sixth apart


def band_judges(name: str, features: LocalFeatures) -> Iterator[tuple[str, LocalFeatures]]:
    """A view's band judges: the grid of each of _BANDS bands of it, a third of its height
    each, a sixth apart (a picture a sixth of the screen high lies whole in one of them)."""
    height = features.height
    for number in range(_BANDS):
        top = number * height // 6
        box = (0, top, features.width, min(height, top + height // 3))
        judge = photo_judge(features, box)
        if judge is not None:
            yield band_judge_name(name, box), judge[0]


def framed_judges(
    views: Sequence[tuple[str, LocalFeatures, Crop]], picture: Crop
) -> Iterator[tuple[str, LocalFeatures]]:
    """For each view (its name, its features, where it lies in the image) that holds the
    framed `picture` (a box in the image), that picture's grid in the view's frame, named
    for the view and the box: a match of the view must show that picture too."""
    for name, features, where in views:
        mapped = _mapped(picture, where, (features.width, features.height))
        # A view that cuts a few rows off the picture still shows it (a content box that
        # ended two rows short of it was banked with no judge, and matched the same phone's
        # other chats on a patterned wallpaper).
        box = (max(0, mapped[0]), max(0, mapped[1]),
               min(features.width, mapped[2]), min(features.height, mapped[3]))  # fmt: skip
        if _area(box) < _HELD * _area(mapped):
            continue
        judge = photo_judge(features, box)
        if judge is not None:
            yield framed_judge_name(name, box), judge[0]


_HELD = 0.9  # of a framed picture that a view around it must show to be judged on it


def _area(box: Crop) -> int:
    return max(0, box[2] - box[0]) * max(0, box[3] - box[1])


def squashed_view_base(name: str, names: Collection[str]) -> tuple[str, float] | None:
    """For a squashed view's name (an image's, or a video key frame's "frame12:squashed-45"),
    the view it was squashed from (the picture region when one was banked, else the whole)
    and the squash's axis in degrees; None for any other view."""
    prefix, _, view = name.rpartition(":")
    if not view.startswith("squashed-"):
        return None
    lead = f"{prefix}:" if prefix else ""
    base = f"{lead}picture" if f"{lead}picture" in names else f"{lead}whole"
    return base, float(view.removeprefix("squashed-"))


# A content box smaller than this share of a non-photographic item is a band of it, not its
# picture (adversarial pass a10: a letter's box was its letterhead, and every letter on that
# letterhead matched at PDQ distance 0). A chat screenshot's photo is photographic and banked.
_BANDED_BOX_SHARE = 0.15


def banks_content_view(
    image: Image.Image, box: Box, grid: ContentGrid | None, view_grid: ContentGrid | None = None
) -> bool:
    """Whether an item's content box (or picture region) is banked as a view of its own (PDQ
    and features): not a band of a drawing, nor a part of a collage, which its own grid
    (`view_grid`, else computed) shows as fewer pictures (a49 F2: a collage's black gutters
    and the dark edge of one of its photos peeled away to leave the other, banked on its own;
    a54 I2: a strip of three whose dark first picture peeled away, banked as a pair that any
    copy of those two matched, though the strip needs all three; a52 b9: a box cut into a
    strip's dark last picture, and a tile of another strip showing the other two matched)."""
    panels = 0 if grid is None else len(judged_panels(grid))
    if panels >= 2:
        view_grid = view_grid or whole_grid(image.crop(box.as_tuple()))
        if view_grid is None or len(judged_panels(view_grid)) < panels:
            return False
    share = box.width * box.height / (image.width * image.height)
    return share >= _BANDED_BOX_SHARE or (grid is not None and photo_region(grid) is not None)


def banked_views(image: Image.Image, grid: ContentGrid | None) -> list[Image.Image]:
    """analysis_views as they are banked: each content box, at either level, only where
    banks_content_view allows it in the whole image's frame (a54 I2: a strip of three whose
    first content box kept all three pictures, and whose second peeled the dark first one
    away, was banked as a PDQ of the other two)."""
    views, left, top = [image], 0, 0
    for _ in range(CONTENT_DEPTH):
        box = content_box(views[-1])
        if box is None:
            break
        whole = Box(left + box.left, top + box.top, left + box.right, top + box.bottom)
        if not banks_content_view(image, whole, grid):
            break
        views.append(views[-1].crop(box.as_tuple()))
        left, top = whole.left, whole.top
    return views


Crop = tuple[int, int, int, int]


def picture_box(whole: LocalFeatures, size: tuple[int, int]) -> Crop | None:
    """The pixel box (left, top, right, bottom) of an item's photographic region when it is a
    part of the item (a screenshot's photo inside the app's interface), widened by half a cell
    so a photo edge inside a border cell is kept; None otherwise."""
    region = photo_region(whole.grid) if whole.grid is not None else None
    if region is None:
        return None
    left, top, right, bottom = region
    if (right - left) * (bottom - top) > PICTURE_MAX_CELLS:
        return None
    width, height = size
    cell_w, cell_h = width / GRID, height / GRID
    return (
        max(0, round((left - 0.5) * cell_w)),
        max(0, round((top - 0.5) * cell_h)),
        min(width, round((right + 0.5) * cell_w)),
        min(height, round((bottom + 0.5) * cell_h)),
    )


def panel_boxes(
    whole: LocalFeatures, size: tuple[int, int], finer: np.ndarray | None = None
) -> list[Crop]:
    """The pixel boxes of a collage's judged panels (none for any other item): each is banked
    as a view of its own, so a copy with the pictures rearranged (swapped halves) is found
    picture by picture; one panel alone is not a match (RobustIndex.match)."""
    grid = whole.grid
    if grid is None or whole.luma is None or len(judged_panels(grid)) < 2:
        return []
    return _pictures_in(whole.luma, grid, size, seams=True, finer=finer)


def _pictures_in(grey: np.ndarray, grid: ContentGrid, size: tuple[int, int], seams: bool,
                 finer: np.ndarray | None = None) -> list[Crop]:  # fmt: skip
    """The boxes, in pixels of an image of `size`, of the pictures of a collage whose working
    frame is `grey` (none when it has one picture): panels.collage_boxes, scaled."""
    box = photo_pixels(grid, grey.shape[1], grey.shape[0])
    boxes = [] if box is None else collage_boxes(grey, box, seams=seams, finer=finer)
    if len(boxes) < 2:
        return []
    scale_x, scale_y = size[0] / grey.shape[1], size[1] / grey.shape[0]
    return [
        (round(left * scale_x), round(top * scale_y), round(right * scale_x),
         round(bottom * scale_y))
        for left, top, right, bottom in boxes
        if min(right - left, bottom - top) >= PANEL_MIN_SIDE
    ]  # fmt: skip


def _screen_picture(image: Image.Image, around: list[tuple[str, LocalFeatures, Crop]]
                    ) -> Crop | None:  # fmt: skip
    """A screen's banked content box (`around`'s second view) where it may be its picture:
    no more than _PICTURE_IN_SCREEN of it, not the chat area between its header and input."""
    if len(around) < 2:
        return None
    left, top, right, bottom = around[1][2]
    small = (right - left) * (bottom - top) <= _PICTURE_IN_SCREEN * image.width * image.height
    return around[1][2] if small else None


def query_feature_views(
    image: Image.Image, views: Sequence[Image.Image] | None = None
) -> list[Image.Image]:
    """What a query is looked up as in the robust tier: its content box first (a screenshot's
    photo, a padded copy's picture), then the whole image. The whole image stays because the
    content box can also peel a real photo's plain sky or background, and with it the objects at
    its edges.

    `views` are `analysis_views(image)` when the caller already has them (the engine hashed
    them for PDQ), so the content box is not searched for twice."""
    found = analysis_views(image, depth=1) if views is None else list(views[:2])
    return [*found[::-1], *query_pictures(image)]


def query_pictures(image: Image.Image) -> list[Image.Image]:
    """The pictures of a query that is itself a collage with gutters, each a view of its own:
    a banked photo cut in two with a gutter between the halves, or set beside another picture
    across a gutter, is matched where the whole is not (adversarial pass a50 F4)."""
    grey = working_grey(image)
    if min(grey.shape) < PANEL_MIN_SIDE:
        return []
    # At gutters only: a query split at a seam (the edge of a pasted subject) shows a part of a
    # shared background on its own, which matches every picture before that background.
    boxes = _pictures_in(grey, content_grid(grey), image.size, seams=False)
    return [image.crop(box) for box in boxes]


def query_pieces(image: Image.Image, collage_found: bool = False) -> list[Image.Image]:
    """Pieces of a query to look for the pictures of banked collages in, each with a keypoint
    budget of its own. Where the query is laid out as pictures (split at lines too thin for
    the working frame, or a strip or stack): the query split at those lines, then overlapping
    windows of it; a grid re-laid as a stack of four shows each picture in a quarter of the
    frame, where a quarter of the keypoints fall (a52 F2, F2b). Where it shows some pictures
    of a banked collage (`collage_found`) and is laid out otherwise: its halves and quarters
    only (a50 N3: two pictures swapped with no line between; looking at such a query in every
    window, as every post of a banked meme's one picture is, took 0.5 to 1.9 s more, a53)."""
    long_side, short_side = max(image.size), min(image.size)
    laid_out = long_side >= _STRIP_RATIO * short_side
    # Up to finer_grey's largest frame, lines too thin for the working frame are looked for:
    # 15 ms at 1600 x 1200 here, where 4000 x 3000 took 71.
    if not (laid_out or collage_found or long_side <= FINER_SIDE):
        return []  # a line of a pixel or two is lost in a larger picture's finer frame anyway
    grey = working_grey(image)
    if min(grey.shape) < PANEL_MIN_SIDE:
        return []
    box = (0, 0, grey.shape[1], grey.shape[0])
    # Lines the working frame shows split the query into views already (query_pictures); an
    # app's bars and bubbles are such lines, and a screenshot is not looked at in pieces.
    pieces: list[Crop] = []
    if laid_out or long_side <= FINER_SIDE:
        thin = collage_boxes(grey, box, seams=False, finer=finer_grey(image))
        shown = len(collage_boxes(grey, box, seams=False))
        pieces = (
            [_scaled(part, grey.shape, image.size) for part in thin] if len(thin) > shown else []
        )
    if laid_out or pieces:
        return [image.crop(piece) for piece in [*pieces, *_windows(image.size)]]
    return [image.crop(piece) for piece in _halves(image.size)] if collage_found else []


def _halves(size: tuple[int, int]) -> list[Crop]:
    """A frame's two halves across its long side, then its four quarters."""
    width, height = size
    across = [(0, 0, width // 2, height), (width // 2, 0, width, height)]
    down = [(0, 0, width, height // 2), (0, height // 2, width, height)]
    quarters = [(left, top, left + width // 2, top + height // 2)
                for top in (0, height // 2) for left in (0, width // 2)]  # fmt: skip
    return [*(across if width >= height else down), *quarters]


def closer_views(image: Image.Image, at: tuple[float, float]) -> list[Image.Image]:
    """A query looked at closer, around the point `at` (shares of the frame): windows of
    _CLOSER and then _NEARER of its width and height centred on it (kept inside the frame),
    each a view with a keypoint budget of its own. A banked picture pasted onto another photo,
    or set in a collage's cell, at a third to two thirds of the frame's side, keeps few
    keypoints in the whole view, and those at a scale finer than the banked picture's own (a82
    H1: the banked rocket at 25-65% of a photo of coins or of the night sky went through, 10 of
    10); at a third of the side or less it fills too little of the first window (a83: the
    rocket at 30-35% on a workshop photo). Centred, not the frame's middle and corners: a
    picture pasted along an edge lay across every corner's window (a83: the rocket at 45%
    along the bottom). A window narrower than _CLOSER_MIN_SIDE is left out: the whole view
    showed what it holds."""
    width, height = image.size
    x, y = at[0] * width, at[1] * height
    views = []
    for share in (_CLOSER, _NEARER):
        side_x, side_y = round(share * width), round(share * height)
        if min(side_x, side_y) < _CLOSER_MIN_SIDE:
            break
        left = min(max(0, round(x - side_x / 2)), width - side_x)
        top = min(max(0, round(y - side_y / 2)), height - side_y)
        views.append(image.crop((left, top, left + side_x, top + side_y)))
    return views


_CLOSER: Final = 0.6
_NEARER: Final = 0.4
# A window narrower than this (pixels of the decoded query) holds nothing the whole view's
# working frame did not show at the banked picture's own scale.
_CLOSER_MIN_SIDE: Final = 256


# A query this much longer than wide (or wider than tall) is looked at as a strip or stack of
# pictures; a phone's screenshot (up to 2.2) is not.
_STRIP_RATIO: Final = 2.5


def query_tiles(image: Image.Image) -> list[Image.Image]:
    """A long picture (a scrolling chat screenshot, a strip or stack of photos, a panorama) in
    overlapping tiles of a phone screen's shape (its short side by twice that), each a view of
    its own: in the 512 px working frame of a 1080 x 9000 screenshot a picture in it is a few
    dozen pixels wide, and no keypoint of it was found (a53 F1: a banked picture, or a banked
    collage, pasted into a long chat went through; a55: a 1080 x 3800 one too, when tiles
    began at 4.5 times longer than wide). None for any other picture: its working frame is at
    least 205 px wide."""
    width, height = image.size
    long_side, short_side = max(width, height), min(width, height)
    if long_side < LONG_PICTURE * short_side or short_side < PANEL_MIN_SIDE:
        return []
    if short_side > _TILE_SHORT_SIDE:  # both tiers look at a tile at about this size anyway
        scale = _TILE_SHORT_SIDE / short_side
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        image = image.resize(size, Image.Resampling.BILINEAR, reducing_gap=2.0)
        width, height = image.size
        long_side, short_side = max(width, height), min(width, height)
    tile = 2 * short_side
    starts = _starts(long_side, tile, _MAX_TILES)
    boxes = [(0, start, width, start + tile) if height > width else (start, 0, start + tile, height)
             for start in starts]  # fmt: skip
    return [image.crop(box) for box in boxes]


def screens(image: Image.Image) -> list[Image.Image]:
    """A long picture's tiles (query_tiles) and the pictures inside them (their content boxes):
    a screenshot's photo is found so in one screen, and is lost in the whole of a scrolling
    one (a53 F1). Both tiers look at them, and the robust tier's features refute a PDQ match
    only where none of them aligns (a54 F1)."""
    return [view for tile in query_tiles(image) for view in analysis_views(tile)]


# Tiles of a long picture, half a tile apart up to a 1080 x 22,000 scrolling screenshot (a54 F2:
# with 12, a picture at a seam between two tiles of a 20,000 px one went through).
_MAX_TILES: Final = 20
# Tiles are looked at this wide: a 1440 x 12,000 PNG took 3.9 s at full size (2.1 s so), and at
# 512 px three of a53's long chats went through again.
_TILE_SHORT_SIDE: Final = 1024


def _windows(size: tuple[int, int]) -> list[Crop]:
    """Overlapping windows of a frame: squares of its short side along its long axis (a strip
    or stack of pictures), and squares of half its long side (a grid), each half a window
    apart."""
    width, height = size
    windows: list[Crop] = []
    for side in dict.fromkeys((min(width, height), max(width, height) // 2)):
        if not PANEL_MIN_SIDE <= side <= min(width, height) or side == max(width, height):
            continue
        for top in _starts(height, side, _MAX_STARTS):
            windows.extend((left, top, left + side, top + side)
                           for left in _starts(width, side, _MAX_STARTS))  # fmt: skip
    return windows


def _starts(length: int, side: int, most: int) -> list[int]:
    """Window starts along one axis, half a window apart (farther along a panorama, so that
    there are at most `most`), the last flush with the end."""
    if side >= length:
        return [0]
    step = max(side // 2, math.ceil((length - side) / (most - 1)))
    return sorted({*range(0, length - side, step), length - side})


# Windows along one axis: a stack of four pictures takes seven, half a picture apart. A longer
# panorama is looked at in as many, so that a query costs at most 7 + 3 x 3 windows.
_MAX_STARTS: Final = 7


def _scaled(box: tuple[int, int, int, int], shape: tuple[int, ...], size: tuple[int, int]) -> Crop:
    scale_x, scale_y = size[0] / shape[1], size[1] / shape[0]
    left, top, right, bottom = box
    return (round(left * scale_x), round(top * scale_y), round(right * scale_x),
            round(bottom * scale_y))  # fmt: skip


# ---------------------------------------------------------------------------------------------
# Videos and animations: the two samplings


def banking_video_hasher(config: Config, key_frames: int = 0) -> VideoHasher:
    """Banking: every frame decoded, one sample per second, as the vPDQ reference tools do, and
    `key_frames` frames spread over the clip for the robust tier."""
    return VideoHasher(
        config.limits.video,
        time_budget_s=max(config.limits.video.time_budget_s, BANKING_TIME_BUDGET_S),
        key_frames=key_frames,
        picture_limits=config.limits,
    )


def matching_video_hasher(config: Config, keep: int = 0, key_frames: int = 0) -> VideoHasher:
    """Matching: key frames first (fast), query_samples_per_hash samples a second so a copy cut
    at any point has a frame near every banked one, letterbox and mirror variants per frame,
    stills for the image bank, `keep` frames for the classifier and `key_frames` for the robust
    tier (kept finer too, for their small pictures, and at one stride over the video); under
    the proxy's time budget."""
    return VideoHasher(
        config.limits.video,
        keep=keep,
        fast=True,
        variants=True,
        samples_per_hash=config.banks.video.query_samples_per_hash,
        stills=True,
        key_frames=key_frames,
        finer_key_frames=True,
        key_stride=True,
        picture_limits=config.limits,
    )


def bank_video_hashes(data: bytes, config: Config, key_frames: int = 0) -> VideoHashes:
    """A video's (or animation's) frames as they are banked. Raises MediaRefused: a bank entry
    must describe the whole video."""
    video = banking_video_hasher(config, key_frames).hash(data)
    if video.refused is not None:
        raise video.refused
    return video


# ---------------------------------------------------------------------------------------------
# One item, as banked


@dataclass(frozen=True)
class ItemSignals:
    """Everything `schoolgate hashes add` banks (and `hashes compute` prints) for one file."""

    media_type: str
    size: int
    exact: ExactHashes
    pdq: PdqHash | None = None  # the whole image
    content_pdq: tuple[PdqHash, ...] = ()  # the picture inside its uniform bands, if any
    frames: int | None = None  # an animation's frame count
    video: VideoHashes | None = None  # vPDQ frames (videos and animations)
    key_frames: tuple[SampledFrame, ...] = ()
    features: tuple[tuple[str, LocalFeatures], ...] = ()  # the robust tier's views
    refused: str | None = None  # "reason: detail" when the media could not be hashed
    image: Image.Image | None = field(default=None, compare=False, repr=False)


def item_signals(
    data: bytes, config: Config, *, key_frames: int = 0, features: bool = False
) -> ItemSignals:
    """Exact hashes always; PDQ of the whole image and of its content views for images that
    decode; vPDQ frames for videos and animations (and, with `key_frames`, that many frames for
    local features); with `features`, the image's local feature views. Refusals are reported
    in `refused`, not raised."""
    media_type = sniff(data)
    item = ItemSignals(media_type=media_type.value, size=len(data), exact=exact_hashes(data))
    frames: int | None = None
    if media_type.kind is MediaKind.IMAGE:
        try:
            decoded = decode_for_analysis(data, config.limits)
        except MediaRefused as refused:
            return _refused(item, refused)
        feature_views: tuple[tuple[str, LocalFeatures], ...] = ()
        if features:
            robust = config.banks.robust
            feature_views = tuple(
                bank_feature_views(
                    decoded.image,
                    mirrored=robust.bank_mirrored,
                    squashes=robust.bank_squashed,
                    # Thin gutters are looked for finer: a JPEG at half scale loses 1 px lines
                    # (a53 F2).
                    finer=decoded.finer() if decoded.finer else decoded.image,
                    negative=config.banks.match_inverted,
                )
            )
        # The whole view's grid (and panel map), where its features already hold it.
        grid = feature_views[0][1].grid if feature_views else whole_grid(decoded.image)
        views = banked_views(decoded.image, grid)
        whole, *content = (hashes[0] for hashes in view_pdq(views, dihedral=False))
        frames = decoded.frame_count if decoded.frame_count > 1 else None
        item = replace(
            item,
            pdq=whole,
            content_pdq=tuple(content),
            frames=frames,
            features=feature_views,
            image=decoded.image,
        )
    if media_type.kind is MediaKind.VIDEO or frames:
        try:
            video = bank_video_hashes(data, config, key_frames)
        except MediaRefused as refused:
            return _refused(item, refused)
        item = replace(item, video=video, key_frames=tuple(video.key_frames))
    return item


def _refused(item: ItemSignals, refused: MediaRefused) -> ItemSignals:
    return replace(item, refused=f"{refused.reason}: {refused}")
