"""workload_scale against the Kubernetes API emulator: the mitigation contract, guard rails and failures."""

from __future__ import annotations

from typing import Any, Dict, Iterator

import pytest

from tests.fixtures.kubeapi import running_kubeapi
from tests.helpers.mitigations import (
    Target,
    check_contract,
    incident_for,
    kube_args,
    ledger_entries,
    no_writes_since,
)
from tests.helpers.modules import run_module, run_playbook

pytestmark = pytest.mark.integration

DEPLOYMENT = "/apis/apps/v1/namespaces/trading/deployments/trading-api"


def workload(kind: str, name: str, replicas: int, namespace: str = "trading") -> Dict[str, Any]:
    labels = {"app": name}
    return {"apiVersion": "apps/v1", "kind": kind, "metadata": {"name": name, "namespace": namespace,
                                                                "labels": labels, "annotations": {"team": "fx"}},
            "spec": {"replicas": replicas, "selector": {"matchLabels": labels},
                     "template": {"metadata": {"labels": labels},
                                  "spec": {"containers": [{"name": "app", "image": "trading:1.0"}]}}}}


@pytest.fixture(scope="module")
def emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    with running_kubeapi(tmp_path_factory.mktemp("kubeapi")) as api:
        yield api


@pytest.fixture
def cluster(emulator: Any, request: pytest.FixtureRequest) -> Iterator[Any]:
    """The module's emulator with the workloads put back as new and a fresh incident id per test."""
    emulator.seed([{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "redis-storm"}},
                   workload("Deployment", "trading-api", 6),
                   workload("StatefulSet", "redis-node", 1, namespace="redis")])
    emulator.incident_id = incident_for(request)
    yield emulator
    emulator.clear_faults()


def args(kubeapi: Any, **extra: Any) -> Dict[str, Any]:
    base = {"incident_id": kubeapi.incident_id, "namespace": "trading", "name": "trading-api",
            "allowed_namespaces": ["trading", "redis"], **kube_args(kubeapi)}
    base.update(extra)
    return base


def test_scale_down_keeps_the_mitigation_contract(cluster: Any) -> None:
    result = check_contract(cluster, "workload_scale", args(cluster, reduce_by_percent=50),
                            Target(cluster, DEPLOYMENT), {("spec", "replicas"): 3})
    assert (result["replicas_before"], result["replicas_after"]) == (6, 3)
    scale_patches = [w for w in cluster.audit() if w["subresource"] == "scale" and not w["dry_run"]]
    assert scale_patches and all(w["verb"] == "patch" for w in scale_patches)
    assert [e["state"] for e in ledger_entries(cluster, cluster.incident_id)] == ["restored"]


def test_drift_is_refused_naming_the_values_and_force_restores(cluster: Any) -> None:
    assert not run_module("workload_scale", args(cluster, replicas=4)).failed
    cluster.request("PATCH", DEPLOYMENT + "/scale", {"spec": {"replicas": 9}}, token="operator",
                    content_type="application/merge-patch+json")
    refused = run_module("workload_scale", args(cluster, state="restored"))
    assert refused.failed
    assert "spec.replicas: we set 4, found 9" in refused.msg and "force: true" in refused.msg
    assert Target(cluster, DEPLOYMENT).value(("spec", "replicas")) == 9
    forced = run_module("workload_scale", args(cluster, state="restored", force=True))
    assert forced["changed"] and Target(cluster, DEPLOYMENT).value(("spec", "replicas")) == 6


@pytest.mark.parametrize("extra, rail", [
    ({"namespace": "payments", "replicas": 4}, "allowed_namespaces"),
    ({"replicas": 4, "allowed_namespaces": []}, "allowed_namespaces"),
    ({"replicas": 4, "protected_workloads": ["trading/*"]}, "protected_workloads"),
    ({"replicas": 4, "min_replicas": 5}, "min_replicas"),
    ({"replicas": 2, "max_reduction_percent": 50}, "max_reduction_percent"),
    ({"reduce_by_percent": 60}, "max_reduction_percent"),
])
def test_each_guard_rail_refuses_and_writes_nothing(cluster: Any, extra: Dict[str, Any], rail: str) -> None:
    mark = cluster.last_seq()
    result = run_module("workload_scale", args(cluster, **extra))
    assert result.failed and result["refused"] is True and result["guard"] == rail
    assert result.msg.startswith("refused by guard rail %s" % rail) and "option %s" % rail in result.msg
    no_writes_since(cluster, mark)


def test_redis_statefulset_scale_up_warns_about_full_sync(cluster: Any) -> None:
    result = run_module("workload_scale", args(cluster, kind="StatefulSet", namespace="redis", name="redis-node",
                                               replicas=2, incident_id=cluster.incident_id + "-redis"))
    assert result["changed"] and any("full sync" in w for w in result.warnings)


def test_read_only_identity_gets_a_clear_403(cluster: Any, tmp_path: Any) -> None:
    readonly = args(cluster, replicas=4, **kube_args(cluster, "readonly", tmp_path))
    dry = run_module("workload_scale", readonly, check=True)
    assert dry.failed and "forbidden (403): this identity may not patch deployments/scale (group apps)" in dry.msg
    real = run_module("workload_scale", readonly)
    assert real.failed and "undo ledger" in real.msg
    assert "forbidden (403): this identity may not create configmaps in namespace redis-storm" in real.msg
    assert Target(cluster, DEPLOYMENT).value(("spec", "replicas")) == 6


def test_failed_write_leaves_a_failed_entry_and_the_object_unchanged(cluster: Any) -> None:
    cluster.fault(resource="deployments", subresource="scale", verbs=["patch"], status=500, count=1)
    result = run_module("workload_scale", args(cluster, replicas=4))
    assert result.failed and "500" in result.msg
    assert Target(cluster, DEPLOYMENT).value(("spec", "replicas")) == 6
    [entry] = ledger_entries(cluster, cluster.incident_id)
    assert entry["state"] == "failed" and entry["fields"][0]["before"] == 6


def test_unknown_workload_is_named(cluster: Any) -> None:
    result = run_module("workload_scale", args(cluster, name="nope", replicas=1))
    assert result.failed and "Deployment trading/nope" in result.msg and "does not exist" in result.msg


def test_through_ansible_playbook_check_then_real(cluster: Any) -> None:
    task = {"name": "scale down", "fintech.redis_storm.workload_scale": args(cluster, replicas=4)}
    mark = cluster.last_seq()
    dry = run_playbook([task], check=True, diff=True)
    assert dry.rc == 0, dry.output + dry.stderr
    no_writes_since(cluster, mark)
    real = run_playbook([task], diff=True)
    assert real.rc == 0, real.output + real.stderr
    assert dry.task("scale down")["diff"] == real.task("scale down")["diff"]
    assert real.task("scale down")["replicas_after"] == 4
    assert Target(cluster, DEPLOYMENT).value(("spec", "replicas")) == 4


def test_conflict_on_the_object_is_retried_with_a_fresh_read(cluster: Any) -> None:
    cluster.fault(resource="deployments", subresource="scale", verbs=["patch"], status=409, count=1)
    result = run_module("workload_scale", args(cluster, replicas=4))
    assert not result.failed and result["changed"], result.msg
    assert Target(cluster, DEPLOYMENT).value(("spec", "replicas")) == 4
    assert [e["state"] for e in ledger_entries(cluster, cluster.incident_id)] == ["failed", "applied"]



def test_api_timeout_is_a_clear_error_and_changes_nothing(cluster: Any) -> None:
    cluster.fault(resource="deployments", subresource="scale", verbs=["get"], kind="latency", latency=1.0)
    mark = cluster.last_seq()
    result = run_module("workload_scale", args(cluster, replicas=4, request_timeout=0.3))
    assert result.failed and "timed out after 0.3s on get deployments/scale trading/trading-api" in result.msg
    no_writes_since(cluster, mark)


def test_incident_after_incident_never_compounds_a_cut(cluster: Any) -> None:
    first = run_module("workload_scale", args(cluster, reduce_by_percent=50))
    assert (first["replicas_before"], first["replicas_after"]) == (6, 3), first.msg
    # each alert group is an incident of its own: its ledger starts empty, the cut is still from 6
    for later in ("alert-00000000000000a1", "alert-00000000000000a2"):
        again = run_module("workload_scale", args(cluster, incident_id=later, reduce_by_percent=50))
        assert again["changed"] is False and again["replicas_after"] == 3, again.msg
    assert Target(cluster, DEPLOYMENT).value(("spec", "replicas")) == 3
    assert run_module("workload_scale", args(cluster, state="restored"))["changed"] is True
    assert Target(cluster, DEPLOYMENT).value(("spec", "replicas")) == 6
