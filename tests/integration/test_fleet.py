"""The client fleet in a real sandbox: pods as Redis connections, storms, and how the world answers mitigations."""

from __future__ import annotations

import json
import time
import urllib.request
from collections import Counter
from typing import Any, Iterator

import pytest
import redis
from kubernetes import client

from tests.fixtures.sandbox import Sandbox, wait_for

pytestmark = pytest.mark.integration

SIGNATURES = ("ERR max number of clients reached", "RedisTimeoutException", "Connection reset by peer",
              "Retrying Redis connection attempt", "Too many connections")


def fleet_status(box: Sandbox) -> dict[str, Any]:
    with urllib.request.urlopen(box["fleet"]["url"] + "/status", timeout=10) as response:
        return dict(json.loads(response.read()))


def workload(box: Sandbox, namespace: str, name: str) -> dict[str, Any]:
    for item in fleet_status(box)["workloads"]:
        if (item["namespace"], item["name"]) == (namespace, name):
            return dict(item)
    raise AssertionError("the fleet has no workload %s/%s" % (namespace, name))


@pytest.fixture
def monitor(calm_sandbox: Sandbox) -> Iterator[redis.Redis]:
    """One connection opened while Redis is quiet: it keeps working when Redis refuses new clients."""
    conn = calm_sandbox.redis(single_connection_client=True)
    conn.client_setname("test-monitor")
    try:
        yield conn
    finally:
        conn.close()


def test_pods_are_real_redis_clients_from_their_pod_ips(calm_sandbox: Sandbox, monitor: redis.Redis) -> None:
    core = client.CoreV1Api(calm_sandbox.kube())
    apps = client.AppsV1Api(calm_sandbox.kube())
    pods = [p for p in core.list_pod_for_all_namespaces().items
            if p.metadata.namespace in ("trading", "payments", "wallet")]
    assert len({p.status.pod_ip for p in pods}) == len(pods), "pod IPs must be distinct"
    by_ip = {p.status.pod_ip: p for p in pods}

    def clients_by_ip() -> Counter[str]:
        return Counter(c["addr"].rsplit(":", 1)[0] for c in monitor.client_list() if c["name"] != "test-monitor")

    counts = wait_for(lambda: (c := clients_by_ip()) and set(by_ip) <= set(c) and c, 20,
                      "every pod to hold Redis connections from its own IP")
    for ip, pod in by_ip.items():
        assert ip.startswith("127.20."), ip
        assert pod.status.phase == "Running"
        owner = pod.metadata.owner_references[0]
        assert owner.kind == "ReplicaSet"
        rs = apps.read_namespaced_replica_set(owner.name, pod.metadata.namespace)
        assert rs.metadata.owner_references[0].kind == "Deployment"
        deploy = apps.read_namespaced_deployment(rs.metadata.owner_references[0].name, pod.metadata.namespace)
        env = {e.name: e.value for e in deploy.spec.template.spec.containers[0].env}
        names = {c["name"] for c in monitor.client_list() if c["addr"].startswith(ip + ":")}
        assert names == {env["REDIS_CLIENT_NAME"]}
        assert counts[ip] >= int(env["REDIS_POOL_MIN"])
    world = fleet_status(calm_sandbox)["world"]
    assert {(i["namespace"], i["name"], i["provider"]) for i in world["ingresses"]} >= {
        ("trading", "trading-api", "nginx"), ("payments", "payments-api", "traefik")}
    assert json.loads((calm_sandbox.dir / "world.json").read_text()) == world


def _pause_hpa(autoscaling: Any, namespace: str, name: str, replicas: int) -> None:
    autoscaling.patch_namespaced_horizontal_pod_autoscaler(name, namespace, {"spec": {
        "maxReplicas": replicas, "behavior": {"scaleUp": {"selectPolicy": "Disabled"}}}})


def test_market_open_storm_and_recovery(calm_sandbox: Sandbox, monitor: redis.Redis) -> None:
    box = calm_sandbox
    api = box.kube()
    core, apps, autoscaling = client.CoreV1Api(api), client.AppsV1Api(api), client.AutoscalingV2Api(api)
    hpa_before = autoscaling.read_namespaced_horizontal_pod_autoscaler("trading-api", "trading")
    rejected_before = monitor.info("stats")["rejected_connections"]
    started = time.monotonic()
    box.storm("market-open")
    try:
        wait_for(lambda: monitor.info("clients")["connected_clients"] >= box.maxclients - 2, 60,
                 "connected_clients to reach maxclients")
        wait_for(lambda: monitor.info("stats")["rejected_connections"] > rejected_before, 30,
                 "Redis to reject connections")
        # At maxclients redis_exporter's own connection is refused too: Prometheus sees Redis as down.
        wait_for(lambda: box.prom_value("min_over_time(redis_up[15s])") == 0, 45,
                 "Prometheus to see the exporter's scrapes fail (redis_up 0)")
        hpa = wait_for(lambda: (h := autoscaling.read_namespaced_horizontal_pod_autoscaler("trading-api", "trading"))
                       and (h.status.desired_replicas or 0) > hpa_before.spec.min_replicas and h, 30,
                       "the HPA to scale trading-api up")
        target = hpa.spec.metrics[0].resource.target.average_utilization
        assert hpa.status.current_metrics[0].resource.current.average_utilization > target
        wait_for(lambda: (box.prom_value('sum(rate(http_requests_total{namespace="trading",service="trading-api",'
                                         'code=~"5.."}[30s]))') or 0) > 1, 45, "the app error rate to rise")
        assert time.monotonic() - started < 90

        def signatures() -> set[str]:
            found = set()
            for pod in core.list_namespaced_pod("trading", label_selector="app.kubernetes.io/name=trading-api").items:
                text = core.read_namespaced_pod_log(pod.metadata.name, "trading", tail_lines=200)
                found.update(s for s in SIGNATURES if s in text)
            return found if {"ERR max number of clients reached"} <= found and len(found) >= 2 else set()

        wait_for(signatures, 30, "trading-api pod logs to carry the storm's signatures")

        # The runbook's last rungs, with the plain kubernetes client: pause the HPA, scale the culprit down.
        _pause_hpa(autoscaling, "trading", "trading-api", 4)
        apps.patch_namespaced_deployment_scale("trading-api", "trading", {"spec": {"replicas": 4}})

        def recovered() -> bool:
            first = monitor.info("stats")["rejected_connections"]
            clients = monitor.info("clients")["connected_clients"]
            time.sleep(1.0)
            return monitor.info("stats")["rejected_connections"] == first and clients < 0.7 * box.maxclients

        wait_for(recovered, 60, "Redis to recover (under 70% of maxclients, no new rejections)")
        assert apps.read_namespaced_deployment("trading-api", "trading").spec.replicas == 4
        # Back in, the exporter reports how many connections Redis refused meanwhile.
        wait_for(lambda: (box.prom_value("increase(redis_rejected_connections_total[3m])") or 0) > 0, 30,
                 "Prometheus to show redis_rejected_connections_total risen over the storm")
    finally:
        box.calm()
        autoscaling.patch_namespaced_horizontal_pod_autoscaler("trading-api", "trading", {"spec": {
            "maxReplicas": hpa_before.spec.max_replicas,
            "behavior": {"scaleUp": {"selectPolicy": hpa_before.spec.behavior.scale_up.select_policy}}}})
        apps.patch_namespaced_deployment_scale("trading-api", "trading",
                                               {"spec": {"replicas": hpa_before.spec.min_replicas}})


def _set_flag(core: Any, namespace: str, configmap: str, key: str, value: bool) -> None:
    core.patch_namespaced_config_map(configmap, namespace, {"data": {key: "true" if value else "false"}})


def test_retry_flag_off_stops_reconnect_bursts(calm_sandbox: Sandbox, monitor: redis.Redis) -> None:
    core = client.CoreV1Api(calm_sandbox.kube())
    connected = monitor.info("clients")["connected_clients"]
    # Below today's count: once trading-api's connections drop, only a few come back and the rest is rejected.
    monitor.config_set("maxclients", str(connected - 40))
    try:
        def kill_trading() -> None:
            for entry in monitor.client_list():
                if entry["name"] == "trading-api":
                    monitor.execute_command("CLIENT", "KILL", "ID", entry["id"])

        def rejections_per_second(seconds: float = 3.0) -> float:
            first = monitor.info("stats")["rejected_connections"]
            time.sleep(seconds)
            return (monitor.info("stats")["rejected_connections"] - first) / seconds

        assert workload(calm_sandbox, "trading", "trading-api")["aggressive_retries"] is True
        kill_trading()
        aggressive = rejections_per_second()
        assert aggressive > 50, "aggressive retries should hammer Redis (%.0f rejections/s)" % aggressive

        _set_flag(core, "trading", "trading-api-flags", "redis.retry.aggressive", False)
        wait_for(lambda: workload(calm_sandbox, "trading", "trading-api")["aggressive_retries"] is False, 10,
                 "the fleet to read the retry flag")
        kill_trading()
        gentle = rejections_per_second()
        assert gentle < aggressive / 4, "jittered backoff should cut the reconnect burst (%.0f vs %.0f/s)" % (
            gentle, aggressive)
    finally:
        _set_flag(core, "trading", "trading-api-flags", "redis.retry.aggressive", True)
        monitor.config_set("maxclients", str(calm_sandbox.maxclients))


def test_circuit_breaker_flag_stops_redis_calls(calm_sandbox: Sandbox, monitor: redis.Redis) -> None:
    core = client.CoreV1Api(calm_sandbox.kube())
    _set_flag(core, "payments", "payments-api-flags", "redis.circuit_breaker.force_open", True)
    try:
        def payments_clients() -> int:
            return sum(1 for c in monitor.client_list() if c["name"] == "payments-api")

        wait_for(lambda: payments_clients() == 0, 15, "payments-api to close its Redis connections")
        wait_for(lambda: (w := workload(calm_sandbox, "payments", "payments-api"))["rps_failed"] > 0
                 and w["rps_served"] == 0, 10, "payments-api to fail fast")
    finally:
        _set_flag(core, "payments", "payments-api-flags", "redis.circuit_breaker.force_open", False)
    wait_for(lambda: workload(calm_sandbox, "payments", "payments-api")["rps_served"] > 0, 15,
             "payments-api to serve again")


def _rate(box: Sandbox, namespace: str, name: str) -> float:
    item = workload(box, namespace, name)
    return float(item["rps_served"] + item["rps_failed"])


@pytest.mark.parametrize("provider", ["nginx", "traefik"])
def test_ingress_rate_limit_lowers_request_rate(calm_sandbox: Sandbox, provider: str) -> None:
    net = client.NetworkingV1Api(calm_sandbox.kube())
    custom = client.CustomObjectsApi(calm_sandbox.kube())
    namespace, name = ("trading", "trading-api") if provider == "nginx" else ("payments", "payments-api")
    before = wait_for(lambda: _rate(calm_sandbox, namespace, name) > 30 and _rate(calm_sandbox, namespace, name), 15,
                      "baseline traffic into %s" % name)
    ingress = net.read_namespaced_ingress(name, namespace)
    annotations = dict(ingress.metadata.annotations or {})
    if provider == "nginx":
        net.patch_namespaced_ingress(name, namespace, {"metadata": {"annotations": {
            "nginx.ingress.kubernetes.io/limit-rps": "10", "nginx.ingress.kubernetes.io/limit-burst-multiplier": "1"}}})
    else:
        custom.create_namespaced_custom_object("traefik.io", "v1alpha1", namespace, "middlewares", {
            "apiVersion": "traefik.io/v1alpha1", "kind": "Middleware",
            "metadata": {"name": "%s-ratelimit" % name, "namespace": namespace},
            "spec": {"rateLimit": {"average": 10, "period": "1s", "burst": 5}}})
        chain = annotations["traefik.ingress.kubernetes.io/router.middlewares"]
        net.patch_namespaced_ingress(name, namespace, {"metadata": {"annotations": {
            "traefik.ingress.kubernetes.io/router.middlewares": "%s,%s-%s-ratelimit@kubernetescrd" % (
                chain, namespace, name)}}})
    try:
        wait_for(lambda: _rate(calm_sandbox, namespace, name) <= 13, 15,
                 "%s's request rate to drop to the limit (from %.0f/s)" % (name, before))
        metric = ('sum(rate(nginx_ingress_controller_requests{namespace="trading",ingress="trading-api",'
                  'status="503"}[15s]))' if provider == "nginx" else
                  'sum(rate(traefik_service_requests_total{service=~"payments-payments-api.*",code="429"}[15s]))')
        wait_for(lambda: (calm_sandbox.prom_value(metric) or 0) > 5, 30, "the ingress to count the rejected excess")
    finally:
        net.patch_namespaced_ingress(name, namespace, {"metadata": {"annotations": {
            k: annotations.get(k) for k in ("nginx.ingress.kubernetes.io/limit-rps",
                                            "nginx.ingress.kubernetes.io/limit-burst-multiplier",
                                            "traefik.ingress.kubernetes.io/router.middlewares")}}})
        if provider == "traefik":
            custom.delete_namespaced_custom_object("traefik.io", "v1alpha1", namespace, "middlewares",
                                                   "%s-ratelimit" % name)
    wait_for(lambda: _rate(calm_sandbox, namespace, name) > 30, 15, "%s's traffic to come back" % name)


def test_mesh_connection_cap_limits_each_pod(calm_sandbox: Sandbox, monitor: redis.Redis) -> None:
    custom = client.CustomObjectsApi(calm_sandbox.kube())
    where = ("networking.istio.io", "v1", "redis", "destinationrules", "redis-master")
    rule = custom.get_namespaced_custom_object(*where)
    custom.patch_namespaced_custom_object(*where, {"spec": {"trafficPolicy": {"connectionPool": {"tcp": {
        "maxConnections": 5}}}}})
    try:
        wait_for(lambda: workload(calm_sandbox, "trading", "trading-api")["mesh_max_connections"] == 5, 10,
                 "the fleet to read the DestinationRule")
        # Envoy applies the cap to new upstream connections: drop trading-api's and watch them come back capped.
        for entry in monitor.client_list():
            if entry["name"] == "trading-api":
                monitor.execute_command("CLIENT", "KILL", "ID", entry["id"])

        def per_pod() -> Counter[str]:
            return Counter(c["addr"].rsplit(":", 1)[0] for c in monitor.client_list() if c["name"] == "trading-api")

        counts = wait_for(lambda: (c := per_pod()) and len(c) == 3 and all(n == 5 for n in c.values()) and c, 15,
                          "each trading-api pod to hold exactly the mesh cap of 5 connections")
        assert sum(counts.values()) == 15
    finally:
        current = custom.get_namespaced_custom_object(*where)
        current["spec"] = rule["spec"]
        custom.replace_namespaced_custom_object(*where, current)
    wait_for(lambda: workload(calm_sandbox, "trading", "trading-api")["mesh_max_connections"] is None, 10,
             "the fleet to drop the cap")


def test_paused_scaled_object_holds_the_burst(calm_sandbox: Sandbox) -> None:
    api = calm_sandbox.kube()
    custom, apps = client.CustomObjectsApi(api), client.AppsV1Api(api)
    paused = "autoscaling.keda.sh/paused"
    custom.patch_namespaced_custom_object("keda.sh", "v1alpha1", "payments", "scaledobjects", "payments-worker",
                                          {"metadata": {"annotations": {paused: "true"}}})
    calm_sandbox.storm("autoscale-burst")
    try:
        def conditions() -> dict[str, str]:
            so = custom.get_namespaced_custom_object("keda.sh", "v1alpha1", "payments", "scaledobjects",
                                                     "payments-worker")
            return {c["type"]: c["status"] for c in (so.get("status") or {}).get("conditions") or []}

        # Once KEDA has seen the backlog while paused, it has decided: no scale-out.
        wait_for(lambda: conditions().get("Active") == "True" and conditions().get("Paused") == "True", 15,
                 "KEDA to see the backlog and its pause")
        assert apps.read_namespaced_deployment("payments-worker", "payments").spec.replicas == 2
        custom.patch_namespaced_custom_object("keda.sh", "v1alpha1", "payments", "scaledobjects", "payments-worker",
                                              {"metadata": {"annotations": {paused: None}}})
        wait_for(lambda: apps.read_namespaced_deployment("payments-worker", "payments").spec.replicas == 80, 15,
                 "KEDA to scale the worker out to the backlog once unpaused")
    finally:
        custom.patch_namespaced_custom_object("keda.sh", "v1alpha1", "payments", "scaledobjects", "payments-worker",
                                              {"metadata": {"annotations": {paused: None}}})
        calm_sandbox.calm()


def test_every_workloads_error_counter_is_exported_at_zero_before_any_error(calm_sandbox: Sandbox) -> None:
    """A counter born in a storm's first burst hides that burst from Prometheus' increase(): every workload's error
    kinds are exported before any of them counts an error (the suite's earlier storms may have counted some)."""
    box = calm_sandbox
    workloads = len(fleet_status(box)["workloads"])
    found = wait_for(lambda: (box.prom_value('count(redis_client_errors_total{error="maxclients"})') or 0)
                     >= workloads and box.prom_value('count(redis_client_errors_total{error="maxclients"})'), 60,
                     "Prometheus to see every workload's maxclients error counter")
    assert box.prom_value('count(redis_client_errors_total{error="pool_exhausted"})') == found
