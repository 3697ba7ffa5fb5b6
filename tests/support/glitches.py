"""Damaged copies of a picture that a viewer still shows: a JPEG with bytes of its entropy-coded
data flipped (the decoder loses its place and carries on, each band after it shifted sideways
and tinted), and the same damage drawn directly (bands slipped sideways and tinted), which
does not depend on how a decoder recovers; and its column version, columns slid up or down,
of equal or unequal width, and sliced both ways."""

from __future__ import annotations

import io
import itertools
import random

import numpy as np
from PIL import Image


def flipped_jpeg(data: bytes, flips: int, seed: int) -> bytes:
    """`data` (a baseline JPEG) with `flips` bytes of its scan XORed with 0xFF, spread over the
    scan after its first tenth (adversarial pass a74 F1). Marker bytes are left alone, so the
    file keeps its structure."""
    rng = random.Random(seed)
    damaged = bytearray(data)
    scan = data.find(b"\xff\xda")
    end = len(data) - 2
    start = scan + (end - scan) // 10
    span = end - start
    for k in range(flips):
        at = start + k * span // flips + rng.randint(0, max(1, span // (4 * flips)))
        if at < end and damaged[at] != 0xFF and damaged[at - 1] != 0xFF and damaged[at] != 0x00:
            damaged[at] ^= 0xFF
    return bytes(damaged)


def slipped_bands(image: Image.Image, seed: int, bands: int = 5) -> Image.Image:
    """`image` cut into `bands` horizontal bands below its top one, each slipped sideways by a
    whole number of 16-pixel blocks (wrapping round, as a decoder's rows do) and brightened or
    darkened with a tint."""
    rng = random.Random(seed)
    pixels = np.asarray(image.convert("RGB"), np.int16).copy()
    height = pixels.shape[0]
    edges = sorted(rng.sample(range(height // 8, height - height // 16), bands))
    slip = 0
    for top, bottom in zip(edges, [*edges[1:], height], strict=True):
        slip += rng.choice((-3, -2, -1, 1, 2, 3)) * 16
        tint = np.array([rng.randint(-40, 40) for _ in range(3)], np.int16)
        pixels[top:bottom] = np.roll(pixels[top:bottom], slip, axis=1) + tint
    return Image.fromarray(pixels.clip(0, 255).astype(np.uint8))


def jpeg(image: Image.Image, quality: int = 90) -> bytes:
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, "JPEG", quality=quality)
    return buffer.getvalue()


def slid_columns(image: Image.Image, seed: int, columns: int = 5) -> Image.Image:
    """`image` cut into `columns` vertical slices, each rolled up or down by up to a sixth of
    its height (a slice effect's columns; adversarial pass a77 J1)."""
    rng = random.Random(seed)
    pixels = np.asarray(image.convert("RGB")).copy()
    height, width = pixels.shape[:2]
    edges = [0, *sorted(rng.sample(range(width // 10, width - width // 10), columns - 1)), width]
    for left, right in itertools.pairwise(edges):
        slide = rng.randint(-height // 6, height // 6)
        pixels[:, left:right] = np.roll(pixels[:, left:right], slide, axis=0)
    return Image.fromarray(pixels)


def sliced(image: Image.Image, seed: int, slices: int = 8, reach: float = 1 / 6,
           rows: bool = False) -> Image.Image:  # fmt: skip
    """`image` cut at random places into `slices` columns of unequal width, each rolled up or
    down by up to `reach` of its height (a slice effect; adversarial passes a77 J1, a78 K2);
    with `rows`, the result then cut into rows the same way, each rolled sideways."""
    rng = random.Random(seed)
    pixels = np.asarray(image.convert("RGB")).copy()
    for axis in (0, 1) if rows else (0,):
        length, across = pixels.shape[axis], pixels.shape[1 - axis]
        cuts = [0, *sorted(rng.sample(range(10, across - 10), slices - 1)), across]
        for start, end in itertools.pairwise(cuts):
            part = np.s_[:, start:end] if axis == 0 else np.s_[start:end]
            slide = rng.randint(-int(length * reach), int(length * reach))
            pixels[part] = np.roll(pixels[part], slide, axis=axis)
    return Image.fromarray(pixels)
