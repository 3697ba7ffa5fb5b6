"""The alert path of a running appliance: rule → outbox (durable) → sender (background thread).

`record(verdict)` is called where a decision is enforced, before the response goes out. It never
raises: if the outbox cannot be written (disk full, read-only), the failure is logged loudly and
counted, the alert is held in memory *and* written to the spool (a small file, beside the outbox
or elsewhere), written to the outbox as soon as it takes alerts again, and the decision stands. A
restart reads the spool back, so an alert the outbox refused is not lost with the process (a35 A9).
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Callable, Collection, Sequence
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

from schoolgate.alerts import relocation
from schoolgate.alerts.coverage import routing_notes
from schoolgate.alerts.model import Alert, AlertDetails, AlertRule
from schoolgate.alerts.outbox import AlertOutbox, Enqueued, OutboxError
from schoolgate.alerts.receivers import EmailReceiver, Receiver, WebhookReceiver
from schoolgate.alerts.sender import AlertSender, AttemptHook, RetryPolicy
from schoolgate.alerts.settings import AlertsConfig
from schoolgate.alerts.spool import AlertSpool, spool_paths
from schoolgate.pipeline.policy import Policy
from schoolgate.pipeline.verdict import InspectionContext, Verdict

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


def open_outbox(config: AlertsConfig, *, follow: bool = False) -> AlertOutbox:
    """The configured outbox; with `follow` (the appliance itself, at start and reload), with
    the undelivered alerts of the one used before if the configuration moved it
    (alerts.relocation). A move that fails is logged, never fatal. The command line never
    moves them: `alerts list` with an edited configuration took them from the outbox the
    running proxy delivers from (adversarial pass a43 F3)."""
    try:
        outbox = AlertOutbox(
            config.outbox, config.channel_names, dedup_window_s=config.dedup_window_s
        )
    except OutboxError as error:
        if not _damaged(error):
            raise
        # A damaged file stopped the whole appliance at start (a41 F11): no filtering, no
        # audit, no alerts. It is kept aside for IT (sqlite3's .recover may save its alerts).
        aside = config.outbox.with_name(f"{config.outbox.name}.damaged-{int(time.time())}")
        for suffix in ("", "-wal", "-shm"):
            with contextlib.suppress(FileNotFoundError):
                os.replace(f"{config.outbox}{suffix}", f"{aside}{suffix}")
        log.critical("ALERT OUTBOX DAMAGED (%s): moved aside to %s and a new one started; the "
                     "alerts it held are not sent (try `sqlite3 %s .recover`)", error, aside,
                     aside)  # fmt: skip
        outbox = AlertOutbox(
            config.outbox, config.channel_names, dedup_window_s=config.dedup_window_s
        )
    if follow and config.data_dir is not None:
        try:
            relocation.follow(config.outbox, config.data_dir)
        except relocation.MoveError as exc:
            log.critical("ALERTS STRANDED: %s", exc)
    return outbox


def policy_groups(config: Config) -> frozenset[str]:
    return frozenset(g.name for g in config.policy.groups) | {config.policy.default_group}


def placer(config: Config) -> Callable[[Alert], str | None]:
    """The group an alert's device is in under this configuration's policy (None: no group's
    addresses, devices or VLANs are its)."""
    policy = Policy(config.policy)

    def place(alert: Alert) -> str | None:
        device = alert.details.device
        group = policy.matched_group(
            InspectionContext(client_ip=device.ip, mac=device.mac, vlan=device.vlan)
        )
        return group.name if group is not None else None

    return place


def _damaged(error: OutboxError) -> bool:
    cause = error.__cause__
    return isinstance(cause, sqlite3.DatabaseError) and any(
        words in str(cause) for words in ("not a database", "malformed")
    )


def build_sender(
    config: AlertsConfig,
    outbox: AlertOutbox,
    tz: ZoneInfo,
    *,
    on_attempt: AttemptHook | None = None,
    receivers: Sequence[Receiver] | None = None,
    groups: Collection[str] | None = None,
    place: Callable[[Alert], str | None] | None = None,
) -> AlertSender:
    """`groups`: the policy's group names; `place`: the group an alert's device is in today
    (an alert of a group the policy no longer has is routed by it)."""
    retry = RetryPolicy(config.retry_base_s, config.retry_max_s, config.dead_after_s)
    chosen = list(receivers) if receivers is not None else build_receivers(config, tz)
    return AlertSender(outbox, chosen, retry, on_attempt=on_attempt, groups=groups, place=place)


class AlertService:
    """Decides which verdicts alert, writes them durably, and runs their delivery."""

    def __init__(
        self,
        config: AlertsConfig,
        rule: AlertRule,
        outbox: AlertOutbox,
        sender: AlertSender,
        site: str,
        spool: AlertSpool | None = None,
    ) -> None:
        self.config = config
        self.rule = rule
        self.outbox = outbox
        self.sender = sender
        self.site = site
        self.write_failures = 0  # enqueue attempts that failed (each is logged at CRITICAL)
        self.dropped = 0  # alerts lost because the in-memory hold overflowed, unspooled
        self.spooled = 0  # alerts the outbox refused that went to the spool file
        self.memory_only = 0  # ...that no spool took either: lost if the process stops
        self.spool = spool if spool is not None else AlertSpool(spool_paths(config.outbox))
        # (details, decision id, spooled): alerts the outbox has not taken yet
        self._unwritten: deque[tuple[AlertDetails, str, bool]] = deque()
        self._unwritten_lock = threading.Lock()
        self._closed = False
        outbox.on_enqueue(sender.wake)
        # Each housekeeping pass retries alerts the outbox could not take when they happened.
        sender.before_pass = self.flush
        # What the outbox refused before a restart (the spool) is written now, or held again.
        with self._unwritten_lock:
            self._unspool()

    @classmethod
    def open(cls, config: Config, *, on_attempt: AttemptHook | None = None) -> AlertService:
        """Open the outbox and build the sender (not started) from the configuration."""
        alerts = config.alerts
        outbox = open_outbox(alerts, follow=True)
        sender = build_sender(alerts, outbox, config.policy.timezone, on_attempt=on_attempt,
                              groups=policy_groups(config), place=placer(config))  # fmt: skip
        rule = AlertRule(alerts, config.policy)
        for note in routing_notes(alerts, config.policy):  # at every start and reload
            log.warning("alert routing: %s", note)
        # The audit log's folder may be another filesystem than the outbox's.
        spool = AlertSpool(spool_paths(alerts.outbox, config.audit.path.parent))
        return cls(alerts, rule, outbox, sender, config.proxy.school_name, spool)

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
                _, lost, spooled = self._unwritten.popleft()
                if not spooled:  # a spooled one is still written from the spool
                    self.dropped += 1
                    log.critical("alert hold full: the alert for decision %s is lost", lost)
            self._unwritten.append((details, verdict.id, False))
        return self.flush()

    def held(self) -> tuple[int, int]:
        """Alerts the outbox has not taken yet, and how many of them no spool took either."""
        with self._unwritten_lock:
            return len(self._unwritten), sum(1 for *_, spooled in self._unwritten if not spooled)

    def flush(self) -> Enqueued | None:
        """Write held alerts to the outbox, oldest first; at the first failure, spool what is
        held and stop. Once all are written, the spool is read back too."""
        last: Enqueued | None = None
        with self._unwritten_lock:
            while self._unwritten:
                details, audit_id, spooled = self._unwritten[0]
                try:
                    # Spooled: another service of this process (a reload) may have read the
                    # spool back already.
                    if not (spooled and self.outbox.has_decision(audit_id)):
                        last = self.outbox.enqueue(details, audit_id)
                except (OutboxError, OSError) as exc:
                    self.write_failures += 1
                    log.critical(
                        "ALERT NOT WRITTEN to the outbox %s (%s): decision %s from %s is held "
                        "(%d waiting) and written when the disk recovers; the decision stands. "
                        "Fix the disk now.",
                        self.outbox.path,
                        exc,
                        audit_id,
                        details.device.label(),
                        len(self._unwritten),
                    )
                    self._spool_held()
                    return None
                self._unwritten.popleft()
            if self.spool:
                self._unspool()
        return last

    def _spool_held(self) -> None:
        """Write every held alert not yet spooled to the spool (lock held)."""
        for index, (details, audit_id, spooled) in enumerate(self._unwritten):
            if spooled:
                continue
            where = self.spool.add(details, audit_id)
            if where is None:
                self.memory_only += 1
                log.critical(
                    "ALERT HELD ONLY IN MEMORY: decision %s could be written neither to the "
                    "outbox nor to any spool (%s); it is LOST if schoolgate stops before the disk "
                    "recovers. Free space now. The audit log has the decision unless it is "
                    "on the same full disk (then an AUDIT RECORD NOT WRITTEN line says so; a46 "
                    "O2).",
                    audit_id,
                    ", ".join(str(p) for p in self.spool.paths),
                )
                continue
            self.spooled += 1
            self._unwritten[index] = (details, audit_id, True)
            log.critical("alert for decision %s spooled to %s until the outbox takes it",
                         audit_id, where)  # fmt: skip

    def _unspool(self) -> None:
        """Read the spool into the outbox (what is there already is skipped), then remove it;
        on a failure, hold the rest in memory (marked spooled) and keep the spool (lock held)."""
        with self.spool.locked():
            if not self.spool:
                return
            held = {audit_id for _, audit_id, _ in self._unwritten}
            waiting = [(d, a) for d, a in self.spool if a not in held]
            written = 0
            for index, (details, audit_id) in enumerate(waiting):
                try:
                    if not self.outbox.has_decision(audit_id):
                        self.outbox.enqueue(details, audit_id)
                        written += 1
                except (OutboxError, OSError) as exc:
                    left = len(waiting) - index
                    log.critical("the spooled alerts are not written to the outbox yet (%s): "
                                 "%d held until it takes them", exc, left)  # fmt: skip
                    self._unwritten.extend((d, a, True) for d, a in waiting[index:])
                    return
            if not self._unwritten:
                self.spool.clear()
        if written:
            log.warning("%d alert(s) written from the spool to the outbox", written)

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
        with self._unwritten_lock:
            lost = [audit_id for _, audit_id, spooled in self._unwritten if not spooled]
        if lost:
            log.critical("ALERTS LOST at exit, held only in memory: decisions %s (see the audit "
                         "log)", ", ".join(lost))  # fmt: skip
        self.outbox.close()
