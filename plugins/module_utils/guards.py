# -*- coding: utf-8 -*-
# Copyright: fintech SRE
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Guard rails every mutating module runs before it changes anything.

- ``allowed_namespaces``: the namespaces a mitigation may touch; an empty list refuses all.
- ``protected_workloads``: ``ns/name`` or ``ns/*`` that are never scaled or paused.
- ``min_replicas``: the replica floor a scale-down never goes below (1 or more: no rung scales to zero).
- ``max_reduction_percent``: the largest scale-down allowed in one step (0 to 100).

A refusal is a ``GuardRefusal`` whose message names the rail, the values involved and the
option (and inventory variable) that overrides it.
"""

from __future__ import annotations

import fnmatch
import math
import re
from typing import Any, Dict, List, Optional, Sequence

from ansible_collections.fintech.redis_storm.plugins.module_utils.errors import StormError

# Options of every mutating Kubernetes module.
GUARD_ARG_SPEC: Dict[str, Dict[str, Any]] = {
    "allowed_namespaces": {"type": "list", "elements": "str", "default": []},
    "protected_workloads": {"type": "list", "elements": "str", "default": []},
}

MIN_REPLICAS_HINT = "role variable offender_scale_down_min_replicas, inventory variable storm_min_replicas"
MAX_REDUCTION_HINT = ("role variable offender_scale_down_max_reduction_percent, inventory variable "
                      "storm_max_reduction_percent")
NAMESPACES_HINT = "inventory variable storm_namespaces"
PROTECTED_HINT = "inventory variable storm_protected_workloads"
_NAMESPACE = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")

# Options of modules that change replica counts.
REPLICA_GUARD_ARG_SPEC: Dict[str, Dict[str, Any]] = {
    "min_replicas": {"type": "int", "default": 1},
    "max_reduction_percent": {"type": "int", "default": 50},
}


class GuardRefusal(StormError):
    """A guard rail said no; ``rail`` names it. Results carry ``refused: true`` and ``guard``."""

    def __init__(self, rail: str, message: str, **details: Any) -> None:
        super().__init__("refused by guard rail %s: %s" % (rail, message), refused=True, guard=rail, **details)
        self.rail = rail


class Guards:
    """The rails, built from module params with ``Guards.from_params(module.params)``."""

    def __init__(self, allowed_namespaces: Optional[Sequence[str]] = None,
                 protected_workloads: Optional[Sequence[str]] = None, min_replicas: int = 1,
                 max_reduction_percent: int = 50) -> None:
        self.allowed_namespaces: List[str] = list(allowed_namespaces or [])
        self.protected_workloads: List[str] = list(protected_workloads or [])
        self.min_replicas = int(min_replicas)
        self.max_reduction_percent = int(max_reduction_percent)
        if self.min_replicas < 1:
            raise StormError("min_replicas must be 1 or more (got %d): no mitigation scales a workload to zero; "
                             "set the option min_replicas (%s)" % (self.min_replicas, MIN_REPLICAS_HINT))
        if not 0 <= self.max_reduction_percent <= 100:
            raise StormError("max_reduction_percent must be between 0 and 100 (got %d); set the option "
                             "max_reduction_percent (%s)" % (self.max_reduction_percent, MAX_REDUCTION_HINT))
        for namespace in self.allowed_namespaces:
            if not _NAMESPACE.match(namespace):
                raise StormError("allowed_namespaces entries are namespace names, no patterns (got %r); fix the "
                                 "option allowed_namespaces (%s)" % (namespace, NAMESPACES_HINT))
        for pattern in self.protected_workloads:
            if pattern.count("/") != 1 or not _NAMESPACE.match(pattern.split("/")[0]):
                raise StormError("protected_workloads entries are 'namespace/name' or 'namespace/*' (got %r); fix "
                                 "the option protected_workloads (%s)" % (pattern, PROTECTED_HINT))

    @classmethod
    def from_params(cls, params: Dict[str, Any]) -> Guards:
        floor, cut = params.get("min_replicas"), params.get("max_reduction_percent")
        return cls(params.get("allowed_namespaces"), params.get("protected_workloads"),
                   1 if floor is None else int(floor), 50 if cut is None else int(cut))

    def check_namespace(self, namespace: str) -> None:
        if not self.allowed_namespaces:
            raise GuardRefusal(
                "allowed_namespaces",
                "no namespace is allowed, so nothing in %r may be changed; list the namespaces mitigations may "
                "touch in the option allowed_namespaces (inventory variable storm_namespaces)" % namespace,
                namespace=namespace)
        if namespace not in self.allowed_namespaces:
            raise GuardRefusal(
                "allowed_namespaces",
                "namespace %r is not in allowed_namespaces %s; add it to the option allowed_namespaces "
                "(inventory variable storm_namespaces) if mitigations may touch it"
                % (namespace, self.allowed_namespaces), namespace=namespace)

    def check_workload(self, namespace: str, name: str) -> None:
        workload = "%s/%s" % (namespace, name)
        for pattern in self.protected_workloads:
            if fnmatch.fnmatchcase(workload, pattern):
                raise GuardRefusal(
                    "protected_workloads",
                    "%s is protected (matches %r in protected_workloads); remove it from the option "
                    "protected_workloads (inventory variable storm_protected_workloads) to act on it"
                    % (workload, pattern), workload=workload)

    def check_replicas(self, current: int, desired: int) -> None:
        """A scale-down must stay at or above ``min_replicas`` and cut at most ``max_reduction_percent``."""
        if desired >= current:
            return
        if desired < self.min_replicas:
            raise GuardRefusal(
                "min_replicas",
                "%d replicas is below the floor of %d; lower the option min_replicas "
                "(%s) if fewer replicas are really safe" % (desired, self.min_replicas, MIN_REPLICAS_HINT),
                replicas=desired, min_replicas=self.min_replicas)
        reduction = 100.0 * (current - desired) / current if current else 0.0
        if reduction > self.max_reduction_percent:
            raise GuardRefusal(
                "max_reduction_percent",
                "going from %d to %d replicas cuts %.0f%% in one step, more than max_reduction_percent %d; scale "
                "down in smaller steps or raise the option max_reduction_percent "
                "(%s)" % (current, desired, reduction, self.max_reduction_percent, MAX_REDUCTION_HINT),
                replicas_before=current, replicas_after=desired, max_reduction_percent=self.max_reduction_percent)

    def reduced(self, current: int, percent: float) -> int:
        """Replicas after cutting ``percent`` of ``current`` (rounded down, never below the floor)."""
        if not 0 < percent <= 100:
            raise StormError("reduce_by_percent must be more than 0 and at most 100 (got %s)" % percent)
        if percent > self.max_reduction_percent:
            raise GuardRefusal(
                "max_reduction_percent",
                "reduce_by_percent %s is more than max_reduction_percent %d; scale down in smaller steps or raise "
                "the option max_reduction_percent (%s)" % (percent, self.max_reduction_percent, MAX_REDUCTION_HINT),
                max_reduction_percent=self.max_reduction_percent)
        if current < 1:
            return current  # nothing runs: nothing to cut
        target = current - math.floor(current * percent / 100.0)
        return max(target, min(self.min_replicas, current), 1)
