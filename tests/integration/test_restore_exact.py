"""Restore puts every object back exactly as it was: a map a mitigation had to create is removed, not left empty.

Each case is an object shaped as production has it (a DestinationRule with no outlierDetection, an
Ingress or a ScaledObject with no annotations, a flag ConfigMap with no data), mitigated and then restored
through the module and through storm_rollback; the object's spec, data, labels and annotations are then
compared whole with the original, with no pruning of empty maps (an empty ``outlierDetection: {}`` is a
change Istio acts on, and one an engineer diffing the object sees).
"""

from __future__ import annotations

import copy
from typing import Any, Dict, List, Optional

import pytest

from tests.helpers.mitigations import incident_for, kube_args, ledger_entries
from tests.helpers.modules import run_module
from tests.integration.mitigation_common import get, seed_ledger_namespace

pytestmark = pytest.mark.integration

HOST = "redis.redis.svc.cluster.local"
DR_PATH = "/apis/networking.istio.io/v1beta1/namespaces/trading/destinationrules/redis"
INGRESS_PATH = "/apis/networking.k8s.io/v1/namespaces/trading/ingresses/trading-api"
MIDDLEWARE_PATH = "/apis/traefik.io/v1alpha1/namespaces/trading/middlewares/redis-storm-ratelimit-trading-api"
KEDA_PATH = "/apis/keda.sh/v1alpha1/namespaces/trading/scaledobjects/trading-api"
FLAGS_PATH = "/api/v1/namespaces/trading/configmaps/trading-api-flags"
BREAKER = {"redis_host": HOST, "max_connections": 20, "consecutive_5xx_errors": 3, "interval": "5s",
           "base_ejection_time": "30s", "max_ejection_percent": 50}


def destination_rule(spec: Dict[str, Any]) -> Dict[str, Any]:
    return {"apiVersion": "networking.istio.io/v1beta1", "kind": "DestinationRule",
            "metadata": {"namespace": "trading", "name": "redis", "labels": {"team": "trading"}}, "spec": spec}


INGRESS = {"apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
           "metadata": {"namespace": "trading", "name": "trading-api", "labels": {"team": "trading"}},
           "spec": {"rules": [{"host": "trade.example.com", "http": {"paths": [{
               "path": "/", "pathType": "Prefix",
               "backend": {"service": {"name": "trading-api", "port": {"number": 80}}}}]}}]}}
SCALED_OBJECT = {"apiVersion": "keda.sh/v1alpha1", "kind": "ScaledObject",
                 "metadata": {"name": "trading-api", "namespace": "trading"},
                 "spec": {"scaleTargetRef": {"name": "trading-api"}, "minReplicaCount": 1, "maxReplicaCount": 30,
                          "triggers": [{"type": "cpu", "metadata": {"value": "60"}}]}}
EMPTY_FLAGS = {"apiVersion": "v1", "kind": "ConfigMap",
               "metadata": {"name": "trading-api-flags", "namespace": "trading"}}

# (object as production has it, its path, module, module options)
CASES = {
    # the sandbox world's rule: a connect timeout, no outlier detection (chaos seed 483834)
    "rule-without-outlier-detection": (
        destination_rule({"host": HOST, "trafficPolicy": {"connectionPool": {"tcp": {"connectTimeout": "1s"}}}}),
        DR_PATH, "mesh_circuit_breaker", dict(BREAKER, name="redis")),
    "rule-without-traffic-policy": (
        destination_rule({"host": HOST}), DR_PATH, "mesh_circuit_breaker", dict(BREAKER, name="redis")),
    "rule-with-an-http-pool-only": (
        destination_rule({"host": HOST, "trafficPolicy": {"connectionPool": {"http": {"http2MaxRequests": 100}}}}),
        DR_PATH, "mesh_circuit_breaker", dict(BREAKER, name="redis")),
    "ingress-without-annotations-nginx": (
        INGRESS, INGRESS_PATH, "ingress_rate_limit", {"name": "trading-api", "rps": 50, "connections": 20}),
    "ingress-without-annotations-traefik": (
        INGRESS, INGRESS_PATH, "ingress_rate_limit", {"name": "trading-api", "provider": "traefik", "rps": 100}),
    "scaled-object-without-annotations": (
        SCALED_OBJECT, KEDA_PATH, "hpa_pause", {"name": "trading-api", "kind": "ScaledObject"}),
    "flag-configmap-without-data": (
        EMPTY_FLAGS, FLAGS_PATH, "feature_flag", {"name": "trading-api-flags",
                                                  "flags": {"redis.retry.aggressive": False}}),
}


def as_written(obj: Optional[Dict[str, Any]]) -> Dict[str, Any]:
    """What a person (or Istio, Traefik, KEDA) reads of the object: spec, data, labels, annotations, exactly."""
    obj = obj or {}
    metadata = obj.get("metadata") or {}
    return {"spec": obj.get("spec"), "data": obj.get("data"), "labels": metadata.get("labels"),
            "annotations": metadata.get("annotations")}


@pytest.fixture
def cluster(kubeapi: Any, request: pytest.FixtureRequest) -> Any:
    seed_ledger_namespace(kubeapi)
    kubeapi.seed([{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "trading"}}])
    kubeapi.incident_id = incident_for(request)
    return kubeapi


def mitigate(cluster: Any, obj: Dict[str, Any], path: str, module: str, options: Dict[str, Any]) -> Dict[str, Any]:
    cluster.seed([copy.deepcopy(obj)])
    original = as_written(get(cluster, path))
    module_args = dict(options, incident_id=cluster.incident_id, namespace="trading",
                       allowed_namespaces=["trading"], **kube_args(cluster))
    applied = run_module(module, module_args)
    assert not applied.failed and applied["changed"], applied.msg
    assert as_written(get(cluster, path)) != original
    return module_args


@pytest.mark.parametrize("case", sorted(CASES))
def test_the_module_restores_the_object_exactly(cluster: Any, case: str) -> None:
    obj, path, module, options = CASES[case]
    original = as_written(copy.deepcopy(obj))
    module_args = mitigate(cluster, obj, path, module, options)
    restored = run_module(module, dict(module_args, state="restored"))
    assert not restored.failed, restored.msg
    assert as_written(get(cluster, path)) == original
    assert get(cluster, MIDDLEWARE_PATH) is None
    assert {e["state"] for e in ledger_entries(cluster, cluster.incident_id)} == {"restored"}


@pytest.mark.parametrize("case", sorted(CASES))
def test_storm_rollback_restores_the_object_exactly(cluster: Any, case: str) -> None:
    obj, path, module, options = CASES[case]
    original = as_written(copy.deepcopy(obj))
    mitigate(cluster, obj, path, module, options)
    result = run_module("storm_rollback", {"incident_id": cluster.incident_id, "allowed_namespaces": ["trading"],
                                           **kube_args(cluster)})
    assert not result.failed, result.msg
    assert as_written(get(cluster, path)) == original


def test_a_map_someone_else_filled_meanwhile_is_kept(cluster: Any) -> None:
    obj, path, module, options = CASES["rule-without-outlier-detection"]
    module_args = mitigate(cluster, obj, path, module, options)
    # a human adds an outlier setting of their own during the incident: it is theirs, so the map stays
    cluster.request("PATCH", DR_PATH, {"spec": {"trafficPolicy": {"outlierDetection": {
        "splitExternalLocalOriginErrors": True}}}}, token="operator", content_type="application/merge-patch+json")
    assert not run_module(module, dict(module_args, state="restored")).failed
    spec = (get(cluster, DR_PATH) or {})["spec"]
    assert spec["trafficPolicy"] == {"connectionPool": {"tcp": {"connectTimeout": "1s"}},
                                     "outlierDetection": {"splitExternalLocalOriginErrors": True}}


def test_two_entries_that_share_the_created_map_remove_it_once_both_are_restored(cluster: Any) -> None:
    obj, path, module, options = CASES["rule-without-outlier-detection"]
    module_args = mitigate(cluster, dict(obj), path, module, dict(options, consecutive_5xx_errors=None,
                                                                     interval=None, base_ejection_time=None))
    tighter = run_module(module, dict(module_args, consecutive_5xx_errors=2, interval="5s"))
    assert not tighter.failed and tighter["changed"], tighter.msg
    entries: List[Dict[str, Any]] = ledger_entries(cluster, cluster.incident_id)
    assert len(entries) == 2
    for check in (True, False):
        restored = run_module(module, dict(module_args, state="restored"), check=check, diff=True)
        assert not restored.failed, restored.msg
    assert as_written(get(cluster, DR_PATH)) == as_written(obj)
