"""A workload's pods at run time: request handling, the Redis pool, retries, the circuit breaker, crashes."""

from __future__ import annotations

import asyncio
import random
import time
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Optional

from stormctl.sandbox.fleet.metrics import FleetMetrics
from stormctl.sandbox.fleet.redisconn import (
    ConnectFailure,
    ConnectionLost,
    RedisConnection,
    open_connection,
)

IDLE_CLOSE_SECONDS = 3.0
CONNECT_TIMEOUT = 1.0
BACKOFF_BASE = 0.05
BACKOFF_CAP = 2.0
STARTUP_SECONDS = 0.3
LIVENESS_FAILURES = 6
LOG_LINES_PER_SECOND = 40
# Connects in flight across the whole fleet: Redis accepts on one thread, so a crowd of connects queues up there
# anyway; the cap keeps the fleet's own CPU for the pods' traffic.
CONNECTS_IN_FLIGHT = 48
CONNECTS_PER_SECOND = 1000.0
# The kinds of redis_client_errors_total: a failed connect's (redisconn.ConnectFailure) and a failed call's.
ERROR_KINDS = ("maxclients", "auth", "reset", "timeout", "refused", "overflow", "error", "circuit_open",
               "pool_exhausted")


@dataclass(frozen=True)
class RedisTarget:
    host: str
    port: int
    password: str
    connect_slots: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(CONNECTS_IN_FLIGHT),
                                              compare=False, repr=False)
    accept_rate: ConnectRate = field(default_factory=lambda: ConnectRate(CONNECTS_PER_SECOND), compare=False,
                                     repr=False)


class ConnectRate:
    """How fast new connections get through to Redis (its single-threaded accept loop, in effect): each connect
    reserves the next free slot, so waiting costs one timer, not a poll."""

    def __init__(self, per_second: float) -> None:
        self.interval = 1.0 / per_second
        self.next_slot = 0.0

    def reserve(self, deadline: float) -> Optional[float]:
        """Seconds to wait for a slot before ``deadline``, or None when none is free in time."""
        now = time.monotonic()
        slot = max(now, self.next_slot)
        if slot > deadline:
            return None
        self.next_slot = slot + self.interval
        return slot - now


@dataclass
class AppConfig:
    """What one workload's pods run with: pod template env, flags, mesh policy, and the scenario's traffic shape."""

    client_name: str
    pool_max: int = 8
    pool_min: int = 0
    retry_attempts: int = 3
    conn_max_age: float = 0.0
    aggressive_retries: bool = False
    breaker_open: bool = False
    mesh_max_connections: Optional[int] = None
    hold: float = 0.02
    timeout: float = 1.0
    cpu_m_per_rps: float = 1.0
    cpu_request_m: int = 250
    lib_name: str = "redis-py"
    lib_version: str = "5.2.1"


class PoolTimeout(Exception):
    def __init__(self, exhausted: bool) -> None:
        super().__init__("pool exhausted" if exhausted else "no connection in time")
        self.exhausted = exhausted


def utcnow() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


class WorkloadRuntime:
    """Traffic into a workload and the pods that serve it."""

    def __init__(self, namespace: str, name: str, config: AppConfig, metrics: FleetMetrics, redis: RedisTarget) -> None:
        self.namespace = namespace
        self.name = name
        self.config = config
        self.metrics = metrics
        self.redis = redis
        self.pods: dict[str, PodRuntime] = {}
        self.base_rps = 0.0
        self.target_rps = 0.0
        self.ramp_from = 0.0
        self.ramp_start = 0.0
        self.ramp_seconds = 0.0
        self.inflight = 0
        self.arrival_debt = 0.0
        self.ingress_ok: Any = None
        self.passive = False
        self.ingress: Optional[IngressLimit] = None
        self._codes: dict[str, Any] = {}
        # every kind exported at 0 from the start: a counter born in a storm's first burst hides that burst from
        # Prometheus' increase()
        self._errors: dict[str, Any] = {kind: metrics.redis_errors.labels(namespace, name, kind)
                                        for kind in ERROR_KINDS}
        self.latency = metrics.latency.labels(namespace, name)
        self.connections_gauge = metrics.connections.labels(namespace, name)
        self.served_window: deque[tuple[float, int, int]] = deque(maxlen=10)
        self.served = 0
        self.failed = 0
        self.offered = 0
        self.rejected_at_ingress = 0

    @property
    def key(self) -> str:
        return "%s/%s" % (self.namespace, self.name)

    def set_rps(self, rps: float, ramp_seconds: float = 0.0) -> None:
        now = time.monotonic()
        self.ramp_from = self.offered_rps(now)
        self.target_rps = rps
        self.ramp_start = now
        self.ramp_seconds = ramp_seconds

    def offered_rps(self, now: float) -> float:
        if self.ramp_seconds <= 0 or now >= self.ramp_start + self.ramp_seconds:
            return self.target_rps
        frac = (now - self.ramp_start) / self.ramp_seconds
        return self.ramp_from + (self.target_rps - self.ramp_from) * frac

    def record(self, code: int, seconds: float) -> None:
        child = self._codes.get(str(code))
        if child is None:
            child = self._codes[str(code)] = self.metrics.requests.labels(self.namespace, self.name, str(code))
        child.inc()
        self.latency.observe(seconds)
        if code < 500:
            self.served += 1
        else:
            self.failed += 1

    def error(self, kind: str) -> None:
        child = self._errors.get(kind)
        if child is None:
            child = self._errors[kind] = self.metrics.redis_errors.labels(self.namespace, self.name, kind)
        child.inc()

    def ready_pods(self) -> list[PodRuntime]:
        return [pod for pod in self.pods.values() if pod.ready]

    def connections(self) -> int:
        return sum(len(pod.conns) for pod in self.pods.values())


class IngressLimit:
    """Rate limiting at the workload's ingress: ingress-nginx annotations or a Traefik RateLimit middleware."""

    def __init__(self, provider: str, name: str, rps: Optional[float], burst: float, max_inflight: Optional[int],
                 status: int) -> None:
        self.provider = provider
        self.name = name
        self.rps = rps
        self.burst = max(burst, 1.0)
        self.max_inflight = max_inflight
        self.status = status
        self.tokens = self.burst
        self.last = time.monotonic()

    def same_policy(self, other: IngressLimit) -> bool:
        return (self.provider, self.name, self.rps, self.burst, self.max_inflight, self.status) == \
            (other.provider, other.name, other.rps, other.burst, other.max_inflight, other.status)

    def refill(self, now: float) -> None:
        if self.rps is not None:
            self.tokens = min(self.burst, self.tokens + (now - self.last) * self.rps)
        self.last = now

    def admit(self, inflight: int) -> bool:
        if self.max_inflight is not None and inflight >= self.max_inflight:
            return False
        if self.rps is None:
            return True
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False


class PodRuntime:
    """One pod: its Redis pool bound to the pod IP, its request handling, log lines and container state."""

    def __init__(self, workload: WorkloadRuntime, name: str, ip: str, restart_count: int = 0) -> None:
        self.workload = workload
        self.name = name
        self.ip = ip
        self.restart_count = restart_count
        self.state = "starting"
        self.state_since = time.monotonic()
        self.started_at = utcnow()
        self.last_termination: Optional[dict[str, Any]] = None
        self.backoff_until = 0.0
        self.conns: set[RedisConnection] = set()
        self.idle: deque[RedisConnection] = deque()
        self.waiters: deque[asyncio.Future[RedisConnection]] = deque()
        self.connecting = 0
        self.filling = 0
        self.connect_backoff_until = 0.0
        self.connect_failures = 0
        self.tasks: set[asyncio.Task[Any]] = set()
        self.log_lines: list[str] = []
        self.log_budget = LOG_LINES_PER_SECOND
        self.second_requests = 0
        self.second_errors = 0
        self.second_connects = 0
        self.bad_seconds = 0
        self.cpu_m = 10
        self.status_version = 0
        self.deleted = False
        self.breaker_logged = 0.0
        self.image = ""
        self.created: dict[str, Any] = {}
        self.log("INFO", "Starting %s on %s" % (workload.name, ip))

    # ---- state -------------------------------------------------------------------------------
    @property
    def ready(self) -> bool:
        return self.state == "running"

    def _set_state(self, state: str) -> None:
        self.state = state
        self.state_since = time.monotonic()
        self.status_version += 1

    def tick_state(self, now: float) -> None:
        if self.state == "starting" and now - self.state_since >= STARTUP_SECONDS:
            self._set_state("running")
            self.started_at = utcnow()
            cfg = self.workload.config
            self.log("INFO", "Redis pool ready: %s:%d min-idle=%d max-total=%d (%s %s)" % (
                self.workload.redis.host, self.workload.redis.port, cfg.pool_min, cfg.pool_max, cfg.lib_name,
                cfg.lib_version))
            self.maintain(now)
        elif self.state == "backoff" and now >= self.backoff_until:
            self._set_state("starting")
            self.log("INFO", "Starting %s on %s (restart %d)" % (self.workload.name, self.ip, self.restart_count))

    def crash(self, reason: str) -> None:
        self.log("ERROR", "Application run failed: liveness probe failed: %s" % reason)
        self.restart_count += 1
        self.last_termination = {"exitCode": 1, "reason": "Error", "startedAt": self.started_at,
                                 "finishedAt": utcnow()}
        self.backoff_until = time.monotonic() + self._backoff_seconds()
        self._set_state("backoff")
        self.close_all()
        self.bad_seconds = 0

    def _backoff_seconds(self) -> int:
        """CrashLoopBackOff doubles from 5 s to 40 s (the kubelet's 10 s to 5 min, on the sandbox's short clock)."""
        return int(min(40, 5 * 2 ** min(max(self.restart_count - 1, 0), 3)))

    def stop(self) -> None:
        self.deleted = True
        self._set_state("terminated")
        self.close_all()
        for task in list(self.tasks):
            task.cancel()

    def close_all(self) -> None:
        for conn in list(self.conns):
            conn.close()
        self.conns.clear()
        self.idle.clear()
        while self.waiters:
            waiter = self.waiters.popleft()
            if not waiter.done():
                waiter.set_exception(PoolTimeout(exhausted=False))

    # ---- logs ----------------------------------------------------------------------------------
    def log(self, level: str, text: str) -> None:
        if self.log_budget <= 0:
            return
        self.log_budget -= 1
        stamp = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
        self.log_lines.append("%s %-5s [%s] %s" % (stamp, level, self.workload.name, text))

    def take_logs(self) -> str:
        lines, self.log_lines = self.log_lines, []
        self.log_budget = LOG_LINES_PER_SECOND
        return "".join(line + "\n" for line in lines)

    # ---- pool ----------------------------------------------------------------------------------
    def _can_open(self, now: float) -> bool:
        if not self.ready:
            return False
        cfg = self.workload.config
        total = len(self.conns) + self.connecting
        if cfg.pool_max > 0 and total >= cfg.pool_max:
            return False
        return not self._backing_off(now)

    def _backing_off(self, now: float) -> bool:
        """With retries off, a failing pool makes one connect at a time, after a jittered backoff."""
        return not self.workload.config.aggressive_retries and bool(self.connect_failures) and (
            now < self.connect_backoff_until or self.connecting > 0)

    async def _open_one(self, deadline: float) -> RedisConnection:
        cfg = self.workload.config
        mesh_cap = cfg.mesh_max_connections
        if mesh_cap is not None and len(self.conns) + self.connecting > mesh_cap:
            raise ConnectFailure("overflow",
                                 "Connection reset by peer (upstream overflow: maxConnections %d)" % mesh_cap)
        redis = self.workload.redis
        delay = redis.accept_rate.reserve(deadline)
        if delay is None:
            raise ConnectFailure("timeout", "connect timed out after %d ms" % (CONNECT_TIMEOUT * 1000))
        if delay > 0:
            await asyncio.sleep(delay)
        try:
            async with asyncio.timeout(max(deadline - time.monotonic(), 0.0)):
                await redis.connect_slots.acquire()
        except TimeoutError:
            raise ConnectFailure("timeout", "connect timed out after %d ms" % (CONNECT_TIMEOUT * 1000)) from None
        try:
            self.second_connects += 1
            return await open_connection(redis.host, redis.port, self.ip, redis.password, cfg.client_name,
                                         cfg.lib_name, cfg.lib_version,
                                         max(min(CONNECT_TIMEOUT, deadline - time.monotonic()), 0.05))
        finally:
            redis.connect_slots.release()

    def _connect_failed(self, exc: ConnectFailure) -> None:
        self.workload.error(exc.kind)
        self.connect_failures += 1
        if not self.workload.config.aggressive_retries:
            ceiling = min(BACKOFF_CAP, BACKOFF_BASE * 2 ** min(self.connect_failures, 10))
            self.connect_backoff_until = time.monotonic() + random.uniform(ceiling / 2, ceiling)
        if exc.kind == "maxclients":
            self.log("ERROR", "Unable to connect to Redis: ERR max number of clients reached")
        elif exc.kind == "timeout":
            self.log("ERROR", "org.redisson.client.RedisTimeoutException: Unable to connect to Redis within %d ms"
                     % (CONNECT_TIMEOUT * 1000))
        else:
            self.log("ERROR", "Unable to connect to Redis: java.io.IOException: %s" % exc)

    async def _retry_turn(self, deadline: float, failure: ConnectFailure) -> None:
        """A retry also waits out the pool's backoff, one connect at a time: the pool retries, not each request."""
        while self._backing_off(time.monotonic()):
            if time.monotonic() >= deadline:
                raise failure
            await asyncio.sleep(random.uniform(0.02, 0.06))

    async def _connect(self, deadline: float) -> RedisConnection:
        """Open a connection with the workload's retry policy: at once (aggressive) or jittered backoff."""
        cfg = self.workload.config
        attempts = 1 + max(cfg.retry_attempts, 0)
        for attempt in range(1, attempts + 1):
            if not self.ready:
                raise ConnectFailure("reset", "Connection reset by peer (pod stopping)")
            self.connecting += 1
            try:
                conn = await self._open_one(deadline)
            except ConnectFailure as exc:
                self._connect_failed(exc)
                now = time.monotonic()
                if attempt >= attempts or now >= deadline:
                    raise
                if cfg.aggressive_retries:
                    self.log("WARN", "Retrying Redis connection attempt %d of %d" % (attempt + 1, attempts))
                    continue
                delay = random.uniform(0, min(BACKOFF_CAP, BACKOFF_BASE * 2 ** attempt))
                if now + delay >= deadline:
                    raise
                self.log("WARN", "Retrying Redis connection attempt %d of %d in %d ms" % (attempt + 1, attempts,
                                                                                          delay * 1000))
                await asyncio.sleep(delay)
                await self._retry_turn(deadline, exc)
                continue
            finally:
                self.connecting -= 1
            if not self.ready:
                conn.close()
                raise ConnectFailure("reset", "Connection reset by peer (pod stopping)")
            self.connect_failures = 0
            conn.opened_at = time.monotonic()
            conn.on_lost = self._connection_lost
            self.conns.add(conn)
            return conn
        raise AssertionError("unreachable")

    async def acquire(self, deadline: float) -> RedisConnection:
        while self.idle:
            conn = self.idle.pop()
            if not conn.lost:
                return conn
            self.conns.discard(conn)
        now = time.monotonic()
        if self._can_open(now):
            return await self._connect(deadline)
        cfg = self.workload.config
        exhausted = cfg.pool_max > 0 and len(self.conns) + self.connecting >= cfg.pool_max
        waiter: asyncio.Future[RedisConnection] = asyncio.get_running_loop().create_future()
        self.waiters.append(waiter)
        try:
            async with asyncio.timeout(max(deadline - now, 0.0)):
                return await waiter
        except TimeoutError:
            raise PoolTimeout(exhausted) from None

    def release(self, conn: RedisConnection) -> None:
        max_age = self.workload.config.conn_max_age
        if max_age and not conn.lost and conn in self.conns and time.monotonic() - conn.opened_at > max_age:
            # retired, not pooled: a request waiting for it gets a fresh connection instead
            self.conns.discard(conn)
            conn.close()
            if self.waiters:
                self._spawn(self._replace_retired())
            return
        if conn.lost or conn not in self.conns:
            self.conns.discard(conn)
            conn.close()
            return
        while self.waiters:
            waiter = self.waiters.popleft()
            if not waiter.done():
                waiter.set_result(conn)
                return
        conn.idle_since = time.monotonic()
        self.idle.append(conn)

    def discard(self, conn: RedisConnection) -> None:
        self.conns.discard(conn)
        conn.abort()

    def maintain(self, now: float) -> None:
        """Close idle connections above min-idle; keep min-idle open (all at once when aggressive)."""
        cfg = self.workload.config
        floor = 0 if cfg.breaker_open else cfg.pool_min
        while self.idle and len(self.conns) > floor and (cfg.breaker_open or
                                                         now - self.idle[0].idle_since > IDLE_CLOSE_SECONDS):
            conn = self.idle.popleft()
            self.conns.discard(conn)
            conn.close()
        for conn in [c for c in self.idle if c.lost]:
            self.idle.remove(conn)
            self.conns.discard(conn)
        if not self.ready or cfg.breaker_open:
            return
        missing = floor - len(self.conns) - self.filling
        if missing <= 0:
            return
        if not cfg.aggressive_retries:
            if self._backing_off(now):
                return
            missing = min(missing, 1 if self.connect_failures else 16)
        self.filling += missing
        for _ in range(missing):
            self._spawn(self._fill_one())

    async def _fill_one(self) -> None:
        try:
            if not self.workload.config.aggressive_retries:
                await asyncio.sleep(random.uniform(0, 0.3))
            conn = await self._connect(time.monotonic() + 30.0)
        except ConnectFailure:
            return
        finally:
            self.filling -= 1
        self.release(conn)

    async def _replace_retired(self) -> None:
        try:
            conn = await self._connect(time.monotonic() + self.workload.config.timeout)
        except ConnectFailure:
            return
        self.release(conn)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def _connection_lost(self, conn: RedisConnection) -> None:
        """The server or the network dropped a pooled connection: drop it, reconnect per the retry policy."""
        self.conns.discard(conn)
        if conn in self.idle:
            self.idle.remove(conn)
        self.workload.error("reset")
        self.log("WARN", "io.lettuce.core.RedisConnectionException: Connection reset by peer, reconnecting")
        if self.ready and self.workload.config.aggressive_retries:
            self.maintain(time.monotonic())

    # ---- requests ------------------------------------------------------------------------------
    def serve(self) -> None:
        self.workload.inflight += 1
        self._spawn(self._serve_one())

    async def _serve_one(self) -> None:
        wl = self.workload
        cfg = wl.config
        start = time.monotonic()
        self.second_requests += 1
        try:
            if cfg.breaker_open:
                if start - self.breaker_logged >= 1.0:
                    self.breaker_logged = start
                    self.log("WARN", "CircuitBreaker 'redis' is OPEN and does not permit further calls")
                wl.error("circuit_open")
                wl.record(503, time.monotonic() - start + 0.001)
                self.second_errors += 1
                return
            deadline = start + cfg.timeout
            try:
                conn = await self.acquire(deadline)
            except ConnectFailure:
                self.second_errors += 1
                wl.record(503, time.monotonic() - start)
                return
            except PoolTimeout as exc:
                self.second_errors += 1
                if exc.exhausted:
                    wl.error("pool_exhausted")
                    self.log("ERROR", "redis.exceptions.ConnectionError: Too many connections (pool max-total %d)"
                             % cfg.pool_max)
                else:
                    wl.error("timeout")
                    self.log("ERROR", "org.redisson.client.RedisTimeoutException: Redis server response timeout "
                             "(%d ms) occured after 0 retry attempts" % (cfg.timeout * 1000))
                wl.record(504, time.monotonic() - start)
                return
            try:
                async with asyncio.timeout(deadline - time.monotonic()):
                    key = "%s:%d" % (cfg.client_name, random.randrange(1000))
                    if random.random() < 0.2:
                        await conn.call("SET", key, "1")
                    else:
                        await conn.call("GET", key)
                    if cfg.hold:
                        await asyncio.sleep(cfg.hold)
            except TimeoutError:
                self.discard(conn)
                self.second_errors += 1
                wl.error("timeout")
                self.log("ERROR", "org.redisson.client.RedisTimeoutException: Redis server response timeout (%d ms)"
                         % (cfg.timeout * 1000))
                wl.record(504, time.monotonic() - start)
                return
            except ConnectionLost:
                self.discard(conn)
                self.second_errors += 1
                wl.error("reset")
                self.log("ERROR", "io.lettuce.core.RedisConnectionException: Connection reset by peer")
                wl.record(503, time.monotonic() - start)
                return
            self.release(conn)
            wl.record(200, time.monotonic() - start)
        finally:
            wl.inflight -= 1

    # ---- once a second -------------------------------------------------------------------------
    def second(self) -> None:
        """Pod CPU from the work done in the last second, and the liveness probe."""
        cfg = self.workload.config
        self.cpu_m = int(10 + cfg.cpu_m_per_rps * self.second_requests + 1.5 * self.second_connects
                         + (2 * len(self.conns) // 10))
        if self.ready and self.second_errors >= 5 and self.second_errors * 2 >= self.second_requests \
                and not cfg.breaker_open:
            self.bad_seconds += 1
        else:
            self.bad_seconds = 0
        if self.bad_seconds >= LIVENESS_FAILURES:
            self.crash("GET /actuator/health/liveness returned 503 (redis: DOWN)")
        self.second_requests = self.second_errors = self.second_connects = 0

    def container_status(self, image: str) -> dict[str, Any]:
        state: dict[str, Any]
        if self.state == "backoff":
            state = {"waiting": {"reason": "CrashLoopBackOff",
                                 "message": "back-off %ds restarting failed container=app pod=%s" % (
                                     self._backoff_seconds(), self.name)}}
        else:
            state = {"running": {"startedAt": self.started_at}}
        status: dict[str, Any] = {"name": "app", "image": image, "imageID": "",
                                  "containerID": "sandbox://%s" % self.name, "ready": self.ready,
                                  "started": self.state != "backoff", "restartCount": self.restart_count,
                                  "state": state, "lastState": {}}
        if self.last_termination is not None:
            status["lastState"] = {"terminated": dict(self.last_termination)}
        return status

