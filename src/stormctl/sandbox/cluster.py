"""What the sandbox's cluster holds, read through the kube API like any client would.

The inventory (`inventories/sandbox`) takes its namespaces, workloads, ingresses and flag
ConfigMaps from here, so it always matches the fleet's baseline world.
"""

from __future__ import annotations

import json
import ssl
import urllib.error
import urllib.request
from typing import Any

SYSTEM_NAMESPACES = {"default", "kube-system", "kube-public", "kube-node-lease"}
RETRY_KEY = "redis.retry.aggressive"
BREAKER_KEY = "redis.circuit_breaker.force_open"
FLAGD_KEY = "flags.json"


def http_json(url: str, token: str | None = None, method: str = "GET", body: Any = None, timeout: float = 2.0,
              ca_file: str | None = None) -> Any:
    """JSON from an HTTP endpoint (an https one checked against `ca_file`, the cluster's CA, when given); raises
    OSError (urllib.error.URLError/HTTPError) on failure."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method)
    if token:
        request.add_header("Authorization", "Bearer %s" % token)
    if data is not None:
        request.add_header("Content-Type", "application/json")
    context = ssl.create_default_context(cafile=ca_file) if ca_file else None
    with urllib.request.urlopen(request, timeout=timeout, context=context) as response:
        raw = response.read()
    return json.loads(raw) if raw else None


def http_ok(url: str, timeout: float = 1.0) -> str | None:
    """The body when the URL answers 200, else None."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            if response.status == 200:
                return str(response.read().decode(errors="replace"))
    except (OSError, ValueError):
        return None
    return None


def _items(api: str, token: str, path: str, ca_file: str | None = None) -> list[dict[str, Any]]:
    try:
        listing = http_json(api + path, token, ca_file=ca_file)
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            return []
        raise
    return list(listing.get("items") or []) if isinstance(listing, dict) else []


def _meta(obj: dict[str, Any]) -> tuple[str, str]:
    meta = obj.get("metadata") or {}
    return str(meta.get("namespace") or ""), str(meta.get("name") or "")


def _ingress_provider(ingress: dict[str, Any]) -> str:
    annotations = (ingress.get("metadata") or {}).get("annotations") or {}
    klass = (ingress.get("spec") or {}).get("ingressClassName") or annotations.get("kubernetes.io/ingress.class") or ""
    if "traefik" in str(klass) or any(key.startswith("traefik.") for key in annotations):
        return "traefik"
    return "nginx"


def _ingress_service(ingress: dict[str, Any]) -> str | None:
    spec = ingress.get("spec") or {}
    backend = (spec.get("defaultBackend") or {}).get("service")
    if backend:
        return str(backend.get("name"))
    for rule in spec.get("rules") or []:
        for path in (rule.get("http") or {}).get("paths") or []:
            service = (path.get("backend") or {}).get("service")
            if service:
                return str(service.get("name"))
    return None


def _env(deployment: dict[str, Any], name: str) -> str | None:
    template = (deployment.get("spec") or {}).get("template") or {}
    for container in (template.get("spec") or {}).get("containers") or []:
        for var in container.get("env") or []:
            if var.get("name") == name and var.get("value"):
                return str(var["value"])
    return None


def discover(api: str, token: str, ca_file: str | None = None) -> dict[str, Any]:
    """namespaces, client_namespaces (with client Deployments), workloads, redis_workload, ingresses, flags and
    mesh_destination_rules: the keys of the shared inventory variables."""
    all_namespaces = (_meta(ns)[1] for ns in _items(api, token, "/api/v1/namespaces", ca_file))
    namespaces = sorted(name for name in all_namespaces if name not in SYSTEM_NAMESPACES)
    deployments = _items(api, token, "/apis/apps/v1/deployments", ca_file)
    statefulsets = _items(api, token, "/apis/apps/v1/statefulsets", ca_file)
    workloads: list[dict[str, Any]] = []
    for kind, objs in (("Deployment", deployments), ("StatefulSet", statefulsets)):
        for obj in objs:
            namespace, name = _meta(obj)
            replicas = (obj.get("spec") or {}).get("replicas")
            workloads.append({"namespace": namespace, "kind": kind, "name": name, "replicas": replicas})
    workloads.sort(key=lambda w: (w["namespace"], w["kind"], w["name"]))

    redis_workload: dict[str, Any] | None = None
    for workload in workloads:
        if workload["kind"] == "StatefulSet" and "redis" in "%s/%s" % (workload["namespace"], workload["name"]):
            redis_workload = {key: workload[key] for key in ("namespace", "kind", "name")}
            break

    deployment_names = {_meta(d) for d in deployments}
    ingresses = []
    for ingress in _items(api, token, "/apis/networking.k8s.io/v1/ingresses", ca_file):
        namespace, name = _meta(ingress)
        backend = _ingress_service(ingress) or name
        target = backend if (namespace, backend) in deployment_names else name
        provider = _ingress_provider(ingress)
        ingresses.append({"namespace": namespace, "name": name, "provider": provider, "workload": target})

    flags = []
    for deployment in deployments:
        namespace, name = _meta(deployment)
        configmap = _env(deployment, "FLAGS_CONFIGMAP")
        if not configmap:
            continue
        data: dict[str, Any] = {}
        try:
            data = (http_json("%s/api/v1/namespaces/%s/configmaps/%s" % (api, namespace, configmap), token,
                              ca_file=ca_file) or {}).get(
                "data"
            ) or {}
        except urllib.error.HTTPError:
            data = {}
        flags.append(
            {
                "namespace": namespace,
                "configmap": configmap,
                "format": "flagd" if FLAGD_KEY in data else "plain",
                "workload": name,
                "retry_key": RETRY_KEY,
                "breaker_key": BREAKER_KEY,
            }
        )
    destination_rules = [
        {"namespace": _meta(rule)[0], "name": _meta(rule)[1], "host": str((rule.get("spec") or {}).get("host") or "")}
        for rule in _items(api, token, "/apis/networking.istio.io/v1beta1/destinationrules", ca_file)
    ]
    redis_namespace = redis_workload["namespace"] if redis_workload else None
    client_namespaces = sorted({_meta(d)[0] for d in deployments} - {redis_namespace})
    return {
        "namespaces": namespaces,
        "client_namespaces": client_namespaces,
        "workloads": workloads,
        "redis_workload": redis_workload,
        "ingresses": sorted(ingresses, key=lambda i: (i["namespace"], i["name"])),
        "flags": sorted(flags, key=lambda f: (f["namespace"], f["configmap"])),
        "mesh_destination_rules": sorted(destination_rules, key=lambda r: (r["namespace"], r["name"])),
    }
