"""Triage names the right culprit at every point of every storm: right after a blip, mid-wave and steady.

Each scenario's storm is raised on the baseline world; then triage.yml runs while a blip drops every
client (its sampling window opens on the blip), again as the pools reconnect, and once more when the
storm is steady. Every verdict must name the scenario's culprits, in order; while Redis answered triage,
from Redis' own measure (never the apps' gauges). `python -m bench culprit` repeats this 20 times per
scenario.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from stormctl.sandbox.culprit_drill import POINTS, CulpritDrill
from tests.e2e.ladder_support import SCENARIO_DIR, triage
from tests.fixtures.sandbox import Sandbox

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]

# Every storm the sandbox knows but big-storm, the triage benchmark's load.
SCENARIOS = sorted(p.stem for p in SCENARIO_DIR.glob("*.yml") if p.stem not in ("world", "big-storm"))


@pytest.mark.parametrize("name", SCENARIOS)
def test_triage_names_the_culprit_right_after_a_blip_mid_wave_and_steady(calm_sandbox: Sandbox, tmp_path: Path,
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
    assert all(o.right for o in outcomes), json.dumps(seen, indent=1)
    # the scenario's storms Redis answers in (not full) are named from Redis' own measure at every point
    for outcome in outcomes:
        if outcome.redis_answered:
            assert outcome.verdict is not None
            assert outcome.verdict["offenders"][0]["connections_from"].startswith("redis_"), seen
