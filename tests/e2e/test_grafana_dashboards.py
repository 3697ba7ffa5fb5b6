"""deploy/grafana: dashboards are well-formed, parameterised by data source, and carry units."""

from __future__ import annotations

import json
from typing import Any

import pytest
import yaml

from tests.support.dashboards import (
    DASHBOARD_FILES,
    DATA_PANELS,
    GRAFANA_DIR,
    TRUST_DASHBOARD,
    UNIT_PANELS,
    load,
    panels,
    queries,
    substitute,
)

DATASOURCE = "${datasource}"


def test_there_are_an_overview_and_a_safeguarding_dashboard() -> None:
    uids = {load(path)["uid"] for path in DASHBOARD_FILES}
    assert {"schoolgate-overview", "schoolgate-safeguarding", TRUST_DASHBOARD} <= uids


@pytest.mark.parametrize("path", DASHBOARD_FILES, ids=lambda p: p.name)
def test_dashboard_structure(path: Any) -> None:
    text = path.read_text("utf-8")
    dashboard = json.loads(text)  # valid JSON
    assert dashboard.get("uid")
    assert len(dashboard["uid"]) <= 40
    assert dashboard.get("title")
    assert "id" not in dashboard or dashboard["id"] is None  # provisioning assigns ids

    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    source = variables["datasource"]
    assert (source["type"], source["query"]) == ("datasource", "prometheus")
    assert "schoolgate-prometheus" not in text  # no data source is hard-coded

    ids = [panel["id"] for panel in panels(dashboard)]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for panel in panels(dashboard):
        where = f"{path.name}: panel {panel['id']} {panel.get('title')!r}"
        if panel["type"] not in DATA_PANELS:
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": DATASOURCE}, where
        assert panel["targets"], where
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == DATASOURCE, where
            assert target["expr"].strip(), where
        if panel["type"] in UNIT_PANELS:
            assert panel["fieldConfig"]["defaults"].get("unit"), f"{where}: no unit"
        assert panel.get("description"), f"{where}: say what the panel shows"
    for variable in variables.values():
        if variable["type"] == "query":
            assert variable["datasource"]["uid"] == DATASOURCE


@pytest.mark.parametrize("path", DASHBOARD_FILES, ids=lambda p: p.name)
def test_panels_do_not_overlap(path: Any) -> None:
    taken: set[tuple[int, int]] = set()
    for panel in panels(load(path)):
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24
        cells = {
            (x, y)
            for x in range(grid["x"], grid["x"] + grid["w"])
            for y in range(grid["y"], grid["y"] + grid["h"])
        }
        assert not cells & taken, f"panel {panel['id']} overlaps another"
        taken |= cells


def test_every_query_uses_known_variables_and_filters_by_school_and_appliance() -> None:
    found = queries()
    assert len(found) >= 20
    variables = {"instance": ".*", "school": ".*", "__rate_interval": "1m", "__range": "1h",
                 "__interval": "15s"}  # fmt: skip
    for query in found:
        expr = substitute(query.expr, variables)
        assert "$" not in expr, query
        assert 'school=~".*"' in expr, f"{query}: not filtered by the school variable"
        if query.dashboard != TRUST_DASHBOARD:  # the trust's compares schools, not appliances
            assert 'instance=~".*"' in expr, f"{query}: not filtered by the appliance variable"
        else:
            assert "by (school)" in expr or "by (school, " in expr, f"{query}: not per school"


def test_provisioning_files() -> None:
    source = yaml.safe_load((GRAFANA_DIR / "provisioning/datasources/schoolgate.yaml").read_text())
    (datasource,) = source["datasources"]
    assert datasource["type"] == "prometheus"
    assert datasource["jsonData"]["timeInterval"]
    boards = yaml.safe_load((GRAFANA_DIR / "provisioning/dashboards/schoolgate.yaml").read_text())
    (provider,) = boards["providers"]
    assert provider["type"] == "file"
    assert provider["options"]["path"]


def test_substitute_fails_on_an_unknown_variable() -> None:
    with pytest.raises(KeyError):
        substitute("rate(x[$__nope])", {"instance": "a"})
    assert substitute('x{i=~"${instance}"}[$__range]', {"instance": "a", "__range": "1h"}) == (
        'x{i=~"a"}[1h]'
    )
