"""stormctl end to end: real ansible-runner runs of the playbooks against the sandbox, exit codes,
the report and the absence of secrets in everything a run leaves behind."""

from __future__ import annotations

import datetime
import json
import secrets
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import redis
import yaml
from matplotlib import image as mpimg

from stormctl import report
from stormctl.progress import RUNG_ROLES
from tests.fixtures.sandbox import Sandbox, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]

REPO = Path(__file__).resolve().parents[2]
# Short recovery windows keep the runs quick; the logic is the same as with the defaults.
FAST = [
    "-e",
    "storm_recovery_hold_seconds=5",
    "-e",
    "storm_recovery_timeout_seconds=90",
    "-e",
    "storm_rung_cooldown_seconds=0",
]
LOCK = "redis-storm-lock-sandbox-redis"


def stormctl(box: Sandbox, tmp_path: Path, *args: str, timeout: float = 420) -> subprocess.CompletedProcess[str]:
    command = [
        sys.executable,
        "-m",
        "stormctl",
        *args,
        "--json",
        "--reports-dir",
        str(tmp_path / "reports"),
        "--artifacts-dir",
        str(tmp_path / "artifacts"),
    ]
    return subprocess.run(
        command, capture_output=True, text=True, timeout=timeout, cwd=REPO, env=box.env(), stdin=subprocess.DEVNULL
    )


def answer(done: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    assert "Traceback" not in done.stderr, done.stderr
    try:
        return dict(json.loads(done.stdout))
    except ValueError:
        pytest.fail("stormctl printed no JSON (exit %d): %s %s" % (done.returncode, done.stdout, done.stderr[-2000:]))


def raise_storm(box: Sandbox, scenario: str = "market-open") -> None:
    box.storm(scenario)

    def saturated() -> bool:
        try:
            clients = box.info("clients")
        except redis.ConnectionError as exc:
            return "max number of clients" in str(exc)
        return bool(clients["connected_clients"] >= 0.9 * box.maxclients)

    wait_for(saturated, 90, "the %s storm to saturate Redis" % scenario)


def every_byte(*directories: Path) -> bytes:
    return b"".join(p.read_bytes() for d in directories for p in d.rglob("*") if p.is_file())


def assert_no_secrets(box: Sandbox, tmp_path: Path) -> None:
    everything = every_byte(tmp_path / "reports", tmp_path / "artifacts")
    assert everything, "the run left no reports or artifacts to check"
    for name, secret in (("Redis password", box.redis_password), ("kube token", box.token("operator"))):
        assert secret.encode() not in everything, "the %s leaked into reports/ or the runner's artifacts" % name


def rungs_that_ran(artifacts: Path) -> list[str]:
    """Rung roles that executed a task, from the runner's job events (not from the report)."""
    ran = []
    for path in artifacts.rglob("job_events/*.json"):
        event = json.loads(path.read_text())
        role = str((event.get("event_data") or {}).get("role") or "").rsplit(".", 1)[-1]
        if event.get("event") in ("runner_on_ok", "runner_on_failed") and role in RUNG_ROLES and role not in ran:
            ran.append(role)
    return ran


def test_make_demo_drills_market_open_and_writes_a_report_without_secrets(calm_sandbox: Sandbox,
                                                                         tmp_path: Path) -> None:
    # `make demo` is `stormctl drill market-open`; here it drills in the running sandbox.
    options = ["--json", "--reports-dir", str(tmp_path / "reports"), "--artifacts-dir", str(tmp_path / "artifacts"),
               "--wait", "120", *FAST]
    done = subprocess.run(["make", "-s", "demo", "DEMO_ARGS=%s" % shlex.join(options)], capture_output=True,
                          text=True, timeout=480, cwd=REPO, env=calm_sandbox.env(), stdin=subprocess.DEVNULL)
    result = answer(done)
    assert done.returncode == 0, (result["outcome"], result["failures"], done.stderr[-2000:])
    assert result["outcome"] == "recovered" and result["exit_code"] == 0
    assert calm_sandbox.refresh().get("scenario") is None, "the drill must end the storm it raised"

    data = json.loads(Path(result["report"]["json"]).read_text())
    jsonschema.Draft202012Validator(report.schema()).validate(data)
    assert data["incident_id"] == result["incident_id"] and data["outcome"] == "recovered"
    ran = rungs_that_ran(tmp_path / "artifacts" / result["incident_id"])
    assert ran, "no rung ran"
    assert sorted(e["rung"] for e in data["timeline"]) == sorted(ran)
    assert any(e["changed"] and e["diff"] for e in data["timeline"])
    ledger = "redis-storm-ledger-%s" % result["incident_id"]
    assert data["ledger"] and all(e["configmap"] == ledger for e in data["ledger"]), data["ledger"]
    assert data["metrics"]["series"]["connected_clients"], data["metrics"]["errors"]

    chart = Path(result["report"]["json"]).parent / data["chart"]
    assert chart.stat().st_size > 20_000
    pixels = mpimg.imread(str(chart))
    assert len({tuple(p) for p in (pixels[::4, ::4, :3] * 255).astype(int).reshape(-1, 3).tolist()}) > 20
    page = Path(result["report"]["html"]).read_text()
    assert "data:image/png;base64," in page and page.count('class="step"') == len(data["timeline"])
    assert_no_secrets(calm_sandbox, tmp_path)


def test_storm_persists_when_no_mitigation_rung_may_run(calm_sandbox: Sandbox, tmp_path: Path) -> None:
    raise_storm(calm_sandbox)
    # hpa_pause is a stabilisation rung: mitigate.yml climbs none of the mitigation rungs.
    done = stormctl(
        calm_sandbox, tmp_path, "mitigate", "--yes", "--rungs", "hpa_pause", "--incident-id", "e2e-persists", *FAST
    )
    result = answer(done)
    assert done.returncode == 2, (result["outcome"], result["failures"])
    assert result["outcome"] == "not_recovered" and result["timeline"] == []
    assert result["triage"]["sandbox-redis"]["storm"] is True
    data = json.loads(Path(result["report"]["json"]).read_text())
    jsonschema.Draft202012Validator(report.schema()).validate(data)
    assert data["outcome"] == "not_recovered" and data["ledger"] == []
    assert_no_secrets(calm_sandbox, tmp_path)


def test_lock_held_by_another_run_is_refused(calm_sandbox: Sandbox, tmp_path: Path) -> None:
    from kubernetes import client

    now = datetime.datetime.now(datetime.timezone.utc)
    lease = client.V1Lease(
        metadata=client.V1ObjectMeta(name=LOCK, namespace="redis-storm"),
        spec=client.V1LeaseSpec(
            holder_identity="alice@laptop/storm-other/1", lease_duration_seconds=900, acquire_time=now, renew_time=now
        ),
    )
    api = calm_sandbox.kube()
    try:
        client.CoordinationV1Api(api).create_namespaced_lease("redis-storm", lease)
        done = stormctl(calm_sandbox, tmp_path, "mitigate", "--yes", "--incident-id", "e2e-locked", *FAST)
        result = answer(done)
        assert done.returncode == 3, (result["outcome"], result["failures"])
        assert result["outcome"] == "refused"
        held = client.CoordinationV1Api(api).read_namespaced_lease(LOCK, "redis-storm")
        assert held.spec.holder_identity == "alice@laptop/storm-other/1", "the other run's lock was taken over"
    finally:
        api.close()
    assert_no_secrets(calm_sandbox, tmp_path)


def leaked(everything: bytes, secrets_of_the_run: dict[str, str]) -> dict[str, int]:
    return {name: everything.count(secret.encode()) for name, secret in secrets_of_the_run.items()}


def test_an_incident_with_every_credential_set_leaves_none_in_reports_or_artifacts(calm_sandbox: Sandbox,
                                                                                   tmp_path: Path) -> None:
    bearer = "prom-bearer-" + secrets.token_hex(12)
    url_password = "prom-url-pw-" + secrets.token_hex(12)
    # the credentials come as an AWX job gets them: extra vars from files, and the environment
    with_url = tmp_path / "prometheus-url.yml"
    with_url.write_text(yaml.safe_dump({"storm_prometheus_url": calm_sandbox.prometheus_url.replace(
        "://", "://storm-reader:%s@" % url_password, 1)}))
    with_bearer = tmp_path / "prometheus-token.yml"
    with_bearer.write_text(yaml.safe_dump({"storm_prometheus_bearer_token": bearer}))
    env = calm_sandbox.env(REDISCLI_AUTH=calm_sandbox.redis_password, AUTHORIZATION="Bearer " + bearer,
                           HTTP_AUTHORIZATION="Bearer " + bearer, K8S_AUTH_API_KEY=calm_sandbox.token("operator"))
    output = b""

    def run(*args: str) -> dict[str, Any]:
        nonlocal output
        command = [sys.executable, "-m", "stormctl", *args, "--json", "--reports-dir", str(tmp_path / "reports"),
                   "--artifacts-dir", str(tmp_path / "artifacts")]
        done = subprocess.run(command, capture_output=True, text=True, timeout=420, cwd=REPO, env=env,
                              stdin=subprocess.DEVNULL)
        output += done.stdout.encode() + done.stderr.encode()
        return answer(done)

    raise_storm(calm_sandbox)
    incident = run("incident", "--yes", "--incident-id", "e2e-credentials", "-e", "@%s" % with_url, *FAST)
    assert incident["outcome"] in ("recovered", "not_recovered"), (incident["outcome"], incident["failures"])
    assert incident["timeline"], "no rung ran: the run did not exercise the mitigations"
    triage = run("triage", "--incident-id", "e2e-credentials-triage", "-e", "@%s" % with_bearer)
    assert triage["triage"], triage
    assert (tmp_path / "reports" / "e2e-credentials" / "report.md").is_file()
    everything = every_byte(tmp_path / "reports", tmp_path / "artifacts") + output
    found = {name: everything.count(secret.encode()) for name, secret in {
        "Redis password": calm_sandbox.redis_password, "kube token": calm_sandbox.token("operator"),
        "Prometheus bearer token": bearer, "Prometheus URL password": url_password}.items()}
    print("occurrences of the run's secrets in %d bytes of reports and artifacts: %s" % (len(everything), found))
    assert found == dict.fromkeys(found, 0)
    stormctl(calm_sandbox, tmp_path, "rollback", "--yes", "--incident-id", "e2e-credentials")


def test_bad_argument_is_a_clear_error_without_a_run(calm_sandbox: Sandbox, tmp_path: Path) -> None:
    done = stormctl(calm_sandbox, tmp_path, "incident", "--yes", "-e", "@%s" % (tmp_path / "missing.yml"))
    assert done.returncode == 1
    assert "no such file" in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "artifacts").exists()


def flag_values(box: Sandbox) -> dict[str, dict[str, str]]:
    """The data of every flag ConfigMap the sandbox's inventory names."""
    from kubernetes import client

    api = box.kube()
    try:
        core = client.CoreV1Api(api)
        return {
            "%s/%s" % (f["namespace"], f["configmap"]): dict(
                core.read_namespaced_config_map(f["configmap"], f["namespace"]).data or {}
            )
            for f in box.refresh()["flags"]
        }
    finally:
        api.close()


def test_on_a_terminal_it_shows_the_dry_run_plan_and_asks_first(calm_sandbox: Sandbox, tmp_path: Path) -> None:
    import pexpect

    before = len(calm_sandbox.audit())
    flags_before = flag_values(calm_sandbox)
    assert any("redis.retry.aggressive" in data for data in flags_before.values()), flags_before
    command = [
        sys.executable,
        "-m",
        "stormctl",
        "mitigate",
        "--rungs",
        "client_retries",
        "-e",
        "mitigate_force=true",
        "--incident-id",
        "e2e-asks",
        "--reports-dir",
        str(tmp_path / "reports"),
        "--artifacts-dir",
        str(tmp_path / "artifacts"),
    ]
    child = pexpect.spawn(
        command[0],
        command[1:],
        cwd=str(REPO),
        env=calm_sandbox.env(),
        encoding="utf-8",
        timeout=180,
        dimensions=(50, 200),
    )
    try:
        child.expect(r"Go ahead with mitigate for incident e2e-asks\?")
        plan = child.before
        child.sendline("n")
        child.expect(pexpect.EOF)
    finally:
        child.close(force=True)
    assert "The dry run would change" in plan and "redis.retry.aggressive" in plan, plan
    assert child.exitstatus == 1 and "nothing was changed" in (child.before or "")
    writes = [
        e
        for e in calm_sandbox.audit()[before:]
        if e["user"] == "storm-operator"
        and e["verb"] in ("create", "update", "patch", "delete")
        and not e.get("dry_run")
    ]
    assert writes == [], "the dry run wrote to the cluster: %s" % writes
    assert flag_values(calm_sandbox) == flags_before
