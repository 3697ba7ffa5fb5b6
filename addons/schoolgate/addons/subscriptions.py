"""Keeps the trust's banks current while the proxy runs: each subscription in
`banks.subscriptions` is synced at start and every `interval_s` (schoolgate.trust). The bank
matcher picks up what a sync applied on its next reload check, as it does for `hashes add`."""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path

from schoolgate.addons.runtime import RuntimeRef
from schoolgate.banks.store import BankStore
from schoolgate.trust.exchange import sync_any
from schoolgate.trust.replica import Replica
from schoolgate.trust.settings import AnySubscription

log = logging.getLogger("schoolgate.trust")

TICK_S = 5.0  # how often the loop looks for a subscription that is due (config may reload)


class BankSubscriptions:
    """One background task; a sync runs in a thread, so a slow server never stalls a flow."""

    def __init__(self, ref: RuntimeRef) -> None:
        self.ref = ref
        self._task: asyncio.Task[None] | None = None
        self._due: dict[str, float] = {}  # subscription -> monotonic time of its next sync

    def running(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._loop())

    def done(self) -> None:
        if self._task is not None:
            self._task.cancel()

    async def _loop(self) -> None:
        while True:
            runtime = self.ref.current
            if runtime is not None and not runtime.closed:
                for subscription in runtime.config.banks.subscriptions:
                    if time.monotonic() >= self._due.get(subscription.name, 0.0):
                        self._due[subscription.name] = time.monotonic() + subscription.interval_s
                        await asyncio.to_thread(_sync_once, subscription, runtime.config.banks.path)
            await asyncio.sleep(TICK_S)


def _sync_once(subscription: AnySubscription, path: Path) -> None:
    try:
        with BankStore(path) as store:
            sync_any(subscription, Replica(store))
    except Exception:
        log.exception("schoolgate banks: subscription %s: the sync failed", subscription.name)
