"""Server-side defaulting for the fields our clients read back (a subset of the real defaulters)."""

from __future__ import annotations

import itertools
from typing import Any

_cluster_ips = itertools.count(10)


def _container(container: dict[str, Any]) -> None:
    image = str(container.get("image", ""))
    latest = ":" not in image.rpartition("/")[2] or image.endswith(":latest")
    container.setdefault("imagePullPolicy", "Always" if latest else "IfNotPresent")
    container.setdefault("terminationMessagePath", "/dev/termination-log")
    container.setdefault("terminationMessagePolicy", "File")
    container.setdefault("resources", {})
    for port in container.get("ports") or []:
        if isinstance(port, dict):
            port.setdefault("protocol", "TCP")


def pod_spec(spec: dict[str, Any]) -> None:
    spec.setdefault("restartPolicy", "Always")
    spec.setdefault("terminationGracePeriodSeconds", 30)
    spec.setdefault("dnsPolicy", "ClusterFirst")
    spec.setdefault("securityContext", {})
    spec.setdefault("schedulerName", "default-scheduler")
    for container in spec.get("containers") or []:
        if isinstance(container, dict):
            _container(container)


def _template(spec: dict[str, Any]) -> None:
    template = spec.get("template")
    if isinstance(template, dict):
        template.setdefault("metadata", {}).setdefault("creationTimestamp", None)
        if isinstance(template.get("spec"), dict):
            pod_spec(template["spec"])


def deployment(obj: dict[str, Any]) -> None:
    spec = obj.setdefault("spec", {})
    spec.setdefault("replicas", 1)
    strategy = spec.setdefault("strategy", {})
    strategy.setdefault("type", "RollingUpdate")
    if strategy["type"] == "RollingUpdate":
        rolling = strategy.setdefault("rollingUpdate", {})
        rolling.setdefault("maxUnavailable", "25%")
        rolling.setdefault("maxSurge", "25%")
    spec.setdefault("revisionHistoryLimit", 10)
    spec.setdefault("progressDeadlineSeconds", 600)
    _template(spec)


def statefulset(obj: dict[str, Any]) -> None:
    spec = obj.setdefault("spec", {})
    spec.setdefault("replicas", 1)
    spec.setdefault("podManagementPolicy", "OrderedReady")
    update = spec.setdefault("updateStrategy", {"type": "RollingUpdate"})
    if update.get("type") == "RollingUpdate":
        update.setdefault("rollingUpdate", {"partition": 0})
    spec.setdefault("revisionHistoryLimit", 10)
    spec.setdefault("persistentVolumeClaimRetentionPolicy", {"whenDeleted": "Retain", "whenScaled": "Retain"})
    _template(spec)


def replicaset(obj: dict[str, Any]) -> None:
    spec = obj.setdefault("spec", {})
    spec.setdefault("replicas", 1)
    _template(spec)


def hpa(obj: dict[str, Any]) -> None:
    spec = obj.setdefault("spec", {})
    spec.setdefault("minReplicas", 1)
    if not spec.get("metrics"):
        spec["metrics"] = [{"type": "Resource", "resource": {"name": "cpu", "target": {
            "type": "Utilization", "averageUtilization": 80}}}]
    behavior = spec.get("behavior")
    # Like SetDefaults_HorizontalPodAutoscalerBehavior: only a given behavior gets its missing rules filled.
    if isinstance(behavior, dict):
        up: dict[str, Any] = behavior["scaleUp"] if isinstance(behavior.get("scaleUp"), dict) else {}
        up.setdefault("stabilizationWindowSeconds", 0)
        up.setdefault("selectPolicy", "Max")
        up.setdefault("policies", [{"type": "Pods", "value": 4, "periodSeconds": 15},
                                   {"type": "Percent", "value": 100, "periodSeconds": 15}])
        behavior["scaleUp"] = up
        down: dict[str, Any] = behavior["scaleDown"] if isinstance(behavior.get("scaleDown"), dict) else {}
        down.setdefault("stabilizationWindowSeconds", 300)
        down.setdefault("selectPolicy", "Max")
        down.setdefault("policies", [{"type": "Percent", "value": 100, "periodSeconds": 15}])
        behavior["scaleDown"] = down


def pod(obj: dict[str, Any]) -> None:
    spec = obj.setdefault("spec", {})
    if isinstance(spec, dict):
        pod_spec(spec)
        spec.setdefault("enableServiceLinks", True)
        spec.setdefault("priority", 0)


def service(obj: dict[str, Any]) -> None:
    spec: dict[str, Any] = obj.setdefault("spec", {})
    spec.setdefault("type", "ClusterIP")
    spec.setdefault("sessionAffinity", "None")
    if "clusterIP" not in spec:
        n = next(_cluster_ips)
        spec["clusterIP"] = "10.96.%d.%d" % (n // 250, n % 250 + 1)
        spec["clusterIPs"] = [spec["clusterIP"]]
    for port in spec.get("ports") or []:
        if isinstance(port, dict):
            port.setdefault("protocol", "TCP")
            port.setdefault("targetPort", port.get("port"))


def namespace(obj: dict[str, Any]) -> None:
    obj.setdefault("spec", {}).setdefault("finalizers", ["kubernetes"])
    obj.setdefault("status", {}).setdefault("phase", "Active")
    name = obj.get("metadata", {}).get("name")
    if name:
        obj["metadata"].setdefault("labels", {})["kubernetes.io/metadata.name"] = name


DEFAULTERS = {
    "Deployment": deployment, "StatefulSet": statefulset, "ReplicaSet": replicaset,
    "HorizontalPodAutoscaler": hpa, "Pod": pod, "Service": service, "Namespace": namespace,
}


# Status fields without `omitempty` in the Go types: the real server always serializes them (0 when unset).
ALWAYS_IN_STATUS = {"StatefulSet": ("replicas",), "ReplicaSet": ("replicas",),
                    "HorizontalPodAutoscaler": ("desiredReplicas",)}


def _zero(items: Any, defaults: dict[str, Any]) -> None:
    for item in items if isinstance(items, list) else []:
        if isinstance(item, dict):
            for key, value in defaults.items():
                if item.get(key) is None:
                    item[key] = value


def _zero_values(kind: str, status: dict[str, Any]) -> None:
    """Fill what Go serializes even when unset, so typed clients that require those fields can read it."""
    _zero(status.get("conditions"), {"type": "", "status": ""})
    if kind != "Pod":
        return
    for field in ("containerStatuses", "initContainerStatuses"):
        entries = status.get(field)
        _zero(entries, {"name": "", "image": "", "imageID": "", "ready": False, "restartCount": 0})
        for entry in entries if isinstance(entries, list) else []:
            for state_field in ("state", "lastState"):
                state = entry.get(state_field) if isinstance(entry, dict) else None
                if isinstance(state, dict) and isinstance(state.get("terminated"), dict):
                    state["terminated"].setdefault("exitCode", 0)


def apply_defaults(kind: str, obj: dict[str, Any]) -> None:
    defaulter = DEFAULTERS.get(kind)
    if defaulter is not None and isinstance(obj.get("spec", {}), dict):
        defaulter(obj)
    if kind in ALWAYS_IN_STATUS:
        status = obj.get("status")
        if not isinstance(status, dict):
            status = obj["status"] = {}
        for key in ALWAYS_IN_STATUS[kind]:
            if status.get(key) is None:
                status[key] = 0
    if isinstance(obj.get("status"), dict):
        _zero_values(kind, obj["status"])


def initial_status(kind: str) -> dict[str, Any]:
    """The status a create starts from: the API server drops what the client sent for these kinds."""
    if kind == "Pod":
        return {"phase": "Pending", "qosClass": "BestEffort"}
    if kind == "Namespace":
        return {"phase": "Active"}
    if kind == "Service":
        return {"loadBalancer": {}}
    return {}
