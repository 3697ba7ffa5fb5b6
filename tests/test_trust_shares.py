"""A school's shared incident bank, published on by the central box (adversarial pass a41 F9):
when the school dropped it, the central box's unchanged timer command failed on every run
("no bank named north-inc1") and no trust hash reached any gateway until someone edited it."""

from __future__ import annotations

from pathlib import Path

from schoolgate.banks.model import SignalInput, SignalType
from schoolgate.banks.store import BankStore
from schoolgate.trust.bundle import generate_key
from schoolgate.trust.publish import publish
from schoolgate.trust.replica import Replica
from schoolgate.trust.settings import Subscription
from schoolgate.trust.subscribe import FetchError, sync
from tests.test_trust_banks import Clock, sha


def _fetcher(folder: Path):  # type: ignore[no-untyped-def]
    def fetch(subscription: Subscription, file: str) -> bytes:
        path = folder / file
        if not path.exists():
            raise FetchError(f"{file}: 404")
        return path.read_bytes()

    return fetch


def test_a_bank_its_school_dropped_is_dropped_by_the_central_box_too(tmp_path: Path) -> None:
    clock = Clock()
    school_key, trust_key = generate_key(), generate_key()
    school_out, trust_out = tmp_path / "school-www", tmp_path / "trust-www"
    with (
        BankStore(tmp_path / "school.sqlite") as school,
        BankStore(tmp_path / "central.sqlite") as central,
        BankStore(tmp_path / "gateway.sqlite") as gateway,
    ):
        for store, bank, text in ((school, "inc1", "pic1"), (school, "inc2", "pic2"),
                                  (central, "trust-x", "pic0")):  # fmt: skip
            store.ensure_bank(bank)
            store.add_signals(bank, [SignalInput(SignalType.SHA256, sha(text))], "dsl")
        share = Subscription("north", "https://north.example/", school_key.public_key(),
                             "north-shared", prefix="north-")  # fmt: skip
        trusted = Subscription("trust", "https://trust.example/", trust_key.public_key(), "trust")

        def school_publishes(*banks: str, drop: tuple[str, ...] = ()) -> None:
            publish(school, school_out, school_key, publisher="North", channel="north-shared",
                    banks=banks, drop=drop, clock=clock)  # fmt: skip
            clock.now += 60

        def central_publishes() -> tuple[str, ...]:
            done = publish(central, trust_out, trust_key, publisher="Trust", channel="trust",
                           banks=("trust-x", "north-inc1"), clock=clock)  # fmt: skip
            clock.now += 60
            return done.warnings

        school_publishes("inc1")
        assert sync(share, Replica(central, clock), _fetcher(school_out)).outcome == "updated"
        assert central_publishes() == ()
        assert sync(trusted, Replica(gateway, clock), _fetcher(trust_out)).outcome == "updated"
        assert {b.name for b in gateway.banks()} == {"trust-x", "north-inc1"}
        # the school shares its second incident and drops the first, as docs/trust.md says
        school_publishes("inc2", drop=("inc1",))
        assert sync(share, Replica(central, clock), _fetcher(school_out)).outcome == "updated"
        central.add_signals("trust-x", [SignalInput(SignalType.SHA256, sha("new"))], "dsl")
        warnings = central_publishes()  # the timer's unchanged command
        assert any("north-inc1: dropped by the publication" in w for w in warnings)
        assert sync(trusted, Replica(gateway, clock), _fetcher(trust_out)).outcome == "updated"
        assert {b.name for b in gateway.banks()} == {"trust-x"}
        assert any(s.value == sha("new") for s in gateway.iter_signals())


def test_a_school_can_stop_sharing_its_only_shared_bank(tmp_path: Path) -> None:
    """a43 F6: with its only shared bank deleted, the school could not publish at all (a BANK
    was required, and the deleted one no longer existed), and every gateway kept it."""
    clock = Clock()
    key = generate_key()
    out = tmp_path / "school-www"
    with (
        BankStore(tmp_path / "school.sqlite") as school,
        BankStore(tmp_path / "central.sqlite") as central,
    ):
        school.ensure_bank("inc1")
        school.add_signals("inc1", [SignalInput(SignalType.SHA256, sha("wrong"))], "dsl")
        share = Subscription("north", "https://north.example/", key.public_key(),
                             "north-shared", prefix="north-")  # fmt: skip
        publish(school, out, key, publisher="North", channel="north-shared", banks=("inc1",),
                clock=clock)  # fmt: skip
        clock.now += 60
        assert sync(share, Replica(central, clock), _fetcher(out)).outcome == "updated"
        assert {b.name for b in central.banks()} == {"north-inc1"}
        school.delete_bank("inc1")  # banked by mistake: `hashes remove --bank inc1 --all`
        done = publish(school, out, key, publisher="North", channel="north-shared", banks=(),
                       drop=("inc1",), clock=clock)  # fmt: skip
        assert done.banks == {}
        clock.now += 60
        assert sync(share, Replica(central, clock), _fetcher(out)).outcome == "updated"
        assert {b.name for b in central.banks()} == set()
