"""The matchers' snapshot of the bank store (adversarial pass a41 F1: uploads judged while one
thread rebuilt the matcher after a trust publication were judged on the old banks, however long
after the change they came)."""

from __future__ import annotations

import threading
from pathlib import Path

from schoolgate.banks.model import SignalInput, SignalType
from schoolgate.banks.store import BankStore
from schoolgate.matching.snapshot import StoreSnapshot


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _add(store: BankStore, n: int) -> None:
    store.add_signals("b", [SignalInput(SignalType.SHA256, f"{n:064x}")], "test")


def test_no_caller_is_served_the_old_banks_while_another_rebuilds(tmp_path: Path) -> None:
    with BankStore(tmp_path / "banks.sqlite") as store:
        store.create_bank("b")
        building = threading.Event()
        release = threading.Event()
        slow = [False]

        def build() -> int:
            if slow[0]:
                building.set()
                assert release.wait(10)
            return len(list(store.iter_signals("b")))

        clock = Clock()
        snapshot = StoreSnapshot(store, build, 5.0, clock=clock)
        assert snapshot.get() == 0
        _add(store, 1)
        assert snapshot.get() == 0  # within the interval: not looked at
        clock.now += 5
        slow[0] = True
        got: dict[str, int] = {}
        first = threading.Thread(target=lambda: got.setdefault("first", snapshot.get()))
        first.start()
        assert building.wait(10)  # the first caller is rebuilding
        second = threading.Thread(target=lambda: got.setdefault("second", snapshot.get()))
        second.start()
        second.join(0.3)
        assert second.is_alive(), "the second caller waits for the rebuild"
        release.set()
        first.join(10)
        second.join(10)
        assert got == {"first": 1, "second": 1}


def test_an_unchanged_store_is_not_rebuilt(tmp_path: Path) -> None:
    with BankStore(tmp_path / "banks.sqlite") as store:
        store.create_bank("b")
        builds: list[int] = []

        def build() -> int:
            builds.append(1)
            return len(builds)

        clock = Clock()
        snapshot = StoreSnapshot(store, build, 5.0, clock=clock)
        for _ in range(3):
            clock.now += 10
            assert snapshot.get() == 1
        _add(store, 1)
        clock.now += 10
        assert snapshot.get() == 2


def test_a_lazy_snapshot_is_built_on_first_use(tmp_path: Path) -> None:
    with BankStore(tmp_path / "banks.sqlite") as store:
        builds: list[int] = []

        def build() -> int:
            builds.append(1)
            return 7

        snapshot = StoreSnapshot(store, build, 5.0, lazy=True)
        assert builds == []
        assert snapshot.get() == 7
        assert builds == [1]
