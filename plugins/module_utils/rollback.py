# -*- coding: utf-8 -*-
# Copyright: fintech SRE
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""storm_rollback: restore an incident's open ledger entries in dependency order, never making things worse.

Kubernetes entries go first, newest first, then the Redis entries. An entry waits for
(``depends_on``): the newer entries of the same object or server (they put back what it set);
the entries whose recorded values name the object it created (a Traefik Middleware is deleted
only once the Ingress that names it is restored); and, for a Redis entry, every entry that adds
clients (Redis capacity comes back last). An entry that cannot be restored (drifted, failed,
refused, deferred, skipped) holds back everything that waits for it (``blocked``); independent
entries are still restored. Whatever is left is listed with the command that finishes it, and
the run fails. The capacity gates are in ``rollback_capacity``.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional

from ansible_collections.fintech.redis_storm.plugins.module_utils import owned, redis_server
from ansible_collections.fintech.redis_storm.plugins.module_utils.errors import StormError
from ansible_collections.fintech.redis_storm.plugins.module_utils.field_paths import Overlay, get_path, set_path
from ansible_collections.fintech.redis_storm.plugins.module_utils.guards import Guards
from ansible_collections.fintech.redis_storm.plugins.module_utils.k8s_client import Kube
from ansible_collections.fintech.redis_storm.plugins.module_utils.ledger import Ledger
from ansible_collections.fintech.redis_storm.plugins.module_utils.restore import overlay_of, restore_entry
from ansible_collections.fintech.redis_storm.plugins.module_utils.rollback_capacity import (
    Gates,
    RedisSide,
    adds_clients,
    redis_sides,
    side_for,
)
from ansible_collections.fintech.redis_storm.plugins.module_utils.targets import target_key, target_label

SUMMARY_KEYS = ("restored", "drifted", "missing", "skipped", "failed", "unapplied", "blocked", "deferred", "refused")
DONE = ("restored", "missing", "unapplied", "noop")
PLAYBOOK = "ansible-playbook -i <inventory> playbooks/rollback.yml -e incident_id=%s"


def restore_order(entries: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """Kubernetes entries newest first, then Redis entries newest first (``entries`` is newest first),
    each moved after the entries it depends on."""
    waiting = ([e for e in entries if (e.get("target") or {}).get("type") != "redis"]
               + [e for e in entries if (e.get("target") or {}).get("type") == "redis"])
    ordered: List[Dict[str, Any]] = []
    while waiting:
        placed = {e["id"] for e in ordered}
        ready = [e for e in waiting if all(d["id"] in placed for d in depends_on(e, entries))]
        ordered.append(ready[0] if ready else waiting[0])  # a cycle (a hand-made ledger): its entries end blocked
        waiting.remove(ordered[-1])
    return ordered


def depends_on(entry: Dict[str, Any], entries: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """The entries that must be restored before ``entry``."""
    target = entry.get("target") or {}
    seq = int(entry.get("seq", 0))
    found = []
    for other in entries:
        if other is entry:
            continue
        same = target_key(other.get("target") or {}) == target_key(target) and int(other.get("seq", 0)) > seq
        capacity_first = target.get("type") == "redis" and adds_clients(other)
        if same or capacity_first or owned.references(other, entry):
            found.append(other)
    return found


def rollback(kube: Kube, params: Dict[str, Any], check_mode: bool) -> Dict[str, Any]:
    """Restore every open entry; returns ``{changed, summary, entries, left, ledger, msg, failed?}``."""
    ledger = Ledger(kube, params["incident_id"], params.get("ledger_namespace"))
    entries = ledger.open_entries()
    guards = Guards.from_params(params)
    nodes = NodeSides(params.get("redis"))
    gates = Gates(kube, ledger, nodes.main, params, check_mode)
    outcomes: List[Dict[str, Any]] = []
    by_id: Dict[str, Dict[str, Any]] = {}
    warnings: List[str] = []
    # check mode writes nothing: per target, what the newer entries would have put back
    overlays: Dict[Any, Overlay] = {}
    try:
        for entry in restore_order(entries):
            waits = [d["id"] for d in depends_on(entry, entries)
                     if (by_id.get(d["id"]) or {}).get("outcome") not in DONE]
            if waits:
                done = _outcome(entry, "blocked", "%s: left as it is: it waits for %s, which could not be restored" % (
                    entry["id"], ", ".join(waits)))
            else:
                overlay = overlays.setdefault(target_key(entry.get("target") or {}), {})
                done = _restore_one(entry, ledger, gates, nodes, guards, params, check_mode, overlay, warnings)
                overlay.update(overlay_of(done))
            by_id[entry["id"]] = done
            outcomes.append(done)
    finally:
        nodes.close()
    return _result(ledger, outcomes, params, check_mode, warnings)


def _outcome(entry: Dict[str, Any], outcome: str, msg: str) -> Dict[str, Any]:
    return {"entry_id": entry["id"], "module": entry.get("module"), "target": target_label(entry.get("target") or {}),
            "outcome": outcome, "changed": False, "msg": msg, "fields": [], "drift": []}


class NodeSides:
    """The connection a Redis entry is restored over: the one Redis; on a Redis Cluster (``redis.cluster``) the
    node the entry was recorded on, by the address in its target, with the same credentials; in a Sentinel group
    (``redis.sentinels``) the node whose run_id the entry recorded, whichever is the master after a failover."""

    def __init__(self, options: Optional[Dict[str, Any]]) -> None:
        self.options = dict(options or {})
        self.group = redis_sides(options)  # every node of a Sentinel group, its master first; else the one Redis
        self.main = self.group[0]
        self.nodes: Dict[str, RedisSide] = {}

    def for_entry(self, entry: Dict[str, Any]) -> RedisSide:
        if len(self.group) > 1:
            return side_for(entry, self.group)
        address = str((entry.get("target") or {}).get("endpoint") or "")
        host, _sep, port = address.rpartition(":")
        if not self.options.get("cluster") or not port.isdigit():
            return self.main
        if address not in self.nodes:
            self.nodes[address] = RedisSide(dict(self.options, host=host.strip("[]"), port=int(port), cluster=False))
        return self.nodes[address]

    def close(self) -> None:
        for side in [*self.group, *self.nodes.values()]:
            side.close()


def _restore_one(entry: Dict[str, Any], ledger: Ledger, gates: Gates, nodes: NodeSides, guards: Guards,
                 params: Dict[str, Any], check_mode: bool, overlay: Overlay, warnings: List[str]) -> Dict[str, Any]:
    force = bool(params.get("force"))
    kwargs: Dict[str, Any] = {"force": force, "dry_run": check_mode, "guards": guards,
                              "overlay": overlay if check_mode else None}
    target = entry.get("target") or {}
    try:
        owned.check_restorable(entry, guards)
    except StormError as exc:
        return _outcome(entry, "refused", exc.message)
    redis = nodes.main
    if target.get("type") == "redis":
        redis = nodes.for_entry(entry)
        reason = _not_this_server(entry, redis)
        if reason:
            return _outcome(entry, "skipped", "%s: not restored: %s" % (entry["id"], reason))
        kept = gates.on(redis).maxclients_kept(entry)
        if kept:
            return dict(_outcome(entry, "deferred", ""), **gates.defer(entry, kept))
        return restore_entry(ledger, entry, redis=redis.client, **kwargs)
    steps: List[int] = []
    if adds_clients(entry):
        if not redis.given:
            warnings.append("%s: %s adds Redis clients and was restored without checking Redis' headroom: give the "
                            "redis connection options to restore it in checked steps"
                            % (entry["id"], target_label(target)))
        else:
            reason = gates.no_headroom()
            if reason is None and entry.get("module") == "workload_scale":
                entry, steps, reason = gates.step_up(entry)
            if reason:
                done = dict(_outcome(entry, "deferred", ""), **gates.defer(entry, reason))
                if steps:
                    done["msg"] += " (scaled up to %s before stopping)" % ", ".join(map(str, steps))
                    done["changed"] = True
                return done
    done = restore_entry(ledger, entry, **kwargs)
    if steps:
        done["msg"] += " (in steps: %s, Redis checked before each)" % ", ".join(map(str, steps))
    return done


def _not_this_server(entry: Dict[str, Any], redis: RedisSide) -> Optional[str]:
    recorded = (entry.get("target") or {})
    if not redis.given:
        return "give the redis connection options to restore CONFIG SET changes of Redis %s" % recorded.get("endpoint")
    if redis.client is None:
        return "Redis cannot be reached now (%s)" % redis.error
    match = redis_server.match(recorded, redis.identity, redis.replids, redis.endpoint or "")
    if match == redis_server.OTHER:
        return ("the Redis at %s is not the server this entry changed (recorded at %s, run_id %s; this one has run_id "
                "%s): run the rollback with that server's connection options" % (
                    redis.endpoint, recorded.get("endpoint"), recorded.get("run_id") or "not recorded",
                    redis.identity.get("run_id")))
    return None


def _next_steps(incident_id: str, left: List[Dict[str, Any]]) -> List[str]:
    command = PLAYBOOK % incident_id
    outcomes = {o["outcome"] for o in left}
    steps = []
    if "drifted" in outcomes:
        steps.append("drifted: check who changed those fields; to restore over their change run %s -e "
                     "rollback_force=true (storm_rollback force: true)" % command)
    if outcomes & {"deferred", "skipped", "blocked", "failed"}:
        steps.append("deferred, skipped, blocked or failed: once the reason given for each is gone (Redis reachable "
                     "with headroom, the API answering), run %s again; it picks up where this run stopped" % command)
    if "refused" in outcomes:
        steps.append("refused: no rerun restores these; inspect them in the ledger ConfigMap and put back by hand "
                     "what a mitigation really changed")
    return steps


def _result(ledger: Ledger, outcomes: List[Dict[str, Any]], params: Dict[str, Any], check_mode: bool,
            warnings: List[str]) -> Dict[str, Any]:
    before: Dict[str, Any] = {}
    after: Dict[str, Any] = {}
    for outcome in outcomes:  # newest first: the first live value seen, the oldest recorded one wins
        for field in outcome["fields"]:
            path = [outcome["target"], *field["path"]]
            if not get_path(before, path)[0] and field["live"] is not None:
                set_path(before, path, field["live"])
            if field["restored"] is not None:
                set_path(after, path, field["restored"])
            elif get_path(after, path)[0]:
                set_path(after, path, None)
    summary = {key: sum(1 for o in outcomes if o["outcome"] == key) for key in SUMMARY_KEYS}
    left = [{"entry_id": o["entry_id"], "target": o["target"], "outcome": o["outcome"], "reason": o["msg"]}
            for o in outcomes if o["outcome"] not in DONE]
    result: Dict[str, Any] = {
        "changed": any(o["changed"] for o in outcomes), "summary": summary, "entries": outcomes, "left": left,
        "ledger": ledger.ref(outcomes[-1]["entry_id"] if outcomes else None),
        "diff": {"before": before, "after": _drop_none(after)},
    }
    if warnings:
        result["warnings"] = warnings
    if not outcomes:
        result["msg"] = "incident %s has no open ledger entry: nothing to roll back" % ledger.incident_id
        return result
    counts = ", ".join("%d %s" % (n, k) for k, n in summary.items() if n)
    if left:
        result["failed"] = True
        result["next"] = _next_steps(ledger.incident_id, left)
        result["msg"] = "rollback of incident %s incomplete (%s); left: %s. Next: %s" % (
            ledger.incident_id, counts, " | ".join(o["reason"] for o in left), " ".join(result["next"]))
    else:
        result["msg"] = "rollback of incident %s%s: %s" % (ledger.incident_id, " (check mode)" if check_mode else "",
                                                           counts)
    return result


def _drop_none(tree: Dict[str, Any]) -> Dict[str, Any]:
    """Fields a rollback removes show as absent in the diff's after side."""
    return {k: _drop_none(v) if isinstance(v, dict) else v for k, v in tree.items() if v is not None}
