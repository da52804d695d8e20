"""The shared apply/restore flow, against an in-memory API (the emulator tests are in tests/integration)."""

from __future__ import annotations

from typing import Any, Dict, List

import pytest
from ansible_collections.fintech.redis_storm.plugins.module_utils.errors import StormError
from ansible_collections.fintech.redis_storm.plugins.module_utils.guards import GuardRefusal
from ansible_collections.fintech.redis_storm.plugins.module_utils.k8s_client import KubeApiError
from ansible_collections.fintech.redis_storm.plugins.module_utils.ledger import Ledger
from ansible_collections.fintech.redis_storm.plugins.module_utils.mitigation import Mitigator, Plan
from ansible_collections.fintech.redis_storm.plugins.module_utils.targets import ENTRIES_KEY, ObjectRef
from ansible_collections.fintech.redis_storm.plugins.module_utils.workloads import scale_plan

from tests.helpers.fake_kube import FakeKube

DEPLOY = ObjectRef("apps/v1", "Deployment", "deployments", "trading", "api")
FLAGS = ObjectRef("v1", "ConfigMap", "configmaps", "trading", "flags")


def world() -> FakeKube:
    kube = FakeKube()
    kube.put(DEPLOY.path, {"metadata": {"name": "api", "namespace": "trading"}, "spec": {"replicas": 6}})
    kube.put(FLAGS.path, {"metadata": {"name": "flags", "namespace": "trading"},
                          "data": {"redis.retry.aggressive": "true", "other": "x"}})
    return kube


def params(**extra: Any) -> Dict[str, Any]:
    base = {"incident_id": "inc-1", "state": "applied", "allowed_namespaces": ["trading"],
            "protected_workloads": [], "min_replicas": 1, "max_reduction_percent": 50}
    base.update(extra)
    return base


def flag_plan(value: str) -> Plan:
    return Plan(FLAGS, lambda live: {("data", "redis.retry.aggressive"): value}, module="feature_flag")


def run(kube: FakeKube, plan: Any, check: bool = False, **extra: Any) -> Dict[str, Any]:
    return Mitigator(kube, params(**extra), check_mode=check, diff=True).run(plan)


def test_check_mode_writes_nothing_and_predicts_the_real_run() -> None:
    kube = world()
    predicted = run(kube, flag_plan("false"), check=True)
    assert kube.writes == []
    real = run(kube, flag_plan("false"))
    assert predicted["changed"] is real["changed"] is True
    assert predicted["diff"] == real["diff"] == {
        "before": {"data": {"redis.retry.aggressive": "true"}}, "after": {"data": {"redis.retry.aggressive": "false"}},
        "before_header": "ConfigMap trading/flags", "after_header": "ConfigMap trading/flags"}
    assert real["ledger"]["entry_id"] == "entry-0001"
    data = kube.objects[FLAGS.path]["data"]
    assert data == {"redis.retry.aggressive": "false", "other": "x"}


def test_second_apply_is_unchanged_and_records_nothing() -> None:
    kube = world()
    run(kube, flag_plan("false"))
    again = run(kube, flag_plan("false"))
    assert again["changed"] is False and again["ledger"]["entry_id"] is None
    assert len(Ledger(kube, "inc-1").entries()) == 1


def test_restore_puts_back_and_second_restore_is_unchanged() -> None:
    kube = world()
    run(kube, flag_plan("false"))
    restored = run(kube, flag_plan("ignored"), state="restored")
    assert restored["changed"] is True
    assert restored["diff"]["after"] == {"data": {"redis.retry.aggressive": "true"}}
    assert kube.objects[FLAGS.path]["data"]["redis.retry.aggressive"] == "true"
    assert ENTRIES_KEY not in (kube.objects[FLAGS.path]["metadata"].get("annotations") or {})
    assert run(kube, flag_plan("ignored"), state="restored")["changed"] is False


def test_restore_refuses_drift() -> None:
    kube = world()
    run(kube, flag_plan("false"))
    obj = kube.objects[FLAGS.path]
    obj["data"]["redis.retry.aggressive"] = "maybe"
    kube.put(FLAGS.path, obj)
    with pytest.raises(StormError, match=r"drift.*maybe"):
        run(kube, flag_plan("x"), state="restored")
    assert run(kube, flag_plan("x"), state="restored", force=True)["changed"] is True


def test_conflict_on_the_object_is_retried_with_a_fresh_read() -> None:
    kube = world()
    kube.fail("PATCH", FLAGS.path, 409)
    result = run(kube, flag_plan("false"))
    assert result["changed"] and kube.objects[FLAGS.path]["data"]["redis.retry.aggressive"] == "false"
    states = [e["state"] for e in Ledger(kube, "inc-1").entries()]
    assert states == ["failed", "applied"]


def test_failed_write_leaves_a_failed_entry_and_the_object_unchanged() -> None:
    kube = world()
    kube.fail("PATCH", FLAGS.path, 500)
    with pytest.raises(KubeApiError, match="500"):
        run(kube, flag_plan("false"))
    assert kube.objects[FLAGS.path]["data"]["redis.retry.aggressive"] == "true"
    entry = Ledger(kube, "inc-1").entries()[0]
    assert entry["state"] == "failed" and "500" in entry["error"]


def test_scale_plan_writes_the_scale_subresource_and_annotates_the_deployment() -> None:
    kube = world()
    p = params(reduce_by_percent=50, namespace="trading", name="api", kind="Deployment")
    result = Mitigator(kube, p).run(scale_plan(kube, p))
    assert result["before"] == {"spec": {"replicas": 6}} and result["after"] == {"spec": {"replicas": 3}}
    deployment = kube.objects[DEPLOY.path]
    assert deployment["spec"]["replicas"] == 3
    assert deployment["metadata"]["annotations"][ENTRIES_KEY] == "entry-0001"
    p["state"] = "restored"
    Mitigator(kube, p).run(scale_plan(kube, p))
    assert kube.objects[DEPLOY.path]["spec"]["replicas"] == 6
    assert not kube.objects[DEPLOY.path]["metadata"].get("annotations")


@pytest.mark.parametrize("extra, rail", [
    ({"allowed_namespaces": ["payments"]}, "allowed_namespaces"),
    ({"protected_workloads": ["trading/*"]}, "protected_workloads"),
    ({"replicas": 1, "min_replicas": 2}, "min_replicas"),
    ({"replicas": 1, "max_reduction_percent": 50}, "max_reduction_percent"),
])
def test_guard_refusals_write_nothing(extra: Dict[str, Any], rail: str) -> None:
    kube = world()
    p = params(namespace="trading", name="api", kind="Deployment", replicas=4)
    p.update(extra)
    with pytest.raises(GuardRefusal) as caught:
        Mitigator(kube, p).run(scale_plan(kube, p))
    assert caught.value.rail == rail
    assert kube.writes == []


def test_missing_object_names_it() -> None:
    kube = FakeKube()
    with pytest.raises(StormError, match="ConfigMap trading/flags does not exist"):
        run(kube, flag_plan("false"))


def test_created_object_and_several_plans() -> None:
    kube = world()
    ref = ObjectRef("traefik.io/v1alpha1", "Middleware", "middlewares", "trading", "storm-limit")
    made: List[Dict[str, Any]] = []

    def create(desired: Dict[Any, Any]) -> Dict[str, Any]:
        body = {"apiVersion": "traefik.io/v1alpha1", "kind": "Middleware",
                "metadata": {"name": "storm-limit", "namespace": "trading"}, "spec": {"rateLimit": {"average": 10}}}
        made.append(body)
        return body

    plans = [Plan(ref, lambda live: {("spec", "rateLimit"): {"average": 10}}, "ingress_rate_limit", create=create),
             flag_plan("false")]
    result = run(kube, plans)
    assert set(result["diff"]["after"]) == {"Middleware trading/storm-limit", "ConfigMap trading/flags"}
    assert result["ledger"]["entry_ids"] == ["entry-0001", "entry-0002"]
    assert kube.objects[ref.path]["spec"]["rateLimit"] == {"average": 10}
    assert run(kube, plans)["changed"] is False
    assert run(kube, plans, state="restored")["changed"] is True
    assert ref.path not in kube.objects


def test_failure_after_an_earlier_plan_changed_says_so() -> None:
    kube = world()
    missing = ObjectRef("v1", "ConfigMap", "configmaps", "trading", "nope")
    plans = [flag_plan("false"), Plan(missing, lambda live: {("data", "a"): "b"}, module="feature_flag")]
    with pytest.raises(StormError) as caught:
        run(kube, plans)
    assert caught.value.details["changed"] is True
    assert "ConfigMap trading/nope does not exist" in caught.value.message
    assert "before that: set ConfigMap trading/flags" in caught.value.message
    assert caught.value.details["ledger"]["entry_ids"] == ["entry-0001"]


def test_write_that_landed_before_a_later_step_failed_is_reported_as_changed() -> None:
    kube = world()
    kube.fail("PATCH", DEPLOY.path, 500, exact=True)  # the /scale patch lands, the annotation patch fails
    p = params(replicas=4, namespace="trading", name="api", kind="Deployment")
    with pytest.raises(StormError) as caught:
        Mitigator(kube, p).run(scale_plan(kube, p))
    assert caught.value.details["changed"] is True and "was changed" in caught.value.message
    assert "500" in caught.value.message
    assert kube.objects[DEPLOY.path]["spec"]["replicas"] == 4
    assert Ledger(kube, "inc-1").entries()[0]["state"] == "applied"


def test_a_workload_that_may_be_scaled_but_not_annotated_is_scaled_with_the_ledger_as_its_record() -> None:
    kube = world()
    kube.fail("PATCH", DEPLOY.path, 403, exact=True)  # deploy/rbac.yml grants deployments/scale only
    p = params(replicas=4, namespace="trading", name="api", kind="Deployment")
    result = Mitigator(kube, p).run(scale_plan(kube, p))
    assert result["changed"] is True
    assert kube.objects[DEPLOY.path]["spec"]["replicas"] == 4
    assert [e["state"] for e in Ledger(kube, "inc-1").entries()] == ["applied"]
