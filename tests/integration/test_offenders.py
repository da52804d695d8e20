"""storm_offenders_info against the Kubernetes API emulator (and, once, a real Redis and a real storm)."""

from __future__ import annotations

from typing import Any, Dict, List, Optional

import pytest

from stormctl.sandbox.stormgen import StormGen
from tests.helpers.modules import run_module, run_playbook

pytestmark = pytest.mark.integration

MODULE = "storm_offenders_info"

STORM_LOG = """\
ERROR org.redisson.client.RedisTimeoutException: Command execution timeout for command: (GET)
WARN  Retrying redis connection, attempt 4
ERROR redis.exceptions.ConnectionError: max number of clients reached
WARN  retry 5 after Connection reset by peer
INFO  GET /quote 200 3ms
"""


def deployment(ns: str, name: str, replicas: int) -> Dict[str, Any]:
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"namespace": ns, "name": name},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
                     "template": {"metadata": {"labels": {"app": name}},
                                  "spec": {"containers": [{"name": "app", "image": "app:1"}]}}}}


def replicaset(ns: str, name: str, owner: str) -> Dict[str, Any]:
    return {"apiVersion": "apps/v1", "kind": "ReplicaSet",
            "metadata": {"namespace": ns, "name": name, "labels": {"app": owner},
                         "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment", "name": owner,
                                              "uid": "uid-" + owner, "controller": True}]},
            "spec": {"replicas": 1, "selector": {"matchLabels": {"app": owner}},
                     "template": {"metadata": {"labels": {"app": owner}},
                                  "spec": {"containers": [{"name": "app", "image": "app:1"}]}}}}


def pod(ns: str, name: str, ip: str, owner: Optional[tuple] = None, restarts: int = 0, crashloop: bool = False,
        oomkilled: bool = False, phase: str = "Running") -> Dict[str, Any]:
    meta: Dict[str, Any] = {"namespace": ns, "name": name, "labels": {}}
    if owner:
        meta["ownerReferences"] = [{"apiVersion": "apps/v1", "kind": owner[0], "name": owner[1],
                                    "uid": "uid-" + owner[1], "controller": True}]
    status: Dict[str, Any] = {"restartCount": restarts, "name": "app", "ready": not crashloop,
                              "state": {"waiting": {"reason": "CrashLoopBackOff"}} if crashloop else
                              {"running": {"startedAt": "2026-11-26T05:00:00Z"}}}
    if oomkilled:
        status["lastState"] = {"terminated": {"reason": "OOMKilled", "exitCode": 137}}
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta,
            "spec": {"containers": [{"name": "app", "image": "app:1"}]},
            "status": {"phase": phase, "podIP": ip, "podIPs": [{"ip": ip}], "containerStatuses": [status]}}


def hpa(ns: str, name: str, target: str, current: int, desired: int, disabled: bool = False) -> Dict[str, Any]:
    spec: Dict[str, Any] = {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": target},
                            "minReplicas": 2, "maxReplicas": 12,
                            "metrics": [{"type": "Resource", "resource": {"name": "cpu", "target": {
                                "type": "Utilization", "averageUtilization": 70}}}]}
    if disabled:
        spec["behavior"] = {"scaleUp": {"selectPolicy": "Disabled"}}
    return {"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler", "metadata": {"namespace": ns,
                                                                                             "name": name},
            "spec": spec, "status": {"currentReplicas": current, "desiredReplicas": desired}}


def scaled_object(ns: str, name: str, target: str, paused: bool) -> Dict[str, Any]:
    annotations = {"autoscaling.keda.sh/paused": "true"} if paused else {}
    return {"apiVersion": "keda.sh/v1alpha1", "kind": "ScaledObject",
            "metadata": {"namespace": ns, "name": name, "annotations": annotations},
            "spec": {"scaleTargetRef": {"name": target}, "minReplicaCount": 1, "maxReplicaCount": 8,
                     "triggers": [{"type": "cpu", "metadata": {"value": "60"}}]}}


def seed_cluster(kubeapi: Any) -> None:
    """trading-api is the storm: most connections, a crashlooping pod, an HPA adding pods, storm logs."""
    kubeapi.seed([
        deployment("trading", "trading-api", 3), replicaset("trading", "trading-api-7d9f", "trading-api"),
        pod("trading", "trading-api-7d9f-a", "127.0.10.1", ("ReplicaSet", "trading-api-7d9f"), restarts=4,
            crashloop=True),
        pod("trading", "trading-api-7d9f-b", "127.0.10.2", ("ReplicaSet", "trading-api-7d9f"), restarts=1,
            oomkilled=True),
        pod("trading", "trading-api-7d9f-c", "127.0.10.3", ("ReplicaSet", "trading-api-7d9f")),
        hpa("trading", "trading-api", "trading-api", current=3, desired=6),
        deployment("payments", "payments-api", 2), replicaset("payments", "payments-api-55c", "payments-api"),
        pod("payments", "payments-api-55c-a", "127.0.20.1", ("ReplicaSet", "payments-api-55c")),
        pod("payments", "payments-api-55c-b", "127.0.20.2", ("ReplicaSet", "payments-api-55c")),
        scaled_object("payments", "payments-api", "payments-api", paused=True),
        pod("payments", "ledger-0", "127.0.20.9", ("StatefulSet", "ledger")),
        pod("payments", "debug-shell", "127.0.20.7"),
        pod("payments", "nightly-x", "127.0.20.8", ("Job", "nightly"), phase="Succeeded"),
        pod("wallet", "wallet-api-1", "127.0.30.1", ("ReplicaSet", "wallet-api-1")),
    ])
    for name in ("trading-api-7d9f-a", "trading-api-7d9f-b"):
        kubeapi.log("trading", name, STORM_LOG)
    kubeapi.log("payments", "payments-api-55c-a", "INFO GET /pay 200\nWARN retrying once\n")
    kubeapi.pod_metrics("trading", "trading-api-7d9f-a", {"app": {"cpu": "900m", "memory": "200Mi"}})
    kubeapi.pod_metrics("trading", "trading-api-7d9f-b", {"app": {"cpu": "450000000n", "memory": "200Mi"}})
    kubeapi.pod_metrics("payments", "payments-api-55c-a", {"app": {"cpu": "100m", "memory": "64Mi"}})


def source(ip: str, connections: int, name: str = "") -> Dict[str, Any]:
    return {"ip": ip, "connections": connections, "names": [name] if name else [], "lib_names": ["redis-py"],
            "idle_max": 3, "age_min": 1}


SOURCES = [source("127.0.10.1", 120, "trading-api"), source("127.0.10.2", 100, "trading-api"),
           source("127.0.10.3", 60, "trading-api"), source("127.0.20.1", 30, "payments-api"),
           source("127.0.20.9", 12), source("127.0.20.7", 3), source("127.0.20.8", 5, "nightly"),
           source("198.51.100.4", 20, "batch")]


def args(kubeapi: Any, **extra: Any) -> Dict[str, Any]:
    return dict({"kubeconfig": str(kubeapi.kubeconfig), "sources": SOURCES,
                 "namespaces": ["trading", "payments"]}, **extra)


def by_name(result: Dict[str, Any]) -> Dict[str, Dict[str, Any]]:
    return {w["name"]: w for w in result["workloads"]}


def test_ranks_the_culprit_first_with_its_evidence(kubeapi: Any) -> None:
    seed_cluster(kubeapi)
    mark = kubeapi.last_seq()
    result = run_module(MODULE, args(kubeapi), check=True)
    assert not result.failed, result.msg
    assert not result["changed"]
    assert [(w["namespace"], w["kind"], w["name"]) for w in result["workloads"]] == [
        ("trading", "Deployment", "trading-api"), ("payments", "Deployment", "payments-api"),
        ("payments", "StatefulSet", "ledger"), ("payments", "Pod", "debug-shell")]
    top = result["workloads"][0]
    assert top["connections"] == 280 and top["connection_share"] == pytest.approx(280 / 350, abs=1e-4)
    assert top["pods"] == 3 and top["pod_ips"] == ["127.0.10.1", "127.0.10.2", "127.0.10.3"]
    assert (top["restarts"], top["crashloop"], top["oomkilled"]) == (5, True, True)
    assert top["hpa"] == {"kind": "HorizontalPodAutoscaler", "name": "trading-api", "current": 3, "desired": 6,
                          "min": 2, "max": 12, "paused": False}
    assert top["cpu_millicores"] == pytest.approx(1350.0)
    assert top["log_signatures"] == {"redis_timeout": 2, "connection_reset": 2, "too_many_connections": 0,
                                     "max_clients_reached": 2, "retry": 4, "circuit_breaker_open": 0}
    assert top["client_names"] == ["trading-api"]
    payments = by_name(result)["payments-api"]
    assert payments["hpa"]["kind"] == "ScaledObject" and payments["hpa"]["paused"] is True
    assert payments["log_signatures"]["retry"] == 1 and payments["pods"] == 2
    # the finished Job's address and the external client belong to no live pod
    assert {(u["ip"], u["connections"]) for u in result["unattributed_connections"]} == {
        ("198.51.100.4", 20), ("127.0.20.8", 5)}
    assert result["degraded"] == []
    assert kubeapi.audit(since=mark) == []  # read-only: not a single write request


def test_reads_logs_only_of_the_top_workloads(kubeapi: Any) -> None:
    seed_cluster(kubeapi)
    result = run_module(MODULE, args(kubeapi, top=1, log_tail_lines=2,
                                     log_signatures={"maxclients": "max number of clients"}))
    workloads = by_name(result)
    # the last two lines of each log hold no maxclients line; the payments logs are not read at all (top=1)
    assert workloads["trading-api"]["log_signatures"] == {"maxclients": 0}
    assert workloads["trading-api"]["logs_read"] == ["trading-api-7d9f-a", "trading-api-7d9f-b", "trading-api-7d9f-c"]
    assert workloads["payments-api"]["logs_read"] == [] and workloads["payments-api"]["log_signatures"] == {}
    three_lines = run_module(MODULE, args(kubeapi, top=1, log_tail_lines=3,
                                          log_signatures={"maxclients": "max number of clients"}))
    assert by_name(three_lines)["trading-api"]["log_signatures"] == {"maxclients": 2}


def test_no_namespaces_fails_saying_what_to_set(kubeapi: Any) -> None:
    seed_cluster(kubeapi)
    result = run_module(MODULE, args(kubeapi, namespaces=[]))
    assert result.failed
    assert result.msg.startswith("no namespaces to read pods in: set namespaces (the inventory's storm_namespaces")
    assert "all_namespaces: true" in result.msg


def test_a_wallet_pod_is_outside_the_watched_namespaces_until_every_namespace_is_read(kubeapi: Any) -> None:
    seed_cluster(kubeapi)
    sources = [*SOURCES, source("127.0.30.1", 7)]
    watched = run_module(MODULE, args(kubeapi, sources=sources))
    assert not watched.failed, watched.msg
    assert "wallet" not in {w["namespace"] for w in watched["workloads"]}
    wallet = [u for u in watched["unattributed_connections"] if u["ip"] == "127.0.30.1"]
    assert [(u["connections"], u["reason"].split(":")[0]) for u in wallet] == [
        (7, "outside the watched namespaces (payments, trading)")]
    everywhere = run_module(MODULE, args(kubeapi, namespaces=[], all_namespaces=True, sources=sources))
    assert ("wallet", "ReplicaSet", "wallet-api-1") in {(w["namespace"], w["kind"], w["name"])
                                                         for w in everywhere["workloads"]}
    assert "127.0.30.1" not in {u["ip"] for u in everywhere["unattributed_connections"]}


def test_degrades_when_logs_and_metrics_are_forbidden_and_keda_is_absent(kubeapi: Any, tmp_path: Any) -> None:
    seed_cluster(kubeapi)
    kubeapi.add_token("triage-lite", rules=[
        {"apiGroups": [""], "resources": ["pods"], "verbs": ["list"]},
        {"apiGroups": ["apps"], "resources": ["replicasets"], "verbs": ["list"]},
        {"apiGroups": ["autoscaling"], "resources": ["horizontalpodautoscalers"], "verbs": ["list"]},
        {"apiGroups": ["keda.sh"], "resources": ["scaledobjects"], "verbs": ["list"]},
    ])
    kubeconfig = kubeapi.write_kubeconfig(tmp_path / "lite", "triage-lite")
    kubeapi.fault(resource="scaledobjects", verbs=["list"], kind="error", status=404)
    result = run_module(MODULE, args(kubeapi, kubeconfig=str(kubeconfig)))
    assert not result.failed, result.msg
    assert [w["name"] for w in result["workloads"]][:2] == ["trading-api", "payments-api"]
    top = result["workloads"][0]
    assert top["cpu_millicores"] is None and top["logs_read"] == []
    assert top["hpa"]["name"] == "trading-api"
    assert by_name(result)["payments-api"]["hpa"] is None  # KEDA not served: no ScaledObjects, no error
    degraded = "\n".join(result["degraded"])
    assert "logs of trading/trading-api-7d9f-a: forbidden (403)" in degraded
    assert "pod CPU in trading: forbidden (403)" in degraded
    assert "ScaledObjects" not in degraded


def test_metrics_api_failing_and_logs_erroring_degrade(kubeapi: Any) -> None:
    seed_cluster(kubeapi)
    kubeapi.fault(resource="pods", subresource="log", verbs=["get"], kind="error", status=500)
    result = run_module(MODULE, args(kubeapi, metrics=False))
    assert not result.failed, result.msg
    assert result["workloads"][0]["cpu_millicores"] is None
    assert any("logs of trading/trading-api-7d9f-a: the Kubernetes API failed (500)" in d for d in result["degraded"])


def test_listing_pods_forbidden_fails_with_the_clear_message(kubeapi: Any, tmp_path: Any) -> None:
    seed_cluster(kubeapi)
    kubeapi.add_token("no-pods", rules=[{"apiGroups": ["apps"], "resources": ["replicasets"], "verbs": ["list"]}])
    kubeconfig = kubeapi.write_kubeconfig(tmp_path / "no-pods", "no-pods")
    result = run_module(MODULE, args(kubeapi, kubeconfig=str(kubeconfig)))
    assert result.failed
    assert result.msg.startswith("forbidden (403): this identity may not ")
    assert "pods in namespace payments" in result.msg and 'cannot list resource "pods"' in result.msg
    assert "deploy/rbac.yml" in result.msg


def test_bad_signature_fails_before_any_request(kubeapi: Any) -> None:
    result = run_module(MODULE, args(kubeapi, log_signatures={"broken": "(unclosed"}))
    assert result.failed and "log_signatures.broken is not a valid regular expression" in result.msg


def test_real_storm_from_pod_addresses_through_ansible_playbook(kubeapi: Any, redis_server: Any) -> None:
    """Real connections from the pods' 127.x addresses, seen by redis_clients_info, joined by this module."""
    seed_cluster(kubeapi)
    sources = [("127.0.10.1", 40), ("127.0.10.2", 35), ("127.0.20.1", 10), ("127.0.20.9", 5)]
    with StormGen(redis_server.port, password=redis_server.password, sources=sources, name="storm") as storm:
        storm.wait_connected(90, timeout=30)
        run = run_playbook([
            {"name": "redis view", "fintech.redis_storm.redis_clients_info": {
                "host": redis_server.host, "port": redis_server.port, "password": redis_server.password,
                "sample_seconds": 0, "top": 10}, "register": "redis_view"},
            {"name": "offenders", "fintech.redis_storm.storm_offenders_info": {
                "kubeconfig": str(kubeapi.kubeconfig), "namespaces": ["trading", "payments"],
                "sources": "{{ redis_view.top_sources }}"}},
        ], check=True)
    assert run.rc == 0, run.output[-3000:] + run.stderr[-3000:]
    offenders = run.task("offenders")
    ranked: List[tuple] = [(w["name"], w["connections"]) for w in offenders["workloads"]]
    assert ranked == [("trading-api", 75), ("payments-api", 10), ("ledger", 5)]
    assert offenders["workloads"][0]["client_names"] == ["storm"]
    assert redis_server.password not in run.output


def test_a_restarted_containers_previous_log_is_counted(kubeapi: Any) -> None:
    seed_cluster(kubeapi)
    kubeapi.log("trading", "trading-api-7d9f-a", "FATAL Too many connections\nFATAL Too many connections\n",
                previous=True)
    result = run_module(MODULE, args(kubeapi, top=1))
    top = result["workloads"][0]
    assert "trading-api-7d9f-a (previous)" in top["logs_read"]
    assert top["log_signatures"]["too_many_connections"] == 2
    assert result["degraded"] == []  # pod b restarted too but has no previous log: not an error
