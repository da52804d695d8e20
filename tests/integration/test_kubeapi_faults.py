"""Fault injection in the emulator: errors, latency and dropped connections, by resource, verb, user and count."""

from __future__ import annotations

import json
import time

import kubernetes
import pytest
import urllib3
from kubernetes.client.exceptions import ApiException

from tests.fixtures.kubeapi import KubeApi, deployment

pytestmark = pytest.mark.integration


def scale_to(apps: kubernetes.client.AppsV1Api, replicas: int) -> int:
    return int(apps.patch_namespaced_deployment_scale("api", "trading", {"spec": {"replicas": replicas}}).spec.replicas)


def test_error_fault_after_and_count(kubeapi: KubeApi) -> None:
    kubeapi.seed([deployment("trading", "api")])
    apps = kubernetes.client.AppsV1Api(kubeapi.client())
    kubeapi.fault(resource="deployments", subresource="scale", verbs=["patch"], kind="error", status=500,
                  after=1, count=2)
    assert scale_to(apps, 2) == 2
    for replicas in (3, 4):
        with pytest.raises(ApiException) as info:
            scale_to(apps, replicas)
        body = json.loads(info.value.body)
        assert (info.value.status, body["reason"], body["message"]) == (
            500, "InternalError", "Internal error occurred: injected fault")
    assert scale_to(apps, 5) == 5
    assert apps.read_namespaced_deployment("api", "trading").spec.replicas == 5
    assert [e["code"] for e in kubeapi.audit()] == [200, 500, 500, 200]
    assert [(f["seen"], f["fired"]) for f in kubeapi.faults()] == [(4, 2)]


def test_error_fault_targets_one_user_and_verb(kubeapi: KubeApi) -> None:
    kubeapi.seed([deployment("trading", "api")])
    kubeapi.fault(resource="deployments", verbs=["get"], users=["storm-readonly"], kind="error", status=503)
    reader = kubernetes.client.AppsV1Api(kubeapi.client("readonly"))
    with pytest.raises(ApiException) as info:
        reader.read_namespaced_deployment("api", "trading")
    assert info.value.status == 503 and json.loads(info.value.body)["reason"] == "ServiceUnavailable"
    operator = kubernetes.client.AppsV1Api(kubeapi.client("operator"))
    assert operator.read_namespaced_deployment("api", "trading").metadata.name == "api"
    assert scale_to(operator, 2) == 2
    kubeapi.clear_faults()
    assert kubeapi.faults() == []
    assert reader.read_namespaced_deployment("api", "trading").spec.replicas == 2


def test_latency_fault_delays_only_matching_requests(kubeapi: KubeApi) -> None:
    kubeapi.seed([deployment("trading", "api")])
    apps = kubernetes.client.AppsV1Api(kubeapi.client())
    core = kubernetes.client.CoreV1Api(kubeapi.client())
    kubeapi.fault(resource="deployments", subresource="", verbs=["get"], kind="latency", latency=0.6, count=1)
    started = time.monotonic()
    apps.read_namespaced_deployment("api", "trading")
    slow = time.monotonic() - started
    started = time.monotonic()
    apps.read_namespaced_deployment("api", "trading")
    core.list_namespace()
    fast = time.monotonic() - started
    assert slow >= 0.6, slow
    assert fast < 0.5, fast


def test_drop_fault_closes_the_connection_without_a_response(kubeapi: KubeApi) -> None:
    kubeapi.seed([deployment("trading", "api")])
    apps = kubernetes.client.AppsV1Api(kubeapi.client())
    kubeapi.fault(resource="deployments", verbs=["patch"], kind="drop", count=1)
    with pytest.raises(urllib3.exceptions.ProtocolError):
        scale_to(apps, 3)
    assert apps.read_namespaced_deployment("api", "trading").spec.replicas == 1, "the dropped write did nothing"
    assert scale_to(apps, 3) == 3
    entries = kubeapi.audit()
    assert [(e["verb"], e["code"]) for e in entries] == [("patch", None), ("patch", 200)]
    assert kubeapi.writes() == entries[1:]


def test_bad_fault_spec_is_refused(kubeapi: KubeApi) -> None:
    code, body = kubeapi.raw("POST", "/_sandbox/faults", {"resource": "pods", "kind": "explode"}, token="admin")
    assert code == 400 and "fault kind must be one of" in body["message"]
    code, body = kubeapi.raw("POST", "/_sandbox/faults", {"resource": "pods", "colour": "red"}, token="admin")
    assert code == 400 and body["message"] == "unknown fault fields: colour"


def test_one_fault_can_be_removed_by_id(kubeapi: KubeApi) -> None:
    kubeapi.seed([deployment("trading", "api")])
    slow = kubeapi.fault(resource="deployments", kind="latency", latency=5.0)
    broken = kubeapi.fault(resource="deployments", verbs=["get"], kind="error", status=500)
    kubeapi.request("DELETE", "/_sandbox/faults/%d" % slow["id"])
    assert [f["id"] for f in kubeapi.faults()] == [broken["id"]]
    apps = kubernetes.client.AppsV1Api(kubeapi.client())
    started = time.monotonic()
    with pytest.raises(ApiException) as info:
        apps.read_namespaced_deployment("api", "trading")
    assert info.value.status == 500 and time.monotonic() - started < 2.5
