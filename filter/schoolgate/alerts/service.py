"""The alert path of a running appliance: rule → outbox (durable) → sender (background thread).

`record(verdict)` is called where a decision is enforced, before the response goes out. It never
raises: if the outbox cannot be written (disk full, read-only), the failure is logged loudly and
counted, the alert is held in memory and written as soon as the disk takes it again, and the
decision stands.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Sequence
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

from schoolgate.alerts.model import AlertDetails, AlertRule
from schoolgate.alerts.outbox import AlertOutbox, Enqueued, OutboxError
from schoolgate.alerts.receivers import EmailReceiver, Receiver, WebhookReceiver
from schoolgate.alerts.sender import AlertSender, AttemptHook, RetryPolicy
from schoolgate.alerts.settings import AlertsConfig
from schoolgate.pipeline.verdict import Verdict

if TYPE_CHECKING:
    from schoolgate.config import Config

log = logging.getLogger("schoolgate.alerts")

MAX_UNWRITTEN = 1000  # alerts held in memory while the outbox cannot be written


def build_receivers(config: AlertsConfig, tz: ZoneInfo) -> list[Receiver]:
    link = config.console_url
    receivers: list[Receiver] = [
        WebhookReceiver(r, config.guidance, tz, console_url=link) for r in config.receivers
    ]
    if config.smtp is not None:
        receivers.append(EmailReceiver(config.smtp, config.guidance, tz, link))
    return receivers


def open_outbox(config: AlertsConfig) -> AlertOutbox:
    return AlertOutbox(config.outbox, config.channel_names, dedup_window_s=config.dedup_window_s)


def build_sender(
    config: AlertsConfig,
    outbox: AlertOutbox,
    tz: ZoneInfo,
    *,
    on_attempt: AttemptHook | None = None,
    receivers: Sequence[Receiver] | None = None,
) -> AlertSender:
    retry = RetryPolicy(config.retry_base_s, config.retry_max_s, config.dead_after_s)
    chosen = list(receivers) if receivers is not None else build_receivers(config, tz)
    return AlertSender(outbox, chosen, retry, on_attempt=on_attempt)


class AlertService:
    """Decides which verdicts alert, writes them durably, and runs their delivery."""

    def __init__(
        self,
        config: AlertsConfig,
        rule: AlertRule,
        outbox: AlertOutbox,
        sender: AlertSender,
        site: str,
    ) -> None:
        self.config = config
        self.rule = rule
        self.outbox = outbox
        self.sender = sender
        self.site = site
        self.write_failures = 0  # enqueue attempts that failed (each is logged at CRITICAL)
        self.dropped = 0  # alerts lost because the in-memory hold overflowed
        self._unwritten: deque[tuple[AlertDetails, str]] = deque()
        self._unwritten_lock = threading.Lock()
        self._closed = False
        outbox.on_enqueue(sender.wake)
        # Each delivery pass first retries alerts the outbox could not take when they happened.
        sender.before_pass = self.flush

    @classmethod
    def open(cls, config: Config, *, on_attempt: AttemptHook | None = None) -> AlertService:
        """Open the outbox and build the sender (not started) from the configuration."""
        alerts = config.alerts
        outbox = open_outbox(alerts)
        sender = build_sender(alerts, outbox, config.policy.timezone, on_attempt=on_attempt)
        rule = AlertRule(alerts, config.policy)
        return cls(alerts, rule, outbox, sender, config.proxy.school_name)

    @property
    def unwritten(self) -> int:
        """Alerts waiting in memory for the outbox to become writable again."""
        with self._unwritten_lock:
            return len(self._unwritten)

    def record(self, verdict: Verdict) -> Enqueued | None:
        """Enqueue an alert for this decision if policy wants one. Never raises."""
        try:
            if not self.rule.wants(verdict):
                return None
            details = AlertDetails.from_verdict(verdict, self.site)
        except Exception:
            log.exception("ALERT NOT CREATED for decision %s: internal error", verdict.id)
            self.write_failures += 1
            return None
        with self._unwritten_lock:
            if len(self._unwritten) >= MAX_UNWRITTEN:
                self._unwritten.popleft()
                self.dropped += 1
                log.critical("alert hold full: the oldest unwritten alert is lost")
            self._unwritten.append((details, verdict.id))
        return self.flush()

    def flush(self) -> Enqueued | None:
        """Write held alerts to the outbox, oldest first; stops at the first failure."""
        last: Enqueued | None = None
        with self._unwritten_lock:
            while self._unwritten:
                details, audit_id = self._unwritten[0]
                try:
                    last = self.outbox.enqueue(details, audit_id)
                except (OutboxError, OSError) as exc:
                    self.write_failures += 1
                    log.critical(
                        "ALERT NOT WRITTEN to the outbox %s (%s): decision %s from %s is held in "
                        "memory (%d waiting) and written when the disk recovers; the decision "
                        "stands. Fix the disk now: alerts held in memory are lost on restart.",
                        self.outbox.path,
                        exc,
                        audit_id,
                        details.device.label(),
                        len(self._unwritten),
                    )
                    return None
                self._unwritten.popleft()
        return last

    def start(self) -> None:
        """Start delivering in the background; warn when nobody would be told."""
        if not self.config.channel_names:
            log.warning(
                "no DSL alert receiver is configured (alerts.receivers / alerts.smtp): alerts "
                "are kept in the outbox %s (see `schoolgate alerts list`) but nobody is notified",
                self.outbox.path,
            )
        self.sender.start()

    def close(self) -> None:
        """Stop the sender, write what is held in memory, close the outbox; safe to call twice."""
        if self._closed:
            return
        self._closed = True
        self.sender.stop()
        self.flush()
        self.outbox.close()
