# -*- coding: utf-8 -*-
# Copyright: fintech SRE
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Whether a storm makes the cache lie: keys evicted, or expired keys left in place, during the window.

A Redis under memory pressure evicts keys (``evicted_keys`` rises) and an overloaded one falls behind
expiring keys (``expired_stale_perc``, the share of keys Redis estimates expired but not yet removed,
rises). Either way the applications read what is missing or stale and may serve it as truth. The
two INFO stats samples triage takes a window apart tell both, with the values and the window.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional


def _number(info: Dict[str, Any], key: str) -> Optional[float]:
    try:
        return float(info[key])
    except (KeyError, TypeError, ValueError):
        return None  # a Redis before 6.0 has no expired_stale_perc


def reading(first: Dict[str, Any], second: Dict[str, Any], seconds: float) -> Dict[str, Any]:
    """Both counters at each end of the window, how much they rose, and the warning when either did."""
    values = {key: {"before": _number(first, key), "after": _number(second, key)}
              for key in ("evicted_keys", "expired_stale_perc")}
    for value in values.values():
        known = value["before"] is not None and value["after"] is not None
        value["rise"] = round(value["after"] - value["before"], 2) if known else None  # type: ignore[operator]
    result: Dict[str, Any] = dict(values, window_seconds=round(seconds, 3))
    result["warning"] = warning(result)
    return result


def warning(result: Dict[str, Any]) -> Optional[str]:
    """One sentence with the evidence when evicted_keys or expired_stale_perc rose in the window, else None."""
    parts: List[str] = []
    evicted, stale = result["evicted_keys"], result["expired_stale_perc"]
    if (evicted["rise"] or 0) > 0:
        parts.append("evicted_keys rose from %d to %d" % (evicted["before"], evicted["after"]))
    if (stale["rise"] or 0) > 0:
        parts.append("expired_stale_perc rose from %s%% to %s%%" % (stale["before"], stale["after"]))
    if not parts:
        return None
    where = " on %s" % ", ".join(result["nodes"]) if result.get("nodes") else ""
    return ("stale cache may be served as truth: %s in %ss%s during the storm; check that the applications "
            "treat a cache miss as a miss (read the database) and do not serve stale values"
            % (" and ".join(parts), _seconds(result["window_seconds"]), where))


def _seconds(value: float) -> str:
    return ("%.2f" % value).rstrip("0").rstrip(".")


def merge(readings: Dict[str, Dict[str, Any]]) -> Optional[Dict[str, Any]]:
    """One reading over a cluster's nodes (by node address): evictions summed, the highest stale share."""
    if not readings:
        return None

    def total(key: str, end: str, combine: Any) -> Optional[float]:
        found = [r[key][end] for r in readings.values() if r[key][end] is not None]
        return combine(found) if found else None

    merged: Dict[str, Any] = {}
    for key, combine in (("evicted_keys", sum), ("expired_stale_perc", max)):
        merged[key] = {end: total(key, end, combine) for end in ("before", "after")}
        rises = [r[key]["rise"] for r in readings.values() if r[key]["rise"] is not None]
        merged[key]["rise"] = round(combine(rises), 2) if rises else None
    merged["window_seconds"] = max(r["window_seconds"] for r in readings.values())
    merged["nodes"] = sorted(node for node, r in readings.items() if r["warning"])
    merged["warning"] = warning(merged)
    return merged
