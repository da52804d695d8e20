"""The chaos run (``make chaos``): seeded incidents with faults, each left consistent and rolled back exactly.

``CHAOS_SEED=S`` replays one seed (``S1,S2`` several), ``CHAOS_RUNS=N`` runs N seeds drawn at random
(each printed, so any can be replayed); without either, ``make test`` runs CI_SEEDS.
"""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import List

import pytest

from tests.e2e.chaos import CI_FAULTS, CI_SEEDS, ApiProxy, Incident, plan, summary
from tests.fixtures.sandbox import Sandbox

# An incident takes well under a minute in the sandbox; the bound leaves room for a loaded machine.
SECONDS_PER_INCIDENT = 240


def chosen_seeds() -> List[int]:
    if os.environ.get("CHAOS_SEED"):
        return [int(seed) for seed in os.environ["CHAOS_SEED"].split(",")]
    if os.environ.get("CHAOS_RUNS"):
        draw = random.SystemRandom()
        return [draw.randrange(1, 10**6) for _ in range(int(os.environ["CHAOS_RUNS"]))]
    return CI_SEEDS


RUN_SEEDS = chosen_seeds()

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(SECONDS_PER_INCIDENT * len(RUN_SEEDS) + 120)]


def test_every_seeded_incident_leaves_a_consistent_ledger_a_free_lock_and_an_exact_rollback(
        sandbox: Sandbox, tmp_path: Path) -> None:
    proxy = ApiProxy(sandbox, tmp_path)
    outcomes = []
    try:
        for seed in RUN_SEEDS:
            print("seed %d: %s" % (seed, plan(seed).describe()), flush=True)
            outcome = Incident(sandbox, proxy, seed, tmp_path / str(seed)).run()
            print("seed %d: %s (faults met: %s)" % (seed, "consistent" if outcome.consistent else "NOT consistent",
                                                    ", ".join(outcome.happened) or "none"), flush=True)
            for problem in outcome.problems:
                print("    " + problem, flush=True)
            outcomes.append(outcome)
    finally:
        proxy.stop()
    report = summary(outcomes)
    print(report, flush=True)
    assert all(o.consistent for o in outcomes), report
    if RUN_SEEDS == CI_SEEDS:
        met = [kind for kind in CI_FAULTS if any(h.startswith(kind) for o in outcomes for h in o.happened)]
        assert met == list(CI_FAULTS), "the CI seeds no longer meet %s" % ", ".join(set(CI_FAULTS) - set(met))
