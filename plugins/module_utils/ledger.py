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
value (``restore.restore_entry`` does that). The targets and their bookkeeping annotations are
in ``targets``, putting an entry back in ``restore``.

Field paths are lists of dict keys (``field_paths``); the value at a path is owned whole (a dict value is
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

import getpass
import json
import os
import re
import socket
import time
from typing import Any, Callable, Dict, List, Optional, Sequence, TypeVar

from ansible_collections.fintech.redis_storm.plugins.module_utils import json_fields, owned
from ansible_collections.fintech.redis_storm.plugins.module_utils.errors import StormError
from ansible_collections.fintech.redis_storm.plugins.module_utils.field_paths import ABSENT, created_map
from ansible_collections.fintech.redis_storm.plugins.module_utils.k8s_client import Kube, KubeApiError, path_for
from ansible_collections.fintech.redis_storm.plugins.module_utils.retry import CONFLICT_ATTEMPTS, back_off
from ansible_collections.fintech.redis_storm.plugins.module_utils.targets import (
    INCIDENT_KEY,
    same_target,
    target_label,
)

DEFAULT_LEDGER_NAMESPACE = "redis-storm"
MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
MANAGED_BY = "fintech.redis_storm"
RUNGS_KEY = "rungs.json"
OPEN_STATES = ("pending", "applied")
CONFLICT_RETRIES = CONFLICT_ATTEMPTS
# The API server refuses a ConfigMap whose data is over 1 MiB; a new entry must leave room for the
# state changes and rung records still to come, so every open entry can always be closed.
CONFIGMAP_LIMIT = 1024 * 1024
LEDGER_BUDGET = CONFIGMAP_LIMIT - 64 * 1024
ENTRY_LIMIT = 32 * 1024
T = TypeVar("T")

_INCIDENT_ID = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")


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
        return entries_in(self.read())

    def open_entries(self, target: Optional[Dict[str, Any]] = None) -> List[Dict[str, Any]]:
        """Entries still ``pending`` or ``applied`` (for one target when given), newest first."""
        found = [e for e in self.entries() if e.get("state") in OPEN_STATES]
        if target is not None:
            found = [e for e in found if same_target(e.get("target") or {}, target)]
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
            seq = 1 + max([int(e.get("seq", 0)) for e in entries_in({"data": data})] or [0])
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


def entries_in(cm: Optional[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """The entries of a ledger ConfigMap, oldest first."""
    data = (cm or {}).get("data") or {}
    found = [_load_json(v, None) for k, v in data.items() if k.startswith("entry-") and k.endswith(".json")]
    return sorted([e for e in found if isinstance(e, dict)], key=lambda e: int(e.get("seq", 0)))
