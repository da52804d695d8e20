"""Scenario and world files: every packaged one loads, and a bad one is refused naming the file and the field."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from stormctl.ladder import RUNGS as LADDER
from stormctl.sandbox.scenario import (
    SCENARIO_DIR,
    ScenarioError,
    load_scenario,
    load_world,
    scenario_names,
)

RUNGS = set(LADDER)


def test_the_packaged_scenarios_load_and_name_a_culprit_of_the_world() -> None:
    world = load_world()
    names = scenario_names()
    assert {"market-open", "bad-pool-config", "autoscale-burst", "retry-storm", "big-storm"} <= set(names)
    for name in names:
        scenario = load_scenario(name, world)
        assert world.workload(scenario.culprit_key).namespace == scenario.culprit[0]
        assert set(scenario.expected_rungs) <= RUNGS
        assert scenario.recovery_seconds > 0
    assert load_scenario("big-storm", world).maxclients >= 6000


def test_the_world_has_the_runbook_shapes() -> None:
    world = load_world()
    shape = world.shape()
    assert set(shape["namespaces"]) == {"payments", "trading", "wallet", "redis", "redis-storm"}
    assert {i["provider"] for i in shape["ingresses"]} == {"nginx", "traefik"}
    assert {f["format"] for f in shape["flags"]} == {"plain", "flagd"}
    kinds = {w["autoscaler"]["kind"] for w in shape["workloads"] if w["autoscaler"]}
    assert kinds == {"HorizontalPodAutoscaler", "ScaledObject"}
    assert shape["redis_workload"] == {"namespace": "redis", "kind": "StatefulSet", "name": "redis-master"}
    assert len({wl.subnet for wl in world.workloads}) == len(world.workloads)


def _write(tmp_path: Path, name: str, data: object) -> Path:
    path = tmp_path / ("%s.yml" % name)
    path.write_text(yaml.safe_dump(data))
    return path


def _market_open() -> dict[str, object]:
    data = yaml.safe_load((SCENARIO_DIR / "market-open.yml").read_text())
    assert isinstance(data, dict)
    return data


@pytest.mark.parametrize(
    ("change", "field", "words"),
    [
        (lambda d: d.pop("culprit"), "(top level)", "'culprit' is a required property"),
        (lambda d: d.update(maxclients="lots"), "maxclients", "is not of type 'integer'"),
        (lambda d: d.update(expected_rungs=["reboot"]), "expected_rungs.0", "is not one of"),
        (lambda d: d.update(traffic=[{"workload": "trading/trading-api", "rps": -5}]), "traffic.0.rps",
         "less than the minimum"),
        (lambda d: d.update(surprise=1), "(top level)", "Additional properties are not allowed"),
        (lambda d: d.update(culprit={"namespace": "trading", "name": "ghost"}), "culprit", "is not a workload"),
        (lambda d: d.update(traffic=[{"workload": "trading/ghost", "rps": 5}]), "traffic.0.workload",
         "is not a workload"),
        (lambda d: d.update(queues=[{"workload": "trading/trading-api", "length": 5}]), "queues.0.workload",
         "not scaled by a KEDA ScaledObject"),
        (lambda d: d.update(app_config=[{"workload": "trading/trading-api", "env": {"REDIS_POOL_MAX": "lots"}}]),
         "app_config.0.env.REDIS_POOL_MAX", "does not match"),
        (lambda d: d.update(culprits=[{"namespace": "wallet", "name": "wallet-service"},
                                      {"namespace": "trading", "name": "trading-api"}]),
         "culprits.0", "must be the culprit, trading/trading-api"),
        (lambda d: d.update(culprits=[{"namespace": "trading", "name": "trading-api"},
                                      {"namespace": "trading", "name": "ghost"}]), "culprits.1", "is not a workload"),
        (lambda d: d.update(culprits=[{"namespace": "trading", "name": "trading-api"}]), "culprits",
         "is too short"),
    ],
)
def test_a_bad_scenario_is_refused_naming_file_and_field(tmp_path: Path, change, field: str, words: str) -> None:
    data = _market_open()
    change(data)
    path = _write(tmp_path, "market-open", data)
    with pytest.raises(ScenarioError) as caught:
        load_scenario(path)
    message = str(caught.value)
    assert message.startswith(str(path)), message
    assert "field %s" % field in message, message
    assert words in message, message


def test_the_name_must_match_the_file(tmp_path: Path) -> None:
    path = _write(tmp_path, "other", _market_open())
    with pytest.raises(ScenarioError, match=r"field name: 'market-open' does not match the file name 'other'"):
        load_scenario(path)


def test_unknown_scenario_lists_the_known_ones() -> None:
    with pytest.raises(ScenarioError, match=r"unknown scenario 'hurricane': choose one of .*market-open"):
        load_scenario("hurricane")
    with pytest.raises(ScenarioError, match="unknown scenario 'world'"):
        load_scenario("world")


def test_unreadable_and_invalid_yaml(tmp_path: Path) -> None:
    with pytest.raises(ScenarioError, match="cannot be read"):
        load_scenario(tmp_path / "missing.yml")
    broken = tmp_path / "broken.yml"
    broken.write_text("name: [unclosed\n")
    with pytest.raises(ScenarioError, match=r"broken\.yml: not valid YAML"):
        load_scenario(broken)


def test_a_bad_world_is_refused(tmp_path: Path) -> None:
    data = yaml.safe_load((SCENARIO_DIR / "world.yml").read_text())
    data["workloads"][1]["subnet"] = data["workloads"][0]["subnet"]
    path = tmp_path / "world.yml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ScenarioError, match=r"field workloads\.1\.subnet: 1 is already used by trading/trading-api"):
        load_world(path)
    data = yaml.safe_load((SCENARIO_DIR / "world.yml").read_text())
    data["workloads"][0]["pool"]["min"] = "many"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ScenarioError, match=r"field workloads\.0\.pool\.min: 'many' is not of type 'integer'"):
        load_world(path)


def test_two_storms_names_both_culprits_in_order() -> None:
    scenario = load_scenario("two-storms")
    assert scenario.culprit_keys == ["payments/payments-api", "wallet/wallet-service"]
    assert load_scenario("retry-storm").culprit_keys == ["payments/payments-api"]
