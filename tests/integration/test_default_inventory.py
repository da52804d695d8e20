"""With no sandbox running, the checkout's ansible.cfg is harmless: ad-hoc module runs, ansible-inventory and
ansible-lint work; the sandbox inventory is used only when named, and then says that nothing is up."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Dict

import pytest

from tests.fixtures.redis import RedisServer

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


@pytest.fixture
def no_sandbox(tmp_path: Path) -> Dict[str, str]:
    """The environment of a user of this checkout while no sandbox runs (wherever the checkout's own is)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANSIBLE_")}
    env.update(ANSIBLE_CONFIG=str(REPO / "ansible.cfg"), ANSIBLE_NOCOLOR="1",
               STORM_SANDBOX_DIR=str(tmp_path / "no-sandbox"), ANSIBLE_LOCAL_TEMP=str(tmp_path / "tmp"))
    return env


def run(command: list[str], env: Dict[str, str], cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=180)


def test_ad_hoc_module_run_needs_no_inventory(redis_server: RedisServer, no_sandbox: Dict[str, str]) -> None:
    args = {"host": redis_server.host, "port": redis_server.port, "password": redis_server.password,
            "sample_seconds": 0.2, "latency_samples": 2}
    done = run([str(BIN / "ansible"), "localhost", "-m", "fintech.redis_storm.redis_clients_info",
                "-a", json.dumps(args)], no_sandbox)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    assert "localhost | SUCCESS" in done.stdout and "reachable: true" in done.stdout, output
    assert "max: %d" % redis_server.maxclients in done.stdout
    assert redis_server.password not in output


def test_ansible_inventory_lists_only_localhost_without_an_inventory(no_sandbox: Dict[str, str]) -> None:
    done = run([str(BIN / "ansible-inventory"), "--list"], no_sandbox)
    assert done.returncode == 0, done.stdout + done.stderr
    listed = json.loads(done.stdout)
    assert listed["all"]["children"] == ["ungrouped"]
    assert "hostvars" not in listed.get("_meta", {}) or not listed["_meta"]["hostvars"]


def test_the_sandbox_inventory_named_says_nothing_is_up(no_sandbox: Dict[str, str]) -> None:
    done = run([str(BIN / "ansible-inventory"), "-i", "inventories/sandbox", "--list"], no_sandbox)
    output = done.stdout + done.stderr
    assert done.returncode != 0, output
    assert "no sandbox is running at %s: run `stormctl sandbox up`" % no_sandbox["STORM_SANDBOX_DIR"] in output


def test_ansible_lint_of_a_playbook_needs_no_sandbox(no_sandbox: Dict[str, str]) -> None:
    """ansible-lint's syntax check loads the configured inventory: there is none to fail on."""
    done = run([str(BIN / "ansible-lint"), "--nocolor", "playbooks/triage.yml"],
               dict(no_sandbox, PATH="%s:%s" % (BIN, no_sandbox.get("PATH", ""))))
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    assert "internal-error" not in output and "Passed" in output
