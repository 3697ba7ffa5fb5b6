"""Policy tables: group selection, modes, schedules, triggers and the fail policy."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from schoolgate.banks.model import SignalType
from schoolgate.classify.spec import ClassifierResult
from schoolgate.config import parse_config
from schoolgate.matching.matcher import BankMatch
from schoolgate.pipeline.policy import Action, Policy
from schoolgate.pipeline.verdict import Findings, InspectionContext

CONFIG = """
policy:
  timezone: Europe/London
  groups:
    - name: exempt-device
      devices: ["AA-BB-CC-00-11-22"]
      mode: monitor
    - name: staff
      subnets: [10.10.0.0/16, "fd00:10::/64"]
      mode: monitor
    - name: sixth-form
      vlans: [30]
      block_on: [bank_match]
      fail: {timeout: allow}
    - name: students
      subnets: [10.20.0.0/16]
      schedule:
        - {days: [mon, tue, wed, thu, fri], start: "08:00", end: "16:30"}
      outside_mode: monitor
  default_group: students
"""

MATCH = BankMatch(
    bank="incident-1",
    signal_type=SignalType.PDQ,
    value="0" * 64,
    distance=12,
    quality=90,
    note="",
)
FLAGGED = ClassifierResult(
    model="pattern", scores={"flag": 0.97}, flagged=("flag",), elapsed_ms=3.0, over_budget=False
)
CLEAN = ClassifierResult(
    model="pattern", scores={"flag": 0.02}, flagged=(), elapsed_ms=3.0, over_budget=False
)
# A Wednesday in term, 10:00 London time (UTC+0 in November), and the same day at 20:00.
SCHOOL_HOURS = datetime(2026, 11, 25, 10, 0, tzinfo=UTC)
EVENING = datetime(2026, 11, 25, 20, 0, tzinfo=UTC)
SATURDAY = datetime(2026, 11, 28, 10, 0, tzinfo=UTC)


@pytest.fixture
def policy(data_dir: Path) -> Policy:
    return Policy(parse_config(CONFIG, "test.yaml").policy)


@pytest.mark.parametrize(
    ("ctx", "group"),
    [
        (InspectionContext(client_ip="10.10.1.2"), "staff"),
        (InspectionContext(client_ip="fd00:10::5"), "staff"),
        (InspectionContext(client_ip="::ffff:10.10.1.2"), "staff"),
        (InspectionContext(client_ip="10.20.1.2"), "students"),
        (InspectionContext(client_ip="192.0.2.7"), "students"),  # default group
        (InspectionContext(client_ip=None), "students"),
        (InspectionContext(client_ip="garbage"), "students"),
        (InspectionContext(client_ip="10.20.1.2", vlan=30), "sixth-form"),
        (InspectionContext(client_ip="10.10.1.2", mac="aa:bb:cc:00:11:22"), "exempt-device"),
        # A staff-range address the DHCP server leased to this device counts; a hand-set one
        # does not (the pupil stays in the default group); unknown (no lease source) counts.
        (InspectionContext(client_ip="10.10.1.2", address_leased=True), "staff"),
        (InspectionContext(client_ip="10.10.1.2", address_leased=False), "students"),
        (InspectionContext(client_ip="10.10.1.2", address_leased=None), "staff"),
        # VLAN and device groups are the link layer's word, not the address's.
        (InspectionContext(client_ip="10.10.1.2", vlan=30, address_leased=False), "sixth-form"),
        # A listed MAC copied onto a hand-set address is not that device (adversarial pass a3).
        (
            InspectionContext(client_ip="10.10.1.2", mac="aa:bb:cc:00:11:22", address_leased=False),
            "students",
        ),
    ],
)
def test_group_selection(policy: Policy, ctx: InspectionContext, group: str) -> None:
    assert policy.group_for(ctx).name == group


@pytest.mark.parametrize(
    ("client", "findings", "now", "action", "would_block"),
    [
        # students in school hours: bank match and classifier flag both block
        ("10.20.0.5", Findings(matches=(MATCH,)), SCHOOL_HOURS, Action.BLOCK, True),
        ("10.20.0.5", Findings(scores=(FLAGGED,)), SCHOOL_HOURS, Action.BLOCK, True),
        ("10.20.0.5", Findings(scores=(CLEAN,)), SCHOOL_HOURS, Action.ALLOW, False),
        ("10.20.0.5", Findings(), SCHOOL_HOURS, Action.ALLOW, False),
        # outside the schedule the group is in monitor mode: recorded, not blocked
        ("10.20.0.5", Findings(matches=(MATCH,)), EVENING, Action.ALLOW, True),
        ("10.20.0.5", Findings(matches=(MATCH,)), SATURDAY, Action.ALLOW, True),
        # staff are always monitored
        ("10.10.0.5", Findings(matches=(MATCH,)), SCHOOL_HOURS, Action.ALLOW, True),
        # fail policy: closed by default, open where the group says so
        ("10.20.0.5", Findings(failure="timeout"), SCHOOL_HOURS, Action.BLOCK, True),
        ("10.20.0.5", Findings(failure="refused"), SCHOOL_HOURS, Action.BLOCK, True),
        # media we cannot analyse fails closed too (issue 16: the unusual format was the bypass)
        ("10.20.0.5", Findings(failure="not_analysed"), SCHOOL_HOURS, Action.BLOCK, True),
        # the catalog's action overrides the group for apps that cannot be inspected
        (
            "10.20.0.5",
            Findings(failure="not_inspectable", failure_action="block"),
            SCHOOL_HOURS,
            Action.BLOCK,
            True,
        ),
    ],
)
def test_decisions(
    policy: Policy,
    client: str,
    findings: Findings,
    now: datetime,
    action: Action,
    would_block: bool,
) -> None:
    verdict = policy.decide(InspectionContext(client_ip=client), findings, now=now)
    assert verdict.action is action
    assert verdict.would_block is would_block
    assert verdict.blocked is (action is Action.BLOCK)


def test_group_triggers_and_fail_overrides(policy: Policy) -> None:
    ctx = InspectionContext(client_ip="10.20.0.5", vlan=30)  # sixth-form: bank matches only
    assert policy.decide(ctx, Findings(scores=(FLAGGED,))).action is Action.ALLOW
    assert policy.decide(ctx, Findings(matches=(MATCH,))).action is Action.BLOCK
    assert policy.decide(ctx, Findings(failure="timeout")).action is Action.ALLOW
    assert policy.decide(ctx, Findings(failure="overload")).action is Action.BLOCK


def test_downloads_replace_bank_matches_only_and_fail_open(policy: Policy) -> None:
    download = InspectionContext(client_ip="10.20.0.5", direction="download")
    assert policy.decide(download, Findings(matches=(MATCH,)), SCHOOL_HOURS).blocked
    assert not policy.decide(download, Findings(scores=(FLAGGED,)), SCHOOL_HOURS).blocked
    assert not policy.decide(download, Findings(failure="overload"), SCHOOL_HOURS).blocked
    assert not policy.wants_classifier(download)
    assert policy.wants_classifier(InspectionContext(client_ip="10.20.0.5"))


def test_reasons_explain_the_decision(policy: Policy) -> None:
    verdict = policy.decide(
        InspectionContext(client_ip="10.20.0.5"),
        Findings(matches=(MATCH,), scores=(FLAGGED,)),
        now=SCHOOL_HOURS,
    )
    assert verdict.reasons == (
        "bank incident-1: pdq match at distance 12",
        "classifier pattern: flag scored 0.97",
    )
    monitored = policy.decide(
        InspectionContext(client_ip="10.10.0.5"), Findings(matches=(MATCH,)), now=SCHOOL_HOURS
    )
    assert monitored.reasons[-1] == "monitor mode: recorded, not blocked"


def test_schedule_wrapping_midnight(data_dir: Path) -> None:
    config = parse_config(
        """
policy:
  timezone: UTC
  groups:
    - name: boarders
      schedule: [{days: [fri], start: "22:00", end: "06:00"}]
      outside_mode: monitor
""",
        "t.yaml",
    )
    policy = Policy(config.policy)
    group = policy.group_for(InspectionContext())
    friday_late = datetime(2026, 11, 27, 23, 0, tzinfo=UTC)
    saturday_early = datetime(2026, 11, 28, 5, 0, tzinfo=UTC)
    saturday_late = datetime(2026, 11, 28, 23, 0, tzinfo=UTC)
    assert policy.mode_for(group, friday_late) == "block"
    assert policy.mode_for(group, saturday_early) == "block"
    assert policy.mode_for(group, saturday_late) == "monitor"


def test_verdict_record_holds_no_media(policy: Policy) -> None:
    findings = Findings(
        media_type="jpeg", size=1234, hashes={"sha256": "ab" * 32}, matches=(MATCH,)
    )
    record = policy.decide(InspectionContext(client_ip="10.20.0.5"), findings).to_dict()
    assert record["matches"][0]["bank"] == "incident-1"
    assert record["client"] == {"client_ip": "10.20.0.5", "direction": "upload"}
    assert set(record) >= {"id", "time", "decision", "reasons", "hashes", "group", "mode"}
    assert not any(isinstance(value, bytes) for value in record.values())
