"""The fleet as the node agent of a real control plane: kubelet's part, for pods that are Redis clients.

The real Deployment, ReplicaSet, StatefulSet and HPA controllers own the workloads; there is no
scheduler, so the agent binds each pending pod to its Node (pods/binding), runs it as the fleet's
client on a pod IP of its own in 127.0.0.0/8, reports it through pods/status, and finishes a pod the
controllers delete: it stops the client, then confirms with a delete of grace 0, as kubelet does. Its
kubelet endpoints (TLS, on loopback) serve pod logs to the apiserver and /metrics/resource to
metrics-server. The KEDA stand-in scales through the API, as KEDA's operator would.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from collections import deque
from typing import Any, Optional

from aiohttp import web

from stormctl.sandbox.fleet.controller import (
    NODE,
    Controller,
    _key,
)
from stormctl.sandbox.fleet.kube import Kube, KubeError
from stormctl.sandbox.fleet.metrics import FleetMetrics
from stormctl.sandbox.fleet.pods import PodRuntime, RedisTarget, utcnow
from stormctl.sandbox.scenario import World

log = logging.getLogger("fleet")

NODE_IP = "127.0.0.1"
NODE_CAPACITY = {"cpu": "64", "memory": "256Gi", "pods": "1000", "ephemeral-storage": "100Gi"}
LOG_LINES_KEPT = 2000
MEMORY_BASE_MI = 180


class NodeAgent(Controller):
    """Binds, runs, reports and finishes the pods of one Node; the real controllers do the rest but KEDA's."""

    scales_hpas = False  # the real HPA controller does, on metrics-server's measure

    def __init__(self, kube: Kube, world: World, redis: RedisTarget, metrics: FleetMetrics,
                 kubelet_port: int) -> None:
        super().__init__(kube, world, redis, metrics=metrics)
        self.kubelet_port = kubelet_port
        self.logs: dict[str, deque[str]] = {}
        self.cpu_seconds: dict[str, float] = {}
        self.started_wall: dict[str, float] = {}
        self.node_cpu_seconds = 0.0
        self.finishing: set[str] = set()

    # ---- the Node ---------------------------------------------------------------------------
    def node(self) -> dict[str, Any]:
        now = utcnow()
        return {
            "apiVersion": "v1", "kind": "Node",
            "metadata": {"name": NODE, "labels": {"kubernetes.io/hostname": NODE, "kubernetes.io/os": "linux",
                                                  "node.kubernetes.io/instance-type": "sandbox"}},
            "spec": {},
            "status": {
                "capacity": dict(NODE_CAPACITY), "allocatable": dict(NODE_CAPACITY),
                # no Hostname address: the apiserver would resolve the node's name through DNS to reach it
                "addresses": [{"type": "InternalIP", "address": NODE_IP}],
                "daemonEndpoints": {"kubeletEndpoint": {"Port": self.kubelet_port}},
                "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady",
                                "message": "the sandbox's node agent is posting ready status",
                                "lastHeartbeatTime": now, "lastTransitionTime": now}],
                "nodeInfo": {"kubeletVersion": "sandbox-node-agent", "kubeProxyVersion": "", "osImage": "sandbox",
                             "operatingSystem": "linux", "architecture": "amd64", "containerRuntimeVersion":
                             "sandbox://1", "kernelVersion": "", "machineID": "", "systemUUID": "", "bootID": ""},
            },
        }

    async def register(self) -> None:
        """Create the Node, or take over the one a previous agent left, with this agent's kubelet port."""
        node = self.node()
        try:
            await self.kube.create("v1", "nodes", None, node)
        except KubeError as exc:
            if exc.status != 409:
                raise
        await self.kube.patch("v1", "nodes", None, NODE, {"status": node["status"]}, sub="status")

    # ---- one cycle (Controller.cycle_once: read, configure, reconcile, report, autoscale) -------------
    def owner(self, pod: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        """The workload behind a pod (its ReplicaSet's Deployment, or its StatefulSet) and that workload's object."""
        namespace = pod["metadata"]["namespace"]
        ref: dict[str, Any] = next((r for r in pod["metadata"].get("ownerReferences") or [] if r.get("controller")), {})
        kind, name = ref.get("kind"), ref.get("name", pod["metadata"]["name"])
        if kind == "ReplicaSet":
            rs = next((r for r in self.listing("replicasets") if _key(r) == "%s/%s" % (namespace, name)), None)
            deploy_ref = next((r for r in ((rs or {}).get("metadata") or {}).get("ownerReferences") or []
                               if r.get("controller") and r.get("kind") == "Deployment"), None)
            if deploy_ref is not None:
                name = deploy_ref["name"]
                deploy = next((d for d in self.listing("deployments") if _key(d) == "%s/%s" % (namespace, name)), {})
                return "%s/%s" % (namespace, name), deploy
            return "%s/%s" % (namespace, name), rs or {}
        if kind == "StatefulSet":
            sts = next((s for s in self.listing("statefulsets") if _key(s) == "%s/%s" % (namespace, name)), {})
            return "%s/%s" % (namespace, name), sts
        return "%s/%s" % (namespace, name), {}

    async def reconcile(self) -> None:
        live: set[str] = set()
        used = {p.ip for p in self.pods.values()}
        jobs = []
        for pod in self.listing("pods"):
            meta, spec = pod["metadata"], pod.get("spec") or {}
            node = spec.get("nodeName")
            if node not in (None, "", NODE):
                continue
            key = _key(pod)
            if meta.get("deletionTimestamp"):
                if key not in self.finishing:
                    self.finishing.add(key)
                    jobs.append(self.finish(pod))
                continue
            live.add(key)
            if not node:
                jobs.append(self.bind(pod))
                continue
            if key not in self.pods:
                owner_key, owner = self.owner(pod)
                template = ((owner.get("spec") or {}).get("template")) or {"spec": spec}
                runtime = self.workload_for(meta["namespace"], owner_key.split("/", 1)[1], template)
                ip = (pod.get("status") or {}).get("podIP") or self._pod_ip(owner_key, pod, used)
                used.add(ip)
                self._start_pod(runtime, pod, ip, owner_key)
                self.logs.setdefault(key, deque(maxlen=LOG_LINES_KEPT))
                self.started_wall[key] = time.time()
                jobs.append(self.event(pod, "Normal", "Started", "Started container %s" % self.container(pod),
                                       "kubelet"))
        for key in [k for k in self.pods if k not in live]:
            self._forget(key)
        self.finishing &= {_key(p) for p in self.listing("pods")}
        if jobs:
            await asyncio.gather(*jobs)

    @staticmethod
    def container(pod: dict[str, Any]) -> str:
        containers = (pod.get("spec") or {}).get("containers") or [{}]
        return str(containers[0].get("name", "app"))

    async def bind(self, pod: dict[str, Any]) -> None:
        meta = pod["metadata"]
        binding = {"apiVersion": "v1", "kind": "Binding", "metadata": {"name": meta["name"], "uid": meta.get("uid")},
                   "target": {"apiVersion": "v1", "kind": "Node", "name": NODE}}
        try:
            await self.kube.request("POST", "/api/v1/namespaces/%s/pods/%s/binding" % (meta["namespace"],
                                                                                       meta["name"]), binding)
        except KubeError as exc:
            if exc.status not in (404, 409):  # gone, or bound meanwhile
                log.warning("binding %s: %s", _key(pod), exc)
            return
        await self.event(pod, "Normal", "Scheduled", "Successfully assigned %s to %s" % (_key(pod), NODE),
                         "default-scheduler")

    async def finish(self, pod: dict[str, Any]) -> None:
        """The controllers deleted the pod: its client stops, then the agent confirms the deletion (grace 0)."""
        key = _key(pod)
        self._forget(key)
        await self.event(pod, "Normal", "Killing", "Stopping container %s" % self.container(pod), "kubelet")
        try:
            await self.kube.delete("v1", "pods", pod["metadata"]["namespace"], pod["metadata"]["name"],
                                   grace_seconds=0)
        except KubeError as exc:
            log.warning("finishing %s: %s", key, exc)
            self.finishing.discard(key)

    def _forget(self, key: str) -> None:
        super()._forget(key)
        self.logs.pop(key, None)
        self.cpu_seconds.pop(key, None)
        self.started_wall.pop(key, None)

    def pod_status(self, pod: PodRuntime) -> dict[str, Any]:
        status = super().pod_status(pod)
        status.update(hostIP=NODE_IP, hostIPs=[{"ip": NODE_IP}])
        name = self.container(pod.created)
        for container in status["containerStatuses"]:
            container["name"] = name
        return status

    # ---- kubelet's once-a-second bookkeeping ---------------------------------------------------
    def keep_logs(self) -> None:
        for key, pod in list(self.pods.items()):
            text = pod.take_logs()
            if text:
                self.logs.setdefault(key, deque(maxlen=LOG_LINES_KEPT)).extend(text.splitlines())

    def account_cpu(self, seconds: float, redis_cpu_m: int) -> None:
        """Integrate each pod's CPU (millicores over the last `seconds`) into the counters kubelet exposes."""
        for key, pod in list(self.pods.items()):
            cpu_m = self.cpu_m(pod, redis_cpu_m)
            self.cpu_seconds[key] = self.cpu_seconds.get(key, 0.0) + cpu_m / 1000.0 * seconds
            self.node_cpu_seconds += cpu_m / 1000.0 * seconds

    def cpu_m(self, pod: PodRuntime, redis_cpu_m: int) -> int:
        if not pod.workload.passive:
            return pod.cpu_m
        return redis_cpu_m if pod.ip == self.world.redis.pod_ip else 5

    # ---- the kubelet endpoints ------------------------------------------------------------------
    def container_logs(self, namespace: str, name: str, tail: Optional[int]) -> Optional[str]:
        lines = self.logs.get("%s/%s" % (namespace, name))
        if lines is None:
            return None
        kept = list(lines)
        if tail is not None:
            kept = kept[-tail:] if tail > 0 else []
        return "".join(line + "\n" for line in kept)

    def resource_metrics(self) -> str:
        """kubelet's /metrics/resource: cumulative CPU and working set per container and for the node."""
        stamp = int(time.time() * 1000)
        out = ["# TYPE container_cpu_usage_seconds_total counter"]
        memory, start = [], []
        node_memory = 0
        for key, pod in sorted(self.pods.items()):
            if not pod.ready:
                continue
            namespace, name = key.split("/", 1)
            labels = 'container="%s",namespace="%s",pod="%s"' % (self.container(pod.created), namespace, name)
            working_set = (MEMORY_BASE_MI + len(pod.conns) // 20) * 1024 * 1024
            node_memory += working_set
            out.append("container_cpu_usage_seconds_total{%s} %.6f %d" % (labels, self.cpu_seconds.get(key, 0.0)
                                                                            + 1e-6, stamp))
            memory.append("container_memory_working_set_bytes{%s} %d %d" % (labels, working_set, stamp))
            start.append("container_start_time_seconds{%s} %.3f" % (labels, self.started_wall.get(key, time.time())))
        out += ["# TYPE container_memory_working_set_bytes gauge", *memory,
                "# TYPE container_start_time_seconds gauge", *start,
                "# TYPE node_cpu_usage_seconds_total counter",
                "node_cpu_usage_seconds_total %.6f %d" % (self.node_cpu_seconds + 1e-6, stamp),
                "# TYPE node_memory_working_set_bytes gauge",
                "node_memory_working_set_bytes %d %d" % (node_memory + 512 * 1024 * 1024, stamp)]
        return "\n".join(out) + "\n"


def kubelet_app(agent: NodeAgent) -> web.Application:
    """The kubelet endpoints the apiserver (pod logs) and metrics-server (/metrics/resource) call."""

    async def container_logs(request: web.Request) -> web.Response:
        tail = request.query.get("tailLines")
        text = agent.container_logs(request.match_info["namespace"], request.match_info["pod"],
                                    int(tail) if tail and tail.lstrip("-").isdigit() else None)
        if text is None:
            return web.Response(status=404, text="pod %s/%s is not on node %s\n" % (
                request.match_info["namespace"], request.match_info["pod"], NODE))
        return web.Response(text=text, content_type="text/plain")

    async def resource(request: web.Request) -> web.Response:
        return web.Response(text=agent.resource_metrics(), content_type="text/plain")

    async def healthz(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    app = web.Application()
    app.add_routes([web.get("/containerLogs/{namespace}/{pod}/{container}", container_logs),
                    web.get("/metrics/resource", resource), web.get("/healthz", healthz)])
    return app


def serving_context(cert: str, key: str) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    return context

