"""Discovery documents: /api, /apis, /apis/<group>, and APIResourceLists per group version."""

from __future__ import annotations

import base64
import hashlib
from typing import Any

from .resources import Registry, ResourceType

VERSION_INFO = {
    "major": "1", "minor": "32", "gitVersion": "v1.32.4", "gitCommit": "59526cd4867447956156ae3a602fcbac5fc0d7fc",
    "gitTreeState": "clean", "buildDate": "2025-04-22T16:02:27Z", "goVersion": "go1.23.6", "compiler": "gc",
    "platform": "linux/amd64",
}


def api_versions(server_address: str) -> dict[str, Any]:
    return {"kind": "APIVersions", "versions": ["v1"],
            "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": server_address}]}


def api_group(name: str, versions: tuple[str, ...]) -> dict[str, Any]:
    entries = [{"groupVersion": "%s/%s" % (name, v), "version": v} for v in versions]
    return {"kind": "APIGroup", "apiVersion": "v1", "name": name, "versions": entries, "preferredVersion": entries[0]}


def api_group_list(registry: Registry) -> dict[str, Any]:
    groups = []
    for name, versions in registry.groups():
        group = api_group(name, versions)
        del group["kind"], group["apiVersion"]
        groups.append(group)
    return {"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}


def _entry(rt: ResourceType, version: str) -> dict[str, Any]:
    entry: dict[str, Any] = {"name": rt.plural, "singularName": rt.singular, "namespaced": rt.namespaced,
                             "kind": rt.kind, "verbs": list(rt.verbs)}
    if rt.short_names:
        entry["shortNames"] = list(rt.short_names)
    if rt.categories:
        entry["categories"] = list(rt.categories)
    digest = hashlib.sha256(("%s/%s/%s" % (rt.group, version, rt.plural)).encode()).digest()
    entry["storageVersionHash"] = base64.b64encode(digest[:8]).decode()
    return entry


def resource_list(registry: Registry, group: str, version: str) -> dict[str, Any]:
    resources: list[dict[str, Any]] = []
    for rt in registry.in_group_version(group, version):
        resources.append(_entry(rt, version))
        for sub in rt.subresources:
            item: dict[str, Any] = {"name": "%s/%s" % (rt.plural, sub.name), "singularName": "",
                                    "namespaced": rt.namespaced}
            if sub.group is not None:
                item["group"], item["version"] = sub.group, sub.version
            item["kind"], item["verbs"] = sub.kind, list(sub.verbs)
            resources.append(item)
    return {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": "%s/%s" % (group, version) if group
            else version, "resources": resources}
