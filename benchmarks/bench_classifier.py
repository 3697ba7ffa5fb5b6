"""Classifier figures: per-model latency on a decoded 12 MP photo, load time, resident memory.

The photo is a benign 4032x3024 reference image from ../shared/testdata (read in place), falling
back to an upscaled scikit-image photo. Latency covers preprocess + run, the way the proxy pays it.
Memory is measured in a fresh process per model so models do not share (or hide) each other's pages.
"""

from __future__ import annotations

import multiprocessing
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from schoolgate.classify.adapters import load_adapter
from schoolgate.classify.spec import (
    NUDENET_THRESHOLDS,
    OPEN_NSFW_THRESHOLDS,
    ClassifierAdapter,
    ModelSpec,
)
from tests.support.onnx_models import make_pattern_model, pattern_model_spec

Figure = dict[str, Any]
SHARED_PHOTO = (
    Path(__file__).resolve().parent.parent.parent
    / "shared/testdata/pdq-reference/reg-test-input/exif-rotn/exif-rotn-1.jpg"
)
RUNS = 25
WARMUP = 3


def _photo() -> tuple[Image.Image, str]:
    if SHARED_PHOTO.is_file():
        with Image.open(SHARED_PHOTO) as image:
            return image.convert("RGB"), SHARED_PHOTO.name
    from skimage import data

    photo = Image.fromarray(data.coffee()).resize(  # type: ignore[no-untyped-call]
        (4000, 3000), Image.Resampling.BICUBIC
    )
    return photo, "skimage coffee upscaled to 4000x3000"


def _specs(workdir: Path) -> dict[str, ModelSpec]:
    budget = 600_000.0  # measure the whole run, never stop it
    return {
        "open_nsfw": ModelSpec(
            name="open_nsfw",
            adapter="open_nsfw",
            thresholds=dict(OPEN_NSFW_THRESHOLDS),
            time_budget_ms=budget,
        ),
        "nudenet": ModelSpec(
            name="nudenet",
            adapter="nudenet",
            thresholds=dict(NUDENET_THRESHOLDS),
            time_budget_ms=budget,
        ),
        "tiny_pattern": pattern_model_spec(make_pattern_model(workdir / "pattern.onnx")),
    }


def _rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def _load_in_child(spec: ModelSpec, photo_path: str, queue: Any) -> None:
    """Child process: RSS before and after load + one scored photo, and the load time."""
    with Image.open(photo_path) as image:
        photo = image.convert("RGB")
    before = _rss_kib()
    started = time.perf_counter()
    adapter = load_adapter(spec)
    load_ms = (time.perf_counter() - started) * 1000
    adapter.scores(photo)
    queue.put((load_ms, (_rss_kib() - before) / 1024))


def _isolated_load(spec: ModelSpec, photo_path: Path) -> tuple[float, float]:
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    process = context.Process(target=_load_in_child, args=(spec, str(photo_path), queue))
    process.start()
    load_ms, rss_mib = queue.get(timeout=120)
    process.join(timeout=30)
    return float(load_ms), float(rss_mib)


def _percentiles(samples: list[float]) -> tuple[float, float]:
    return float(np.percentile(samples, 50)), float(np.percentile(samples, 95))


def _timed(call: Callable[[], object], runs: int) -> list[float]:
    for _ in range(WARMUP):
        call()
    samples = []
    for _ in range(runs):
        started = time.perf_counter()
        call()
        samples.append((time.perf_counter() - started) * 1000)
    return samples


def _figure(
    name: str,
    value: float,
    unit: str,
    note: str,
    target: str | None = None,
    met: bool | None = None,
) -> Figure:
    return {"name": name, "value": value, "unit": unit, "target": target, "met": met, "note": note}


def _latency(
    name: str, adapter: ClassifierAdapter, photo: Image.Image, threads: int
) -> list[Figure]:
    p50, p95 = _percentiles(_timed(lambda: adapter.scores(photo), RUNS))
    note = f"12 MP decoded photo, preprocess + run, intra_op_threads={threads}, {RUNS} runs"
    budget = "< 1000 ms (default time budget)"
    return [
        _figure(f"classifier.{name}.t{threads}.p50", p50, "ms", note),
        _figure(f"classifier.{name}.t{threads}.p95", p95, "ms", note, budget, p95 < 1000.0),
    ]


def _preprocess(name: str, adapter: ClassifierAdapter, photo: Image.Image) -> Figure:
    p50, _ = _percentiles(_timed(lambda: adapter.preprocess(photo), RUNS))
    note = "12 MP photo to input tensor (numpy + Pillow)"
    return _figure(f"classifier.{name}.preprocess.p50", p50, "ms", note)


def _throughput(spec: ModelSpec, photo: Image.Image, threads: int) -> Figure:
    """Two proxy workers classifying at once: does intra-op threading help or oversubscribe?"""
    adapter = load_adapter(spec, intra_op_threads=threads)
    adapter.scores(photo)
    items = 16
    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=2) as pool:
        list(pool.map(lambda _: adapter.scores(photo), range(items)))
    rate = items / (time.perf_counter() - started)
    note = f"2 concurrent callers, intra_op_threads={threads}, {items} items"
    return _figure(f"classifier.{spec.name}.2workers.t{threads}.throughput", rate, "items/s", note)


def run() -> list[Figure]:
    photo, photo_name = _photo()
    figures: list[Figure] = []
    with tempfile.TemporaryDirectory() as workdir:
        specs = _specs(Path(workdir))
        photo_path = Path(workdir) / "photo.png"
        photo.save(photo_path, compress_level=1)
        for name, spec in specs.items():
            load_ms, rss_mib = _isolated_load(spec, photo_path)
            load_note = "session + checks + warm-up run, fresh process"
            figures.append(_figure(f"classifier.{name}.load", load_ms, "ms", load_note))
            rss_note = "resident memory added by load + one 12 MP item, fresh process"
            figures.append(_figure(f"classifier.{name}.rss", rss_mib, "MiB", rss_note))
            for threads in (1, 2):
                adapter = load_adapter(spec, intra_op_threads=threads)
                figures.extend(_latency(name, adapter, photo, threads))
            figures.append(_preprocess(name, adapter, photo))
        for threads in (1, 2):
            figures.append(_throughput(specs["open_nsfw"], photo, threads))
    for figure in figures:
        figure["note"] = f"{figure['note']}; photo: {photo_name}"
    return figures


if __name__ == "__main__":
    for figure in run():
        print(f"{figure['name']:<50} {figure['value']:10.2f} {figure['unit']}")
