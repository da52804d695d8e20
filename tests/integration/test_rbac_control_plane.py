"""deploy/rbac.yml as shipped, on the real control plane: the product's ServiceAccount runs the whole incident
(triage, the ladder and its rollback), and nothing more.

The file is applied with kubectl; the modules then run with a token of the redis-storm ServiceAccount
(a kubeconfig as AWX would give it). Each read and write the incident needs is allowed (the modules
succeed and ``kubectl auth can-i`` as that user says yes), each one outside it is refused by the API
server with an error naming the verb and the resource (pods of kube-system among them), and a refused
write leaves no ledger entry that claims a change. Triage reads pods only in the inventory's namespaces:
a client in any other namespace is reported as outside them, never as a workload.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, List, Optional

import pytest
import yaml
from ansible_collections.fintech.redis_storm.plugins.module_utils.k8s_client import Kube, KubeApiError

from stormctl.sandbox.kube.controlplane import ControlPlane
from stormctl.sandbox.state import REPO
from stormctl.sandbox.stormgen import StormGen
from tests.fixtures.sandbox import wait_for
from tests.helpers.modules import ModuleResult, run_module

pytestmark = pytest.mark.integration

PRODUCT_USER = "system:serviceaccount:redis-storm:redis-storm"
NS, REDIS_NS, LEDGER_NS = "trading", "redis", "redis-storm"
# The inventory's storm_namespaces (inventories/example); batch is a namespace it does not name.
INVENTORY_NAMESPACES, OUTSIDE_NS = ["payments", "trading", "wallet"], "batch"
# Pod IPs the incident's Redis clients connect from: two trading-api pods, and batch-export's pod outside.
TRADING_IPS, OUTSIDE_IP = ["127.0.61.1", "127.0.61.2"], "127.0.62.1"
HOST = "redis.redis.svc.cluster.local"
MERGE = "application/merge-patch+json"


def _deployment(name: str, replicas: int, kind: str = "Deployment") -> Dict[str, Any]:
    labels = {"app": name}
    spec: Dict[str, Any] = {"replicas": replicas, "selector": {"matchLabels": labels},
                            "template": {"metadata": {"labels": labels},
                                         "spec": {"containers": [{"name": "app", "image": "%s:1" % name}]}}}
    if kind == "StatefulSet":
        spec["serviceName"] = name
    return {"apiVersion": "apps/v1", "kind": kind, "metadata": {"name": name}, "spec": spec}


# (namespace, API path, object): the world the ladder mitigates, shaped as the sandbox's
WORLD = [
    (NS, "/apis/apps/v1/namespaces/trading/deployments/trading-api", _deployment("trading-api", 4)),
    (REDIS_NS, "/apis/apps/v1/namespaces/redis/statefulsets/redis", _deployment("redis", 1, "StatefulSet")),
    (NS, "/apis/autoscaling/v2/namespaces/trading/horizontalpodautoscalers/trading-api", {
        "apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler", "metadata": {"name": "trading-api"},
        "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "trading-api"},
                 "minReplicas": 2, "maxReplicas": 10,
                 "metrics": [{"type": "Resource", "resource": {"name": "cpu", "target": {
                     "type": "Utilization", "averageUtilization": 70}}}]}}),
    (NS, "/apis/keda.sh/v1alpha1/namespaces/trading/scaledobjects/trading-worker", {
        "apiVersion": "keda.sh/v1alpha1", "kind": "ScaledObject", "metadata": {"name": "trading-worker"},
        "spec": {"scaleTargetRef": {"name": "trading-worker"}, "maxReplicaCount": 20,
                 "triggers": [{"type": "cpu", "metricType": "Utilization", "metadata": {"value": "70"}}]}}),
    (NS, "/api/v1/namespaces/trading/configmaps/trading-api-flags", {
        "apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "trading-api-flags"},
        "data": {"redis.retry.aggressive": "true", "redis.circuit_breaker.force_open": "false"}}),
    (NS, "/apis/networking.k8s.io/v1/namespaces/trading/ingresses/trading-api", {
        "apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "metadata": {"name": "trading-api"},
        "spec": {"rules": [{"host": "trade.example.com", "http": {"paths": [{
            "path": "/", "pathType": "Prefix",
            "backend": {"service": {"name": "trading-api", "port": {"number": 80}}}}]}}]}}),
    (NS, "/apis/networking.istio.io/v1beta1/namespaces/trading/destinationrules/redis", {
        "apiVersion": "networking.istio.io/v1beta1", "kind": "DestinationRule", "metadata": {"name": "redis"},
        "spec": {"host": HOST, "trafficPolicy": {"connectionPool": {"tcp": {"connectTimeout": "1s"}}}}}),
]
CREATED = ["/apis/networking.istio.io/v1beta1/namespaces/trading/destinationrules/redis-trading-api",
           "/apis/traefik.io/v1alpha1/namespaces/trading/middlewares/redis-storm-ratelimit-trading-api"]
INCIDENT = "rbac-ladder"


@pytest.fixture(scope="module")
def admin(control_plane: ControlPlane) -> Kube:
    return Kube({"kubeconfig": str(control_plane.admin_kubeconfig)})


@pytest.fixture(scope="module")
def product_kubeconfig(control_plane: ControlPlane, admin: Kube, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The ServiceAccount's kubeconfig, bound by deploy/rbac.yml as shipped, in a world to mitigate."""
    for name in ("payments", NS, "wallet", REDIS_NS, OUTSIDE_NS):
        control_plane.kubectl("create", "namespace", name, check=False)
    control_plane.kubectl("apply", "-f", str(REPO / "deploy" / "rbac.yml"))
    for namespace, path, obj in [*WORLD, (OUTSIDE_NS, "/apis/apps/v1/namespaces/batch/deployments/batch-export",
                                          _deployment("batch-export", 1))]:
        collection = path.rsplit("/", 1)[0]
        if admin.find(path) is None:
            admin.request("POST", collection, body=dict(obj, metadata=dict(obj["metadata"], namespace=namespace)))
    return control_plane.write_token_kubeconfig(tmp_path_factory.mktemp("product") / "kubeconfig", PRODUCT_USER,
                                                control_plane.token(LEDGER_NS, "redis-storm"))


def as_written(obj: Optional[Dict[str, Any]]) -> Dict[str, Any]:
    obj = obj or {}
    return {"spec": obj.get("spec"), "data": obj.get("data"),
            "annotations": (obj.get("metadata") or {}).get("annotations")}


def ledger(admin: Kube, incident: str) -> List[Dict[str, Any]]:
    cm = admin.find("/api/v1/namespaces/%s/configmaps/redis-storm-ledger-%s" % (LEDGER_NS, incident))
    data = (cm or {}).get("data") or {}
    return sorted((json.loads(v) for k, v in data.items() if k.startswith("entry-")), key=lambda e: e["seq"])


def ladder(kubeconfig: Path) -> List[tuple]:
    common = {"kubeconfig": str(kubeconfig), "incident_id": INCIDENT, "allowed_namespaces": [NS, REDIS_NS],
              "lock": {"name": INCIDENT, "holder": "rbac-test"}}
    return [
        ("ingress_rate_limit", dict(common, namespace=NS, name="trading-api", rps=50)),
        ("ingress_rate_limit", dict(common, namespace=NS, name="trading-api", provider="traefik", rps=100)),
        ("feature_flag", dict(common, namespace=NS, name="trading-api-flags",
                              flags={"redis.retry.aggressive": "false", "redis.circuit_breaker.force_open": "true"})),
        ("mesh_circuit_breaker", dict(common, namespace=NS, name="redis", redis_host=HOST, max_connections=20,
                                      consecutive_5xx_errors=3, interval="5s")),
        ("mesh_circuit_breaker", dict(common, namespace=NS, name="redis-trading-api", redis_host=HOST,
                                      max_connections=20)),
        ("workload_scale", dict(common, kind="StatefulSet", namespace=REDIS_NS, name="redis", replicas=2)),
        ("workload_scale", dict(common, namespace=NS, name="trading-api", replicas=2)),
        ("hpa_pause", dict(common, namespace=NS, name="trading-api")),
        ("hpa_pause", dict(common, kind="ScaledObject", namespace=NS, name="trading-worker")),
    ]


def ok(result: ModuleResult, what: str) -> ModuleResult:
    assert not result.failed, "%s: %s" % (what, result.msg)
    return result


def running(admin: Kube, namespace: str, app: str, ips: List[str]) -> List[str]:
    """Give the controllers' pods of ``app`` these IPs as running pods, as a kubelet would; their names.

    No kubelet runs beside this control plane, so the status a node would report is written by the admin."""
    def pods() -> List[Dict[str, Any]]:
        items = admin.get("/api/v1/namespaces/%s/pods" % namespace, {"labelSelector": "app=" + app})["items"]
        return sorted((p for p in items if not p["metadata"].get("deletionTimestamp")),
                      key=lambda p: p["metadata"]["name"]) if len(items) >= len(ips) else []

    names = []
    for pod, ip in zip(wait_for(pods, 60, "the controllers to create %d pods of %s" % (len(ips), app)), ips):
        name = pod["metadata"]["name"]
        admin.request("PATCH", "/api/v1/namespaces/%s/pods/%s/status" % (namespace, name), content_type=MERGE,
                      body={"status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}],
                                       "startTime": "2026-12-01T00:00:00Z"}})
        names.append(name)
    return names


def triage(kubeconfig: Path, redis_server: Any, namespaces: List[str]) -> ModuleResult:
    """The triage role's two modules: the three views read side by side, then the verdict."""
    views = ok(run_module("storm_views_info", {
        "redis": {"host": redis_server.host, "port": redis_server.port, "password": redis_server.password,
                  "sample_seconds": 0.2, "latency_samples": 3, "top": 20},
        "kubernetes": {"kubeconfig": str(kubeconfig), "namespaces": namespaces}}, check=True), "storm_views_info")
    return ok(run_module("storm_verdict", {"redis": views["redis"], "prometheus": views["prometheus"],
                                           "kubernetes": views["kubernetes"]}, check=True), "storm_verdict")


def test_the_service_account_runs_the_whole_incident_and_the_world_comes_back_exactly(
        admin: Kube, product_kubeconfig: Path, redis_server: Any) -> None:
    running(admin, NS, "trading-api", TRADING_IPS)
    running(admin, OUTSIDE_NS, "batch-export", [OUTSIDE_IP])
    clients = [(TRADING_IPS[0], 30), (TRADING_IPS[1], 20)]
    with StormGen(redis_server.port, password=redis_server.password, sources=clients, name="trading-api") as ours, \
            StormGen(redis_server.port, password=redis_server.password, sources=[(OUTSIDE_IP, 15)],
                     name="batch-export") as outside:
        ours.wait_connected(50, timeout=30)
        outside.wait_connected(15, timeout=30)
        verdict = triage(product_kubeconfig, redis_server, INVENTORY_NAMESPACES)
    found = verdict["storm_triage"]
    assert "kubernetes" in found["sources_answered"], found["degraded_sources"]
    # every triage read is granted in the inventory's namespaces (logs fail only for want of a kubelet)
    assert [d for d in found["degraded_sources"] if "403" in d["reason"]] == [], found["degraded_sources"]
    top = found["offenders"][0]
    assert (top["namespace"], top["kind"], top["name"], top["connections"]) == (NS, "Deployment", "trading-api", 50)
    assert top["hpa"]["name"] == "trading-api"
    assert all(o["namespace"] in INVENTORY_NAMESPACES for o in found["offenders"]), found["offenders"]
    assert "batch-export" not in json.dumps(found["offenders"])
    outside_address = [a for a in found["unattributed"]["addresses"] if a["ip"] == OUTSIDE_IP]
    assert [(a["connections"], a["names"]) for a in outside_address] == [(15, ["batch-export"])]
    assert outside_address[0]["reason"].startswith("outside the watched namespaces (payments, trading, wallet)")
    summary = "\n".join(verdict["summary_lines"])
    assert "%s: 15 connections, client names batch-export; outside the watched namespaces" % OUTSIDE_IP in summary

    before = {path: as_written(admin.get(path)) for _ns, path, _obj in WORLD}
    lock = {"kubeconfig": str(product_kubeconfig), "incident_id": INCIDENT, "holder": "rbac-test"}
    ok(run_module("storm_lock", dict(lock, state="acquired")), "storm_lock acquired")
    for module, args in ladder(product_kubeconfig):
        ok(run_module(module, args, check=True, diff=True), "%s (check mode)" % module)
        assert ok(run_module(module, args), module)["changed"], module
    assert all(admin.find(path) is not None for path in CREATED)
    assert {e["state"] for e in ledger(admin, INCIDENT)} == {"applied"}

    rollback = ok(run_module("storm_rollback", {"kubeconfig": str(product_kubeconfig), "incident_id": INCIDENT,
                                                "allowed_namespaces": [NS, REDIS_NS],
                                                "lock": {"name": INCIDENT, "holder": "rbac-test"}}), "storm_rollback")
    assert rollback["left"] == [] and rollback["summary"]["restored"] == len(ledger(admin, INCIDENT))
    ok(run_module("storm_lock", dict(lock, state="released")), "storm_lock released")

    assert {path: as_written(admin.get(path)) for _ns, path, _obj in WORLD} == before
    assert [path for path in CREATED if admin.find(path) is not None] == []
    assert {e["state"] for e in ledger(admin, INCIDENT)} == {"restored"}


def _can_i(control_plane: ControlPlane, kubeconfig: Path, *args: str) -> str:
    return control_plane.kubectl("auth", "can-i", *args, kubeconfig=kubeconfig, check=False).stdout.strip()


# What triage reads and the ladder and rollback write, as kubectl auth can-i asks it.
NEEDED = """
get deployments.apps --subresource=scale -n trading
patch deployments.apps --subresource=scale -n trading
patch statefulsets.apps --subresource=scale -n redis
patch horizontalpodautoscalers.autoscaling -n trading
patch scaledobjects.keda.sh -n trading
patch ingresses.networking.k8s.io -n trading
create middlewares.traefik.io -n trading
delete middlewares.traefik.io -n trading
create destinationrules.networking.istio.io -n trading
patch destinationrules.networking.istio.io -n trading
delete destinationrules.networking.istio.io -n trading
patch configmaps/trading-api-flags -n trading
get pods --subresource=log -n trading
list pods -n trading
list replicasets.apps -n trading
list horizontalpodautoscalers.autoscaling -n trading
list scaledobjects.keda.sh -n trading
list pods.metrics.k8s.io -n trading
list pods -n wallet
create configmaps -n redis-storm
update configmaps -n redis-storm
create leases.coordination.k8s.io -n redis-storm
update leases.coordination.k8s.io -n redis-storm
delete leases.coordination.k8s.io -n redis-storm
""".strip().splitlines()
# Writes that could reach a pod template, a Secret, or a namespace the inventory does not name; reads of pods
# (whose specs can hold plain environment values) outside the inventory's namespaces.
FORBIDDEN = """
patch deployments.apps -n trading
update deployments.apps -n trading
delete deployments.apps -n trading
patch statefulsets.apps -n redis
update horizontalpodautoscalers.autoscaling -n trading
delete ingresses.networking.k8s.io -n trading
patch configmaps/trading-api-config -n trading
patch configmaps -n trading
get secrets -n trading
update secrets -n trading
create pods --subresource=exec -n trading
get pods --subresource=log -n kube-system
list pods -n kube-system
list pods --all-namespaces
list pods -n batch
list replicasets.apps -n kube-system
list pods.metrics.k8s.io -n kube-system
patch deployments.apps --subresource=scale -n default
delete configmaps -n redis-storm
""".strip().splitlines()


ANSWERS = [(ask, "yes") for ask in NEEDED] + [(ask, "no") for ask in FORBIDDEN]


@pytest.mark.parametrize("ask, answer", ANSWERS, ids=["%s: %s" % (ask, yes) for ask, yes in ANSWERS])
def test_kubectl_auth_can_i_answers_yes_to_each_write_the_ladder_needs_and_no_to_the_rest(
        control_plane: ControlPlane, product_kubeconfig: Path, ask: str, answer: str) -> None:
    assert _can_i(control_plane, product_kubeconfig, *ask.split()) == answer, ask


def test_triage_may_not_list_pods_of_kube_system_and_says_which_rolebinding_would_allow_it(
        product_kubeconfig: Path) -> None:
    product = Kube({"kubeconfig": str(product_kubeconfig)})
    for path, where in (("/api/v1/namespaces/kube-system/pods", 'in the namespace "kube-system"'),
                        ("/api/v1/pods", "at the cluster scope")):
        with pytest.raises(KubeApiError) as refused:
            product.get(path)
        assert refused.value.status == 403 and 'cannot list resource "pods"' in str(refused.value), str(refused.value)
        assert where in str(refused.value), str(refused.value)

    refused_triage = run_module("storm_offenders_info", {"kubeconfig": str(product_kubeconfig),
                                                         "namespaces": [NS, "kube-system"],
                                                         "sources": [{"ip": TRADING_IPS[0], "connections": 3}]})
    assert refused_triage.failed
    assert refused_triage.msg.startswith("forbidden (403): this identity may not list pods in namespace kube-system")
    assert ("bind the ClusterRole redis-storm-triage in namespace kube-system with a RoleBinding"
            in refused_triage.msg), refused_triage.msg


def test_a_forbidden_write_is_refused_naming_verb_and_resource(
        control_plane: ControlPlane, admin: Kube, product_kubeconfig: Path) -> None:
    product = Kube({"kubeconfig": str(product_kubeconfig)})
    deployment = "/apis/apps/v1/namespaces/trading/deployments/trading-api"
    if admin.find("/api/v1/namespaces/trading/secrets/trading-db") is None:
        admin.request("POST", "/api/v1/namespaces/trading/secrets", body={
            "metadata": {"name": "trading-db"}, "stringData": {"password": "s3cret"}})
    for method, path, body, named in (
            ("DELETE", deployment, None, 'cannot delete resource "deployments" in API group "apps"'),
            ("PATCH", deployment, {"spec": {"template": {"spec": {"serviceAccountName": "default"}}}},
             'cannot patch resource "deployments" in API group "apps"'),
            ("PUT", "/api/v1/namespaces/trading/secrets/trading-db", {"metadata": {"name": "trading-db"}},
             'cannot update resource "secrets"')):
        with pytest.raises(KubeApiError) as refused:
            product.request(method, path, body=body, content_type=MERGE if method == "PATCH" else "application/json")
        assert refused.value.status == 403 and named in str(refused.value), str(refused.value)
    assert admin.get(deployment)["spec"]["template"]["spec"].get("serviceAccountName") is None


def test_a_mitigation_refused_by_rbac_names_verb_and_resource_and_leaves_no_entry_claiming_a_change(
        admin: Kube, product_kubeconfig: Path) -> None:
    # a ConfigMap in the ledger namespace is readable (the ledger Role) but not patchable: the write is
    # refused after the entry is recorded, which must then say nothing changed
    incident = "rbac-refused"
    path = "/api/v1/namespaces/%s/configmaps/app-flags" % LEDGER_NS
    if admin.find(path) is None:
        admin.request("POST", "/api/v1/namespaces/%s/configmaps" % LEDGER_NS,
                      body={"metadata": {"name": "app-flags"}, "data": {"redis.retry.aggressive": "true"}})
    refused = run_module("feature_flag", {"kubeconfig": str(product_kubeconfig), "incident_id": incident,
                                          "namespace": LEDGER_NS, "name": "app-flags",
                                          "allowed_namespaces": [LEDGER_NS],
                                          "flags": {"redis.retry.aggressive": "false"}})
    assert refused.failed
    assert "forbidden (403)" in refused.msg and "patch configmaps" in refused.msg, refused.msg
    assert (admin.get(path).get("data") or {}) == {"redis.retry.aggressive": "true"}
    assert [e["state"] for e in ledger(admin, incident)] in ([], ["failed"])

    # a namespace rbac.yml does not bind: refused before anything is recorded
    elsewhere = run_module("workload_scale", {"kubeconfig": str(product_kubeconfig), "incident_id": incident,
                                              "namespace": "default", "name": "batch", "replicas": 1,
                                              "allowed_namespaces": ["default"]})
    assert elsewhere.failed and "forbidden (403)" in elsewhere.msg and "deployments/scale" in elsewhere.msg, \
        elsewhere.msg
    assert [e["state"] for e in ledger(admin, incident)] in ([], ["failed"])


def test_triage_is_bound_in_the_inventorys_namespaces() -> None:
    bound = {doc["metadata"]["namespace"] for doc in yaml.safe_load_all((REPO / "deploy" / "rbac.yml").read_text())
             if isinstance(doc, dict) and doc.get("kind") == "RoleBinding"
             and doc["roleRef"]["name"] == "redis-storm-triage"}
    inventory = {ns for host_vars in (REPO / "inventories" / "example" / "host_vars").glob("*.yml")
                 for ns in (yaml.safe_load(host_vars.read_text()) or {}).get("storm_namespaces") or []}
    assert bound == inventory == set(INVENTORY_NAMESPACES)


def test_the_flag_configmaps_rbac_names_are_the_inventorys() -> None:
    rules = [rule for doc in yaml.safe_load_all((REPO / "deploy" / "rbac.yml").read_text())
             if isinstance(doc, dict) and doc.get("kind") == "ClusterRole" for rule in doc["rules"]]
    named = {name for rule in rules if "configmaps" in rule["resources"] for name in rule.get("resourceNames") or []}
    inventory: set = set()
    for host_vars in (REPO / "inventories" / "example" / "host_vars").glob("*.yml"):
        for value in (yaml.safe_load(host_vars.read_text()) or {}).values():
            if isinstance(value, list):
                inventory |= {item["configmap"] for item in value if isinstance(item, dict) and "configmap" in item}
    assert inventory and inventory <= named, inventory - named
