"""How often triage names the right culprit: every scenario, at every point of its storm, ROUNDS times.

Starts its own sandbox; for each scenario (big-storm aside, it is the triage benchmark's load) raises
the storm once and then, ROUNDS times, runs playbooks/triage.yml right after a blip, mid-wave and at
the steady state (stormctl.sandbox.culprit_drill), checking the culprits named against the scenario's.
A round is right when all three verdicts are. Prints `culprit right N of M` per scenario (M rounds)
and the misses; asserts nothing.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

from bench.triage import REPO, _play, _stormctl
from stormctl.sandbox.culprit_drill import POINTS, CulpritDrill
from stormctl.sandbox.scenario import scenario_names

ROUNDS = int(os.environ.get("BENCH_CULPRIT_ROUNDS", "20"))
SKIPPED = ("big-storm",)


def _triage(state_dir: Path, outputs: Path) -> Optional[Dict[str, Any]]:
    output = outputs / ("verdict-%d.json" % time.monotonic_ns())
    try:
        _play(state_dir, REPO / "playbooks" / "triage.yml", {"triage_output_file": str(output)})
    except RuntimeError:
        return None  # a failed run is a wrong verdict, counted as such
    return dict(json.loads(output.read_text())) if output.exists() else None


def run() -> Dict[str, Any]:
    results: Dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="bench-culprit-") as tmp:
        base = Path(tmp)
        state_dir = base / "run"
        _stormctl(state_dir, "up")
        # one admin connection held from before the first storm: a full Redis refuses a new one
        drill = CulpritDrill(state_dir, lambda: _triage(state_dir, base))
        try:
            for name in [n for n in scenario_names() if n not in SKIPPED]:
                misses: List[str] = []
                right = 0
                per_point = dict.fromkeys(POINTS, 0)
                drill.calm()
                scenario = drill.storm(name)
                for index in range(ROUNDS):
                    outcomes = [drill.at(point, scenario) for point in POINTS]
                    for outcome in outcomes:
                        per_point[outcome.point] += int(outcome.right)
                        misses += ["round %d %s: %s" % (index + 1, outcome.point, p) for p in outcome.problems]
                    right += int(all(o.right for o in outcomes))
                print("%s: culprit right %d of %d (%s)" % (name, right, ROUNDS, ", ".join(
                    "%s %d" % kv for kv in per_point.items())), flush=True)
                for miss in misses:
                    print("  miss: %s" % miss, flush=True)
                results[name] = {"right": right, "rounds": ROUNDS, "per_point": per_point, "misses": misses}
        finally:
            drill.close()
            _stormctl(state_dir, "down")
    return results


if __name__ == "__main__":
    print(json.dumps(run(), indent=2))
