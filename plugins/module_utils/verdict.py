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
"""

from __future__ import annotations

import json
import os
import tempfile
from typing import Any, Dict, List, Optional, Tuple

from ansible_collections.fintech.redis_storm.plugins.module_utils import culprit
from ansible_collections.fintech.redis_storm.plugins.module_utils.errors import StormError
from ansible_collections.fintech.redis_storm.plugins.module_utils.ladder import LADDER, RUNGS

SOURCES = ("redis", "prometheus", "kubernetes")

DEFAULT_THRESHOLDS: Dict[str, float] = {
    # Redis connections in use against maxclients (0..1).
    "utilization_warning": 0.8,
    "utilization_critical": 0.95,
    # New connections Redis accepts per second.
    "new_connections_per_sec": 100.0,
    # Connections Redis refused at maxclients over the query window.
    "rejected_connections": 1.0,
    # Redis latency in milliseconds (our PING p99, or Prometheus' mean per command).
    "redis_latency_ms": 5.0,
    # Share (0..1) of app requests answered 5xx.
    "app_error_ratio": 0.05,
    # App request latency quantiles in seconds.
    "app_latency_p95_seconds": 0.25,
    "app_latency_p99_seconds": 0.5,
    # App request rate now against its recent median: above this the traffic rose.
    "app_request_growth": 1.5,
    # Share (0..1) of connections held by one workload that counts as disproportionate.
    "offender_share": 0.5,
    # Connections opened per second (CLIENT LIST ids across the window) that make a reconnect storm...
    "reconnect_per_sec": 20.0,
    # ...when they also replace this share of the held connections every second.
    "reconnect_turnover": 0.1,
    # Share (0..1) of held connections from pods an autoscaler started in the burst window: a scale-out burst.
    "burst_share": 0.5,
    # Share (0..1) of the ranking measure from which a second workload is named a culprit too (two storming at
    # once); one whose own reconnects are a storm is named whatever its share.
    "culprit_share": 0.4,
    # Log lines (over the lines read) that count as a signal.
    "retry_log_lines": 5.0,
    "timeout_log_lines": 5.0,
    "error_log_lines": 5.0,
    # Container restarts of one workload that count as a signal.
    "restarts": 3.0,
    # maxclients below this share of the open-files limit leaves room to raise it.
    "maxclients_fd_share": 0.5,
    # Without a known open-files limit: maxclients below Redis' default (sized to the limit) was lowered.
    "maxclients_floor": 10000.0,
    # Optional backlog checks.
    "db_connections": 200.0,
    "queue_backlog": 1000.0,
}

RATIO_THRESHOLDS = ("utilization_warning", "utilization_critical", "app_error_ratio", "offender_share",
                    "maxclients_fd_share", "burst_share", "culprit_share")

# Log signature names (storm_offenders_info's defaults) grouped by what they say.
RETRY_SIGNATURES = (culprit.RETRY_SIGNATURE,)
TIMEOUT_SIGNATURES = ("redis_timeout",)
REFUSAL_SIGNATURES = ("too_many_connections", "max_clients_reached", "connection_reset")
BREAKER_SIGNATURES = ("circuit_breaker_open",)

SEVERITY_ORDER = {"none": 0, "warning": 1, "critical": 2}


def merge_thresholds(thresholds: Optional[Dict[str, Any]]) -> Dict[str, float]:
    """Defaults overlaid with ``thresholds``; unknown names and out-of-range ratios are errors."""
    merged = dict(DEFAULT_THRESHOLDS)
    for name, value in (thresholds or {}).items():
        if name not in merged:
            raise StormError("unknown threshold %r: use one of %s" % (name, ", ".join(sorted(merged))))
        if value is None:
            continue
        try:
            number = float(value)
        except (TypeError, ValueError) as exc:
            raise StormError("threshold %s must be a number, got %r" % (name, value)) from exc
        if number < 0 or (name in RATIO_THRESHOLDS and number > 1):
            raise StormError("threshold %s must be %s, got %s" % (
                name, "between 0 and 1" if name in RATIO_THRESHOLDS else "0 or more", value))
        merged[name] = number
    if merged["utilization_warning"] > merged["utilization_critical"]:
        raise StormError("threshold utilization_warning (%s) is above utilization_critical (%s)" % (
            merged["utilization_warning"], merged["utilization_critical"]))
    return merged


# ---------------------------------------------------------------- reading the three views

# The key each source's answer always has; a registered result without it failed (``failed_when: false``
# keeps the result but resets ``failed``).
ANSWER_KEYS = {"redis": "reachable", "prometheus": "answers", "kubernetes": "workloads"}


def _failed(result: Optional[Dict[str, Any]], source: str) -> Optional[str]:
    """Why a registered result holds no answer, or None when it does."""
    if not result:
        return "not read"
    if result.get("skipped"):
        return "not configured (skipped)"
    if result.get("failed") or ANSWER_KEYS[source] not in result:
        return str(result.get("msg") or "no answer")
    return None


def _number(value: Any) -> Optional[float]:
    if isinstance(value, bool) or value is None:
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _last(item: Dict[str, Any]) -> Optional[float]:
    if "values" in item:
        values = item.get("values") or []
        return _number(values[-1][1]) if values else None
    return _number(item.get("value"))


class PromView:
    """Named answers of prometheus_query ``queries``: numbers and per-series values."""

    def __init__(self, result: Optional[Dict[str, Any]]) -> None:
        self.results: Dict[str, Dict[str, Any]] = dict((result or {}).get("answers") or {})
        self.errors = {name: str(item.get("error")) for name, item in self.results.items() if item.get("error")}

    def series(self, name: str) -> List[Tuple[Dict[str, Any], float]]:
        item = self.results.get(name) or {}
        found = []
        for entry in item.get("series") or []:
            value = _last(entry)
            if value is not None:
                found.append((dict(entry.get("metric") or {}), value))
        return found

    def value(self, name: str) -> Optional[float]:
        """The answer's one number, or the largest series value when there are several."""
        item = self.results.get(name) or {}
        direct = _number(item.get("value"))
        if direct is not None:
            return direct
        values = [value for _metric, value in self.series(name)]
        return max(values) if values else None

    def worst(self, name: str) -> Tuple[Optional[float], Dict[str, Any]]:
        ranked = sorted(self.series(name), key=lambda pair: -pair[1])
        return (ranked[0][1], ranked[0][0]) if ranked else (None, {})

    def for_workload(self, name: str, namespace: str, workload: str) -> Optional[float]:
        for labels, value in self.series(name):
            if labels.get("namespace") == namespace and workload in (
                    labels.get("service"), labels.get("app"), labels.get("deployment"), labels.get("workload")):
                return value
        return None


class Collector:
    """Evidence items as they are found, each tied to a source and a threshold."""

    def __init__(self) -> None:
        self.items: List[Dict[str, Any]] = []

    def add(self, source: str, signal: str, observed: Any, threshold: Any, breached: bool, note: str) -> bool:
        self.items.append({"source": source, "signal": signal, "observed": _round(observed),
                           "threshold": _round(threshold), "breached": bool(breached), "note": note})
        return bool(breached)

    def breached(self, *signals: str) -> List[Dict[str, Any]]:
        return [i for i in self.items if i["breached"] and (not signals or i["signal"] in signals)]


def _round(value: Any) -> Any:
    if isinstance(value, float):
        return round(value, 4)
    return value


def _fmt(value: Optional[float], digits: int = 3) -> str:
    if value is None:
        return "unknown"
    text = ("%%.%df" % digits) % value
    return text.rstrip("0").rstrip(".") if "." in text else text


def _pct(value: Optional[float]) -> str:
    return "unknown" if value is None else "%s%%" % _fmt(value * 100, 1)


# ---------------------------------------------------------------- offenders

def _hpa_state(hpa: Optional[Dict[str, Any]], pods: Any = None) -> str:
    """none | paused | at_max | scaling_up | scaled_out (above its floor, settled) | steady.

    A KEDA ScaledObject whose generated HPA has no status yet reports no current/desired count:
    then the workload's live pods stand for current, and pods above the floor mean it scaled out.
    """
    if not hpa:
        return "none"
    if hpa.get("paused"):
        return "paused"
    current, desired, maximum = (_number(hpa.get(k)) for k in ("current", "desired", "max"))
    if current is None and desired is None:
        current = _number(pods)
        floor = _number(hpa.get("min"))
        if current is not None and maximum is not None and current >= maximum:
            return "at_max"
        if current is not None and floor is not None and current > floor:
            return "scaling_up"
        return "steady"
    floor = _number(hpa.get("min"))
    if current is not None and maximum is not None and current >= maximum:
        return "at_max"
    if desired is not None and maximum is not None and desired >= maximum:
        return "at_max"
    if current is not None and desired is not None and desired > current:
        return "scaling_up"
    if current is not None and floor is not None and current > floor:
        return "scaled_out"
    return "steady"


def _signature_count(signatures: Dict[str, Any], names: Tuple[str, ...]) -> int:
    total = 0
    for key, count in (signatures or {}).items():
        if key in names:
            total += int(_number(count) or 0)
    return total


def _ingress_for(ingresses: List[Dict[str, Any]], namespace: str, name: str) -> Optional[Dict[str, Any]]:
    for ingress in ingresses or []:
        workload = str(ingress.get("workload") or "")
        if workload in (name, "%s/%s" % (namespace, name)) and ingress.get("namespace", namespace) == namespace:
            return ingress
    return None


def build_offenders(
    kubernetes: Optional[Dict[str, Any]],
    redis: Optional[Dict[str, Any]],
    prom: PromView,
    ingresses: List[Dict[str, Any]],
    top: int,
    limits: Dict[str, float],
) -> Tuple[List[Dict[str, Any]], Optional[Dict[str, Any]]]:
    """Workloads ranked by the storm's shape from Redis' numbers, and the culprit record.

    From the cluster's join when Redis answered; from the apps' pool gauges only when Redis could not
    be read; else from client names. The apps' gauges stand beside Redis' numbers as corroboration.
    """
    workloads = list((kubernetes or {}).get("workloads") or []) if not _failed(kubernetes, "kubernetes") else []
    redis_read = not _failed(redis, "redis") and bool((redis or {}).get("reachable"))
    offenders: List[Dict[str, Any]] = []
    for item in workloads:
        offenders.append({
            "namespace": item.get("namespace"), "kind": item.get("kind"), "name": item.get("name"),
            "connections": int(item.get("connections") or 0),
            "connection_share": float(item.get("connection_share") or 0.0),
            "opened": item.get("opened"), "opened_per_sec": item.get("opened_per_sec"),
            "young_pods": int(item.get("young_pods") or 0),
            "young_pod_connections": int(item.get("young_pod_connections") or 0),
            "connections_from": "redis",
            "pods": item.get("pods"), "restarts": int(item.get("restarts") or 0),
            "crashloop": bool(item.get("crashloop")), "oomkilled": bool(item.get("oomkilled")),
            "hpa": item.get("hpa"), "hpa_state": _hpa_state(item.get("hpa"), item.get("pods")),
            "log_signatures": dict(item.get("log_signatures") or {}),
        })
    for offender in offenders:
        namespace, name = str(offender["namespace"]), str(offender["name"])
        offender["app_connections"] = _round(prom.for_workload("client_connections", namespace, name))
        offender["app_connections_peak"] = _round(prom.for_workload("client_connections_peak", namespace, name))
    record: Optional[Dict[str, Any]] = None
    if offenders and not redis_read:
        # Redis could not be read: the apps' own pool gauges say who holds the connections.
        for offender in offenders:
            held = offender["app_connections"]
            if held is not None:
                offender["connections"] = round(held)
                offender["connections_from"] = "prometheus"
            else:
                offender["connections_from"] = "unknown"
        _reshare(offenders)
        offenders.sort(key=lambda o: (-o["connections"], -sum(int(_number(v) or 0) for v in o.get(
            "log_signatures", {}).values()), -o.get("restarts", 0), str(o.get("namespace")), str(o.get("name"))))
    elif offenders or (redis_read and not _failed(kubernetes, "kubernetes")):
        # the join found no workload behind Redis' clients: the record says the culprit is uncertain, and why
        rates = (redis or {}).get("rates") or {}
        refusals = {"rejected_per_sec": _number(rates.get("rejected_per_sec")),
                    "new_connections_per_sec": _number(rates.get("new_connections_per_sec")),
                    "rejected_connections": prom.value("rejected_connections"),
                    "peak_utilization": prom.value("utilization")}
        offenders, record = culprit.judge(offenders, (redis or {}).get("churn"), limits,
                                          _number(((redis or {}).get("clients") or {}).get("utilization")), refusals)
    if not offenders:
        offenders = sorted(_offenders_without_cluster(redis, prom), key=lambda o: (-o["connections"], str(o["name"])))
    for offender in offenders:
        namespace, name = str(offender.get("namespace") or ""), str(offender.get("name") or "")
        ingress = _ingress_for(ingresses, namespace, name) if namespace else None
        offender["ingress"] = "%s/%s" % (ingress.get("namespace", namespace), ingress.get("name")) if ingress else None
        offender["request_growth"] = _round(prom.for_workload("app_request_growth", namespace, name))
        offender["error_ratio"] = _round(prom.for_workload("app_error_ratio", namespace, name))
    return (offenders[:top] if top > 0 else offenders), record


def _reshare(offenders: List[Dict[str, Any]]) -> None:
    total = sum(o["connections"] for o in offenders)
    for offender in offenders:
        offender["connection_share"] = round(offender["connections"] / total, 4) if total else 0.0


def _offenders_without_cluster(redis: Optional[Dict[str, Any]], prom: PromView) -> List[Dict[str, Any]]:
    """Offenders by Redis client name (or address) when the cluster could not be read."""
    grouped: Dict[Tuple[str, str], int] = {}
    source = "redis"
    for entry in (redis or {}).get("top_sources") or [] if not _failed(redis, "redis") else []:
        names = entry.get("names") or []
        key = ("", str(names[0])) if names else ("", str(entry.get("ip")))
        grouped[key] = grouped.get(key, 0) + int(entry.get("connections") or 0)
    if not grouped:
        source = "prometheus"
        for labels, value in prom.series("client_connections"):
            key = (str(labels.get("namespace", "")), str(labels.get("service") or labels.get("app") or ""))
            grouped[key] = grouped.get(key, 0) + round(value)
    total = sum(grouped.values())
    return [{
        "namespace": namespace or None, "kind": None, "name": name, "connections": count,
        "connection_share": round(count / total, 4) if total else 0.0,
        "connections_from": source if namespace or source == "prometheus" else "client_name",
        "pods": None, "restarts": 0, "crashloop": False, "oomkilled": False,
        "hpa": None, "hpa_state": "unknown", "log_signatures": {},
    } for (namespace, name), count in grouped.items() if count > 0]


# ---------------------------------------------------------------- the verdict

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

    redis_problem = _failed(redis, "redis")
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
        _redis_evidence(evidence, redis or {}, limits)

    prom = PromView(None)
    prom_problem = _failed(prometheus, "prometheus")
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
            _prometheus_evidence(evidence, prom, limits)

    kube_problem = _failed(kubernetes, "kubernetes")
    if kube_problem:
        degraded.append({"source": "kubernetes", "reason": kube_problem})
    else:
        answered.append("kubernetes")
        for reason in (kubernetes or {}).get("degraded") or []:
            degraded.append({"source": "kubernetes", "reason": str(reason), "partial": True})

    offenders, named = build_offenders(kubernetes, redis, prom, list(ingresses or []), top, limits)
    counted_by = offenders[0].get("connections_from") if offenders else None
    _offender_evidence(evidence, offenders, limits,
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
            and _number(i["observed"]) is not None and float(i["observed"]) >= limits["utilization_critical"]]
        severity = "critical" if critical or impact else "warning"

    if storm and named is not None:
        _culprit_evidence(evidence, named, limits)
    bottleneck = _bottleneck(pressure + slow_redis, impact, answered, degraded)
    rungs = _rungs(storm, offenders, evidence, limits, prom, redis, redis_fd_limit, named) if storm else []
    evidence.items.sort(key=lambda i: (not i["breached"], SOURCES.index(i["source"])))
    return {
        "storm": storm,
        "severity": severity,
        "bottleneck_confirmed": bottleneck,
        "evidence": evidence.items,
        "offenders": offenders,
        "culprit": named,
        "recommended_rungs": rungs,
        "degraded_sources": degraded,
        "sources_answered": answered,
        "warnings": [i["note"] for i in evidence.items if i["signal"].startswith("stale_cache") and i["breached"]],
        "thresholds": limits,
        "summary": _summary(storm, severity, bottleneck, offenders, rungs, degraded, named),
    }


def summary_lines(verdict: Dict[str, Any], offenders: int = 3, evidence: int = 8) -> List[str]:
    """The short human summary printed at the end of triage: verdict, top offenders, evidence."""
    bottleneck = verdict["bottleneck_confirmed"]
    lines = ["Verdict: %s" % verdict["summary"],
             "Redis is the bottleneck: %s (%s confidence): %s" % (
                 "yes" if bottleneck["confirmed"] else "no", bottleneck["confidence"], bottleneck["why"])]
    top = list(verdict["offenders"][:offenders])
    lines.append("Top offenders:" if top else "Top offenders: none found")
    named = verdict.get("culprit")
    if named:
        lines.append("Culprit (%s, ranked by %s from %s): %s" % (
            named["shape"].replace("_", " "), named["measure"], named["connections_from"], named["why"]))
    for rank, offender in enumerate(top, 1):
        hpa = offender.get("hpa_state")
        lines.append("  %d. %s: %s connections (%s)%s%s%s%s" % (
            rank, _who(offender), offender["connections"], _pct(offender["connection_share"]),
            ", %s opened/s" % _fmt(_number(offender["opened_per_sec"]), 1)
            if offender.get("opened_per_sec") is not None else "",
            ", %d from new pods" % offender["young_pod_connections"] if offender.get("young_pod_connections") else "",
            ", autoscaler %s" % hpa.replace("_", " ") if hpa not in (None, "none", "unknown") else "",
            ", %d restarts" % offender["restarts"] if offender.get("restarts") else ""))
        if offender.get("app_connections") is not None and offender.get("connections_from") != "prometheus":
            lines.append("     apps' own pool gauge: %s now, %s at peak" % (
                _fmt(_number(offender["app_connections"]), 0), _fmt(_number(offender.get("app_connections_peak")), 0)))
    shown = [i for i in verdict["evidence"] if i["breached"]][:evidence]
    lines.append("Evidence:" if shown else "Evidence: nothing above its threshold")
    for item in shown:
        lines.append("  [%s] %s = %s (threshold %s): %s" % (
            item["source"], item["signal"], item["observed"], item["threshold"], item["note"]))
    for warning in verdict.get("warnings") or []:
        lines.append("Warning: %s" % warning)
    for rung in verdict["recommended_rungs"]:
        lines.append("Recommended %s: %s" % (rung["rung"], rung["reason"]))
    for gap in verdict["degraded_sources"]:
        lines.append("Degraded %s%s: %s" % (gap["source"], " (partly)" if gap.get("partial") else "", gap["reason"]))
    return lines


def _redis_evidence(evidence: Collector, redis: Dict[str, Any], limits: Dict[str, float]) -> None:
    clients = redis.get("clients") or {}
    utilization = _number(clients.get("utilization"))
    if utilization is not None:
        evidence.add("redis", "utilization", utilization, limits["utilization_warning"],
                     utilization >= limits["utilization_warning"],
                     "%s of %s connections in use (INFO clients)" % (clients.get("connected"), clients.get("max"))
                     if not redis.get("saturating_node") else _hottest_note(redis))
    rates = redis.get("rates") or {}
    new_rate = _number(rates.get("new_connections_per_sec"))
    if new_rate is not None:
        evidence.add("redis", "new_connections_per_sec", new_rate, limits["new_connections_per_sec"],
                     new_rate >= limits["new_connections_per_sec"],
                     "new connections per second between two INFO samples")
    rejected = _number(rates.get("rejected_per_sec"))
    if rejected is not None:
        evidence.add("redis", "rejected_per_sec", rejected, 0.0, rejected > 0,
                     "connections refused at maxclients per second")
    latency = _number((redis.get("latency_ms") or {}).get("p99"))
    if latency is not None:
        evidence.add("redis", "ping_latency_p99_ms", latency, limits["redis_latency_ms"],
                     latency >= limits["redis_latency_ms"], "p99 of our PING round trips")
    stale = redis.get("stale_cache") or {}
    if stale:
        evicted = (stale.get("evicted_keys") or {}).get("rise")
        evidence.add("redis", "stale_cache", evicted, 0, bool(stale.get("warning")),
                     stale.get("warning") or "no key evicted and no rise of expired_stale_perc in %ss"
                     % stale.get("window_seconds"))


def _hottest_note(redis: Dict[str, Any]) -> str:
    hottest = redis["saturating_node"]
    return "cluster node %s (%s) saturates first: %s of its %s connections in use; %s of %s over the cluster" % (
        hottest["node"], hottest["role"], "all" if hottest["saturated"] else hottest["connected"], hottest["max"],
        (redis.get("clients") or {}).get("connected"), (redis.get("clients") or {}).get("max"))


def _prometheus_evidence(evidence: Collector, prom: PromView, limits: Dict[str, float]) -> None:
    up = prom.value("redis_up")
    if up is not None:
        evidence.add("prometheus", "redis_up", up, 1.0, up < 1,
                     "redis_exporter cannot connect to Redis (saturated or down); the other Redis series are "
                     "the last values before that" if up < 1 else "redis_exporter reads Redis")
    utilization = prom.value("utilization")
    if utilization is None:
        utilization = prom.value("last_utilization")
    if utilization is not None:
        signal = "last_utilization" if up is not None and up < 1 else "utilization"
        evidence.add("prometheus", signal, utilization, limits["utilization_warning"],
                     utilization >= limits["utilization_warning"],
                     "redis_connected_clients / redis_config_maxclients (%s of %s)" % (
                         _fmt(prom.value("connected_clients"), 0), _fmt(prom.value("maxclients"), 0)))
    new_rate = prom.value("new_connections_per_sec")
    if new_rate is not None:
        evidence.add("prometheus", "new_connections_per_sec", new_rate, limits["new_connections_per_sec"],
                     new_rate >= limits["new_connections_per_sec"], "rate(redis_connections_received_total)")
    rejected = prom.value("rejected_connections")
    if rejected is not None:
        evidence.add("prometheus", "rejected_connections", rejected, limits["rejected_connections"],
                     rejected >= limits["rejected_connections"], "increase(redis_rejected_connections_total)")
    latency = prom.value("redis_command_latency_seconds")
    if latency is not None:
        evidence.add("prometheus", "redis_command_latency_ms", latency * 1000.0, limits["redis_latency_ms"],
                     latency * 1000.0 >= limits["redis_latency_ms"], "mean Redis command time (commandstats)")
    for signal, name, threshold in (
            ("app_error_ratio", "app_error_ratio", "app_error_ratio"),
            ("app_latency_p99_seconds", "app_latency_p99", "app_latency_p99_seconds"),
            ("app_latency_p95_seconds", "app_latency_p95", "app_latency_p95_seconds")):
        value, labels = prom.worst(name)
        if value is not None:
            where = "/".join(str(labels[k]) for k in ("namespace", "service") if labels.get(k)) or "all services"
            evidence.add("prometheus", signal, value, limits[threshold], value >= limits[threshold],
                         "worst service: %s" % where)
    growth, labels = prom.worst("app_request_growth")
    if growth is not None:
        where = "/".join(str(labels[k]) for k in ("namespace", "service") if labels.get(k)) or "all services"
        evidence.add("prometheus", "app_request_growth", growth, limits["app_request_growth"],
                     growth >= limits["app_request_growth"],
                     "request rate now against its recent median; most grown: %s" % where)
    for signal, name, what in (
            ("stale_cache_evicted_keys", "evicted_keys", "keys evicted"),
            ("stale_cache_expired_stale_perc", "expired_stale_perc_rise", "rise of expired_stale_perc (points)")):
        value = prom.value(name)
        if value is not None:
            query = prom.results.get(name, {}).get("query", name)
            evidence.add("prometheus", signal, value, 0, value > 0,
                         "stale cache may be served as truth: %s %s by %s" % (what, _fmt(value), query)
                         if value > 0 else "%s: %s (%s)" % (what, _fmt(value), query))
    for signal, name in (("db_connections", "db_connections"), ("queue_backlog", "queue_backlog")):
        value = prom.value(name)
        if value is not None:
            evidence.add("prometheus", signal, value, limits[signal], value >= limits[signal],
                         "optional check (%s)" % prom.results.get(name, {}).get("query", name))


def _offender_evidence(evidence: Collector, offenders: List[Dict[str, Any]], limits: Dict[str, float],
                       source: str) -> None:
    if not offenders:
        return
    top = offenders[0]
    who = _who(top)
    if top["connections"] > 0:
        evidence.add(source, "top_offender_share", top["connection_share"], limits["offender_share"],
                     top["connection_share"] >= limits["offender_share"],
                     "%s holds %s connections (%s, counted by %s)" % (
                         who, top["connections"], _pct(top["connection_share"]), top.get("connections_from")))
    signatures: Dict[str, int] = {}
    for offender in offenders:
        for name, count in (offender.get("log_signatures") or {}).items():
            signatures[name] = signatures.get(name, 0) + int(_number(count) or 0)
    if signatures:
        timeouts = _signature_count(signatures, TIMEOUT_SIGNATURES)
        refusals = _signature_count(signatures, REFUSAL_SIGNATURES)
        retries = _signature_count(signatures, RETRY_SIGNATURES)
        evidence.add("kubernetes", "timeout_log_lines", timeouts, limits["timeout_log_lines"],
                     timeouts >= limits["timeout_log_lines"], "RedisTimeoutException lines in the offenders' logs")
        evidence.add("kubernetes", "error_log_lines", refusals, limits["error_log_lines"],
                     refusals >= limits["error_log_lines"],
                     "'Too many connections', 'max number of clients reached', 'Connection reset by peer' lines")
        evidence.add("kubernetes", "retry_log_lines", retries, limits["retry_log_lines"],
                     retries >= limits["retry_log_lines"], "retry lines in the offenders' logs")
    restarts = sum(int(o.get("restarts") or 0) for o in offenders)
    if any(o.get("pods") is not None for o in offenders):
        evidence.add("kubernetes", "restarts", restarts, limits["restarts"], restarts >= limits["restarts"],
                     "container restarts of the offenders")
    crashing = [_who(o) for o in offenders if o.get("crashloop")]
    if crashing:
        evidence.add("kubernetes", "crashloop", len(crashing), 1, True, "CrashLoopBackOff: %s" % ", ".join(crashing))
    oom = [_who(o) for o in offenders if o.get("oomkilled")]
    if oom:
        evidence.add("kubernetes", "oomkilled", len(oom), 1, True, "OOMKilled: %s" % ", ".join(oom))
    if top.get("hpa"):
        state = top["hpa_state"]
        hpa = top["hpa"]
        evidence.add("kubernetes", "top_offender_hpa", state, "scaling_up|scaled_out|at_max",
                     state in ("scaling_up", "scaled_out", "at_max"),
                     "%s %s: current %s, desired %s, max %s%s" % (
                         hpa.get("kind"), hpa.get("name"), hpa.get("current"), hpa.get("desired"), hpa.get("max"),
                         ", paused" if hpa.get("paused") else ""))


def _culprit_evidence(evidence: Collector, named: Dict[str, Any], limits: Dict[str, float]) -> None:
    evidence.add("redis", "storm_shape", named["shape"], "|".join(culprit.SHAPES),
                 named["shape"] != culprit.POOL_EXHAUSTION, "; ".join(named["evidence"]))
    evidence.add("redis", "culprit_share", named["share"], limits["culprit_share"],
                 named["certain"] and named["share"] >= limits["culprit_share"],
                 "ranked by %s (%s): %s" % (named["measure"], named["connections_from"], named["why"]))


def _who(offender: Dict[str, Any]) -> str:
    return "/".join(str(x) for x in (offender.get("namespace"), offender.get("name")) if x)


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


def _rungs(
    storm: bool,
    offenders: List[Dict[str, Any]],
    evidence: Collector,
    limits: Dict[str, float],
    prom: PromView,
    redis: Optional[Dict[str, Any]],
    fd_limit: Optional[int],
    named: Optional[Dict[str, Any]] = None,
) -> List[Dict[str, Any]]:
    """The ladder's rungs the evidence supports, in ladder order, each with its reason and the workload it acts on.

    The rungs that act on an offender act on the top one, ranked by the storm's shape (``named``): a
    reconnect storm supports turning the churning workload's retries off and opening its circuit
    breaker, and so does a retry storm for the holder that retries; a burst, pausing the autoscaler
    that started its new pods; pool exhaustion, scaling the holder down (any top offender that holds
    most connections). An uncertain culprit supports no rung that acts on an offender.
    """
    reasons: Dict[str, str] = {}
    top = offenders[0] if offenders else None
    holders = [o for o in offenders if o["connections"] > 0]
    shape = named["shape"] if named else None
    uncertain = named is not None and not named["certain"]
    if uncertain:
        top = None

    if top and top.get("ingress"):
        growth = _number(top.get("request_growth"))
        if growth is not None and growth >= limits["app_request_growth"]:
            reasons["ingress_rate_limit"] = "%s is behind ingress %s and its request rate is %sx its recent median" % (
                _who(top), top["ingress"], _fmt(growth, 2))

    retrying = sorted(((_signature_count(o.get("log_signatures") or {}, RETRY_SIGNATURES), _who(o)) for o in offenders),
                      key=lambda pair: -pair[0])
    retry_lines = sum(count for count, _who in retrying)
    churn = evidence.breached("new_connections_per_sec")
    churning = top is not None and shape in (culprit.RECONNECT_STORM, culprit.MIXED)
    if shape == culprit.RETRY_STORM and top is not None:
        reasons["client_retries"] = "%s logs %d retry lines while Redis refuses connections: its retries refill " \
                                    "Redis after each drop" % (_who(top), _signature_count(
                                        top.get("log_signatures") or {}, RETRY_SIGNATURES))
        reasons["circuit_breaker"] = "%s retries into a Redis that refuses it: its open circuit breaker stops its " \
                                     "Redis calls until Redis recovers" % _who(top)
    elif churning and top is not None:
        reasons["client_retries"] = "%s opens %s connections per second (%s of those opened in Redis' window): its " \
                                    "retries reconnect in a loop" % (_who(top), _fmt(_number(top.get(
                                        "opened_per_sec")), 1), _pct(top.get("churn_share")))
        reasons["circuit_breaker"] = "%s reconnects in a loop: its open circuit breaker stops its Redis calls " \
                                     "until Redis recovers" % _who(top)
    elif uncertain:
        pass
    elif retry_lines >= limits["retry_log_lines"]:
        reasons["client_retries"] = "the clients log %d retry lines (most: %s, %d): retries multiply the " \
                                    "connections" % (retry_lines, retrying[0][1], retrying[0][0])
    elif churn:
        reasons["client_retries"] = "%s new connections per second (threshold %s): clients reconnect in a loop" % (
            _fmt(_number(churn[0]["observed"]), 1), _fmt(limits["new_connections_per_sec"]))

    timeouts = evidence.breached("timeout_log_lines")
    timeout_count = _number(timeouts[0]["observed"]) if timeouts else None
    largest_other = max([_signature_count(o.get("log_signatures") or {}, (name,)) for o in offenders
                         for name in REFUSAL_SIGNATURES] or [0])
    slow = evidence.breached("app_latency_p99_seconds")
    if "circuit_breaker" in reasons or uncertain:
        pass
    elif timeout_count is not None and (timeout_count >= largest_other or slow):
        reasons["circuit_breaker"] = "timeouts dominate: %d RedisTimeoutException lines%s: fail fast instead of " \
                                     "piling up" % (timeout_count, ", app p99 %ss" % _fmt(_number(slow[0]["observed"]))
                                                    if slow else " (more than any other error)")
    elif slow and evidence.breached("redis_command_latency_ms", "ping_latency_p99_ms"):
        reasons["circuit_breaker"] = "app p99 latency %ss while Redis itself is slow: requests pile up waiting" % (
            _fmt(_number(slow[0]["observed"])))

    # a cluster node refuses clients at its own maxclients, not the cluster's sum
    node = (redis or {}).get("saturating_node") or (redis or {}).get("clients") or {}
    maxclients = _number(node.get("max")) or prom.value("maxclients")
    if fd_limit and maxclients and maxclients < fd_limit * limits["maxclients_fd_share"]:
        reasons["redis_capacity"] = "maxclients %d is low against the open-files limit %d: there is room to raise " \
                                    "it" % (maxclients, fd_limit)
    elif not fd_limit and maxclients and maxclients < limits["maxclients_floor"]:
        reasons["redis_capacity"] = "maxclients %d is below Redis' default %d (which Redis sizes to its open-files " \
                                    "limit): it was lowered and can be raised at runtime" % (
                                        maxclients, limits["maxclients_floor"])
    elif len(holders) >= 2 and top and top["connection_share"] < limits["offender_share"]:
        reasons["redis_capacity"] = "the connections are spread over %d workloads (the largest, %s, holds %s): the " \
                                    "load grew evenly, Redis needs room" % (
                                        len(holders), _who(top), _pct(top["connection_share"]))

    # the top offender of any shape is scaled down only when it also holds the connections
    if top and top["connections"] > 0 and top["connection_share"] >= limits["offender_share"]:
        reasons["offender_scale_down"] = "%s holds %s of the connections (threshold %s)" % (
            _who(top), _pct(top["connection_share"]), _pct(limits["offender_share"]))

    if top and top.get("hpa_state") in ("scaling_up", "at_max", "scaled_out"):
        hpa = top["hpa"] or {}
        reasons["hpa_pause"] = "the %s of %s is %s (current %s, desired %s, min %s, max %s): more pods, more " \
                               "connections" % (hpa.get("kind", "autoscaler"), _who(top),
                                                top["hpa_state"].replace("_", " "), hpa.get("current", top.get("pods")),
                                                hpa.get("desired"), hpa.get("min"), hpa.get("max"))
    acting = [r["name"] for r in RUNGS if r["acts_on"] == "workload"]
    return [dict({"rung": rung, "reason": reasons[rung]}, **({"workload": _who(top)} if top and rung in acting else {}))
            for rung in LADDER if rung in reasons]


def _summary(storm: bool, severity: str, bottleneck: Dict[str, Any], offenders: List[Dict[str, Any]],
             rungs: List[Dict[str, Any]], degraded: List[Dict[str, Any]],
             named: Optional[Dict[str, Any]] = None) -> str:
    if not storm:
        text = "no connection storm"
    else:
        text = "%s connection storm" % severity
        if named is not None and not named["certain"]:
            text += ", culprit uncertain: %s" % named["why"]
        elif named is not None:
            text += ", top offender %s (%s, %s of the %s, %s points ahead)" % (
                ", then ".join(named["workloads"]), named["shape"].replace("_", " "), _pct(named["share"]),
                named["measure"], _fmt(named["margin"] * 100, 1))
        elif offenders and offenders[0]["connections"] > 0:
            top = offenders[0]
            text += ", top offender %s (%s of connections)" % (_who(top), _pct(top["connection_share"]))
        text += "; Redis %s the bottleneck (%s confidence)" % (
            "is" if bottleneck["confirmed"] else "is not confirmed as", bottleneck["confidence"])
        if rungs:
            text += "; recommended: %s" % ", ".join(r["rung"] for r in rungs)
    missing = sorted({d["source"] for d in degraded if not d.get("partial")})
    if missing:
        text += " (degraded: %s)" % ", ".join(missing)
    return text


# ---------------------------------------------------------------- the storm_verdict module and action

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


def write_report(path: str, verdict: Dict[str, Any]) -> None:
    """Write the verdict as JSON atomically, readable by its owner only."""
    directory = os.path.dirname(os.path.abspath(path))
    try:
        handle, temporary = tempfile.mkstemp(prefix=".storm_triage.", dir=directory)
    except OSError as exc:
        raise StormError("cannot write output_file %s: %s" % (path, exc)) from exc
    try:
        with os.fdopen(handle, "w") as stream:
            json.dump(verdict, stream, indent=2, sort_keys=True)
        os.chmod(temporary, 0o600)
        os.replace(temporary, path)
    except OSError as exc:
        raise StormError("cannot write output_file %s: %s" % (path, exc)) from exc
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)


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
