"""What every mutating module's integration test checks, against the Kubernetes API emulator."""

from __future__ import annotations

import json
from typing import Any, Callable, Dict, List, Optional

from tests.helpers.modules import ModuleResult, run_module

LEDGER_NAMESPACE = "redis-storm"
INCIDENT_KEY = "redis-storm.fintech.io/incident"
ENTRIES_KEY = "redis-storm.fintech.io/ledger-entries"
BOOKKEEPING = (INCIDENT_KEY, ENTRIES_KEY)


def seed_ledger_namespace(kubeapi: Any) -> None:
    kubeapi.seed([{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": LEDGER_NAMESPACE}}])


def get(kubeapi: Any, path: str) -> Optional[Dict[str, Any]]:
    """The object at an API path as the operator sees it, or None when it does not exist."""
    try:
        return dict(kubeapi.request("GET", path, token="operator"))
    except AssertionError as exc:  # the fixture raises it for any HTTP error, with the status in the text
        if "-> 404" in str(exc):
            return None
        raise


def connected(kubeapi: Any, tasks: List[Dict[str, Any]]) -> Dict[str, Any]:
    """``tasks`` in a block under the cluster connection the incident playbooks give by module_defaults."""
    kube = {"kubeconfig": str(kubeapi.kubeconfig)}
    return {"name": "connected", "block": tasks,
            "module_defaults": {"group/fintech.redis_storm.kubernetes": kube,
                                "fintech.redis_storm.redis_runtime_config": kube}}


def ledger_entries(kubeapi: Any, incident: str) -> List[Dict[str, Any]]:
    cm = get(kubeapi, "/api/v1/namespaces/%s/configmaps/redis-storm-ledger-%s" % (LEDGER_NAMESPACE, incident))
    data = (cm or {}).get("data") or {}
    entries = [json.loads(v) for k, v in data.items() if k.startswith("entry-")]
    return sorted(entries, key=lambda e: e["seq"])


def annotations(obj: Optional[Dict[str, Any]]) -> Dict[str, str]:
    return dict(((obj or {}).get("metadata") or {}).get("annotations") or {})


def without_bookkeeping(values: Dict[str, str]) -> Dict[str, str]:
    return {k: v for k, v in values.items() if k not in BOOKKEEPING}


def object_writes(kubeapi: Any, since: int, include_dry_run: bool = False) -> List[Dict[str, Any]]:
    """Successful writes after ``since`` (ledger ConfigMap writes included)."""
    return list(kubeapi.writes(since=since, include_dry_run=include_dry_run))


def run(module: str, args: Dict[str, Any], check: bool = False, diff: bool = True) -> ModuleResult:
    return run_module(module, args, check=check, diff=diff)


def check_then_apply(kubeapi: Any, module: str, args: Dict[str, Any],
                     read: Callable[[], Any]) -> ModuleResult:
    """Check mode writes nothing and predicts exactly what the real run then reports and does."""
    before = read()
    mark = kubeapi.last_seq()
    planned = run(module, args, check=True)
    assert not planned.failed, planned.msg
    assert planned["changed"] is True
    assert object_writes(kubeapi, mark) == []  # not a single real write, ledger included
    assert read() == before
    applied = run(module, args)
    assert not applied.failed, applied.msg
    assert applied["changed"] is True
    assert applied["diff"]["before"] == planned["diff"]["before"]
    assert applied["diff"]["after"] == planned["diff"]["after"]
    return applied


def assert_second_apply_is_noop(kubeapi: Any, module: str, args: Dict[str, Any]) -> None:
    mark = kubeapi.last_seq()
    again = run(module, args)
    assert not again.failed, again.msg
    assert again["changed"] is False, again
    assert object_writes(kubeapi, mark) == []


def restore_twice(kubeapi: Any, module: str, args: Dict[str, Any]) -> ModuleResult:
    """Restore (check mode first: no writes, same prediction), then restore again: a no-op."""
    restore_args = dict(args, state="restored")
    mark = kubeapi.last_seq()
    planned = run(module, restore_args, check=True)
    assert not planned.failed, planned.msg
    assert planned["changed"] is True
    assert object_writes(kubeapi, mark) == []
    restored = run(module, restore_args)
    assert not restored.failed, restored.msg
    assert restored["changed"] is True
    assert restored["diff"] == planned["diff"]
    mark = kubeapi.last_seq()
    again = run(module, restore_args)
    assert not again.failed, again.msg
    assert again["changed"] is False
    assert object_writes(kubeapi, mark) == []
    return restored
