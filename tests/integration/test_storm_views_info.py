"""storm_views_info: the three triage views from one task, against a real Redis, the API emulator and Prometheus.

Prometheus' own answers are proven in test_prometheus_query and in the triage e2e tests; here it is
the view that fails (nothing listens) or is left out, while the other two still answer.
"""

from __future__ import annotations

from typing import Any, Dict, List

import pytest

from stormctl.sandbox.procs import free_port
from stormctl.sandbox.stormgen import StormGen
from tests.helpers.modules import run_module, run_playbook
from tests.integration.test_offenders import seed_cluster

pytestmark = pytest.mark.integration

MODULE = "storm_views_info"
# Real connections from the seeded pods' addresses: trading-api holds 75, payments-api 10, ledger 5.
STORM_SOURCES = [("127.0.10.1", 40), ("127.0.10.2", 35), ("127.0.20.1", 10), ("127.0.20.9", 5)]


def views_args(redis_server: Any, kubeapi: Any, **prometheus: Any) -> Dict[str, Any]:
    args: Dict[str, Any] = {
        "redis": {"host": redis_server.host, "port": redis_server.port, "password": redis_server.password,
                  "sample_seconds": 0.2, "latency_samples": 3, "top": 50},
        "kubernetes": {"kubeconfig": str(kubeapi.kubeconfig), "namespaces": ["trading", "payments"], "top": 3},
    }
    if prometheus:
        args["prometheus"] = prometheus
    return args


def ranked(view: Dict[str, Any]) -> List[tuple]:
    return [(w["namespace"], w["name"], w["connections"]) for w in view["workloads"]]


def test_one_task_gives_each_view_as_its_own_module_would(kubeapi: Any, redis_server: Any) -> None:
    seed_cluster(kubeapi)
    dead_prometheus = "http://127.0.0.1:%d" % free_port()
    with StormGen(redis_server.port, password=redis_server.password, sources=STORM_SOURCES, name="storm") as storm:
        storm.wait_connected(90, timeout=30)
        result = run_module(MODULE, views_args(redis_server, kubeapi, url=dead_prometheus, queries={"up": "up"}))
        # the Kubernetes module given the same addresses must rank the same workloads the same way
        alone = run_module("storm_offenders_info", {"kubeconfig": str(kubeapi.kubeconfig), "top": 3,
                                                    "namespaces": ["trading", "payments"],
                                                    "sources": result["redis"]["top_sources"]})
    assert not result.failed, result.msg
    redis_view, kube_view, prometheus_view = result["redis"], result["kubernetes"], result["prometheus"]
    assert redis_view["reachable"] and redis_view["clients"]["connected"] >= 90
    assert redis_view["rates"]["new_connections_per_sec"] is not None
    assert ranked(kube_view)[:3] == [("trading", "trading-api", 75), ("payments", "payments-api", 10),
                                     ("payments", "ledger", 5)]
    assert ranked(kube_view) == ranked(alone)
    assert kube_view["workloads"][0]["logs_read"] == alone["workloads"][0]["logs_read"] != []
    assert prometheus_view["failed"] and dead_prometheus in prometheus_view["msg"]
    assert "answers" not in prometheus_view


def test_a_cluster_that_fails_costs_only_its_own_view(kubeapi: Any, redis_server: Any) -> None:
    seed_cluster(kubeapi)
    kubeapi.fault(resource="pods", verbs=["list"], kind="error", status=500)
    result = run_module(MODULE, views_args(redis_server, kubeapi))
    assert not result.failed, result.msg
    assert result["kubernetes"]["failed"] and "(500)" in result["kubernetes"]["msg"]
    assert result["redis"]["reachable"] and "failed" not in result["redis"]
    assert result["prometheus"] == {"skipped": True, "changed": False, "msg": "no Prometheus URL given"}


def test_an_unreachable_redis_still_lists_the_clusters_workloads(kubeapi: Any) -> None:
    seed_cluster(kubeapi)
    result = run_module(MODULE, {"redis": {"port": free_port(), "socket_timeout": 1},
                                 "kubernetes": {"kubeconfig": str(kubeapi.kubeconfig), "namespaces": ["trading"]}})
    assert not result.failed, result.msg
    redis_view = result["redis"]
    assert not redis_view["reachable"] and not redis_view["saturated"] and redis_view["top_sources"] == []
    # no client addresses: every workload of the namespaces read, ranked by its health
    assert [w["name"] for w in result["kubernetes"]["workloads"]] == ["trading-api"]
    assert result["kubernetes"]["total_connections"] == 0


def test_bad_options_stop_at_the_arguments_naming_the_view(kubeapi: Any, redis_server: Any) -> None:
    args = views_args(redis_server, kubeapi, queries={"up": "up"})
    result = run_module(MODULE, args)
    assert result.failed and "url" in result.msg and "prometheus" in result.msg
    args["prometheus"] = {"url": "ftp://prometheus:9090", "queries": {"up": "up"}}
    result = run_module(MODULE, args)
    assert not result.failed  # a URL Prometheus cannot be asked at is that view's failure, not the task's
    assert result["prometheus"]["failed"] and "ftp://prometheus:9090" in result["prometheus"]["msg"]


def test_through_ansible_playbook_no_secret_reaches_the_output(kubeapi: Any, redis_server: Any) -> None:
    seed_cluster(kubeapi)
    token = "prom-token-%d" % free_port()
    args = views_args(redis_server, kubeapi, url="http://127.0.0.1:%d" % free_port(), queries={"up": "up"},
                      bearer_token=token)
    run = run_playbook([{"name": "views", "fintech.redis_storm.storm_views_info": args}], check=True)
    assert run.rc == 0, run.output[-3000:] + run.stderr[-3000:]
    views = run.task("views")
    assert views["redis"]["reachable"] and views["kubernetes"]["pods_scanned"] > 0
    for secret in (redis_server.password, token):
        assert secret not in run.output and secret not in run.stderr
