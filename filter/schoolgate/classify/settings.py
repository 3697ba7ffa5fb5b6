"""The `classifier:` configuration section: the models, their thresholds and budgets, and how
many of a video's frames must flag."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from schoolgate.classify.spec import ModelSpec
from schoolgate.classify.video import FrameVote
from schoolgate.config_reader import Node


@dataclass(frozen=True)
class ClassifierConfig:
    models: tuple[ModelSpec, ...]
    intra_op_threads: int = 1
    # Skip the classifier when a bank already matched: the verdict cannot change, and it saves
    # the most expensive step.
    skip_when_matched: bool = True
    # How many sampled frames of a video are scored, and how many must flag.
    video: FrameVote = field(default_factory=FrameVote)


def _frame_vote(node: Node) -> FrameVote:
    node.mapping(allowed={"frames", "min_flagged_frames"})
    d = FrameVote()
    frames = node.child("frames").integer(d.frames, minimum=1, maximum=256)
    needed = node.child("min_flagged_frames")
    flagged = needed.integer(min(d.min_flagged_frames, frames), minimum=1)
    if flagged > frames:
        needed.fail(f"must be at most classifier.video.frames ({frames}), got {flagged}")
    return FrameVote(frames=frames, min_flagged_frames=flagged)


_MODEL_KEYS = {
    "name",
    "adapter",
    "thresholds",
    "enabled",
    "path",
    "time_budget_ms",
    "input_size",
    "channel_order",
    "layout",
    "scale",
    "mean",
    "std",
    "labels",
    "output_activation",
}


def parse_classifier(node: Node) -> ClassifierConfig:
    node.mapping(allowed={"models", "intra_op_threads", "skip_when_matched", "video"})
    models: list[ModelSpec] = []
    names: set[str] = set()
    for child in node.child("models").elements():
        spec = _model(child)
        if spec.name in names:
            child.child("name").fail(f"duplicate model name {spec.name!r}")
        names.add(spec.name)
        models.append(spec)
    defaults = ClassifierConfig(models=())
    return ClassifierConfig(
        models=tuple(models),
        intra_op_threads=node.child("intra_op_threads").integer(
            defaults.intra_op_threads, minimum=1, maximum=64
        ),
        skip_when_matched=node.child("skip_when_matched").flag(defaults.skip_when_matched),
        video=_frame_vote(node.child("video")),
    )


def _triple(node: Node, default: tuple[float, float, float]) -> tuple[float, float, float]:
    if node.missing:
        return default
    items = node.elements()
    if len(items) != 3:
        node.fail("expected three numbers, one per colour channel")
    a, b, c = (item.number(0.0) for item in items)
    return (a, b, c)


def _model(node: Node) -> ModelSpec:
    node.mapping(allowed=_MODEL_KEYS)
    thresholds = {
        label: child.number(0.0, minimum=0.0, maximum=1.0)
        for label, child in node.child("thresholds").items()
    }
    if not thresholds:
        node.child("thresholds").fail("give at least one label: threshold (0..1) to flag on")
    defaults = ModelSpec(name="_", adapter="onnx", thresholds={})
    path = node.child("path").optional_text()
    return ModelSpec(
        name=node.child("name").text(),
        adapter=node.child("adapter").choice(("open_nsfw", "nudenet", "onnx")),
        thresholds=thresholds,
        enabled=node.child("enabled").flag(True),
        path=str(Path(path).expanduser()) if path else None,
        time_budget_ms=node.child("time_budget_ms").number(defaults.time_budget_ms, minimum=1),
        input_size=node.child("input_size").integer(defaults.input_size, minimum=1, maximum=4096),
        channel_order=node.child("channel_order").choice(("RGB", "BGR"), defaults.channel_order),
        layout=node.child("layout").choice(("NCHW", "NHWC"), defaults.layout),
        scale=node.child("scale").number(defaults.scale),
        mean=_triple(node.child("mean"), defaults.mean),
        std=_triple(node.child("std"), defaults.std),
        labels=tuple(item.text() for item in node.child("labels").elements()),
        output_activation=node.child("output_activation").choice(
            ("none", "softmax", "sigmoid"), defaults.output_activation
        ),
    )
