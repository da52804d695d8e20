# -*- coding: utf-8 -*-
# Copyright: fintech SRE
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""What one pod, PodMetrics or autoscaler document says: its addresses, owner, health, age, CPU and scaler."""

from __future__ import annotations

import calendar
import ipaddress
import time
from typing import Any, Dict, Iterable, List, Optional, Tuple

KEDA_PAUSED = "autoscaling.keda.sh/paused"
KEDA_PAUSED_REPLICAS = "autoscaling.keda.sh/paused-replicas"


def normalize_ip(address: str) -> str:
    """'10.0.0.1', '[fd00::1]:6379'-free forms and IPv4-mapped IPv6 all compare as one address."""
    text = str(address).strip().strip("[]")
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        return text
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    return str(ip)


def pod_ips(pod: Dict[str, Any]) -> List[str]:
    status = pod.get("status") or {}
    ips = [entry.get("ip", "") for entry in status.get("podIPs") or []]
    if status.get("podIP"):
        ips.append(status["podIP"])
    return sorted({normalize_ip(ip) for ip in ips if ip})


def pod_health(pod: Dict[str, Any]) -> Dict[str, Any]:
    """restarts (all containers), crashloop (waiting in CrashLoopBackOff), oomkilled (last exit)."""
    statuses = list((pod.get("status") or {}).get("containerStatuses") or [])
    restarts = sum(int(s.get("restartCount") or 0) for s in statuses)
    crashloop = any(((s.get("state") or {}).get("waiting") or {}).get("reason") == "CrashLoopBackOff" for s in statuses)
    oomkilled = any(
        ((s.get("lastState") or {}).get("terminated") or {}).get("reason") == "OOMKilled"
        or ((s.get("state") or {}).get("terminated") or {}).get("reason") == "OOMKilled"
        for s in statuses
    )
    return {"restarts": restarts, "crashloop": crashloop, "oomkilled": oomkilled}


def controller_of(obj: Dict[str, Any]) -> Optional[Tuple[str, str]]:
    """(kind, name) of the controlling ownerReference, or None."""
    refs = (obj.get("metadata") or {}).get("ownerReferences") or []
    for ref in refs:
        if ref.get("controller"):
            return str(ref.get("kind")), str(ref.get("name"))
    if refs:
        return str(refs[0].get("kind")), str(refs[0].get("name"))
    return None


def owner_of(pod: Dict[str, Any], replicasets: Dict[Tuple[str, str], Optional[Dict[str, Any]]]) -> Tuple[str, str]:
    """The workload a pod belongs to: ReplicaSet -> Deployment, StatefulSet, DaemonSet, Job, or the bare pod.

    ``replicasets`` maps (namespace, name) to the ReplicaSet read from the API, or None when it
    could not be read; then the Deployment name comes from the pod-template-hash suffix.
    """
    meta = pod.get("metadata") or {}
    namespace, name = str(meta.get("namespace", "")), str(meta.get("name", ""))
    owner = controller_of(pod)
    if owner is None:
        return "Pod", name
    kind, owner_name = owner
    if kind != "ReplicaSet":
        return kind, owner_name
    replicaset = replicasets.get((namespace, owner_name))
    if replicaset is not None:
        parent = controller_of(replicaset)
        return parent if parent is not None else ("ReplicaSet", owner_name)
    template_hash = (meta.get("labels") or {}).get("pod-template-hash")
    if template_hash and owner_name.endswith("-" + template_hash):
        return "Deployment", owner_name[: -len(template_hash) - 1]
    return "ReplicaSet", owner_name


def index_pods(pods: Iterable[Dict[str, Any]]) -> Tuple[Dict[str, Dict[str, Any]], Dict[str, int]]:
    """IP -> pod for live pods; IPs shared by several pods (hostNetwork) are set aside with their count."""
    by_ip: Dict[str, Dict[str, Any]] = {}
    shared: Dict[str, int] = {}
    for pod in pods:
        phase = (pod.get("status") or {}).get("phase")
        if phase in ("Succeeded", "Failed"):
            continue  # their IPs may already belong to a new pod
        for ip in pod_ips(pod):
            if ip in shared:
                shared[ip] += 1
            elif ip in by_ip:
                del by_ip[ip]
                shared[ip] = 2
            else:
                by_ip[ip] = pod
    return by_ip, shared


def pod_age(pod: Dict[str, Any], now: float) -> Optional[float]:
    """Seconds since the pod started (status.startTime, else its creation), None when neither is readable."""
    stamp = (pod.get("status") or {}).get("startTime") or (pod.get("metadata") or {}).get("creationTimestamp")
    try:
        started = calendar.timegm(time.strptime(str(stamp)[:19], "%Y-%m-%dT%H:%M:%S"))
    except ValueError:
        return None
    return max(now - started, 0.0)


def pod_key(pod: Dict[str, Any]) -> Tuple[str, str]:
    meta = pod.get("metadata") or {}
    return str(meta.get("namespace", "")), str(meta.get("name", ""))


def parse_cpu(quantity: Any) -> float:
    """A Kubernetes CPU quantity ('250m', '1', '1.5', '123456n', '12u') in millicores."""
    text = str(quantity).strip()
    units = {"n": 1e-6, "u": 1e-3, "m": 1.0}
    try:
        if text and text[-1] in units:
            return float(text[:-1]) * units[text[-1]]
        return float(text) * 1000.0
    except ValueError:
        return 0.0


def pod_cpu(metrics_items: Iterable[Dict[str, Any]]) -> Dict[str, float]:
    """pod name -> millicores summed over its containers, from a PodMetricsList."""
    usage: Dict[str, float] = {}
    for item in metrics_items:
        name = str((item.get("metadata") or {}).get("name", ""))
        usage[name] = sum(parse_cpu((c.get("usage") or {}).get("cpu", "0")) for c in item.get("containers") or [])
    return usage


def _targets(ref: Dict[str, Any], kind: str, name: str, default_kind: str = "") -> bool:
    return bool(ref.get("name") == name and (ref.get("kind") or default_kind) == kind)


def hpa_state(
    kind: str, name: str, hpas: List[Dict[str, Any]], scaled_objects: List[Dict[str, Any]]
) -> Optional[Dict[str, Any]]:
    """The autoscaler of one workload: a KEDA ScaledObject wins over the HPA KEDA generates for it."""
    for scaled in scaled_objects:
        spec = scaled.get("spec") or {}
        if not _targets(spec.get("scaleTargetRef") or {}, kind, name, default_kind="Deployment"):
            continue
        so_name = str((scaled.get("metadata") or {}).get("name", ""))
        annotations = (scaled.get("metadata") or {}).get("annotations") or {}
        generated = next((h for h in hpas if (h.get("metadata") or {}).get("name") == "keda-hpa-" + so_name), None)
        status = (generated or {}).get("status") or {}
        paused = str(annotations.get(KEDA_PAUSED, "")).lower() == "true" or KEDA_PAUSED_REPLICAS in annotations
        return {
            "kind": "ScaledObject", "name": so_name,
            "current": status.get("currentReplicas"), "desired": status.get("desiredReplicas"),
            "min": spec.get("minReplicaCount", 0), "max": spec.get("maxReplicaCount", 100),
            "paused": paused,
        }
    for hpa in hpas:
        spec = hpa.get("spec") or {}
        if not _targets(spec.get("scaleTargetRef") or {}, kind, name):
            continue
        status = hpa.get("status") or {}
        scale_up = (spec.get("behavior") or {}).get("scaleUp") or {}
        return {
            "kind": "HorizontalPodAutoscaler", "name": str((hpa.get("metadata") or {}).get("name", "")),
            "current": status.get("currentReplicas"), "desired": status.get("desiredReplicas"),
            "min": spec.get("minReplicas", 1), "max": spec.get("maxReplicas"),
            "paused": scale_up.get("selectPolicy") == "Disabled",
        }
    return None
