# Copyright: fintech SRE
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Alertmanager webhook receiver: one event per alert, limited to the alert's inventory host."""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
from typing import Any

from aiohttp import web

DOCUMENTATION = r"""
---
short_description: Receive Alertmanager webhook notifications, one event per alert.
description:
  - Listens for Alertmanager webhook notifications (version 4 JSON) and puts one event per alert on the
    queue, C({alert, receiver, group_labels, common_labels, external_url, group_key, meta}), where
    C(alert) is the alert as Alertmanager sent it (status, labels, annotations, startsAt, endsAt,
    generatorURL, fingerprint).
  - C(meta.hosts) is the inventory host of the alert, so run_job_template and run_playbook are limited
    to that Redis deployment; it is the value of O(host_label), else O(host_map) of the O(instance_label),
    else the instance label without its port. An alert with neither label is dropped (logged), since
    a job without a limit would run for every host.
  - With O(token) every request must carry C(Authorization Bearer <token>) (Alertmanager's
    http_config.authorization); anything else gets 401 and puts nothing on the queue.
options:
  host:
    description: Address to listen on.
    type: str
    default: 127.0.0.1
  port:
    description: TCP port to listen on.
    type: int
    required: true
  token:
    description: Shared secret Alertmanager sends as a bearer token.
    type: str
  host_label:
    description: Label whose value is the inventory host (for example added by Prometheus relabelling).
    type: str
    default: storm_host
  instance_label:
    description: Label naming the Redis instance.
    type: str
    default: instance
  host_map:
    description: Instance label value to inventory host, for alerts without O(host_label).
    type: dict
    default: {}
  skip_resolved:
    description: Drop resolved alerts in the source instead of leaving that to the rules.
    type: bool
    default: false
"""

EXAMPLES = r"""
- fintech.redis_storm.alertmanager:
    host: 0.0.0.0
    port: 5001
    token: "{{ alertmanager_webhook_token }}"
    host_map:
      "redis-exporter.payments-redis:9121": payments-redis
"""

logger = logging.getLogger(__name__)

QUEUE = web.AppKey("queue", asyncio.Queue)
SETTINGS = web.AppKey("settings", dict)


def alert_host(labels: dict[str, Any], settings: dict[str, Any]) -> str | None:
    """Return the inventory host an alert is about, or None when its labels name none."""
    named = labels.get(settings["host_label"])
    if named:
        return str(named)
    instance = labels.get(settings["instance_label"])
    if not instance:
        return None
    mapped = settings["host_map"].get(instance)
    if mapped:
        return str(mapped)
    return str(instance).rsplit(":", 1)[0] if ":" in str(instance) else str(instance)


def alert_events(payload: dict[str, Any], settings: dict[str, Any]) -> list[dict[str, Any]]:
    """Split one Alertmanager notification into one event per alert."""
    alerts = payload.get("alerts")
    if not isinstance(alerts, list):
        raise ValueError("not an Alertmanager notification: no alerts list")
    events = []
    for alert in alerts:
        if not isinstance(alert, dict):
            raise ValueError("not an Alertmanager notification: an alert is not an object")
        if settings["skip_resolved"] and alert.get("status") == "resolved":
            continue
        host = alert_host(alert.get("labels") or {}, settings)
        if host is None:
            # Without a host the jobs would run for the whole inventory.
            logger.warning("dropped alert %s: no %s or %s label", (alert.get("labels") or {}).get("alertname"),
                           settings["host_label"], settings["instance_label"])
            continue
        events.append({
            "alert": alert,
            "receiver": payload.get("receiver"),
            "group_labels": payload.get("groupLabels", {}),
            "common_labels": payload.get("commonLabels", {}),
            "external_url": payload.get("externalURL"),
            "group_key": payload.get("groupKey"),
            "meta": {"hosts": [host]},
        })
    return events


def authorized(request: web.Request, token: str | None) -> bool:
    if not token:
        return True
    scheme, _space, given = request.headers.get("Authorization", "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), token.encode())


async def receive(request: web.Request) -> web.Response:
    settings = request.app[SETTINGS]
    if not authorized(request, settings["token"]):
        raise web.HTTPUnauthorized(text="missing or wrong bearer token")
    try:
        payload = json.loads(await request.text())
        events = alert_events(payload, settings)
    except (ValueError, AttributeError) as exc:
        raise web.HTTPBadRequest(text=str(exc)) from None
    for event in events:
        await request.app[QUEUE].put(event)
    return web.json_response({"events": len(events)})


def settings_from(args: dict[str, Any]) -> dict[str, Any]:
    if "port" not in args:
        raise ValueError("alertmanager: the port option is required")
    host_map = args.get("host_map") or {}
    if not isinstance(host_map, dict):
        raise ValueError("alertmanager: host_map must be a mapping")
    return {
        "host": args.get("host") or "127.0.0.1",
        "port": int(args["port"]),
        "token": args.get("token") or None,
        "host_label": args.get("host_label") or "storm_host",
        "instance_label": args.get("instance_label") or "instance",
        "host_map": host_map,
        "skip_resolved": bool(args.get("skip_resolved", False)),
    }


async def main(queue: asyncio.Queue[Any], args: dict[str, Any]) -> None:
    """Serve the webhook until the rulebook stops."""
    settings = settings_from(args)
    app = web.Application()
    app[QUEUE] = queue
    app[SETTINGS] = settings
    app.router.add_post("/{endpoint:.*}", receive)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, settings["host"], settings["port"])
    await site.start()
    logger.info("alertmanager source listening on %s:%s", settings["host"], settings["port"])
    try:
        await asyncio.Future()
    finally:
        await runner.cleanup()
