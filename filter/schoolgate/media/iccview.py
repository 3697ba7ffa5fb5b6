"""What an embedded ICC profile makes of an RGB or grey picture's values, channel by channel.

A matrix/TRC profile (what cameras, phones and editors embed: sRGB, Display P3, Adobe RGB)
gives each channel a tone curve (`rTRC`, `gTRC`, `bTRC`, or `kTRC` for grey) from stored value
to light. Colour-managed viewers apply it, so a profile whose curves remap every value shows a
picture whose stored pixels are noise (adversarial pass a44 F8: a banked photo with its values
permuted and the permutation undone by the profile, shown exactly by every browser). Littlecms
optimises such curves into a smooth approximation; here they are applied as they are written:
each channel's curve, then the sRGB encoding, as a 256-entry table. The primaries are left as
they are: they move colours slightly between standard spaces, never brightness structure.
"""

from __future__ import annotations

import struct
from typing import Final

import numpy as np
from PIL import Image

_CURVES: Final = {"RGB": (b"rTRC", b"gTRC", b"bTRC"), "L": (b"kTRC",)}
_MAX_TAGS: Final = 256
_MAX_POINTS: Final = 65_536


def shown_through_profile(image: Image.Image, profile: bytes) -> Image.Image | None:
    """`image` (RGB or L) through its profile's tone curves, as sRGB RGB; None where the profile
    has no readable curves for this mode (a LUT-based profile, a damaged one)."""
    names = _CURVES.get(image.mode)
    if names is None:
        return None
    tags = _tags(profile)
    tables = []
    for name in names:
        span = tags.get(name)
        curve = _curve(profile[span[0] : span[0] + span[1]]) if span else None
        if curve is None:
            return None
        tables.append(_srgb_encoded(curve))
    if image.mode == "L":
        return image.point(tables[0]).convert("RGB")
    bands = zip(image.split(), tables, strict=True)
    return Image.merge("RGB", [band.point(table) for band, table in bands])


def _tags(profile: bytes) -> dict[bytes, tuple[int, int]]:
    if len(profile) < 132:
        return {}
    (count,) = struct.unpack_from(">I", profile, 128)
    tags: dict[bytes, tuple[int, int]] = {}
    for number in range(min(count, _MAX_TAGS)):
        at = 132 + 12 * number
        if at + 12 > len(profile):
            break
        name, offset, size = struct.unpack_from(">4sII", profile, at)
        if offset + size <= len(profile):
            tags.setdefault(name, (offset, size))
    return tags


def _curve(tag: bytes) -> np.ndarray | None:
    """Light (0..1) for each stored value 0..255, from a `curv` or `para` tag."""
    values = np.arange(256) / 255.0
    light: np.ndarray
    if tag[:4] == b"curv" and len(tag) >= 12:
        (points,) = struct.unpack_from(">I", tag, 8)
        if points == 0:
            light = values
        elif points == 1 and len(tag) >= 14:
            light = np.power(values, struct.unpack_from(">H", tag, 12)[0] / 256.0)
        elif 1 < points <= _MAX_POINTS and len(tag) >= 12 + 2 * points:
            table = np.frombuffer(tag, ">u2", points, 12) / 65535.0
            light = np.interp(values * (points - 1), np.arange(points), table)
        else:
            return None
        return light
    if tag[:4] != b"para" or len(tag) < 16:
        return None
    (kind,) = struct.unpack_from(">H", tag, 8)
    count = {0: 1, 1: 3, 2: 4, 3: 5, 4: 7}.get(kind)
    if count is None or len(tag) < 12 + 4 * count:
        return None
    read = [v / 65536.0 for v in struct.unpack_from(f">{count}i", tag, 12)]
    g, a, b, c, d, e, f = (read + [0.0] * 7)[:7]
    if kind in (1, 2) and a == 0:
        return None
    raised = np.power(np.maximum(a * values + b, 0.0), g)
    if kind == 0:
        light = np.power(values, g)
    elif kind == 1:
        light = np.where(values >= -b / a, raised, 0.0)
    elif kind == 2:
        light = np.where(values >= -b / a, raised + c, c)
    elif kind == 3:
        light = np.where(values >= d, raised, c * values)
    else:
        light = np.where(values >= d, raised + e, c * values + f)
    return light


def _srgb_encoded(light: np.ndarray) -> list[int]:
    light = np.clip(np.nan_to_num(light), 0.0, 1.0)
    encoded = np.where(light <= 0.0031308, 12.92 * light, 1.055 * np.power(light, 1 / 2.4) - 0.055)
    return [int(v) for v in np.clip(np.round(encoded * 255), 0, 255)]
