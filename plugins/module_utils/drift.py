# -*- coding: utf-8 -*-
# Copyright: fintech SRE
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""An open ledger entry judged against the live values: unapplied, drifted, or the fields to put back.

A live value equal to ``before`` has nothing to put back; one equal to ``after`` (or to a step a
rollback recorded in ``stepped``) is ours; anything else is drift, someone else's change.
"""

from __future__ import annotations

import json
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from ansible_collections.fintech.redis_storm.plugins.module_utils.field_paths import field_label, same


def judge(entry: Dict[str, Any], live: Any, outcome: Dict[str, Any], force: bool,
          read: Callable[[Any, Sequence[str]], Tuple[bool, Any]],
          expected: Optional[Callable[[Dict[str, Any], bool, Any], bool]] = None
          ) -> Optional[List[Dict[str, Any]]]:
    """The fields to put back, or None when the outcome is already decided (unapplied/drifted).

    ``expected(field, present, value)`` says whether a changed live value is a known, expected
    mover's doing rather than drift."""
    at_before, to_put_back = [], []
    for field in entry.get("fields") or []:
        present, value = read(live, field["path"])
        is_before = same(present, value, field["present_before"], field["before"])
        is_after = same(present, value, field.get("present_after", True), field["after"]) or (
            present and value in (field.get("stepped") or []))
        at_before.append(is_before)
        if is_before:
            continue
        if not is_after and not (expected is not None and expected(field, present, value)):
            outcome["drift"].append({"field": field_label(field["path"]), "set": field["after"],
                                     "found": value if present else None, "found_present": present})
        to_put_back.append(dict(field, live=value, live_present=present))
    # a deferred entry was applied and is kept open on purpose: back at its original means restored
    if entry.get("state") == "pending" and not entry.get("deferred") and all(at_before) and not outcome["drift"]:
        outcome.update(outcome="unapplied", msg="%s was recorded but its write never reached %s" % (
            entry["id"], outcome["target"]))
        return None
    if outcome["drift"] and not force:
        outcome.update(outcome="drifted", msg=drift_message(entry, outcome))
        return None
    return to_put_back


def closing_state(outcome: Dict[str, Any]) -> Optional[str]:
    """The state an entry judged not to restore is closed with: ``failed`` when unapplied, else left open."""
    return "failed" if outcome["outcome"] == "unapplied" else None


def drift_message(entry: Dict[str, Any], outcome: Dict[str, Any]) -> str:
    parts = ["%s: we set %s, found %s" % (d["field"], json.dumps(d["set"]),
                                          json.dumps(d["found"]) if d["found_present"] else "it removed")
             for d in outcome["drift"]]
    return ("drift on %s (ledger %s): %s. Someone changed it after the mitigation; restoring would clobber "
            "that change. Check who did, then rerun with force: true to restore anyway" % (
                outcome["target"], entry["id"], "; ".join(parts)))
