"""Ordinary large media is judged, not refused (adversarial pass, issue 16): a 108-megapixel
phone photo is decoded at a reduced JPEG scale, and an animated GIF of 1,100 frames is sampled by
display time like any animation. Real bombs stay refused."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from schoolgate.banks.model import SignalInput, SignalType
from schoolgate.banks.store import BankStore
from schoolgate.config import parse_config
from schoolgate.errors import MediaRefused
from schoolgate.media.decode import MediaLimits, decode_image
from schoolgate.media.hashing import pdq_hash
from schoolgate.pipeline.engine import InspectionContext, Inspector

PUPIL = InspectionContext(client_ip="192.0.2.20", app="testapp")
SMALL_CAP = 1_000_000  # pixels: the tests' stand-in for the 80 MP default


def jpeg(image: Image.Image, **params: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=90, **params)
    return buffer.getvalue()


@pytest.fixture
def inspector(data_dir: Path, benign_photos: dict[str, Image.Image]) -> Iterator[Inspector]:
    with BankStore(data_dir / "banks.sqlite") as store:
        store.create_bank("incident-large")
        pdq = pdq_hash(benign_photos["chelsea"])
        signal = SignalInput(SignalType.PDQ, pdq.hex, quality=pdq.quality)
        store.add_signals("incident-large", [signal], "test")
    config = f"classifier: {{models: []}}\nlimits: {{max_pixels: {SMALL_CAP}}}\n"
    inspector = Inspector.from_config(parse_config(config, "test.yaml"))
    yield inspector
    inspector.close()


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
def test_a_108_megapixel_photo_is_decoded_at_half_scale() -> None:
    ramp = np.linspace(0, 255, 12_000, dtype=np.uint8)
    photo = Image.fromarray(np.tile(ramp, (9_000, 1)))  # 12000 x 9000, as a 108 MP camera
    decoded = decode_image(jpeg(photo))
    assert (decoded.width, decoded.height, decoded.scale) == (6_000, 4_500, 0.5)


def test_a_photo_over_the_cap_is_judged_at_a_reduced_scale(
    inspector: Inspector, benign_photos: dict[str, Image.Image]
) -> None:
    banked = jpeg(benign_photos["chelsea"].resize((1_600, 1_200)))  # 1.92 MP, cap 1 MP
    verdict = inspector.evaluate(banked, PUPIL)
    assert verdict.blocked, verdict.to_dict()
    assert [match.bank for match in verdict.matches] == ["incident-large"]
    innocent = inspector.evaluate(jpeg(benign_photos["coffee"].resize((1_600, 1_200))), PUPIL)
    assert not innocent.blocked, innocent.to_dict()
    assert innocent.to_dict().get("failure") is None


@pytest.mark.parametrize(
    ("size", "params"),
    [
        ((2_100, 2_000), {}),  # 4.2 MP: more than 4x the cap, even at half scale too large
        ((1_600, 1_200), {"progressive": True}),  # libjpeg keeps full-size coefficients
    ],
)
def test_jpegs_that_cannot_be_reduced_under_the_cap_are_refused(
    size: tuple[int, int], params: dict[str, object]
) -> None:
    data = jpeg(Image.new("RGB", size, (40, 90, 160)), **params)
    with pytest.raises(MediaRefused) as refused:
        decode_image(data, MediaLimits(max_pixels=SMALL_CAP))
    assert refused.value.reason == "pixel_cap"


def _long_animation(frames: int, picture: Image.Image | None = None, at: int = 0) -> bytes:
    """A sticker-like animation: a dot moving over a drawing, `frames` frames of 100 ms, with
    `picture` held for 2 s at frame `at` when given."""
    images: list[Image.Image] = []
    durations: list[int] = []
    for index in range(frames):
        if picture is not None and index == at:
            images.append(picture)
            durations.append(2_000)
            continue
        frame = Image.new("RGB", (200, 150), (30, 110, 200))
        draw = ImageDraw.Draw(frame)
        draw.rectangle((20, 20, 90, 80), fill=(250, 200, 40))
        x, y = index % 190, (index // 190) * 20 % 140
        draw.rectangle((x, y, x + 9, y + 9), fill=(255, 255, 255))
        images.append(frame)
        durations.append(100)
    buffer = io.BytesIO()
    images[0].save(
        buffer, "GIF", save_all=True, append_images=images[1:], duration=durations, loop=0
    )
    return buffer.getvalue()


def test_an_animation_of_1100_frames_is_sampled_not_refused(inspector: Inspector) -> None:
    data = _long_animation(1_100)
    assert decode_image(data).frame_count == 1_100
    verdict = inspector.evaluate(data, PUPIL)
    record = verdict.to_dict()
    assert not verdict.blocked, record
    assert record.get("failure") is None
    assert int(record["hashes"]["video_frames_hashed"]) > 100  # about 110 s, sampled


def test_a_banked_picture_late_in_a_long_animation_is_blocked(
    inspector: Inspector, benign_photos: dict[str, Image.Image]
) -> None:
    picture = benign_photos["chelsea"].resize((200, 150))
    verdict = inspector.evaluate(_long_animation(1_100, picture, at=1_050), PUPIL)
    assert verdict.blocked, verdict.to_dict()
    assert [match.bank for match in verdict.matches] == ["incident-large"]
