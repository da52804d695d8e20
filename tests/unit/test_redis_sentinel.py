"""Sentinel addresses, failover detection and offenders summed over a group's nodes (pure logic)."""

from typing import Any, Dict, List

import pytest
from ansible_collections.fintech.redis_storm.plugins.module_utils import redis_clients
from ansible_collections.fintech.redis_storm.plugins.module_utils.errors import StormError
from ansible_collections.fintech.redis_storm.plugins.module_utils.group_clients import collect, kill_on_every_node
from ansible_collections.fintech.redis_storm.plugins.module_utils.redis_cluster import merge_sources
from ansible_collections.fintech.redis_storm.plugins.module_utils.redis_sentinel import Group, failover, parse_address
from ansible_collections.fintech.redis_storm.plugins.module_utils.rollback import NodeSides

GROUP = Group("payments", ["10.0.0.9:26379"], ("10.0.0.6", 6379), [("10.0.0.5", 6379)], [])


@pytest.mark.parametrize(("text", "address"), [
    ("10.0.0.9:26380", ("10.0.0.9", 26380)),
    ("sentinel-0.redis.svc", ("sentinel-0.redis.svc", 26379)),
    ("[fd00::9]:26379", ("fd00::9", 26379)),
    (" 10.0.0.9:26379 ", ("10.0.0.9", 26379)),
])
def test_sentinel_addresses(text: str, address: Any) -> None:
    assert parse_address(text) == address


@pytest.mark.parametrize("text", ["10.0.0.9:port", ":26379", ""])
def test_a_bad_sentinel_address_says_the_form(text: str) -> None:
    with pytest.raises(StormError, match="is not host:port"):
        parse_address(text)


def target(run_id: str, role: str, group: str = "payments", endpoint: str = "10.0.0.5:6379") -> Dict[str, str]:
    return {"type": "redis", "endpoint": endpoint, "run_id": run_id, "role": role, "group": group}


def test_a_failover_is_the_recorded_master_being_another_server_now() -> None:
    recorded = [target("aaa", "master"), target("bbb", "replica", endpoint="10.0.0.6:6379")]
    moved = failover(recorded, GROUP, "bbb")
    assert moved is not None
    assert (moved["master_was"], moved["run_id_was"], moved["master"], moved["run_id"]) == (
        "10.0.0.5:6379", "aaa", "10.0.0.6:6379", "bbb")
    assert failover(recorded, GROUP, "aaa") is None  # the same master
    assert failover([target("aaa", "master", group="orders")], GROUP, "bbb") is None  # another group
    assert failover([target("aaa", "replica")], GROUP, "bbb") is None  # no master recorded


def sources(clients: List[Dict[str, str]]) -> List[Dict[str, Any]]:
    return redis_clients.top_sources(clients, 0)


def client(ip: str, name: str, idle: int = 0, age: int = 10) -> Dict[str, str]:
    return {"addr": "%s:4000" % ip, "name": name, "idle": str(idle), "age": str(age)}


def test_offenders_are_summed_over_the_nodes_and_ranked_on_the_sum() -> None:
    master = sources([client("10.1.0.1", "checkout")] * 3 + [client("10.1.0.2", "wallet")] * 4)
    replica = sources([client("10.1.0.1", "checkout-reader", idle=30, age=2)] * 5)
    per_node = [("10.0.0.6:6379", master), ("10.0.0.5:6379", replica)]
    merged = merge_sources(per_node, top=10)
    assert [(s["ip"], s["connections"]) for s in merged] == [("10.1.0.1", 8), ("10.1.0.2", 4)]
    assert merged[0]["nodes"] == {"10.0.0.6:6379": 3, "10.0.0.5:6379": 5}
    assert merged[0]["names"] == ["checkout", "checkout-reader"]
    assert (merged[0]["idle_max"], merged[0]["age_min"]) == (30, 2)
    assert merge_sources(per_node, top=1)[0]["ip"] == "10.1.0.1"


def test_the_sentinels_own_links_are_no_offenders() -> None:
    listed = [client("10.0.0.9", "sentinel-1a2b3c4d-cmd"), client("10.0.0.9", "sentinel-1a2b3c4d-pubsub"),
              client("10.1.0.1", "sentinel-dashboard"), client("10.1.0.2", "sentinel-report-cmd")]
    for number, listed_client in enumerate(listed):
        listed_client["id"] = str(number)
    assert [c["name"] for c in redis_clients.application_clients(listed, None)] == [
        "sentinel-dashboard", "sentinel-report-cmd"]


def test_a_redis_cluster_with_sentinels_is_one_clear_error_before_any_connection() -> None:
    # nothing listens on 127.0.0.1:1: a read or a Sentinel lookup would fail with another message
    both = {"cluster": True, "sentinels": ["127.0.0.1:1"], "sentinel_master": "payments", "host": "127.0.0.1",
            "port": 1, "socket_timeout": 0.5}
    expected = "cluster: true and sentinels are both set"
    with pytest.raises(StormError, match=expected):
        collect(both, 10, sample_seconds=0)
    with pytest.raises(StormError, match=expected):
        kill_on_every_node(both, ["10.1.0.1"], None, None, 1, True)
    with pytest.raises(StormError, match=expected):
        NodeSides(both)
