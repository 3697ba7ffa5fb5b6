"""`schoolgate alerts test | list | retry` against a real receiver on 127.0.0.1."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from schoolgate.alerts import verify_signature
from schoolgate.alerts.model import AlertDetails
from schoolgate.alerts.outbox import DEAD, DELIVERED, AlertOutbox
from schoolgate.cli import main
from tests.support.alert_helpers import FakeClock, WebhookSink, make_verdict

SECRET = "cli-test-secret"


@pytest.fixture
def sink() -> Iterator[WebhookSink]:
    receiver = WebhookSink()
    yield receiver
    receiver.stop()


@pytest.fixture
def config(tmp_path: Path, data_dir: Path, sink: WebhookSink) -> Path:
    path = tmp_path / "site.yaml"
    path.write_text(
        "alerts:\n"
        "  receivers:\n"
        f"    - {{name: dsl, url: '{sink.url}', secret: {SECRET}, timeout_s: 2}}\n"
    )
    return path


def dead_alert(data_dir: Path) -> str:
    """An alert whose delivery failed for longer than dead_after_s (the clock is moved on)."""
    clock = FakeClock(start=2_000_000_000)
    details = AlertDetails.from_verdict(make_verdict(), "Test School")
    with AlertOutbox(data_dir / "alerts.sqlite", ["dsl"], clock=clock) as outbox:
        alert_id = outbox.enqueue(details, "verdict-1").alert_id
        (claim,) = outbox.claim(lease_s=10)
        clock.advance(4 * 86_400)
        outbox.failed(alert_id, claim.receiver, "connection_error", "refused", next_at=None)
        alert = outbox.get(alert_id)
    assert alert is not None
    assert alert.state == DEAD
    return alert_id


def test_alerts_test_sends_a_signed_test_alert(
    config: Path, sink: WebhookSink, data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sink.up()
    assert main(["alerts", "test", "--config", str(config)]) == 0
    (delivery,) = sink.wait_for(1)
    payload = delivery.json()
    assert payload["kind"] == "test"
    assert payload["title"] == "Test alert from schoolgate"
    assert payload["device"] == {"ip": None, "mac": None, "hostname": None, "vlan": None}
    headers = delivery.headers
    assert verify_signature(
        SECRET, headers["x-schoolgate-timestamp"], delivery.body, headers["x-schoolgate-signature"]
    )
    assert "dsl: delivered" in capsys.readouterr().out
    assert not (data_dir / "alerts.sqlite").exists()  # a test alert is not stored


def test_alerts_test_reports_a_receiver_that_is_down(
    config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["alerts", "test", "--config", str(config)]) == 2
    captured = capsys.readouterr()
    assert "dsl: connection_error" in captured.out
    assert "not delivered to dsl" in captured.err


def test_list_and_retry_re_drive_a_dead_alert(
    config: Path, sink: WebhookSink, data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    alert_id = dead_alert(data_dir)
    assert main(["alerts", "list", "--config", str(config), "--state", "dead"]) == 0
    out = capsys.readouterr().out
    assert alert_id in out
    assert "dead" in out
    assert "bank incident-2026" in out
    assert "last error: refused" in out

    # Receiver still down: the retry fails, and the alert is pending again (not lost).
    assert main(["alerts", "retry", "--config", str(config)]) == 2
    assert "1 alert(s) due now" in capsys.readouterr().out
    assert main(["alerts", "list", "--config", str(config), "--json"]) == 0
    (listed,) = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert listed["state"] == "pending"
    assert listed["attempts"] == 2

    sink.up()
    assert main(["alerts", "retry", "--config", str(config), alert_id]) == 0
    assert "1 of 1 deliveries succeeded" in capsys.readouterr().out
    assert [d.alert_id for d in sink.received] == [alert_id]
    with AlertOutbox(data_dir / "alerts.sqlite") as outbox:
        alert = outbox.get(alert_id)
    assert alert is not None
    assert alert.state == DELIVERED


def test_retry_of_an_unknown_id_is_an_error(
    config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["alerts", "retry", "--config", str(config), "f" * 32]) == 2
    assert "no alert with id" in capsys.readouterr().err
