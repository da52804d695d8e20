"""mesh_circuit_breaker against the Kubernetes API emulator: an Istio DestinationRule for the Redis host."""

from __future__ import annotations

import copy
from typing import Any, Dict

import pytest

from tests.integration.mitigation_common import (
    assert_second_apply_is_noop,
    check_then_apply,
    get,
    ledger_entries,
    object_writes,
    restore_twice,
    run,
    seed_ledger_namespace,
    without_bookkeeping,
)

pytestmark = pytest.mark.integration

MODULE = "mesh_circuit_breaker"
INCIDENT = "storm-20261126-0610"
HOST = "redis.redis.svc.cluster.local"
DR_PATH = "/apis/networking.istio.io/v1beta1/namespaces/trading/destinationrules/redis"
EXISTING_SPEC: Dict[str, Any] = {
    "host": HOST,
    "trafficPolicy": {
        "connectionPool": {"tcp": {"maxConnections": 1000, "connectTimeout": "2s"},
                           "http": {"http1MaxPendingRequests": 64}},
        "outlierDetection": {"consecutive5xxErrors": 7, "splitExternalLocalOriginErrors": True},
        "tls": {"mode": "ISTIO_MUTUAL"},
    },
}
BREAKER = {"max_connections": 20, "consecutive_5xx_errors": 3, "interval": "5s", "base_ejection_time": "30s",
           "max_ejection_percent": 50}


def destination_rule(spec: Dict[str, Any]) -> Dict[str, Any]:
    return {"apiVersion": "networking.istio.io/v1beta1", "kind": "DestinationRule",
            "metadata": {"namespace": "trading", "name": "redis", "labels": {"team": "trading"}},
            "spec": copy.deepcopy(spec)}


def args(kubeapi: Any, **extra: Any) -> Dict[str, Any]:
    return dict({"kubeconfig": str(kubeapi.kubeconfig), "incident_id": INCIDENT, "namespace": "trading",
                 "name": "redis", "redis_host": HOST, "allowed_namespaces": ["trading"], "workload": "trading-api"},
                **extra)


@pytest.fixture
def cluster(kubeapi: Any) -> Any:
    seed_ledger_namespace(kubeapi)
    kubeapi.seed([{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "trading"}}])
    return kubeapi


def test_creates_the_rule_when_absent_and_restore_deletes_it(cluster: Any) -> None:
    module_args = args(cluster, **BREAKER)
    applied = check_then_apply(cluster, MODULE, module_args, lambda: get(cluster, DR_PATH))
    rule = get(cluster, DR_PATH)
    assert rule is not None
    assert rule["spec"] == {"host": HOST, "trafficPolicy": {
        "connectionPool": {"tcp": {"maxConnections": 20}},
        "outlierDetection": {"consecutive5xxErrors": 3, "interval": "5s", "baseEjectionTime": "30s",
                             "maxEjectionPercent": 50}}}
    assert applied["diff"]["before"] == {}
    assert any("maxConnections x the number of client pods" in w for w in applied.warnings)
    assert [e["action"] for e in ledger_entries(cluster, INCIDENT)] == ["create"]

    assert_second_apply_is_noop(cluster, MODULE, module_args)
    restore_twice(cluster, MODULE, module_args)
    assert get(cluster, DR_PATH) is None
    assert [e["state"] for e in ledger_entries(cluster, INCIDENT)] == ["restored"]


def test_changes_only_the_owned_fields_of_an_existing_rule(cluster: Any) -> None:
    cluster.seed([destination_rule(EXISTING_SPEC)])
    module_args = args(cluster, max_connections=50, consecutive_gateway_errors=2, interval="10s")
    applied = check_then_apply(cluster, MODULE, module_args, lambda: get(cluster, DR_PATH))
    expected = copy.deepcopy(EXISTING_SPEC)
    expected["trafficPolicy"]["connectionPool"]["tcp"]["maxConnections"] = 50
    expected["trafficPolicy"]["outlierDetection"].update(consecutiveGatewayErrors=2, interval="10s")
    rule = get(cluster, DR_PATH) or {}
    assert rule["spec"] == expected
    assert rule["metadata"]["labels"] == {"team": "trading"}
    assert applied["diff"]["before"] == {"spec": {"trafficPolicy": {"connectionPool": {"tcp": {
        "maxConnections": 1000}}}}}
    assert [e["action"] for e in ledger_entries(cluster, INCIDENT)] == ["patch"]

    assert_second_apply_is_noop(cluster, MODULE, module_args)
    restore_twice(cluster, MODULE, module_args)
    rule = get(cluster, DR_PATH) or {}
    assert rule["spec"] == EXISTING_SPEC
    assert without_bookkeeping(rule["metadata"].get("annotations") or {}) == {}
    assert "annotations" not in rule["metadata"] or rule["metadata"]["annotations"] == {}


def test_restore_refuses_drift_until_forced(cluster: Any) -> None:
    cluster.seed([destination_rule(EXISTING_SPEC)])
    module_args = args(cluster, max_connections=50)
    assert not run(MODULE, module_args).failed
    cluster.request("PATCH", DR_PATH, {"spec": {"trafficPolicy": {"connectionPool": {"tcp": {"maxConnections": 80}}}}},
                    token="operator", content_type="application/merge-patch+json")
    mark = cluster.last_seq()
    refused = run(MODULE, dict(module_args, state="restored"))
    assert refused.failed
    assert "spec.trafficPolicy.connectionPool.tcp.maxConnections: we set 50, found 80" in refused.msg
    assert object_writes(cluster, mark) == []
    forced = run(MODULE, dict(module_args, state="restored", force=True))
    assert not forced.failed and forced["changed"]
    assert (get(cluster, DR_PATH) or {})["spec"] == EXISTING_SPEC


def test_a_rule_for_another_host_is_refused(cluster: Any) -> None:
    cluster.seed([destination_rule(dict(EXISTING_SPEC, host="postgres.db.svc.cluster.local"))])
    mark = cluster.last_seq()
    result = run(MODULE, args(cluster, max_connections=10))
    assert result.failed and "is for host 'postgres.db.svc.cluster.local', not %r" % HOST in result.msg
    assert cluster.audit(since=mark) == []


@pytest.mark.parametrize(
    ("extra", "message"),
    [({"interval": "5 seconds"}, "interval '5 seconds' is not a duration"),
     ({"max_ejection_percent": 150}, "max_ejection_percent must be between 0 and 100"),
     ({"max_connections": 0}, "max_connections must be at least 1"),
     ({"max_connections": None}, "give max_connections and/or outlier detection settings"),
     ({"redis_host": None}, "redis_host is required with state applied")],
)
def test_bad_values_are_refused_before_any_write(cluster: Any, extra: Dict[str, Any], message: str) -> None:
    mark = cluster.last_seq()
    result = run(MODULE, args(cluster, **dict({"max_connections": 10}, **extra)))
    assert result.failed and message in result.msg
    assert cluster.audit(since=mark) == []


@pytest.mark.parametrize(
    ("extra", "rail"),
    [({"namespace": "payments"}, "allowed_namespaces"),
     ({"protected_workloads": ["trading/trading-api"]}, "protected_workloads")],
)
def test_guard_rails_refuse(cluster: Any, extra: Dict[str, Any], rail: str) -> None:
    mark = cluster.last_seq()
    result = run(MODULE, args(cluster, max_connections=10, **extra))
    assert result.failed and result["guard"] == rail and "refused by guard rail %s" % rail in result.msg
    assert cluster.audit(since=mark) == []


def test_istio_v1_api_version(cluster: Any) -> None:
    result = run(MODULE, args(cluster, max_connections=10, api_version="networking.istio.io/v1"))
    assert not result.failed, result.msg
    rule = get(cluster, "/apis/networking.istio.io/v1/namespaces/trading/destinationrules/redis") or {}
    assert rule["spec"]["trafficPolicy"]["connectionPool"]["tcp"]["maxConnections"] == 10
    assert not run(MODULE, args(cluster, api_version="networking.istio.io/v1", state="restored")).failed
    assert get(cluster, DR_PATH) is None


def test_create_failure_leaves_the_ledger_truthful(cluster: Any) -> None:
    cluster.fault(resource="destinationrules", verbs=["create"], kind="error", status=503)
    result = run(MODULE, args(cluster, max_connections=10))
    assert result.failed and "503" in result.msg
    cluster.clear_faults()
    assert get(cluster, DR_PATH) is None
    assert [e["state"] for e in ledger_entries(cluster, INCIDENT)] == ["failed"]
