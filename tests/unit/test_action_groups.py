"""The connection plumbing is said once: meta/runtime.yml's action groups hold the modules that take each
connection's options, the incident playbooks set the cluster connection through them, and no role task
passes it again."""

from __future__ import annotations

import importlib
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from ansible.module_utils import basic
from ansible_collections.fintech.redis_storm.plugins.module_utils import errors

# the collection's root, in the checkout and in ansible-test's copy of the built collection alike
REPO = Path(errors.__file__).resolve().parents[2]
GROUPS = yaml.safe_load((REPO / "meta" / "runtime.yml").read_text())["action_groups"]
CONNECTION = {
    "kubernetes": {"kubeconfig", "context", "host", "api_key", "validate_certs", "ca_cert"},
    "redis": {"host", "port", "username", "password", "tls", "ca_path", "validate_certs"},
    "prometheus": {"url", "bearer_token", "username", "password", "validate_certs", "ca_path"},
}
KUBE_RENAMED = {"kubeconfig", "context", "kube_host", "api_key", "kube_validate_certs", "ca_cert"}


class Captured(Exception):
    pass


def argument_spec(module: str, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """The module's argument spec, as main() hands it to AnsibleModule."""
    spec: dict[str, Any] = {}

    def capture(self: Any, argument_spec: dict[str, Any], **_kwargs: Any) -> None:
        spec.update(argument_spec)
        raise Captured()

    monkeypatch.setattr(basic.AnsibleModule, "__init__", capture)
    with pytest.raises(Captured):
        importlib.import_module("ansible_collections.fintech.redis_storm.plugins.modules." + module).main()
    return spec


@pytest.mark.parametrize("group,module", [(g, m) for g in CONNECTION for m in GROUPS[g]])
def test_each_module_of_a_connection_group_takes_its_options(group: str, module: str,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    assert CONNECTION[group] <= set(argument_spec(module, monkeypatch))


def test_no_module_gets_two_connections_host() -> None:
    """Two groups that both set host would hand one module the other's: redis_runtime_config's API server
    options carry a kube_ prefix, so it is in the redis group only."""
    assert set(GROUPS["kubernetes"]) & set(GROUPS["redis"]) == set()
    assert set(GROUPS["kubernetes"]) & set(GROUPS["prometheus"]) == set() == set(GROUPS["redis"]) & set(
        GROUPS["prometheus"])


def test_the_all_group_holds_every_module() -> None:
    extended = GROUPS["all"][0]["metadata"]["extend_group"]
    members = {m for g in extended for m in GROUPS[g.rsplit(".", 1)[-1]]} | set(GROUPS["all"][1:])
    assert members == {p.stem for p in (REPO / "plugins" / "modules").glob("*.py") if p.stem != "__init__"}


def role_tasks() -> list[Path]:
    return sorted((REPO / "roles").glob("*/tasks/*.yml"))


@pytest.mark.parametrize("path", role_tasks(), ids=lambda p: str(p.relative_to(REPO / "roles")))
def test_no_role_task_passes_the_cluster_connection(path: Path) -> None:
    found = []
    for task in _tasks(yaml.safe_load(path.read_text()) or []):
        for key, args in task.items():
            module = key.split(".")[-1]
            if key.startswith("fintech.redis_storm.") and isinstance(args, dict):
                given = set(args) & (CONNECTION["kubernetes"] if module in GROUPS["kubernetes"] else
                                     KUBE_RENAMED if module == "redis_runtime_config" else set())
                found += ["%s: %s" % (task.get("name"), sorted(given))] if given else []
    assert found == []


def _tasks(tasks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for task in tasks:
        out.append(task)
        for key in ("block", "rescue", "always"):
            out += _tasks(task.get(key) or [])
    return out


def playbook_text(name: str) -> str:
    return (REPO / "playbooks" / name).read_text()


@pytest.mark.parametrize("playbook", ["mitigate.yml", "stabilize.yml", "rollback.yml", "incident.yml"])
def test_the_playbooks_that_reach_the_cluster_set_its_connection_once(playbook: str) -> None:
    (play,) = yaml.safe_load(playbook_text(playbook))
    kube = play["module_defaults"]["group/fintech.redis_storm.kubernetes"]
    assert set(kube) == CONNECTION["kubernetes"]
    assert all(re.fullmatch(r"\{\{ storm_kube\w* \| default\(omit\) \}\}", value) for value in kube.values()), kube
    runtime_config = play["module_defaults"].get("fintech.redis_storm.redis_runtime_config")
    if "ladder_stage: mitigate" in playbook_text(playbook):
        assert set(runtime_config) == KUBE_RENAMED
