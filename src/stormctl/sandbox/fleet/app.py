"""The fleet process: seeds the world, runs the controllers and the pods, serves /metrics, /status, /storm, /calm."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import time
from pathlib import Path
from typing import Any, Optional

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from stormctl.sandbox.fleet.config import read_flags
from stormctl.sandbox.fleet.controller import Controller
from stormctl.sandbox.fleet.kube import Kube, KubeError
from stormctl.sandbox.fleet.metrics import FleetMetrics
from stormctl.sandbox.fleet.nodeagent import NodeAgent, kubelet_app, serving_context
from stormctl.sandbox.fleet.pods import RedisTarget, WorkloadRuntime, utcnow
from stormctl.sandbox.fleet.redisconn import (
    ConnectFailure,
    ConnectionLost,
    RedisConnection,
    ReplyError,
    encode,
    open_connection,
)
from stormctl.sandbox.fleet.world import flag_data, manifests
from stormctl.sandbox.scenario import (
    BREAKER_KEY,
    RETRY_KEY,
    Scenario,
    ScenarioError,
    World,
    load_scenario,
    load_world,
    scenario_names,
)
from stormctl.sandbox.state import CONTROL_PLANE

log = logging.getLogger("fleet")

TICK = 0.1
ADMIN_NAME = "sandbox-network"


class Fleet:
    def __init__(self, state_dir: Path, world: World, redis: RedisTarget, kube: Kube, node_agent: bool = False) -> None:
        self.state_dir = state_dir
        self.world = world
        self.redis = redis
        self.kube = kube
        self.metrics = FleetMetrics()
        # On the real control plane the fleet is the node agent; on the emulator it runs the controllers too.
        self.agent: Optional[NodeAgent] = NodeAgent(kube, world, redis, self.metrics, 0) if node_agent else None
        self.controller: Controller = self.agent or Controller(kube, world, redis, metrics=self.metrics)
        self.scenario: Optional[Scenario] = None
        self.storm_started: Optional[str] = None
        self.storm_tasks: list[asyncio.Task[Any]] = []
        self.undo: dict[str, Any] = {}
        self.admin: Optional[RedisConnection] = None
        self.admin_lock = asyncio.Lock()
        self.tasks: list[asyncio.Task[Any]] = []
        self.rates: dict[str, dict[str, float]] = {}
        self.redis_cpu: Optional[tuple[float, float]] = None
        self.started = asyncio.Event()
        self.loop_lag = 0.0
        self.loop_lag_reported = 0.0
        self.ingress_providers = {"%s/%s" % (i["namespace"], i["workload"]): i["provider"]
                                  for i in world.shape()["ingresses"]}

    # ---- start-up ---------------------------------------------------------------------------------
    async def seed_world(self) -> None:
        try:
            await self.kube.get("v1", "namespaces", None, self.world.workloads[0].namespace)
            existing = await self.kube.items("apps/v1", "deployments", self.world.workloads[0].namespace)
            if any(d["metadata"]["name"] == self.world.workloads[0].name for d in existing):
                return
        except KubeError as exc:
            if exc.status != 404:
                raise
        await self.kube.seed(manifests(self.world))

    def write_world(self) -> None:
        path = self.state_dir / "world.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.world.shape(), indent=2) + "\n")
        os.replace(tmp, path)

    async def start(self) -> None:
        if self.agent is not None:
            await self.agent.register()  # the supervisor seeded the world through the API
        for attempt in range(0 if self.agent is not None else 50):
            try:
                await self.seed_world()
                break
            except (KubeError, OSError) as exc:
                if attempt == 49:
                    raise
                log.warning("seeding the world failed (%s); retrying", exc)
                await asyncio.sleep(0.2)
        self.write_world()
        await self.controller.cycle_once()
        loop = asyncio.get_running_loop()
        self.tasks = [loop.create_task(coro) for coro in (
            self.controller.run(), self.traffic_loop(), self.second_loop(), self.report_loop())]
        self.started.set()

    async def stop(self) -> None:
        for task in self.storm_tasks + self.tasks:
            task.cancel()
        for pod in list(self.controller.pods.values()):
            pod.stop()
        if self.admin is not None:
            self.admin.close()

    # ---- the pods' clock ------------------------------------------------------------------------
    async def traffic_loop(self) -> None:
        ticks = 0
        last = time.monotonic()
        while True:
            await asyncio.sleep(TICK)
            now = time.monotonic()
            dt, last = now - last, now
            self.loop_lag = max(self.loop_lag, dt - TICK)
            ticks += 1
            for pod in list(self.controller.pods.values()):
                pod.tick_state(now)
                if ticks % 5 == 0 and pod.ready:
                    pod.maintain(now)
            for wl in list(self.controller.workloads.values()):
                if wl.passive:
                    continue
                self.dispatch(wl, now, dt)

    def dispatch(self, wl: WorkloadRuntime, now: float, dt: float) -> None:
        pods = wl.ready_pods()
        limit = wl.ingress
        if limit is not None:
            limit.refill(now)
        wl.arrival_debt += wl.offered_rps(now) * dt
        count = int(wl.arrival_debt)
        wl.arrival_debt -= count
        if count <= 0:
            return
        wl.offered += count
        if not pods:
            for _ in range(count):
                wl.record(503, 0.001)
            return
        start = int(now * 1000) % len(pods)
        for i in range(count):
            if limit is not None and not limit.admit(wl.inflight):
                self.ingress_rejected(wl, limit.provider, limit.status)
                continue
            self.ingress_passed(wl)
            pods[(start + i) % len(pods)].serve()

    def ingress_rejected(self, wl: WorkloadRuntime, provider: str, status: int) -> None:
        wl.rejected_at_ingress += 1
        if provider == "nginx":
            self.metrics.nginx_requests.labels(wl.namespace, wl.name, wl.name, str(status)).inc()
        else:
            self.metrics.traefik_requests.labels("%s-%s-8080@kubernetes" % (wl.namespace, wl.name), str(status),
                                                 "GET", "http").inc()

    def ingress_passed(self, wl: WorkloadRuntime) -> None:
        if wl.ingress_ok is None:
            provider = self.ingress_providers.get(wl.key)
            if provider == "nginx":
                wl.ingress_ok = self.metrics.nginx_requests.labels(wl.namespace, wl.name, wl.name, "200")
            elif provider == "traefik":
                wl.ingress_ok = self.metrics.traefik_requests.labels(
                    "%s-%s-8080@kubernetes" % (wl.namespace, wl.name), "200", "GET", "http")
            else:
                return
        wl.ingress_ok.inc()

    async def second_loop(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            for pod in list(self.controller.pods.values()):
                if not pod.workload.passive:
                    pod.second()
            for key, wl in list(self.controller.workloads.items()):
                if wl.passive:
                    continue
                wl.connections_gauge.set(wl.connections())
                self.rates[key] = {"served": wl.served, "failed": wl.failed, "offered": wl.offered,
                                   "rejected_at_ingress": wl.rejected_at_ingress}
                wl.served = wl.failed = wl.offered = wl.rejected_at_ingress = 0
            self.loop_lag_reported, self.loop_lag = self.loop_lag, 0.0

    # ---- what kubelet and metrics-server would report ---------------------------------------------
    async def report_loop(self) -> None:
        if self.agent is not None:
            await self.node_report_loop(self.agent)
            return
        beat = 0
        while True:
            await asyncio.sleep(1.0)
            beat += 1
            jobs = []
            for key, pod in list(self.controller.pods.items()):
                text = pod.take_logs()
                if text and key in self.controller.reported and self.controller.reported[key] >= 0:
                    jobs.append(self.kube.append_log(pod.workload.namespace, pod.name, text))
                elif text:
                    pod.log_lines.insert(0, text.rstrip("\n"))
            if beat % 2 == 0:
                redis_cpu = await self.redis_cpu_m()
                for key, pod in list(self.controller.pods.items()):
                    if self.controller.reported.get(key, -1) < 0:
                        continue
                    cpu = pod.cpu_m if not pod.workload.passive else (redis_cpu if pod.ip == self.world.redis.pod_ip
                                                                       else 5)
                    memory = 180 + len(pod.conns) // 20
                    jobs.append(self.kube.put_pod_metrics(pod.workload.namespace, pod.name, {
                        "containers": [{"name": "app" if not pod.workload.passive else "redis",
                                        "usage": {"cpu": "%dm" % cpu, "memory": "%dMi" % memory}}],
                        "window": "2s", "timestamp": utcnow()}))
            results = await asyncio.gather(*jobs, return_exceptions=True)
            failures = [r for r in results if isinstance(r, BaseException) and not
                        (isinstance(r, KubeError) and r.status == 404)]
            if failures:
                log.warning("%d log/metrics reports failed, e.g. %s", len(failures), failures[0])

    async def node_report_loop(self, agent: NodeAgent) -> None:
        """Kubelet's side: logs kept for /containerLogs, CPU integrated for /metrics/resource."""
        redis_cpu = 0
        last = time.monotonic()
        beat = 0
        while True:
            await asyncio.sleep(1.0)
            beat += 1
            now = time.monotonic()
            agent.keep_logs()
            if beat % 2 == 0:
                redis_cpu = await self.redis_cpu_m()
            agent.account_cpu(now - last, redis_cpu)
            last = now

    async def redis_cpu_m(self) -> int:
        try:
            info = await self.admin_call("INFO", "cpu")
        except (ConnectFailure, ConnectionLost, ReplyError, OSError):
            return 0
        text = info.decode() if isinstance(info, bytes) else ""
        fields = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
        used = float(fields.get("used_cpu_sys", 0)) + float(fields.get("used_cpu_user", 0))
        now = time.monotonic()
        previous, self.redis_cpu = self.redis_cpu, (now, used)
        if previous is None or now <= previous[0]:
            return 0
        return int(1000 * (used - previous[1]) / (now - previous[0]))

    # ---- the network's own connection to Redis (drills' blips and maxclients) -------------------------
    async def admin_call(self, *args: Any) -> Any:
        async with self.admin_lock:
            if self.admin is None or self.admin.lost:
                self.admin = await open_connection(self.redis.host, self.redis.port, "127.0.0.1", self.redis.password,
                                                   ADMIN_NAME, "sandbox", "1.0", 2.0)
            reply = await asyncio.wait_for(self.admin.call(*args), 10.0)
        if isinstance(reply, ReplyError):
            raise reply
        return reply

    async def admin_retry(self, *args: Any, timeout: float = 30.0) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            try:
                return await self.admin_call(*args)
            except (ConnectFailure, ConnectionLost, OSError, asyncio.TimeoutError):
                if time.monotonic() >= deadline:
                    raise
                await asyncio.sleep(0.2)

    # ---- storms ---------------------------------------------------------------------------------
    async def storm(self, name: str) -> dict[str, Any]:
        scenario = load_scenario(name, self.world)
        if self.scenario is not None:
            await self.calm()
        self.scenario = scenario
        self.storm_started = utcnow()
        self.undo = {"env": {}, "flags": {}, "maxclients": None, "queues": {}}
        current = await self.admin_retry("CONFIG", "GET", "maxclients")
        original = int(current[1]) if isinstance(current, list) and len(current) > 1 else None
        if original is not None and original != scenario.maxclients:
            await self.admin_retry("CONFIG", "SET", "maxclients", str(scenario.maxclients))
            self.undo["maxclients"] = (original, scenario.maxclients)
        for key, env in scenario.app_config.items():
            self.undo["env"][key] = await self.set_env(key, env)
        for key, values in scenario.flags.items():
            self.undo["flags"][key] = await self.set_flags(key, values)
        for key, length in scenario.queues.items():
            self.undo["queues"][key] = self.controller.queues.get(key, 0)
            self.controller.queues[key] = length
        for key, change in scenario.traffic.items():
            wl = self.controller.workloads.get(key)
            if wl is not None:
                wl.set_rps(change.rps, change.ramp_seconds)
        loop = asyncio.get_running_loop()
        self.storm_tasks = [loop.create_task(self.run_event(event)) for event in scenario.events]
        log.info("storm %s started", scenario.name)
        return self.status()

    async def run_event(self, event: Any) -> None:
        await asyncio.sleep(event.at_seconds)
        while True:
            if event.action == "blip":
                await self.blip(event.pause_ms)
            if not event.every_seconds:
                return
            await asyncio.sleep(event.every_seconds)

    async def blip(self, pause_ms: int) -> None:
        """Every client is dropped (CLIENT KILL), then Redis stalls (CLIENT PAUSE) while they all come back, like
        a failover: reconnects and the requests that pile up meanwhile all hang on the handshake together."""
        try:
            async with self.admin_lock:
                if self.admin is None or self.admin.lost:
                    self.admin = await open_connection(self.redis.host, self.redis.port, "127.0.0.1",
                                                       self.redis.password, ADMIN_NAME, "sandbox", "1.0", 2.0)
                futures = self.admin.send(encode("CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes"),
                                          *([encode("CLIENT", "PAUSE", pause_ms, "ALL")] if pause_ms else []))
                replies = await asyncio.wait_for(asyncio.gather(*futures), pause_ms / 1000.0 + 10)
            log.info("blip: %s", replies)
        except (ConnectFailure, ConnectionLost, OSError, asyncio.TimeoutError) as exc:
            log.warning("blip failed: %s", exc)

    async def calm(self) -> dict[str, Any]:
        scenario = self.scenario
        for task in self.storm_tasks:
            task.cancel()
        self.storm_tasks = []
        for key, wl in self.controller.workloads.items():
            if not wl.passive:
                wl.set_rps(self.controller.traffic_base.get(key, 0.0), 2.0)
        for key, length in self.undo.get("queues", {}).items():
            self.controller.queues[key] = length
        if scenario is not None:
            for key, original in self.undo.get("env", {}).items():
                await self.set_env(key, original, only_if=scenario.app_config.get(key))
            for key, original in self.undo.get("flags", {}).items():
                await self.set_flags(key, original, only_if=scenario.flags.get(key))
            if self.undo.get("maxclients"):
                original, stormy = self.undo["maxclients"]
                asyncio.get_running_loop().create_task(self.restore_maxclients(original, stormy))
        await self.reset_replicas()
        self.scenario = None
        self.storm_started = None
        self.undo = {}
        return self.status()

    async def reset_replicas(self) -> None:
        """Drills end at the baseline: the workloads go back to the world's replica counts at once, instead of
        waiting out the autoscalers' scale-down windows (a drill's calm is a reset, not a traffic lull)."""
        self.controller.histories.clear()
        for wl in self.world.workloads:
            try:
                deploy = await self.kube.get("apps/v1", "deployments", wl.namespace, wl.name)
                if int((deploy.get("spec") or {}).get("replicas", 0)) != wl.replicas:
                    await self.kube.patch("apps/v1", "deployments", wl.namespace, wl.name,
                                          {"spec": {"replicas": wl.replicas}}, sub="scale")
            except KubeError as exc:
                log.warning("could not reset %s to %d replicas: %s", wl.key, wl.replicas, exc)

    async def restore_maxclients(self, original: int, stormy: int) -> None:
        try:
            current = await self.admin_retry("CONFIG", "GET", "maxclients", timeout=120)
            if isinstance(current, list) and int(current[1]) == stormy:
                await self.admin_retry("CONFIG", "SET", "maxclients", str(original), timeout=120)
        except (ConnectFailure, ConnectionLost, ReplyError, OSError, asyncio.TimeoutError) as exc:
            log.warning("could not restore maxclients %d: %s", original, exc)

    async def set_env(self, key: str, env: dict[str, str], only_if: Optional[dict[str, str]] = None) -> dict[str, str]:
        """Roll the workload's pod template env to ``env``; returns the values it replaced."""
        namespace, name = key.split("/", 1)
        for _ in range(5):
            deploy = await self.kube.get("apps/v1", "deployments", namespace, name)
            containers = deploy["spec"]["template"]["spec"]["containers"]
            current = {e["name"]: e.get("value", "") for e in containers[0].get("env") or []}
            if only_if is not None and any(current.get(k) != v for k, v in only_if.items()):
                return {}
            replaced = {k: current.get(k, "") for k in env}
            merged = dict(current, **env)
            containers[0]["env"] = [{"name": k, "value": v} for k, v in merged.items()]
            try:
                await self.kube.replace("apps/v1", "deployments", namespace, name, deploy)
                return replaced
            except KubeError as exc:
                if exc.status != 409:
                    raise
        raise KubeError(409, "deployment %s kept changing" % key)

    async def set_flags(self, key: str, values: dict[str, bool], only_if: Optional[dict[str, bool]] = None) \
            -> dict[str, bool]:
        wl = self.world.workload(key)
        for _ in range(5):
            cm = await self.kube.get("v1", "configmaps", wl.namespace, wl.flags.configmap)
            current = read_flags(cm)
            if only_if is not None and any(current.get(k) != v for k, v in only_if.items()):
                return {}
            replaced = {k: current.get(k, False) for k in values}
            merged = dict(current, **values)
            cm["data"] = dict(cm.get("data") or {}, **flag_data(wl, merged.get(RETRY_KEY, False),
                                                                 merged.get(BREAKER_KEY, False)))
            try:
                await self.kube.replace("v1", "configmaps", wl.namespace, wl.flags.configmap, cm)
                return replaced
            except KubeError as exc:
                if exc.status != 409:
                    raise
        raise KubeError(409, "configmap of %s kept changing" % key)

    # ---- status ---------------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        workloads = []
        deployments = {("%s/%s" % (d["metadata"]["namespace"], d["metadata"]["name"])): d
                       for d in self.controller.listing("deployments")}
        for key, wl in sorted(self.controller.workloads.items()):
            if wl.passive:
                continue
            rates = self.rates.get(key, {})
            spec = (deployments.get(key) or {}).get("spec") or {}
            c = wl.config
            workloads.append({
                "namespace": wl.namespace, "kind": "Deployment", "name": wl.name,
                "replicas": spec.get("replicas"), "pods": len(wl.pods), "ready": len(wl.ready_pods()),
                "pod_ips": sorted(p.ip for p in wl.pods.values()),
                "connections": wl.connections(), "restarts": sum(p.restart_count for p in wl.pods.values()),
                "rps_offered": round(wl.offered_rps(time.monotonic()), 1),
                "rps_ingress_rejected": rates.get("rejected_at_ingress", 0),
                "rps_served": rates.get("served", 0), "rps_failed": rates.get("failed", 0),
                "pool": {"max": c.pool_max, "min": c.pool_min, "retry_attempts": c.retry_attempts},
                "aggressive_retries": c.aggressive_retries, "breaker_open": c.breaker_open,
                "mesh_max_connections": c.mesh_max_connections,
                "ingress_limit": None if wl.ingress is None else {
                    "provider": wl.ingress.provider, "rps": wl.ingress.rps, "max_inflight": wl.ingress.max_inflight},
                "queue_length": self.controller.queues.get(key),
            })
        shape = self.world.shape()
        return {
            "scenario": None if self.scenario is None else dict(self.scenario.summary(), started_at=self.storm_started),
            "scenarios": scenario_names(),
            "connections": sum(w["connections"] for w in workloads),
            "loop_lag_ms": round(self.loop_lag_reported * 1000, 1),
            "workloads": workloads,
            "world": shape,
            "ingresses": shape["ingresses"],
            "flag_configmaps": shape["flags"],
        }


def build_app(fleet: Fleet) -> web.Application:
    async def metrics(request: web.Request) -> web.Response:
        body = generate_latest(fleet.metrics.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def status(request: web.Request) -> web.Response:
        return web.json_response(fleet.status())

    async def storm(request: web.Request) -> web.Response:
        try:
            body = await request.json()
        except ValueError:
            return web.json_response({"error": "send a JSON body like {\"scenario\": \"market-open\"}"}, status=400)
        name = body.get("scenario") if isinstance(body, dict) else None
        if not isinstance(name, str) or not name:
            return web.json_response({"error": "missing \"scenario\": one of %s" % ", ".join(scenario_names())},
                                     status=400)
        try:
            return web.json_response(await fleet.storm(name))
        except ScenarioError as exc:
            return web.json_response({"error": str(exc)}, status=400)

    async def calm(request: web.Request) -> web.Response:
        return web.json_response(await fleet.calm())

    app = web.Application()
    app.add_routes([web.get("/metrics", metrics), web.get("/status", status), web.post("/storm", storm),
                    web.post("/calm", calm), web.get("/healthz", status)])
    return app


def read_state(state_dir: Path, timeout: float = 30.0) -> dict[str, Any]:
    """The sandbox's state.json once it names Redis and the kube API (the supervisor writes it before us)."""
    deadline = time.monotonic() + timeout
    path = state_dir / "state.json"
    while True:
        try:
            state = json.loads(path.read_text())
            if (state.get("redis") or {}).get("port") and ((state.get("kube") or {}).get("tokens") or {}).get(
                    "controller"):
                return dict(state)
        except (OSError, ValueError):
            pass
        if time.monotonic() > deadline:
            raise SystemExit("fleet: %s has no redis port and kube controller token after %.0f s" % (path, timeout))
        time.sleep(0.1)


async def serve(state_dir: Path, host: str, port: int, world_file: Optional[Path] = None) -> None:
    state = read_state(state_dir)
    world = load_world(world_file)
    r = state["redis"]
    redis = RedisTarget(host=r.get("host", "127.0.0.1"), port=int(r["port"]), password=r["password"])
    kube_state = state["kube"]
    node_agent = kube_state.get("backend") == CONTROL_PLANE
    async with Kube(kube_state["api"], kube_state["tokens"]["controller"], kube_state.get("ca_file")) as kube:
        fleet = Fleet(state_dir, world, redis, kube, node_agent=node_agent)
        kubelet = None
        if fleet.agent is not None:
            kubelet = web.AppRunner(kubelet_app(fleet.agent), access_log=None)
            await kubelet.setup()
            tls = serving_context(kube_state["kubelet"]["cert"], kube_state["kubelet"]["key"])
            await web.TCPSite(kubelet, host, 0, ssl_context=tls).start()
            fleet.agent.kubelet_port = int(kubelet.addresses[0][1])
            log.info("kubelet endpoints on https://%s:%d", host, fleet.agent.kubelet_port)
        await fleet.start()
        runner = web.AppRunner(build_app(fleet), access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, host, port)
        await site.start()
        log.info("fleet listening on http://%s:%d", host, port)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        try:
            await stop.wait()
        finally:
            await fleet.stop()
            await runner.cleanup()
            if kubelet is not None:
                await kubelet.cleanup()

