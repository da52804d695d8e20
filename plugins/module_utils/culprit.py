# -*- coding: utf-8 -*-
# Copyright: fintech SRE
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The storm's shape and the offenders ranked by the measure that fits it.

"Holds the most connections" names the culprit of a pool misconfiguration only. In a reconnect or
retry storm the culprit *opens* the most connections per second; in an autoscaling burst its *new
pods* bring the connections. Redis tells these apart (client ids and ages across the sampling
window, joined with pod start times), so the ranking measure follows the shape. The apps' own pool
gauges never rank while Redis answers.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence, Tuple

POOL_EXHAUSTION = "pool_exhaustion"
RECONNECT_STORM = "reconnect_storm"
SCALE_OUT_BURST = "scale_out_burst"
MIXED = "mixed"

# The offender field each measure reads, and what it says.
MEASURES: Dict[str, Tuple[str, str]] = {
    "held": ("connections", "connections held"),
    "churn": ("opened_per_sec", "connections opened per second"),
    "burst": ("young_pod_connections", "connections from pods started in the burst window"),
}
SHAPE_MEASURES: Dict[str, Tuple[str, ...]] = {
    POOL_EXHAUSTION: ("held",), RECONNECT_STORM: ("churn",), SCALE_OUT_BURST: ("burst",),
    MIXED: ("churn", "burst"),
}
SCALING = ("scaling_up", "scaled_out", "at_max")


def _value(offender: Dict[str, Any], measure: str) -> float:
    value = offender.get(MEASURES[measure][0])
    if measure == "burst" and offender.get("hpa_state") not in SCALING:
        return 0.0  # new pods of a rollout are not a scale-out: the autoscaler must have added them
    try:
        return max(float(value or 0.0), 0.0)
    except (TypeError, ValueError):
        return 0.0


def totals(offenders: Sequence[Dict[str, Any]]) -> Dict[str, float]:
    return {measure: sum(_value(o, measure) for o in offenders) for measure in MEASURES}


def storm_shape(offenders: Sequence[Dict[str, Any]], churn: Optional[Dict[str, Any]],
                limits: Dict[str, float], utilization: Optional[float] = None) -> Tuple[str, List[str]]:
    """The shape and the sentences that show it (``utilization``: Redis' connections against maxclients)."""
    sums = totals(offenders)
    held, opened, burst = sums["held"], sums["churn"], sums["burst"]
    evidence = []
    if (churn or {}).get("emptied"):
        evidence.append("Redis was just emptied; the window was read after its reconnect wave (%s s of reads)" % (
            (churn or {}).get("waited_seconds")))
    # the held connections are no storm in a Redis far from full: then the reconnects are, whatever the pools hold
    filling = utilization is None or utilization >= limits["utilization_warning"]
    reconnecting = opened >= limits["reconnect_per_sec"] and (
        not filling or opened >= limits["reconnect_turnover"] * max(held, 1.0))
    if reconnecting:
        evidence.append("%s connections opened per second against %s held" % (_fmt(opened), _fmt(held)))
    # new pods are a burst when they bring most of the connections of a Redis they fill
    bursting = burst > 0 and burst >= limits["burst_share"] * max(held, 1.0) and (
        utilization is None or utilization >= limits["utilization_warning"])
    if bursting:
        evidence.append("%s of the %s connections held come from pods an autoscaler started in the burst window" % (
            _fmt(burst), _fmt(held)))
    if reconnecting and bursting:
        return MIXED, evidence
    if reconnecting:
        return RECONNECT_STORM, evidence
    if bursting:
        return SCALE_OUT_BURST, evidence
    evidence.append("%s connections held, %s opened per second: the connections stay open" % (
        _fmt(held), _fmt(opened)))
    return POOL_EXHAUSTION, evidence


def score(offender: Dict[str, Any], shape: str, sums: Dict[str, float]) -> float:
    """The offender's share of the shape's measure (the mean of its shares when the storm is mixed)."""
    measures = SHAPE_MEASURES[shape]
    shares = [_value(offender, m) / sums[m] if sums[m] else 0.0 for m in measures]
    return sum(shares) / len(shares)


def rank(offenders: Sequence[Dict[str, Any]], shape: str) -> List[Dict[str, Any]]:
    """Highest share of the shape's measure first; ties by connections held, log signals, restarts, name."""
    sums = totals(offenders)

    def key(o: Dict[str, Any]) -> Tuple[Any, ...]:
        signals = sum(int(v or 0) for v in (o.get("log_signatures") or {}).values() if isinstance(v, (int, float)))
        return (-round(score(o, shape, sums), 6), -int(o.get("connections") or 0), -signals,
                -int(o.get("restarts") or 0), str(o.get("namespace")), str(o.get("name")))

    return sorted(offenders, key=key)


def judge(offenders: Sequence[Dict[str, Any]], churn: Optional[Dict[str, Any]], limits: Dict[str, float],
          utilization: Optional[float] = None) -> Tuple[List[Dict[str, Any]], Dict[str, Any]]:
    """Offenders ranked by the storm's shape, and the culprit record: shape, measure, how sure, why."""
    shape, evidence = storm_shape(offenders, churn, limits, utilization)
    ranked = rank(offenders, shape)
    sums = totals(ranked)
    source = "redis_" + "_".join(SHAPE_MEASURES[shape])
    for offender in ranked:
        offender["connections_from"] = source
        offender["measure_share"] = round(score(offender, shape, sums), 4)
        for measure in MEASURES:
            offender["%s_share" % measure] = round(_value(offender, measure) / sums[measure], 4) if sums[measure] \
                else 0.0
    shares = [o["measure_share"] for o in ranked]
    leading = shares[0] if shares else 0.0
    margin = leading - (shares[1] if len(shares) > 1 else 0.0)
    # the leader, then whoever else storms by the shape's first measure (a mixed storm's churn)
    first = SHAPE_MEASURES[shape][0]
    named = ranked[:1] + [o for o in ranked[1:] if o["%s_share" % first] >= limits["culprit_share"]
                          or _reconnecting_alone(o, shape, limits)][:2]
    uncertain = _uncertain(shape, churn, sums, limits, ranked)
    record = {
        "shape": shape,
        "measure": " and ".join(MEASURES[m][1] for m in SHAPE_MEASURES[shape]),
        "connections_from": source,
        "evidence": evidence,
        "certain": uncertain is None,
        "why": uncertain or "%s leads with %s of the %s, %s points ahead of the next" % (
            _who(ranked[0]) if ranked else "nobody", _pct(leading), " and ".join(
                MEASURES[m][1] for m in SHAPE_MEASURES[shape]), _fmt(margin * 100)),
        "share": round(leading, 4),
        "margin": round(margin, 4),
        "workloads": [_who(o) for o in named] if uncertain is None else [],
    }
    return ranked, record


def _reconnecting_alone(offender: Dict[str, Any], shape: str, limits: Dict[str, float]) -> bool:
    """The workload's own reconnects are a storm, whatever its share (two reads sample short-lived connections
    thinly): it opened more connections in the window than it holds (a pool refilling opens at most its size)."""
    if "churn" not in SHAPE_MEASURES[shape]:
        return False
    held = int(offender.get("connections") or 0)
    return _value(offender, "churn") >= limits["reconnect_per_sec"] and int(offender.get("opened") or 0) > held


def _uncertain(shape: str, churn: Optional[Dict[str, Any]], sums: Dict[str, float], limits: Dict[str, float],
               ranked: Sequence[Dict[str, Any]]) -> Optional[str]:
    """Why no culprit can be named from Redis' numbers, or None when one can."""
    window = churn or {}
    if window.get("emptied") and (not window.get("wave_settled") or not ranked):
        return ("Redis was just emptied (a blip, a CLIENT KILL or a restart) and its reconnect wave had not settled "
                "after %s s of reads: every pool is refilling at once, so no measure tells who storms yet; triage "
                "again in a few seconds" % window.get("waited_seconds"))
    if not ranked:
        return "no workload of the namespaces read holds or opens Redis connections"
    if not any(sums[m] for m in SHAPE_MEASURES[shape]):
        return "no workload shows %s" % " or ".join(MEASURES[m][1] for m in SHAPE_MEASURES[shape])
    return None


def _who(offender: Dict[str, Any]) -> str:
    return "/".join(str(x) for x in (offender.get("namespace"), offender.get("name")) if x)


def _fmt(value: float) -> str:
    text = "%.1f" % value
    return text[:-2] if text.endswith(".0") else text


def _pct(value: float) -> str:
    return "%s%%" % _fmt(value * 100)
