"""Stale cache as truth: triage warns when a real Redis evicts keys during the storm, with the values and window."""

from __future__ import annotations

import contextlib
import threading
from contextlib import contextmanager
from typing import Any, Iterator

import pytest
import redis

from tests.helpers.modules import run_module

pytestmark = pytest.mark.integration

NOT_READ = {"failed": True, "msg": "not read"}
EVICTING = {"maxmemory": "2mb", "maxmemory-policy": "allkeys-lru"}


def registered(result: Any) -> Any:
    """The result as a playbook registers it (its warnings were shown, not kept)."""
    return {key: value for key, value in result.items() if key not in ("warnings", "deprecations")}


@contextmanager
def writing(client: Any) -> Iterator[None]:
    """Keep writing new 1 KiB values until the block ends (past maxmemory, each write evicts)."""
    stop = threading.Event()

    def write() -> None:
        index = 0
        while not stop.is_set():
            # a write can find nothing left to evict (replication buffers count too): the next one can
            with contextlib.suppress(redis.OutOfMemoryError):
                client.set("cache:%d" % index, "x" * 1024)
            index += 1

    worker = threading.Thread(target=write, daemon=True)
    worker.start()
    try:
        yield
    finally:
        stop.set()
        worker.join(10)


def test_evictions_during_the_window_are_a_warning_with_their_evidence(redis_factory):
    server = redis_factory(extra=EVICTING)
    with writing(server.client()):
        result = run_module("redis_clients_info", server.module_args(sample_seconds=0.5, latency_samples=1))
    assert not result.failed, result.msg
    stale = result["stale_cache"]
    evicted = stale["evicted_keys"]
    assert evicted["after"] > evicted["before"] and evicted["rise"] == evicted["after"] - evicted["before"]
    assert stale["window_seconds"] >= 0.5
    assert "evicted_keys rose from %d to %d" % (evicted["before"], evicted["after"]) in stale["warning"]
    assert "in %ss" % ("%.2f" % stale["window_seconds"]).rstrip("0").rstrip(".") in stale["warning"]
    assert stale["warning"] in result.warnings

    verdict = run_module("storm_verdict", {"redis": registered(result), "kubernetes": NOT_READ})
    triage = verdict["storm_triage"]
    assert triage["warnings"] == [stale["warning"]]
    assert "Warning: " + stale["warning"] in verdict["summary_lines"]


def test_no_eviction_no_warning(redis_factory):
    server = redis_factory(extra=EVICTING)
    result = run_module("redis_clients_info", server.module_args(sample_seconds=0.3, latency_samples=1))
    assert not result.failed, result.msg
    assert result["stale_cache"]["evicted_keys"]["rise"] == 0 and result["stale_cache"]["warning"] is None
    verdict = run_module("storm_verdict", {"redis": registered(result), "kubernetes": NOT_READ})
    assert verdict["storm_triage"]["warnings"] == []


def test_a_cluster_names_the_nodes_that_evict(redis_cluster_factory):
    cluster = redis_cluster_factory(extra=EVICTING)
    master = cluster.masters()[0]
    # keys of one master's slots only: only that node evicts
    with redis.RedisCluster(host=master.host, port=master.port, password=cluster.password) as client:
        slots = client.cluster_nodes()["%s:%d" % (master.host, master.port)]["slots"]
        low, _high = (int(x) for x in slots[0])
        tag = next(str(i) for i in range(100000) if client.keyslot("{%d}" % i) == low)
        single = client.get_node(master.host, master.port).redis_connection
        with writing(_Tagged(single, tag)):
            result = run_module("redis_clients_info", cluster.module_args(sample_seconds=0.5, latency_samples=1))
    assert not result.failed, result.msg
    stale = result["stale_cache"]
    assert stale["nodes"] == [cluster.endpoint(master)]
    assert stale["evicted_keys"]["rise"] > 0 and cluster.endpoint(master) in stale["warning"]


class _Tagged:
    """Writes keys with one hash tag, so they all land in one slot of one node."""

    def __init__(self, client: Any, tag: str) -> None:
        self.client, self.tag = client, tag

    def set(self, key: str, value: str) -> None:
        self.client.set("{%s}%s" % (self.tag, key), value)
