"""Run a real Kubernetes control plane on loopback: etcd, kube-apiserver, kube-controller-manager, metrics-server.

    with ControlPlane(run_dir) as plane:           # certificates, processes, CRDs; ready when it returns
        plane.kubectl("get", "deploy", "-A")
        plane.token("redis-storm", "redis-storm")  # a ServiceAccount token (TokenRequest)

Everything lives under ``run_dir``: ``pki/``, ``logs/<component>.log``, ``pids/<component>.pid``,
``etcd/`` (data), ``audit.log`` (JSON lines, every write with its user) and ``admin.kubeconfig``
(user ``sandbox-admin`` in system:masters). Each component runs in its own process group, carries
the sandbox marker in its environment and gets SIGTERM when the process that started it dies;
``stop()`` (also on a failed start) ends every group. A component that is not ready within its bound
fails the start with a ``ControlPlaneError`` naming it and its log.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import signal
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from stormctl.sandbox import procs
from stormctl.sandbox.kube import build, pki
from stormctl.sandbox.state import MARKER_ENV

CRD_DIR = build.GO_MODULE / "crds"
SERVICE_CIDR = "10.0.0.0/24"
SERVICE_ACCOUNT_ISSUER = "https://kubernetes.default.svc"
ADMIN_USER = "sandbox-admin"
METRICS_SERVER_USER = "system:metrics-server"
FIELD_MANAGER = "redis-storm-sandbox"
CONTROLLERS = (
    "deployment-controller",
    "replicaset-controller",
    "statefulset-controller",
    "horizontal-pod-autoscaler-controller",
    "garbage-collector-controller",
    "namespace-controller",
    "serviceaccount-controller",
    "pod-garbage-collector-controller",
    "clusterrole-aggregation-controller",  # fills the admin, edit and view ClusterRoles
)
# Seconds each component has to become ready (2 shared cores; the apiserver's first start bootstraps RBAC).
READY_BOUNDS = {"etcd": 30.0, "kube-apiserver": 90.0, "crds": 30.0, "kube-controller-manager": 60.0,
                "metrics-server": 60.0}
STOP_GRACE = 10.0

AUDIT_POLICY = {
    "apiVersion": "audit.k8s.io/v1",
    "kind": "Policy",
    "omitStages": ["RequestReceived"],
    "rules": [
        # who touched a secret or asked for a token, never the body
        {"level": "Metadata", "resources": [{"group": "", "resources": ["secrets", "serviceaccounts/token"]},
                                            {"group": "authentication.k8s.io", "resources": ["tokenreviews"]}]},
        # every write, by anyone, with what it sent
        {"level": "Request", "verbs": ["create", "update", "patch", "delete", "deletecollection"]},
        # the control plane's own reads are noise
        {"level": "None", "users": ["system:kube-controller-manager", "system:apiserver", METRICS_SERVER_USER]},
        {"level": "None", "userGroups": ["system:serviceaccounts:kube-system", "system:nodes"]},
        {"level": "None", "nonResourceURLs": ["*"]},
        # everyone else's reads, so a test can see that a read-only run read and did not write
        {"level": "Metadata"},
    ],
}


class ControlPlaneError(Exception):
    """The control plane could not start (the message names the component and its log) or a call to it failed."""


@dataclass
class Component:
    name: str
    process: subprocess.Popen[bytes]
    log: Path


@dataclass
class Ports:
    etcd: int = field(default_factory=procs.free_port)
    etcd_peer: int = field(default_factory=procs.free_port)
    apiserver: int = field(default_factory=procs.free_port)
    controller_manager: int = field(default_factory=procs.free_port)
    metrics_server: int = field(default_factory=procs.free_port)


def _flags(values: dict[str, object]) -> list[str]:
    return ["--%s=%s" % (name, value) for name, value in values.items()]


def _delegated(kubeconfig: str, port: int) -> dict[str, object]:
    """Flags of a component that calls the apiserver and checks its own callers through it, on loopback."""
    return {"kubeconfig": kubeconfig, "authentication-kubeconfig": kubeconfig, "authorization-kubeconfig": kubeconfig,
            "bind-address": procs.LOOPBACK, "secure-port": port}


def _b64(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode()


class ControlPlane:
    def __init__(self, run_dir: Path, binaries: dict[str, Path] | None = None) -> None:
        self.run_dir = Path(run_dir).resolve()
        self.binaries = binaries
        self.ports = Ports()
        self.sandbox_id = secrets.token_hex(8)
        self.components: list[Component] = []
        self.pki_dir = self.run_dir / "pki"
        self.log_dir = self.run_dir / "logs"
        self.pid_dir = self.run_dir / "pids"
        self.audit_log = self.run_dir / "audit.log"
        self.admin_kubeconfig = self.run_dir / "admin.kubeconfig"
        self.startup_seconds: dict[str, float] = {}

    @property
    def url(self) -> str:
        return "https://127.0.0.1:%d" % self.ports.apiserver

    # -- lifecycle -------------------------------------------------------------------------------------------

    def __enter__(self) -> ControlPlane:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        """Start every component and wait until each is ready; on any failure stop what was started and raise."""
        if self.binaries is None:
            try:
                self.binaries = build.installed()
            except build.BuildError as exc:
                raise ControlPlaneError(str(exc)) from exc
        for directory in (self.pki_dir, self.log_dir, self.pid_dir):
            directory.mkdir(parents=True, exist_ok=True)
        self._stop_leftovers()
        try:
            self._certificates()
            self._timed("etcd", self._start_etcd)
            self._timed("kube-apiserver", self._start_apiserver)
            self._timed("crds", self._bootstrap)
            self._timed("controllers", self._start_controllers)
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """SIGTERM each component's process group, last started first (the apiserver shuts down cleanly only
        while etcd is there), and SIGKILL one that is still running after its grace."""
        for component in reversed(self.components):
            procs.signal_group(component.process.pid, signal.SIGTERM)
            try:
                component.process.wait(timeout=STOP_GRACE)
            except subprocess.TimeoutExpired:
                procs.signal_group(component.process.pid, signal.SIGKILL)
                component.process.wait()
            # a child the component forked may outlive it in the group
            procs.signal_group(component.process.pid, signal.SIGKILL)
            (self.pid_dir / ("%s.pid" % component.name)).unlink(missing_ok=True)
        self.components = []

    def _stop_leftovers(self) -> None:
        """Groups a killed earlier run in this directory left behind (their pidfiles name them)."""
        for pidfile in self.pid_dir.glob("*.pid"):
            try:
                pid, marker = pidfile.read_text().split()
                if procs.has_marker(int(pid), marker):
                    procs.signal_group(int(pid), signal.SIGKILL)
            except (OSError, ValueError):
                pass
            pidfile.unlink(missing_ok=True)

    def _timed(self, step: str, action: Callable[[], None]) -> None:
        started = time.monotonic()
        action()
        self.startup_seconds[step] = round(time.monotonic() - started, 2)

    def _spawn(self, name: str, args: list[str]) -> Component:
        assert self.binaries is not None
        log = self.log_dir / ("%s.log" % name)
        env = dict(os.environ, **{MARKER_ENV: self.sandbox_id})
        with open(log, "ab") as out:
            process = subprocess.Popen(
                [str(self.binaries[name]), *args], stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                env=env, cwd=self.run_dir, start_new_session=True,
                # a SIGTERM'd apiserver can sit in graceful shutdown long after its etcd and launcher are gone
                preexec_fn=procs.child_setup(os.getpid(), signal.SIGKILL),
            )
        (self.pid_dir / ("%s.pid" % name)).write_text("%d %s\n" % (process.pid, self.sandbox_id))
        component = Component(name, process, log)
        self.components.append(component)
        return component

    def _wait_ready(self, component: Component, check: Callable[[], bool], what: str = "ready") -> None:
        bound = READY_BOUNDS[component.name]
        deadline = time.monotonic() + bound
        while time.monotonic() < deadline:
            code = component.process.poll()
            if code is not None:
                raise ControlPlaneError(
                    "%s exited with code %d before it was %s; its log: %s%s"
                    % (component.name, code, what, component.log, self._tail(component.log))
                )
            if check():
                return
            time.sleep(0.2)
        raise ControlPlaneError(
            "%s was not %s within %.0f s; its log: %s%s" % (component.name, what, bound, component.log,
                                                           self._tail(component.log))
        )

    @staticmethod
    def _tail(log: Path, lines: int = 8) -> str:
        try:
            text = log.read_text(errors="replace").strip().splitlines()[-lines:]
        except OSError:
            return ""
        return "\n  " + "\n  ".join(text) if text else ""

    # -- certificates and kubeconfigs ------------------------------------------------------------------------

    def _certificates(self) -> None:
        d = self.pki_dir
        self.ca = pki.new_ca(d, "ca")
        self.front_proxy_ca = pki.new_ca(d, "front-proxy-ca")
        self.apiserver_cert = pki.issue(
            self.ca, d, "apiserver", "kube-apiserver",
            server_names=("127.0.0.1", "localhost", "10.0.0.1", "kubernetes", "kubernetes.default",
                          "kubernetes.default.svc", "kubernetes.default.svc.cluster.local"),
        )
        self.kubelet_client = pki.issue(self.ca, d, "apiserver-kubelet-client", "kube-apiserver-kubelet-client",
                                        organization="system:masters", client=True)
        self.front_proxy_client = pki.issue(self.front_proxy_ca, d, "front-proxy-client", "front-proxy-client",
                                            client=True)
        self.service_account_key = pki.new_signing_key(d, "sa")
        self.metrics_server_cert = pki.issue(self.ca, d, "metrics-server", "metrics-server",
                                             server_names=("metrics-server.kube-system.svc", "localhost", "127.0.0.1"))
        admin = pki.issue(self.ca, d, "admin", ADMIN_USER, organization="system:masters", client=True)
        self._write_kubeconfig(self.admin_kubeconfig, ADMIN_USER, {
            "client-certificate-data": _b64(admin.cert), "client-key-data": _b64(admin.key)})
        for name, user in (("kube-controller-manager", "system:kube-controller-manager"),
                           ("metrics-server", METRICS_SERVER_USER)):
            pair = pki.issue(self.ca, d, name + "-client", user, client=True)
            self._write_kubeconfig(self.pki_dir / ("%s.kubeconfig" % name), user, {
                "client-certificate": str(pair.cert), "client-key": str(pair.key)})

    def _write_kubeconfig(self, path: Path, user: str, credentials: dict[str, str], namespace: str = "default") -> Path:
        config = {
            "apiVersion": "v1", "kind": "Config", "current-context": "sandbox",
            "clusters": [{"name": "sandbox", "cluster": {"server": self.url,
                                                         "certificate-authority-data": _b64(self.ca.cert)}}],
            "users": [{"name": user, "user": credentials}],
            "contexts": [{"name": "sandbox", "context": {"cluster": "sandbox", "user": user, "namespace": namespace}}],
        }
        path.write_text(json.dumps(config, indent=2) + "\n")
        path.chmod(0o600)
        return path

    def write_token_kubeconfig(self, path: Path, user: str, token: str, namespace: str = "default") -> Path:
        """A kubeconfig that authenticates with a bearer token (a ServiceAccount's, from `token()`)."""
        return self._write_kubeconfig(Path(path), user, {"token": token}, namespace)

    # -- components ------------------------------------------------------------------------------------------

    def _start_etcd(self) -> None:
        etcd = self._spawn("etcd", [
            "--data-dir", str(self.run_dir / "etcd"),
            "--listen-client-url", "http://127.0.0.1:%d" % self.ports.etcd,
            "--listen-peer-url", "http://127.0.0.1:%d" % self.ports.etcd_peer,
        ])

        def healthy() -> bool:
            try:
                with urllib.request.urlopen("http://127.0.0.1:%d/health" % self.ports.etcd, timeout=2) as response:
                    return bool(json.loads(response.read()).get("health") == "true")
            except (OSError, ValueError):
                return False

        self._wait_ready(etcd, healthy)

    def _admin_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=str(self.ca.cert))
        admin = pki.Pair(self.pki_dir / "admin.crt", self.pki_dir / "admin.key")
        context.load_cert_chain(str(admin.cert), str(admin.key))
        return context

    def get(self, path: str, timeout: float = 5.0) -> tuple[int, bytes]:
        """GET `path` from the apiserver as the admin: (status, body); status 0 when no answer came."""
        try:
            with urllib.request.urlopen(self.url + path, timeout=timeout, context=self._admin_context()) as response:
                return int(response.status), response.read()
        except urllib.error.HTTPError as exc:
            return int(exc.code), exc.read()
        except OSError:
            return 0, b""

    def _start_apiserver(self) -> None:
        policy = self.run_dir / "audit-policy.yaml"
        policy.write_text(json.dumps(AUDIT_POLICY, indent=2) + "\n")
        p = self.pki_dir
        apiserver = self._spawn("kube-apiserver", _flags({
            "etcd-servers": "http://127.0.0.1:%d" % self.ports.etcd,
            "bind-address": "127.0.0.1",
            "advertise-address": "127.0.0.1",
            "secure-port": self.ports.apiserver,
            "tls-cert-file": self.apiserver_cert.cert,
            "tls-private-key-file": self.apiserver_cert.key,
            "client-ca-file": self.ca.cert,
            "service-account-key-file": self.service_account_key.cert,
            "service-account-signing-key-file": self.service_account_key.key,
            "service-account-issuer": SERVICE_ACCOUNT_ISSUER,
            "service-cluster-ip-range": SERVICE_CIDR,
            "authorization-mode": "Node,RBAC",
            "enable-admission-plugins": "NodeRestriction",
            "audit-policy-file": policy,
            "audit-log-path": self.audit_log,
            "audit-log-format": "json",
            "audit-log-maxsize": "200",
            "kubelet-client-certificate": self.kubelet_client.cert,
            "kubelet-client-key": self.kubelet_client.key,
            # node agents listen on loopback: never look a node's name up in DNS
            "kubelet-preferred-address-types": "InternalIP",
            # the aggregation layer, for metrics.k8s.io
            "requestheader-client-ca-file": self.front_proxy_ca.cert,
            "requestheader-allowed-names": "front-proxy-client",
            "requestheader-username-headers": "X-Remote-User",
            "requestheader-group-headers": "X-Remote-Group",
            "requestheader-extra-headers-prefix": "X-Remote-Extra-",
            "proxy-client-cert-file": self.front_proxy_client.cert,
            "proxy-client-key-file": self.front_proxy_client.key,
            # no kube-proxy on loopback: the kubernetes Service gets no endpoints
            "endpoint-reconciler-type": "none",
            "profiling": "false",
            "cert-dir": (p / "apiserver-generated"),
        }))
        self._wait_ready(apiserver, lambda: self.get("/readyz")[0] == 200)

    def _bootstrap_objects(self) -> list[dict[str, Any]]:
        """metrics-server's identity and rights, and its APIService (reached at localhost through an ExternalName)."""
        rbac = "rbac.authorization.k8s.io/v1"
        user = [{"kind": "User", "apiGroup": "rbac.authorization.k8s.io", "name": METRICS_SERVER_USER}]
        return [
            {"apiVersion": rbac, "kind": "ClusterRole", "metadata": {"name": "system:metrics-server"},
             "rules": [{"apiGroups": [""], "resources": ["nodes/metrics"], "verbs": ["get"]},
                       {"apiGroups": [""], "resources": ["pods", "nodes"], "verbs": ["get", "list", "watch"]}]},
            {"apiVersion": rbac, "kind": "ClusterRoleBinding", "metadata": {"name": "system:metrics-server"},
             "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                         "name": "system:metrics-server"}, "subjects": user},
            {"apiVersion": rbac, "kind": "ClusterRoleBinding",
             "metadata": {"name": "metrics-server:system:auth-delegator"},
             "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                         "name": "system:auth-delegator"}, "subjects": user},
            {"apiVersion": rbac, "kind": "RoleBinding",
             "metadata": {"name": "metrics-server-auth-reader", "namespace": "kube-system"},
             "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                         "name": "extension-apiserver-authentication-reader"}, "subjects": user},
            {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "metrics-server", "namespace": "kube-system"},
             "spec": {"type": "ExternalName", "externalName": "localhost"}},
            {"apiVersion": "apiregistration.k8s.io/v1", "kind": "APIService",
             "metadata": {"name": "v1beta1.metrics.k8s.io"},
             "spec": {"group": "metrics.k8s.io", "version": "v1beta1", "groupPriorityMinimum": 100,
                      "versionPriority": 100, "caBundle": _b64(self.ca.cert),
                      "service": {"name": "metrics-server", "namespace": "kube-system",
                                  "port": self.ports.metrics_server}}},
        ]

    def _bootstrap(self) -> None:
        manifest = self.run_dir / "bootstrap.json"
        manifest.write_text(json.dumps({"apiVersion": "v1", "kind": "List", "items": self._bootstrap_objects()}))
        self.kubectl("apply", "--server-side", "--field-manager", FIELD_MANAGER,
                     "-f", str(manifest), "-f", str(CRD_DIR))
        crds = sorted(p.stem.split("_", 1)[1] + "." + p.stem.split("_", 1)[0] for p in CRD_DIR.glob("*.yaml"))
        result = self.kubectl("wait", "--for=condition=Established", "--timeout=%ds" % READY_BOUNDS["crds"],
                              *("crd/%s" % name for name in crds), check=False)
        if result.returncode != 0:
            raise ControlPlaneError(
                "the sandbox CRDs (%s) were not Established within %.0f s: %s; the apiserver's log: %s"
                % (", ".join(crds), READY_BOUNDS["crds"], result.stderr.strip(), self.log_dir / "kube-apiserver.log")
            )

    def _start_controllers(self) -> None:
        p = self.pki_dir
        kcm_config = str(p / "kube-controller-manager.kubeconfig")
        controller_manager = self._spawn("kube-controller-manager", _flags({
            **_delegated(kcm_config, self.ports.controller_manager),
            "cert-dir": (p / "kube-controller-manager-generated"),
            "leader-elect": "false",
            "use-service-account-credentials": "true",
            "controllers": ",".join(CONTROLLERS),
            "root-ca-file": self.ca.cert,
            "service-cluster-ip-range": SERVICE_CIDR,
        }))
        ms_config = str(p / "metrics-server.kubeconfig")
        metrics_server = self._spawn("metrics-server", _flags({
            **_delegated(ms_config, self.ports.metrics_server),
            "tls-cert-file": self.metrics_server_cert.cert,
            "tls-private-key-file": self.metrics_server_cert.key,
            "kubelet-preferred-address-types": "InternalIP",
            "kubelet-use-node-status-port": "true",
            "kubelet-insecure-tls": "true",
            "metric-resolution": "15s",
        }))
        self._wait_ready(controller_manager, lambda: self._healthz(self.ports.controller_manager))
        # ready means the aggregation layer reaches it: metrics.k8s.io answers through the apiserver
        self._wait_ready(metrics_server, lambda: self.get("/apis/metrics.k8s.io/v1beta1")[0] == 200,
                         what="served as metrics.k8s.io")

    @staticmethod
    def _healthz(port: int) -> bool:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE  # its serving certificate is self-signed, made at start
        try:
            with urllib.request.urlopen("https://127.0.0.1:%d/healthz" % port, timeout=2, context=context) as resp:
                return bool(resp.status == 200)
        except OSError:
            return False

    # -- using it --------------------------------------------------------------------------------------------

    def kubectl(self, *args: str, kubeconfig: Path | None = None, check: bool = True,
                timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
        """Run the built kubectl (admin unless `kubeconfig` is given); raises ControlPlaneError when `check` fails."""
        assert self.binaries is not None
        command = [str(self.binaries["kubectl"]), "--kubeconfig", str(kubeconfig or self.admin_kubeconfig),
                   "--cache-dir", str(self.run_dir / "kubectl-cache"), *args]
        result = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
        if check and result.returncode != 0:
            raise ControlPlaneError("kubectl %s failed: %s" % (" ".join(args), result.stderr.strip()))
        return result

    def token(self, namespace: str, service_account: str, duration: str = "1h") -> str:
        """A bound token for the ServiceAccount (TokenRequest, as `kubectl create token` does)."""
        return self.kubectl("create", "token", service_account, "-n", namespace, "--duration", duration).stdout.strip()

    def audit_events(self) -> list[dict[str, Any]]:
        """Every event of the audit log, oldest first (the log is written before each response is sent)."""
        try:
            lines = self.audit_log.read_text().splitlines()
        except FileNotFoundError:
            return []
        return [json.loads(line) for line in lines if line.strip()]

    def pids(self) -> dict[str, int]:
        return {c.name: c.process.pid for c in self.components if c.process.poll() is None}

    def resident_memory(self) -> int:
        """Sum of the components' resident set sizes, in bytes."""
        total = 0
        for pid in self.pids().values():
            try:
                status = Path("/proc/%d/status" % pid).read_text()
            except OSError:
                continue
            for line in status.splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
        return total
