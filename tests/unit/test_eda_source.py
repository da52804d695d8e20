"""The Alertmanager event source: one event per alert, limited to the alert's inventory host."""

from __future__ import annotations

from typing import Any

import pytest
from ansible_collections.fintech.redis_storm.extensions.eda.plugins.event_source.alertmanager import (
    alert_events,
    settings_from,
)

SETTINGS = settings_from({"port": 5001, "host_map": {"redis-exporter.payments-redis:9121": "payments-redis"}})


def notification(*alerts: dict[str, Any]) -> dict[str, Any]:
    return {"version": "4", "status": "firing", "receiver": "eda", "groupKey": "{}:{}", "groupLabels": {},
            "commonLabels": {}, "externalURL": "http://am:9093", "alerts": list(alerts)}


def firing(**labels: str) -> dict[str, Any]:
    return {"status": "firing", "labels": {"alertname": "RedisDown", **labels}, "annotations": {}}


def test_one_event_per_alert_with_its_inventory_host() -> None:
    events = alert_events(notification(
        firing(instance="redis-exporter.payments-redis:9121"),
        firing(instance="10.0.0.7:9121"),
        firing(instance="10.0.0.7:9121", storm_host="trading-redis"),
    ), SETTINGS)
    assert [e["meta"]["hosts"] for e in events] == [["payments-redis"], ["10.0.0.7"], ["trading-redis"]]
    assert events[0]["alert"]["labels"]["alertname"] == "RedisDown"
    assert events[0]["receiver"] == "eda"


def test_alert_without_a_host_is_dropped() -> None:
    assert alert_events(notification(firing(job="redis")), SETTINGS) == []


def test_resolved_alerts_are_kept_unless_skipped() -> None:
    resolved = dict(firing(instance="a:1"), status="resolved")
    assert len(alert_events(notification(resolved), SETTINGS)) == 1
    assert alert_events(notification(resolved), dict(SETTINGS, skip_resolved=True)) == []


def test_a_body_that_is_not_a_notification_is_refused() -> None:
    with pytest.raises(ValueError, match="no alerts list"):
        alert_events({"hello": "world"}, SETTINGS)
    with pytest.raises(ValueError, match="port option is required"):
        settings_from({})
