"""Which folder a gateway follows, and whose history (adversarial pass a35): a folder named in
the configuration (F2), a copy of the folder published on from a second box (F3), a central
box that lost its folder.id (F6), a gateway whose clock is behind (T2), and a trust bank named
like a school's own (F5)."""

from __future__ import annotations

import importlib
import logging
import shutil
import threading
import time
from dataclasses import replace
from pathlib import Path

import pytest

from schoolgate.banks.model import BankError, SignalInput, SignalType
from schoolgate.banks.store import BankStore
from schoolgate.files import exclusive_lock
from schoolgate.trust.publish import FOLDER, INDEX, publish
from schoolgate.trust.replica import Replica
from schoolgate.trust.settings import Subscription
from schoolgate.trust.subscribe import sync
from tests.test_trust_banks import Trust, sha, trust

__all__ = ["trust"]  # the fixture, shared with tests.test_trust_banks


def _add(store: BankStore, text: str) -> None:
    store.add_signals("trust-incidents", [SignalInput(SignalType.SHA256, sha(text))], "x")


def _serve(trust: Trust, folder: Path | None) -> None:
    """What the web server serves: `folder`, or the trust's own (None)."""
    trust.served = None if folder is None else {p.name: p.read_bytes() for p in folder.iterdir()}


def _sync(trust: Trust, folder: str = "") -> str:
    subscription = replace(trust.subscription(), folder=folder)
    return sync(subscription, Replica(trust.gateway, trust.clock), trust.fetch).outcome


def _state(trust: Trust) -> tuple[dict[str, int], str]:
    state = Replica(trust.gateway).state("trust")
    assert state is not None
    return state.refusals, state.last_error


# -- F2: the folder named in the configuration ---------------------------------------------------


def _staging(trust: Trust, tmp_path: Path) -> Path:
    """A staging folder of the same channel, signed with the same key, with none of the hashes."""
    staging = tmp_path / "staging-www"
    with BankStore(tmp_path / "staging.sqlite") as store:
        store.create_bank("trust-incidents")
        publish(store, staging, trust.key, publisher="Test Trust", channel="trust",
                banks=["trust-incidents"], clock=trust.clock)  # fmt: skip
    return staging


def test_a_configured_folder_refuses_another_one_seen_first(trust: Trust, tmp_path: Path) -> None:
    """a35 F2: a fresh gateway pinned whatever folder it saw first, a staging one included."""
    done = publish(trust.central, trust.out, trust.key, publisher="Test Trust", channel="trust",
                   banks=["trust-incidents"], clock=trust.clock)  # fmt: skip
    assert done.folder == (trust.out / FOLDER).read_text().strip()
    staging = _staging(trust, tmp_path)
    _serve(trust, staging)
    assert _sync(trust, folder=done.folder) == "refused"
    refusals, error = _state(trust)
    assert refusals == {"folder": 1}
    assert f"not {done.folder} that this subscription's `folder:` names" in error
    _serve(trust, None)
    assert _sync(trust, folder=done.folder) == "updated"
    assert trust.blocked("one")
    state = Replica(trust.gateway).state("trust")
    assert state is not None
    assert state.folder == done.folder


def test_without_a_configured_folder_the_first_is_followed_and_said_so(
    trust: Trust, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    staging = _staging(trust, tmp_path)
    staging_id = (staging / FOLDER).read_text().strip()
    _serve(trust, staging)
    with caplog.at_level(logging.WARNING, "schoolgate.trust"):
        assert _sync(trust) == "updated"  # today's behaviour: trust on first use
    assert f"following publication folder {staging_id}, taken on first use" in caplog.text
    assert f"set `folder: {staging_id}`" in caplog.text
    caplog.clear()
    trust.publish()
    _serve(trust, None)
    with caplog.at_level(logging.WARNING, "schoolgate.trust"):
        assert _sync(trust) == "refused"  # pinned to the staging folder now
    assert _state(trust)[0] == {"folder": 1}
    assert "taken on first use" not in caplog.text
    # naming the trust's folder in the configuration moves the gateway to it, no --repin
    genuine = (trust.out / FOLDER).read_text().strip()
    assert _sync(trust, folder=genuine) == "updated"
    assert trust.blocked("one")
    state = Replica(trust.gateway).state("trust")
    assert state is not None
    assert state.folder == genuine


# -- F3: a copy of the folder published on from another box ---------------------------------------


def _second_box(trust: Trust, tmp_path: Path, copy: Path) -> int:
    """A second box with an older database publishes into a copy of the trust's folder, past
    the publisher's own refusal (--adopt-folder): the gateways' check is the last one."""
    with BankStore(tmp_path / "second.sqlite") as older:
        older.create_bank("trust-incidents")  # the same bank, none of the hashes
        return publish(older, copy, trust.key, publisher="Test Trust", channel="trust",
                       banks=["trust-incidents"], adopt_folder=True,
                       clock=trust.clock).version  # fmt: skip


def test_a_copy_of_the_folder_published_on_elsewhere_is_refused_as_a_fork(
    trust: Trust, tmp_path: Path
) -> None:
    """a35 F3: the folder token travels with a copy, so the copy's publications were taken."""
    trust.publish()
    copy = tmp_path / "copy-www"
    shutil.copytree(trust.out, copy)  # folder.id, snapshots and index: the whole folder
    _add(trust.central, "two")
    mine = trust.publish()
    assert trust.sync() == "updated"
    theirs = _second_box(trust, tmp_path, copy)
    assert theirs > mine
    _serve(trust, copy)
    assert trust.sync() == "refused"
    refusals, error = _state(trust)
    assert refusals == {"fork": 1}
    assert f"does not descend from version {mine}" in error
    assert "--reset trust" in error
    assert trust.blocked("one")
    assert trust.blocked("two")
    # the trust's own folder goes on as before
    _serve(trust, None)
    _add(trust.central, "three")
    trust.publish()
    assert trust.sync() == "updated"
    assert trust.blocked("three")


def test_a_gateway_that_followed_the_fork_is_refused_the_trust_until_reset(
    trust: Trust, tmp_path: Path
) -> None:
    trust.publish()
    assert trust.sync() == "updated"
    copy = tmp_path / "copy-www"
    shutil.copytree(trust.out, copy)
    _second_box(trust, tmp_path, copy)
    _serve(trust, copy)
    assert trust.sync() == "updated"  # it descends from the version applied: nothing to tell
    assert not trust.blocked("one")
    _serve(trust, None)
    _add(trust.central, "two")
    trust.publish()
    assert trust.sync() == "refused"
    assert _state(trust)[0] == {"fork": 1}
    assert not trust.blocked("one")  # nothing applied until the operator decides
    # the operator decides that the central box's folder is the trust's
    assert Replica(trust.gateway).reset("trust")
    assert trust.sync() == "updated"
    assert trust.blocked("one")
    assert trust.blocked("two")


def test_a_folder_whose_lineage_restarted_is_a_fork(trust: Trust, tmp_path: Path) -> None:
    """A copy of folder.id alone (the snapshots lost or left behind) starts a new lineage."""
    trust.publish()
    assert trust.sync() == "updated"
    copy = tmp_path / "copy-www"
    copy.mkdir()
    shutil.copy(trust.out / FOLDER, copy / FOLDER)
    _second_box(trust, tmp_path, copy)
    _serve(trust, copy)
    assert trust.sync() == "refused"
    assert "lineage starts after it" in _state(trust)[1]


def test_a_gateway_behind_the_whole_lineage_goes_on_and_says_so(
    trust: Trust, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # the package's `publish` is the function: the modules by name
    monkeypatch.setattr(importlib.import_module("schoolgate.trust.publish"), "HISTORY", 3)
    monkeypatch.setattr(importlib.import_module("schoolgate.trust.subscribe"), "HISTORY", 3)
    trust.publish()
    assert trust.sync() == "updated"
    for text in ("a", "b", "c", "d"):
        _add(trust.central, text)
        trust.publish()
    with caplog.at_level(logging.WARNING, "schoolgate.trust"):
        assert trust.sync() == "updated"
    assert "cannot be checked for a fork" in caplog.text
    assert trust.blocked("d")


def test_the_lineage_follows_deltas_and_a_repin(trust: Trust, tmp_path: Path) -> None:
    trust.publish()
    assert trust.sync() == "updated"
    for text in ("a", "b"):
        _add(trust.central, text)
        trust.publish()
        trust.fetched.clear()
        assert trust.sync() == "updated"
        assert trust.fetched[-1].startswith("delta-")
    # a folder moved on purpose starts its own lineage: --repin follows it
    moved = tmp_path / "moved-www"
    publish(trust.central, moved, trust.key, publisher="Test Trust", channel="trust",
            banks=["trust-incidents"], clock=trust.clock)  # fmt: skip
    _serve(trust, moved)
    assert trust.sync() == "refused"
    assert _state(trust)[0] == {"folder": 1}
    assert Replica(trust.gateway).repin("trust")
    assert trust.sync() == "updated"


# -- F6: folder.id lost on the central box -------------------------------------------------------


def test_a_lost_folder_id_is_not_replaced_by_a_new_one(trust: Trust) -> None:
    """a35 F6: publish minted a new id, and every gateway refused the folder until repinned."""
    trust.publish()
    assert trust.sync() == "updated"
    folder = (trust.out / FOLDER).read_text().strip()
    (trust.out / FOLDER).unlink()
    _add(trust.central, "two")
    with pytest.raises(BankError) as refused:
        trust.publish()
    message = str(refused.value)
    assert "is missing, but this folder has publications" in message
    assert f"echo {folder} > {trust.out / FOLDER}" in message
    assert "publish into an empty one" in message
    assert not (trust.out / FOLDER).exists()
    (trust.out / FOLDER).write_text(folder + "\n")  # what the message says
    trust.publish()
    assert trust.sync() == "updated"
    assert trust.blocked("two")


def test_a_lost_folder_id_without_an_index_is_not_replaced_either(trust: Trust) -> None:
    trust.publish()
    (trust.out / FOLDER).unlink()
    (trust.out / INDEX).unlink()
    with pytest.raises(BankError, match="restore it from a backup"):
        trust.publish()


# -- T2: a gateway whose clock is behind ---------------------------------------------------------


def test_a_gateway_whose_clock_is_behind_is_told_so(trust: Trust) -> None:
    trust.publish()
    trust.clock.now -= 3 * 86_400  # the gateway's clock, three days slow
    assert trust.sync() == "refused"
    refusals, error = _state(trust)
    assert refusals == {"future": 1}
    assert "more than a day ahead of this gateway's clock (2027-01-" in error
    assert "published 2027-01-15T08:00:" in error
    assert "if this gateway's clock is behind, correct it (timedatectl" in error


# -- F5: a trust bank named like a school's own --------------------------------------------------


def test_a_clash_names_whose_bank_it_is_and_how_to_end_it(trust: Trust) -> None:
    trust.gateway.create_bank("trust-incidents", "this school's own")
    trust.publish()
    assert trust.sync() == "updated"
    refusals, error = _state(trust)
    assert refusals == {"clash": 1}
    assert "trust-incidents is this school's own bank" in error
    assert "ask the trust to publish it under a name of its own" in error
    assert "schoolgate hashes remove --bank NAME --all" in error


def test_a_clash_with_another_subscription_names_it(trust: Trust, tmp_path: Path) -> None:
    trust.publish()
    assert trust.sync() == "updated"
    other = Subscription("partner", "https://partner.example/", trust.key.public_key(), "trust")
    other_out = tmp_path / "partner-www"
    publish(trust.central, other_out, trust.key, publisher="Partner", channel="trust",
            banks=["trust-incidents"], clock=trust.clock)  # fmt: skip
    _serve(trust, other_out)
    sync(other, Replica(trust.gateway, trust.clock), trust.fetch)
    state = Replica(trust.gateway).state("partner")
    assert state is not None
    assert state.withheld == ("trust-incidents",)
    assert "trust-incidents is subscription trust's" in state.last_error


# -- a38 B12: two publications at once into one folder -------------------------------------------


def test_a_publication_waits_for_one_running_into_the_same_folder(trust: Trust) -> None:
    """a38 B12: three runs at once (the timer and an operator) wrote three indexes of one
    version; a gateway that fetched the first refused the folder as a fork from then on."""
    first = trust.publish()
    held = threading.Event()

    def hold_the_lock() -> None:
        with exclusive_lock(trust.out, wait_s=0):
            held.set()
            time.sleep(0.4)

    holder = threading.Thread(target=hold_the_lock)
    holder.start()
    assert held.wait(5)
    started = time.monotonic()
    second = trust.publish()  # the clock stands still: a version of its own all the same
    holder.join()
    assert time.monotonic() - started >= 0.3  # it waited for the lock
    assert second > first
    assert trust.sync() == "updated"
    _add(trust.central, "two")
    assert trust.publish() > second
    assert trust.sync() == "updated"
    assert trust.blocked("two")


def test_a_publication_that_cannot_get_the_folder_says_who_holds_it(trust: Trust) -> None:
    first = trust.publish()
    busy = r"another `schoolgate banks publish`.*holds a lock on the folder"
    with exclusive_lock(trust.out, wait_s=0), pytest.raises(BankError, match=busy):
        publish(trust.central, trust.out, trust.key, channel="trust", publisher="Test Trust",
                banks=("trust-incidents",), clock=trust.clock, lock_wait_s=0.2)  # fmt: skip
    assert trust.sync() == "updated"
    assert Replica(trust.gateway).state("trust").version == first  # type: ignore[union-attr]
    assert not list(trust.out.glob(".*lock*"))  # nothing for a web server to serve


def test_an_index_older_than_the_one_in_the_folder_is_never_written(trust: Trust) -> None:
    """a43 F1: a lock file deleted mid-run let a second publication finish first; the first
    then wrote an older index over it, and a gateway that had the newer one saw a fork. The
    index on disk is read again just before a new one is written."""
    from schoolgate.trust.publish import _unchanged_since

    version = trust.publish()
    with pytest.raises(BankError, match=f"another publication wrote version {version}"):
        _unchanged_since(trust.out, trust.key, None, version - 5)  # it saw an empty folder
    with pytest.raises(BankError, match=f"another publication wrote version {version}"):
        _unchanged_since(trust.out, trust.key, version - 9, version - 5)
    _unchanged_since(trust.out, trust.key, version, version + 1)  # the ordinary next one
