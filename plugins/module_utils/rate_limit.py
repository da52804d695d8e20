# -*- coding: utf-8 -*-
# Copyright: fintech SRE
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Ingress rate limits as mitigation plans: ingress-nginx annotations or a Traefik RateLimit Middleware.

A provider is one function from the module's params to the ``Plan`` list the shared mitigation
flow runs (``mitigation.Mitigator``); adding a controller (e.g. Gateway API) is one more
function in ``PROVIDERS``.
"""

from __future__ import annotations

import ipaddress
from typing import Any, Callable, Dict, List

from ansible_collections.fintech.redis_storm.plugins.module_utils.errors import StormError
from ansible_collections.fintech.redis_storm.plugins.module_utils.mitigation import Desired, Plan, named_workloads
from ansible_collections.fintech.redis_storm.plugins.module_utils.owned import (
    NGINX_OPTIONS,
    NGINX_PREFIX,
    TRAEFIK_RATE_LIMIT,
    TRAEFIK_ROUTER_MIDDLEWARES,
    middleware_reference,
)
from ansible_collections.fintech.redis_storm.plugins.module_utils.targets import ObjectRef

MODULE = "ingress_rate_limit"
INGRESS_API = "networking.k8s.io/v1"
TRAEFIK_DEFAULT_API = "traefik.io/v1alpha1"
MIDDLEWARE_PREFIX = "redis-storm-ratelimit-"
NGINX_WARNING = ("ingress-nginx enforces these limits in each controller replica on its own: with N controller "
                 "replicas a client can get up to N times the limit")

ARG_SPEC: Dict[str, Dict[str, Any]] = {
    "namespace": {"type": "str", "required": True},
    "name": {"type": "str", "required": True},
    "provider": {"type": "str", "default": "nginx", "choices": ["nginx", "traefik"]},
    "rps": {"type": "int"},
    "rpm": {"type": "int"},
    "connections": {"type": "int"},
    "burst_multiplier": {"type": "int"},
    "burst": {"type": "int"},
    "whitelist": {"type": "list", "elements": "str"},
    "workload": {"type": "str"},
    "traefik_api_version": {"type": "str", "default": TRAEFIK_DEFAULT_API},
}


def ingress_ref(params: Dict[str, Any]) -> ObjectRef:
    return ObjectRef(INGRESS_API, "Ingress", "ingresses", params["namespace"], params["name"])


def validate_cidrs(cidrs: List[str]) -> str:
    """The CIDR list as ingress-nginx wants it ('10.0.0.0/8,192.168.0.1/32'), or a StormError."""
    normalized = []
    for cidr in cidrs:
        try:
            normalized.append(str(ipaddress.ip_network(str(cidr).strip(), strict=False)))
        except ValueError as exc:
            raise StormError("whitelist entry %r is not an IP address or CIDR (%s)" % (cidr, exc)) from exc
    return ",".join(normalized)


def _positive(params: Dict[str, Any], names: List[str]) -> None:
    for name in names:
        value = params.get(name)
        if value is not None and value <= 0:
            raise StormError("%s must be more than 0 (got %s)" % (name, value))


def nginx_plans(params: Dict[str, Any]) -> List[Plan]:
    _positive(params, ["rps", "rpm", "connections", "burst_multiplier"])
    if params.get("burst") is not None:
        raise StormError("burst applies to provider traefik; ingress-nginx takes burst_multiplier")
    wanted: Desired = {}
    for option, suffix in NGINX_OPTIONS:
        value = params.get(option)
        if value is None or value == []:
            continue
        # ingress-nginx reads annotation values as strings; a YAML number would be rejected by the API
        wanted[("metadata", "annotations", NGINX_PREFIX + suffix)] = (
            validate_cidrs(value) if option == "whitelist" else str(value))
    if not any(key[2] != NGINX_PREFIX + "limit-whitelist" for key in wanted):
        raise StormError("give at least one limit: rps, rpm or connections (burst_multiplier and whitelist only "
                         "shape a limit)")
    return [Plan(ingress_ref(params), lambda live: dict(wanted), MODULE, named_workloads(params),
                 warnings=[NGINX_WARNING])]


def middleware_name(ingress: str) -> str:
    return (MIDDLEWARE_PREFIX + ingress)[:253]


def traefik_rate(params: Dict[str, Any]) -> Dict[str, Any]:
    _positive(params, ["rps", "rpm", "burst", "burst_multiplier"])
    for option in ("connections", "whitelist"):
        if params.get(option):
            raise StormError("%s applies to provider nginx only; a Traefik RateLimit Middleware limits the request "
                             "rate (rps or rpm, burst)" % option)
    if (params.get("rps") is None) == (params.get("rpm") is None):
        raise StormError("provider traefik takes exactly one of rps or rpm")
    average, period = (params["rps"], "1s") if params.get("rps") is not None else (params["rpm"], "1m")
    burst = params.get("burst")
    if burst is None:
        burst = average * int(params.get("burst_multiplier") or 1)
    return {"average": average, "period": period, "burst": burst}


def traefik_plans(params: Dict[str, Any]) -> List[Plan]:
    namespace, ingress = params["namespace"], params["name"]
    api_version = params.get("traefik_api_version") or TRAEFIK_DEFAULT_API
    name = middleware_name(ingress)
    ref = ObjectRef(api_version, "Middleware", "middlewares", namespace, name)
    attached = middleware_reference(namespace, name)
    restoring = params.get("state") == "restored"
    rate = {} if restoring else traefik_rate(params)

    def create(desired: Desired) -> Dict[str, Any]:
        return {"apiVersion": api_version, "kind": "Middleware",
                "metadata": {"name": name, "namespace": namespace,
                             "labels": {"app.kubernetes.io/managed-by": "fintech.redis_storm"}},
                "spec": {"rateLimit": dict(rate)}}

    def router(live: Dict[str, Any]) -> Desired:
        current = ((live.get("metadata") or {}).get("annotations") or {}).get(TRAEFIK_ROUTER_MIDDLEWARES) or ""
        names = [item.strip() for item in current.split(",") if item.strip()]
        if attached not in names:
            names.append(attached)  # appended: the middlewares already attached keep running first
        return {("metadata", "annotations", TRAEFIK_ROUTER_MIDDLEWARES): ",".join(names)}

    middleware = Plan(ref, lambda live: {TRAEFIK_RATE_LIMIT: dict(rate)}, MODULE, named_workloads(params),
                      create=create)
    attach = Plan(ingress_ref(params), router, MODULE, named_workloads(params))
    # restore walks back newest first: detach from the router before the Middleware goes away
    return [attach, middleware] if restoring else [middleware, attach]


PROVIDERS: Dict[str, Callable[[Dict[str, Any]], List[Plan]]] = {"nginx": nginx_plans, "traefik": traefik_plans}


def build_plans(kube: Any, params: Dict[str, Any]) -> List[Plan]:
    if params.get("state") == "restored" and params["provider"] == "nginx":
        return [Plan(ingress_ref(params), lambda live: {}, MODULE, named_workloads(params))]
    return PROVIDERS[params["provider"]](params)
