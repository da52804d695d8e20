"""playbooks/incident.yml on the sandbox, as the on-call engineer runs it: a dry run first, then
the real run, then the same incident again once Redis has recovered.

Each scenario starts from the baseline world (`calm_sandbox`), raises its storm and waits until
the sandbox's own truth (the fleet) shows Redis saturated by the scenario's culprit. What the
runs did is read from the emulator's audit log, Redis itself (an admin connection held from
before the storm) and the incident facts file, never from the playbook's own claims alone.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.e2e.ladder_support import (
    LADDER,
    SCENARIOS,
    HeldRedis,
    audit_seq,
    lease,
    ledger,
    operator_writes,
    playbook,
    raise_storm,
    real_writes,
    scenario,
)
from tests.fixtures.sandbox import Sandbox

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(480)]

# Until tests/conftest.py lists it in pytest_plugins.


@pytest.mark.parametrize("name", SCENARIOS)
def test_dry_run_changes_nothing_then_the_ladder_recovers_and_a_rerun_changes_nothing(
        calm_sandbox: Sandbox, tmp_path: Path, name: str) -> None:
    box = calm_sandbox
    incident_id = "e2e-%s" % name
    held = HeldRedis(box)
    try:
        raise_storm(box, name)
        config_before = held.config()

        # 1. --check --diff: the plan with its diffs, and not one write anywhere.
        seq = audit_seq(box)
        dry = playbook(box, "incident", tmp_path / "dry", "--check", "--diff", incident_id=incident_id)
        assert dry.rc == 0, dry.output[-4000:]
        assert real_writes(operator_writes(box, seq)) == [], "the dry run wrote to the cluster"
        assert held.config() == config_before, "the dry run changed Redis' configuration"
        assert ledger(box, incident_id) == [] and lease(box) is None
        assert dry.facts is not None and dry.facts["check_mode"] is True
        assert "Mitigate: " in dry.output, dry.output[-4000:]
        planned = [t for t in dry.timeline if t["result"] == "planned"]
        assert planned, "the dry run plans no change for a raging %s: %s" % (name, dry.timeline)
        assert all(t["diff"] for t in planned)
        assert "+++ after" in dry.output, "the dry run printed no diff"
        assert set(dry.climbed) <= set(dry.recommended)

        # 2. The real run: recovered within the scenario's budget, climbing only what it needed.
        real = playbook(box, "incident", tmp_path / "real", "--diff", incident_id=incident_id)
        assert real.rc == 0, real.output[-4000:]
        assert real.facts is not None and real.facts["outcome"] == "recovered", real.output[-4000:]
        budget = scenario(name)["recovery_seconds"]
        assert real.seconds_to_recovered() <= budget, "recovered after %.0f s, the scenario allows %d s" % (
            real.seconds_to_recovered(), budget)
        climbed = real.climbed
        assert climbed and set(climbed) <= set(real.recommended), (climbed, real.recommended)
        assert climbed == [r for r in LADDER if r in climbed], "rungs out of ladder order: %s" % climbed
        recovered = [t.get("recovered") for t in real.timeline]
        assert recovered[-1] is True and True not in recovered[:-1], "the climb went on after recovery: %s" % (
            real.timeline)
        applied = [t for t in real.timeline if t["result"] == "applied"]
        assert applied and len(ledger(box, incident_id)) >= len(applied)
        assert lease(box) is None, "the lock was not given back"

        # 3. The same incident again, on the recovered sandbox: nothing changes, nothing repeats.
        seq = audit_seq(box)
        again = playbook(box, "incident", tmp_path / "again", incident_id=incident_id)
        assert again.rc == 0, again.output[-4000:]
        assert again.changed == 0, again.output[-4000:]
        assert [t for t in again.timeline if t["result"] == "applied"] == []
        patched = [w for w in real_writes(operator_writes(box, seq)) if w["verb"] == "patch"]
        assert patched == [], "the second run changed objects again: %s" % patched
        assert lease(box) is None
    finally:
        held.close()
