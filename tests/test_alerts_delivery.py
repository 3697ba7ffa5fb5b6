"""Delivery to a real webhook receiver on 127.0.0.1: signatures, outages, errors, the thread."""

from __future__ import annotations

import hashlib
import hmac
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from schoolgate.alerts import verify_signature
from schoolgate.alerts.model import Alert, AlertDetails
from schoolgate.alerts.outbox import DELIVERED, AlertOutbox
from schoolgate.alerts.receivers import (
    CONNECTION_ERROR,
    HTTP_4XX,
    HTTP_5XX,
    TIMEOUT,
    WebhookReceiver,
)
from schoolgate.alerts.receivers import DELIVERED as OK
from schoolgate.alerts.sender import AlertSender, RetryPolicy
from schoolgate.alerts.settings import ReceiverConfig
from tests.support.alert_helpers import FakeClock, WebhookSink, make_verdict

SECRET = b"test-secret-\x00\xff-not-ascii"
TZ = ZoneInfo("Europe/London")


@pytest.fixture
def sink() -> Iterator[WebhookSink]:
    receiver = WebhookSink()
    yield receiver
    receiver.stop()


def details(n: int = 0) -> AlertDetails:
    verdict = make_verdict(sha256=f"{n:064x}")
    return AlertDetails.from_verdict(verdict, "Test School")


def receiver_for(url: str, *, timeout_s: float = 5.0, fmt: str = "generic") -> WebhookReceiver:
    config = ReceiverConfig(name="dsl", url=url, format=fmt, secret=SECRET, timeout_s=timeout_s)
    return WebhookReceiver(config, "Do not view or forward; follow procedure.", TZ)


def sender_for(outbox: AlertOutbox, receiver: WebhookReceiver, **kwargs: object) -> AlertSender:
    return AlertSender(outbox, [receiver], RetryPolicy(10, 900, 86_400), **kwargs)  # type: ignore[arg-type]


def test_delivery_is_signed_and_verifiable(sink: WebhookSink, tmp_path: Path) -> None:
    sink.up()
    with AlertOutbox(tmp_path / "a.sqlite", ["dsl"]) as outbox:
        enqueued = outbox.enqueue(details(), "verdict-1")
        results = sender_for(outbox, receiver_for(sink.url)).deliver_due()
    assert [r.attempt.outcome for r in results] == [OK]
    (delivery,) = sink.wait_for(1)
    timestamp = delivery.headers["x-schoolgate-timestamp"]
    header = delivery.headers["x-schoolgate-signature"]
    # The package helper...
    assert verify_signature(SECRET, timestamp, delivery.body, header)
    # ...and an independent computation of the documented recipe agree.
    expected = hmac.new(SECRET, timestamp.encode() + b"." + delivery.body, hashlib.sha256)
    assert header == "v1=" + expected.hexdigest()
    assert abs(int(timestamp) - time.time()) < 60
    # A changed body, another secret, or an old timestamp do not verify.
    assert not verify_signature(SECRET, timestamp, delivery.body + b" ", header)
    assert not verify_signature(b"other", timestamp, delivery.body, header)
    assert not verify_signature(
        SECRET, timestamp, delivery.body, header, max_skew_s=300, now=int(timestamp) + 301
    )
    assert delivery.alert_id == enqueued.alert_id
    assert delivery.json()["alert_id"] == enqueued.alert_id
    assert delivery.json()["audit_ids"] == ["verdict-1"]
    assert delivery.headers["content-type"].startswith("application/json")


def test_receiver_down_then_up_gets_every_alert_exactly_once(
    sink: WebhookSink, tmp_path: Path
) -> None:
    clock = FakeClock()
    outcomes: list[tuple[str, str]] = []
    total = 12
    with AlertOutbox(tmp_path / "a.sqlite", ["dsl"], clock=clock) as outbox:
        sender = sender_for(
            outbox,
            receiver_for(sink.url),
            rng=lambda: 0.5,
            on_attempt=lambda name, outcome: outcomes.append((name, outcome)),
        )
        ids = {outbox.enqueue(details(n), f"v{n}").alert_id for n in range(total)}
        # Phase 1: the receiver is down for a simulated hour of retries.
        for _ in range(200):
            sender.deliver_due()
            clock.advance(30)
            if clock.now > 1_800_000_000 + 3600:
                break
        assert sink.received == []
        assert outbox.stats().pending == total
        failures = len(outcomes)
        assert failures > total
        assert set(outcomes) == {("dsl", CONNECTION_ERROR)}
        # Phase 2: it comes up; keep passing time until everything is delivered, and beyond.
        sink.up()
        for _ in range(200):
            sender.deliver_due()
            clock.advance(30)
        states = {a.state for a in outbox.list(limit=100)}
    received = sink.received
    assert len(received) == total
    assert {d.alert_id for d in received} == ids  # each id once: nothing lost, no duplicates
    assert states == {DELIVERED}
    assert outcomes[failures:] == [("dsl", OK)] * total


def test_http_errors_and_timeouts_are_classified_and_retried(
    sink: WebhookSink, tmp_path: Path
) -> None:
    sink.up()
    sink.reply_with(500, 404)
    clock = FakeClock()
    outcomes: list[str] = []
    with AlertOutbox(tmp_path / "a.sqlite", ["dsl"], clock=clock) as outbox:
        sender = sender_for(
            outbox,
            receiver_for(sink.url, timeout_s=0.3),
            rng=lambda: 0.0,
            on_attempt=lambda _name, outcome: outcomes.append(outcome),
        )
        alert_id = outbox.enqueue(details(), "v1").alert_id
        for _ in range(3):
            sender.deliver_due()
            clock.advance(100)
        alert = outbox.get(alert_id)
    assert outcomes == [HTTP_5XX, HTTP_4XX, OK]
    assert alert is not None
    assert alert.state == DELIVERED
    assert alert.attempts == 2
    assert [d.alert_id for d in sink.received] == [alert_id]

    sink.state.delay_s = 1.0
    attempt = receiver_for(sink.url, timeout_s=0.2).deliver(alert)
    assert attempt.outcome == TIMEOUT


def test_retry_after_is_honoured_up_to_the_cap(sink: WebhookSink, tmp_path: Path) -> None:
    sink.up()
    sink.reply_with(503)
    sink.state.headers["Retry-After"] = "120"
    clock = FakeClock()
    with AlertOutbox(tmp_path / "a.sqlite", ["dsl"], clock=clock) as outbox:
        outbox.enqueue(details(), "v1")
        (result,) = sender_for(outbox, receiver_for(sink.url), rng=lambda: 0.0).deliver_due()
    assert result.attempt.outcome == HTTP_5XX
    assert result.next_at == clock.now + 120  # not the 5 s the backoff alone would give


def test_connection_failures_are_outcomes_not_exceptions(tmp_path: Path) -> None:
    # A listener that accepts and closes at once (a crashed receiver), and a refused port.
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]

    def slam() -> None:
        for _ in range(3):
            try:
                conn, _ = server.accept()
            except OSError:
                return
            conn.close()

    threading.Thread(target=slam, daemon=True).start()
    with server:
        alert = _alert(tmp_path)
        assert receiver_for(f"http://127.0.0.1:{port}/hook").deliver(alert).outcome == (
            CONNECTION_ERROR
        )
        # TLS to a peer that hangs up mid-handshake.
        assert receiver_for(f"https://127.0.0.1:{port}/hook").deliver(alert).outcome == (
            CONNECTION_ERROR
        )
    with socket.socket() as reserved:
        reserved.bind(("127.0.0.1", 0))  # bound, never listening: refused
        refused = receiver_for(f"http://127.0.0.1:{reserved.getsockname()[1]}/hook")
        assert refused.deliver(alert).outcome == CONNECTION_ERROR


def _alert(tmp_path: Path) -> Alert:
    with AlertOutbox(tmp_path / "one.sqlite", ["dsl"]) as outbox:
        alert = outbox.get(outbox.enqueue(details(), "v1").alert_id)
    assert alert is not None
    return alert


def test_a_failing_attempt_hook_never_stops_delivery(sink: WebhookSink, tmp_path: Path) -> None:
    sink.up()

    def broken_metrics(_name: str, _outcome: str) -> None:
        raise RuntimeError("metrics bug")

    with AlertOutbox(tmp_path / "a.sqlite", ["dsl"]) as outbox:
        outbox.enqueue(details(), "v1")
        results = sender_for(
            outbox, receiver_for(sink.url), on_attempt=broken_metrics
        ).deliver_due()
    assert [r.attempt.outcome for r in results] == [OK]
    assert len(sink.received) == 1


def test_background_sender_delivers_when_woken_and_after_an_outage(
    sink: WebhookSink, tmp_path: Path
) -> None:
    with AlertOutbox(tmp_path / "a.sqlite", ["dsl"]) as outbox:
        sender = AlertSender(
            outbox,
            [receiver_for(sink.url, timeout_s=1)],
            RetryPolicy(base_s=0.05, max_s=0.2, dead_after_s=3600),
            poll_s=30,  # longer than the test: only wake-ups and retry times drive it
        )
        outbox.on_enqueue(sender.wake)
        sender.start()
        try:
            first = outbox.enqueue(details(1), "v1").alert_id
            time.sleep(0.5)  # a few refused attempts while the receiver is down
            assert outbox.stats().pending == 1
            sink.up()
            assert [d.alert_id for d in sink.wait_for(1, timeout_s=20)] == [first]
            second = outbox.enqueue(details(2), "v2").alert_id
            arrived = sink.wait_for(2, timeout_s=20)
        finally:
            sender.stop()
    assert not sender.running
    assert [d.alert_id for d in arrived] == [first, second]
