"""Write conflicts (409) on the ledger, the Lease and a mitigation are retried after a growing,
jittered wait, a bounded number of times, never at once."""

from __future__ import annotations

import time
from typing import Any, Dict, List, Optional, Tuple

import pytest
from ansible_collections.fintech.redis_storm.plugins.module_utils.errors import StormError
from ansible_collections.fintech.redis_storm.plugins.module_utils.lease import Lock
from ansible_collections.fintech.redis_storm.plugins.module_utils.ledger import Ledger
from ansible_collections.fintech.redis_storm.plugins.module_utils.mitigation import Mitigator, Plan
from ansible_collections.fintech.redis_storm.plugins.module_utils.targets import ObjectRef

from tests.helpers.fake_kube import FakeKube

# Less than the shortest wait the backoff allows before a retry; the machine's load only adds to it.
SHORTEST_WAIT = 0.02
FLAGS = ObjectRef("v1", "ConfigMap", "configmaps", "trading", "flags")


class TimedKube(FakeKube):
    """Notes when each write was tried, answered or not."""

    def __init__(self) -> None:
        super().__init__()
        self.log: List[Tuple[str, str, float]] = []

    def request(self, method: str, path: str, body: Optional[Any] = None, query: Optional[Dict[str, Any]] = None,
                content_type: Optional[str] = None) -> Dict[str, Any]:
        if method != "GET":
            self.log.append((method, path, time.monotonic()))
        return super().request(method, path, body=body, query=query, content_type=content_type)

    def tries(self, method: str, path: str) -> List[float]:
        return [at for m, p, at in self.log if (m, p) == (method, path)]


def gaps(tries: List[float]) -> List[float]:
    return [later - earlier for earlier, later in zip(tries, tries[1:])]


def test_ledger_conflicts_back_off_and_then_write() -> None:
    kube = TimedKube()
    ledger = Ledger(kube, "inc-1")
    ledger.record("feature_flag", FLAGS.to_target(), [])
    kube.fail("PUT", ledger.path, 409, times=3)
    ledger.record("feature_flag", FLAGS.to_target(), [])
    tries = kube.tries("PUT", ledger.path)
    assert len(tries) == 4 and len(ledger.entries()) == 2
    assert min(gaps(tries)) >= SHORTEST_WAIT, gaps(tries)


def test_ledger_gives_up_after_a_bounded_number_of_conflicts() -> None:
    kube = TimedKube()
    ledger = Ledger(kube, "inc-1")
    ledger.record("feature_flag", FLAGS.to_target(), [])
    kube.fail("PUT", ledger.path, 409, times=50)
    with pytest.raises(StormError, match="kept changing under us"):
        ledger.record("feature_flag", FLAGS.to_target(), [])
    tries = kube.tries("PUT", ledger.path)
    assert 2 <= len(tries) <= 10
    assert min(gaps(tries)) >= SHORTEST_WAIT


def test_lease_conflicts_back_off() -> None:
    kube = TimedKube()
    lock = Lock(kube, "redis-storm", "inc-1", holder="alice@bastion")
    lock.acquire(600)
    kube.fail("PUT", lock.path, 409, times=2)
    assert lock.acquire(600)["acquired"] is True  # a renewal
    tries = kube.tries("PUT", lock.path)
    assert len(tries) == 3 and min(gaps(tries)) >= SHORTEST_WAIT, gaps(tries)


def test_mitigation_conflicts_back_off() -> None:
    kube = TimedKube()
    kube.put(FLAGS.path, {"metadata": {"name": "flags", "namespace": "trading"}, "data": {"retry": "true"}})
    params = {"incident_id": "inc-1", "state": "applied", "allowed_namespaces": ["trading"], "protected_workloads": [],
              "min_replicas": 1, "max_reduction_percent": 50}
    kube.fail("PATCH", FLAGS.path, 409, times=2, exact=True)
    plan = Plan(FLAGS, lambda live: {("data", "retry"): "false"}, module="feature_flag")
    result = Mitigator(kube, params).run(plan)
    assert result["changed"] and kube.objects[FLAGS.path]["data"]["retry"] == "false"
    tries = kube.tries("PATCH", FLAGS.path)
    assert len(tries) == 3 and min(gaps(tries)) >= SHORTEST_WAIT, gaps(tries)


def test_conflict_waits_grow_are_jittered_and_bounded() -> None:
    from ansible_collections.fintech.redis_storm.plugins.module_utils.retry import (
        CONFLICT_ATTEMPTS,
        MAX_DELAY,
        conflict_delay,
        max_total_wait,
    )

    for retry in range(8):
        step = min(MAX_DELAY, 0.05 * 2 ** retry)
        waits = [conflict_delay(retry) for _ in range(200)]
        assert all(step / 2 <= w <= step for w in waits)
        assert len(set(waits)) > 100  # two contenders rarely wait alike
    assert max_total_wait() <= MAX_DELAY * CONFLICT_ATTEMPTS


def test_a_failure_other_than_a_conflict_is_not_retried() -> None:
    kube = TimedKube()
    ledger = Ledger(kube, "inc-1")
    ledger.record("feature_flag", FLAGS.to_target(), [])
    kube.fail("PUT", ledger.path, 500)
    with pytest.raises(StormError):
        ledger.record("feature_flag", FLAGS.to_target(), [])
    assert len(kube.tries("PUT", ledger.path)) == 1
