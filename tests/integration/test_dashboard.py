"""The Grafana dashboard in deploy/grafana: every panel's PromQL and its alert annotation return data
from a real Prometheus scraping a real Redis, its exporter and the applications during a storm."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.sandbox import Sandbox, wait_for

pytestmark = pytest.mark.integration

DASHBOARD = Path(__file__).resolve().parents[2] / "deploy" / "grafana" / "redis-storm.json"
# What Grafana puts in place of the dashboard's variables when "All" is chosen.
VARIABLES = {"$instance": ".+", "$namespace": ".+", "$__rate_interval": "30s"}


def promql(expr: str) -> str:
    for name, value in VARIABLES.items():
        expr = expr.replace(name, value)
    assert "$" not in expr, "a variable the test does not know: %s" % expr
    return expr


def dashboard() -> dict[str, Any]:
    return dict(json.loads(DASHBOARD.read_text()))


def test_every_panel_and_the_alert_annotation_show_a_storm(calm_sandbox: Sandbox) -> None:
    board = dashboard()
    queries = {
        "%s / %s" % (panel["title"], target["refId"]): promql(target["expr"])
        for panel in board["panels"]
        for target in panel["targets"]
    }
    queries.update({"annotation %s" % a["name"]: promql(a["expr"]) for a in board["annotations"]["list"]})
    calm_sandbox.storm("market-open")
    try:
        missing: dict[str, str] = dict(queries)

        def all_answered() -> bool:
            for name, query in list(missing.items()):
                if calm_sandbox.prom(query):
                    del missing[name]
            return not missing

        wait_for(all_answered, 120, "every dashboard query to return data during the storm", interval=2)
    finally:
        calm_sandbox.calm()
    calm_sandbox.wait_quiet()


def test_panels_name_their_variables_and_never_interpolate_gaps() -> None:
    board = dashboard()
    declared = {"$" + v["name"] for v in board["templating"]["list"]} | {"$__rate_interval"}
    for panel in board["panels"]:
        assert panel["description"], panel["title"]
        # a gap is missing data (a stale exporter at maxclients), never a straight line across it
        assert panel["fieldConfig"]["defaults"]["custom"]["spanNulls"] is False, panel["title"]
        for target in panel["targets"]:
            used = {token for token in declared if token in target["expr"]}
            assert "$" not in promql(target["expr"]) and used <= declared, target["expr"]
