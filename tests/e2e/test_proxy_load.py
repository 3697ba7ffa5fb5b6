"""Bounded load through the real proxy: 8 clients x 10 uploads, mixing pass-through, inspected
benign and banked uploads. Zero wrong decisions, zero crashes, proxy memory under a ceiling.
Latency percentiles are printed (figures with targets live in benchmarks/bench_load.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from PIL import Image

from tests.support.hostile_stack import (
    KINDS,
    RSS_CEILING,
    HostileStack,
    build_stack,
    run_load,
    stop_stack,
)
from tests.support.stack import needs_private_hosts

pytestmark = [pytest.mark.slow, needs_private_hosts]

CLIENTS = 8
UPLOADS = 10


@pytest.fixture(scope="module")
def stack(
    tmp_path_factory: pytest.TempPathFactory, benign_photos: dict[str, Image.Image]
) -> Iterator[HostileStack]:
    running = build_stack(
        tmp_path_factory.mktemp("load"), benign_photos["chelsea"], benign_photos["coffee"]
    )
    try:
        yield running
    finally:
        stop_stack(running)


def test_mixed_load_has_no_wrong_decisions_and_bounded_memory(stack: HostileStack) -> None:
    report = run_load(stack, CLIENTS, UPLOADS)
    for kind in KINDS:
        p50, p95 = report.percentile(kind, 0.5), report.percentile(kind, 0.95)
        count = len(report.latencies[kind])
        print(f"{kind}: n={count} p50={p50 * 1000:.0f} ms p95={p95 * 1000:.0f} ms")
    print(f"peak RSS {report.peak_rss / 2**20:.0f} MiB, {report.seconds:.1f} s")
    assert report.errors == []
    assert report.wrong == []
    assert sum(len(v) for v in report.latencies.values()) == CLIENTS * UPLOADS
    assert 0 < report.peak_rss < RSS_CEILING
    decisions = stack.decisions()
    assert sum(1 for r in decisions if r["decision"] == "block") >= CLIENTS * UPLOADS // 3
    assert stack.proxy.process.poll() is None
    log = stack.proxy.log()
    assert "Traceback" not in log
    assert "has crashed" not in log
    stack.assert_serving()
