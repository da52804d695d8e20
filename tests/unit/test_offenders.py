"""The client address -> pod -> owner join and the evidence around it, without a cluster."""

from __future__ import annotations

from typing import Any, Dict, List, Optional

import pytest
from ansible_collections.fintech.redis_storm.plugins.module_utils.errors import StormError
from ansible_collections.fintech.redis_storm.plugins.module_utils.k8s_client import KubeApiError
from ansible_collections.fintech.redis_storm.plugins.module_utils.log_signatures import (
    DEFAULT_LOG_SIGNATURES,
    compile_signatures,
    count_signatures,
)
from ansible_collections.fintech.redis_storm.plugins.module_utils.offenders import OffenderFinder, attribute, rank
from ansible_collections.fintech.redis_storm.plugins.module_utils.pod_facts import (
    hpa_state,
    normalize_ip,
    owner_of,
    parse_cpu,
    pod_health,
)


def pod(ns: str, name: str, ip: Optional[str], owner: Optional[tuple] = None, phase: str = "Running",
        statuses: Optional[List[Dict[str, Any]]] = None, labels: Optional[Dict[str, str]] = None,
        containers: tuple = ("app",)) -> Dict[str, Any]:
    meta: Dict[str, Any] = {"namespace": ns, "name": name, "labels": labels or {}}
    if owner:
        meta["ownerReferences"] = [{"kind": owner[0], "name": owner[1], "controller": True}]
    status: Dict[str, Any] = {"phase": phase, "containerStatuses": statuses or []}
    if ip:
        status["podIP"] = ip
        status["podIPs"] = [{"ip": ip}]
    return {"metadata": meta, "spec": {"containers": [{"name": c} for c in containers]}, "status": status}


def replicaset(ns: str, name: str, deployment: Optional[str]) -> Dict[str, Any]:
    meta: Dict[str, Any] = {"namespace": ns, "name": name}
    if deployment:
        meta["ownerReferences"] = [{"kind": "Deployment", "name": deployment, "controller": True}]
    return {"metadata": meta}


def source(ip: str, connections: int, names: tuple = ()) -> Dict[str, Any]:
    return {"ip": ip, "connections": connections, "names": list(names), "lib_names": [], "idle_max": 0, "age_min": 0}


@pytest.mark.parametrize(
    ("address", "expected"),
    [("127.0.0.5", "127.0.0.5"), ("::ffff:10.1.2.3", "10.1.2.3"), ("[fd00::1]", "fd00::1"),
     (" 10.0.0.1 ", "10.0.0.1"), ("not-an-ip", "not-an-ip")],
)
def test_addresses_compare_in_one_form(address: str, expected: str) -> None:
    assert normalize_ip(address) == expected


@pytest.mark.parametrize(
    ("the_pod", "replicasets", "expected"),
    [
        (pod("t", "api-5d8-x", "1.1.1.1", ("ReplicaSet", "api-5d8")),
         {("t", "api-5d8"): replicaset("t", "api-5d8", "api")}, ("Deployment", "api")),
        # ReplicaSets unreadable: the Deployment name comes from the pod-template-hash suffix
        (pod("t", "api-5d8-x", "1.1.1.1", ("ReplicaSet", "api-5d8"), labels={"pod-template-hash": "5d8"}), {},
         ("Deployment", "api")),
        (pod("t", "api-5d8-x", "1.1.1.1", ("ReplicaSet", "api-5d8")), {}, ("ReplicaSet", "api-5d8")),
        (pod("t", "orphan-x", "1.1.1.1", ("ReplicaSet", "orphan")), {("t", "orphan"): replicaset("t", "orphan", None)},
         ("ReplicaSet", "orphan")),
        (pod("r", "redis-0", "1.1.1.1", ("StatefulSet", "redis")), {}, ("StatefulSet", "redis")),
        (pod("k", "agent-abc", "1.1.1.1", ("DaemonSet", "agent")), {}, ("DaemonSet", "agent")),
        (pod("t", "debug", "1.1.1.1"), {}, ("Pod", "debug")),
    ],
    ids=["rs-to-deployment", "hash-fallback", "rs-unknown", "rs-without-owner", "statefulset", "daemonset", "bare-pod"],
)
def test_owner_of_follows_owner_references(the_pod: Dict[str, Any], replicasets: Dict[Any, Any],
                                           expected: tuple) -> None:
    assert owner_of(the_pod, replicasets) == expected


@pytest.mark.parametrize(
    ("statuses", "expected"),
    [
        ([], {"restarts": 0, "crashloop": False, "oomkilled": False}),
        ([{"restartCount": 2}, {"restartCount": 5}], {"restarts": 7, "crashloop": False, "oomkilled": False}),
        ([{"restartCount": 9, "state": {"waiting": {"reason": "CrashLoopBackOff"}}}],
         {"restarts": 9, "crashloop": True, "oomkilled": False}),
        ([{"restartCount": 1, "lastState": {"terminated": {"reason": "OOMKilled", "exitCode": 137}}}],
         {"restarts": 1, "crashloop": False, "oomkilled": True}),
        ([{"restartCount": 1, "lastState": {"terminated": {"reason": "Error"}}},
          {"restartCount": 0, "state": {"waiting": {"reason": "ContainerCreating"}}}],
         {"restarts": 1, "crashloop": False, "oomkilled": False}),
    ],
    ids=["none", "sum", "crashloop", "oomkilled", "other-reasons"],
)
def test_pod_health(statuses: List[Dict[str, Any]], expected: Dict[str, Any]) -> None:
    assert pod_health(pod("t", "p", "1.1.1.1", statuses=statuses)) == expected


def cluster() -> tuple:
    pods = [
        pod("trading", "trading-api-aa-1", "127.0.10.1", ("ReplicaSet", "trading-api-aa"),
            statuses=[{"restartCount": 3, "state": {"waiting": {"reason": "CrashLoopBackOff"}}}]),
        pod("trading", "trading-api-aa-2", "127.0.10.2", ("ReplicaSet", "trading-api-aa")),
        pod("trading", "trading-api-aa-3", "127.0.10.3", ("ReplicaSet", "trading-api-aa")),
        pod("payments", "payments-api-bb-1", "127.0.20.1", ("ReplicaSet", "payments-api-bb")),
        pod("payments", "ledger-0", "127.0.20.9", ("StatefulSet", "ledger")),
        pod("payments", "old-job-x", "127.0.20.5", ("Job", "old-job"), phase="Succeeded"),
        pod("kube-system", "proxy-a", "10.0.0.1", ("DaemonSet", "proxy")),
        pod("kube-system", "proxy-b", "10.0.0.1", ("DaemonSet", "proxy")),
    ]
    replicasets = {("trading", "trading-api-aa"): replicaset("trading", "trading-api-aa", "trading-api"),
                   ("payments", "payments-api-bb"): replicaset("payments", "payments-api-bb", "payments-api")}
    return pods, replicasets


def test_attribute_sums_connections_per_workload() -> None:
    pods, replicasets = cluster()
    sources = [source("127.0.10.1", 300, ("trading-api",)), source("127.0.10.2", 200, ("trading-api",)),
               source("127.0.20.1", 50), source("127.0.20.9", 10), source("203.0.113.7", 40, ("batch",)),
               source("127.0.20.5", 5), source("10.0.0.1", 7)]
    workloads, unattributed = attribute(sources, pods, replicasets)
    trading = workloads[("trading", "Deployment", "trading-api")]
    assert trading["connections"] == 500
    assert trading["pod_ips"] == ["127.0.10.1", "127.0.10.2"]
    assert len(trading["pod_names"]) == 3  # the idle pod still counts as a pod of the workload
    assert (trading["restarts"], trading["crashloop"], trading["client_names"]) == (3, True, ["trading-api"])
    assert workloads[("payments", "Deployment", "payments-api")]["connections"] == 50
    assert workloads[("payments", "StatefulSet", "ledger")]["connections"] == 10
    # a finished pod's address may already be reused: never attributed to it
    assert set(workloads) == {("trading", "Deployment", "trading-api"), ("payments", "Deployment", "payments-api"),
                              ("payments", "StatefulSet", "ledger")}
    by_ip = {u["ip"]: u for u in unattributed}
    assert set(by_ip) == {"203.0.113.7", "127.0.20.5", "10.0.0.1"}
    assert by_ip["203.0.113.7"]["names"] == ["batch"]
    assert "2 hostNetwork pods" in by_ip["10.0.0.1"]["reason"]


def test_attribute_without_sources_keeps_every_workload() -> None:
    pods, replicasets = cluster()
    workloads, unattributed = attribute([], pods, replicasets, include_idle=True)
    assert unattributed == []
    assert ("kube-system", "DaemonSet", "proxy") in workloads
    assert all(item["connections"] == 0 for item in workloads.values())


def hpa(name: str, target: str, kind: str = "Deployment", select: Optional[str] = None) -> Dict[str, Any]:
    spec: Dict[str, Any] = {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": kind, "name": target},
                            "minReplicas": 2, "maxReplicas": 20}
    if select:
        spec["behavior"] = {"scaleUp": {"selectPolicy": select}}
    return {"metadata": {"name": name}, "spec": spec, "status": {"currentReplicas": 8, "desiredReplicas": 12}}


def scaled_object(name: str, target: str, annotations: Optional[Dict[str, str]] = None) -> Dict[str, Any]:
    return {"metadata": {"name": name, "annotations": annotations or {}},
            "spec": {"scaleTargetRef": {"name": target}, "minReplicaCount": 1, "maxReplicaCount": 30}}


@pytest.mark.parametrize(
    ("hpas", "scaled", "expected"),
    [
        ([], [], None),
        ([hpa("other", "else")], [], None),
        ([hpa("api", "api", kind="StatefulSet")], [], None),
        ([hpa("api", "api")], [], {"kind": "HorizontalPodAutoscaler", "name": "api", "current": 8, "desired": 12,
                                   "min": 2, "max": 20, "paused": False}),
        ([hpa("api", "api", select="Disabled")], [], {"kind": "HorizontalPodAutoscaler", "name": "api", "current": 8,
                                                      "desired": 12, "min": 2, "max": 20, "paused": True}),
        ([hpa("api", "api", select="Max")], [], {"kind": "HorizontalPodAutoscaler", "name": "api", "current": 8,
                                                 "desired": 12, "min": 2, "max": 20, "paused": False}),
        ([hpa("keda-hpa-api-so", "api")], [scaled_object("api-so", "api")],
         {"kind": "ScaledObject", "name": "api-so", "current": 8, "desired": 12, "min": 1, "max": 30, "paused": False}),
        ([], [scaled_object("api-so", "api", {"autoscaling.keda.sh/paused": "true"})],
         {"kind": "ScaledObject", "name": "api-so", "current": None, "desired": None, "min": 1, "max": 30,
          "paused": True}),
    ],
    ids=["none", "other-target", "other-kind", "hpa", "hpa-paused", "hpa-max", "keda-wins", "keda-paused"],
)
def test_hpa_state(hpas: List[Dict[str, Any]], scaled: List[Dict[str, Any]],
                   expected: Optional[Dict[str, Any]]) -> None:
    assert hpa_state("Deployment", "api", hpas, scaled) == expected


@pytest.mark.parametrize(
    ("quantity", "millicores"),
    [("250m", 250.0), ("1", 1000.0), ("1.5", 1500.0), ("123456789n", 123.456789), ("1500u", 1.5), ("x", 0.0)],
)
def test_parse_cpu(quantity: str, millicores: float) -> None:
    assert parse_cpu(quantity) == pytest.approx(millicores)


LOG = """\
2026-11-26T05:01:00Z ERROR org.redisson.client.RedisTimeoutException: Command execution timeout
2026-11-26T05:01:01Z WARN  Retrying connection to redis (attempt 3)
2026-11-26T05:01:01Z WARN  retry 4 after Connection reset by peer
2026-11-26T05:01:02Z ERROR redis.exceptions.ConnectionError: max number of clients reached
2026-11-26T05:01:03Z ERROR redis.exceptions.ConnectionError: Too many connections
2026-11-26T05:01:04Z WARN  CircuitBreaker 'redis' is OPEN and does not permit further calls
2026-11-26T05:01:05Z INFO  GET /balance 200
"""


def test_count_signatures_defaults() -> None:
    counts = count_signatures(LOG, compile_signatures(DEFAULT_LOG_SIGNATURES))
    assert counts == {"redis_timeout": 1, "connection_reset": 1, "too_many_connections": 1,
                      "max_clients_reached": 1, "retry": 2, "circuit_breaker_open": 1}


def test_bad_signature_is_a_clear_error() -> None:
    with pytest.raises(StormError, match=r"log_signatures\.broken is not a valid regular expression"):
        compile_signatures({"broken": "(unclosed"})


def entry(name: str, connections: int, signals: int = 0, restarts: int = 0, crashloop: bool = False) -> Dict[str, Any]:
    return {"namespace": "n", "kind": "Deployment", "name": name, "connections": connections, "restarts": restarts,
            "crashloop": crashloop, "oomkilled": False, "log_signatures": {"retry": signals}}


@pytest.mark.parametrize(
    ("workloads", "order"),
    [
        ([entry("a", 10), entry("b", 300), entry("c", 20)], ["b", "c", "a"]),
        ([entry("a", 0, signals=5), entry("b", 0, signals=40), entry("c", 0)], ["b", "a", "c"]),
        ([entry("a", 0, restarts=1), entry("b", 0, crashloop=True), entry("c", 0, restarts=4)], ["b", "c", "a"]),
        ([entry("z", 5), entry("a", 5)], ["a", "z"]),
    ],
    ids=["connections", "signals-when-no-connections", "crash-state", "stable-by-name"],
)
def test_rank(workloads: List[Dict[str, Any]], order: List[str]) -> None:
    assert [w["name"] for w in rank(workloads)] == order


class FakeKube:
    """Paths to documents; a path mapped to an int answers with that HTTP status."""

    def __init__(self, documents: Dict[str, Any]) -> None:
        self.documents = documents
        self.calls: List[str] = []

    def _answer(self, path: str) -> Any:
        self.calls.append(path)
        answer = self.documents.get(path, 404)
        if isinstance(answer, int):
            raise KubeApiError("status %d on %s" % (answer, path), status=answer)
        return answer

    def get(self, path: str, query: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
        return dict(self._answer(path))

    def text(self, path: str, query: Optional[Dict[str, Any]] = None) -> str:
        assert query is not None and query["tailLines"] == 50
        return str(self._answer(path))


def finder_cluster(logs: Any = LOG, metrics: Any = None) -> FakeKube:
    pods, replicasets = cluster()
    trading = [p for p in pods if p["metadata"]["namespace"] == "trading"]
    payments = [p for p in pods if p["metadata"]["namespace"] == "payments"]
    docs: Dict[str, Any] = {
        "/api/v1/namespaces/trading/pods": {"items": trading},
        "/api/v1/namespaces/payments/pods": {"items": payments},
        "/apis/apps/v1/namespaces/trading/replicasets": {"items": [replicasets[("trading", "trading-api-aa")]]},
        "/apis/apps/v1/namespaces/payments/replicasets": 403,
        "/apis/autoscaling/v2/namespaces/trading/horizontalpodautoscalers": {
            "items": [hpa("trading-api", "trading-api")]},
        "/apis/autoscaling/v2/namespaces/payments/horizontalpodautoscalers": {"items": []},
        "/apis/metrics.k8s.io/v1beta1/namespaces/trading/pods": metrics if metrics is not None else 404,
        "/apis/metrics.k8s.io/v1beta1/namespaces/payments/pods": metrics if metrics is not None else 404,
    }
    for p in trading + payments:
        docs["/api/v1/namespaces/%s/pods/%s/log" % (p["metadata"]["namespace"], p["metadata"]["name"])] = logs
    return FakeKube(docs)


def test_finder_degrades_instead_of_failing() -> None:
    kube = finder_cluster(logs=403)
    finder = OffenderFinder(kube, ["trading", "payments"], 50, DEFAULT_LOG_SIGNATURES, 5, True)
    result = finder.find([source("127.0.10.1", 300), source("127.0.20.1", 50), source("198.51.100.1", 25)])
    names = [(w["namespace"], w["kind"], w["name"]) for w in result["workloads"]]
    # payments' ReplicaSets are forbidden and its pod has no pod-template-hash label: the ReplicaSet is the owner
    assert names == [("trading", "Deployment", "trading-api"), ("payments", "ReplicaSet", "payments-api-bb")]
    top = result["workloads"][0]
    assert top["connection_share"] == pytest.approx(300 / 375, abs=1e-4)
    assert top["hpa"]["name"] == "trading-api" and top["cpu_millicores"] is None
    assert top["log_signatures"] == dict.fromkeys(DEFAULT_LOG_SIGNATURES, 0) and top["logs_read"] == []
    assert [u["ip"] for u in result["unattributed_connections"]] == ["198.51.100.1"]
    degraded = "\n".join(result["degraded"])
    assert "replicasets in payments" in degraded
    assert "metrics.k8s.io API is not served" in degraded
    assert "logs of trading/trading-api-aa-1" in degraded
    # a missing KEDA CRD (404) is no degradation: there are simply no ScaledObjects
    assert "ScaledObjects" not in degraded


def test_finder_reads_logs_of_three_busiest_pods_of_top_workloads() -> None:
    metrics = {"items": [{"metadata": {"name": "trading-api-aa-1"}, "containers": [{"usage": {"cpu": "300m"}}]},
                         {"metadata": {"name": "trading-api-aa-2"}, "containers": [{"usage": {"cpu": "0.2"}}]}]}
    kube = finder_cluster(metrics=metrics)
    finder = OffenderFinder(kube, ["trading", "payments"], 50, DEFAULT_LOG_SIGNATURES, 1, True)
    result = finder.find([source("127.0.10.1", 10), source("127.0.10.3", 30), source("127.0.20.1", 5)])
    top = result["workloads"][0]
    assert top["name"] == "trading-api" and top["cpu_millicores"] == pytest.approx(500.0)
    assert top["logs_read"] == ["trading-api-aa-3", "trading-api-aa-1", "trading-api-aa-2"]
    assert top["log_signatures"]["retry"] == 6
    assert result["workloads"][1]["logs_read"] == []  # top=1: only the worst offender's logs are read
    assert result["degraded"] == ["replicasets in payments (owners guessed from pod-template-hash): status 403 on "
                                  "/apis/apps/v1/namespaces/payments/replicasets. To grant it: bind the ClusterRole "
                                  "redis-storm-triage in namespace payments with a RoleBinding (deploy/rbac.yml has "
                                  "one per namespace of storm_namespaces), or take payments out of storm_namespaces"]


def test_finder_fails_when_pods_cannot_be_listed() -> None:
    kube = FakeKube({"/api/v1/namespaces/trading/pods": 500})
    finder = OffenderFinder(kube, ["trading"], 50, DEFAULT_LOG_SIGNATURES, 5, True)
    with pytest.raises(KubeApiError, match="status 500"):
        finder.find([source("127.0.10.1", 10)])


def test_a_namespace_whose_pods_are_forbidden_fails_naming_it_and_the_rolebinding_to_add() -> None:
    pods, _replicasets = cluster()
    kube = FakeKube({"/api/v1/namespaces/trading/pods": {"items": [p for p in pods
                                                                   if p["metadata"]["namespace"] == "trading"]},
                     "/api/v1/namespaces/kube-system/pods": 403})
    finder = OffenderFinder(kube, ["trading", "kube-system"], 50, DEFAULT_LOG_SIGNATURES, 5, True)
    with pytest.raises(KubeApiError) as refused:
        finder.find([source("127.0.10.1", 10)])
    assert refused.value.status == 403
    assert refused.value.message == (
        "status 403 on /api/v1/namespaces/kube-system/pods. To grant it: bind the ClusterRole redis-storm-triage in "
        "namespace kube-system with a RoleBinding (deploy/rbac.yml has one per namespace of storm_namespaces), or "
        "take kube-system out of storm_namespaces")


def test_no_namespaces_is_refused_before_any_request_saying_what_to_set() -> None:
    kube = FakeKube({"/api/v1/pods": {"items": []}})
    with pytest.raises(StormError) as refused:
        OffenderFinder(kube, [], 50, DEFAULT_LOG_SIGNATURES, 5, True)
    assert kube.calls == []
    assert refused.value.message.startswith("no namespaces to read pods in: set namespaces (the inventory's "
                                            "storm_namespaces")
    assert "all_namespaces: true" in refused.value.message
    assert "redis-storm-triage-all-namespaces" in refused.value.message


def test_all_namespaces_lists_pods_cluster_wide_and_names_the_opt_in_when_forbidden() -> None:
    kube = FakeKube({"/api/v1/pods": {"items": []}})
    result = OffenderFinder(kube, [], 50, DEFAULT_LOG_SIGNATURES, 5, True, all_namespaces=True).find(
        [source("127.0.0.9", 3)])
    assert kube.calls == ["/api/v1/pods"]
    assert result["workloads"] == [] and result["unattributed_connections"] == [{
        "ip": "127.0.0.9", "connections": 3, "opened": None, "names": [],
        "reason": "no live pod of any namespace has this address (a node, or a client outside the cluster)"}]
    forbidden = OffenderFinder(FakeKube({"/api/v1/pods": 403}), ["trading"], 50, DEFAULT_LOG_SIGNATURES, 5, True,
                               all_namespaces=True)
    with pytest.raises(KubeApiError) as refused:
        forbidden.list_pods()
    assert ("apply the ClusterRoleBinding redis-storm-triage-all-namespaces left commented out in deploy/rbac.yml"
            in refused.value.message)


def test_an_address_outside_the_watched_namespaces_is_reported_with_its_connections_never_as_a_workload() -> None:
    pods, replicasets = cluster()
    workloads, unattributed = attribute(
        [source("127.0.10.1", 30), source("127.0.99.7", 400, names=("batch-export",))], pods, replicasets,
        watched=["trading", "payments"])
    assert sum(w["connections"] for w in workloads.values()) == 30
    assert all("127.0.99.7" not in w["pod_ips"] for w in workloads.values())
    assert unattributed == [{
        "ip": "127.0.99.7", "connections": 400, "opened": None, "names": ["batch-export"],
        "reason": "outside the watched namespaces (payments, trading): no live pod there has this address (a pod of "
                  "another namespace, a node, or a client outside the cluster)"}]


def started(the_pod: Dict[str, Any], stamp: Optional[str], field: str = "startTime") -> Dict[str, Any]:
    if field == "startTime":
        the_pod["status"]["startTime"] = stamp
    else:
        the_pod["metadata"]["creationTimestamp"] = stamp
    return the_pod


NOW = 1796083200.0  # 2026-12-01T00:00:00Z


@pytest.mark.parametrize(("stamp", "field", "young"), [
    ("2026-11-30T23:59:00Z", "startTime", True),  # 60 s ago
    ("2026-11-30T23:50:00Z", "startTime", False),  # 600 s ago
    ("2026-11-30T23:58:20Z", "creationTimestamp", True),  # no startTime yet: its creation
    (None, "startTime", False),  # unknown age is not young
])
def test_young_pods_bring_their_connections_into_the_burst(stamp: Optional[str], field: str, young: bool) -> None:
    pods = [started(pod("pay", "api-1", "10.0.0.1", ("ReplicaSet", "api-7d")), stamp, field),
            started(pod("pay", "api-2", "10.0.0.2", ("ReplicaSet", "api-7d")), "2026-11-30T20:00:00Z")]
    sources = [dict(source("10.0.0.1", 30), opened=12, opened_per_sec=48.0),
               dict(source("10.0.0.2", 20), opened=3, opened_per_sec=12.0)]
    workloads, _ = attribute(sources, pods, {("pay", "api-7d"): replicaset("pay", "api-7d", "api")},
                               young_pod_seconds=300, now=NOW)
    item = workloads[("pay", "Deployment", "api")]
    assert (item["young_pods"], item["young_pod_connections"]) == ((1, 30) if young else (0, 0))
    assert (item["opened"], item["opened_per_sec"]) == (15, 60.0)


def test_a_workload_that_only_churns_is_kept() -> None:
    pods = [pod("w", "churner-1", "10.0.0.9", ("ReplicaSet", "churner-1a"))]
    workloads, _ = attribute([dict(source("10.0.0.9", 0), opened=4, opened_per_sec=90.0)], pods, {})
    assert [(k[2], v["opened_per_sec"]) for k, v in workloads.items()] == [("churner-1a", 90.0)]
