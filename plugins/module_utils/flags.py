# -*- coding: utf-8 -*-
# Copyright: fintech SRE
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Plans for feature_flag: flag keys in a ConfigMap, plain strings or a flagd flag document."""

from __future__ import annotations

import json
from typing import Any, Dict

from ansible_collections.fintech.redis_storm.plugins.module_utils import json_fields
from ansible_collections.fintech.redis_storm.plugins.module_utils.errors import StormError
from ansible_collections.fintech.redis_storm.plugins.module_utils.field_paths import FieldPath
from ansible_collections.fintech.redis_storm.plugins.module_utils.k8s_client import Kube
from ansible_collections.fintech.redis_storm.plugins.module_utils.mitigation import Plan, named_workloads
from ansible_collections.fintech.redis_storm.plugins.module_utils.targets import ObjectRef


def flag_text(value: Any) -> str:
    """ConfigMap values are strings; YAML booleans become the lowercase words apps parse."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def pick_variant(key: str, flag: Dict[str, Any], value: Any) -> str:
    """The flagd variant whose value (or name) matches ``value``."""
    variants = flag.get("variants") or {}
    wanted = flag_text(value).lower()
    for name, variant_value in variants.items():
        if variant_value == value or flag_text(variant_value).lower() == wanted:
            return str(name)
    if str(value) in variants:
        return str(value)
    raise StormError("flagd flag %r has no variant whose value is %r (variants: %s)" % (
        key, value, json.dumps(variants)))


def flagd_document(text: str, flags: Dict[str, Any], where: str) -> str:
    """The flagd document with each flag's defaultVariant set; ``text`` itself when nothing changes."""
    try:
        document = json.loads(text)
    except ValueError as exc:
        raise StormError("%s is not a flagd JSON document: %s" % (where, exc)) from exc
    known = (document.get("flags") if isinstance(document, dict) else None) or {}
    changed = False
    for key, value in flags.items():
        if key not in known:
            raise StormError("%s has no flag %r (flags: %s)" % (where, key, ", ".join(sorted(known)) or "none"))
        variant = pick_variant(key, known[key], value)
        if known[key].get("defaultVariant") != variant:
            known[key]["defaultVariant"] = variant
            changed = True
    return json_fields.dump(document, like=text) if changed else text


def flag_plan(kube: Kube, params: Dict[str, Any]) -> Plan:
    """feature_flag: the ConfigMap keys (plain) or the flagd document key it owns."""
    ref = ObjectRef("v1", "ConfigMap", "configmaps", params["namespace"], params["name"])
    flags: Dict[str, Any] = params.get("flags") or {}
    if params.get("state") != "restored" and not flags:
        raise StormError("flags must name at least one flag to set")

    def desired(live: Dict[str, Any]) -> Dict[FieldPath, Any]:
        data = live.get("data") or {}
        if params.get("format") == "flagd":
            key = params.get("flagd_key") or "flags.json"
            if key not in data:
                raise StormError("ConfigMap %s/%s has no key %r holding flagd flags; set flagd_key" % (
                    ref.namespace, ref.name, key))
            return {("data", key): flagd_document(data[key], flags, "%s key %s" % (ref.label, key))}
        return {("data", key): flag_text(value) for key, value in flags.items()}

    return Plan(ref, desired, module="feature_flag", workloads=named_workloads(params))
