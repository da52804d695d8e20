# -*- coding: utf-8 -*-
# Copyright: fintech SRE
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Documentation of the options every mutating Kubernetes module shares (mitigation.MITIGATION_ARG_SPEC
and guards.GUARD_ARG_SPEC)."""

from __future__ import annotations


class ModuleDocFragment:
    DOCUMENTATION = r"""
options:
  incident_id:
    description:
      - The incident this change belongs to. Names the undo ledger ConfigMap
        C(redis-storm-ledger-<incident_id>) and the annotations put on the changed object.
      - Lowercase letters, digits, C(-) and C(.), at most 40 characters.
    type: str
    required: true
  state:
    description:
      - V(applied) makes the change, recording the prior value of every owned field in the ledger first.
      - V(restored) puts back what the ledger recorded for this object (newest entry first) and closes the
        entries. It refuses when a field was changed after us (drift) unless O(force=true).
    type: str
    choices: [applied, restored]
    default: applied
  ledger_namespace:
    description:
      - Namespace of the undo ledger ConfigMap.
    type: str
    default: redis-storm
  force:
    description:
      - With O(state=restored), restore even over a later change of an owned field (drift).
    type: bool
    default: false
  rung:
    description:
      - The ladder rung this change belongs to, recorded in the ledger entry.
    type: str
  validate_with_dry_run:
    description:
      - In check mode, validate the change with a server-side C(dryRun=All) request (nothing is stored).
        Set to V(false) to make no write request at all, e.g. with a read-only identity.
    type: bool
    default: true
  allowed_namespaces:
    description:
      - Namespaces this module may change (guard rail). An empty list refuses every namespace.
      - Usually the inventory variable C(storm_namespaces).
    type: list
    elements: str
    default: []
  protected_workloads:
    description:
      - Workloads never scaled or paused (guard rail), as C(namespace/name) or C(namespace/*).
      - Usually the inventory variable C(storm_protected_workloads).
    type: list
    elements: str
    default: []
notes:
  - O(state=restored) only undoes this incident's own recorded changes, so the guard rails do not apply to it.
  - The ledger ConfigMap and the object annotations make the change undoable from any machine with
    M(fintech.redis_storm.storm_rollback).
"""

    REPLICAS = r"""
options:
  min_replicas:
    description:
      - Replica floor (guard rail). A scale-down to fewer replicas is refused; O(reduce_by_percent) stops at it.
    type: int
    default: 1
  max_reduction_percent:
    description:
      - The largest scale-down allowed in one step, in percent of the current replicas (guard rail).
    type: int
    default: 50
"""
