"""The runbook on the sandbox, as the on-call engineer works it: triage.yml (and its --check twin),
then incident.yml as a dry run, then the real run, then the same incident again once Redis has recovered,
then rollback.yml back to the pre-incident state, twice.

Each scenario starts from the baseline world (`calm_sandbox`), raises its storm and waits until
the sandbox's own truth (the fleet) shows Redis saturated by the scenario's culprit. What the
runs did is read from the emulator's audit log, Redis itself (an admin connection held from
before the storm) and the incident facts file, never from the playbook's own claims alone.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, Tuple

import pytest

from tests.e2e.ladder_support import (
    LADDER,
    SCENARIOS,
    HeldRedis,
    Triage,
    assert_restored,
    audit_seq,
    lease,
    ledger,
    operator_writes,
    playbook,
    raise_storm,
    real_writes,
    scenario,
    snapshot,
    triage,
)
from tests.fixtures.sandbox import Sandbox

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(480)]


@pytest.mark.parametrize("name", SCENARIOS)
def test_triage_names_the_culprit_the_dry_run_changes_nothing_and_the_ladder_recovers(
        calm_sandbox: Sandbox, tmp_path: Path, name: str) -> None:
    box = calm_sandbox
    incident_id = "e2e-%s" % name
    held = HeldRedis(box)
    try:
        raise_storm(box, name, hurting=True)
        before = snapshot(box, held)
        config_before = before["redis"]

        # 0. Triage, normal and --check: the same verdict naming the culprit, and nothing written.
        seq = audit_seq(box)
        normal = triage(box, tmp_path / "triage")
        checked = triage(box, tmp_path / "triage-check", check=True)
        assert_names_the_culprit(normal, name)
        assert checked.rc == 0 and checked.verdict is not None, checked.output[-4000:]
        assert normal.verdict is not None
        for key in ("storm", "severity"):
            assert checked.verdict[key] == normal.verdict[key], (key, checked.verdict[key], normal.verdict[key])
        assert checked.verdict["bottleneck_confirmed"]["confirmed"] is True
        # The storm moves between the two runs (retry-storm's blip can briefly put another workload first),
        # so the culprit must be among the --check run's leading offenders, as the normal run's first.
        leading = ["%s/%s" % (o["namespace"], o["name"]) for o in checked.verdict["offenders"][:3]]
        assert "%s/%s" % (normal.top["namespace"], normal.top["name"]) in leading, leading
        # The storm moves between the two runs, so their evidence may differ; both must support the scenario's rungs.
        assert set(scenario(name)["expected_rungs"]) <= set(checked.rungs), checked.verdict["recommended_rungs"]
        assert "changed=0" in normal.output and "changed=0" in checked.output
        assert operator_writes(box, seq) == [], "triage wrote to the cluster"
        assert held.config() == config_before, "triage changed Redis' configuration"
        # It did read the cluster (the audit log records writes only).
        assert all("kubernetes" in run.verdict["sources_answered"] for run in (normal, checked) if run.verdict)

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
        seq = audit_seq(box)
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
        patched_by_real = {_object(w) for w in real_writes(operator_writes(box, seq)) if w["verb"] == "patch"}

        # 3. The same incident again, on the recovered sandbox: nothing repeats, and nothing changes at all
        # unless the scenario's storm comes back by itself (retry-storm's blip recurs every 20 s, longer than
        # the sandbox's 5 s recovery hold, so the rerun may rightly climb a rung the lull let the first run skip).
        seq = audit_seq(box)
        again = playbook(box, "incident", tmp_path / "again", incident_id=incident_id)
        assert again.rc == 0, again.output[-4000:]
        repeated = [t["rung"] for t in again.timeline if t["result"] == "applied" and t["rung"] in climbed]
        assert repeated == [], "the rerun applied rungs again: %s" % repeated
        patched = {_object(w) for w in real_writes(operator_writes(box, seq)) if w["verb"] == "patch"}
        assert not patched & patched_by_real, "the rerun changed objects again: %s" % (patched & patched_by_real)
        if not recurs(name):
            assert again.changed == 0, (again.changed_tasks, again.output[-4000:])
            assert patched == set(), "the rerun changed objects: %s" % patched
        assert lease(box) is None

        # 4. Rollback: everything the incident changed is back at its pre-incident value, except what the capacity
        # gates hold back because the scenario's load is still on (autoscale-burst's pre-incident replicas are the
        # storm itself): that is left open, listed, and Redis is not pushed into refusing clients. A second
        # rollback changes nothing.
        entries = ledger(box, incident_id)
        first = playbook(box, "rollback", tmp_path / "rollback", incident_id=incident_id)
        left = [e for e in ledger(box, incident_id) if e["state"] in ("pending", "applied")]
        if first.rc != 0:
            assert left and "no headroom" in first.output, first.output[-4000:]
            assert all(e.get("deferred") for e in left) or "waits for" in first.output, first.output[-4000:]
            clients = held.client.info("clients")["connected_clients"]
            assert clients < int(held.config()["maxclients"]), "rollback pushed Redis to maxclients"
        # a run the gates stop ends failed, so its stats count no change: judge by what the ledger says came back
        came_back = [e for e in ledger(box, incident_id) if e["state"] == "restored"]
        assert came_back and "restored" in first.output, first.output[-6000:]
        open_ids = {e["id"] for e in left}
        assert_restored(box, held, before, [e for e in entries if e["id"] not in open_ids])
        assert all(e["state"] == "restored" for e in ledger(box, incident_id)
                   if e["state"] != "failed" and e["id"] not in open_ids)
        assert lease(box) is None
        seq = audit_seq(box)
        second = playbook(box, "rollback", tmp_path / "rollback-again", incident_id=incident_id)
        if first.rc != 0:  # it goes on from where the gates stopped, as far as Redis' headroom lets it
            assert second.rc == 0 or "no headroom" in second.output, second.output[-4000:]
            return
        assert second.rc == 0, second.output[-4000:]
        assert second.changed == 0, (second.changed_tasks, second.output[-4000:])
        assert [w for w in real_writes(operator_writes(box, seq)) if w["verb"] == "patch"] == []
    finally:
        held.close()


def assert_names_the_culprit(run: Triage, name: str) -> None:
    """Critical, Redis confirmed as the bottleneck, the culprit on top, and the rungs that would help, in order."""
    spec = scenario(name)
    culprit = "%s/%s" % (spec["culprit"]["namespace"], spec["culprit"]["name"])
    assert run.rc == 0, run.output[-4000:]
    verdict = run.verdict
    assert verdict is not None, run.output[-4000:]
    seen = "%s\n%s" % (verdict["summary"], json.dumps(verdict["evidence"], indent=1))
    assert verdict["storm"] is True, seen
    assert verdict["severity"] == "critical", seen
    assert verdict["bottleneck_confirmed"]["confirmed"] is True, seen
    assert "%s/%s" % (run.top["namespace"], run.top["name"]) == culprit, verdict["offenders"][:3]
    # Redis' own measure names the culprit whenever Redis let triage in; the apps' gauges count only when it
    # refused (a full Redis), never beside a Redis that answered.
    refused = [d for d in verdict["degraded_sources"] if d["source"] == "redis" and not d.get("partial")]
    expected_source = "prometheus" if refused else "redis_"
    assert str(run.top["connections_from"]).startswith(expected_source), (run.top, refused, verdict.get("culprit"))
    missing = [rung for rung in spec["expected_rungs"] if rung not in run.rungs]
    assert not missing, "%s: expected %s, recommended %s" % (name, spec["expected_rungs"], verdict["recommended_rungs"])
    assert run.rungs == [r for r in LADDER if r in run.rungs], "rungs out of ladder order: %s" % run.rungs
    assert all(r["reason"] for r in verdict["recommended_rungs"])
    assert "Verdict: critical connection storm, top offender %s" % culprit in run.output


def recurs(name: str) -> bool:
    """Whether the scenario's storm comes back by itself (a repeating event such as retry-storm's blip)."""
    return any(event.get("every_seconds") for event in scenario(name).get("events") or [])


def _object(write: Dict[str, Any]) -> Tuple[str, str, str, str]:
    return (str(write["resource"]), str(write["subresource"]), str(write["namespace"]), str(write["name"]))
