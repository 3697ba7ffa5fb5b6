"""Views that undo a false-colour edit: one channel alone (or its negative), the colours with a
set of channels inverted, or in another channel order. A copy edited so keeps the picture and
scrambles the brightness that perceptual hashes read (adversarial passes a42 F5, a44 F1); one
of these views gives the original brightness back, exactly where the edit was one of them."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from typing import Final

from PIL import Image, ImageOps


def _one_channel(number: int, negative: bool) -> Callable[[Image.Image], Image.Image]:
    def view(rgb: Image.Image) -> Image.Image:
        channel = rgb.split()[number]
        return (ImageOps.invert(channel) if negative else channel).convert("RGB")

    return view


def _recoloured(order: Sequence[int], inverted: int) -> Callable[[Image.Image], Image.Image]:
    def view(rgb: Image.Image) -> Image.Image:
        bands = rgb.split()
        chosen = [bands[n] for n in order]
        return Image.merge("RGB", [ImageOps.invert(band) if inverted >> n & 1 else band
                                   for n, band in enumerate(chosen)])  # fmt: skip

    return view


# Each channel and its negative; every set of channels inverted; every other channel order.
COLOUR_UNDOS: Final = (
    [_one_channel(n, negative) for negative in (False, True) for n in range(3)]
    + [_recoloured((0, 1, 2), inverted) for inverted in range(1, 8)]
    + [_recoloured(order, 0) for order in itertools.permutations(range(3)) if order != (0, 1, 2)]
)
