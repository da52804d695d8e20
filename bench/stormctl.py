"""stormctl's cost over plain ansible-playbook (target: under 0.3 s) and the end-to-end time of a drill.

Overhead: `stormctl triage --json` against `ansible-playbook playbooks/triage.yml` on the same
inventory and sandbox, interleaved ROUNDS times (triage is read-only, so every round sees the same
world; the incident playbook's recovery waits would drown the difference). The overhead is the
median of the paired differences; triage's own sampling and a busy machine move single runs by
seconds, so it also prints stormctl's time outside `ansible_runner.run` (start-up, imports, set-up,
result handling). Drill: `stormctl drill market-open` from nothing, as `make demo` runs it
(sandbox up, storm, triage, incident, report, down). Prints numbers; asserts nothing about time.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
ROUNDS = 7
TARGET_OVERHEAD_SECONDS = 0.3


def _timed(command: list[str], env: dict[str, str], timeout: float) -> tuple[float, subprocess.CompletedProcess[str]]:
    started = time.monotonic()
    done = subprocess.run(
        command, capture_output=True, text=True, timeout=timeout, cwd=REPO, env=env, stdin=subprocess.DEVNULL
    )
    return time.monotonic() - started, done


def _overhead(tmp: Path) -> dict[str, Any]:
    from stormctl.sandbox import services

    state_dir = tmp / "sandbox"
    env = dict(os.environ, STORM_SANDBOX_DIR=str(state_dir), ANSIBLE_CONFIG=str(REPO / "ansible.cfg"))
    bin_dir = Path(sys.executable).parent
    services.up(state_dir)
    try:
        plain, wrapped, inside = [], [], []
        for round_ in range(ROUNDS):
            seconds, done = _timed(
                [str(bin_dir / "ansible-playbook"), "-i", "inventories/sandbox", "playbooks/triage.yml"], env, 300
            )
            if done.returncode != 0:
                raise RuntimeError("ansible-playbook triage failed: %s" % done.stdout[-1000:])
            plain.append(seconds)
            seconds, done = _timed(
                [
                    sys.executable,
                    "-m",
                    "stormctl",
                    "triage",
                    "--json",
                    "--incident-id",
                    "bench-%d" % round_,
                    "--artifacts-dir",
                    str(tmp / "artifacts"),
                ],
                env,
                300,
            )
            if done.returncode not in (0, 2):
                raise RuntimeError("stormctl triage failed (exit %d): %s" % (done.returncode, done.stderr[-1000:]))
            wrapped.append(seconds)
            inside.append(seconds - float(json.loads(done.stdout)["elapsed_seconds"]))
    finally:
        services.down(state_dir)
    overhead = statistics.median(w - p for w, p in zip(wrapped, plain))
    return {
        "ansible_playbook_triage_seconds": [round(s, 2) for s in plain],
        "stormctl_triage_seconds": [round(s, 2) for s in wrapped],
        "overhead_median_seconds": round(overhead, 2),
        "outside_runner_median_seconds": round(statistics.median(inside), 2),
        "overhead_target_seconds": TARGET_OVERHEAD_SECONDS,
        "overhead_within_target": overhead < TARGET_OVERHEAD_SECONDS,
    }


def _drill(tmp: Path) -> dict[str, Any]:
    env = dict(os.environ, STORM_SANDBOX_DIR=str(tmp / "drill-sandbox"), ANSIBLE_CONFIG=str(REPO / "ansible.cfg"))
    seconds, done = _timed(
        [
            sys.executable,
            "-m",
            "stormctl",
            "drill",
            "market-open",
            "--json",
            "--reports-dir",
            str(tmp / "reports"),
            "--artifacts-dir",
            str(tmp / "artifacts"),
        ],
        env,
        900,
    )
    try:
        result = json.loads(done.stdout)
    except ValueError:
        result = {}
    return {
        "drill_market_open_seconds": round(seconds, 1),
        "drill_exit_code": done.returncode,
        "drill_outcome": result.get("outcome"),
        "drill_rungs": [e["rung"] for e in result.get("timeline") or []],
        "drill_incident_playbook_seconds": result.get("elapsed_seconds"),
    }


def run() -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bench-stormctl-") as tmp:
        numbers = _overhead(Path(tmp))
        numbers.update(_drill(Path(tmp)))
    for key, value in numbers.items():
        print("%-34s %s" % (key, value), flush=True)
    return numbers


if __name__ == "__main__":
    print(json.dumps(run(), indent=2))
