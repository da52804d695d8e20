"""Every rung's mutating tasks pass the same guard rails: the inventory's namespace allow-list and
protected workloads, never a list of their own making."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Iterator, List, Tuple

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
REDIS_TOO = ("{{ storm_namespaces | default([]) + ([storm_redis_workload.namespace] if (storm_redis_workload "
             "| default({})).namespace | default('') else []) }}")
MUTATING = {"feature_flag", "workload_scale", "ingress_rate_limit", "mesh_circuit_breaker", "hpa_pause"}


def tasks(node: Any) -> Iterator[Dict[str, Any]]:
    if isinstance(node, list):
        for item in node:
            yield from tasks(item)
    elif isinstance(node, dict):
        yield node
        for key in ("block", "rescue", "always"):
            yield from tasks(node.get(key))


def mutating_tasks() -> List[Tuple[str, str, Dict[str, Any]]]:
    found = []
    for path in sorted(REPO.glob("roles/*/tasks/*.yml")):
        role = path.parts[-3]
        for task in tasks(yaml.safe_load(path.read_text())):
            for key, options in task.items():
                if key.startswith("fintech.redis_storm.") and key.split(".")[-1] in MUTATING:
                    found.append(("%s/%s" % (role, path.name), key.split(".")[-1], options))
    return found


def test_every_mutating_module_of_the_rungs_is_found() -> None:
    assert {module for _, module, _ in mutating_tasks()} == MUTATING


@pytest.mark.parametrize("where, module, options", mutating_tasks(),
                         ids=["%s:%s" % (w, m) for w, m, _ in mutating_tasks()])
def test_each_rung_passes_the_inventory_rails(where: str, module: str, options: Dict[str, Any]) -> None:
    role = where.split("/")[0]
    assert options["allowed_namespaces"] == "{{ %s_allowed_namespaces }}" % role, where
    assert options["protected_workloads"] == "{{ %s_protected_workloads }}" % role, where
    defaults = yaml.safe_load((REPO / "roles" / role / "defaults" / "main.yml").read_text())
    allowed = defaults["%s_allowed_namespaces" % role]
    # the clients' namespaces, plus (for the rungs that change Redis' side) the namespace of Redis itself
    assert allowed in ("{{ storm_namespaces | default([]) }}", REDIS_TOO), (role, allowed)
    assert defaults["%s_protected_workloads" % role] == "{{ storm_protected_workloads | default([]) }}"


def test_flag_rungs_name_the_workload_the_flags_belong_to() -> None:
    flags = [options for _, module, options in mutating_tasks() if module == "feature_flag"]
    assert flags and all("item.workload" in str(options.get("workload")) for options in flags)
