"""hpa_pause against the Kubernetes API emulator: HPA v2 and KEDA ScaledObject."""

from __future__ import annotations

from typing import Any, Dict, Iterator

import pytest

from tests.fixtures.kubeapi import running_kubeapi
from tests.helpers.mitigations import Target, check_contract, incident_for, kube_args, no_writes_since
from tests.helpers.modules import run_module, run_playbook

pytestmark = pytest.mark.integration

HPA = "/apis/autoscaling/v2/namespaces/trading/horizontalpodautoscalers/trading-api"
KEDA = "/apis/keda.sh/v1alpha1/namespaces/payments/scaledobjects/payments-worker"


def deployment(namespace: str, name: str, replicas: int) -> Dict[str, Any]:
    labels = {"app": name}
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name, "namespace": namespace},
            "spec": {"replicas": replicas, "selector": {"matchLabels": labels},
                     "template": {"metadata": {"labels": labels},
                                  "spec": {"containers": [{"name": "app", "image": "app:1"}]}}}}


def hpa(status: bool = True) -> Dict[str, Any]:
    obj: Dict[str, Any] = {
        "apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": "trading-api", "namespace": "trading"},
        "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "trading-api"},
                 "minReplicas": 2, "maxReplicas": 20,
                 "behavior": {"scaleDown": {"stabilizationWindowSeconds": 300}},
                 "metrics": [{"type": "Resource", "resource": {"name": "cpu",
                                                               "target": {"type": "Utilization",
                                                                          "averageUtilization": 70}}}]}}
    if status:
        obj["status"] = {"currentReplicas": 7, "desiredReplicas": 9}
    return obj


SCALED_OBJECT = {"apiVersion": "keda.sh/v1alpha1", "kind": "ScaledObject",
                 "metadata": {"name": "payments-worker", "namespace": "payments"},
                 "spec": {"scaleTargetRef": {"name": "payments-worker"}, "minReplicaCount": 1,
                          "maxReplicaCount": 30, "triggers": [{"type": "cpu", "metadata": {"value": "60"}}]}}


@pytest.fixture(scope="module")
def emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    with running_kubeapi(tmp_path_factory.mktemp("kubeapi")) as api:
        yield api


@pytest.fixture
def cluster(emulator: Any, request: pytest.FixtureRequest) -> Iterator[Any]:
    emulator.seed([{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "redis-storm"}},
                   deployment("trading", "trading-api", 5), deployment("payments", "payments-worker", 3),
                   hpa(), SCALED_OBJECT])
    emulator.incident_id = incident_for(request)
    yield emulator
    emulator.clear_faults()


def args(kubeapi: Any, **extra: Any) -> Dict[str, Any]:
    base = {"incident_id": kubeapi.incident_id, "namespace": "trading", "name": "trading-api",
            "allowed_namespaces": ["trading", "payments"], **kube_args(kubeapi)}
    base.update(extra)
    return base


def test_hpa_pause_disables_scale_up_and_pins_max_to_current(cluster: Any) -> None:
    result = check_contract(cluster, "hpa_pause", args(cluster), Target(cluster, HPA),
                            {("spec", "behavior", "scaleUp", "selectPolicy"): "Disabled", ("spec", "maxReplicas"): 7})
    assert result["paused"] is True and result["max_replicas"] == 7
    before, after = result["diff"]["before"]["spec"], result["diff"]["after"]["spec"]
    assert before["maxReplicas"] == 20 and before["behavior"]["scaleUp"]["selectPolicy"] == "Max"
    assert after["behavior"] == {"scaleUp": {"selectPolicy": "Disabled"}}
    # the rest of the behavior (the scale-down window the team set) is left as it was
    assert Target(cluster, HPA).value(("spec", "behavior", "scaleDown", "stabilizationWindowSeconds")) == 300


def test_hpa_without_status_pins_to_the_targets_scale(cluster: Any) -> None:
    cluster.seed([hpa(status=False)])
    result = run_module("hpa_pause", args(cluster))
    assert result["changed"] and result["max_replicas"] == 5
    assert Target(cluster, HPA).value(("spec", "maxReplicas")) == 5


def test_second_pause_keeps_the_pin_even_when_replicas_moved(cluster: Any) -> None:
    assert run_module("hpa_pause", args(cluster))["max_replicas"] == 7
    cluster.seed([dict(Target(cluster, HPA).read(), status={"currentReplicas": 4})])
    again = run_module("hpa_pause", args(cluster))
    assert again["changed"] is False and again["paused"] is True and again["max_replicas"] == 7


def test_keda_pause_sets_the_paused_annotation(cluster: Any) -> None:
    result = check_contract(cluster, "hpa_pause",
                            args(cluster, kind="ScaledObject", namespace="payments", name="payments-worker"),
                            Target(cluster, KEDA), {("metadata", "annotations", "autoscaling.keda.sh/paused"): "true"})
    assert result["paused"] is True and result["max_replicas"] is None


def test_protected_scale_target_refuses_the_pause(cluster: Any) -> None:
    mark = cluster.last_seq()
    result = run_module("hpa_pause", args(cluster, protected_workloads=["trading/trading-api"]))
    assert result.failed and result["guard"] == "protected_workloads"
    no_writes_since(cluster, mark)


def test_drift_on_max_replicas_is_refused(cluster: Any) -> None:
    run_module("hpa_pause", args(cluster))
    cluster.request("PATCH", HPA, {"spec": {"maxReplicas": 12}}, token="operator",
                    content_type="application/merge-patch+json")
    refused = run_module("hpa_pause", args(cluster, state="restored"))
    assert refused.failed and "spec.maxReplicas: we set 7, found 12" in refused.msg
    assert Target(cluster, HPA).value(("spec", "behavior", "scaleUp", "selectPolicy")) == "Disabled"


def test_through_ansible_playbook(cluster: Any) -> None:
    run = run_playbook([{"name": "pause", "fintech.redis_storm.hpa_pause": args(cluster)},
                        {"name": "resume", "fintech.redis_storm.hpa_pause": args(cluster, state="restored")}])
    assert run.rc == 0, run.output + run.stderr
    assert run.task("pause")["paused"] is True and run.task("resume")["paused"] is False
    assert Target(cluster, HPA).value(("spec", "maxReplicas")) == 20
