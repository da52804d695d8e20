"""Fault injection per resource, verb and user: added latency, an error status, or a dropped connection."""

from __future__ import annotations

import itertools
from dataclasses import asdict, dataclass, field
from typing import Any, Optional

from .status import ApiError, bad_request, injected

KINDS = ("error", "latency", "drop")


@dataclass
class Fault:
    id: int
    kind: str
    resource: Optional[str] = None
    subresource: Optional[str] = None
    verbs: Optional[list[str]] = None
    users: Optional[list[str]] = None
    namespace: Optional[str] = None
    name: Optional[str] = None
    group: Optional[str] = None
    status: int = 500
    message: str = "injected fault"
    latency: float = 0.0
    after: int = 0
    count: Optional[int] = None
    seen: int = 0
    fired: int = 0

    def matches(self, verb: str, group: str, resource: str, subresource: str, user: str,
                namespace: Optional[str], name: str) -> bool:
        if self.resource not in (None, "*", resource):
            return False
        # no subresource given: the resource and all its subresources; "" means the resource itself only
        if self.subresource is not None and self.subresource != subresource:
            return False
        return ((self.verbs is None or verb in self.verbs)
                and (self.users is None or user in self.users)
                and (self.group is None or self.group == group)
                and (self.namespace is None or self.namespace == (namespace or ""))
                and (self.name is None or self.name == name))

    def fire(self) -> bool:
        """Count a matching request; True when this one is affected."""
        self.seen += 1
        if self.seen <= self.after or (self.count is not None and self.fired >= self.count):
            return False
        self.fired += 1
        return True

    def view(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Outcome:
    latency: float = 0.0
    error: Optional[ApiError] = None
    drop: bool = False


@dataclass
class Faults:
    rules: list[Fault] = field(default_factory=list)
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    def add(self, spec: dict[str, Any]) -> Fault:
        kind = spec.get("kind", "error")
        if kind not in KINDS:
            raise bad_request("fault kind must be one of %s, not %r" % (", ".join(KINDS), kind))
        allowed = {"resource", "subresource", "verbs", "users", "namespace", "name", "group", "status", "message",
                   "latency", "after", "count"}
        unknown = set(spec) - allowed - {"kind"}
        if unknown:
            raise bad_request("unknown fault fields: %s" % ", ".join(sorted(unknown)))
        values = {k: v for k, v in spec.items() if k in allowed and v is not None}
        if "count" in spec:
            values["count"] = spec["count"]
        for key in ("verbs", "users"):
            if isinstance(values.get(key), str):
                values[key] = [values[key]]
        try:
            fault = Fault(id=next(self._ids), kind=kind, **values)
            fault.status, fault.latency, fault.after = int(fault.status), float(fault.latency), int(fault.after)
        except (TypeError, ValueError) as exc:
            raise bad_request("bad fault: %s" % exc) from None
        self.rules.append(fault)
        return fault

    def clear(self, fault_id: Optional[int] = None) -> int:
        before = len(self.rules)
        self.rules = [f for f in self.rules if fault_id is not None and f.id != fault_id]
        return before - len(self.rules)

    def evaluate(self, verb: str, group: str, resource: str, subresource: str, user: str,
                 namespace: Optional[str], name: str) -> Outcome:
        outcome = Outcome()
        for fault in self.rules:
            if not fault.matches(verb, group, resource, subresource, user, namespace, name) or not fault.fire():
                continue
            if fault.kind == "latency":
                outcome.latency += fault.latency
            elif outcome.error is None and not outcome.drop:
                if fault.kind == "drop":
                    outcome.drop = True
                else:
                    outcome.error = injected(fault.status, fault.message)
        return outcome
