# -*- coding: utf-8 -*-
# Copyright: fintech SRE
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""What the mitigations write: one table read by the forward path and by every restore.

``Ledger.record`` refuses to record (so a mitigation refuses to write) anything outside it, and
``restore.restore_entry`` refuses to restore anything outside it: a ledger entry someone edited by hand
to name another kind, namespace, field or Redis directive is never acted on.

A row is a mitigation module, the API group, resource and kind of the objects it changes (any
version of the group), the subresource it writes through, whether it may create the object,
and the field paths it owns. In a path pattern ``*`` stands for any one key and a trailing
``**`` for any deeper keys (the leaves of a JSON document held in a string, see ``json_fields``).
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence, Tuple

from ansible_collections.fintech.redis_storm.plugins.module_utils.errors import StormError
from ansible_collections.fintech.redis_storm.plugins.module_utils.guards import Guards

FieldPath = Tuple[str, ...]

# Redis directives CONFIG SET may change (the connection-related ones Redis accepts at runtime).
REDIS_DIRECTIVES = ("timeout", "maxclients", "maxmemory-clients", "tcp-keepalive")

NGINX_PREFIX = "nginx.ingress.kubernetes.io/"
# ingress_rate_limit option -> ingress-nginx annotation suffix, in the order they are written
NGINX_OPTIONS = (("rps", "limit-rps"), ("rpm", "limit-rpm"), ("connections", "limit-connections"),
                 ("burst_multiplier", "limit-burst-multiplier"), ("whitelist", "limit-whitelist"))
TRAEFIK_ROUTER_MIDDLEWARES = "traefik.ingress.kubernetes.io/router.middlewares"
TRAEFIK_RATE_LIMIT: FieldPath = ("spec", "rateLimit")
REPLICAS: FieldPath = ("spec", "replicas")
HPA_BEHAVIOR: FieldPath = ("spec", "behavior")
HPA_SELECT_POLICY: FieldPath = ("spec", "behavior", "scaleUp", "selectPolicy")
HPA_MAX: FieldPath = ("spec", "maxReplicas")
KEDA_PAUSED: FieldPath = ("metadata", "annotations", "autoscaling.keda.sh/paused")
TCP_MAX: FieldPath = ("spec", "trafficPolicy", "connectionPool", "tcp", "maxConnections")
OUTLIER: FieldPath = ("spec", "trafficPolicy", "outlierDetection")
FLAG_KEY: FieldPath = ("data", "*")
FLAGD_LEAF: FieldPath = ("data", "*", "{json}", "flags", "*", "defaultVariant")


class Row:
    def __init__(self, module: str, groups: Sequence[str], resource: str, kind: str, fields: Sequence[FieldPath],
                 subresource: Optional[str] = None, create: bool = False) -> None:
        self.module = module
        self.groups = tuple(groups)
        self.resource = resource
        self.kind = kind
        self.fields = tuple(fields)
        self.subresource = subresource
        self.create = create


TABLE = (
    Row("ingress_rate_limit", ["networking.k8s.io"], "ingresses", "Ingress",
        [("metadata", "annotations", NGINX_PREFIX + suffix) for _option, suffix in NGINX_OPTIONS]
        + [("metadata", "annotations", TRAEFIK_ROUTER_MIDDLEWARES)]),
    Row("ingress_rate_limit", ["traefik.io", "traefik.containo.us"], "middlewares", "Middleware",
        [TRAEFIK_RATE_LIMIT], create=True),
    Row("feature_flag", [""], "configmaps", "ConfigMap", [FLAG_KEY, FLAGD_LEAF]),
    Row("mesh_circuit_breaker", ["networking.istio.io"], "destinationrules", "DestinationRule",
        [TCP_MAX, (*OUTLIER, "*")], create=True),
    Row("hpa_pause", ["autoscaling"], "horizontalpodautoscalers", "HorizontalPodAutoscaler",
        [HPA_BEHAVIOR, HPA_SELECT_POLICY, HPA_MAX]),
    Row("hpa_pause", ["keda.sh"], "scaledobjects", "ScaledObject", [KEDA_PAUSED]),
    Row("workload_scale", ["apps"], "deployments", "Deployment", [REPLICAS], subresource="scale"),
    Row("workload_scale", ["apps"], "statefulsets", "StatefulSet", [REPLICAS], subresource="scale"),
)
REDIS_MODULE = "redis_runtime_config"
# Kinds whose name is a workload for the protected_workloads rail.
WORKLOAD_KINDS = ("Deployment", "StatefulSet", "HorizontalPodAutoscaler", "ScaledObject")


def _matches(pattern: Sequence[str], path: Sequence[str]) -> bool:
    if len(pattern) != len(path):
        return False
    return all(p == "*" or p == k for p, k in zip(pattern, path))


def _group(api_version: str) -> str:
    return api_version.rpartition("/")[0] if "/" in api_version else ""


def refusal(entry: Dict[str, Any]) -> Optional[str]:
    """Why ``entry`` (module, target, action, fields) is not something a mitigation writes, or None."""
    target = entry.get("target") or {}
    module = entry.get("module")
    paths = [tuple(str(k) for k in (f.get("path") or [])) for f in entry.get("fields") or []]
    if target.get("type") == "redis":
        if module != REDIS_MODULE:
            return "module %r does not change Redis; only %s does" % (module, REDIS_MODULE)
        if entry.get("action", "patch") != "patch":
            return "a Redis entry can only be a CONFIG SET (action patch)"
        bad = [".".join(p) for p in paths if len(p) != 1 or p[0] not in REDIS_DIRECTIVES]
        if bad:
            return "Redis directive(s) %s are not in the CONFIG allow-list %s" % (
                ", ".join(bad), ", ".join(REDIS_DIRECTIVES))
        return None
    if target.get("type") != "k8s":
        return "target type %r is neither k8s nor redis" % target.get("type")
    group = _group(str(target.get("apiVersion") or ""))
    rows = [r for r in TABLE if r.module == module and group in r.groups and r.resource == target.get("resource")
            and r.kind == target.get("kind") and r.subresource == target.get("subresource")]
    if not rows:
        return "%s does not change %s %s%s" % (
            module, target.get("apiVersion"), target.get("resource"),
            "/" + target["subresource"] if target.get("subresource") else "")
    row = rows[0]
    if entry.get("action", "patch") not in (("patch", "create") if row.create else ("patch",)):
        return "%s does not %s %s objects" % (module, entry.get("action"), row.kind)
    bad = [".".join(p) for p in paths if not any(_matches(pattern, p) for pattern in row.fields)]
    if bad:
        return "%s does not own field(s) %s of a %s" % (module, ", ".join(bad), row.kind)
    if not paths and entry.get("action") == "create":
        return "a create entry names no field it set"
    for field in entry.get("fields") or []:
        made = [str(k) for k in field.get("created") or []]
        path = [str(k) for k in field.get("path") or []]
        if made and not (len(made) < len(path) and path[:len(made)] == made):
            return "field %s names %s as a map it created, which does not hold it" % (
                ".".join(path), ".".join(made))
    return None


def check(entry: Dict[str, Any]) -> None:
    """Raise a StormError naming the entry when it is outside the table."""
    reason = refusal(entry)
    if not reason:
        return
    where = describe(entry.get("target") or {})
    if entry.get("id"):
        raise StormError("ledger entry %s (%s) refused: %s; nothing was written for it" % (entry["id"], where, reason),
                         refused=True)
    raise StormError("refused to change %s: %s; nothing was changed (owned.py lists what the mitigations write)"
                     % (where, reason), refused=True)


def check_restorable(entry: Dict[str, Any], guards: Optional[Guards]) -> None:
    """A StormError naming the entry when it is outside the table or the guard rails."""
    check(entry)
    target = entry.get("target") or {}
    if guards is None or target.get("type") != "k8s":
        return
    try:
        guards.check_namespace(str(target.get("namespace") or ""))
        for workload in workloads(target):
            namespace, _slash, name = workload.partition("/")
            guards.check_workload(namespace, name)
    except StormError as exc:
        raise StormError("ledger entry %s (%s) refused: %s" % (entry.get("id"), describe(target), exc.message),
                         refused=True) from exc


def describe(target: Dict[str, Any]) -> str:
    if target.get("type") == "redis":
        return "Redis %s" % target.get("endpoint")
    return "%s %s/%s" % (target.get("kind"), target.get("namespace"), target.get("name"))


def workloads(target: Dict[str, Any]) -> List[str]:
    """``ns/name`` of the target when its name is a workload's, for the protected_workloads rail."""
    if target.get("kind") in WORKLOAD_KINDS:
        return ["%s/%s" % (target.get("namespace"), target.get("name"))]
    return []


def middleware_reference(namespace: str, name: str) -> str:
    """How Traefik's Kubernetes Ingress provider names a Middleware CRD in the router annotation."""
    return "%s-%s@kubernetescrd" % (namespace, name)


def references(referrer: Dict[str, Any], created: Dict[str, Any]) -> bool:
    """Whether ``referrer``'s recorded values point at the object ``created`` made (so it goes first)."""
    made, by = created.get("target") or {}, referrer.get("target") or {}
    if created.get("action") != "create" or made.get("kind") != "Middleware" or by.get("kind") != "Ingress":
        return False
    if by.get("namespace") != made.get("namespace"):
        return False
    wanted = middleware_reference(str(made.get("namespace")), str(made.get("name")))
    for field in referrer.get("fields") or []:
        if tuple(field.get("path") or ()) == ("metadata", "annotations", TRAEFIK_ROUTER_MIDDLEWARES):
            after = str(field.get("after") or "")
            if wanted in [item.strip() for item in after.split(",")]:
                return True
    return False
