"""The execution environment definition builds a context with ansible-builder, offline, and pins
exactly the third-party libraries the collection's plugins import."""

from __future__ import annotations

import ast
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from tests.fixtures.compat import CORES, OLDEST

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


def test_an_ee_that_installs_the_collection_gets_its_libraries_with_lower_bounds(tmp_path: Path) -> None:
    """ansible-builder reads the installed collection's meta/execution-environment.yml: the libraries the
    plugins import, each at least the version the ansible-core 2.16 test runs with, and no ansible-core."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANSIBLE_")}
    galaxy = str(BUILDER.with_name("ansible-galaxy"))
    version = yaml.safe_load((REPO / "galaxy.yml").read_text())["version"]
    tarball = tmp_path / "dist" / ("fintech-redis_storm-%s.tar.gz" % version)
    for step in ([galaxy, "collection", "build", "--output-path", str(tarball.parent), str(REPO)],
                 [galaxy, "collection", "install", "-p", str(tmp_path / "installed"), str(tarball)]):
        done = subprocess.run(step, capture_output=True, text=True, timeout=120, env=env, cwd=tmp_path)
        assert done.returncode == 0, done.stdout + done.stderr
    result = subprocess.run([str(BUILDER), "introspect", str(tmp_path / "installed")], capture_output=True,
                            text=True, timeout=120, env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    listed = yaml.safe_load(result.stdout.split("---", 1)[1])["python"]
    assert all(line.endswith("# from collection fintech.redis_storm") for line in listed), listed
    bounds = dict(re.fullmatch(r"([A-Za-z0-9_.-]+)>=([0-9.]+)", line.split("#")[0].strip()).groups()  # type: ignore[union-attr]
                  for line in listed)
    oldest = dict(pin.split("==") for pin in CORES[OLDEST].pins)
    assert set(bounds) == {DISTRIBUTION.get(name, name).lower() for name in plugin_imports()}
    assert bounds == {name: oldest[name] for name in bounds}, (bounds, oldest)


DE = REPO / "decision-environment.yml"


def test_decision_environment_carries_the_rulebook_engine_the_source_and_the_collection(tmp_path: Path) -> None:
    """ansible-builder create of the decision environment, offline: Java for the rule engine, ansible-rulebook
    and the source's aiohttp at the versions the rulebook tests run, and this collection's tarball installed
    (the controller finds fintech.redis_storm.alertmanager only inside the image)."""
    definition = yaml.safe_load(DE.read_text())
    assert definition["version"] == 3
    version = yaml.safe_load((REPO / "galaxy.yml").read_text())["version"]
    tarball = "fintech-redis_storm-%s.tar.gz" % version
    assert [f["src"] for f in definition["additional_build_files"]] == ["build/" + tarball]
    tested = {
        name.lower(): pin for name, pin in (line.split("==") for line in (REPO / "requirements-dev.txt").read_text()
                                            .splitlines() if "==" in line and not line.startswith("#"))}
    de_pins = pinned(REPO / definition["dependencies"]["python"])
    assert de_pins == {name: tested[name] for name in ("ansible-rulebook", "aiohttp")}
    source = (REPO / "extensions" / "eda" / "plugins" / "event_source" / "alertmanager.py").read_text()
    assert "from aiohttp import web" in source

    project = tmp_path / "project"
    shutil.copytree(REPO / "meta", project / "meta")
    shutil.copy(DE, project)
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANSIBLE_")}
    galaxy = str(BUILDER.with_name("ansible-galaxy"))
    built = subprocess.run([galaxy, "collection", "build", "--output-path", str(project / "build"), str(REPO)],
                           capture_output=True, text=True, timeout=120, env=env, cwd=tmp_path)
    assert built.returncode == 0, built.stdout + built.stderr
    env.update(PIP_NO_INDEX="1", HTTP_PROXY="http://127.0.0.1:9", HTTPS_PROXY="http://127.0.0.1:9")
    context = tmp_path / "context"
    result = subprocess.run([str(BUILDER), "create", "-f", str(project / DE.name), "-c", str(context),
                             "--output-filename", "Containerfile"], capture_output=True, text=True, timeout=120,
                            env=env, cwd=project)
    assert result.returncode == 0, result.stdout + result.stderr
    containerfile = (context / "Containerfile").read_text()
    assert 'ARG EE_BASE_IMAGE="%s"' % definition["images"]["base_image"]["name"] in containerfile
    assert (context / "_build" / "collections" / tarball).is_file()
    collections = yaml.safe_load((context / "_build" / "requirements.yml").read_text())["collections"]
    assert collections == [{"name": "/build/collections/" + tarball, "type": "file"}]
    assert "java-17-openjdk-headless" in (context / "_build" / "bindep.txt").read_text()
    assert pinned(context / "_build" / "requirements.txt") == de_pins
    assert "ansible-galaxy collection install" in containerfile and "COPY _build /build" in containerfile
