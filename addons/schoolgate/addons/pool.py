"""A bounded worker pool that runs CPU-bound inspection off mitmproxy's event loop."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any


class Overloaded(Exception):
    """Every worker is busy and the queue is full: the fail policy decides."""


class InspectTimeout(Exception):
    """An item took longer than the inspection budget: the fail policy decides."""


class InspectionPool:
    """Threads for `Inspector.evaluate` with a hard cap on work in flight.

    Threads, not processes: the inspector holds loaded models and a bank index that would be costly
    to copy, and its decoders, hashing and onnxruntime release the GIL. A timed-out item keeps its
    thread until it finishes (threads cannot be killed), so it still counts against the cap: a
    flood of slow items turns into overload decisions instead of unbounded memory.
    """

    def __init__(self, workers: int, max_queue: int, timeout_s: float) -> None:
        if workers < 1:
            raise ValueError("workers must be at least 1")
        self.workers = workers
        self.capacity = workers + max(0, max_queue)
        self.timeout_s = timeout_s
        self._executor = ThreadPoolExecutor(workers, thread_name_prefix="schoolgate-inspect")
        self._lock = threading.Lock()
        self._in_flight = 0

    @property
    def in_flight(self) -> int:
        """Items queued or running, including ones whose caller already timed out."""
        return self._in_flight

    def _release(self, _: Future[Any]) -> None:
        with self._lock:
            self._in_flight -= 1

    async def run[T](self, fn: Callable[..., T], *args: object) -> T:
        """Run `fn(*args)` in a worker; raises Overloaded or InspectTimeout."""
        with self._lock:
            if self._in_flight >= self.capacity:
                raise Overloaded(f"{self._in_flight} items in flight (cap {self.capacity})")
            self._in_flight += 1
        try:
            future: Future[T] = self._executor.submit(fn, *args)
        except BaseException:
            with self._lock:
                self._in_flight -= 1
            raise
        future.add_done_callback(self._release)
        try:
            # shield: a timeout must not cancel the shared future's bookkeeping callback.
            return await asyncio.wait_for(
                asyncio.shield(asyncio.wrap_future(future)), self.timeout_s
            )
        except TimeoutError:
            future.cancel()  # drops it if still queued; a running item finishes on its own
            raise InspectTimeout(f"inspection took longer than {self.timeout_s:g} s") from None

    def shutdown(self) -> None:
        """Stop accepting work; queued items are dropped, running ones finish."""
        self._executor.shutdown(wait=False, cancel_futures=True)
