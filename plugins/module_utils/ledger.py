# -*- coding: utf-8 -*-
# Copyright: fintech SRE
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The undo ledger: what every mitigation replaced, kept in the cluster.

One ConfigMap per incident, ``redis-storm-ledger-<incident_id>`` in the ledger namespace
(default ``redis-storm``). Its ``data`` holds one JSON document per entry
(``entry-0003.json``) and ``rungs.json`` (the ladder's attempt and cooldown records).

An entry::

    {"id": "entry-0003", "seq": 3, "module": "workload_scale", "rung": "offender_scale_down",
     "target": {"type": "k8s", "apiVersion": "apps/v1", "kind": "Deployment",
                "resource": "deployments", "namespace": "payments", "name": "api",
                "subresource": "scale"}
            | {"type": "redis", "endpoint": "10.0.0.5:6379"},
     "action": "patch" | "create",
     "fields": [{"path": ["spec", "replicas"], "present_before": true, "before": 6,
                 "present_after": true, "after": 3}],
     "state": "pending" | "applied" | "restored" | "failed" | "missing",
     "deferred": "why rollback kept it open (a pending entry it will finish later)",
     "by": "storm-operator@host", "recorded_at": "...", "applied_at": "...", "restored_at": "..."}

Write order keeps a half-way failure truthful: ``record()`` writes the entry as ``pending``
before the object is changed, ``set_state(id, "applied")`` after. A failed write is marked
``failed`` (nothing changed); a ``pending`` entry found later is judged by the object's live
value (``restore`` does that). Each changed Kubernetes object also carries the bookkeeping
annotations ``redis-storm.fintech.io/incident`` and ``redis-storm.fintech.io/ledger-entries``
(the ids of its open entries) where the credential may write them (a workload scaled through its
``scale`` subresource alone is not annotated); they are removed when its last open entry is restored.

Field paths are lists of dict keys; the value at a path is owned whole (a dict value is
restored exactly, keys we added are removed). A field that was absent names in ``created`` the
outermost map its write created (``["spec", "trafficPolicy", "outlierDetection"]``): restore removes
that map rather than leave it empty, unless something else is in it by then. A path through a
JSON document held in a string has ``{json}`` where the string ends (``json_fields``): only the
changed leaves are stored. A
scale-up rollback takes in steps lists them in the field's ``stepped`` before writing each, so
they are not drift. Only what ``owned`` lists is recorded or restored; an entry is at most
``ENTRY_LIMIT`` bytes and new entries stop at ``LEDGER_BUDGET``. For Redis targets a field path is the one
directive name (``["maxclients"]``) and values are the strings ``CONFIG GET`` returns.
"""

from __future__ import annotations

import copy
import getpass
import json
import os
import re
import socket
import time
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, TypeVar

from ansible_collections.fintech.redis_storm.plugins.module_utils import json_fields, owned
from ansible_collections.fintech.redis_storm.plugins.module_utils.errors import StormError
from ansible_collections.fintech.redis_storm.plugins.module_utils.guards import Guards
from ansible_collections.fintech.redis_storm.plugins.module_utils.k8s_client import Kube, KubeApiError, path_for
from ansible_collections.fintech.redis_storm.plugins.module_utils.retry import CONFLICT_ATTEMPTS, back_off

DEFAULT_LEDGER_NAMESPACE = "redis-storm"
MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
MANAGED_BY = "fintech.redis_storm"
INCIDENT_KEY = "redis-storm.fintech.io/incident"
ENTRIES_KEY = "redis-storm.fintech.io/ledger-entries"
RUNGS_KEY = "rungs.json"
OPEN_STATES = ("pending", "applied")
CONFLICT_RETRIES = CONFLICT_ATTEMPTS
# The API server refuses a ConfigMap whose data is over 1 MiB; a new entry must leave room for the
# state changes and rung records still to come, so every open entry can always be closed.
CONFIGMAP_LIMIT = 1024 * 1024
LEDGER_BUDGET = CONFIGMAP_LIMIT - 64 * 1024
ENTRY_LIMIT = 32 * 1024
MERGE_PATCH = "application/merge-patch+json"

FieldPath = Tuple[str, ...]
# (present, value) of fields as a check-mode restore of newer entries would have left them
Overlay = Dict[FieldPath, Tuple[bool, Any]]
T = TypeVar("T")

_INCIDENT_ID = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")


class _Absent:
    """The value of a field that is not there (``ABSENT`` as a desired value removes the key)."""

    def __repr__(self) -> str:
        return "ABSENT"


ABSENT: Any = _Absent()


def utc_now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def check_incident_id(incident_id: str) -> str:
    """The id itself, or a StormError: it becomes part of object names, so DNS-1123 rules apply."""
    if not incident_id or len(incident_id) > 40 or not _INCIDENT_ID.match(incident_id):
        raise StormError(
            "incident_id %r is not usable in Kubernetes object names: use 1-40 lowercase letters, digits, "
            "'-' or '.', starting and ending with a letter or digit (e.g. storm-20261126-0545)" % incident_id
        )
    return incident_id


def configmap_name(incident_id: str) -> str:
    return "redis-storm-ledger-" + check_incident_id(incident_id)


def os_user() -> str:
    """The OS user; containers (AWX execution environments) may run a uid with no passwd entry."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "uid-%d" % os.getuid() if hasattr(os, "getuid") else "unknown"


def default_actor(kube: Optional[Kube] = None) -> str:
    """``<user>@<hostname>``: the Kubernetes user when the kubeconfig names one, else the OS user."""
    user = (kube.identity if kube is not None else "") or os_user()
    return "%s@%s" % (user, socket.gethostname())


# --- field paths ---------------------------------------------------------------------------

def get_path(obj: Any, path: Sequence[str]) -> Tuple[bool, Any]:
    """(present, value) of a path in a nested dict (through a JSON document string, see json_fields)."""
    parts = json_fields.split(path)
    if parts is not None:
        present, text = get_path(obj, parts[0])
        doc = json_fields.document(text) if present else None
        return (False, None) if doc is None else get_path(doc, parts[1])
    node = obj
    for key in path:
        if not isinstance(node, dict) or key not in node:
            return False, None
        node = node[key]
    return True, node


def set_path(obj: Dict[str, Any], path: Sequence[str], value: Any) -> Dict[str, Any]:
    parts = json_fields.split(path)
    if parts is not None:
        text = get_path(obj, parts[0])[1]
        doc = json_fields.document(text) or {}
        return set_path(obj, parts[0], json_fields.dump(set_path(doc, parts[1], value), text))
    node = obj
    for key in path[:-1]:
        node = node.setdefault(key, {})
    node[path[-1]] = value
    return obj


def remove_path(obj: Dict[str, Any], path: Sequence[str]) -> Dict[str, Any]:
    parts = json_fields.split(path)
    if parts is not None:
        present, text = get_path(obj, parts[0])
        doc = json_fields.document(text) if present else None
        if doc is not None:
            set_path(obj, parts[0], json_fields.dump(remove_path(doc, parts[1]), text))
        return obj
    parent_present, parent = get_path(obj, path[:-1])
    if parent_present and isinstance(parent, dict):
        parent.pop(path[-1], None)
    return obj


def put_path(obj: Dict[str, Any], path: Sequence[str], present: bool, value: Any) -> Dict[str, Any]:
    """Set the path (present) or remove it (absent)."""
    return set_path(obj, path, value) if present else remove_path(obj, path)


def with_overlay(obj: Dict[str, Any], overlay: Optional[Overlay]) -> Dict[str, Any]:
    """A deep copy of ``obj`` with the overlay's fields set (present) or removed (absent)."""
    if not overlay:
        return obj
    out = copy.deepcopy(obj)
    for path, (present, value) in overlay.items():
        put_path(out, path, present, value)
    return out


def overlay_of(outcome: Dict[str, Any]) -> Overlay:
    """What a (dry-run) restore outcome put back, as an overlay for judging the older entries."""
    if outcome.get("outcome") != "restored":
        return {}
    return {tuple(f["path"]): (f["restored"] is not None, f["restored"]) for f in outcome.get("fields") or []}


def nest(values: Dict[FieldPath, Any]) -> Dict[str, Any]:
    """{("a","b"): 1} -> {"a": {"b": 1}}, leaving out ABSENT values (for diffs and results)."""
    out: Dict[str, Any] = {}
    for path, value in values.items():
        if value is not ABSENT:
            set_path(out, path, value)
    return out


def merge_diff(live: Any, wanted: Any) -> Any:
    """The merge-patch value that turns ``live`` into exactly ``wanted`` (None deletes)."""
    if wanted is ABSENT:
        return None
    if isinstance(live, dict) and isinstance(wanted, dict):
        patch: Dict[str, Any] = {key: None for key in live if key not in wanted}
        for key, value in wanted.items():
            if key not in live or live[key] != value:
                patch[key] = merge_diff(live.get(key), value)
        return patch
    return wanted


def same(present: bool, value: Any, want_present: bool, want: Any) -> bool:
    return present == want_present and (not present or value == want)


def field_label(path: Sequence[str]) -> str:
    return ".".join(path)


# --- targets --------------------------------------------------------------------------------

class ObjectRef:
    """One Kubernetes object (optionally its subresource, e.g. ``scale``) a mitigation changes."""

    def __init__(self, api_version: str, kind: str, resource: str, namespace: str, name: str,
                 subresource: Optional[str] = None) -> None:
        self.api_version = api_version
        self.kind = kind
        self.resource = resource
        self.namespace = namespace
        self.name = name
        self.subresource = subresource

    @property
    def path(self) -> str:
        """API path of what is read and written (the subresource when there is one)."""
        return path_for(self.api_version, self.resource, self.namespace, self.name, self.subresource)

    @property
    def object_path(self) -> str:
        """API path of the object itself (where the bookkeeping annotations go)."""
        return path_for(self.api_version, self.resource, self.namespace, self.name)

    @property
    def collection_path(self) -> str:
        return path_for(self.api_version, self.resource, self.namespace)

    @property
    def label(self) -> str:
        """'Deployment payments/api' (plus '/scale') for messages and diff headers."""
        suffix = "/" + self.subresource if self.subresource else ""
        return "%s %s/%s%s" % (self.kind, self.namespace, self.name, suffix)

    def to_target(self) -> Dict[str, Any]:
        target = {"type": "k8s", "apiVersion": self.api_version, "kind": self.kind, "resource": self.resource,
                  "namespace": self.namespace, "name": self.name}
        if self.subresource:
            target["subresource"] = self.subresource
        return target

    @classmethod
    def from_target(cls, target: Dict[str, Any]) -> ObjectRef:
        return cls(target["apiVersion"], target["kind"], target["resource"], target.get("namespace") or "",
                   target["name"], target.get("subresource"))


def redis_target(endpoint: str, identity: Optional[Dict[str, str]] = None) -> Dict[str, Any]:
    """The ledger target of a Redis server: its address as given (for messages) and its own identity
    (``redis_server.identity``: run_id, replid), by which rollback recognises it."""
    return dict({"type": "redis", "endpoint": endpoint}, **(identity or {}))


def target_label(target: Dict[str, Any]) -> str:
    if target.get("type") == "redis":
        return "Redis %s" % target.get("endpoint")
    return ObjectRef.from_target(target).label


_TARGET_KEYS = ("type", "apiVersion", "resource", "namespace", "name", "subresource", "endpoint")


def target_key(target: Dict[str, Any]) -> Tuple[Any, ...]:
    """What identifies a target (for grouping entries by the object or server they changed)."""
    if target.get("type") == "redis" and target.get("run_id"):
        return ("redis", target["run_id"])
    return tuple(target.get(k) for k in _TARGET_KEYS)


def _same_target(a: Dict[str, Any], b: Dict[str, Any]) -> bool:
    if a.get("type") == "redis" and b.get("type") == "redis" and not (a.get("run_id") and b.get("run_id")):
        return a.get("endpoint") == b.get("endpoint")  # an entry recorded before servers were identified
    return target_key(a) == target_key(b)


def make_field(path: Sequence[str], present_before: bool, before: Any, after: Any,
               live: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """One ledger field; ``after`` may be ABSENT (the mitigation removes the key). Given the ``live`` object,
    a field that was absent records in ``created`` the outermost map its write creates (restore removes
    that map again once nothing is left in it)."""
    field = {"path": list(path), "present_before": present_before, "before": before if present_before else None,
             "present_after": after is not ABSENT, "after": None if after is ABSENT else after}
    made = created_map(live, path) if live is not None and not present_before else None
    if made:
        field["created"] = list(made)
    return field


def created_map(live: Dict[str, Any], path: Sequence[str]) -> Optional[FieldPath]:
    """The outermost map above ``path`` that ``live`` lacks (writing the path creates it), or None."""
    if json_fields.split(path) is not None:
        return None  # inside a JSON document only existing leaves are changed
    node: Any = live
    for depth, key in enumerate(path[:-1]):
        if not isinstance(node, dict) or key not in node:
            return tuple(path[:depth + 1])
        node = node[key]
    return None


def holds_nothing(value: Any) -> bool:
    """A map with no value anywhere in it (``{}``, ``{"tcp": {}}``)."""
    return isinstance(value, dict) and all(holds_nothing(v) for v in value.values())


def merge_patched(obj: Dict[str, Any], patch: Dict[str, Any]) -> Dict[str, Any]:
    """``obj`` as the API server leaves it after the JSON merge patch (RFC 7386), as a new object."""
    out = copy.deepcopy(obj)
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        elif isinstance(value, dict):
            out[key] = merge_patched(out[key] if isinstance(out.get(key), dict) else {}, value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def drop_emptied_maps(live: Dict[str, Any], patch: Dict[str, Any], created: Sequence[Sequence[str]]) -> None:
    """Make ``patch`` remove, rather than empty, the maps the restored fields created (``created``) and the
    annotations it leaves with nothing in them: the object is then exactly as it was before."""
    after = merge_patched(live, patch)
    annotations = ("metadata", "annotations")
    emptied_annotations = not holds_nothing(get_path(live, annotations)[1])
    for where in [*created, *([annotations] if emptied_annotations else [])]:
        present, value = get_path(after, where)
        if present and holds_nothing(value):
            set_path(patch, where, None)


# --- annotations ----------------------------------------------------------------------------

def bookkeeping_patch(live: Optional[Dict[str, Any]], incident_id: str, add: Optional[str] = None,
                      remove: Optional[str] = None) -> Dict[str, Any]:
    """The ``metadata.annotations`` merge patch that adds or removes one entry id (``{}`` if none needed)."""
    annotations = ((live or {}).get("metadata") or {}).get("annotations") or {}
    ids = [i for i in (annotations.get(ENTRIES_KEY) or "").split(",") if i]
    if annotations.get(INCIDENT_KEY) not in (None, incident_id):
        if not add:
            return {}  # another incident's bookkeeping is not ours to remove
        ids = []  # a newer incident changes the object: the annotations name it from now on
    if add and add not in ids:
        ids.append(add)
    if remove in ids:
        ids.remove(remove)
    if ids:
        wanted: Dict[str, Any] = {INCIDENT_KEY: incident_id, ENTRIES_KEY: ",".join(ids)}
    else:
        wanted = {INCIDENT_KEY: None, ENTRIES_KEY: None}
    patch = {k: v for k, v in wanted.items() if annotations.get(k) != v}
    return {"metadata": {"annotations": patch}} if patch else {}


def deep_merge(base: Dict[str, Any], extra: Dict[str, Any]) -> Dict[str, Any]:
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            deep_merge(base[key], value)
        else:
            base[key] = value
    return base


# --- the ledger -----------------------------------------------------------------------------

class Ledger:
    """The ledger ConfigMap of one incident. Every write is a read-modify-write with a
    resourceVersion precondition, retried on 409 after a jittered backoff (``CONFLICT_RETRIES`` attempts)."""

    def __init__(self, kube: Kube, incident_id: str, namespace: Optional[str] = None,
                 actor: Optional[str] = None) -> None:
        self.kube = kube
        self.incident_id = check_incident_id(incident_id)
        self.namespace = namespace or DEFAULT_LEDGER_NAMESPACE
        self.name = configmap_name(incident_id)
        self.path = path_for("v1", "configmaps", self.namespace, self.name)
        self.by = actor or default_actor(kube)

    def ref(self, entry_id: Optional[str] = None) -> Dict[str, Any]:
        """The ``ledger`` return value of a module: ``{configmap, namespace, entry_id}``."""
        return {"configmap": self.name, "namespace": self.namespace, "entry_id": entry_id}

    # reading

    def read(self) -> Optional[Dict[str, Any]]:
        """The ConfigMap, or None when the incident has no ledger yet."""
        return self.kube.find(self.path)

    def entries(self) -> List[Dict[str, Any]]:
        """Every entry, oldest first."""
        return _entries(self.read())

    def open_entries(self, target: Optional[Dict[str, Any]] = None) -> List[Dict[str, Any]]:
        """Entries still ``pending`` or ``applied`` (for one target when given), newest first."""
        found = [e for e in self.entries() if e.get("state") in OPEN_STATES]
        if target is not None:
            found = [e for e in found if _same_target(e.get("target") or {}, target)]
        return sorted(found, key=lambda e: int(e.get("seq", 0)), reverse=True)

    def rungs(self) -> Dict[str, Any]:
        """``rungs.json``: ``{"<rung>@<target>": {attempts, last_started_at, last_finished_at, outcome}}``."""
        cm = self.read()
        rungs: Dict[str, Any] = _load_json(((cm or {}).get("data") or {}).get(RUNGS_KEY), {})
        return rungs

    # writing

    def record(self, module: str, target: Dict[str, Any], fields: List[Dict[str, Any]], action: str = "patch",
               rung: Optional[str] = None) -> Dict[str, Any]:
        """Write a new ``pending`` entry (before the change is made) and return it.

        Only what the mitigations own is recorded (``owned``), only the changed leaves of a JSON
        document, and only within ``ENTRY_LIMIT`` and ``LEDGER_BUDGET``: otherwise a StormError
        before anything is written, so the mitigation does not write either."""
        fields = narrow_fields(fields)
        owned.check({"module": module, "target": target, "action": action, "fields": fields})
        size = len(json.dumps(fields, sort_keys=True))
        if size > ENTRY_LIMIT:
            raise StormError(
                "the undo record of %s on %s would be %d bytes, more than the %d a ledger entry may hold: nothing "
                "was changed. Change fewer or smaller values in one step" % (
                    module, target_label(target), size, ENTRY_LIMIT), entry_bytes=size)

        def add(data: Dict[str, str]) -> Dict[str, Any]:
            seq = 1 + max([int(e.get("seq", 0)) for e in _entries({"data": data})] or [0])
            entry_id = "entry-%04d" % seq
            entry: Dict[str, Any] = {"id": entry_id, "seq": seq, "module": module, "rung": rung, "target": target,
                                     "action": action, "fields": fields, "state": "pending", "by": self.by,
                                     "recorded_at": utc_now(), "applied_at": None, "restored_at": None}
            data[entry_id + ".json"] = json.dumps(entry, sort_keys=True)
            return entry

        return self.update(add, limit=LEDGER_BUDGET)

    def set_state(self, entry_id: str, state: str, **extra: Any) -> Dict[str, Any]:
        """Move an entry to ``applied``, ``restored``, ``failed`` or ``missing`` (stamping the time)."""

        def change(data: Dict[str, str]) -> Dict[str, Any]:
            key = entry_id + ".json"
            if key not in data:
                raise StormError("ledger %s/%s has no entry %s" % (self.namespace, self.name, entry_id))
            entry = json.loads(data[key])
            entry["state"] = state
            if state in ("applied", "restored"):
                entry[state + "_at"] = utc_now()
            entry.update(extra)
            if "fields" in extra:
                entry["fields"] = narrow_fields(extra["fields"])
            data[key] = json.dumps(entry, sort_keys=True)
            return dict(entry)

        return self.update(change)

    def update_rungs(self, change: Callable[[Dict[str, Any]], T]) -> T:
        """Read-modify-write of ``rungs.json``: ``change`` edits the dict in place and returns a result."""

        def edit(data: Dict[str, str]) -> T:
            rungs = _load_json(data.get(RUNGS_KEY), {})
            result = change(rungs)
            data[RUNGS_KEY] = json.dumps(rungs, sort_keys=True)
            return result

        return self.update(edit)

    def update(self, change: Callable[[Dict[str, str]], T], limit: int = CONFIGMAP_LIMIT) -> T:
        """Apply ``change`` to the ConfigMap's data (creating the ConfigMap first if needed); a StormError,
        before writing, when the data would be over ``limit`` bytes."""
        for attempt in range(CONFLICT_RETRIES):
            if attempt:
                back_off(attempt - 1)
            cm = self.read()
            data: Dict[str, str] = dict((cm or {}).get("data") or {})
            result = change(data)
            size = data_bytes(data)
            if size > limit:
                raise StormError(
                    "the undo ledger %s/%s would grow to %d bytes, over the %d it may hold (the API server refuses a "
                    "ConfigMap over %d): nothing was written. Roll back this incident's entries (or start a new "
                    "incident_id) before mitigating further"
                    % (self.namespace, self.name, size, limit, CONFIGMAP_LIMIT), ledger_bytes=size)
            try:
                if cm is None:
                    self.kube.request("POST", path_for("v1", "configmaps", self.namespace), body=self._new(data))
                else:
                    cm["data"] = data
                    self.kube.request("PUT", self.path, body=cm)
                return result
            except KubeApiError as exc:
                if exc.status == 409:
                    continue
                if exc.status == 404 and cm is None:
                    raise StormError(
                        "cannot create the ledger ConfigMap %s: namespace %s does not exist; create it "
                        "(kubectl create namespace %s) or set ledger_namespace" % (self.name, self.namespace,
                                                                                   self.namespace)) from exc
                raise StormError("cannot write the undo ledger %s/%s: %s" % (
                    self.namespace, self.name, exc.message), status=exc.status) from exc
        raise StormError("the undo ledger %s/%s kept changing under us (%d conflicts): retry" % (
            self.namespace, self.name, CONFLICT_RETRIES))

    def _new(self, data: Dict[str, str]) -> Dict[str, Any]:
        return {"apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": self.name, "namespace": self.namespace,
                             "labels": {MANAGED_BY_LABEL: MANAGED_BY, INCIDENT_KEY: self.incident_id}},
                "data": data}

    # restoring

    def restore(self, entry: Dict[str, Any], force: bool = False, dry_run: bool = False,
                redis: Any = None, overlay: Optional[Overlay] = None, guards: Optional[Guards] = None
                ) -> Dict[str, Any]:
        """Put back what ``entry`` replaced and close it; returns its outcome.

        Outcome: ``{entry_id, module, target, outcome, changed, msg, fields, drift}`` where
        ``outcome`` is ``restored`` (put back, or already back), ``noop`` (entry was closed),
        ``unapplied`` (a pending entry whose write never reached the object), ``drifted``
        (someone changed an owned field after us: nothing written; ``drift`` lists
        ``{field, set, found}``), ``missing`` (the object is gone), ``skipped`` (a Redis entry
        and no ``redis`` client given) or ``failed`` (the write failed; ``msg`` says why).
        ``fields`` lists ``{path, live, restored}`` of each field put back. A live value equal
        to ``before`` is not drift: there is nothing to put back. ``force`` restores over drift.
        ``dry_run`` validates with ``dryRun=All`` and writes nothing (not even the ledger).
        ``redis`` is a redis-py client for entries whose target is Redis. ``overlay``
        (``{path: (present, value)}``) is laid over the live values before judging: a dry run passes
        what the newer entries of the same target would have put back (``overlay_of``), since
        nothing was written. An entry outside what the mitigations write (``owned``) or outside the
        ``guards`` (namespace allow-list, protected workloads) is ``refused``: nothing is written.
        """
        for attempt in range(CONFLICT_RETRIES):
            if attempt:
                back_off(attempt - 1)
            outcome: Dict[str, Any] = {"entry_id": entry["id"], "module": entry.get("module"),
                                       "target": target_label(entry.get("target") or {}), "changed": False,
                                       "fields": [], "drift": []}
            if entry.get("state") not in OPEN_STATES:
                return dict(outcome, outcome="noop", msg="%s is already %s" % (entry["id"], entry.get("state")))
            try:
                owned.check_restorable(entry, guards)
            except StormError as exc:
                return dict(outcome, outcome="refused", msg=exc.message)
            try:
                if (entry.get("target") or {}).get("type") == "redis":
                    return self._restore_redis(entry, outcome, force, dry_run, redis, overlay)
                return self._restore_k8s(entry, outcome, force, dry_run, overlay)
            except StormError as exc:
                if exc.details.get("status") == 409 and attempt < CONFLICT_RETRIES - 1:
                    continue  # the object changed between our read and write: judge it again
                return dict(outcome, outcome="failed", changed=False, msg="%s: %s" % (entry["id"], exc.message))
        raise StormError("unreachable")  # pragma: no cover

    def _judge(self, entry: Dict[str, Any], live: Any, outcome: Dict[str, Any], force: bool,
               read: Callable[[Any, Sequence[str]], Tuple[bool, Any]],
               expected: Optional[Callable[[Dict[str, Any], bool, Any], bool]] = None
               ) -> Optional[List[Dict[str, Any]]]:
        """The fields to put back, or None when the outcome is already decided (unapplied/drifted).

        ``expected(field, present, value)`` says whether a changed live value is a known, expected
        mover's doing rather than drift."""
        at_before, to_put_back = [], []
        for field in entry.get("fields") or []:
            present, value = read(live, field["path"])
            is_before = same(present, value, field["present_before"], field["before"])
            is_after = same(present, value, field.get("present_after", True), field["after"]) or (
                present and value in (field.get("stepped") or []))
            at_before.append(is_before)
            if is_before:
                continue
            if not is_after and not (expected is not None and expected(field, present, value)):
                outcome["drift"].append({"field": field_label(field["path"]), "set": field["after"],
                                         "found": value if present else None, "found_present": present})
            to_put_back.append(dict(field, live=value, live_present=present))
        # a deferred entry was applied and is kept open on purpose: back at its original means restored
        if entry.get("state") == "pending" and not entry.get("deferred") and all(at_before) and not outcome["drift"]:
            outcome.update(outcome="unapplied", msg="%s was recorded but its write never reached %s" % (
                entry["id"], outcome["target"]))
            return None
        if outcome["drift"] and not force:
            outcome.update(outcome="drifted", msg=drift_message(entry, outcome))
            return None
        return to_put_back

    def _close(self, entry: Dict[str, Any], outcome: Dict[str, Any], state: str, dry_run: bool) -> Dict[str, Any]:
        if not dry_run:
            self.set_state(entry["id"], state)
        return outcome

    def _restore_k8s(self, entry: Dict[str, Any], outcome: Dict[str, Any], force: bool,
                     dry_run: bool, overlay: Optional[Overlay] = None) -> Dict[str, Any]:
        ref = ObjectRef.from_target(entry["target"])
        live = self.kube.find(ref.path)
        if live is None and entry.get("action") == "create":
            outcome.update(outcome="restored", msg="%s: %s, which the mitigation created, is already gone" % (
                entry["id"], ref.label))
            return self._close(entry, outcome, "restored", dry_run)
        if live is None:
            outcome.update(outcome="missing", msg="%s: %s no longer exists; nothing to put back" % (
                entry["id"], ref.label))
            return self._close(entry, outcome, "missing", dry_run)
        live = with_overlay(live, overlay)
        autoscaler: List[Optional[str]] = []  # looked up once, and only for replicas below what we set

        def scaled_down_by_autoscaler(field: Dict[str, Any], present: bool, value: Any) -> bool:
            # our pause stops scale-up only: the autoscaler may still scale down as the load falls
            if not (ref.subresource == "scale" and list(field["path"]) == ["spec", "replicas"] and present
                    and isinstance(value, int) and isinstance(field["after"], int) and value < field["after"]):
                return False
            if not autoscaler:
                autoscaler.append(self._paused_autoscaler(ref))
            return autoscaler[0] is not None

        to_put_back = self._judge(entry, live, outcome, force, get_path, scaled_down_by_autoscaler)
        if to_put_back is None:
            if outcome["outcome"] == "unapplied":
                return self._close(entry, outcome, "failed", dry_run)
            return outcome
        query = {"dryRun": "All"} if dry_run else None
        outcome["fields"] = [{"path": f["path"], "live": f["live"] if f["live_present"] else None,
                              "restored": f["before"] if f["present_before"] else None} for f in to_put_back]
        if entry.get("action") == "create":
            self._write(lambda: self.kube.request("DELETE", ref.object_path, query=query), ref, "delete",
                        gone_is_done=True)
            outcome.update(outcome="restored", changed=True, msg="%s: deleted %s, which the mitigation created" % (
                entry["id"], ref.label))
            return self._close(entry, outcome, "restored", dry_run)
        patch: Dict[str, Any] = {}
        version = (live.get("metadata") or {}).get("resourceVersion")
        if version:  # precondition: a change after our drift check makes the write fail with 409
            patch["metadata"] = {"resourceVersion": version}
        staged = copy.deepcopy(live)  # JSON documents in strings are rewritten whole, with every leaf put back
        for field in to_put_back:
            parts = json_fields.split(field["path"])
            if parts is not None:
                put_path(staged, field["path"], field["present_before"], field["before"])
                set_path(patch, parts[0], get_path(staged, parts[0])[1])
                continue
            wanted = field["before"] if field["present_before"] else ABSENT
            set_path(patch, field["path"], merge_diff(field["live"] if field["live_present"] else None, wanted))
        if to_put_back:
            if not ref.subresource:
                deep_merge(patch, bookkeeping_patch(live, self.incident_id, remove=entry["id"]))
            drop_emptied_maps(live, patch, [f["created"] for f in to_put_back
                                            if not f["present_before"] and f.get("created")])
            self._write(lambda: self._patch(ref.path, patch, query), ref, "patch")
            if ref.subresource and not dry_run:
                self._unmark(ref, entry["id"])
        elif not dry_run:
            self._unmark(ref, entry["id"])
        if to_put_back:
            msg = "%s: put back %s of %s" % (entry["id"], ", ".join(field_label(f["path"]) for f in to_put_back),
                                             ref.label)
            moved = [f for f in to_put_back if scaled_down_by_autoscaler(f, f["live_present"], f["live"])]
            if moved:
                msg += " (%s, paused for scale-up only, had scaled it down from %s to %s)" % (
                    autoscaler[0], moved[0]["after"], moved[0]["live"])
        else:
            msg = "%s: %s already has the recorded values" % (entry["id"], ref.label)
        outcome.update(outcome="restored", changed=bool(to_put_back), msg=msg)
        return self._close(entry, outcome, "restored", dry_run)

    def _paused_autoscaler(self, workload: ObjectRef) -> Optional[str]:
        """The HPA this incident paused that scales ``workload``, by label (None when there is none)."""
        for entry in self.entries():
            target = entry.get("target") or {}
            if (entry.get("module") != "hpa_pause" or entry.get("state") == "failed"
                    or target.get("kind") != "HorizontalPodAutoscaler"
                    or target.get("namespace") != workload.namespace):
                continue
            hpa = ObjectRef.from_target(target)
            scales = ((self.kube.find(hpa.path) or {}).get("spec") or {}).get("scaleTargetRef") or {}
            if scales.get("kind") == workload.kind and scales.get("name") == workload.name:
                return hpa.label
        return None

    def _patch(self, path: str, patch: Dict[str, Any], query: Optional[Dict[str, Any]]) -> Dict[str, Any]:
        return self.kube.request("PATCH", path, body=patch, query=query, content_type=MERGE_PATCH)

    def _unmark(self, ref: ObjectRef, entry_id: str) -> None:
        """Drop the entry id from the object's bookkeeping annotations (best effort: they are not owned)."""
        try:
            live = self.kube.find(ref.object_path)
            patch = bookkeeping_patch(live, self.incident_id, remove=entry_id) if live else {}
            if patch:
                drop_emptied_maps(live or {}, patch, [])
                self._patch(ref.object_path, patch, None)
        except KubeApiError:
            pass

    @staticmethod
    def _write(call: Callable[[], Any], ref: ObjectRef, verb: str, gone_is_done: bool = False) -> None:
        try:
            call()
        except KubeApiError as exc:
            if gone_is_done and exc.status == 404:
                return  # deleted between our read and our delete: what the restore wanted
            raise StormError("could not %s %s: %s" % (verb, ref.label, exc.message), status=exc.status) from exc

    def _restore_redis(self, entry: Dict[str, Any], outcome: Dict[str, Any], force: bool, dry_run: bool,
                       redis: Any, overlay: Optional[Overlay] = None) -> Dict[str, Any]:
        endpoint = entry["target"].get("endpoint")
        if redis is None:
            outcome.update(outcome="skipped", msg="%s: Redis %s not restored: give the redis connection options "
                           "to restore CONFIG SET changes" % (entry["id"], endpoint))
            return outcome
        try:
            live = {f["path"][0]: _config_get(redis, f["path"][0]) for f in entry.get("fields") or []}
        except Exception as exc:  # redis-py raises many types; the message is what matters
            raise StormError("cannot read the configuration of Redis %s: %s" % (endpoint, exc)) from exc
        for path, (present, value) in (overlay or {}).items():
            if path[0] in live:
                live[path[0]] = value if present else None

        def read(config: Any, path: Sequence[str]) -> Tuple[bool, Any]:
            return path[0] in config, config.get(path[0])

        to_put_back = self._judge(entry, live, outcome, force, read)
        if to_put_back is None:
            if outcome["outcome"] == "unapplied":
                return self._close(entry, outcome, "failed", dry_run)
            return outcome
        outcome["fields"] = [{"path": f["path"], "live": f["live"], "restored": f["before"]} for f in to_put_back]
        if not dry_run:
            for field in to_put_back:
                try:
                    redis.config_set(field["path"][0], field["before"])
                except Exception as exc:
                    raise StormError("CONFIG SET %s %s on Redis %s failed: %s" % (
                        field["path"][0], field["before"], endpoint, exc)) from exc
        outcome.update(outcome="restored", changed=bool(to_put_back), msg="%s: %s on Redis %s" % (
            entry["id"], ", ".join("%s=%s" % (f["path"][0], f["before"]) for f in to_put_back) or "nothing to put back",
            endpoint))
        return self._close(entry, outcome, "restored", dry_run)


def drift_message(entry: Dict[str, Any], outcome: Dict[str, Any]) -> str:
    parts = ["%s: we set %s, found %s" % (d["field"], json.dumps(d["set"]),
                                          json.dumps(d["found"]) if d["found_present"] else "it removed")
             for d in outcome["drift"]]
    return ("drift on %s (ledger %s): %s. Someone changed it after the mitigation; restoring would clobber "
            "that change. Check who did, then rerun with force: true to restore anyway" % (
                outcome["target"], entry["id"], "; ".join(parts)))


def _config_get(redis: Any, name: str) -> Optional[str]:
    reply = redis.config_get(name)
    value = reply.get(name) if isinstance(reply, dict) else None
    if isinstance(value, bytes):
        value = value.decode()
    return None if value is None else str(value)


def narrow_fields(fields: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """The fields with each JSON document replaced by the leaves that changed in it."""
    return [leaf for field in fields for leaf in json_fields.narrow(field)]


def data_bytes(data: Dict[str, str]) -> int:
    """What the API server counts against a ConfigMap's size limit."""
    return sum(len(key.encode()) + len(value.encode()) for key, value in data.items())


def _load_json(text: Optional[str], default: Any) -> Any:
    if not text:
        return default
    try:
        return json.loads(text)
    except ValueError:
        return default


def _entries(cm: Optional[Dict[str, Any]]) -> List[Dict[str, Any]]:
    data = (cm or {}).get("data") or {}
    found = [_load_json(v, None) for k, v in data.items() if k.startswith("entry-") and k.endswith(".json")]
    return sorted([e for e in found if isinstance(e, dict)], key=lambda e: int(e.get("seq", 0)))
