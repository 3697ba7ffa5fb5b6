"""What a classifier is described by and returns: model specs, results, load errors, and the
adapter interface every model family implements (schoolgate.classify.adapters)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
from PIL import Image

from schoolgate.classify.onnx_runtime import ort
from schoolgate.errors import SchoolgateError

ADAPTERS = ("open_nsfw", "nudenet", "onnx")


# Yahoo's README: scores < 0.2 are likely safe, > 0.8 likely NSFW; blocking at 0.8 keeps false
# positives on ordinary photos (beach, sport, skin tones) rare, which matters in a school.
OPEN_NSFW_THRESHOLDS: Mapping[str, float] = {"nsfw": 0.8}


# NudeNet's own detector keeps boxes from 0.25; blocking needs more confidence than "a box".
# No buttocks_exposed: it fires on benign shapes (0.83 on scikit-image's colour wheel).
NUDENET_THRESHOLDS: Mapping[str, float] = {
    "female_genitalia_exposed": 0.5,
    "male_genitalia_exposed": 0.5,
    "female_breast_exposed": 0.5,
    "anus_exposed": 0.5,
}


class ModelLoadError(SchoolgateError):
    """A classifier model could not be loaded: names the model, the file and why."""

    def __init__(self, model: str, path: str | None, reason: str) -> None:
        self.model = model
        self.path = path
        self.reason = reason
        where = path if path is not None else "no file"
        super().__init__(f"classifier model {model!r} ({where}): {reason}")


@dataclass(frozen=True)
class ModelSpec:
    """One model as configured: which adapter, which file, which thresholds."""

    name: str
    adapter: str
    thresholds: Mapping[str, float]
    enabled: bool = True
    path: str | None = None
    time_budget_ms: float = 1000.0
    input_size: int = 224
    channel_order: str = "RGB"
    layout: str = "NCHW"
    scale: float = 1 / 255
    mean: tuple[float, float, float] = (0.0, 0.0, 0.0)
    std: tuple[float, float, float] = (1.0, 1.0, 1.0)
    labels: tuple[str, ...] = ()
    output_activation: str = "none"


def default_model_specs() -> list[ModelSpec]:
    """The packaged models with the default thresholds; NudeNet present but disabled (opt-in)."""
    return [
        ModelSpec(name="open_nsfw", adapter="open_nsfw", thresholds=dict(OPEN_NSFW_THRESHOLDS)),
        ModelSpec(
            name="nudenet", adapter="nudenet", thresholds=dict(NUDENET_THRESHOLDS), enabled=False
        ),
    ]


@dataclass(frozen=True)
class ClassifierResult:
    """One model's verdict on one image."""

    model: str
    scores: Mapping[str, float]
    flagged: tuple[str, ...]
    elapsed_ms: float
    over_budget: bool
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form for the audit log."""
        return {
            "model": self.model,
            "scores": {label: round(score, 6) for label, score in self.scores.items()},
            "flagged": list(self.flagged),
            "elapsed_ms": round(self.elapsed_ms, 3),
            "over_budget": self.over_budget,
            "error": self.error,
        }


class ClassifierAdapter(Protocol):
    """What `Classifier` needs from a model family."""

    name: str
    labels: tuple[str, ...]

    def preprocess(self, image: Image.Image) -> np.ndarray:
        """The model's input tensor for `image`, batch dimension included."""
        ...

    def scores(
        self, image: Image.Image, run_options: ort.RunOptions | None = None
    ) -> dict[str, float]:
        """Score by label, each in [0, 1]. `run_options` lets a watchdog stop the run."""
        ...
