"""playbooks/rollback.yml given no incident. Rolling back each scenario's real incident to its
pre-incident snapshot is the last step of tests/e2e/test_incident.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.e2e.ladder_support import (
    audit_seq,
    operator_writes,
    playbook,
    real_writes,
)
from tests.fixtures.sandbox import Sandbox

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(420)]


def test_rollback_without_an_incident_id_stops_with_a_clear_message(sandbox: Sandbox, tmp_path: Path) -> None:
    seq = audit_seq(sandbox)
    run = playbook(sandbox, "rollback", tmp_path)
    assert run.rc != 0
    assert "Name the incident to roll back: -e incident_id=<id>" in run.output, run.output[-3000:]
    assert real_writes(operator_writes(sandbox, seq)) == []
