"""The proxy's pure parts: the bounded inspection pool and the block page."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Callable

import pytest

from schoolgate.addons.blockpage import block_response, wants_html
from schoolgate.addons.heldbudget import HeldBudget
from schoolgate.addons.pool import InspectionPool, InspectTimeout, Overloaded
from schoolgate.config import ProxyConfig


async def _until(condition: Callable[[], bool], within_s: float = 5.0) -> None:
    """Wait until a worker thread has got somewhere: a fixed sleep races the threads on a
    loaded CI machine."""
    for _ in range(int(within_s / 0.01)):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the pool's workers did not get there in time")


def test_pool_runs_work_off_the_event_loop() -> None:
    pool = InspectionPool(workers=2, max_queue=2, timeout_s=5)
    loop_thread = threading.get_ident()

    async def main() -> list[tuple[int, bool]]:
        def work(n: int) -> tuple[int, bool]:
            return n * n, threading.get_ident() != loop_thread

        return list(await asyncio.gather(*(pool.run(work, n) for n in range(4))))

    try:
        assert asyncio.run(main()) == [(0, True), (1, True), (4, True), (9, True)]
        assert pool.in_flight == 0
    finally:
        pool.shutdown()


def test_pool_refuses_work_beyond_its_capacity() -> None:
    pool = InspectionPool(workers=1, max_queue=1, timeout_s=10)
    release = threading.Event()

    async def main() -> list[object]:
        jobs = [asyncio.ensure_future(pool.run(release.wait, 5)) for _ in range(3)]
        await asyncio.sleep(0.05)
        release.set()
        return await asyncio.gather(*jobs, return_exceptions=True)

    try:
        results = asyncio.run(main())
    finally:
        release.set()
        pool.shutdown()
    assert sum(isinstance(r, Overloaded) for r in results) == 1
    assert results.count(True) == 2


def test_pool_times_out_and_keeps_counting_the_running_item() -> None:
    pool = InspectionPool(workers=1, max_queue=0, timeout_s=0.1)
    release = threading.Event()

    async def main() -> None:
        with pytest.raises(InspectTimeout):
            await pool.run(release.wait, 5)
        # the timed-out item still occupies the only worker: the next one is an overload
        assert pool.in_flight == 1
        with pytest.raises(Overloaded):
            await pool.run(release.wait, 5)

    try:
        asyncio.run(main())
    finally:
        release.set()
        pool.shutdown()


def test_a_devices_burst_waits_its_turn_and_each_item_gets_its_whole_budget() -> None:
    """Fourteen items sent at once, each well within the budget: none times out for having
    waited behind the others (a59 F6: the last of a pupil's fourteen screenshots did)."""
    # 0.5 s each: the old pool's single budget (wait and work) ran out from the eleventh item on.
    pool = InspectionPool(workers=2, max_queue=16, timeout_s=0.5, max_wait_s=10)

    def work(n: int) -> int:
        threading.Event().wait(0.1)
        return n

    async def main() -> list[object]:
        burst = (pool.run(work, n, key="phone") for n in range(14))
        return await asyncio.gather(*burst, return_exceptions=True)

    try:
        assert asyncio.run(main()) == list(range(14))  # 0.7 s in all, 0.1 s each
        assert pool.in_flight == 0
    finally:
        pool.shutdown()


def _one_worker(
    max_wait_s: float,
) -> tuple[InspectionPool, threading.Event, list[str], Callable[[str], str]]:
    """A pool of one worker, an event that releases its work, the names of the work that ran,
    and the work (it records its name, then waits for the event)."""
    pool = InspectionPool(workers=1, max_queue=4, timeout_s=10, max_wait_s=max_wait_s)
    release = threading.Event()
    ran: list[str] = []

    def work(name: str) -> str:
        ran.append(name)
        release.wait(5)
        return name

    return pool, release, ran, work


def test_an_item_that_waits_too_long_for_a_worker_is_an_overload_and_never_runs() -> None:
    pool, release, ran, work = _one_worker(max_wait_s=0.1)

    async def main() -> None:
        first = asyncio.ensure_future(pool.run(work, "first"))
        await _until(lambda: ran == ["first"])
        with pytest.raises(Overloaded, match=r"no worker was free within 0\.1 s"):
            await pool.run(work, "second")
        assert pool.in_flight == 1  # its place was given back
        release.set()
        assert await first == "first"

    try:
        asyncio.run(main())
    finally:
        release.set()
        pool.shutdown()
    assert ran == ["first"]
    assert pool.in_flight == 0


def test_a_caller_that_leaves_gives_back_its_place_in_the_queue() -> None:
    pool, release, ran, work = _one_worker(max_wait_s=10)

    async def main() -> None:
        first = asyncio.ensure_future(pool.run(work, "first"))
        await _until(lambda: ran == ["first"])
        left = asyncio.ensure_future(pool.run(work, "left"))
        await asyncio.sleep(0.02)
        assert pool.in_flight == 2
        left.cancel()  # the pupil's connection closed while the item waited
        await asyncio.gather(left, return_exceptions=True)
        assert pool.in_flight == 1
        release.set()
        await first

    try:
        asyncio.run(main())
    finally:
        release.set()
        pool.shutdown()
    assert ran == ["first"]


def test_items_waiting_when_the_pool_shuts_down_get_a_decision() -> None:
    """A reload or stop drops waiting items: each caller gets Overloaded (the fail policy),
    never a cancellation that would leave the upload without a verdict."""
    pool = InspectionPool(workers=1, max_queue=4, timeout_s=10, max_wait_s=10)
    release = threading.Event()
    running = threading.Event()

    def work() -> bool:
        running.set()
        return release.wait(5)

    async def main() -> list[object]:
        first = asyncio.ensure_future(pool.run(work))
        await _until(running.is_set)
        waiting = asyncio.ensure_future(pool.run(release.wait, 5))
        await asyncio.sleep(0.02)
        pool.shutdown()
        release.set()
        return list(await asyncio.gather(first, waiting, return_exceptions=True))

    try:
        first, waiting = asyncio.run(main())
    finally:
        release.set()
        pool.shutdown()
    assert first is True
    assert isinstance(waiting, Overloaded)


def test_videos_take_turns_in_their_slots_while_photos_go_on() -> None:
    """Two pupils' long videos at once both ran past the video time budget on a 2-core box,
    each within it alone (a60 F4): one heavy slot, so the second video waits, and a photo sent
    meanwhile runs on the other worker."""
    pool = InspectionPool(workers=2, max_queue=8, timeout_s=10, max_wait_s=10, heavy_slots=1)
    started: list[str] = []
    gates = {name: threading.Event() for name in ("video-a", "video-b", "photo")}

    def work(name: str) -> str:
        started.append(name)
        gates[name].wait(5)
        return name

    async def main() -> list[str]:
        first = asyncio.ensure_future(pool.run(work, "video-a", key="a", heavy=True))
        await _until(lambda: started == ["video-a"])
        second = asyncio.ensure_future(pool.run(work, "video-b", key="b", heavy=True))
        photo = asyncio.ensure_future(pool.run(work, "photo", key="c"))
        await _until(lambda: "photo" in started)
        await asyncio.sleep(0.05)
        assert started == ["video-a", "photo"]  # the second video waits for the slot
        gates["photo"].set()
        await photo
        await asyncio.sleep(0.05)
        assert started == ["video-a", "photo"]  # a free worker is not a free video slot
        gates["video-a"].set()
        gates["video-b"].set()
        return list(await asyncio.gather(first, second))

    try:
        assert asyncio.run(main()) == ["video-a", "video-b"]
        assert started == ["video-a", "photo", "video-b"]
    finally:
        for gate in gates.values():
            gate.set()
        pool.shutdown()


@pytest.mark.parametrize(
    ("accept", "html"),
    [
        ("text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8", True),
        ("application/json", False),
        ("*/*", False),
        ("", False),
    ],
)
def test_block_page_format_follows_accept(accept: str, html: bool) -> None:
    assert wants_html(accept) is html
    response = block_response(ProxyConfig(school_name="Hill <School>"), "upload", "ref1", accept)
    assert response.status_code == 403
    body = response.get_text()
    assert body is not None
    if html:
        assert response.headers["content-type"].startswith("text/html")
        assert "Hill &lt;School&gt;" in body  # escaped, never raw
        assert "blocked by the school network" in body
    else:
        payload = json.loads(body)
        assert payload["error"] == "blocked_by_school_network"
        assert payload["reference"] == "ref1"


def test_held_budget_shares_out_memory_per_device_and_in_all() -> None:
    budget = HeldBudget(total=100, per_device=60)
    assert budget.take("phone", 60)
    assert not budget.take("phone", 1)  # over its share
    assert budget.take("laptop", 40)
    assert not budget.take("tablet", 1)  # over the total, though the tablet holds nothing
    assert not budget.take(None, 1)
    budget.give_back("phone", 60)
    assert budget.take(None, 10)  # the total only: a small body's first bytes
    assert (budget.held, budget.held_by("phone"), budget.held_by("laptop")) == (50, 0, 40)
    budget.give_back("laptop", 400)  # never below zero
    budget.give_back(None, 10)
    assert budget.held == 0
    with pytest.raises(ValueError, match="positive"):
        HeldBudget(0, 1)


def test_one_device_flooding_the_pool_does_not_starve_another() -> None:
    """Eight slow items from one device, then one from another: the other's item runs at the
    next free worker, not after the eight (its photo used to time out behind their videos)."""
    pool = InspectionPool(workers=2, max_queue=16, timeout_s=10)
    order: list[str] = []
    gate = threading.Semaphore(0)

    def work(name: str) -> str:
        order.append(name)
        gate.acquire(timeout=5)
        return name

    async def main() -> None:
        flood = [asyncio.ensure_future(pool.run(work, f"a{n}", key="a")) for n in range(8)]
        await _until(lambda: len(order) == 2)
        other = asyncio.ensure_future(pool.run(work, "b", key="b"))
        await asyncio.sleep(0.05)
        for started in range(3, 10):
            gate.release()
            # One item at a time, so that which starts next is the pool's choice, not a race
            # between two worker threads.
            await _until(lambda: len(order) >= started)  # noqa: B023 (awaited here)
        for _ in range(2):
            gate.release()
        await asyncio.gather(*flood, other)

    try:
        asyncio.run(main())
    finally:
        pool.shutdown()
    # Alone, a device may use every worker; the two start in parallel, in either order.
    assert sorted(order[:2]) == ["a0", "a1"]
    assert order[2] == "b"  # then the other device's turn comes first
    assert pool.in_flight == 0


def test_a_device_is_refused_past_its_share_while_others_wait() -> None:
    pool = InspectionPool(workers=2, max_queue=6, timeout_s=10)  # 8 places, 4 a device
    release = threading.Event()

    async def main() -> list[object]:
        other = asyncio.ensure_future(pool.run(release.wait, 5, key="b"))
        await asyncio.sleep(0.02)
        flood = [asyncio.ensure_future(pool.run(release.wait, 5, key="a")) for _ in range(6)]
        await asyncio.sleep(0.05)
        release.set()
        return await asyncio.gather(other, *flood, return_exceptions=True)

    try:
        results = asyncio.run(main())
    finally:
        release.set()
        pool.shutdown()
    assert results[0] is True
    assert sum(isinstance(r, Overloaded) for r in results[1:]) == 2  # 4 admitted, 2 refused


def test_a_video_has_the_longer_inspection_budget_of_videos() -> None:
    """A video's budget grows with its length (Config.video_inspect_s): the pool holds a
    heavy item to that, and a photo to the proxy's own budget."""
    pool = InspectionPool(workers=2, max_queue=4, timeout_s=0.1, heavy_slots=1,
                          heavy_timeout_s=10)  # fmt: skip

    def work() -> str:
        threading.Event().wait(0.4)
        return "judged"

    async def main() -> tuple[object, object]:
        video = pool.run(work, heavy=True)
        photo = pool.run(work)
        found = await asyncio.gather(video, photo, return_exceptions=True)
        return found[0], found[1]

    try:
        video, photo = asyncio.run(main())
    finally:
        pool.shutdown()
    assert video == "judged"
    assert isinstance(photo, InspectTimeout)
    assert "0.1 s" in str(photo)
