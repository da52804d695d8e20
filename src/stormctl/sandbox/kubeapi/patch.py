"""JSON merge patch (RFC 7386), strategic merge patch (the fields our kinds use) and JSON patch (RFC 6902)."""

from __future__ import annotations

import copy
from typing import Any

from .status import ApiError, bad_request

MERGE_PATCH = "application/merge-patch+json"
STRATEGIC_PATCH = "application/strategic-merge-patch+json"
JSON_PATCH = "application/json-patch+json"
APPLY_PATCH = "application/apply-patch+yaml"

# patchMergeKey of the list fields in the built-in types we serve (from their Go struct tags).
MERGE_KEYS = {
    "containers": "name", "initContainers": "name", "ephemeralContainers": "name", "volumes": "name",
    "env": "name", "volumeMounts": "mountPath", "volumeDevices": "devicePath", "conditions": "type",
    "imagePullSecrets": "name", "hostAliases": "ip", "ownerReferences": "uid", "podIPs": "ip",
    "topologySpreadConstraints": "topologyKey", "resourceClaims": "name", "claims": "name",
    "readinessGates": "conditionType", "schedulingGates": "name",
}
# Lists of scalars with patchStrategy=merge: merged as sets.
MERGE_SETS = frozenset(("finalizers",))


def json_equal(a: Any, b: Any) -> bool:
    """Equality of JSON values that does not confuse true with 1."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(json_equal(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(json_equal(x, y) for x, y in zip(a, b))
    return bool(type(a) is type(b) or (isinstance(a, (int, float)) and isinstance(b, (int, float)))) and a == b


def merge_patch(target: Any, patch: Any) -> Any:
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def _merge_key(field: str, path: tuple[str, ...]) -> str | None:
    if field == "ports":
        return "containerPort" if any(p in ("containers", "initContainers", "ephemeralContainers") for p in path) \
            else "port"
    return MERGE_KEYS.get(field)


def strategic_merge_patch(target: Any, patch: Any, path: tuple[str, ...] = ()) -> Any:
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    if patch.get("$patch") == "replace":
        return {k: copy.deepcopy(v) for k, v in patch.items() if k != "$patch"}
    if patch.get("$patch") == "delete":
        return None
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if key in ("$patch", "$retainKeys") or key.startswith("$setElementOrder/"):
            continue
        if key.startswith("$deleteFromPrimitiveList/"):
            name = key.split("/", 1)[1]
            result[name] = [v for v in result.get(name) or [] if v not in (value or [])]
            continue
        if value is None:
            result.pop(key, None)
        elif isinstance(value, list):
            result[key] = _merge_list(key, result.get(key), value, (*path, key))
        else:
            result[key] = strategic_merge_patch(result.get(key), value, (*path, key))
    return result


def _merge_list(field: str, current: Any, patch: list[Any], path: tuple[str, ...]) -> list[Any]:
    existing: list[Any] = current if isinstance(current, list) else []
    if field in MERGE_SETS:
        return existing + [v for v in patch if v not in existing]
    key = _merge_key(field, path[:-1])
    if key is None or not all(isinstance(item, dict) for item in patch):
        if any(isinstance(item, dict) and item.get("$patch") == "replace" for item in patch):
            return [item for item in patch if not (isinstance(item, dict) and "$patch" in item)]
        return [copy.deepcopy(item) for item in patch]
    if any(item.get("$patch") == "replace" for item in patch):
        return [copy.deepcopy(item) for item in patch if "$patch" not in item]
    result = [copy.deepcopy(item) for item in existing]
    for item in patch:
        if key not in item:
            raise bad_request("map: %s does not contain declared merge key: %s" % (item, key))
        index = next((i for i, cur in enumerate(result) if isinstance(cur, dict) and cur.get(key) == item[key]), None)
        if item.get("$patch") == "delete":
            if index is not None:
                del result[index]
        elif index is None:
            result.append(strategic_merge_patch({}, item, path))
        else:
            result[index] = strategic_merge_patch(result[index], item, path)
    return result


def _pointer(path: str) -> list[str]:
    if path == "":
        return []
    if not path.startswith("/"):
        raise bad_request('json patch path "%s" must start with "/"' % path)
    return [part.replace("~1", "/").replace("~0", "~") for part in path[1:].split("/")]


def _failure(message: str) -> ApiError:
    return ApiError(422, message, details={})


def _parent(doc: Any, parts: list[str], op: str, path: str) -> Any:
    cur = doc
    for part in parts[:-1]:
        if isinstance(cur, dict) and part in cur:
            cur = cur[part]
        elif isinstance(cur, list) and part.isdigit() and int(part) < len(cur):
            cur = cur[int(part)]
        else:
            raise _failure('%s operation does not apply: doc is missing path: "%s": missing value' % (op, path))
    return cur


def _get(doc: Any, path: str, op: str) -> Any:
    parts = _pointer(path)
    if not parts:
        return doc
    parent = _parent(doc, parts, op, path)
    last = parts[-1]
    if isinstance(parent, dict) and last in parent:
        return parent[last]
    if isinstance(parent, list) and last.isdigit() and int(last) < len(parent):
        return parent[int(last)]
    raise _failure('%s operation does not apply: doc is missing path: "%s": missing value' % (op, path))


def _remove(doc: Any, path: str, op: str = "remove") -> Any:
    parts = _pointer(path)
    parent = _parent(doc, parts, op, path)
    last = parts[-1] if parts else ""
    if isinstance(parent, dict) and last in parent:
        return parent.pop(last)
    if isinstance(parent, list) and last.isdigit() and int(last) < len(parent):
        return parent.pop(int(last))
    raise _failure('%s operation does not apply: doc is missing path: "%s": missing value' % (op, path))


def _add(doc: Any, path: str, value: Any, op: str = "add") -> Any:
    parts = _pointer(path)
    if not parts:
        return value
    parent = _parent(doc, parts, op, path)
    last = parts[-1]
    if isinstance(parent, dict):
        parent[last] = value
    elif isinstance(parent, list):
        if last == "-":
            parent.append(value)
        elif last.isdigit() and int(last) <= len(parent):
            parent.insert(int(last), value)
        else:
            raise _failure('%s operation does not apply: doc is missing path: "%s": missing value' % (op, path))
    else:
        raise _failure('%s operation does not apply: doc is missing path: "%s": missing value' % (op, path))
    return doc


def json_patch(doc: Any, ops: Any) -> Any:
    if not isinstance(ops, list):
        raise bad_request("json: cannot unmarshal %s into Go value of type jsonpatch.Patch" % type(ops).__name__)
    doc = copy.deepcopy(doc)
    for op in ops:
        if not isinstance(op, dict) or "op" not in op or "path" not in op:
            raise bad_request("json patch operation %r needs `op` and `path`" % (op,))
        kind, path = op["op"], op["path"]
        if kind in ("add", "replace", "test") and "value" not in op:
            raise bad_request("json patch %s operation on %s needs a `value`" % (kind, path))
        if kind == "add":
            doc = _add(doc, path, copy.deepcopy(op["value"]))
        elif kind == "remove":
            _remove(doc, path)
        elif kind == "replace":
            if _pointer(path):
                _remove(doc, path, "replace")
            doc = _add(doc, path, copy.deepcopy(op["value"]), "replace")
        elif kind == "move":
            value = _remove(doc, op.get("from", ""), "move")
            doc = _add(doc, path, value, "move")
        elif kind == "copy":
            doc = _add(doc, path, copy.deepcopy(_get(doc, op.get("from", ""), "copy")), "copy")
        elif kind == "test":
            try:
                actual = _get(doc, path, "test")
            except ApiError:
                raise _failure("testing value %s failed: test failed" % path) from None
            if not json_equal(actual, op["value"]):
                raise _failure("testing value %s failed: test failed" % path)
        else:
            raise bad_request("Unexpected kind: %s" % kind)
    return doc


def apply_patch(content_type: str, current: dict[str, Any], body: Any, custom: bool) -> Any:
    """The patched object; raises ApiError 400/415/422 as the API server does."""
    accepted = [JSON_PATCH, MERGE_PATCH, APPLY_PATCH] if custom else [JSON_PATCH, MERGE_PATCH, APPLY_PATCH,
                                                                       STRATEGIC_PATCH]
    if content_type == JSON_PATCH:
        return json_patch(current, body)
    if content_type == MERGE_PATCH or (content_type == STRATEGIC_PATCH and not custom):
        if not isinstance(body, dict):
            raise bad_request("json: cannot unmarshal %s into Go value of type map[string]interface {}"
                              % type(body).__name__)
        if content_type == MERGE_PATCH:
            return merge_patch(current, body)
        return strategic_merge_patch(current, body)
    raise ApiError(415, "the body of the request was in an unknown format - accepted media types include: %s"
                   % ", ".join(accepted), details={})
