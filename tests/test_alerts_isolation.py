"""One receiver's slowness delays nobody else's alerts, and one attempt has a total deadline
(adversarial pass a35 F8/F9): a receiver that trickles its answer a byte at a time, or an
address that takes connections and never answers, on loopback and bounded in time."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from schoolgate.alerts.model import KIND_DECISION, Alert, AlertDetails
from schoolgate.alerts.outbox import PENDING, AlertOutbox
from schoolgate.alerts.receivers import TIMEOUT, EmailReceiver, WebhookReceiver
from schoolgate.alerts.sender import AlertSender, RetryPolicy
from schoolgate.alerts.settings import ReceiverConfig, SmtpConfig
from tests.support.alert_helpers import WebhookSink, make_verdict

TZ = ZoneInfo("Europe/London")
GUIDANCE = "Do not view or forward; follow procedure."
TRICKLE_FOR_S = 15.0  # the longest a trickle runs, whatever the client does


class Trickler:
    """A loopback server that answers every connection one byte per `every_s` (well inside
    any per-read timeout) for at most TRICKLE_FOR_S, then closes it."""

    def __init__(self, first: bytes, every_s: float = 0.1, *, speaks_first: bool = False) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self.listener.getsockname()[1]
        self._first = first
        self._speaks_first = speaks_first  # SMTP: the server greets before the client says a word
        self._every_s = every_s
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._accept, daemon=True)]
        self._threads[0].start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def _accept(self) -> None:
        self.listener.settimeout(0.1)
        while not self._stop.is_set():
            try:
                conn, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            thread = threading.Thread(target=self._trickle, args=(conn,), daemon=True)
            self._threads.append(thread)
            thread.start()

    def _trickle(self, conn: socket.socket) -> None:
        until = time.monotonic() + TRICKLE_FOR_S
        with conn:
            try:
                conn.settimeout(2.0)
                if not self._speaks_first:
                    conn.recv(65536)  # the request (enough of it)
                conn.sendall(self._first)
                while not self._stop.is_set() and time.monotonic() < until:
                    conn.sendall(b"a")
                    time.sleep(self._every_s)
            except OSError:  # the client cut it: what the deadline does
                return

    def close(self) -> None:
        self._stop.set()
        self.listener.close()
        for thread in self._threads:
            thread.join(2)


@pytest.fixture
def trickler() -> Iterator[Trickler]:
    server = Trickler(b"HTTP/1.1 200 OK\r\nX-Pad: ")
    yield server
    server.close()


@pytest.fixture
def blackhole() -> Iterator[int]:
    """A listening socket that never accepts: connections complete in the kernel's backlog,
    requests go in, and no answer ever comes."""
    with socket.create_server(("127.0.0.1", 0), backlog=64) as listener:
        yield listener.getsockname()[1]


@pytest.fixture
def sink() -> Iterator[WebhookSink]:
    receiver = WebhookSink().up()
    yield receiver
    receiver.stop()


def details(n: int) -> AlertDetails:
    return AlertDetails.from_verdict(make_verdict(sha256=f"{n:064x}"), "Test School")


def webhook(name: str, url: str, timeout_s: float) -> WebhookReceiver:
    config = ReceiverConfig(name=name, url=url, format="generic", secret=b"s", timeout_s=timeout_s)
    return WebhookReceiver(config, GUIDANCE, TZ)


def test_a_trickled_answer_is_cut_at_the_attempts_deadline_and_retried_later(
    trickler: Trickler, tmp_path: Path
) -> None:
    """Each byte comes well within the 1 s timeout; the attempt still ends at 1 s in all."""
    with AlertOutbox(tmp_path / "a.sqlite", ["slow"]) as outbox:
        alert_id = outbox.enqueue(details(1), "v1").alert_id
        sender = AlertSender(
            outbox, [webhook("slow", trickler.url, 1.0)], RetryPolicy(10, 900, 86_400)
        )
        started = time.monotonic()
        (result,) = sender.deliver_due()
        took = time.monotonic() - started
        alert = outbox.get(alert_id)
        next_due = outbox.next_due()
    assert took < 3.0, f"one attempt took {took:.1f} s against a 1 s deadline"
    assert result.attempt.outcome == TIMEOUT
    assert result.next_at is not None  # retried later, not dropped
    assert next_due is not None
    assert alert is not None
    assert alert.state == PENDING


def test_a_trickled_email_conversation_is_cut_at_the_deadline() -> None:
    server = Trickler(b"220 ", speaks_first=True)  # a greeting that never ends
    try:
        config = SmtpConfig(
            host="127.0.0.1", sender="a@b.example", to=("c@d.example",), port=server.port,
            security="none", timeout_s=1.0,
        )  # fmt: skip
        alert = Alert(id="e1", kind=KIND_DECISION, state=PENDING, dedup_key="k", details=details(2))
        started = time.monotonic()
        attempt = EmailReceiver(config, GUIDANCE, TZ).deliver(alert)
        took = time.monotonic() - started
    finally:
        server.close()
    assert took < 3.0, f"one email attempt took {took:.1f} s against a 1 s deadline"
    assert attempt.outcome == TIMEOUT


def test_slow_and_blackholed_receivers_do_not_delay_a_healthy_one(
    sink: WebhookSink, trickler: Trickler, blackhole: int, tmp_path: Path
) -> None:
    """Five alerts for three receivers; two of them hold every attempt for its whole 3 s.
    The healthy receiver has all five within a second or two, not after 5 x 6 s."""
    receivers = [
        webhook("trickle", trickler.url, 3.0),
        webhook("blackhole", f"http://127.0.0.1:{blackhole}/hook", 3.0),
        webhook("healthy", sink.url, 3.0),
    ]
    with AlertOutbox(tmp_path / "a.sqlite", [r.name for r in receivers]) as outbox:
        sender = AlertSender(outbox, receivers, RetryPolicy(10, 900, 86_400), poll_s=30)
        outbox.on_enqueue(sender.wake)
        sender.start()
        try:
            started = time.monotonic()
            ids = [outbox.enqueue(details(n), f"v{n}").alert_id for n in range(5)]
            arrived = sink.wait_for(5, timeout_s=2.5)
            took = time.monotonic() - started
        finally:
            sender.stop(timeout_s=8)
    assert sorted(d.alert_id for d in arrived) == sorted(ids), f"after {took:.1f} s"
    assert not sender.running
