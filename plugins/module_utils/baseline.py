# -*- coding: utf-8 -*-
# Copyright: fintech SRE
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""What a field was before any incident still in effect changed it, read across every incident's ledger.

A relative mitigation (``reduce_by_percent``) measures from this value, so neither a rerun of one
incident nor a second incident for the same storm cuts again from an already reduced count
(6 -> 3 -> 2 -> 1): the replicas before the oldest open entry, whichever ledger holds it, are the base.
"""

from __future__ import annotations

from typing import Any, Dict, Optional, Sequence, Tuple

from ansible_collections.fintech.redis_storm.plugins.module_utils.k8s_client import Kube, list_items, path_for
from ansible_collections.fintech.redis_storm.plugins.module_utils.ledger import (
    DEFAULT_LEDGER_NAMESPACE,
    MANAGED_BY,
    MANAGED_BY_LABEL,
    OPEN_STATES,
    entries_in,
)
from ansible_collections.fintech.redis_storm.plugins.module_utils.targets import target_key


def pre_incident_value(kube: Kube, ledger_namespace: Optional[str], target: Dict[str, Any],
                       path: Sequence[str]) -> Optional[Tuple[bool, Any]]:
    """(present, value) of ``path`` before the oldest open ledger entry of any incident changed it on
    ``target``, or None when no open entry of any incident did."""
    ledgers = list_items(kube, path_for("v1", "configmaps", ledger_namespace or DEFAULT_LEDGER_NAMESPACE),
                         {"labelSelector": "%s=%s" % (MANAGED_BY_LABEL, MANAGED_BY)})
    oldest: Optional[Tuple[Tuple[str, int], Tuple[bool, Any]]] = None
    for ledger in ledgers:
        for entry in entries_in(ledger):
            if entry.get("state") not in OPEN_STATES or target_key(entry.get("target") or {}) != target_key(target):
                continue
            for field in entry.get("fields") or []:
                if list(field.get("path") or []) != list(path):
                    continue
                order = (str(entry.get("recorded_at") or ""), int(entry.get("seq", 0)))
                if oldest is None or order < oldest[0]:
                    oldest = (order, (bool(field.get("present_before")), field.get("before")))
    return None if oldest is None else oldest[1]
