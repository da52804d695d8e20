"""The API server's object semantics: create, read, update, patch, delete, /scale, /status, logs, cascades."""

from __future__ import annotations

import asyncio
import copy
import secrets
import time
import uuid
from dataclasses import dataclass
from typing import Any, Callable, Optional

from . import defaults
from .audit import AuditLog, now_iso
from .patch import apply_patch, json_equal
from .resources import Registry, ResourceType
from .selectors import field_matcher, label_matcher, selector_string
from .status import ApiError, already_exists, bad_request, conflict, invalid, namespace_not_found, not_found
from .store import Store
from .validation import WORKLOADS, check_decodes, ensure_object, validate, validate_scale

GC_USER = "system:serviceaccount:kube-system:generic-garbage-collector"
# Kinds whose DELETE answers with the object itself rather than a Status (graceful or finalized kinds, and CRs).
RETURNS_OBJECT = frozenset(("Pod", "Namespace"))


def _strip_rv(obj: dict[str, Any]) -> dict[str, Any]:
    out = dict(obj)
    out["metadata"] = {k: v for k, v in obj.get("metadata", {}).items() if k not in ("resourceVersion",)}
    return out


def _without(obj: dict[str, Any], *keys: str) -> dict[str, Any]:
    return {k: v for k, v in obj.items() if k not in keys}


@dataclass
class ApiServer:
    registry: Registry
    store: Store
    audit: AuditLog

    def __post_init__(self) -> None:
        self.namespaces = self.registry.lookup("", "v1", "namespaces")
        self.pods = self.registry.lookup("", "v1", "pods")
        self._gc_pending = False

    # ---- reads -------------------------------------------------------------------------------------------
    def present(self, rt: ResourceType, version: str, obj: dict[str, Any]) -> dict[str, Any]:
        out = {"kind": rt.kind, "apiVersion": rt.api_version(version)}
        out.update((k, v) for k, v in obj.items() if k not in ("kind", "apiVersion"))
        return out

    def get(self, rt: ResourceType, version: str, namespace: str, name: str) -> dict[str, Any]:
        obj = self.store.get(rt, namespace, name)
        if obj is None:
            raise not_found(rt, name)
        return self.present(rt, version, obj)

    def list_items(self, rt: ResourceType, version: str, namespace: Optional[str], label_selector: str = "",
             field_selector: str = "") -> list[dict[str, Any]]:
        match_labels = label_matcher(label_selector) if label_selector else None
        match_fields = field_matcher(field_selector, rt.field_labels) if field_selector else None
        items = []
        # read-only path: present() builds new top-level dicts and nothing below mutates the shared parts
        for obj in self.store.list_objects(rt, namespace, private=False):
            if (match_labels is None or match_labels(obj)) and (match_fields is None or match_fields(obj)):
                items.append(self.present(rt, version, obj))
        return items

    def list_object(self, rt: ResourceType, version: str, items: list[dict[str, Any]]) -> dict[str, Any]:
        # typed lists of built-in kinds carry no kind/apiVersion per item; custom resource lists do
        if not rt.custom:
            items = [_without(item, "kind", "apiVersion") for item in items]
        return {"kind": rt.kind + "List", "apiVersion": rt.api_version(version),
                "metadata": {"resourceVersion": str(self.store.resource_version)}, "items": items}

    def _require_namespace(self, rt: ResourceType, namespace: str) -> None:
        if rt.namespaced and self.namespaces is not None and not self.store.exists(self.namespaces, "", namespace):
            raise namespace_not_found(namespace)

    # ---- create -----------------------------------------------------------------------------------------
    def _check_type(self, rt: ResourceType, version: str, body: dict[str, Any]) -> None:
        expected = rt.api_version(version)
        api_version, kind = body.get("apiVersion"), body.get("kind")
        if api_version and api_version != expected and not (
                rt.custom and api_version.rpartition("/")[0] == rt.group
                and api_version.rpartition("/")[2] in rt.versions):
            raise bad_request("the API version in the data (%s) does not match the expected API version (%s)"
                              % (api_version, expected))
        if kind and kind != rt.kind:
            raise bad_request("%s in version \"%s\" cannot be handled as a %s: the kind in the data (%s) does not "
                              "match the expected kind (%s)" % (kind, version, rt.kind, kind, rt.kind))

    def create(self, rt: ResourceType, version: str, namespace: str, body: Any, dry_run: bool,
               seeding: bool = False) -> dict[str, Any]:
        obj = copy.deepcopy(ensure_object(body))
        self._check_type(rt, version, obj)
        check_decodes(rt, obj, patched=False)
        meta = obj.setdefault("metadata", {})
        if rt.namespaced:
            if meta.get("namespace") and meta["namespace"] != namespace:
                raise bad_request("the namespace of the provided object does not match the namespace sent on the "
                                  "request")
            meta["namespace"] = namespace
            if not seeding:
                self._require_namespace(rt, namespace)
        else:
            meta.pop("namespace", None)
        if not meta.get("name") and meta.get("generateName"):
            meta["name"] = meta["generateName"] + "".join(secrets.choice("bcdfghjklmnpqrstvwxz2456789")
                                                          for _ in range(5))
        obj["apiVersion"], obj["kind"] = rt.api_version(version), rt.kind
        existing = self.store.get(rt, namespace if rt.namespaced else "", meta.get("name", "")) \
            if meta.get("name") else None
        if seeding and existing is not None:
            meta["uid"] = existing["metadata"]["uid"]
            meta["creationTimestamp"] = existing["metadata"]["creationTimestamp"]
        else:
            meta["uid"] = str(uuid.uuid4())
            meta["creationTimestamp"] = now_iso(millis=False)
        for field in ("resourceVersion", "deletionTimestamp", "deletionGracePeriodSeconds", "selfLink"):
            meta.pop(field, None)
        if rt.generation:
            meta["generation"] = 1
        else:
            meta.pop("generation", None)
        if rt.has_status() and not seeding:
            obj["status"] = defaults.initial_status(rt.kind)
        defaults.apply_defaults(rt.kind, obj)
        validate(rt, obj)
        if existing is not None and not seeding:
            raise already_exists(rt, meta["name"])
        if dry_run:
            meta["resourceVersion"] = ""
            return obj
        meta["resourceVersion"] = self.store.next_rv()
        self.store.put(rt, obj, "MODIFIED" if existing is not None else "ADDED")
        return copy.deepcopy(obj)

    # ---- update / patch ---------------------------------------------------------------------------------
    def _commit(self, rt: ResourceType, version: str, old: dict[str, Any], new: dict[str, Any], dry_run: bool,
                subresource: str, patched: bool) -> dict[str, Any]:
        name = old["metadata"]["name"]
        new = copy.deepcopy(ensure_object(new))
        self._check_type(rt, version, new)
        check_decodes(rt, new, patched=patched)
        meta = new.get("metadata")
        if not isinstance(meta, dict):
            meta = new["metadata"] = {}
        if meta.get("name", name) != name:
            raise bad_request("the name of the object (%s) does not match the name on the URL (%s)"
                              % (meta.get("name"), name))
        if rt.namespaced and meta.get("namespace", old["metadata"]["namespace"]) != old["metadata"]["namespace"]:
            raise bad_request("the namespace of the provided object does not match the namespace sent on the "
                              "request")
        if meta.get("uid") and meta["uid"] != old["metadata"]["uid"]:
            raise ApiError(409, "Precondition failed: UID in precondition: %s, UID in object meta: %s"
                           % (old["metadata"]["uid"], meta["uid"]), "Conflict",
                           {"name": name, "group": rt.group, "kind": rt.plural} if rt.group
                           else {"name": name, "kind": rt.plural})
        if meta.get("resourceVersion") and meta["resourceVersion"] != old["metadata"]["resourceVersion"]:
            raise conflict(rt, name)
        if subresource == "status":
            status = new.get("status")
            new = copy.deepcopy(old)
            if status is None:
                new.pop("status", None)
            else:
                new["status"] = status
        else:
            if rt.has_status():
                if "status" in old:
                    new["status"] = copy.deepcopy(old["status"])
                else:
                    new.pop("status", None)
            for field in ("uid", "creationTimestamp", "deletionTimestamp", "generation"):
                if field in old["metadata"]:
                    meta[field] = old["metadata"][field]
                else:
                    meta.pop(field, None)
            meta["name"] = name
            if rt.namespaced:
                meta["namespace"] = old["metadata"]["namespace"]
        new["apiVersion"], new["kind"] = rt.api_version(version), rt.kind
        defaults.apply_defaults(rt.kind, new)
        validate(rt, new)
        if rt.kind in WORKLOADS and (old.get("spec") or {}).get("selector") != (new.get("spec") or {}).get(
                "selector"):
            raise invalid(rt.kind, rt.group, name, [("FieldValueInvalid", "spec.selector",
                                                     "Invalid value: %s: field is immutable"
                                                     % selector_string((new.get("spec") or {}).get("selector")
                                                                       or {}))])
        if rt.generation and not json_equal(_without(old, "metadata", "status", "apiVersion", "kind"),
                                            _without(new, "metadata", "status", "apiVersion", "kind")):
            new["metadata"]["generation"] = int(old["metadata"].get("generation") or 0) + 1
        new["metadata"]["resourceVersion"] = old["metadata"]["resourceVersion"]
        old_view = dict(old, apiVersion=new["apiVersion"], kind=new["kind"])
        if json_equal(_strip_rv(old_view), _strip_rv(new)) or dry_run:
            return new
        new["metadata"]["resourceVersion"] = self.store.next_rv()
        self.store.put(rt, new, "MODIFIED")
        return copy.deepcopy(new)

    def _current(self, rt: ResourceType, version: str, namespace: str, name: str) -> dict[str, Any]:
        obj = self.store.get(rt, namespace if rt.namespaced else "", name)
        if obj is None:
            raise not_found(rt, name)
        obj["apiVersion"], obj["kind"] = rt.api_version(version), rt.kind
        return obj

    def update(self, rt: ResourceType, version: str, namespace: str, name: str, body: Any, dry_run: bool,
               subresource: str = "") -> dict[str, Any]:
        old = self._current(rt, version, namespace, name)
        return self._commit(rt, version, old, body, dry_run, subresource, patched=False)

    def patch(self, rt: ResourceType, version: str, namespace: str, name: str, content_type: str, body: Any,
              dry_run: bool, subresource: str = "") -> dict[str, Any]:
        old = self._current(rt, version, namespace, name)
        patched = apply_patch(content_type, old, body, rt.custom)
        return self._commit(rt, version, old, patched, dry_run, subresource, patched=True)

    # ---- scale ------------------------------------------------------------------------------------------
    def scale_of(self, obj: dict[str, Any]) -> dict[str, Any]:
        meta = obj["metadata"]
        spec, status = obj.get("spec") or {}, obj.get("status") or {}
        return {
            "kind": "Scale", "apiVersion": "autoscaling/v1",
            "metadata": {k: meta[k] for k in ("name", "namespace", "uid", "resourceVersion", "creationTimestamp")
                         if k in meta},
            "spec": {"replicas": spec.get("replicas", 0)} if spec.get("replicas") is not None else {},
            "status": {"replicas": status.get("replicas") or 0,
                       "selector": selector_string(spec.get("selector") or {})},
        }

    def get_scale(self, rt: ResourceType, version: str, namespace: str, name: str) -> dict[str, Any]:
        return self.scale_of(self._current(rt, version, namespace, name))

    def update_scale(self, rt: ResourceType, version: str, namespace: str, name: str, body: Any,
                     dry_run: bool, patched: bool = False) -> dict[str, Any]:
        old = self._current(rt, version, namespace, name)
        scale = ensure_object(body)
        scale_rt = ResourceType("autoscaling", ("v1",), "scale", "scale", "Scale")
        check_decodes(scale_rt, scale, patched=patched)
        meta = scale.get("metadata") or {}
        if meta.get("name", name) != name:
            raise bad_request("the name of the object (%s) does not match the name on the URL (%s)"
                              % (meta.get("name"), name))
        validate_scale(name, scale)
        if meta.get("resourceVersion") and meta["resourceVersion"] != old["metadata"]["resourceVersion"]:
            raise conflict(rt, name)
        replicas = (scale.get("spec") or {}).get("replicas")
        new = copy.deepcopy(old)
        new.setdefault("spec", {})["replicas"] = int(replicas) if replicas is not None else 0
        return self.scale_of(self._commit(rt, version, old, new, dry_run, "", patched=False))

    def patch_scale(self, rt: ResourceType, version: str, namespace: str, name: str, content_type: str, body: Any,
                    dry_run: bool) -> dict[str, Any]:
        current = self.get_scale(rt, version, namespace, name)
        patched = apply_patch(content_type, current, body, custom=False)
        return self.update_scale(rt, version, namespace, name, patched, dry_run, patched=True)

    # ---- delete -----------------------------------------------------------------------------------------
    def delete(self, rt: ResourceType, version: str, namespace: str, name: str, dry_run: bool,
               options: Optional[dict[str, Any]] = None) -> dict[str, Any]:
        options = options or {}
        obj = self._current(rt, version, namespace, name)
        meta = obj["metadata"]
        pre = options.get("preconditions") or {}
        for field, label in (("uid", "UID"), ("resourceVersion", "ResourceVersion")):
            if pre.get(field) and pre[field] != meta.get(field):
                raise ApiError(409, "Precondition failed: %s in precondition: %s, %s in object meta: %s"
                               % (label, pre[field], label, meta.get(field)), "Conflict",
                               {"name": name, "group": rt.group, "kind": rt.plural} if rt.group
                               else {"name": name, "kind": rt.plural})
        policy = options.get("propagationPolicy") or ("Orphan" if options.get("orphanDependents") else "Background")
        if policy not in ("Orphan", "Background", "Foreground"):
            raise invalid("DeleteOptions", "", "", [("FieldValueNotSupported", "propagationPolicy",
                                                      'Unsupported value: "%s": supported values: "Foreground", '
                                                      '"Background", "Orphan", "nil"' % policy)])
        if rt.kind in ("Pod", "Namespace") and not rt.group:
            meta["deletionTimestamp"] = now_iso(millis=False)
            if rt.kind == "Pod":
                meta["deletionGracePeriodSeconds"] = int(options.get("gracePeriodSeconds") or 30)
            else:
                obj.setdefault("status", {})["phase"] = "Terminating"
        if not dry_run:
            if rt.kind == "Namespace" and not rt.group:
                self._empty_namespace(name)
            self.store.remove(rt, namespace if rt.namespaced else "", name)
            if policy == "Orphan":
                self._orphan(meta["uid"])
            else:
                self.schedule_gc()
        if rt.custom or (rt.kind in RETURNS_OBJECT and not rt.group):
            return obj
        details: dict[str, Any] = {"name": name}
        if rt.group:
            details["group"] = rt.group
        details.update(kind=rt.plural, uid=meta["uid"])
        return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "details": details}

    def delete_collection(self, rt: ResourceType, version: str, namespace: Optional[str], label_selector: str,
                          field_selector: str, dry_run: bool, options: Optional[dict[str, Any]] = None
                          ) -> dict[str, Any]:
        items = self.list_items(rt, version, namespace, label_selector, field_selector)
        for item in items:
            self.delete(rt, version, item["metadata"].get("namespace", ""), item["metadata"]["name"], dry_run,
                        options)
        return self.list_object(rt, version, items)

    def _empty_namespace(self, namespace: str) -> None:
        for rt in self.registry.resources:
            if rt.namespaced:
                for obj in self.store.list_objects(rt, namespace):
                    self.store.remove(rt, namespace, obj["metadata"]["name"])

    def _orphan(self, uid: str) -> None:
        for rt in self.registry.resources:
            for obj in self.store.list_objects(rt, None):
                refs = obj["metadata"].get("ownerReferences") or []
                kept = [r for r in refs if r.get("uid") != uid]
                if len(kept) != len(refs):
                    obj["metadata"]["ownerReferences"] = kept
                    if not kept:
                        del obj["metadata"]["ownerReferences"]
                    obj["metadata"]["resourceVersion"] = self.store.next_rv()
                    self.store.put(rt, obj, "MODIFIED")

    def schedule_gc(self) -> None:
        """Dependents go in the background, like the garbage collector after a Background delete."""
        if self._gc_pending:
            return
        self._gc_pending = True
        try:
            asyncio.get_running_loop().call_soon(self.collect_garbage)
        except RuntimeError:
            self.collect_garbage()

    def collect_garbage(self) -> int:
        self._gc_pending = False
        removed = 0
        while True:
            live = {obj["metadata"]["uid"] for rt in self.registry.resources if rt.group != "metrics.k8s.io"
                    for obj in self.store.objects.get((rt.group, rt.plural), {}).values()}
            doomed = []
            for rt in self.registry.resources:
                for obj in self.store.objects.get((rt.group, rt.plural), {}).values():
                    refs = obj["metadata"].get("ownerReferences") or []
                    if refs and not any(r.get("uid") in live for r in refs):
                        doomed.append((rt, obj["metadata"].get("namespace", ""), obj["metadata"]["name"]))
            if not doomed:
                return removed
            for rt, namespace, name in doomed:
                self.store.remove(rt, namespace, name)
                removed += 1
                self.audit.record(user=GC_USER, verb="delete", group=rt.group, version=rt.versions[0],
                                  resource=rt.plural, subresource="", namespace=namespace, name=name,
                                  dry_run=False, code=200)

    # ---- logs -------------------------------------------------------------------------------------------
    def pod_container(self, namespace: str, name: str, container: str) -> str:
        assert self.pods is not None
        pod = self._current(self.pods, "v1", namespace, name)
        names = [str(c.get("name")) for c in (pod.get("spec") or {}).get("containers") or []]
        if not container:
            if len(names) > 1:
                raise bad_request("a container name must be specified for pod %s, choose one of: [%s]"
                                  % (name, " ".join(names)))
            return names[0] if names else ""
        if container not in names:
            raise bad_request("container %s is not valid for pod %s" % (container, name))
        return container

    def read_log(self, namespace: str, name: str, container: str, previous: bool, tail: Optional[int],
                 since_seconds: Optional[int], timestamps: bool, limit_bytes: Optional[int]) -> str:
        container = self.pod_container(namespace, name, container)
        found = self.store.read_log(namespace, name, container, previous)
        if found is None:
            if previous:
                raise bad_request('previous terminated container "%s" in pod "%s" not found' % (container, name))
            found = []
        lines = found
        if since_seconds is not None:
            cutoff = time.time() - since_seconds
            lines = [line for line in lines if line.ts >= cutoff]
        if tail is not None and tail >= 0:
            lines = lines[-tail:] if tail else []
        render: Callable[[Any], str] = (
            (lambda line: "%s %s\n" % (time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(line.ts))
                                       + ".%09dZ" % int((line.ts % 1) * 1e9), line.text))
            if timestamps else (lambda line: line.text + "\n"))
        text = "".join(render(line) for line in lines)
        if limit_bytes is not None and limit_bytes > 0:
            text = text.encode()[:limit_bytes].decode(errors="ignore")
        return text
