"""Reading app configuration the way the apps would: pod template env, flag ConfigMaps, ingress and mesh policy."""

from __future__ import annotations

import json
import math
import re
from typing import Any, Optional

from stormctl.sandbox.fleet.pods import IngressLimit
from stormctl.sandbox.scenario import BREAKER_KEY, RETRY_KEY

NGINX = "nginx.ingress.kubernetes.io/"
TRAEFIK_MIDDLEWARES = "traefik.ingress.kubernetes.io/router.middlewares"


def container_env(template: dict[str, Any]) -> dict[str, str]:
    containers = (template.get("spec") or {}).get("containers") or []
    if not containers:
        return {}
    return {e["name"]: str(e.get("value", "")) for e in containers[0].get("env") or [] if "name" in e}


def cpu_millicores(value: Any, default: int) -> int:
    if value is None:
        return default
    text = str(value)
    try:
        if text.endswith("m"):
            return max(int(float(text[:-1])), 1)
        return max(int(float(text) * 1000), 1)
    except ValueError:
        return default


def cpu_request(template: dict[str, Any], default: int = 250) -> int:
    containers = (template.get("spec") or {}).get("containers") or []
    if not containers:
        return default
    requests = (containers[0].get("resources") or {}).get("requests") or {}
    return cpu_millicores(requests.get("cpu"), default)


def as_int(value: Optional[str], default: int) -> int:
    try:
        return int(str(value).strip())
    except (TypeError, ValueError):
        return default


def _truthy(value: Any) -> bool:
    return str(value).strip().lower() in ("true", "1", "yes", "on")


def read_flags(configmap: Optional[dict[str, Any]]) -> dict[str, bool]:
    """Flag values from a plain ConfigMap (key: "true") or a flagd document in flags.json."""
    if configmap is None:
        return {}
    data = configmap.get("data") or {}
    flags: dict[str, bool] = {}
    if "flags.json" in data:
        try:
            doc = json.loads(data["flags.json"])
        except ValueError:
            doc = {}
        for key, flag in ((doc or {}).get("flags") or {}).items():
            if not isinstance(flag, dict):
                continue
            if flag.get("state", "ENABLED") != "ENABLED":
                flags[key] = False
                continue
            variants = flag.get("variants") or {}
            flags[key] = bool(variants.get(flag.get("defaultVariant"), False))
    for key in (RETRY_KEY, BREAKER_KEY):
        if key in data:
            flags[key] = _truthy(data[key])
    return flags


def duration_seconds(value: Any, default: float = 1.0) -> float:
    if value is None:
        return default
    if isinstance(value, (int, float)):
        return float(value)
    match = re.fullmatch(r"\s*([0-9.]+)\s*(ms|s|m|h)?\s*", str(value))
    if not match:
        return default
    number = float(match.group(1))
    return number * {"ms": 0.001, "s": 1, "m": 60, "h": 3600}[match.group(2) or "s"]


def selector_matches(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def ingress_backends(ingress: dict[str, Any]) -> set[str]:
    names: set[str] = set()
    spec = ingress.get("spec") or {}
    default = ((spec.get("defaultBackend") or {}).get("service") or {}).get("name")
    if default:
        names.add(default)
    for rule in spec.get("rules") or []:
        for path in (rule.get("http") or {}).get("paths") or []:
            name = ((path.get("backend") or {}).get("service") or {}).get("name")
            if name:
                names.add(name)
    return names


def ingress_provider(ingress: dict[str, Any]) -> str:
    cls = (ingress.get("spec") or {}).get("ingressClassName") or \
        ((ingress.get("metadata") or {}).get("annotations") or {}).get("kubernetes.io/ingress.class", "")
    return "traefik" if "traefik" in str(cls) else "nginx"


def ingress_limit(ingress: dict[str, Any], middlewares: dict[str, dict[str, Any]]) -> Optional[IngressLimit]:
    """The rate limit an ingress applies, from ingress-nginx annotations or attached Traefik middlewares."""
    meta = ingress.get("metadata") or {}
    annotations = meta.get("annotations") or {}
    name = "%s/%s" % (meta.get("namespace"), meta.get("name"))
    if ingress_provider(ingress) == "nginx":
        rates = []
        if NGINX + "limit-rps" in annotations:
            rates.append(float(as_int(annotations[NGINX + "limit-rps"], 0)))
        if NGINX + "limit-rpm" in annotations:
            rates.append(as_int(annotations[NGINX + "limit-rpm"], 0) / 60.0)
        rates = [r for r in rates if r > 0]
        conns = as_int(annotations.get(NGINX + "limit-connections"), 0)
        if not rates and conns <= 0:
            return None
        rps = min(rates) if rates else None
        multiplier = as_int(annotations.get(NGINX + "limit-burst-multiplier"), 5)
        burst = (rps or 1) * max(multiplier, 1)
        return IngressLimit("nginx", name, rps, burst, conns if conns > 0 else None, 503)
    refs = [r.strip() for r in str(annotations.get(TRAEFIK_MIDDLEWARES, "")).split(",") if r.strip()]
    best: Optional[IngressLimit] = None
    for ref in refs:
        middleware = middlewares.get(ref.split("@", 1)[0])
        if middleware is None:
            continue
        spec = middleware.get("spec") or {}
        rate = spec.get("rateLimit") or {}
        average = float(rate.get("average") or 0)
        inflight = as_int((spec.get("inFlightReq") or {}).get("amount"), 0)
        if average <= 0 and inflight <= 0:
            continue
        rps = average / max(duration_seconds(rate.get("period"), 1.0), 0.001) if average > 0 else None
        burst = float(rate.get("burst") or 1)
        limit = IngressLimit("traefik", name, rps, burst, inflight if inflight > 0 else None, 429)
        if best is None or (rps is not None and (best.rps is None or rps < best.rps)):
            best = limit
    return best


def host_matches(rule_host: str, redis_host: str) -> bool:
    if not rule_host:
        return False
    short = redis_host.split(".")
    candidates = {".".join(short[:i]) for i in range(1, len(short) + 1)}
    return rule_host in candidates or rule_host == "*"


def mesh_max_connections(rules: list[dict[str, Any]], redis_host: str) -> Optional[int]:
    caps = []
    for rule in rules:
        spec = rule.get("spec") or {}
        if not host_matches(str(spec.get("host", "")), redis_host):
            continue
        tcp = ((spec.get("trafficPolicy") or {}).get("connectionPool") or {}).get("tcp") or {}
        value = tcp.get("maxConnections")
        if value is not None and as_int(value, 0) > 0:
            caps.append(as_int(value, 0))
    return min(caps) if caps else None


def ceil_div(value: float, by: float) -> int:
    return math.ceil(value / by) if by > 0 else 0
