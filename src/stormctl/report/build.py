"""report.json: the facts of every host of one incident, flattened for people and tools."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any, Mapping, Sequence

from stormctl.report import metrics
from stormctl.report.facts import parse_time, redact, worst_outcome
from stormctl.scrub import SECRET_NAME

SCHEMA_VERSION = 1


def _iso(value: datetime) -> str:
    return value.strftime("%Y-%m-%dT%H:%M:%SZ")


def _verdict(triage: Mapping[str, Any] | None) -> dict[str, Any] | None:
    if not triage:
        return None
    return {
        "storm": bool(triage.get("storm")),
        "severity": str(triage.get("severity") or "none"),
        "bottleneck_confirmed": triage.get("bottleneck_confirmed"),
        "summary": triage.get("summary"),
        "recommended_rungs": [
            r.get("rung") if isinstance(r, Mapping) else r for r in triage.get("recommended_rungs") or []
        ],
        "degraded_sources": list(triage.get("degraded_sources") or []),
    }


def _snapshot(value: Any) -> dict[str, Any]:
    """A metrics snapshot with its numbers as numbers (templated values may arrive as strings)."""
    out: dict[str, Any] = {}
    for key, item in dict(value or {}).items():
        if key == "at" or item is None or isinstance(item, (int, float, bool)):
            out[key] = item
        else:
            try:
                out[key] = float(item)
            except (TypeError, ValueError):
                out[key] = None
    return out


def _window(facts: Sequence[Mapping[str, Any]]) -> tuple[datetime, datetime]:
    times = [
        t
        for item in facts
        for entry in [item, *(item.get("timeline") or [])]
        for t in (parse_time(entry.get("started_at")), parse_time(entry.get("finished_at")))
        if t is not None
    ]
    now = datetime.now(timezone.utc)
    return (min(times), max(times)) if times else (now, now)


def build(facts: Sequence[Mapping[str, Any]], fetch: metrics.Fetch | None = None) -> dict[str, Any]:
    """The report dict (report.json) from the hosts' facts; Prometheus is asked for the chart's series."""
    clean = [redact(item, SECRET_NAME) for item in facts]
    first, last = _window(clean)
    hosts, timeline, offenders, evidence, ledger = [], [], [], [], []
    for item in clean:
        host = str(item.get("host"))
        triage = item.get("triage") or {}
        hosts.append(
            {
                "host": host,
                "outcome": item.get("outcome"),
                "check_mode": bool(item.get("check_mode")),
                "started_at": item.get("started_at"),
                "finished_at": item.get("finished_at"),
                "failure": item.get("failure"),
                "verdict": _verdict(triage),
                "recovery": item.get("recovery"),
            }
        )
        for entry in item.get("timeline") or []:
            timeline.append(
                {
                    "host": host,
                    "step": entry.get("step"),
                    "rung": entry.get("rung"),
                    "result": entry.get("result"),
                    "started_at": entry.get("started_at"),
                    "finished_at": entry.get("finished_at"),
                    "changed": bool(entry.get("changed")),
                    "recovered": entry.get("recovered"),
                    "msg": entry.get("msg") or "",
                    "diff": list(entry.get("diff") or []),
                    "metrics_before": _snapshot(entry.get("metrics_before")),
                    "metrics_after": _snapshot(entry.get("metrics_after")),
                }
            )
        offenders += [dict(o, host=host) for o in triage.get("offenders") or []]
        evidence += [dict(e, host=host) for e in triage.get("evidence") or []]
        ledger += [
            dict(e, host=host) if isinstance(e, Mapping) else {"host": host, "entry": e}
            for e in item.get("ledger") or []
        ]
    timeline.sort(key=lambda e: str(e.get("started_at") or ""))
    url = next((str(i["prometheus_url"]) for i in clean if i.get("prometheus_url")), None)
    window = metrics.Window.around(first, last)
    return {
        "schema_version": SCHEMA_VERSION,
        "incident_id": str(clean[0].get("incident_id")),
        "generated_at": _iso(datetime.now(timezone.utc)),
        "outcome": worst_outcome(str(h["outcome"]) for h in hosts),
        "check_mode": any(h["check_mode"] for h in hosts),
        "started_at": _iso(first),
        "finished_at": _iso(last),
        "hosts": hosts,
        "timeline": timeline,
        "offenders": offenders,
        "evidence": evidence,
        "ledger": ledger,
        "metrics": metrics.collect(url, window, fetch or metrics.range_query),
        "chart": None,
    }
