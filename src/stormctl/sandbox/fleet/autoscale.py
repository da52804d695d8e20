"""The HPA (autoscaling/v2) and KEDA decisions, as their controllers make them, on the sandbox's short clock."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Optional

from stormctl.sandbox.fleet.config import as_int

TOLERANCE = 0.1
KEDA_SCALE_DOWN_WINDOW = 30.0


@dataclass
class ScaleHistory:
    """Recent recommendations and scale events of one autoscaler (for stabilisation windows and rate policies)."""

    recommendations: list[tuple[float, int]] = field(default_factory=list)
    events: list[tuple[float, int]] = field(default_factory=list)
    last_scale_time: Optional[str] = None

    def remember(self, now: float, recommendation: int, keep: float) -> None:
        self.recommendations.append((now, recommendation))
        self.recommendations = [(t, r) for t, r in self.recommendations if now - t <= keep]

    def changed_within(self, now: float, period: float, up: bool) -> int:
        return sum(d for t, d in self.events if now - t <= period and ((d > 0) == up))


@dataclass
class Decision:
    desired: int
    conditions: list[dict[str, Any]]
    utilization: Optional[int] = None
    average_m: Optional[int] = None


def _cond(kind: str, status: bool, reason: str, message: str, stamp: str) -> dict[str, Any]:
    return {"type": kind, "status": "True" if status else "False", "reason": reason, "message": message,
            "lastTransitionTime": stamp}


def _rate_limit(rules: dict[str, Any], current: int, history: ScaleHistory, now: float, up: bool) -> Optional[int]:
    """The furthest the behavior's policies let the HPA go from ``current`` now; None when the direction is Disabled."""
    if rules.get("selectPolicy") == "Disabled":
        return None
    policies = rules.get("policies") or ([{"type": "Percent", "value": 100, "periodSeconds": 15},
                                          {"type": "Pods", "value": 4, "periodSeconds": 15}] if up else
                                         [{"type": "Percent", "value": 100, "periodSeconds": 15}])
    limits = []
    for policy in policies:
        period = float(policy.get("periodSeconds", 15))
        moved = history.changed_within(now, period, up)
        start = current - moved
        value = as_int(policy.get("value"), 0)
        if policy.get("type") == "Pods":
            limit = start + value if up else start - value
        else:
            limit = math.ceil(start * (1 + value / 100.0)) if up else math.floor(start * (1 - value / 100.0))
        limits.append(limit)
    select = rules.get("selectPolicy", "Max")
    if up:
        return min(limits) if select == "Min" else max(limits)
    return max(limits) if select == "Min" else min(limits)


def hpa_decision(hpa: dict[str, Any], current: int, pod_cpu_m: list[int], request_m: int,
                 history: ScaleHistory, stamp: str) -> Decision:
    spec = hpa.get("spec") or {}
    lo = as_int(spec.get("minReplicas"), 1)
    hi = as_int(spec.get("maxReplicas"), lo)
    now = time.monotonic()
    behavior = spec.get("behavior") or {}
    up_rules = behavior.get("scaleUp") or {}
    down_rules = behavior.get("scaleDown") or {}
    if current == 0 and lo > 0:
        return Decision(0, [
            _cond("AbleToScale", True, "SucceededGetScale",
                  "the HPA controller was able to get the target's current scale", stamp),
            _cond("ScalingActive", False, "ScalingDisabled",
                  "scaling is disabled since the replica count of the target is zero", stamp),
        ])
    target = None
    for metric in spec.get("metrics") or []:
        resource = metric.get("resource") or {}
        if metric.get("type") == "Resource" and resource.get("name") == "cpu":
            target = as_int((resource.get("target") or {}).get("averageUtilization"), 80)
    utilization = None
    average = None
    if pod_cpu_m:
        average = int(sum(pod_cpu_m) / len(pod_cpu_m))
        utilization = int(100 * average / max(request_m, 1))
    limited_reason = "DesiredWithinRange"
    if current > hi:
        desired, limited_reason = hi, "TooManyReplicas"
    elif current < lo:
        desired, limited_reason = lo, "TooFewReplicas"
    else:
        proposal = current
        if target and utilization is not None:
            ratio = utilization / target
            if abs(ratio - 1.0) > TOLERANCE:
                proposal = math.ceil(ratio * len(pod_cpu_m))
        window_down = float(down_rules.get("stabilizationWindowSeconds", 300))
        window_up = float(up_rules.get("stabilizationWindowSeconds", 0))
        history.remember(now, proposal, max(window_down, window_up))
        desired = proposal
        if proposal < current:
            desired = max(r for t, r in history.recommendations if now - t <= window_down)
            desired = min(desired, current)
        elif proposal > current and window_up > 0:
            desired = max(min(r for t, r in history.recommendations if now - t <= window_up), current)
        if desired > current:
            limit = _rate_limit(up_rules, current, history, now, up=True)
            limit = current if limit is None else limit
            if desired > limit:
                desired, limited_reason = limit, "ScaleUpLimit"
        elif desired < current:
            limit = _rate_limit(down_rules, current, history, now, up=False)
            limit = current if limit is None else limit
            if desired < limit:
                desired, limited_reason = limit, "ScaleDownLimit"
        if desired > hi:
            desired, limited_reason = hi, "TooManyReplicas"
        if desired < lo:
            desired, limited_reason = lo, "TooFewReplicas"
    limited = limited_reason != "DesiredWithinRange"
    conditions = [
        _cond("AbleToScale", True, "SucceededRescale" if desired != current else "ReadyForNewScale",
              "the HPA controller was able to update the target scale to %d" % desired if desired != current
              else "recommended size matches current size", stamp),
        _cond("ScalingActive", True, "ValidMetricFound", "the HPA was able to successfully calculate a replica count "
              "from cpu resource utilization (percentage of request)", stamp) if utilization is not None else
        _cond("ScalingActive", False, "FailedGetResourceMetric",
              "the HPA was unable to compute the replica count: no metrics returned", stamp),
        _cond("ScalingLimited", limited, limited_reason,
              {"TooManyReplicas": "the desired replica count is more than the maximum replica count",
               "TooFewReplicas": "the desired replica count is less than the minimum replica count",
               "ScaleUpLimit": "the desired replica count is increasing faster than the maximum scale rate",
               "ScaleDownLimit": "the desired replica count is decreasing faster than the maximum scale rate",
               "DesiredWithinRange": "the desired count is within the acceptable range"}[limited_reason], stamp),
    ]
    return Decision(desired, conditions, utilization, average)


def keda_decision(scaled_object: dict[str, Any], current: int, queue_length: int, history: ScaleHistory,
                  stamp: str) -> tuple[Optional[int], list[dict[str, Any]], dict[str, Any]]:
    """(replicas to set or None, conditions, extra status) for a KEDA ScaledObject with a queue-length trigger."""
    meta = scaled_object.get("metadata") or {}
    annotations = meta.get("annotations") or {}
    spec = scaled_object.get("spec") or {}
    lo = as_int(spec.get("minReplicaCount"), 0)
    hi = as_int(spec.get("maxReplicaCount"), 100)
    per_pod = 1
    for trigger in spec.get("triggers") or []:
        per_pod = max(as_int((trigger.get("metadata") or {}).get("value"), 1), 1)
    extra: dict[str, Any] = {}
    active = queue_length > 0
    paused_replicas = annotations.get("autoscaling.keda.sh/paused-replicas")
    paused = str(annotations.get("autoscaling.keda.sh/paused", "")).lower() == "true"
    frozen = paused or paused_replicas is not None
    if paused_replicas is not None:
        extra["pausedReplicaCount"] = as_int(paused_replicas, current)
    conditions = [
        _cond("Ready", True, "ScaledObjectReady", "ScaledObject is defined correctly and is ready for scaling", stamp),
        _cond("Active", active, "ScalerActive" if active else "ScalerNotActive",
              "Scaling is %sperformed because triggers are %sactive" % (("", "") if active else ("not ", "not ")),
              stamp),
        _cond("Fallback", False, "NoFallbackFound", "No fallbacks are active on this scaled object", stamp),
        _cond("Paused", frozen, "ScaledObjectPaused" if frozen else "ScaledObjectUnpaused",
              "ScaledObject is paused" if frozen else "ScaledObject is not paused", stamp),
    ]
    if paused_replicas is not None:
        wanted = as_int(paused_replicas, current)
        return (wanted if wanted != current else None), conditions, extra
    if paused:
        return None, conditions, extra
    now = time.monotonic()
    proposal = min(max(math.ceil(queue_length / per_pod), lo), hi)
    history.remember(now, proposal, KEDA_SCALE_DOWN_WINDOW)
    desired = proposal if proposal >= current else max(r for t, r in history.recommendations)
    desired = min(desired, current) if proposal < current else desired
    return (desired if desired != current else None), conditions, extra
