# -*- coding: utf-8 -*-
# Copyright: fintech SRE
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""CONFIG SET of the connection-related directives, with the originals in the incident's ledger.

Values are compared in the form ``CONFIG GET`` returns them (``maxmemory-clients 64mb`` reads
back as ``67108864``), so a second apply is a no-op and restore's drift check is exact. The
ledger target is ``{"type": "redis", "endpoint": "host:port"}``; field paths are the directive
names and values the strings CONFIG GET returns.
"""

from __future__ import annotations

import re
from typing import Any, Dict, List, Optional, Tuple

from ansible_collections.fintech.redis_storm.plugins.module_utils.capacity import (
    CAPACITY_ARG_SPEC,
    container_memory_limit,
    parse_bytes,
    plan,
)
from ansible_collections.fintech.redis_storm.plugins.module_utils.errors import StormError
from ansible_collections.fintech.redis_storm.plugins.module_utils.guards import GuardRefusal
from ansible_collections.fintech.redis_storm.plugins.module_utils.k8s_client import KUBE_ARG_SPEC
from ansible_collections.fintech.redis_storm.plugins.module_utils.ladder import LADDER, RUNGS
from ansible_collections.fintech.redis_storm.plugins.module_utils.lease import LOCK_ARG_SPEC
from ansible_collections.fintech.redis_storm.plugins.module_utils.ledger import Ledger, make_field
from ansible_collections.fintech.redis_storm.plugins.module_utils.owned import REDIS_DIRECTIVES
from ansible_collections.fintech.redis_storm.plugins.module_utils.redis_conn import (
    REDIS_ARG_SPEC,
    command_error,
    connect,
    endpoint,
    redis_options,
)
from ansible_collections.fintech.redis_storm.plugins.module_utils.redis_server import config_get, identity
from ansible_collections.fintech.redis_storm.plugins.module_utils.restore import restore_entry
from ansible_collections.fintech.redis_storm.plugins.module_utils.rollback_capacity import (
    HEADROOM_PERCENT,
    lowers_maxclients,
    room,
)
from ansible_collections.fintech.redis_storm.plugins.module_utils.targets import redis_target

MODULE = "redis_runtime_config"
SETTINGS = REDIS_DIRECTIVES
# Redis' own refusal when maxclients + 32 file descriptors are more than it can get.
FD_LIMIT = re.compile(r"not able to handle the specified number of clients, try with (\d+)")
MEMORY_UNITS = {"": 1, "b": 1, "k": 1000, "kb": 1024, "m": 1000 ** 2, "mb": 1024 ** 2, "g": 1000 ** 3,
                "gb": 1024 ** 3}
_KUBE_SIDE = [r["name"] for r in RUNGS if r["stage"] == "mitigate" and r["acts_on"] == "workload"]
KUBE_SIDE_RUNGS = "%s and %s act through Kubernetes and do not need a Redis connection" % (
    ", ".join(_KUBE_SIDE[:-1]), _KUBE_SIDE[-1])
# Managed services (ElastiCache, Memorystore, Azure Cache) rename CONFIG away; the provider's API sets what it allows.
MANAGED_HINT = (
    "CONFIG is disabled on this server, as managed Redis services (AWS ElastiCache, Google Memorystore, Azure Cache "
    "for Redis) do: change timeout or tcp-keepalive through the provider's console or API (ElastiCache: the cluster's "
    "parameter group, aws elasticache modify-cache-parameter-group; Memorystore: gcloud redis instances update "
    "--update-redis-config; Azure: az redis update), where maxclients is fixed by the node size (scale the node type "
    "up). The next rungs (%s) act through Kubernetes and still apply" % ", ".join(
        r["name"] for r in RUNGS[LADDER.index("redis_capacity") + 1:] if r["acts_on"] == "workload"))

# The kube connection options, renamed where they collide with the Redis ones.
KUBE_RENAMES = {"host": "kube_host", "validate_certs": "kube_validate_certs"}


def kube_arg_spec() -> Dict[str, Dict[str, Any]]:
    spec: Dict[str, Dict[str, Any]] = {}
    for key, value in KUBE_ARG_SPEC.items():
        option = dict(value)
        if key in KUBE_RENAMES:
            option.pop("aliases", None)
            key = KUBE_RENAMES[key]
        spec[key] = option
    return spec


def renamed_kube_options(params: Dict[str, Any]) -> Dict[str, Any]:
    return {key: params.get(KUBE_RENAMES.get(key, key)) for key in KUBE_ARG_SPEC}


def argument_spec() -> Dict[str, Dict[str, Any]]:
    spec: Dict[str, Dict[str, Any]] = {key: dict(value) for key, value in REDIS_ARG_SPEC.items()}
    spec.update(kube_arg_spec())
    spec.update({
        "settings": {"type": "dict", "default": {}},
        "incident_id": {"type": "str", "required": True},
        "state": {"type": "str", "default": "applied", "choices": ["applied", "restored"]},
        "ledger_namespace": {"type": "str", "default": "redis-storm"},
        "force": {"type": "bool", "default": False},
        "rung": {"type": "str"},
        "allow_maxclients_below_connected": {"type": "bool", "default": False},
        **CAPACITY_ARG_SPEC,
        **LOCK_ARG_SPEC,
    })
    return spec


def normalize(name: str, value: Any) -> str:
    """The value as CONFIG GET will show it, or a StormError naming the bad setting."""
    if name not in SETTINGS:
        raise StormError("settings.%s cannot be changed by this module: only %s (the connection-related "
                         "directives Redis accepts at runtime)" % (name, ", ".join(SETTINGS)))
    if isinstance(value, bool) or value is None:
        raise StormError("settings.%s must be a number, got %r" % (name, value))
    text = str(value).strip().lower()
    if name == "maxmemory-clients":
        if text.endswith("%"):
            number = text[:-1]
            if not number.isdigit() or int(number) > 100:
                raise StormError("settings.maxmemory-clients %r: a percentage is 0%% to 100%% of maxmemory" % value)
            return "%d%%" % int(number)
        match = re.match(r"^(\d+)([a-z]*)$", text)
        if not match or match.group(2) not in MEMORY_UNITS:
            raise StormError("settings.maxmemory-clients %r: give bytes, a size such as 64mb or 1gb, or a "
                             "percentage of maxmemory such as 5%%" % value)
        return str(int(match.group(1)) * MEMORY_UNITS[match.group(2)])
    if not text.isdigit():
        raise StormError("settings.%s must be a whole number of %s, got %r" % (
            name, "clients" if name == "maxclients" else "seconds", value))
    if name == "maxclients" and int(text) < 1:
        raise StormError("settings.maxclients must be at least 1")
    return str(int(text))


def wanted_settings(settings: Dict[str, Any]) -> Dict[str, str]:
    return {str(name): normalize(str(name), value) for name, value in settings.items()}


def set_error(exc: BaseException, where: str, name: str, value: str) -> StormError:
    text = str(exc)
    limit = FD_LIMIT.search(text)
    if limit:
        return StormError(
            "Redis at %s cannot take maxclients %s: the operating system lets it open file descriptors for at most "
            "%s clients (it needs maxclients + 32). Set maxclients to %s or less, or raise Redis' open-files limit "
            "(ulimit -n / LimitNOFILE / the container's nofile) and restart it" % (where, value, limit.group(1),
                                                                                   limit.group(1)),
            max_clients_allowed=int(limit.group(1)))
    return StormError("CONFIG SET %s %s on Redis at %s failed: %s" % (name, value, where, text))


class RuntimeConfig:
    """Apply or restore CONFIG SET changes on one Redis for one incident."""

    def __init__(self, client: Any, options: Dict[str, Any], ledger: Ledger, check_mode: bool = False,
                 force: bool = False, rung: Optional[str] = None, allow_below_connected: bool = False) -> None:
        self.client = client
        self.options = options
        self.where = endpoint(options)
        self.target = redis_target(self.where)
        self.ledger = ledger
        self.check_mode = check_mode
        self.force = force
        self.rung = rung
        self.allow_below_connected = allow_below_connected
        # more of the server's identity for its ledger target (a Sentinel group's name and the node's role)
        self.labels: Dict[str, str] = {}

    def close(self) -> None:
        self.client.close()

    def _call(self, command: str, call: Any) -> Any:
        try:
            return call()
        except StormError:
            raise
        except Exception as exc:  # redis-py raises many types; command_error classifies them
            if command.startswith("CONFIG") and "unknown command" in str(exc).lower():
                raise StormError("Redis at %s refused %s (%s). %s" % (self.where, command, exc, MANAGED_HINT),
                                 config_disabled=True) from exc
            raise command_error(exc, self.options, command) from exc

    def read(self, names: List[str]) -> Dict[str, Optional[str]]:
        return {name: self._call("CONFIG GET %s" % name, lambda n=name: config_get(self.client, n)) for name in names}

    def server_target(self) -> Dict[str, Any]:
        """The ledger target with the server's own identity, so any spelling of its address matches."""
        return redis_target(self.where, dict(self._call("INFO", lambda: identity(self.client)), **self.labels))

    def guard(self, wanted: Dict[str, str]) -> None:
        if "maxclients" not in wanted or self.allow_below_connected:
            return
        info = self._call("INFO clients", lambda: self.client.info("clients"))
        connected = int(info.get("connected_clients", 0))
        if int(wanted["maxclients"]) < connected:
            raise GuardRefusal(
                "maxclients_below_connected",
                "maxclients %s is below the %d clients connected to Redis at %s: every new connection, operators' "
                "included, would be refused; choose a higher value or set allow_maxclients_below_connected: true"
                % (wanted["maxclients"], connected, self.where), connected_clients=connected)

    def guard_restore(self, entry: Dict[str, Any]) -> None:
        """Lowering maxclients back while the clients would not fit under it refuses everyone: refuse that."""
        old = lowers_maxclients(entry)
        if old is None or self.allow_below_connected:
            return
        info = self._call("INFO clients", lambda: self.client.info("clients"))
        connected = int(info.get("connected_clients", 0))
        if connected >= room(old):
            raise GuardRefusal(
                "maxclients_below_connected",
                "restoring maxclients %d on Redis at %s while %d clients are connected (not below %d, %d%% of it) "
                "would refuse new clients; it stays raised (ledger %s stays open): restore once the clients have "
                "fallen, or set allow_maxclients_below_connected: true" % (
                    old, self.where, connected, room(old), 100 - HEADROOM_PERCENT, entry["id"]),
                connected_clients=connected)

    def capacity_facts(self, capacity: Dict[str, Any]) -> Dict[str, Any]:
        """What ``capacity.plan`` sizes the raise from: INFO memory and clients, CONFIG GET, the container limit."""
        memory = self._call("INFO memory", lambda: self.client.info("memory"))
        clients = self._call("INFO clients", lambda: self.client.info("clients"))
        live = self.read(["maxclients", "maxmemory", "maxmemory-clients"])
        if capacity.get("memory_limit"):
            limit: Optional[int] = parse_bytes(capacity["memory_limit"], "capacity.memory_limit")
        elif capacity.get("workload"):
            limit = container_memory_limit(self.ledger.kube, capacity["workload"])
        else:
            limit = None
        keys = ("used_memory", "used_memory_rss", "total_system_memory", "mem_clients_normal")
        facts = {key: int(memory.get(key) or 0) for key in keys}
        return dict(facts, maxclients=int(live["maxclients"] or 0), connected=int(clients.get("connected_clients", 0)),
                    maxmemory=int(live["maxmemory"] or 0), maxmemory_clients=live["maxmemory-clients"],
                    memory_limit=limit)

    def apply(self, settings: Dict[str, Any], capacity: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
        """CONFIG SET ``settings``; with ``capacity``, maxclients (and maxmemory-clients) are sized from memory
        headroom, and the result says what was assumed (``assumed``)."""
        if capacity is None:
            return self._apply(settings)
        if {"maxclients", "maxmemory-clients"} & set(settings):
            raise StormError("with capacity, maxclients and maxmemory-clients are sized from memory headroom: give "
                             "the wanted maxclients as capacity.maxclients, and leave both out of settings")
        sizing = plan(self.capacity_facts(capacity), capacity)
        wanted = dict(sizing["settings"], **settings)
        if wanted:
            result = self._apply(wanted)
            result["msg"] = "%s; %s" % (result["msg"], sizing["msg"])
        else:
            result = {"changed": False, "before": {}, "after": {}, "ledger": self.ledger.ref(None),
                      "msg": "Redis at %s: %s" % (self.where, sizing["msg"])}
        result["assumed"] = sizing["assumed"]
        return result

    def _apply(self, settings: Dict[str, Any]) -> Dict[str, Any]:
        wanted = wanted_settings(settings)
        if not wanted:
            raise StormError("settings is empty: give at least one of %s" % ", ".join(SETTINGS))
        live = self.read(list(wanted))
        self.guard(wanted)
        changes = [name for name in wanted if live[name] != wanted[name]]
        result = {"changed": bool(changes), "before": dict(live), "after": dict(wanted),
                  "ledger": self.ledger.ref(None)}
        if not changes:
            result["msg"] = "Redis at %s already has %s" % (self.where, _pairs(wanted, list(wanted)))
            return result
        if self.check_mode:
            result["msg"] = "would set %s on Redis at %s" % (_pairs(wanted, changes), self.where)
            return result
        fields = [make_field([name], live[name] is not None, live[name], wanted[name]) for name in changes]
        entry = self.ledger.record(MODULE, self.server_target(), fields, rung=self.rung)
        result["ledger"] = self.ledger.ref(entry["id"])
        for name in changes:
            try:
                self.client.config_set(name, wanted[name])
            except Exception as exc:
                self._settle(entry["id"], fields, str(exc))
                raise set_error(exc, self.where, name, wanted[name]) from exc
        self.ledger.set_state(entry["id"], "applied")
        result["msg"] = "set %s on Redis at %s" % (_pairs(wanted, changes), self.where)
        return result

    def _settle(self, entry_id: str, fields: List[Dict[str, Any]], error: str) -> None:
        """After a failed CONFIG SET the entry says what Redis shows: failed when nothing changed."""
        try:
            live = self.read([f["path"][0] for f in fields])
        except StormError:
            return  # the entry stays pending; restore judges it by the live values
        if all(live[f["path"][0]] == f["before"] for f in fields):
            self.ledger.set_state(entry_id, "failed", error=error)

    def restore(self) -> Dict[str, Any]:
        before: Dict[str, Any] = {}
        after: Dict[str, Any] = {}
        messages, ids, changed = [], [], False
        # check mode sets nothing, so older entries must be judged against what the newer ones would put back
        redis = _Simulated(self.client) if self.check_mode else self.client
        for entry in self.ledger.open_entries(self.server_target()):
            self.guard_restore(entry)
            done = restore_entry(self.ledger, entry, force=self.force, dry_run=self.check_mode, redis=redis)
            if done["outcome"] in ("drifted", "failed", "refused"):
                raise StormError(done["msg"], drift=done["drift"], entry_id=entry["id"])
            ids.append(entry["id"])
            changed = changed or bool(done["changed"])
            messages.append(done["msg"])
            for field in done["fields"]:
                before.setdefault(field["path"][0], field["live"])
                after[field["path"][0]] = field["restored"]
                if isinstance(redis, _Simulated):
                    redis.values[field["path"][0]] = field["restored"]
        ledger = self.ledger.ref(ids[-1] if ids else None)
        ledger["entry_ids"] = ids
        return {"changed": changed, "before": before, "after": after, "ledger": ledger,
                "msg": "; ".join(messages) or "Redis at %s: no open ledger entry for incident %s" % (
                    self.where, self.ledger.incident_id)}


class _Simulated:
    """A read-only view of Redis' configuration with the values a dry-run restore would have put back."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.values: Dict[str, Optional[str]] = {}

    def config_get(self, name: str) -> Dict[str, Optional[str]]:
        if name in self.values:
            return {name: self.values[name]}
        return {name: config_get(self.client, name)}

    def config_set(self, name: str, value: Any) -> None:
        raise StormError("check mode must not CONFIG SET %s" % name)


def _pairs(values: Dict[str, str], names: List[str]) -> str:
    return ", ".join("%s=%s" % (name, values[name]) for name in names)


def open_redis(params: Dict[str, Any]) -> Tuple[Any, Dict[str, Any]]:
    """A connected client, or a StormError that says what to do (saturated Redis: the kube-side rungs)."""
    options = redis_options(params)
    conn = connect(options)
    if not conn.reachable:
        if conn.saturated:
            raise StormError("%s. CONFIG SET needs a connection, so this rung cannot run until connections are "
                             "freed: %s; run them first, then retry" % (conn.error, KUBE_SIDE_RUNGS),
                             saturated=True)
        raise StormError(conn.error or "cannot connect to Redis at %s" % endpoint(options))
    return conn.client, options
