"""The baseline cluster as Kubernetes objects, built from scenarios/world.yml."""

from __future__ import annotations

import json
from typing import Any

from stormctl.sandbox.scenario import BREAKER_KEY, RETRY_KEY, Workload, World

MANAGED = {"app.kubernetes.io/part-of": "redis-storm-sandbox"}
IMAGE = "registry.sandbox.internal/%s:1.42.0"
SERVICE_PORT = 8080


def _meta(name: str, namespace: str | None = None, labels: dict[str, str] | None = None,
          annotations: dict[str, str] | None = None) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "labels": {**MANAGED, **(labels or {})}}
    if namespace is not None:
        meta["namespace"] = namespace
    if annotations:
        meta["annotations"] = annotations
    return meta


def flag_data(wl: Workload, aggressive: bool, breaker_open: bool) -> dict[str, str]:
    if wl.flags.format == "plain":
        return {RETRY_KEY: "true" if aggressive else "false", BREAKER_KEY: "true" if breaker_open else "false"}
    doc = {"flags": {
        key: {"state": "ENABLED", "variants": {"on": True, "off": False}, "defaultVariant": "on" if value else "off"}
        for key, value in ((RETRY_KEY, aggressive), (BREAKER_KEY, breaker_open))
    }}
    return {"flags.json": json.dumps(doc, indent=2, sort_keys=True)}


def _deployment(wl: Workload) -> dict[str, Any]:
    labels = {"app.kubernetes.io/name": wl.name}
    env = [{"name": k, "value": v} for k, v in wl.env().items()]
    env.append({"name": "REDIS_HOST", "value": "redis-master.redis.svc.cluster.local"})
    container = {
        "name": "app",
        "image": IMAGE % wl.name,
        "ports": [{"name": "http", "containerPort": SERVICE_PORT, "protocol": "TCP"}],
        "env": env,
        "resources": {"requests": {"cpu": "%dm" % wl.cpu_request_m, "memory": "256Mi"},
                      "limits": {"memory": "512Mi"}},
        "readinessProbe": {"httpGet": {"path": "/actuator/health/readiness", "port": "http"}, "periodSeconds": 5},
        "livenessProbe": {"httpGet": {"path": "/actuator/health/liveness", "port": "http"}, "periodSeconds": 5,
                          "failureThreshold": 3},
    }
    return {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": _meta(wl.name, wl.namespace, labels),
        "spec": {
            "replicas": wl.replicas,
            "selector": {"matchLabels": labels},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}},
            "template": {"metadata": {"labels": dict(labels)}, "spec": {"containers": [container]}},
        },
    }


def _ingress(wl: Workload) -> dict[str, Any]:
    annotations: dict[str, str] = {}
    if wl.ingress_provider == "traefik":
        annotations["traefik.ingress.kubernetes.io/router.middlewares"] = "%s-%s-headers@kubernetescrd" % (
            wl.namespace, wl.name)
        annotations["traefik.ingress.kubernetes.io/router.entrypoints"] = "websecure"
    else:
        annotations["nginx.ingress.kubernetes.io/proxy-read-timeout"] = "30"
    return {
        "apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
        "metadata": _meta(wl.name, wl.namespace, {"app.kubernetes.io/name": wl.name}, annotations),
        "spec": {
            "ingressClassName": "traefik" if wl.ingress_provider == "traefik" else "nginx",
            "rules": [{"host": wl.ingress_host, "http": {"paths": [{
                "path": "/", "pathType": "Prefix",
                "backend": {"service": {"name": wl.name, "port": {"number": SERVICE_PORT}}}}]}}],
        },
    }


def _autoscaler(wl: Workload) -> list[dict[str, Any]]:
    auto = wl.autoscaler
    if auto is None:
        return []
    target = {"apiVersion": "apps/v1", "kind": "Deployment", "name": wl.name}
    if auto.kind == "ScaledObject":
        return [{
            "apiVersion": "keda.sh/v1alpha1", "kind": "ScaledObject",
            "metadata": _meta(wl.name, wl.namespace, {"app.kubernetes.io/name": wl.name}),
            "spec": {
                "scaleTargetRef": {"name": wl.name},
                "pollingInterval": 2, "cooldownPeriod": 60,
                "minReplicaCount": auto.min, "maxReplicaCount": auto.max,
                "triggers": [{"type": "rabbitmq", "metadata": {
                    "queueName": auto.queue, "mode": "QueueLength", "value": str(auto.queue_target),
                    "hostFromEnv": "RABBITMQ_URL"}}],
            },
        }]
    return [{
        "apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
        "metadata": _meta(wl.name, wl.namespace, {"app.kubernetes.io/name": wl.name}),
        "spec": {
            "scaleTargetRef": target,
            "minReplicas": auto.min, "maxReplicas": auto.max,
            "metrics": [{"type": "Resource", "resource": {
                "name": "cpu", "target": {"type": "Utilization", "averageUtilization": auto.cpu_target}}}],
            "behavior": {
                "scaleUp": {"stabilizationWindowSeconds": 0, "selectPolicy": "Max", "policies": [
                    {"type": "Pods", "value": auto.scale_up_pods, "periodSeconds": auto.scale_up_period_seconds},
                    {"type": "Percent", "value": 100, "periodSeconds": auto.scale_up_period_seconds}]},
                "scaleDown": {"stabilizationWindowSeconds": auto.scale_down_window_seconds, "selectPolicy": "Max",
                              "policies": [{"type": "Percent", "value": 50, "periodSeconds": 15}]},
            },
        },
    }]


def manifests(world: World) -> list[dict[str, Any]]:
    """Every object of the baseline world, namespaces first."""
    objects: list[dict[str, Any]] = []
    for ns, labels in world.namespaces.items():
        objects.append({"apiVersion": "v1", "kind": "Namespace",
                        "metadata": _meta(ns, None, {"kubernetes.io/metadata.name": ns, **labels})})
    r = world.redis
    redis_labels = {"app.kubernetes.io/name": "redis", "app.kubernetes.io/component": "master"}
    objects.append({
        "apiVersion": "apps/v1", "kind": "StatefulSet",
        "metadata": _meta(r.name, r.namespace, redis_labels),
        "spec": {
            "replicas": 1, "serviceName": r.name, "selector": {"matchLabels": redis_labels},
            "template": {"metadata": {"labels": dict(redis_labels)}, "spec": {"containers": [{
                "name": "redis", "image": "docker.io/library/redis:7.0.15",
                "args": ["--maxclients", "1000"], "ports": [{"name": "redis", "containerPort": 6379}],
                "resources": {"requests": {"cpu": "%dm" % r.cpu_request_m, "memory": "1Gi"}},
            }]}},
        },
    })
    objects.append({"apiVersion": "v1", "kind": "Service", "metadata": _meta(r.name, r.namespace, redis_labels),
                    "spec": {"selector": redis_labels, "ports": [{"name": "redis", "port": 6379, "targetPort": 6379}],
                             "clusterIP": "None"}})
    objects.append({
        "apiVersion": "networking.istio.io/v1", "kind": "DestinationRule",
        "metadata": _meta(r.destination_rule, r.namespace, redis_labels),
        "spec": {"host": r.host, "trafficPolicy": {"connectionPool": {"tcp": {"connectTimeout": "1s"}}}},
    })
    for wl in world.workloads:
        objects.append(_deployment(wl))
        objects.append({"apiVersion": "v1", "kind": "Service",
                        "metadata": _meta(wl.name, wl.namespace, {"app.kubernetes.io/name": wl.name}),
                        "spec": {"selector": {"app.kubernetes.io/name": wl.name},
                                 "ports": [{"name": "http", "port": SERVICE_PORT, "targetPort": "http"}]}})
        objects.append({"apiVersion": "v1", "kind": "ConfigMap",
                        "metadata": _meta(wl.flags.configmap, wl.namespace, {"app.kubernetes.io/name": wl.name,
                                                                             "flags.sandbox/format": wl.flags.format}),
                        "data": flag_data(wl, wl.flags.aggressive_retries, wl.flags.breaker_open)})
        if wl.ingress_provider is not None:
            objects.append(_ingress(wl))
            if wl.ingress_provider == "traefik":
                objects.append({"apiVersion": "traefik.io/v1alpha1", "kind": "Middleware",
                                "metadata": _meta("%s-headers" % wl.name, wl.namespace),
                                "spec": {"headers": {"customResponseHeaders": {"X-Served-By": wl.name}}}})
        objects.extend(_autoscaler(wl))
    return objects
