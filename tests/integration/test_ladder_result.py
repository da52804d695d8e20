"""roles/ladder/tasks/result.yml: a rung's module results in the incident timeline's terms, through ansible-playbook."""

from __future__ import annotations

from typing import Any, Dict, List

import pytest

from tests.helpers.modules import run_playbook

pytestmark = pytest.mark.integration

APPLIED = {"changed": True, "msg": "maxclients 1000 -> 1500", "before": {"maxclients": "1000"},
           "after": {"maxclients": "1500"}, "ledger": {"configmap": "redis-storm-ledger-x", "entry_id": "entry-0001"}}
# redis_runtime_config when Redis filled up between the rung's read and CONFIG SET: failed, rescued, no ledger key
SATURATED = {"changed": False, "failed": True, "saturated": True, "msg": "max number of clients reached"}


def record(results: List[Dict[str, Any]]) -> Dict[str, Any]:
    run = run_playbook([
        {"name": "record",
         "ansible.builtin.include_role": {"name": "fintech.redis_storm.ladder", "tasks_from": "result"},
         "vars": {"ladder_result_rung": "redis_capacity", "ladder_result_register": {"results": results}}},
        {"name": "show", "ansible.builtin.debug": {"var": "__ladder_rung_result"}},
    ])
    assert run.rc == 0, run.output[-3000:] + run.stderr[-3000:]
    return dict(run.task("show")["__ladder_rung_result"])


def test_a_rescued_result_without_a_ledger_entry_records_its_message_and_no_change() -> None:
    result = record([SATURATED, {"skipped": True}])
    assert result["changed"] is False and result["ledger"] == [] and result["diff"] == []
    assert "max number of clients reached" in result["msg"]


def test_an_applied_result_records_its_ledger_entry_and_diff() -> None:
    result = record([SATURATED, APPLIED])
    assert result["changed"] is True
    assert result["ledger"] == [APPLIED["ledger"]]
    assert [d["after"] for d in result["diff"]] == [{"maxclients": "1500"}]


def climb_nothing(recovery_wait: int, lock_ttl: int) -> Any:
    """The ladder with no rung chosen, under a lock of ``lock_ttl`` seconds."""
    return run_playbook([
        {"name": "held", "ansible.builtin.set_fact": {"storm_lock_ttl_seconds": lock_ttl}},
        {"name": "ladder", "ansible.builtin.include_role": {"name": "fintech.redis_storm.ladder"},
         "vars": {"ladder_incident_id": "inc-1", "ladder_rungs": [], "ladder_recovery_timeout_seconds": recovery_wait}},
    ])


def test_the_ladder_refuses_a_recovery_wait_the_lock_would_not_outlive() -> None:
    refused = climb_nothing(recovery_wait=1800, lock_ttl=900)
    assert refused.rc != 0
    assert "another run could take the lock over mid-rung" in refused.output, refused.output[-2000:]
    assert climb_nothing(recovery_wait=180, lock_ttl=900).rc == 0
