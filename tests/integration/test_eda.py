"""The storm rulebook under the real ansible-rulebook, fed real Alertmanager webhook notifications.

The rulebook's run_job_template actions are swapped for run_playbook of a recorder playbook (the
conditions, throttles, limits and extra vars stay as written), so each started "job" leaves a file.
"""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest
import yaml

from stormctl.sandbox.procs import free_port
from tests.fixtures.services import require_binary

REPO = Path(__file__).resolve().parents[2]
RULEBOOK = REPO / "extensions" / "eda" / "rulebooks" / "redis_storm.yml"
RECORDER = Path(__file__).parent / "eda" / "record_run.yml"
VENV_BIN = Path(os.environ.get("VIRTUAL_ENV", REPO / ".venv")) / "bin"
TOKEN = "eda-test-shared-secret"
TRIAGE_JT = "redis-storm triage (alert)"
MITIGATE_JT = "redis-storm mitigate (alert)"
# Exporter targets of the two Redis deployments, as Prometheus labels them.
PAYMENTS = "redis-exporter.payments-redis:9121"
TRADING = "redis-exporter.trading-redis:9121"


def wait_for(condition: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError("timed out after %.0fs waiting for %s" % (timeout, what))


def launch_variables() -> dict[str, set[str]]:
    """Template name -> the variables its survey lets a launch set (AWX refuses any other)."""
    templates = yaml.safe_load((REPO / "awx" / "vars" / "job_templates.yml").read_text())["awx_job_templates"]
    return {t["name"]: {q["variable"] for q in t["survey_spec"]["spec"]} for t in templates if t.get("survey_spec")}


def runnable_rulebook(tmp_path: Path, records: Path) -> Path:
    """The real rulebook with each run_job_template replaced by run_playbook of the recorder."""
    rulesets = yaml.safe_load(RULEBOOK.read_text())
    allowed = launch_variables()
    swapped = 0
    for ruleset in rulesets:
        for rule in ruleset["rules"]:
            actions = rule["actions"] if "actions" in rule else [rule["action"]]
            for action in actions:
                job = action.pop("run_job_template")
                job_args = copy.deepcopy(job.get("job_args", {}))
                assert set(job_args) == {"extra_vars"}, "an alert job takes no limit, only survey answers"
                extra_vars = job_args["extra_vars"]
                assert set(extra_vars) <= allowed[job["name"]], "AWX would refuse %s" % sorted(extra_vars)
                extra_vars.update({"storm_record_template": job["name"], "storm_record_dir": str(records)})
                action["run_playbook"] = {"name": str(tmp_path / "play" / RECORDER.name), "extra_vars": extra_vars}
                swapped += 1
    assert swapped >= 2, "the rulebook starts triage and the auto-mitigation job"
    (tmp_path / "play").mkdir()
    shutil.copy(RECORDER, tmp_path / "play" / RECORDER.name)
    path = tmp_path / "rulebook.yml"
    path.write_text(yaml.safe_dump(rulesets, sort_keys=False))
    return path


def write_inventory(directory: Path) -> Path:
    """Two Redis deployments; only payments-redis lets an alert start mitigation."""
    directory.mkdir()
    (directory / "hosts.yml").write_text(yaml.safe_dump({"all": {
        "hosts": {"payments-redis": {"storm_auto_mitigate": True}, "trading-redis": {}},
        "vars": {"ansible_connection": "local",
                 "ansible_python_interpreter": str(VENV_BIN / "python")}}}))
    return directory


def listening_address(port: int) -> str:
    """The address a TCP socket listens on for `port` (from the kernel's table)."""
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, hex_port = local.rsplit(":", 1)
            if state == "0A" and int(hex_port, 16) == port:
                if len(address) == 8:
                    return ".".join(str(b) for b in reversed(bytes.fromhex(address)))
                return "::" if set(address) == {"0"} else address
    raise AssertionError("nothing listens on port %d" % port)


class Rulebook:
    def __init__(self, proc: subprocess.Popen[bytes], port: int, log: Path, records: Path) -> None:
        self.proc, self.port, self.log, self.records = proc, port, log, records

    def post(self, payload: dict[str, Any], token: str | None = TOKEN) -> int:
        request = urllib.request.Request(
            "http://127.0.0.1:%d/alerts" % self.port, data=json.dumps(payload).encode(), method="POST",
            headers={"Content-Type": "application/json", **({"Authorization": "Bearer " + token} if token else {})})
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return int(response.status)
        except urllib.error.HTTPError as exc:
            return int(exc.code)

    def runs(self) -> list[dict[str, Any]]:
        return sorted((json.loads(p.read_text()) for p in self.records.glob("*.json")),
                      key=lambda r: (r["template"], r["host"]))

    def busy(self) -> bool:
        """Whether a playbook the rulebook started is still running (any descendant process)."""
        parents: dict[int, int] = {}
        commands: dict[int, bytes] = {}
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                parents[int(stat.parent.name)] = int(stat.read_text().rsplit(")", 1)[1].split()[1])
                commands[int(stat.parent.name)] = (stat.parent / "cmdline").read_bytes()
            except (OSError, IndexError, ValueError):
                continue
        descendants, frontier = set(), {self.proc.pid}
        while frontier:
            frontier = {pid for pid, parent in parents.items() if parent in frontier} - descendants
            descendants |= frontier
        return any(b"ansible-playbook" in commands.get(pid, b"") for pid in descendants)

    def settle(self, expected: int, timeout: float = 60) -> list[dict[str, Any]]:
        """Wait until `expected` runs are recorded and no playbook is running any more."""
        wait_for(lambda: len(self.runs()) >= expected, timeout, "%d recorded runs (log: %s)" % (expected, self.log))
        wait_for(lambda: not self.busy(), timeout, "the started playbooks to finish")
        return self.runs()


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


@pytest.fixture
def rulebook(tmp_path: Path) -> Iterator[Rulebook]:
    require_binary("java")
    records = tmp_path / "records"
    records.mkdir()
    port = free_port()
    variables = tmp_path / "vars.yml"
    # no alertmanager_webhook_host: the rulebook's default address is under test
    variables.write_text(yaml.safe_dump({
        "alertmanager_webhook_port": port, "alertmanager_webhook_token": TOKEN,
        "alertmanager_inventory_hosts": ["payments-redis", "trading-redis"],
        "alertmanager_host_map": {PAYMENTS: "payments-redis", TRADING: "trading-redis"}}))
    log = tmp_path / "rulebook.log"
    env = dict(os.environ, ANSIBLE_CONFIG=str(REPO / "ansible.cfg"),
               PATH="%s:%s" % (VENV_BIN, os.environ.get("PATH", "")))
    if "JAVA_HOME" not in env and Path("/usr/lib/jvm/java-17-openjdk-amd64").is_dir():
        env["JAVA_HOME"] = "/usr/lib/jvm/java-17-openjdk-amd64"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [str(VENV_BIN / "ansible-rulebook"), "--rulebook", str(runnable_rulebook(tmp_path, records)),
             "-i", str(write_inventory(tmp_path / "inventory")), "--vars", str(variables), "-v"],
            cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        def listening() -> bool:
            assert proc.poll() is None, "ansible-rulebook exited: %s" % log.read_text()[-3000:]
            with socket.socket() as sock:
                return sock.connect_ex(("127.0.0.1", port)) == 0
        wait_for(listening, 60, "the alertmanager source on port %d" % port)
        yield Rulebook(proc, port, log, records)
    finally:
        stop(proc)


def alertmanager_notifications(url: str) -> float:
    """Webhook notifications Alertmanager has sent (its own counter)."""
    with urllib.request.urlopen(url + "/metrics", timeout=5) as response:
        text = response.read().decode()
    found = re.search(r'^alertmanager_notifications_total\{integration="webhook"[^}]*\} (\S+)$', text, re.M)
    return float(found.group(1)) if found else 0.0


@pytest.fixture
def alertmanager(tmp_path: Path, rulebook: Rulebook) -> Iterator[str]:
    """A real Alertmanager that sends every Redis alert to the rulebook's source."""
    binary = require_binary("prometheus-alertmanager")
    port = free_port()
    config = tmp_path / "alertmanager.yml"
    config.write_text(yaml.safe_dump({
        "route": {"receiver": "redis-storm-eda", "group_by": ["alertname", "instance"], "group_wait": "100ms",
                  "group_interval": "1s", "repeat_interval": "1h"},
        "receivers": [{"name": "redis-storm-eda", "webhook_configs": [{
            "url": "http://127.0.0.1:%d/alerts" % rulebook.port, "send_resolved": True,
            "http_config": {"authorization": {"type": "Bearer", "credentials": TOKEN}}}]}],
    }))
    (tmp_path / "am-data").mkdir()
    log = tmp_path / "alertmanager.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [binary, "--config.file=%s" % config, "--storage.path=%s" % (tmp_path / "am-data"),
             "--web.listen-address=127.0.0.1:%d" % port, "--cluster.listen-address="],
            stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    url = "http://127.0.0.1:%d" % port
    try:
        def ready() -> bool:
            assert proc.poll() is None, "alertmanager exited: %s" % log.read_text()[-2000:]
            try:
                with urllib.request.urlopen(url + "/-/ready", timeout=2) as response:
                    return response.status == 200
            except OSError:
                return False
        wait_for(ready, 30, "alertmanager on port %d" % port)
        yield url
    finally:
        stop(proc)


def post_alerts(url: str, alerts: list[dict[str, Any]]) -> None:
    """Post alerts to Alertmanager's API, as Prometheus does."""
    body = [{k: a[k] for k in ("labels", "annotations", "startsAt", "generatorURL")} for a in alerts]
    for posted, original in zip(body, alerts):
        if original["status"] == "resolved":
            posted["endsAt"] = original["endsAt"]
    request = urllib.request.Request(url + "/api/v2/alerts", data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 200


def notification(status: str, alerts: list[dict[str, Any]]) -> dict[str, Any]:
    """An Alertmanager webhook notification (version 4), as Alertmanager sends it."""
    return {
        "version": "4", "groupKey": '{}:{alertname="%s"}' % alerts[0]["labels"]["alertname"],
        "truncatedAlerts": 0, "status": status, "receiver": "redis-storm-eda",
        "groupLabels": {"alertname": alerts[0]["labels"]["alertname"]},
        "commonLabels": alerts[0]["labels"], "commonAnnotations": alerts[0]["annotations"],
        "externalURL": "http://alertmanager.example:9093", "alerts": alerts,
    }


def alert(name: str, instance: str, status: str = "firing") -> dict[str, Any]:
    now = datetime.now(timezone.utc)
    return {
        "status": status,
        "labels": {"alertname": name, "instance": instance, "job": "redis-exporter", "severity": "warning"},
        "annotations": {"summary": "Redis %s is near maxclients" % instance},
        "startsAt": (now - timedelta(minutes=1)).isoformat(),
        "endsAt": now.isoformat() if status == "resolved" else "0001-01-01T00:00:00Z",
        "generatorURL": "http://prometheus.example:9090/graph?g0.expr=redis_connected_clients",
        "fingerprint": "%016x" % abs(hash((name, instance))),
    }


def summary(runs: list[dict[str, Any]]) -> list[tuple[str, str, str, str]]:
    return [(r["template"], r["host"], r["alert"], r["status"]) for r in runs]


def test_firing_storm_alert_starts_triage_once_per_instance(rulebook: Rulebook) -> None:
    assert listening_address(rulebook.port) == "127.0.0.1"
    # Without the shared secret nothing reaches the rules.
    assert rulebook.post(notification("firing", [alert("RedisTooManyConnections", PAYMENTS)]), token=None) == 401
    assert rulebook.post(notification("firing", [alert("RedisTooManyConnections", PAYMENTS)]), token="wrong") == 401

    assert rulebook.post(notification("firing", [alert("RedisTooManyConnections", PAYMENTS)])) == 200
    runs = rulebook.settle(2)
    assert summary(runs) == [
        (MITIGATE_JT, "payments-redis", "RedisTooManyConnections", "firing"),
        (TRIAGE_JT, "payments-redis", "RedisTooManyConnections", "firing"),
    ]
    # the mitigation joins the alert group's incident: its ledger, attempt caps and cooldowns
    assert re.fullmatch(r"alert-[0-9a-f]{16}", runs[0]["incident_id"]), runs[0]

    # Flapping: the same instance fires again (another storm alert too) within the throttle window.
    assert rulebook.post(notification("firing", [alert("RedisTooManyConnections", PAYMENTS)])) == 200
    assert rulebook.post(notification("firing", [alert("RedisRejectedConnections", PAYMENTS)])) == 200
    # The throttle is per Redis deployment, whatever other label (another exporter instance) the sender sets.
    other_exporter = alert("RedisConnectionStorm", "10.1.2.3:9121")
    other_exporter["labels"]["storm_host"] = "payments-redis"
    assert rulebook.post(notification("firing", [other_exporter])) == 200
    # Resolved alerts and alerts that are not about a storm start nothing.
    assert rulebook.post(notification("resolved", [alert("RedisTooManyConnections", TRADING, "resolved")])) == 200
    assert rulebook.post(notification("firing", [alert("RedisReplicationBroken", TRADING)])) == 200
    # A label naming a pattern instead of an inventory host starts nothing, for any host.
    storm_all = alert("RedisConnectionStorm", TRADING)
    storm_all["labels"]["storm_host"] = "all"
    assert rulebook.post(notification("firing", [storm_all])) == 200
    # Another instance's storm starts its own triage; its inventory does not allow mitigation.
    assert rulebook.post(notification("firing", [alert("RedisConnectionStorm", TRADING)])) == 200
    runs = rulebook.settle(3)
    assert summary(runs) == [
        (MITIGATE_JT, "payments-redis", "RedisTooManyConnections", "firing"),
        (TRIAGE_JT, "payments-redis", "RedisTooManyConnections", "firing"),
        (TRIAGE_JT, "trading-redis", "RedisConnectionStorm", "firing"),
    ]
    assert rulebook.proc.poll() is None


def test_alertmanager_routes_storm_alerts_to_the_rulebook(rulebook: Rulebook, alertmanager: str) -> None:
    post_alerts(alertmanager, [alert("RedisTooManyConnections", PAYMENTS)])
    assert summary(rulebook.settle(2)) == [
        (MITIGATE_JT, "payments-redis", "RedisTooManyConnections", "firing"),
        (TRIAGE_JT, "payments-redis", "RedisTooManyConnections", "firing"),
    ]
    # Another storm alert for the same instance (its own group, so Alertmanager sends it), then
    # the first one resolves: both reach the rulebook and start nothing.
    post_alerts(alertmanager, [alert("RedisRejectedConnections", PAYMENTS)])
    wait_for(lambda: alertmanager_notifications(alertmanager) >= 2, 30, "the second notification")
    post_alerts(alertmanager, [alert("RedisTooManyConnections", PAYMENTS, "resolved")])
    wait_for(lambda: alertmanager_notifications(alertmanager) >= 3, 30, "the resolved notification")
    post_alerts(alertmanager, [alert("RedisConnectionStorm", TRADING)])
    wait_for(lambda: alertmanager_notifications(alertmanager) >= 4, 30, "the trading notification")
    assert summary(rulebook.settle(3)) == [
        (MITIGATE_JT, "payments-redis", "RedisTooManyConnections", "firing"),
        (TRIAGE_JT, "payments-redis", "RedisTooManyConnections", "firing"),
        (TRIAGE_JT, "trading-redis", "RedisConnectionStorm", "firing"),
    ]
