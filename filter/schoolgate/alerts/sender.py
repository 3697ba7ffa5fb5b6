"""The sender: takes due deliveries from the outbox, posts them, and schedules retries.

Retries back off exponentially (base, doubling, capped) with jitter, for as long as
`dead_after_s` allows counted from the alert's creation (or its last manual retry); after that
the delivery is dead-lettered, logged loudly, and shown by `schoolgate alerts list --state dead`
until `schoolgate alerts retry` re-drives it, or the receiver answers again. Runs in the
background in `schoolgate run`, or one pass at a time (`deliver_due`) from the command line.

In the background every receiver has its own worker thread and claims only its own deliveries,
so a receiver that is slow, trickles its answers or swallows connections (a blackholed address)
delays nobody else's alerts (adversarial pass a35 F8/F9); one more thread does the housekeeping
(`before_pass`: writing alerts the disk refused when they happened).
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, replace

from schoolgate.alerts.model import Alert
from schoolgate.alerts.outbox import DEAD, AlertOutbox, Claim
from schoolgate.alerts.receivers import NOT_ROUTED, Attempt, Receiver, routed

log = logging.getLogger("schoolgate.alerts")

# Called as on_attempt(receiver_name, outcome) after every attempt; outcome is one of
# receivers.OUTCOMES. The seam for metrics.
AttemptHook = Callable[[str, str], None]

REDRIVE_MAX = 5_000  # dead letters re-driven at once when a receiver answers again


@dataclass(frozen=True)
class RetryPolicy:
    base_s: float = 10.0
    max_s: float = 900.0
    dead_after_s: float = 259_200.0

    def delay(self, failures: int, jitter: float) -> float:
        """Seconds to wait after the `failures`-th failure; `jitter` in [0, 1).

        "Equal jitter": half the exponential step is fixed and half random, so receivers coming
        back up are not hit by every appliance at once, and no retry is ever immediate.
        """
        step = min(self.max_s, self.base_s * 2.0 ** min(max(failures, 1) - 1, 60))
        return step / 2 + jitter * step / 2


@dataclass(frozen=True)
class AttemptResult:
    alert_id: str
    receiver: str
    attempt: Attempt
    next_at: float | None  # None: delivered or dead
    dead: bool = False


class AlertSender:
    """Delivers due alerts from one outbox to its receivers."""

    def __init__(
        self,
        outbox: AlertOutbox,
        receivers: Sequence[Receiver],
        retry: RetryPolicy,
        *,
        on_attempt: AttemptHook | None = None,
        rng: Callable[[], float] = random.random,
        batch: int = 50,
        poll_s: float = 5.0,
        before_pass: Callable[[], object] | None = None,
        groups: Collection[str] | None = None,
        place: Callable[[Alert], str | None] | None = None,
    ) -> None:
        names = [r.name for r in receivers]
        if sorted(names) != sorted(outbox.channels):
            raise ValueError(f"receivers {names} do not match the outbox's {outbox.channels}")
        self.outbox = outbox
        self.receivers = {r.name: r for r in receivers}
        self.retry = retry
        self.on_attempt = on_attempt
        self._rng = rng
        self._batch = batch
        self._poll_s = poll_s
        self.before_pass = before_pass
        # The policy's groups now: an alert of a group renamed or removed since is nobody's in
        # particular, and goes to every receiver (as one of a device that matched no group).
        self.groups = frozenset(groups) if groups is not None else None
        self.place = place  # the group an alert's device is in under today's policy (or None)
        timeouts = [getattr(getattr(r, "config", None), "timeout_s", 30.0) for r in receivers]
        # Long enough that a live sender always finishes its attempt first; short enough that a
        # killed sender's claims come due again soon after a restart.
        self.lease_s = 2 * max(timeouts, default=30.0) + 5.0
        self._wakes = {name: threading.Event() for name in ["", *self.receivers]}
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []
        # Receivers that answered since their last failure (or since this sender started), and
        # whose dead letters were therefore re-driven (_redrive).
        self._answering: set[str] = set()

    # -- one pass ------------------------------------------------------------------------------

    def deliver_due(self, max_rounds: int = 100) -> list[AttemptResult]:
        """Attempt every delivery due now (in batches, receiver by receiver) and record them."""
        results: list[AttemptResult] = []
        for name in self.receivers:
            results.extend(self.deliver_due_to(name, max_rounds))
        return results

    def deliver_due_to(self, name: str, max_rounds: int = 100) -> list[AttemptResult]:
        """One receiver's pass: what it has not got yet by today's groups, then what is due."""
        self.reroute(name)
        results: list[AttemptResult] = []
        for _ in range(max_rounds):
            claims = self.outbox.claim(self.lease_s, self._batch, receivers=(name,))
            if not claims:
                break
            for claim in claims:
                if self._stopping.is_set():  # the rest come due again when their lease ends
                    return results
                # A slow receiver's batch can outlive a lease: past half of it, the claim is
                # renewed, and one that lapsed may be another sender's now (`alerts retry` in
                # another process), which sends it; an attempt fits in half a lease.
                fresh = self.outbox.clock() <= claim.lease_until - self.lease_s / 2
                kept = claim if fresh else self.outbox.renew(claim, self.lease_s)
                if kept is not None:
                    results.append(self._attempt(kept))
        return results

    def wanted_by(self, alert: Alert) -> list[str]:
        """The receivers whose groups take `alert` now."""
        return [name for name, r in self.receivers.items() if self._routed(r, alert)]

    def _routed(self, receiver: Receiver, alert: Alert) -> bool:
        """`routed`; an alert of a group the policy no longer has is routed by the group its
        device is in today, and goes to every receiver where it is in none. Renamed (north-pupils
        to north, the DSL's `groups` with it), its pending alerts were settled unsent for the
        school's DSL while the trust lead had them (adversarial pass a41 F2); sent to every
        receiver, they also reached the other school's DSL (a43 F9)."""
        if self.groups is not None and alert.details.group not in self.groups:
            today = self.place(alert) if self.place is not None else None
            if today is None:
                return True
            alert = replace(alert, details=replace(alert.details, group=today))
        return routed(receiver, alert)

    def reroute(self, name: str) -> int:
        """Re-open this receiver's deliveries that were settled unsent ("not routed") for alerts
        still pending whose group it takes now: a reload moved the group to it after it was
        asked (adversarial pass a35 F4), and it gets the alert once, like any other."""
        receiver = self.receivers[name]
        return self.outbox.reroute(name, lambda alert: self._routed(receiver, alert))

    def _taken(self, alert: Alert) -> bool:
        """Whether some receiver's groups take the alert. One that none takes (its group left
        every receiver's list in a reload while it waited: adversarial pass a28 AL7) goes to
        every receiver rather than to nobody."""
        if any(self._routed(r, alert) for r in self.receivers.values()):
            return True
        log.warning("alert %s is of group %r, which no receiver takes now: sent to every "
                    "receiver", alert.id, alert.details.group)  # fmt: skip
        return False

    def _attempt(self, claim: Claim) -> AttemptResult:
        receiver = self.receivers[claim.receiver]
        alert_id = claim.alert.id
        # Settling a delivery re-asks every receiver that takes the alert now and was left out
        # by the groups it had before a reload: each copy is tracked per receiver (a35 F4).
        wanted = self.wanted_by(claim.alert)
        if not self._routed(receiver, claim.alert) and self._taken(claim.alert):
            self.outbox.delivered(alert_id, claim.receiver, NOT_ROUTED, wanted=wanted)
            return AttemptResult(alert_id, claim.receiver, Attempt(NOT_ROUTED, "not routed"), None)
        attempt = receiver.deliver(claim.alert)
        self._notify(claim.receiver, attempt.outcome)
        if attempt.delivered:
            self.outbox.delivered(alert_id, claim.receiver, attempt.outcome, wanted=wanted)
            log.info("alert %s delivered to %s", alert_id, claim.receiver)
            self._redrive(claim.receiver)
            return AttemptResult(alert_id, claim.receiver, attempt, None)
        self._answering.discard(claim.receiver)
        now = self.outbox.clock()
        failures = claim.attempts + 1
        if now - claim.retry_from >= self.retry.dead_after_s:
            self.outbox.failed(
                alert_id, claim.receiver, attempt.outcome, attempt.detail, next_at=None,
                wanted=wanted,
            )  # fmt: skip
            log.error(
                "alert %s DEAD-LETTERED for %s after %d attempts over %.0f s (last: %s %s); see "
                "`schoolgate alerts list --state dead`, re-drive with `schoolgate alerts retry`",
                alert_id,
                claim.receiver,
                failures,
                now - claim.retry_from,
                attempt.outcome,
                attempt.detail,
            )
            return AttemptResult(alert_id, claim.receiver, attempt, None, dead=True)
        delay = self.retry.delay(failures, self._rng())
        if attempt.retry_after_s is not None:
            delay = max(delay, min(attempt.retry_after_s, self.retry.max_s))
        next_at = now + delay
        self.outbox.failed(
            alert_id, claim.receiver, attempt.outcome, attempt.detail, next_at=next_at
        )
        log.warning(
            "alert %s not delivered to %s (%s: %s); attempt %d, next in %.1f s",
            alert_id,
            claim.receiver,
            attempt.outcome,
            attempt.detail,
            failures,
            delay,
        )
        return AttemptResult(alert_id, claim.receiver, attempt, next_at)

    def _redrive(self, name: str) -> None:
        """A receiver that answers again gets what was dead-lettered for it while it did not:
        a DSL's webhook broken over a half-term week dead-lettered every alert of it, and
        nothing sent them once it was mended (adversarial pass a38 A17). Once per recovery,
        and at the first delivery after a start (it may have been mended meanwhile)."""
        if name in self._answering:
            return
        self._answering.add(name)
        receiver = self.receivers[name]
        dead = [
            alert.id
            for alert in self.outbox.list(state=DEAD, limit=REDRIVE_MAX)
            if name not in alert.delivered_to and self._routed(receiver, alert)
        ]
        if dead:
            self.outbox.retry(dead)
            log.warning("receiver %s answers again: %d dead-lettered alert(s) for it are due "
                        "again", name, len(dead))  # fmt: skip
            self._wakes[name].set()

    def _notify(self, receiver: str, outcome: str) -> None:
        if self.on_attempt is None:
            return
        try:
            self.on_attempt(receiver, outcome)
        except Exception:  # a metrics bug must not stop alerts
            log.exception("on_attempt hook failed")

    # -- background threads --------------------------------------------------------------------

    def wake(self) -> None:
        """Something was enqueued: deliver now rather than at the next poll."""
        for event in self._wakes.values():
            event.set()

    def start(self) -> None:
        if self._threads:
            return
        self._stopping.clear()
        self._threads = [
            threading.Thread(target=self._run, args=(name,), daemon=True,
                             name=f"schoolgate-alerts-{name}" if name else "schoolgate-alerts")
            for name in self._wakes
        ]  # fmt: skip
        for thread in self._threads:
            thread.start()

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stop after the attempts in flight (each bounded by its receiver's timeout)."""
        threads, self._threads = self._threads, []
        if not threads:
            return
        self._stopping.set()
        self.wake()
        until = time.monotonic() + timeout_s
        for thread in threads:
            thread.join(max(0.0, until - time.monotonic()))

    @property
    def running(self) -> bool:
        return any(thread.is_alive() for thread in self._threads)

    def _run(self, name: str) -> None:
        # The first pass runs at once: alerts left by a previous process (crash, power cut)
        # go out as soon as the appliance is back. Name "" is the housekeeping thread.
        wake = self._wakes[name]
        while not self._stopping.is_set():
            wake.clear()  # before the pass: a wake-up during it runs another
            next_due: float | None = None
            try:
                if not name:
                    if self.before_pass is not None:
                        self.before_pass()
                else:
                    self.deliver_due_to(name)
                    next_due = self.outbox.next_due(receivers=(name,))
            except Exception:  # a broken disk or a bug: log, wait, try again; never die
                log.exception("alert delivery pass failed; retrying in %.0f s", self._poll_s)
            wait = self._poll_s
            if next_due is not None:
                wait = min(self._poll_s, max(0.05, next_due - self.outbox.clock()))
            wake.wait(wait)
