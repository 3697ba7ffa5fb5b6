"""Keeps the trust's banks current while the proxy runs: each subscription in
`banks.subscriptions` is synced at start and every `interval_s` (schoolgate.trust). The bank
matcher picks up what a sync applied on its next reload check, as it does for `hashes add`."""

from __future__ import annotations

import asyncio
import logging
import time

from schoolgate.addons.runtime import RuntimeRef
from schoolgate.banks.store import BankStore
from schoolgate.matching.settings import BanksConfig
from schoolgate.trust.exchange import sync_any
from schoolgate.trust.replica import Replica
from schoolgate.trust.settings import AnySubscription

log = logging.getLogger("schoolgate.trust")

TICK_S = 5.0  # how often the loop looks for a subscription that is due (config may reload)


class BankSubscriptions:
    """One background task; each sync runs in a thread of its own, so a slow server never
    stalls a flow, nor another subscription (adversarial pass a26 S1: a mirror trickling one
    subscription's index a byte every 5 s held up the trust's for ten minutes)."""

    def __init__(self, ref: RuntimeRef) -> None:
        self.ref = ref
        self._task: asyncio.Task[None] | None = None
        self._due: dict[str, float] = {}  # subscription -> monotonic time of its next sync
        self._running: dict[str, asyncio.Task[None]] = {}

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
                configured = [s.name for s in runtime.config.banks.subscriptions]
                for subscription in runtime.config.banks.subscriptions:
                    name = subscription.name
                    busy = name in self._running and not self._running[name].done()
                    if busy or time.monotonic() < self._due.get(name, 0.0):
                        continue
                    self._due[name] = time.monotonic() + subscription.interval_s
                    self._running[name] = asyncio.create_task(
                        asyncio.to_thread(
                            _sync_once, subscription, runtime.config.banks, configured
                        )
                    )
            await asyncio.sleep(TICK_S)


def _sync_once(subscription: AnySubscription, banks: BanksConfig, configured: list[str]) -> None:
    try:
        with BankStore(banks.path) as store:
            sync_any(subscription, Replica(store), configured)
            _warn_of_settings(banks, store)
    except Exception:
        log.exception("schoolgate banks: subscription %s: the sync failed", subscription.name)


_said: set[str] = set()  # notes logged already: said once, not at every sync


def _warn_of_settings(banks: BanksConfig, store: BankStore) -> None:
    """Bank settings written for a trust bank's published name miss it under its prefixed name
    here (a43 F8): said once, when a sync has brought such a bank."""
    if not banks.prefixes:
        return  # no subscription renames banks: nothing to read after each sync
    for note in banks.prefix_notes(bank.name for bank in store.banks()):
        if note not in _said:
            _said.add(note)
            log.warning("schoolgate banks: %s", note)
