"""The geometry of a robust match: mapping points, composing transforms, their local linear part,
and whether a transform is one a copy can have (scale, stretch, shear, perspective)."""

from __future__ import annotations

import numpy as np

# Cosine of the angle between the transformed axes. A phone photo of a screen, or an editor's
# skew tool, shears a copy by half its height and more (adversarial pass a15: shears of 15-60%
# went through under the old bound of 0.12); the content check, not the shape, tells another
# picture from a copy.
_MAX_SHEAR = 0.55
# How much nearer the camera one corner of the matched area may be than another, under a
# perspective (a screen photographed at a slant): a keystone that narrows one edge to 40% of
# the other (30% off each side) is 2.5.
_MAX_PERSPECTIVE = 3.0


def then(transform: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """`transform` (2x3 affine or 3x3 perspective) followed by a 3x3 affine map, in the same
    form as `transform`."""
    full = transform if transform.shape[0] == 3 else np.vstack([transform, [0.0, 0.0, 1.0]])
    composed: np.ndarray = affine @ full
    return composed if transform.shape[0] == 3 else composed[:2]


def mapped(transform: np.ndarray, points: np.ndarray) -> np.ndarray:
    """`points` (N x 2) mapped by `transform` (2x3 affine or 3x3 perspective)."""
    ones = np.ones((len(points), 1))
    image = np.hstack([points, ones]) @ transform.T
    if transform.shape[0] == 3:
        image = image[:, :2] / np.where(np.abs(image[:, 2:]) < 1e-9, 1e-9, image[:, 2:])
    return np.asarray(image[:, :2])


def jacobian(transform: np.ndarray, at: np.ndarray) -> np.ndarray:
    """The 2x2 linear part of a transform at a point (an affine one's is the same everywhere;
    a perspective one's changes across the picture)."""
    if transform.shape[0] == 2:
        return transform[:, :2]
    x, y = float(at[0]), float(at[1])
    w = float(transform[2, 0] * x + transform[2, 1] * y + transform[2, 2])
    u = float(transform[0, 0] * x + transform[0, 1] * y + transform[0, 2])
    v = float(transform[1, 0] * x + transform[1, 1] * y + transform[1, 2])
    if abs(w) < 1e-9:
        return np.zeros((2, 2))
    return np.array(
        [[transform[0, 0] * w - u * transform[2, 0], transform[0, 1] * w - u * transform[2, 1]],
         [transform[1, 0] * w - v * transform[2, 0], transform[1, 1] * w - v * transform[2, 1]]]
    ) / (w * w)  # fmt: skip


def transform_is_plausible(
    transform: np.ndarray, source: np.ndarray, max_scale: float, max_stretch: float
) -> bool:
    """A copy's geometry: scale within bounds, one axis stretched at most max_stretch times the
    other (an app that fits a picture to a square or a story frame), a bounded shear, and for a
    perspective, a picture seen from in front (no fold, no horizon inside the matched area)
    whose nearest corner is at most _MAX_PERSPECTIVE times nearer than its farthest."""
    if transform.shape[0] == 3:
        low, high = source.min(axis=0), source.max(axis=0)
        corners = np.array([[low[0], low[1]], [high[0], low[1]], [high[0], high[1]],
                            [low[0], high[1]]])  # fmt: skip
        w = corners @ transform[2, :2] + transform[2, 2]
        if np.any(w <= 1e-6):
            return False  # the matched area crosses the horizon: no camera sees a copy so
        if float(w.max() / w.min()) > _MAX_PERSPECTIVE:
            return False
        if min(float(np.linalg.det(jacobian(transform, c))) for c in corners) <= 0:
            return False  # folded or mirrored (mirrors are banked as views of their own)
        centre = jacobian(transform, source.mean(axis=0))
        return _linear_is_plausible(centre, max_scale, max_stretch)
    return _linear_is_plausible(transform[:, :2], max_scale, max_stretch)


def _linear_is_plausible(linear: np.ndarray, max_scale: float, max_stretch: float) -> bool:
    across, down = linear[:, 0], linear[:, 1]
    x_scale, y_scale = float(np.hypot(*across)), float(np.hypot(*down))
    if not (x_scale and y_scale):
        return False
    stretch = max(x_scale, y_scale) / min(x_scale, y_scale)
    shear = abs(float(across @ down)) / (x_scale * y_scale)
    scale = float(np.sqrt(x_scale * y_scale))
    return 1 / max_scale <= scale <= max_scale and stretch <= max_stretch and shear <= _MAX_SHEAR
