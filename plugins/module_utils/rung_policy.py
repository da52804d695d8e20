# -*- coding: utf-8 -*-
# Copyright: fintech SRE
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Which rungs of the ladder triage's evidence supports, in ladder order, each with its reason."""

from __future__ import annotations

from typing import Any, Dict, List, Optional

from ansible_collections.fintech.redis_storm.plugins.module_utils import culprit
from ansible_collections.fintech.redis_storm.plugins.module_utils.evidence import (
    Collector,
    PromView,
    fmt,
    number,
    pct,
    signature_count,
    who,
)
from ansible_collections.fintech.redis_storm.plugins.module_utils.ladder import LADDER, RUNGS
from ansible_collections.fintech.redis_storm.plugins.module_utils.thresholds import REFUSAL_SIGNATURES, RETRY_SIGNATURES


def recommend_rungs(
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
    breaker; a burst, pausing the autoscaler that started its new pods; pool exhaustion, scaling the
    holder down (any top offender that holds most connections). An uncertain culprit supports no rung
    that acts on an offender.
    """
    reasons: Dict[str, str] = {}
    top = offenders[0] if offenders else None
    holders = [o for o in offenders if o["connections"] > 0]
    shape = named["shape"] if named else None
    uncertain = named is not None and not named["certain"]
    if uncertain:
        top = None

    if top and top.get("ingress"):
        growth = number(top.get("request_growth"))
        if growth is not None and growth >= limits["app_request_growth"]:
            reasons["ingress_rate_limit"] = "%s is behind ingress %s and its request rate is %sx its recent median" % (
                who(top), top["ingress"], fmt(growth, 2))

    retrying = sorted(((signature_count(o.get("log_signatures") or {}, RETRY_SIGNATURES), who(o)) for o in offenders),
                      key=lambda pair: -pair[0])
    retry_lines = sum(count for count, _name in retrying)
    churn = evidence.breached("new_connections_per_sec")
    churning = top is not None and shape in (culprit.RECONNECT_STORM, culprit.MIXED)
    if churning and top is not None:
        reasons["client_retries"] = "%s opens %s connections per second (%s of those opened in Redis' window): its " \
                                    "retries reconnect in a loop" % (who(top), fmt(number(top.get(
                                        "opened_per_sec")), 1), pct(top.get("churn_share")))
        reasons["circuit_breaker"] = "%s reconnects in a loop: its open circuit breaker stops its Redis calls " \
                                     "until Redis recovers" % who(top)
    elif uncertain:
        pass
    elif retry_lines >= limits["retry_log_lines"]:
        reasons["client_retries"] = "the clients log %d retry lines (most: %s, %d): retries multiply the " \
                                    "connections" % (retry_lines, retrying[0][1], retrying[0][0])
    elif churn:
        reasons["client_retries"] = "%s new connections per second (threshold %s): clients reconnect in a loop" % (
            fmt(number(churn[0]["observed"]), 1), fmt(limits["new_connections_per_sec"]))

    timeouts = evidence.breached("timeout_log_lines")
    timeout_count = number(timeouts[0]["observed"]) if timeouts else None
    largest_other = max([signature_count(o.get("log_signatures") or {}, (name,)) for o in offenders
                         for name in REFUSAL_SIGNATURES] or [0])
    slow = evidence.breached("app_latency_p99_seconds")
    if "circuit_breaker" in reasons or uncertain:
        pass
    elif timeout_count is not None and (timeout_count >= largest_other or slow):
        reasons["circuit_breaker"] = "timeouts dominate: %d RedisTimeoutException lines%s: fail fast instead of " \
                                     "piling up" % (timeout_count, ", app p99 %ss" % fmt(number(slow[0]["observed"]))
                                                    if slow else " (more than any other error)")
    elif slow and evidence.breached("redis_command_latency_ms", "ping_latency_p99_ms"):
        reasons["circuit_breaker"] = "app p99 latency %ss while Redis itself is slow: requests pile up waiting" % (
            fmt(number(slow[0]["observed"])))

    # a cluster node refuses clients at its own maxclients, not the cluster's sum
    node = (redis or {}).get("saturating_node") or (redis or {}).get("clients") or {}
    maxclients = number(node.get("max")) or prom.value("maxclients")
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
                                        len(holders), who(top), pct(top["connection_share"]))

    # the top offender of any shape is scaled down only when it also holds the connections
    if top and top["connections"] > 0 and top["connection_share"] >= limits["offender_share"]:
        reasons["offender_scale_down"] = "%s holds %s of the connections (threshold %s)" % (
            who(top), pct(top["connection_share"]), pct(limits["offender_share"]))

    if top and top.get("hpa_state") in ("scaling_up", "at_max", "scaled_out"):
        hpa = top["hpa"] or {}
        reasons["hpa_pause"] = "the %s of %s is %s (current %s, desired %s, min %s, max %s): more pods, more " \
                               "connections" % (hpa.get("kind", "autoscaler"), who(top),
                                                top["hpa_state"].replace("_", " "), hpa.get("current", top.get("pods")),
                                                hpa.get("desired"), hpa.get("min"), hpa.get("max"))
    acting = [r["name"] for r in RUNGS if r["acts_on"] == "workload"]
    return [dict({"rung": rung, "reason": reasons[rung]}, **({"workload": who(top)} if top and rung in acting else {}))
            for rung in LADDER if rung in reasons]
