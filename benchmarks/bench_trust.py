"""A trust's bank distribution (schoolgate.trust): what publishing a partner-sized list costs the
central box, how big the bundles are, and how long a gateway takes to verify and apply them.

A bank of BANK_HASHES PDQ hashes (a partner list's order of size) is published, then a change
of CHANGED hashes; a gateway applies the full snapshot and then the delta. The delta's size and
apply time beside the full snapshot's are what deltas are for.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path
from typing import Any

from schoolgate.banks.model import SignalInput, SignalType
from schoolgate.banks.store import BankStore
from schoolgate.trust.bundle import generate_key
from schoolgate.trust.publish import publish
from schoolgate.trust.replica import Replica
from schoolgate.trust.settings import Subscription
from schoolgate.trust.subscribe import FetchError, sync

Figure = dict[str, Any]

BANK_HASHES = 200_000
CHANGED = 1_000
BANK = "partner-list"


def _hashes(count: int) -> list[SignalInput]:
    return [SignalInput(SignalType.PDQ, os.urandom(32).hex(), 90) for _ in range(count)]


def run() -> list[Figure]:
    key = generate_key()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        out = work / "www"

        def fetch(_: Subscription, file: str) -> bytes:
            path = out / file
            if not path.exists():
                raise FetchError(file)
            return path.read_bytes()

        subscription = Subscription("trust", "https://trust.example/", key.public_key(), "bench")
        with (
            BankStore(work / "central.sqlite") as central,
            BankStore(work / "gateway.sqlite") as gateway,
        ):
            central.create_bank(BANK)
            central.add_signals(BANK, _hashes(BANK_HASHES), "bench")
            started = time.perf_counter()
            first = publish(
                central, out, key, publisher="Bench Trust", channel="bench", banks=[BANK]
            )
            publish_full_s = time.perf_counter() - started
            full_bytes = (out / first.files[0]).stat().st_size
            replica = Replica(gateway)
            started = time.perf_counter()
            assert sync(subscription, replica, fetch).outcome == "updated"
            apply_full_s = time.perf_counter() - started

            central.add_signals(BANK, _hashes(CHANGED), "bench")
            started = time.perf_counter()
            second = publish(central, out, key, publisher="Bench Trust", channel="bench",
                             banks=[BANK], clock=lambda: time.time() + 1)  # fmt: skip
            publish_delta_s = time.perf_counter() - started
            delta_file = next(f for f in second.files if f.startswith("delta-"))
            delta_bytes = (out / delta_file).stat().st_size
            started = time.perf_counter()
            assert sync(subscription, replica, fetch).outcome == "updated"
            apply_delta_s = time.perf_counter() - started
            assert gateway.bank(BANK).total == BANK_HASHES + CHANGED
    note = f"{BANK_HASHES:,} PDQ hashes; a change of {CHANGED:,}"
    return [
        {"name": "trust publish, full + deltas", "value": round(publish_full_s, 2), "unit": "s",
         "note": note},
        {"name": "trust bundle, full snapshot", "value": round(full_bytes / 1e6, 2), "unit": "MB",
         "note": note},
        {"name": "trust bundle, delta", "value": round(delta_bytes / 1e3, 1), "unit": "KB",
         "note": note},
        {"name": "trust gateway verify + apply, full", "value": round(apply_full_s, 2),
         "unit": "s", "note": note},
        {"name": "trust gateway verify + apply, delta", "value": round(apply_delta_s, 2),
         "unit": "s", "note": f"{note}; publish with the change {publish_delta_s:.2f} s"},
    ]  # fmt: skip
