"""`/_sandbox/*`: the audit log, faults, pod logs, pod metrics and seeding, for tests and the fleet (admin only)."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from .api import ApiServer
from .audit import AuditLog, now_iso
from .faults import Faults
from .handlers import json_response, read_body, status_response
from .rbac import TokenFile
from .resources import Registry
from .status import ApiError, bad_request, forbidden_path, unauthorized


class SandboxHandlers:
    def __init__(self, registry: Registry, api: ApiServer, tokens: TokenFile, faults: Faults,
                 audit: AuditLog) -> None:
        self.registry = registry
        self.api = api
        self.tokens = tokens
        self.faults = faults
        self.audit = audit

    def routes(self) -> list[web.RouteDef]:
        return [
            web.get("/_sandbox/audit", self._guard(self.get_audit)),
            web.get("/_sandbox/faults", self._guard(self.get_faults)),
            web.post("/_sandbox/faults", self._guard(self.add_fault)),
            web.delete("/_sandbox/faults", self._guard(self.clear_faults)),
            web.delete("/_sandbox/faults/{id}", self._guard(self.clear_faults)),
            web.post("/_sandbox/pods/{namespace}/{name}/log", self._guard(self.append_log)),
            web.put("/_sandbox/podmetrics/{namespace}/{name}", self._guard(self.put_metrics)),
            web.post("/_sandbox/objects", self._guard(self.seed)),
            web.post("/_sandbox/reset", self._guard(self.reset)),
        ]

    def _guard(self, handler: Any) -> Any:
        async def guarded(request: web.Request) -> web.StreamResponse:
            identity = self.tokens.identify(request.headers.get("Authorization"))
            try:
                if identity is None:
                    raise unauthorized()
                if not identity.admin:
                    raise forbidden_path(identity.user, request.method.lower(), request.path)
                result: web.StreamResponse = await handler(request)
                return result
            except ApiError as error:
                return status_response(error)

        return guarded

    async def get_audit(self, request: web.Request) -> web.Response:
        since = request.query.get("since", "0")
        if not since.lstrip("-").isdigit():
            raise bad_request("since must be an audit sequence number")
        return json_response(self.audit.since(int(since)))

    async def get_faults(self, request: web.Request) -> web.Response:
        return json_response([fault.view() for fault in self.faults.rules])

    async def add_fault(self, request: web.Request) -> web.Response:
        spec = await read_body(request)
        if not isinstance(spec, dict):
            raise bad_request("a fault is a JSON object")
        return json_response(self.faults.add(spec).view(), 201)

    async def clear_faults(self, request: web.Request) -> web.Response:
        raw = request.match_info.get("id")
        return json_response({"cleared": self.faults.clear(int(raw) if raw and raw.isdigit() else None)})

    async def append_log(self, request: web.Request) -> web.Response:
        namespace, name = request.match_info["namespace"], request.match_info["name"]
        container = request.query.get("container", "")
        if container:
            container = self.api.pod_container(namespace, name, container)
        else:
            self._require_pod(namespace, name)
        previous = request.query.get("previous", "").lower() in ("true", "1")
        lines = self.api.store.append_log(namespace, name, container, previous, await request.text())
        return json_response({"lines": lines})

    def _require_pod(self, namespace: str, name: str) -> None:
        pods = self.registry.lookup("", "v1", "pods")
        assert pods is not None
        self.api.get(pods, "v1", namespace, name)

    async def put_metrics(self, request: web.Request) -> web.Response:
        namespace, name = request.match_info["namespace"], request.match_info["name"]
        body = await read_body(request)
        if not isinstance(body, dict):
            raise bad_request("a PodMetrics body is a JSON object")
        metrics = self.registry.lookup("metrics.k8s.io", "v1beta1", "pods")
        pods = self.registry.lookup("", "v1", "pods")
        assert metrics is not None and pods is not None
        meta = body.setdefault("metadata", {})
        meta.update(name=name, namespace=namespace)
        pod = self.api.store.get(pods, namespace, name)
        if pod is not None and "labels" not in meta and pod["metadata"].get("labels"):
            meta["labels"] = pod["metadata"]["labels"]
        body.setdefault("timestamp", now_iso(millis=False))
        body.setdefault("window", "15s")
        body.setdefault("containers", [])
        return json_response(self.api.create(metrics, "v1beta1", namespace, body, dry_run=False, seeding=True))

    async def reset(self, request: web.Request) -> web.Response:
        """Back to a fresh start (system namespaces only, empty audit log, no faults), for test isolation."""
        self.api.store.reset()
        self.audit.reset()
        self.faults.clear()
        seed_objects(self.registry, self.api, system_namespaces())
        return json_response({"resourceVersion": str(self.api.store.resource_version)})

    async def seed(self, request: web.Request) -> web.Response:
        body = await read_body(request)
        objects = body.get("items") if isinstance(body, dict) and "items" in body else body
        if not isinstance(objects, list):
            raise bad_request("seed with a JSON list of objects (or a List with items)")
        return json_response(seed_objects(self.registry, self.api, objects))


SYSTEM_NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease")


def system_namespaces() -> list[dict[str, Any]]:
    return [{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}} for name in SYSTEM_NAMESPACES]


def seed_objects(registry: Registry, api: ApiServer, objects: list[Any]) -> list[dict[str, Any]]:
    """Create or replace each object (status kept), namespaces first; a missing namespace is created."""
    namespaces = registry.lookup("", "v1", "namespaces")
    assert namespaces is not None
    ordered = sorted(objects, key=lambda o: 0 if isinstance(o, dict) and o.get("kind") == "Namespace" else 1)
    created = []
    for obj in ordered:
        if not isinstance(obj, dict):
            raise bad_request("seed objects are JSON objects, not %r" % (obj,))
        rt = registry.by_api_version_kind(str(obj.get("apiVersion", "")), str(obj.get("kind", "")))
        if rt is None:
            raise bad_request("no resource serves %s %s" % (obj.get("apiVersion"), obj.get("kind")))
        version = str(obj["apiVersion"]).rpartition("/")[2]
        namespace = str((obj.get("metadata") or {}).get("namespace") or "default") if rt.namespaced else ""
        if rt.namespaced and not api.store.exists(namespaces, "", namespace):
            api.create(namespaces, "v1", "", {"metadata": {"name": namespace}}, dry_run=False, seeding=True)
        created.append(api.create(rt, version, namespace, obj, dry_run=False, seeding=True))
    return created
