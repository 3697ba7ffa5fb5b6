"""Reading deploy/grafana's dashboards for tests: panels, their PromQL, Grafana's variables."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.conftest import REPO_ROOT

GRAFANA_DIR = REPO_ROOT / "deploy" / "grafana"
DASHBOARD_FILES = sorted((GRAFANA_DIR / "dashboards").glob("*.json"))
# Panels that draw data (text and row panels carry no queries).
DATA_PANELS = ("timeseries", "stat", "bargauge", "gauge", "table", "barchart", "piechart")
UNIT_PANELS = ("timeseries", "stat", "bargauge", "gauge")


@dataclass(frozen=True)
class Query:
    dashboard: str
    panel: str
    ref_id: str
    expr: str

    def __str__(self) -> str:
        return f"{self.dashboard} / {self.panel} / {self.ref_id}: {self.expr}"


def load(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text("utf-8"))
    return data


def panels(dashboard: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel, including those nested in collapsed rows."""
    for panel in dashboard.get("panels", []):
        yield panel
        yield from panel.get("panels", [])


TRUST_DASHBOARD = "schoolgate-trust"  # a trust's schools side by side (needs subscriptions)


def queries(uids: set[str] | None = None) -> list[Query]:
    """Every panel query, of the dashboards `uids` (default: all)."""
    found: list[Query] = []
    for path in DASHBOARD_FILES:
        dashboard = load(path)
        if uids is not None and dashboard["uid"] not in uids:
            continue
        for panel in panels(dashboard):
            for target in panel.get("targets", []):
                found.append(
                    Query(dashboard["uid"], panel["title"], target["refId"], target["expr"])
                )
    return found


def substitute(expr: str, variables: Mapping[str, str]) -> str:
    """Replace Grafana variables ($name, ${name}) as Grafana would before sending the query."""

    def one(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        if name not in variables:
            raise KeyError(f"no value for Grafana variable {name!r} in {expr}")
        return variables[name]

    return re.sub(r"\$\{(\w+)\}|\$(\w+)", one, expr)
