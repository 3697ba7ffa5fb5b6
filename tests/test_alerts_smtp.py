"""Email alerts through a real SMTP server (aiosmtpd) on 127.0.0.1."""

from __future__ import annotations

import email
import email.policy
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller

from schoolgate.alerts.receivers import CONNECTION_ERROR, DELIVERED, HTTP_4XX, HTTP_5XX
from schoolgate.alerts.service import AlertService
from schoolgate.config import Config, parse_config
from tests.support.alert_helpers import make_verdict
from tests.support.proxy_harness import free_port


@dataclass
class Mailbox:
    """An aiosmtpd handler: keeps what it accepts, refuses recipients with a scripted reply."""

    messages: list[tuple[str, list[str], bytes]] = field(default_factory=list)
    rcpt_reply: str | None = None
    refuse: dict[str, str] = field(default_factory=dict)  # address -> reply, for that address

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, options: Any
    ) -> str:
        if self.rcpt_reply:
            return self.rcpt_reply
        if address in self.refuse:
            return self.refuse[address]
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append((envelope.mail_from, list(envelope.rcpt_tos), envelope.content))
        return "250 Message accepted"


@pytest.fixture
def smtp_server() -> Iterator[tuple[Mailbox, int]]:
    mailbox = Mailbox()
    port = free_port()
    controller = Controller(mailbox, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield mailbox, port
    finally:
        controller.stop()


def smtp_config(data_dir: Path, port: int) -> Config:
    return parse_config(
        f"""
alerts:
  smtp:
    host: 127.0.0.1
    port: {port}
    security: none
    from: schoolgate@school.example
    to: [dsl@school.example, deputy-dsl@school.example]
    timeout_s: 5
  retry_base_s: 1
""",
        "test.yaml",
    )


def test_alert_email_reaches_the_dsl(data_dir: Path, smtp_server: tuple[Mailbox, int]) -> None:
    mailbox, port = smtp_server
    service = AlertService.open(smtp_config(data_dir, port))
    try:
        verdict = make_verdict()
        enqueued = service.record(verdict)
        assert enqueued is not None
        results = service.sender.deliver_due()
    finally:
        service.close()
    assert [(r.receiver, r.attempt.outcome) for r in results] == [("email", DELIVERED)]
    ((sender, recipients, raw),) = mailbox.messages
    assert sender == "schoolgate@school.example"
    assert recipients == ["dsl@school.example", "deputy-dsl@school.example"]
    message = email.message_from_bytes(raw, policy=email.policy.default)
    assert message["X-Schoolgate-Alert-Id"] == enqueued.alert_id
    assert message["Subject"].strip().startswith("[schoolgate] Blocked:")
    assert not message.is_multipart()  # no attachment, no HTML part
    body = message.get_content()
    assert "Do not open, view, copy" in body
    assert "incident-2026" in body
    assert "pupil-laptop-7" in body
    assert verdict.id in body
    assert "://" not in body


@pytest.mark.parametrize(
    ("reply", "outcome"),
    [("451 4.3.0 mailbox busy, try later", HTTP_4XX), ("550 5.1.1 no such user", HTTP_5XX)],
)
def test_refusals_are_classified_and_kept_for_retry(
    data_dir: Path, smtp_server: tuple[Mailbox, int], reply: str, outcome: str
) -> None:
    mailbox, port = smtp_server
    mailbox.rcpt_reply = reply
    service = AlertService.open(smtp_config(data_dir, port))
    try:
        service.record(make_verdict())
        (result,) = service.sender.deliver_due()
        stats = service.outbox.stats()
    finally:
        service.close()
    assert result.attempt.outcome == outcome
    assert result.next_at is not None  # retried, not dropped
    assert stats.pending == 1
    assert mailbox.messages == []


def test_no_smtp_server_is_a_connection_error(data_dir: Path) -> None:
    service = AlertService.open(smtp_config(data_dir, free_port()))
    try:
        service.record(make_verdict())
        (result,) = service.sender.deliver_due()
    finally:
        service.close()
    assert result.attempt.outcome == CONNECTION_ERROR


def test_an_address_refused_for_now_gets_the_alert_on_a_retry_and_only_it(
    data_dir: Path, smtp_server: tuple[Mailbox, int]
) -> None:
    """a41 F13: the deputy's address greylisted (450) while the DSL's took the email: the alert
    read as delivered and the deputy never got it. It is retried for that address alone."""
    mailbox, port = smtp_server
    mailbox.refuse["deputy-dsl@school.example"] = "450 4.2.0 greylisted, try again later"
    service = AlertService.open(smtp_config(data_dir, port))
    try:
        alert_id = service.record(make_verdict()).alert_id  # type: ignore[union-attr]
        (first,) = service.sender.deliver_due()
        assert first.attempt.outcome == HTTP_4XX
        assert first.next_at is not None
        mailbox.refuse.clear()
        service.outbox.retry([alert_id])
        (second,) = service.sender.deliver_due()
        alert = service.outbox.get(alert_id)
    finally:
        service.close()
    assert second.attempt.outcome == DELIVERED
    assert [recipients for _, recipients, _ in mailbox.messages] == [
        ["dsl@school.example"],
        ["deputy-dsl@school.example"],
    ]
    assert alert is not None
    assert alert.state == "delivered"


def test_an_address_refused_for_good_does_not_hold_the_others_back(
    data_dir: Path, smtp_server: tuple[Mailbox, int]
) -> None:
    mailbox, port = smtp_server
    mailbox.refuse["deputy-dsl@school.example"] = "550 5.1.1 no such user"
    service = AlertService.open(smtp_config(data_dir, port))
    try:
        service.record(make_verdict())
        (result,) = service.sender.deliver_due()
    finally:
        service.close()
    assert result.attempt.outcome == DELIVERED  # logged; retrying cannot help
    assert [recipients for _, recipients, _ in mailbox.messages] == [["dsl@school.example"]]
