"""The ansible-runner adapter with a tiny playbook of its own: real ansible-playbook runs, no sandbox."""

from __future__ import annotations

import os
import secrets
import stat
from pathlib import Path

import pytest

from stormctl.errors import StormctlError
from stormctl.runner import RunConfig, run, secret_names

PLAYBOOK = Path(__file__).parent / "stormctl_playbooks" / "tiny.yml"


@pytest.fixture
def inventory(tmp_path: Path) -> tuple[Path, str]:
    password = "tiny-" + secrets.token_hex(12)
    path = tmp_path / "inventory.yml"
    path.write_text(
        "all:\n  hosts:\n    tiny-host:\n      ansible_connection: local\n"
        "      ansible_python_interpreter: '{{ ansible_playbook_python }}'\n"
        "      tiny_password: %s\n      tiny_dir: %s\n" % (password, tmp_path)
    )
    return path, password


def every_byte(directory: Path) -> bytes:
    return b"".join(p.read_bytes() for p in directory.rglob("*") if p.is_file())


def test_run_reports_status_stats_stats_data_and_keeps_secrets_out(inventory: tuple[Path, str], tmp_path: Path) -> None:
    path, password = inventory
    events: list[str] = []
    config = RunConfig(
        playbook=PLAYBOOK,
        inventory=path,
        private_dir=tmp_path / "private",
        extravars={"tiny_marker": "m-1"},
        diff=True,
        ident="t1",
    )
    result = run(config, lambda event: events.append(str(event.get("event"))))
    assert result.successful and result.status == "successful"
    assert result.stats["tiny-host"].changed == 1 and result.stats["tiny-host"].failed == 0
    assert result.artifact_data["tiny"] == {"tiny-host": {"marker": "m-1", "secret_length": len(password)}}
    assert [c["task"] for c in result.changes] == ["Write a marker file"]
    assert "playbook_on_stats" in events and events.count("runner_on_ok") >= 3
    assert (tmp_path / "marker.txt").read_text() == "m-1\n"
    # the private dir is private and its extravars file holds exactly what was asked, no secret
    assert stat.S_IMODE(os.stat(config.private_dir).st_mode) == 0o700
    extravars = config.private_dir / "env" / "extravars"
    assert stat.S_IMODE(os.stat(extravars).st_mode) == 0o600
    assert '"tiny_marker": "m-1"' in extravars.read_text()
    assert not (config.private_dir / "env" / "envvars").exists()
    assert (result.artifact_dir / "job_events").is_dir()
    assert password.encode() not in every_byte(config.private_dir)


def test_check_mode_changes_nothing_and_a_failure_is_reported(inventory: tuple[Path, str], tmp_path: Path) -> None:
    path, _ = inventory
    config = RunConfig(
        playbook=PLAYBOOK,
        inventory=path,
        private_dir=tmp_path / "p",
        check=True,
        extravars={"tiny_marker": "m-2", "tiny_fail": "true"},
        ident="t2",
    )
    assert "--check" in config.cmdline()
    result = run(config)
    assert not (tmp_path / "marker.txt").exists()
    assert not result.successful and result.stats["tiny-host"].failed == 1
    assert result.failures == [
        {"host": "tiny-host", "task": "Fail when asked to", "msg": "asked to fail", "refused": False, "ignored": False}
    ]


def test_secret_environment_values_are_scrubbed_from_the_command_artifact(
    inventory: tuple[Path, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path, _ = inventory
    token = "kube-" + secrets.token_hex(12)
    monkeypatch.setenv("K8S_AUTH_API_KEY", token)
    config = RunConfig(
        playbook=PLAYBOOK,
        inventory=path,
        private_dir=tmp_path / "p",
        extravars={"tiny_marker": "m-3"},
        limit="tiny-host",
        ident="t3",
    )
    assert run(config).successful
    assert token.encode() not in every_byte(config.private_dir)
    command = (config.private_dir / "artifacts" / "t3" / "command").read_bytes()
    assert b"K8S_AUTH_API_KEY" in command and b'"--limit", "tiny-host"' in command


def test_the_runs_secrets_are_scrubbed_by_name_and_by_value_from_artifacts_and_result(
    inventory: tuple[Path, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path, _ = inventory
    redis_password, bearer, vault_token, url_password = ("s-%d-%s" % (i, secrets.token_hex(10)) for i in range(4))
    monkeypatch.setenv("REDISCLI_AUTH", redis_password)
    monkeypatch.setenv("AUTHORIZATION", "Bearer " + bearer)
    monkeypatch.setenv("HTTP_AUTHORIZATION", "Bearer " + bearer)
    # a task that fails with every secret in its message, as a careless error text would
    credentials = tmp_path / "credentials.yml"
    credentials.write_text(
        "tiny_api_token: %s\ntiny_fail: true\ntiny_prometheus_url: http://reader:%s@127.0.0.1:9\n"
        "tiny_fail_msg: \"cannot reach {{ tiny_prometheus_url }} as {{ lookup('env', 'REDISCLI_AUTH') }} with "
        "{{ lookup('env', 'HTTP_AUTHORIZATION') }} or {{ tiny_api_token }}\"\n" % (vault_token, url_password)
    )
    config = RunConfig(playbook=PLAYBOOK, inventory=path, private_dir=tmp_path / "p", extravar_files=(credentials,),
                       extravars={"tiny_marker": "m-4"}, ident="t4")
    seen: list[str] = []
    result = run(config, lambda event: seen.append(repr(event)))
    [failure] = result.failures
    assert failure["msg"].startswith("cannot reach http://reader:<redacted>@127.0.0.1:9 as <redacted> with")
    everything = every_byte(config.private_dir) + repr(result).encode() + "".join(seen).encode()
    found = {name: everything.count(value.encode()) for name, value in (
        ("REDISCLI_AUTH", redis_password), ("AUTHORIZATION", bearer), ("token in a vars file", vault_token),
        ("URL password", url_password))}
    assert found == dict.fromkeys(found, 0)


def test_secret_extra_vars_are_refused_before_any_run(inventory: tuple[Path, str], tmp_path: Path) -> None:
    path, _ = inventory
    assert secret_names({"storm_redis_password": "x", "a": {"api_key": "y"}, "incident_id": "i"}) == [
        "storm_redis_password",
        "a.api_key",
    ]
    config = RunConfig(
        playbook=PLAYBOOK, inventory=path, private_dir=tmp_path / "p", extravars={"storm_redis_password": "x"}
    )
    with pytest.raises(StormctlError, match=r"storm_redis_password.*inventory or a vault file"):
        run(config)
    assert not (tmp_path / "p").exists()


def test_missing_playbook_inventory_or_vars_file_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(StormctlError, match="no playbook"):
        run(RunConfig(playbook=tmp_path / "nope.yml", inventory=tmp_path, private_dir=tmp_path / "p"))
    with pytest.raises(StormctlError, match="no inventory"):
        run(RunConfig(playbook=PLAYBOOK, inventory=tmp_path / "nope", private_dir=tmp_path / "p"))
    with pytest.raises(StormctlError, match="no extra vars file"):
        run(
            RunConfig(
                playbook=PLAYBOOK,
                inventory=tmp_path,
                private_dir=tmp_path / "p",
                extravar_files=(tmp_path / "vars.yml",),
            )
        )
