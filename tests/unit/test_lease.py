"""The incident lock and the ladder's rung records, against an in-memory API."""

from __future__ import annotations

import time
from typing import Callable, Optional

import pytest
from ansible_collections.fintech.redis_storm.plugins.module_utils.errors import StormError
from ansible_collections.fintech.redis_storm.plugins.module_utils.lease import (
    Fence,
    Lock,
    fence_writes,
    micro_time,
    parse_time,
)
from ansible_collections.fintech.redis_storm.plugins.module_utils.ledger import Ledger
from ansible_collections.fintech.redis_storm.plugins.module_utils.mitigation import Mitigator, Plan
from ansible_collections.fintech.redis_storm.plugins.module_utils.rung_records import Rungs, rung_decision
from ansible_collections.fintech.redis_storm.plugins.module_utils.targets import ObjectRef

from tests.helpers.fake_kube import FakeKube


class ObserverClock:
    """The acquirer's monotonic clock; ``sleep`` advances it at once and calls ``meanwhile`` (the world going on)."""

    def __init__(self, meanwhile: Optional[Callable[[], None]] = None) -> None:
        self.now = 1000.0
        self.slept = 0.0
        self.meanwhile = meanwhile

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds
        self.slept += seconds
        if self.meanwhile is not None:
            self.meanwhile()


def test_micro_time_round_trips() -> None:
    now = 1795000000.25
    assert micro_time(now).endswith(".250000Z")
    assert parse_time(micro_time(now)) == pytest.approx(now, abs=1e-6)
    assert parse_time("garbage") is None


def test_second_holder_is_refused_with_who_and_until_when() -> None:
    kube = FakeKube()
    first = Lock(kube, "redis-storm", "inc-1", holder="alice@bastion").acquire(600)
    assert first["acquired"] and first["holder"] == "alice@bastion"
    with pytest.raises(StormError) as caught:
        Lock(kube, "redis-storm", "inc-1", holder="bob@awx").acquire(600)
    assert "alice@bastion" in caught.value.message and first["expires_at"] in caught.value.message
    assert caught.value.details["refused"] is True


def test_expired_lease_is_taken_over() -> None:
    kube = FakeKube()
    lock = Lock(kube, "redis-storm", "inc-1", holder="alice@bastion")
    lock.acquire(60)
    lease = kube.objects[lock.path]
    lease["spec"]["renewTime"] = micro_time(time.time() - 120)
    kube.put(lock.path, lease)
    clock = ObserverClock()
    taken = Lock(kube, "redis-storm", "inc-1", holder="bob@awx", clock=clock, sleep=clock.sleep).acquire(60)
    assert taken["acquired"] and taken["holder"] == "bob@awx"
    assert kube.objects[lock.path]["spec"]["leaseTransitions"] == 1


def test_simultaneous_create_loser_sees_the_winner() -> None:
    kube = FakeKube()
    alice = Lock(kube, "redis-storm", "inc-1", holder="alice@bastion")
    alice.acquire(600)
    kube.fail("GET", alice.path, 404)  # bob's read happened before alice's create
    with pytest.raises(StormError, match="held by alice@bastion"):
        Lock(kube, "redis-storm", "inc-1", holder="bob@awx").acquire(600)


def test_release_by_non_holder_refused_unless_forced() -> None:
    kube = FakeKube()
    Lock(kube, "redis-storm", "inc-1", holder="alice@bastion").acquire(600)
    bob = Lock(kube, "redis-storm", "inc-1", holder="bob@awx")
    with pytest.raises(StormError, match="not releasing"):
        bob.release()
    assert bob.release(force=True)["changed"] is True
    assert bob.release()["changed"] is False


def test_check_mode_lock_writes_nothing() -> None:
    kube = FakeKube()
    result = Lock(kube, "redis-storm", "inc-1", holder="a@b", check_mode=True).acquire(60)
    assert result["changed"] and kube.writes == []


@pytest.mark.parametrize("record, max_attempts, cooldown, ago, allowed, reason", [
    (None, 2, 600, 0, True, "never ran"),
    ({"attempts": 2}, 2, 0, 0, False, "2 of 2 attempts used"),
    ({"attempts": 1}, 3, 600, 300, False, "ran 5 min ago, cooldown 600 s"),
    ({"attempts": 1}, 3, 600, 700, True, "cooldown over"),
])
def test_rung_decision(record: dict, max_attempts: int, cooldown: int, ago: float, allowed: bool,
                       reason: str) -> None:
    now = 1795000000.0
    if record is not None:
        record = dict(record, last_started_at=micro_time(now - ago))
    decision = rung_decision(record, max_attempts, cooldown, now)
    assert decision["allowed"] is allowed and reason in decision["reason"]


def test_rungs_started_counts_and_refuses_and_query_writes_nothing() -> None:
    kube = FakeKube()
    rungs = Rungs(kube, "inc-1", "redis-storm")
    assert rungs.query("hpa_pause", 1, 0)["allowed"] is True
    assert kube.writes == []
    assert rungs.started("hpa_pause", 1, 0)["attempts"] == 1
    rungs.finished("hpa_pause", "recovered")
    with pytest.raises(StormError, match="1 of 1 attempts used"):
        rungs.started("hpa_pause", 1, 0)
    record = rungs.query("hpa_pause", 1, 0)
    assert record["outcome"] == "recovered" and record["allowed"] is False
    writes = len(kube.writes)
    Rungs(kube, "inc-1", "redis-storm", check_mode=True).started("other", None, 0)
    assert len(kube.writes) == writes


@pytest.mark.parametrize("name, lease", [("payments-redis", "redis-storm-lock-payments-redis"),
                                         ("Payments_Redis", "redis-storm-lock-payments-redis"),
                                         ("inc.1", "redis-storm-lock-inc.1")])
def test_lease_names_follow_object_name_rules(name: str, lease: str) -> None:
    from ansible_collections.fintech.redis_storm.plugins.module_utils.lease import lease_name

    assert lease_name(name) == lease


def test_unusable_lock_name_is_refused() -> None:
    from ansible_collections.fintech.redis_storm.plugins.module_utils.lease import lease_name

    with pytest.raises(StormError, match="cannot name a Lease"):
        lease_name("__")


def test_one_redis_hosts_cooldown_does_not_hold_back_another_hosts_rung() -> None:
    """Two Redis deployments in one incident: each has its own attempts and cooldown per rung."""
    kube = FakeKube()
    payments = Rungs(kube, "inc-1", "redis-storm", target="payments-redis")
    orders = Rungs(kube, "inc-1", "redis-storm", target="orders-redis")
    assert payments.started("redis_capacity", 2, 600)["attempts"] == 1
    assert payments.query("redis_capacity", 2, 600)["allowed"] is False
    second = orders.query("redis_capacity", 2, 600)
    assert second["allowed"] is True and second["attempts"] == 0, second["reason"]
    started = orders.started("redis_capacity", 2, 600)
    assert started["attempts"] == 1 and started["target"] == "orders-redis"
    with pytest.raises(StormError, match="redis_capacity on payments-redis may not start"):
        payments.started("redis_capacity", 2, 600)


def backdate(kube: FakeKube, path: str, seconds: float) -> None:
    """The holder renews with a clock ``seconds`` behind this machine's."""
    lease = kube.objects[path]
    lease["spec"]["renewTime"] = micro_time(time.time() - seconds)
    kube.put(path, lease)


def test_a_live_holder_whose_clock_runs_behind_keeps_its_lock() -> None:
    """Its renewTime looks 10 min old here, but it keeps renewing: watching shows the Lease change."""
    kube = FakeKube()
    alice = Lock(kube, "redis-storm", "inc-1", holder="alice@bastion")
    alice.acquire(60)
    backdate(kube, alice.path, 600)
    clock = ObserverClock(meanwhile=lambda: backdate(kube, alice.path, 600))
    bob = Lock(kube, "redis-storm", "inc-1", holder="bob@awx", clock=clock, sleep=clock.sleep)
    with pytest.raises(StormError, match=r"held by alice@bastion.*renewed while this machine watched") as caught:
        bob.acquire(60)
    assert caught.value.details["refused"] is True
    assert kube.objects[alice.path]["spec"]["holderIdentity"] == "alice@bastion"


def test_a_lease_is_taken_over_only_after_watching_it_unchanged_for_its_duration() -> None:
    kube = FakeKube()
    alice = Lock(kube, "redis-storm", "inc-1", holder="alice@bastion")
    alice.acquire(60)
    backdate(kube, alice.path, 600)
    clock = ObserverClock()
    taken = Lock(kube, "redis-storm", "inc-1", holder="bob@awx", clock=clock, sleep=clock.sleep).acquire(60)
    assert taken["holder"] == "bob@awx" and clock.slept >= 60
    impatient = Lock(kube, "redis-storm", "inc-1", holder="carol@eda", takeover_wait=10)
    backdate(kube, alice.path, 600)
    with pytest.raises(StormError, match="unchanged for its whole 60 s"):
        impatient.acquire(60)


def test_the_fence_renews_the_lease_of_the_run_that_holds_it() -> None:
    kube = FakeKube()
    taken = Lock(kube, "redis-storm", "payments-redis", holder="run-1").acquire(60)
    path = Lock(kube, "redis-storm", "payments-redis").path
    backdate(kube, path, 30)
    before = parse_time(kube.objects[path]["spec"]["renewTime"]) or 0
    Fence(kube, {"name": "payments-redis", "holder": "run-1", "transitions": taken["lease_transitions"]}).hold()
    spec = kube.objects[path]["spec"]
    assert (parse_time(spec["renewTime"]) or 0) > before + 20
    assert spec["holderIdentity"] == "run-1" and spec["leaseTransitions"] == taken["lease_transitions"]


@pytest.mark.parametrize("change, why", [
    ("other holder", "held by run-2"),
    ("released", "the Lease is gone"),
    ("taken and given back", "changed hands since this run took it"),
])
def test_a_run_that_lost_the_lock_writes_nothing(change: str, why: str) -> None:
    kube = FakeKube()
    flags = ObjectRef("v1", "ConfigMap", "configmaps", "trading", "flags")
    kube.put(flags.path, {"metadata": {"name": "flags", "namespace": "trading"}, "data": {"retry": "true"}})
    mine = Lock(kube, "redis-storm", "payments-redis", holder="run-1")
    hold = {"name": "payments-redis", "holder": "run-1", "transitions": mine.acquire(60)["lease_transitions"]}
    if change == "other holder":
        Lock(kube, "redis-storm", "payments-redis", holder="run-2").acquire(60, force=True)
    elif change == "released":
        mine.release()
    else:
        Lock(kube, "redis-storm", "payments-redis", holder="run-2").acquire(60, force=True)
        Lock(kube, "redis-storm", "payments-redis", holder="run-1").acquire(60, force=True)
    writes = len(kube.writes)
    params = {"incident_id": "inc-1", "state": "applied", "allowed_namespaces": ["trading"],
              "protected_workloads": [], "lock": hold}
    with pytest.raises(StormError, match=why) as caught:
        fence_writes(kube, params, check_mode=False)
        Mitigator(kube, params).run(Plan(flags, lambda live: {("data", "retry"): "false"}, module="feature_flag"))
    assert caught.value.details["lost_lock"] is True
    assert len(kube.writes) == writes and kube.objects[flags.path]["data"]["retry"] == "true"
    assert Ledger(kube, "inc-1").entries() == []


def test_a_hold_lasts_half_the_lease_on_the_observers_clock() -> None:
    kube = FakeKube()
    taken = Lock(kube, "redis-storm", "payments-redis", holder="run-1").acquire(60)
    clock = ObserverClock()
    fence = Fence(kube, {"name": "payments-redis", "holder": "run-1", "transitions": taken["lease_transitions"]},
                  clock=clock)
    fence("PATCH", "/api/v1/namespaces/trading/configmaps/flags")
    renewals = len(kube.writes)
    clock.sleep(29)
    fence("PATCH", "/api/v1/namespaces/trading/configmaps/flags")
    assert len(kube.writes) == renewals  # within half the lease: no second look needed
    clock.sleep(2)
    fence("PATCH", "/api/v1/namespaces/trading/configmaps/flags")
    assert len(kube.writes) == renewals + 1
