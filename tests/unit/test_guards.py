"""The guard rails: which rail refuses, with what values, and how to override it."""

from __future__ import annotations

from typing import Any, Dict

import pytest
from ansible_collections.fintech.redis_storm.plugins.module_utils.errors import StormError
from ansible_collections.fintech.redis_storm.plugins.module_utils.guards import GuardRefusal, Guards


def test_empty_allow_list_refuses_every_namespace_and_says_what_to_set() -> None:
    with pytest.raises(GuardRefusal) as caught:
        Guards().check_namespace("trading")
    assert caught.value.rail == "allowed_namespaces"
    assert "allowed_namespaces" in caught.value.message and "storm_namespaces" in caught.value.message
    assert caught.value.details["refused"] is True


def test_namespace_outside_the_allow_list_is_refused_with_the_list() -> None:
    guards = Guards(allowed_namespaces=["payments", "trading"])
    guards.check_namespace("trading")
    with pytest.raises(GuardRefusal) as caught:
        guards.check_namespace("kube-system")
    assert "'kube-system'" in caught.value.message and "['payments', 'trading']" in caught.value.message


@pytest.mark.parametrize("pattern, workload, refused", [
    ("payments/ledger-api", "payments/ledger-api", True),
    ("payments/*", "payments/anything", True),
    ("payments/*", "trading/anything", False),
    ("payments/ledger-api", "payments/ledger-api-v2", False),
])
def test_protected_workloads(pattern: str, workload: str, refused: bool) -> None:
    guards = Guards(["payments", "trading"], protected_workloads=[pattern])
    namespace, name = workload.split("/")
    if refused:
        with pytest.raises(GuardRefusal) as caught:
            guards.check_workload(namespace, name)
        assert caught.value.rail == "protected_workloads"
        assert pattern in caught.value.message and "storm_protected_workloads" in caught.value.message
    else:
        guards.check_workload(namespace, name)


def test_protected_pattern_must_name_a_namespace() -> None:
    with pytest.raises(StormError, match="namespace/name"):
        Guards(protected_workloads=["ledger-api"])


@pytest.mark.parametrize("current, desired, rail", [
    (6, 1, "min_replicas"),         # below the floor of 2
    (10, 4, "max_reduction_percent"),  # 60 % in one step
    (6, 3, None),                   # exactly 50 %
    (3, 8, None),                   # scaling up is never refused here
    (2, 2, None),
])
def test_replica_rails(current: int, desired: int, rail: str) -> None:
    guards = Guards(min_replicas=2, max_reduction_percent=50)
    if rail is None:
        guards.check_replicas(current, desired)
        return
    with pytest.raises(GuardRefusal) as caught:
        guards.check_replicas(current, desired)
    assert caught.value.rail == rail
    assert str(desired) in caught.value.message and "option %s" % rail in caught.value.message


@pytest.mark.parametrize("current, percent, floor, expected", [
    (10, 30, 1, 7),
    (3, 50, 1, 2),   # the cut is rounded down: 1.5 -> 1
    (4, 50, 3, 3),   # stops at the floor
    (2, 50, 3, 2),   # already under the floor: no change, never up
    (1, 50, 1, 1),
])
def test_reduce_by_percent(current: int, percent: float, floor: int, expected: int) -> None:
    assert Guards(min_replicas=floor, max_reduction_percent=50).reduced(current, percent) == expected


def test_reduce_by_more_than_the_step_limit_is_refused() -> None:
    with pytest.raises(GuardRefusal, match="max_reduction_percent"):
        Guards(max_reduction_percent=25).reduced(8, 40)


@pytest.mark.parametrize("bad", [0, -5, 101])
def test_reduce_by_percent_out_of_range(bad: float) -> None:
    with pytest.raises(StormError, match="reduce_by_percent"):
        Guards(max_reduction_percent=100).reduced(8, bad)


def test_from_params_uses_defaults_for_missing_replica_rails() -> None:
    guards = Guards.from_params({"allowed_namespaces": ["a"], "protected_workloads": None})
    assert (guards.min_replicas, guards.max_reduction_percent) == (1, 50)


@pytest.mark.parametrize("rails, variable", [
    ({"min_replicas": 0}, "storm_min_replicas"),
    ({"min_replicas": -2}, "storm_min_replicas"),
    ({"max_reduction_percent": 101}, "storm_max_reduction_percent"),
    ({"max_reduction_percent": -1}, "storm_max_reduction_percent"),
    ({"allowed_namespaces": ["*"]}, "storm_namespaces"),
    ({"allowed_namespaces": ["Payments"]}, "storm_namespaces"),
    ({"protected_workloads": ["ledger-api"]}, "storm_protected_workloads"),
    ({"protected_workloads": ["*/ledger-api"]}, "storm_protected_workloads"),
])
def test_a_rail_out_of_range_is_an_error_naming_its_variable(rails: Dict[str, Any], variable: str) -> None:
    with pytest.raises(StormError, match=variable):
        Guards(**rails)


@pytest.mark.parametrize("current", range(1, 13))
@pytest.mark.parametrize("percent", [1, 33, 50, 99, 100])
def test_a_cut_never_reaches_zero_replicas(current: int, percent: float) -> None:
    assert Guards(min_replicas=1, max_reduction_percent=100).reduced(current, percent) >= 1
