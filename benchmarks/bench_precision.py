"""Precision of the robust tier (issue 18): match the picture, not what surrounds it.

Data (all benign, see tests/support/screens.py and tests/support/imagery.py): non-overlapping
tiles of the 27 package-shipped or shared reference photos (different parts of a photo are
different pictures), procedural scenes, and Pillow drawings of two synthetic chat apps ("chatty"
and "snappy", light and dark) and of five surrounds two different pictures can share.

Banked the way a DSL does it (`schoolgate hashes add`), judged the way the proxy does it
(`Inspector.evaluate`, no classifier), three banks in three scratch data dirs:

- screenshots: 12 chat screenshots banked (3 per app and theme, photo tiles with texture enough
  to bank); 240 screenshots of the same apps showing the other pictures are scanned: false
  blocks target 0. Recall: each banked screenshot's photo plain, and inside the other app.
- overlays: 20 pairs per kind (thin lines, a watermark, a frame, a meme template, a fixed
  background with a different subject): the first picture of each pair banked, the second
  scanned (against all 100 banked pictures): false blocks target 0.
- recall kept: the photos of bench_robust's tuning split banked plain; the 13 edits of the
  robust suite (mean recall target >= 90%) and the photo as a chat screenshot in either app.

Robust lookup time (`RobustTier.match`, wall clock and thread CPU time) is measured on the
scanned queries against the screenshot and overlay banks.
"""

from __future__ import annotations

import contextlib
import statistics
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from benchmarks.bench_robust import _bank_with_cli, _config, _figure, _split
from schoolgate.config import Config
from schoolgate.matching.robust_tier import RobustTier
from schoolgate.media.signals import decode_for_analysis
from schoolgate.pipeline.engine import InspectionContext, Inspector
from tests.support.imagery import EDITS, encode, real_photos
from tests.support.screens import (
    APPS,
    OVERLAYS,
    STYLES,
    THEMES,
    chat_screenshot,
    distinct_pictures,
    overlay_pairs,
    overlay_pictures,
    spread_bankable,
)

Figure = dict[str, Any]
CTX = InspectionContext(client_ip="192.0.2.62", app="bench-precision")
BANKED_SHOTS = 12
OTHER_SHOTS = 240
OVERLAYS_PER_KIND = 20


@dataclass
class _Setup:
    config: Config
    inspector: Inspector
    tier: RobustTier
    lookup_ms: list[float]
    lookup_cpu_ms: list[float]

    def blocked(self, data: bytes) -> bool:
        return self.inspector.evaluate(data, CTX).blocked

    def timed(self, data: bytes) -> bool:
        """Judge `data`, and time the robust lookup of it on its own."""
        image = decode_for_analysis(data, self.config.limits).image
        started, cpu_started = time.perf_counter(), time.thread_time()
        self.tier.match(image)
        self.lookup_ms.append((time.perf_counter() - started) * 1000)
        self.lookup_cpu_ms.append((time.thread_time() - cpu_started) * 1000)
        return self.blocked(data)


@contextlib.contextmanager
def _banked(items: dict[str, bytes]) -> Iterator[_Setup]:
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = Path(tmp)
        config = _config(data_dir)
        files = []
        for name, data in items.items():
            (data_dir / name).write_bytes(data)
            files.append(data_dir / name)
        _bank_with_cli(data_dir / "bench.yaml", "incident-precision", files)
        inspector = Inspector.from_config(config, with_audit=False)
        try:
            tier = RobustTier(inspector.store, config.banks)
            yield _Setup(config, inspector, tier, [], [])
        finally:
            inspector.close()


def _png(image: Image.Image) -> bytes:
    return encode(image, "PNG")


def _jpeg(image: Image.Image) -> bytes:
    return encode(image, "JPEG", quality=90)


def _latency(label: str, setup: _Setup, items: int) -> list[Figure]:
    wall, cpu = setup.lookup_ms, setup.lookup_cpu_ms
    note = (f"RobustTier.match over {len(wall)} scanned queries against {items} banked items "
            f"({len(setup.tier)} feature views); p50 {statistics.median(wall):.1f} ms wall, "
            f"{statistics.median(cpu):.1f} ms CPU; 1 thread")  # fmt: skip
    p95, cpu95 = float(np.percentile(wall, 95)), float(np.percentile(cpu, 95))
    return [
        _figure(f"precision lookup p95, {label} banked", p95, "ms", "< 100 ms", p95 < 100, note),
        _figure(f"precision lookup CPU p95, {label} banked", cpu95, "ms", "< 100 ms",
                cpu95 < 100, "thread CPU time"),
    ]  # fmt: skip


def _screenshots() -> list[Figure]:
    pictures = distinct_pictures(BANKED_SHOTS + OTHER_SHOTS)
    banked = spread_bankable(pictures, BANKED_SHOTS)
    items = {}
    for number, index in enumerate(banked):
        app, theme = STYLES[number % len(STYLES)]
        items[f"shot-{number}-{app}-{theme}.png"] = _png(
            chat_screenshot(pictures[index], app, theme, seed=number)
        )
    others = [i for i in range(len(pictures)) if i not in set(banked)]
    with _banked(items) as setup:
        blocked: dict[tuple[str, str], list[int]] = {style: [] for style in STYLES}
        for number, index in enumerate(others):
            style = STYLES[number % len(STYLES)]
            shot = chat_screenshot(pictures[index], *style, seed=1000 + number)
            if setup.timed(_png(shot)):
                blocked[style].append(index)
        plain_missed, other_missed = [], []
        for number, index in enumerate(banked):
            app = STYLES[number % len(STYLES)][0]
            other_app = next(a for a in APPS if a != app)
            other_theme = THEMES[(number // len(STYLES)) % len(THEMES)]
            if not setup.timed(_jpeg(pictures[index])):
                plain_missed.append(index)
            shot = chat_screenshot(pictures[index], other_app, other_theme, seed=5000 + number)
            if not setup.timed(_png(shot)):
                other_missed.append(index)
        latency = _latency(f"{BANKED_SHOTS} screenshots", setup, BANKED_SHOTS)
    total = sum(len(v) for v in blocked.values())
    per_style = "; ".join(f"{a}/{t}: {len(v)}/{len(others) // len(STYLES)}"
                          for (a, t), v in blocked.items())  # fmt: skip
    plain = 100 * (1 - len(plain_missed) / len(banked))
    inside = 100 * (1 - len(other_missed) / len(banked))
    figures = [
        _figure("precision false blocks, other chat screenshots", total, "items", "0",
                total == 0 and len(others) >= 200,
                f"of {len(others)} screenshots of the same 2 apps x 2 themes showing other "
                f"pictures, vs {len(banked)} banked screenshots; {per_style}; pictures "
                f"{sorted(i for v in blocked.values() for i in v)[:12]}"),
        _figure("precision recall, banked shot's photo plain", plain, "%", ">= 90%",
                plain >= 90, f"{len(banked) - len(plain_missed)}/{len(banked)}; missed "
                f"pictures {plain_missed}"),
        _figure("precision recall, banked shot's photo in the other app", inside, "%",
                ">= 90%", inside >= 90, f"{len(banked) - len(other_missed)}/{len(banked)}; "
                f"missed pictures {other_missed}"),
    ]  # fmt: skip
    for (app, theme), indices in blocked.items():
        note = f"of {len(others) // len(STYLES)}"
        figures.append(_figure(f"precision false blocks, {app}/{theme} screenshots",
                               len(indices), "items", note=note))  # fmt: skip
    return figures + latency


def _overlays() -> list[Figure]:
    pairs = overlay_pairs(OVERLAYS_PER_KIND, distinct_pictures(overlay_pictures(OVERLAYS_PER_KIND)))
    items = {f"{kind}-{n}.jpg": encode(a, "JPEG", quality=92)
             for n, (kind, a, _) in enumerate(pairs)}  # fmt: skip
    with _banked(items) as setup:
        blocked: dict[str, list[int]] = {kind: [] for kind in OVERLAYS}
        for n, (kind, _, b) in enumerate(pairs):
            if setup.timed(_jpeg(b)):
                blocked[kind].append(n)
        originals = sum(setup.blocked(_jpeg(a)) for _, a, _ in pairs)
        latency = _latency(f"{len(pairs)} overlaid", setup, len(pairs))
    total = sum(len(v) for v in blocked.values())
    figures = [
        _figure("precision false blocks, pictures sharing an overlay", total, "items", "0",
                total == 0 and len(pairs) >= 100,
                f"of {len(pairs)} pairs ({OVERLAYS_PER_KIND} per kind), each second picture "
                f"judged against all {len(pairs)} banked first pictures; banked pictures "
                f"re-encoded still blocked: {originals}/{len(pairs)}"),
    ]  # fmt: skip
    for kind, numbers in blocked.items():
        note = f"of {OVERLAYS_PER_KIND} pairs; {numbers}"
        figures.append(_figure(f"precision false blocks, {kind} overlay", len(numbers), "items",
                               "0", not numbers, note))  # fmt: skip
    return figures + latency


def _photo_recall() -> list[Figure]:
    photos = real_photos()
    banked, _ = _split(sorted(photos), "tuning")
    items = {f"{name}.jpg": encode(photos[name], "JPEG", quality=92) for name in banked}
    figures: list[Figure] = []
    with _banked(items) as setup:
        recalls: list[float] = []
        missed: list[str] = []
        for edit, apply in EDITS.items():
            hits = 0
            for seed, name in enumerate(banked):
                if setup.blocked(apply(photos[name], seed)):
                    hits += 1
                else:
                    missed.append(f"{name}/{edit}")
            recalls.append(hits / len(banked))
        mean = 100 * statistics.mean(recalls)
        note = (f"{len(banked)} banked photos (tuning split); worst edit "
                f"{min(recalls) * 100:.0f}%; missed {missed[:12]}")  # fmt: skip
        figures.append(_figure(f"precision suite recall, mean over {len(EDITS)} edits", mean, "%",
                               ">= 90%", mean >= 90, note))  # fmt: skip
        shot_hits = 0
        shot_missed: list[str] = []
        for seed, name in enumerate(banked):
            for app, theme in STYLES:
                if setup.blocked(_png(chat_screenshot(photos[name], app, theme, seed))):
                    shot_hits += 1
                else:
                    shot_missed.append(f"{name}/{app}/{theme}")
        total = len(banked) * len(STYLES)
        recall = 100 * shot_hits / total
        figures.append(_figure("precision recall, banked photo as a chat screenshot", recall,
                               "%", ">= 90%", recall >= 90, f"{shot_hits}/{total} (2 apps x "
                               f"2 themes); missed {shot_missed[:12]}"))  # fmt: skip
    return figures


def run() -> list[Figure]:
    return _screenshots() + _overlays() + _photo_recall()
