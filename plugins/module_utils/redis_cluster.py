# -*- coding: utf-8 -*-
# Copyright: fintech SRE
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""A Redis Cluster's connection storm, node by node: which nodes there are, and every node's own view.

Limits, INFO and CLIENT LIST are per node in a Redis Cluster: each node refuses clients at its own
``maxclients``. redis-py's cluster client (``RedisCluster.get_nodes`` and ``CLUSTER NODES`` sent
through it) names the nodes from the node the inventory gives; each node is then read or changed
over its own single connection (``redis_conn.connect``: one socket, no retries), side by side.
Triage sums and ranks the client addresses over every node and names the node that saturates
first; a node that is down is reported by name and the others are still read.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Dict, List, Optional, Tuple

from ansible_collections.fintech.redis_storm.plugins.module_utils import redis_clients, stale_cache
from ansible_collections.fintech.redis_storm.plugins.module_utils.errors import StormError
from ansible_collections.fintech.redis_storm.plugins.module_utils.redis_conn import (
    Connection,
    _client_kwargs,
    classify,
    endpoint,
)

try:
    from redis.cluster import RedisCluster
    from redis.exceptions import RedisClusterException, RedisError
except ImportError:  # pragma: no cover - discover() reports the missing library before any except clause runs
    RedisCluster = None  # type: ignore[misc,assignment]

Node = Dict[str, Any]

# What to do about a node that cannot be read, by what went wrong.
DOWN_HINT = ("start it again, or fail its slots over to a replica (CLUSTER FAILOVER on the replica) and "
             "CLUSTER FORGET it; the other nodes are still triaged")
NOT_CLUSTER_HINT = "it is a standalone Redis: set cluster: false (storm_redis_cluster) for this host"


def node_options(options: Dict[str, Any], node: Node) -> Dict[str, Any]:
    """The connection options of one node: the inventory's credentials, the node's own address."""
    return dict(options, host=node["host"], port=node["port"], cluster=False)


def discover(options: Dict[str, Any]) -> List[Node]:
    """Every node of the cluster the given node belongs to, masters first, each with its role, flags and slots.

    Nodes the cluster marked failed drop out of the slot map RedisCluster builds from; CLUSTER NODES
    still lists them, so they are named too.
    """
    if RedisCluster is None:
        raise StormError("the redis Python library is required: pip install redis")
    where = endpoint(options)
    kwargs = _client_kwargs(options)
    for key in ("single_connection_client", "max_connections"):
        kwargs.pop(key)
    try:
        cluster: Any = RedisCluster(require_full_coverage=False, dynamic_startup_nodes=False, **kwargs)
    except RedisClusterException as exc:
        if "Cluster mode is not enabled" in str(exc):
            raise StormError("Redis at %s is not a cluster node: %s" % (where, NOT_CLUSTER_HINT)) from exc
        answer = classify(exc, options)
        raise StormError(
            "cannot read the Redis Cluster from %s: %s; name a node of the cluster that is up in host and port"
            % (where, answer.error), saturated=answer.saturated) from exc
    except (RedisError, OSError) as exc:
        answer = classify(exc, options)
        raise StormError("cannot read the Redis Cluster from %s: %s" % (where, answer.error),
                         saturated=answer.saturated) from exc
    try:
        nodes = {node.name: {"endpoint": node.name, "host": node.host, "port": int(node.port),
                             "role": "master" if node.server_type == "primary" else "replica",
                             "flags": [], "slots": []} for node in cluster.get_nodes()}
        for address, fields in _cluster_nodes(cluster).items():
            host, _sep, port = address.rpartition(":")
            known = nodes.setdefault(address, {"endpoint": address, "host": host, "port": int(port),
                                               "role": "replica", "flags": [], "slots": []})
            flags = [flag for flag in str(fields.get("flags", "")).split(",") if flag]
            known["flags"] = [flag for flag in flags if flag in ("fail", "fail?", "handshake", "noaddr")]
            known["role"] = "master" if "master" in flags else "replica"
            known["slots"] = ["-".join(str(s) for s in slot) for slot in fields.get("slots") or []]
    finally:
        cluster.close()
    return sorted(nodes.values(), key=lambda n: (n["role"] != "master", n["host"], n["port"]))


def _cluster_nodes(cluster: Any) -> Dict[str, Dict[str, Any]]:
    """CLUSTER NODES from the first node that answers (the one that answered CLUSTER SLOTS may be down now)."""
    for node in cluster.get_nodes():
        try:
            answer = cluster.execute_command("CLUSTER NODES", target_nodes=node)
        except (RedisError, OSError):
            continue
        return {str(address).split("@", maxsplit=1)[0]: fields for address, fields in dict(answer).items()}
    return {}


def for_each_node(nodes: List[Node], action: Callable[[Node], Dict[str, Any]],
                  parallel: bool = True) -> List[Dict[str, Any]]:
    """``action`` on every node (side by side when ``parallel``); a node's StormError is that node's answer and
    the others go on."""
    def guarded(node: Node) -> Dict[str, Any]:
        try:
            return dict(action(node), node=node["endpoint"], role=node["role"])
        except StormError as exc:
            return dict(exc.details, node=node["endpoint"], role=node["role"], failed=True,
                        msg="cluster node %s (%s): %s" % (node["endpoint"], node["role"], exc.message))

    if not parallel:
        return [guarded(node) for node in nodes]
    with ThreadPoolExecutor(max_workers=max(len(nodes), 1)) as pool:
        return list(pool.map(guarded, nodes))


def down_message(node: Node, error: Optional[str]) -> str:
    marked = " (the cluster marks it %s)" % ",".join(node["flags"]) if node.get("flags") else ""
    slots = " holding slots %s" % ", ".join(node["slots"]) if node.get("slots") else ""
    return "cluster node %s (%s%s) is down%s: %s; %s" % (node["endpoint"], node["role"], slots, marked,
                                                         error or "not reachable", DOWN_HINT)


# ---------------------------------------------------------------- triage over every node

def collect(options: Dict[str, Any], sample_seconds: float = 1.0, latency_samples: int = 20, top: int = 10,
            thresholds: Optional[Dict[str, Any]] = None, wave_wait_seconds: float = 5.0) -> Dict[str, Any]:
    """redis_clients_info's result for a whole Redis Cluster: every node read side by side, then summed."""
    if top < 0:
        raise StormError("top must be 0 or more (got %s)" % top)
    redis_clients.merge_thresholds(thresholds)
    try:
        nodes = discover(options)
    except StormError as exc:
        if not exc.details.get("saturated"):
            raise
        return redis_clients.unreachable_result(Connection(None, False, saturated=True, error=exc.message))
    # every address of every node: a source below the top on each node can be the first over all of them
    answers = for_each_node(nodes, lambda node: redis_clients.collect(
        node_options(options, node), sample_seconds, latency_samples, 0, thresholds, wave_wait_seconds))
    return merge(nodes, answers, top, thresholds)


def node_summary(node: Node, answer: Dict[str, Any]) -> Dict[str, Any]:
    clients = answer.get("clients") or {}
    rates = answer.get("rates") or {}
    saturated = bool(answer.get("saturated"))
    # a node that failed a command or refused our password is not down: its own message says what to fix
    error = answer.get("msg") if answer.get("failed") else answer.get("error")
    if error and not saturated and not answer.get("failed"):
        error = down_message(node, error)
    return {"node": node["endpoint"], "role": node["role"], "slots": node["slots"], "flags": node["flags"],
            "reachable": bool(answer.get("reachable")), "saturated": saturated, "error": error,
            "connected": clients.get("connected"), "max": clients.get("max"),
            "utilization": 1.0 if saturated else clients.get("utilization"),
            "new_connections_per_sec": rates.get("new_connections_per_sec"),
            "rejected_per_sec": rates.get("rejected_per_sec")}


def saturating_node(summaries: List[Dict[str, Any]]) -> Optional[Dict[str, Any]]:
    """The node nearest its maxclients (one that refused us is at it), or None when no node was measured."""
    measured = [s for s in summaries if s["saturated"] or s["utilization"] is not None]
    if not measured:
        return None
    return sorted(measured, key=lambda s: (not s["saturated"], -(s["utilization"] or 0.0), -(s["connected"] or 0),
                                           s["node"]))[0]


def merge_sources(per_node: List[Tuple[str, List[Dict[str, Any]]]], top: int) -> List[Dict[str, Any]]:
    """Every node's sources summed by address, ranked as one Redis' are; each says how many it holds on which node
    (``nodes``). Used for a Redis Cluster's nodes and a Sentinel group's master and replicas alike."""
    merged: Dict[str, Dict[str, Any]] = {}
    for node, sources in per_node:
        for source in sources:
            into = merged.setdefault(source["ip"], {
                "ip": source["ip"], "connections": 0, "names": set(), "lib_names": set(), "idle_max": 0,
                "age_min": None, "age_max": 0, "opened": None, "opened_per_sec": None, "nodes": {}})
            into["connections"] += int(source["connections"])
            into["nodes"][node] = int(source["connections"])
            into["names"].update(source.get("names") or [])
            into["lib_names"].update(source.get("lib_names") or [])
            into["idle_max"] = max(into["idle_max"], int(source.get("idle_max") or 0))
            age = int(source.get("age_min") or 0)
            into["age_min"] = age if into["age_min"] is None else min(into["age_min"], age)
            into["age_max"] = max(into["age_max"], int(source.get("age_max") or 0))
            for key in ("opened", "opened_per_sec"):
                if source.get(key) is not None:
                    into[key] = round((into[key] or 0) + source[key], 2)
    for source in merged.values():
        source["names"] = sorted(source["names"])
        source["lib_names"] = sorted(source["lib_names"])
        source["age_min"] = source["age_min"] or 0
    return redis_clients.ranked_sources(list(merged.values()), top)


def _sum(values: List[Any]) -> Optional[float]:
    numbers = [v for v in values if v is not None]
    return round(sum(numbers), 2) if numbers else None


def _merge_churn(windows: List[Dict[str, Any]]) -> Optional[Dict[str, Any]]:
    if not windows:
        return None
    settled = [w["wave_settled"] for w in windows if w.get("wave_settled") is not None]
    return {
        "window_seconds": max(w["window_seconds"] for w in windows), "reads": max(w["reads"] for w in windows),
        "emptied": any(w["emptied"] for w in windows), "wave_settled": all(settled) if settled else None,
        "waited_seconds": max(w["waited_seconds"] for w in windows),
        "opened": _sum([w.get("opened") for w in windows]), "opened_per_sec": _sum([w.get("opened_per_sec")
                                                                                    for w in windows]),
    }


def merge(nodes: List[Node], answers: List[Dict[str, Any]], top: int,
          thresholds: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """One result over the nodes: connections and rates summed, utilization of the node that saturates first."""
    summaries = [node_summary(node, answer) for node, answer in zip(nodes, answers)]
    read = [(node, answer) for node, answer in zip(nodes, answers) if answer.get("reachable")]
    hottest = saturating_node(summaries)
    errors = [s["error"] for s in summaries if s["error"]]
    saturated = any(s["saturated"] for s in summaries)
    if not read:
        result = redis_clients.unreachable_result(Connection(
            None, False, saturated=saturated, error="; ".join(errors) or "no cluster node could be read"))
        return dict(result, nodes=summaries, saturating_node=hottest)
    clients = [answer["clients"] for _node, answer in read]
    stats = [answer["stats"] for _node, answer in read]
    rates = {key: _sum([answer["rates"][key] for _node, answer in read])
             for key in ("new_connections_per_sec", "rejected_per_sec")}
    merged_clients = {
        "connected": sum(c["connected"] for c in clients),
        "max": sum(c["max"] for c in clients) if all(c["max"] for c in clients) else None,
        "utilization": (hottest or {}).get("utilization"), "blocked": sum(c["blocked"] for c in clients),
    }
    latency = {key: max([answer["latency_ms"][key] for _node, answer in read
                         if answer["latency_ms"][key] is not None], default=None) for key in ("p50", "p99", "max")}
    judged = redis_clients.verdict({"utilization": merged_clients["utilization"], **rates}, thresholds)
    if hottest is not None and hottest["utilization"] is not None and judged["storm"]:
        judged["reasons"].append("node %s (%s) saturates first: %s of its %s clients in use" % (
            hottest["node"], hottest["role"], "all" if hottest["saturated"] else hottest["connected"],
            hottest["max"] or "maxclients"))
    if saturated:
        refused = ["Redis node is saturated: %s" % s["error"] for s in summaries if s["saturated"]]
        judged = {"storm": True, "severity": "critical", "reasons": refused + judged["reasons"]}
    judged["reasons"].extend(s["error"] for s in summaries if s["error"] and not s["saturated"])
    return {
        "reachable": True, "saturated": saturated, "error": "; ".join(errors) or None,
        "clients": merged_clients,
        "stats": {key: sum(s[key] for s in stats) for key in stats[0]},
        "rates": rates, "latency_ms": latency,
        "top_sources": merge_sources([(node["endpoint"], answer["top_sources"]) for node, answer in read], top),
        "churn": _merge_churn([answer["churn"] for _node, answer in read if answer.get("churn")]),
        "stale_cache": stale_cache.merge({node["endpoint"]: answer["stale_cache"] for node, answer in read
                                          if answer.get("stale_cache")}),
        "verdict": judged, "nodes": summaries, "saturating_node": hottest,
    }
