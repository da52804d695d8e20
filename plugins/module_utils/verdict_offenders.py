# -*- coding: utf-8 -*-
# Copyright: fintech SRE
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The offenders as the verdict lists them, and the evidence they give.

Ranked by the storm's shape (``culprit``) from Redis' numbers joined to the cluster's workloads;
by the apps' own pool gauges when Redis could not be read; by client name or address when the
cluster could not be read either.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Tuple

from ansible_collections.fintech.redis_storm.plugins.module_utils import culprit
from ansible_collections.fintech.redis_storm.plugins.module_utils.evidence import (
    Collector,
    PromView,
    failure,
    number,
    pct,
    rounded,
    signature_count,
    who,
)
from ansible_collections.fintech.redis_storm.plugins.module_utils.thresholds import (
    REFUSAL_SIGNATURES,
    RETRY_SIGNATURES,
    TIMEOUT_SIGNATURES,
)


def _hpa_state(hpa: Optional[Dict[str, Any]], pods: Any = None) -> str:
    """none | paused | at_max | scaling_up | scaled_out (above its floor, settled) | steady.

    A KEDA ScaledObject whose generated HPA has no status yet reports no current/desired count:
    then the workload's live pods stand for current, and pods above the floor mean it scaled out.
    """
    if not hpa:
        return "none"
    if hpa.get("paused"):
        return "paused"
    current, desired, maximum = (number(hpa.get(k)) for k in ("current", "desired", "max"))
    if current is None and desired is None:
        current = number(pods)
        floor = number(hpa.get("min"))
        if current is not None and maximum is not None and current >= maximum:
            return "at_max"
        if current is not None and floor is not None and current > floor:
            return "scaling_up"
        return "steady"
    floor = number(hpa.get("min"))
    if current is not None and maximum is not None and current >= maximum:
        return "at_max"
    if desired is not None and maximum is not None and desired >= maximum:
        return "at_max"
    if current is not None and desired is not None and desired > current:
        return "scaling_up"
    if current is not None and floor is not None and current > floor:
        return "scaled_out"
    return "steady"


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
    workloads = list((kubernetes or {}).get("workloads") or []) if not failure(kubernetes, "kubernetes") else []
    redis_read = not failure(redis, "redis") and bool((redis or {}).get("reachable"))
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
        offender["app_connections"] = rounded(prom.for_workload("client_connections", namespace, name))
        offender["app_connections_peak"] = rounded(prom.for_workload("client_connections_peak", namespace, name))
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
        offenders.sort(key=lambda o: (-o["connections"], -sum(int(number(v) or 0) for v in o.get(
            "log_signatures", {}).values()), -o.get("restarts", 0), str(o.get("namespace")), str(o.get("name"))))
    elif offenders or (redis_read and not failure(kubernetes, "kubernetes")):
        # the join found no workload behind Redis' clients: the record says the culprit is uncertain, and why
        offenders, record = culprit.judge(offenders, (redis or {}).get("churn"), limits,
                                          number(((redis or {}).get("clients") or {}).get("utilization")))
        _doubt_when_outside_leads(record, offenders, kubernetes)
    if not offenders:
        offenders = sorted(_offenders_without_cluster(redis, prom), key=lambda o: (-o["connections"], str(o["name"])))
    for offender in offenders:
        namespace, name = str(offender.get("namespace") or ""), str(offender.get("name") or "")
        ingress = _ingress_for(ingresses, namespace, name) if namespace else None
        offender["ingress"] = "%s/%s" % (ingress.get("namespace", namespace), ingress.get("name")) if ingress else None
        offender["request_growth"] = rounded(prom.for_workload("app_request_growth", namespace, name))
        offender["error_ratio"] = rounded(prom.for_workload("app_error_ratio", namespace, name))
    return (offenders[:top] if top > 0 else offenders), record


def unattributed(kubernetes: Optional[Dict[str, Any]]) -> Dict[str, Any]:
    """Redis' clients the cluster's join found no workload for (outside the namespaces read, a node, an
    external client, a shared hostNetwork address): counted and shown, never ranked as a workload."""
    items = [] if failure(kubernetes, "kubernetes") else list((kubernetes or {}).get("unattributed_connections") or [])
    addresses = [{"ip": str(i.get("ip")), "connections": int(i.get("connections") or 0),
                  "names": list(i.get("names") or []), "reason": str(i.get("reason") or "")} for i in items]
    return {"connections": sum(a["connections"] for a in addresses), "addresses": addresses}


# A shape's first measure as unattributed addresses carry it too (no pod age outside): field, what it counts.
OUTSIDE_MEASURES = {"held": ("connections", "connections held"), "churn": ("opened", "connections opened")}


def _doubt_when_outside_leads(record: Dict[str, Any], offenders: List[Dict[str, Any]],
                              kubernetes: Optional[Dict[str, Any]]) -> None:
    """No culprit among the watched workloads when addresses no workload has storm more than the leader:
    the storm may come from outside the namespaces read, and a rung would act on an innocent workload."""
    measure = OUTSIDE_MEASURES.get(culprit.SHAPE_MEASURES[record["shape"]][0])
    if not record["certain"] or not offenders or measure is None:
        return
    field, counted = measure
    items = [] if failure(kubernetes, "kubernetes") else list((kubernetes or {}).get("unattributed_connections") or [])
    outside = sum(int(number(i.get(field)) or 0) for i in items)
    leader = int(number(offenders[0].get(field)) or 0)
    if outside <= leader:
        return
    record.update(certain=False, workloads=[], why=(
        "addresses no workload of the namespaces read has account for more %s (%d) than the leading workload %s "
        "(%d): the storm may come from outside the watched namespaces (see the addresses not attributed to any "
        "workload); add their namespace to storm_namespaces, with a RoleBinding of redis-storm-triage there"
        % (counted, outside, who(offenders[0]), leader)))


def _reshare(offenders: List[Dict[str, Any]]) -> None:
    total = sum(o["connections"] for o in offenders)
    for offender in offenders:
        offender["connection_share"] = round(offender["connections"] / total, 4) if total else 0.0


def _offenders_without_cluster(redis: Optional[Dict[str, Any]], prom: PromView) -> List[Dict[str, Any]]:
    """Offenders by Redis client name (or address) when the cluster could not be read."""
    grouped: Dict[Tuple[str, str], int] = {}
    source = "redis"
    for entry in (redis or {}).get("top_sources") or [] if not failure(redis, "redis") else []:
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


def offender_evidence(evidence: Collector, offenders: List[Dict[str, Any]], limits: Dict[str, float],
                      source: str) -> None:
    if not offenders:
        return
    top = offenders[0]
    holder = who(top)
    if top["connections"] > 0:
        evidence.add(source, "top_offender_share", top["connection_share"], limits["offender_share"],
                     top["connection_share"] >= limits["offender_share"],
                     "%s holds %s connections (%s, counted by %s)" % (
                         holder, top["connections"], pct(top["connection_share"]), top.get("connections_from")))
    signatures: Dict[str, int] = {}
    for offender in offenders:
        for name, count in (offender.get("log_signatures") or {}).items():
            signatures[name] = signatures.get(name, 0) + int(number(count) or 0)
    if signatures:
        timeouts = signature_count(signatures, TIMEOUT_SIGNATURES)
        refusals = signature_count(signatures, REFUSAL_SIGNATURES)
        retries = signature_count(signatures, RETRY_SIGNATURES)
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
    crashing = [who(o) for o in offenders if o.get("crashloop")]
    if crashing:
        evidence.add("kubernetes", "crashloop", len(crashing), 1, True, "CrashLoopBackOff: %s" % ", ".join(crashing))
    oom = [who(o) for o in offenders if o.get("oomkilled")]
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


def culprit_evidence(evidence: Collector, named: Dict[str, Any], limits: Dict[str, float]) -> None:
    evidence.add("redis", "storm_shape", named["shape"], "pool_exhaustion|reconnect_storm|scale_out_burst|mixed",
                 named["shape"] != culprit.POOL_EXHAUSTION, "; ".join(named["evidence"]))
    evidence.add("redis", "culprit_share", named["share"], limits["culprit_share"],
                 named["certain"] and named["share"] >= limits["culprit_share"],
                 "ranked by %s (%s): %s" % (named["measure"], named["connections_from"], named["why"]))
