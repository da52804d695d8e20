# -*- coding: utf-8 -*-
# Copyright: fintech SRE
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Triage and CLIENT KILL on the Redis topology given: one server, a Redis Cluster, or a Sentinel group.

In a Sentinel group the master gets the full read, and the replicas' clients are counted too.

Clients that read from replicas hold connections there, so an offender's ``connections`` is the
sum over the master and the replicas (its ``nodes`` says where); each node's use of its own
``maxclients`` is in ``nodes``. The master gets the sampling window (rates, churn, latency); a
replica one CLIENT LIST and one INFO clients, so triage costs it little.
"""

from __future__ import annotations

from typing import Any, Dict

from ansible_collections.fintech.redis_storm.plugins.module_utils import (
    redis_clients,
    redis_cluster,
    redis_cluster_rungs,
)
from ansible_collections.fintech.redis_storm.plugins.module_utils.errors import StormError
from ansible_collections.fintech.redis_storm.plugins.module_utils.redis_conn import connect, endpoint
from ansible_collections.fintech.redis_storm.plugins.module_utils.redis_sentinel import (
    Group,
    address_text,
    master_options,
)


def node_view(options: Dict[str, Any], role: str) -> Dict[str, Any]:
    """One replica's clients: ``{node, role, clients, sources, error}``."""
    view: Dict[str, Any] = {"node": endpoint(options), "role": role, "clients": None, "sources": [],
                            "error": None}
    try:
        conn = connect(options)
    except StormError as exc:
        view["error"] = exc.message
        return view
    if not conn.reachable:
        view["error"] = conn.error
        return view
    try:
        own_id, listed = redis_clients.read_client_list(conn, options)
        info = conn.live_client().info("clients")
    except StormError as exc:
        view["error"] = exc.message
        return view
    except Exception as exc:  # redis-py raises many types; a replica that stops answering is reported, not fatal
        view["error"] = "Redis at %s failed INFO clients: %s" % (view["node"], exc)
        return view
    finally:
        conn.close()
    maxclients = int(info["maxclients"]) if "maxclients" in info else None
    view["clients"] = redis_clients.clients_view(info, maxclients)
    view["sources"] = redis_clients.top_sources(redis_clients.application_clients(listed, own_id), 0)
    return view


def collect(params: Dict[str, Any], top: int, **read: Any) -> Dict[str, Any]:
    """redis_clients.collect on the node to read (the group's master with Sentinel), the replicas' clients added;
    on a Redis Cluster every node's, summed."""
    options, group = master_options(params)
    if group is None:
        collect_one = redis_cluster.collect if options.get("cluster") else redis_clients.collect
        return collect_one(options, top=top, **read)
    result = redis_clients.collect(options, top=0, **read)
    critical = redis_clients.merge_thresholds(read.get("thresholds"))["utilization"]["critical"]
    return with_replicas(result, options, group, top, critical)


def with_replicas(result: Dict[str, Any], options: Dict[str, Any], group: Group, top: int,
                  critical: float) -> Dict[str, Any]:
    master_at = endpoint(options)
    replicas = [node_view(group.options(options, address), "replica") for address in group.replicas]
    nodes = [{"node": master_at, "role": "master", "clients": result["clients"], "error": result["error"]}]
    nodes += [{k: r[k] for k in ("node", "role", "clients", "error")} for r in replicas]
    result = dict(result, sentinel=group.describe(), nodes=nodes,
                  top_sources=redis_cluster.merge_sources(
                      [(master_at, result["top_sources"])] + [(r["node"], r["sources"]) for r in replicas], top))
    busy = [n for n in nodes[1:] if (n["clients"] or {}).get("utilization") is not None
            and n["clients"]["utilization"] > critical]
    if busy:
        result["verdict"] = dict(result["verdict"], storm=True, severity="critical", reasons=list(
            result["verdict"]["reasons"]) + ["replica %s is at %s of its maxclients" % (
                n["node"], n["clients"]["utilization"]) for n in busy])
    return result


def kill_on_every_node(params: Dict[str, Any], *filters: Any) -> Dict[str, Any]:
    """redis_clients.kill_clients on the node given, or on every node of a Redis Cluster or of a Sentinel group
    (the master and each replica), each node's result in ``nodes``."""
    options, group = master_options(params)
    if group is None:
        kill = redis_cluster_rungs.clients_kill if options.get("cluster") else redis_clients.kill_clients
        return kill(options, *filters)
    nodes = [dict(redis_clients.kill_clients(group.options(options, address), *filters), node=address_text(address))
             for address in group.nodes]
    return {"changed": any(n["changed"] for n in nodes), "killed": sum(n["killed"] for n in nodes),
            "already_gone": sum(n["already_gone"] for n in nodes), "matched": sum(n["matched"] for n in nodes),
            "candidates": [dict(c, node=n["node"]) for n in nodes for c in n["candidates"]],
            "nodes": nodes, "sentinel": group.describe()}
