"""Start, inspect and stop the local sandbox; start and end its storms.

`up` hands the work to a detached supervisor (`stormctl.sandbox.supervisor`) and returns once
every service is healthy; `down` stops whatever that sandbox left, even after a crash.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import uuid
from pathlib import Path
from typing import Any, Iterator

from stormctl.errors import StormctlError
from stormctl.sandbox import cluster, procs
from stormctl.sandbox.state import (
    CONTROL_PLANE,
    EMULATOR,
    ERROR_FILE,
    KUBE_BACKEND_ENV,
    KUBE_BACKENDS,
    MARKER_ENV,
    PASSWORD_FILE,
    REPO,
    RULES_FILE,
    SPEC_FILE,
    STATE_FILE,
    SUPERVISOR,
    SUPERVISOR_LOG,
    new_secret,
    read_json,
    read_pids,
    read_state,
    resolve_dir,
    write_json,
    write_pid,
    write_private,
)
from stormctl.sandbox.supervisor import PROMETHEUS, REDIS_EXPORTER, REDIS_SERVER

DEBS = {REDIS_SERVER: "redis-server", REDIS_EXPORTER: "prometheus-redis-exporter", PROMETHEUS: "prometheus"}
# Redis needs maxclients + 32 descriptors (the rest: its own files and listeners).
REDIS_RESERVED_FDS = 32
BINARIES = {"redis": REDIS_SERVER, "exporter": REDIS_EXPORTER, "prometheus": PROMETHEUS}
TOKEN_ROLES = ("admin", "operator", "readonly", "controller")


def _sandbox_id(state_dir: Path) -> str | None:
    spec = read_json(state_dir / SPEC_FILE)
    return str(spec["sandbox_id"]) if isinstance(spec, dict) and "sandbox_id" in spec else None


class _Owner:
    """Decides whether a pid belongs to one sandbox (pids get reused: never trust a pid file alone)."""

    def __init__(self, state_dir: Path) -> None:
        self.sandbox_id = _sandbox_id(state_dir)
        state = read_state(state_dir) or {}
        self.pgid = state.get("pgid") or read_pids(state_dir).get(SUPERVISOR)

    def owns(self, pid: int, service: str | None = None) -> bool:
        if not procs.alive(pid):
            return False
        if self.sandbox_id is not None and procs.has_marker(pid, self.sandbox_id):
            return True
        # redis-server rewrites its process title over its environment, so the marker can be gone:
        # then the binary the pid file names and the sandbox's process group must both match.
        binary = BINARIES.get(service or "")
        return (
            binary is not None
            and self.pgid is not None
            and procs.process_group(pid) == int(self.pgid)
            and procs.executable(pid) == os.path.realpath(binary)
        )


def _supervisor_pid(state_dir: Path) -> int | None:
    pid = read_pids(state_dir).get(SUPERVISOR)
    return pid if pid is not None and _Owner(state_dir).owns(pid) else None


def _check_prerequisites(maxclients: int) -> None:
    for binary, package in DEBS.items():
        if not os.access(binary, os.X_OK):
            raise StormctlError(
                "%s is not installed: run `make setup` or `sudo apt-get install -y %s`" % (binary, package)
            )
    if not RULES_FILE.is_file():
        raise StormctlError("the alert rules %s are missing: restore them from git" % RULES_FILE)
    if maxclients < 1:
        raise StormctlError("--maxclients must be at least 1 (got %d)" % maxclients)
    _, hard = procs.nofile_limit()
    if hard >= 0 and maxclients + REDIS_RESERVED_FDS > hard:
        raise StormctlError(
            "maxclients %d needs %d file descriptors but the hard limit (ulimit -Hn) is %d: "
            "pick --maxclients %d or less, or raise the limit" % (maxclients, maxclients + REDIS_RESERVED_FDS, hard,
                                                                 hard - REDIS_RESERVED_FDS)
        )


@contextlib.contextmanager
def _dir_lock(state_dir: Path) -> Iterator[None]:
    """Serialise `up` and `down` on one state directory (a lock on its parent: no lock file is left)."""
    state_dir.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(state_dir.parent, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _claim_dir(state_dir: Path) -> None:
    """Create the state directory, refusing when a live sandbox owns it; clear a dead one's leftovers."""
    pid = _supervisor_pid(state_dir) if state_dir.is_dir() else None
    if pid is not None:
        raise StormctlError(
            "a sandbox is already running in %s (supervisor pid %d): use it, run `stormctl sandbox down` first, "
            "or pick another --dir" % (state_dir, pid)
        )
    if state_dir.exists():
        _down(state_dir)
    try:
        state_dir.mkdir(mode=0o700)
    except FileExistsError as exc:
        raise StormctlError("another `stormctl sandbox up` is starting in %s right now" % state_dir) from exc


def _spawn_supervisor(state_dir: Path, sandbox_id: str) -> subprocess.Popen[bytes]:
    env = dict(os.environ)
    env[MARKER_ENV] = sandbox_id
    src = str(REPO / "src")
    env["PYTHONPATH"] = os.pathsep.join([src] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    with open(state_dir / SUPERVISOR_LOG, "ab") as log:
        # A session of its own: the sandbox outlives this CLI, and its process group is the sandbox's pgid.
        return subprocess.Popen(
            [sys.executable, "-m", "stormctl.sandbox.supervisor", str(state_dir)],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=str(state_dir),
            start_new_session=True,
            close_fds=True,
        )


def _log_tail(state_dir: Path, lines: int = 15) -> str:
    try:
        return "\n".join((state_dir / SUPERVISOR_LOG).read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def _await_ready(state_dir: Path, supervisor: subprocess.Popen[bytes], timeout: float) -> None:
    """Wait for state.json to say ready; on failure the message carries the logs (the directory goes)."""
    deadline = time.monotonic() + timeout
    while True:
        state = read_state(state_dir)
        if state is not None and state.get("status") == "ready":
            return
        error = read_json(state_dir / ERROR_FILE)
        if isinstance(error, dict):
            raise StormctlError(
                "the sandbox did not start, so it was stopped again: %s\nFix the cause and run "
                "`stormctl sandbox up` again." % error.get("error")
            )
        if supervisor.poll() is not None:
            raise StormctlError(
                "the sandbox supervisor exited with code %s during start-up:\n%s"
                % (supervisor.returncode, _log_tail(state_dir))
            )
        if time.monotonic() > deadline:
            raise StormctlError(
                "the sandbox was not healthy within %.0f s, so it was stopped again (a busy machine may need "
                "`--timeout`); last supervisor log lines:\n%s" % (timeout, _log_tail(state_dir))
            )
        time.sleep(0.05)


def up(
    state_dir: str | os.PathLike[str] | None = None,
    maxclients: int = 1000,
    scenario: str | None = None,
    with_kubeapi: bool = True,
    with_fleet: bool = True,
    timeout: float | None = None,
    owner_pid: int | None = None,
    kube: str | None = None,
) -> dict[str, Any]:
    """Start a sandbox in `state_dir` and return its status once every service is healthy.

    `kube` picks its Kubernetes: "control-plane" (etcd, kube-apiserver, kube-controller-manager and
    metrics-server from `make kube`, with the fleet as the node agent) or "emulator"; unset, it is
    $STORM_SANDBOX_KUBE, else the emulator.

    With `owner_pid` (a test session, say) the sandbox stops itself and removes its directory
    when that process is gone, so a killed test run leaves nothing behind.
    """
    path = resolve_dir(state_dir)
    _check_prerequisites(maxclients)
    backend = kube or os.environ.get(KUBE_BACKEND_ENV) or EMULATOR
    if backend not in KUBE_BACKENDS:
        raise StormctlError("unknown Kubernetes backend %r (from %s): pick one of %s" % (
            backend, "--kube" if kube else KUBE_BACKEND_ENV, ", ".join(KUBE_BACKENDS)))
    if timeout is None:
        # the control plane's first start bootstraps RBAC and waits for metrics-server's APIService
        timeout = 240.0 if backend == CONTROL_PLANE else 90.0
    if with_fleet and not with_kubeapi:
        raise StormctlError("the fleet needs the kube API emulator: drop --no-kubeapi or add --no-fleet")
    with _dir_lock(path):
        _claim_dir(path)
        sandbox_id = uuid.uuid4().hex
        password = new_secret()
        write_private(path / PASSWORD_FILE, password + "\n")
        write_json(
            path / SPEC_FILE,
            {
                "sandbox_id": sandbox_id,
                "maxclients": maxclients,
                "redis_password": password,
                "tokens": {role: new_secret() for role in TOKEN_ROLES},
                "with_kubeapi": with_kubeapi,
                "kube": backend,
                "with_fleet": with_fleet,
                "owner_pid": owner_pid,
            },
        )
        supervisor = _spawn_supervisor(path, sandbox_id)
        write_pid(path, SUPERVISOR, supervisor.pid)
    try:
        _await_ready(path, supervisor, timeout)
    except BaseException:
        down(path)
        _reap(supervisor.pid)
        raise
    if scenario:
        storm(scenario, path)
    return status(path)


def _reap(pid: int) -> None:
    """Collect the supervisor's exit status when it is our child (no zombie left in a long-lived caller)."""
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def _looks_like_sandbox(path: Path) -> bool:
    return path.is_dir() and (not any(path.iterdir()) or (path / SPEC_FILE).exists() or (path / PASSWORD_FILE).exists())


def down(state_dir: str | os.PathLike[str] | None = None, timeout: float = 10.0) -> dict[str, Any]:
    """Stop the sandbox in `state_dir` and remove the directory; safe to run any number of times."""
    path = resolve_dir(state_dir)
    if not path.exists():
        return {"dir": str(path), "stopped": False, "message": "no sandbox in %s" % path}
    with _dir_lock(path):
        return _down(path, timeout)


def _down(path: Path, timeout: float = 10.0) -> dict[str, Any]:
    if not path.exists():
        return {"dir": str(path), "stopped": False, "message": "no sandbox in %s" % path}
    if not _looks_like_sandbox(path):
        raise StormctlError("%s is not a sandbox directory (no %s): refusing to remove it" % (path, SPEC_FILE))
    owner = _Owner(path)
    state = read_state(path) or {}
    pids = read_pids(path)
    supervisor = pids.get(SUPERVISOR)
    if supervisor is not None and owner.owns(supervisor):
        procs.signal_pid(supervisor, signal.SIGTERM)
        procs.wait_gone([supervisor], timeout)
    if supervisor is not None:
        _reap(supervisor)

    leftovers = {pid for name, pid in pids.items() if owner.owns(pid, name)}
    if owner.sandbox_id is not None:
        leftovers.update(procs.marked_processes(owner.sandbox_id))
    if owner.pgid and leftovers:
        members = [p for p in procs.group_members(int(owner.pgid)) if procs.alive(p)]
        if members and all(p in leftovers for p in members):
            procs.signal_group(int(owner.pgid), signal.SIGKILL)
    for pid in leftovers:
        procs.signal_pid(pid, signal.SIGKILL)
    survivors = procs.wait_gone(leftovers, 5.0)
    if survivors:
        raise StormctlError("could not stop sandbox processes %s: kill them by hand, then run down again" % survivors)

    ports = [int(s[key]) for s in (state.get("services") or {}).values() for key in ("port", "tls_port")
             if s.get(key)]
    # Once our processes are gone another program may take a freed port: only our own listeners count.
    candidates = set(pids.values()) | (set(procs.marked_processes(owner.sandbox_id)) if owner.sandbox_id else set())
    ours = [pid for port in ports for pid in procs.listening_among(candidates, port) if owner.owns(pid)]
    if ours:
        raise StormctlError("sandbox processes %s still listen on its ports: kill them, then run down again" % ours)
    shutil.rmtree(path, ignore_errors=True)
    if path.exists():
        raise StormctlError("could not remove %s: remove it by hand" % path)
    return {"dir": str(path), "stopped": True, "killed": sorted(leftovers)}


def _healthy(name: str, info: dict[str, Any], state: dict[str, Any]) -> bool:
    port = int(info.get("port") or 0)
    host = procs.LOOPBACK
    if name == "redis":
        import redis

        try:
            client = redis.Redis(host=host, port=port, password=state["redis"]["password"], socket_timeout=1)
            try:
                return bool(client.ping())
            finally:
                client.close()
        except redis.RedisError as exc:
            # At maxclients Redis is alive but refuses us: that is a storm, not an outage.
            return "max number of clients" in str(exc)
    if info.get("control_plane"):
        return _control_plane_healthy(name, port, state)
    paths = {"exporter": "/metrics", "prometheus": "/-/ready", "kubeapi": "/readyz", "fleet": "/status"}
    return cluster.http_ok("http://%s:%s%s" % (host, port, paths.get(name, "/")), timeout=2.0) is not None


def _control_plane_healthy(name: str, port: int, state: dict[str, Any]) -> bool:
    """The apiserver's /readyz (open to anyone, as on any cluster) and etcd's /health; the controllers and
    metrics-server count as healthy while they run (the apiserver's aggregation layer checks the latter)."""
    if name == "kube-apiserver":
        try:
            cluster.http_json("https://%s:%d/readyz" % (procs.LOOPBACK, port), ca_file=state["kube"]["ca_file"])
        except ValueError:
            return True  # "ok" is not JSON
        except (OSError, KeyError):
            return False
        return True
    if name == "etcd":
        return cluster.http_ok("http://%s:%d/health" % (procs.LOOPBACK, port), timeout=2.0) is not None
    return True


def status(state_dir: str | os.PathLike[str] | None = None, live: bool = True) -> dict[str, Any]:
    """The sandbox's state.json plus the liveness of each service (secrets included: see `public`)."""
    path = resolve_dir(state_dir)
    state = read_state(path)
    if state is None:
        return {"dir": str(path), "running": False, "status": "stopped" if not path.exists() else "broken"}
    owner = _Owner(path)
    supervisor = _supervisor_pid(path)
    services = {}
    for name, info in (state.get("services") or {}).items():
        pid = info.get("pid")
        running = pid is not None and owner.owns(int(pid), name)
        services[name] = dict(info, alive=running, healthy=running and live and _healthy(name, info, state))
    result = dict(state)
    result["services"] = services
    result["supervisor"] = {"pid": supervisor, "alive": supervisor is not None}
    result["state_file"] = str(path / STATE_FILE)
    result["running"] = supervisor is not None and state.get("status") == "ready"
    result["healthy"] = result["running"] and all(s["healthy"] for s in services.values())
    if live and result["running"]:
        _refresh_live(result)
    return result


def _refresh_live(result: dict[str, Any]) -> None:
    kube = result.get("kube") or {}
    api_service = "kube-apiserver" if kube.get("backend") == CONTROL_PLANE else "kubeapi"
    if kube and result["services"].get(api_service, {}).get("healthy"):
        with contextlib.suppress(OSError, ValueError, KeyError):
            result.update(cluster.discover(kube["api"], kube["tokens"]["admin"], kube.get("ca_file")))
    fleet = result.get("fleet") or {}
    if fleet and result["services"].get("fleet", {}).get("healthy"):
        try:
            report = cluster.http_json(fleet["url"] + "/status")
        except (OSError, ValueError):
            report = None
        if isinstance(report, dict) and "scenario" in report:
            running = report["scenario"]
            # The fleet reports the running scenario's summary (name, culprit, ...); state.json keeps its name.
            result["scenario"] = running.get("name") if isinstance(running, dict) else running
            result["scenario_detail"] = running if isinstance(running, dict) else None


def public(report: dict[str, Any]) -> dict[str, Any]:
    """The status without secrets: the password and tokens stay in their 0600 files."""
    clean = dict(report)
    if isinstance(clean.get("redis"), dict):
        clean["redis"] = {k: v for k, v in clean["redis"].items() if k != "password"}
    if isinstance(clean.get("kube"), dict):
        clean["kube"] = {k: v for k, v in clean["kube"].items() if k != "tokens"}
    return clean


def _running_fleet(path: Path) -> tuple[dict[str, Any], str]:
    state = read_state(path)
    if state is None or _supervisor_pid(path) is None:
        raise StormctlError("no sandbox is running in %s: run `stormctl sandbox up` first" % path)
    fleet = state.get("fleet") or {}
    if not fleet.get("url"):
        raise StormctlError(
            "the sandbox in %s runs without the client fleet: restart it with `stormctl sandbox up`" % path
        )
    return state, str(fleet["url"])


def _fleet_post(url: str, body: dict[str, Any]) -> Any:
    try:
        return cluster.http_json(url, method="POST", body=body, timeout=30.0)
    except urllib.error.HTTPError as exc:
        detail = exc.read().decode(errors="replace").strip()
        raise StormctlError("the fleet refused %s (HTTP %d): %s" % (url.rsplit("/", 1)[-1], exc.code, detail)) from exc
    except (OSError, ValueError) as exc:
        raise StormctlError(
            "the fleet at %s did not answer (%s): check `stormctl sandbox status`" % (url, exc)
        ) from exc


def _set_scenario(path: Path, scenario: str | None) -> None:
    state = read_state(path)
    if state is not None:
        state["scenario"] = scenario
        write_json(path / STATE_FILE, state)


def storm(scenario: str, state_dir: str | os.PathLike[str] | None = None) -> Any:
    """Start a scenario's storm in the running sandbox."""
    path = resolve_dir(state_dir)
    _, url = _running_fleet(path)
    answer = _fleet_post(url + "/storm", {"scenario": scenario})
    _set_scenario(path, scenario)
    return answer


def calm(state_dir: str | os.PathLike[str] | None = None) -> Any:
    """End the running storm (the fleet goes back to its baseline traffic)."""
    path = resolve_dir(state_dir)
    _, url = _running_fleet(path)
    answer = _fleet_post(url + "/calm", {})
    _set_scenario(path, None)
    return answer


def reset(state_dir: str | os.PathLike[str] | None = None) -> dict[str, list[str]]:
    """Put the cluster back to the baseline world (mitigations, ledgers and Leases undone)."""
    from stormctl.sandbox import baseline

    path = resolve_dir(state_dir)
    state = read_state(path)
    if state is None or _supervisor_pid(path) is None:
        raise StormctlError("no sandbox is running in %s: run `stormctl sandbox up` first" % path)
    kube = state.get("kube") or {}
    if not kube:
        raise StormctlError("the sandbox in %s runs without the kube API emulator: nothing to reset" % path)
    try:
        return baseline.restore(str(kube["api"]), str(kube["tokens"]["admin"]), kube.get("ca_file"))
    except (OSError, ValueError, RuntimeError) as exc:
        raise StormctlError("could not restore the baseline cluster: %s" % exc) from exc


def revive(state_dir: str | os.PathLike[str] | None = None, timeout: float = 45.0) -> dict[str, Any]:
    """Have the supervisor start again the services that died, on their own ports; returns the status."""
    path = resolve_dir(state_dir)
    supervisor = _supervisor_pid(path)
    if supervisor is None:
        raise StormctlError("no sandbox is running in %s: run `stormctl sandbox up` first" % path)
    procs.signal_pid(supervisor, signal.SIGUSR1)
    deadline = time.monotonic() + timeout
    while True:
        report = status(path)
        if report.get("healthy"):
            return report
        if time.monotonic() > deadline:
            broken = [name for name, s in report.get("services", {}).items() if not s.get("healthy")]
            raise StormctlError(
                "the sandbox's %s did not come back within %.0f s: see the logs in %s, or run "
                "`stormctl sandbox down` and `up` again" % (", ".join(broken), timeout, path)
            )
        time.sleep(0.2)
