"""Still formats that editors open and Pillow decodes are judged, not waved through or refused
(adversarial pass, issue 16: a banked picture as TGA, PCX, PPM, SGI or DIB was delivered
unjudged, and an innocent JPEG 2000 was blocked; pass a4: XBM too)."""

from __future__ import annotations

import io
import random
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image

from schoolgate.banks.model import SignalInput, SignalType
from schoolgate.banks.store import BankStore
from schoolgate.config import parse_config
from schoolgate.media.hashing import pdq_hash
from schoolgate.media.sniff import MediaType, raster_format, sniff
from schoolgate.pipeline.engine import InspectionContext, Inspector

PUPIL = InspectionContext(client_ip="192.0.2.20", app="testapp")
FORMATS = ["TGA", "PCX", "PPM", "SGI", "JPEG2000", "DIB", "QOI", "DDS", "XBM", "XPM"]


def xpm(image: Image.Image) -> bytes:
    """An X11 pixmap (C source; Pillow reads but does not write them), 64 colours."""
    indexed = image.convert("RGB").quantize(64)
    palette = indexed.getpalette() or []
    codes = [chr(48 + n) for n in range(64)]
    lines = [f'"{indexed.width} {indexed.height} 64 1"']
    lines += [f'"{codes[n]} c #{bytes(palette[3 * n : 3 * n + 3]).hex()}"' for n in range(64)]
    pixels = indexed.tobytes()
    for row in range(indexed.height):
        line = pixels[row * indexed.width : (row + 1) * indexed.width]
        lines.append('"' + "".join(codes[i] for i in line) + '"')
    return ("/* XPM */\nstatic char *picture[] = {\n" + ",\n".join(lines) + "};\n").encode()


def save(image: Image.Image, fmt: str) -> bytes:
    if fmt == "XPM":
        return xpm(image)
    if fmt == "XBM":
        image = image.convert("1")  # a bitmap: one bit a pixel, dithered
    buffer = io.BytesIO()
    image.save(buffer, fmt)
    return buffer.getvalue()


@pytest.fixture
def inspector(data_dir: Path, benign_photos: dict[str, Image.Image]) -> Iterator[Inspector]:
    with BankStore(data_dir / "banks.sqlite") as store:
        store.create_bank("incident-raster")
        pdq = pdq_hash(benign_photos["chelsea"])
        signal = SignalInput(SignalType.PDQ, pdq.hex, quality=pdq.quality)
        store.add_signals("incident-raster", [signal], "test")
    inspector = Inspector.from_config(parse_config("classifier: {models: []}\n", "test.yaml"))
    yield inspector
    inspector.close()


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_banked_picture_in_an_editor_format_is_blocked(
    inspector: Inspector, benign_photos: dict[str, Image.Image], fmt: str
) -> None:
    data = save(benign_photos["chelsea"].convert("RGB"), fmt)
    assert (sniff(data), raster_format(data)) == (MediaType.RASTER, fmt)
    verdict = inspector.evaluate(data, PUPIL)
    assert verdict.blocked, verdict.to_dict()
    assert verdict.matches[0].bank == "incident-raster"


@pytest.mark.parametrize("fmt", FORMATS)
def test_an_innocent_picture_in_an_editor_format_is_allowed(
    inspector: Inspector, benign_photos: dict[str, Image.Image], fmt: str
) -> None:
    verdict = inspector.evaluate(save(benign_photos["coffee"].convert("RGB"), fmt), PUPIL)
    assert not verdict.blocked, verdict.to_dict()
    assert verdict.to_dict().get("failure") is None


def test_a_tga_without_its_footer_is_recognised_by_its_exact_size(
    benign_photos: dict[str, Image.Image],
) -> None:
    data = save(benign_photos["coffee"].convert("RGB"), "TGA")
    assert data.endswith(b"TRUEVISION-XFILE.\x00")
    bare = data[:-26]  # a version 1 file: no footer
    assert raster_format(bare) == "TGA"
    assert raster_format(bare + b"x") is None  # the size no longer fits: not claimed


def test_random_bytes_and_text_are_not_claimed() -> None:
    rng = random.Random(7)
    blobs = [rng.randbytes(rng.randrange(20, 400)) for _ in range(5000)]
    texts = [b"P1 team meeting at 3pm", b"P6 is the best set", b"qoif", b"\n\x02 hello",
             b"#define LCD_width 128\n#define LCD_height 64\nint main(void) { return 0; }\n",
             b"/* XPM */ is a format from X11, see the notes"]  # fmt: skip
    assert [b for b in blobs + texts if sniff(b) is MediaType.RASTER] == []
