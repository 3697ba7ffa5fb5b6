"""The trust's commands where adversarial pass a35 found them wanting: clearing a subscription's
bank, publishing from a folder whose versions ran ahead, overlapping school prefixes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from schoolgate.banks.model import SignalInput, SignalType
from schoolgate.banks.store import BankStore
from schoolgate.trust.bundle import generate_key, private_key_pem, public_key_text
from schoolgate.trust.publish import publish
from tests.test_cli_scan import NO_MODELS, schoolgate
from tests.test_trust_banks import sha

KEY = "ed25519:" + "A" * 43 + "="


@pytest.mark.parametrize(
    ("first", "second", "clash"),
    [("north-", "north-east-", True), ("north-east-", "north-", True), ("n-", "n-", True),
     ("north-", "northeast-", False)],
)  # fmt: skip
def test_overlapping_school_prefixes_are_a_configuration_error(
    tmp_path: Path, data_dir: Path, first: str, second: str, clash: bool
) -> None:
    """a35 T3: with `north-` and `north-east-`, a bank `north-east-x` could come from either
    school, and the clash withheld it."""
    entries = "".join(
        f"    - {{name: {name}, url: 'https://{name}.example/', public_key: '{KEY}', "
        f"channel: {name}-shared, prefix: {prefix}}}\n"
        for name, prefix in (("north", first), ("northeast", second))
    )
    config = tmp_path / "central.yaml"
    config.write_text(NO_MODELS + f"banks:\n  subscriptions:\n{entries}")
    checked = schoolgate("check-config", str(config), config=config)
    if not clash:
        assert checked.returncode == 0, checked.stderr
        return
    assert checked.returncode == 2
    assert "banks.subscriptions[1].prefix" in checked.stderr
    assert f"overlaps subscription north's prefix {first!r}" in checked.stderr
    assert repr(second) in checked.stderr


def test_clearing_a_subscription_bank_and_a_clock_that_ran_ahead(
    tmp_path: Path, data_dir: Path
) -> None:
    """a35 F1: `hashes remove --all` on a subscription's bank says the next sync refills it,
    and it does. T1: `banks publish` refuses, with a non-zero exit, to carry on a version the
    gateways refuse as `future`, and --reset-version recovers."""
    key = generate_key()
    (tmp_path / "publisher.key").write_bytes(private_key_pem(key))
    out = tmp_path / "www"
    with BankStore(tmp_path / "central.sqlite") as central:
        central.create_bank("trust-incidents")
        central.add_signals("trust-incidents", [SignalInput(SignalType.SHA256, sha("a"))], "x")
        # a publication from a box whose clock ran a year ahead (gateways refuse it)
        publish(central, out, key, channel="trust", banks=["trust-incidents"], publisher="T",
                clock=lambda: 2_000_000_000.0 + 400 * 86_400)  # fmt: skip
    central_config = tmp_path / "central.yaml"
    central_config.write_text(NO_MODELS + f"banks:\n  path: {tmp_path / 'central.sqlite'}\n")
    command = ("banks", "publish", "trust-incidents", "--key", str(tmp_path / "publisher.key"),
               "--out", str(out), "--channel", "trust")  # fmt: skip
    refused = schoolgate(*command, config=central_config)
    assert refused.returncode == 2
    assert "--reset-version" in refused.stderr
    assert "days ahead of this box's clock" in refused.stderr
    reset = schoolgate(*command, "--reset-version", config=central_config)
    assert reset.returncode == 0, reset.stderr

    gateway = tmp_path / "gateway.yaml"
    gateway.write_text(
        NO_MODELS + f"banks:\n  path: {tmp_path / 'gateway.sqlite'}\n  subscriptions:\n"
        f"    - name: trust\n      url: file://{out}/\n"
        f"      public_key: '{public_key_text(key.public_key())}'\n      channel: trust\n"
    )
    synced = schoolgate("banks", "sync", config=gateway)
    assert "trust: updated" in synced.stdout, synced.stdout + synced.stderr
    removed = schoolgate("hashes", "remove", "--bank", "trust-incidents", "--all", config=gateway)
    assert removed.returncode == 0, removed.stderr
    assert "subscription trust refills it at its next sync" in removed.stdout
    synced = schoolgate("banks", "sync", config=gateway)
    assert "trust: updated" in synced.stdout, synced.stdout + synced.stderr
    listed = schoolgate("hashes", "list", "--bank", "trust-incidents", "--json", config=gateway)
    assert sha("a") in listed.stdout, listed.stdout + listed.stderr
    again = schoolgate("banks", "sync", config=gateway)
    assert "trust: current: up to date: the folder has not changed since" in again.stdout
    state = json.loads(schoolgate("banks", "subscriptions", "--json", config=gateway).stdout)
    assert state["published_at"]


def test_bank_settings_that_miss_a_prefixed_trust_bank_are_said(
    tmp_path: Path, data_dir: Path
) -> None:
    """a43 F8: `banks.tiers` and per-bank settings written for the trust's bank name missed it
    under the name the subscription's prefix gives it, and edited copies passed silently."""
    config = tmp_path / "gateway.yaml"
    config.write_text(
        NO_MODELS + "banks:\n"
        "  tiers: {'trust-*': [pdq, robust], '*': [pdq]}\n"
        "  per_bank_distance: {trust-incidents: 40, north-local: 30}\n"
        "  subscriptions:\n"
        f"    - {{name: trust, url: 'https://t.example/', public_key: '{KEY}', "
        "channel: trust, prefix: north-, folder: 0123abcd}\n"
        "proxy: {school_name: North}\n"
    )
    quiet = schoolgate("check-config", str(config), config=config)
    assert quiet.returncode == 0, quiet.stderr
    assert "prefix" not in quiet.stdout  # no trust bank here yet: nothing to say
    with BankStore(data_dir / "banks.sqlite") as store:
        for bank in ("north-trust-incidents", "north-local", "trust-school-own"):
            store.create_bank(bank)
    checked = schoolgate("check-config", str(config), config=config)
    assert checked.returncode == 0, checked.stderr
    notes = [n for n in checked.stdout.splitlines() if "'north-trust-incidents' here" in n]
    assert len(notes) == 2, checked.stdout
    assert "banks.tiers 'trust-*'" in notes[0]
    assert "runs pdq, not pdq/robust" in notes[0]
    assert "name 'north-trust-*'" in notes[0]
    assert "banks.per_bank_distance 'trust-incidents'" in notes[1]
    assert "north-local" not in checked.stdout  # a school bank, named as it is here
