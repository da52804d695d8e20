"""playbooks/rollback.yml after a real incident: every object and Redis setting the ladder changed
is back at its pre-incident value (against a snapshot taken after the storm began, before the
incident), and a second rollback changes nothing."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.e2e.ladder_support import (
    HeldRedis,
    assert_restored,
    audit_seq,
    lease,
    ledger,
    operator_writes,
    playbook,
    raise_storm,
    real_writes,
    snapshot,
)
from tests.fixtures.sandbox import Sandbox

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(420)]

# Until tests/conftest.py lists it in pytest_plugins.


def test_rollback_restores_the_pre_incident_state_and_a_second_rollback_changes_nothing(
        calm_sandbox: Sandbox, tmp_path: Path) -> None:
    box = calm_sandbox
    incident_id = "e2e-rollback"
    held = HeldRedis(box)
    try:
        # market-open touches the most kinds: an ingress, an HPA and a Deployment's replicas.
        raise_storm(box, "market-open")
        before = snapshot(box, held)
        run = playbook(box, "incident", tmp_path, incident_id=incident_id)
        assert run.rc == 0, run.output[-4000:]
        entries = ledger(box, incident_id)
        assert [e for e in entries if e["state"] == "applied"], "the incident changed nothing to roll back"

        first = playbook(box, "rollback", tmp_path, incident_id=incident_id)
        assert first.rc == 0, first.output[-4000:]
        assert first.changed > 0
        assert "restored" in first.output
        assert_restored(box, held, before, entries)
        assert all(e["state"] == "restored" for e in ledger(box, incident_id) if e["state"] != "failed")
        assert lease(box) is None

        seq = audit_seq(box)
        second = playbook(box, "rollback", tmp_path, incident_id=incident_id)
        assert second.rc == 0, second.output[-4000:]
        assert second.changed == 0, second.output[-4000:]
        patched = [w for w in real_writes(operator_writes(box, seq)) if w["verb"] == "patch"]
        assert patched == [], "the second rollback changed objects: %s" % patched
    finally:
        held.close()


def test_rollback_without_an_incident_id_stops_with_a_clear_message(sandbox: Sandbox, tmp_path: Path) -> None:
    seq = audit_seq(sandbox)
    run = playbook(sandbox, "rollback", tmp_path)
    assert run.rc != 0
    assert "Name the incident to roll back: -e incident_id=<id>" in run.output, run.output[-3000:]
    assert real_writes(operator_writes(sandbox, seq)) == []
