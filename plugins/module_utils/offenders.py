# -*- coding: utf-8 -*-
# Copyright: fintech SRE
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Who holds the Redis connections: client addresses joined with pods, their owners and their health.

``find_offenders`` reads the cluster through ``Kube`` and hands the documents to pure functions
(``attribute``, ``rank``, and those of pod_facts.py and log_signatures.py) that the unit tests
drive directly. Reading pods must work; everything else (replica sets, HPAs, KEDA, metrics, logs)
only degrades the answer and says so in ``degraded``.
"""

from __future__ import annotations

import ipaddress
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Dict, Iterable, List, Optional, Tuple

from ansible_collections.fintech.redis_storm.plugins.module_utils.errors import StormError
from ansible_collections.fintech.redis_storm.plugins.module_utils.k8s_client import KubeApiError, list_items, path_for
from ansible_collections.fintech.redis_storm.plugins.module_utils.log_signatures import (
    DEFAULT_LOG_SIGNATURES,
    compile_signatures,
    count_signatures,
)
from ansible_collections.fintech.redis_storm.plugins.module_utils.pod_facts import (
    controller_of,
    hpa_state,
    index_pods,
    normalize_ip,
    owner_of,
    pod_age,
    pod_cpu,
    pod_health,
    pod_key,
)

# What one read of the offenders takes besides the connection (storm_offenders_info, storm_views_info).
READ_ARG_SPEC: Dict[str, Dict[str, Any]] = {
    "namespaces": {"type": "list", "elements": "str", "default": []},
    "all_namespaces": {"type": "bool", "default": False},
    "log_tail_lines": {"type": "int", "default": 200},
    "log_signatures": {"type": "dict"},
    "top": {"type": "int", "default": 5},
    "metrics": {"type": "bool", "default": True},
    "young_pod_seconds": {"type": "int", "default": 300},
}

LOG_PODS_PER_WORKLOAD = 3
# Sidecars log the mesh's view, not the application's Redis errors.
SIDECAR_CONTAINERS = frozenset({"istio-proxy", "linkerd-proxy", "istio-init"})
LIVE_PODS_SELECTOR = "status.phase!=Succeeded,status.phase!=Failed"
# deploy/rbac.yml: triage's reads, bound per namespace; the cluster-wide binding is an opt-in left commented out.
TRIAGE_ROLE = "redis-storm-triage"
ALL_NAMESPACES_BINDING = "redis-storm-triage-all-namespaces"
NO_NAMESPACES = (
    "no namespaces to read pods in: set namespaces (the inventory's storm_namespaces, e.g. [payments, trading]) "
    "to the namespaces whose pods are Redis' clients; deploy/rbac.yml grants triage's reads there only. To read "
    "every namespace instead, apply the ClusterRoleBinding %s left commented out in deploy/rbac.yml and set "
    "all_namespaces: true (the inventory's triage_all_namespaces)" % ALL_NAMESPACES_BINDING)

WorkloadKey = Tuple[str, str, str]  # (namespace, kind, name)
# Pods and their replica sets by (namespace, name); an HPA list, a ScaledObject list and pod CPU.
Cluster = Tuple[List[Dict[str, Any]], Dict[Tuple[str, str], Optional[Dict[str, Any]]]]
NamespaceState = Tuple[List[Dict[str, Any]], List[Dict[str, Any]], Optional[Dict[str, float]]]
# At most this many API reads at once: enough for a handful of namespaces and workloads, gentle on the server.
PARALLEL_READS = 8


# ---------------------------------------------------------------------------------------------
# Pure functions: documents in, facts out.


def attribute(
    sources: List[Dict[str, Any]],
    pods: List[Dict[str, Any]],
    replicasets: Dict[Tuple[str, str], Optional[Dict[str, Any]]],
    include_idle: bool = False,
    young_pod_seconds: float = 300,
    now: Optional[float] = None,
    watched: Optional[List[str]] = None,
) -> Tuple[Dict[WorkloadKey, Dict[str, Any]], List[Dict[str, Any]]]:
    """Sum the sources' connections, and those they opened in Redis' window, per owning workload.

    Returns (workloads keyed by (namespace, kind, name), unattributed sources). Every live pod
    counts toward its workload's pods/restarts; workloads without connections are kept only
    when ``include_idle`` (Redis was unreadable, so the cluster's own signals must rank).
    Connections from pods started less than ``young_pod_seconds`` ago count as young (a burst).
    ``watched`` names the namespaces the pods were listed in (None: every namespace), for the
    reason an address is not attributed.
    """
    now = time.time() if now is None else now
    by_ip, shared = index_pods(pods)
    workloads: Dict[WorkloadKey, Dict[str, Any]] = {}

    def entry(pod: Dict[str, Any]) -> Dict[str, Any]:
        namespace, _name = pod_key(pod)
        kind, name = owner_of(pod, replicasets)
        key = (namespace, kind, name)
        if key not in workloads:
            workloads[key] = {
                "namespace": namespace, "kind": kind, "name": name, "connections": 0,
                "opened": None, "opened_per_sec": None, "young_pods": 0, "young_pod_connections": 0,
                "pod_names": [], "pod_ips": [], "pod_connections": {}, "client_names": [],
                "restarts": 0, "crashloop": False, "oomkilled": False,
            }
        return workloads[key]

    for pod in pods:
        if (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
            continue
        item = entry(pod)
        health = pod_health(pod)
        item["pod_names"].append(pod_key(pod)[1])
        age = pod_age(pod, now)
        if age is not None and age < young_pod_seconds:
            item["young_pods"] += 1
        item["restarts"] += health["restarts"]
        item["crashloop"] = item["crashloop"] or health["crashloop"]
        item["oomkilled"] = item["oomkilled"] or health["oomkilled"]

    unattributed: List[Dict[str, Any]] = []
    for source in sources:
        ip = normalize_ip(str(source.get("ip", "")))
        connections = int(source.get("connections") or 0)
        owner_pod = by_ip.get(ip)
        if owner_pod is None:
            reason = ("address shared by %d hostNetwork pods" % shared[ip]) if ip in shared else outside_reason(watched)
            unattributed.append({"ip": ip, "connections": connections, "opened": source.get("opened"),
                                 "names": list(source.get("names") or []), "reason": reason})
            continue
        item = entry(owner_pod)
        pod_name = pod_key(owner_pod)[1]
        item["connections"] += connections
        for key in ("opened", "opened_per_sec"):
            if source.get(key) is not None:
                item[key] = round((item[key] or 0) + source[key], 2)
        age = pod_age(owner_pod, now)
        if age is not None and age < young_pod_seconds:
            item["young_pod_connections"] += connections
        item["pod_connections"][pod_name] = item["pod_connections"].get(pod_name, 0) + connections
        if ip not in item["pod_ips"]:
            item["pod_ips"].append(ip)
        for client_name in source.get("names") or []:
            if client_name and client_name not in item["client_names"]:
                item["client_names"].append(client_name)

    if not include_idle:
        workloads = {key: item for key, item in workloads.items() if item["connections"] > 0 or item["opened"]}
    for item in workloads.values():
        item["pod_ips"].sort(key=_ip_sort_key)
        item["pod_names"].sort()
    return workloads, unattributed


def outside_reason(watched: Optional[List[str]]) -> str:
    """Why an address no live pod read has is left unattributed: where it was looked for."""
    if watched is None:
        return "no live pod of any namespace has this address (a node, or a client outside the cluster)"
    return ("outside the watched namespaces (%s): no live pod there has this address (a pod of another "
            "namespace, a node, or a client outside the cluster)" % ", ".join(sorted(watched)))


def _ip_sort_key(ip: str) -> Tuple[int, Any]:
    try:
        parsed = ipaddress.ip_address(ip)
        return parsed.version, int(parsed)
    except ValueError:
        return 9, ip


def _evidence(item: Dict[str, Any]) -> Tuple[Any, ...]:
    signals = sum((item.get("log_signatures") or {}).values())
    return (
        item["connections"], signals, int(item["crashloop"]) + int(item["oomkilled"]), item["restarts"],
        item.get("cpu_millicores") or 0.0,
    )


def rank(workloads: Iterable[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """Most connections first; ties broken by log signals, crash state, restarts, then CPU."""
    return sorted(workloads, key=lambda w: (tuple(-x for x in _evidence(w)), w["namespace"], w["kind"], w["name"]))


def shape(item: Dict[str, Any], total: int) -> Dict[str, Any]:
    """The documented result entry of one workload."""
    return {
        "namespace": item["namespace"], "kind": item["kind"], "name": item["name"],
        "connections": item["connections"],
        "connection_share": round(item["connections"] / total, 4) if total else 0.0,
        "opened": item.get("opened"), "opened_per_sec": item.get("opened_per_sec"),
        "young_pods": item.get("young_pods", 0), "young_pod_connections": item.get("young_pod_connections", 0),
        "pods": len(item["pod_names"]), "pod_ips": item["pod_ips"],
        "client_names": item["client_names"],
        "restarts": item["restarts"], "crashloop": item["crashloop"], "oomkilled": item["oomkilled"],
        "hpa": item.get("hpa"),
        "cpu_millicores": None if item.get("cpu_millicores") is None else round(item["cpu_millicores"], 1),
        "log_signatures": item.get("log_signatures") or {},
        "logs_read": item.get("logs_read", []),
    }


# ---------------------------------------------------------------------------------------------
# Reading the cluster.


def forbidden_in(namespace: Optional[str], exc: KubeApiError) -> KubeApiError:
    """A triage read refused (403) in ``namespace`` (None: cluster-wide), with the binding that grants it."""
    if exc.status != 403:
        return exc
    if namespace is None:
        grant = ("apply the ClusterRoleBinding %s left commented out in deploy/rbac.yml, or set all_namespaces "
                 "false to read only the namespaces given" % ALL_NAMESPACES_BINDING)
    else:
        grant = ("bind the ClusterRole %s in namespace %s with a RoleBinding (deploy/rbac.yml has one per namespace "
                 "of storm_namespaces), or take %s out of storm_namespaces" % (TRIAGE_ROLE, namespace, namespace))
    return KubeApiError("%s. To grant it: %s" % (exc.message.rstrip("."), grant), status=exc.status,
                        reason=exc.reason, **exc.details)


def finder_for(kube: Any, params: Dict[str, Any]) -> OffenderFinder:
    """An OffenderFinder from a module's READ_ARG_SPEC options."""
    signatures = params.get("log_signatures")
    if signatures is None:
        signatures = DEFAULT_LOG_SIGNATURES
    return OffenderFinder(kube, params["namespaces"], params["log_tail_lines"],
                          {str(k): str(v) for k, v in signatures.items()}, params["top"], params["metrics"],
                          params.get("young_pod_seconds", 300), bool(params.get("all_namespaces")))


class OffenderFinder:
    """One triage read of the cluster; collects what it could not read in ``degraded``."""

    def __init__(self, kube: Any, namespaces: List[str], log_tail_lines: int, signatures: Dict[str, str],
                 top: int, metrics: bool, young_pod_seconds: int = 300, all_namespaces: bool = False) -> None:
        if log_tail_lines < 0 or top < 0 or young_pod_seconds < 0:
            raise StormError("log_tail_lines, top and young_pod_seconds must be 0 or more (got %s, %s and %s)" % (
                log_tail_lines, top, young_pod_seconds))
        if not namespaces and not all_namespaces:
            raise StormError(NO_NAMESPACES)
        self.all_namespaces = all_namespaces
        self.young_pod_seconds = young_pod_seconds
        self.kube = kube
        self.namespaces = sorted(set(namespaces))
        self.log_tail_lines = log_tail_lines
        self.signatures = compile_signatures(signatures)
        self.top = top
        self.metrics = metrics
        self.degraded: List[str] = []
        self.metrics_absent = False

    def _degrade(self, what: str, exc: KubeApiError, namespace: Optional[str] = None) -> None:
        self.degraded.append("%s: %s" % (what, forbidden_in(namespace, exc).message if namespace else exc.message))

    def list_pods(self) -> List[Dict[str, Any]]:
        """Pods must be readable: without them there is no answer, so this raises.

        One paginated list per watched namespace; one cluster-wide list only with ``all_namespaces``.
        """
        query = {"fieldSelector": LIVE_PODS_SELECTOR}
        pods: List[Dict[str, Any]] = []
        for namespace in [None] if self.all_namespaces else self.namespaces:
            try:
                pods.extend(list_items(self.kube, path_for("v1", "pods", namespace), query))
            except KubeApiError as exc:
                if exc.status == 403:
                    raise forbidden_in(namespace, exc) from exc
                raise
        return pods

    def replicasets_of(self, pods: List[Dict[str, Any]]) -> Dict[Tuple[str, str], Optional[Dict[str, Any]]]:
        wanted = set()
        for pod in pods:
            owner = controller_of(pod)
            if owner and owner[0] == "ReplicaSet":
                wanted.add((pod_key(pod)[0], owner[1]))
        found: Dict[Tuple[str, str], Optional[Dict[str, Any]]] = {}
        for namespace in sorted({ns for ns, _replicaset in wanted}):
            try:
                items = self.kube.get(path_for("apps/v1", "replicasets", namespace)).get("items") or []
            except KubeApiError as exc:
                self._degrade("replicasets in %s (owners guessed from pod-template-hash)" % namespace, exc, namespace)
                continue
            for replicaset in items:
                key = (namespace, str((replicaset.get("metadata") or {}).get("name", "")))
                if key in wanted:
                    found[key] = replicaset
        return found

    def _list_optional(self, what: str, namespace: str, path: str, absent_ok: bool) -> List[Dict[str, Any]]:
        try:
            return list(self.kube.get(path).get("items") or [])
        except KubeApiError as exc:
            if exc.status == 404 and absent_ok:
                return []  # the kind is not served here (no KEDA, no metrics-server)
            self._degrade("%s in %s" % (what, namespace), exc, namespace)
            return []

    def autoscalers(self, namespace: str) -> Tuple[List[Dict[str, Any]], List[Dict[str, Any]]]:
        hpas = self._list_optional(
            "HPAs", namespace, path_for("autoscaling/v2", "horizontalpodautoscalers", namespace), False)
        scaled = self._list_optional(
            "KEDA ScaledObjects", namespace, path_for("keda.sh/v1alpha1", "scaledobjects", namespace), True)
        return hpas, scaled

    def cpu(self, namespace: str) -> Optional[Dict[str, float]]:
        if self.metrics_absent:
            return None
        path = path_for("metrics.k8s.io/v1beta1", "pods", namespace)
        try:
            return pod_cpu(self.kube.get(path).get("items") or [])
        except KubeApiError as exc:
            if exc.status == 404:
                self.metrics_absent = True
                self.degraded.append("pod CPU: the metrics.k8s.io API is not served here (no metrics-server)")
            else:
                self._degrade("pod CPU in %s" % namespace, exc, namespace)
            return None

    def read_logs(self, item: Dict[str, Any], pods_by_name: Dict[Tuple[str, str], Dict[str, Any]]) -> None:
        busiest = sorted(item["pod_connections"].items(), key=lambda kv: (-kv[1], kv[0]))
        names = [name for name, _count in busiest] + [n for n in item["pod_names"] if n not in item["pod_connections"]]
        counts = dict.fromkeys(self.signatures, 0)
        read: List[str] = []
        for pod_name in names[:LOG_PODS_PER_WORKLOAD]:
            pod = pods_by_name.get((item["namespace"], pod_name)) or {}
            containers = [c.get("name") for c in (pod.get("spec") or {}).get("containers") or []]
            restarted = {s.get("name") for s in (pod.get("status") or {}).get("containerStatuses") or []
                         if int(s.get("restartCount") or 0) > 0}
            app_containers = [c for c in containers if c and c not in SIDECAR_CONTAINERS] or [None]
            for container in app_containers:
                label = pod_name if container is None or len(containers) == 1 else "%s/%s" % (pod_name, container)
                # a restarted container's last lines before the crash are in its previous log
                for previous in ([False, True] if container in restarted else [False]):
                    text = self._log(item["namespace"], pod_name, container if len(containers) > 1 else None,
                                     previous)
                    if text is None:
                        continue
                    for name, count in count_signatures(text, self.signatures).items():
                        counts[name] += count
                    read.append(label + (" (previous)" if previous else ""))
        item["log_signatures"] = counts
        item["logs_read"] = read

    def _log(self, namespace: str, pod: str, container: Optional[str], previous: bool) -> Optional[str]:
        path = path_for("v1", "pods", namespace, pod, "log")
        query = {"tailLines": self.log_tail_lines, "container": container, "previous": "true" if previous else None}
        try:
            return str(self.kube.text(path, query))
        except KubeApiError as exc:
            if previous and exc.status in (400, 404):
                return None  # no previous container instance to read
            self._degrade("%slogs of %s/%s" % ("previous " if previous else "", namespace, pod), exc)
            return None

    def read_cluster(self) -> Cluster:
        """The pods and their replica sets: all of the read that needs no client addresses."""
        pods = self.list_pods()
        return pods, self.replicasets_of(pods)

    def _namespace_state(self, namespace: str) -> NamespaceState:
        hpas, scaled = self.autoscalers(namespace)
        return hpas, scaled, self.cpu(namespace) if self.metrics else None

    def find(self, sources: List[Dict[str, Any]], cluster: Optional[Cluster] = None) -> Dict[str, Any]:
        pods, replicasets = cluster if cluster is not None else self.read_cluster()
        workloads, unattributed = attribute(sources, pods, replicasets, include_idle=not sources,
                                            young_pod_seconds=self.young_pod_seconds,
                                            watched=None if self.all_namespaces else self.namespaces)
        namespaces = sorted({item["namespace"] for item in workloads.values()})
        # The reads per namespace and per workload are independent: side by side, an API server
        # a few milliseconds away costs the slowest read, not the sum.
        with ThreadPoolExecutor(max_workers=PARALLEL_READS) as pool:
            states = dict(zip(namespaces, pool.map(self._namespace_state, namespaces)))
            for item in workloads.values():
                hpas, scaled, usage = states[item["namespace"]]
                item["hpa"] = hpa_state(item["kind"], item["name"], hpas, scaled)
                if usage is not None:
                    item["cpu_millicores"] = sum(usage.get(pod, 0.0) for pod in item["pod_names"])
            ranked = rank(workloads.values())
            if self.log_tail_lines > 0 and self.signatures:
                pods_by_name = {pod_key(pod): pod for pod in pods}
                # the workloads that open the most connections are read too: a churning pool holds few
                churning = sorted(ranked, key=lambda w: -(w.get("opened") or 0))[: self.top]
                read = ranked[: self.top] + [w for w in churning if w.get("opened") and w not in ranked[: self.top]]
                list(pool.map(lambda item: self.read_logs(item, pods_by_name), read))
                ranked = rank(ranked)
        total = sum(int(s.get("connections") or 0) for s in sources)
        return {
            "workloads": [shape(item, total) for item in ranked],
            "unattributed_connections": sorted(unattributed, key=lambda u: (-u["connections"], u["ip"])),
            "total_connections": total,
            "pods_scanned": len(pods),
            # read side by side: namespaces may each find metrics.k8s.io missing, and the order varies
            "degraded": sorted(set(self.degraded)),
        }
