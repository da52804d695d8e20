# -*- coding: utf-8 -*-
# Copyright: fintech SRE
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""How far Redis' maxclients may be raised without running it out of memory.

Every client costs memory (its struct, query and reply buffers; about 40 KiB for an idle client
on Redis 7, far more for a busy one). Raising maxclients in a storm lets hundreds of them in at
once: past ``maxmemory`` Redis evicts data or refuses writes, and past the container's memory
limit the pod is OOM-killed, dropping every connection at once. So the raise is sized from the
memory headroom under each known bound (``maxmemory`` against ``used_memory``; the container
limit against ``used_memory_rss``), keeping a reserve, at an assumed cost per client; and where
Redis has ``maxmemory-clients`` (7.0+) the clients' total is capped at what they use now plus
that headroom, so clients that grow their buffers are disconnected instead of the server dying.
Every assumption is returned, to be shown with the diff.
"""

from __future__ import annotations

import math
import re
from typing import Any, Dict, List, Optional, Tuple

from ansible_collections.fintech.redis_storm.plugins.module_utils.errors import StormError
from ansible_collections.fintech.redis_storm.plugins.module_utils.k8s_client import Kube, path_for

# Kubernetes quantities (Mi, Gi, M, G) and Redis sizes (mb, gb), to bytes.
UNITS = {"": 1, "b": 1, "k": 1000, "kb": 1024, "ki": 1024, "m": 1000 ** 2, "mb": 1024 ** 2, "mi": 1024 ** 2,
         "g": 1000 ** 3, "gb": 1024 ** 3, "gi": 1024 ** 3, "t": 1000 ** 4, "ti": 1024 ** 4}

CAPACITY_ARG_SPEC: Dict[str, Dict[str, Any]] = {
    "capacity": {"type": "dict", "options": {
        "maxclients": {"type": "int"},
        "factor": {"type": "float", "default": 1.5},
        "ceiling": {"type": "int", "default": 20000},
        "memory_limit": {"type": "str"},
        "workload": {"type": "dict", "options": {
            "namespace": {"type": "str", "required": True},
            "name": {"type": "str", "required": True},
            "kind": {"type": "str", "default": "StatefulSet", "choices": ["StatefulSet", "Deployment"]},
            "container": {"type": "str"},
        }},
        "client_memory": {"type": "str", "default": "64kb"},
        "reserve_percent": {"type": "int", "default": 10},
    }},
}


def parse_bytes(text: Any, what: str) -> int:
    match = re.match(r"^\s*(\d+)\s*([a-zA-Z]*)\s*$", str(text))
    if not match or match.group(2).lower() not in UNITS:
        raise StormError("%s %r: give bytes or a size such as 512Mi, 2Gi or 64kb" % (what, text))
    return int(match.group(1)) * UNITS[match.group(2).lower()]


def container_memory_limit(kube: Kube, workload: Dict[str, Any]) -> Optional[int]:
    """``resources.limits.memory`` of the Redis container of a StatefulSet or Deployment (None when unset)."""
    resource = "statefulsets" if workload.get("kind", "StatefulSet") == "StatefulSet" else "deployments"
    obj = kube.find(path_for("apps/v1", resource, workload["namespace"], workload["name"]))
    if obj is None:
        raise StormError("capacity.workload %s %s/%s not found: name the Redis workload, or give "
                         "capacity.memory_limit" % (workload.get("kind"), workload["namespace"], workload["name"]))
    containers = (((obj.get("spec") or {}).get("template") or {}).get("spec") or {}).get("containers") or []
    wanted = workload.get("container")
    chosen = [c for c in containers if c.get("name") == (wanted or "redis")] or ([] if wanted else containers[:1])
    limit = (((chosen[0] if chosen else {}).get("resources") or {}).get("limits") or {}).get("memory")
    return parse_bytes(limit, "the container's memory limit") if limit else None


def plan(facts: Dict[str, Any], options: Dict[str, Any]) -> Dict[str, Any]:
    """The settings to make (``maxmemory-clients`` first, then ``maxclients``), ``assumed`` and ``msg``.

    ``facts``: ``maxclients``, ``connected`` (INFO clients), ``used_memory``, ``used_memory_rss``,
    ``total_system_memory``, ``mem_clients_normal`` (INFO memory), ``maxmemory``, ``maxmemory_clients``
    (CONFIG GET; None when the server has no such directive), ``memory_limit`` (the container's, or None).
    """
    current, connected = int(facts["maxclients"]), int(facts["connected"])
    reserve = max(0, min(90, int(options.get("reserve_percent") or 0))) / 100.0
    floor = parse_bytes(options.get("client_memory") or "64kb", "capacity.client_memory")
    observed = int(facts.get("mem_clients_normal") or 0) // max(1, connected)
    per_client = max(floor, observed)
    assumed = ["%d bytes per client (%s; Redis counts %d per connected client now)" % (
        per_client, "the client_memory floor" if per_client == floor else "as measured", observed)]
    bounds: List[Tuple[str, int, int]] = []
    if int(facts.get("maxmemory") or 0) > 0:
        bounds.append(("maxmemory %d" % facts["maxmemory"], int(facts["maxmemory"]), int(facts["used_memory"])))
    if facts.get("memory_limit"):
        bounds.append(("container memory limit %d" % facts["memory_limit"], int(facts["memory_limit"]),
                       int(facts["used_memory_rss"])))
    else:
        assumed.append("no container memory limit known (give capacity.memory_limit or capacity.workload)")
    if not bounds and int(facts.get("total_system_memory") or 0) > 0:
        bounds.append(("the host's memory %d (total_system_memory)" % facts["total_system_memory"],
                       int(facts["total_system_memory"]), int(facts["used_memory_rss"])))
    wanted = int(options.get("maxclients") or 0) or math.ceil(current * float(options.get("factor") or 1.5))
    target = min(wanted, int(options.get("ceiling") or wanted))
    settings: Dict[str, str] = {}
    if bounds:
        name, limit, in_use = min(bounds, key=lambda b: b[1] * (1 - reserve) - b[2])
        headroom = max(0, int(limit * (1 - reserve)) - in_use)
        assumed.append("%d%% of %s kept in reserve; %d bytes in use under it" % (reserve * 100, name, in_use))
        fits = connected + headroom // per_client
        if fits < target:
            target = fits
        why = "memory headroom under %s is %d bytes: room for %d more clients at %d bytes each" % (
            name, headroom, headroom // per_client, per_client)
        if target > current and facts.get("maxmemory_clients") is not None:
            if str(facts["maxmemory_clients"]) in ("0", "0%"):
                settings["maxmemory-clients"] = str(int(facts.get("mem_clients_normal") or 0) + headroom)
                assumed.append("maxmemory-clients caps all clients at what they use now plus that headroom")
            else:
                assumed.append("maxmemory-clients already %s: kept" % facts["maxmemory_clients"])
        elif facts.get("maxmemory_clients") is None:
            assumed.append("this Redis has no maxmemory-clients (before 7.0): client buffers stay uncapped")
    else:
        why = "no memory bound known"
        assumed.append("no memory bound known: the raise is limited by factor and ceiling only")
    if target > current:
        settings["maxclients"] = str(target)
        msg = "maxclients %d -> %d (%s)" % (current, target, why)
    else:
        msg = "maxclients stays %d: %s" % (current, why)
    return {"settings": settings, "assumed": assumed, "msg": msg}
