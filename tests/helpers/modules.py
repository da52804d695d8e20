"""Run the collection's modules from tests: in-process through ``main()``, or through ansible-playbook.

In-process (fast, ~ms; what most tests use)::

    from tests.helpers.modules import run_module

    result = run_module("workload_scale", {"incident_id": "inc-1", "namespace": "trading",
                                           "name": "trading-api", "replicas": 2,
                                           "kubeconfig": kubeapi.kubeconfig,
                                           "allowed_namespaces": ["trading"]},
                        check=True, diff=True)
    assert not result.failed and result["changed"]

``run_module`` gives the module its arguments the way ansible-core 2.19 does
(``ansible.module_utils.testing.patch_module_args``: ``basic._ANSIBLE_ARGS`` plus the
serialization profile), sets check and diff mode through ``_ansible_check_mode`` /
``_ansible_diff``, captures what ``exit_json``/``fail_json`` print and returns it as a
``ModuleResult`` (a dict with ``.failed``, ``.msg`` and ``.warnings``). The module is imported fresh
for each run so no state leaks between calls.

Through ansible-playbook (the real controller path, ~1-2 s per run)::

    from tests.helpers.modules import run_playbook

    run = run_playbook([{"name": "scale", "fintech.redis_storm.workload_scale": {...}}], check=True, diff=True)
    assert run.rc == 0, run.output
    task = run.task("scale")          # the task's result dict, from the json callback
"""

from __future__ import annotations

import contextlib
import importlib
import io
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Dict, List, Optional, Union

import yaml

REPO = Path(__file__).resolve().parents[2]
MODULES = "ansible_collections.fintech.redis_storm.plugins.modules."
ANSIBLE_PLAYBOOK = Path(sys.executable).parent / "ansible-playbook"


class ModuleResult(Dict[str, Any]):
    """A module's JSON result; ``failed`` is True when it called ``fail_json``."""

    @property
    def failed(self) -> bool:
        return bool(self.get("failed"))

    @property
    def msg(self) -> str:
        return str(self.get("msg", ""))

    @property
    def warnings(self) -> List[str]:
        """Warning texts (ansible-core 2.19 sends WarningSummary dicts, older versions strings)."""
        return [w if isinstance(w, str) else str((w.get("event") or {}).get("msg", w))
                for w in self.get("warnings") or []]


def run_module(name: str, args: Dict[str, Any], check: bool = False, diff: bool = False) -> ModuleResult:
    """Run ``fintech.redis_storm.<name>``'s ``main()`` with ``args``; returns its result."""
    from ansible.module_utils.common import warnings
    from ansible.module_utils.testing import patch_module_args

    module = importlib.import_module(MODULES + name)
    module = importlib.reload(module)
    # warnings and deprecations are process-wide in ansible: start each run clean
    for registry in ("_global_warnings", "_global_deprecations"):
        getattr(warnings, registry, {}).clear()
    full = dict(args, _ansible_check_mode=check, _ansible_diff=diff)
    out = io.StringIO()
    with patch_module_args(full), contextlib.redirect_stdout(out), contextlib.suppress(SystemExit):
        module.main()
    text = out.getvalue().strip()
    if not text:
        raise AssertionError("module %s printed no result" % name)
    # exit_json prints one JSON document (possibly after warnings on stderr)
    return ModuleResult(json.loads(text[text.index("{"):]))


class PlaybookRun:
    """One ansible-playbook run with the json callback: ``rc``, ``output`` (raw), ``data`` (parsed)."""

    def __init__(self, rc: int, output: str, stderr: str) -> None:
        self.rc = rc
        self.output = output
        self.stderr = stderr
        start = output.find("{")
        self.data: Dict[str, Any] = json.loads(output[start:]) if start >= 0 else {}

    def task(self, name: str, host: str = "localhost") -> Dict[str, Any]:
        """The result of the task called ``name`` on ``host``."""
        for play in self.data.get("plays", []):
            for task in play.get("tasks", []):
                if task.get("task", {}).get("name") == name:
                    return dict(task["hosts"][host])
        raise AssertionError("no task %r in the run: %s %s" % (name, self.output[-2000:], self.stderr[-2000:]))

    @property
    def stats(self) -> Dict[str, Any]:
        return dict(self.data.get("stats", {}).get("localhost", {}))


def run_playbook(tasks: List[Dict[str, Any]], check: bool = False, diff: bool = False,
                 extra_vars: Optional[Dict[str, Any]] = None, env: Optional[Dict[str, str]] = None,
                 timeout: float = 120) -> PlaybookRun:
    """Run ``tasks`` as one play on localhost (local connection, this venv's Python)."""
    play: List[Dict[str, Union[str, bool, Dict[str, Any], List[Dict[str, Any]]]]] = [{
        "name": "test", "hosts": "localhost", "gather_facts": False,
        "vars": {"ansible_connection": "local", "ansible_python_interpreter": sys.executable},
        "tasks": tasks,
    }]
    with tempfile.TemporaryDirectory(prefix="storm-play-") as tmp:
        path = Path(tmp) / "play.yml"
        path.write_text(yaml.safe_dump(play, sort_keys=False))
        command = [str(ANSIBLE_PLAYBOOK), "-i", "localhost,", str(path)]
        if check:
            command.append("--check")
        if diff:
            command.append("--diff")
        if extra_vars:
            command += ["-e", json.dumps(extra_vars)]
        full_env = dict(os.environ, ANSIBLE_CONFIG=str(REPO / "ansible.cfg"), ANSIBLE_STDOUT_CALLBACK="json",
                        ANSIBLE_LOCAL_TEMP=str(Path(tmp) / "local"), ANSIBLE_NOCOLOR="1",
                        ANSIBLE_DEPRECATION_WARNINGS="0", **(env or {}))
        done = subprocess.run(command, cwd=str(REPO), env=full_env, capture_output=True, text=True,
                              timeout=timeout, check=False)
    return PlaybookRun(done.returncode, done.stdout, done.stderr)
