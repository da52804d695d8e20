# -*- coding: utf-8 -*-
# Copyright: fintech SRE
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""storm_rollback: restore every open ledger entry of an incident, newest first."""

from __future__ import annotations

from typing import Any, Dict, List, Optional

from ansible_collections.fintech.redis_storm.plugins.module_utils.errors import StormError
from ansible_collections.fintech.redis_storm.plugins.module_utils.k8s_client import Kube
from ansible_collections.fintech.redis_storm.plugins.module_utils.ledger import (
    Ledger,
    Overlay,
    get_path,
    overlay_of,
    set_path,
    target_key,
)

SUMMARY_KEYS = ("restored", "drifted", "missing", "skipped", "failed", "unapplied")


def _redis_connection(options: Optional[Dict[str, Any]]) -> Any:
    """A redis_conn.Connection for Redis entries, or None when no connection options were given."""
    if not options:
        return None
    from ansible_collections.fintech.redis_storm.plugins.module_utils import redis_conn

    connection = redis_conn.connect(dict(options))
    if not connection.reachable:
        raise StormError("cannot connect to Redis %s to restore its configuration: %s" % (
            redis_conn.endpoint(options), connection.error))
    return connection


def _endpoint(options: Optional[Dict[str, Any]]) -> Optional[str]:
    from ansible_collections.fintech.redis_storm.plugins.module_utils import redis_conn

    return redis_conn.endpoint(options) if options else None


def rollback(kube: Kube, params: Dict[str, Any], check_mode: bool) -> Dict[str, Any]:
    """Restore every open entry; returns ``{changed, summary, entries, ledger, msg, failed?}``."""
    ledger = Ledger(kube, params["incident_id"], params.get("ledger_namespace"))
    entries = ledger.open_entries()
    connection = None
    endpoint = _endpoint(params.get("redis"))
    if any((e.get("target") or {}).get("endpoint") == endpoint for e in entries):
        connection = _redis_connection(params.get("redis"))
    outcomes: List[Dict[str, Any]] = []
    # check mode writes nothing: per target, what the newer entries would have put back
    overlays: Dict[Any, Overlay] = {}
    try:
        for entry in entries:
            # only the Redis the options point at: another server's entries are reported as skipped
            same_redis = (entry.get("target") or {}).get("endpoint") == endpoint
            client = connection.client if connection is not None and same_redis else None
            overlay = overlays.setdefault(target_key(entry.get("target") or {}), {})
            done = ledger.restore(entry, force=bool(params.get("force")), dry_run=check_mode, redis=client,
                                  overlay=overlay if check_mode else None)
            overlay.update(overlay_of(done))
            outcomes.append(done)
    finally:
        if connection is not None:
            connection.close()
    before: Dict[str, Any] = {}
    after: Dict[str, Any] = {}
    for outcome in outcomes:  # newest first: the first live value seen, the oldest recorded one wins
        for field in outcome["fields"]:
            path = [outcome["target"], *field["path"]]
            if not get_path(before, path)[0] and field["live"] is not None:
                set_path(before, path, field["live"])
            if field["restored"] is not None:
                set_path(after, path, field["restored"])
            elif get_path(after, path)[0]:
                set_path(after, path, None)
    summary = {key: sum(1 for o in outcomes if o["outcome"] == key) for key in SUMMARY_KEYS}
    result: Dict[str, Any] = {
        "changed": any(o["changed"] for o in outcomes), "summary": summary, "entries": outcomes,
        "ledger": ledger.ref(outcomes[-1]["entry_id"] if outcomes else None),
        "diff": {"before": before, "after": _drop_none(after)},
    }
    if not outcomes:
        result["msg"] = "incident %s has no open ledger entry: nothing to roll back" % ledger.incident_id
        return result
    counts = ", ".join("%d %s" % (n, k) for k, n in summary.items() if n)
    problems = [o["msg"] for o in outcomes if o["outcome"] in ("drifted", "failed")]
    if problems:
        result["failed"] = True
        result["msg"] = "rollback of incident %s incomplete (%s): %s" % (ledger.incident_id, counts,
                                                                         " | ".join(problems))
    else:
        result["msg"] = "rollback of incident %s%s: %s" % (ledger.incident_id, " (check mode)" if check_mode else "",
                                                           counts)
    skipped = [o["msg"] for o in outcomes if o["outcome"] == "skipped"]
    if skipped:
        result["warnings"] = skipped
    return result


def _drop_none(tree: Dict[str, Any]) -> Dict[str, Any]:
    """Fields a rollback removes show as absent in the diff's after side."""
    return {k: _drop_none(v) if isinstance(v, dict) else v for k, v in tree.items() if v is not None}
