"""The robust tier's content check (issue 18): after alignment the pictures themselves must agree,
not only what surrounds them. Adversarial pass a5: with a chat screenshot banked, screenshots of
the same thread showing another photo, or no photo, were blocked on the app's chrome (145-194
inliers, spread 0.31-0.38).

Benign pictures only: scikit-image photos and interfaces drawn here."""

from __future__ import annotations

import io

import cv2
import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFont

from schoolgate.matching.robust import RobustEntry, RobustIndex
from schoolgate.media.content_grid import BYTES, Cell, ContentGrid, agreement, content_grid
from schoolgate.media.features import extract_features
from schoolgate.media.signals import bank_feature_views, query_feature_views
from tests.support.imagery import EDITS, skimage_photo


def chat_thread(photo: Image.Image | None, dark: bool = True) -> Image.Image:
    """One chat thread as a phone shows it: status bar, contact header, the received photo,
    two bubbles, the input bar (a5's lookalike screenshots, drawn the same way)."""
    background, bar, text = ((17, 17, 17), (30, 30, 30), (255, 255, 255)) if dark else (
        (250, 250, 250), (235, 235, 235), (20, 20, 20))  # fmt: skip
    screen = Image.new("RGB", (540, 1170), background)
    draw = ImageDraw.Draw(screen)
    font = ImageFont.load_default(size=22)
    draw.text((20, 12), "21:47", fill=text, font=font)
    draw.text((430, 12), "5G 87%", fill=text, font=font)
    draw.rectangle((0, 45, 540, 120), fill=bar)
    draw.ellipse((20, 55, 75, 110), fill=(255, 200, 0))
    draw.text((90, 62), "jaydenxx_09", fill=text, font=ImageFont.load_default(size=26))
    draw.text((90, 92), "Active now", fill=(150, 150, 150), font=font)
    if photo is not None:
        screen.paste(photo.convert("RGB").resize((480, 480)), (30, 165))
    draw.rounded_rectangle((30, 670, 450, 730), 24, fill=(60, 60, 200))
    draw.text((50, 685), "omg look at this", fill=(255, 255, 255), font=font)
    draw.rounded_rectangle((150, 750, 510, 810), 24, fill=(70, 70, 70))
    draw.text((170, 765), "send it to the group chat", fill=(255, 255, 255), font=font)
    draw.rectangle((0, 1075, 540, 1170), fill=bar)
    draw.rounded_rectangle((20, 1090, 430, 1145), 26, outline=(120, 120, 120), width=2)
    draw.ellipse((450, 1090, 505, 1145), fill=(0, 120, 255))
    return screen


def png(image: Image.Image) -> Image.Image:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")


def best(index: RobustIndex, image: Image.Image) -> list[str]:
    for view in query_feature_views(image):
        hits = index.match(extract_features(view))
        if hits:
            return [hit.content_id for hit in hits]
    return []


@pytest.fixture(scope="module")
def thread_index() -> RobustIndex:
    shot = png(chat_thread(skimage_photo("chelsea")))
    return RobustIndex(
        [RobustEntry.of_view("incident", "shot", "", v, f) for v, f in bank_feature_views(shot)]
    )


@pytest.mark.parametrize("other", ["rocket", "coffee", "brick", "camera", "astronaut", None])
def test_the_same_thread_with_another_photo_or_none_does_not_match(
    thread_index: RobustIndex, other: str | None
) -> None:
    photo = skimage_photo(other) if other else None
    for dark in (True, False):
        assert best(thread_index, png(chat_thread(photo, dark))) == []


def test_the_banked_screenshots_photo_still_matches(thread_index: RobustIndex) -> None:
    cat = skimage_photo("chelsea")
    assert best(thread_index, png(chat_thread(cat, dark=False))) == ["shot"]  # another theme
    square = cat.resize((480, 480))
    assert best(thread_index, square) == ["shot"]  # the photo on its own
    jpeg = Image.open(io.BytesIO(EDITS["jpeg_q30"](square, 0)))
    assert best(thread_index, jpeg) == ["shot"]


def test_evidence_names_the_content_agreement(thread_index: RobustIndex) -> None:
    query = extract_features(chat_thread(skimage_photo("chelsea"), dark=False))
    (hit,) = thread_index.match(query)
    evidence = hit.evidence()
    assert evidence["content_agreement"] >= 0.5
    assert evidence["content_cells"] >= 4


def test_cells_are_classed_flat_graphic_or_photo() -> None:
    luma = np.asarray(chat_thread(skimage_photo("coffee")).convert("L").resize((236, 512)))
    kinds = content_grid(luma).kinds.reshape(8, 8)
    assert (kinds[1:4, 1:7] == Cell.PHOTO).mean() >= 0.9  # the photo (a smooth patch is graphic)
    assert (kinds[0] == Cell.GRAPHIC).all()  # the status bar and header: text on flat colour
    assert (kinds[6] == Cell.FLAT).all()  # the empty thread


def test_agreement_of_copies_and_of_different_pictures() -> None:
    photo = np.asarray(skimage_photo("astronaut").convert("L").resize((400, 400)))
    other = np.asarray(skimage_photo("coffee").convert("L").resize((400, 400)))
    copy = np.asarray(
        Image.open(io.BytesIO(EDITS["jpeg_q30"](Image.fromarray(photo), 0))).convert("L")
    )
    banked = content_grid(photo)
    assert agreement(banked, content_grid(copy)).share >= 0.8
    assert agreement(banked, content_grid(other)).share <= 0.3
    half = np.zeros_like(photo, dtype=bool)
    half[:, :200] = True  # a crop: only what the copy covers is judged
    cropped = agreement(banked, content_grid(copy, half))
    assert cropped.judged <= 32
    assert cropped.share >= 0.8


def test_grids_round_trip_and_refuse_malformed_bytes() -> None:
    grid = content_grid(np.asarray(skimage_photo("rocket").convert("L").resize((300, 200))))
    back = ContentGrid.from_bytes(grid.to_bytes())
    assert np.array_equal(back.bits, grid.bits)
    assert np.array_equal(back.kinds, grid.kinds)
    with pytest.raises(ValueError, match="content grid"):
        ContentGrid.from_bytes(grid.to_bytes()[:-1])
    with pytest.raises(ValueError, match="cell class"):
        ContentGrid.from_bytes(grid.to_bytes()[: BYTES - 1] + b"\x09")


def confetti_frame(picture: Image.Image, border: int, seed: int) -> Image.Image:
    """The picture inside a border of coloured confetti (a busy frame, as apps add)."""
    rng = np.random.default_rng(seed)
    canvas = Image.new("RGB", (picture.width + 2 * border, picture.height + 2 * border), "white")
    draw = ImageDraw.Draw(canvas)
    for _ in range(900):
        x, y = int(rng.integers(0, canvas.width)), int(rng.integers(0, canvas.height))
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        draw.ellipse((x, y, x + 9, y + 9), fill=colour)
    canvas.paste(picture, (border, border))
    return canvas


def test_a_stretched_and_framed_copy_matches_and_another_picture_in_the_frame_does_not() -> None:
    """Adversarial pass a7: one axis stretched by 10-25% and a confetti frame added; each alone
    was caught, together neither tier matched (a similarity cannot align a stretch)."""
    photo = skimage_photo("astronaut")
    index = RobustIndex(
        [RobustEntry.of_view("incident", "a", "", v, f) for v, f in bank_feature_views(photo)]
    )
    for stretch in ((512, 563), (640, 512), (512, 640)):
        assert best(index, confetti_frame(photo.resize(stretch), 100, 1)) == ["a"], stretch
    for other in ("coffee", "rocket", "chelsea"):
        assert best(index, confetti_frame(skimage_photo(other).resize((512, 512)), 100, 1)) == []


def keyboard_thread(photo: Image.Image | None) -> Image.Image:
    """A dark chat thread with a small photo and the keyboard open (pass a7's screenshots)."""
    screen = chat_thread(None, dark=True)
    draw = ImageDraw.Draw(screen)
    if photo is not None:
        screen.paste(photo.convert("RGB").resize((300, 200)), (200, 520))
    draw.rectangle((0, 820, 540, 1170), fill=(40, 40, 44))
    font = ImageFont.load_default(size=30)
    for row, keys in enumerate(("QWERTYUIOP", "ASDFGHJKL", "ZXCVBNM")):
        for n, key in enumerate(keys):
            x, y = 8 + row * 26 + n * 53, 840 + row * 80
            draw.rounded_rectangle((x, y, x + 46, y + 64), 8, fill=(80, 80, 86))
            draw.text((x + 12, y + 14), key, fill=(255, 255, 255), font=font)
    return screen


def test_a_banked_screenshot_with_a_small_photo_matches_only_that_photo() -> None:
    banked = png(keyboard_thread(skimage_photo("coffee")))
    index = RobustIndex(
        [RobustEntry.of_view("incident", "kbd", "", v, f) for v, f in bank_feature_views(banked)]
    )
    for other in ("rocket", "camera", None):
        photo = skimage_photo(other) if other else None
        assert best(index, png(keyboard_thread(photo))) == [], other
    assert best(index, banked) == ["kbd"]


def _grid(kinds: list[list[int]], bits: list[list[int]] | None = None) -> ContentGrid:
    flat_bits = np.array(bits if bits is not None else np.zeros((8, 8)), np.uint64).ravel()
    return ContentGrid(flat_bits, np.array(kinds, np.uint8).ravel())


def test_a_copy_that_leaves_out_the_screens_photo_does_not_show_it() -> None:
    """a45 F2: two chat screenshots with different photos aligned on their status bar and
    header alone (the rest of the banked screen outside the copy) and agreed 0.875 on 8 cells."""
    banked = [[1] * 8] * 2 + [[1] + [2] * 5 + [1] * 2] * 2 + [[1] * 8] * 4  # a 5x2 photo
    header_only = [[1] * 8] + [[3] * 8] * 7  # the copy covers the top row
    seen = agreement(_grid(banked), _grid(header_only))
    assert seen.share == 0.0
    whole = agreement(_grid(banked), _grid(banked))
    assert whole.share == 1.0  # the same screen, photo and all, agrees


def test_a_photo_whose_sky_reads_as_drawn_may_be_cropped() -> None:
    """The refusal above is for a photo inside a screen or frame: a whole photo whose plain sky
    reads as drawn has its photographic cells along its edges, which a 10% crop takes away."""
    edges = [[2] * 8] + [[2] + [1] * 6 + [2]] * 6 + [[2] * 8]
    cropped = [[3] * 8] + [[3] + [1] * 6 + [3]] * 6 + [[3] * 8]
    assert agreement(_grid(edges), _grid(cropped)).share == 1.0


def test_another_photograph_beside_a_shared_panel_counts_as_replaced() -> None:
    """a45 F3: another picture beside the same meme panel; the banked one's smooth sky read as
    drawn, so its cells did not count, and the copy agreed 1.0 on the panel alone."""
    banked = [[2] * 5 + [1] * 3] * 8
    other = [[2] * 5 + [2] * 3] * 8
    unrelated = [[0] * 5 + [(1 << 20) - 1] * 3] * 8  # 20 of 40 bits differ beside the panel
    seen = agreement(_grid(banked), _grid(other, unrelated))
    assert seen.replaced == 16  # the column along the panel's edge is left out


def test_the_cells_along_a_screens_photo_may_show_another_apps_surround() -> None:
    """Cells along the photo's edge hold its border and the app around it; the photo shown in
    another app (a recall case of the precision bench: 3 replaced, refused) brings other
    surroundings there. Farther out, another photograph still counts."""
    banked = [[1] * 8] * 2 + [[1] + [2] * 6 + [1]] * 4 + [[1] * 8] * 2
    differs = (1 << 20) - 1
    edge = [[0] * 8, [differs] * 8] + [[differs] + [0] * 6 + [differs]] * 4 + [[differs] * 8,
                                                                               [0] * 8]  # fmt: skip
    other_app = [[2] * 8] * 8  # the other app's surround reads as photographic once warped
    assert agreement(_grid(banked), _grid(other_app, edge)).replaced == 0
    farther = [[differs] * 8, *edge[1:]]
    assert agreement(_grid(banked), _grid(other_app, farther)).replaced == 8


def test_a_patch_of_clearly_different_photograph_is_another_subject() -> None:
    """The precision bench's fixed backgrounds: another photographed subject before the same
    background differed by 10-20 bits a cell (a smooth subject, under the 17 of unrelated
    content) and agreed 0.8 on the background. A patch three cells or more each way counts as
    replaced; a band one row high (a caption's edge) does not, nor do a re-encoding's bits."""
    photo = [[2] * 8] * 8
    clearly = (1 << 12) - 1  # 12 of 40 bits
    patch = [[0] * 8] * 3 + [[0, 0] + [clearly] * 3 + [0] * 3] * 3 + [[0] * 8] * 2
    assert agreement(_grid(photo), _grid(photo, patch)).replaced == 9
    band = [[0] * 8] * 4 + [[clearly] * 8] + [[0] * 8] * 3
    assert agreement(_grid(photo), _grid(photo, band)).replaced == 0
    slight = (1 << 8) - 1  # 8 bits: what a re-encoding or a tint may change
    everywhere = [[slight] * 8] * 8
    assert agreement(_grid(photo), _grid(photo, everywhere)).replaced == 0
    drawn = [[2] * 8] * 3 + [[2, 2, 1, 1, 1, 2, 2, 2]] * 3 + [[2] * 8] * 2  # a sticker
    assert agreement(_grid(photo), _grid(drawn, patch)).replaced == 0


def _reference_grid_kinds(luma: np.ndarray, covered: np.ndarray | None) -> np.ndarray:
    """The cell classes as the grid first computed them: a slice and a mean per cell, and the
    3x3 luma range from nine shifted copies of the frame."""
    padded = np.pad(luma, 1, mode="edge").astype(np.int16)
    height, width = luma.shape
    windows = [padded[dy : dy + height, dx : dx + width] for dy in range(3) for dx in range(3)]
    still = (np.max(windows, axis=0) - np.min(windows, axis=0)) <= 3
    rows = np.linspace(0, height, 9).astype(int)
    columns = np.linspace(0, width, 9).astype(int)
    means = cv2.resize(luma.astype(np.float32), (40, 40), interpolation=cv2.INTER_AREA)
    kinds = np.zeros(64, np.uint8)
    for row in range(8):
        for column in range(8):
            cell = row * 8 + column
            area = (slice(rows[row], rows[row + 1]), slice(columns[column], columns[column + 1]))
            blocks = means[row * 5 : row * 5 + 5, column * 5 : column * 5 + 5]
            if covered is not None and covered[area].mean() < 0.9:
                kinds[cell] = Cell.UNCOVERED
            elif blocks.std() < 3.0:
                kinds[cell] = Cell.FLAT
            elif float(still[area].mean()) > 0.45:
                kinds[cell] = Cell.GRAPHIC
            else:
                kinds[cell] = Cell.PHOTO
    return kinds


@pytest.mark.parametrize("seed", range(4))
def test_cell_classes_are_the_per_cell_definition(seed: int) -> None:
    """The vectorised classes (min/max filters, one sum per cell) are the per-cell definition
    to the bit: on a photo, a drawing with flat areas and text, odd frame sizes, and a warped
    copy's coverage mask."""
    rng = np.random.default_rng(seed)
    photo = np.asarray(skimage_photo("astronaut").convert("L"), np.uint8)
    height, width = (int(v) for v in rng.integers(41, 500, 2))
    luma = np.asarray(Image.fromarray(photo).resize((width, height)), np.uint8).copy()
    canvas = Image.fromarray(luma)
    draw = ImageDraw.Draw(canvas)
    draw.rectangle((0, 0, width // 2, height // 3), fill=int(rng.integers(0, 256)))
    draw.text((4, 4), "a caption", fill=255)
    luma = np.asarray(canvas, np.uint8)
    covered = np.ones(luma.shape, bool)
    covered[:, : int(rng.integers(0, width // 2))] = False
    for mask in (None, covered):
        expected = _reference_grid_kinds(luma, mask)
        assert len(set(expected.tolist())) >= 3  # classes enough to tell an order apart
        np.testing.assert_array_equal(content_grid(luma, mask).kinds, expected)
