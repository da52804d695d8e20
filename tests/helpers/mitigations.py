"""The contract every mutating Kubernetes module must keep, checked against the API emulator.

``check_contract`` runs one module through the whole life of a mitigation and asserts what an
operator relies on::

    from tests.helpers.mitigations import Target, check_contract

    deployment = Target(kubeapi, "/apis/apps/v1/namespaces/trading/deployments/api")
    check_contract(kubeapi, "workload_scale", args, deployment,
                   expected={("spec", "replicas"): 3})

1. check mode (with diff) reports ``changed`` and makes no write (no non-dry-run write in the
   emulator's audit log since the run started);
2. the real run reports the same ``changed`` and ``diff``, and records a ledger entry;
3. the object differs from before in exactly the owned fields (``expected``) plus the
   bookkeeping annotations;
4. a second apply reports ``changed: false`` and writes nothing;
5. ``state: restored`` (check mode first: no write) brings the object back to its original
   (owned fields and annotations included), and a second restore is ``changed: false`` with no write.

``Target`` reads an object through the admin identity; ``strip`` drops what the server owns.
"""

from __future__ import annotations

import copy
from typing import Any, Dict, Optional, Sequence, Tuple

from ansible_collections.fintech.redis_storm.plugins.module_utils.field_paths import get_path
from ansible_collections.fintech.redis_storm.plugins.module_utils.targets import ENTRIES_KEY, INCIDENT_KEY

from tests.helpers.modules import ModuleResult, run_module

SERVER_OWNED = ("resourceVersion", "generation", "managedFields", "uid", "creationTimestamp")


class Target:
    """One object in the emulator, read with the admin token."""

    def __init__(self, kubeapi: Any, path: str) -> None:
        self.kubeapi = kubeapi
        self.path = path

    def read(self) -> Dict[str, Any]:
        return dict(self.kubeapi.request("GET", self.path))

    def value(self, path: Sequence[str]) -> Any:
        return get_path(self.read(), path)[1]


def strip(obj: Dict[str, Any], owned: Sequence[Tuple[str, ...]] = (), bookkeeping: bool = True) -> Dict[str, Any]:
    """The object without server-owned metadata, status, the owned fields and (optionally) our annotations."""
    obj = copy.deepcopy(obj)
    obj.pop("status", None)
    metadata = obj.get("metadata") or {}
    for key in SERVER_OWNED:
        metadata.pop(key, None)
    annotations = metadata.get("annotations") or {}
    if bookkeeping:
        annotations.pop(INCIDENT_KEY, None)
        annotations.pop(ENTRIES_KEY, None)
    for path in owned:
        node = obj
        for key in path[:-1]:
            node = node.get(key) or {}
        if isinstance(node, dict):
            node.pop(path[-1], None)
    if not annotations:
        metadata.pop("annotations", None)
    _prune(obj)
    return obj


def _prune(node: Any) -> None:
    """Drop dicts left empty by ``strip`` so "absent" and "empty" compare equal."""
    if isinstance(node, dict):
        for key in list(node):
            _prune(node[key])
            if node[key] == {}:
                del node[key]


def no_writes_since(kubeapi: Any, mark: int) -> None:
    writes = kubeapi.writes(since=mark)
    assert writes == [], "expected no write, the audit log shows: %s" % writes


def check_contract(kubeapi: Any, module: str, args: Dict[str, Any], target: Target,
                   expected: Dict[Tuple[str, ...], Any], extra_targets: Sequence[Target] = ()) -> ModuleResult:
    """Run the whole apply/restore life of one mitigation; returns the real apply's result."""
    original = target.read()
    others = [t.read() for t in extra_targets]

    mark = kubeapi.last_seq()
    predicted = run_module(module, args, check=True, diff=True)
    assert not predicted.failed, predicted.msg
    assert predicted["changed"] is True
    no_writes_since(kubeapi, mark)

    applied = run_module(module, args, diff=True)
    assert not applied.failed, applied.msg
    assert applied["changed"] is True
    assert applied["diff"] == predicted["diff"], (applied["diff"], predicted["diff"])
    assert applied["ledger"]["entry_id"], applied["ledger"]

    changed = target.read()
    for path, value in expected.items():
        assert get_path(changed, path) == (True, value), (path, get_path(changed, path))
    assert strip(changed, list(expected)) == strip(original, list(expected)), "fields outside the owned ones changed"
    annotations = changed["metadata"].get("annotations") or {}
    assert annotations.get(INCIDENT_KEY) == args["incident_id"]
    assert applied["ledger"]["entry_id"] in annotations.get(ENTRIES_KEY, "").split(",")

    mark = kubeapi.last_seq()
    again = run_module(module, args, diff=True)
    assert not again.failed, again.msg
    assert again["changed"] is False
    no_writes_since(kubeapi, mark)

    restore_args = dict(args, state="restored")
    mark = kubeapi.last_seq()
    predicted = run_module(module, restore_args, check=True, diff=True)
    assert not predicted.failed and predicted["changed"] is True, predicted.msg
    no_writes_since(kubeapi, mark)
    restored = run_module(module, restore_args, diff=True)
    assert not restored.failed and restored["changed"] is True, restored.msg
    assert restored["diff"] == predicted["diff"]
    assert strip(target.read(), bookkeeping=False) == strip(original, bookkeeping=False)
    for other, before in zip(extra_targets, others):
        assert strip(other.read(), bookkeeping=False) == strip(before, bookkeeping=False)

    mark = kubeapi.last_seq()
    twice = run_module(module, restore_args, diff=True)
    assert not twice.failed and twice["changed"] is False, twice.msg
    no_writes_since(kubeapi, mark)
    return applied


def ledger_entries(kubeapi: Any, incident_id: str, namespace: str = "redis-storm") -> list:
    """The incident's ledger entries as stored in the cluster, oldest first."""
    import json

    cm = kubeapi.request("GET", "/api/v1/namespaces/%s/configmaps/redis-storm-ledger-%s" % (namespace, incident_id))
    entries = [json.loads(v) for k, v in (cm.get("data") or {}).items() if k.startswith("entry-")]
    return sorted(entries, key=lambda e: e["seq"])


def incident_for(request: Any) -> str:
    """A valid incident id unique to the running test, so tests can share one emulator."""
    import hashlib

    return "t-" + hashlib.sha1(request.node.nodeid.encode()).hexdigest()[:12]


def kube_args(kubeapi: Any, identity: Optional[str] = None, tmp_path: Any = None) -> Dict[str, Any]:
    """Connection options for a module: the operator kubeconfig, or a kubeconfig of another identity."""
    if identity is None:
        return {"kubeconfig": str(kubeapi.kubeconfig)}
    path = (tmp_path or kubeapi.state_dir) / ("kubeconfig-" + identity)
    kubeapi.write_kubeconfig(path, identity)
    return {"kubeconfig": str(path)}
