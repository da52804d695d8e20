# -*- coding: utf-8 -*-
# Copyright: fintech SRE
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""CONFIG SET on every node of a Sentinel group, so a failover cannot bring the old value back.

The master is sized and changed first; its replicas get the same values. Each node has its own
ledger entry (its own ``run_id``, the group's name and the role it had), is persisted with
``CONFIG REWRITE`` where the server allows it (said in the result and the diff), and is restored
by its own identity whichever node is the master by then. A failover since the incident's first
change (the master's ``run_id`` differs) is reported.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional

from ansible_collections.fintech.redis_storm.plugins.module_utils.errors import StormError
from ansible_collections.fintech.redis_storm.plugins.module_utils.ledger import Ledger
from ansible_collections.fintech.redis_storm.plugins.module_utils.redis_config import RuntimeConfig
from ansible_collections.fintech.redis_storm.plugins.module_utils.redis_conn import Connection, connect
from ansible_collections.fintech.redis_storm.plugins.module_utils.redis_sentinel import (
    Group,
    address_text,
    check_master,
    failover,
)
from ansible_collections.fintech.redis_storm.plugins.module_utils.redis_server import identity


def rewrite(client: Any) -> Optional[str]:
    """CONFIG REWRITE; None when the config file now holds the runtime values, else why not."""
    try:
        client.config_rewrite()
    except Exception as exc:  # no config file, a read-only file, a renamed command: all reasons to report
        return str(exc)
    return None


class GroupConfig:
    """RuntimeConfig on each node of ``group``: ``configs[0]`` is the master."""

    def __init__(self, group: Group, options: Dict[str, Any], ledger: Ledger, **kwargs: Any) -> None:
        self.group = group
        self.ledger = ledger
        self.check_mode = bool(kwargs.get("check_mode"))
        self.connections: List[Connection] = []
        self.configs: List[RuntimeConfig] = []
        try:
            for index, address in enumerate(group.nodes):
                node = group.options(options, address)
                conn = connect(node)
                if not conn.reachable:
                    raise StormError("%s of Sentinel group %r: %s. Every node must be changed, or a failover brings "
                                     "the old value back: free it or fix it, then rerun" % (
                                         "the master" if index == 0 else "replica %s" % address_text(address),
                                         group.name, conn.error), saturated=conn.saturated)
                self.connections.append(conn)
                config = RuntimeConfig(conn.live_client(), node, ledger, **kwargs)
                config.labels = {"group": group.name, "role": "master" if index == 0 else "replica"}
                self.configs.append(config)
            check_master(self.configs[0].client, self.configs[0].options, group)
        except BaseException:
            self.close()
            raise

    @property
    def where(self) -> str:
        return self.configs[0].where

    def close(self) -> None:
        for conn in self.connections:
            conn.close()

    def _failover(self) -> Optional[Dict[str, Any]]:
        recorded = [e.get("target") or {} for e in self.ledger.entries()]
        master = self.configs[0]
        run_id = master._call("INFO server", lambda: identity(master.client))["run_id"]
        return failover(recorded, self.group, run_id)

    def apply(self, settings: Dict[str, Any], capacity: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
        moved = self._failover()
        master = self.configs[0]
        first = master.apply(settings, capacity)
        results = [first]
        # the replicas take what the master was sized to, so any of them can be promoted with it
        wanted = dict(first["after"])
        for config in self.configs[1:]:
            results.append(config.apply(wanted) if wanted else dict(first, changed=False, before={}, after={}))
        return self._combine(results, moved)

    def restore(self) -> Dict[str, Any]:
        moved = self._failover()
        return self._combine([config.restore() for config in self.configs], moved)

    def _combine(self, results: List[Dict[str, Any]], moved: Optional[Dict[str, Any]]) -> Dict[str, Any]:
        persisted: Dict[str, Any] = {}
        for config, result in zip(self.configs, results):
            if result["changed"] and not self.check_mode:
                reason = rewrite(config.client)
                persisted[config.where] = True if reason is None else "not persisted: %s" % reason
        ids = [i for r in results for i in (r["ledger"].get("entry_ids") or [r["ledger"].get("entry_id")]) if i]
        ledger = dict(results[0]["ledger"], entry_ids=ids)
        combined: Dict[str, Any] = {
            "changed": any(r["changed"] for r in results),
            "before": {c.where: r["before"] for c, r in zip(self.configs, results)},
            "after": {c.where: r["after"] for c, r in zip(self.configs, results)},
            "ledger": ledger, "persisted": persisted, "sentinel": self.group.describe(),
            "msg": "Sentinel group %r, master %s: %s" % (
                self.group.name, self.configs[0].where, "; ".join(r["msg"] for r in results)),
        }
        if results[0].get("assumed"):
            combined["assumed"] = results[0]["assumed"]
        notes = self._notes(persisted)
        if self.group.down:
            notes.append("replicas down and not changed: %s (rerun once they are back)" % ", ".join(self.group.down))
        if moved:
            combined["failover"] = moved
            notes.insert(0, moved["msg"])
        if notes:
            combined["msg"] += ". " + ". ".join(notes)
        combined["header"] = "; ".join(self._notes(persisted)) or "nothing to persist"
        return combined

    @staticmethod
    def _notes(persisted: Dict[str, Any]) -> List[str]:
        done = [where for where, state in persisted.items() if state is True]
        notes = ["persisted with CONFIG REWRITE on %s" % ", ".join(done)] if done else []
        notes += ["%s %s" % (where, state) for where, state in persisted.items() if state is not True]
        return notes
