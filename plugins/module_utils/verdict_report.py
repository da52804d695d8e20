# -*- coding: utf-8 -*-
# Copyright: fintech SRE
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The verdict told: its one-line summary, the short summary printed at the end of triage, and the
report file written for the incident."""

from __future__ import annotations

import json
import os
import tempfile
from typing import Any, Dict, List, Optional

from ansible_collections.fintech.redis_storm.plugins.module_utils.errors import StormError
from ansible_collections.fintech.redis_storm.plugins.module_utils.evidence import fmt, number, pct, who


def summary_text(storm: bool, severity: str, bottleneck: Dict[str, Any], offenders: List[Dict[str, Any]],
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
                ", then ".join(named["workloads"]), named["shape"].replace("_", " "), pct(named["share"]),
                named["measure"], fmt(named["margin"] * 100, 1))
        elif offenders and offenders[0]["connections"] > 0:
            top = offenders[0]
            text += ", top offender %s (%s of connections)" % (who(top), pct(top["connection_share"]))
        text += "; Redis %s the bottleneck (%s confidence)" % (
            "is" if bottleneck["confirmed"] else "is not confirmed as", bottleneck["confidence"])
        if rungs:
            text += "; recommended: %s" % ", ".join(r["rung"] for r in rungs)
    missing = sorted({d["source"] for d in degraded if not d.get("partial")})
    if missing:
        text += " (degraded: %s)" % ", ".join(missing)
    return text


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
            rank, who(offender), offender["connections"], pct(offender["connection_share"]),
            ", %s opened/s" % fmt(number(offender["opened_per_sec"]), 1)
            if offender.get("opened_per_sec") is not None else "",
            ", %d from new pods" % offender["young_pod_connections"] if offender.get("young_pod_connections") else "",
            ", autoscaler %s" % hpa.replace("_", " ") if hpa not in (None, "none", "unknown") else "",
            ", %d restarts" % offender["restarts"] if offender.get("restarts") else ""))
        if offender.get("app_connections") is not None and offender.get("connections_from") != "prometheus":
            lines.append("     apps' own pool gauge: %s now, %s at peak" % (
                fmt(number(offender["app_connections"]), 0), fmt(number(offender.get("app_connections_peak")), 0)))
    lines += _unattributed_lines(verdict.get("unattributed") or {})
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


def _unattributed_lines(outside: Dict[str, Any], shown: int = 3) -> List[str]:
    addresses = outside.get("addresses") or []
    if not outside.get("connections"):
        return []
    lines = ["Not attributed to any workload: %d connections from %d address%s" % (
        outside["connections"], len(addresses), "" if len(addresses) == 1 else "es")]
    for address in addresses[:shown]:
        names = ", client names %s" % ", ".join(address["names"]) if address["names"] else ""
        lines.append("  %s: %d connections%s; %s" % (address["ip"], address["connections"], names, address["reason"]))
    if len(addresses) > shown:
        lines.append("  and %d more addresses" % (len(addresses) - shown))
    return lines
