# -*- coding: utf-8 -*-
# Copyright: fintech SRE
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Coordination in the cluster: the incident lock (a Lease) and the ladder's rung records.

The lock is a coordination.k8s.io/v1 Lease ``redis-storm-lock-<name>``. Creating it, or
taking over an expired one, is a write with a resourceVersion precondition (create fails with
409 when another acquirer created it first), so two simultaneous acquirers cannot both win:
the loser re-reads and is refused with the winner's name.

Rung records live in the incident's ledger ConfigMap (``rungs.json``) so cooldowns and
attempt caps hold across machines and AWX nodes. They are kept per rung and target (the Redis
deployment the rung acts for, ``<rung>@<target>``): one incident may span several Redis hosts, and
one host's cooldown must not hold back another's rung.
"""

from __future__ import annotations

import calendar
import re
import socket
import time
from typing import Any, Dict, Optional

from ansible_collections.fintech.redis_storm.plugins.module_utils.errors import StormError
from ansible_collections.fintech.redis_storm.plugins.module_utils.k8s_client import Kube, KubeApiError, path_for
from ansible_collections.fintech.redis_storm.plugins.module_utils.ledger import (
    MANAGED_BY,
    MANAGED_BY_LABEL,
    Ledger,
    check_incident_id,
    os_user,
)
from ansible_collections.fintech.redis_storm.plugins.module_utils.retry import CONFLICT_ATTEMPTS, back_off

LEASE_API = "coordination.k8s.io/v1"


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
    base, _, fraction = text.rstrip("Z").partition(".")
    try:
        seconds = calendar.timegm(time.strptime(base, "%Y-%m-%dT%H:%M:%S"))
    except ValueError:
        return None
    return seconds + (float("0." + fraction) if fraction.isdigit() else 0.0)


def lease_name(name: str) -> str:
    """``redis-storm-lock-<name>``; an inventory host name like ``Payments_Redis`` becomes ``payments-redis``."""
    normalized = re.sub(r"[^a-z0-9.-]+", "-", name.lower()).strip("-.")[:40].strip("-.")
    try:
        return "redis-storm-lock-" + check_incident_id(normalized)
    except StormError as exc:
        raise StormError("lock name %r cannot name a Lease: use letters and digits" % name) from exc


class Lock:
    """The incident lock. ``acquire``/``release`` return the module result (``changed``,
    ``acquired``, ``holder``, ``expires_at``, ``msg``) or raise ``StormError`` with
    ``refused=True`` when someone else holds it."""

    def __init__(self, kube: Kube, namespace: str, name: str, holder: Optional[str] = None,
                 check_mode: bool = False) -> None:
        self.kube = kube
        self.namespace = namespace
        self.name = lease_name(name)
        self.holder = holder or default_holder()
        self.check_mode = check_mode
        self.path = path_for(LEASE_API, "leases", namespace, self.name)

    def _result(self, lease: Optional[Dict[str, Any]], changed: bool, acquired: bool, msg: str,
                previous: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
        """The result; ``diff`` compares the lock's holder and expiry with ``previous`` (the Lease before)."""
        spec = (lease or {}).get("spec") or {}
        expires = _expiry(spec)
        return {"changed": changed, "acquired": acquired, "holder": spec.get("holderIdentity"),
                "expires_at": iso(expires) if expires else None,
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

    def acquire(self, ttl: int, force: bool = False) -> Dict[str, Any]:
        if ttl <= 0:
            raise StormError("ttl_seconds must be more than 0 (got %d)" % ttl)
        for attempt in range(CONFLICT_ATTEMPTS):
            if attempt:
                back_off(attempt - 1)
            lease = self.kube.find(self.path)
            now = time.time()
            spec = (lease or {}).get("spec") or {}
            holder = spec.get("holderIdentity")
            expires = _expiry(spec)
            live = bool(holder) and expires is not None and expires > now
            if live and holder != self.holder and not force:
                raise StormError(
                    "lock %s/%s is held by %s until %s (%d s from now): another run is mitigating this incident; "
                    "wait for it, or once you are sure it is gone set force: true"
                    % (self.namespace, self.name, holder, iso(expires or now), (expires or now) - now),
                    refused=True, acquired=False, holder=holder,
                    expires_at=iso(expires or now))
            body = self._body(ttl, now, lease)
            verb = "renewed" if holder == self.holder and live else "took over" if lease else "acquired"
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


# --- rung records ----------------------------------------------------------------------------

def _ago(seconds: float) -> str:
    return "%d s" % seconds if seconds < 120 else "%d min" % (seconds // 60)


def rung_decision(record: Optional[Dict[str, Any]], max_attempts: Optional[int], cooldown_seconds: int,
                  now: float) -> Dict[str, Any]:
    """``{allowed, reason}`` for starting a rung again, from its record."""
    record = record or {}
    attempts = int(record.get("attempts") or 0)
    if max_attempts is not None and attempts >= max_attempts:
        return {"allowed": False, "reason": "%d of %d attempts used" % (attempts, max_attempts)}
    started = parse_time(record.get("last_started_at"))
    if started is not None and cooldown_seconds and now - started < cooldown_seconds:
        return {"allowed": False, "reason": "ran %s ago, cooldown %d s (%d s left)" % (
            _ago(now - started), cooldown_seconds, cooldown_seconds - (now - started))}
    if attempts == 0:
        return {"allowed": True, "reason": "never ran in this incident"}
    return {"allowed": True, "reason": "%d attempt%s so far%s" % (
        attempts, "" if attempts == 1 else "s", ", cooldown over" if cooldown_seconds else "")}


def rung_key(rung: str, target: Optional[str]) -> str:
    """The record's key in ``rungs.json``: ``<rung>@<target>``, or the rung alone without a target."""
    return "%s@%s" % (rung, target) if target else rung


class Rungs:
    """The ladder's records in the incident ledger, per rung and target: query (read-only), started, finished."""

    def __init__(self, kube: Kube, incident_id: str, namespace: str, check_mode: bool = False,
                 target: Optional[str] = None) -> None:
        self.ledger = Ledger(kube, incident_id, namespace)
        self.check_mode = check_mode
        self.target = target

    def _label(self, rung: str) -> str:
        return "%s on %s" % (rung, self.target) if self.target else rung

    def _result(self, rung: str, record: Dict[str, Any], decision: Dict[str, Any], changed: bool,
                msg: str, previous: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
        return dict(decision, changed=changed, rung=rung, target=self.target,
                    attempts=int(record.get("attempts") or 0),
                    last_started_at=record.get("last_started_at"), last_finished_at=record.get("last_finished_at"),
                    outcome=record.get("outcome"), ledger=self.ledger.ref(), msg=msg,
                    diff={"before": dict(previous if previous is not None else record), "after": dict(record)})

    def query(self, rung: str, max_attempts: Optional[int], cooldown_seconds: int) -> Dict[str, Any]:
        record = self.ledger.rungs().get(rung_key(rung, self.target)) or {}
        decision = rung_decision(record, max_attempts, cooldown_seconds, time.time())
        return self._result(rung, record, decision, False, "%s: %s" % (self._label(rung), decision["reason"]))

    def started(self, rung: str, max_attempts: Optional[int], cooldown_seconds: int,
                force: bool = False) -> Dict[str, Any]:
        """Count one attempt; refused (``refused: true``) when the cap or cooldown says no, unless ``force``."""
        now = time.time()
        key = rung_key(rung, self.target)

        def start(rungs: Dict[str, Any]) -> Dict[str, Any]:
            previous = dict(rungs.get(key) or {})
            record = dict(previous)
            decision = rung_decision(record, max_attempts, cooldown_seconds, now)
            if not decision["allowed"] and not force:
                raise StormError("rung %s may not start: %s" % (self._label(rung), decision["reason"]),
                                 refused=True, allowed=False, reason=decision["reason"], rung=rung,
                                 target=self.target)
            record["attempts"] = int(record.get("attempts") or 0) + 1
            record["last_started_at"] = iso(now)
            record["outcome"] = "running"
            rungs[key] = record
            return self._result(rung, record, decision, True, "%s: attempt %d started" % (
                self._label(rung), record["attempts"]), previous)

        if self.check_mode:
            return start(dict(self.ledger.rungs()))
        return self.ledger.update_rungs(start)

    def finished(self, rung: str, outcome: str, max_attempts: Optional[int] = None,
                 cooldown_seconds: int = 0) -> Dict[str, Any]:
        """Record the end of the running attempt; ``allowed``/``reason`` then speak of the next one."""
        now = time.time()
        key = rung_key(rung, self.target)

        def finish(rungs: Dict[str, Any]) -> Dict[str, Any]:
            previous = dict(rungs.get(key) or {})
            record = dict(previous)
            record["last_finished_at"] = iso(now)
            record["outcome"] = outcome
            rungs[key] = record
            decision = rung_decision(record, max_attempts, cooldown_seconds, now)
            return self._result(rung, record, decision, True, "%s: finished (%s)" % (self._label(rung), outcome),
                                previous)

        if self.check_mode:
            return finish(dict(self.ledger.rungs()))
        return self.ledger.update_rungs(finish)
