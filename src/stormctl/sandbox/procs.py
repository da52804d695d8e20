"""Process and port plumbing for the sandbox: free ports, ownership checks through /proc, kills."""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import re
import resource
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Callable, Iterable

from stormctl.sandbox.state import MARKER_ENV

PR_SET_PDEATHSIG = 1
LOOPBACK = "127.0.0.1"
# "Redis server v=7.0.15", "prometheus, version 2.42.0+ds", "Redis Metrics Exporter 1.45.0-2+b4"
_VERSION = re.compile(r"(?:v=|version |Exporter )v?(\d+\.\d+[.\d]*[^\s,)]*)")


def free_port(host: str = LOOPBACK) -> int:
    """A port the kernel considers free right now (bind to port 0, read it back)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def binary_version(binary: str) -> str:
    """The version `binary --version` reports, or "unknown"."""
    try:
        said = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    found = _VERSION.search(said.stdout + said.stderr)
    return found.group(1) if found else "unknown"


def _listener_inodes(port: int) -> set[str]:
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) > 9 and fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                inodes.add("socket:[%s]" % fields[9])
    return inodes


def _holds(pid: int, inodes: set[str]) -> bool:
    try:
        fds = list(Path("/proc/%d/fd" % pid).iterdir())
    except OSError:
        return False
    for fd in fds:
        try:
            if os.readlink(fd) in inodes:
                return True
        except OSError:
            continue
    return False


def listening_among(pids: Iterable[int], port: int) -> list[int]:
    """Those of `pids` that listen on TCP `port` (another program may hold a port we freed)."""
    running = [pid for pid in pids if alive(pid)]
    if not running:
        return []
    inodes = _listener_inodes(port)
    return [pid for pid in running if inodes and _holds(pid, inodes)]


def _proc_stat(pid: int) -> tuple[str, int] | None:
    """(state letter, process group) from /proc/<pid>/stat, or None when gone."""
    try:
        raw = Path("/proc/%d/stat" % pid).read_text()
    except OSError:
        return None
    # The command name may contain spaces and parentheses: fields start after the last ')'.
    fields = raw[raw.rindex(")") + 2 :].split()
    return fields[0], int(fields[2])


def alive(pid: int) -> bool:
    """Running (a zombie waiting for its parent to reap it counts as gone)."""
    stat = _proc_stat(pid)
    return stat is not None and stat[0] not in ("Z", "X")


def process_group(pid: int) -> int | None:
    stat = _proc_stat(pid)
    return None if stat is None else stat[1]


def has_marker(pid: int, sandbox_id: str) -> bool:
    """The process carries this sandbox's id in its environment (so it is ours to kill)."""
    try:
        environ = Path("/proc/%d/environ" % pid).read_bytes()
    except OSError:
        return False
    return ("%s=%s" % (MARKER_ENV, sandbox_id)).encode() in environ.split(b"\0")


def executable(pid: int) -> str | None:
    try:
        return os.readlink("/proc/%d/exe" % pid)
    except OSError:
        return None


def group_members(pgid: int) -> list[int]:
    return [int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit() and process_group(int(p.name)) == pgid]


def marked_processes(sandbox_id: str) -> list[int]:
    """Every live process that carries the sandbox's marker, whatever its group or parent."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            pid = int(entry.name)
            if pid != os.getpid() and alive(pid) and has_marker(pid, sandbox_id):
                found.append(pid)
    return found


def signal_pid(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)


def signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass
    except PermissionError as exc:
        if exc.errno != errno.EPERM:
            raise


def wait_until(condition: Callable[[], bool], timeout: float, interval: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while True:
        if condition():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)


def wait_gone(pids: Iterable[int], timeout: float) -> list[int]:
    """Wait for the pids to exit; returns those still alive at the deadline."""
    pending = list(pids)
    wait_until(lambda: not [p for p in pending if alive(p)], timeout)
    return [p for p in pending if alive(p)]


def child_setup(parent_pid: int, death_signal: int = signal.SIGTERM) -> Callable[[], None]:
    """A preexec_fn: die with the supervisor (PR_SET_PDEATHSIG) and raise the fd limit to the hard one."""

    def setup() -> None:
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(PR_SET_PDEATHSIG, death_signal, 0, 0, 0)
        except (OSError, AttributeError):
            pass
        # The supervisor may have died between fork and prctl: then nobody would signal us.
        if os.getppid() != parent_pid:
            os._exit(1)
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if hard != resource.RLIM_INFINITY and soft < hard:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

    return setup


def nofile_limit() -> tuple[int, int]:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    return int(soft), int(hard)
