# -*- coding: utf-8 -*-
# Copyright: fintech SRE
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Triage's evidence: each signal read from the registered results of the three views, tied to its source
and threshold, and whether it breached it.

A source that failed only removes its evidence (``failure`` says why it holds no answer); the
numbers and names are formatted here for the notes, the rungs' reasons and the summary alike.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Tuple

# The key each source's answer always has; a registered result without it failed (``failed_when: false``
# keeps the result but resets ``failed``).
ANSWER_KEYS = {"redis": "reachable", "prometheus": "answers", "kubernetes": "workloads"}


def failure(result: Optional[Dict[str, Any]], source: str) -> Optional[str]:
    """Why a registered result holds no answer, or None when it does."""
    if not result:
        return "not read"
    if result.get("skipped"):
        return "not configured (skipped)"
    if result.get("failed") or ANSWER_KEYS[source] not in result:
        return str(result.get("msg") or "no answer")
    return None


def number(value: Any) -> Optional[float]:
    if isinstance(value, bool) or value is None:
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _last(item: Dict[str, Any]) -> Optional[float]:
    if "values" in item:
        values = item.get("values") or []
        return number(values[-1][1]) if values else None
    return number(item.get("value"))


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
        direct = number(item.get("value"))
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
        self.items.append({"source": source, "signal": signal, "observed": rounded(observed),
                           "threshold": rounded(threshold), "breached": bool(breached), "note": note})
        return bool(breached)

    def breached(self, *signals: str) -> List[Dict[str, Any]]:
        return [i for i in self.items if i["breached"] and (not signals or i["signal"] in signals)]


def rounded(value: Any) -> Any:
    if isinstance(value, float):
        return round(value, 4)
    return value


def fmt(value: Optional[float], digits: int = 3) -> str:
    if value is None:
        return "unknown"
    text = ("%%.%df" % digits) % value
    return text.rstrip("0").rstrip(".") if "." in text else text


def pct(value: Optional[float]) -> str:
    return "unknown" if value is None else "%s%%" % fmt(value * 100, 1)


def signature_count(signatures: Dict[str, Any], names: Tuple[str, ...]) -> int:
    total = 0
    for key, count in (signatures or {}).items():
        if key in names:
            total += int(number(count) or 0)
    return total


def who(offender: Dict[str, Any]) -> str:
    return "/".join(str(x) for x in (offender.get("namespace"), offender.get("name")) if x)


def redis_evidence(evidence: Collector, redis: Dict[str, Any], limits: Dict[str, float]) -> None:
    clients = redis.get("clients") or {}
    utilization = number(clients.get("utilization"))
    if utilization is not None:
        evidence.add("redis", "utilization", utilization, limits["utilization_warning"],
                     utilization >= limits["utilization_warning"],
                     "%s of %s connections in use (INFO clients)" % (clients.get("connected"), clients.get("max"))
                     if not redis.get("saturating_node") else _hottest_note(redis))
    rates = redis.get("rates") or {}
    new_rate = number(rates.get("new_connections_per_sec"))
    if new_rate is not None:
        evidence.add("redis", "new_connections_per_sec", new_rate, limits["new_connections_per_sec"],
                     new_rate >= limits["new_connections_per_sec"],
                     "new connections per second between two INFO samples")
    rejected = number(rates.get("rejected_per_sec"))
    if rejected is not None:
        evidence.add("redis", "rejected_per_sec", rejected, 0.0, rejected > 0,
                     "connections refused at maxclients per second")
    latency = number((redis.get("latency_ms") or {}).get("p99"))
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


def prometheus_evidence(evidence: Collector, prom: PromView, limits: Dict[str, float]) -> None:
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
                         fmt(prom.value("connected_clients"), 0), fmt(prom.value("maxclients"), 0)))
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
                         "stale cache may be served as truth: %s %s by %s" % (what, fmt(value), query)
                         if value > 0 else "%s: %s (%s)" % (what, fmt(value), query))
    for signal, name in (("db_connections", "db_connections"), ("queue_backlog", "queue_backlog")):
        value = prom.value(name)
        if value is not None:
            evidence.add("prometheus", signal, value, limits[signal], value >= limits[signal],
                         "optional check (%s)" % prom.results.get(name, {}).get("query", name))
