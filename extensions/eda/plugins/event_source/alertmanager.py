# Copyright: fintech SRE
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Alertmanager webhook receiver: one event per alert, limited to the alert's inventory host."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import re
import ssl
import time
from datetime import datetime
from typing import Any

from aiohttp import web

DOCUMENTATION = r"""
---
short_description: Receive Alertmanager webhook notifications, one event per alert.
description:
  - Listens for Alertmanager webhook notifications (version 4 JSON) and puts one event per alert on the
    queue, C({alert, receiver, group_labels, common_labels, external_url, group_key, storm_host,
    incident_id, meta}), where C(alert) is the alert as Alertmanager sent it (status, labels,
    annotations, startsAt, endsAt, generatorURL, fingerprint).
  - C(storm_host) (and C(meta.hosts)) is the inventory host of the alert: the value of O(host_label),
    else O(host_map) of the O(instance_label), else the instance label without its port. Only a host
    listed in O(inventory_hosts) is accepted; any other alert is dropped (logged), so a sender cannot
    name C(all), a group or a pattern.
  - C(incident_id) is derived from the alert group (Alertmanager's C(groupKey)), C(storm_host) and the
    O(incident_lifetime_hours) window in which the group's earliest alert started, so re-sent notifications
    and further alerts of the same group name the same incident and its ledger, while the same alert firing
    again days later opens a new incident.
  - Every request must carry C(Authorization Bearer <token>) (Alertmanager's http_config.authorization);
    anything else gets 401 and puts nothing on the queue. The source does not start without O(token).
options:
  host:
    description: Address to listen on; keep the loopback address unless a proxy or ingress cannot reach it.
    type: str
    default: 127.0.0.1
  port:
    description: TCP port to listen on.
    type: int
    required: true
  token:
    description: Shared secret Alertmanager sends as a bearer token.
    type: str
    required: true
  certfile:
    description: PEM certificate (chain) to serve HTTPS with; with O(keyfile).
    type: str
  keyfile:
    description: PEM private key of O(certfile).
    type: str
  inventory_hosts:
    description: The inventory's hosts (Redis deployments); an alert about any other host is dropped.
    type: list
    elements: str
    required: true
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
  incident_lifetime_hours:
    description:
      - How long an alert group's incident id lives, counted in windows of this many hours from the epoch; the
        window is the one in which the group's earliest alert (C(startsAt)) started.
      - A group that keeps firing keeps its id (its earliest C(startsAt) does not move); one that fires again
        later in the same window joins the incident (attempt caps and cooldowns hold); one that fires again
        in a later window opens a new incident.
    type: int
    default: 24
"""

EXAMPLES = r"""
- fintech.redis_storm.alertmanager:
    port: 5001
    token: "{{ alertmanager_webhook_token }}"
    certfile: /etc/eda/tls/tls.crt
    keyfile: /etc/eda/tls/tls.key
    inventory_hosts: [payments-redis, trading-redis]
    host_map:
      "redis-exporter.payments-redis:9121": payments-redis
"""

logger = logging.getLogger(__name__)

QUEUE = web.AppKey("queue", asyncio.Queue)
SETTINGS = web.AppKey("settings", dict)


def alert_host(labels: dict[str, Any], settings: dict[str, Any]) -> str | None:
    """The inventory host an alert names, or None when its labels name none."""
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


def incident_id(group_key: str, host: str, window: int) -> str:
    """The incident of an alert group on one Redis deployment in one lifetime window (``started_window``)."""
    return "alert-" + hashlib.sha256(("%s\n%s\n%d" % (group_key, host, window)).encode()).hexdigest()[:16]


def started_window(alerts: list[Any], lifetime_hours: int, now: float) -> int:
    """The lifetime window in which the earliest of ``alerts`` started (``now`` when none says when)."""
    starts = []
    for alert in alerts:
        try:
            # RFC 3339 with nanoseconds and Z, as Alertmanager writes it; fromisoformat before 3.11 takes neither
            text = re.sub(r"\.[0-9]+", "", str(alert.get("startsAt"))).replace("Z", "+00:00")
            starts.append(datetime.fromisoformat(text).timestamp())
        except (AttributeError, ValueError):
            continue
    return int(min(starts, default=now) // (lifetime_hours * 3600))


def alert_events(payload: dict[str, Any], settings: dict[str, Any]) -> list[dict[str, Any]]:
    """Split one Alertmanager notification into one event per alert about an inventory host."""
    alerts = payload.get("alerts")
    if not isinstance(alerts, list):
        raise ValueError("not an Alertmanager notification: no alerts list")
    group_key = payload.get("groupKey")
    if not isinstance(group_key, str) or not group_key:
        raise ValueError("not an Alertmanager notification: no groupKey")
    if not all(isinstance(alert, dict) for alert in alerts):
        raise ValueError("not an Alertmanager notification: an alert is not an object")
    window = started_window(alerts, settings["incident_lifetime_hours"], time.time())
    events = []
    for alert in alerts:
        if settings["skip_resolved"] and alert.get("status") == "resolved":
            continue
        labels = alert.get("labels") or {}
        host = alert_host(labels, settings)
        if host is None:
            # Without a host the jobs would run for the whole inventory.
            logger.warning("dropped alert %s: no %s or %s label", labels.get("alertname"),
                           settings["host_label"], settings["instance_label"])
            continue
        if host not in settings["inventory_hosts"]:
            logger.warning("dropped alert %s: %r is not an inventory host", labels.get("alertname"), host[:80])
            continue
        events.append({
            "alert": alert,
            "receiver": payload.get("receiver"),
            "group_labels": payload.get("groupLabels", {}),
            "common_labels": payload.get("commonLabels", {}),
            "external_url": payload.get("externalURL"),
            "group_key": group_key,
            "storm_host": host,
            "incident_id": incident_id(group_key, host, window),
            "meta": {"hosts": [host]},
        })
    return events


def authorized(request: web.Request, token: str) -> bool:
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
    """The source's settings, or a ValueError saying which option is wrong and what to set."""
    if "port" not in args:
        raise ValueError("alertmanager: the port option is required")
    if not args.get("token"):
        raise ValueError("alertmanager: the token option is required (rulebook variable alertmanager_webhook_token): "
                         "an alert starts jobs that change production, so the source does not listen without the "
                         "secret Alertmanager sends as its bearer token")
    host_map = args.get("host_map") or {}
    if not isinstance(host_map, dict):
        raise ValueError("alertmanager: host_map must be a mapping")
    hosts = args.get("inventory_hosts")
    if not isinstance(hosts, list) or not hosts or not all(isinstance(h, str) and h for h in hosts):
        raise ValueError("alertmanager: inventory_hosts (rulebook variable alertmanager_inventory_hosts) must list "
                         "the inventory's hosts; alerts about any other host are dropped")
    unknown = sorted(str(v) for v in host_map.values() if v not in hosts)
    if unknown:
        raise ValueError("alertmanager: host_map names hosts that are not in inventory_hosts: %s" % ", ".join(unknown))
    lifetime = args.get("incident_lifetime_hours", 24)
    if not isinstance(lifetime, int) or isinstance(lifetime, bool) or lifetime < 1:
        raise ValueError("alertmanager: incident_lifetime_hours must be a whole number of hours, 1 or more (got %r)"
                         % (lifetime,))
    certfile, keyfile = args.get("certfile") or None, args.get("keyfile") or None
    if bool(certfile) != bool(keyfile):
        raise ValueError("alertmanager: certfile and keyfile go together (HTTPS needs both)")
    return {
        "host": args.get("host") or "127.0.0.1",
        "port": int(args["port"]),
        "token": str(args["token"]),
        "certfile": certfile,
        "keyfile": keyfile,
        "inventory_hosts": frozenset(hosts),
        "host_label": args.get("host_label") or "storm_host",
        "instance_label": args.get("instance_label") or "instance",
        "host_map": host_map,
        "skip_resolved": bool(args.get("skip_resolved", False)),
        "incident_lifetime_hours": lifetime,
    }


def tls_context(settings: dict[str, Any]) -> ssl.SSLContext | None:
    if not settings["certfile"]:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(settings["certfile"], settings["keyfile"])
    return context


async def main(queue: asyncio.Queue[Any], args: dict[str, Any]) -> None:
    """Serve the webhook until the rulebook stops."""
    settings = settings_from(args)
    app = web.Application()
    app[QUEUE] = queue
    app[SETTINGS] = settings
    app.router.add_post("/{endpoint:.*}", receive)
    runner = web.AppRunner(app)
    await runner.setup()
    context = tls_context(settings)
    site = web.TCPSite(runner, settings["host"], settings["port"], ssl_context=context)
    await site.start()
    logger.info("alertmanager source listening on %s://%s:%s", "https" if context else "http", settings["host"],
                settings["port"])
    try:
        await asyncio.Future()
    finally:
        await runner.cleanup()
