# -*- coding: utf-8 -*-
# Copyright: fintech SRE
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Field paths in Kubernetes objects, and the JSON merge patches built from them.

A field path is a list of dict keys; the value at a path is owned whole. A path through a JSON
document held in a string has ``{json}`` where the string ends (``json_fields``). ``ABSENT`` as a
value says the key is not there (as a desired value it removes the key).
"""

from __future__ import annotations

import copy
from typing import Any, Dict, Optional, Sequence, Tuple

from ansible_collections.fintech.redis_storm.plugins.module_utils import json_fields

MERGE_PATCH = "application/merge-patch+json"

FieldPath = Tuple[str, ...]
# (present, value) of fields as a check-mode restore of newer entries would have left them
Overlay = Dict[FieldPath, Tuple[bool, Any]]


class _Absent:
    """The value of a field that is not there (``ABSENT`` as a desired value removes the key)."""

    def __repr__(self) -> str:
        return "ABSENT"


ABSENT: Any = _Absent()


def get_path(obj: Any, path: Sequence[str]) -> Tuple[bool, Any]:
    """(present, value) of a path in a nested dict (through a JSON document string, see json_fields)."""
    parts = json_fields.split(path)
    if parts is not None:
        present, text = get_path(obj, parts[0])
        doc = json_fields.document(text) if present else None
        return (False, None) if doc is None else get_path(doc, parts[1])
    node = obj
    for key in path:
        if not isinstance(node, dict) or key not in node:
            return False, None
        node = node[key]
    return True, node


def set_path(obj: Dict[str, Any], path: Sequence[str], value: Any) -> Dict[str, Any]:
    parts = json_fields.split(path)
    if parts is not None:
        text = get_path(obj, parts[0])[1]
        doc = json_fields.document(text) or {}
        return set_path(obj, parts[0], json_fields.dump(set_path(doc, parts[1], value), text))
    node = obj
    for key in path[:-1]:
        node = node.setdefault(key, {})
    node[path[-1]] = value
    return obj


def remove_path(obj: Dict[str, Any], path: Sequence[str]) -> Dict[str, Any]:
    parts = json_fields.split(path)
    if parts is not None:
        present, text = get_path(obj, parts[0])
        doc = json_fields.document(text) if present else None
        if doc is not None:
            set_path(obj, parts[0], json_fields.dump(remove_path(doc, parts[1]), text))
        return obj
    parent_present, parent = get_path(obj, path[:-1])
    if parent_present and isinstance(parent, dict):
        parent.pop(path[-1], None)
    return obj


def put_path(obj: Dict[str, Any], path: Sequence[str], present: bool, value: Any) -> Dict[str, Any]:
    """Set the path (present) or remove it (absent)."""
    return set_path(obj, path, value) if present else remove_path(obj, path)


def with_overlay(obj: Dict[str, Any], overlay: Optional[Overlay]) -> Dict[str, Any]:
    """A deep copy of ``obj`` with the overlay's fields set (present) or removed (absent)."""
    if not overlay:
        return obj
    out = copy.deepcopy(obj)
    for path, (present, value) in overlay.items():
        put_path(out, path, present, value)
    return out


def nest(values: Dict[FieldPath, Any]) -> Dict[str, Any]:
    """{("a","b"): 1} -> {"a": {"b": 1}}, leaving out ABSENT values (for diffs and results)."""
    out: Dict[str, Any] = {}
    for path, value in values.items():
        if value is not ABSENT:
            set_path(out, path, value)
    return out


def merge_diff(live: Any, wanted: Any) -> Any:
    """The merge-patch value that turns ``live`` into exactly ``wanted`` (None deletes)."""
    if wanted is ABSENT:
        return None
    if isinstance(live, dict) and isinstance(wanted, dict):
        patch: Dict[str, Any] = {key: None for key in live if key not in wanted}
        for key, value in wanted.items():
            if key not in live or live[key] != value:
                patch[key] = merge_diff(live.get(key), value)
        return patch
    return wanted


def same(present: bool, value: Any, want_present: bool, want: Any) -> bool:
    return present == want_present and (not present or value == want)


def field_label(path: Sequence[str]) -> str:
    return ".".join(path)


def created_map(live: Dict[str, Any], path: Sequence[str]) -> Optional[FieldPath]:
    """The outermost map above ``path`` that ``live`` lacks (writing the path creates it), or None."""
    if json_fields.split(path) is not None:
        return None  # inside a JSON document only existing leaves are changed
    node: Any = live
    for depth, key in enumerate(path[:-1]):
        if not isinstance(node, dict) or key not in node:
            return tuple(path[:depth + 1])
        node = node[key]
    return None


def holds_nothing(value: Any) -> bool:
    """A map with no value anywhere in it (``{}``, ``{"tcp": {}}``)."""
    return isinstance(value, dict) and all(holds_nothing(v) for v in value.values())


def merge_patched(obj: Dict[str, Any], patch: Dict[str, Any]) -> Dict[str, Any]:
    """``obj`` as the API server leaves it after the JSON merge patch (RFC 7386), as a new object."""
    out = copy.deepcopy(obj)
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        elif isinstance(value, dict):
            out[key] = merge_patched(out[key] if isinstance(out.get(key), dict) else {}, value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def drop_emptied_maps(live: Dict[str, Any], patch: Dict[str, Any], created: Sequence[Sequence[str]]) -> None:
    """Make ``patch`` remove, rather than empty, the maps the restored fields created (``created``) and the
    annotations it leaves with nothing in them: the object is then exactly as it was before."""
    after = merge_patched(live, patch)
    annotations = ("metadata", "annotations")
    emptied_annotations = not holds_nothing(get_path(live, annotations)[1])
    for where in [*created, *([annotations] if emptied_annotations else [])]:
        present, value = get_path(after, where)
        if present and holds_nothing(value):
            set_path(patch, where, None)


def deep_merge(base: Dict[str, Any], extra: Dict[str, Any]) -> Dict[str, Any]:
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            deep_merge(base[key], value)
        else:
            base[key] = value
    return base
