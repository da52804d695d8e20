"""playbooks/triage.yml on the sandbox, through ansible-playbook, as an on-call engineer runs it:
a quiet sandbox, each source failing in turn, and bad inventory values. Triage of each scenario's
storm, normal and --check, is the first step of tests/e2e/test_incident.py.

The verdict is read from the JSON file the role writes (``triage_output_file``), never from
the console.
"""

from __future__ import annotations

import json
import os
import signal
import urllib.request
from pathlib import Path
from typing import Any, Dict, Iterator, Optional

import pytest

from stormctl.sandbox.stormgen import StormGen
from tests.e2e.ladder_support import OPERATOR, triage
from tests.fixtures.sandbox import Sandbox, wait_for

pytestmark = pytest.mark.e2e


def fleet_status(box: Sandbox) -> Dict[str, Any]:
    with urllib.request.urlopen(box["fleet"]["url"] + "/status", timeout=10) as response:
        return dict(json.loads(response.read()))


def _maxclients(box: Sandbox) -> int:
    value = box.prom_value("max(redis_config_maxclients)")
    return int(value) if value else box.maxclients


def redis_refuses(box: Sandbox) -> bool:
    client = None
    try:
        client = box.redis(socket_timeout=2, socket_connect_timeout=2, single_connection_client=True)
        client.ping()
        return False
    except Exception as exc:  # a saturated Redis answers our connect with its refusal
        return "max number of clients" in str(exc)
    finally:
        if client is not None:
            client.close()


def pod_ip(box: Sandbox, workload: str) -> str:
    for item in fleet_status(box)["workloads"]:
        if "%s/%s" % (item["namespace"], item["name"]) == workload and item["pod_ips"]:
            return str(item["pod_ips"][0])
    pytest.fail("no pod IP for %s in the fleet's status" % workload)


def wait_prometheus_quiet(box: Sandbox, window: str, churn: float) -> None:
    """Wait until the previous storm has left Prometheus' windows: no peak, rejection or reconnect wave."""
    limit = 0.7 * _maxclients(box)
    wait_for(lambda: (box.prom_value("max(max_over_time(redis_connected_clients[%s]))" % window) or 0) < limit
             and (box.prom_value("sum(increase(redis_rejected_connections_total[%s]))" % window) or 0) == 0
             and (box.prom_value("sum(rate(redis_connections_received_total[%s]))" % window) or 0) < churn,
             150, "Prometheus to see a quiet Redis over the last %s" % window)


@pytest.fixture
def stormgen_saturating(calm_sandbox: Sandbox) -> Iterator[StormGen]:
    """Redis held at maxclients by one wallet-service pod's address (reconnecting), so triage is refused."""
    box = calm_sandbox
    ip = pod_ip(box, "wallet/wallet-service")
    storm = StormGen(box.redis_port, password=box.redis_password, sources=[(ip, box.maxclients)],
                     name="wallet-service", reconnect=True, reconnect_delay=0.05)
    storm.start()
    try:
        wait_for(lambda: redis_refuses(box), 60, "Redis to refuse new connections")
        yield storm
    finally:
        storm.stop()
        box.wait_quiet()


# ------------------------------------------------------------------ the verdicts


@pytest.mark.quiet_world
def test_quiet_sandbox_has_no_storm_and_no_rungs(calm_sandbox: Sandbox, tmp_path: Path) -> None:
    box = calm_sandbox
    # Quiet in Prometheus' eyes too: no peak, rejection, reconnect wave or 5xx in the last minute.
    wait_prometheus_quiet(box, "1m", churn=10)
    errors = 'sum(rate(http_requests_total{code=~"5.."}[1m])) / sum(rate(http_requests_total[1m]))'
    wait_for(lambda: (box.prom_value(errors) or 0) < 0.01, 150, "a minute without 5xx answers")
    run = triage(box, tmp_path)
    assert run.rc == 0, run.output
    assert run.verdict is not None
    assert run.verdict["storm"] is False, run.verdict["summary"]
    assert run.verdict["severity"] == "none"
    assert run.rungs == []
    assert run.verdict["sources_answered"] == ["redis", "prometheus", "kubernetes"]
    assert run.degraded() == []
    assert "Verdict: no connection storm" in run.output


# ------------------------------------------------------------------ a source that cannot be read


def test_redis_refusing_us_still_gives_a_critical_verdict(stormgen_saturating: StormGen, calm_sandbox: Sandbox,
                                                          tmp_path: Path) -> None:
    run = triage(calm_sandbox, tmp_path)
    assert run.rc == 0, run.output
    verdict = run.verdict
    assert verdict is not None
    assert verdict["storm"] is True and verdict["severity"] == "critical"
    assert "redis" in run.degraded()
    reason = next(d["reason"] for d in verdict["degraded_sources"] if d["source"] == "redis")
    assert "max number of clients reached" in reason
    assert {"prometheus", "kubernetes"} <= set(verdict["sources_answered"])
    signals = {(e["source"], e["signal"]) for e in verdict["evidence"] if e["breached"]}
    assert ("redis", "connection_refused") in signals


def test_prometheus_stopped_still_gives_a_verdict_from_redis_and_the_cluster(calm_sandbox: Sandbox,
                                                                             tmp_path: Path) -> None:
    box = calm_sandbox
    ip = pod_ip(box, "wallet/wallet-service")
    prometheus_pid = int(box["services"]["prometheus"]["pid"])
    with StormGen(box.redis_port, password=box.redis_password, sources=[(ip, int(box.maxclients * 0.75))],
                  name="wallet-service") as storm:
        storm.wait_connected(int(box.maxclients * 0.75), timeout=60)
        os.kill(prometheus_pid, signal.SIGTERM)
        try:
            wait_for(lambda: not _answers(box.prometheus_url), 30, "Prometheus to stop")
            run = triage(box, tmp_path)
        finally:
            box.revive()
    assert run.rc == 0, run.output
    verdict = run.verdict
    assert verdict is not None
    assert run.degraded() == ["prometheus"]
    assert "cannot reach Prometheus" in verdict["degraded_sources"][0]["reason"]
    assert verdict["sources_answered"] == ["redis", "kubernetes"]
    assert verdict["storm"] is True
    assert "%s/%s" % (run.top["namespace"], run.top["name"]) == "wallet/wallet-service"
    assert "offender_scale_down" in run.rungs


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url + "/-/ready", timeout=2):
            return True
    except OSError:
        return False


def test_kube_api_answering_500_still_gives_a_verdict(calm_sandbox: Sandbox, tmp_path: Path) -> None:
    box = calm_sandbox
    ip = pod_ip(box, "wallet/wallet-service")
    fault = {"resource": "*", "users": [OPERATOR], "kind": "error", "status": 500, "message": "etcd is down"}
    with StormGen(box.redis_port, password=box.redis_password, sources=[(ip, int(box.maxclients * 0.75))],
                  name="wallet-service") as storm:
        storm.wait_connected(int(box.maxclients * 0.75), timeout=60)
        _faults(box, "POST", fault)
        try:
            run = triage(box, tmp_path)
        finally:
            _faults(box, "DELETE")
    assert run.rc == 0, run.output
    verdict = run.verdict
    assert verdict is not None
    assert run.degraded() == ["kubernetes"]
    assert "500" in verdict["degraded_sources"][0]["reason"]
    assert verdict["sources_answered"] == ["redis", "prometheus"]
    assert verdict["storm"] is True
    # Without the cluster the offenders come from Redis' client names.
    assert (run.top["name"], run.top["connections_from"]) == ("wallet-service", "client_name")


def _faults(box: Sandbox, method: str, body: Optional[Dict[str, Any]] = None) -> None:
    request = urllib.request.Request(box.kube_api + "/_sandbox/faults", method=method,
                                     data=json.dumps(body).encode() if body is not None else None)
    request.add_header("Authorization", "Bearer %s" % box.token("admin"))
    request.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(request, timeout=10):
        pass


# ------------------------------------------------------------------ bad inventory values


@pytest.mark.parametrize(
    ("extra", "names"),
    [
        ({"triage_thresholds": {"utilization_warning": 1.5}}, "triage_thresholds.utilization_warning"),
        ({"triage_thresholds": {"utilization_warning": "high"}}, "utilization_warning"),
        ({"triage_thresholds": {"utilisation": 0.8}}, "utilisation"),
        ({"storm_namespaces": "payments"}, "triage_namespaces (from storm_namespaces)"),
        ({"storm_namespaces": ["Payments_NS"]}, "triage_namespaces (from storm_namespaces)"),
        ({"storm_namespaces": []}, "triage_namespaces (from storm_namespaces) is empty"),
        ({"storm_prometheus_url": "prometheus:9090"}, "triage_prometheus_url (from storm_prometheus_url)"),
        ({"storm_prometheus_url": "http://user:hunter2@prom :9090"}, "triage_prometheus_url"),
    ],
)
def test_bad_inventory_values_stop_before_anything_is_read(sandbox: Sandbox, tmp_path: Path, extra: Dict[str, Any],
                                                           names: str) -> None:
    run = triage(sandbox, tmp_path, **extra)
    assert run.rc != 0
    assert run.verdict is None
    assert names in run.output
    assert "Read Redis' clients" not in run.output
    assert "hunter2" not in run.output
