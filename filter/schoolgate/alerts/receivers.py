"""Where alerts go: signed webhook POSTs (generic, Teams, Slack) and SMTP email.

`deliver` never raises: every failure becomes an `Attempt` with one outcome from a small fixed set
(`OUTCOMES`), which the sender uses to retry and metrics use as a label. Webhooks are posted with
`http.client` directly: no redirects are followed (a POST must not silently become a GET
elsewhere) and no proxy environment variables are honoured (alerts go where the config says).
"""

from __future__ import annotations

import http.client
import json
import logging
import smtplib
import ssl
import time
from collections import OrderedDict
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass
from typing import Protocol
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

from schoolgate.alerts.deadline import Deadline
from schoolgate.alerts.formats import PAYLOADS, email_message
from schoolgate.alerts.model import Alert
from schoolgate.alerts.settings import ReceiverConfig, SmtpConfig
from schoolgate.alerts.signing import (
    ALERT_ID_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    signature,
)
from schoolgate.version import __version__

log = logging.getLogger("schoolgate.alerts")

DELIVERED = "delivered"
HTTP_4XX = "http_4xx"  # any refusal that is not a server error (4xx, and 1xx/3xx not followed)
HTTP_5XX = "http_5xx"
TIMEOUT = "timeout"
CONNECTION_ERROR = "connection_error"  # refused, reset, DNS, TLS
OUTCOMES = (DELIVERED, HTTP_4XX, HTTP_5XX, TIMEOUT, CONNECTION_ERROR)
# Not this receiver's groups: its delivery is settled unsent, so the alert can finish.
NOT_ROUTED = "not_routed"

_MAX_RESPONSE_BYTES = 64 * 1024


@dataclass(frozen=True)
class Attempt:
    """What one delivery attempt came to."""

    outcome: str
    detail: str = ""
    retry_after_s: float | None = None  # the receiver asked us to wait (HTTP Retry-After)

    @property
    def delivered(self) -> bool:
        return self.outcome == DELIVERED


class Receiver(Protocol):
    name: str

    def deliver(self, alert: Alert) -> Attempt: ...


def routed(receiver: Receiver, alert: Alert) -> bool:
    """Whether `alert` is this receiver's: every alert, unless the receiver names policy groups
    (`groups:`), one school's where a gateway serves several. A device that matched no group
    (a hand-set address outside every school's subnets) is nobody's in particular: every
    receiver gets its alerts, rather than the default group's school alone."""
    groups: tuple[str, ...] = getattr(getattr(receiver, "config", None), "groups", ())
    return not groups or not alert.details.placed or alert.details.group in groups


@dataclass(frozen=True)
class SignedRequest:
    body: bytes
    headers: dict[str, str]


class WebhookReceiver:
    """POSTs the alert as JSON in the receiver's format, signed when a secret is configured."""

    def __init__(
        self,
        config: ReceiverConfig,
        guidance: str,
        tz: ZoneInfo,
        clock: Callable[[], float] = time.time,
        console_url: str | None = None,
    ) -> None:
        self.name = config.name
        self.config = config
        self._guidance = guidance
        self._console_url = console_url
        self._tz = tz
        self._clock = clock
        self._render = PAYLOADS[config.format]
        parts = urlsplit(config.url)
        self._https = parts.scheme == "https"
        self._host = parts.hostname or ""
        self._port = parts.port
        self._target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        self._tls: ssl.SSLContext | None = None
        if self._https:
            self._tls = ssl.create_default_context()
            if config.ca_file is not None:
                self._tls.load_verify_locations(cafile=str(config.ca_file))

    def request(self, alert: Alert) -> SignedRequest:
        """The exact bytes and headers one attempt sends (the timestamp is taken now)."""
        payload = self._render(alert, self._guidance, self._tz, self._console_url)
        body = json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
        timestamp = int(self._clock())
        headers = {
            "Content-Type": "application/json; charset=utf-8",
            "User-Agent": f"schoolgate/{__version__}",
            ALERT_ID_HEADER: alert.id,
            TIMESTAMP_HEADER: str(timestamp),
        }
        if self.config.secret is not None:
            headers[SIGNATURE_HEADER] = signature(self.config.secret, timestamp, body)
        return SignedRequest(body, headers)

    def deliver(self, alert: Alert) -> Attempt:
        try:
            signed = self.request(alert)
        except Exception as exc:  # a rendering bug must not stop the other alerts
            log.exception("alert %s could not be rendered for %s", alert.id, self.name)
            return Attempt(CONNECTION_ERROR, f"could not render: {type(exc).__name__}")
        connection: http.client.HTTPConnection
        if self._tls is not None:
            connection = http.client.HTTPSConnection(
                self._host, self._port, timeout=self.config.timeout_s, context=self._tls
            )
        else:
            connection = http.client.HTTPConnection(
                self._host, self._port, timeout=self.config.timeout_s
            )
        # timeout_s bounds the whole attempt (connect to last byte), not each read: a receiver
        # that trickles its answer must not hold its alerts, or the sender, for ever (a35 F8).
        try:
            with Deadline(self.config.timeout_s, lambda: connection.sock) as deadline:
                try:
                    connection.request(
                        "POST", self._target, body=signed.body, headers=signed.headers
                    )
                    response = connection.getresponse()
                    if deadline.expired:  # cut short: http.client takes a cut header as ended
                        return Attempt(TIMEOUT, f"no answer within {self.config.timeout_s:g} s")
                    status = response.status
                    retry_after = _retry_after(response.getheader("Retry-After"))
                    # The status is the answer: a body cut short (or trickled past the
                    # deadline) after it changes nothing.
                    with suppress(OSError, http.client.HTTPException):
                        response.read(_MAX_RESPONSE_BYTES)
                except (OSError, http.client.HTTPException) as exc:
                    if deadline.expired or isinstance(exc, TimeoutError):
                        return Attempt(TIMEOUT, f"no answer within {self.config.timeout_s:g} s")
                    return Attempt(CONNECTION_ERROR, f"{type(exc).__name__}: {exc}")
        finally:
            connection.close()
        if 200 <= status < 300:
            return Attempt(DELIVERED, f"HTTP {status}")
        if status >= 500:
            return Attempt(HTTP_5XX, f"HTTP {status}", retry_after)
        if 300 <= status < 400:
            return Attempt(
                HTTP_4XX, f"HTTP {status}: redirects are not followed; set the final URL"
            )
        return Attempt(HTTP_4XX, f"HTTP {status}", retry_after)


def _retry_after(value: str | None) -> float | None:
    """Retry-After in seconds (the HTTP-date form is rare for webhooks and ignored)."""
    if value is None:
        return None
    try:
        seconds = float(value.strip())
    except ValueError:
        return None
    return seconds if seconds >= 0 else None


_EMAIL_PENDING_MAX = 10_000  # alerts an email receiver remembers partial deliveries of


class EmailReceiver:
    """Sends the alert as a plain-text email to the DSL's address(es)."""

    def __init__(
        self, config: SmtpConfig, guidance: str, tz: ZoneInfo, console_url: str | None = None
    ) -> None:
        self.name = config.name
        self.config = config
        self._guidance = guidance
        self._console_url = console_url
        self._tz = tz
        # Per alert not yet delivered to every address: those that took it or refused it for
        # good. A retry goes to the others only (a41 F13: one greylisted address was dropped
        # for good while the alert read as delivered). Kept in memory: after a restart a retry
        # goes to every address again (at least once).
        self._done: OrderedDict[str, set[str]] = OrderedDict()

    def deliver(self, alert: Alert) -> Attempt:
        config = self.config
        done = self._done.get(alert.id, set())
        recipients = [address for address in config.to if address not in done]
        message = email_message(
            alert, self._guidance, self._tz, config.sender, config.to, self._console_url
        )
        context = ssl.create_default_context()
        client: smtplib.SMTP
        if config.security == "tls":
            client = smtplib.SMTP_SSL(timeout=config.timeout_s, context=context)
        else:
            client = smtplib.SMTP(timeout=config.timeout_s)
        # Not connected yet: the deadline bounds the whole conversation, not each read (a35 F8).
        deadline = Deadline(config.timeout_s, lambda: client.sock)
        try:
            with deadline, client:
                client.connect(config.host, config.port)
                if config.security == "starttls":
                    client.starttls(context=context)
                if config.username is not None and config.password is not None:
                    client.login(config.username, config.password)
                refused = client.send_message(message, to_addrs=recipients)
        except TimeoutError:
            return Attempt(TIMEOUT, f"SMTP server did not answer within {config.timeout_s:g} s")
        except smtplib.SMTPRecipientsRefused as exc:
            codes = [code for code, _ in exc.recipients.values()]
            return _smtp_refusal(min(codes) if codes else 550, "all recipients refused")
        except smtplib.SMTPResponseException as exc:
            if deadline.expired:
                return Attempt(TIMEOUT, f"SMTP server cut off after {config.timeout_s:g} s")
            error = exc.smtp_error
            text = error.decode("utf-8", "replace") if isinstance(error, bytes) else str(error)
            return _smtp_refusal(exc.smtp_code, text)
        except (OSError, smtplib.SMTPException) as exc:
            if deadline.expired:
                return Attempt(TIMEOUT, f"SMTP server cut off after {config.timeout_s:g} s")
            return Attempt(CONNECTION_ERROR, f"{type(exc).__name__}: {exc}")
        later = sorted(address for address, (code, _) in refused.items() if code < 500)
        done |= {address for address in recipients if address not in later}
        if refused:
            log.warning("alert %s: email refused for %s", alert.id, ", ".join(sorted(refused)))
        if later:
            self._done[alert.id] = done
            while len(self._done) > _EMAIL_PENDING_MAX:
                self._done.popitem(last=False)
            code, reply = refused[later[0]]
            words = reply.decode("utf-8", "replace")[:120]
            accepted = len(recipients) - len(refused)
            return Attempt(HTTP_4XX, f"SMTP {code} for {', '.join(later)} (tried again later; "
                           f"accepted by {accepted}): {words}")  # fmt: skip
        self._done.pop(alert.id, None)
        return Attempt(DELIVERED, f"accepted for {len(recipients) - len(refused)} recipient(s)")


def _smtp_refusal(code: int, text: str) -> Attempt:
    """SMTP reply classes map onto the same labels: 4xx (try later) and 5xx (refused)."""
    outcome = HTTP_5XX if code >= 500 else HTTP_4XX
    return Attempt(outcome, f"SMTP {code}: {text[:200]}")
