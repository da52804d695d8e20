"""Triage names the right culprit of every storm shape at the moments a storm looks least like itself.

Each scenario's storm is raised on the baseline world and triage.yml runs right after a blip (every client
dropped while triage samples Redis), mid-wave (triage starting while the pools reconnect) and at the steady
state (stormctl.sandbox.culprit_drill). Every verdict must name the scenario's culprits, in order; while Redis
answers, the top offender is counted by Redis' own measure (held, opened per second, young pods), never the
apps' gauges. `python -m bench culprit` repeats this 20 times per scenario and prints `culprit right N of M`.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from stormctl.sandbox.culprit_drill import POINTS, CulpritDrill
from stormctl.sandbox.scenario import scenario_names
from tests.e2e.ladder_support import triage
from tests.fixtures.sandbox import Sandbox

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]

# big-storm is the triage benchmark's load, not a storm shape of its own
SCENARIOS = [name for name in scenario_names() if name != "big-storm"]


@pytest.mark.parametrize("name", SCENARIOS)
def test_triage_names_the_culprit_after_a_blip_mid_wave_and_steady(calm_sandbox: Sandbox, tmp_path: Path,
                                                                   name: str) -> None:
    box = calm_sandbox
    runs = iter(range(1000))
    drill = CulpritDrill(box.dir, lambda: triage(box, tmp_path / ("run-%d" % next(runs))).verdict)
    try:
        scenario = drill.storm(name)
        outcomes = [drill.at(point, scenario) for point in POINTS]
    finally:
        drill.close()
    seen = {o.point: {"problems": o.problems, "redis_answered": o.redis_answered,
                      "summary": (o.verdict or {}).get("summary"), "culprit": (o.verdict or {}).get("culprit")}
            for o in outcomes}
    assert [o.point for o in outcomes if o.right] == list(POINTS), json.dumps(seen, indent=1)
    for outcome in outcomes:
        assert outcome.verdict is not None
        top = outcome.verdict["offenders"][0]
        assert "%s/%s" % (top["namespace"], top["name"]) == scenario.culprit_key, seen
        if outcome.redis_answered:  # counted by Redis' measure of the storm's shape
            assert top["connections_from"] in ("redis_held", "redis_churn", "redis_burst", "redis_churn_burst"), seen
            assert outcome.verdict["culprit"]["connections_from"] == top["connections_from"], seen
        else:  # a full Redis refused triage: the apps' gauges are all there is, and the verdict says so
            assert top["connections_from"] == "prometheus", seen
