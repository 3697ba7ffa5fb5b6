"""Hash-sharing programmes as bank subscriptions (issue 21), through python-threatexchange: the
library's file and sample exchanges stand in for the programmes that need membership (NCMEC,
StopNCII, ThreatExchange), whose clients are built from the same configuration."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from schoolgate.banks.model import SignalType
from schoolgate.banks.store import BankStore
from schoolgate.config import parse_config
from schoolgate.errors import ConfigError
from schoolgate.media.hashing import pdq_hash
from schoolgate.trust.exchange import _member_api, sync_any
from schoolgate.trust.replica import Replica
from schoolgate.trust.settings import ExchangeSubscription
from tests.conftest import encode
from tests.test_cli_scan import NO_MODELS, schoolgate

MD5 = "d41d8cd98f00b204e9800998ecf8427e"


def held(store: BankStore, bank: str) -> set[tuple[SignalType, str]]:
    return {(s.signal_type, s.value) for s in store.iter_signals(bank)}


def test_the_librarys_sample_exchange_fills_a_bank(tmp_path: Path) -> None:
    subscription = ExchangeSubscription("sample", "sample", "exchange-sample", {})
    with BankStore(tmp_path / "banks.sqlite") as store:
        replica = Replica(store)
        assert sync_any(subscription, replica).outcome == "updated"
        signals = held(store, "exchange-sample")
        assert {kind for kind, _ in signals} == {SignalType.PDQ, SignalType.MD5, SignalType.SHA256}
        assert (SignalType.MD5, MD5) in signals  # the library's own example video MD5
        assert sync_any(subscription, replica).outcome == "current"  # nothing new: nothing applied
        assert store.provenance()["exchange-sample"].startswith("sample (sample), ")


def test_a_file_exchange_follows_its_list_and_a_listed_picture_is_blocked(
    tmp_path: Path, data_dir: Path, benign_photos: dict[str, Image.Image]
) -> None:
    """The file exchange as a filtering partner's list arrives: one `type value` a line. Only
    the types schoolgate matches are banked; a value it cannot use is skipped, not fatal."""
    picture = tmp_path / "listed.jpg"
    picture.write_bytes(encode(benign_photos["coffee"], "JPEG", quality=90))
    listed = pdq_hash(benign_photos["coffee"]).hex
    hashes = tmp_path / "partner.txt"
    hashes.write_text(f"pdq {listed}\nvideo_md5 {MD5}\nurl https://example.org/x\npdq zz\n")
    config = tmp_path / "gateway.yaml"
    config.write_text(
        NO_MODELS + "banks:\n  subscriptions:\n    - name: partner\n      exchange: file\n"
        f"      bank: partner-list\n      options: {{filename: {hashes}}}\n"
    )
    assert schoolgate("scan", str(picture), config=config).returncode == 0
    synced = schoolgate("banks", "sync", config=config)
    assert synced.returncode == 0, synced.stderr
    assert "partner: updated" in synced.stdout
    assert schoolgate("scan", str(picture), config=config).returncode == 1  # blocked
    with BankStore(data_dir / "banks.sqlite") as store:
        assert held(store, "partner-list") == {(SignalType.PDQ, listed), (SignalType.MD5, MD5)}
    # the partner drops the picture's hash: so does the bank, at the next sync
    hashes.write_text(f"video_md5 {MD5}\n")
    assert "partner: updated" in schoolgate("banks", "sync", config=config).stdout
    assert schoolgate("scan", str(picture), config=config).returncode == 0
    # the list emptied (caught half-written): refused, the last good bank stays (a28 E1)
    hashes.write_text(f"pdq {listed}\nvideo_md5 {MD5}\n")
    assert "partner: updated" in schoolgate("banks", "sync", config=config).stdout
    hashes.write_text("pdq 00")
    emptied = schoolgate("banks", "sync", config=config)
    assert "partner: refused" in emptied.stdout
    assert schoolgate("scan", str(picture), config=config).returncode == 1
    hashes.write_text(f"video_md5 {MD5}\n")
    # the list gone: the last good bank stays, and the sync says why
    hashes.unlink()
    failed = schoolgate("banks", "sync", config=config)
    assert failed.returncode == 2
    assert "partner: unreachable" in failed.stdout
    with BankStore(data_dir / "banks.sqlite") as store:
        assert held(store, "partner-list") == {(SignalType.PDQ, listed), (SignalType.MD5, MD5)}


def test_a_programme_that_needs_membership_gets_its_credentials_from_the_file(
    tmp_path: Path,
) -> None:
    """No network here: the library's client is built from the subscription, with the
    credentials in the library's own field names."""
    credentials = tmp_path / "ncmec.json"
    credentials.write_text(json.dumps({"user": "school-trust", "password": "secret"}))
    subscription = ExchangeSubscription("ncmec", "ncmec", "ncmec-list", {"environment": "NGO"},
                                        credentials)  # fmt: skip
    api, collab = _member_api(subscription)
    assert type(api).__name__ == "NCMECSignalExchangeAPI"
    assert collab.environment.name == "NGO"
    stop = tmp_path / "stopncii.json"
    stop.write_text(json.dumps({"fetch_function_key": "f", "subscription_key": "s"}))
    api, _ = _member_api(ExchangeSubscription("stop", "stopncii", "stopncii", {}, stop))
    assert type(api).__name__ == "StopNCIISignalExchangeAPI"


@pytest.mark.parametrize(
    ("entry", "key", "problem"),
    [
        ("exchange: pastebin\n      bank: x", "exchange", "is not one of"),
        ("exchange: file\n      bank: x", "options.filename", "is required"),
        ("exchange: ncmec\n      bank: x", "credentials_file", "is required for ncmec"),
        ("exchange: sample\n      bank: 'Bad Name'", "bank", "invalid bank name"),
    ],
)
def test_a_broken_exchange_subscription_is_a_clear_configuration_error(
    entry: str, key: str, problem: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(f"banks:\n  subscriptions:\n    - name: partner\n      {entry}\n", "s.yaml")
    assert caught.value.key_path == f"banks.subscriptions[0].{key}"
    assert problem in caught.value.problem
