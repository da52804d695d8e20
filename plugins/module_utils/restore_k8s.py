# -*- coding: utf-8 -*-
# Copyright: fintech SRE
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Restoring a ledger entry whose target is a Kubernetes object (or its subresource).

One merge patch with a resourceVersion precondition puts every field back, removes the maps the
mitigation created and the bookkeeping annotations once nothing else is in them; an object the
mitigation created is deleted. A replica count an autoscaler this incident paused for scale-up
lowered since is not drift.
"""

from __future__ import annotations

import copy
from typing import Any, Callable, Dict, List, Optional

from ansible_collections.fintech.redis_storm.plugins.module_utils import json_fields
from ansible_collections.fintech.redis_storm.plugins.module_utils.drift import closing_state, judge
from ansible_collections.fintech.redis_storm.plugins.module_utils.errors import StormError
from ansible_collections.fintech.redis_storm.plugins.module_utils.field_paths import (
    ABSENT,
    MERGE_PATCH,
    Overlay,
    deep_merge,
    drop_emptied_maps,
    field_label,
    get_path,
    merge_diff,
    put_path,
    set_path,
    with_overlay,
)
from ansible_collections.fintech.redis_storm.plugins.module_utils.k8s_client import KubeApiError
from ansible_collections.fintech.redis_storm.plugins.module_utils.ledger import Ledger
from ansible_collections.fintech.redis_storm.plugins.module_utils.targets import ObjectRef, bookkeeping_patch


def restore_k8s(ledger: Ledger, entry: Dict[str, Any], outcome: Dict[str, Any], force: bool,
                dry_run: bool, overlay: Optional[Overlay] = None) -> Optional[str]:
    """Fill in ``outcome``; the state to close the entry with, or None to leave it open."""
    ref = ObjectRef.from_target(entry["target"])
    live = ledger.kube.find(ref.path)
    if live is None and entry.get("action") == "create":
        outcome.update(outcome="restored", msg="%s: %s, which the mitigation created, is already gone" % (
            entry["id"], ref.label))
        return "restored"
    if live is None:
        outcome.update(outcome="missing", msg="%s: %s no longer exists; nothing to put back" % (
            entry["id"], ref.label))
        return "missing"
    live = with_overlay(live, overlay)
    autoscaler: List[Optional[str]] = []  # looked up once, and only for replicas below what we set

    def scaled_down_by_autoscaler(field: Dict[str, Any], present: bool, value: Any) -> bool:
        # our pause stops scale-up only: the autoscaler may still scale down as the load falls
        if not (ref.subresource == "scale" and list(field["path"]) == ["spec", "replicas"] and present
                and isinstance(value, int) and isinstance(field["after"], int) and value < field["after"]):
            return False
        if not autoscaler:
            autoscaler.append(_paused_autoscaler(ledger, ref))
        return autoscaler[0] is not None

    to_put_back = judge(entry, live, outcome, force, get_path, scaled_down_by_autoscaler)
    if to_put_back is None:
        return closing_state(outcome)
    query = {"dryRun": "All"} if dry_run else None
    outcome["fields"] = [{"path": f["path"], "live": f["live"] if f["live_present"] else None,
                          "restored": f["before"] if f["present_before"] else None} for f in to_put_back]
    if entry.get("action") == "create":
        _write(lambda: ledger.kube.request("DELETE", ref.object_path, query=query), ref, "delete", gone_is_done=True)
        outcome.update(outcome="restored", changed=True, msg="%s: deleted %s, which the mitigation created" % (
            entry["id"], ref.label))
        return "restored"
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
            deep_merge(patch, bookkeeping_patch(live, ledger.incident_id, remove=entry["id"]))
        drop_emptied_maps(live, patch, [f["created"] for f in to_put_back
                                        if not f["present_before"] and f.get("created")])
        _write(lambda: _patch(ledger, ref.path, patch, query), ref, "patch")
        if ref.subresource and not dry_run:
            _unmark(ledger, ref, entry["id"])
    elif not dry_run:
        _unmark(ledger, ref, entry["id"])
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
    return "restored"


def _paused_autoscaler(ledger: Ledger, workload: ObjectRef) -> Optional[str]:
    """The HPA this incident paused that scales ``workload``, by label (None when there is none)."""
    for entry in ledger.entries():
        target = entry.get("target") or {}
        if (entry.get("module") != "hpa_pause" or entry.get("state") == "failed"
                or target.get("kind") != "HorizontalPodAutoscaler"
                or target.get("namespace") != workload.namespace):
            continue
        hpa = ObjectRef.from_target(target)
        scales = ((ledger.kube.find(hpa.path) or {}).get("spec") or {}).get("scaleTargetRef") or {}
        if scales.get("kind") == workload.kind and scales.get("name") == workload.name:
            return hpa.label
    return None


def _patch(ledger: Ledger, path: str, patch: Dict[str, Any], query: Optional[Dict[str, Any]]) -> Dict[str, Any]:
    return ledger.kube.request("PATCH", path, body=patch, query=query, content_type=MERGE_PATCH)


def _unmark(ledger: Ledger, ref: ObjectRef, entry_id: str) -> None:
    """Drop the entry id from the object's bookkeeping annotations (best effort: they are not owned)."""
    try:
        live = ledger.kube.find(ref.object_path)
        patch = bookkeeping_patch(live, ledger.incident_id, remove=entry_id) if live else {}
        if patch:
            drop_emptied_maps(live or {}, patch, [])
            _patch(ledger, ref.object_path, patch, None)
    except KubeApiError:
        pass


def _write(call: Callable[[], Any], ref: ObjectRef, verb: str, gone_is_done: bool = False) -> None:
    try:
        call()
    except KubeApiError as exc:
        if gone_is_done and exc.status == 404:
            return  # deleted between our read and our delete: what the restore wanted
        raise StormError("could not %s %s: %s" % (verb, ref.label, exc.message), status=exc.status) from exc
