# -*- coding: utf-8 -*-
# Copyright: fintech SRE
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""What a ledger entry changed (its target), and the bookkeeping annotations on changed objects.

A target is a Kubernetes object, optionally its subresource (``ObjectRef``), or a Redis server
(``redis_target``). Each changed Kubernetes object carries the annotations ``INCIDENT_KEY`` and
``ENTRIES_KEY`` (the ids of its open entries) where the credential may write them (a workload scaled
through its ``scale`` subresource alone is not annotated); they are removed when its last open entry
is restored.
"""

from __future__ import annotations

from typing import Any, Dict, Optional, Tuple

from ansible_collections.fintech.redis_storm.plugins.module_utils.k8s_client import path_for

INCIDENT_KEY = "redis-storm.fintech.io/incident"
ENTRIES_KEY = "redis-storm.fintech.io/ledger-entries"


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


def same_target(a: Dict[str, Any], b: Dict[str, Any]) -> bool:
    if a.get("type") == "redis" and b.get("type") == "redis" and not (a.get("run_id") and b.get("run_id")):
        return a.get("endpoint") == b.get("endpoint")  # an entry recorded before servers were identified
    return target_key(a) == target_key(b)


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
