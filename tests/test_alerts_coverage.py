"""Whose alerts each receiver gets, said in `check-config` and at start (adversarial pass a38
A22: a stricter `year9` group inside a school's subnets took its pupils' alerts away from that
school's DSL while `check-config` said OK)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from schoolgate.alerts.coverage import routing_notes
from schoolgate.alerts.service import AlertService
from schoolgate.cli.app import main
from schoolgate.config import parse_config

SHARED_SITE = """
data_dir: {data_dir}
policy:
  groups:
{year9}
    - {{name: north-pupils, subnets: [192.0.2.0/25], mode: block}}
    - {{name: south-pupils, subnets: [192.0.2.128/25], mode: block}}
  default_group: north-pupils
alerts:
  receivers:
    - {{name: north-dsl, url: "http://127.0.0.1:9/n", secret: s, groups: [north-pupils]}}
    - {{name: south-dsl, url: "http://127.0.0.1:9/s", secret: s, groups: [south-pupils]}}
    - {{name: trust-lead, url: "http://127.0.0.1:9/t", secret: s}}
"""
YEAR9 = "    - {name: year9, subnets: [192.0.2.0/28], mode: block}"


def _config(tmp_path: Path, year9: str = YEAR9) -> str:
    return SHARED_SITE.format(data_dir=tmp_path / "data", year9=year9)


def test_a_group_that_takes_part_of_a_schools_subnets_is_named_with_who_loses_it(
    tmp_path: Path,
) -> None:
    config = parse_config(_config(tmp_path), "gw1.yaml")
    (note,) = routing_notes(config.alerts, config.policy)
    assert note.startswith("the alerts of group 'year9' go to trust-lead only")
    assert "north-dsl (north-pupils: 192.0.2.0/28) no longer get those alerts" in note
    assert "south-dsl" not in note
    assert "Add 'year9' to their groups" in note


def test_no_note_when_every_group_is_routed_or_nobody_routes_by_group(tmp_path: Path) -> None:
    config = parse_config(_config(tmp_path, year9=""), "gw1.yaml")
    assert routing_notes(config.alerts, config.policy) == []
    named = _config(tmp_path).replace("groups: [north-pupils]", "groups: [north-pupils, year9]")
    config = parse_config(named, "gw1.yaml")
    assert routing_notes(config.alerts, config.policy) == []
    unrouted = (
        _config(tmp_path)
        .replace(", groups: [north-pupils]", "")
        .replace(", groups: [south-pupils]", "")
    )
    config = parse_config(unrouted, "gw1.yaml")
    assert routing_notes(config.alerts, config.policy) == []


def test_a_group_after_the_one_it_overlaps_takes_nothing_but_is_still_unrouted(
    tmp_path: Path,
) -> None:
    text = _config(tmp_path, year9="").replace(
        "  default_group:",
        "    - {name: year9, subnets: [192.0.2.0/28], mode: block}\n  default_group:",
    )
    config = parse_config(text, "gw1.yaml")
    (note,) = routing_notes(config.alerts, config.policy)
    assert (
        note
        == "the alerts of group 'year9' go to trust-lead only: no receiver with groups names it"
    )


def test_check_config_and_the_service_say_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "gw1.yaml"
    path.write_text(_config(tmp_path))
    assert main(["check-config", str(path)]) == 0
    assert "note: the alerts of group 'year9' go to trust-lead only" in capsys.readouterr().out
    with caplog.at_level(logging.WARNING, "schoolgate.alerts"):
        AlertService.open(parse_config(_config(tmp_path), "gw1.yaml")).close()
    assert "alert routing: the alerts of group 'year9'" in caplog.text


def test_a_group_another_schools_dsl_names_is_said_to_take_pupils_from_their_own(
    tmp_path: Path,
) -> None:
    """a43 F4: year9 (part of north's subnets) added to south's DSL by mistake: north pupils'
    alerts went to the other school's DSL, and no note said so."""
    text = _config(tmp_path).replace("groups: [south-pupils]", "groups: [south-pupils, year9]")
    config = parse_config(text, "gw1.yaml")
    (note,) = routing_notes(config.alerts, config.policy)
    assert note.startswith("the alerts of group 'year9' go to south-dsl, trust-lead")
    assert "north-dsl (north-pupils: 192.0.2.0/28) no longer get those alerts" in note


def test_the_placer_finds_a_devices_group_under_todays_policy(tmp_path: Path) -> None:
    """What a43 F9's routing uses: the group a pending alert's device is in now."""
    from dataclasses import replace

    from schoolgate.alerts.model import Alert, AlertDetails
    from schoolgate.alerts.service import placer
    from tests.support.alert_helpers import make_verdict

    config = parse_config(_config(tmp_path, year9=""), "gw1.yaml")
    details = AlertDetails.from_verdict(make_verdict(ip="192.0.2.200"), "S")
    alert = Alert("a" * 32, "decision", "pending", "k", replace(details, group="renamed"))
    assert placer(config)(alert) == "south-pupils"
    elsewhere = replace(details, device=replace(details.device, ip="203.0.113.9", mac=None))
    assert placer(config)(replace(alert, details=elsewhere)) is None
