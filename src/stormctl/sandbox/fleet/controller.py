"""The fleet's controllers: Deployment/StatefulSet -> pods realised as Redis clients, config, HPA and KEDA."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import random
import time
from typing import Any, Optional

from stormctl.sandbox.fleet import config as cfg
from stormctl.sandbox.fleet.autoscale import ScaleHistory, hpa_decision, keda_decision
from stormctl.sandbox.fleet.kube import Kube, KubeError
from stormctl.sandbox.fleet.metrics import FleetMetrics
from stormctl.sandbox.fleet.pods import AppConfig, PodRuntime, RedisTarget, WorkloadRuntime, utcnow
from stormctl.sandbox.scenario import BREAKER_KEY, RETRY_KEY, World

log = logging.getLogger("fleet")

HASH_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"
NODE = "sandbox-node-1"
NODE_IP = "192.168.49.2"
CLUSTER_KINDS = (
    ("apps/v1", "deployments"), ("apps/v1", "statefulsets"), ("apps/v1", "replicasets"), ("v1", "pods"),
)
CONFIG_KINDS = (
    ("v1", "configmaps"), ("v1", "services"), ("v1", "namespaces"), ("networking.k8s.io/v1", "ingresses"),
    ("traefik.io/v1alpha1", "middlewares"), ("networking.istio.io/v1", "destinationrules"),
    ("autoscaling/v2", "horizontalpodautoscalers"), ("keda.sh/v1alpha1", "scaledobjects"),
)
HPA_PERIOD = 2.0
CONTROLLER_PERIOD = 0.5


def _suffix(n: int) -> str:
    return "".join(random.choice(HASH_ALPHABET) for _ in range(n))


def template_hash(template: dict[str, Any]) -> str:
    digest = hashlib.sha256(repr(sorted(str(template).encode())).encode()).digest()
    return "".join(HASH_ALPHABET[b % len(HASH_ALPHABET)] for b in digest[:10])


def _key(obj: dict[str, Any]) -> str:
    meta = obj.get("metadata") or {}
    return "%s/%s" % (meta.get("namespace", ""), meta.get("name", ""))


def _owned_by(obj: dict[str, Any], owner: dict[str, Any]) -> bool:
    uid = (owner.get("metadata") or {}).get("uid")
    return any(ref.get("uid") == uid and ref.get("controller") for ref in (obj.get("metadata") or {}).get(
        "ownerReferences") or [])


class Controller:
    """Reconciles the cluster's desired state into pods with real Redis connections, like kubelet + controllers."""

    scales_hpas = True

    def __init__(self, kube: Kube, world: World, redis: RedisTarget, metrics: FleetMetrics) -> None:
        self.kube = kube
        self.world = world
        self.redis = redis
        self.metrics = metrics
        self.workloads: dict[str, WorkloadRuntime] = {}
        self.pods: dict[str, PodRuntime] = {}
        self.reported: dict[str, int] = {}
        self.objects: dict[str, list[dict[str, Any]]] = {}
        self.histories: dict[str, ScaleHistory] = {}
        self.queues: dict[str, int] = {}
        self.subnets: dict[str, int] = {wl.key: wl.subnet for wl in world.workloads}
        self.traffic_base = {wl.key: wl.traffic.rps for wl in world.workloads}
        for wl in world.workloads:
            if wl.autoscaler is not None and wl.autoscaler.kind == "ScaledObject":
                self.queues[wl.key] = wl.autoscaler.queue_length
        self.status_written: dict[str, tuple[float, Optional[int]]] = {}
        self.restarts_reported: dict[str, int] = {}
        self.last_hpa = 0.0
        self.cycle = 0

    # ---- reading the cluster ---------------------------------------------------------------
    async def refresh(self, kinds: tuple[tuple[str, str], ...]) -> None:
        results = await asyncio.gather(*(self.kube.items(v, p) for v, p in kinds), return_exceptions=True)
        for (_, plural), result in zip(kinds, results):
            if isinstance(result, BaseException):
                log.warning("listing %s failed: %s", plural, result)
                continue
            self.objects[plural] = result

    def listing(self, plural: str) -> list[dict[str, Any]]:
        return self.objects.get(plural, [])

    # ---- one control cycle ----------------------------------------------------------------------
    async def cycle_once(self) -> None:
        self.cycle += 1
        kinds = CLUSTER_KINDS + (CONFIG_KINDS if self.cycle % 2 == 1 else ())
        await self.refresh(kinds)
        self.apply_config()
        await self.reconcile()
        await self.push_pod_status()
        now = time.monotonic()
        if now - self.last_hpa >= HPA_PERIOD:
            self.last_hpa = now
            await self.autoscale()

    async def run(self) -> None:
        while True:
            started = time.monotonic()
            try:
                await self.cycle_once()
            except (KubeError, OSError, asyncio.TimeoutError) as exc:
                log.warning("control cycle failed: %s", exc)
            except Exception:
                log.exception("control cycle crashed")
            await asyncio.sleep(max(0.05, CONTROLLER_PERIOD - (time.monotonic() - started)))

    # ---- config ---------------------------------------------------------------------------------
    def workload_for(self, namespace: str, name: str, template: dict[str, Any]) -> Optional[WorkloadRuntime]:
        env = cfg.container_env(template)
        if "REDIS_POOL_MAX" not in env:
            return None
        key = "%s/%s" % (namespace, name)
        runtime = self.workloads.get(key)
        if runtime is None:
            runtime = WorkloadRuntime(namespace, name, AppConfig(client_name=env.get("REDIS_CLIENT_NAME") or name),
                                      self.metrics, self.redis)
            runtime.set_rps(self.traffic_base.get(key, 0.0))
            self.workloads[key] = runtime
        return runtime

    def apply_config(self) -> None:
        configmaps = {_key(cm): cm for cm in self.listing("configmaps")}
        namespaces = {(ns.get("metadata") or {}).get("name"): ns for ns in self.listing("namespaces")}
        mesh_cap = cfg.mesh_max_connections(self.listing("destinationrules"), self.world.redis.host)
        limits = self.ingress_limits()
        for deploy in self.listing("deployments") + self.listing("statefulsets"):
            meta = deploy.get("metadata") or {}
            template = (deploy.get("spec") or {}).get("template") or {}
            runtime = self.workload_for(meta.get("namespace", ""), meta.get("name", ""), template)
            if runtime is None:
                continue
            env = cfg.container_env(template)
            known = self.world.workloads_by_key.get(runtime.key)
            c = runtime.config
            c.client_name = env.get("REDIS_CLIENT_NAME") or runtime.name
            c.pool_max = cfg.as_int(env.get("REDIS_POOL_MAX"), 8)
            c.pool_min = cfg.as_int(env.get("REDIS_POOL_MIN"), 0)
            c.retry_attempts = cfg.as_int(env.get("REDIS_RETRY_ATTEMPTS"), 3)
            c.conn_max_age = cfg.as_int(env.get("REDIS_CONN_MAX_AGE_MS"), 0) / 1000.0
            c.cpu_request_m = cfg.cpu_request(template)
            if known is not None:
                c.hold = known.traffic.hold_ms / 1000.0
                c.timeout = known.traffic.timeout_ms / 1000.0
                c.cpu_m_per_rps = known.traffic.cpu_m_per_rps
                c.lib_name, c.lib_version = known.lib_name, known.lib_version
            flags = cfg.read_flags(configmaps.get("%s/%s" % (runtime.namespace, env.get("FLAGS_CONFIGMAP", ""))))
            c.aggressive_retries = flags.get(RETRY_KEY, False)
            c.breaker_open = flags.get(BREAKER_KEY, False)
            labels = ((namespaces.get(runtime.namespace) or {}).get("metadata") or {}).get("labels") or {}
            c.mesh_max_connections = mesh_cap if labels.get("istio-injection") == "enabled" else None
            limit = limits.get(runtime.key)
            if limit is None:
                runtime.ingress = None
            elif runtime.ingress is None or not runtime.ingress.same_policy(limit):
                runtime.ingress = limit

    def ingress_limits(self) -> dict[str, Any]:
        """Workload key -> the tightest IngressLimit of the ingresses routing to its Service."""
        middlewares = {"%s-%s" % ((m.get("metadata") or {}).get("namespace"), (m.get("metadata") or {}).get("name")): m
                       for m in self.listing("middlewares")}
        services = {_key(s): s for s in self.listing("services")}
        templates = {}
        for deploy in self.listing("deployments"):
            labels = ((((deploy.get("spec") or {}).get("template") or {}).get("metadata") or {}).get("labels") or {})
            templates[_key(deploy)] = labels
        result: dict[str, Any] = {}
        for ingress in self.listing("ingresses"):
            limit = cfg.ingress_limit(ingress, middlewares)
            if limit is None:
                continue
            namespace = (ingress.get("metadata") or {}).get("namespace", "")
            for backend in cfg.ingress_backends(ingress):
                service = services.get("%s/%s" % (namespace, backend))
                selector = ((service or {}).get("spec") or {}).get("selector") or {}
                for key, labels in templates.items():
                    if key.startswith(namespace + "/") and cfg.selector_matches(selector, labels):
                        current = result.get(key)
                        if current is None or (limit.rps or 1e9) < (current.rps or 1e9):
                            result[key] = limit
        return result

    # ---- pods ---------------------------------------------------------------------------------
    def _allocate_ip(self, owner_key: str, used: set[str]) -> str:
        subnet = self.subnets.get(owner_key)
        if subnet is None:
            subnet = max([100, *self.subnets.values()]) + 1
            self.subnets[owner_key] = subnet
        for host in range(1, 255):
            ip = "127.20.%d.%d" % (subnet, host)
            if ip not in used:
                return ip
        raise RuntimeError("no free pod IP left in 127.20.%d.0/24" % subnet)

    async def reconcile(self) -> None:
        pods_by_owner: dict[str, list[dict[str, Any]]] = {}
        live_pods = {}
        for pod in self.listing("pods"):
            live_pods[_key(pod)] = pod
            for ref in (pod.get("metadata") or {}).get("ownerReferences") or []:
                if ref.get("controller"):
                    pods_by_owner.setdefault(ref.get("uid", ""), []).append(pod)
        # Pods deleted by someone else stop at once.
        for key in [k for k in self.pods if k not in live_pods]:
            self._forget(key)
        tasks = []
        replicasets = self.listing("replicasets")
        for deploy in self.listing("deployments"):
            tasks.append(self.reconcile_deployment(deploy, replicasets, pods_by_owner))
        for sts in self.listing("statefulsets"):
            tasks.append(self.reconcile_statefulset(sts, pods_by_owner))
        await asyncio.gather(*tasks)

    def _forget(self, key: str) -> None:
        pod = self.pods.pop(key, None)
        self.reported.pop(key, None)
        self.restarts_reported.pop(key, None)
        if pod is not None:
            pod.stop()
            pod.workload.pods.pop(pod.name, None)

    async def reconcile_deployment(self, deploy: dict[str, Any], replicasets: list[dict[str, Any]],
                                   pods_by_owner: dict[str, list[dict[str, Any]]]) -> None:
        meta = deploy["metadata"]
        spec = deploy.get("spec") or {}
        desired = int(spec.get("replicas", 1))
        owned = [rs for rs in replicasets if _owned_by(rs, deploy)]
        if not owned:
            rs = await self.create_replicaset(deploy)
            if rs is None:
                return
            owned = [rs]
        rs = owned[0]
        if int((rs.get("spec") or {}).get("replicas", 0)) != desired:
            await self.kube.patch("apps/v1", "replicasets", meta["namespace"], rs["metadata"]["name"],
                                  {"spec": {"replicas": desired}})
        pods = pods_by_owner.get(rs["metadata"]["uid"], [])
        template = spec.get("template") or {}
        runtime = self.workload_for(meta["namespace"], meta["name"], template)
        await self.converge(_key(deploy), rs, "ReplicaSet", pods, desired, template, runtime)
        await self.write_status(deploy, rs, "deployments")

    async def create_replicaset(self, deploy: dict[str, Any]) -> Optional[dict[str, Any]]:
        meta = deploy["metadata"]
        spec = deploy.get("spec") or {}
        template = spec.get("template") or {}
        pth = template_hash(template)
        labels = dict((template.get("metadata") or {}).get("labels") or {}, **{"pod-template-hash": pth})
        selector = dict((spec.get("selector") or {}).get("matchLabels") or {}, **{"pod-template-hash": pth})
        body = {
            "apiVersion": "apps/v1", "kind": "ReplicaSet",
            "metadata": {
                "name": "%s-%s" % (meta["name"], pth), "namespace": meta["namespace"], "labels": labels,
                "annotations": {"deployment.kubernetes.io/desired-replicas": str(spec.get("replicas", 1)),
                                "deployment.kubernetes.io/revision": "1"},
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment", "name": meta["name"],
                                     "uid": meta["uid"], "controller": True, "blockOwnerDeletion": True}],
            },
            "spec": {"replicas": spec.get("replicas", 1), "selector": {"matchLabels": selector},
                     "template": {"metadata": {"labels": labels}, "spec": template.get("spec") or {}}},
        }
        try:
            result: dict[str, Any] = await self.kube.create("apps/v1", "replicasets", meta["namespace"], body)
            return result
        except KubeError as exc:
            if exc.status == 409:
                return None
            raise

    async def reconcile_statefulset(self, sts: dict[str, Any], pods_by_owner: dict[str, list[dict[str, Any]]]) -> None:
        meta = sts["metadata"]
        spec = sts.get("spec") or {}
        desired = int(spec.get("replicas", 1))
        template = spec.get("template") or {}
        pods = pods_by_owner.get(meta["uid"], [])
        runtime = self.workload_for(meta["namespace"], meta["name"], template)
        await self.converge(_key(sts), sts, "StatefulSet", pods, desired, template, runtime)
        await self.write_status(sts, None, "statefulsets")

    async def converge(self, owner_key: str, owner: dict[str, Any], owner_kind: str, pods: list[dict[str, Any]],
                       desired: int, template: dict[str, Any], runtime: Optional[WorkloadRuntime]) -> None:
        pods = [p for p in pods if not (p.get("metadata") or {}).get("deletionTimestamp")]
        used = {str((p.get("status") or {}).get("podIP")) for p in pods}
        # Adopt pods the fleet does not run yet (after a restart of the fleet, or pods seeded by hand).
        for pod in pods:
            key = _key(pod)
            if key not in self.pods:
                ip = (pod.get("status") or {}).get("podIP") or self._pod_ip(owner_key, pod, used)
                used.add(ip)
                self._start_pod(runtime, pod, ip, owner_key)
        if len(pods) > desired:
            def rank(p: dict[str, Any]) -> tuple[int, str]:
                running = self.pods.get(_key(p))
                return (1 if running is not None and running.ready else 0,
                        (p.get("metadata") or {}).get("creationTimestamp", ""))
            victims = sorted(pods, key=rank)
            if owner_kind == "StatefulSet":
                victims = sorted(pods, key=lambda p: -self._ordinal(p))
            else:
                victims = sorted(victims, key=lambda p: (rank(p)[0], "~" + rank(p)[1]))
            for pod in victims[:len(pods) - desired]:
                self._forget(_key(pod))
            await asyncio.gather(*(self.kube.delete("v1", "pods", p["metadata"]["namespace"], p["metadata"]["name"])
                                   for p in victims[:len(pods) - desired]))
        elif len(pods) < desired:
            ordinals = {self._ordinal(p) for p in pods}
            creates = []
            for i in range(desired - len(pods)):
                if owner_kind == "StatefulSet":
                    ordinal = min(o for o in range(desired + len(pods) + 1) if o not in ordinals)
                    ordinals.add(ordinal)
                    name = "%s-%d" % (owner["metadata"]["name"], ordinal)
                else:
                    name = "%s-%s" % (owner["metadata"]["name"], _suffix(5))
                ip = self._pod_ip(owner_key, {"metadata": {"name": name}}, used)
                used.add(ip)
                creates.append(self.create_pod(owner, owner_kind, name, template, ip, runtime, owner_key))
                del i
            await asyncio.gather(*creates)

    def _ordinal(self, pod: dict[str, Any]) -> int:
        name = str((pod.get("metadata") or {}).get("name", ""))
        tail = name.rsplit("-", 1)[-1]
        return int(tail) if tail.isdigit() else -1

    def _pod_ip(self, owner_key: str, pod: dict[str, Any], used: set[str]) -> str:
        if owner_key == "%s/%s" % (self.world.redis.namespace, self.world.redis.name):
            ordinal = self._ordinal(pod)
            return self.world.redis.pod_ip if ordinal <= 0 else "127.0.1.%d" % ordinal
        return self._allocate_ip(owner_key, used)

    async def create_pod(self, owner: dict[str, Any], owner_kind: str, name: str, template: dict[str, Any], ip: str,
                         runtime: Optional[WorkloadRuntime], owner_key: str) -> None:
        meta = owner["metadata"]
        labels = dict((template.get("metadata") or {}).get("labels") or {})
        if owner_kind == "ReplicaSet":
            labels.update({k: v for k, v in (meta.get("labels") or {}).items() if k == "pod-template-hash"})
        else:
            labels.update({"statefulset.kubernetes.io/pod-name": name, "apps.kubernetes.io/pod-index":
                           name.rsplit("-", 1)[-1]})
        spec = dict(template.get("spec") or {})
        spec.update(nodeName=NODE, restartPolicy="Always", serviceAccountName="default",
                    schedulerName="default-scheduler")
        body = {
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": meta["namespace"], "labels": labels,
                         "ownerReferences": [{"apiVersion": "apps/v1", "kind": owner_kind, "name": meta["name"],
                                              "uid": meta["uid"], "controller": True, "blockOwnerDeletion": True}]},
            "spec": spec,
        }
        try:
            created = await self.kube.create("v1", "pods", meta["namespace"], body)
        except KubeError as exc:
            log.warning("creating pod %s/%s failed: %s", meta["namespace"], name, exc)
            return
        created.setdefault("status", {})["podIP"] = ip
        self._start_pod(runtime, created, ip, owner_key)

    def _start_pod(self, runtime: Optional[WorkloadRuntime], pod: dict[str, Any], ip: str, owner_key: str) -> None:
        meta = pod["metadata"]
        key = _key(pod)
        restarts = 0
        for status in (pod.get("status") or {}).get("containerStatuses") or []:
            restarts = int(status.get("restartCount", 0))
        workload = runtime or self._passive_workload(owner_key)
        running = PodRuntime(workload, meta["name"], ip, restarts)
        running.image = str(((pod.get("spec") or {}).get("containers") or [{}])[0].get("image", ""))
        running.created = pod
        self.pods[key] = running
        workload.pods[meta["name"]] = running
        self.reported[key] = -1

    def _passive_workload(self, owner_key: str) -> WorkloadRuntime:
        """Pods that are not Redis clients (Redis itself, say) still get a status; they never connect."""
        key = "passive:" + owner_key
        runtime = self.workloads.get(key)
        if runtime is None:
            namespace, name = owner_key.split("/", 1)
            runtime = WorkloadRuntime(namespace, name, AppConfig(client_name=name), self.metrics, self.redis)
            runtime.passive = True
            self.workloads[key] = runtime
        return runtime

    def pod_status(self, pod: PodRuntime) -> dict[str, Any]:
        ready = "True" if pod.ready else "False"
        now = utcnow()
        start = (pod.created.get("status") or {}).get("startTime") or pod.started_at
        return {
            "phase": "Running", "podIP": pod.ip, "podIPs": [{"ip": pod.ip}], "hostIP": NODE_IP,
            "hostIPs": [{"ip": NODE_IP}], "startTime": start, "qosClass": "Burstable",
            "conditions": [
                {"type": "PodScheduled", "status": "True", "lastTransitionTime": start},
                {"type": "Initialized", "status": "True", "lastTransitionTime": start},
                {"type": "ContainersReady", "status": ready, "lastTransitionTime": now},
                {"type": "Ready", "status": ready, "lastTransitionTime": now},
            ],
            "containerStatuses": [pod.container_status(pod.image)],
        }

    async def push_pod_status(self) -> None:
        changed = [(key, pod) for key, pod in self.pods.items() if self.reported.get(key) != pod.status_version]
        for key, pod in changed:
            if pod.state == "backoff" and self.restarts_reported.get(key, 0) < pod.restart_count:
                self.restarts_reported[key] = pod.restart_count
                pod_obj = {"apiVersion": "v1", "kind": "Pod", "metadata": {
                    "name": pod.name, "namespace": pod.workload.namespace, "uid": pod.created.get(
                        "metadata", {}).get("uid", "")}}
                await self.event(pod_obj, "Warning", "BackOff", "Back-off restarting failed container app in pod "
                                 "%s_%s" % (pod.name, pod.workload.namespace), "kubelet")
        async def push(key: str, pod: PodRuntime) -> None:
            namespace = pod.workload.namespace
            try:
                await self.kube.patch("v1", "pods", namespace, pod.name, {"status": self.pod_status(pod)}, sub="status")
                self.reported[key] = pod.status_version
            except KubeError as exc:
                if exc.status == 404:
                    self._forget(key)
                else:
                    log.warning("pod status %s: %s", key, exc)
        await asyncio.gather(*(push(k, p) for k, p in changed))

    async def write_status(self, owner: dict[str, Any], rs: Optional[dict[str, Any]], plural: str) -> None:
        meta = owner["metadata"]
        pods = [p for p in self.pods.values() if p.workload.namespace == meta["namespace"]
                and (p.workload.name == meta["name"])]
        desired = int((owner.get("spec") or {}).get("replicas", 1))
        ready = sum(1 for p in pods if p.ready)
        status: dict[str, Any] = {"observedGeneration": meta.get("generation", 1), "replicas": len(pods),
                                  "readyReplicas": ready, "availableReplicas": ready, "updatedReplicas": len(pods)}
        if plural == "deployments":
            available = ready >= max(desired - desired // 4, 0)
            status["unavailableReplicas"] = max(desired - ready, 0)
            status["conditions"] = [{"type": "Available", "status": "True" if available else "False",
                                     "reason": "MinimumReplicas%savailable" % ("A" if available else "Una"),
                                     "message": "Deployment %s minimum availability." % (
                                         "has" if available else "does not have")},
                                    {"type": "Progressing", "status": "True", "reason": "NewReplicaSetAvailable",
                                     "message": "ReplicaSet has successfully progressed."}]
        else:
            status["currentReplicas"] = len(pods)
            status["currentRevision"] = status["updateRevision"] = "%s-%s" % (meta["name"], "7d9f8c6b5")
        old = owner.get("status") or {}
        old_conditions = [c.get("status") for c in old.get("conditions") or []]
        if any(old.get(k) != v for k, v in status.items() if k != "conditions") or \
                old_conditions != [c["status"] for c in status.get("conditions", [])]:
            try:
                await self.kube.patch("apps/v1", plural, meta["namespace"], meta["name"], {"status": status},
                                      sub="status")
            except KubeError as exc:
                log.warning("%s status %s: %s", plural, meta["name"], exc)
        if rs is not None:
            rs_status = {"observedGeneration": rs["metadata"].get("generation", 1), "replicas": len(pods),
                         "fullyLabeledReplicas": len(pods), "readyReplicas": ready, "availableReplicas": ready}
            rs_old = rs.get("status") or {}
            if any(rs_old.get(k) != v for k, v in rs_status.items()):
                try:
                    await self.kube.patch("apps/v1", "replicasets", meta["namespace"], rs["metadata"]["name"],
                                          {"status": rs_status}, sub="status")
                except KubeError as exc:
                    log.warning("replicaset status %s: %s", rs["metadata"]["name"], exc)

    # ---- autoscalers ----------------------------------------------------------------------------
    def _target(self, namespace: str, ref: dict[str, Any]) -> Optional[tuple[str, dict[str, Any]]]:
        kind = ref.get("kind", "Deployment")
        plural = "statefulsets" if kind == "StatefulSet" else "deployments"
        for obj in self.listing(plural):
            if _key(obj) == "%s/%s" % (namespace, ref.get("name")):
                return plural, obj
        return None

    async def autoscale(self) -> None:
        stamp = utcnow()
        for hpa in self.listing("horizontalpodautoscalers") if self.scales_hpas else []:
            try:
                await self.autoscale_hpa(hpa, stamp)
            except KubeError as exc:
                log.warning("hpa %s: %s", _key(hpa), exc)
        for so in self.listing("scaledobjects"):
            try:
                await self.autoscale_keda(so, stamp)
            except KubeError as exc:
                log.warning("scaledobject %s: %s", _key(so), exc)

    async def event(self, obj: dict[str, Any], kind: str, reason: str, message: str, component: str) -> None:
        """A core/v1 Event about ``obj``, as the controller or kubelet that acted would record it."""
        meta = obj["metadata"]
        stamp = utcnow()
        body = {
            "apiVersion": "v1", "kind": "Event",
            "metadata": {"name": "%s.%s" % (meta["name"], _suffix(16)), "namespace": meta["namespace"]},
            "involvedObject": {"apiVersion": obj.get("apiVersion", "v1"), "kind": obj.get("kind", "Pod"),
                               "name": meta["name"], "namespace": meta["namespace"], "uid": meta.get("uid", "")},
            "reason": reason, "message": message, "type": kind, "count": 1,
            "firstTimestamp": stamp, "lastTimestamp": stamp, "source": {"component": component},
            "reportingComponent": component,
        }
        try:
            await self.kube.create("v1", "events", meta["namespace"], body)
        except KubeError as exc:
            log.warning("event %s on %s: %s", reason, meta["name"], exc)

    async def _scale(self, plural: str, target: dict[str, Any], replicas: int) -> None:
        meta = target["metadata"]
        await self.kube.patch("apps/v1", plural, meta["namespace"], meta["name"], {"spec": {"replicas": replicas}},
                              sub="scale")
        target.setdefault("spec", {})["replicas"] = replicas

    async def autoscale_hpa(self, hpa: dict[str, Any], stamp: str) -> None:
        meta = hpa["metadata"]
        if (meta.get("labels") or {}).get("scaledobject.keda.sh/name"):
            return
        found = self._target(meta["namespace"], (hpa.get("spec") or {}).get("scaleTargetRef") or {})
        if found is None:
            return
        plural, target = found
        current = int((target.get("spec") or {}).get("replicas", 1))
        key = _key(target)
        pods = [p for p in self.pods.values() if "%s/%s" % (p.workload.namespace, p.workload.name) == key and p.ready]
        request = cfg.cpu_request((target.get("spec") or {}).get("template") or {})
        history = self.histories.setdefault("hpa:" + _key(hpa), ScaleHistory())
        decision = hpa_decision(hpa, current, [p.cpu_m for p in pods], request, history, stamp)
        if decision.desired != current and current != 0:
            await self._scale(plural, target, decision.desired)
            history.events.append((time.monotonic(), decision.desired - current))
            history.events = [(t, d) for t, d in history.events if time.monotonic() - t < 600]
            history.last_scale_time = stamp
            direction = "above" if decision.desired > current else "below"
            await self.event(hpa, "Normal", "SuccessfulRescale", "New size: %d; reason: cpu resource utilization "
                             "(percentage of request) %s target" % (decision.desired, direction),
                             "horizontal-pod-autoscaler")
        status: dict[str, Any] = {
            "observedGeneration": meta.get("generation", 1),
            "currentReplicas": current, "desiredReplicas": decision.desired,
            "conditions": decision.conditions,
        }
        if history.last_scale_time:
            status["lastScaleTime"] = history.last_scale_time
        if decision.utilization is not None:
            status["currentMetrics"] = [{"type": "Resource", "resource": {"name": "cpu", "current": {
                "averageUtilization": decision.utilization, "averageValue": "%dm" % (decision.average_m or 0)}}}]
        if self._status_worth_writing("hpa:" + _key(hpa), hpa, status, decision.utilization):
            await self.kube.patch("autoscaling/v2", "horizontalpodautoscalers", meta["namespace"], meta["name"],
                                  {"status": status}, sub="status")

    async def autoscale_keda(self, so: dict[str, Any], stamp: str) -> None:
        meta = so["metadata"]
        ref = dict((so.get("spec") or {}).get("scaleTargetRef") or {})
        found = self._target(meta["namespace"], ref)
        if found is None:
            return
        plural, target = found
        current = int((target.get("spec") or {}).get("replicas", 1))
        history = self.histories.setdefault("keda:" + _key(so), ScaleHistory())
        queue = self.queues.get(_key(target), 0)
        replicas, conditions, extra = keda_decision(so, current, queue, history, stamp)
        if replicas is not None:
            await self._scale(plural, target, replicas)
        status = {"scaleTargetKind": "apps/v1.Deployment",
                  "scaleTargetGVKR": {"group": "apps", "version": "v1", "kind": "Deployment", "resource": plural},
                  "originalReplicaCount": (so.get("status") or {}).get("originalReplicaCount", current),
                  "hpaName": "keda-hpa-%s" % meta["name"], "conditions": conditions,
                  "externalMetricNames": ["s0-rabbitmq-%s" % "queue"], **extra}
        if queue > 0:
            status["lastActiveTime"] = stamp
        if self._status_worth_writing("keda:" + _key(so), so, status, queue):
            await self.kube.patch("keda.sh/v1alpha1", "scaledobjects", meta["namespace"], meta["name"],
                                  {"status": status}, sub="status")

    def _status_worth_writing(self, key: str, obj: dict[str, Any], status: dict[str, Any], level: Optional[int]) \
            -> bool:
        """Write an autoscaler's status when something a reader cares about changed (or every 10 s), keeping
        each condition's lastTransitionTime from before unless its status flipped, as the controllers do."""
        old = obj.get("status") or {}
        before = {c.get("type"): c for c in old.get("conditions") or []}
        for condition in status.get("conditions") or []:
            previous = before.get(condition["type"])
            if previous is not None and previous.get("status") == condition["status"]:
                condition["lastTransitionTime"] = previous.get("lastTransitionTime", condition["lastTransitionTime"])
        def shape(s: dict[str, Any]) -> tuple[Any, ...]:
            return (s.get("currentReplicas"), s.get("desiredReplicas"), s.get("lastScaleTime"),
                    s.get("pausedReplicaCount"),
                    [(c.get("type"), c.get("status"), c.get("reason")) for c in s.get("conditions") or []])
        now = time.monotonic()
        last_time, last_level = self.status_written.get(key, (0.0, None))
        drifted = level is not None and (last_level is None or abs(level - last_level) >= 10)
        if shape(old) == shape(status) and not drifted and now - last_time < 10.0:
            return False
        self.status_written[key] = (now, level)
        return True

