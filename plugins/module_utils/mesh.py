# -*- coding: utf-8 -*-
# Copyright: fintech SRE
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""An Istio DestinationRule that caps connections to Redis and ejects failing endpoints, as a mitigation plan.

Only the keys given are owned (``connectionPool.tcp.maxConnections`` and each
``outlierDetection`` key), so settings someone else put in the same DestinationRule stay as
they are and are never clobbered by a restore.
"""

from __future__ import annotations

import re
from typing import Any, Dict, List

from ansible_collections.fintech.redis_storm.plugins.module_utils.errors import StormError
from ansible_collections.fintech.redis_storm.plugins.module_utils.mitigation import Desired, Plan
from ansible_collections.fintech.redis_storm.plugins.module_utils.owned import OUTLIER, TCP_MAX
from ansible_collections.fintech.redis_storm.plugins.module_utils.targets import ObjectRef

MODULE = "mesh_circuit_breaker"
DEFAULT_API = "networking.istio.io/v1beta1"
# option -> outlierDetection key
OUTLIER_OPTIONS = (("consecutive_5xx_errors", "consecutive5xxErrors"),
                   ("consecutive_gateway_errors", "consecutiveGatewayErrors"),
                   ("interval", "interval"), ("base_ejection_time", "baseEjectionTime"),
                   ("max_ejection_percent", "maxEjectionPercent"))
DURATION = re.compile(r"^([0-9]+(\.[0-9]+)?(h|m|s|ms|us|µs|ns))+$")
ENVOY_WARNING = ("each client pod's Envoy enforces maxConnections on its own, so the cap Redis sees is about "
                 "maxConnections x the number of client pods (%s x pods)")

ARG_SPEC: Dict[str, Dict[str, Any]] = {
    "namespace": {"type": "str", "required": True},
    "name": {"type": "str", "required": True},
    # not "host": that is the API server URL of the kubernetes.core connection options
    "redis_host": {"type": "str"},
    "max_connections": {"type": "int"},
    "consecutive_5xx_errors": {"type": "int"},
    "consecutive_gateway_errors": {"type": "int"},
    "interval": {"type": "str"},
    "base_ejection_time": {"type": "str"},
    "max_ejection_percent": {"type": "int"},
    "workload": {"type": "str"},
    "api_version": {"type": "str", "default": DEFAULT_API},
}


def wanted_fields(params: Dict[str, Any]) -> Desired:
    wanted: Desired = {}
    if params.get("max_connections") is not None:
        if params["max_connections"] < 1:
            raise StormError("max_connections must be at least 1 (got %s)" % params["max_connections"])
        wanted[TCP_MAX] = params["max_connections"]
    for option, key in OUTLIER_OPTIONS:
        value = params.get(option)
        if value is None:
            continue
        if option in ("interval", "base_ejection_time"):
            if not DURATION.match(str(value)):
                raise StormError("%s %r is not a duration Istio accepts (e.g. 10s, 1m, 500ms)" % (option, value))
        elif option == "max_ejection_percent":
            if not 0 <= value <= 100:
                raise StormError("max_ejection_percent must be between 0 and 100 (got %s)" % value)
        elif value < 0:
            raise StormError("%s must be 0 or more (got %s)" % (option, value))
        wanted[(*OUTLIER, key)] = value
    if not wanted:
        raise StormError("give max_connections and/or outlier detection settings (consecutive_5xx_errors, "
                         "consecutive_gateway_errors, interval, base_ejection_time, max_ejection_percent)")
    return wanted


def build_plans(kube: Any, params: Dict[str, Any]) -> List[Plan]:
    namespace, name, host = params["namespace"], params["name"], params.get("redis_host")
    api_version = params.get("api_version") or DEFAULT_API
    ref = ObjectRef(api_version, "DestinationRule", "destinationrules", namespace, name)
    workload = params.get("workload")
    workloads = [workload if "/" in workload else "%s/%s" % (namespace, workload)] if workload else []
    if params.get("state") == "restored":
        return [Plan(ref, lambda live: {}, MODULE, workloads)]
    if not host:
        raise StormError("redis_host is required with state applied: the Redis service host the rule is for "
                         "(e.g. redis.redis.svc.cluster.local)")
    wanted = wanted_fields(params)

    def desired(live: Dict[str, Any]) -> Desired:
        live_host = (live.get("spec") or {}).get("host")
        if live and live_host != host:
            raise StormError("DestinationRule %s/%s is for host %r, not %r: name a rule for the Redis host, or a new "
                             "name to create one" % (namespace, name, live_host, host))
        return dict(wanted)

    def create(fields: Desired) -> Dict[str, Any]:
        body: Dict[str, Any] = {"apiVersion": api_version, "kind": "DestinationRule",
                                "metadata": {"name": name, "namespace": namespace,
                                             "labels": {"app.kubernetes.io/managed-by": "fintech.redis_storm"}},
                                "spec": {"host": host}}
        for path, value in fields.items():
            node = body
            for key in path[:-1]:
                node = node.setdefault(key, {})
            node[path[-1]] = value
        return body

    warnings = [ENVOY_WARNING % wanted[TCP_MAX]] if TCP_MAX in wanted else []
    return [Plan(ref, desired, MODULE, workloads, create=create, warnings=warnings)]
