"""Replica cuts are measured from the replicas before any incident still in effect, so alerts that
open incident after incident never compound a cut (6 -> 3 -> 2 -> 1)."""

from __future__ import annotations

from typing import Any, Dict

from ansible_collections.fintech.redis_storm.plugins.module_utils.baseline import pre_incident_value
from ansible_collections.fintech.redis_storm.plugins.module_utils.mitigation import Mitigator
from ansible_collections.fintech.redis_storm.plugins.module_utils.targets import ObjectRef
from ansible_collections.fintech.redis_storm.plugins.module_utils.workloads import scale_plan

from tests.helpers.fake_kube import FakeKube

DEPLOY = ObjectRef("apps/v1", "Deployment", "deployments", "trading", "api")
SCALE = ObjectRef("apps/v1", "Deployment", "deployments", "trading", "api", "scale")


def world(replicas: int = 6) -> FakeKube:
    kube = FakeKube()
    kube.put(DEPLOY.path, {"metadata": {"name": "api", "namespace": "trading"}, "spec": {"replicas": replicas}})
    return kube


def scale(kube: FakeKube, incident: str, **change: Any) -> Dict[str, Any]:
    p = {"incident_id": incident, "state": "applied", "allowed_namespaces": ["trading"], "protected_workloads": [],
         "min_replicas": 1, "max_reduction_percent": 50, "namespace": "trading", "name": "api",
         "kind": "Deployment", **change}
    return Mitigator(kube, p).run(scale_plan(kube, p))


def replicas(kube: FakeKube) -> int:
    return int(kube.objects[DEPLOY.path]["spec"]["replicas"])


def test_alert_after_alert_never_compounds_a_cut() -> None:
    kube = world(6)
    assert scale(kube, "alert-0000000000000001", reduce_by_percent=50)["changed"] is True
    for incident in ("alert-0000000000000002", "alert-0000000000000003", "storm-20261207-1600"):
        result = scale(kube, incident, reduce_by_percent=50)
        assert result["changed"] is False, result["msg"]
    assert replicas(kube) == 3
    assert pre_incident_value(kube, None, SCALE.to_target(), ("spec", "replicas")) == (True, 6)


def test_a_rolled_back_incident_no_longer_sets_the_base() -> None:
    kube = world(6)
    scale(kube, "inc-1", reduce_by_percent=50)
    scale(kube, "inc-1", state="restored")
    assert replicas(kube) == 6 and pre_incident_value(kube, None, SCALE.to_target(), ("spec", "replicas")) is None
    kube.put(DEPLOY.path, dict(kube.objects[DEPLOY.path], spec={"replicas": 8}))  # the HPA grew it since
    assert scale(kube, "inc-2", reduce_by_percent=50)["after"] == {"spec": {"replicas": 4}}


def test_only_the_ledgers_of_this_collection_count() -> None:
    kube = world(6)
    scale(kube, "inc-1", reduce_by_percent=50)
    ledger = next(path for path in kube.objects if "redis-storm-ledger-inc-1" in path)
    stranger = dict(kube.objects[ledger], metadata={"name": "someone-elses", "namespace": "redis-storm"})
    kube.put(ledger.rsplit("/", 1)[0] + "/someone-elses", stranger)
    del kube.objects[ledger]
    assert pre_incident_value(kube, None, SCALE.to_target(), ("spec", "replicas")) is None
