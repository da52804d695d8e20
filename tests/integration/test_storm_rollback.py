"""storm_rollback against the Kubernetes API emulator and a real redis-server."""

from __future__ import annotations

from typing import Any, Dict, Iterator

import pytest
from ansible_collections.fintech.redis_storm.plugins.module_utils.k8s_client import Kube
from ansible_collections.fintech.redis_storm.plugins.module_utils.ledger import Ledger, make_field
from ansible_collections.fintech.redis_storm.plugins.module_utils.targets import redis_target

from tests.fixtures.kubeapi import running_kubeapi
from tests.helpers.mitigations import Target, incident_for, kube_args, ledger_entries, no_writes_since, strip
from tests.helpers.modules import run_module, run_playbook
from tests.helpers.trading import (
    DEPLOYMENT,
    FLAGS,
    INGRESS,
    LEDGER_NAMESPACE,
    MIDDLEWARE,
    TRADING_API,
    TRADING_FLAGS,
)

pytestmark = pytest.mark.integration

HPA = "/apis/autoscaling/v2/namespaces/trading/horizontalpodautoscalers/trading-api"
OBJECTS = [
    LEDGER_NAMESPACE, TRADING_API, TRADING_FLAGS,
    {"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
     "metadata": {"name": "trading-api", "namespace": "trading"},
     "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "trading-api"},
              "minReplicas": 2, "maxReplicas": 20}, "status": {"currentReplicas": 6}},
]


@pytest.fixture(scope="module")
def emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    with running_kubeapi(tmp_path_factory.mktemp("kubeapi")) as api:
        yield api


@pytest.fixture
def cluster(emulator: Any, request: pytest.FixtureRequest) -> Iterator[Any]:
    emulator.seed(OBJECTS)
    emulator.incident_id = incident_for(request)
    yield emulator
    emulator.clear_faults()


def common(kubeapi: Any) -> Dict[str, Any]:
    return {"incident_id": kubeapi.incident_id, "allowed_namespaces": ["trading"], **kube_args(kubeapi)}


def mitigate(kubeapi: Any) -> None:
    """Three mitigations, in ladder order."""
    base = dict(common(kubeapi), namespace="trading", name="trading-api")
    for module, extra in (("feature_flag", {"name": "trading-api-flags", "flags": {"redis.retry.aggressive": "false"}}),
                          ("workload_scale", {"replicas": 4}), ("hpa_pause", {})):
        result = run_module(module, dict(base, **extra))
        assert result["changed"], result.msg


def originals(kubeapi: Any) -> Dict[str, Any]:
    return {path: strip(Target(kubeapi, path).read(), bookkeeping=False) for path in (DEPLOYMENT, FLAGS, HPA)}


def rollback(kubeapi: Any, check: bool = False, **extra: Any) -> Any:
    return run_module("storm_rollback", dict(incident_id=kubeapi.incident_id, allowed_namespaces=["trading"],
                                             **kube_args(kubeapi), **extra), check=check, diff=True)


def test_rollback_restores_everything_newest_first_and_twice_is_a_no_op(cluster: Any) -> None:
    before = originals(cluster)
    mitigate(cluster)
    mark = cluster.last_seq()
    dry = rollback(cluster, check=True)
    assert dry["changed"] and dry["summary"]["restored"] == 3
    no_writes_since(cluster, mark)
    done = rollback(cluster)
    assert done["changed"] and done["summary"] == {"restored": 3, "drifted": 0, "missing": 0, "skipped": 0,
                                                   "failed": 0, "unapplied": 0,
                                                   "blocked": 0, "deferred": 0, "refused": 0}
    assert [e["module"] for e in done["entries"]] == ["hpa_pause", "workload_scale", "feature_flag"]
    assert [e["outcome"] for e in done["entries"]] == [e["outcome"] for e in dry["entries"]]
    assert done["diff"] == dry["diff"]
    assert done["diff"]["before"]["Deployment trading/trading-api/scale"] == {"spec": {"replicas": 4}}
    assert done["diff"]["after"]["Deployment trading/trading-api/scale"] == {"spec": {"replicas": 6}}
    assert done["diff"]["after"]["ConfigMap trading/trading-api-flags"] == {"data": {"redis.retry.aggressive": "true"}}
    assert originals(cluster) == before
    assert {e["state"] for e in ledger_entries(cluster, cluster.incident_id)} == {"restored"}
    mark = cluster.last_seq()
    again = rollback(cluster)
    assert again["changed"] is False and again["entries"] == [] and "nothing to roll back" in again.msg
    no_writes_since(cluster, mark)


def test_drift_blocks_only_that_entry_and_force_restores_it(cluster: Any) -> None:
    mitigate(cluster)
    cluster.request("PATCH", FLAGS, {"data": {"redis.retry.aggressive": "sometimes"}}, token="operator",
                    content_type="application/merge-patch+json")
    blocked = rollback(cluster)
    assert blocked.failed and blocked["summary"]["drifted"] == 1 and blocked["summary"]["restored"] == 2
    assert 'data.redis.retry.aggressive: we set "false", found "sometimes"' in blocked.msg
    assert Target(cluster, FLAGS).value(("data", "redis.retry.aggressive")) == "sometimes"
    forced = rollback(cluster, force=True)
    assert not forced.failed and forced["summary"]["restored"] == 1
    assert Target(cluster, FLAGS).value(("data", "redis.retry.aggressive")) == "true"


@pytest.mark.parametrize(("moved_to", "drift"), [(3, False), (5, True)])
def test_a_paused_hpa_scaling_down_is_not_drift_but_a_scale_up_is(cluster: Any, moved_to: int, drift: bool) -> None:
    # offender_scale_down's order: pause the HPA (scale-up only), then scale down
    base = dict(common(cluster), namespace="trading", name="trading-api")
    for module, extra in (("hpa_pause", {}), ("workload_scale", {"replicas": 4})):
        assert run_module(module, dict(base, **extra))["changed"]
    # the HPA's own scale-down as the load falls (or, for 5, a hand on the scale)
    cluster.request("PATCH", DEPLOYMENT + "/scale", {"spec": {"replicas": moved_to}}, token="operator",
                    content_type="application/merge-patch+json")
    done = rollback(cluster)
    scale = next(e for e in done["entries"] if e["module"] == "workload_scale")
    if drift:
        assert done.failed and scale["outcome"] == "drifted"
        assert "spec.replicas: we set 4, found 5" in done.msg
        assert Target(cluster, DEPLOYMENT).value(("spec", "replicas")) == 5
    else:
        assert not done.failed and done["summary"]["restored"] == 2, done.msg
        assert "HorizontalPodAutoscaler trading/trading-api, paused for scale-up only, had scaled it down from 4 " \
               "to 3" in scale["msg"]
        assert Target(cluster, DEPLOYMENT).value(("spec", "replicas")) == 6


def test_deleted_object_is_reported_missing(cluster: Any) -> None:
    mitigate(cluster)
    cluster.request("DELETE", HPA, token="operator")
    result = rollback(cluster)
    assert not result.failed and result["summary"]["missing"] == 1 and result["summary"]["restored"] == 2


def test_fault_after_the_write_leaves_a_pending_entry_that_rollback_restores(cluster: Any) -> None:
    # the entry is created (POST), the object scaled, then marking the entry applied (PUT) fails
    cluster.fault(resource="configmaps", verbs=["update"], status=500, count=1)
    result = run_module("workload_scale", dict(common(cluster), namespace="trading", name="trading-api", replicas=4))
    assert result.failed and "stays pending" in result.msg and "was changed" in result.msg
    assert Target(cluster, DEPLOYMENT).value(("spec", "replicas")) == 4
    [entry] = ledger_entries(cluster, cluster.incident_id)
    assert entry["state"] == "pending"
    done = rollback(cluster)
    assert done["summary"]["restored"] == 1, done.msg
    assert Target(cluster, DEPLOYMENT).value(("spec", "replicas")) == 6


def test_redis_entries_restore_with_config_set_or_are_left_as_skipped(cluster: Any, redis_server: Any) -> None:
    admin = redis_server.client()
    endpoint = "%s:%s" % (redis_server.host, redis_server.port)
    ledger = Ledger(Kube(kube_args(cluster)), cluster.incident_id)
    original = admin.config_get("timeout")["timeout"]
    field = make_field(("timeout",), True, original, "45")
    entry = ledger.record("redis_runtime_config", redis_target(endpoint), [field])
    admin.config_set("timeout", "45")
    ledger.set_state(entry["id"], "applied")

    skipped = rollback(cluster)  # a skipped entry is left, never a success
    assert skipped.failed and skipped["summary"]["skipped"] == 1
    assert [o["entry_id"] for o in skipped["left"]] == [entry["id"]]
    assert "redis connection options" in skipped.msg
    redis_options = {"host": redis_server.host, "port": redis_server.port, "password": redis_server.password}
    done = rollback(cluster, redis=redis_options)
    assert done["summary"]["restored"] == 1, done.msg
    assert admin.config_get("timeout")["timeout"] == original
    assert redis_server.password not in str(done)


def test_through_ansible_playbook(cluster: Any) -> None:
    mitigate(cluster)
    task = {"name": "rollback", "fintech.redis_storm.storm_rollback": {"incident_id": cluster.incident_id,
                                                                        "allowed_namespaces": ["trading"],
                                                                        **kube_args(cluster)}}
    run = run_playbook([task, dict(task, name="again")])
    assert run.rc == 0, run.output + run.stderr
    assert run.task("rollback")["summary"]["restored"] == 3 and run.task("again")["changed"] is False


# ------------------------------------------------------------- two open entries on one object, check mode



@pytest.fixture
def twice_limited(kubeapi: Any, request: pytest.FixtureRequest) -> Dict[str, Any]:
    """A Traefik rate limit applied twice in one incident: the Middleware has two open entries."""
    kubeapi.seed([OBJECTS[0], INGRESS])
    kubeapi.incident_id = incident_for(request)
    args = dict(common(kubeapi), namespace="trading", name="trading-api", provider="traefik", rps=100, burst=150)
    for rps in (100, 40):
        result = run_module("ingress_rate_limit", dict(args, rps=rps))
        assert not result.failed and result["changed"], result.msg
    entries = [e for e in ledger_entries(kubeapi, kubeapi.incident_id) if e["target"].get("kind") == "Middleware"]
    assert [e["action"] for e in entries] == ["create", "patch"]
    return args


def test_check_mode_restore_of_two_entries_on_one_object_is_not_drift(kubeapi: Any,
                                                                     twice_limited: Dict[str, Any]) -> None:
    restore = dict(twice_limited, state="restored")
    mark = kubeapi.last_seq()
    dry = run_module("ingress_rate_limit", restore, check=True, diff=True)
    assert not dry.failed and dry["changed"] is True, dry.msg
    assert "drift" not in dry.msg and "drift" not in dry
    no_writes_since(kubeapi, mark)
    assert kubeapi.writes(since=mark, include_dry_run=True), "the restore is validated with dry runs"
    assert Target(kubeapi, MIDDLEWARE).value(("spec", "rateLimit", "average")) == 40

    done = run_module("ingress_rate_limit", restore, diff=True)
    assert not done.failed and done["changed"] is True, done.msg
    assert done["diff"] == dry["diff"]
    assert done["ledger"]["entry_ids"] == dry["ledger"]["entry_ids"]
    assert kubeapi.raw("GET", MIDDLEWARE)[0] == 404
    assert {e["state"] for e in ledger_entries(kubeapi, kubeapi.incident_id)} == {"restored"}


def test_storm_rollback_check_mode_of_two_entries_on_one_object_is_not_drift(kubeapi: Any,
                                                                            twice_limited: Dict[str, Any]) -> None:
    kubeapi.seed([OBJECTS[1]])
    for replicas in (4, 2):  # two entries on the Deployment's /scale too
        scale = run_module("workload_scale", dict(common(kubeapi), namespace="trading", name="trading-api",
                                                  replicas=replicas))
        assert not scale.failed and scale["changed"], scale.msg
    mark = kubeapi.last_seq()
    dry = rollback(kubeapi, check=True)
    assert not dry.failed and dry["changed"] is True, dry.msg
    assert dry["summary"] == {"restored": 5, "drifted": 0, "missing": 0, "skipped": 0, "failed": 0, "unapplied": 0,
                                                   "blocked": 0, "deferred": 0, "refused": 0}
    assert all(e["drift"] == [] for e in dry["entries"])
    no_writes_since(kubeapi, mark)

    done = rollback(kubeapi)
    assert done["summary"] == dry["summary"], done.msg
    assert [(e["entry_id"], e["outcome"], e["fields"]) for e in done["entries"]] == [
        (e["entry_id"], e["outcome"], e["fields"]) for e in dry["entries"]]
    assert done["diff"] == dry["diff"]
    assert dry["diff"]["before"]["Middleware trading/redis-storm-ratelimit-trading-api"] == {
        "spec": {"rateLimit": {"average": 40, "period": "1s", "burst": 150}}}
    assert dry["diff"]["before"]["Deployment trading/trading-api/scale"] == {"spec": {"replicas": 2}}
    assert dry["diff"]["after"]["Deployment trading/trading-api/scale"] == {"spec": {"replicas": 6}}
    assert kubeapi.raw("GET", MIDDLEWARE)[0] == 404
    assert Target(kubeapi, DEPLOYMENT).value(("spec", "replicas")) == 6
