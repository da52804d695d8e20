"""Time for `stormctl sandbox up` (target: under 15 s) and `down`, on a fresh state directory each run.

Runs the CLI as a user would, in a temporary directory, RUNS times; prints each run and the
slowest. Prints numbers; asserts nothing about time.
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
TARGET_UP_SECONDS = 15.0


def _stormctl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "stormctl", *args], capture_output=True, text=True, timeout=180, env=dict(os.environ)
    )


def _once(state_dir: Path) -> dict[str, Any]:
    started = time.monotonic()
    up = _stormctl("sandbox", "up", "--dir", str(state_dir))
    up_seconds = time.monotonic() - started
    try:
        if up.returncode != 0:
            raise RuntimeError("sandbox up failed: %s" % up.stderr.strip())
        state = json.loads((state_dir / "state.json").read_text())
        services = sorted(state["services"])
    finally:
        started = time.monotonic()
        down = _stormctl("sandbox", "down", "--dir", str(state_dir))
        down_seconds = time.monotonic() - started
    if down.returncode != 0:
        raise RuntimeError("sandbox down failed: %s" % down.stderr.strip())
    return {"up_seconds": round(up_seconds, 2), "down_seconds": round(down_seconds, 2), "services": services}


def run() -> dict[str, Any]:
    runs = []
    with tempfile.TemporaryDirectory(prefix="bench-sandbox-") as tmp:
        for index in range(RUNS):
            result = _once(Path(tmp) / ("run%d" % index))
            runs.append(result)
            print(
                "sandbox up %.2f s, down %.2f s (%s)"
                % (result["up_seconds"], result["down_seconds"], ", ".join(result["services"])),
                flush=True,
            )
    slowest = max(r["up_seconds"] for r in runs)
    print("sandbox up: slowest %.2f s of %d runs (target < %.0f s)" % (slowest, RUNS, TARGET_UP_SECONDS), flush=True)
    return {
        "up_seconds": [r["up_seconds"] for r in runs],
        "down_seconds": [r["down_seconds"] for r in runs],
        "up_seconds_max": slowest,
        "target_up_seconds": TARGET_UP_SECONDS,
    }


if __name__ == "__main__":
    print(json.dumps(run(), indent=2))
