"""Triage names the right culprit of every storm shape, and never a wrong one, at the moments a storm looks least
like itself.

Each scenario's storm is raised on the baseline world and triage.yml runs right after a blip (every client
dropped while triage samples Redis), mid-wave (triage starting while the pools reconnect) and at the steady
state (stormctl.sandbox.culprit_drill). At the steady state the verdict names the scenario's culprits, in order;
while Redis answers, the top offender is counted by Redis' own measure (held, opened per second, young pods),
never the apps' gauges. Right after a blip and mid-wave a churner may have gone quiet (its pods back off or
restart), so Redis shows no storm of its own: then the verdict may say the culprit is uncertain, and why, but
never name another workload. `python -m bench culprit` repeats this 20 times per scenario and prints
`culprit right N of M`, counting an uncertain verdict as a miss.
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
    shown = json.dumps(seen, indent=1)
    for outcome in outcomes:
        assert outcome.verdict is not None, shown
        record = outcome.verdict.get("culprit") or {}
        if outcome.point != "steady" and outcome.redis_answered and not record.get("certain"):
            assert record.get("why") and record.get("workloads") == [], shown  # uncertain, and says why
            assert "top offender" not in outcome.verdict["summary"], shown
            continue
        assert outcome.right, shown
        top = outcome.verdict["offenders"][0]
        assert "%s/%s" % (top["namespace"], top["name"]) == scenario.culprit_key, shown
        if outcome.redis_answered:  # counted by Redis' measure of the storm's shape
            assert top["connections_from"] in ("redis_held", "redis_churn", "redis_burst", "redis_churn_burst"), shown
            assert record["connections_from"] == top["connections_from"], shown
        else:  # a full Redis refused triage: the apps' gauges are all there is, and the verdict says so
            assert top["connections_from"] == "prometheus", shown
