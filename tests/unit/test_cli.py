"""stormctl's argument handling and exit codes (no playbook run: those are in tests/e2e/test_stormctl.py)."""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

from stormctl.cli import EXIT_CODES, build_parser, main
from stormctl.commands import common, incident, mitigate, rollback, triage
from stormctl.errors import StormctlError
from stormctl.runner import HostStats, RunResult

REPO = Path(__file__).resolve().parents[2]


def stormctl(*args: str, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "stormctl", *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
        stdin=subprocess.DEVNULL,
        **kwargs,
    )


def result(status: str = "successful", rc: int = 0, **extra: Any) -> RunResult:
    values: dict[str, Any] = {
        "elapsed": 1.0,
        "artifact_dir": Path("/nowhere"),
        "stats": {"h": HostStats(ok=3)},
        "artifact_data": {},
        "triage": {},
        "failures": [],
    }
    values.update(extra)
    return RunResult(status=status, rc=rc, **values)


def incident_facts(*outcomes: str) -> dict[str, dict[str, Any]]:
    return {"host-%d" % i: {"outcome": o} for i, o in enumerate(outcomes)}


@pytest.mark.parametrize(
    ("outcomes", "status", "expected"),
    [
        (["recovered"], "successful", 0),
        (["no_storm"], "successful", 0),
        (["not_recovered"], "successful", 2),
        (["refused"], "failed", 3),
        (["failed"], "failed", 1),
        (["recovered", "not_recovered"], "successful", 2),
        (["not_recovered", "refused"], "failed", 3),
        (["refused", "failed"], "failed", 1),
        # the facts say recovered, but the run itself failed afterwards (e.g. the unlock): an error
        (["recovered"], "failed", 1),
    ],
)
def test_exit_code_from_incident_facts(outcomes: list[str], status: str, expected: int) -> None:
    rc = 0 if status == "successful" else 2
    assert common.exit_code(result(status, rc), incident_facts(*outcomes)) == expected


def test_exit_code_without_facts() -> None:
    assert common.exit_code(result(), {}) == 0
    assert common.exit_code(result(triage={"h": {"storm": True}}), {}) == 2
    assert common.exit_code(result(triage={"h": {"storm": False}}), {}) == 0
    refused = {"host": "h", "task": "lock", "msg": "held by bob", "refused": True, "ignored": False}
    assert common.exit_code(result("failed", 2, failures=[refused]), {}) == 3
    assert common.exit_code(result("failed", 2, failures=[dict(refused, refused=False)]), {}) == 1
    assert common.exit_code(result("failed", 2, failures=[dict(refused, ignored=True)]), {}) == 1
    assert common.exit_code(result("timeout", 254), {}) == 1


def test_incidents_come_from_the_runs_published_stats() -> None:
    run = result(artifact_data={"storm_incidents": {"h": {"outcome": "recovered"}}, "other": 1})
    assert common.incidents(run) == {"h": {"outcome": "recovered"}}


def test_extra_vars_forms(tmp_path: Path) -> None:
    vault = tmp_path / "vault.yml"
    vault.write_text("x: 1\n")
    values, files = common.parse_extra_vars(
        ["a=1", "b=two words=x", "c='quoted value' d=4", '{"e": [1, 2]}', "@%s" % vault]
    )
    assert values == {"a": "1", "b": "two", "words": "x", "c": "quoted value", "d": "4", "e": [1, 2]}
    assert files == (vault.resolve(),)


@pytest.mark.parametrize(
    ("item", "message"),
    [
        ("novalue", "expected KEY=VALUE"),
        ("1bad=x", "expected KEY=VALUE"),
        ("@/no/such/file", "no such file"),
        ("{broken", "not valid JSON"),
        ("a='unclosed", "No closing quotation"),
    ],
)
def test_bad_extra_vars(item: str, message: str) -> None:
    with pytest.raises(StormctlError, match=message):
        common.parse_extra_vars([item])


def test_rungs() -> None:
    assert common.parse_rungs("client_retries, hpa_pause") == ["client_retries", "hpa_pause"]
    assert common.parse_rungs(None) is None
    with pytest.raises(StormctlError, match="unknown rung reboot"):
        common.parse_rungs("client_retries,reboot")


def parsed(*argv: str) -> argparse.Namespace:
    return build_parser().parse_args(list(argv))


def test_run_config_from_arguments(tmp_path: Path) -> None:
    args = parsed(
        "mitigate",
        "--check",
        "--diff",
        "--limit",
        "payments-redis",
        "--rungs",
        "client_retries",
        "-e",
        "mitigate_force=true",
        "--reports-dir",
        str(tmp_path / "r"),
        "--artifacts-dir",
        str(tmp_path / "a"),
        "--incident-id",
        "storm-1",
    )
    config = common.build_config(mitigate.COMMAND, args, "storm-1")
    assert config.playbook == REPO / "playbooks" / "mitigate.yml"
    assert config.inventory == REPO / "inventories" / "sandbox"
    assert config.check and config.diff and config.limit == "payments-redis"
    assert config.extravars == {
        "mitigate_rungs": ["client_retries"],
        "mitigate_force": "true",
        "incident_id": "storm-1",
        "storm_reports_dir": str(tmp_path / "r"),
    }
    assert config.private_dir == tmp_path / "a" / "storm-1"
    assert config.cmdline() == "--check --diff --limit payments-redis"


def test_incident_id_is_generated_in_the_documented_form() -> None:
    assert common.new_incident_id(datetime(2026, 11, 26, 5, 4, 3, tzinfo=timezone.utc)) == "storm-20261126-050403"
    assert re.fullmatch(r"storm-\d{8}-\d{6}", common.new_incident_id())
    assert common.INCIDENT_ID.match(common.new_incident_id())


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["triage", "--incident-id", "Bad_ID"], "--incident-id 'Bad_ID'"),
        (["triage", "-i", "/no/such/inventory"], "no such inventory"),
        (["rollback", "--yes"], "rollback needs --incident-id"),
        (["incident", "--rungs", "nope", "--yes"], "unknown rung nope"),
        (["triage", "--vault-password-file", "/no/such"], "--vault-password-file /no/such: no such file"),
    ],
)
def test_bad_values_stop_before_any_run(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 1
    assert message in capsys.readouterr().err


def test_commands_know_what_they_mutate_and_report() -> None:
    assert not triage.COMMAND.mutating and not triage.COMMAND.reports
    assert incident.COMMAND.mutating and incident.COMMAND.reports
    assert rollback.COMMAND.needs_incident_id and not rollback.COMMAND.reports


def test_help_documents_the_exit_codes() -> None:
    done = stormctl("--help")
    assert done.returncode == 0
    for line in ("0  recovered, or nothing to do", "1  error", "2  the storm persists", "3  refused"):
        assert line in done.stdout
    assert EXIT_CODES.splitlines()[0] in done.stdout
    for command in ("triage", "mitigate", "stabilize", "rollback", "incident", "drill", "sandbox"):
        assert command in done.stdout


@pytest.mark.parametrize(
    "argv",
    [["triage", "--bogus"], ["nosuchcommand"], ["incident", "--limit"], ["drill"], ["mitigate", "-e"]],
)
def test_bad_arguments_give_a_clear_message_and_exit_1(argv: list[str]) -> None:
    done = stormctl(*argv)
    assert done.returncode == 1, done
    assert done.stderr.startswith("stormctl: ") and "--help" in done.stderr
    assert "Traceback" not in done.stderr + done.stdout


def test_mutating_without_a_terminal_or_yes_refuses(tmp_path: Path) -> None:
    done = stormctl("incident", "--artifacts-dir", str(tmp_path), "--reports-dir", str(tmp_path))
    assert done.returncode == 1
    assert "pass --yes" in done.stderr and "Traceback" not in done.stderr
    assert not any(tmp_path.rglob("job_events")), "nothing may run before the refusal"


def test_secret_in_extra_vars_is_refused(tmp_path: Path) -> None:
    done = stormctl("triage", "-e", "storm_redis_password=hunter2", "--artifacts-dir", str(tmp_path))
    assert done.returncode == 1 and "storm_redis_password" in done.stderr and "vault" in done.stderr
    assert b"hunter2" not in b"".join(p.read_bytes() for p in tmp_path.rglob("*") if p.is_file())


def test_progress_follows_runner_events_and_summarises() -> None:
    import io

    from rich.console import Console

    from stormctl.progress import Progress, summary

    out = io.StringIO()
    console = Console(file=out, width=160, force_terminal=False)
    events = [
        {"event": "playbook_on_task_start", "event_data": {"task": "Take the incident lock", "role": "incident_lock"}},
        {"event": "runner_on_ok", "event_data": {"host": "payments-redis", "res": {"changed": False}}},
        {
            "event": "playbook_on_task_start",
            "event_data": {"task": "Turn aggressive retries off", "role": "fintech.redis_storm.client_retries"},
        },
        {"event": "runner_on_ok", "event_data": {"host": "payments-redis", "res": {"changed": True}}},
        {"event": "runner_on_failed", "event_data": {"host": "payments-redis", "ignore_errors": True, "res": {}}},
        {"event": "runner_on_failed", "event_data": {"host": "payments-redis", "res": {}}},
        {"event": "runner_on_skipped", "event_data": {"host": "payments-redis"}},
    ]
    with Progress("incident storm-1", console=console) as progress:
        for event in events:
            progress.handle(event)
        assert progress.counts == {"ok": 2, "changed": 1, "failed": 1, "skipped": 1}
        assert progress.rung == "client_retries" and progress.host == "payments-redis"
        assert progress.step == "fintech.redis_storm.client_retries : Turn aggressive retries off"
        console.print(progress)
    view = out.getvalue()
    assert "Turn aggressive retries off" in view and "changed 1" in view and "rung" in view
    timeline = {
        "payments-redis": [
            {
                "rung": "client_retries",
                "result": "applied",
                "changed": True,
                "recovered": True,
                "finished_at": "2026-11-26T05:24:10Z",
            }
        ]
    }
    console.print(summary(result(), {"payments-redis": "recovered"}, timeline, "incident storm-1: recovered"))
    table = out.getvalue()
    assert "client_retries" in table and "applied" in table and "recovered" in table


def test_playbook_commands_start_without_the_sandbox_or_report_libraries():
    # every module imported at start-up is paid on each run at 3 a.m.: the sandbox (redis, the
    # supervisor) and the report (jsonschema, matplotlib) load only in the commands that use them
    probe = (
        "import sys; from stormctl.cli import build_parser; build_parser().parse_args(['triage']); "
        "print(' '.join(m for m in ('redis', 'jsonschema', 'matplotlib', 'stormctl.sandbox.services', "
        "'stormctl.report') if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, cwd=REPO)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == ""
