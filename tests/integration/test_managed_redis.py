"""Managed Redis (CONFIG renamed away, as ElastiCache and Memorystore do) on a real redis-server.

Triage still reads INFO and CLIENT LIST; the Redis-config rung says it cannot act and what to do
instead, and the real ladder (ansible-playbook) goes on to the next rung.
"""

from __future__ import annotations

from typing import Any, Dict

import pytest

from stormctl.sandbox.stormgen import StormGen
from tests.helpers.modules import run_playbook
from tests.integration.mitigation_common import connected, ledger_entries, seed_ledger_namespace

pytestmark = pytest.mark.integration

INCIDENT = "storm-20261207-2000"
MANAGED = {"rename-command": 'CONFIG ""'}


@pytest.fixture
def managed(redis_factory: Any) -> Any:
    return redis_factory(maxclients=100, extra=MANAGED)


def test_triage_reads_a_managed_redis_and_the_config_rung_names_the_provider(
        managed: Any, kubeapi: Any, run_module: Any) -> None:
    seed_ledger_namespace(kubeapi)
    with StormGen(managed.port, password=managed.password, sources=[("127.0.30.1", 70)], name="checkout") as gen:
        gen.wait_connected()
        triage = run_module.playbook("redis_clients_info", managed.module_args(sample_seconds=0.2))
    assert not triage.failed, triage.output
    assert triage.result["clients"]["max"] == 100 and triage.result["clients"]["connected"] >= 70
    assert triage.result["top_sources"][0]["ip"] == "127.0.30.1"
    assert triage.result["top_sources"][0]["connections"] == 70

    config = run_module.playbook("redis_runtime_config", managed.module_args(
        kubeconfig=str(kubeapi.kubeconfig), incident_id=INCIDENT, settings={"maxclients": 150}))
    assert config.failed and config.result["config_disabled"] is True
    assert "refused CONFIG GET maxclients" in config.result["msg"]
    assert "provider's console or API" in config.result["msg"]
    assert "aws elasticache modify-cache-parameter-group" in config.result["msg"]
    assert ledger_entries(kubeapi, INCIDENT) == []
    assert managed.password not in triage.output + config.output


def ladder_vars(server: Any, kubeapi: Any) -> Dict[str, Any]:
    return {"incident_id": INCIDENT, "storm_redis_host": server.host, "storm_redis_port": server.port,
            "storm_redis_password": server.password, "storm_kubeconfig": str(kubeapi.kubeconfig),
            "storm_namespaces": ["payments"], "ladder_rungs": ["redis_capacity", "offender_scale_down"],
            "ladder_force": True, "ladder_recovery_gate": False}


def test_the_ladder_goes_on_past_the_config_rung_on_managed_redis(managed: Any, kubeapi: Any) -> None:
    seed_ledger_namespace(kubeapi)
    run = run_playbook([
        connected(kubeapi, [{"name": "climb", "ansible.builtin.include_role": {"name": "fintech.redis_storm.ladder"}}]),
        {"name": "timeline", "ansible.builtin.debug": {"var": "storm_timeline"}},
    ], extra_vars=ladder_vars(managed, kubeapi))
    assert run.rc == 0, run.output[-4000:] + run.stderr[-2000:]
    timeline = run.task("timeline")["storm_timeline"]
    assert [(step["rung"], step["result"]) for step in timeline] == [
        ("redis_capacity", "unchanged"), ("offender_scale_down", "unchanged")]
    assert "CONFIG is disabled on this server" in timeline[0]["msg"]
    assert "provider's console or API" in timeline[0]["msg"]
    assert managed.password not in run.output + run.stderr
