"""16-bit grey pictures and multi-page TIFFs are judged as a viewer shows them (adversarial pass
a5: a banked picture saved as 16-bit grey PNG or TIFF, or as page 2 of a TIFF, passed unmatched).
Benign photos only."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from schoolgate.banks.model import SignalInput, SignalType
from schoolgate.banks.store import BankStore
from schoolgate.config import parse_config
from schoolgate.media.hashing import pdq_hash
from schoolgate.pipeline.engine import InspectionContext, Inspector

PUPIL = InspectionContext(client_ip="192.0.2.20", app="testapp")


@pytest.fixture
def inspector(data_dir: Path, benign_photos: dict[str, Image.Image]) -> Iterator[Inspector]:
    with BankStore(data_dir / "banks.sqlite") as store:
        store.create_bank("incident")
        pdq = pdq_hash(benign_photos["astronaut"])
        store.add_signals("incident", [SignalInput(SignalType.PDQ, pdq.hex, quality=pdq.quality)],
                          "t")  # fmt: skip
    inspector = Inspector.from_config(parse_config("classifier: {models: []}\n", "test.yaml"))
    yield inspector
    inspector.close()


def grey16(photo: Image.Image, fmt: str) -> bytes:
    wide = np.asarray(photo.convert("L")).astype(np.uint16) * 257
    out = io.BytesIO()
    Image.fromarray(wide).save(out, fmt)
    return out.getvalue()


def pages(*photos: Image.Image) -> bytes:
    first, *rest = (Image.fromarray(np.asarray(photo.convert("RGB"))) for photo in photos)
    out = io.BytesIO()
    first.save(out, "TIFF", save_all=True, append_images=rest, compression="tiff_deflate")
    return out.getvalue()


@pytest.mark.parametrize("fmt", ["PNG", "TIFF"])
def test_16_bit_grey_is_judged_as_shown(
    inspector: Inspector, benign_photos: dict[str, Image.Image], fmt: str
) -> None:
    assert inspector.evaluate(grey16(benign_photos["astronaut"], fmt), PUPIL).blocked
    other = inspector.evaluate(grey16(benign_photos["coffee"], fmt), PUPIL)
    assert not other.blocked
    assert other.to_dict().get("failure") is None


def test_every_page_of_a_tiff_is_judged(
    inspector: Inspector, benign_photos: dict[str, Image.Image]
) -> None:
    coffee, rocket = benign_photos["coffee"], benign_photos["rocket"].resize((512, 512))
    assert inspector.evaluate(pages(coffee, benign_photos["astronaut"]), PUPIL).blocked
    assert inspector.evaluate(pages(coffee, rocket, benign_photos["astronaut"]), PUPIL).blocked
    innocent = inspector.evaluate(pages(coffee, rocket, benign_photos["chelsea"]), PUPIL)
    assert not innocent.blocked
    assert innocent.to_dict().get("failure") is None
