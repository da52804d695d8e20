"""The ladder when things go wrong: the kube API failing half way through a climb, and two
operators starting incident.yml at the same moment."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path
from typing import Any, Dict, List

import pytest

from tests.e2e.ladder_support import (
    OPERATOR,
    HeldRedis,
    assert_restored,
    audit_seq,
    lease,
    ledger,
    operator_writes,
    playbook,
    raise_storm,
    real_writes,
    sandbox_api,
    snapshot,
    start,
)
from tests.fixtures.sandbox import Sandbox, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(420)]

# Three rungs of market-open's culprit that each write one object: the ingress, then the retry
# flag, then the breaker flag (the third write, which the fault breaks).
THREE_WRITES = "ingress_rate_limit,client_retries,circuit_breaker"


def _mitigation_writes(box: Sandbox, since: int) -> List[Dict[str, Any]]:
    """The operator's successful writes to mitigated objects (not the ledger, the Lease or dry runs)."""
    return [w for w in real_writes(operator_writes(box, since)) if w["verb"] == "patch" and int(w["code"]) < 300]


def test_a_kube_api_failure_on_the_third_write_stops_cleanly_and_rollback_restores_the_rest(
        calm_sandbox: Sandbox, tmp_path: Path) -> None:
    box = calm_sandbox
    incident_id = "e2e-fault"
    held = HeldRedis(box)
    try:
        raise_storm(box, "market-open")
        before = snapshot(box, held)
        seq = audit_seq(box)
        sandbox_api(box, "POST", "/_sandbox/faults", {"kind": "error", "status": 500, "verbs": ["patch"],
                                                      "users": [OPERATOR], "after": 2, "count": 1})
        try:
            run = playbook(box, "incident", tmp_path, incident_id=incident_id, mitigate_rungs=THREE_WRITES,
                           ladder_recovery_gate=False)
        finally:
            sandbox_api(box, "DELETE", "/_sandbox/faults")

        assert run.rc != 0, run.output[-4000:]
        assert "Rung circuit_breaker failed" in run.output, run.output[-4000:]
        assert "playbooks/rollback.yml -e incident_id=%s" % incident_id in run.output
        assert lease(box) is None, "the lock was not given back after the failure"
        assert run.facts is not None and run.facts["outcome"] == "failed"
        assert [t["result"] for t in run.timeline] == ["applied", "applied", "failed"]

        # The ledger lists exactly the writes that happened: one applied entry per successful patch.
        written = {(w["resource"], w["namespace"], w["name"]) for w in _mitigation_writes(box, seq)}
        entries = ledger(box, incident_id)
        applied = {(e["target"]["resource"], e["target"]["namespace"], e["target"]["name"])
                   for e in entries if e["state"] == "applied"}
        assert written and applied == written, (applied, written)
        assert all(e["state"] in ("applied", "failed") for e in entries), entries

        undo = playbook(box, "rollback", tmp_path, incident_id=incident_id)
        assert undo.rc == 0, undo.output[-4000:]
        assert_restored(box, held, before, entries)
    finally:
        held.close()


def test_two_incident_runs_at_once_one_proceeds_and_the_other_stops_at_the_lock(
        calm_sandbox: Sandbox, tmp_path: Path) -> None:
    box = calm_sandbox
    raise_storm(box, "market-open")
    runs = [start(box, "incident", tmp_path / name, incident_id="e2e-race-%s" % name,
                  mitigate_rungs="ingress_rate_limit", ladder_recovery_gate=False) for name in ("a", "b")]
    outputs = []
    try:
        for process, _facts in runs:
            output, _ = process.communicate(timeout=300)
            outputs.append((process.returncode, output))
    finally:
        for process, _facts in runs:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
                process.wait(timeout=30)
    won = [i for i, (rc, _) in enumerate(outputs) if rc == 0]
    lost = [i for i, (rc, _) in enumerate(outputs) if rc != 0]
    assert len(won) == 1 and len(lost) == 1, [rc for rc, _ in outputs]
    loser_output = outputs[lost[0]][1]
    assert "is held by" in loser_output and "another run is mitigating" in loser_output, loser_output[-3000:]
    loser_facts = runs[lost[0]][1]
    assert json.loads(loser_facts.read_text())["outcome"] == "refused"
    wait_for(lambda: lease(box) is None, 30, "the winner to give the lock back")
    winner = "e2e-race-%s" % ("a", "b")[won[0]]
    assert ledger(box, winner), "the winning run changed nothing"
    assert ledger(box, "e2e-race-%s" % ("a", "b")[lost[0]]) == [], "the refused run changed something"
    undo = playbook(box, "rollback", tmp_path, incident_id=winner)
    assert undo.rc == 0, undo.output[-3000:]
