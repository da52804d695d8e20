"""Decoding checks (400 or a 422 on `patch`) and field validation (422 Invalid with causes), per kind."""

from __future__ import annotations

import json
import re
from typing import Any, Optional

from .resources import ResourceType
from .status import ApiError, bad_request, invalid

Cause = tuple[str, str, str]

_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
_QUALIFIED_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
_CONFIG_KEY = re.compile(r"^[-._a-zA-Z0-9]+$")

SUBDOMAIN_MSG = ("a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', "
                 "and must start and end with an alphanumeric character (e.g. 'example.com', regex used for "
                 "validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')")
LABEL_MSG = ("a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start "
             "and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is "
             "'[a-z0-9]([-a-z0-9]*[a-z0-9])?')")
LABEL_VALUE_MSG = ("a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', "
                   "and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or "
                   "'12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')")

WORKLOADS = ("Deployment", "StatefulSet", "ReplicaSet")


def go_type(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def _string_map_error(obj: dict[str, Any], path: list[str], go_field: str) -> Optional[str]:
    cur: Any = obj
    for part in path:
        cur = cur.get(part) if isinstance(cur, dict) else None
    if cur is None:
        return None
    if not isinstance(cur, dict):
        return "json: cannot unmarshal %s into Go struct field %s of type map[string]string" % (go_type(cur), go_field)
    for value in cur.values():
        if not isinstance(value, str):
            return "json: cannot unmarshal %s into Go struct field %s of type string" % (go_type(value), go_field)
    return None


def _int_error(obj: dict[str, Any], path: list[str], go_field: str) -> Optional[str]:
    cur: Any = obj
    for part in path:
        cur = cur.get(part) if isinstance(cur, dict) else None
    if cur is None or (isinstance(cur, int) and not isinstance(cur, bool)):
        return None
    if isinstance(cur, float) and cur.is_integer():
        return None
    return "json: cannot unmarshal %s into Go struct field %s of type int32" % (go_type(cur), go_field)


def decode_error(rt: ResourceType, obj: dict[str, Any]) -> Optional[str]:
    """What Go's JSON decoder would say about a type mismatch in the fields we know, or None."""
    if not isinstance(obj.get("metadata", {}), dict):
        return "json: cannot unmarshal %s into Go struct field %s.metadata of type v1.ObjectMeta" % (
            go_type(obj["metadata"]), rt.kind)
    checks = [
        _string_map_error(obj, ["metadata", "labels"], "ObjectMeta.metadata.labels"),
        _string_map_error(obj, ["metadata", "annotations"], "ObjectMeta.metadata.annotations"),
    ]
    if rt.kind == "ConfigMap":
        checks.append(_string_map_error(obj, ["data"], "ConfigMap.data"))
        checks.append(_string_map_error(obj, ["binaryData"], "ConfigMap.binaryData"))
    if rt.kind in WORKLOADS:
        checks.append(_int_error(obj, ["spec", "replicas"], "%sSpec.spec.replicas" % rt.kind))
    if rt.kind == "HorizontalPodAutoscaler":
        checks.append(_int_error(obj, ["spec", "minReplicas"], "HorizontalPodAutoscalerSpec.spec.minReplicas"))
        checks.append(_int_error(obj, ["spec", "maxReplicas"], "HorizontalPodAutoscalerSpec.spec.maxReplicas"))
    if rt.kind == "Scale":
        checks.append(_int_error(obj, ["spec", "replicas"], "ScaleSpec.spec.replicas"))
    return next((c for c in checks if c), None)


def check_decodes(rt: ResourceType, obj: dict[str, Any], patched: bool) -> None:
    error = decode_error(rt, obj)
    if error is None:
        return
    name = str(obj.get("metadata", {}).get("name", "")) if isinstance(obj.get("metadata"), dict) else ""
    if patched:
        text = json.dumps(obj, separators=(",", ":"), sort_keys=True)
        raise invalid(rt.kind, rt.group, name, [("FieldValueInvalid", "patch", 'Invalid value: "%s": %s'
                                                  % (text.replace('"', '\\"'), error))])
    version = obj.get("apiVersion", "").rpartition("/")[2] or rt.versions[0]
    raise bad_request('%s in version "%s" cannot be handled as a %s: %s' % (rt.kind, version, rt.kind, error))


def _go_map(value: Any) -> str:
    if isinstance(value, dict):
        return "map[string]string{%s}" % ", ".join('"%s":"%s"' % (k, v) for k, v in sorted(value.items()))
    return "map[string]string(nil)"


def _meta_causes(rt: ResourceType, obj: dict[str, Any]) -> list[Cause]:
    causes: list[Cause] = []
    meta = obj.get("metadata") or {}
    name = meta.get("name")
    if not name:
        causes.append(("FieldValueRequired", "metadata.name", "Required value: name or generateName is required"))
    elif rt.kind == "Namespace" and not (_LABEL.match(name) and len(name) <= 63):
        causes.append(("FieldValueInvalid", "metadata.name", 'Invalid value: "%s": %s' % (name, LABEL_MSG)))
    elif rt.kind != "Namespace" and not (_SUBDOMAIN.match(name) and len(name) <= 253):
        causes.append(("FieldValueInvalid", "metadata.name", 'Invalid value: "%s": %s' % (name, SUBDOMAIN_MSG)))
    for ref in meta.get("ownerReferences") or []:
        for field, what in (("apiVersion", "version"), ("kind", "kind"), ("name", "name"), ("uid", "uid")):
            if not isinstance(ref, dict) or not ref.get(field):
                causes.append(("FieldValueInvalid", "metadata.ownerReferences.%s" % field,
                               'Invalid value: "": %s must not be empty' % what))
    for key, value in (meta.get("labels") or {}).items():
        if not isinstance(value, str) or len(value) > 63 or not _LABEL_VALUE.match(value):
            causes.append(("FieldValueInvalid", "metadata.labels",
                           'Invalid value: "%s": %s' % (value, LABEL_VALUE_MSG)))
        if not _QUALIFIED_NAME.match(key.rpartition("/")[2]):
            causes.append(("FieldValueInvalid", "metadata.labels", 'Invalid value: "%s": name part must consist of '
                           "alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric "
                           "character" % key))
    return causes


def _int(value: Any) -> Optional[int]:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return int(value)


def _workload_causes(obj: dict[str, Any]) -> list[Cause]:
    causes: list[Cause] = []
    spec = obj.get("spec") or {}
    replicas = _int(spec.get("replicas"))
    if replicas is not None and replicas < 0:
        causes.append(("FieldValueInvalid", "spec.replicas",
                       "Invalid value: %d: must be greater than or equal to 0" % replicas))
    selector = spec.get("selector")
    if not selector:
        causes.append(("FieldValueRequired", "spec.selector", "Required value"))
    template = spec.get("template") or {}
    labels = (template.get("metadata") or {}).get("labels") or {}
    if selector and not all(labels.get(k) == v for k, v in (selector.get("matchLabels") or {}).items()):
        causes.append(("FieldValueInvalid", "spec.template.metadata.labels",
                       "Invalid value: %s: `selector` does not match template `labels`" % _go_map(labels)))
    causes.extend(_pod_spec_causes(template.get("spec") or {}, "spec.template.spec"))
    return causes


def _pod_spec_causes(spec: dict[str, Any], path: str) -> list[Cause]:
    containers = spec.get("containers") or []
    if not containers:
        return [("FieldValueRequired", path + ".containers", "Required value")]
    causes: list[Cause] = []
    for i, container in enumerate(containers):
        if not container.get("name"):
            causes.append(("FieldValueRequired", "%s.containers[%d].name" % (path, i), "Required value"))
        if not container.get("image"):
            causes.append(("FieldValueRequired", "%s.containers[%d].image" % (path, i), "Required value"))
    return causes


def _hpa_causes(obj: dict[str, Any]) -> list[Cause]:
    causes: list[Cause] = []
    spec = obj.get("spec") or {}
    ref = spec.get("scaleTargetRef") or {}
    if not ref.get("kind"):
        causes.append(("FieldValueRequired", "spec.scaleTargetRef.kind", "Required value"))
    if not ref.get("name"):
        causes.append(("FieldValueRequired", "spec.scaleTargetRef.name", "Required value"))
    low, high = _int(spec.get("minReplicas")), _int(spec.get("maxReplicas"))
    if low is not None and low < 1:
        causes.append(("FieldValueInvalid", "spec.minReplicas",
                       "Invalid value: %d: must be greater than or equal to 1" % low))
    if high is None or high < 1:
        causes.append(("FieldValueInvalid", "spec.maxReplicas",
                       "Invalid value: %s: must be greater than 0" % (high if high is not None else 0)))
    elif low is not None and high < low:
        causes.append(("FieldValueInvalid", "spec.maxReplicas",
                       "Invalid value: %d: must be greater than or equal to `minReplicas`" % high))
    for direction in ("scaleUp", "scaleDown"):
        rules = ((spec.get("behavior") or {}).get(direction)) or {}
        policy = rules.get("selectPolicy")
        if policy is not None and policy not in ("Disabled", "Max", "Min"):
            causes.append(("FieldValueNotSupported", "spec.behavior.%s.selectPolicy" % direction,
                           'Unsupported value: "%s": supported values: "Disabled", "Max", "Min"' % policy))
        window = _int(rules.get("stabilizationWindowSeconds"))
        if window is not None and not 0 <= window <= 3600:
            causes.append(("FieldValueInvalid", "spec.behavior.%s.stabilizationWindowSeconds" % direction,
                           "Invalid value: %d: must be less than or equal to 3600" % window if window > 0 else
                           "Invalid value: %d: must be greater than or equal to zero" % window))
    return causes


# The API server's limit on a ConfigMap's data and binaryData together (keys and values).
CONFIGMAP_MAX_BYTES = 1024 * 1024


def _configmap_size_causes(obj: dict[str, Any]) -> list[Cause]:
    size = sum(len(str(key).encode()) + len(str(value).encode())
               for part in ("data", "binaryData") for key, value in (obj.get(part) or {}).items())
    if size > CONFIGMAP_MAX_BYTES:
        return [("FieldValueTooLong", "[]", "Too long: must have at most %d bytes" % CONFIGMAP_MAX_BYTES)]
    return []


def _kind_causes(rt: ResourceType, obj: dict[str, Any]) -> list[Cause]:
    spec: dict[str, Any] = obj["spec"] if isinstance(obj.get("spec"), dict) else {}
    if rt.kind in WORKLOADS:
        return _workload_causes(obj)
    if rt.kind == "Pod":
        return _pod_spec_causes(spec, "spec")
    if rt.kind == "HorizontalPodAutoscaler":
        return _hpa_causes(obj)
    if rt.kind == "ConfigMap":
        return _configmap_size_causes(obj) + [
            ("FieldValueInvalid", "data[%s]" % key, 'Invalid value: "%s": a valid config key must consist of '
             "alphanumeric characters, '-', '_' or '.' (e.g. 'key.name',  or 'KEY_NAME',  or 'key-name', regex "
             "used for validation is '[-._a-zA-Z0-9]+')" % key)
            for key in (obj.get("data") or {}) if not _CONFIG_KEY.match(key)]
    if rt.kind == "Lease":
        duration = _int(spec.get("leaseDurationSeconds"))
        if duration is not None and duration <= 0:
            return [("FieldValueInvalid", "spec.leaseDurationSeconds",
                     "Invalid value: %d: must be greater than 0" % duration)]
    if rt.kind == "ScaledObject" and not (spec.get("scaleTargetRef") or {}).get("name"):
        return [("FieldValueRequired", "spec.scaleTargetRef", "Required value")]
    if rt.kind == "DestinationRule" and not spec.get("host"):
        return [("FieldValueRequired", "spec.host", "Required value")]
    return []


def validate(rt: ResourceType, obj: dict[str, Any]) -> None:
    causes = _meta_causes(rt, obj) + _kind_causes(rt, obj)
    if causes:
        raise invalid(rt.kind, rt.group, str((obj.get("metadata") or {}).get("name") or ""), causes)


def validate_scale(name: str, scale: dict[str, Any]) -> None:
    replicas = _int((scale.get("spec") or {}).get("replicas"))
    if replicas is not None and replicas < 0:
        raise invalid("Scale", "autoscaling", name, [("FieldValueInvalid", "spec.replicas",
                                                       "Invalid value: %d: must be greater than or equal to 0"
                                                       % replicas)])


def ensure_object(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise ApiError(400, "json: cannot unmarshal %s into Go value of type struct" % go_type(body), details={})
    return body
