"""Where a sandbox lives on disk and how its files are written (state.json, secrets, pid files)."""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path
from typing import Any

import stormctl

STATE_VERSION = 1
STATE_FILE = "state.json"
SPEC_FILE = "spec.json"
ERROR_FILE = "error.json"
PASSWORD_FILE = "redis-password"
TOKENS_FILE = "tokens.json"
KUBECONFIG_FILE = "kubeconfig"
AUDIT_LOG = "kubeapi-audit.jsonl"
SUPERVISOR_LOG = "supervisor.log"
PID_DIR = "pids"
SUPERVISOR = "supervisor"
# The sandbox's Kubernetes: the real control plane, or the emulator (src/stormctl/sandbox/kubeapi).
CONTROL_PLANE = "control-plane"
EMULATOR = "emulator"
KUBE_BACKENDS = (EMULATOR, CONTROL_PLANE)
KUBE_BACKEND_ENV = "STORM_SANDBOX_KUBE"
# Every process of a sandbox carries this variable, so `down` only ever kills its own.
MARKER_ENV = "STORM_SANDBOX_ID"

REPO = Path(stormctl.__file__).resolve().parents[2]
RULES_FILE = REPO / "deploy" / "prometheus" / "redis-storm-rules.yml"


def default_dir() -> Path:
    """`$STORM_SANDBOX_DIR`, else `<repo>/.sandbox/run`."""
    env = os.environ.get("STORM_SANDBOX_DIR")
    return Path(env).expanduser().resolve() if env else REPO / ".sandbox" / "run"


def resolve_dir(state_dir: str | os.PathLike[str] | None) -> Path:
    return Path(state_dir).expanduser().resolve() if state_dir else default_dir()


def new_secret(nbytes: int = 24) -> str:
    return secrets.token_urlsafe(nbytes)


def write_private(path: Path, text: str) -> None:
    """Write atomically with mode 0600 (secrets and state are never world-readable)."""
    tmp = path.with_name(".%s.%d.tmp" % (path.name, os.getpid()))
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)
    os.replace(tmp, path)


def write_json(path: Path, data: Any) -> None:
    write_private(path, json.dumps(data, indent=2, sort_keys=False) + "\n")


def read_json(path: Path) -> Any:
    """The parsed file, or None when it is missing or half-written."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def read_state(state_dir: Path) -> dict[str, Any] | None:
    data = read_json(state_dir / STATE_FILE)
    return data if isinstance(data, dict) else None


def pid_file(state_dir: Path, name: str) -> Path:
    return state_dir / PID_DIR / ("%s.pid" % name)


def write_pid(state_dir: Path, name: str, pid: int) -> None:
    (state_dir / PID_DIR).mkdir(mode=0o700, exist_ok=True)
    write_private(pid_file(state_dir, name), "%d\n" % pid)


def read_pids(state_dir: Path) -> dict[str, int]:
    """Service name -> pid from the pid files (unreadable files are skipped)."""
    pids: dict[str, int] = {}
    folder = state_dir / PID_DIR
    if not folder.is_dir():
        return pids
    for path in folder.glob("*.pid"):
        try:
            pids[path.stem] = int(path.read_text().strip())
        except (OSError, ValueError):
            continue
    return pids
