"""deploy/prometheus: the scrape config and alert rules pass promtool's checks and unit tests."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO_ROOT

PROMETHEUS_DIR = REPO_ROOT / "deploy" / "prometheus"
RULES = sorted((PROMETHEUS_DIR / "rules").glob("*.yml"))
RULE_TESTS = sorted((PROMETHEUS_DIR / "tests").glob("*.yml"))


def promtool(*args: str | Path, cwd: Path = REPO_ROOT) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("promtool")
    if binary is None:
        pytest.fail("promtool not found: `make test` installs it (Debian package prometheus)")
    return subprocess.run(
        [binary, *map(str, args)], capture_output=True, text=True, timeout=120, cwd=cwd
    )


def alert_names() -> set[str]:
    names: set[str] = set()
    for path in RULES:
        for group in yaml.safe_load(path.read_text())["groups"]:
            names.update(rule["alert"] for rule in group["rules"] if "alert" in rule)
    return names


def test_rules_pass_promtool_check() -> None:
    assert RULES
    result = promtool("check", "rules", *RULES)
    assert result.returncode == 0, result.stdout + result.stderr


def test_scrape_config_passes_promtool_check() -> None:
    result = promtool("check", "config", PROMETHEUS_DIR / "prometheus.yml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 rule files found" in result.stdout


def test_rule_unit_tests_pass() -> None:
    assert RULE_TESTS
    result = promtool("test", "rules", *RULE_TESTS)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("SUCCESS") == len(RULE_TESTS)


def test_every_alert_is_tested_firing_and_not_firing() -> None:
    firing: set[str] = set()
    silent: set[str] = set()
    for path in RULE_TESTS:
        for case in yaml.safe_load(path.read_text())["tests"]:
            for check in case.get("alert_rule_test", []):
                (firing if check.get("exp_alerts") else silent).add(check["alertname"])
    alerts = alert_names()
    assert {"SchoolgateDown", "SchoolgateWebhookFailing", "SchoolgateAlertOutboxGrowing"} <= alerts
    assert {"SchoolgateBlockSpike", "SchoolgateModelNotLoaded", "SchoolgateBankStale"} <= alerts
    assert alerts - firing == set(), "alerts never shown firing"
    assert alerts - silent == set(), "alerts never shown not firing"


def test_unit_tests_catch_a_broken_rule(tmp_path: Path) -> None:
    """The rule tests are not vacuous: a rule with a wrong threshold makes them fail."""
    copy = tmp_path / "prometheus"
    shutil.copytree(PROMETHEUS_DIR, copy)
    rules = copy / "rules" / "schoolgate.rules.yml"
    text = rules.read_text()
    broken = text.replace("schoolgate_alert_outbox_oldest_pending_age_seconds > 900", "x > 9000")
    assert broken != text
    rules.write_text(broken)
    result = promtool("test", "rules", *sorted((copy / "tests").glob("*.yml")))
    assert result.returncode != 0
    assert "SchoolgateAlertDelayed" in result.stdout + result.stderr
