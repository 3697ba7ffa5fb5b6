"""A bounded worker pool that runs CPU-bound inspection off mitmproxy's event loop, fairly
between devices."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any


class Overloaded(Exception):
    """Every worker is busy and the queue is full: the fail policy decides."""


class InspectTimeout(Exception):
    """An item's inspection took longer than its budget: the fail policy decides."""


@dataclass(eq=False)
class _Job:
    key: str
    fn: Callable[..., Any]
    args: tuple[object, ...]
    started: asyncio.Event
    loop: asyncio.AbstractEventLoop
    heavy: bool = False
    future: Future[Any] = field(default_factory=Future)
    started_at: float = 0.0

    def mark_started(self) -> None:
        """Called in the worker: the caller's clock for the inspection budget starts now."""
        self.started_at = time.monotonic()
        with contextlib.suppress(RuntimeError):  # the caller's loop is gone: nobody waits
            self.loop.call_soon_threadsafe(self.started.set)


class InspectionPool:
    """Threads for `Inspector.evaluate` with a hard cap on work in flight, shared fairly.

    Threads, not processes: the inspector holds loaded models and a bank index that would be costly
    to copy, and its decoders, hashing and onnxruntime release the GIL. A timed-out item keeps its
    thread until it finishes (threads cannot be killed), so it still counts against the cap: a
    flood of slow items turns into overload decisions instead of unbounded memory.

    Items carry a key (the device), and waiting keys take turns: one pupil's eight videos used to
    fill every worker, and everybody else's photos timed out behind them (adversarial pass,
    issue 16). A key alone may use every worker and place; while other keys have items, it runs
    on at most half the workers and is refused new items past half the places.

    Heavy items (videos) run at most `heavy_slots` at a time: a video's decoder takes several
    cores, and two pupils' 2-minute recordings judged side by side on a 2-core box both ran past
    the video time budget, each judged alone within it (a60 F4); the other workers go on with
    photos meanwhile.

    The inspection budget (`timeout_s`) starts when a worker takes the item up, and the wait for a
    worker has its own bound (`max_wait_s`). One budget for both made a pupil who sent fourteen
    long screenshots at once see the last few blocked as timeouts, each judged in a second and a
    quarter, after waiting their turn behind the others (adversarial pass a59 F6).
    """

    def __init__(
        self,
        workers: int,
        max_queue: int,
        timeout_s: float,
        max_wait_s: float | None = None,
        heavy_slots: int | None = None,
        heavy_timeout_s: float | None = None,
    ) -> None:
        if workers < 1:
            raise ValueError("workers must be at least 1")
        self.workers = workers
        self.capacity = workers + max(0, max_queue)
        self.timeout_s = timeout_s
        self.max_wait_s = timeout_s if max_wait_s is None else max_wait_s
        self.heavy_slots = workers if heavy_slots is None else max(1, heavy_slots)
        self.heavy_timeout_s = timeout_s if heavy_timeout_s is None else heavy_timeout_s
        self._running_heavy = 0
        self.running_share = max(1, workers // 2)
        self.flight_share = max(self.running_share, self.capacity // 2)
        self._executor = ThreadPoolExecutor(workers, thread_name_prefix="schoolgate-inspect")
        # Re-entrant: cancelling a future runs its callbacks (which take the lock) at once.
        self._lock = threading.RLock()
        self._in_flight = 0
        self._in_flight_by_key: Counter[str] = Counter()
        self._running = 0
        self._running_by_key: Counter[str] = Counter()
        self._waiting: dict[str, deque[_Job]] = {}  # insertion order is the turn order

    @property
    def in_flight(self) -> int:
        """Items queued or running, including ones whose caller already timed out."""
        return self._in_flight

    async def run[T](
        self, fn: Callable[..., T], *args: object, key: str = "", heavy: bool = False
    ) -> T:
        """Run `fn(*args)` in a worker, in `key`'s turn (a `heavy` item, a video, only while
        fewer than `heavy_slots` run); raises Overloaded (no place, or no worker within
        `max_wait_s`) or InspectTimeout (running longer than `timeout_s`, or a heavy item
        `heavy_timeout_s`)."""
        job = _Job(key, fn, args, asyncio.Event(), asyncio.get_running_loop(), heavy)
        with self._lock:
            if self._in_flight >= self.capacity:
                raise Overloaded(f"{self._in_flight} items in flight (cap {self.capacity})")
            others = self._in_flight - self._in_flight_by_key[key]
            if others and self._in_flight_by_key[key] >= self.flight_share:
                raise Overloaded(
                    f"this device has {self._in_flight_by_key[key]} items in flight "
                    f"(its share of {self.capacity} is {self.flight_share})"
                )
            self._in_flight += 1
            self._in_flight_by_key[key] += 1
            self._waiting.setdefault(key, deque()).append(job)
            self._dispatch()
        # shield: giving up on an item must not cancel the shared future's bookkeeping callback.
        outcome = asyncio.shield(asyncio.wrap_future(job.future))
        started = asyncio.ensure_future(job.started.wait())
        try:
            await asyncio.wait({outcome, started}, timeout=self.max_wait_s,
                               return_when=asyncio.FIRST_COMPLETED)  # fmt: skip
        except asyncio.CancelledError:
            self._withdraw(job)  # the caller left (its client went away): free its place
            raise
        finally:
            started.cancel()
        if not outcome.done() and not job.started.is_set() and self._withdraw(job):
            raise Overloaded(f"no worker was free within {self.max_wait_s:g} s")
        # A worker may have taken it up a moment ago, before the start could be seen here.
        elapsed = time.monotonic() - job.started_at if job.started_at else 0.0
        limit = self.heavy_timeout_s if heavy else self.timeout_s
        try:
            result: T = await asyncio.wait_for(outcome, max(0.0, limit - elapsed))
            return result
        except TimeoutError:
            job.future.cancel()
            raise InspectTimeout(f"inspection took longer than {limit:g} s") from None
        except asyncio.CancelledError:
            if job.future.cancelled() and not _caller_cancelled():
                raise Overloaded("inspection stopped: the worker pool is shutting down") from None
            raise

    def _withdraw(self, job: _Job) -> bool:
        """Take a job that never started out of its queue; False if a worker has it."""
        with self._lock:
            queue = self._waiting.get(job.key)
            if queue is None or job not in queue:
                return False
            queue.remove(job)
            if not queue:
                del self._waiting[job.key]
            self._release(job.key)
        job.future.cancel()
        return True

    def _release(self, key: str) -> None:
        """One item of `key` is no longer in flight (the caller holds the lock)."""
        self._in_flight -= 1
        self._in_flight_by_key[key] -= 1
        if self._in_flight_by_key[key] <= 0:
            del self._in_flight_by_key[key]

    def _dispatch(self) -> None:
        """Start waiting items while workers are free (the caller holds the lock)."""
        while self._running < self.workers:
            job = self._next()
            if job is None:
                return
            self._running += 1
            self._running_by_key[job.key] += 1
            self._running_heavy += job.heavy
            try:
                self._executor.submit(self._execute, job)
            except RuntimeError:  # shut down
                self._running -= 1
                self._running_by_key[job.key] -= 1
                self._running_heavy -= job.heavy
                self._release(job.key)
                job.future.cancel()
                return

    def _next(self) -> _Job | None:
        """The first waiting key (in turn order) under its running share, which binds only while
        another key waits, whose next item may start (a heavy one only in a free heavy slot);
        the key goes to the back of the turn order."""
        crowded = len(self._waiting) > 1
        heavy_full = self._running_heavy >= self.heavy_slots
        keys = [k for k in self._waiting if not (heavy_full and self._waiting[k][0].heavy)]
        under = [k for k in keys if not crowded or self._running_by_key[k] < self.running_share]
        for key in under or keys[:1]:  # every waiting key at its share: no worker idles
            queue = self._waiting.pop(key)
            job = queue.popleft()
            if queue:
                self._waiting[key] = queue  # re-inserted: its next item waits for a new turn
            return job
        return None

    def _execute(self, job: _Job) -> None:
        started = job.future.set_running_or_notify_cancel()
        if started:
            job.mark_started()
        result: Any = None
        error: BaseException | None = None
        if started:
            try:
                result = job.fn(*job.args)
            except BaseException as raised:
                error = raised
        # The books are settled before the caller can see the outcome: once an item's result is
        # out, it is no longer in flight.
        with self._lock:
            self._running -= 1
            self._running_heavy -= job.heavy
            self._running_by_key[job.key] -= 1
            if self._running_by_key[job.key] <= 0:
                del self._running_by_key[job.key]
            self._release(job.key)  # dispatched items are released here, run or cancelled
            self._dispatch()
        if started:
            if error is not None:
                job.future.set_exception(error)
            else:
                job.future.set_result(result)

    def shutdown(self) -> None:
        """Stop accepting work; waiting items are dropped, running ones finish."""
        with self._lock:
            waiting = [job for queue in self._waiting.values() for job in queue]
            self._waiting.clear()
            for job in waiting:
                self._release(job.key)
        for job in waiting:
            job.future.cancel()
        self._executor.shutdown(wait=False, cancel_futures=True)


def _caller_cancelled() -> bool:
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0
