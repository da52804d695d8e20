"""The fleet's pure decisions: HPA and KEDA scaling, ingress limits, flags, mesh caps, and the world's objects."""

from __future__ import annotations

import json
from typing import Any

import pytest

from stormctl.sandbox.fleet.autoscale import ScaleHistory, hpa_decision, keda_decision
from stormctl.sandbox.fleet.config import ingress_limit, mesh_max_connections, read_flags
from stormctl.sandbox.fleet.world import manifests
from stormctl.sandbox.scenario import BREAKER_KEY, RETRY_KEY, load_world

STAMP = "2026-11-26T05:00:00Z"


def _hpa(lo: int = 3, hi: int = 48, target: int = 60, up: dict[str, Any] | None = None) -> dict[str, Any]:
    behavior = {"scaleUp": up or {"selectPolicy": "Max", "policies": [{"type": "Pods", "value": 8,
                                                                         "periodSeconds": 5}]},
                "scaleDown": {"stabilizationWindowSeconds": 60}}
    return {"metadata": {"name": "api", "namespace": "trading"}, "spec": {
        "minReplicas": lo, "maxReplicas": hi, "behavior": behavior,
        "metrics": [{"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization",
                                                                                "averageUtilization": target}}}]}}


def _condition(decision: Any, kind: str) -> dict[str, Any]:
    return next(c for c in decision.conditions if c["type"] == kind)


def test_hpa_scales_up_toward_the_target_within_its_rate_policy() -> None:
    decision = hpa_decision(_hpa(), 3, [900, 900, 900], 500, ScaleHistory(), STAMP)
    assert decision.utilization == 180
    assert decision.desired == 9  # 3 pods x 180% / 60%
    assert _condition(decision, "ScalingActive")["status"] == "True"
    hot = hpa_decision(_hpa(), 3, [2000] * 3, 500, ScaleHistory(), STAMP)
    assert hot.desired == 11  # wants 20, the policy allows 8 more pods per period
    assert _condition(hot, "ScalingLimited")["reason"] == "ScaleUpLimit"


def test_hpa_respects_max_and_disabled_scale_up() -> None:
    hot = [2000] * 40
    capped = hpa_decision(_hpa(up={"selectPolicy": "Max", "policies": [{"type": "Percent", "value": 900,
                                                                          "periodSeconds": 5}]}),
                          40, hot, 500, ScaleHistory(), STAMP)
    assert capped.desired == 48
    assert _condition(capped, "ScalingLimited")["reason"] == "TooManyReplicas"
    paused = hpa_decision(_hpa(up={"selectPolicy": "Disabled"}), 6, [2000] * 6, 500, ScaleHistory(), STAMP)
    assert paused.desired == 6
    pinned = hpa_decision(_hpa(hi=6), 6, [2000] * 6, 500, ScaleHistory(), STAMP)
    assert pinned.desired == 6


def test_hpa_scale_down_waits_for_its_stabilisation_window() -> None:
    history = ScaleHistory()
    busy = hpa_decision(_hpa(), 10, [600] * 10, 500, history, STAMP)
    assert busy.desired == 18
    quiet = hpa_decision(_hpa(), 10, [50] * 10, 500, history, STAMP)
    assert quiet.desired == 10, "the recent high recommendation holds the replicas during the window"


def test_hpa_below_min_goes_to_min_and_zero_replicas_disable_it() -> None:
    assert hpa_decision(_hpa(lo=3), 1, [10], 500, ScaleHistory(), STAMP).desired == 3
    off = hpa_decision(_hpa(lo=3), 0, [], 500, ScaleHistory(), STAMP)
    assert off.desired == 0
    assert _condition(off, "ScalingActive")["reason"] == "ScalingDisabled"


def _scaled_object(**annotations: str) -> dict[str, Any]:
    return {"metadata": {"name": "worker", "namespace": "payments", "annotations": annotations},
            "spec": {"minReplicaCount": 2, "maxReplicaCount": 80,
                     "triggers": [{"type": "rabbitmq", "metadata": {"value": "50"}}]}}


def test_keda_scales_to_the_backlog_unless_paused() -> None:
    replicas, conditions, _ = keda_decision(_scaled_object(), 2, 4000, ScaleHistory(), STAMP)
    assert replicas == 80
    assert next(c for c in conditions if c["type"] == "Active")["status"] == "True"
    replicas, conditions, _ = keda_decision(_scaled_object(**{"autoscaling.keda.sh/paused": "true"}), 2, 4000,
                                            ScaleHistory(), STAMP)
    assert replicas is None
    assert next(c for c in conditions if c["type"] == "Paused")["status"] == "True"
    replicas, _, extra = keda_decision(_scaled_object(**{"autoscaling.keda.sh/paused-replicas": "5"}), 40, 4000,
                                       ScaleHistory(), STAMP)
    assert replicas == 5
    assert extra == {"pausedReplicaCount": 5}


def _ingress(provider: str, annotations: dict[str, str]) -> dict[str, Any]:
    return {"metadata": {"name": "api", "namespace": "trading", "annotations": annotations},
            "spec": {"ingressClassName": provider}}


@pytest.mark.parametrize(("annotations", "rps", "inflight"), [
    ({"nginx.ingress.kubernetes.io/limit-rps": "10"}, 10.0, None),
    ({"nginx.ingress.kubernetes.io/limit-rpm": "600"}, 10.0, None),
    ({"nginx.ingress.kubernetes.io/limit-rps": "30", "nginx.ingress.kubernetes.io/limit-rpm": "600"}, 10.0, None),
    ({"nginx.ingress.kubernetes.io/limit-connections": "4"}, None, 4),
])
def test_nginx_limits(annotations: dict[str, str], rps: float | None, inflight: int | None) -> None:
    limit = ingress_limit(_ingress("nginx", annotations), {})
    assert limit is not None
    assert (limit.rps, limit.max_inflight, limit.status) == (rps, inflight, 503)
    assert ingress_limit(_ingress("nginx", {"nginx.ingress.kubernetes.io/proxy-read-timeout": "30"}), {}) is None


def test_traefik_rate_limit_middleware_through_the_router_annotation() -> None:
    middlewares = {"trading-headers": {"spec": {"headers": {}}},
                   "trading-ratelimit": {"spec": {"rateLimit": {"average": 120, "period": "1m", "burst": 10}}}}
    chain = "trading-headers@kubernetescrd, trading-ratelimit@kubernetescrd"
    limit = ingress_limit(_ingress("traefik", {"traefik.ingress.kubernetes.io/router.middlewares": chain}),
                          middlewares)
    assert limit is not None
    assert (limit.rps, limit.burst, limit.status) == (2.0, 10.0, 429)
    headers_only = {"traefik.ingress.kubernetes.io/router.middlewares": "trading-headers@kubernetescrd"}
    assert ingress_limit(_ingress("traefik", headers_only), middlewares) is None


def test_flags_plain_and_flagd() -> None:
    assert read_flags({"data": {RETRY_KEY: "true", BREAKER_KEY: "false"}}) == {RETRY_KEY: True, BREAKER_KEY: False}
    doc = {"flags": {RETRY_KEY: {"state": "ENABLED", "variants": {"on": True, "off": False}, "defaultVariant": "off"},
                     BREAKER_KEY: {"state": "DISABLED", "variants": {"on": True}, "defaultVariant": "on"}}}
    assert read_flags({"data": {"flags.json": json.dumps(doc)}}) == {RETRY_KEY: False, BREAKER_KEY: False}
    assert read_flags(None) == {}


def test_mesh_cap_applies_to_the_redis_host_only() -> None:
    host = "redis-master.redis.svc.cluster.local"
    rules = [{"spec": {"host": "redis-master.redis", "trafficPolicy": {"connectionPool": {"tcp": {
                 "maxConnections": 8}}}}},
             {"spec": {"host": "other.svc", "trafficPolicy": {"connectionPool": {"tcp": {"maxConnections": 1}}}}}]
    assert mesh_max_connections(rules, host) == 8
    assert mesh_max_connections(rules[1:], host) is None


def test_world_objects_have_the_kinds_the_runbook_touches() -> None:
    objects = manifests(load_world())
    kinds = {(o["apiVersion"], o["kind"]) for o in objects}
    assert {("apps/v1", "Deployment"), ("apps/v1", "StatefulSet"), ("autoscaling/v2", "HorizontalPodAutoscaler"),
            ("keda.sh/v1alpha1", "ScaledObject"), ("networking.k8s.io/v1", "Ingress"),
            ("traefik.io/v1alpha1", "Middleware"), ("networking.istio.io/v1", "DestinationRule"),
            ("v1", "ConfigMap"), ("v1", "Service"), ("v1", "Namespace")} <= kinds
    for deploy in (o for o in objects if o["kind"] == "Deployment"):
        env = {e["name"] for e in deploy["spec"]["template"]["spec"]["containers"][0]["env"]}
        assert {"REDIS_POOL_MAX", "REDIS_POOL_MIN", "REDIS_RETRY_ATTEMPTS", "REDIS_CLIENT_NAME",
                "FLAGS_CONFIGMAP"} <= env
