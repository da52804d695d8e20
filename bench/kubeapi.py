"""Kubernetes API emulator: start-up time and request latency through the official client (prints numbers)."""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import kubernetes

from stormctl.sandbox.kubeapi.harness import deployment, pod, running_kubeapi

ROUNDS = 300
PODS = 1000


def _timed(call: Callable[[], Any], rounds: int) -> dict[str, float]:
    samples = []
    for _ in range(rounds):
        started = time.perf_counter()
        call()
        samples.append((time.perf_counter() - started) * 1000)
    samples.sort()
    return {"p50_ms": round(statistics.median(samples), 2), "p99_ms": round(samples[int(len(samples) * 0.99) - 1], 2)}


def _rss_mb(pid: int) -> float:
    for line in Path("/proc/%d/status" % pid).read_text().splitlines():
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1024, 1)
    return 0.0


def run() -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bench-kubeapi-") as tmp:
        started = time.monotonic()
        with running_kubeapi(Path(tmp) / "state") as api:
            startup = time.monotonic() - started
            api.seed([deployment("trading", "trading-api", replicas=3)])
            api.seed([pod("trading", "trading-api-%04d" % i, {"app": "trading-api"}, ip="127.1.%d.%d" % divmod(i, 250))
                      for i in range(PODS)])
            client = api.client("operator")
            apps, core = kubernetes.client.AppsV1Api(client), kubernetes.client.CoreV1Api(client)
            replicas = iter(range(10**9))
            result = {
                "startup_s": round(startup, 2),
                "get_deployment": _timed(lambda: apps.read_namespaced_deployment("trading-api", "trading"), ROUNDS),
                "patch_scale": _timed(lambda: apps.patch_namespaced_deployment_scale(
                    "trading-api", "trading", {"spec": {"replicas": next(replicas) % 50}}), ROUNDS),
                "list_%d_pods_by_label" % PODS: _timed(lambda: core.list_namespaced_pod(
                    "trading", label_selector="app=trading-api", _preload_content=False).read(), 20),
                "rss_mb_with_%d_pods" % PODS: _rss_mb(api.proc.pid) if api.proc is not None else None,
            }
    for key, value in result.items():
        print("kubeapi %-26s %s" % (key, value), flush=True)
    return result


if __name__ == "__main__":
    run()
