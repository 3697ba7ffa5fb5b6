"""Robust-tier configuration, feature-set storage, and the proxy path (Inspector.evaluate)."""

from __future__ import annotations

from pathlib import Path

import pytest

from schoolgate.banks.model import BankError
from schoolgate.banks.store import BankStore
from schoolgate.config import parse_config
from schoolgate.errors import ConfigError
from schoolgate.media.features import FEATURE_KIND
from schoolgate.media.signals import bank_feature_views
from schoolgate.pipeline.engine import InspectionContext, Inspector
from tests.support.imagery import EDITS, skimage_photo


def test_tiers_and_thresholds_parse_with_defaults() -> None:
    config = parse_config(
        "banks:\n"
        "  tiers: {'incident-*': [pdq, robust], 'partner-*': [pdq]}\n"
        "  robust: {min_inliers: 25, per_bank: {incident-strict: {min_spread: 0.5}}}\n",
        "site.yaml",
    )
    banks = config.banks
    assert banks.tiers_for("incident-2026") == ("pdq", "robust")
    assert banks.tiers_for("partner-x") == ("pdq",)
    assert banks.tiers_for("other") == ("pdq",)  # a bank no pattern names runs PDQ only
    assert banks.robust.rule_for("incident-strict").min_inliers == 25  # inherits the default
    assert banks.robust.rule_for("incident-strict").min_spread == 0.5
    assert parse_config("", "empty.yaml").banks.runs("anything", "robust")


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ("banks:\n  tiers: {'*': [pdq, fuzzy]}\n", "banks.tiers.*[1]"),
        ("banks:\n  robust: {min_inliers: 3}\n", "banks.robust.min_inliers"),
        ("banks:\n  robust: {per_bank: {x: {min_spread: 2}}}\n", "banks.robust.per_bank.x"),
        ("banks:\n  robust: {max_candidate: 3}\n", "banks.robust.max_candidate"),
    ],
)
def test_bad_robust_config_names_the_key(text: str, where: str) -> None:
    with pytest.raises(ConfigError, match=r"site\.yaml") as caught:
        parse_config(text, "site.yaml")
    assert where in str(caught.value)


def test_feature_sets_are_stored_listed_and_removed(tmp_path: Path) -> None:
    with BankStore(tmp_path / "banks.sqlite") as store:
        store.create_bank("incident-1")
        before = store.version()
        added = store.add_features("incident-1", "item-a", FEATURE_KIND, [("whole", b"x" * 10)])
        assert added == 1
        assert store.version() > before  # running matchers reload
        assert store.add_features("incident-1", "item-a", FEATURE_KIND, [("whole", b"y")]) == 0
        rows = list(store.iter_features(FEATURE_KIND, ["incident-1"]))
        assert rows == [("incident-1", "item-a", "whole", b"x" * 10, "")]
        assert list(store.iter_features("other-kind")) == []
        assert store.feature_counts() == {"incident-1": 1}
        with pytest.raises(BankError, match="content_id"):
            store.add_features("incident-1", "", FEATURE_KIND, [("whole", b"x")])
        assert store.remove_item("incident-1", "item-a") == 1
        store.add_features("incident-1", "item-b", FEATURE_KIND, [("whole", b"z")])
        store.delete_bank("incident-1")
        assert list(store.iter_features(FEATURE_KIND)) == []


def test_proxy_path_uses_the_robust_tier(tmp_path: Path, data_dir: Path) -> None:
    config = parse_config(
        "classifier:\n  models: []\nbanks:\n  robust: {per_bank: {incident-strict: "
        "{min_inliers: 100000}}}\n",
        "test.yaml",
    )
    photo = skimage_photo("rocket")
    with BankStore(config.banks.path) as store:
        for bank in ("incident-1", "incident-strict"):
            store.create_bank(bank)
        views = [(name, f.to_bytes()) for name, f in bank_feature_views(photo)]
        store.add_features("incident-1", "rocket-sha", FEATURE_KIND, views, note="ref 7")
    inspector = Inspector.from_config(config, with_audit=False)
    try:
        ctx = InspectionContext(client_ip="192.0.2.9")
        verdict = inspector.evaluate(EDITS["crop_10"](photo, 3), ctx)
        assert verdict.blocked
        (match,) = verdict.matches
        assert (match.bank, match.tier, match.value, match.note) == (
            "incident-1", "robust", "rocket-sha", "ref 7",
        )  # fmt: skip
        record = verdict.to_dict()["matches"][0]
        assert record["evidence"]["inliers"] >= 20
        assert "robust match" in verdict.reasons[0]

        # The same features in a bank whose threshold cannot be met: no match.
        with BankStore(config.banks.path) as store:
            store.remove_item("incident-1", "rocket-sha")
            store.add_features("incident-strict", "rocket-sha", FEATURE_KIND, views)
        fresh = Inspector.from_config(config, with_audit=False)
        try:
            assert not fresh.evaluate(EDITS["crop_10"](photo, 3), ctx).blocked
        finally:
            fresh.close()
    finally:
        inspector.close()
