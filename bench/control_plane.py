"""Time to a ready control plane (etcd, kube-apiserver, kube-controller-manager, metrics-server, CRDs)
with the binaries cached, and its resident memory; also the build time when `make kube` had to build.

Prints numbers; asserts nothing about time. Budgets (issue 15): up <= 30 s, resident memory <= 2 GiB,
a build from scratch <= 20 min on 2 cores.
"""

from __future__ import annotations

import io
import json
import tempfile
import time
from pathlib import Path
from typing import Any

from stormctl.sandbox.kube import build
from stormctl.sandbox.kube.controlplane import ControlPlane

SETTLE_SECONDS = 5.0  # memory is read after the controllers' first sync, not mid-start


def run() -> dict[str, Any]:
    started = time.monotonic()
    output = io.StringIO()
    directory = build.build(out=output)
    build_seconds = round(time.monotonic() - started, 1)
    manifest = json.loads((directory / build.MANIFEST).read_text())
    built_now = "building" in output.getvalue()
    if built_now:
        print("control plane build: %.0f s (%s)" % (build_seconds, manifest["build_seconds"]), flush=True)
    with tempfile.TemporaryDirectory(prefix="bench-control-plane-") as tmp:
        plane = ControlPlane(Path(tmp))
        started = time.monotonic()
        with plane:
            up_seconds = round(time.monotonic() - started, 2)
            print("sandbox control plane up: %.1f s (%s)" % (up_seconds, plane.startup_seconds), flush=True)
            time.sleep(SETTLE_SECONDS)
            rss = plane.resident_memory()
            print("control plane resident memory: %.0f MiB" % (rss / 2**20), flush=True)
    return {
        "up_seconds": up_seconds,
        "startup_seconds": plane.startup_seconds,
        "resident_memory_mib": round(rss / 2**20),
        "build_seconds": build_seconds if built_now else None,
        "versions": manifest["versions"],
    }


if __name__ == "__main__":
    print(json.dumps(run(), indent=2))
