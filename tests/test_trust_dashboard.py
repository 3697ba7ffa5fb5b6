"""The trust dashboard shows each subscription of each school on its own (adversarial pass a35
F7): taken together per school, an `exchange: file` subscription that syncs every few minutes
hid a trust publication that had stopped."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.support.dashboards import TRUST_DASHBOARD, queries, substitute

VARIABLES = {"school": ".*", "__rate_interval": "1m", "__range": "1h", "__interval": "15s"}
METRIC = re.compile(r"\bschoolgate_bank_subscription_[a-z_]+")
# The panels that show how long ago something happened, and the metric each reads.
AGES = {
    "Since the last check with the trust": "schoolgate_bank_subscription_checked_timestamp_seconds",
    "Since the last good sync with the trust": (
        "schoolgate_bank_subscription_synced_timestamp_seconds"
    ),
    "Age of the trust banks applied": "schoolgate_bank_subscription_published_timestamp_seconds",
}


def test_every_subscription_query_keeps_the_subscription_label() -> None:
    found = [q for q in queries({TRUST_DASHBOARD}) if METRIC.search(q.expr)]
    assert len(found) >= 6
    for query in found:
        for grouping in re.findall(r"\bby \(([^)]*)\)", query.expr):
            assert {"school", "subscription"} <= {g.strip() for g in grouping.split(",")}, query


@pytest.mark.parametrize("title", sorted(AGES))
def test_a_stuck_subscription_is_not_hidden_by_one_that_syncs(title: str, tmp_path: Path) -> None:
    """promtool evaluates the panel's own query: a school's `trust` subscription last seen at 0,
    its `partner` file exchange every minute; the panel shows the trust's three hours."""
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool not found: `make test` installs it (Debian package prometheus)")
    (query,) = [q for q in queries({TRUST_DASHBOARD}) if q.panel.startswith(title)]
    metric = AGES[title]
    test = {
        "rule_files": [],
        "evaluation_interval": "1m",
        "tests": [{
            "interval": "1m",
            "input_series": [
                {"series": f'{metric}{{school="north",subscription="trust"}}', "values": "0x200"},
                {"series": f'{metric}{{school="north",subscription="partner"}}',
                 "values": "0+60x200"},
            ],
            "promql_expr_test": [{
                "expr": substitute(query.expr, VARIABLES),
                "eval_time": "3h",
                "exp_samples": [
                    {"labels": '{school="north",subscription="partner"}', "value": 0},
                    {"labels": '{school="north",subscription="trust"}', "value": 10800},
                ],
            }],
        }],
    }  # fmt: skip
    path = tmp_path / "dashboard_test.yml"
    path.write_text(yaml.safe_dump(test))
    result = subprocess.run([promtool, "test", "rules", str(path)], capture_output=True,
                            text=True, timeout=60, check=False)  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
