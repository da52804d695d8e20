"""The Kubernetes API emulator as a running process, for the tests and the benchmarks alike.

``running_kubeapi(state_dir)`` starts ``python -m stormctl.sandbox.kubeapi`` on a free loopback port and
stops its process group on exit; ``KubeApi`` seeds it, reads its audit log, sets faults and writes
kubeconfigs; ``namespace``, ``deployment`` and ``pod`` build objects to seed. tests/fixtures/kubeapi.py
documents them and wraps them in pytest fixtures.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any, Optional, Union

SRC = Path(__file__).resolve().parents[3]
START_TIMEOUT = 15.0
DEFAULT_TOKENS = ("admin", "operator", "readonly")
READ_ALL = [{"apiGroups": ["*"], "resources": ["*"], "verbs": ["get", "list", "watch"]}]


class EmulatorDied(RuntimeError):
    """The emulator process exited while still in use."""


class KubeApi:
    """A running emulator and the helpers tests use against it (see the module docstring)."""

    def __init__(self, state_dir: Path, url: str, ca_file: Optional[Path] = None) -> None:
        self.state_dir = state_dir
        self.url = url
        self.ca_file = ca_file
        self.audit_log = state_dir / "kubeapi-audit.jsonl"
        self.tokens: dict[str, str] = {}
        self.users: dict[str, str] = {}
        self._specs: dict[str, dict[str, Any]] = {}
        self.kubeconfig = state_dir / "kubeconfig"
        self.proc: Optional[subprocess.Popen[bytes]] = None
        self.tls_url: Optional[str] = None

    # ---- identities -------------------------------------------------------------------------------------
    def add_token(self, name: str, rules: Union[str, list[dict[str, Any]], None] = None, user: Optional[str] = None,
                  rules_from: Union[str, Path, None] = None, role: Union[str, list[str], None] = None,
                  namespaces: Optional[list[str]] = None) -> str:
        token = secrets.token_hex(16)
        spec: dict[str, Any] = {"user": user or name}
        if rules_from is not None:
            spec.update(rules_from=str(rules_from), role=role)
        else:
            spec["rules"] = rules if rules is not None else []
        if namespaces is not None:
            spec["namespaces"] = namespaces
        self._specs[token] = spec
        self.tokens[name] = token
        self.users[name] = spec["user"]
        self._write_tokens()
        return token

    def _write_tokens(self) -> None:
        tmp = self.state_dir / "tokens.json.tmp"
        tmp.write_text(json.dumps(self._specs), encoding="utf-8")
        os.replace(tmp, self.state_dir / "tokens.json")

    def reset(self) -> None:
        """Back to a fresh server: system namespaces only, empty audit log, no faults, the three default tokens."""
        if self.proc is not None and self.proc.poll() is not None:
            log = self.state_dir / "kubeapi.log"
            raise EmulatorDied("the kubeapi emulator died (exit %s): %s" % (self.proc.returncode,
                                                                           log.read_text()[-2000:]))
        self.request("POST", "/_sandbox/reset")
        keep = {name: self.tokens[name] for name in DEFAULT_TOKENS}
        self._specs = {token: self._specs[token] for token in keep.values()}
        self.tokens, self.users = dict(keep), {name: self.users[name] for name in DEFAULT_TOKENS}
        self._write_tokens()

    def write_kubeconfig(self, path: Union[str, Path], name: str = "operator",
                         namespace: Optional[str] = None) -> Path:
        from stormctl.sandbox.kubeapi import write_kubeconfig

        return write_kubeconfig(path, self.url, self.tokens[name], user=self.users[name], namespace=namespace,
                                ca_file=self.ca_file)

    def client(self, name: str = "operator") -> Any:
        import kubernetes

        config = kubernetes.client.Configuration()
        config.host = self.url
        config.api_key = {"authorization": "Bearer " + self.tokens[name]}
        if self.ca_file is not None:
            config.ssl_ca_cert = str(self.ca_file)
        return kubernetes.client.ApiClient(config)

    # ---- /_sandbox --------------------------------------------------------------------------------------
    def request(self, method: str, path: str, body: Any = None, token: str = "admin",
                content_type: str = "application/json") -> Any:
        code, raw = self._send(method, path, body, token, content_type)
        if code >= 400:
            raise AssertionError("%s %s -> %s: %s" % (method, path, code, raw.decode()))
        return json.loads(raw) if raw else None

    def ssl_context(self) -> Optional[ssl.SSLContext]:
        return ssl.create_default_context(cafile=str(self.ca_file)) if self.ca_file is not None else None

    def raw(self, method: str, path: str, body: Any = None, token: str = "operator",
            content_type: str = "application/json") -> tuple[int, Any]:
        """An API request without the client's own checks: (HTTP status, decoded JSON body)."""
        code, raw = self._send(method, path, body, token, content_type)
        try:
            return code, json.loads(raw) if raw else None
        except ValueError:
            return code, raw.decode()

    def _send(self, method: str, path: str, body: Any, token: str, content_type: str) -> tuple[int, bytes]:
        data = None
        if body is not None:
            data = body.encode() if isinstance(body, str) else json.dumps(body).encode()
        req = urllib.request.Request(self.url + path, data=data, method=method)
        req.add_header("Authorization", "Bearer " + self.tokens[token])
        req.add_header("Content-Type", content_type)
        try:
            with urllib.request.urlopen(req, timeout=10, context=self.ssl_context()) as resp:
                return int(resp.status), bytes(resp.read())
        except urllib.error.HTTPError as exc:
            return exc.code, bytes(exc.read())

    def audit(self, since: Optional[int] = None) -> list[dict[str, Any]]:
        query = "?since=%d" % since if since is not None else ""
        return list(self.request("GET", "/_sandbox/audit" + query))

    def last_seq(self) -> int:
        entries = self.audit()
        return int(entries[-1]["seq"]) if entries else 0

    def writes(self, user: Optional[str] = None, include_dry_run: bool = False,
               since: Optional[int] = None) -> list[dict[str, Any]]:
        return [e for e in self.audit(since) if e["code"] is not None and 200 <= e["code"] < 300
                and (user is None or e["user"] == user) and (include_dry_run or not e["dry_run"])]

    def fault(self, **spec: Any) -> dict[str, Any]:
        return dict(self.request("POST", "/_sandbox/faults", spec))

    def faults(self) -> list[dict[str, Any]]:
        return list(self.request("GET", "/_sandbox/faults"))

    def clear_faults(self) -> None:
        self.request("DELETE", "/_sandbox/faults")

    def seed(self, objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return list(self.request("POST", "/_sandbox/objects", objects))

    def log(self, namespace: str, pod: str, text: str, container: Optional[str] = None,
            previous: bool = False) -> int:
        params = {k: v for k, v in (("container", container), ("previous", "true" if previous else None)) if v}
        query = "?" + urllib.parse.urlencode(params) if params else ""
        result = self.request("POST", "/_sandbox/pods/%s/%s/log%s" % (namespace, pod, query), text,
                              content_type="text/plain")
        return int(result["lines"])

    def pod_metrics(self, namespace: str, pod: str, usage: dict[str, dict[str, str]]) -> dict[str, Any]:
        body = {"containers": [{"name": name, "usage": dict(values)} for name, values in usage.items()]}
        return dict(self.request("PUT", "/_sandbox/podmetrics/%s/%s" % (namespace, pod), body))

    # ---- kubectl ----------------------------------------------------------------------------------------
    def kubectl(self, *args: str, token: str = "operator", timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
        kubectl = shutil.which("kubectl")
        if kubectl is None:
            raise RuntimeError("kubectl is not installed: run `make setup`")
        config = self.write_kubeconfig(self.state_dir / ("kubeconfig-%s" % token), token)
        return subprocess.run([kubectl, "--kubeconfig", str(config), "--cache-dir", str(self.state_dir / "kcache"),
                               *args], capture_output=True, text=True, timeout=timeout, check=False)


def _wait_ready(proc: subprocess.Popen[bytes], state_dir: Path, log: Path) -> dict[str, Any]:
    deadline = time.monotonic() + START_TIMEOUT
    ready = state_dir / "kubeapi.json"
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError("kubeapi exited with %s: %s" % (proc.returncode, log.read_text()))
        if ready.exists():
            info = json.loads(ready.read_text())
            context = ssl.create_default_context(cafile=info["ca_file"]) if info.get("ca_file") else None
            try:
                with urllib.request.urlopen(info["url"] + "/readyz", timeout=1, context=context) as resp:
                    if resp.status == 200:
                        return dict(info)
            except OSError:
                pass
        time.sleep(0.02)
    raise RuntimeError("kubeapi did not become ready within %.0fs: %s" % (START_TIMEOUT, log.read_text()))


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=5)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            pass
    if proc.poll() is None:
        with suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=5)


@contextmanager
def running_kubeapi(state_dir: Path, seed: Optional[Path] = None, port: Optional[int] = None,
                    tls: bool = True, tls_listener: bool = False) -> Iterator[KubeApi]:
    """Start the emulator in its own process group with admin/operator/readonly tokens; stop it on exit.

    With ``tls`` (the default, as kubectl sends tokens only over https) ``url`` is https and ``ca_file`` is set;
    ``tls=False, tls_listener=True`` serves http on ``url`` and https on ``tls_url`` (as the sandbox may).
    """
    state_dir.mkdir(parents=True, exist_ok=True)
    (state_dir / "kubeapi.json").unlink(missing_ok=True)
    holder = KubeApi(state_dir, "")
    holder.add_token("admin", "*", user="sandbox-admin")
    holder.add_token("operator", "*", user="storm-operator")
    holder.add_token("readonly", READ_ALL, user="storm-readonly")
    cmd = [sys.executable, "-m", "stormctl.sandbox.kubeapi", "--listen", "127.0.0.1:%d" % (port or 0),
           "--state-dir", str(state_dir)]
    if seed is not None:
        cmd += ["--seed", str(seed)]
    if tls:
        cmd.append("--tls")
    if tls_listener:
        cmd += ["--listen-tls", "127.0.0.1:0"]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(SRC), os.environ.get("PYTHONPATH")])))
    log = state_dir / "kubeapi.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    holder.proc = proc
    try:
        info = _wait_ready(proc, state_dir, log)
        holder.url = info["url"]
        holder.ca_file = Path(info["ca_file"]) if info.get("ca_file") and tls else None
        holder.tls_url = info.get("tls_url")
        holder.write_kubeconfig(holder.kubeconfig, "operator")
        yield holder
    finally:
        _stop(proc)


# ---- object builders for seeding (plain dicts, as `kubectl get -o json` shows them) ------------------------------
def namespace(name: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}


def deployment(ns: str, name: str, replicas: int = 1, env: Optional[dict[str, str]] = None,
               labels: Optional[dict[str, str]] = None, kind: str = "Deployment") -> dict[str, Any]:
    """A Deployment (or StatefulSet with ``kind``) selecting ``app=<name>``, one container ``app``."""
    pod_labels = {"app": name, **(labels or {})}
    container: dict[str, Any] = {"name": "app", "image": "registry.local/%s:1.0" % name}
    if env:
        container["env"] = [{"name": k, "value": v} for k, v in env.items()]
    spec: dict[str, Any] = {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
                            "template": {"metadata": {"labels": pod_labels}, "spec": {"containers": [container]}}}
    if kind == "StatefulSet":
        spec["serviceName"] = name
    return {"apiVersion": "apps/v1", "kind": kind, "metadata": {"name": name, "namespace": ns, "labels": pod_labels},
            "spec": spec}


def pod(ns: str, name: str, labels: Optional[dict[str, str]] = None, ip: Optional[str] = None,
        phase: str = "Running", restarts: int = 0, containers: tuple[str, ...] = ("app",),
        owner: Optional[dict[str, Any]] = None) -> dict[str, Any]:
    """A Pod with a status (seed it: a create through the API resets status, as on a real cluster)."""
    meta: dict[str, Any] = {"name": name, "namespace": ns, "labels": dict(labels or {})}
    if owner is not None:
        meta["ownerReferences"] = [{"apiVersion": owner["apiVersion"], "kind": owner["kind"],
                                    "name": owner["metadata"]["name"], "uid": owner["metadata"]["uid"],
                                    "controller": True, "blockOwnerDeletion": True}]
    status: dict[str, Any] = {"phase": phase, "containerStatuses": [
        {"name": c, "ready": phase == "Running", "restartCount": restarts, "image": "registry.local/app:1.0",
         "imageID": "", "state": {"running": {"startedAt": "2026-01-01T00:00:00Z"}}} for c in containers]}
    if ip:
        status.update(podIP=ip, podIPs=[{"ip": ip}])
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta,
            "spec": {"containers": [{"name": c, "image": "registry.local/app:1.0"} for c in containers]},
            "status": status}
