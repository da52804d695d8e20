"""deploy/rbac.yml as shipped, on the real control plane: the product's ServiceAccount runs the whole ladder
and its rollback, and nothing more.

The file is applied with kubectl; the modules then run with a token of the redis-storm ServiceAccount
(a kubeconfig as AWX would give it). Each write the ladder and rollback need is allowed (the modules
succeed and ``kubectl auth can-i`` as that user says yes), each write outside it is refused by the API
server with an error naming the verb and the resource, and a refused write leaves no ledger entry that
claims a change.
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
from tests.helpers.modules import ModuleResult, run_module

pytestmark = pytest.mark.integration

PRODUCT_USER = "system:serviceaccount:redis-storm:redis-storm"
NS, REDIS_NS, LEDGER_NS = "trading", "redis", "redis-storm"
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
    for name in ("payments", NS, "wallet", REDIS_NS):
        control_plane.kubectl("create", "namespace", name, check=False)
    control_plane.kubectl("apply", "-f", str(REPO / "deploy" / "rbac.yml"))
    for namespace, path, obj in WORLD:
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


def test_the_service_account_runs_the_ladder_and_its_rollback_and_the_world_comes_back_exactly(
        admin: Kube, product_kubeconfig: Path) -> None:
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


# What the ladder and rollback write (and read through the same rules), as kubectl auth can-i asks it.
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
list pods --all-namespaces
create configmaps -n redis-storm
update configmaps -n redis-storm
create leases.coordination.k8s.io -n redis-storm
update leases.coordination.k8s.io -n redis-storm
delete leases.coordination.k8s.io -n redis-storm
""".strip().splitlines()
# Writes that could reach a pod template, a Secret, or a namespace the inventory does not name.
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
patch deployments.apps --subresource=scale -n default
delete configmaps -n redis-storm
""".strip().splitlines()


ANSWERS = [(ask, "yes") for ask in NEEDED] + [(ask, "no") for ask in FORBIDDEN]


@pytest.mark.parametrize("ask, answer", ANSWERS, ids=["%s: %s" % (ask, yes) for ask, yes in ANSWERS])
def test_kubectl_auth_can_i_answers_yes_to_each_write_the_ladder_needs_and_no_to_the_rest(
        control_plane: ControlPlane, product_kubeconfig: Path, ask: str, answer: str) -> None:
    assert _can_i(control_plane, product_kubeconfig, *ask.split()) == answer, ask


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
