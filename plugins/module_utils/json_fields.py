# -*- coding: utf-8 -*-
# Copyright: fintech SRE
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Fields inside a JSON document held in a string (a flagd flag document in a ConfigMap key).

The ledger stores only the leaves a mitigation changed, not the document: the path runs to the
string, then ``MARK``, then the keys inside the document, e.g.
``["data", "flags.json", "{json}", "flags", "retry", "defaultVariant"]``. Reading such a path
parses the string; writing it rewrites the string with the leaf set or removed.
"""

from __future__ import annotations

import json
from typing import Any, Dict, List, Optional, Sequence, Tuple

MARK = "{json}"


def split(path: Sequence[str]) -> Optional[Tuple[List[str], List[str]]]:
    """(path to the string, keys inside the document), or None for a plain path."""
    path = list(path)
    if MARK not in path:
        return None
    at = path.index(MARK)
    return path[:at], path[at + 1:]


def document(text: Any) -> Optional[Dict[str, Any]]:
    """The JSON object a string holds, or None when it holds none."""
    if not isinstance(text, str):
        return None
    try:
        parsed = json.loads(text)
    except ValueError:
        return None
    return parsed if isinstance(parsed, dict) else None


def dump(doc: Dict[str, Any], like: Optional[str] = None) -> str:
    """The document, laid out as ``like`` is (its indent, compact or not, its final newline), so that
    putting a leaf back gives back the text it had."""
    if like is None:
        return json.dumps(doc, indent=2) + "\n"
    lines = like.strip().splitlines()
    if len(lines) < 2:
        return json.dumps(doc) + ("\n" if like.endswith("\n") else "")
    indent = len(lines[1]) - len(lines[1].lstrip(" "))
    return json.dumps(doc, indent=indent or 2) + ("\n" if like.endswith("\n") else "")


Leaf = Tuple[List[str], bool, Any, bool, Any]


def leaves(before: Dict[str, Any], after: Dict[str, Any], prefix: Sequence[str] = ()) -> List[Leaf]:
    """(keys, present_before, before, present_after, after) of every leaf that differs."""
    out: List[Tuple[List[str], bool, Any, bool, Any]] = []
    for key in list(before) + [k for k in after if k not in before]:
        path = [*list(prefix), key]
        old, new = before.get(key), after.get(key)
        if key in before and key in after and isinstance(old, dict) and isinstance(new, dict):
            out.extend(leaves(old, new, path))
        elif key not in before or key not in after or old != new:
            out.append((path, key in before, old, key in after, new))
    return out


def narrow(field: Dict[str, Any]) -> List[Dict[str, Any]]:
    """A field whose both sides are flagd documents, as one field per changed leaf; other fields as they are
    (a plain flag whose value happens to be JSON is owned whole, as it was written)."""
    before = document(field.get("before")) if field.get("present_before") else None
    after = document(field.get("after")) if field.get("present_after", True) else None
    if before is None or after is None or split(field["path"]) is not None:
        return [field]
    if not (isinstance(before.get("flags"), dict) and isinstance(after.get("flags"), dict)):
        return [field]
    return [{"path": [*list(field["path"]), MARK, *keys], "present_before": had, "before": old if had else None,
             "present_after": has, "after": new if has else None}
            for keys, had, old, has, new in leaves(before, after)]
