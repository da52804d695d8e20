# -*- coding: utf-8 -*-
# Copyright: fintech SRE
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The thresholds triage judges its evidence by, and the log signatures grouped by what they say."""

from __future__ import annotations

from typing import Any, Dict, Optional

from ansible_collections.fintech.redis_storm.plugins.module_utils.errors import StormError

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
RETRY_SIGNATURES = ("retry",)
TIMEOUT_SIGNATURES = ("redis_timeout",)
REFUSAL_SIGNATURES = ("too_many_connections", "max_clients_reached", "connection_reset")


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
