"""Group routing after a reload, tracked per receiver (adversarial pass a35 F4): an alert that
is still pending when a reload gives its group to another receiver goes to that receiver once,
even when someone else (the trust's lead) already has it; nobody gets a second copy."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import pytest

from schoolgate.alerts.model import Alert, AlertDetails
from schoolgate.alerts.outbox import DELIVERED, PENDING, AlertOutbox
from schoolgate.alerts.receivers import CONNECTION_ERROR, Attempt
from schoolgate.alerts.receivers import DELIVERED as OK
from schoolgate.alerts.sender import AlertSender, RetryPolicy
from tests.support.alert_helpers import FakeClock, make_verdict

CHANNELS = ("north-dsl", "sixth-dsl", "trust-lead")
POLICY = RetryPolicy(10, 900, 3600)


class Scripted:
    """A receiver whose outcomes the test scripts; records what it delivered."""

    def __init__(self, name: str, outcomes: list[str] | None = None, groups: tuple[str, ...] = ()):
        self.name = name
        self.config = SimpleNamespace(groups=groups)  # as ReceiverConfig's
        self.outcomes = list(outcomes or [])
        self.delivered: list[str] = []

    def deliver(self, alert: Alert) -> Attempt:
        outcome = self.outcomes.pop(0) if self.outcomes else OK
        if outcome == OK:
            self.delivered.append(alert.id)
        return Attempt(outcome, "scripted")


def sixth_form_alert() -> AlertDetails:
    return replace(AlertDetails.from_verdict(make_verdict(), "Test School"), group="sixth-form")


def raise_with_sixth_down(outbox: AlertOutbox) -> tuple[str, Scripted]:
    """The alert is raised; the trust's lead gets it, north is not asked (not its group), and
    the sixth form's DSL is down, so the alert stays pending."""
    trust = Scripted("trust-lead")
    before = [
        Scripted("north-dsl", groups=("north-pupils",)),
        Scripted("sixth-dsl", [CONNECTION_ERROR] * 5, groups=("sixth-form",)),
        trust,
    ]
    alert_id = outbox.enqueue(sixth_form_alert(), "v1").alert_id
    AlertSender(outbox, before, POLICY).deliver_due()
    assert trust.delivered == [alert_id]
    alert = outbox.get(alert_id)
    assert alert is not None
    assert alert.state == PENDING
    return alert_id, trust


@pytest.mark.parametrize("north_first", [True, False])
def test_a_group_moved_by_a_reload_reaches_its_new_dsl_once(
    tmp_path: Path, north_first: bool
) -> None:
    clock = FakeClock()
    with AlertOutbox(tmp_path / "a.sqlite", CHANNELS, clock=clock) as outbox:
        alert_id, trust = raise_with_sixth_down(outbox)
        # the reload: sixth-form is north's now; the old sixth-form DSL has year 12 instead
        north = Scripted("north-dsl", groups=("north-pupils", "sixth-form"))
        sixth = Scripted("sixth-dsl", groups=("year-12",))
        trust_after = Scripted("trust-lead")
        after = [north, sixth, trust_after] if north_first else [sixth, north, trust_after]
        sender = AlertSender(outbox, after, POLICY)
        for _ in range(4):
            clock.advance(60)
            sender.deliver_due()
        alert = outbox.get(alert_id)
    assert north.delivered == [alert_id]  # exactly once
    assert sixth.delivered == []
    assert trust_after.delivered == []  # the trust's lead had it: no duplicate
    assert trust.delivered == [alert_id]
    assert alert is not None
    assert (alert.state, alert.delivered_to) == (DELIVERED, ("north-dsl", "trust-lead"))


def test_a_group_shared_by_a_reload_reaches_the_added_dsl_at_once(tmp_path: Path) -> None:
    """The sixth form's DSL keeps the group and north gets it too: north is sent the waiting
    alert at its next pass, not when the sixth form's DSL comes back; each gets it once."""
    clock = FakeClock()
    with AlertOutbox(tmp_path / "a.sqlite", CHANNELS, clock=clock) as outbox:
        alert_id, _ = raise_with_sixth_down(outbox)
        north = Scripted("north-dsl", groups=("north-pupils", "sixth-form"))
        sixth = Scripted("sixth-dsl", [CONNECTION_ERROR], groups=("sixth-form",))
        trust = Scripted("trust-lead")
        sender = AlertSender(outbox, [north, sixth, trust], POLICY)
        sender.deliver_due()  # nothing of sixth's is due yet: north's copy goes anyway
        assert north.delivered == [alert_id]
        for _ in range(10):
            clock.advance(600)
            sender.deliver_due()
        alert = outbox.get(alert_id)
    assert north.delivered == [alert_id]
    assert sixth.delivered == [alert_id]
    assert trust.delivered == []
    assert alert is not None
    assert alert.state == DELIVERED
    assert alert.delivered_to == CHANNELS


def test_a_finished_alert_is_not_sent_again_after_a_reload(tmp_path: Path) -> None:
    """Only what still waits is re-routed: a reload is not a flood of old alerts."""
    clock = FakeClock()
    with AlertOutbox(tmp_path / "a.sqlite", CHANNELS, clock=clock) as outbox:
        before = [
            Scripted("north-dsl", groups=("north-pupils",)),
            Scripted("sixth-dsl", groups=("sixth-form",)),
            Scripted("trust-lead"),
        ]
        alert_id = outbox.enqueue(sixth_form_alert(), "v1").alert_id
        AlertSender(outbox, before, POLICY).deliver_due()
        north = Scripted("north-dsl", groups=("north-pupils", "sixth-form"))
        sender = AlertSender(outbox, [north, *before[1:]], POLICY)
        clock.advance(60)
        sender.deliver_due()
        alert = outbox.get(alert_id)
    assert north.delivered == []
    assert alert is not None
    assert alert.state == DELIVERED


def test_a_device_in_no_group_has_its_alerts_sent_to_every_schools_dsl(tmp_path: Path) -> None:
    """Adversarial pass a35 A4: on a gateway serving two schools, a pupil with a hand-set
    address outside both schools' subnets fell to the default group, and only that group's
    school heard of the block. Which school's the device is cannot be told: every DSL does."""
    from schoolgate.config import parse_config
    from schoolgate.pipeline.policy import Policy

    policy = Policy(parse_config(
        "policy:\n  default_group: north-pupils\n  groups:\n"
        "    - {name: north-pupils, subnets: [10.20.0.0/16], mode: block}\n"
        "    - {name: sixth-form, subnets: [10.30.0.0/16], mode: block}\n",
        "site.yaml",
    ).policy)  # fmt: skip
    made = make_verdict()
    placed = policy.decide(replace(made.context, client_ip="10.30.4.5"), made.findings)
    hand_set = replace(made.context, client_ip="192.168.77.7", mac="02:00:5e:00:53:77")
    unplaced = policy.decide(hand_set, made.findings)
    assert (placed.group, placed.placed) == ("sixth-form", True)
    assert (unplaced.group, unplaced.placed) == ("north-pupils", False)
    assert unplaced.to_dict()["group_matched"] is False
    north = Scripted("north-dsl", groups=("north-pupils",))
    sixth = Scripted("sixth-dsl", groups=("sixth-form",))
    with AlertOutbox(tmp_path / "alerts.sqlite", ("north-dsl", "sixth-dsl")) as outbox:
        kept = outbox.enqueue(AlertDetails.from_verdict(placed, "Test School"), "v1").alert_id
        lost = outbox.enqueue(AlertDetails.from_verdict(unplaced, "Test School"), "v2").alert_id
        AlertSender(outbox, [north, sixth], POLICY).deliver_due()
        assert outbox.get(lost).details.placed is False  # type: ignore[union-attr]
    assert north.delivered == [lost]
    assert sorted(sixth.delivered) == sorted([kept, lost])
