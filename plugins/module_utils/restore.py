# -*- coding: utf-8 -*-
# Copyright: fintech SRE
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Putting back what one ledger entry replaced, and closing the entry.

The Kubernetes restorer is ``restore_k8s``, the Redis one ``restore_redis``; both judge the live
values against the entry with ``drift``. Rollback's order over many entries is ``rollback``.
"""

from __future__ import annotations

from typing import Any, Dict, Optional

from ansible_collections.fintech.redis_storm.plugins.module_utils import owned
from ansible_collections.fintech.redis_storm.plugins.module_utils.errors import StormError
from ansible_collections.fintech.redis_storm.plugins.module_utils.field_paths import Overlay
from ansible_collections.fintech.redis_storm.plugins.module_utils.guards import Guards
from ansible_collections.fintech.redis_storm.plugins.module_utils.ledger import CONFLICT_RETRIES, OPEN_STATES, Ledger
from ansible_collections.fintech.redis_storm.plugins.module_utils.restore_k8s import restore_k8s
from ansible_collections.fintech.redis_storm.plugins.module_utils.restore_redis import restore_redis
from ansible_collections.fintech.redis_storm.plugins.module_utils.retry import back_off
from ansible_collections.fintech.redis_storm.plugins.module_utils.targets import target_label


def restore_entry(ledger: Ledger, entry: Dict[str, Any], force: bool = False, dry_run: bool = False,
                  redis: Any = None, overlay: Optional[Overlay] = None, guards: Optional[Guards] = None
                  ) -> Dict[str, Any]:
    """Put back what ``entry`` replaced and close it in ``ledger``; returns its outcome.

    Outcome: ``{entry_id, module, target, outcome, changed, msg, fields, drift}`` where
    ``outcome`` is ``restored`` (put back, or already back), ``noop`` (entry was closed),
    ``unapplied`` (a pending entry whose write never reached the object), ``drifted``
    (someone changed an owned field after us: nothing written; ``drift`` lists
    ``{field, set, found}``), ``missing`` (the object is gone), ``skipped`` (a Redis entry
    and no ``redis`` client given) or ``failed`` (the write failed; ``msg`` says why).
    ``fields`` lists ``{path, live, restored}`` of each field put back. A live value equal
    to ``before`` is not drift: there is nothing to put back. ``force`` restores over drift.
    ``dry_run`` validates with ``dryRun=All`` and writes nothing (not even the ledger).
    ``redis`` is a redis-py client for entries whose target is Redis. ``overlay``
    (``{path: (present, value)}``) is laid over the live values before judging: a dry run passes
    what the newer entries of the same target would have put back (``overlay_of``), since
    nothing was written. An entry outside what the mitigations write (``owned``) or outside the
    ``guards`` (namespace allow-list, protected workloads) is ``refused``: nothing is written.
    """
    for attempt in range(CONFLICT_RETRIES):
        if attempt:
            back_off(attempt - 1)
        outcome: Dict[str, Any] = {"entry_id": entry["id"], "module": entry.get("module"),
                                   "target": target_label(entry.get("target") or {}), "changed": False,
                                   "fields": [], "drift": []}
        if entry.get("state") not in OPEN_STATES:
            return dict(outcome, outcome="noop", msg="%s is already %s" % (entry["id"], entry.get("state")))
        try:
            owned.check_restorable(entry, guards)
        except StormError as exc:
            return dict(outcome, outcome="refused", msg=exc.message)
        try:
            if (entry.get("target") or {}).get("type") == "redis":
                closing = restore_redis(entry, outcome, force, dry_run, redis, overlay)
            else:
                closing = restore_k8s(ledger, entry, outcome, force, dry_run, overlay)
            if closing and not dry_run:
                ledger.set_state(entry["id"], closing)
            return outcome
        except StormError as exc:
            if exc.details.get("status") == 409 and attempt < CONFLICT_RETRIES - 1:
                continue  # the object changed between our read and write: judge it again
            return dict(outcome, outcome="failed", changed=False, msg="%s: %s" % (entry["id"], exc.message))
    raise StormError("unreachable")  # pragma: no cover


def overlay_of(outcome: Dict[str, Any]) -> Overlay:
    """What a (dry-run) restore outcome put back, as an overlay for judging the older entries."""
    if outcome.get("outcome") != "restored":
        return {}
    return {tuple(f["path"]): (f["restored"] is not None, f["restored"]) for f in outcome.get("fields") or []}
