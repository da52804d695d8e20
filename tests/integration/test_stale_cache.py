"""Stale cache as truth: triage warns when a real Redis evicts keys during the storm, with the values and window."""

from __future__ import annotations

import contextlib
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import jinja2
import pytest
import redis
import yaml

from tests.helpers.modules import run_module
from tests.integration.test_prometheus_query import Stack, stack, wait_until  # noqa: F401 (stack: a fixture)

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


def triage_query(name: str) -> str:
    """The triage role's default PromQL for ``name``, rendered as the role renders it."""
    defaults = yaml.safe_load((Path(__file__).parents[2] / "roles/triage/defaults/main.yml").read_text())
    return jinja2.Template(defaults["triage_prometheus_queries"][name]).render(
        triage_redis_selector='job="redis"', triage_rate_window="1m")


def test_prometheus_evidence_of_evictions_reaches_the_verdict_with_its_window(stack: Stack) -> None:  # noqa: F811
    admin = stack.redis.client()
    admin.config_set("maxmemory", "2mb")
    admin.config_set("maxmemory-policy", "allkeys-lru")
    queries = {name: triage_query(name) for name in ("evicted_keys", "expired_stale_perc_rise")}
    with writing(stack.redis.client()):
        wait_until(lambda: int(admin.info("stats")["evicted_keys"]) > 0, 30, "Redis to evict keys")
        wait_until(lambda: [r for r in stack.api(queries["evicted_keys"]) if float(r["value"][1]) > 0], 60,
                   "Prometheus to see the evictions")
    answered = run_module("prometheus_query", {"url": stack.url, "queries": queries})
    assert not answered.failed, answered.msg
    evicted = answered["answers"]["evicted_keys"]["value"]
    assert evicted > 0 and answered["answers"]["expired_stale_perc_rise"]["value"] is not None

    verdict = run_module("storm_verdict", {"prometheus": registered(answered), "kubernetes": NOT_READ})
    item = next(i for i in verdict["storm_triage"]["evidence"] if i["signal"] == "stale_cache_evicted_keys")
    assert item["breached"] and item["source"] == "prometheus" and item["observed"] == round(evicted, 4)
    assert "[1m]" in item["note"] and "redis_evicted_keys_total" in item["note"]
    assert verdict["storm_triage"]["warnings"] == [item["note"]]
