"""HTTP handlers: route a Kubernetes API path, authenticate, inject faults, authorize, serve, audit."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Any, Callable, Optional

import yaml
from aiohttp import web

from . import discovery, status, tables
from .api import ApiServer
from .audit import AuditLog
from .faults import Faults
from .protobuf import PROTOBUF, decode_access_review
from .rbac import Identity, TokenFile, authorize, non_resource_allows
from .resources import WRITE_VERBS, Registry, ResourceType
from .selectors import field_matcher, label_matcher
from .status import ApiError
from .store import Store

PUBLIC_PATHS = frozenset(("/version", "/healthz", "/readyz", "/livez"))
JSON_TYPES = ("application/json", "application/merge-patch+json", "application/strategic-merge-patch+json",
              "application/json-patch+json")
YAML_TYPES = ("application/yaml", "application/apply-patch+yaml", "text/yaml")


def json_response(body: Any, code: int = 200) -> web.Response:
    return web.Response(body=json.dumps(body, separators=(",", ":")).encode(), status=code,
                        content_type="application/json")


def status_response(error: ApiError) -> web.Response:
    return json_response(error.status(), error.code)


@dataclass
class Target:
    """What a resource request is about, as the API server's RequestInfo."""

    verb: str
    rt: ResourceType
    group: str
    version: str
    namespace: Optional[str]
    name: str
    subresource: str


def _media_type(request: web.Request) -> str:
    return request.headers.get("Content-Type", "application/json").split(";")[0].strip().lower()


async def read_body(request: web.Request, protobuf_ok: bool = False) -> Any:
    raw = await request.read()
    if not raw:
        return None
    media = _media_type(request)
    if media == PROTOBUF:
        if not protobuf_ok:
            raise status.unsupported_media_type(media, ["application/json", "application/yaml"])
        # kubectl sends its access review as protobuf; nothing else here needs it
        return decode_access_review(raw)
    try:
        if media in YAML_TYPES:
            return yaml.safe_load(raw)
        return json.loads(raw)
    except (ValueError, yaml.YAMLError) as exc:
        raise status.bad_request("couldn't get version/kind; json parse error: %s" % exc) from None


def _flag(request: web.Request, name: str) -> bool:
    return request.query.get(name, "").lower() in ("true", "1")


def _int_param(request: web.Request, name: str) -> Optional[int]:
    raw = request.query.get(name)
    if raw in (None, ""):
        return None
    try:
        return int(raw)
    except ValueError:
        raise status.bad_request('invalid value for %s: "%s"' % (name, raw)) from None


def dry_run_param(request: web.Request) -> bool:
    values = request.query.getall("dryRun", [])
    for value in values:
        if value != "All":
            raise status.bad_request('dryRun: Unsupported value: "%s": supported values: "All"' % value)
    return bool(values)


class Handlers:
    def __init__(self, registry: Registry, api: ApiServer, tokens: TokenFile, faults: Faults, audit: AuditLog,
                 server_address: str) -> None:
        self.registry = registry
        self.api = api
        self.tokens = tokens
        self.faults = faults
        self.audit = audit
        self.server_address = server_address

    # ---- entry point ------------------------------------------------------------------------------------
    async def dispatch(self, request: web.Request) -> web.StreamResponse:
        try:
            return await self._dispatch(request)
        except ApiError as error:
            return status_response(error)

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        path = request.path.rstrip("/") or "/"
        if path in PUBLIC_PATHS:
            return json_response(discovery.VERSION_INFO) if path == "/version" else web.Response(text="ok")
        identity = self.tokens.identify(request.headers.get("Authorization"))
        if identity is None:
            raise status.unauthorized()
        parts = [p for p in path.split("/") if p]
        if not parts or parts[0] not in ("api", "apis"):
            # no /openapi either: `kubectl apply` then needs --validate=false
            raise status.server_not_found()
        if parts[0] == "api":
            group, version, rest = "", (parts[1] if len(parts) > 1 else None), parts[2:]
        else:
            group = parts[1] if len(parts) > 1 else ""
            version, rest = (parts[2] if len(parts) > 2 else None), parts[3:]
        if not rest:
            return self._discovery(request, parts[0], group, version)
        target = self._target(request, group, version or "", rest)
        return await self._serve(request, identity, target)

    def _discovery(self, request: web.Request, root: str, group: str, version: Optional[str]) -> web.Response:
        if request.method != "GET":
            raise status.method_not_allowed()
        if root == "api":
            if version is None:
                return json_response(discovery.api_versions(self.server_address))
            if version != "v1":
                raise status.server_not_found()
            return json_response(discovery.resource_list(self.registry, "", "v1"))
        if not group:
            return json_response(discovery.api_group_list(self.registry))
        versions = dict(self.registry.groups()).get(group)
        if versions is None or (version is not None and version not in versions):
            raise status.server_not_found()
        if version is None:
            return json_response(discovery.api_group(group, versions))
        return json_response(discovery.resource_list(self.registry, group, version))

    def _target(self, request: web.Request, group: str, version: str, rest: list[str]) -> Target:
        namespace: Optional[str] = None
        if rest[0] == "namespaces" and len(rest) >= 3:
            candidate = self.registry.lookup(group, version, rest[2])
            if candidate is not None and candidate.namespaced:
                namespace, rest = rest[1], rest[2:]
        rt = self.registry.lookup(group, version, rest[0])
        if rt is None or len(rest) > 3 or (rt.namespaced and namespace is None and len(rest) > 1):
            raise status.server_not_found()
        name = rest[1] if len(rest) > 1 else ""
        subresource = rest[2] if len(rest) > 2 else ""
        allowed = rt.verbs
        if subresource:
            sub = rt.subresource(subresource)
            if sub is None:
                raise status.server_not_found()
            allowed = sub.verbs
        method = request.method
        if method == "GET":
            verb = "get" if name else ("watch" if _flag(request, "watch") else "list")
        elif method == "POST" and not name:
            verb = "create"
        elif method == "PUT" and name:
            verb = "update"
        elif method == "PATCH" and name:
            verb = "patch"
        elif method == "DELETE":
            verb = "delete" if name else "deletecollection"
        else:
            raise status.method_not_allowed()
        if verb not in allowed and not (verb == "watch" and "list" in allowed and "watch" in rt.verbs):
            raise status.method_not_allowed()
        if rt.namespaced and namespace is None and verb not in ("list", "watch"):
            raise status.method_not_allowed()
        return Target(verb, rt, group, version, namespace, name, subresource)

    # ---- one resource request ---------------------------------------------------------------------------
    async def _serve(self, request: web.Request, identity: Identity, target: Target) -> web.StreamResponse:
        rt = target.rt
        outcome = self.faults.evaluate(target.verb, target.group, rt.plural, target.subresource, identity.user,
                                       target.namespace, target.name)
        if outcome.latency:
            await asyncio.sleep(outcome.latency)
        # a review asks a question and stores nothing: every authenticated user may ask, and it is not audited
        review = rt.kind == "SelfSubjectAccessReview"
        write = target.verb in WRITE_VERBS and not review
        body: Any = None
        dry_run = False
        code: Optional[int] = None
        name = target.name
        try:
            dry_run = dry_run_param(request) if write else False
            if target.verb in WRITE_VERBS:
                body = await read_body(request, protobuf_ok=review) if request.can_read_body else None
            if target.verb == "create" and isinstance(body, dict) and not name:
                name = str((body.get("metadata") or {}).get("name") or "")
            if outcome.drop:
                return self._drop(request)
            if outcome.error is not None:
                raise outcome.error
            if review:
                return json_response(self._review(identity, body), 201)
            # like the API server's RequestInfo, a request on one namespace is "in" that namespace
            scope = target.name if rt.kind == "Namespace" and not rt.group and target.name else target.namespace
            if not authorize(identity, target.verb, target.group, rt.plural, target.subresource, scope, target.name):
                raise status.forbidden(identity.user, target.verb, rt, rt.plural, target.subresource, scope,
                                       target.name)
            response = await self._execute(request, target, body, dry_run)
            code = response.status
            if target.verb == "create" and code == 201 and isinstance(response, web.Response) and not name:
                name = self._created_name(response)
            return response
        except ApiError as error:
            code = error.code
            raise
        finally:
            if write:
                self.audit.record(user=identity.user, verb=target.verb, group=target.group, version=target.version,
                                  resource=rt.plural, subresource=target.subresource,
                                  namespace=target.namespace, name=name, dry_run=dry_run, code=code,
                                  patch_type=_media_type(request) if target.verb == "patch" else None)

    @staticmethod
    def _review(identity: Identity, body: Any) -> dict[str, Any]:
        spec: dict[str, Any] = body["spec"] if isinstance(body, dict) and isinstance(body.get("spec"), dict) else {}
        attrs = spec.get("resourceAttributes")
        if isinstance(attrs, dict):
            allowed = authorize(identity, str(attrs.get("verb", "")), str(attrs.get("group", "")),
                                str(attrs.get("resource", "")), str(attrs.get("subresource", "")),
                                attrs.get("namespace") or None, str(attrs.get("name", "")))
        else:
            path_attrs = spec.get("nonResourceAttributes") or {}
            verb, path = str(path_attrs.get("verb", "")), str(path_attrs.get("path", ""))
            allowed = identity.admin or any(non_resource_allows(rule, verb, path)
                                            for rule in identity.rules if isinstance(rule, dict))
        status: dict[str, Any] = {"allowed": allowed}
        if not allowed:
            status["reason"] = ""
        return {"kind": "SelfSubjectAccessReview", "apiVersion": "authorization.k8s.io/v1",
                "metadata": {"creationTimestamp": None}, "spec": spec, "status": status}

    @staticmethod
    def _created_name(response: web.Response) -> str:
        try:
            payload = json.loads(response.body)  # type: ignore[arg-type]
            return str(payload["metadata"]["name"])
        except (TypeError, ValueError, KeyError):
            return ""

    @staticmethod
    def _drop(request: web.Request) -> web.Response:
        transport = request.transport
        if transport is not None:
            transport.abort()
        raise asyncio.CancelledError()

    async def _execute(self, request: web.Request, t: Target, body: Any, dry_run: bool) -> web.StreamResponse:
        api, rt, ns = self.api, t.rt, t.namespace or ""
        if t.verb == "get":
            if t.subresource == "scale":
                return json_response(api.get_scale(rt, t.version, ns, t.name))
            if t.subresource == "log":
                return self._log(request, ns, t.name)
            obj = api.get(rt, t.version, ns, t.name)
            if self._wants_table(request) and not t.subresource:
                return json_response(tables.table(rt.kind, [obj], obj["metadata"].get("resourceVersion", ""),
                                                  request.query.get("includeObject", "")))
            return json_response(obj)
        if t.verb == "list":
            items = api.list_items(rt, t.version, t.namespace, request.query.get("labelSelector", ""),
                             request.query.get("fieldSelector", ""))
            if self._wants_table(request):
                return json_response(tables.table(rt.kind, items, str(api.store.resource_version),
                                                  request.query.get("includeObject", "")))
            return json_response(api.list_object(rt, t.version, items))
        if t.verb == "watch":
            return await self._watch(request, t)
        if t.verb == "create":
            return json_response(api.create(rt, t.version, ns, body, dry_run), 201)
        if t.verb == "update":
            if t.subresource == "scale":
                return json_response(api.update_scale(rt, t.version, ns, t.name, body, dry_run))
            return json_response(api.update(rt, t.version, ns, t.name, body, dry_run, t.subresource))
        if t.verb == "patch":
            if _media_type(request) not in JSON_TYPES:
                accepted = ["application/json-patch+json", "application/merge-patch+json",
                            "application/apply-patch+yaml"]
                if not rt.custom or t.subresource == "scale":
                    accepted.append("application/strategic-merge-patch+json")
                raise status.unsupported_media_type(_media_type(request), accepted)
            if t.subresource == "scale":
                return json_response(api.patch_scale(rt, t.version, ns, t.name, _media_type(request), body,
                                                     dry_run))
            return json_response(api.patch(rt, t.version, ns, t.name, _media_type(request), body, dry_run,
                                           t.subresource))
        options = self._delete_options(request, body)
        if t.verb == "delete":
            return json_response(api.delete(rt, t.version, ns, t.name, dry_run, options))
        return json_response(api.delete_collection(rt, t.version, t.namespace, request.query.get("labelSelector", ""),
                                                   request.query.get("fieldSelector", ""), dry_run, options))

    @staticmethod
    def _wants_table(request: web.Request) -> bool:
        return "as=Table" in request.headers.get("Accept", "")

    @staticmethod
    def _delete_options(request: web.Request, body: Any) -> dict[str, Any]:
        options = dict(body) if isinstance(body, dict) else {}
        if "propagationPolicy" in request.query:
            options["propagationPolicy"] = request.query["propagationPolicy"]
        if "gracePeriodSeconds" in request.query:
            options["gracePeriodSeconds"] = _int_param(request, "gracePeriodSeconds")
        if _flag(request, "orphanDependents"):
            options["orphanDependents"] = True
        return options

    def _log(self, request: web.Request, namespace: str, name: str) -> web.Response:
        text = self.api.read_log(namespace, name, request.query.get("container", ""), _flag(request, "previous"),
                                 _int_param(request, "tailLines"), _int_param(request, "sinceSeconds"),
                                 _flag(request, "timestamps"), _int_param(request, "limitBytes"))
        return web.Response(text=text, content_type="text/plain")

    async def _watch(self, request: web.Request, t: Target) -> web.StreamResponse:
        rt, store = t.rt, self.api.store
        labels = request.query.get("labelSelector", "")
        fields = request.query.get("fieldSelector", "")
        match_labels = label_matcher(labels) if labels else None
        match_fields = field_matcher(fields, rt.field_labels) if fields else None
        timeout = min(_int_param(request, "timeoutSeconds") or 1800, 3600)
        since = request.query.get("resourceVersion", "")
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        await response.prepare(request)

        async def send(kind: str, obj: dict[str, Any]) -> None:
            await response.write(json.dumps({"type": kind, "object": obj}, separators=(",", ":")).encode() + b"\n")

        if since in ("", "0"):
            for obj in self.api.list_items(rt, t.version, t.namespace, labels, fields):
                await send("ADDED", obj)
            last = store.resource_version
        else:
            last = int(since) if since.isdigit() else 0
            oldest = store.events[0].rv if store.events else store.resource_version + 1
            if last < oldest - 1 and last < store.resource_version:
                gone = ApiError(410, "too old resource version: %d (%d)" % (last, oldest - 1), "Expired")
                await send("ERROR", gone.status())
                return response
        deadline = time.monotonic() + timeout
        assert store.changed is not None
        store.watchers += 1
        try:
            await self._stream(store, rt, t, last, deadline, send, match_labels, match_fields)
        finally:
            store.watchers -= 1
        return response

    async def _stream(self, store: Store, rt: ResourceType, t: Target, last: int, deadline: float,
                      send: Callable[[str, dict[str, Any]], Awaitable[None]],
                      match_labels: Optional[Callable[[dict[str, Any]], bool]],
                      match_fields: Optional[Callable[[dict[str, Any]], bool]]) -> None:
        assert store.changed is not None
        while time.monotonic() < deadline:
            pending = [e for e in store.events if e.rv > last]
            for event in pending:
                last = event.rv
                obj = event.obj
                if event.resource != (rt.group, rt.plural):
                    continue
                if t.namespace and obj["metadata"].get("namespace") != t.namespace:
                    continue
                if (match_labels and not match_labels(obj)) or (match_fields and not match_fields(obj)):
                    continue
                await send(event.type, self.api.present(rt, t.version, obj))
            if pending:
                continue
            try:
                async with store.changed:
                    if store.events and store.events[-1].rv > last:
                        continue  # written while we took the lock: its wake-up may be gone already
                    await asyncio.wait_for(store.changed.wait(), max(0.01, deadline - time.monotonic()))
            except asyncio.TimeoutError:
                break
