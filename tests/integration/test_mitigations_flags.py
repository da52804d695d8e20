"""feature_flag against the Kubernetes API emulator: plain keys and flagd documents."""

from __future__ import annotations

import json
from typing import Any, Dict, Iterator

import pytest

from tests.fixtures.kubeapi import running_kubeapi
from tests.helpers.mitigations import Target, check_contract, incident_for, kube_args, ledger_entries
from tests.helpers.modules import run_module, run_playbook

pytestmark = pytest.mark.integration

PLAIN = "/api/v1/namespaces/trading/configmaps/trading-api-flags"
FLAGD = "/api/v1/namespaces/payments/configmaps/payments-flags"
FLAGD_DOC = {"flags": {
    "redis.retry.aggressive": {"state": "ENABLED", "variants": {"on": True, "off": False}, "defaultVariant": "on"},
    "redis.circuit_breaker.force_open": {"state": "ENABLED", "variants": {"on": True, "off": False},
                                         "defaultVariant": "off"}}}


@pytest.fixture(scope="module")
def emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    with running_kubeapi(tmp_path_factory.mktemp("kubeapi")) as api:
        yield api


@pytest.fixture
def cluster(emulator: Any, request: pytest.FixtureRequest) -> Iterator[Any]:
    emulator.seed([
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "redis-storm"}},
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "trading-api-flags", "namespace": "trading"},
         "data": {"redis.retry.aggressive": "true", "feature.new-checkout": "on"}},
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "payments-flags", "namespace": "payments"},
         "data": {"flags.json": json.dumps(FLAGD_DOC, indent=2)}}])
    emulator.incident_id = incident_for(request)
    yield emulator
    emulator.clear_faults()


def args(kubeapi: Any, **extra: Any) -> Dict[str, Any]:
    base = {"incident_id": kubeapi.incident_id, "namespace": "trading", "name": "trading-api-flags",
            "flags": {"redis.retry.aggressive": False, "redis.circuit_breaker.force_open": "true"},
            "allowed_namespaces": ["trading", "payments"], **kube_args(kubeapi)}
    base.update(extra)
    return base


def test_plain_flags_keep_the_mitigation_contract(cluster: Any) -> None:
    result = check_contract(cluster, "feature_flag", args(cluster), Target(cluster, PLAIN),
                            {("data", "redis.retry.aggressive"): "false",
                             ("data", "redis.circuit_breaker.force_open"): "true"})
    assert result["diff"]["before"] == {"data": {"redis.retry.aggressive": "true"}}
    [entry] = ledger_entries(cluster, cluster.incident_id)
    added = [f for f in entry["fields"] if f["path"] == ["data", "redis.circuit_breaker.force_open"]]
    assert added[0]["present_before"] is False  # restore removes the key instead of writing an empty value


def test_flagd_default_variant_is_switched_and_restored(cluster: Any) -> None:
    flagd = args(cluster, namespace="payments", name="payments-flags", format="flagd",
                 flags={"redis.retry.aggressive": False, "redis.circuit_breaker.force_open": True})
    original = Target(cluster, FLAGD).value(("data", "flags.json"))
    result = run_module("feature_flag", flagd, diff=True)
    assert result["changed"], result.msg
    document = json.loads(Target(cluster, FLAGD).value(("data", "flags.json")))
    assert document["flags"]["redis.retry.aggressive"]["defaultVariant"] == "off"
    assert document["flags"]["redis.circuit_breaker.force_open"]["defaultVariant"] == "on"
    assert run_module("feature_flag", flagd)["changed"] is False
    assert run_module("feature_flag", dict(flagd, state="restored"))["changed"] is True
    assert Target(cluster, FLAGD).value(("data", "flags.json")) == original


def test_unknown_flagd_flag_is_named_and_nothing_written(cluster: Any) -> None:
    mark = cluster.last_seq()
    result = run_module("feature_flag", args(cluster, namespace="payments", name="payments-flags", format="flagd",
                                             flags={"redis.pool.max": 5}))
    assert result.failed and "no flag 'redis.pool.max'" in result.msg
    assert cluster.writes(since=mark) == []


def test_namespace_not_allowed_is_refused(cluster: Any) -> None:
    result = run_module("feature_flag", args(cluster, allowed_namespaces=["payments"]))
    assert result.failed and result["guard"] == "allowed_namespaces" and "storm_namespaces" in result.msg


def test_through_ansible_playbook(cluster: Any) -> None:
    task = {"name": "retries off", "fintech.redis_storm.feature_flag": args(cluster)}
    run = run_playbook([task, dict(task, name="again")], diff=True)
    assert run.rc == 0, run.output + run.stderr
    assert run.task("retries off")["changed"] is True and run.task("again")["changed"] is False
    assert Target(cluster, PLAIN).value(("data", "redis.retry.aggressive")) == "false"


def test_read_only_identity_gets_a_clear_403(cluster: Any, tmp_path: Any) -> None:
    readonly = args(cluster, **kube_args(cluster, "readonly", tmp_path))
    dry = run_module("feature_flag", readonly, check=True)
    assert dry.failed and "forbidden (403): this identity may not patch configmaps in namespace trading" in dry.msg
    assert run_module("feature_flag", dict(readonly, validate_with_dry_run=False), check=True)["changed"] is True


def test_failed_write_leaves_a_failed_entry_and_the_object_unchanged(cluster: Any) -> None:
    cluster.fault(resource="configmaps", namespace="trading", verbs=["patch"], status=500, count=1)
    result = run_module("feature_flag", args(cluster))
    assert result.failed and "500" in result.msg
    assert Target(cluster, PLAIN).value(("data", "redis.retry.aggressive")) == "true"
    [entry] = ledger_entries(cluster, cluster.incident_id)
    assert entry["state"] == "failed"


def test_flags_of_a_protected_workload_are_refused(cluster: Any) -> None:
    mark = cluster.last_seq()
    result = run_module("feature_flag", args(cluster, workload="trading-api",
                                             protected_workloads=["trading/trading-api"]))
    assert result.failed and result["guard"] == "protected_workloads", result.msg
    assert "trading/trading-api" in result.msg and "storm_protected_workloads" in result.msg
    assert cluster.writes(since=mark) == []
