"""The incident lock and the ladder's rung records, against an in-memory API."""

from __future__ import annotations

import time

import pytest
from ansible_collections.fintech.redis_storm.plugins.module_utils.errors import StormError
from ansible_collections.fintech.redis_storm.plugins.module_utils.lease import (
    Lock,
    Rungs,
    micro_time,
    parse_time,
    rung_decision,
)

from tests.helpers.fake_kube import FakeKube


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
    taken = Lock(kube, "redis-storm", "inc-1", holder="bob@awx").acquire(60)
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
