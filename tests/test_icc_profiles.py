"""Pictures are judged as colour-managed viewers show them: an embedded ICC profile applied
(adversarial pass a44 F8: a banked photo whose stored values were permuted, and an inverted
green channel, each undone by the tone curves of an embedded profile, were shown exactly by
Chromium and passed the gateway as noise). Standard profiles change nothing that matters."""

from __future__ import annotations

import io
import struct
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageCms

from schoolgate.config import parse_config
from schoolgate.media.decode import decode_image
from schoolgate.pipeline.engine import InspectionContext, Inspector
from tests.support.proxy_harness import bank_photo

PUPIL = InspectionContext(client_ip="192.0.2.9")
SRGB_XYZ = {b"rXYZ": (0.4361, 0.2225, 0.0139), b"gXYZ": (0.3851, 0.7169, 0.0971),
            b"bXYZ": (0.1431, 0.0606, 0.7141), b"wtpt": (0.9642, 1.0, 0.8249)}  # fmt: skip


def _s15(value: float) -> bytes:
    return struct.pack(">i", round(value * 65536))


def matrix_trc_profile(curves: list[np.ndarray]) -> bytes:
    """An ICC v2 RGB display profile with sRGB primaries and the given 256-entry tone curves
    (stored value -> light, 0..1), written by hand as an editor writes one."""
    description = b"desc" + bytes(4) + struct.pack(">I", 5) + b"test\x00" + bytes(78)
    tags: list[tuple[bytes, bytes]] = [
        (b"desc", description),
        (b"cprt", b"text" + bytes(4) + b"none\x00"),
    ]
    for name, xyz in SRGB_XYZ.items():
        tags.append((name, b"XYZ " + bytes(4) + b"".join(_s15(v) for v in xyz)))
    for name, curve in zip((b"rTRC", b"gTRC", b"bTRC"), curves, strict=True):
        points = np.round(np.clip(curve, 0, 1) * 65535).astype(">u2").tobytes()
        tags.append((name, b"curv" + bytes(4) + struct.pack(">I", 256) + points))
    table, body, offset = b"", b"", 128 + 4 + 12 * len(tags)
    for name, data in tags:
        data += bytes(-len(data) % 4)
        table += struct.pack(">4sII", name, offset + len(body), len(data))
        body += data
    size = offset + len(body)
    header = struct.pack(">I4sI4s4s4s", size, b"lcms", 0x02100000, b"mntr", b"RGB ", b"XYZ ")
    header += bytes(12) + b"acsp" + bytes(24) + struct.pack(">I", 0)
    header += b"".join(_s15(v) for v in SRGB_XYZ[b"wtpt"]) + bytes(4)
    header += bytes(128 - len(header))
    return header + struct.pack(">I", len(tags)) + table + body


def _linear(encoded: np.ndarray) -> np.ndarray:
    return np.where(encoded <= 0.04045, encoded / 12.92, ((encoded + 0.055) / 1.055) ** 2.4)


def scrambled(picture: Image.Image, seed: int) -> tuple[Image.Image, bytes]:
    """Each channel's values permuted; the profile's curves undo the permutation."""
    permutation = np.random.default_rng(seed).permutation(256)
    inverse = np.argsort(permutation)
    stored = Image.fromarray(inverse[np.asarray(picture.convert("RGB"))].astype(np.uint8))
    curve = _linear(permutation / 255.0)
    return stored, matrix_trc_profile([curve, curve, curve])


def with_profile(picture: Image.Image, profile: bytes, fmt: str) -> bytes:
    out = io.BytesIO()
    picture.save(out, fmt, icc_profile=profile, **({"quality": 95} if fmt == "JPEG" else {}))
    return out.getvalue()


@pytest.fixture
def inspector(data_dir: Path, benign_photos: dict[str, Image.Image]) -> Iterator[Inspector]:
    bank_photo(data_dir, benign_photos["astronaut"], "incident-icc")
    inspector = Inspector.from_config(parse_config("classifier: {models: []}\n", "test.yaml"))
    yield inspector
    inspector.close()


def test_a_profile_that_undoes_scrambled_values_shows_the_picture(
    inspector: Inspector, benign_photos: dict[str, Image.Image]
) -> None:
    stored, profile = scrambled(benign_photos["astronaut"], 7)
    ImageCms.ImageCmsProfile(io.BytesIO(profile))  # a profile littlecms accepts
    data = with_profile(stored, profile, "PNG")
    shown = np.asarray(decode_image(data).image, dtype=int)
    assert np.abs(shown - np.asarray(benign_photos["astronaut"], dtype=int)).mean() < 1.0
    assert inspector.evaluate(data, PUPIL).blocked


def test_a_profile_that_undoes_an_inverted_channel_shows_the_picture(
    inspector: Inspector, benign_photos: dict[str, Image.Image]
) -> None:
    rgb = np.asarray(benign_photos["astronaut"]).copy()
    rgb[..., 1] = 255 - rgb[..., 1]
    values = np.arange(256) / 255.0
    profile = matrix_trc_profile([_linear(values), _linear(1 - values), _linear(values)])
    assert inspector.evaluate(with_profile(Image.fromarray(rgb), profile, "JPEG"), PUPIL).blocked


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_a_standard_srgb_profile_changes_nothing_that_matters(
    benign_photos: dict[str, Image.Image], fmt: str
) -> None:
    photo = benign_photos["coffee"]
    srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    plain = np.asarray(decode_image(_plain(photo, fmt)).image, dtype=int)
    profiled = np.asarray(decode_image(with_profile(photo, srgb, fmt)).image, dtype=int)
    assert np.abs(plain - profiled).mean() < 1.5


def _plain(picture: Image.Image, fmt: str) -> bytes:
    out = io.BytesIO()
    picture.save(out, fmt, **({"quality": 95} if fmt == "JPEG" else {}))
    return out.getvalue()


def test_a_damaged_profile_is_ignored(benign_photos: dict[str, Image.Image]) -> None:
    profile = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    data = with_profile(benign_photos["coffee"], profile[:200], "PNG")
    assert decode_image(data).image.size == benign_photos["coffee"].size
