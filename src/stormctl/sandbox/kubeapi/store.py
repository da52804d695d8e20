"""The object store: plain dicts keyed by resource and (namespace, name), guarded by the event loop."""

from __future__ import annotations

import asyncio
import copy
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Optional

from .resources import ResourceType

Key = tuple[str, str]


@dataclass
class WatchEvent:
    rv: int
    type: str
    resource: tuple[str, str]
    obj: dict[str, Any]


@dataclass
class LogLine:
    ts: float
    text: str


@dataclass
class Store:
    """Objects by (group, plural) then (namespace, name); every write takes the next global resourceVersion."""

    objects: dict[tuple[str, str], dict[Key, dict[str, Any]]] = field(default_factory=dict)
    resource_version: int = 0
    logs: dict[tuple[str, str, str, bool], list[LogLine]] = field(default_factory=dict)
    events: deque[WatchEvent] = field(default_factory=lambda: deque(maxlen=10000))
    changed: Optional[asyncio.Condition] = None
    watchers: int = 0

    def _bucket(self, rt: ResourceType) -> dict[Key, dict[str, Any]]:
        return self.objects.setdefault((rt.group, rt.plural), {})

    def next_rv(self) -> str:
        self.resource_version += 1
        return str(self.resource_version)

    def reset(self) -> None:
        """Forget every object and log line; resourceVersions keep rising so watchers never see one reused."""
        self.objects.clear()
        self.logs.clear()
        self.events.clear()

    def get(self, rt: ResourceType, namespace: str, name: str) -> Optional[dict[str, Any]]:
        obj = self._bucket(rt).get((namespace, name))
        return copy.deepcopy(obj) if obj is not None else None

    def exists(self, rt: ResourceType, namespace: str, name: str) -> bool:
        return (namespace, name) in self._bucket(rt)

    def list_objects(self, rt: ResourceType, namespace: Optional[str], private: bool = True) -> list[dict[str, Any]]:
        """Objects sorted by namespace and name; `private=False` shares them, for callers that only read."""
        bucket = self._bucket(rt)
        keys = sorted(k for k in bucket if namespace is None or k[0] == namespace)
        return [copy.deepcopy(bucket[k]) if private else bucket[k] for k in keys]

    def put(self, rt: ResourceType, obj: dict[str, Any], event: str) -> None:
        meta = obj["metadata"]
        self._bucket(rt)[(meta.get("namespace", ""), meta["name"])] = copy.deepcopy(obj)
        self._notify(rt, event, obj)

    def remove(self, rt: ResourceType, namespace: str, name: str) -> Optional[dict[str, Any]]:
        obj = self._bucket(rt).pop((namespace, name), None)
        if obj is not None:
            obj["metadata"]["resourceVersion"] = self.next_rv()
            self._notify(rt, "DELETED", obj)
            if rt.kind == "Pod" and not rt.group:
                for key in [k for k in self.logs if k[:2] == (namespace, name)]:
                    del self.logs[key]
        return obj

    def _notify(self, rt: ResourceType, event: str, obj: dict[str, Any]) -> None:
        self.events.append(WatchEvent(int(obj["metadata"]["resourceVersion"]), event, (rt.group, rt.plural),
                                      copy.deepcopy(obj)))
        if self.changed is not None and self.watchers:
            cond = self.changed

            async def wake() -> None:
                async with cond:
                    cond.notify_all()

            asyncio.get_running_loop().create_task(wake())

    def append_log(self, namespace: str, pod: str, container: str, previous: bool, text: str) -> int:
        lines = self.logs.setdefault((namespace, pod, container, previous), [])
        now = time.time()
        added = text.splitlines()
        lines.extend(LogLine(now, line) for line in added)
        return len(added)

    def read_log(self, namespace: str, pod: str, container: str, previous: bool) -> Optional[list[LogLine]]:
        """Lines written for that container, plus those written for the pod without naming one."""
        named = self.logs.get((namespace, pod, container, previous))
        unnamed = self.logs.get((namespace, pod, "", previous)) if container else None
        if named is None and unnamed is None:
            return None
        return sorted((named or []) + (unnamed or []), key=lambda line: line.ts)
