"""Tiny ONNX models generated on the fly for tests: benign synthetic patterns, never real imagery.

Every model takes one float image tensor `image` of shape [1, 3, S, S] (the generic "onnx"
adapter's NCHW layout, values in [0, 1]) and reads only channel means, so what it "detects" is a
colour, not content. The red-square pattern model is the positive path for end-to-end blocking
tests: a pure red square scores ~1, ordinary photos score ~0.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from PIL import Image

from schoolgate.classify.spec import ModelSpec

PATTERN_INPUT_SIZE = 32
PATTERN_LABEL = "flag"
# flag = sigmoid(K * (mean(red) - mean(green) - C)): red square -> sigmoid(10) ~ 0.99995,
# a photo with mean(red) - mean(green) ~ 0.1 -> sigmoid(-8) ~ 0.0003.
PATTERN_K = 20.0
PATTERN_C = 0.5
# Older IR/opset than the newest onnx writes, so any onnxruntime >= 1.16 loads the files.
_IR_VERSION = 8
_OPSET = 17


def _image_input(size: int, layout: str = "NCHW") -> onnx.ValueInfoProto:
    shape = [1, 3, size, size] if layout == "NCHW" else [1, size, size, 3]
    return helper.make_tensor_value_info("image", TensorProto.FLOAT, shape)


def _const(name: str, value: np.ndarray) -> onnx.NodeProto:
    return helper.make_node("Constant", [], [name], value=numpy_helper.from_array(value, name))


def _red_minus_green_nodes() -> list[onnx.NodeProto]:
    """Nodes computing `rg` = mean(red) - mean(green), shape [1, 1], from `image`."""
    return [
        helper.make_node("ReduceMean", ["image"], ["channel_means"], axes=[2, 3], keepdims=0),
        _const("rg_weights", np.array([[1.0], [-1.0], [0.0]], dtype=np.float32)),
        helper.make_node("MatMul", ["channel_means", "rg_weights"], ["rg"]),
    ]


def _save(graph: onnx.GraphProto, path: Path) -> Path:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", _OPSET)])
    model.ir_version = _IR_VERSION
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


def make_pattern_model(path: Path) -> Path:
    """Write the red-square model to `path`: one output `flag` = sigmoid(k * (r - g - c))."""
    nodes = [
        *_red_minus_green_nodes(),
        _const("c", np.array(PATTERN_C, dtype=np.float32)),
        _const("k", np.array(PATTERN_K, dtype=np.float32)),
        helper.make_node("Sub", ["rg", "c"], ["shifted"]),
        helper.make_node("Mul", ["shifted", "k"], ["logit"]),
        helper.make_node("Sigmoid", ["logit"], ["flag"]),
    ]
    graph = helper.make_graph(
        nodes,
        "schoolgate_red_square",
        [_image_input(PATTERN_INPUT_SIZE)],
        [helper.make_tensor_value_info("flag", TensorProto.FLOAT, [1, 1])],
    )
    return _save(graph, path)


def pattern_model_spec(path: Path, threshold: float = 0.5, name: str = "pattern") -> ModelSpec:
    """A generic-adapter spec for the model `make_pattern_model` wrote at `path`."""
    return ModelSpec(
        name=name,
        adapter="onnx",
        thresholds={PATTERN_LABEL: threshold},
        path=str(path),
        input_size=PATTERN_INPUT_SIZE,
        channel_order="RGB",
        layout="NCHW",
        scale=1 / 255,
        labels=(PATTERN_LABEL,),
        output_activation="none",
        # Generous: other engineers' suites share two cores and this must never flake.
        time_budget_ms=10_000.0,
    )


def pattern_image(size: tuple[int, int] = (64, 64)) -> Image.Image:
    """The benign pattern the model flags: a pure red square."""
    return Image.new("RGB", size, (255, 0, 0))


def make_logits_model(
    path: Path, logits: tuple[float, ...], size: int = 16, layout: str = "NCHW"
) -> Path:
    """A model that ignores its input and returns the fixed vector `logits`, shape [1, n].

    For testing output activations and label-count checks. The image still flows into the graph
    (multiplied by zero) so onnxruntime cannot drop the input.
    """
    n = len(logits)
    nodes = [
        helper.make_node("ReduceMean", ["image"], ["m"], axes=[1, 2, 3], keepdims=0),
        _const("zero", np.zeros((1, n), dtype=np.float32)),
        helper.make_node("Mul", ["m", "zero"], ["z"]),
        _const("logits", np.array([logits], dtype=np.float32)),
        helper.make_node("Add", ["z", "logits"], ["out"]),
    ]
    graph = helper.make_graph(
        nodes,
        "schoolgate_fixed_logits",
        [_image_input(size, layout)],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, n])],
    )
    return _save(graph, path)


def make_failing_model(path: Path, size: int = 16) -> Path:
    """A model that fails at run time on red images (and runs fine on black ones).

    It gathers index floor(10 * mean(red)) from a 3-entry table: a black image reads index 0,
    a red image reads index 10, out of bounds, and onnxruntime raises.
    """
    nodes = [
        helper.make_node("ReduceMean", ["image"], ["means"], axes=[0, 2, 3], keepdims=0),
        _const("red_pick", np.array([0], dtype=np.int64)),
        helper.make_node("Gather", ["means", "red_pick"], ["red"], axis=0),
        _const("ten", np.array(10.0, dtype=np.float32)),
        helper.make_node("Mul", ["red", "ten"], ["scaled"]),
        helper.make_node("Floor", ["scaled"], ["floored"]),
        helper.make_node("Cast", ["floored"], ["index"], to=TensorProto.INT64),
        _const("table", np.array([[0.1], [0.2], [0.3]], dtype=np.float32)),
        helper.make_node("Gather", ["table", "index"], ["picked"], axis=0),
        _const("row", np.array([1, 1], dtype=np.int64)),
        helper.make_node("Reshape", ["picked", "row"], ["out"]),
    ]
    graph = helper.make_graph(
        nodes,
        "schoolgate_fails_on_red",
        [_image_input(size)],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, 1])],
    )
    return _save(graph, path)


def make_slow_model(path: Path, iterations_per_red: int = 10_000_000, size: int = 16) -> Path:
    """A model whose run time grows with the image's red: a Loop of matrix products.

    A black image loops 0 times (loading and warm-up stay instant); a red image loops
    `iterations_per_red` times, far longer than any test's time budget, so only onnxruntime's
    terminate flag can end it early.
    """
    width = 128
    rng = np.random.default_rng(7)
    weights = (rng.standard_normal((width, width)) / np.sqrt(width)).astype(np.float32)
    body = helper.make_graph(
        [
            _const("w", weights),
            helper.make_node("MatMul", ["state_in", "w"], ["product"]),
            helper.make_node("Tanh", ["product"], ["state_out"]),
            helper.make_node("Identity", ["cond_in"], ["cond_out"]),
        ],
        "slow_body",
        [
            helper.make_tensor_value_info("iteration", TensorProto.INT64, []),
            helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
            helper.make_tensor_value_info("state_in", TensorProto.FLOAT, [width, width]),
        ],
        [
            helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
            helper.make_tensor_value_info("state_out", TensorProto.FLOAT, [width, width]),
        ],
    )
    nodes = [
        helper.make_node("ReduceMean", ["image"], ["means"], axes=[0, 2, 3], keepdims=0),
        _const("red_pick", np.array(0, dtype=np.int64)),
        helper.make_node("Gather", ["means", "red_pick"], ["red"], axis=0),
        _const("per_red", np.array(float(iterations_per_red), dtype=np.float32)),
        helper.make_node("Mul", ["red", "per_red"], ["trips_f"]),
        helper.make_node("Cast", ["trips_f"], ["trips"], to=TensorProto.INT64),
        _const("go", np.array(True)),
        _const("start", np.eye(width, dtype=np.float32)),
        helper.make_node("Loop", ["trips", "go", "start"], ["final"], body=body),
        helper.make_node("ReduceMean", ["final"], ["level"], keepdims=1),
        helper.make_node("Sigmoid", ["level"], ["out"]),
    ]
    graph = helper.make_graph(
        nodes,
        "schoolgate_slow_on_red",
        [_image_input(size)],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, 1])],
    )
    return _save(graph, path)
