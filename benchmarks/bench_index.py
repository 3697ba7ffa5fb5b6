"""PDQ index and bank store figures: query latency, build time, memory, import rate.

Random hashes sit ~128 bits apart, so each query is a random bank hash with 0..40 bits flipped:
every query has a true neighbour, as in a real match. A clustered set (families of near
duplicates, like re-encoded copies of one image) checks that heavy buckets stay fast.
"""

from __future__ import annotations

import gc
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from schoolgate.banks.formats import import_file
from schoolgate.banks.model import SignalType
from schoolgate.banks.store import BankStore
from schoolgate.matching.matcher import Matcher
from schoolgate.matching.pdq_index import (
    BRUTE_FORCE_MAX,
    BruteForceIndex,
    MultiIndexHashIndex,
    PdqIndex,
)

Figure = dict[str, Any]
RADIUS = 31
QUERIES = 300
TARGET_P95_MS = 2.0
TARGET_RSS_MB = 1024.0


def _rss_mb() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _fig(
    name: str,
    value: float,
    unit: str,
    target: str | None = None,
    met: bool | None = None,
    note: str = "",
) -> Figure:
    return {"name": name, "value": value, "unit": unit, "target": target, "met": met, "note": note}


def _queries(rng: np.random.Generator, hashes: npt.NDArray[np.uint8], count: int) -> list[bytes]:
    out = []
    for row in rng.integers(0, len(hashes), size=count):
        query = hashes[row].copy()
        for bit in rng.choice(256, size=int(rng.integers(0, 41)), replace=False):
            query[bit // 8] ^= np.uint8(1 << (bit % 8))
        out.append(query.tobytes())
    return out


def _latency(index: PdqIndex, queries: list[bytes]) -> tuple[float, float]:
    index.query(queries[0], RADIUS)  # warm caches and lazily built probe masks
    times = []
    for query in queries:
        started = time.perf_counter()
        index.query(query, RADIUS)
        times.append(time.perf_counter() - started)
    p50, p95 = np.percentile(np.array(times) * 1000, [50, 95])
    return float(p50), float(p95)


def _index_figures(label: str, make: Callable[[], npt.NDArray[np.uint8]]) -> list[Figure]:
    gc.collect()
    rng = np.random.default_rng(1)
    before = _rss_mb()
    hashes = make()
    started = time.perf_counter()
    index = MultiIndexHashIndex(hashes)
    build_s = time.perf_counter() - started
    rss = _rss_mb() - before
    p50, p95 = _latency(index, _queries(rng, hashes, QUERIES))
    figures = [
        _fig(f"mih {label} query p50 (r={RADIUS})", p50, "ms"),
        _fig(
            f"mih {label} query p95 (r={RADIUS})",
            p95,
            "ms",
            f"< {TARGET_P95_MS} ms" if label == "10M random" else None,
            p95 < TARGET_P95_MS if label == "10M random" else None,
        ),
        _fig(f"mih {label} build", build_s, "s"),
        _fig(
            f"mih {label} RSS delta (hashes + index)",
            rss,
            "MiB",
            f"< {TARGET_RSS_MB:.0f} MiB" if label == "10M random" else None,
            rss < TARGET_RSS_MB if label == "10M random" else None,
            f"structures {index.nbytes / 2**20:.0f} MiB",
        ),
    ]
    if label == "1M random":
        brute = BruteForceIndex(hashes)
        b50, b95 = _latency(brute, _queries(rng, hashes, 40))
        figures += [
            _fig(f"brute {label} query p50 (r={RADIUS})", b50, "ms", note="baseline"),
            _fig(f"brute {label} query p95 (r={RADIUS})", b95, "ms", note="baseline"),
        ]
    del index, hashes
    gc.collect()
    return figures


def _random(count: int) -> Callable[[], npt.NDArray[np.uint8]]:
    return lambda: np.random.default_rng(7).integers(0, 256, size=(count, 32), dtype=np.uint8)


def _clustered(count: int, families: int = 20_000) -> npt.NDArray[np.uint8]:
    """Families of near-duplicates: each hash is a family centre with 0..24 bits flipped."""
    rng = np.random.default_rng(8)
    centres = rng.integers(0, 256, size=(families, 32), dtype=np.uint8)
    hashes = centres[rng.integers(0, families, size=count)]
    bits = np.unpackbits(hashes, axis=1)
    flips = rng.random(bits.shape) < rng.uniform(0, 24 / 256, size=(count, 1))
    return np.ascontiguousarray(np.packbits(bits ^ flips, axis=1))


def _import_figures(rows: int) -> list[Figure]:
    rng = np.random.default_rng(3)
    values = rng.integers(0, 256, size=(rows, 32), dtype=np.uint8)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "list.txt"
        path.write_text(
            "".join(
                f"{bytes(v).hex()},{q}\n"
                for v, q in zip(values, rng.integers(50, 101, rows), strict=True)
            )
        )
        store = BankStore(Path(tmp) / "banks.db")
        store.create_bank("bench")
        started = time.perf_counter()
        added = import_file(store, "bench", path, "hex", signal_type=SignalType.PDQ)
        import_s = time.perf_counter() - started
        started = time.perf_counter()
        again = import_file(store, "bench", path, "hex", signal_type=SignalType.PDQ)
        dup_s = time.perf_counter() - started
        started = time.perf_counter()
        matcher = Matcher.from_store(store)
        load_s = time.perf_counter() - started
        size_mb = store.stats()["db_bytes"] / 2**20
        store.close()
    assert added == rows
    assert again == 0
    assert matcher.sizes()["bench"] == rows
    label = f"{rows // 1000}k" if rows < 1_000_000 else f"{rows // 1_000_000}M"
    return [
        _fig(
            f"bank import {label} PDQ rows (parse + validate + insert)", rows / import_s, "rows/s"
        ),
        _fig(f"bank re-import {label} duplicate rows", rows / dup_s, "rows/s"),
        _fig(f"matcher load from store, {label} PDQ", load_s, "s", note="engine reload on change"),
        _fig(f"bank database size, {label} PDQ", size_mb, "MiB"),
    ]


def _crossover_figures(count: int) -> list[Figure]:
    """Both indexes at build_index's switch-over size, to check the threshold still holds."""
    rng = np.random.default_rng(2)
    hashes = _random(count)()
    queries = _queries(rng, hashes, QUERIES)
    mih, _ = _latency(MultiIndexHashIndex(hashes), queries)
    brute, _ = _latency(BruteForceIndex(hashes), queries)
    note = f"build_index switches at {BRUTE_FORCE_MAX:,}"
    return [
        _fig(f"mih {count // 1000}k random query p50 (r={RADIUS})", mih, "ms", note=note),
        _fig(f"brute {count // 1000}k random query p50 (r={RADIUS})", brute, "ms", note=note),
    ]


def run() -> list[Figure]:
    figures = _crossover_figures(BRUTE_FORCE_MAX)
    figures += _import_figures(1_000_000)
    figures += _index_figures("1M random", _random(1_000_000))
    figures += _index_figures("1M clustered", lambda: _clustered(1_000_000))
    figures += _index_figures("10M random", _random(10_000_000))
    return figures
