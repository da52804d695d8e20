# -*- coding: utf-8 -*-
# Copyright: fintech SRE
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Plans for workload_scale and hpa_pause: replicas through /scale, autoscalers paused."""

from __future__ import annotations

from typing import Any, Dict, List, Optional

from ansible_collections.fintech.redis_storm.plugins.module_utils.baseline import pre_incident_value
from ansible_collections.fintech.redis_storm.plugins.module_utils.errors import StormError
from ansible_collections.fintech.redis_storm.plugins.module_utils.field_paths import FieldPath, get_path
from ansible_collections.fintech.redis_storm.plugins.module_utils.guards import Guards
from ansible_collections.fintech.redis_storm.plugins.module_utils.k8s_client import Kube, path_for
from ansible_collections.fintech.redis_storm.plugins.module_utils.mitigation import Plan
from ansible_collections.fintech.redis_storm.plugins.module_utils.owned import (
    HPA_BEHAVIOR,
    HPA_MAX,
    HPA_SELECT_POLICY,
    KEDA_PAUSED,
    REPLICAS,
)
from ansible_collections.fintech.redis_storm.plugins.module_utils.targets import ObjectRef

WORKLOAD_RESOURCES = {"Deployment": ("apps/v1", "deployments"), "StatefulSet": ("apps/v1", "statefulsets")}
FULL_SYNC_WARNING = (
    "%s/%s looks like Redis: each new replica needs a full sync from the master (fork + RDB transfer), "
    "which adds load to the master during a storm; prefer raising maxclients or timeouts first")


def workload_ref(kind: str, namespace: str, name: str, subresource: Optional[str] = None) -> ObjectRef:
    if kind not in WORKLOAD_RESOURCES:
        raise StormError("kind %r is not scalable here: use Deployment or StatefulSet" % kind)
    api_version, resource = WORKLOAD_RESOURCES[kind]
    return ObjectRef(api_version, kind, resource, namespace, name, subresource)


def _replicas(obj: Dict[str, Any]) -> int:
    present, value = get_path(obj, REPLICAS)
    return int(value) if present and value is not None else 0


def scale_plan(kube: Kube, params: Dict[str, Any]) -> Plan:
    """workload_scale: ``replicas`` or ``reduce_by_percent`` of the live replicas, within the rails."""
    ref = workload_ref(params.get("kind") or "Deployment", params["namespace"], params["name"], "scale")
    guards = Guards.from_params(params)
    warnings: List[str] = []

    def desired(live: Dict[str, Any]) -> Dict[FieldPath, Any]:
        current = _replicas(live)
        if params.get("replicas") is not None:
            wanted = int(params["replicas"])
            if wanted < 0:
                raise StormError("replicas must be 0 or more (got %d)" % wanted)
        else:
            # measured from the replicas before any incident still in effect scaled it, so neither a
            # rerun nor a second incident for the same storm cuts again from an already reduced count
            original = pre_incident_value(kube, params.get("ledger_namespace"), ref.to_target(), REPLICAS)
            base = int(original[1]) if original and original[0] and original[1] is not None else current
            wanted = min(current, guards.reduced(base, float(params["reduce_by_percent"])))
        guards.check_replicas(current, wanted)
        if wanted > current and ref.kind == "StatefulSet" and "redis" in ref.name.lower():
            warnings.append(FULL_SYNC_WARNING % (ref.namespace, ref.name))
        return {REPLICAS: wanted}

    return Plan(ref, desired, module="workload_scale", workloads=["%s/%s" % (ref.namespace, ref.name)],
                warnings=warnings)


def _owned(result: Dict[str, Any], side: str, path: FieldPath) -> Any:
    """An owned field's value on one side of the result, falling back to the live object."""
    present, value = get_path(result.get(side) or {}, path)
    if present:
        return value
    return get_path(result.get("live") or {}, path)[1]


def replicas_of(result: Dict[str, Any]) -> Dict[str, Any]:
    """workload_scale's extra return keys."""
    return {"replicas_before": _owned(result, "before", REPLICAS), "replicas_after": _owned(result, "after", REPLICAS)}


def hpa_plan(kube: Kube, params: Dict[str, Any]) -> Plan:
    """hpa_pause: HPA v2 scale-up disabled and maxReplicas pinned, or a KEDA ScaledObject paused."""
    namespace, name, kind = params["namespace"], params["name"], params.get("kind") or "HorizontalPodAutoscaler"
    if kind == "ScaledObject":
        ref = ObjectRef("keda.sh/v1alpha1", kind, "scaledobjects", namespace, name)
    else:
        ref = ObjectRef("autoscaling/v2", "HorizontalPodAutoscaler", "horizontalpodautoscalers", namespace, name)
    live = kube.find(ref.path)
    if live is None and params.get("state") != "restored":
        raise StormError("not found (404): %s does not exist; check kind, namespace and name" % ref.label)
    target = ((live or {}).get("spec") or {}).get("scaleTargetRef") or {}
    workloads = ["%s/%s" % (namespace, name)]
    if target.get("name"):
        workloads.append("%s/%s" % (namespace, target["name"]))

    def desired_keda(obj: Dict[str, Any]) -> Dict[FieldPath, Any]:
        return {KEDA_PAUSED: "true"}

    def desired_hpa(obj: Dict[str, Any]) -> Dict[FieldPath, Any]:
        spec = obj.get("spec") or {}
        if get_path(obj, HPA_SELECT_POLICY)[1] == "Disabled":
            return {HPA_SELECT_POLICY: "Disabled", HPA_MAX: spec.get("maxReplicas")}  # already paused: keep the pin
        current = (obj.get("status") or {}).get("currentReplicas")
        if current is None:
            current = _target_replicas(kube, namespace, spec.get("scaleTargetRef") or {})
        pinned = max(int(current), int(spec.get("minReplicas") or 1))
        if "behavior" in spec:  # only the select policy is owned; the rest of the behavior stays the team's
            return {HPA_SELECT_POLICY: "Disabled", HPA_MAX: pinned}
        # none before: the API server fills in defaults once it exists, so only removing it again restores it
        return {HPA_BEHAVIOR: {"scaleUp": {"selectPolicy": "Disabled"}}, HPA_MAX: pinned}

    return Plan(ref, desired_keda if kind == "ScaledObject" else desired_hpa, module="hpa_pause",
                workloads=workloads)


def _target_replicas(kube: Kube, namespace: str, target: Dict[str, Any]) -> int:
    kind = target.get("kind") or "Deployment"
    api_version, resource = WORKLOAD_RESOURCES.get(kind, (target.get("apiVersion") or "apps/v1",
                                                          kind.lower() + "s"))
    scale = kube.get(path_for(api_version, resource, namespace, target.get("name"), "scale"))
    return _replicas(scale)


def paused_of(result: Dict[str, Any], kind: str, state: str) -> Dict[str, Any]:
    """hpa_pause's extra return keys: whether the autoscaler is (or would be) paused afterwards."""
    path, paused_value = (KEDA_PAUSED, "true") if kind == "ScaledObject" else (HPA_SELECT_POLICY, "Disabled")
    after = result.get("after") or {}
    value = get_path(after, path)[1] if state == "restored" and result.get("changed") else _owned(result, "after", path)
    pinned = _owned(result, "after", HPA_MAX) if kind != "ScaledObject" else None
    return {"paused": value == paused_value, "max_replicas": pinned}
