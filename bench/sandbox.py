"""Time for `stormctl sandbox up` (target: under 15 s on the emulator, 30 s on the real control plane) and
`down`, on a fresh state directory each run, and the control plane's resident memory with the default fleet
(budget 2 GiB).

Runs the CLI as a user would, in a temporary directory, RUNS times per Kubernetes backend; prints each
run and the slowest. Prints numbers; asserts nothing about time.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

RUNS = 2
TARGET_UP_SECONDS = {"emulator": 15.0, "control-plane": 30.0}
SETTLE_SECONDS = 5.0  # memory is read once the fleet's pods run, not mid-start


def _stormctl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "stormctl", *args], capture_output=True, text=True, timeout=180, env=dict(os.environ)
    )


def _resident_mib(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        for line in Path("/proc/%d/status" % pid).read_text().splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1])
    return round(total / 1024)


def _once(state_dir: Path, kube: str) -> dict[str, Any]:
    started = time.monotonic()
    up = _stormctl("sandbox", "up", "--dir", str(state_dir), "--kube", kube)
    up_seconds = time.monotonic() - started
    rss = None
    try:
        if up.returncode != 0:
            raise RuntimeError("sandbox up failed: %s" % up.stderr.strip())
        state = json.loads((state_dir / "state.json").read_text())
        services = sorted(state["services"])
        plane = [int(s["pid"]) for s in state["services"].values() if s.get("control_plane")]
        if plane:
            time.sleep(SETTLE_SECONDS)
            rss = _resident_mib(plane)
    finally:
        started = time.monotonic()
        down = _stormctl("sandbox", "down", "--dir", str(state_dir))
        down_seconds = time.monotonic() - started
    if down.returncode != 0:
        raise RuntimeError("sandbox down failed: %s" % down.stderr.strip())
    return {"up_seconds": round(up_seconds, 2), "down_seconds": round(down_seconds, 2), "services": services,
            "control_plane_rss_mib": rss}


def run() -> dict[str, Any]:
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="bench-sandbox-") as tmp:
        for kube, target in TARGET_UP_SECONDS.items():
            runs = []
            for index in range(RUNS):
                result = _once(Path(tmp) / ("%s-run%d" % (kube, index)), kube)
                runs.append(result)
                memory = "" if result["control_plane_rss_mib"] is None else ", control plane resident %d MiB" % (
                    result["control_plane_rss_mib"])
                print("sandbox up (%s) %.2f s, down %.2f s%s (%s)" % (
                    kube, result["up_seconds"], result["down_seconds"], memory, ", ".join(result["services"])),
                    flush=True)
            slowest = max(r["up_seconds"] for r in runs)
            print("sandbox up (%s): slowest %.2f s of %d runs (target < %.0f s)" % (kube, slowest, RUNS, target),
                  flush=True)
            results[kube] = {
                "up_seconds": [r["up_seconds"] for r in runs],
                "down_seconds": [r["down_seconds"] for r in runs],
                "up_seconds_max": slowest,
                "target_up_seconds": target,
                "control_plane_rss_mib": [r["control_plane_rss_mib"] for r in runs if r["control_plane_rss_mib"]],
            }
    return results


if __name__ == "__main__":
    print(json.dumps(run(), indent=2))
