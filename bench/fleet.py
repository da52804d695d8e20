"""The client fleet's cost and reaction time: CPU and memory holding ~5,000 Redis connections (the big-storm
scenario), and how fast a scale change shows in Redis' connected_clients."""

from __future__ import annotations

import json
import os
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any, Callable

import redis
from kubernetes import client

from stormctl.sandbox import services

CPU_SAMPLE_SECONDS = 10.0
TICKS = os.sysconf("SC_CLK_TCK")


def _cpu_seconds(pid: int) -> float:
    fields = Path("/proc/%d/stat" % pid).read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def _rss_mib(pid: int) -> float:
    for line in Path("/proc/%d/status" % pid).read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024.0
    return 0.0


def _wait(condition: Callable[[], Any], timeout: float, what: str, interval: float = 0.02) -> float:
    """Seconds until ``condition`` held; raises when it never did."""
    start = time.monotonic()
    while True:
        try:
            if condition():
                return time.monotonic() - start
        except redis.RedisError:
            pass
        if time.monotonic() - start > timeout:
            raise TimeoutError("%s did not happen within %.0f s" % (what, timeout))
        time.sleep(interval)


def _post(url: str, body: dict[str, Any]) -> Any:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.loads(response.read())


def _client_ips(monitor: redis.Redis, name: str) -> set[str]:
    return {c["addr"].rsplit(":", 1)[0] for c in monitor.client_list() if c.get("name") == name}


def _scale_reaction(monitor: redis.Redis, apps: Any, namespace: str, name: str, replicas: int) -> float:
    """Seconds from a /scale write until Redis holds connections from exactly ``replicas`` pod IPs of the workload."""
    apps.patch_namespaced_deployment_scale(name, namespace, {"spec": {"replicas": replicas}})
    return _wait(lambda: len(_client_ips(monitor, name)) == replicas, 30,
                 "scale of %s to %d to show" % (name, replicas))


def run() -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bench-fleet-") as tmp:
        state_dir = Path(tmp) / "run"
        started = time.monotonic()
        report = services.up(state_dir, maxclients=1000)
        up_seconds = time.monotonic() - started
        try:
            pid = int(report["services"]["fleet"]["pid"])
            fleet_url = report["fleet"]["url"]
            conf = client.Configuration()
            conf.host = report["kube"]["api"]
            conf.api_key = {"authorization": "Bearer %s" % report["kube"]["tokens"]["operator"]}
            apps = client.AppsV1Api(client.ApiClient(conf))
            monitor = redis.Redis(host=report["redis"]["host"], port=report["redis"]["port"],
                                  password=report["redis"]["password"], single_connection_client=True,
                                  socket_timeout=5)
            try:
                # A quiet baseline first: how fast one scale change reaches Redis.
                scale_up = _scale_reaction(monitor, apps, "wallet", "wallet-service", 6)
                scale_down = _scale_reaction(monitor, apps, "wallet", "wallet-service", 2)

                _post(fleet_url + "/storm", {"scenario": "big-storm"})
                reach = _wait(lambda: int(monitor.info("clients")["connected_clients"]) >= 4800, 180,
                              "5,000 connections", interval=0.2)
                connections = int(monitor.info("clients")["connected_clients"])
                cpu_before, wall_before = _cpu_seconds(pid), time.monotonic()
                time.sleep(CPU_SAMPLE_SECONDS)
                cpu = (_cpu_seconds(pid) - cpu_before) / (time.monotonic() - wall_before)
                rss = _rss_mib(pid)
                storm_scale_up = _scale_reaction(monitor, apps, "wallet", "wallet-service", 6)
                storm_scale_down = _scale_reaction(monitor, apps, "wallet", "wallet-service", 2)
                _post(fleet_url + "/calm", {})
            finally:
                monitor.close()
        finally:
            services.down(state_dir)
    return {
        "sandbox_up_seconds": round(up_seconds, 2),
        "fleet_connections": connections,
        "seconds_to_hold_5000": round(reach, 1),
        "fleet_cpu_cores_at_5000": round(cpu, 3),
        "fleet_rss_mib_at_5000": round(rss, 1),
        "scale_up_visible_seconds": round(scale_up, 3),
        "scale_down_visible_seconds": round(scale_down, 3),
        "scale_up_visible_seconds_at_5000": round(storm_scale_up, 3),
        "scale_down_visible_seconds_at_5000": round(storm_scale_down, 3),
    }


if __name__ == "__main__":
    for key, value in run().items():
        print("%-36s %s" % (key, value))
