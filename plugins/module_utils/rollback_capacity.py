# -*- coding: utf-8 -*-
# Copyright: fintech SRE
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Rollback's capacity gates: nothing on the way back may push Redis into refusing clients.

- Entries that add clients (a workload scaled back up, an autoscaler unpaused) run only while
  Redis has headroom: ``connected_clients`` below ``100 - headroom_percent`` % of ``maxclients``.
  A scale-up goes in steps of at most ``step_percent`` of the current replicas, Redis checked
  before each; each step is recorded in the entry (``stepped``) before it is written, so a later
  run does not take the step for drift.
- ``maxclients`` goes back down only when ``connected_clients`` is below ``100 - headroom_percent`` %
  of the old value; otherwise it stays raised and the entry stays ``pending`` with ``deferred``.
"""

from __future__ import annotations

import copy
import math
import time
from typing import Any, Callable, Dict, List, Optional, Tuple

from ansible_collections.fintech.redis_storm.plugins.module_utils import redis_conn, redis_sentinel, redis_server
from ansible_collections.fintech.redis_storm.plugins.module_utils.errors import StormError
from ansible_collections.fintech.redis_storm.plugins.module_utils.field_paths import MERGE_PATCH, get_path
from ansible_collections.fintech.redis_storm.plugins.module_utils.k8s_client import Kube, KubeApiError
from ansible_collections.fintech.redis_storm.plugins.module_utils.ledger import Ledger
from ansible_collections.fintech.redis_storm.plugins.module_utils.owned import REPLICAS
from ansible_collections.fintech.redis_storm.plugins.module_utils.targets import ObjectRef

HEADROOM_PERCENT = 20


def room(limit: int, headroom_percent: int = HEADROOM_PERCENT) -> int:
    """The clients a limit takes with its headroom kept free."""
    return int(limit * (100 - headroom_percent) / 100)


class RedisSide:
    """The one connection rollback holds to the incident's Redis (``client`` None and ``error`` set when
    it cannot have one; ``given`` False when no connection options were given)."""

    def __init__(self, options: Optional[Dict[str, Any]]) -> None:
        self.given = bool(options)
        self.endpoint = redis_conn.endpoint(options) if options else None
        self.client: Any = None
        self.error: Optional[str] = None
        self.identity: Dict[str, str] = {}
        self.replids: Tuple[str, ...] = ()
        self._connection: Any = None
        if not options:
            return
        try:
            connection = redis_conn.connect(dict(options))
        except StormError as exc:  # a refused password or certificate: the Kubernetes entries still go back
            self.error = exc.message
            return
        if not connection.reachable:
            self.error = connection.error
            return
        try:
            self.identity = redis_server.identity(connection.client)
            self.replids = redis_server.replication_ids(connection.client)
        except Exception as exc:  # redis-py raises many types; a lost connection is what matters
            connection.close()
            self.error = "Redis at %s stopped answering: %s" % (self.endpoint, exc)
            return
        self._connection = connection
        self.client = connection.client

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()

    def clients(self) -> Optional[Tuple[int, int]]:
        """(connected, maxclients), or None (with ``error`` set) when Redis no longer answers."""
        if self.client is None:
            return None
        try:
            return redis_server.clients(self.client)
        except Exception as exc:
            self.error = "Redis at %s stopped answering: %s" % (self.endpoint, exc)
            return None


def redis_sides(options: Optional[Dict[str, Any]]) -> List[RedisSide]:
    """One side per server: each node of a Sentinel group (its master first), else the one server given."""
    if not options or not redis_sentinel.given(options):
        return [RedisSide(options)]
    try:
        group = redis_sentinel.discover(options)
    except StormError as exc:  # the Kubernetes entries still go back; the Redis ones say why not
        side = RedisSide(None)
        side.given, side.error = True, exc.message
        side.endpoint = "Sentinel group %s" % options.get("sentinel_master")
        return [side]
    return [RedisSide(group.options(dict(options), address)) for address in group.nodes]


def side_for(entry: Dict[str, Any], sides: List[RedisSide]) -> RedisSide:
    """The side connected to the server a Redis entry changed (by its run_id, else its data set); else the first."""
    recorded = entry.get("target") or {}
    for wanted in (redis_server.SAME, redis_server.RESTARTED):
        for side in sides:
            if side.client is not None and redis_server.match(recorded, side.identity, side.replids,
                                                              side.endpoint or "") == wanted:
                return side
    return sides[0]


def adds_clients(entry: Dict[str, Any]) -> bool:
    """A restore that lets more clients connect: replicas going back up, or an autoscaler unpaused."""
    if entry.get("module") == "hpa_pause":
        return True
    if entry.get("module") != "workload_scale":
        return False
    return any(list(f["path"]) == list(REPLICAS) and isinstance(f.get("before"), int)
               and isinstance(f.get("after"), int) and f["before"] > f["after"] for f in entry.get("fields") or [])


def lowers_maxclients(entry: Dict[str, Any]) -> Optional[int]:
    """The old maxclients a Redis entry would put back, when that is lower than what it set."""
    for field in entry.get("fields") or []:
        if list(field["path"]) == ["maxclients"] and str(field.get("before") or "").isdigit() \
                and str(field.get("after") or "").isdigit() and int(field["before"]) < int(field["after"]):
            return int(field["before"])
    return None


class Gates:
    def __init__(self, kube: Kube, ledger: Ledger, redis: RedisSide, params: Dict[str, Any], check_mode: bool,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.kube = kube
        self.ledger = ledger
        self.redis = redis
        self.check_mode = check_mode
        headroom = params.get("headroom_percent")
        self.headroom = HEADROOM_PERCENT if headroom is None else int(headroom)
        self.step_percent = int(params.get("scale_up_step_percent") or 50)
        self.settle = float(params.get("scale_up_settle_seconds") or 0)
        self.sleep = sleep
        if not 0 <= self.headroom < 100 or not 0 < self.step_percent <= 100:
            raise StormError("headroom_percent must be 0 to 99 and scale_up_step_percent 1 to 100 (got %d and %d)"
                             % (self.headroom, self.step_percent))

    def on(self, redis: RedisSide) -> Gates:
        """The same gates judged on another Redis (a cluster node an entry was recorded on)."""
        if redis is self.redis:
            return self
        other = copy.copy(self)
        other.redis = redis
        return other

    def _room(self, limit: int) -> int:
        return room(limit, self.headroom)

    def no_headroom(self) -> Optional[str]:
        """Why Redis cannot take more clients now, or None when it can."""
        seen = self.redis.clients()
        if seen is None:
            return "Redis at %s cannot be checked for headroom (%s)" % (self.redis.endpoint, self.redis.error)
        connected, maxclients = seen
        if connected >= self._room(maxclients):
            return ("Redis at %s has %d clients connected, at or above %d (%d%% of maxclients %d): no headroom" % (
                self.redis.endpoint, connected, self._room(maxclients), 100 - self.headroom, maxclients))
        return None

    def maxclients_kept(self, entry: Dict[str, Any]) -> Optional[str]:
        """Why maxclients must stay raised for now, or None when it may go back down."""
        old = lowers_maxclients(entry)
        if old is None:
            return None
        seen = self.redis.clients()
        if seen is None:
            return "Redis at %s cannot be checked (%s)" % (self.redis.endpoint, self.redis.error)
        connected, current = seen
        if connected >= self._room(old):
            return ("maxclients stays at %d: %d clients are connected, not below %d (%d%% of the old maxclients %d); "
                    "lowering it now would refuse every new client" % (
                        current, connected, self._room(old), 100 - self.headroom, old))
        return None

    def defer(self, entry: Dict[str, Any], reason: str) -> Dict[str, Any]:
        """Keep the entry open as ``pending`` with the reason, so a later rollback finishes it."""
        if not self.check_mode:
            self.ledger.set_state(entry["id"], "pending", deferred=reason)
        return {"entry_id": entry["id"], "outcome": "deferred", "changed": False, "fields": [], "drift": [],
                "msg": "%s: deferred: %s" % (entry["id"], reason)}

    def step_up(self, entry: Dict[str, Any]) -> Tuple[Dict[str, Any], List[int], Optional[str]]:
        """Scale back up in steps until one step is left; returns (entry as now recorded, steps taken,
        reason it stopped early or None). The last step is the ledger's restore, with its drift check."""
        ref = ObjectRef.from_target(entry["target"])
        field = next(f for f in entry["fields"] if list(f["path"]) == list(REPLICAS))
        wanted = int(field["before"])
        taken: List[int] = []
        conflicts = 0
        while True:
            live = self.kube.find(ref.path)
            present, current = get_path(live or {}, REPLICAS)
            known = [field["after"], *list(field.get("stepped") or [])]
            if live is None or not present or current not in known:
                return entry, taken, None  # gone or moved: the ledger's restore judges it
            reason = self.no_headroom()
            if reason:
                return entry, taken, reason
            step = min(wanted, current + max(1, math.ceil(current * self.step_percent / 100.0)))
            if step >= wanted or self.check_mode:
                return entry, taken, None
            field = dict(field, stepped=[*list(field.get("stepped") or []), step])
            fields = [field if list(f["path"]) == list(REPLICAS) else f for f in entry["fields"]]
            entry = self.ledger.set_state(entry["id"], entry["state"], fields=fields)
            body = {"spec": {"replicas": step},
                    "metadata": {"resourceVersion": (live.get("metadata") or {}).get("resourceVersion")}}
            try:
                self.kube.request("PATCH", ref.path, body=body, content_type=MERGE_PATCH)
            except KubeApiError as exc:
                conflicts += 1
                if exc.status == 409 and conflicts < 3:
                    continue  # changed under us: read and judge again
                raise StormError("could not scale %s to %d: %s" % (ref.label, step, exc.message)) from exc
            taken.append(step)
            if self.settle:
                self.sleep(self.settle)  # new pods need a moment to open their connections
