"""Metrics recorded by the proxy runtime in-process: real verdicts from the real engine, read
back from the Prometheus registry. Counters are process-global: every check is a before/after
delta."""

from __future__ import annotations

import asyncio
import platform
from collections.abc import Iterator
from dataclasses import dataclass, replace
from importlib import metadata
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest
import yaml
from PIL import Image
from prometheus_client import REGISTRY, generate_latest

from schoolgate.addons.runtime import Runtime, RuntimeRef
from schoolgate.addons.scope import Scope
from schoolgate.banks.model import SignalInput, SignalType
from schoolgate.banks.store import BankStore
from schoolgate.config import load_config
from schoolgate.matching.matcher import BankMatch
from schoolgate.monitoring import metrics
from schoolgate.pipeline.verdict import Action, Findings, InspectionContext, Verdict
from tests.conftest import encode
from tests.support.onnx_models import PATTERN_LABEL, make_pattern_model, pattern_image
from tests.support.proxy_harness import bank_photo
from tests.support.tls_hello import client_hello

BANK = "incident-metrics"
PUPIL = InspectionContext(client_ip="10.20.1.5", app="snapchat", host="snapchat.com", route="/u")
STAFF = InspectionContext(client_ip="10.10.1.5", app="snapchat", host="snapchat.com", route="/u")


def value(name: str, **labels: str) -> float:
    """A sample's current value; 0 when the series does not exist (yet)."""
    found = REGISTRY.get_sample_value(name, labels)
    return 0.0 if found is None else found


def label_values(metric: str, label: str) -> set[str]:
    """Every value one label takes across a metric's samples."""
    values: set[str] = set()
    for family in REGISTRY.collect():
        for sample in family.samples:
            if sample.name == metric and label in sample.labels:
                values.add(sample.labels[label])
    return values


def scrape() -> str:
    return generate_latest(REGISTRY).decode()


@dataclass
class Setup:
    runtime: Runtime
    banned: bytes
    benign: bytes


@pytest.fixture
def setup(data_dir: Path, tmp_path: Path, benign_photos: dict[str, Image.Image]) -> Iterator[Setup]:
    bank_photo(data_dir, benign_photos["coffee"], bank=BANK)
    model = make_pattern_model(tmp_path / "pattern.onnx")
    config = {
        "banks": {"reload_interval_s": 0.1},
        "classifier": {
            "models": [
                {
                    "name": "pattern",
                    "adapter": "onnx",
                    "path": str(model),
                    "thresholds": {PATTERN_LABEL: 0.5},
                    "input_size": 32,
                    "scale": 1 / 255,
                    "labels": [PATTERN_LABEL],
                    "output_activation": "none",
                    "time_budget_ms": 10000,
                },
                {
                    "name": "missing",
                    "adapter": "onnx",
                    "path": str(tmp_path / "no-such-model.onnx"),
                    "thresholds": {"x": 0.5},
                },
            ]
        },
        "policy": {
            "groups": [
                {"name": "staff", "subnets": ["10.10.0.0/16"], "mode": "monitor"},
                {"name": "students", "subnets": ["10.20.0.0/16"], "mode": "block"},
            ],
            "default_group": "students",
        },
        "proxy": {"workers": 2, "inspect_timeout_s": 60},
    }
    path = tmp_path / "schoolgate.yaml"
    path.write_text(yaml.safe_dump(config))
    runtime = Runtime.from_config(load_config(path))
    try:
        yield Setup(
            runtime,
            encode(benign_photos["coffee"], "JPEG", quality=90),
            encode(benign_photos["astronaut"], "JPEG", quality=90),
        )
    finally:
        runtime.close()


def judge(runtime: Runtime, data: bytes, ctx: InspectionContext) -> Any:
    return asyncio.run(runtime.judge(data, ctx))


def test_block_and_allow_are_counted_by_app_decision_reason_and_bank(setup: Setup) -> None:
    block = {"app": "snapchat", "direction": "upload", "decision": "block"}
    allow = {**block, "decision": "allow"}
    reason = {"app": "snapchat", "direction": "upload", "group": "students"}
    before = {
        "block": value("schoolgate_inspections_total", **block),
        "allow": value("schoolgate_inspections_total", **allow),
        "bank": value("schoolgate_blocks_total", **reason, reason="bank_match"),
        "matches": value("schoolgate_bank_matches_total", bank=BANK, signal_type="pdq"),
        "bytes": value("schoolgate_inspected_bytes_total", direction="upload"),
        "latency": value(
            "schoolgate_inspection_duration_seconds_count", media_type="jpeg", direction="upload"
        ),
        "scores": value("schoolgate_classifier_score_ratio_count", model="pattern", label="flag"),
    }

    banned = judge(setup.runtime, setup.banned, PUPIL)
    benign = judge(setup.runtime, setup.benign, PUPIL)

    assert banned.blocked
    assert not benign.blocked
    assert value("schoolgate_inspections_total", **block) == before["block"] + 1
    assert value("schoolgate_inspections_total", **allow) == before["allow"] + 1
    assert value("schoolgate_blocks_total", **reason, reason="bank_match") == before["bank"] + 1
    pdq_matches = sum(1 for m in banned.matches if m.bank == BANK)
    assert pdq_matches >= 1
    assert (
        value("schoolgate_bank_matches_total", bank=BANK, signal_type="pdq")
        == before["matches"] + pdq_matches
    )
    assert value("schoolgate_inspected_bytes_total", direction="upload") == (
        before["bytes"] + len(setup.banned) + len(setup.benign)
    )
    assert (
        value("schoolgate_inspection_duration_seconds_count", media_type="jpeg", direction="upload")
        == before["latency"] + 2
    )
    # The banked photo skips the classifier (skip_when_matched); the benign one is scored.
    assert (
        value("schoolgate_classifier_score_ratio_count", model="pattern", label="flag")
        == before["scores"] + 1
    )


def test_classifier_block_and_its_score_are_recorded(setup: Setup) -> None:
    labels = {"app": "snapchat", "direction": "upload", "group": "students"}
    before = value("schoolgate_blocks_total", **labels, reason="classifier")
    high = value(
        "schoolgate_classifier_score_ratio_bucket", model="pattern", label="flag", le="0.9"
    )
    total = value("schoolgate_classifier_score_ratio_count", model="pattern", label="flag")

    verdict = judge(setup.runtime, encode(pattern_image(), "PNG"), PUPIL)

    assert verdict.blocked
    assert value("schoolgate_blocks_total", **labels, reason="classifier") == before + 1
    # A red square scores ~1: counted in the histogram, above the 0.9 bucket.
    assert value("schoolgate_classifier_score_ratio_count", model="pattern", label="flag") == (
        total + 1
    )
    assert (
        value("schoolgate_classifier_score_ratio_bucket", model="pattern", label="flag", le="0.9")
        == high
    )


def test_monitor_mode_counts_a_would_block_but_no_block(setup: Setup) -> None:
    monitor = {"app": "snapchat", "direction": "upload", "decision": "monitor"}
    blocks = {"app": "snapchat", "direction": "upload", "group": "staff", "reason": "bank_match"}
    before = value("schoolgate_inspections_total", **monitor)
    before_blocks = value("schoolgate_blocks_total", **blocks)

    verdict = judge(setup.runtime, setup.banned, STAFF)

    assert not verdict.blocked
    assert verdict.would_block
    assert value("schoolgate_inspections_total", **monitor) == before + 1
    assert value("schoolgate_blocks_total", **blocks) == before_blocks


def test_fail_closed_block_is_counted_under_its_failure_kind(setup: Setup) -> None:
    labels = {"app": "snapchat", "direction": "upload", "group": "students"}
    before = value("schoolgate_blocks_total", **labels, reason="refused")
    failures = value("schoolgate_inspection_failures_total", direction="upload", failure="refused")

    verdict = judge(setup.runtime, setup.benign[: len(setup.benign) // 3], PUPIL)  # truncated

    assert verdict.blocked
    assert verdict.findings.failure == "refused"
    assert value("schoolgate_blocks_total", **labels, reason="refused") == before + 1
    assert (
        value("schoolgate_inspection_failures_total", direction="upload", failure="refused")
        == failures + 1
    )


def test_unknown_app_names_stay_bounded(setup: Setup) -> None:
    catalog_apps = {app.name for app in setup.runtime.catalog.apps}
    other = {"app": "other", "direction": "upload", "decision": "allow"}
    before = value("schoolgate_inspections_total", **other)
    # The registry is process-wide: other test modules may have bound other catalogs before.
    apps_before = label_values("schoolgate_inspections_total", "app")
    for i in range(1000):
        ctx = InspectionContext(client_ip=f"10.20.{i // 250}.{i % 250}", app=f"made-up-app-{i}")
        setup.runtime.unavailable(ctx, "not_inspectable", "test")

    apps = label_values("schoolgate_inspections_total", "app")
    assert {"snapchat", "other"} <= apps
    assert not any(name.startswith("made-up-app") for name in apps)
    assert apps - apps_before <= catalog_apps | {"other", "none"}
    assert value("schoolgate_inspections_total", **other) == before + 1000
    # Nor do client addresses appear anywhere in the exposition.
    assert "10.20.3.249" not in scrape()


def test_bank_and_receiver_names_are_capped(monkeypatch: pytest.MonkeyPatch) -> None:
    # Fresh bounds, so this flood does not use up the process-wide caps other tests rely on.
    monkeypatch.setattr(metrics, "BANKS", metrics.BoundedLabel(cap=metrics.MAX_BANKS))
    monkeypatch.setattr(metrics, "RECEIVERS", metrics.BoundedLabel(cap=metrics.MAX_RECEIVERS))
    ctx = InspectionContext(app="snapchat")
    matches = tuple(
        BankMatch(f"flood-bank-{i}", SignalType.SHA256, "00" * 32, 0, None, "") for i in range(1000)
    )
    verdict = Verdict(Action.ALLOW, False, "block", "students", (), ctx, Findings(matches=matches))
    metrics.observe_verdict(verdict)
    for i in range(1000):
        metrics.webhook_attempt(f"flood-receiver-{i}", "delivered")

    banks = {b for b in label_values("schoolgate_bank_matches_total", "bank") if "flood" in b}
    assert 0 < len(banks) <= metrics.MAX_BANKS
    assert value("schoolgate_bank_matches_total", bank="other", signal_type="sha256") >= 1000 - len(
        banks
    )
    receivers = label_values("schoolgate_webhook_attempts_total", "receiver")
    assert "other" in receivers
    assert len(receivers) <= metrics.MAX_RECEIVERS + 1


def test_webhook_outcomes_exist_at_zero_and_a_bad_outcome_never_raises() -> None:
    metrics.declare_webhook_receivers(["dsl"])
    for outcome in metrics.WEBHOOK_OUTCOMES:
        assert (
            REGISTRY.get_sample_value(
                "schoolgate_webhook_attempts_total", {"receiver": "dsl", "outcome": outcome}
            )
            is not None
        )
    failures = value("schoolgate_webhook_attempts_total", receiver="dsl", outcome="http_5xx")
    metrics.webhook_attempt("dsl", "http_5xx")
    assert value("schoolgate_webhook_attempts_total", receiver="dsl", outcome="http_5xx") == (
        failures + 1
    )
    errors = value("schoolgate_metrics_errors_total", where="webhook_attempt")
    metrics.webhook_attempt("dsl", "exploded")  # a caller's bug: counted, not raised
    assert value("schoolgate_metrics_errors_total", where="webhook_attempt") == errors + 1


def test_a_broken_metric_never_breaks_a_decision(
    setup: Setup, monkeypatch: pytest.MonkeyPatch
) -> None:
    def explode(*args: object, **kwargs: object) -> None:
        raise RuntimeError("metrics backend broke")

    monkeypatch.setattr(metrics.INSPECTIONS, "labels", explode)
    monkeypatch.setattr(metrics.INSPECTION_DURATION, "labels", explode)
    errors = value("schoolgate_metrics_errors_total", where="observe_verdict")

    verdict = judge(setup.runtime, setup.banned, PUPIL)

    assert verdict.blocked  # still decided and enforced
    assert value("schoolgate_metrics_errors_total", where="observe_verdict") == errors + 1
    audit = setup.runtime.config.audit.path.read_text()
    assert verdict.id in audit  # and still audited


def test_scrape_time_state_banks_models_queue(setup: Setup, data_dir: Path) -> None:
    text = scrape()
    assert 'schoolgate_model_loaded{model="pattern"} 1.0' in text
    assert 'schoolgate_model_loaded{model="missing"} 0.0' in text
    assert f'schoolgate_bank_hashes{{bank="{BANK}",signal_type="pdq"}} 1.0' in text
    assert "schoolgate_inspection_queue_depth 0.0" in text
    assert "schoolgate_inspection_queue_capacity 66.0" in text  # 2 workers + max_queue 64

    # A bank added by another process shows up at the next scrape.
    with BankStore(data_dir / "banks.sqlite") as store:
        store.ensure_bank("partner-list")
        store.add_signals(
            "partner-list",
            [SignalInput(SignalType.MD5, f"{i:032x}") for i in range(3)],
            source="test",
        )
    assert 'schoolgate_bank_hashes{bank="partner-list",signal_type="md5"} 3.0' in scrape()
    assert value("schoolgate_bank_updated_timestamp_seconds", bank="partner-list") > 1.7e9


def test_a_trust_subscriptions_state_is_read_at_scrape_time(setup: Setup, data_dir: Path) -> None:
    """Version, publication time, last check and refusals by reason: what the trust dashboard
    and the bank-freshness rule read (issue 21). Nothing before the first sync."""
    from schoolgate.trust.bundle import Bundle, BundleError
    from schoolgate.trust.replica import Replica

    assert "schoolgate_bank_subscription_version{" not in scrape()
    with BankStore(data_dir / "banks.sqlite") as store:
        replica = Replica(store)
        replica.apply("trust", Bundle("full", "Test Trust", 1_800_000_123, 1_800_000_100.0))
        replica.checked("trust", BundleError("signature", "a tampered bundle"))
        replica.checked("trust", BundleError("signature", "a tampered bundle"))
    assert value("schoolgate_bank_subscription_version", subscription="trust") == 1_800_000_123
    assert value("schoolgate_bank_subscription_published_timestamp_seconds",
                 subscription="trust") == 1_800_000_100.0  # fmt: skip
    assert value("schoolgate_bank_subscription_checked_timestamp_seconds",
                 subscription="trust") > 1.7e9  # fmt: skip
    assert value("schoolgate_bank_subscription_refused_total", subscription="trust",
                 reason="signature") == 2  # fmt: skip
    # every reason from 0 (a first refusal is an increase), and 0 for a version never applied
    assert (
        'schoolgate_bank_subscription_refused_total{reason="replayed",subscription="trust"} 0.0'
        in (scrape())
    )
    # the apply was a sync that ended well; the refusals were not
    synced = value("schoolgate_bank_subscription_synced_timestamp_seconds", subscription="trust")
    assert synced > 1.7e9
    with BankStore(data_dir / "banks.sqlite") as store:
        Replica(store).checked("partner", error="unreachable")
        Replica(store).checked("partner", error="unreachable")
    assert 'schoolgate_bank_subscription_version{subscription="partner"} 0.0' in scrape()
    assert value("schoolgate_bank_subscription_fetch_failed_total", subscription="partner") == 2
    assert value("schoolgate_bank_subscription_fetch_failed_total", subscription="trust") == 0
    assert 'synced_timestamp_seconds{subscription="partner"}' not in scrape()  # never synced


def test_alert_outbox_state_is_read_at_scrape_time_and_failures_are_tolerated() -> None:
    @dataclass
    class Stats:
        pending: int
        oldest_pending_age_s: float
        dead: int

    try:
        metrics.bind_alert_outbox(lambda: Stats(4, 125.5, 1), lambda: (3, 1))
        assert value("schoolgate_alert_unwritten") == 3  # the disk refused them (a35 A9)
        assert value("schoolgate_alert_memory_only") == 1
        assert value("schoolgate_alert_outbox_up") == 1
        assert value("schoolgate_alert_outbox_pending") == 4
        assert value("schoolgate_alert_outbox_oldest_pending_age_seconds") == 125.5
        assert value("schoolgate_alert_outbox_dead") == 1

        def broken() -> Stats:
            raise OSError("database is locked")

        metrics.bind_alert_outbox(broken)
        text = scrape()  # the rest of the exposition still comes out
        assert "schoolgate_alert_outbox_up 0.0" in text
        assert REGISTRY.get_sample_value("schoolgate_alert_outbox_pending") is None
        assert "schoolgate_build_info" in text
    finally:
        metrics.STATE.bind_outbox(None)
    # Not wired in: nothing can be pending, and up says there is no outbox.
    assert value("schoolgate_alert_outbox_up") == 0
    assert REGISTRY.get_sample_value("schoolgate_alert_outbox_pending") == 0


def test_build_info_names_the_versions() -> None:
    assert (
        value(
            "schoolgate_build_info",
            version=metadata.version("schoolgate"),
            python=platform.python_version(),
            mitmproxy=metadata.version("mitmproxy"),
        )
        == 1
    )


def fake_hello(sni: str | None, client: str = "10.20.0.9") -> Any:
    """What Scope.tls_clienthello reads from mitmproxy's ClientHelloData."""
    return SimpleNamespace(
        client_hello=client_hello(server_name=sni),
        context=SimpleNamespace(
            client=SimpleNamespace(peername=(client, 50000), id=sni or "-", sni=sni),
            server=SimpleNamespace(address=("198.51.100.2", 443)),
        ),
        ignore_connection=False,
    )


def test_scope_counts_pass_through_and_interception(setup: Setup) -> None:
    scope = Scope(RuntimeRef(setup.runtime))
    names = ("not_catalogued", "no_sni", "not_inspectable")
    before = {n: value("schoolgate_passthrough_connections_total", reason=n) for n in names}
    intercepted = value("schoolgate_intercepted_connections_total")

    for sni in ("example.org", "www.bbc.co.uk", "web.whatsapp.com", "www.snapchat.com"):
        data = fake_hello(sni)
        scope.tls_clienthello(cast(Any, data))
        assert data.ignore_connection is (sni != "www.snapchat.com")

    after = {n: value("schoolgate_passthrough_connections_total", reason=n) for n in names}
    assert after["not_catalogued"] == before["not_catalogued"] + 2
    assert after["no_sni"] == before["no_sni"]
    assert after["not_inspectable"] == before["not_inspectable"] + 1
    assert value("schoolgate_intercepted_connections_total") == intercepted + 1


def test_tls_without_a_server_name_is_refused_unless_the_school_passes_it(setup: Setup) -> None:
    """No SNI, no app: refused by default (a catalogued service reached by its address would
    otherwise pass unread); with tls_without_sni: pass it is passed and counted as no_sni."""
    scope = Scope(RuntimeRef(setup.runtime))
    assert scope.decide(None, "10.20.0.9") == "block"
    # Should a nameless hello reach tls_clienthello undecided, it is intercepted, never passed.
    data = fake_hello(None)
    scope.tls_clienthello(cast(Any, data))
    assert data.ignore_connection is False

    proxy = replace(setup.runtime.config.proxy, tls_without_sni="pass")
    setup.runtime.config = replace(setup.runtime.config, proxy=proxy)
    passed = value("schoolgate_passthrough_connections_total", reason="no_sni")
    assert scope.decide(None, "10.20.0.9") == "pass"
    data = fake_hello(None)
    scope.tls_clienthello(cast(Any, data))
    assert data.ignore_connection is True
    assert value("schoolgate_passthrough_connections_total", reason="no_sni") == passed + 1


def test_config_reload_results_are_counted() -> None:
    ok = value("schoolgate_config_reloads_total", result="success")
    bad = value("schoolgate_config_reloads_total", result="failure")
    metrics.config_loaded(False)
    assert value("schoolgate_config_last_reload_successful") == 0
    metrics.config_loaded(True)
    assert value("schoolgate_config_last_reload_successful") == 1
    assert value("schoolgate_config_reloads_total", result="failure") == bad + 1
    assert value("schoolgate_config_reloads_total", result="success") == ok + 1
    assert value("schoolgate_config_last_reload_success_timestamp_seconds") > 1.7e9
