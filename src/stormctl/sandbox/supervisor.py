"""The sandbox's detached supervisor: starts every service, proves each healthy, keeps them, stops them.

Run by `services.up` as `python -m stormctl.sandbox.supervisor DIR` in a session of its own, so it
outlives the CLI. Its process group is the sandbox's `pgid`; its children die with it
(PR_SET_PDEATHSIG) and `services.down` cleans up after it even when it was killed.
"""

from __future__ import annotations

import datetime
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import redis

from stormctl import __version__
from stormctl.sandbox import cluster, procs, prometheus_config
from stormctl.sandbox.fleet.controller import NODE
from stormctl.sandbox.fleet.world import manifests
from stormctl.sandbox.kube import build, pki
from stormctl.sandbox.kube.controlplane import ControlPlane, ControlPlaneError
from stormctl.sandbox.kubeapi.kubeconfig import write_kubeconfig
from stormctl.sandbox.scenario import load_world
from stormctl.sandbox.state import (
    AUDIT_LOG,
    CONTROL_PLANE,
    ERROR_FILE,
    KUBECONFIG_FILE,
    MARKER_ENV,
    PASSWORD_FILE,
    REPO,
    RULES_FILE,
    SPEC_FILE,
    STATE_FILE,
    STATE_VERSION,
    SUPERVISOR,
    TOKENS_FILE,
    read_json,
    write_json,
    write_pid,
    write_private,
)

REDIS_SERVER = "/usr/bin/redis-server"
REDIS_EXPORTER = "/usr/bin/prometheus-redis-exporter"
PROMETHEUS = "/usr/bin/prometheus"
HOST = procs.LOOPBACK
PORT_ATTEMPTS = 3
# Stop order: clients first (so Redis sees them leave), Redis last.
STOP_ORDER = ["fleet", "prometheus", "exporter", "kubeapi", "redis"]
START_ORDER = ["redis", "kubeapi", "exporter", "fleet", "prometheus"]
KUBEAPI_READY = "kubeapi.json"
READONLY_RULES = [{"apiGroups": ["*"], "resources": ["*"], "verbs": ["get", "list", "watch"]}]
PRODUCT_RBAC = REPO / "deploy" / "rbac.yml"
PRODUCT_ACCOUNT = ("redis-storm", "redis-storm")
# The sandbox's own identities on the control plane: role -> (ServiceAccount in kube-system, ClusterRole).
SANDBOX_ACCOUNTS = {"admin": ("sandbox-admin", "cluster-admin"), "controller": ("sandbox-node-agent", "cluster-admin"),
                    "readonly": ("storm-readonly", "view")}
TOKEN_DURATION = "168h"
WORLD_FIELD_MANAGER = "redis-storm-sandbox"


class StartError(Exception):
    def __init__(self, service: str, message: str) -> None:
        super().__init__(message)
        self.service = service


@dataclass
class Service:
    name: str
    build: Callable[[int], tuple[list[str], dict[str, str]]]
    healthy: Callable[[int], bool]
    port: int = 0
    proc: subprocess.Popen[bytes] | None = None
    attempts: int = 0
    extra: dict[str, Any] = field(default_factory=dict)
    version: str = ""


def utcnow() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def log_tail(path: Path, lines: int = 12) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


class Supervisor:
    def __init__(self, state_dir: Path) -> None:
        self.dir = state_dir
        spec = read_json(state_dir / SPEC_FILE)
        if not isinstance(spec, dict):
            raise SystemExit("no %s in %s" % (SPEC_FILE, state_dir))
        self.spec: dict[str, Any] = spec
        self.sandbox_id = str(spec["sandbox_id"])
        self.password = str(spec["redis_password"])
        self.tokens: dict[str, str] = dict(spec["tokens"])
        self.maxclients = int(spec["maxclients"])
        self.services: dict[str, Service] = {}
        # Services whose port is chosen before they start (Prometheus scrapes the fleet from the beginning).
        self.planned: dict[str, Service] = {}
        self.stopping = False
        self.revive_requested = False
        self.reported: set[str] = set()
        self.state: dict[str, Any] = {}
        self.plane: ControlPlane | None = None

    # -- plumbing -----------------------------------------------------------------------------
    def log(self, message: str) -> None:
        print("%s %s" % (utcnow(), message), flush=True)

    def child_env(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        env = dict(os.environ)
        env.pop("REDIS_PASSWORD", None)
        env[MARKER_ENV] = self.sandbox_id
        env["STORM_SANDBOX_DIR"] = str(self.dir)
        env["PYTHONUNBUFFERED"] = "1"
        env.update(extra or {})
        return env

    def spawn(self, service: Service) -> None:
        service.attempts += 1
        if service.attempts > 1 or not service.port:
            service.port = procs.free_port()
        argv, env = service.build(service.port)
        if not service.version:
            service.version = "stormctl " + __version__ if argv[0] == sys.executable else procs.binary_version(argv[0])
        log = open(self.dir / ("%s.log" % service.name), "ab")  # noqa: SIM115 - the child keeps it
        try:
            service.proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.child_env(env),
                cwd=str(self.dir),
                preexec_fn=procs.child_setup(os.getpid()),  # the supervisor is single-threaded
                close_fds=True,
            )
        except OSError as exc:
            raise StartError(service.name, "cannot start %s: %s" % (argv[0], exc)) from exc
        finally:
            log.close()
        write_pid(self.dir, service.name, service.proc.pid)
        self.services[service.name] = service
        self.log("started %s pid=%d port=%d" % (service.name, service.proc.pid, service.port))

    def await_healthy(self, names: list[str], timeout: float) -> None:
        """Wait until each named service is healthy; re-spawn on a lost port race."""
        deadline = time.monotonic() + timeout
        pending = list(names)
        while pending:
            if self.stopping:
                raise StartError(pending[0], "interrupted")
            for name in list(pending):
                service = self.services[name]
                assert service.proc is not None
                if service.proc.poll() is not None:
                    tail = log_tail(self.dir / ("%s.log" % name))
                    if "address already in use" in tail.lower() and service.attempts < PORT_ATTEMPTS:
                        self.log("%s lost its port %d to another process, retrying" % (name, service.port))
                        self.spawn(service)
                        continue
                    raise StartError(
                        name, "%s exited with code %s during start-up:\n%s" % (name, service.proc.returncode, tail)
                    )
                if service.healthy(service.port):
                    pending.remove(name)
                    self.log("%s is healthy" % name)
            if pending and time.monotonic() > deadline:
                raise StartError(
                    pending[0],
                    "%s did not become healthy within %.0f s; last log lines:\n%s"
                    % (pending[0], timeout, log_tail(self.dir / ("%s.log" % pending[0]))),
                )
            if pending:
                time.sleep(0.05)

    # -- services -----------------------------------------------------------------------------
    def redis_service(self) -> Service:
        data = self.dir / "redis-data"
        data.mkdir(mode=0o700, exist_ok=True)

        def build(port: int) -> tuple[list[str], dict[str, str]]:
            conf = self.dir / "redis.conf"
            write_private(
                conf,
                "\n".join(
                    [
                        "# Generated by `stormctl sandbox up`; holds the password, so mode 0600.",
                        "bind %s" % HOST,
                        "port %d" % port,
                        # A password is set, so protected mode lets pods connect from their own 127.x addresses.
                        "protected-mode yes",
                        "requirepass %s" % self.password,
                        "maxclients %d" % self.maxclients,
                        'save ""',
                        "appendonly no",
                        "daemonize no",
                        "dir %s" % data,
                        # Log to stdout, which the supervisor writes to redis.log in the state directory.
                        'logfile ""',
                        "",
                    ]
                ),
            )
            return [REDIS_SERVER, str(conf)], {}

        def healthy(port: int) -> bool:
            try:
                client = redis.Redis(host=HOST, port=port, password=self.password, socket_timeout=1)
                try:
                    return bool(client.ping())
                finally:
                    client.close()
            except redis.RedisError:
                return False

        return Service("redis", build, healthy)

    def exporter_service(self, redis_port: int) -> Service:
        def build(port: int) -> tuple[list[str], dict[str, str]]:
            argv = [
                REDIS_EXPORTER,
                "--redis.addr=redis://%s:%d" % (HOST, redis_port),
                "--web.listen-address=%s:%d" % (HOST, port),
                "--include-config-metrics",
                # Fail the Redis connection before Prometheus' 1 s scrape timeout, so redis_up 0 is recorded.
                "--connection-timeout=500ms",
            ]
            # The password goes through the environment: `ps` shows argv to every user.
            return argv, {"REDIS_PASSWORD": self.password}

        def healthy(port: int) -> bool:
            body = cluster.http_ok("http://%s:%d/metrics" % (HOST, port))
            return body is not None and "\nredis_up 1" in body

        return Service("exporter", build, healthy)

    def kubeapi_service(self) -> Service:
        """Plain http for the fleet (it sends the controller token itself) and https for the kubeconfig:
        kubectl sends a bearer token only over TLS. A revived emulator keeps both ports and its CA."""

        def build(port: int) -> tuple[list[str], dict[str, str]]:
            if service.attempts > 1 or not service.extra.get("tls_port"):
                service.extra["tls_port"] = procs.free_port()
            (self.dir / KUBEAPI_READY).unlink(missing_ok=True)
            argv = [sys.executable, "-m", "stormctl.sandbox.kubeapi", "--listen", "%s:%d" % (HOST, port),
                    "--listen-tls", "%s:%d" % (HOST, service.extra["tls_port"])]
            return [*argv, "--state-dir", str(self.dir)], {}

        def healthy(port: int) -> bool:
            if cluster.http_ok("http://%s:%d/readyz" % (HOST, port)) is None:
                return False
            # kubeapi.json is written once both listeners are up
            ready = read_json(self.dir / KUBEAPI_READY)
            if not isinstance(ready, dict) or not ready.get("tls_url") or service.proc is None:
                return False
            if ready.get("pid") != service.proc.pid:
                return False
            service.extra.update(tls_url=ready["tls_url"], ca_file=ready["ca_file"])
            return True

        service = Service("kubeapi", build, healthy)
        return service

    def fleet_service(self) -> Service:
        def build(port: int) -> tuple[list[str], dict[str, str]]:
            # The fleet reads its endpoints from state.json at start, so its URL goes in first.
            self.update_state({"fleet": {"url": "http://%s:%d" % (HOST, port)}})
            argv = [sys.executable, "-m", "stormctl.sandbox.fleet", "--state-dir", str(self.dir)]
            return [*argv, "--listen", "%s:%d" % (HOST, port)], {}

        def healthy(port: int) -> bool:
            return cluster.http_ok("http://%s:%d/status" % (HOST, port)) is not None

        return Service("fleet", build, healthy)

    def prometheus_service(self) -> Service:
        if not RULES_FILE.is_file():
            raise StartError("prometheus", "the alert rules %s are missing from the checkout" % RULES_FILE)
        conf = self.dir / "prometheus.yml"
        rules = self.dir / "redis-storm-rules.yml"
        write_private(rules, prometheus_config.drill_rules(RULES_FILE))

        def render() -> str:
            exporter = "%s:%d" % (HOST, self.services["exporter"].port)
            fleet = self.planned.get("fleet")
            return prometheus_config.render(exporter, "%s:%d" % (HOST, fleet.port) if fleet else None, rules)

        def build(port: int) -> tuple[list[str], dict[str, str]]:
            service.extra["config"] = render()
            write_private(conf, service.extra["config"])
            argv = [
                PROMETHEUS,
                "--config.file=%s" % conf,
                "--storage.tsdb.path=%s" % (self.dir / "prometheus-data"),
                "--storage.tsdb.retention.time=1d",
                "--web.listen-address=%s:%d" % (HOST, port),
                "--web.enable-lifecycle",
                "--log.level=warn",
            ]
            return argv, {}

        def healthy(port: int) -> bool:
            base = "http://%s:%d" % (HOST, port)
            if cluster.http_ok(base + "/-/ready") is None:
                return False
            if service.extra["config"] != render():
                # A scrape target moved to another port after a lost port race: follow it.
                service.extra["config"] = render()
                write_private(conf, service.extra["config"])
                try:
                    cluster.http_json(base + "/-/reload", method="POST", timeout=5.0)
                except (OSError, ValueError):
                    return False
            try:
                targets = cluster.http_json(base + "/api/v1/targets?state=active", timeout=1.0)
            except (OSError, ValueError):
                return False
            up = {t["labels"].get("job") for t in targets["data"]["activeTargets"] if t.get("health") == "up"}
            jobs = [prometheus_config.REDIS_JOB] + ([prometheus_config.FLEET_JOB] if "fleet" in self.planned else [])
            return all(job in up for job in jobs)

        service = Service("prometheus", build, healthy)
        return service

    # -- the real control plane --------------------------------------------------------------
    def start_control_plane(self) -> dict[str, Any]:
        """etcd, kube-apiserver, kube-controller-manager and metrics-server with the CRDs; then the world, the
        product's RBAC as shipped, the sandbox's accounts and their kubeconfigs. Returns state.json's `kube`."""
        plane = ControlPlane(self.dir / "kube")
        plane.sandbox_id = self.sandbox_id  # its processes carry this sandbox's marker, so `down` finds them
        self.plane = plane
        self.log("starting the control plane in %s" % plane.run_dir)
        try:
            plane.start()
            self.log("control plane ready: %s" % plane.startup_seconds)
            plane.kubectl("apply", "--server-side", "--field-manager", WORLD_FIELD_MANAGER, "-f",
                          str(self.write_world(plane)))
            plane.kubectl("apply", "-f", str(PRODUCT_RBAC))
            tokens = {"operator": plane.token(*PRODUCT_ACCOUNT, duration=TOKEN_DURATION)}
            for role, (account, _) in SANDBOX_ACCOUNTS.items():
                tokens[role] = plane.token("kube-system", account, duration=TOKEN_DURATION)
        except ControlPlaneError as exc:
            raise StartError("control-plane", str(exc)) from exc
        kubelet = pki.issue(plane.ca, plane.pki_dir, "kubelet", "system:node:%s" % NODE,
                            server_names=(HOST, "localhost"))
        kubeconfig = plane.write_token_kubeconfig(self.dir / KUBECONFIG_FILE, "system:serviceaccount:%s:%s" % (
            PRODUCT_ACCOUNT[0], PRODUCT_ACCOUNT[1]), tokens["operator"])
        return {
            "backend": CONTROL_PLANE, "api": plane.url, "tls_api": plane.url, "ca_file": str(plane.ca.cert),
            "kubeconfig": str(kubeconfig), "admin_kubeconfig": str(plane.admin_kubeconfig),
            "audit_log": str(plane.audit_log), "tokens": tokens,
            "kubelet": {"cert": str(kubelet.cert), "key": str(kubelet.key)},
            "startup_seconds": plane.startup_seconds,
        }

    def write_world(self, plane: ControlPlane) -> Path:
        """The scenario's baseline world and the sandbox's accounts, as one List for a server-side apply."""
        rbac = "rbac.authorization.k8s.io/v1"
        accounts: list[dict[str, Any]] = []
        for account, role in SANDBOX_ACCOUNTS.values():
            accounts.append({"apiVersion": "v1", "kind": "ServiceAccount",
                             "metadata": {"name": account, "namespace": "kube-system"}})
            accounts.append({"apiVersion": rbac, "kind": "ClusterRoleBinding", "metadata": {"name": account},
                             "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
                             "subjects": [{"kind": "ServiceAccount", "name": account, "namespace": "kube-system"}]})
        path = plane.run_dir / "world.json"
        items = manifests(load_world()) + accounts
        path.write_text(json.dumps({"apiVersion": "v1", "kind": "List", "items": items}, indent=1) + "\n")
        return path

    def control_plane_services(self) -> dict[str, dict[str, Any]]:
        if self.plane is None:
            return {}
        ports = {"etcd": self.plane.ports.etcd, "kube-apiserver": self.plane.ports.apiserver,
                 "kube-controller-manager": self.plane.ports.controller_manager,
                 "metrics-server": self.plane.ports.metrics_server}
        pinned = build.versions()
        return {c.name: {"pid": c.process.pid, "port": ports.get(c.name), "log": str(c.log), "control_plane": True,
                         "version": pinned.get(c.name, "unknown")}
                for c in self.plane.components}

    # -- the sandbox --------------------------------------------------------------------------
    def write_tokens(self) -> None:
        users = {
            "admin": ("sandbox-admin", "*"),
            "operator": ("storm-operator", "*"),
            "readonly": ("storm-readonly", READONLY_RULES),
            "controller": ("sandbox-fleet", "*"),
        }
        table = {self.tokens[role]: {"user": user, "rules": rules} for role, (user, rules) in users.items()}
        write_json(self.dir / TOKENS_FILE, table)

    def write_kubeconfig(self, server: str, ca_file: str) -> None:
        path = self.dir / KUBECONFIG_FILE
        write_kubeconfig(path, server, self.tokens["operator"], user="storm-operator", ca_file=ca_file)
        os.chmod(path, 0o600)

    def publish(self, status: str) -> None:
        self.update_state({"status": status})

    def update_state(self, changes: dict[str, Any]) -> None:
        """Write state.json, keeping what others recorded there since (the CLI sets `scenario`)."""
        on_disk = read_json(self.dir / STATE_FILE)
        if isinstance(on_disk, dict) and on_disk.get("status") == "ready":
            self.state["scenario"] = on_disk.get("scenario")
        self.state.update(changes)
        write_json(self.dir / STATE_FILE, self.state)

    def start(self) -> None:
        spec = self.spec
        self.state = {
            "version": STATE_VERSION,
            "status": "starting",
            "dir": str(self.dir),
            "pgid": os.getpgid(0),
            "supervisor_pid": os.getpid(),
            "started_at": utcnow(),
            "redis": {"host": HOST, "port": None, "password": self.password, "maxclients": self.maxclients},
            "password_file": str(self.dir / PASSWORD_FILE),
            "exporter": None,
            "prometheus": None,
            "kube": None,
            "fleet": None,
            "namespaces": [],
            "client_namespaces": [],
            "workloads": [],
            "redis_workload": None,
            "ingresses": [],
            "flags": [],
            "mesh_destination_rules": [],
            "scenario": None,
            "services": {},
        }
        on_plane = spec["with_kubeapi"] and spec.get("kube") == CONTROL_PLANE
        if spec["with_kubeapi"] and not on_plane:
            self.write_tokens()
            self.spawn(self.kubeapi_service())
        self.spawn(self.redis_service())
        self.await_healthy(["redis"], timeout=10)
        self.spawn(self.exporter_service(self.services["redis"].port))
        if spec["with_fleet"]:
            fleet = self.fleet_service()
            fleet.port = procs.free_port()
            self.planned["fleet"] = fleet
        # Prometheus takes ~5 s to its first scrape (target discovery is throttled): start it early.
        self.spawn(self.prometheus_service())
        if on_plane:
            self.state["kube"] = self.start_control_plane()
        self.await_healthy(["exporter"] + (["kubeapi"] if spec["with_kubeapi"] and not on_plane else []), timeout=20)
        redis_port = self.services["redis"].port
        self.state["redis"]["port"] = redis_port
        self.state["exporter"] = {"url": "http://%s:%d/metrics" % (HOST, self.services["exporter"].port)}
        if spec["with_kubeapi"] and not on_plane:
            kubeapi = self.services["kubeapi"]
            api = "http://%s:%d" % (HOST, kubeapi.port)
            self.write_kubeconfig(kubeapi.extra["tls_url"], kubeapi.extra["ca_file"])
            self.state["kube"] = {
                "api": api,
                "tls_api": kubeapi.extra["tls_url"],
                "ca_file": kubeapi.extra["ca_file"],
                "kubeconfig": str(self.dir / KUBECONFIG_FILE),
                "audit_log": str(self.dir / AUDIT_LOG),
                "tokens": self.tokens,
            }
        self.record_services()
        self.publish("starting")

        if spec["with_fleet"]:
            self.spawn(self.planned["fleet"])
            self.await_healthy(["fleet"], timeout=float(spec.get("fleet_timeout", 45)))
        self.await_healthy(["prometheus"], timeout=30)
        self.state["prometheus"] = {"url": "http://%s:%d" % (HOST, self.services["prometheus"].port)}
        if self.state["kube"]:
            kube = self.state["kube"]
            self.state.update(cluster.discover(kube["api"], kube["tokens"]["admin"], kube.get("ca_file")))
        self.record_services()
        self.publish("ready")
        self.log("sandbox ready")

    def record_services(self) -> None:
        self.state["services"] = {
            name: {"pid": s.proc.pid if s.proc else None, "port": s.port, "log": str(self.dir / ("%s.log" % name)),
                   "version": s.version,
                   **({"tls_port": s.extra["tls_port"]} if s.extra.get("tls_port") else {})}
            for name, s in self.services.items()
        }
        self.state["services"].update(self.control_plane_services())

    def watch(self) -> bool:
        """Keep the services until told to stop; True when the state directory should go too."""
        owner = self.spec.get("owner_pid")
        while not self.stopping:
            if not self.dir.is_dir():
                self.log("the state directory is gone: stopping")
                return False
            if owner and not procs.alive(int(owner)):
                self.log("the process that owns this sandbox (pid %s) is gone: stopping" % owner)
                return True
            for name, service in self.services.items():
                if name not in self.reported and service.proc is not None and service.proc.poll() is not None:
                    self.reported.add(name)
                    self.log("%s exited unexpectedly with code %s" % (name, service.proc.returncode))
            if self.revive_requested:
                self.revive_requested = False
                self.revive()
            time.sleep(0.2)
        return False

    def exited(self, name: str) -> bool:
        proc = self.services[name].proc
        return proc is not None and proc.poll() is not None

    def revive(self) -> None:
        """Start again, on their own ports, the services that died (a test killed Redis, say)."""
        dead = [name for name in START_ORDER if name in self.services and self.exited(name)]
        if not dead:
            return
        self.log("reviving %s" % ", ".join(dead))
        for name in dead:
            self.services[name].attempts = 0
            self.spawn(self.services[name])
            self.reported.discard(name)
        try:
            self.await_healthy(dead, timeout=30)
        except StartError as exc:
            self.log("reviving failed: %s" % exc)
        self.record_services()
        changes: dict[str, Any] = {"services": self.state["services"]}
        if "fleet" in dead:
            changes["scenario"] = None
        self.update_state(changes)

    def stop(self) -> None:
        order = [n for n in STOP_ORDER if n in self.services] + [n for n in self.services if n not in STOP_ORDER]
        for name in order:
            proc = self.services[name].proc
            if proc is not None and proc.poll() is None:
                proc.terminate()
        deadline = time.monotonic() + 5
        for name in order:
            proc = self.services[name].proc
            if proc is None:
                continue
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                self.log("%s ignored SIGTERM, killing it" % name)
                proc.kill()
                proc.wait()
        if self.plane is not None:
            self.plane.stop()
        self.log("all services stopped")

    def on_signal(self, signum: int, frame: object) -> None:
        self.stopping = True

    def on_revive(self, signum: int, frame: object) -> None:
        self.revive_requested = True


def main(argv: list[str]) -> int:
    state_dir = Path(argv[0]).resolve()
    supervisor = Supervisor(state_dir)
    signal.signal(signal.SIGTERM, supervisor.on_signal)
    signal.signal(signal.SIGINT, supervisor.on_signal)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    signal.signal(signal.SIGUSR1, supervisor.on_revive)
    write_pid(state_dir, SUPERVISOR, os.getpid())
    try:
        supervisor.start()
    except (StartError, ControlPlaneError, OSError, KeyError, ValueError) as exc:
        service = exc.service if isinstance(exc, StartError) else "supervisor"
        supervisor.log("start-up failed (%s): %s" % (service, exc))
        write_json(state_dir / ERROR_FILE, {"service": service, "error": str(exc)})
        supervisor.stop()
        return 1
    orphaned = False
    try:
        orphaned = supervisor.watch()
    finally:
        supervisor.stop()
    if orphaned:
        shutil.rmtree(state_dir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
