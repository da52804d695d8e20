"""The rung registry, meta/ladder.yml, is the one list of rungs: every copy matches it, a copy that
drifts is caught, and each rung it names is a role that calls the modules it lists."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path
from types import ModuleType

import pytest
import yaml
from ansible_collections.fintech.redis_storm.plugins.module_utils import ladder, redis_config, rung_policy

from stormctl import progress
from stormctl.commands import common
from stormctl.ladder import RUNGS
from tests.e2e import ladder_support

REPO = Path(__file__).resolve().parents[2]
REGISTRY = yaml.safe_load((REPO / "meta" / "ladder.yml").read_text())["rungs"]
NAMES = [r["name"] for r in REGISTRY]


def generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("ladder_generator", REPO / "tools" / "ladder.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_generated_copy_holds_the_registry_s_rungs() -> None:
    assert generator().drifted() == [], "run make ladder"


@pytest.mark.parametrize("path", [path for path, _render in generator().COPIES])
def test_a_copy_that_drifts_is_caught(path: str) -> None:
    render = dict(generator().COPIES)[path]
    text = (REPO / path).read_text()
    drifted = text.replace("client_retries", "client_retry")
    assert drifted != text
    assert render(drifted) != drifted


def test_what_reads_the_registry_sees_its_rungs_in_order() -> None:
    assert list(RUNGS) == NAMES
    assert list(common.RUNGS) == NAMES
    assert set(NAMES) == progress.RUNG_ROLES
    assert list(rung_policy.LADDER) == NAMES == list(ladder.LADDER)
    assert ladder_support.LADDER == NAMES
    assert redis_config.KUBE_SIDE_RUNGS.startswith(
        "ingress_rate_limit, client_retries, circuit_breaker and offender_scale_down act through")


def modules_called(role: str) -> set[str]:
    """The collection's modules a role's tasks call, and those of the collection's roles it includes."""
    tasks = "".join(p.read_text() for p in (REPO / "roles" / role / "tasks").glob("*.yml"))
    called = set(re.findall(r"fintech\.redis_storm\.(\w+):", tasks))
    for included in set(re.findall(r"name: fintech\.redis_storm\.(\w+)", tasks)) - {role, "ladder"}:
        called |= modules_called(included)
    return called


@pytest.mark.parametrize("rung", REGISTRY, ids=NAMES)
def test_each_rung_is_a_role_that_calls_the_modules_it_lists(rung: dict[str, object]) -> None:
    assert set(rung) == {"name", "stage", "acts_on", "modules", "evidence", "undo"}
    assert rung["stage"] in ("mitigate", "stabilise") and rung["acts_on"] in ("workload", "redis")
    called = modules_called(str(rung["name"]))
    assert set(rung["modules"]) <= called, "roles/%s calls %s" % (rung["name"], sorted(called))  # type: ignore[arg-type]
    fenced = yaml.safe_load((REPO / "meta" / "runtime.yml").read_text())["action_groups"]["fenced"]
    assert set(rung["modules"]) <= set(fenced)  # type: ignore[arg-type]


def test_stages_keep_every_mitigation_before_stabilising() -> None:
    stages = [r["stage"] for r in REGISTRY]
    assert stages == sorted(stages, key=("mitigate", "stabilise").index)
