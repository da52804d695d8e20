"""Triage of a real Redis Cluster: every node read, sources summed and ranked, the saturating node named."""

import json
from contextlib import ExitStack

import pytest

from stormctl.sandbox.stormgen import StormGen
from tests.helpers.modules import run_playbook
from tests.integration.test_offenders import seed_cluster

pytestmark = pytest.mark.integration

MODULE = "redis_clients_info"
SPREAD, HOT, LOCAL = "127.0.20.1", "127.0.20.2", "127.0.20.3"


def hold(stack, node, sources):
    storm = stack.enter_context(StormGen(node.port, password=node.password, sources=sources, name="checkout"))
    storm.wait_connected(timeout=60)
    return storm


def assert_no_secret(run, password):
    assert "Traceback" not in run.output and "MODULE FAILURE" not in run.output, run.output
    assert password not in run.output
    assert password not in json.dumps(run.result)


def test_cluster_sources_are_summed_over_every_node_and_the_hottest_node_is_named(redis_cluster, run_module):
    replica, master = redis_cluster.replicas()[0], redis_cluster.masters()[1]
    with ExitStack() as stack:
        # SPREAD is never the largest source on a node that has another, but holds the most over the cluster
        for node in redis_cluster.nodes:
            hold(stack, node, [(SPREAD, 30)])
        hold(stack, replica, [(HOT, 150)])
        hold(stack, master, [(LOCAL, 80)])
        run = run_module.playbook(MODULE, redis_cluster.module_args(sample_seconds=0.2, latency_samples=2))
    assert not run.failed, run.output
    assert_no_secret(run, redis_cluster.password)
    result = run.result
    ranked = [(s["ip"], s["connections"]) for s in result["top_sources"]]
    assert ranked == [(SPREAD, 180), (HOT, 150), (LOCAL, 80)]
    spread = result["top_sources"][0]
    assert spread["nodes"] == {redis_cluster.endpoint(n): 30 for n in redis_cluster.nodes}
    assert result["top_sources"][1]["nodes"] == {redis_cluster.endpoint(replica): 150}
    assert sorted(n["node"] for n in result["nodes"]) == sorted(redis_cluster.endpoint(n) for n in redis_cluster.nodes)
    hottest = result["saturating_node"]
    assert (hottest["node"], hottest["role"]) == (redis_cluster.endpoint(replica), "replica")
    assert hottest["connected"] >= 180 and hottest["max"] == 200
    assert result["clients"]["utilization"] == hottest["utilization"] >= 0.9
    assert result["clients"]["max"] == 200 * len(redis_cluster.nodes)
    assert result["verdict"]["severity"] == "warning"
    assert any(redis_cluster.endpoint(replica) in reason and "saturates first" in reason
               for reason in result["verdict"]["reasons"]), result["verdict"]
    masters = [n for n in result["nodes"] if n["role"] == "master"]
    assert len(masters) == 3 and all(n["slots"] for n in masters)


def test_a_cluster_node_that_is_down_is_named_and_the_others_are_still_triaged(redis_cluster, run_module):
    down = redis_cluster.masters()[2]
    up = [n for n in redis_cluster.nodes if n is not down]
    with ExitStack() as stack:
        for node in redis_cluster.nodes:
            hold(stack, node, [(SPREAD, 10)])
        redis_cluster.stop_node(down)
        run = run_module.playbook(MODULE, redis_cluster.module_args(sample_seconds=0.2, latency_samples=2))
    assert not run.failed, run.output
    assert_no_secret(run, redis_cluster.password)
    result = run.result
    where = redis_cluster.endpoint(down)
    assert result["reachable"] is True
    assert where in result["error"] and "is down" in result["error"] and "start it again" in result["error"]
    assert "refused the TCP connection" in result["error"]
    assert any(where in reason for reason in result["verdict"]["reasons"])
    entry = next(n for n in result["nodes"] if n["node"] == where)
    assert entry["reachable"] is False and entry["role"] == "master" and entry["slots"]
    assert result["top_sources"] == [dict(result["top_sources"][0], ip=SPREAD, connections=10 * len(up))]
    assert set(result["top_sources"][0]["nodes"]) == {redis_cluster.endpoint(n) for n in up}


def test_a_node_down_through_ansible_runner_leaves_no_password_in_its_artifacts(redis_cluster, run_module):
    down = redis_cluster.replicas()[1]
    redis_cluster.stop_node(down)
    run = run_module.runner(MODULE, redis_cluster.module_args(sample_seconds=0.1, latency_samples=1))
    assert not run.failed and redis_cluster.endpoint(down) in run.result["error"]
    assert_no_secret(run, redis_cluster.password)
    artifacts = run_module.base / ("run-%d" % run_module.runs) / "runner" / "artifacts"
    files = [path for path in artifacts.rglob("*") if path.is_file()]
    assert files and any(redis_cluster.endpoint(down) in path.read_text(errors="replace") for path in files)
    assert not [path for path in files if redis_cluster.password in path.read_text(errors="replace")]


def test_a_node_at_maxclients_makes_the_storm_critical_and_is_the_node_that_saturates_first(
        redis_cluster_factory, run_module):
    cluster = redis_cluster_factory(maxclients=40)
    full = cluster.masters()[1]
    with ExitStack() as stack:
        for node in cluster.nodes:
            if node is not full:
                hold(stack, node, [(SPREAD, 5)])
        storm = stack.enter_context(StormGen(full.port, password=full.password, sources=[(HOT, 60)]))
        storm.wait_settled(timeout=60)
        assert storm.stats.rejected > 0  # the node is at its maxclients
        run = run_module.playbook(MODULE, cluster.module_args(sample_seconds=0.2, latency_samples=2))
    assert not run.failed, run.output
    assert_no_secret(run, cluster.password)
    result = run.result
    assert result["saturated"] is True and result["verdict"]["severity"] == "critical"
    hottest = result["saturating_node"]
    assert (hottest["node"], hottest["saturated"], hottest["utilization"]) == (cluster.endpoint(full), True, 1.0)
    assert "max number of clients" in hottest["error"] and "is down" not in hottest["error"]
    assert any(cluster.endpoint(full) in reason for reason in result["verdict"]["reasons"])
    assert [(s["ip"], s["connections"]) for s in result["top_sources"]] == [(SPREAD, 25)]


def test_a_node_with_another_password_is_named_with_what_to_fix_and_the_others_are_triaged(
        redis_cluster, run_module):
    odd = redis_cluster.replicas()[2]
    other_password = "other-%s" % redis_cluster.password[:8]
    odd.client().config_set("requirepass", other_password)
    with ExitStack() as stack:
        for node in redis_cluster.nodes:
            if node is not odd:
                hold(stack, node, [(SPREAD, 4)])
        run = run_module.playbook(MODULE, redis_cluster.module_args(sample_seconds=0.1, latency_samples=1))
    assert not run.failed, run.output
    assert_no_secret(run, redis_cluster.password)
    assert other_password not in run.output
    entry = next(n for n in run.result["nodes"] if n["node"] == redis_cluster.endpoint(odd))
    assert "rejected the password" in entry["error"] and "check password" in entry["error"]
    assert "is down" not in entry["error"]
    assert run.result["top_sources"][0]["connections"] == 4 * (len(redis_cluster.nodes) - 1)


def test_cluster_true_on_a_standalone_redis_says_what_to_set(redis_server, run_module):
    run = run_module.playbook(MODULE, redis_server.module_args(cluster=True))
    assert run.failed
    assert "not a cluster node" in run.result["msg"] and "cluster: false" in run.result["msg"]
    assert_no_secret(run, redis_server.password)


def test_the_startup_node_down_says_to_name_another_node(redis_cluster, run_module):
    redis_cluster.stop_node(redis_cluster.startup)
    run = run_module.playbook(MODULE, redis_cluster.module_args())
    assert run.failed
    message = run.result["msg"]
    assert redis_cluster.endpoint(redis_cluster.startup) in message and "name a node of the cluster" in message
    assert_no_secret(run, redis_cluster.password)


def test_the_triage_role_names_the_workload_summed_over_nodes_and_the_node_that_saturates_first(
        kubeapi, redis_cluster):
    seed_cluster(kubeapi)
    replica = redis_cluster.replicas()[0]
    trading_pod, payments_pod = "127.0.10.1", "127.0.20.1"
    with ExitStack() as stack:
        for node in redis_cluster.nodes:  # trading-api holds 25 on every node, 150 over the cluster
            hold(stack, node, [(trading_pod, 25)])
        hold(stack, replica, [(payments_pod, 140)])  # payments-api is the largest on the node nearest maxclients
        run = run_playbook([{"name": "triage", "ansible.builtin.include_role": {"name": "fintech.redis_storm.triage"},
                             "vars": {"storm_redis_host": redis_cluster.startup.host,
                                      "storm_redis_port": redis_cluster.startup.port,
                                      "storm_redis_password": redis_cluster.password, "storm_redis_cluster": True,
                                      "storm_namespaces": ["trading", "payments"],
                                      "storm_kubeconfig": str(kubeapi.kubeconfig), "storm_prometheus_url": ""}},
                            {"name": "verdict", "ansible.builtin.debug": {"var": "storm_triage"}}], timeout=300)
    assert run.rc == 0, run.output[-3000:] + run.stderr[-3000:]
    triage = run.task("verdict")["storm_triage"]
    assert [(o["name"], o["connections"]) for o in triage["offenders"][:2]] == [("trading-api", 150),
                                                                               ("payments-api", 140)]
    utilization = next(i for i in triage["evidence"] if i["signal"] == "utilization")
    assert utilization["breached"] and utilization["observed"] >= 0.8
    assert "cluster node %s (replica) saturates first" % redis_cluster.endpoint(replica) in utilization["note"]
    assert redis_cluster.password not in run.output + run.stderr
