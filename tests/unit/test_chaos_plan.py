"""The chaos run's plan and checks: a seed always chooses the same faults, and the checks see a difference."""

from __future__ import annotations

import json

from tests.e2e.chaos import CI_SEEDS, KINDS, RUNGS, Outcome, _value, plan, summary, whole_object_problems


def test_a_seed_replays_the_same_faults_and_seeds_between_them_cover_every_kind() -> None:
    assert plan(3).describe() == plan(3).describe()
    assert plan(3).describe() != plan(4).describe()
    seen: set[str] = set()
    for seed in range(1, 40):
        chosen = plan(seed)
        assert set(chosen.rungs) <= set(RUNGS) and len(chosen.rungs) >= 2
        seen.update(kind for _at, kind, _length in chosen.events)
        seen.update("api" for _ in chosen.api)
    assert seen == set(KINDS)


def test_the_ci_seeds_plan_409_500_and_429_on_early_writes_and_a_second_operator_mid_run() -> None:
    plans = [plan(seed) for seed in CI_SEEDS]
    early = {f.status for p in plans for f in p.api if f.method in ("PUT", "PATCH") and f.after <= 1}
    assert {409, 500, 429} <= early
    assert any(kind == "second_operator" and at <= 15 for p in plans for at, kind, _length in p.events)
    assert any("circuit_breaker" in p.rungs for p in plans)


def test_a_ledger_path_steps_into_a_json_document_held_in_a_string() -> None:
    flags = {"data": {"flags.json": json.dumps({"flags": {"retries": {"defaultVariant": "off"}}})}}
    assert _value(flags, ["data", "flags.json", "{json}", "flags", "retries", "defaultVariant"]) == (True, "off")
    assert _value(flags, ["data", "flags.json", "{json}", "flags", "breaker"]) == (False, None)
    assert _value(flags, ["data", "missing"]) == (False, None)


def test_an_object_changed_created_or_deleted_since_the_snapshot_is_a_problem() -> None:
    ingress = ("ingresses", "shop", "web")
    before = {"objects": {ingress: {"spec": {"rules": []}, "status": {"x": 1}},
                          ("configmaps", "shop", "flags"): {"data": {"a": "1"}}}}
    same = {"objects": {ingress: {"spec": {"rules": []}, "status": {"x": 2}},
                        ("configmaps", "shop", "flags"): {"data": {"a": "1"}}}}
    assert whole_object_problems(before, same) == []
    changed = {"objects": {ingress: {"spec": {"rules": [1]}},
                           ("middlewares", "shop", "limit"): {"spec": {}}}}
    assert whole_object_problems(before, changed) == [
        "configmaps/shop/flags was deleted",
        "ingresses/shop/web spec differs from before the incident: rules was [], is [1]",
        "middlewares/shop/limit was created and is still there",
    ]


def test_the_summary_gives_the_figure_and_the_seed_that_replays_each_inconsistent_incident() -> None:
    text = summary([Outcome(1, "rungs=a", []), Outcome(7, "rungs=b; runner_killed at 2.0s", ["lock held"])])
    assert text.splitlines()[0] == "1 of 2 consistent"
    assert "CHAOS_SEED=7 make chaos" in text and "lock held" in text
