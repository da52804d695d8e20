"""The one typed adapter around ``ansible_runner.run``.

Extra vars go to a file in the run's private directory (never on the command line), and that
file may hold no secret: secrets come from the inventory, a vault or ``-e @file`` files, which
are passed by path. ansible-runner writes no ``env/`` files of its own (``suppress_env_files``).
What the run leaves (artifacts, events, the result) is scrubbed of its secrets by name and by value.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

from stormctl.errors import StormctlError
from stormctl.sandbox.state import REPO
from stormctl.scrub import REDACTED, SECRET_NAME, Scrubber

PLAYBOOKS = REPO / "playbooks"
DEFAULT_INVENTORY = REPO / "inventories" / "sandbox"
FAILED_EVENTS = {"runner_on_failed", "runner_on_unreachable"}

EventHandler = Callable[[Mapping[str, Any]], None]


@dataclass(frozen=True)
class RunConfig:
    """One ansible-playbook run: what to run, against what, and where its artifacts go."""

    playbook: Path
    inventory: Path
    private_dir: Path
    extravars: Mapping[str, Any] = field(default_factory=dict)
    extravar_files: tuple[Path, ...] = ()
    check: bool = False
    diff: bool = False
    limit: str | None = None
    vault_password_file: Path | None = None
    ident: str = "run"

    def cmdline(self) -> str:
        """ansible-playbook options other than the inventory (ansible-runner adds that)."""
        args: list[str] = []
        if self.check:
            args.append("--check")
        if self.diff:
            args.append("--diff")
        if self.limit:
            args += ["--limit", self.limit]
        for path in self.extravar_files:
            args += ["-e", "@%s" % path]
        if self.vault_password_file is not None:
            args += ["--vault-password-file", str(self.vault_password_file)]
        return " ".join(shlex.quote(arg) for arg in args)


@dataclass(frozen=True)
class HostStats:
    ok: int = 0
    changed: int = 0
    failed: int = 0
    skipped: int = 0
    unreachable: int = 0
    rescued: int = 0


@dataclass(frozen=True)
class RunResult:
    """What a run did, from ansible-runner's status and events (never from parsing its text output)."""

    status: str
    rc: int
    elapsed: float
    artifact_dir: Path
    stats: dict[str, HostStats]
    # set_stats data (the incident_report role publishes storm_incidents there).
    artifact_data: dict[str, Any]
    # The last storm_triage each host set, when the playbook triaged.
    triage: dict[str, dict[str, Any]]
    # Failed tasks: {host, task, msg, refused, ignored}, rescued ones included.
    failures: list[dict[str, Any]]
    # Tasks that changed (or in check mode would change) something: {host, task, diff}.
    changes: list[dict[str, Any]] = field(default_factory=list)
    # The run's secrets, to scrub what is written from the result later (the report).
    scrubber: Scrubber = field(default_factory=Scrubber, repr=False, compare=False)

    @property
    def successful(self) -> bool:
        return self.status == "successful" and self.rc == 0


def secret_names(extravars: Mapping[str, Any]) -> list[str]:
    """Names in `extravars` (nested too) that look like credentials."""
    found: list[str] = []

    def walk(value: Any, prefix: str) -> None:
        if isinstance(value, Mapping):
            for key, item in value.items():
                name = "%s%s" % (prefix, key)
                if SECRET_NAME.search(str(key)):
                    found.append(name)
                walk(item, name + ".")

    walk(extravars, "")
    return found


def _private_dir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    os.chmod(path, 0o700)
    return path


def _write_extravars(config: RunConfig) -> None:
    env = _private_dir(config.private_dir / "env")
    target = env / "extravars"
    if not config.extravars:
        target.unlink(missing_ok=True)
        return
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump(dict(config.extravars), handle, indent=1, sort_keys=True)


class _Collector:
    """Keeps what the result needs from the event stream and forwards each event."""

    def __init__(self, on_event: EventHandler | None, scrubber: Scrubber) -> None:
        self.on_event = on_event
        self.scrubber = scrubber
        self.stats: dict[str, HostStats] = {}
        self.artifact_data: dict[str, Any] = {}
        self.triage: dict[str, dict[str, Any]] = {}
        self.failures: list[dict[str, Any]] = []
        self.changes: list[dict[str, Any]] = []

    def __call__(self, event: Mapping[str, Any]) -> bool:
        self.scrubber.learn(event)
        event = self.scrubber.data(event)
        kind = event.get("event")
        data = event.get("event_data") or {}
        if kind == "runner_on_ok":
            res = data.get("res") or {}
            facts = res.get("ansible_facts") or {}
            if isinstance(facts.get("storm_triage"), dict):
                self.triage[str(data.get("host"))] = facts["storm_triage"]
            if res.get("changed"):
                # A looped task carries each item's diff in its results.
                diff = res.get("diff") or [
                    item["diff"] for item in res.get("results") or [] if item.get("changed") and item.get("diff")
                ]
                self.changes.append({"host": data.get("host"), "task": data.get("task"), "diff": diff})
        elif kind in FAILED_EVENTS:
            res = data.get("res") or {}
            self.failures.append(
                {
                    "host": data.get("host"),
                    "task": data.get("task"),
                    "msg": str(res.get("msg") or "failed"),
                    "refused": bool(res.get("refused")),
                    "ignored": bool(data.get("ignore_errors")),
                }
            )
        elif kind == "playbook_on_stats":
            self.artifact_data = dict(data.get("artifact_data") or {})
            hosts: set[str] = set()
            for key in ("ok", "changed", "failures", "skipped", "dark", "rescued"):
                hosts.update((data.get(key) or {}).keys())
            self.stats = {
                host: HostStats(
                    ok=int((data.get("ok") or {}).get(host, 0)),
                    changed=int((data.get("changed") or {}).get(host, 0)),
                    failed=int((data.get("failures") or {}).get(host, 0)),
                    skipped=int((data.get("skipped") or {}).get(host, 0)),
                    unreachable=int((data.get("dark") or {}).get(host, 0)),
                    rescued=int((data.get("rescued") or {}).get(host, 0)),
                )
                for host in sorted(hosts)
            }
        if self.on_event is not None:
            self.on_event(event)
        return True


def search_path() -> str:
    """PATH with this Python's bin directory first, so the venv's ansible-playbook runs."""
    path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", os.defpath)])
    if not shutil.which("ansible-playbook", path=path):
        raise StormctlError("ansible-playbook is not installed: run `make setup` (it installs ansible-core)")
    return path


def scrub_command_file(artifact_dir: Path) -> None:
    """ansible-runner records the whole environment in `command`: blank the values of credential-like names."""
    path = artifact_dir / "command"
    try:
        recorded = json.loads(path.read_text())
    except (OSError, ValueError):
        return
    env = recorded.get("env") if isinstance(recorded, dict) else None
    if isinstance(env, dict):
        recorded["env"] = {k: (REDACTED if SECRET_NAME.search(k) else v) for k, v in env.items()}
        path.write_text(json.dumps(recorded))


def run(config: RunConfig, on_event: EventHandler | None = None) -> RunResult:
    """Run the playbook through ansible-runner; raise StormctlError only when it could not run at all."""
    import ansible_runner

    leaked = secret_names(config.extravars)
    if leaked:
        raise StormctlError(
            "refusing to put %s in extra vars (they are written to the run's files): keep credentials in the "
            "inventory or a vault file and pass that with -e @FILE" % ", ".join(leaked)
        )
    if not config.playbook.is_file():
        raise StormctlError("no playbook at %s" % config.playbook)
    if not config.inventory.exists():
        raise StormctlError("no inventory at %s (pass -i PATH)" % config.inventory)
    for path in config.extravar_files:
        if not path.is_file():
            raise StormctlError("no extra vars file at %s (from -e @%s)" % (path, path))
    _private_dir(config.private_dir)
    _write_extravars(config)
    scrubber = Scrubber.for_run(os.environ, config.extravar_files)
    collector = _Collector(on_event, scrubber)
    started = time.monotonic()
    runner = ansible_runner.run(
        private_data_dir=str(config.private_dir),
        project_dir=str(REPO),
        playbook=str(config.playbook),
        inventory=str(config.inventory),
        cmdline=config.cmdline() or None,
        envvars={"ANSIBLE_CONFIG": str(REPO / "ansible.cfg"), "ANSIBLE_NOCOLOR": "true", "PATH": search_path()},
        suppress_env_files=True,
        ident=config.ident,
        quiet=True,
        event_handler=collector,
    )
    artifact_dir = Path(runner.config.artifact_dir)
    scrub_command_file(artifact_dir)
    scrubber.tree(artifact_dir)
    return RunResult(
        status=str(runner.status),
        rc=int(runner.rc if runner.rc is not None else 1),
        elapsed=time.monotonic() - started,
        artifact_dir=artifact_dir,
        stats=collector.stats,
        artifact_data=collector.artifact_data,
        triage=collector.triage,
        failures=collector.failures,
        changes=collector.changes,
        scrubber=scrubber,
    )
