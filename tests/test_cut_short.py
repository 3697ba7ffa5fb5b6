"""A picture cut short is refused (the fail policy), and a banked one among the rows it still
shows is a match, so the DSL hears of it (adversarial pass a46 O1: the first 80% of a banked
JPEG, which any viewer shows, was blocked as `refused` and no alert was raised)."""

from __future__ import annotations

import io
import struct
import zlib
from collections.abc import Iterator

import numpy as np
import pytest
from PIL import Image

from schoolgate.addons.uploads import UploadInspector
from schoolgate.media.cutshort import shown_rows
from tests.support.imagery import encode
from tests.test_archive_starts import FORMS
from tests.test_robust_precision import CTX, Bank, _bank

MAX_PIXELS = 80_000_000
TUS = FORMS["tus"]


@pytest.fixture(scope="module")
def bank(
    tmp_path_factory: pytest.TempPathFactory, benign_photos: dict[str, Image.Image]
) -> Iterator[Bank]:
    items = {"banked.jpg": encode(benign_photos["astronaut"], "JPEG", quality=90),
             "banked.png": encode(benign_photos["chelsea"], "PNG")}  # fmt: skip
    with _bank(tmp_path_factory.mktemp("cut-short"), items) as banked:
        yield banked


@pytest.mark.parametrize("share", [0.6, 0.8, 0.95])
def test_a_banked_jpeg_cut_short_is_a_match(
    bank: Bank, benign_photos: dict[str, Image.Image], share: float
) -> None:
    data = encode(benign_photos["astronaut"], "JPEG", quality=90)
    verdict = bank.inspector.evaluate(data[: int(len(data) * share)], CTX)
    assert verdict.blocked
    record = verdict.to_dict()
    assert record["failure"] == "refused"
    assert verdict.matches, record  # a match: the alert goes to the DSL
    assert dict(verdict.matches[0].evidence).get("cut_short") == 1.0


@pytest.mark.parametrize("share", [0.02, 0.5, 0.9])
def test_an_innocent_jpeg_cut_short_is_refused_without_a_match(
    bank: Bank, benign_photos: dict[str, Image.Image], share: float
) -> None:
    data = encode(benign_photos["coffee"], "JPEG", quality=90)
    verdict = bank.inspector.evaluate(data[: int(len(data) * share)], CTX)
    assert verdict.blocked  # fail closed, as before
    assert not verdict.matches


@pytest.mark.parametrize("share", [0.6, 0.8, 0.95])
def test_a_banked_png_cut_short_is_a_match(
    bank: Bank, benign_photos: dict[str, Image.Image], share: float
) -> None:
    """a51: the first 7 of 8 parts of a banked PNG were stored by a Dropbox upload session;
    only its finish was judged. A PNG's complete rows, packed again, show the picture."""
    data = encode(benign_photos["chelsea"], "PNG")
    verdict = bank.inspector.evaluate(data[: int(len(data) * share)], CTX)
    assert verdict.blocked
    assert verdict.to_dict()["failure"] == "refused"
    assert verdict.matches
    assert dict(verdict.matches[0].evidence).get("cut_short") == 1.0


@pytest.mark.parametrize("share", [0.02, 0.5, 0.9])
def test_an_innocent_png_cut_short_is_refused_without_a_match(
    bank: Bank, benign_photos: dict[str, Image.Image], share: float
) -> None:
    data = encode(benign_photos["coffee"], "PNG")
    verdict = bank.inspector.evaluate(data[: int(len(data) * share)], CTX)
    assert verdict.blocked
    assert not verdict.matches


@pytest.mark.parametrize("mode", ["RGB", "RGBA", "L", "P", "I;16"])
def test_a_png_cut_short_shows_its_complete_rows_and_grey_below(mode: str) -> None:
    gradient = np.tile(np.arange(64, dtype=np.uint8) * 3, (48, 1))
    picture = Image.fromarray(gradient).convert("RGB").convert(mode)
    data = encode(picture, "PNG", compress_level=0)  # stored: the cut falls at a known row
    rows = shown_rows(data[: len(data) // 2], MAX_PIXELS)
    assert rows is not None
    shown = Image.open(io.BytesIO(rows))
    shown.load()
    assert shown.size == picture.size
    assert shown.mode == picture.mode
    top = np.asarray(shown)[:10]
    assert np.array_equal(top, np.asarray(picture)[:10])
    assert not np.array_equal(np.asarray(shown)[-5:], np.asarray(picture)[-5:])


def test_a_whole_or_oversized_png_is_not_rebuilt() -> None:
    picture = Image.new("RGB", (64, 48), "red")
    assert shown_rows(encode(picture, "PNG"), MAX_PIXELS) is None  # whole: nothing cut
    assert shown_rows(interlaced_png(picture), MAX_PIXELS) is None
    # A header that claims 100,000 x 100,000 pixels (a bomb) is not inflated.
    header = struct.pack(">IIBBBBB", 100_000, 100_000, 8, 2, 0, 0, 0)
    bomb = (b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + b"IHDR" + header
            + struct.pack(">I", zlib.crc32(b"IHDR" + header)) + struct.pack(">I", 1000) + b"IDAT"
            + zlib.compress(bytes(100_000))[:500])  # fmt: skip
    assert shown_rows(bomb, MAX_PIXELS) is None
    assert shown_rows(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10, MAX_PIXELS) is None


_ADAM7 = ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2),
          (0, 1, 1, 2))  # fmt: skip


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def interlaced_png(picture: Image.Image) -> bytes:
    """An Adam7-interlaced PNG (Pillow writes none): each pass's pixels in rows of their own."""
    pixels = np.asarray(picture.convert("RGB"))
    height, width, _ = pixels.shape
    raw = b"".join(b"\x00" + row.tobytes() for column, row_at, step_x, step_y in _ADAM7
                   if column < width and row_at < height
                   for row in pixels[row_at::step_y, column::step_x])  # fmt: skip
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 1)
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", zlib.compress(raw))
            + _chunk(b"IEND", b""))  # fmt: skip


CUT_FORMATS = {
    "GIF": lambda picture: encode(picture, "GIF"),
    "WebP": lambda picture: encode(picture, "WEBP", quality=85),
    "interlaced PNG": interlaced_png,
}


@pytest.mark.parametrize("share", [0.5, 0.9])
@pytest.mark.parametrize("fmt", CUT_FORMATS)
def test_a_banked_gif_webp_or_interlaced_png_cut_short_is_a_match(
    bank: Bank, benign_photos: dict[str, Image.Image], fmt: str, share: float
) -> None:
    """a70 F3: a GIF, a WebP or an interlaced PNG cut short showed nothing, and all but the
    last chunk of a banked one reached the service. A GIF's first frame and a lossy WebP's rows
    decode as far as the data goes; an interlaced PNG's first passes are the whole picture."""
    data = CUT_FORMATS[fmt](benign_photos["chelsea"])
    verdict = bank.inspector.evaluate(data[: int(len(data) * share)], CTX)
    assert verdict.blocked
    assert verdict.to_dict()["failure"] == "refused"
    assert verdict.matches
    assert dict(verdict.matches[0].evidence).get("cut_short") == 1.0


@pytest.mark.parametrize("share", [0.05, 0.5, 0.9])
@pytest.mark.parametrize("fmt", CUT_FORMATS)
def test_an_innocent_gif_webp_or_interlaced_png_cut_short_is_refused_without_a_match(
    bank: Bank, benign_photos: dict[str, Image.Image], fmt: str, share: float
) -> None:
    data = CUT_FORMATS[fmt](benign_photos["coffee"])
    verdict = bank.inspector.evaluate(data[: int(len(data) * share)], CTX)
    assert verdict.blocked
    assert not verdict.matches


@pytest.mark.parametrize("fmt", CUT_FORMATS)
def test_a_gif_webp_or_interlaced_png_cut_short_shows_the_picture(
    benign_photos: dict[str, Image.Image], fmt: str
) -> None:
    picture = benign_photos["chelsea"]
    data = CUT_FORMATS[fmt](picture)
    rows = shown_rows(data[: len(data) * 3 // 4], MAX_PIXELS)
    assert rows is not None
    shown = np.asarray(Image.open(io.BytesIO(rows)).convert("L"), dtype=np.int16)
    truth = np.asarray(picture.convert("L"), dtype=np.int16)
    assert shown.shape == truth.shape
    assert np.abs(shown[:100] - truth[:100]).mean() < 12  # the top, as it is (interlaced: blurred)
    assert shown_rows(data[:40], MAX_PIXELS) is None  # a header alone shows nothing


@pytest.mark.parametrize("fmt", CUT_FORMATS)
def test_a_banked_gif_webp_or_interlaced_png_is_refused_before_its_last_chunk(
    catalog_addon: UploadInspector, benign_photos: dict[str, Image.Image], fmt: str
) -> None:
    """The school sends all but its last eighth (the phone would send that)."""
    data = CUT_FORMATS[fmt](benign_photos["chelsea"])
    chunk = len(data) // 8 + 1
    codes = TUS(catalog_addon, f"/files/cut-{fmt}".replace(" ", "-"), data, len(data) - chunk)
    assert 403 in codes, codes
    innocent = CUT_FORMATS[fmt](benign_photos["coffee"])
    codes = TUS(catalog_addon, f"/files/inn-{fmt}".replace(" ", "-"), innocent, len(innocent))
    assert set(codes) == {200}, codes
