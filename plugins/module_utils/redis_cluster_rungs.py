# -*- coding: utf-8 -*-
# Copyright: fintech SRE
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The Redis-side rungs on every node of a Redis Cluster: CONFIG SET (with the ledger) and CLIENT KILL.

Each node has its own ``maxclients`` and its own clients, so each node is changed on its own
connection and gets its own ledger entry, recorded with that node's identity before its first write;
restoring puts back each node's entry on that node only. Nodes are changed one after another (the
ledger is one ConfigMap). A node that cannot be changed does not stop the others: the task then
fails naming it, and what the other nodes got is in their ledger entries.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence

from ansible_collections.fintech.redis_storm.plugins.module_utils.errors import StormError
from ansible_collections.fintech.redis_storm.plugins.module_utils.ledger import Ledger
from ansible_collections.fintech.redis_storm.plugins.module_utils.redis_clients import kill_clients
from ansible_collections.fintech.redis_storm.plugins.module_utils.redis_cluster import (
    Node,
    discover,
    for_each_node,
    node_options,
)
from ansible_collections.fintech.redis_storm.plugins.module_utils.redis_config import RuntimeConfig, open_redis
from ansible_collections.fintech.redis_storm.plugins.module_utils.redis_conn import redis_options


def _outcome(what: str, answers: List[Dict[str, Any]], **summed: Any) -> Dict[str, Any]:
    """Every node's answer; a StormError naming the nodes that failed (with every answer) when any did."""
    failed = [a for a in answers if a.get("failed")]
    result = dict(summed, changed=any(a.get("changed") for a in answers if not a.get("failed")), nodes=answers)
    if failed:
        done = [a["node"] for a in answers if not a.get("failed")]
        raise StormError("%s failed on %d of %d cluster nodes: %s%s" % (
            what, len(failed), len(answers), "; ".join(a["msg"] for a in failed),
            " (done on %s; see nodes and their ledger entries)" % ", ".join(done) if done else ""),
            saturated=any(a.get("saturated") for a in failed), **{k: v for k, v in result.items() if k != "msg"})
    return result


def runtime_config(params: Dict[str, Any], ledger: Ledger, check_mode: bool) -> Dict[str, Any]:
    """redis_runtime_config's apply or restore on every node of the cluster."""
    options = redis_options(params)
    nodes = discover(options)

    def one(node: Node) -> Dict[str, Any]:
        client, node_opts = open_redis(node_options(options, node))
        try:
            config = RuntimeConfig(client, node_opts, ledger, check_mode=check_mode, force=params["force"],
                                   rung=params["rung"],
                                   allow_below_connected=params["allow_maxclients_below_connected"])
            if params["state"] == "restored":
                return config.restore()
            return config.apply(params["settings"], params.get("capacity"))
        finally:
            client.close()

    answers = for_each_node(nodes, one, parallel=False)
    done = [a for a in answers if not a.get("failed")]
    ids = [i for a in done for i in (a["ledger"].get("entry_ids") or [a["ledger"].get("entry_id")]) if i]
    ledger_ref = dict(ledger.ref(ids[-1] if ids else None), entry_ids=ids)
    return _outcome("redis_runtime_config", answers, before={a["node"]: a["before"] for a in done},
                    after={a["node"]: a["after"] for a in done}, ledger=ledger_ref,
                    msg="; ".join("%s: %s" % (a["node"], a["msg"]) for a in done))


def clients_kill(options: Dict[str, Any], ips: Optional[Sequence[str]], idle_seconds_min: Optional[int],
                 name_pattern: Optional[str], max_kill: int, check_mode: bool) -> Dict[str, Any]:
    """redis_clients_kill on every node, node by node, at most ``max_kill`` over the whole cluster."""
    nodes = discover(options)
    left = [max_kill]

    def one(node: Node) -> Dict[str, Any]:
        if left[0] < 1:  # the cap is spent: still count what matches here
            counted = kill_clients(node_options(options, node), ips, idle_seconds_min, name_pattern, 1, True)
            return dict(counted, changed=False, candidates=[])
        answer = kill_clients(node_options(options, node), ips, idle_seconds_min, name_pattern, left[0], check_mode)
        left[0] -= len(answer["candidates"])
        return answer

    answers = for_each_node(nodes, one, parallel=False)
    done = [a for a in answers if not a.get("failed")]
    return _outcome("redis_clients_kill", answers, killed=sum(a["killed"] for a in done),
                    already_gone=sum(a["already_gone"] for a in done),
                    matched=sum(a["matched"] for a in done),
                    candidates=[dict(c, node=a["node"]) for a in done for c in a["candidates"]])
