"""Redis behind real Sentinels: a master, a replica and three redis-sentinel processes on loopback.

The rungs find the master through the Sentinels, change every node of the group, persist it,
see a real failover (SENTINEL FAILOVER) mid-incident and roll every node back exactly.
"""

from __future__ import annotations

from typing import Any, Dict

import pytest

from stormctl.sandbox.stormgen import StormGen
from tests.fixtures.sentinel import SentinelGroup
from tests.helpers.modules import run_module, run_playbook
from tests.integration.mitigation_common import connected, ledger_entries, seed_ledger_namespace

pytestmark = pytest.mark.integration

INCIDENT = "storm-20261207-1930"


@pytest.fixture
def ledger(kubeapi: Any) -> Any:
    seed_ledger_namespace(kubeapi)
    return kubeapi


def config_args(kubeapi: Any, group: SentinelGroup, **extra: Any) -> Dict[str, Any]:
    return group.module_args(kubeconfig=str(kubeapi.kubeconfig), incident_id=INCIDENT, **extra)


def live(group: SentinelGroup, name: str) -> Dict[int, str]:
    return {node.port: node.client().config_get(name)[name] for node in group.nodes}


def file_setting(node: Any, name: str) -> str:
    lines = [line for line in (node.dir / "redis.conf").read_text().splitlines() if line.startswith(name + " ")]
    return lines[-1].split(" ", 1)[1] if lines else ""


def test_maxclients_goes_to_every_node_survives_a_failover_and_rolls_back_on_each(
        ledger: Any, sentinel_group: SentinelGroup) -> None:
    group = sentinel_group
    master = group.master()
    replica = group.replicas()[0]
    args = config_args(ledger, group, settings={"maxclients": 350, "timeout": 120}, rung="redis_capacity")

    planned = run_module("redis_runtime_config", args, check=True, diff=True)
    assert not planned.failed, planned.msg
    assert planned["changed"] is True and live(group, "maxclients") == {master.port: "200", replica.port: "200"}

    applied = run_module("redis_runtime_config", args, diff=True)
    assert not applied.failed, applied.msg
    assert live(group, "maxclients") == {master.port: "350", replica.port: "350"}
    assert live(group, "timeout") == {master.port: "120", replica.port: "120"}
    where = {node.port: "127.0.0.1:%d" % node.port for node in group.nodes}
    assert applied["sentinel"]["master"] == where[master.port]
    assert applied["sentinel"]["replicas"] == [where[replica.port]]
    assert applied["persisted"] == {where[master.port]: True, where[replica.port]: True}
    assert "persisted with CONFIG REWRITE" in applied["diff"]["after_header"]
    assert file_setting(master, "maxclients") == "350" and file_setting(replica, "maxclients") == "350"
    entries = ledger_entries(ledger, INCIDENT)
    assert {(e["target"]["run_id"], e["target"]["role"], e["target"]["group"]) for e in entries} == {
        (master.info("server")["run_id"], "master", group.name),
        (replica.info("server")["run_id"], "replica", group.name)}
    for secret in (group.password, group.sentinel_password):
        assert secret not in str(applied) and secret not in str(entries)

    new_master = group.failover()
    assert new_master is replica
    assert live(group, "maxclients") == {master.port: "350", replica.port: "350"}  # no old value came back

    again = run_module("redis_runtime_config", args, diff=True)
    assert not again.failed, again.msg
    assert again["changed"] is False
    assert again["sentinel"]["master"] == where[replica.port]
    assert again["failover"]["master_was"] == where[master.port]
    assert again["failover"]["master"] == where[replica.port]
    assert "failover in group 'payments'" in again["msg"]

    restored = run_module("redis_runtime_config", config_args(ledger, group, state="restored"), diff=True)
    assert not restored.failed, restored.msg
    assert restored["changed"] is True and restored["failover"]["master_was"] == where[master.port]
    assert live(group, "maxclients") == {master.port: "200", replica.port: "200"}
    assert live(group, "timeout") == {master.port: "0", replica.port: "0"}
    assert file_setting(master, "maxclients") == "200" and file_setting(replica, "maxclients") == "200"
    assert all(e["state"] == "restored" for e in ledger_entries(ledger, INCIDENT))


def test_a_rung_pointed_at_a_replica_refuses_and_names_the_master(
        ledger: Any, sentinel_group: SentinelGroup, kubeapi: Any) -> None:
    replica = sentinel_group.replicas()[0]
    master = sentinel_group.master()
    result = run_module("redis_runtime_config", {
        "host": replica.host, "port": replica.port, "password": replica.password, "kubeconfig": str(kubeapi.kubeconfig),
        "incident_id": INCIDENT, "settings": {"maxclients": 300}})
    assert result.failed and result["replica"] is True
    assert "is a replica of 127.0.0.1:%d" % master.port in result.msg
    assert "Point host and port at the master (127.0.0.1:%d)" % master.port in result.msg
    assert replica.client().config_get("maxclients")["maxclients"] == "200"
    assert ledger_entries(ledger, INCIDENT) == []


def test_an_unknown_group_and_wrong_passwords_say_which_host_and_what_to_fix(
        ledger: Any, sentinel_group: SentinelGroup) -> None:
    group = sentinel_group
    first = group.addresses[0]
    runs = {
        "group": config_args(ledger, group, sentinel_master="orders", settings={"timeout": 60}),
        "sentinel_password": config_args(ledger, group, sentinel_password="not-the-sentinel-password",
                                         settings={"timeout": 60}),
        "redis_password": config_args(ledger, group, password="not-the-redis-password", settings={"timeout": 60}),
    }
    results = {name: run_module("redis_runtime_config", args) for name, args in runs.items()}
    assert all(r.failed for r in results.values())
    assert "Sentinel at %s monitors no group named 'orders' (it monitors: payments)" % first in results["group"].msg
    assert "set sentinel_master" in results["group"].msg
    assert "Sentinel at %s rejected sentinel_password" % first in results["sentinel_password"].msg
    assert "Redis at 127.0.0.1:%d rejected the password" % group.master().port in results["redis_password"].msg
    for result in results.values():
        for secret in (group.password, group.sentinel_password, "not-the-sentinel-password", "not-the-redis-password"):
            assert secret not in str(result)
    assert ledger_entries(ledger, INCIDENT) == []
    assert live(group, "timeout") == {node.port: "0" for node in group.nodes}


def storm_on(node: Any, ip: str, count: int, name: str) -> StormGen:
    return StormGen(node.port, password=node.password, sources=[(ip, count)], name=name)


def test_triage_reads_the_master_from_the_sentinels_and_counts_offenders_on_the_replica(
        sentinel_group: SentinelGroup, run_module: Any) -> None:
    group = sentinel_group
    master, replica = group.master(), group.replicas()[0]
    with storm_on(master, "127.0.20.1", 30, "checkout") as writers, \
            storm_on(replica, "127.0.20.1", 25, "checkout") as readers, \
            storm_on(replica, "127.0.20.2", 40, "reports") as reports, \
            storm_on(master, "127.0.20.3", 10, "cron") as cron:
        for gen in (writers, readers, reports, cron):
            gen.wait_connected()
        run = run_module.playbook("redis_clients_info", group.module_args(sample_seconds=0.2, top=10))
    assert not run.failed, run.output
    result = run.result
    assert result["sentinel"]["master"] == "127.0.0.1:%d" % master.port
    assert [(s["ip"], s["connections"], s["names"]) for s in result["top_sources"]] == [
        ("127.0.20.1", 55, ["checkout"]), ("127.0.20.2", 40, ["reports"]), ("127.0.20.3", 10, ["cron"])]
    assert result["top_sources"][0]["nodes"] == {"127.0.0.1:%d" % master.port: 30,
                                                 "127.0.0.1:%d" % replica.port: 25}
    assert [(n["node"], n["role"]) for n in result["nodes"]] == [
        ("127.0.0.1:%d" % master.port, "master"), ("127.0.0.1:%d" % replica.port, "replica")]
    assert result["nodes"][1]["clients"]["connected"] >= 65
    for secret in (group.password, group.sentinel_password):
        assert secret not in run.output


def test_the_triage_role_and_a_kill_follow_the_master_after_a_failover(
        sentinel_group: SentinelGroup, kubeapi: Any, run_module: Any) -> None:
    group = sentinel_group
    new_master = group.failover()
    with storm_on(new_master, "127.0.21.1", 20, "batch") as batch:
        batch.wait_connected()
        views = run_module.playbook("storm_views_info", {
            "redis": group.module_args(sample_seconds=0.2),
            "kubernetes": {"namespaces": ["payments"], "kubeconfig": str(kubeapi.kubeconfig)}})
        assert not views.failed, views.output
        redis_view = views.result["redis"]
        assert redis_view["sentinel"]["master"] == "127.0.0.1:%d" % new_master.port
        assert redis_view["top_sources"][0]["ip"] == "127.0.21.1"
        killed = run_module.playbook("redis_clients_kill", group.module_args(ips=["127.0.21.1"], max_kill=5,
                                                                              enabled=True))
    assert not killed.failed, killed.output
    assert killed.result["killed"] == 5
    assert {c["node"] for c in killed.result["candidates"]} == {"127.0.0.1:%d" % new_master.port}
    assert "127.0.0.1:%d" % new_master.port in {n["node"] for n in killed.result["nodes"]}
    assert group.sentinel_password not in views.output + killed.output


def test_a_redis_cluster_with_sentinels_is_refused_and_nothing_is_changed(
        ledger: Any, sentinel_group: SentinelGroup) -> None:
    group = sentinel_group
    both = dict(group.module_args(), cluster=True)
    refused = [run_module("redis_runtime_config", dict(config_args(ledger, group, settings={"maxclients": 330}),
                                                       cluster=True)),
               run_module("redis_clients_info", both),
               run_module("redis_clients_kill", dict(both, ips=["127.0.22.1"], enabled=True)),
               run_module("storm_rollback", {"incident_id": INCIDENT, "kubeconfig": str(ledger.kubeconfig),
                                             "redis": both})]
    for result in refused:
        assert result.failed
        assert "cluster: true and sentinels are both set" in result.msg, result.msg
    assert live(group, "maxclients") == {node.port: "200" for node in group.nodes}
    assert ledger_entries(ledger, INCIDENT) == []


def test_storm_rollback_restores_each_node_of_the_group_after_a_failover(
        ledger: Any, sentinel_group: SentinelGroup) -> None:
    group = sentinel_group
    master, replica = group.master(), group.replicas()[0]
    applied = run_module("redis_runtime_config", config_args(ledger, group, settings={"maxclients": 320}))
    assert not applied.failed, applied.msg
    group.failover()
    replica.client().config_set("tcp-keepalive", "77")  # a change outside the incident stays as it is

    rolled = run_module("storm_rollback", {"incident_id": INCIDENT, "kubeconfig": str(ledger.kubeconfig),
                                           "redis": group.module_args()})
    assert not rolled.failed, rolled.msg
    assert rolled["summary"]["restored"] == 2
    assert live(group, "maxclients") == {master.port: "200", replica.port: "200"}
    assert live(group, "tcp-keepalive")[replica.port] == "77"
    assert all(e["state"] == "restored" for e in ledger_entries(ledger, INCIDENT))
    assert group.sentinel_password not in str(rolled) and group.password not in str(rolled)


def test_the_ladder_and_rollback_roles_act_on_every_node_of_an_inventory_sentinel_group(
        ledger: Any, sentinel_group: SentinelGroup) -> None:
    group = sentinel_group
    inventory = {"incident_id": INCIDENT, "storm_redis_sentinels": group.addresses,
                 "storm_redis_sentinel_master": group.name, "storm_redis_sentinel_password": group.sentinel_password,
                 "storm_redis_password": group.password, "storm_kubeconfig": str(ledger.kubeconfig),
                 "storm_namespaces": ["payments"], "ladder_rungs": ["redis_capacity"], "ladder_force": True,
                 "ladder_recovery_gate": False}
    climb = {"name": "climb", "ansible.builtin.include_role": {"name": "fintech.redis_storm.ladder"}}
    climbed = run_playbook([connected(ledger, [climb]),
                            {"name": "timeline", "ansible.builtin.debug": {"var": "storm_timeline"}}],
                           extra_vars=inventory)
    assert climbed.rc == 0, climbed.output[-4000:] + climbed.stderr[-2000:]
    raised = live(group, "maxclients")
    assert len(set(raised.values())) == 1 and int(next(iter(raised.values()))) > 200
    assert climbed.task("timeline")["storm_timeline"][0]["result"] == "applied"

    group.failover()
    rollback = {"name": "rollback", "ansible.builtin.include_role": {"name": "fintech.redis_storm.rollback"}}
    rolled = run_playbook([connected(ledger, [rollback])], extra_vars=inventory)
    assert rolled.rc == 0, rolled.output[-4000:] + rolled.stderr[-2000:]
    assert live(group, "maxclients") == {node.port: "200" for node in group.nodes}
    for secret in (group.password, group.sentinel_password):
        assert secret not in climbed.output + climbed.stderr + rolled.output + rolled.stderr
