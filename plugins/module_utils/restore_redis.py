# -*- coding: utf-8 -*-
# Copyright: fintech SRE
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Restoring a ledger entry whose target is a Redis server: CONFIG SET of the values CONFIG GET gave."""

from __future__ import annotations

from typing import Any, Dict, Optional, Sequence, Tuple

from ansible_collections.fintech.redis_storm.plugins.module_utils.drift import closing_state, judge
from ansible_collections.fintech.redis_storm.plugins.module_utils.errors import StormError
from ansible_collections.fintech.redis_storm.plugins.module_utils.field_paths import Overlay
from ansible_collections.fintech.redis_storm.plugins.module_utils.redis_server import config_get


def restore_redis(entry: Dict[str, Any], outcome: Dict[str, Any], force: bool, dry_run: bool,
                  redis: Any, overlay: Optional[Overlay] = None) -> Optional[str]:
    """Fill in ``outcome``; the state to close the entry with, or None to leave it open. ``redis`` is a
    redis-py client of the entry's server (None: the entry is skipped)."""
    endpoint = entry["target"].get("endpoint")
    if redis is None:
        outcome.update(outcome="skipped", msg="%s: Redis %s not restored: give the redis connection options "
                       "to restore CONFIG SET changes" % (entry["id"], endpoint))
        return None
    try:
        live = {f["path"][0]: config_get(redis, f["path"][0]) for f in entry.get("fields") or []}
    except Exception as exc:  # redis-py raises many types; the message is what matters
        raise StormError("cannot read the configuration of Redis %s: %s" % (endpoint, exc)) from exc
    for path, (present, value) in (overlay or {}).items():
        if path[0] in live:
            live[path[0]] = value if present else None

    def read(config: Any, path: Sequence[str]) -> Tuple[bool, Any]:
        return path[0] in config, config.get(path[0])

    to_put_back = judge(entry, live, outcome, force, read)
    if to_put_back is None:
        return closing_state(outcome)
    outcome["fields"] = [{"path": f["path"], "live": f["live"], "restored": f["before"]} for f in to_put_back]
    if not dry_run:
        for field in to_put_back:
            try:
                redis.config_set(field["path"][0], field["before"])
            except Exception as exc:
                raise StormError("CONFIG SET %s %s on Redis %s failed: %s" % (
                    field["path"][0], field["before"], endpoint, exc)) from exc
    outcome.update(outcome="restored", changed=bool(to_put_back), msg="%s: %s on Redis %s" % (
        entry["id"], ", ".join("%s=%s" % (f["path"][0], f["before"]) for f in to_put_back) or "nothing to put back",
        endpoint))
    return "restored"
