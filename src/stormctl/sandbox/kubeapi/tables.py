"""`meta.k8s.io/v1` Tables for kubectl's server-side printing (the columns `kubectl get` shows)."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any, Callable

Row = list[Any]


def human_duration(created: Any) -> str:
    if not created:
        return "<unknown>"
    try:
        then = datetime.strptime(str(created), "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc)
    except ValueError:
        return "<unknown>"
    seconds = max(0, int((datetime.now(timezone.utc) - then).total_seconds()))
    if seconds < 120:
        return "%ds" % seconds
    minutes = seconds // 60
    if minutes < 10:
        return "%dm%ds" % (minutes, seconds % 60) if seconds % 60 else "%dm" % minutes
    if minutes < 180:
        return "%dm" % minutes
    hours = minutes // 60
    if hours < 48:
        return "%dh" % hours
    return "%dd" % (hours // 24)


def _age(obj: dict[str, Any]) -> str:
    return human_duration(obj.get("metadata", {}).get("creationTimestamp"))


def _pod(obj: dict[str, Any]) -> Row:
    spec, status = obj.get("spec") or {}, obj.get("status") or {}
    statuses = status.get("containerStatuses") or []
    ready = sum(1 for s in statuses if s.get("ready"))
    restarts = sum(int(s.get("restartCount") or 0) for s in statuses)
    reason = status.get("reason") or status.get("phase") or "Unknown"
    for s in statuses:
        waiting = (s.get("state") or {}).get("waiting") or {}
        terminated = (s.get("state") or {}).get("terminated") or {}
        if waiting.get("reason"):
            reason = waiting["reason"]
        elif terminated.get("reason"):
            reason = terminated["reason"]
    if obj.get("metadata", {}).get("deletionTimestamp"):
        reason = "Terminating"
    return ["%d/%d" % (ready, len(spec.get("containers") or [])), reason, restarts, _age(obj),
            status.get("podIP") or "<none>", spec.get("nodeName") or "<none>"]


def _deployment(obj: dict[str, Any]) -> Row:
    spec, status = obj.get("spec") or {}, obj.get("status") or {}
    return ["%d/%d" % (status.get("readyReplicas") or 0, spec.get("replicas") or 0),
            status.get("updatedReplicas") or 0, status.get("availableReplicas") or 0, _age(obj)]


def _statefulset(obj: dict[str, Any]) -> Row:
    spec, status = obj.get("spec") or {}, obj.get("status") or {}
    return ["%d/%d" % (status.get("readyReplicas") or 0, spec.get("replicas") or 0), _age(obj)]


def _replicaset(obj: dict[str, Any]) -> Row:
    spec, status = obj.get("spec") or {}, obj.get("status") or {}
    return [spec.get("replicas") or 0, status.get("replicas") or 0, status.get("readyReplicas") or 0, _age(obj)]


def _hpa(obj: dict[str, Any]) -> Row:
    spec, status = obj.get("spec") or {}, obj.get("status") or {}
    ref = spec.get("scaleTargetRef") or {}
    return ["%s/%s" % (ref.get("kind", ""), ref.get("name", "")), "<unknown>", spec.get("minReplicas") or 1,
            spec.get("maxReplicas") or 0, status.get("currentReplicas") or 0, _age(obj)]


def _namespace(obj: dict[str, Any]) -> Row:
    return [(obj.get("status") or {}).get("phase", "Active"), _age(obj)]


def _configmap(obj: dict[str, Any]) -> Row:
    return [len(obj.get("data") or {}) + len(obj.get("binaryData") or {}), _age(obj)]


def _service(obj: dict[str, Any]) -> Row:
    spec = obj.get("spec") or {}
    ports = ",".join("%s/%s" % (p.get("port"), p.get("protocol", "TCP")) for p in spec.get("ports") or [])
    return [spec.get("type", "ClusterIP"), spec.get("clusterIP", "<none>"), "<none>", ports or "<none>", _age(obj)]


def _lease(obj: dict[str, Any]) -> Row:
    return [(obj.get("spec") or {}).get("holderIdentity") or "", _age(obj)]


def _ingress(obj: dict[str, Any]) -> Row:
    spec = obj.get("spec") or {}
    hosts = ",".join(r.get("host", "*") for r in spec.get("rules") or []) or "*"
    return [spec.get("ingressClassName") or "<none>", hosts, "", "80", _age(obj)]


def _event(obj: dict[str, Any]) -> Row:
    involved = obj.get("involvedObject") or {}
    last = obj.get("lastTimestamp") or obj.get("eventTime") or obj.get("metadata", {}).get("creationTimestamp")
    return [human_duration(last), obj.get("type", ""), obj.get("reason", ""),
            "%s/%s" % (str(involved.get("kind", "")).lower(), involved.get("name", "")), obj.get("message", "")]


def _col(name: str, kind: str = "string", priority: int = 0) -> dict[str, Any]:
    return {"name": name, "type": kind, "format": "name" if name == "Name" else "", "description": name,
            "priority": priority}


PRINTERS: dict[str, tuple[list[dict[str, Any]], Callable[[dict[str, Any]], Row]]] = {
    "Pod": ([_col("Ready"), _col("Status"), _col("Restarts", "string"), _col("Age"), _col("IP", priority=1),
             _col("Node", priority=1)], _pod),
    "Deployment": ([_col("Ready"), _col("Up-to-date", "integer"), _col("Available", "integer"), _col("Age")],
                   _deployment),
    "StatefulSet": ([_col("Ready"), _col("Age")], _statefulset),
    "ReplicaSet": ([_col("Desired", "integer"), _col("Current", "integer"), _col("Ready", "integer"), _col("Age")],
                   _replicaset),
    "HorizontalPodAutoscaler": ([_col("Reference"), _col("Targets"), _col("MinPods", "integer"),
                                 _col("MaxPods", "integer"), _col("Replicas", "integer"), _col("Age")], _hpa),
    "Namespace": ([_col("Status"), _col("Age")], _namespace),
    "ConfigMap": ([_col("Data", "integer"), _col("Age")], _configmap),
    "Service": ([_col("Type"), _col("Cluster-IP"), _col("External-IP"), _col("Port(s)"), _col("Age")], _service),
    "Lease": ([_col("Holder"), _col("Age")], _lease),
    "Ingress": ([_col("Class"), _col("Hosts"), _col("Address"), _col("Ports"), _col("Age")], _ingress),
}
EVENT_COLUMNS = [_col("Last Seen"), _col("Type"), _col("Reason"), _col("Object"), _col("Message")]


def table(kind: str, objects: list[dict[str, Any]], resource_version: str, include: str) -> dict[str, Any]:
    if kind == "Event":
        columns, rows = EVENT_COLUMNS, [_event(o) for o in objects]
    else:
        extra, printer = PRINTERS.get(kind, ([_col("Age")], lambda o: [_age(o)]))
        columns = [_col("Name"), *extra]
        rows = [[o.get("metadata", {}).get("name", ""), *printer(o)] for o in objects]
    out_rows = []
    for obj, cells in zip(objects, rows):
        row: dict[str, Any] = {"cells": cells}
        if include == "Object":
            row["object"] = obj
        elif include != "None":
            row["object"] = {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1",
                             "metadata": obj.get("metadata", {})}
        out_rows.append(row)
    return {"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": {"resourceVersion": resource_version},
            "columnDefinitions": columns, "rows": out_rows}
