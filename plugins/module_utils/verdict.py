# -*- coding: utf-8 -*-
# Copyright: fintech SRE
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Triage's one verdict (``storm_triage``) from Redis', Prometheus' and Kubernetes' views.

``triage_verdict`` is a pure function: it takes the registered results of ``redis_clients_info``,
``prometheus_query`` (with ``queries``) and ``storm_offenders_info`` as they are, failed or not,
and returns whether there is a storm, how bad it is, whether Redis is the bottleneck, the
evidence behind that, the offenders, the rungs of the ladder the evidence supports, and which
sources could not be read. A source that failed only removes its evidence; a Redis that refused
our connection because it is saturated is itself the strongest storm signal.

The thresholds are in ``thresholds``, each signal's reading in ``evidence``, the offenders in
``verdict_offenders``, the rungs recommended in ``rung_policy`` and the verdict told (summary, report
file) in ``verdict_report``; here they are put together.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional

from ansible_collections.fintech.redis_storm.plugins.module_utils.evidence import (
    Collector,
    PromView,
    failure,
    number,
    prometheus_evidence,
    redis_evidence,
)
from ansible_collections.fintech.redis_storm.plugins.module_utils.rung_policy import recommend_rungs
from ansible_collections.fintech.redis_storm.plugins.module_utils.thresholds import merge_thresholds
from ansible_collections.fintech.redis_storm.plugins.module_utils.verdict_offenders import (
    build_offenders,
    culprit_evidence,
    offender_evidence,
    unattributed,
)
from ansible_collections.fintech.redis_storm.plugins.module_utils.verdict_report import (
    summary_lines,
    summary_text,
    write_report,
)

SOURCES = ("redis", "prometheus", "kubernetes")


def triage_verdict(
    redis: Optional[Dict[str, Any]],
    prometheus: Optional[Dict[str, Any]],
    kubernetes: Optional[Dict[str, Any]],
    thresholds: Optional[Dict[str, Any]] = None,
    ingresses: Optional[List[Dict[str, Any]]] = None,
    redis_fd_limit: Optional[int] = None,
    top: int = 10,
) -> Dict[str, Any]:
    """``storm_triage`` from the three registered results (each may be failed, skipped or None)."""
    limits = merge_thresholds(thresholds)
    evidence = Collector()
    degraded: List[Dict[str, Any]] = []
    answered: List[str] = []

    redis_problem = failure(redis, "redis")
    refused = False
    if redis_problem:
        degraded.append({"source": "redis", "reason": redis_problem})
    elif not (redis or {}).get("reachable", False):
        refused = bool((redis or {}).get("saturated"))
        reason = str((redis or {}).get("error") or "not reachable")
        degraded.append({"source": "redis", "reason": ("refused our connection: " if refused else "") + reason})
        if refused:
            answered.append("redis")
            evidence.add("redis", "connection_refused", reason, "maxclients", True,
                         "Redis refused our own connection because it is at maxclients")
    else:
        answered.append("redis")
        redis_evidence(evidence, redis or {}, limits)

    prom = PromView(None)
    prom_problem = failure(prometheus, "prometheus")
    if prom_problem:
        degraded.append({"source": "prometheus", "reason": prom_problem})
    else:
        prom = PromView(prometheus)
        if prom.results and len(prom.errors) == len(prom.results):
            degraded.append({"source": "prometheus", "reason": "every query failed: %s" % "; ".join(
                "%s: %s" % kv for kv in sorted(prom.errors.items()))})
        else:
            answered.append("prometheus")
            for name, error in sorted(prom.errors.items()):
                degraded.append({"source": "prometheus", "reason": "query %s failed: %s" % (name, error),
                                 "partial": True})
            prometheus_evidence(evidence, prom, limits)

    kube_problem = failure(kubernetes, "kubernetes")
    if kube_problem:
        degraded.append({"source": "kubernetes", "reason": kube_problem})
    else:
        answered.append("kubernetes")
        for reason in (kubernetes or {}).get("degraded") or []:
            degraded.append({"source": "kubernetes", "reason": str(reason), "partial": True})

    offenders, named = build_offenders(kubernetes, redis, prom, list(ingresses or []), top, limits)
    counted_by = offenders[0].get("connections_from") if offenders else None
    offender_evidence(evidence, offenders, limits,
                      "kubernetes" if not kube_problem else "prometheus" if counted_by == "prometheus" else "redis")

    pressure = evidence.breached(
        "connection_refused", "utilization", "rejected_connections", "rejected_per_sec", "new_connections_per_sec",
        "last_utilization")
    # redis_exporter failing is the storm's strongest sign when Redis was full; with Redis simply down
    # (our connection refused by the OS, last utilisation low) it is an outage, not a storm.
    if pressure:
        pressure += evidence.breached("redis_up")
    slow_redis = evidence.breached("ping_latency_p99_ms", "redis_command_latency_ms")
    impact = evidence.breached(
        "app_error_ratio", "app_latency_p99_seconds", "app_latency_p95_seconds", "timeout_log_lines",
        "error_log_lines", "crashloop", "oomkilled")
    storm = bool(pressure)
    severity = "none"
    if storm:
        critical = evidence.breached("connection_refused", "rejected_connections", "rejected_per_sec", "redis_up") or [
            i for i in pressure if i["signal"] in ("utilization", "last_utilization")
            and number(i["observed"]) is not None and float(i["observed"]) >= limits["utilization_critical"]]
        severity = "critical" if critical or impact else "warning"

    if storm and named is not None:
        culprit_evidence(evidence, named, limits)
    bottleneck = _bottleneck(pressure + slow_redis, impact, answered, degraded)
    rungs = recommend_rungs(storm, offenders, evidence, limits, prom, redis, redis_fd_limit, named) if storm else []
    evidence.items.sort(key=lambda i: (not i["breached"], SOURCES.index(i["source"])))
    return {
        "storm": storm,
        "severity": severity,
        "bottleneck_confirmed": bottleneck,
        "evidence": evidence.items,
        "offenders": offenders,
        "unattributed": unattributed(kubernetes),
        "culprit": named,
        "recommended_rungs": rungs,
        "degraded_sources": degraded,
        "sources_answered": answered,
        "warnings": [i["note"] for i in evidence.items if i["signal"].startswith("stale_cache") and i["breached"]],
        "thresholds": limits,
        "summary": summary_text(storm, severity, bottleneck, offenders, rungs, degraded, named),
    }


def _bottleneck(pressure: List[Dict[str, Any]], impact: List[Dict[str, Any]], answered: List[str],
                degraded: List[Dict[str, Any]]) -> Dict[str, Any]:
    pressure_sources = sorted({i["source"] for i in pressure})
    impact_sources = sorted({i["source"] for i in impact})
    whole_sources = [d for d in degraded if not d.get("partial")]
    if pressure and impact:
        agreeing = set(pressure_sources) | set(impact_sources)
        confidence = "high" if len(agreeing) >= 2 or len(pressure) + len(impact) >= 4 else "medium"
        if whole_sources and confidence == "high" and len(agreeing) < 2:
            confidence = "medium"
        why = "Redis pressure (%s) lines up with application impact (%s)" % (
            ", ".join(sorted({i["signal"] for i in pressure})), ", ".join(sorted({i["signal"] for i in impact})))
        return {"confirmed": True, "confidence": confidence, "why": why}
    if pressure:
        return {"confirmed": False, "confidence": "medium",
                "why": "Redis is under connection pressure (%s) but the applications show no errors or latency "
                       "yet%s" % (", ".join(sorted({i["signal"] for i in pressure})),
                                  "" if "prometheus" in answered else " (Prometheus could not be read)")}
    if impact:
        return {"confirmed": False, "confidence": "medium",
                "why": "the applications suffer (%s) but Redis shows no pressure: look at the database, queues "
                       "or the network" % ", ".join(sorted({i["signal"] for i in impact}))}
    confidence = "high" if len(answered) >= 2 and not whole_sources else "low" if len(answered) <= 1 else "medium"
    return {"confirmed": False, "confidence": confidence,
            "why": "no Redis pressure and no application impact in %s" % (", ".join(answered) or "any source")}


VERDICT_ARG_SPEC: Dict[str, Dict[str, Any]] = {
    "redis": {"type": "dict"},
    "prometheus": {"type": "dict"},
    "kubernetes": {"type": "dict"},
    "thresholds": {"type": "dict", "default": {}},
    "ingresses": {"type": "list", "elements": "dict", "default": []},
    "redis_fd_limit": {"type": "int"},
    "top": {"type": "int", "default": 10},
    "output_file": {"type": "path"},
}


def run_verdict(params: Dict[str, Any]) -> Dict[str, Any]:
    """The storm_verdict result from its validated parameters."""
    verdict = triage_verdict(
        params.get("redis"), params.get("prometheus"), params.get("kubernetes"),
        thresholds=params.get("thresholds"), ingresses=params.get("ingresses"),
        redis_fd_limit=params.get("redis_fd_limit"), top=int(params.get("top") or 0),
    )
    if params.get("output_file"):
        write_report(str(params["output_file"]), verdict)
    return {"storm_triage": verdict, "summary_lines": summary_lines(verdict)}
