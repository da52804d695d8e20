"""Prometheus range queries for the report's chart: clients, rejections and p99 over the incident."""

from __future__ import annotations

import json
import math
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, Callable

_REDIS_REJECTED = "sum(rate(redis_rejected_connections_total[1m]))"
_CLIENTS_REJECTED = 'sum(rate(redis_client_errors_total{error="maxclients"}[1m]))'
# The chart's three series. At maxclients redis_exporter cannot connect either (redis_up 0), so
# Redis' own series go blind exactly during the storm: the clients' view fills in (for rejections,
# whichever view counts more).
QUERIES = {
    "connected_clients": "max(redis_connected_clients) or sum(redis_client_connections)",
    "rejected_per_sec": "((%s >= %s) or %s) or %s"
    % (_REDIS_REJECTED, _CLIENTS_REJECTED, _CLIENTS_REJECTED, _REDIS_REJECTED),
    "p99_ms": "histogram_quantile(0.99, sum by (le) (rate(http_request_duration_seconds_bucket[30s]))) * 1000",
}
# Context shown before the first step and after the last one.
LEAD = timedelta(minutes=2)
TAIL = timedelta(seconds=30)
MAX_POINTS = 400

Fetch = Callable[[str, str, float, float, float], list[list[float]]]


@dataclass(frozen=True)
class Window:
    start: datetime
    end: datetime
    step: float

    @classmethod
    def around(cls, first: datetime, last: datetime, now: datetime | None = None) -> Window:
        now = now or datetime.now(timezone.utc)
        start, end = first - LEAD, min(last + TAIL, max(now, last))
        seconds = max((end - start).total_seconds(), 1.0)
        return cls(start, end, float(max(1, math.ceil(seconds / MAX_POINTS))))


def range_query(url: str, query: str, start: float, end: float, step: float) -> list[list[float]]:
    """[[unix time, value], ...] of the query's single series (series are summed by the query itself)."""
    params = urllib.parse.urlencode({"query": query, "start": start, "end": end, "step": step})
    with urllib.request.urlopen("%s/api/v1/query_range?%s" % (url.rstrip("/"), params), timeout=10) as response:
        body = json.loads(response.read())
    if body.get("status") != "success":
        raise ValueError(body.get("error") or "query failed")
    result = body["data"]["result"]
    if not result:
        return []
    points = []
    for at, value in result[0]["values"]:
        number = float(value)
        if math.isfinite(number):
            points.append([float(at), round(number, 3)])
    return points


def collect(url: str | None, window: Window, fetch: Fetch = range_query) -> dict[str, Any]:
    """The report's `metrics` section; a Prometheus that cannot answer is noted, not fatal."""
    section: dict[str, Any] = {
        "prometheus_url": url or None,
        "start": window.start.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "end": window.end.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "step_seconds": window.step,
        "queries": dict(QUERIES),
        "series": {name: [] for name in QUERIES},
        "errors": {},
    }
    if not url:
        section["errors"]["prometheus"] = "no Prometheus URL in the incident facts"
        return section
    for name, query in QUERIES.items():
        try:
            section["series"][name] = fetch(url, query, window.start.timestamp(), window.end.timestamp(), window.step)
        except (OSError, ValueError, KeyError, urllib.error.URLError) as exc:
            section["errors"][name] = str(exc)
    return section
