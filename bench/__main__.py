"""Run every benchmark in order and print one summary; `python -m bench NAME...` runs a subset."""

from __future__ import annotations

import importlib
import json
import sys
import time

BENCHMARKS = ["redis_clients", "redis_cluster", "kubeapi", "control_plane", "sandbox", "fleet", "triage", "culprit",
              "incident", "stormctl", "chaos"]


def main(names: list[str]) -> int:
    results: dict[str, object] = {}
    failed = []
    for name in names or BENCHMARKS:
        print("== bench %s" % name, flush=True)
        started = time.monotonic()
        try:
            module = importlib.import_module("bench.%s" % name)
            results[name] = module.run()
        except Exception as exc:  # one broken benchmark must not hide the others' numbers
            failed.append(name)
            results[name] = {"error": "%s: %s" % (type(exc).__name__, exc)}
        print("== bench %s took %.1f s" % (name, time.monotonic() - started), flush=True)
    print(json.dumps(results, indent=2, default=str))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
