"""The chaos run at full size: CHAOS_RUNS (default 100) seeded incidents with faults against the sandbox
(tests/e2e/test_chaos.py, as `make chaos` runs it). Prints `N of N consistent` and, for each incident
that was not, the seed that replays it. Target: 100 of 100.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict

REPO = Path(__file__).resolve().parents[1]
DEFAULT_RUNS = 100


def run() -> Dict[str, Any]:
    runs = int(os.environ.get("CHAOS_RUNS") or DEFAULT_RUNS)
    command = [sys.executable, "-m", "pytest", "tests/e2e/test_chaos.py", "-s", "-q", "-p", "no:cacheprovider"]
    process = subprocess.Popen(command, cwd=REPO, env=dict(os.environ, CHAOS_RUNS=str(runs)),
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert process.stdout is not None
    figure, replays = None, []
    for line in process.stdout:
        if line.startswith("seed ") or line.startswith("CHAOS_SEED=") or re.match(r"\d+ of \d+ consistent", line):
            print("  " + line.rstrip(), flush=True)
        found = re.match(r"(\d+) of (\d+) consistent", line)
        if found:
            figure = (int(found.group(1)), int(found.group(2)))
        if line.startswith("CHAOS_SEED="):
            replays.append(line.split()[0])
    process.wait()
    if figure is None:
        raise RuntimeError("the chaos run ended (exit %d) without its figure" % process.returncode)
    return {"consistent": figure[0], "runs": figure[1], "figure": "%d of %d consistent" % figure, "replay": replays}
