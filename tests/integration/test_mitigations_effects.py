"""The mitigations have their effect on the sandbox's fleet, applied through the modules themselves.

The fleet reads the cluster like real pods and controllers do, so these tests show that the
fields the modules own are the ones that matter: fewer replicas close their Redis connections,
a paused HPA stops the HPA controller from adding pods during a storm, and the retry flag
turned off calms reconnect bursts. Each test ends with storm_rollback.
"""

from __future__ import annotations

import time
from typing import Any, Dict, Iterator

import pytest
import redis
from kubernetes import client

from tests.fixtures.sandbox import Sandbox, wait_for
from tests.helpers.modules import run_module

pytestmark = pytest.mark.integration

ALLOWED = ["trading", "payments", "wallet"]


@pytest.fixture
def monitor(calm_sandbox: Sandbox) -> Iterator[redis.Redis]:
    """A connection opened while Redis is quiet: it keeps working when Redis refuses new clients."""
    conn = calm_sandbox.redis(single_connection_client=True)
    conn.client_setname("test-monitor")
    try:
        yield conn
    finally:
        conn.close()


def mitigation(box: Sandbox, incident_id: str, **extra: Any) -> Dict[str, Any]:
    return {"incident_id": incident_id, "kubeconfig": box.kubeconfig, "allowed_namespaces": ALLOWED, **extra}


def rollback(box: Sandbox, incident_id: str) -> None:
    result = run_module("storm_rollback", {"incident_id": incident_id, "kubeconfig": box.kubeconfig, "force": True,
                                           "allowed_namespaces": ALLOWED})
    assert not result.failed, result.msg


def connections(monitor: redis.Redis, name: str) -> int:
    return sum(1 for c in monitor.client_list() if c["name"] == name)


def test_scaling_the_culprit_down_frees_its_redis_connections(calm_sandbox: Sandbox, monitor: redis.Redis) -> None:
    apps = client.AppsV1Api(calm_sandbox.kube())
    replicas = apps.read_namespaced_deployment("trading-api", "trading").spec.replicas
    per_pod = wait_for(lambda: (n := connections(monitor, "trading-api")) >= replicas and n // replicas, 20,
                       "trading-api's pods to hold their Redis connections")
    try:
        result = run_module("workload_scale", mitigation(calm_sandbox, "effect-scale", namespace="trading",
                                                         name="trading-api", reduce_by_percent=34, min_replicas=1))
        assert result["changed"], result.msg
        fewer = result["replicas_after"]
        assert fewer < replicas
        wait_for(lambda: connections(monitor, "trading-api") <= fewer * per_pod, 30,
                 "trading-api's connections to drop to %d pods' worth" % fewer)
    finally:
        rollback(calm_sandbox, "effect-scale")
    wait_for(lambda: connections(monitor, "trading-api") >= replicas * per_pod, 30,
             "trading-api's connections to come back after rollback")


def test_paused_hpa_stops_the_controller_from_scaling_up(calm_sandbox: Sandbox) -> None:
    box = calm_sandbox
    autoscaling, apps = client.AutoscalingV2Api(box.kube()), client.AppsV1Api(box.kube())
    replicas = apps.read_namespaced_deployment("trading-api", "trading").spec.replicas
    paused = run_module("hpa_pause", mitigation(box, "effect-hpa", namespace="trading", name="trading-api"))
    assert paused["paused"] and paused["max_replicas"] == replicas, paused.msg
    started = time.time()
    box.storm("market-open")
    try:
        def held_back() -> bool:
            hpa = autoscaling.read_namespaced_horizontal_pod_autoscaler("trading-api", "trading")
            limited = [c for c in hpa.status.conditions or [] if c.type == "ScalingLimited" and c.status == "True"
                       and c.last_transition_time.timestamp() >= started - 1]
            busy = (hpa.status.current_metrics or [None])[0]
            over = busy is not None and busy.resource.current.average_utilization > \
                hpa.spec.metrics[0].resource.target.average_utilization
            return bool(limited) and over

        # the controller sees the load and wants more pods, and the pause is what holds it back
        wait_for(held_back, 45, "the HPA controller to see trading-api over its CPU target and be held back")
        assert apps.read_namespaced_deployment("trading-api", "trading").spec.replicas == replicas
        assert autoscaling.read_namespaced_horizontal_pod_autoscaler("trading-api", "trading").status \
            .desired_replicas <= replicas
    finally:
        box.calm()
        rollback(box, "effect-hpa")
    hpa = autoscaling.read_namespaced_horizontal_pod_autoscaler("trading-api", "trading")
    assert hpa.spec.max_replicas > replicas and hpa.spec.behavior.scale_up.select_policy != "Disabled"


def test_retry_flag_off_stops_reconnect_bursts(calm_sandbox: Sandbox, monitor: redis.Redis) -> None:
    connected = monitor.info("clients")["connected_clients"]
    # below today's count: once trading-api's connections drop, the rest of its reconnects are rejected
    monitor.config_set("maxclients", str(connected - 40))

    def kill_trading() -> None:
        for entry in monitor.client_list():
            if entry["name"] == "trading-api":
                monitor.execute_command("CLIENT", "KILL", "ID", entry["id"])

    def rejections_per_second(seconds: float = 3.0) -> float:
        first = monitor.info("stats")["rejected_connections"]
        time.sleep(seconds)  # a measurement window, not a wait for a condition
        return (monitor.info("stats")["rejected_connections"] - first) / seconds

    try:
        kill_trading()
        aggressive = rejections_per_second()
        assert aggressive > 50, "aggressive retries should hammer Redis (%.0f rejections/s)" % aggressive
        result = run_module("feature_flag", mitigation(calm_sandbox, "effect-retry", namespace="trading",
                                                       name="trading-api-flags",
                                                       flags={"redis.retry.aggressive": False}))
        assert result["changed"], result.msg
        wait_for(lambda: _fleet_flag_off(calm_sandbox), 15,
                 "the fleet to read the retry flag")
        # a fair comparison starts as quiet as the first one did: the first burst's retries have run out
        wait_for(lambda: rejections_per_second(1.0) < aggressive / 10, 30, "the first reconnect burst to end")
        kill_trading()
        gentle = rejections_per_second()
        assert gentle < aggressive / 4, "backoff should cut the reconnect burst (%.0f vs %.0f/s)" % (gentle, aggressive)
    finally:
        monitor.config_set("maxclients", str(calm_sandbox.maxclients))
        rollback(calm_sandbox, "effect-retry")


def _fleet_flag_off(box: Sandbox) -> bool:
    import json
    import urllib.request

    with urllib.request.urlopen(box["fleet"]["url"] + "/status", timeout=10) as response:
        status = json.loads(response.read())
    return any(w["namespace"] == "trading" and w["name"] == "trading-api" and w["aggressive_retries"] is False
               for w in status["workloads"])
