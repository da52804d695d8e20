"""The Alertmanager event source: one event per alert about an inventory host, one incident per
alert group, nothing without the shared secret, HTTPS when given a certificate."""

from __future__ import annotations

import asyncio
import json
import socket
import ssl
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from ansible_collections.fintech.redis_storm.extensions.eda.plugins.event_source.alertmanager import (
    alert_events,
    main,
    settings_from,
)
from ansible_collections.fintech.redis_storm.plugins.module_utils.ledger import check_incident_id

from stormctl.sandbox.kubeapi.tls import ensure_certificates

TOKEN = "eda-unit-secret"
HOSTS = ["payments-redis", "trading-redis", "10.0.0.7"]
SETTINGS = settings_from({"port": 5001, "token": TOKEN, "inventory_hosts": HOSTS,
                          "host_map": {"redis-exporter.payments-redis:9121": "payments-redis"}})
GROUP = '{}/{severity="page"}:{alertname="RedisTooManyConnections", instance="redis-exporter.payments-redis:9121"}'


def notification(*alerts: dict[str, Any], group_key: str = GROUP) -> dict[str, Any]:
    return {"version": "4", "status": "firing", "receiver": "eda", "groupKey": group_key, "groupLabels": {},
            "commonLabels": {}, "externalURL": "http://am:9093", "alerts": list(alerts)}


def firing(name: str = "RedisDown", **labels: str) -> dict[str, Any]:
    return {"status": "firing", "labels": {"alertname": name, **labels}, "annotations": {}}


def test_one_event_per_alert_with_its_inventory_host() -> None:
    events = alert_events(notification(
        firing(instance="redis-exporter.payments-redis:9121"),
        firing(instance="10.0.0.7:9121"),
        firing(instance="10.0.0.7:9121", storm_host="trading-redis"),
    ), SETTINGS)
    assert [e["storm_host"] for e in events] == ["payments-redis", "10.0.0.7", "trading-redis"]
    assert [e["meta"]["hosts"] for e in events] == [["payments-redis"], ["10.0.0.7"], ["trading-redis"]]
    assert events[0]["alert"]["labels"]["alertname"] == "RedisDown"
    assert events[0]["receiver"] == "eda"


@pytest.mark.parametrize("labels", [
    {"storm_host": "all"},
    {"storm_host": "payments-redis,trading-redis"},
    {"storm_host": "payments-redis:&storm_auto_mitigate"},
    {"storm_host": "*"},
    {"instance": "evil.example:9121"},
    {"job": "redis"},
])
def test_an_alert_about_no_inventory_host_is_dropped(labels: dict[str, str]) -> None:
    assert alert_events(notification(firing(**labels)), SETTINGS) == []


def test_every_notification_of_an_alert_group_names_one_incident() -> None:
    first = alert_events(notification(firing("RedisTooManyConnections", instance="redis-exporter.payments-redis:9121")),
                         SETTINGS)
    # Alertmanager re-sends the group (repeat_interval) and adds the group's later alerts to it
    again = alert_events(notification(
        firing("RedisTooManyConnections", instance="redis-exporter.payments-redis:9121"),
        firing("RedisRejectedConnections", instance="redis-exporter.payments-redis:9121")), SETTINGS)
    assert {e["incident_id"] for e in first + again} == {first[0]["incident_id"]}
    check_incident_id(first[0]["incident_id"])  # usable as the ledger's name
    other_group = alert_events(notification(firing(instance="redis-exporter.payments-redis:9121"),
                                            group_key='{}:{alertname="RedisDown"}'), SETTINGS)
    other_host = alert_events(notification(firing(storm_host="trading-redis")), SETTINGS)
    assert len({first[0]["incident_id"], other_group[0]["incident_id"], other_host[0]["incident_id"]}) == 3


def test_an_alert_group_firing_again_days_later_opens_a_new_incident() -> None:
    def started(at: str, **extra: str) -> dict[str, Any]:
        return dict(firing("RedisTooManyConnections", storm_host="payments-redis"), startsAt=at, **extra)

    first = alert_events(notification(started("2026-12-07T09:30:00.123456789Z")), SETTINGS)[0]["incident_id"]
    # re-sent an hour later, and again with a later alert joining the group: the group's start has not moved
    resent = alert_events(notification(started("2026-12-07T09:30:00.123456789Z")), SETTINGS)[0]["incident_id"]
    joined = alert_events(notification(started("2026-12-07T09:30:00.123456789Z"),
                                       started("2026-12-07T11:02:00Z")), SETTINGS)
    # it resolved and fired again that afternoon: the same incident, its attempt caps and cooldowns hold
    afternoon = alert_events(notification(started("2026-12-07T15:00:00Z")), SETTINGS)[0]["incident_id"]
    days_later = alert_events(notification(started("2026-12-10T09:30:00Z")), SETTINGS)[0]["incident_id"]
    assert {resent, afternoon} | {e["incident_id"] for e in joined} == {first}
    assert days_later != first
    check_incident_id(days_later)
    hourly = alert_events(notification(started("2026-12-07T15:00:00Z")), dict(SETTINGS, incident_lifetime_hours=1))
    assert hourly[0]["incident_id"] != first


@pytest.mark.parametrize("lifetime", [0, -3, "24", True])
def test_an_incident_lifetime_that_is_not_whole_hours_is_refused(lifetime: Any) -> None:
    with pytest.raises(ValueError, match="incident_lifetime_hours must be a whole number of hours"):
        settings_from({"port": 5001, "token": TOKEN, "inventory_hosts": HOSTS, "incident_lifetime_hours": lifetime})


def test_resolved_alerts_are_kept_unless_skipped() -> None:
    resolved = dict(firing(instance="10.0.0.7:1"), status="resolved")
    assert len(alert_events(notification(resolved), SETTINGS)) == 1
    assert alert_events(notification(resolved), dict(SETTINGS, skip_resolved=True)) == []


def test_a_body_that_is_not_a_notification_is_refused() -> None:
    with pytest.raises(ValueError, match="no alerts list"):
        alert_events({"hello": "world"}, SETTINGS)
    with pytest.raises(ValueError, match="no groupKey"):
        alert_events({"alerts": []}, SETTINGS)


@pytest.mark.parametrize("args, problem", [
    ({}, "port option is required"),
    ({"port": 1, "inventory_hosts": HOSTS}, "token option is required"),
    ({"port": 1, "token": "", "inventory_hosts": HOSTS}, "token option is required"),
    ({"port": 1, "token": TOKEN}, "inventory_hosts"),
    ({"port": 1, "token": TOKEN, "inventory_hosts": []}, "inventory_hosts"),
    ({"port": 1, "token": TOKEN, "inventory_hosts": HOSTS, "host_map": {"x:1": "all"}}, "not in inventory_hosts: all"),
    ({"port": 1, "token": TOKEN, "inventory_hosts": HOSTS, "certfile": "/tls.crt"}, "certfile and keyfile"),
])
def test_the_source_does_not_start_with_settings_that_open_a_door(args: dict[str, Any], problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        settings_from(args)


def test_it_listens_on_the_loopback_address_unless_told_otherwise() -> None:
    assert SETTINGS["host"] == "127.0.0.1"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def post(url: str, context: ssl.SSLContext | None, token: str | None) -> int | str:
    """POST one notification once the server listens (bounded); the HTTP status, or the error's name."""
    body = json.dumps(notification(firing(storm_host="trading-redis"))).encode()
    headers = {"Content-Type": "application/json", **({"Authorization": "Bearer " + token} if token else {})}
    request = urllib.request.Request(url, data=body, method="POST", headers=headers)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(request, timeout=5, context=context) as response:
                return int(response.status)
        except urllib.error.HTTPError as exc:
            return int(exc.code)
        except urllib.error.URLError as exc:
            if not isinstance(exc.reason, ConnectionRefusedError):
                return type(exc.reason).__name__
        except (ConnectionResetError, ssl.SSLError) as exc:
            return type(exc).__name__
    return "never listened"


async def serve_and_post(args: dict[str, Any], url: str, context: ssl.SSLContext | None,
                         token: str | None) -> tuple[int | str, list[dict[str, Any]]]:
    """Run the source, post one notification to it, stop it: (status, events it queued)."""
    queue: asyncio.Queue[Any] = asyncio.Queue()
    server = asyncio.create_task(main(queue, args))
    try:
        status = await asyncio.get_running_loop().run_in_executor(None, post, url, context, token)
    finally:
        server.cancel()
        with pytest.raises(asyncio.CancelledError):
            await server
    return status, [queue.get_nowait() for _ in range(queue.qsize())]


def test_https_with_a_certificate_and_the_token(tmp_path: Path) -> None:
    ca, cert, key = ensure_certificates(tmp_path, "127.0.0.1")
    port = free_port()
    args = {"port": port, "token": TOKEN, "inventory_hosts": HOSTS, "certfile": str(cert), "keyfile": str(key)}
    trusted = ssl.create_default_context(cafile=str(ca))
    status, events = asyncio.run(serve_and_post(args, "https://127.0.0.1:%d/alerts" % port, trusted, TOKEN))
    assert status == 200 and [e["storm_host"] for e in events] == ["trading-redis"]
    # plain HTTP to the HTTPS port gets no answer a client could read as accepted
    port = free_port()
    status, events = asyncio.run(serve_and_post(dict(args, port=port), "http://127.0.0.1:%d/alerts" % port,
                                                None, TOKEN))
    assert status != 200 and events == []


def test_a_request_without_the_token_puts_nothing_on_the_queue() -> None:
    port = free_port()
    args = {"port": port, "token": TOKEN, "inventory_hosts": HOSTS}
    status, events = asyncio.run(serve_and_post(args, "http://127.0.0.1:%d/alerts" % port, None, None))
    assert (status, events) == (401, [])
    port = free_port()
    status, events = asyncio.run(serve_and_post(dict(args, port=port), "http://127.0.0.1:%d/alerts" % port,
                                                None, "wrong"))
    assert (status, events) == (401, [])
