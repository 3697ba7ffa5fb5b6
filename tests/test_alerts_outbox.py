"""The alert outbox and the retry schedule, with a hand-moved clock (no sleeping for hours)."""

from __future__ import annotations

import itertools
import sqlite3
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import pytest

from schoolgate.alerts.model import Alert, AlertDetails
from schoolgate.alerts.outbox import DEAD, DELIVERED, PENDING, AlertOutbox, OutboxStats
from schoolgate.alerts.outbox_schema import SCHEMA
from schoolgate.alerts.receivers import CONNECTION_ERROR, Attempt
from schoolgate.alerts.receivers import DELIVERED as OK
from schoolgate.alerts.sender import AlertSender, RetryPolicy
from tests.support.alert_helpers import SHA_B, FakeClock, make_verdict


def details(**kwargs: object) -> AlertDetails:
    return AlertDetails.from_verdict(make_verdict(**kwargs), "Test School")  # type: ignore[arg-type]


class ScriptedReceiver:
    """A receiver whose outcomes the test scripts; records what it was asked to deliver."""

    def __init__(
        self, name: str, outcomes: list[str] | None = None, groups: tuple[str, ...] = ()
    ) -> None:
        self.name = name
        self.config = SimpleNamespace(groups=groups)  # as ReceiverConfig's
        self.outcomes = list(outcomes or [])
        self.delivered: list[Alert] = []
        self.calls = 0

    def deliver(self, alert: Alert) -> Attempt:
        self.calls += 1
        outcome = self.outcomes.pop(0) if self.outcomes else OK
        if outcome == OK:
            self.delivered.append(alert)
        return Attempt(outcome, "scripted")


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def outbox_at(path: Path, clock: FakeClock, channels: tuple[str, ...] = ("hook",)) -> AlertOutbox:
    return AlertOutbox(path, channels, dedup_window_s=600, clock=clock)


def test_an_alert_is_durable_in_wal_with_full_sync(tmp_path: Path, clock: FakeClock) -> None:
    path = tmp_path / "alerts.sqlite"
    with outbox_at(path, clock) as outbox:
        mode = outbox._db.execute("PRAGMA journal_mode").fetchone()[0]
        sync = outbox._db.execute("PRAGMA synchronous").fetchone()[0]
        enqueued = outbox.enqueue(details(), "verdict-1")
    assert (mode, sync) == ("wal", 2)  # 2 = FULL: the WAL is fsynced at every commit
    # A separate connection (as after a restart) sees the committed alert.
    with outbox_at(path, clock) as reopened:
        alert = reopened.get(enqueued.alert_id)
    assert alert is not None
    assert alert.state == PENDING
    assert alert.audit_ids == ("verdict-1",)
    assert alert.details.matches[0].bank == "incident-2026"


def test_same_media_same_device_within_window_is_one_alert_with_a_count(
    tmp_path: Path, clock: FakeClock
) -> None:
    with outbox_at(tmp_path / "a.sqlite", clock) as outbox:
        first = outbox.enqueue(details(), "v1")
        clock.advance(30)
        second = outbox.enqueue(details(), "v2")
        clock.advance(30)
        third = outbox.enqueue(details(), "v3")
        other_device = outbox.enqueue(details(ip="10.20.9.9", mac="02:00:5e:00:53:99"), "v4")
        other_media = outbox.enqueue(details(sha256=SHA_B), "v5")
        alerts = {a.id: a for a in outbox.list()}
    assert second.merged
    assert third.merged
    assert second.alert_id == third.alert_id == first.alert_id
    assert alerts[first.alert_id].count == 3
    assert alerts[first.alert_id].audit_ids == ("v1", "v2", "v3")
    assert alerts[first.alert_id].last_seen == clock.now
    assert not other_device.merged
    assert other_device.alert_id != first.alert_id
    assert not other_media.merged
    assert other_media.alert_id != first.alert_id
    assert len(alerts) == 3


def test_device_identity_is_the_mac_when_known(tmp_path: Path, clock: FakeClock) -> None:
    with outbox_at(tmp_path / "a.sqlite", clock) as outbox:
        first = outbox.enqueue(details(ip="10.20.3.4"), "v1")
        renumbered = outbox.enqueue(details(ip="10.20.3.77"), "v2")  # same MAC, new lease
        no_mac_a = outbox.enqueue(details(ip="10.20.5.5", mac=None), "v3")
        no_mac_b = outbox.enqueue(details(ip="10.20.5.6", mac=None), "v4")
    assert renumbered.alert_id == first.alert_id
    assert no_mac_a.alert_id != no_mac_b.alert_id


def test_repeat_after_the_window_is_a_new_alert(tmp_path: Path, clock: FakeClock) -> None:
    with outbox_at(tmp_path / "a.sqlite", clock) as outbox:
        first = outbox.enqueue(details(), "v1")
        clock.advance(601)
        later = outbox.enqueue(details(), "v2")
    assert not later.merged
    assert later.alert_id != first.alert_id


def test_repeats_after_sending_collect_in_one_follow_up_at_the_window_end(
    tmp_path: Path, clock: FakeClock
) -> None:
    receiver = ScriptedReceiver("hook")
    with outbox_at(tmp_path / "a.sqlite", clock) as outbox:
        sender = AlertSender(outbox, [receiver], RetryPolicy(10, 900, 3600), rng=lambda: 0.0)
        first = outbox.enqueue(details(), "v1")
        sender.deliver_due()
        assert [a.id for a in receiver.delivered] == [first.alert_id]
        clock.advance(60)
        repeat = outbox.enqueue(details(), "v2")
        clock.advance(60)
        outbox.enqueue(details(), "v3")
        assert not repeat.merged
        assert sender.deliver_due() == []  # the follow-up waits for the end of the window
        clock.advance(600 - 120)
        sender.deliver_due()
        follow_up = outbox.get(repeat.alert_id)
    assert [a.id for a in receiver.delivered] == [first.alert_id, repeat.alert_id]
    assert receiver.delivered[1].count == 2
    assert follow_up is not None
    assert follow_up.follow_up_of == first.alert_id
    assert follow_up.state == DELIVERED


def test_backoff_doubles_with_jitter_up_to_the_cap() -> None:
    policy = RetryPolicy(base_s=10, max_s=900, dead_after_s=86_400)
    steps = [10, 20, 40, 80, 160, 320, 640, 900, 900]
    for failures, step in enumerate(steps, start=1):
        assert policy.delay(failures, 0.0) == pytest.approx(step / 2)
        assert policy.delay(failures, 0.999999) == pytest.approx(step, rel=1e-5)
    assert policy.delay(10_000, 0.5) == pytest.approx(675)  # no overflow after days of failures


def test_retries_follow_the_schedule_then_dead_letter_after_the_age(
    tmp_path: Path, clock: FakeClock
) -> None:
    receiver = ScriptedReceiver("hook", [CONNECTION_ERROR] * 1000)
    outcomes: list[tuple[str, str]] = []
    policy = RetryPolicy(base_s=10, max_s=900, dead_after_s=6 * 3600)
    with outbox_at(tmp_path / "a.sqlite", clock) as outbox:
        sender = AlertSender(
            outbox,
            [receiver],
            policy,
            rng=lambda: 1.0,
            on_attempt=lambda name, outcome: outcomes.append((name, outcome)),
        )
        created = clock.now
        alert_id = outbox.enqueue(details(), "v1").alert_id
        attempt_times: list[float] = []
        for _ in range(500):  # bounded: six hours at most 900 s apart is ~40 attempts
            results = sender.deliver_due()
            if results:
                attempt_times.append(clock.now - created)
                if results[0].dead:
                    break
                # Nothing more is due until the scheduled time.
                assert results[0].next_at is not None
                assert sender.deliver_due() == []
                clock.now = results[0].next_at
            else:
                clock.advance(1)
        alert = outbox.get(alert_id)
        stats = outbox.stats()
    gaps = [b - a for a, b in itertools.pairwise(attempt_times)]
    assert gaps[:8] == pytest.approx([10, 20, 40, 80, 160, 320, 640, 900])
    assert all(gap == pytest.approx(900) for gap in gaps[8:])
    assert attempt_times[-1] >= 6 * 3600 > attempt_times[-2]
    assert alert is not None
    assert alert.state == DEAD
    assert alert.attempts == len(attempt_times)
    assert stats == OutboxStats(pending=0, oldest_pending_age_s=0.0, dead=1)
    assert outcomes == [("hook", CONNECTION_ERROR)] * len(attempt_times)


def test_retry_revives_dead_alerts_with_a_fresh_age(tmp_path: Path, clock: FakeClock) -> None:
    receiver = ScriptedReceiver("hook", [CONNECTION_ERROR, CONNECTION_ERROR])
    with outbox_at(tmp_path / "a.sqlite", clock) as outbox:
        sender = AlertSender(outbox, [receiver], RetryPolicy(10, 900, 5), rng=lambda: 0.0)
        alert_id = outbox.enqueue(details(), "v1").alert_id
        sender.deliver_due()  # fails, retry in 5 s
        clock.advance(10)
        assert sender.deliver_due()[0].dead
        assert outbox.retry() == 1
        results = sender.deliver_due()
        alert = outbox.get(alert_id)
    assert [r.attempt.outcome for r in results] == [OK]
    assert alert is not None
    assert alert.state == DELIVERED


def test_a_receiver_that_answers_again_gets_its_dead_letters(
    tmp_path: Path, clock: FakeClock
) -> None:
    """a38 A17: a DSL's webhook broken over a half-term week dead-lettered every alert of it,
    and nothing sent them once it was mended, not even when it took new alerts again."""
    down = ScriptedReceiver("hook", [CONNECTION_ERROR] * 2)
    with outbox_at(tmp_path / "a.sqlite", clock) as outbox:
        sender = AlertSender(outbox, [down], RetryPolicy(10, 900, 5), rng=lambda: 0.0)
        old = outbox.enqueue(details(), "v1").alert_id
        sender.deliver_due()
        clock.advance(10)
        assert sender.deliver_due()[0].dead
        clock.advance(3600)  # mended; the next alert finds it answering
        new = outbox.enqueue(details(sha256=SHA_B), "v2").alert_id
        sender.deliver_due()  # the pass's next round takes what was re-driven
        assert [a.id for a in down.delivered] == [new, old]
        assert outbox.get(old).state == DELIVERED  # type: ignore[union-attr]
        # once: further deliveries do not look again until it fails again
        outbox.enqueue(details(sha256="c" * 64), "v3")
        sender.deliver_due()
        assert len(down.delivered) == 3


def test_a_sender_started_after_the_receiver_was_mended_redrives_too(
    tmp_path: Path, clock: FakeClock
) -> None:
    path = tmp_path / "a.sqlite"
    with outbox_at(path, clock) as outbox:
        down = ScriptedReceiver("hook", [CONNECTION_ERROR] * 2)
        sender = AlertSender(outbox, [down], RetryPolicy(10, 900, 5), rng=lambda: 0.0)
        dead = outbox.enqueue(details(), "v1").alert_id
        sender.deliver_due()
        clock.advance(10)
        assert sender.deliver_due()[0].dead
    with outbox_at(path, clock) as restarted:
        mended = ScriptedReceiver("hook")
        sender = AlertSender(restarted, [mended], RetryPolicy(10, 900, 5))
        restarted.enqueue(details(sha256=SHA_B), "v2")
        sender.deliver_due()
    assert dead in [a.id for a in mended.delivered]


def test_only_what_its_groups_take_is_redriven_to_a_receiver(
    tmp_path: Path, clock: FakeClock
) -> None:
    """North's DSL mended: south's dead letters stay dead (south's webhook is still broken)."""
    north = ScriptedReceiver("north", [CONNECTION_ERROR] * 2, groups=("staff",))
    south = ScriptedReceiver("south", [CONNECTION_ERROR] * 9, groups=("students",))
    with outbox_at(tmp_path / "a.sqlite", clock, channels=("north", "south")) as outbox:
        sender = AlertSender(outbox, [north, south], RetryPolicy(10, 900, 5), rng=lambda: 0.0)
        staff = outbox.enqueue(replace(details(), group="staff"), "v1").alert_id
        pupil = outbox.enqueue(replace(details(sha256=SHA_B), group="students"), "v2").alert_id
        sender.deliver_due()
        clock.advance(10)
        sender.deliver_due()
        assert {a.id for a in outbox.list(state=DEAD)} == {staff, pupil}
        clock.advance(3600)
        fresh = outbox.enqueue(replace(details(sha256="c" * 64), group="staff"), "v3").alert_id
        sender.deliver_due()
        assert [a.id for a in north.delivered] == [fresh, staff]
        assert [a.id for a in outbox.list(state=DEAD)] == [pupil]
    assert south.delivered == []


def test_a_delivery_claimed_by_a_killed_sender_comes_due_after_its_lease(
    tmp_path: Path, clock: FakeClock
) -> None:
    path = tmp_path / "a.sqlite"
    with outbox_at(path, clock) as outbox:
        outbox.enqueue(details(), "v1")
        claims = outbox.claim(lease_s=25)
    assert len(claims) == 1  # ...and the process dies before recording an outcome
    receiver = ScriptedReceiver("hook")
    with outbox_at(path, clock) as restarted:
        sender = AlertSender(restarted, [receiver], RetryPolicy())
        assert sender.deliver_due() == []  # still leased
        clock.advance(26)
        sender.deliver_due()
    assert [a.id for a in receiver.delivered] == [claims[0].alert.id]


def test_each_receiver_retries_alone(tmp_path: Path, clock: FakeClock) -> None:
    teams = ScriptedReceiver("teams")
    webhook = ScriptedReceiver("webhook", [CONNECTION_ERROR])
    with outbox_at(tmp_path / "a.sqlite", clock, ("teams", "webhook")) as outbox:
        sender = AlertSender(outbox, [teams, webhook], RetryPolicy(10, 900, 3600), rng=lambda: 0)
        alert_id = outbox.enqueue(details(), "v1").alert_id
        sender.deliver_due()
        assert outbox.stats().pending == 1
        clock.advance(5)
        sender.deliver_due()
        alert = outbox.get(alert_id)
    assert teams.calls == 1  # not sent twice to the receiver that had it
    assert webhook.calls == 2
    assert alert is not None
    assert alert.state == DELIVERED
    assert alert.delivered_to == ("teams", "webhook")


def test_a_receiver_routed_by_group_gets_only_that_groups_alerts(
    tmp_path: Path, clock: FakeClock
) -> None:
    """One gateway for two schools (issue 21): each school's DSL gets its own pupils' alerts,
    the trust's safeguarding lead every alert; an alert for another group is settled for a
    receiver without being sent, so it still finishes."""
    north = ScriptedReceiver("north-dsl", groups=("north-pupils",))
    south = ScriptedReceiver("south-dsl", groups=("south-pupils", "south-staff"))
    trust = ScriptedReceiver("trust-lead")
    channels = ("north-dsl", "south-dsl", "trust-lead")
    with outbox_at(tmp_path / "a.sqlite", clock, channels) as outbox:
        sender = AlertSender(outbox, [north, south, trust], RetryPolicy(10, 900, 3600))
        north_alert = replace(details(), group="north-pupils")
        south_alert = replace(details(sha256=SHA_B), group="south-pupils")
        from_north = outbox.enqueue(north_alert, "v1").alert_id
        from_south = outbox.enqueue(south_alert, "v2").alert_id
        sender.deliver_due()
        alerts = {i: outbox.get(i) for i in (from_north, from_south)}
    assert [a.id for a in north.delivered] == [from_north]
    assert [a.id for a in south.delivered] == [from_south]
    assert sorted(a.id for a in trust.delivered) == sorted([from_north, from_south])
    for alert in alerts.values():
        assert alert is not None
        assert alert.state == DELIVERED
    assert outbox_delivery(tmp_path / "a.sqlite", from_north, "south-dsl") == "not_routed"
    # and the alert does not claim to have reached the receiver that left it out (a26)
    routed = alerts[from_north]
    assert routed is not None
    assert routed.delivered_to == ("north-dsl", "trust-lead")


def test_an_alert_no_receiver_takes_any_more_goes_to_every_receiver(
    tmp_path: Path, clock: FakeClock
) -> None:
    """Adversarial pass a28 AL7: an alert waited for its group's receiver, which was down; a
    reload renamed the group in every receiver's list, and the alert was settled as delivered,
    to nobody. An alert that no receiver's groups take goes to every receiver still due."""
    channels = ("sixth-dsl", "north-dsl")
    with outbox_at(tmp_path / "a.sqlite", clock, channels) as outbox:
        down = ScriptedReceiver("sixth-dsl", [CONNECTION_ERROR], groups=("sixth-form",))
        north = ScriptedReceiver("north-dsl", groups=("north-pupils",))
        sender = AlertSender(outbox, [down, north], RetryPolicy(10, 900, 3600))
        waiting = outbox.enqueue(replace(details(), group="sixth-form"), "v1").alert_id
        sender.deliver_due()
        assert north.delivered == []
        # the reload: the group is now "year-12" in the receivers' lists
        renamed = ScriptedReceiver("sixth-dsl", groups=("year-12",))
        north = ScriptedReceiver("north-dsl", groups=("north-pupils",))
        sender = AlertSender(outbox, [renamed, north], RetryPolicy(10, 900, 3600))
        clock.advance(60)
        sender.deliver_due()
        alert = outbox.get(waiting)
    # the receiver it waited for gets it (north's delivery was settled unsent before)
    assert [a.id for a in renamed.delivered] == [waiting]
    assert north.delivered == []
    assert alert is not None
    assert alert.state == DELIVERED
    assert alert.delivered_to == ("sixth-dsl",)


def test_an_alert_goes_to_the_receiver_a_reload_gave_its_group(
    tmp_path: Path, clock: FakeClock
) -> None:
    """Adversarial pass a30 AL7f: the alert waited for its group's receiver (down); a reload
    moved the group to another receiver, whose delivery had been settled unsent, and the alert
    finished as delivered to nobody. Every receiver is asked again by today's groups."""
    channels = ("north-dsl", "sixth-dsl")
    with outbox_at(tmp_path / "a.sqlite", clock, channels) as outbox:
        down = ScriptedReceiver("sixth-dsl", [CONNECTION_ERROR], groups=("sixth-form",))
        north = ScriptedReceiver("north-dsl", groups=("north-pupils",))
        AlertSender(outbox, [down, north], RetryPolicy(10, 900, 3600)).deliver_due()
        waiting = outbox.enqueue(replace(details(), group="sixth-form"), "v1").alert_id
        sender = AlertSender(outbox, [down, north], RetryPolicy(10, 900, 3600))
        sender.deliver_due()
        assert north.delivered == []
        # the reload: sixth-form is north's now
        moved = ScriptedReceiver("north-dsl", groups=("north-pupils", "sixth-form"))
        gone = ScriptedReceiver("sixth-dsl", groups=("year-12",))
        sender = AlertSender(outbox, [moved, gone], RetryPolicy(10, 900, 3600))
        for _ in range(3):
            clock.advance(60)
            sender.deliver_due()
        alert = outbox.get(waiting)
    assert [a.id for a in moved.delivered] == [waiting]
    assert gone.delivered == []
    assert alert is not None
    assert (alert.state, alert.delivered_to) == (DELIVERED, ("north-dsl",))


def outbox_delivery(path: Path, alert_id: str, receiver: str) -> str:
    import sqlite3

    with sqlite3.connect(path) as db:
        (outcome,) = db.execute("SELECT last_outcome FROM deliveries WHERE alert_id = ? AND "
                                "receiver = ?", (alert_id, receiver)).fetchone()  # fmt: skip
    return str(outcome)


def test_with_no_receivers_alerts_wait_in_the_outbox(tmp_path: Path, clock: FakeClock) -> None:
    path = tmp_path / "a.sqlite"
    with AlertOutbox(path, (), clock=clock) as outbox:
        sender = AlertSender(outbox, [], RetryPolicy(10, 900, 60))
        outbox.enqueue(details(), "v1")
        clock.advance(3600)
        assert sender.deliver_due() == []
        stats = outbox.stats()
    assert stats == OutboxStats(pending=1, oldest_pending_age_s=3600.0, dead=0)
    # A receiver configured later gets it (its first attempt is never dead on arrival).
    receiver = ScriptedReceiver("hook")
    with outbox_at(path, clock) as outbox:
        AlertSender(outbox, [receiver], RetryPolicy(10, 900, 60)).deliver_due()
        assert outbox.stats().pending == 0
    assert len(receiver.delivered) == 1


def test_stats_report_pending_age_and_dead(tmp_path: Path, clock: FakeClock) -> None:
    with outbox_at(tmp_path / "a.sqlite", clock) as outbox:
        assert outbox.stats() == OutboxStats(0, 0.0, 0)
        outbox.enqueue(details(), "v1")
        clock.advance(42)
        outbox.enqueue(details(sha256=SHA_B), "v2")
        assert outbox.stats() == OutboxStats(pending=2, oldest_pending_age_s=42.0, dead=0)


def test_an_unwritable_outbox_raises_outbox_error(tmp_path: Path, clock: FakeClock) -> None:
    from schoolgate.alerts.outbox import OutboxError

    with outbox_at(tmp_path / "a.sqlite", clock) as outbox:
        outbox._db.execute("PRAGMA query_only = ON")  # what a read-only database does to writes
        with pytest.raises(OutboxError, match="alert not written"):
            outbox.enqueue(details(), "v1")
    (tmp_path / "dir.sqlite").mkdir()
    with pytest.raises(OutboxError, match="cannot open the alert outbox"):
        AlertOutbox(tmp_path / "dir.sqlite")


def test_a_slow_receivers_batch_does_not_send_twice_what_another_sender_took(
    tmp_path: Path, clock: FakeClock
) -> None:
    """A slow receiver's batch outlives its claims' lease, and `schoolgate alerts retry` (another
    process, another sender on the same outbox) takes the ones that lapsed meanwhile: each alert
    still reaches the DSL once. The batch renews a claim before its attempt past half a lease,
    and leaves one another sender holds."""
    got: list[str] = []
    retry_sender: list[AlertSender] = []

    class Slow(ScriptedReceiver):
        def deliver(self, alert: Alert) -> Attempt:
            clock.advance(25)  # within its timeout_s (30): the lease is 2 x 30 + 5
            got.append(alert.id)
            if len(got) == 3:  # meanwhile, `alerts retry` runs
                retry_sender[0].deliver_due()
            return Attempt(OK, "slow")

    class Quick(ScriptedReceiver):
        def deliver(self, alert: Alert) -> Attempt:
            got.append(alert.id)
            return Attempt(OK, "quick")

    slow, quick = Slow("hook"), Quick("hook")
    slow.config.timeout_s = quick.config.timeout_s = 30.0
    path = tmp_path / "alerts.sqlite"
    with outbox_at(path, clock) as outbox, outbox_at(path, clock) as other:
        ids = [outbox.enqueue(details(sha256=f"{n:064x}"), f"v{n}").alert_id for n in range(6)]
        retry_sender.append(AlertSender(other, [quick], RetryPolicy(10, 900, 3600)))
        AlertSender(outbox, [slow], RetryPolicy(10, 900, 3600)).deliver_due()
        assert all(alert.state == DELIVERED for alert in map(outbox.get, ids) if alert)
    assert sorted(got) == sorted(ids), "each alert once"


def test_alerts_retry_leaves_what_another_sender_is_sending(
    tmp_path: Path, clock: FakeClock
) -> None:
    """a39 F3: `alerts retry` made every pending delivery due now, also those the proxy (or
    another `alerts retry`) had claimed and was sending: they were claimed and sent again."""
    path = tmp_path / "alerts.sqlite"
    with outbox_at(path, clock) as proxy, outbox_at(path, clock) as cli:
        proxy.enqueue(details(), "v1")
        (claim,) = proxy.claim(lease_s=65)  # the proxy's POST is on its way
        assert cli.retry() == 1  # the alert is pending, so it is listed ...
        assert cli.claim(lease_s=65) == []  # ... but its delivery is the proxy's
        proxy.delivered(claim.alert.id, "hook")
        assert cli.retry() == 0  # delivered: nothing to retry
        assert cli.claim(lease_s=65) == []


def test_alerts_retry_takes_a_lapsed_lease_and_a_back_off_wait(
    tmp_path: Path, clock: FakeClock
) -> None:
    path = tmp_path / "alerts.sqlite"
    with outbox_at(path, clock) as proxy, outbox_at(path, clock) as cli:
        first = proxy.enqueue(details(), "v1").alert_id
        second = proxy.enqueue(details(sha256=SHA_B), "v2").alert_id
        claims = {c.alert.id: c for c in proxy.claim(lease_s=65)}
        # the first failed and waits out its back-off; the second's sender was killed
        proxy.failed(first, "hook", "http_5xx", "503", next_at=clock() + 600)
        clock.advance(70)
        assert cli.retry() == 2
        assert {c.alert.id for c in cli.claim(lease_s=65)} == {first, second}
        assert claims[second].lease_until < clock()


def test_an_outbox_from_before_leases_gains_the_column(tmp_path: Path, clock: FakeClock) -> None:
    path = tmp_path / "alerts.sqlite"
    with sqlite3.connect(path) as db:
        db.executescript(SCHEMA.replace("    leased_until REAL,\n", ""))
        db.execute("INSERT INTO meta VALUES ('schema', 1)")
    with outbox_at(path, clock) as outbox:
        outbox.enqueue(details(), "v1")
        assert len(outbox.claim(lease_s=65)) == 1
        assert outbox.retry() == 1
        assert outbox.claim(lease_s=65) == []  # the lease is honoured


def test_an_alert_of_a_group_renamed_since_goes_to_every_receiver(
    tmp_path: Path, clock: FakeClock
) -> None:
    """a41 F2: north-pupils renamed north (and the DSL's groups with it) while an alert of it
    waited: the trust lead, taking every alert, had it, so the DSL's delivery was settled
    unsent and it never came."""
    channels = ("north-dsl", "trust-lead")
    with outbox_at(tmp_path / "a.sqlite", clock, channels=channels) as outbox:
        waiting = outbox.enqueue(replace(details(), group="north-pupils"), "v1").alert_id
        north = ScriptedReceiver("north-dsl", groups=("north",))
        lead = ScriptedReceiver("trust-lead")
        sender = AlertSender(outbox, [north, lead], RetryPolicy(), groups={"north", "south"})
        sender.deliver_due()
        alert = outbox.get(waiting)
    assert [a.id for a in north.delivered] == [waiting]
    assert [a.id for a in lead.delivered] == [waiting]
    assert alert is not None
    assert alert.state == DELIVERED


def test_an_alert_raised_while_the_clock_ran_ahead_is_retried_once_it_is_corrected(
    tmp_path: Path, clock: FakeClock
) -> None:
    """a41 F4: a retry scheduled by a clock two days ahead waited two days after the clock
    was corrected, the receiver back up all along."""
    north = ScriptedReceiver("hook", [CONNECTION_ERROR])
    with outbox_at(tmp_path / "a.sqlite", clock) as outbox:
        sender = AlertSender(outbox, [north], RetryPolicy(10, 900, 259_200), rng=lambda: 0.0)
        clock.advance(2 * 86_400)  # no RTC battery, no NTP yet
        alert_id = outbox.enqueue(details(), "v1").alert_id
        sender.deliver_due()  # fails: next in 5 s, by that clock
        clock.advance(-2 * 86_400 + 30)  # NTP corrects it
        sender.deliver_due()
        alert = outbox.get(alert_id)
    assert [a.id for a in north.delivered] == [alert_id]
    assert alert is not None
    assert alert.state == DELIVERED


def test_a_lease_is_not_taken_for_a_clock_that_ran_ahead(tmp_path: Path, clock: FakeClock) -> None:
    with outbox_at(tmp_path / "a.sqlite", clock) as outbox:
        outbox.enqueue(details(), "v1")
        assert len(outbox.claim(lease_s=65)) == 1
        assert outbox.claim(lease_s=65) == []  # minutes ahead: a live claim, left alone


def test_an_alert_of_a_renamed_group_goes_to_its_devices_group_of_today(
    tmp_path: Path, clock: FakeClock
) -> None:
    """a43 F9: sent to every receiver, a north pupil's pending alert also reached the other
    school's DSL. It is routed by the group its device is in under today's policy."""
    channels = ("north-dsl", "south-dsl", "trust-lead")
    with outbox_at(tmp_path / "a.sqlite", clock, channels=channels) as outbox:
        waiting = outbox.enqueue(replace(details(), group="north-pupils"), "v1").alert_id
        north = ScriptedReceiver("north-dsl", groups=("north",))
        south = ScriptedReceiver("south-dsl", groups=("south",))
        lead = ScriptedReceiver("trust-lead")
        sender = AlertSender(outbox, [north, south, lead], RetryPolicy(),
                             groups={"north", "south"}, place=lambda alert: "north")  # fmt: skip
        sender.deliver_due()
    assert [a.id for a in north.delivered] == [waiting]
    assert south.delivered == []
    assert [a.id for a in lead.delivered] == [waiting]
