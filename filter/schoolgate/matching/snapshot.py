"""What the matchers build from the bank store, kept in step with it."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from schoolgate.banks.store import BankStore


class StoreSnapshot[T]:
    """What `build` makes of the bank store, made again when the store has changed. The store's
    version is looked at every `interval_s` (one small query); a caller that finds it moved on
    waits while one caller rebuilds, and none is judged on banks older than the interval. The
    others used to go on with the old snapshot while one rebuilt, and pictures banked a minute
    before were let through however long after the change they came (adversarial pass a41 F1:
    4 of 18 uploads sent at once after a trust publication). `lazy`: built on first use."""

    def __init__(
        self,
        store: BankStore,
        build: Callable[[], T],
        interval_s: float,
        *,
        lazy: bool = False,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._store = store
        self._build = build
        self._interval_s = interval_s
        self._clock = clock
        self._lock = threading.Lock()
        self._value: T | None = None
        self._version = -1
        self._checked_at = float("-inf")
        if not lazy:
            self.get()

    def get(self) -> T:
        value = self._value
        if value is not None and self._clock() - self._checked_at < self._interval_s:
            return value
        if value is not None and self._store.version() == self._version:
            self._checked_at = self._clock()
            return value
        with self._lock:
            # Read before building: a change made meanwhile looks stale next time, not fresh.
            version = self._store.version()
            if self._value is None or version != self._version:
                self._value = self._build()
                self._version = version
            self._checked_at = self._clock()
            return self._value
