"""Recovering a trust's bank distribution from what went wrong on one side (adversarial pass
a35): a subscription's bank cleared on a gateway, a publisher whose clock once ran a year ahead,
and an index that has not changed for days."""

from __future__ import annotations

import logging
import sqlite3
from dataclasses import replace
from pathlib import Path

import pytest

from schoolgate.banks.model import BankError, SignalInput, SignalType
from schoolgate.banks.store import BankStore
from schoolgate.trust.bundle import FUTURE_S
from schoolgate.trust.publish import INDEX, publish
from schoolgate.trust.replica import Replica
from schoolgate.trust.subscribe import sync
from tests.test_trust_banks import Trust, sha, trust

__all__ = ["trust"]  # the fixture, shared with tests.test_trust_banks

YEAR = 365 * 86_400.0


def _add(trust: Trust, text: str) -> None:
    trust.central.add_signals("trust-incidents", [SignalInput(SignalType.SHA256, sha(text))], "x")


# -- F1: a subscription's bank cleared on the gateway --------------------------------------------


def test_a_subscription_bank_deleted_here_is_refilled_at_the_next_sync(trust: Trust) -> None:
    """a35 F1: `hashes remove --bank X --all` on a replica emptied it for good: the next sync
    called the subscription current, since the version applied had not changed."""
    version = trust.publish()
    assert trust.sync() == "updated"
    trust.gateway.delete_bank("trust-incidents")  # what `hashes remove --all` does
    trust.fetched.clear()
    assert trust.sync() == "updated"  # the full snapshot of the same version, again
    assert trust.fetched == [INDEX, f"full-{version}.sgb"]
    assert trust.blocked("one")
    assert Replica(trust.gateway).state("trust").version == version  # type: ignore[union-attr]
    assert trust.sync() == "current"  # and then nothing more to do


def _alter_in_place(trust: Trust) -> None:
    """a39 F1: each of the bank's hashes changed in place (`UPDATE signals SET value = ...`):
    the bank holds as many rows as its version put there, none of which matches."""
    with sqlite3.connect(trust.gateway.path) as db:
        rows = db.execute("SELECT id, value FROM signals").fetchall()
        db.executemany("UPDATE signals SET value = ? WHERE id = ?",
                       [(bytes(b ^ 0xFF for b in value), id_) for id_, value in rows])  # fmt: skip


def test_a_subscription_bank_altered_in_place_is_made_whole_at_the_next_sync(
    trust: Trust,
) -> None:
    version = trust.publish()
    assert trust.sync() == "updated"
    _alter_in_place(trust)
    assert not trust.blocked("one")
    trust.fetched.clear()
    assert trust.sync() == "updated"
    assert trust.fetched == [INDEX, f"full-{version}.sgb"]
    assert trust.blocked("one")
    assert trust.sync() == "current"


def test_a_delta_is_not_applied_onto_a_subscription_bank_altered_in_place(trust: Trust) -> None:
    trust.publish()
    assert trust.sync() == "updated"
    _alter_in_place(trust)
    _add(trust, "two")
    second = trust.publish()
    trust.fetched.clear()
    assert trust.sync() == "updated"
    assert trust.fetched == [INDEX, f"full-{second}.sgb"]
    assert trust.blocked("one")
    assert trust.blocked("two")


def test_a_version_applied_before_fingerprints_is_checked_by_count(trust: Trust) -> None:
    """A gateway upgraded in place holds counts, not fingerprints, until its next version."""
    trust.publish()
    assert trust.sync() == "updated"
    with sqlite3.connect(trust.gateway.path) as db:
        db.execute("""UPDATE subscriptions SET counts = '{"trust-incidents": 1}'""")
    assert trust.sync() == "current"  # one row, as recorded
    with sqlite3.connect(trust.gateway.path) as db:
        db.execute("""UPDATE subscriptions SET counts = '{"trust-incidents": 2}'""")
    assert trust.sync() == "updated"  # the count differs: the full snapshot again


def test_a_delta_is_not_applied_onto_a_subscription_bank_cut_here(trust: Trust) -> None:
    """A delta carries only what changed: applied onto a cleared bank, it left the bank with
    the new hashes only."""
    first = trust.publish()
    _add(trust, "two")
    assert trust.sync() == "updated"
    trust.gateway.delete_bank("trust-incidents")
    _add(trust, "three")
    second = trust.publish()
    trust.fetched.clear()
    assert trust.sync() == "updated"
    assert trust.fetched == [INDEX, f"full-{second}.sgb"]  # not delta-{first}-{second}
    assert f"delta-{first}-{second}.sgb" in {p.name for p in trust.out.iterdir()}
    assert all(trust.blocked(text) for text in ("one", "two", "three"))


def test_hashes_removed_from_a_subscription_bank_here_come_back(trust: Trust) -> None:
    _add(trust, "two")
    trust.publish()
    assert trust.sync() == "updated"
    # below the CLI, which refuses single removals from an owned bank
    trust.gateway.remove_signal("trust-incidents", SignalType.SHA256, sha("two"))
    assert trust.sync() == "updated"
    assert trust.blocked("two")


# -- T1: a publisher whose clock once ran a year ahead --------------------------------------------


def _publish(trust: Trust, *, reset_version: bool = False) -> tuple[int, tuple[str, ...]]:
    done = publish(trust.central, trust.out, trust.key, channel="trust", publisher="Test Trust",
                   banks=("trust-incidents",), reset_version=reset_version,
                   clock=trust.clock)  # fmt: skip
    return done.version, done.warnings


def test_publish_refuses_to_carry_on_a_version_far_ahead_and_reset_version_recovers(
    trust: Trust,
) -> None:
    """a35 T1: versions never go down, so after one publication from a box a year ahead every
    later one was refused by the gateways as `future`, for a year, without a word at publish."""
    first = trust.publish()
    assert trust.sync() == "updated"
    trust.clock.now += YEAR
    trust.publish()  # the wrong clock
    trust.clock.now -= YEAR
    assert trust.sync() == "refused"  # future
    with pytest.raises(BankError, match=r"days ahead of this box's clock.*--reset-version"):
        _publish(trust)
    _add(trust, "two")
    version, warnings = _publish(trust, reset_version=True)
    assert first < version < trust.clock.now + FUTURE_S
    assert warnings == ()
    assert trust.sync() == "updated"
    assert trust.blocked("two")
    # the folder goes on from this clock: the next publication needs no reset
    _add(trust, "three")
    later, warnings = _publish(trust)
    assert later > version
    assert warnings == ()
    assert trust.sync() == "updated"
    assert trust.blocked("three")


def test_a_gateway_that_applied_a_version_from_a_wrong_clock_is_reset(trust: Trust) -> None:
    """A gateway whose clock was as wrong as the publisher's applied the version ahead; after
    --reset-version on the central box it sees the folder go back, until IT resets it."""
    trust.publish()
    trust.clock.now += YEAR
    trust.publish()
    assert trust.sync() == "updated"  # the gateway's clock ran ahead too
    trust.clock.now -= YEAR
    _add(trust, "two")
    _publish(trust, reset_version=True)
    assert trust.sync() == "refused"  # replayed, as it should be without a word from IT
    assert Replica(trust.gateway).reset("trust")
    assert trust.sync() == "updated"
    assert trust.blocked("two")
    assert not Replica(trust.gateway).reset("nothing")


def test_reset_version_is_refused_when_the_gateways_accept_the_folders_version(
    trust: Trust,
) -> None:
    trust.publish()
    with pytest.raises(BankError, match="not more than a day ahead"):
        _publish(trust, reset_version=True)


def test_publish_warns_when_its_clock_is_behind_the_folders_last_version(trust: Trust) -> None:
    trust.clock.now += 3600
    ahead = trust.publish()
    trust.clock.now -= 3600
    version, warnings = _publish(trust)
    assert version == ahead + 1  # carried on: gateways accept it (under a day ahead)
    assert len(warnings) == 1
    assert "clock is behind this folder's last version" in warnings[0]


# -- T6: a current index, and since when --------------------------------------------------------


def test_a_current_index_says_since_when_the_folder_has_not_changed(
    trust: Trust, caplog: pytest.LogCaptureFixture
) -> None:
    """a35 T6: an index a stale mirror served again was "up to date" until the 2-day alert."""
    trust.publish()
    assert trust.sync() == "updated"
    replica = Replica(trust.gateway, trust.clock)
    result = sync(trust.subscription(), replica, trust.fetch)
    assert result.outcome == "current"
    assert "the folder has not changed since 2027-01-15T08:" in result.message
    assert "mirror" not in result.message
    trust.clock.now += 2 * 86_400 + 3600  # subscribe.UNCHANGED_S
    with caplog.at_level(logging.WARNING, "schoolgate.trust"):
        result = sync(trust.subscription(), replica, trust.fetch)
    assert result.outcome == "current"
    assert "(49.0 h ago" in result.message
    assert "a mirror serves an old index?" in result.message
    assert "has not changed since" in caplog.text


# -- A central box restored from an older backup, or a second box ---------------------------------


def test_a_box_restored_from_an_older_backup_does_not_take_newer_hashes_off_every_gateway(
    trust: Trust, tmp_path: Path
) -> None:
    """The central box's bank database, restored from a backup made before its last
    publication, lacks the hashes added since: publishing from it would remove them from every
    gateway. Refused, naming what would go; `adopt_folder` takes them off on purpose."""
    trust.publish()
    backup = tmp_path / "backup.sqlite"
    with sqlite3.connect(trust.central.path) as live, sqlite3.connect(backup) as copy:
        live.backup(copy)
    _add(trust, "two")
    trust.publish()
    assert trust.sync() == "updated"
    with BankStore(backup) as restored:
        with pytest.raises(
            BankError, match=r"not made from this bank database.*trust-incidents: 1"
        ):
            publish(restored, trust.out, trust.key, channel="trust", banks=("trust-incidents",),
                    publisher="Test Trust", clock=trust.clock)  # fmt: skip
        assert trust.sync() == "current"  # nothing was written
        assert trust.blocked("two")
        # adding anything does not help: what it lacks is still lacking
        restored.add_signals("trust-incidents", [SignalInput(SignalType.SHA256, sha("x"))], "d")
        with pytest.raises(BankError, match="--adopt-folder"):
            publish(restored, trust.out, trust.key, channel="trust", banks=("trust-incidents",),
                    publisher="Test Trust", clock=trust.clock)  # fmt: skip
        publish(restored, trust.out, trust.key, channel="trust", banks=("trust-incidents",),
                publisher="Test Trust", adopt_folder=True, clock=trust.clock)  # fmt: skip
    assert trust.sync() == "updated"
    assert not trust.blocked("two")  # taken off on purpose
    assert trust.blocked("x")


def test_removals_made_on_the_box_that_published_last_need_no_flag(trust: Trust) -> None:
    _add(trust, "two")
    trust.publish()
    trust.central.remove_signal("trust-incidents", SignalType.SHA256, sha("two"))
    trust.publish()  # this database made the folder's last publication: its removal stands
    assert trust.sync() == "updated"
    assert not trust.blocked("two")
    # a second box (a database that never published here) with fewer hashes is refused
    with BankStore(trust.out.parent / "second.sqlite") as second:
        second.create_bank("trust-incidents", "shared incident hashes", "Test Trust")
        with pytest.raises(BankError, match="it published nothing here"):
            publish(second, trust.out, trust.key, channel="trust", banks=("trust-incidents",),
                    publisher="Test Trust", clock=trust.clock)  # fmt: skip


# -- a41 F7/F8: a subscription renamed, or given a prefix, in the configuration -----------------


def _sync_as(trust: Trust, name: str, prefix: str = "", configured: tuple[str, ...] = ()) -> str:
    subscription = replace(trust.subscription(), name=name, prefix=prefix)
    return sync(subscription, Replica(trust.gateway, trust.clock), trust.fetch,
                configured=configured or (name,)).outcome  # fmt: skip


def test_a_subscription_renamed_in_the_configuration_keeps_its_banks_and_follows_on(
    trust: Trust,
) -> None:
    """a41 F7: renamed `trust` to `trust-central`, the banks were withheld as another
    subscription's and frozen: 5 of 5 new trust pictures passed."""
    trust.publish()
    assert _sync_as(trust, "trust") == "updated"
    assert _sync_as(trust, "trust-central") == "current"  # the same publication, renamed
    _add(trust, "two")
    trust.publish()
    assert _sync_as(trust, "trust-central") == "updated"
    assert trust.blocked("one")
    assert trust.blocked("two")
    names = [state.name for state in Replica(trust.gateway).states()]
    assert names == ["trust-central"]


def test_a_renamed_subscription_whose_banks_were_deleted_as_advised_gets_them_back(
    trust: Trust,
) -> None:
    trust.publish()
    assert _sync_as(trust, "trust") == "updated"
    trust.gateway.delete_bank("trust-incidents")  # `hashes remove --all`, as the log said
    assert _sync_as(trust, "trust-central") == "updated"
    assert trust.blocked("one")


def test_two_subscriptions_of_one_folder_do_not_take_each_others_state(trust: Trust) -> None:
    trust.publish()
    assert _sync_as(trust, "trust", configured=("trust", "second")) == "updated"
    _sync_as(trust, "second", configured=("trust", "second"))  # its banks clash: withheld
    names = {state.name for state in Replica(trust.gateway).states()}
    assert names == {"trust", "second"}


def test_a_prefix_added_to_a_subscription_renames_its_banks(trust: Trust) -> None:
    """a41 F8: with `prefix:` added, the old banks stayed frozen (one the trust dropped kept
    blocking) and the prefixed bank was built from a delta alone."""
    trust.publish()
    assert _sync_as(trust, "trust") == "updated"
    assert _sync_as(trust, "trust", prefix="p-") == "updated"  # the same version, renamed
    banks = {bank.name for bank in trust.gateway.banks()}
    assert banks == {"p-trust-incidents"}
    assert trust.blocked("one")
    assert _sync_as(trust, "trust", prefix="p-") == "current"


def test_a_subscription_renamed_as_the_trust_moves_folder_takes_over_the_old_ones_banks(
    trust: Trust,
) -> None:
    """a43 F2: renamed while the trust moved to a new folder, the banks stayed the old (no
    longer configured) subscription's: withheld and frozen, and gone once deleted as advised."""
    trust.publish()
    assert _sync_as(trust, "trust-main") == "updated"
    _add(trust, "two")
    moved = trust.out.parent / "trust-2027"
    publish(trust.central, moved, trust.key, channel="trust", banks=("trust-incidents",),
            publisher="Test Trust", clock=trust.clock)  # fmt: skip
    trust.served = {path.name: path.read_bytes() for path in moved.iterdir()}
    assert _sync_as(trust, "trust-2027") == "updated"
    assert trust.blocked("one")
    assert trust.blocked("two")
    states = {state.name: state for state in Replica(trust.gateway).states()}
    assert list(states) == ["trust-2027"]
    assert states["trust-2027"].withheld == ()


def test_a_prefix_that_would_clash_with_a_school_bank_keeps_the_old_names(trust: Trust) -> None:
    """a43 F7: with `prefix: t-` added, the trust's bank became t-trust-incidents, which the
    school already had: it was withheld and the old-named one dropped, enforced nowhere."""
    trust.publish()
    assert _sync_as(trust, "trust") == "updated"
    trust.gateway.create_bank("t-trust-incidents")  # the school's own, by chance
    assert _sync_as(trust, "trust", prefix="t-") == "refused"
    assert trust.blocked("one")  # still enforced, under its old name
    assert {bank.name for bank in trust.gateway.banks()} == {"trust-incidents", "t-trust-incidents"}
