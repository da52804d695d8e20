# -*- coding: utf-8 -*-
# Copyright: fintech SRE
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The incident lock: a coordination.k8s.io/v1 Lease ``redis-storm-lock-<name>``, and the fence
every mutating module passes before it writes.

Taking the lock. Creating the Lease, or taking it over, is a write with a resourceVersion
precondition (create fails with 409 when another acquirer created it first), so of two
simultaneous acquirers exactly one wins: the loser re-reads and is refused with the winner's name.

Expiry is judged as client-go's leader election does: by the observer's own clock, from when it
last saw the Lease change. The holder's ``renewTime`` is written with the holder's clock, so it
proves nothing on another machine; it is only used to refuse at once a Lease that looks live. A
Lease held by someone else is taken over only after this process has watched it stay unchanged
(same resourceVersion) for its whole ``leaseDurationSeconds``; a renewal seen meanwhile means the
holder lives, and the acquirer is refused.

Holding the lock. A run's mutating modules get ``lock: {name, namespace, holder, transitions}``
(the ``storm_lock`` fact the incident_lock role sets). Before a module's first write its ``Fence``
reads the Lease, refuses unless the holder is this run and ``leaseTransitions`` is what it was when
the run took the lock (nobody held it in between), and renews it with a resourceVersion
precondition. That renewal is what keeps the lock alive while the run lives: every mutating module
renews it, the ladder's rung bookkeeping included, so the longest stretch without a renewal is one
rung's recovery wait, well inside the TTL; when the run dies the renewals stop and the Lease
expires. And since a taker must see the Lease unchanged for a whole TTL, a write made less than
half a TTL after a successful fenced renewal cannot meet another holder's write.
"""

from __future__ import annotations

import calendar
import re
import socket
import time
from typing import Any, Callable, Dict, Optional

from ansible_collections.fintech.redis_storm.plugins.module_utils.errors import StormError
from ansible_collections.fintech.redis_storm.plugins.module_utils.k8s_client import Kube, KubeApiError, path_for
from ansible_collections.fintech.redis_storm.plugins.module_utils.ledger import (
    DEFAULT_LEDGER_NAMESPACE,
    MANAGED_BY,
    MANAGED_BY_LABEL,
    check_incident_id,
    os_user,
)
from ansible_collections.fintech.redis_storm.plugins.module_utils.retry import CONFLICT_ATTEMPTS, back_off

LEASE_API = "coordination.k8s.io/v1"
# Seconds between two looks at a Lease whose holder may be gone.
OBSERVE_POLL_SECONDS = 1.0

# The ``lock`` option of every mutating module: the run's hold on the incident lock.
LOCK_ARG_SPEC: Dict[str, Dict[str, Any]] = {
    "lock": {"type": "dict", "options": {
        "name": {"type": "str", "required": True},
        "namespace": {"type": "str", "default": DEFAULT_LEDGER_NAMESPACE},
        "holder": {"type": "str", "required": True},
        "transitions": {"type": "int"},
    }},
}


def default_holder() -> str:
    return "%s@%s" % (os_user(), socket.gethostname())


def micro_time(epoch: float) -> str:
    """Kubernetes MicroTime: 2026-11-26T05:45:00.000000Z."""
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(epoch)) + ".%06dZ" % int((epoch % 1) * 1e6)


def iso(epoch: float) -> str:
    """2026-11-26T05:45:00Z, for results and messages."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))


def parse_time(text: Optional[str]) -> Optional[float]:
    if not text:
        return None
    base, _dot, fraction = text.rstrip("Z").partition(".")
    try:
        seconds = calendar.timegm(time.strptime(base, "%Y-%m-%dT%H:%M:%S"))
    except ValueError:
        return None
    return seconds + (float("0." + fraction) if fraction.isdigit() else 0.0)


def _version(lease: Optional[Dict[str, Any]]) -> Optional[str]:
    return ((lease or {}).get("metadata") or {}).get("resourceVersion")


def lease_name(name: str) -> str:
    """``redis-storm-lock-<name>``; an inventory host name like ``Payments_Redis`` becomes ``payments-redis``."""
    normalized = re.sub(r"[^a-z0-9.-]+", "-", name.lower()).strip("-.")[:40].strip("-.")
    try:
        return "redis-storm-lock-" + check_incident_id(normalized)
    except StormError as exc:
        raise StormError("lock name %r cannot name a Lease: use letters and digits" % name) from exc


class Lock:
    """The incident lock. ``acquire``/``release`` return the module result (``changed``,
    ``acquired``, ``holder``, ``expires_at``, ``lease_transitions``, ``msg``) or raise ``StormError``
    with ``refused=True`` when someone else holds it.

    ``takeover_wait`` bounds how long ``acquire`` watches another holder's Lease before taking it
    over (None: as long as the Lease's own duration); ``clock`` and ``sleep`` are the observer's."""

    def __init__(self, kube: Kube, namespace: str, name: str, holder: Optional[str] = None,
                 check_mode: bool = False, takeover_wait: Optional[float] = None,
                 clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep) -> None:
        self.kube = kube
        self.namespace = namespace
        self.name = lease_name(name)
        self.holder = holder or default_holder()
        self.check_mode = check_mode
        self.takeover_wait = takeover_wait
        self.clock = clock
        self.sleep = sleep
        self.path = path_for(LEASE_API, "leases", namespace, self.name)

    def _result(self, lease: Optional[Dict[str, Any]], changed: bool, acquired: bool, msg: str,
                previous: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
        """The result; ``diff`` compares the lock's holder and expiry with ``previous`` (the Lease before)."""
        spec = (lease or {}).get("spec") or {}
        expires = _expiry(spec)
        return {"changed": changed, "acquired": acquired, "holder": spec.get("holderIdentity"),
                "expires_at": iso(expires) if expires else None,
                "lease_transitions": int(spec.get("leaseTransitions") or 0),
                "lease": {"namespace": self.namespace, "name": self.name}, "msg": msg,
                "diff": {"before": _holding(previous), "after": _holding(lease)}}

    def _body(self, ttl: int, now: float, lease: Optional[Dict[str, Any]]) -> Dict[str, Any]:
        spec = (lease or {}).get("spec") or {}
        ours = spec.get("holderIdentity") == self.holder
        body = dict(lease or {"apiVersion": LEASE_API, "kind": "Lease",
                              "metadata": {"name": self.name, "namespace": self.namespace,
                                           "labels": {MANAGED_BY_LABEL: MANAGED_BY}}})
        transitions = int(spec.get("leaseTransitions") or 0) + (0 if ours or lease is None else 1)
        body["spec"] = {"holderIdentity": self.holder, "leaseDurationSeconds": int(ttl),
                        "acquireTime": spec.get("acquireTime") if ours else micro_time(now),
                        "renewTime": micro_time(now), "leaseTransitions": transitions}
        return body

    def _refuse(self, holder: str, expires: Optional[float], why: str) -> StormError:
        now = time.time()
        return StormError(
            "lock %s/%s is held by %s until %s (%d s from now by its holder's clock)%s: another run is mitigating "
            "this incident; wait for it, or once you are sure it is gone set force: true"
            % (self.namespace, self.name, holder, iso(expires or now), (expires or now) - now, why),
            refused=True, acquired=False, holder=holder, expires_at=iso(expires or now))

    def _watch(self, lease: Dict[str, Any]) -> Dict[str, Any]:
        """The Lease once this process has seen it unchanged for its whole duration; refused when it changes
        (its holder renewed it) or when that would take longer than ``takeover_wait``."""
        spec = lease.get("spec") or {}
        holder = spec.get("holderIdentity") or ""
        duration = float(spec.get("leaseDurationSeconds") or 0)
        if self.takeover_wait is not None and duration > self.takeover_wait:
            raise self._refuse(holder, _expiry(spec), "; it looks expired by its holder's clock, but a lock is "
                               "taken over only after this machine has seen it unchanged for its whole %d s "
                               "(takeover_wait_seconds is %d)" % (duration, self.takeover_wait))
        seen = self.clock()
        while self.clock() - seen < duration:
            self.sleep(min(OBSERVE_POLL_SECONDS, max(0.0, duration - (self.clock() - seen))))
            now_lease = self.kube.find(self.path)
            if _version(now_lease) != _version(lease):
                spec = (now_lease or {}).get("spec") or {}
                if now_lease is None or spec.get("holderIdentity") in (None, "", self.holder):
                    return now_lease or {}  # released (or ours) meanwhile: take it as it is now
                raise self._refuse(spec.get("holderIdentity") or "", _expiry(spec),
                                   "; it was renewed while this machine watched it")
        return lease

    def acquire(self, ttl: int, force: bool = False) -> Dict[str, Any]:
        if ttl <= 0:
            raise StormError("ttl_seconds must be more than 0 (got %d)" % ttl)
        for attempt in range(CONFLICT_ATTEMPTS):
            if attempt:
                back_off(attempt - 1)
            lease = self.kube.find(self.path)
            spec = (lease or {}).get("spec") or {}
            holder = spec.get("holderIdentity")
            expires = _expiry(spec)
            looks_live = bool(holder) and expires is not None and expires > time.time()
            if lease is not None and holder and holder != self.holder and not force:
                if looks_live:
                    raise self._refuse(holder, expires, "")
                observed = self._watch(lease)
                lease = observed or None
                holder = ((observed or {}).get("spec") or {}).get("holderIdentity")
            now = time.time()
            body = self._body(ttl, now, lease)
            verb = "renewed" if holder == self.holder else "took over" if lease and holder else "acquired"
            if self.check_mode:
                return self._result(body, True, True, "would have %s lock %s/%s" % (verb, self.namespace, self.name),
                                    lease)
            try:
                if lease is None:
                    stored = self.kube.request("POST", path_for(LEASE_API, "leases", self.namespace), body=body)
                else:
                    stored = self.kube.request("PUT", self.path, body=body)
            except KubeApiError as exc:
                if exc.status == 409:
                    continue  # someone else wrote it in between: look again
                raise
            return self._result(stored or body, True, True, "%s lock %s/%s" % (verb, self.namespace, self.name),
                                lease)
        raise StormError("lock %s/%s kept changing under us (%d conflicts): retry" % (
            self.namespace, self.name, CONFLICT_ATTEMPTS))

    def release(self, force: bool = False) -> Dict[str, Any]:
        lease = self.kube.find(self.path)
        if lease is None:
            return self._result(None, False, False, "lock %s/%s is not held" % (self.namespace, self.name))
        spec = lease.get("spec") or {}
        holder = spec.get("holderIdentity")
        expires = _expiry(spec)
        if holder and holder != self.holder and not force:
            raise StormError(
                "lock %s/%s is held by %s (until %s), not by %s: not releasing another run's lock; "
                "set force: true if that run is gone" % (
                    self.namespace, self.name, holder,
                    iso(expires) if expires else "no expiry", self.holder),
                refused=True, acquired=False, holder=holder)
        if not self.check_mode:
            version = (lease.get("metadata") or {}).get("resourceVersion")
            body = {"kind": "DeleteOptions", "apiVersion": "v1",
                    "preconditions": {"resourceVersion": version}} if version else None
            try:
                self.kube.request("DELETE", self.path, body=body)
            except KubeApiError as exc:
                if exc.status != 404:
                    raise
        result = self._result(None, True, False, "%s lock %s/%s (held by %s)" % (
            "would release" if self.check_mode else "released", self.namespace, self.name, holder), lease)
        result["holder"] = holder
        return result


def _holding(lease: Optional[Dict[str, Any]]) -> Dict[str, Any]:
    spec = (lease or {}).get("spec") or {}
    if not spec.get("holderIdentity"):
        return {}
    expires = _expiry(spec)
    return {"holder": spec["holderIdentity"], "expires_at": iso(expires) if expires else None}


def _expiry(spec: Dict[str, Any]) -> Optional[float]:
    renewed = parse_time(spec.get("renewTime") or spec.get("acquireTime"))
    if renewed is None or spec.get("leaseDurationSeconds") is None:
        return None
    return renewed + int(spec["leaseDurationSeconds"])


# --- the fence --------------------------------------------------------------------------------

class Fence:
    """A run's hold on the incident lock, checked and renewed before the module's writes.

    ``hold()`` refuses (``StormError`` with ``refused``, ``lost_lock``) unless the Lease names this
    run's holder with the ``leaseTransitions`` it had when the run took it, then renews it with a
    resourceVersion precondition. A hold counts for half the Lease's duration of the observer's
    clock (a taker must see the Lease unchanged for the whole of it); writes after that hold again.
    """

    def __init__(self, kube: Kube, lock: Dict[str, Any], clock: Callable[[], float] = time.monotonic) -> None:
        self.kube = kube
        self.namespace = lock.get("namespace") or DEFAULT_LEDGER_NAMESPACE
        self.name = lease_name(lock["name"])
        self.holder = lock["holder"]
        self.transitions = lock.get("transitions")
        self.path = path_for(LEASE_API, "leases", self.namespace, self.name)
        self.clock = clock
        self.valid_until: Optional[float] = None

    def _lost(self, why: str) -> StormError:
        return StormError(
            "this run no longer holds the incident lock %s/%s: %s. Nothing more was written; the ledger lists "
            "what this run changed. Check who acts on this incident now before running again"
            % (self.namespace, self.name, why), refused=True, lost_lock=True)

    def __call__(self, method: str, path: str) -> None:
        """The Kube client's hook before every write (the Lease's own renewals excepted)."""
        if path != self.path:
            self.hold()

    def hold(self) -> None:
        if self.valid_until is not None and self.clock() < self.valid_until:
            return
        for attempt in range(CONFLICT_ATTEMPTS):
            if attempt:
                back_off(attempt - 1)
            started = self.clock()
            lease = self.kube.find(self.path)
            if lease is None:
                raise self._lost("the Lease is gone (released, or expired and removed)")
            spec = dict(lease.get("spec") or {})
            holder = spec.get("holderIdentity")
            if holder != self.holder:
                raise self._lost("it is held by %s" % (holder or "nobody"))
            transitions = int(spec.get("leaseTransitions") or 0)
            if self.transitions is not None and transitions != int(self.transitions):
                raise self._lost("it changed hands since this run took it (leaseTransitions %d, was %d)"
                                 % (transitions, int(self.transitions)))
            spec["renewTime"] = micro_time(time.time())
            try:
                self.kube.request("PUT", self.path, body=dict(lease, spec=spec))
            except KubeApiError as exc:
                if exc.status == 409:
                    continue  # written in between (a takeover, or another module of this run): judge it again
                raise
            self.valid_until = started + float(spec.get("leaseDurationSeconds") or 0) / 2
            return
        raise StormError("lock %s/%s kept changing under us (%d conflicts): retry" % (
            self.namespace, self.name, CONFLICT_ATTEMPTS))


def fence_writes(kube: Kube, params: Dict[str, Any], check_mode: bool) -> Optional[Fence]:
    """When the module was given ``lock``: hold it now and before each later write of ``kube``
    (check mode writes nothing, so nothing is fenced)."""
    lock = params.get("lock")
    if not lock or check_mode:
        return None
    fence = Fence(kube, lock)
    fence.hold()
    kube.before_write = fence
    return fence
