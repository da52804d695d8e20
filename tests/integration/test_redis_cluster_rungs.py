"""The Redis-side rungs on a real Redis Cluster: CONFIG SET and CLIENT KILL on every node, one ledger entry per node."""

from __future__ import annotations

from contextlib import ExitStack
from typing import Any, Dict

import pytest

from stormctl.sandbox.stormgen import StormGen
from tests.helpers.modules import run_module
from tests.integration.mitigation_common import ledger_entries, seed_ledger_namespace

pytestmark = pytest.mark.integration

INCIDENT = "storm-20261207-1930"
NAMES = ("maxclients", "timeout")


@pytest.fixture
def ledger(kubeapi: Any) -> Any:
    seed_ledger_namespace(kubeapi)
    return kubeapi


def settings_of(cluster: Any) -> Dict[str, Dict[str, str]]:
    """Every node's live maxclients and timeout, by node address."""
    return {cluster.endpoint(node): {name: node.client().config_get(name)[name] for name in NAMES}
            for node in cluster.nodes if node.process.poll() is None}


def config_args(kubeapi: Any, cluster: Any, **extra: Any) -> Dict[str, Any]:
    return cluster.module_args(kubeconfig=str(kubeapi.kubeconfig), incident_id=INCIDENT, **extra)


def test_runtime_config_sets_and_restores_every_node_with_one_ledger_entry_each(ledger, redis_cluster):
    original = settings_of(redis_cluster)
    assert {tuple(v.values()) for v in original.values()} == {("200", "0")}
    apply = config_args(ledger, redis_cluster, settings={"maxclients": 300, "timeout": 120}, rung="redis_capacity")

    planned = run_module("redis_runtime_config", apply, check=True, diff=True)
    assert not planned.failed, planned.msg
    assert planned["changed"] is True and settings_of(redis_cluster) == original
    assert ledger_entries(ledger, INCIDENT) == []

    applied = run_module("redis_runtime_config", apply, diff=True)
    assert not applied.failed, applied.msg
    wanted = {"maxclients": "300", "timeout": "120"}
    assert settings_of(redis_cluster) == {node: wanted for node in original}
    assert applied["diff"] == {"before": original, "after": {node: wanted for node in original}}
    entries = ledger_entries(ledger, INCIDENT)
    identities = {redis_cluster.endpoint(n): n.info("server")["run_id"] for n in redis_cluster.nodes}
    assert {e["target"]["endpoint"]: e["target"]["run_id"] for e in entries} == identities
    assert all(e["state"] == "applied" and e["rung"] == "redis_capacity" for e in entries)
    assert sorted(applied["ledger"]["entry_ids"]) == sorted(e["id"] for e in entries)
    assert redis_cluster.password not in str(applied)

    again = run_module("redis_runtime_config", apply)
    assert not again.failed and again["changed"] is False and len(ledger_entries(ledger, INCIDENT)) == 6

    replica = redis_cluster.replicas()[0]
    restored = run_module("redis_runtime_config", config_args(ledger, redis_cluster, state="restored"), diff=True)
    assert not restored.failed, restored.msg
    assert settings_of(redis_cluster) == original
    assert restored["diff"]["after"][redis_cluster.endpoint(replica)] == original[redis_cluster.endpoint(replica)]
    assert all(e["state"] == "restored" for e in ledger_entries(ledger, INCIDENT))


def test_storm_rollback_restores_each_node_entry_on_its_own_node(ledger, redis_cluster):
    original = settings_of(redis_cluster)
    applied = run_module("redis_runtime_config", config_args(ledger, redis_cluster, settings={"maxclients": 280}))
    assert not applied.failed, applied.msg
    rollback = {"incident_id": INCIDENT, "kubeconfig": str(ledger.kubeconfig),
                "redis": {"host": redis_cluster.startup.host, "port": redis_cluster.startup.port,
                          "password": redis_cluster.password, "cluster": True}}
    done = run_module("storm_rollback", rollback)
    assert not done.failed, done.msg
    assert settings_of(redis_cluster) == original
    entries = ledger_entries(ledger, INCIDENT)
    assert len(entries) == 6 and all(e["state"] == "restored" for e in entries)
    assert redis_cluster.password not in str(done)


def test_a_node_down_fails_the_rung_by_name_and_the_other_nodes_are_changed_and_recorded(ledger, redis_cluster):
    down = redis_cluster.masters()[1]
    redis_cluster.stop_node(down)
    original = settings_of(redis_cluster)
    applied = run_module("redis_runtime_config", config_args(ledger, redis_cluster, settings={"maxclients": 250}))
    assert applied.failed
    where = redis_cluster.endpoint(down)
    assert "failed on 1 of 6 cluster nodes" in applied.msg and where in applied.msg
    assert "refused the TCP connection" in applied.msg and redis_cluster.password not in str(applied)
    assert {node: v["maxclients"] for node, v in settings_of(redis_cluster).items()} == {
        node: "250" for node in original}
    entries = ledger_entries(ledger, INCIDENT)
    assert sorted(e["target"]["endpoint"] for e in entries) == sorted(original)

    restored = run_module("redis_runtime_config", config_args(ledger, redis_cluster, state="restored"))
    assert restored.failed and where in restored.msg
    assert settings_of(redis_cluster) == original
    assert all(e["state"] == "restored" for e in ledger_entries(ledger, INCIDENT))


def test_clients_kill_kills_a_source_on_every_node_within_max_kill_over_the_cluster(redis_cluster):
    storm_ip, bystander = "127.0.21.1", "127.0.21.2"
    with ExitStack() as stack:
        for node in redis_cluster.nodes:
            storm = stack.enter_context(StormGen(node.port, password=node.password,
                                                 sources=[(storm_ip, 5), (bystander, 2)]))
            storm.wait_connected(timeout=60)
        kill = redis_cluster.module_args(ips=[storm_ip + "/32"], max_kill=100, enabled=True)
        planned = run_module("redis_clients_kill", kill, check=True)
        assert not planned.failed, planned.msg
        assert planned["matched"] == 30 and len(planned["candidates"]) == 30 and planned["killed"] == 0
        assert {c["node"] for c in planned["candidates"]} == {redis_cluster.endpoint(n) for n in redis_cluster.nodes}

        capped = run_module("redis_clients_kill", dict(kill, max_kill=12))
        assert not capped.failed, capped.msg
        assert capped["killed"] == 12 and capped["matched"] == 30

        killed = run_module("redis_clients_kill", kill)
        assert not killed.failed and killed["killed"] == 18
        for node in redis_cluster.nodes:
            addresses = [c["addr"].rsplit(":", 1)[0] for c in node.client_list()]
            assert storm_ip not in addresses and addresses.count(bystander) == 2
        assert redis_cluster.password not in str(killed)
