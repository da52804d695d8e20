"""The execution environment definition builds a context with ansible-builder, offline, and pins
exactly the third-party libraries the collection's plugins import."""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
EE = REPO / "execution-environment.yml"
BUILDER = Path(os.environ.get("VIRTUAL_ENV", REPO / ".venv")) / "bin" / "ansible-builder"
# Import names that differ from their distribution names.
DISTRIBUTION = {"yaml": "PyYAML"}


def plugin_imports() -> set[str]:
    """Top-level third-party modules imported anywhere under plugins/."""
    found = set()
    for path in (REPO / "plugins").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                found.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                found.add(node.module.split(".")[0])
    own = {"ansible", "ansible_collections", "__future__"}
    return {name for name in found - own if name not in sys.stdlib_module_names}


def pinned(path: Path) -> dict[str, str]:
    lines = [line.split("#")[0].strip() for line in path.read_text().splitlines()]
    pins = {}
    for line in filter(None, lines):
        found = re.fullmatch(r"([A-Za-z0-9_.-]+)==([0-9][A-Za-z0-9.]*)", line)
        assert found, "not pinned to one version: %r" % line
        pins[found.group(1).lower()] = found.group(2)
    return pins


def test_ee_pins_exactly_what_the_plugins_import() -> None:
    definition = yaml.safe_load(EE.read_text())
    assert definition["version"] == 3
    requirements = pinned(EE.parent / definition["dependencies"]["python"])
    needed = {DISTRIBUTION.get(name, name).lower() for name in plugin_imports()}
    assert set(requirements) == needed
    assert "system" not in definition["dependencies"] and "galaxy" not in definition["dependencies"]


def test_ansible_builder_create_succeeds_offline(tmp_path: Path) -> None:
    context = tmp_path / "context"
    # No proxy and no index: create must not need the network.
    env = dict(os.environ, PIP_NO_INDEX="1", HTTP_PROXY="http://127.0.0.1:9", HTTPS_PROXY="http://127.0.0.1:9")
    result = subprocess.run([str(BUILDER), "create", "-f", str(EE), "-c", str(context), "--output-filename",
                             "Containerfile"], capture_output=True, text=True, timeout=120, env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    containerfile = (context / "Containerfile").read_text()
    base = yaml.safe_load(EE.read_text())["images"]["base_image"]["name"]
    assert 'ARG EE_BASE_IMAGE="%s"' % base in containerfile
    copied = pinned(context / "_build" / "requirements.txt")
    assert copied == pinned(REPO / "meta" / "ee-requirements.txt")
    assert "assemble" in containerfile
