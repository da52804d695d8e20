"""kubectl against the emulator: get, scale, logs and top work as on a cluster."""

from __future__ import annotations

import json

import kubernetes
import pytest

from tests.fixtures.kubeapi import KubeApi, deployment, pod

pytestmark = pytest.mark.integration


def test_kubectl_get_scale_logs_top(kubeapi: KubeApi) -> None:
    kubeapi.seed([deployment("trading", "trading-api", replicas=2),
                  pod("trading", "trading-api-1", {"app": "trading-api"}, ip="127.1.0.1", restarts=4),
                  pod("payments", "payments-api-1", {"app": "payments-api"}, ip="127.2.0.1")])
    kubeapi.log("trading", "trading-api-1", "ok\nRedisTimeoutException: Redis command timed out after 2s\n")
    kubeapi.pod_metrics("trading", "trading-api-1", {"app": {"cpu": "900m", "memory": "200Mi"}})

    pods = kubeapi.kubectl("get", "pods", "-A")
    assert pods.returncode == 0, pods.stderr
    rows = [line.split() for line in pods.stdout.splitlines()]
    assert rows[0][:5] == ["NAMESPACE", "NAME", "READY", "STATUS", "RESTARTS"]
    assert [r[:5] for r in rows[1:]] == [["payments", "payments-api-1", "1/1", "Running", "0"],
                                        ["trading", "trading-api-1", "1/1", "Running", "4"]]

    as_json = kubeapi.kubectl("get", "deploy", "-n", "trading", "-o", "json")
    assert as_json.returncode == 0, as_json.stderr
    items = json.loads(as_json.stdout)["items"]
    assert [(i["kind"], i["metadata"]["name"], i["spec"]["replicas"]) for i in items] == [
        ("Deployment", "trading-api", 2)]

    scaled = kubeapi.kubectl("scale", "deployment/trading-api", "-n", "trading", "--replicas=5")
    assert scaled.returncode == 0, scaled.stderr
    assert scaled.stdout.strip() == "deployment.apps/trading-api scaled"
    apps = kubernetes.client.AppsV1Api(kubeapi.client())
    assert apps.read_namespaced_deployment("trading-api", "trading").spec.replicas == 5
    assert [(w["user"], w["verb"], w["subresource"]) for w in kubeapi.writes()] == [
        ("storm-operator", "patch", "scale")]

    logs = kubeapi.kubectl("logs", "trading-api-1", "-n", "trading", "--tail=1")
    assert logs.returncode == 0, logs.stderr
    assert logs.stdout == "RedisTimeoutException: Redis command timed out after 2s\n"

    top = kubeapi.kubectl("top", "pods", "-n", "trading")
    assert top.returncode == 0, top.stderr
    assert top.stdout.split()[:6] == ["NAME", "CPU(cores)", "MEMORY(bytes)", "trading-api-1", "900m", "200Mi"]

    can = kubeapi.kubectl("auth", "can-i", "patch", "deployments", "--subresource=scale", "-n", "trading",
                          token="readonly")
    assert (can.returncode, can.stdout.strip()) == (1, "no")

    denied = kubeapi.kubectl("scale", "deployment/trading-api", "-n", "trading", "--replicas=1", token="readonly")
    assert denied.returncode != 0
    assert ('User "storm-readonly" cannot patch resource "deployments/scale" in API group "apps" in the namespace '
            '"trading"') in denied.stderr
