"""storm_lock and storm_rung against the Kubernetes API emulator."""

from __future__ import annotations

import threading
import time
from typing import Any, Dict, Iterator, List

import pytest
from ansible_collections.fintech.redis_storm.plugins.module_utils.errors import StormError
from ansible_collections.fintech.redis_storm.plugins.module_utils.k8s_client import Kube
from ansible_collections.fintech.redis_storm.plugins.module_utils.lease import Lock, micro_time

from tests.fixtures.kubeapi import running_kubeapi
from tests.helpers.mitigations import incident_for, kube_args, ledger_entries, no_writes_since
from tests.helpers.modules import run_module, run_playbook

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    with running_kubeapi(tmp_path_factory.mktemp("kubeapi")) as api:
        api.seed([{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "redis-storm"}}])
        yield api


@pytest.fixture
def cluster(emulator: Any, request: pytest.FixtureRequest) -> Any:
    emulator.incident_id = incident_for(request)
    return emulator


def lock(kubeapi: Any, holder: str, **extra: Any) -> Dict[str, Any]:
    args = {"incident_id": kubeapi.incident_id, "holder": holder, "ttl_seconds": 600, **kube_args(kubeapi)}
    args.update(extra)
    return args


def lease_path(kubeapi: Any) -> str:
    return "/apis/coordination.k8s.io/v1/namespaces/redis-storm/leases/redis-storm-lock-" + kubeapi.incident_id


def test_second_holder_is_refused_with_who_and_until_when(cluster: Any) -> None:
    first = run_module("storm_lock", lock(cluster, "alice@bastion"))
    assert first["changed"] and first["acquired"] and first["holder"] == "alice@bastion"
    second = run_module("storm_lock", lock(cluster, "bob@awx"))
    assert second.failed and second["refused"] is True and second["acquired"] is False
    assert "held by alice@bastion until %s" % first["expires_at"] in second.msg
    lease = cluster.request("GET", lease_path(cluster))
    assert lease["spec"]["holderIdentity"] == "alice@bastion" and lease["spec"]["leaseDurationSeconds"] == 600


def test_expired_lease_can_be_taken(cluster: Any) -> None:
    cluster.seed([{"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                   "metadata": {"name": "redis-storm-lock-" + cluster.incident_id, "namespace": "redis-storm"},
                   "spec": {"holderIdentity": "crashed@node-3", "leaseDurationSeconds": 2,
                            "acquireTime": micro_time(time.time() - 900),
                            "renewTime": micro_time(time.time() - 840), "leaseTransitions": 0}}])
    taken = run_module("storm_lock", lock(cluster, "bob@awx"), diff=True)
    assert taken["acquired"] and taken["holder"] == "bob@awx", taken.msg
    assert taken["diff"]["before"]["holder"] == "crashed@node-3" and taken["diff"]["after"]["holder"] == "bob@awx"
    assert "took over" in taken.msg
    assert cluster.request("GET", lease_path(cluster))["spec"]["leaseTransitions"] == 1


@pytest.mark.parametrize("existing", ["none", "expired"])
def test_simultaneous_acquirers_exactly_one_wins(cluster: Any, existing: str) -> None:
    for round_ in range(5):
        name = "%s-race%d" % (cluster.incident_id, round_)
        if existing == "expired":  # the takeover path: an update guarded by resourceVersion
            cluster.seed([{"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                           "metadata": {"name": "redis-storm-lock-" + name, "namespace": "redis-storm"},
                           "spec": {"holderIdentity": "crashed@node-3", "leaseDurationSeconds": 2,
                                    "renewTime": micro_time(time.time() - 120)}}])
        barrier = threading.Barrier(4)
        outcomes: List[str] = []

        def contend(holder: str, name: str = name, barrier: threading.Barrier = barrier,
                    outcomes: List[str] = outcomes) -> None:
            contender = Lock(Kube(kube_args(cluster)), "redis-storm", name, holder=holder)
            barrier.wait()
            try:
                contender.acquire(600)
                outcomes.append("won")
            except StormError as exc:
                outcomes.append("refused" if exc.details.get("refused") else "error: " + exc.message)

        threads = [threading.Thread(target=contend, args=("runner-%d@host" % i,)) for i in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        assert sorted(outcomes) == ["refused", "refused", "refused", "won"], outcomes


def test_release_by_non_holder_refused_unless_forced(cluster: Any) -> None:
    run_module("storm_lock", lock(cluster, "alice@bastion"))
    refused = run_module("storm_lock", lock(cluster, "bob@awx", state="released"))
    assert refused.failed and "held by alice@bastion" in refused.msg and "force: true" in refused.msg
    released = run_module("storm_lock", lock(cluster, "bob@awx", state="released", force=True))
    assert released["changed"] and not released["acquired"]
    again = run_module("storm_lock", lock(cluster, "bob@awx", state="released"))
    assert again["changed"] is False


def test_check_mode_lock_writes_nothing(cluster: Any) -> None:
    mark = cluster.last_seq()
    result = run_module("storm_lock", lock(cluster, "alice@bastion"), check=True)
    assert result["changed"] and result["acquired"]
    no_writes_since(cluster, mark)


def rung(kubeapi: Any, **extra: Any) -> Dict[str, Any]:
    args = {"incident_id": kubeapi.incident_id, "rung": "offender_scale_down", "max_attempts": 2,
            "cooldown_seconds": 600, **kube_args(kubeapi)}
    args.update(extra)
    return args


def test_rung_cooldown_and_attempt_cap_live_in_the_ledger(cluster: Any) -> None:
    mark = cluster.last_seq()
    assert run_module("storm_rung", rung(cluster))["allowed"] is True
    assert run_module("storm_rung", rung(cluster, state="started"), check=True)["changed"] is True
    no_writes_since(cluster, mark)
    started = run_module("storm_rung", rung(cluster, state="started"))
    assert started["attempts"] == 1 and started["outcome"] == "running"
    query = run_module("storm_rung", rung(cluster))
    assert query["allowed"] is False and "cooldown 600 s" in query["reason"]
    refused = run_module("storm_rung", rung(cluster, state="started"))
    assert refused.failed and refused["refused"] is True
    assert run_module("storm_rung", rung(cluster, state="finished", outcome="not_recovered"))["outcome"] == \
        "not_recovered"
    again = run_module("storm_rung", rung(cluster, state="started", cooldown_seconds=0))
    assert again["attempts"] == 2
    capped = run_module("storm_rung", rung(cluster, cooldown_seconds=0))
    assert capped["allowed"] is False and capped["reason"] == "2 of 2 attempts used"


def test_lock_and_rung_through_ansible_playbook(cluster: Any) -> None:
    run = run_playbook([
        {"name": "lock", "fintech.redis_storm.storm_lock": lock(cluster, "alice@bastion")},
        {"name": "rung", "fintech.redis_storm.storm_rung": rung(cluster, state="started")},
        {"name": "unlock", "fintech.redis_storm.storm_lock": lock(cluster, "alice@bastion", state="released")},
    ])
    assert run.rc == 0, run.output + run.stderr
    assert run.task("lock")["acquired"] is True and run.task("rung")["attempts"] == 1
    assert run.task("unlock")["changed"] is True


def ladder_rung(kubeapi: Any, target: str) -> Dict[str, Any]:
    """The ladder's rung.yml for hpa_pause on ``target``, as the incident playbook includes it."""
    return {"name": "connected",
            "module_defaults": {"group/fintech.redis_storm.kubernetes": {"kubeconfig": str(kubeapi.kubeconfig)}},
            "block": [{
                "name": "rung",
                "ansible.builtin.include_role": {"name": "fintech.redis_storm.ladder", "tasks_from": "rung"},
                "vars": {"__ladder_rung": "hpa_pause", "ladder_stage": "stabilise", "ladder_target": target,
                         "ladder_incident_id": kubeapi.incident_id, "ladder_max_attempts": 2,
                         "ladder_cooldown_seconds": 600}}]}


def test_a_rung_in_its_cooldown_is_reported_as_skipped(cluster: Any) -> None:
    run = run_playbook([
        {"name": "earlier attempt", "fintech.redis_storm.storm_rung": rung(
            cluster, rung="hpa_pause", target="payments-redis", state="started")},
        ladder_rung(cluster, "payments-redis"),
        {"name": "show", "ansible.builtin.debug": {"var": "storm_timeline"}},
    ])
    assert run.rc == 0, run.output[-3000:] + run.stderr[-3000:]
    (attempt,) = [t["hosts"]["localhost"] for play in run.data["plays"] for t in play["tasks"]
                  if "rung | Count an attempt" in t["task"]["name"]]
    assert attempt.get("skipped") is True, attempt
    (skip,) = run.task("show")["storm_timeline"]
    assert skip["result"] == "skipped" and "cooldown 600 s" in skip["msg"], skip
    assert run.stats["skipped"] >= 1 and run.stats["failures"] == 0
    record = run_module("storm_rung", rung(cluster, rung="hpa_pause", target="payments-redis"))
    assert record["attempts"] == 1


def test_two_redis_hosts_in_one_incident_keep_their_own_rung_records(cluster: Any) -> None:
    first = run_module("storm_rung", rung(cluster, target="payments-redis", state="started"))
    assert first["attempts"] == 1
    second = run_module("storm_rung", rung(cluster, target="orders-redis", state="started"))
    assert not second.failed, second.msg
    assert second["attempts"] == 1 and second["target"] == "orders-redis"
    assert run_module("storm_rung", rung(cluster, target="payments-redis"))["allowed"] is False


def renew_with_a_slow_clock(kubeapi: Any, renewed: threading.Event, stop: threading.Event) -> None:
    """A live holder whose clock is 10 min behind: its renewals all look expired here."""
    path = lease_path(kubeapi)
    while not stop.is_set():
        lease = kubeapi.request("GET", path)
        lease["spec"]["renewTime"] = micro_time(time.time() - 600)
        kubeapi.request("PUT", path, body=lease)
        renewed.set()
        stop.wait(0.3)


def test_a_live_holder_whose_clock_runs_behind_keeps_its_lock(cluster: Any) -> None:
    assert run_module("storm_lock", lock(cluster, "alice@bastion", ttl_seconds=30))["acquired"]
    renewed, stop = threading.Event(), threading.Event()
    renewer = threading.Thread(target=renew_with_a_slow_clock, args=(cluster, renewed, stop))
    renewer.start()
    try:
        assert renewed.wait(30)
        second = run_module("storm_lock", lock(cluster, "bob@awx"))
    finally:
        stop.set()
        renewer.join(10)
    assert second.failed and second["refused"] is True, second.msg
    assert "held by alice@bastion" in second.msg and "renewed while this machine watched" in second.msg
    assert cluster.request("GET", lease_path(cluster))["spec"]["holderIdentity"] == "alice@bastion"


FLAGS = "/api/v1/namespaces/trading/configmaps/trading-api-flags"


def fenced_run(kubeapi: Any, between: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """The incident playbooks' shape: take the lock, then write under module_defaults for the fenced group."""
    flag = {"incident_id": kubeapi.incident_id, "namespace": "trading", "name": "trading-api-flags",
            "allowed_namespaces": ["trading"], **kube_args(kubeapi)}
    return [{
        "name": "under the lock",
        "module_defaults": {"group/fintech.redis_storm.fenced": {"lock": "{{ storm_lock | default(omit) }}"},
                            "group/fintech.redis_storm.kubernetes": {"kubeconfig": str(kubeapi.kubeconfig)}},
        "block": [
            {"name": "lock", "ansible.builtin.include_role": {"name": "fintech.redis_storm.incident_lock"},
             "vars": {"incident_lock_incident_id": kubeapi.incident_id, "incident_lock_name": kubeapi.incident_id,
                      "incident_lock_ttl_seconds": 600}},
            {"name": "first write", "fintech.redis_storm.feature_flag": dict(flag, flags={"retry": "off"})},
            *between,
            {"name": "second write", "fintech.redis_storm.feature_flag": dict(flag, flags={"breaker": "open"})},
        ]}]


@pytest.fixture
def flags(cluster: Any) -> Any:
    cluster.seed([{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "trading-api-flags",
                                                                          "namespace": "trading"},
                   "data": {"retry": "on", "breaker": "closed"}}])
    return cluster


def test_the_run_renews_its_lock_with_each_write(flags: Any) -> None:
    mark = flags.last_seq()
    run = run_playbook(fenced_run(flags, []))
    assert run.rc == 0, run.output[-3000:] + run.stderr[-3000:]
    assert flags.request("GET", FLAGS)["data"] == {"retry": "off", "breaker": "open"}
    lease = flags.request("GET", lease_path(flags))
    renewals = [e["verb"] for e in flags.writes(since=mark) if e["resource"] == "leases"]
    # taken once, then renewed by each of the two writing modules
    assert renewals == ["create", "update", "update"], renewals
    assert "/%s/" % flags.incident_id in lease["spec"]["holderIdentity"]  # the run's own identity


def test_a_run_whose_lock_was_taken_over_writes_nothing_more(flags: Any) -> None:
    takeover = {"name": "another run takes over", "fintech.redis_storm.storm_lock": lock(
        flags, "eda@controller", force=True)}
    run = run_playbook(fenced_run(flags, [takeover]))
    assert run.rc != 0
    refused = run.task("second write")
    assert refused["failed"] and refused["lost_lock"] is True and "held by eda@controller" in refused["msg"]
    assert flags.request("GET", FLAGS)["data"] == {"retry": "off", "breaker": "closed"}
    assert len(ledger_entries(flags, flags.incident_id)) == 1  # the first write's; the second recorded nothing
