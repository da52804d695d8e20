# -*- coding: utf-8 -*-
# Copyright: fintech SRE
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Redis behind Sentinel, and replicas: which node is the master now, and which are its replicas.

With ``sentinels`` and ``sentinel_master`` the modules ask the Sentinels (redis-py's ``Sentinel``)
for the current master of the group and act there; ``host`` and ``port`` are then not used.
Every node's own ``run_id`` goes into the ledger, so a failover during the incident (the master's
``run_id`` changes) is seen and each node is still rolled back by its own identity.

Without Sentinel, ``role()`` tells a master from a replica so a rung never writes to a replica
by mistake.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple

from ansible_collections.fintech.redis_storm.plugins.module_utils.errors import StormError
from ansible_collections.fintech.redis_storm.plugins.module_utils.redis_conn import endpoint, redis_options

try:
    import redis
    from redis.backoff import NoBackoff
    from redis.exceptions import AuthenticationError, RedisError
    from redis.retry import Retry
    from redis.sentinel import MasterNotFoundError, Sentinel

    SENTINEL_CLIENT: Any = Sentinel  # redis-py's Sentinel has no type hints
except ImportError:  # pragma: no cover - the modules report the missing library
    pass

SENTINEL_PORT = 26379

SENTINEL_ARG_SPEC: Dict[str, Dict[str, Any]] = {
    "sentinels": {"type": "list", "elements": "str"},
    "sentinel_master": {"type": "str"},
    "sentinel_username": {"type": "str"},
    "sentinel_password": {"type": "str", "no_log": True},
}

Address = Tuple[str, int]


def address_text(address: Address) -> str:
    return endpoint({"host": address[0], "port": address[1]})


def parse_address(text: str) -> Address:
    """``host:port`` (``[v6]:port``; the port defaults to Sentinel's 26379)."""
    value = str(text).strip()
    host, sep, port = value.rpartition(":")
    if not sep or "]" in port:
        host, port = value, str(SENTINEL_PORT)
    host = host.strip("[]")
    if not host or not port.isdigit():
        raise StormError("sentinels entry %r is not host:port: list each Sentinel as host:port, e.g. 10.0.0.5:26379"
                         % value)
    return host, int(port)


# A Redis Cluster has no Sentinels: one topology per module call, said before anything is read or changed.
BOTH_TOPOLOGIES = ("cluster: true and sentinels are both set: a Redis Cluster fails over by itself and has no "
                   "Sentinels. Give cluster: true (storm_redis_cluster) for a Redis Cluster, or sentinels and "
                   "sentinel_master (storm_redis_sentinels, storm_redis_sentinel_master) for a Sentinel group, "
                   "not both")


def given(params: Dict[str, Any]) -> bool:
    """Whether the Sentinels are to be asked; a StormError when a Redis Cluster is given too."""
    if params.get("sentinels") and params.get("cluster"):
        raise StormError(BOTH_TOPOLOGIES)
    return bool(params.get("sentinels"))


@dataclass(frozen=True)
class Group:
    """What the Sentinels say about one group right now (``down``: replicas they see as down)."""

    name: str
    sentinels: List[str]
    master: Address
    replicas: List[Address]
    down: List[str]

    @property
    def nodes(self) -> List[Address]:
        return [self.master, *self.replicas]

    def options(self, base: Dict[str, Any], address: Address) -> Dict[str, Any]:
        return dict(base, host=address[0], port=address[1])

    def describe(self) -> Dict[str, Any]:
        return {"name": self.name, "sentinels": self.sentinels, "master": address_text(self.master),
                "replicas": [address_text(a) for a in self.replicas], "replicas_down": self.down}


def _sentinel_kwargs(params: Dict[str, Any]) -> Dict[str, Any]:
    timeout = float(params.get("socket_timeout") or 3.0)
    return {"socket_timeout": timeout, "socket_connect_timeout": timeout, "retry": Retry(NoBackoff(), 0),
            "username": params.get("sentinel_username") or None, "password": params.get("sentinel_password") or None}


def discover(params: Dict[str, Any]) -> Group:
    """The group's master and live replicas from the Sentinels, or a StormError naming what to fix."""
    name = params.get("sentinel_master")
    if not name:
        raise StormError("sentinels is given but sentinel_master is not: set sentinel_master to the group name of "
                         "the Sentinels' `sentinel monitor <name> ...` line")
    addresses = [parse_address(a) for a in params.get("sentinels") or []]
    kwargs = _sentinel_kwargs(params)
    sentinel: Any = SENTINEL_CLIENT(addresses, sentinel_kwargs=kwargs)
    try:
        master = sentinel.discover_master(name)
        answering = sentinel.sentinels[0]  # discover_master puts the Sentinel that answered first
        listed = answering.sentinel_slaves(name)
    except MasterNotFoundError:
        raise StormError(no_master_message(name, addresses, kwargs)) from None
    except RedisError as exc:
        raise StormError("the Sentinels of group %r stopped answering: %s" % (name, exc)) from exc
    finally:
        for client in sentinel.sentinels:
            with contextlib.suppress(Exception):
                client.close()
    replicas: List[Address] = []
    down: List[str] = []
    for replica in listed:
        address = (str(replica["ip"]), int(replica["port"]))
        if replica.get("is_sdown") or replica.get("is_odown") or replica.get("is_disconnected"):
            down.append(address_text(address))
        else:
            replicas.append(address)
    return Group(name, [address_text(a) for a in addresses], (str(master[0]), int(master[1])), replicas, down)


def no_master_message(name: str, addresses: List[Address], kwargs: Dict[str, Any]) -> str:
    """Why no Sentinel named a master for ``name``: each Sentinel asked on its own."""
    reasons = [_why(name, address, kwargs) for address in addresses]
    return "no Sentinel gave the master of group %r: %s" % (name, "; ".join(reasons))


def _why(name: str, address: Address, kwargs: Dict[str, Any]) -> str:
    where = address_text(address)
    client = redis.Redis(host=address[0], port=address[1], **kwargs)
    try:
        masters: Any = client.sentinel_masters()
    except AuthenticationError:
        if not kwargs.get("password"):
            return "Sentinel at %s requires a password: set sentinel_password (the Sentinels' requirepass)" % where
        return ("Sentinel at %s rejected sentinel_password%s: set it to the Sentinels' requirepass (not the Redis "
                "password)" % (where, " for user %s" % kwargs["username"] if kwargs.get("username") else ""))
    except (RedisError, OSError) as exc:
        return "Sentinel at %s cannot be reached (%s): check the sentinels list (host:port of each Sentinel)" % (
            where, exc)
    finally:
        with contextlib.suppress(Exception):
            client.close()
    if name not in masters:
        return ("Sentinel at %s monitors no group named %r (it monitors: %s): set sentinel_master to the name in its "
                "`sentinel monitor` line" % (where, name, ", ".join(sorted(masters)) or "none"))
    state = masters[name]
    return ("Sentinel at %s sees the master of %r at %s:%s as down (flags %s): a failover is under way; retry "
            "shortly" % (where, name, state.get("ip"), state.get("port"), state.get("flags")))


def role(client: Any) -> Dict[str, Any]:
    """``{role: master|replica, master: "host:port" (of a replica)}`` from INFO replication."""
    info = client.info("replication")
    if info.get("role") == "master":
        return {"role": "master"}
    return {"role": "replica", "master": endpoint({"host": info.get("master_host"), "port": info.get("master_port")})}


def refuse_replica(client: Any, options: Dict[str, Any], command: str) -> None:
    """A write to a replica by mistake stops here, naming the master to point at instead."""
    try:
        found = role(client)
    except RedisError as exc:
        raise StormError("Redis at %s failed INFO replication: %s" % (endpoint(options), exc)) from exc
    if found["role"] == "replica":
        raise StormError(
            "Redis at %s is a replica of %s: %s there would not change the master the clients write to, and a "
            "failover or resync can bring a lone replica's value back. Point host and port at the master (%s), or "
            "give sentinels and sentinel_master so every node of the group is changed" % (
                endpoint(options), found["master"], command, found["master"]),
            replica=True, master=found["master"])


def check_master(client: Any, options: Dict[str, Any], group: Group) -> None:
    """The node the Sentinels named must answer as a master (it may not, mid-failover)."""
    found = role(client)
    if found["role"] != "master":
        raise StormError("the Sentinels name %s as the master of %r, but it answers as a replica of %s: a failover "
                         "is under way; retry in a few seconds" % (endpoint(options), group.name, found["master"]))


def master_options(params: Dict[str, Any]) -> Tuple[Dict[str, Any], Optional[Group]]:
    """The connection options of the node to act on: the group's master with Sentinel, else host and port."""
    options = redis_options(params)
    if not given(params):
        return options, None
    group = discover(params)
    return group.options(options, group.master), group


def failover(recorded: List[Dict[str, Any]], group: Group, master_run_id: str) -> Optional[Dict[str, Any]]:
    """The failover since ``recorded`` ledger targets were taken, if the group's master is another server now."""
    masters = [t for t in recorded if t.get("group") == group.name and t.get("role") == "master" and t.get("run_id")]
    moved = [t for t in masters if t["run_id"] != master_run_id]
    if not moved:
        return None
    before = moved[0]
    return {"group": group.name, "master_was": before.get("endpoint"), "run_id_was": before["run_id"],
            "master": address_text(group.master), "run_id": master_run_id,
            "msg": "failover in group %r during the incident: the master was %s (run_id %s) when the incident changed "
                   "it, it is %s (run_id %s) now; every node is changed and rolled back by its own run_id" % (
                       group.name, before.get("endpoint"), before["run_id"], address_text(group.master),
                       master_run_id)}
