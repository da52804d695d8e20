# -*- coding: utf-8 -*-
# Copyright: fintech SRE
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The ladder's rung records: attempts, cooldowns and outcomes, kept in the cluster.

They live in the incident's ledger ConfigMap (``rungs.json``) so cooldowns and attempt caps hold
across machines and AWX nodes. They are kept per rung and target (the Redis deployment the rung
acts for, ``<rung>@<target>``): one incident may span several Redis hosts, and one host's cooldown
must not hold back another's rung.
"""

from __future__ import annotations

import time
from typing import Any, Dict, Optional

from ansible_collections.fintech.redis_storm.plugins.module_utils.errors import StormError
from ansible_collections.fintech.redis_storm.plugins.module_utils.k8s_client import Kube
from ansible_collections.fintech.redis_storm.plugins.module_utils.lease import iso, parse_time
from ansible_collections.fintech.redis_storm.plugins.module_utils.ledger import Ledger


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
