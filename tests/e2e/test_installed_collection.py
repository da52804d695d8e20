"""The collection as a platform team gets it: `ansible-galaxy collection build`, the tarball installed with
`ansible-galaxy collection install`, and every playbook run by its FQCN from a directory that is not this
checkout (no ansible.cfg of ours, no path into the repo), against the sandbox through the installed
collection's own inventory."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterator, List

import pytest

from tests.e2e.ladder_support import RECOVERY_VARS, audit_seq, operator_writes, real_writes
from tests.fixtures.sandbox import Sandbox

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
PLAYBOOKS = ("triage", "mitigate", "stabilize", "verify", "rollback", "incident")
INCIDENT = "installed-check"


@dataclass
class Installed:
    tarball: Path
    collections: Path
    workdir: Path

    @property
    def root(self) -> Path:
        return self.collections / "ansible_collections" / "fintech" / "redis_storm"

    def env(self, box: Sandbox) -> Dict[str, str]:
        env = {k: v for k, v in box.env(ANSIBLE_NOCOLOR="1").items() if not k.startswith("ANSIBLE_CONFIG")}
        env.update(ANSIBLE_COLLECTIONS_PATH=str(self.collections), ANSIBLE_LOCAL_TEMP=str(self.workdir / "tmp"),
                   PATH="%s:%s" % (BIN, env.get("PATH", "")))
        return env


def run(command: List[str], cwd: Path, env: Dict[str, str], timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Installed]:
    base = tmp_path_factory.mktemp("installed")
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANSIBLE_")}
    built = run([str(BIN / "ansible-galaxy"), "collection", "build", "--output-path", str(base / "dist"), str(REPO)],
                base, env)
    assert built.returncode == 0, built.stdout + built.stderr
    (tarball,) = (base / "dist").glob("fintech-redis_storm-*.tar.gz")
    done = run([str(BIN / "ansible-galaxy"), "collection", "install", str(tarball), "-p", str(base / "collections")],
               base, env)
    assert done.returncode == 0, done.stdout + done.stderr
    workdir = base / "work"
    (workdir / "tmp").mkdir(parents=True)
    yield Installed(tarball, base / "collections", workdir)


def test_the_tarball_holds_the_collection_and_nothing_of_the_checkout(installed: Installed) -> None:
    with tarfile.open(installed.tarball) as tar:
        tops = {name.split("/")[0] for name in tar.getnames()}
    assert {"plugins", "roles", "playbooks", "meta", "inventories", "extensions", "changelogs"} <= tops
    assert not tops & {"src", "tests", "bench", "collections", ".sandbox", "ansible.cfg", "Makefile", "tools"}, tops
    manifest = json.loads((installed.root / "MANIFEST.json").read_text())["collection_info"]
    assert (manifest["namespace"], manifest["name"]) == ("fintech", "redis_storm")
    assert (installed.root / "meta" / "execution-environment.yml").is_file()


def test_every_playbook_runs_from_the_installed_collection(installed: Installed, calm_sandbox: Sandbox) -> None:
    # verify.yml passes only on a recovered Redis: start from the calm baseline, whatever ran before
    sandbox = calm_sandbox
    env = installed.env(sandbox)
    inventory = installed.root / "inventories" / "sandbox"
    seq = audit_seq(sandbox)
    verdict_file = installed.workdir / "verdict.json"
    extra = dict(RECOVERY_VARS, incident_id=INCIDENT, storm_reports_dir=str(installed.workdir / "reports"),
                 triage_output_file=str(verdict_file))
    outcomes = {}
    for name in PLAYBOOKS:
        # The mutating playbooks run as a dry run: nothing is written, everything is resolved and planned.
        check = [] if name in ("triage", "verify") else ["--check", "--diff"]
        done = run([str(BIN / "ansible-playbook"), "-i", str(inventory), "fintech.redis_storm.%s" % name,
                    "-e", json.dumps(extra), *check], installed.workdir, env)
        outcomes[name] = done
        output = done.stdout + done.stderr
        assert done.returncode == 0, "%s rc %d:\n%s" % (name, done.returncode, output[-4000:])
        assert "failed=0" in done.stdout and "sandbox-redis" in done.stdout, output[-3000:]
        # The venv that runs ansible-playbook may live in the checkout; nothing else of it may be used.
        assert not re.search(re.escape(str(REPO)) + r"/(?!\.venv/)", output), "%s used the checkout:\n%s" % (
            name, output[-3000:])
    verdict = json.loads(verdict_file.read_text())
    assert {"redis", "prometheus", "kubernetes"} <= set(verdict["sources_answered"]), verdict
    assert real_writes(operator_writes(sandbox, seq)) == []
