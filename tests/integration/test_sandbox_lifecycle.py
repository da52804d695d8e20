"""`stormctl sandbox up|down|status|storm|calm` as a user runs them, against the real services."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import redis

from stormctl.sandbox import procs, services
from tests.fixtures.sandbox import Sandbox, wait_for
from tests.fixtures.services import require_binary

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
STORM_ALERTS = {"RedisTooManyConnections", "RedisRejectedConnections", "RedisDown", "RedisConnectionStorm"}


def stormctl(*args: str, env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "stormctl", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env or dict(os.environ),
        cwd=str(REPO),
    )


def started_things(state_dir: Path) -> tuple[list[int], list[int], str]:
    state = json.loads((state_dir / "state.json").read_text())
    pids = [int(s["pid"]) for s in state["services"].values()] + [int(state["supervisor_pid"])]
    ports = [int(s[key]) for s in state["services"].values() for key in ("port", "tls_port") if s.get(key)]
    sandbox_id = json.loads((state_dir / "spec.json").read_text())["sandbox_id"]
    return pids, ports, sandbox_id


def port_released(port: int, sandbox_id: str) -> bool:
    """Free, or (another program may take a freed port at once) held by no process of this sandbox."""
    with socket.socket() as sock:
        # Connections in TIME_WAIT do not hold the port for a new listener; SO_REUSEADDR says so.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
            return True
        except OSError:
            pass
    everyone = [int(entry.name) for entry in Path("/proc").iterdir() if entry.name.isdigit()]
    return not [pid for pid in procs.listening_among(everyone, port) if procs.has_marker(pid, sandbox_id)]


def assert_nothing_left(state_dir: Path, started: tuple[list[int], list[int], str]) -> None:
    pids, ports, sandbox_id = started
    assert not [p for p in pids if procs.alive(p)], "processes left running"
    assert not procs.marked_processes(sandbox_id), "processes of the sandbox left running"
    assert not [port for port in ports if not port_released(port, sandbox_id)], "ports left in use"
    assert not state_dir.exists(), "state directory left behind"


def test_up_then_down_twice_leaves_no_process_port_or_dir(tmp_path: Path) -> None:
    require_binary("redis-server")
    state_dir = tmp_path / "run"
    try:
        for _cycle in range(2):
            up = stormctl("sandbox", "up", "--dir", str(state_dir))
            assert up.returncode == 0, up.stderr
            state_file = state_dir / "state.json"
            assert stat.S_IMODE(state_file.stat().st_mode) == 0o600
            state = json.loads(state_file.read_text())
            assert state["status"] == "ready"
            started = started_things(state_dir)
            pids = started[0]
            assert set(state["services"]) == {"redis", "exporter", "prometheus", "kubeapi", "fleet"}
            # The CLI has exited: the sandbox keeps running on its own.
            assert all(procs.alive(p) for p in pids)
            client = redis.Redis(host="127.0.0.1", port=state["redis"]["port"], password=state["redis"]["password"])
            assert client.ping()
            client.close()

            down = stormctl("sandbox", "down", "--dir", str(state_dir))
            assert down.returncode == 0, down.stderr
            assert_nothing_left(state_dir, started)

        again = stormctl("sandbox", "down", "--dir", str(state_dir))
        assert again.returncode == 0 and "no sandbox" in again.stdout
    finally:
        services.down(state_dir)


def test_down_after_the_supervisor_is_killed_leaves_nothing(tmp_path: Path) -> None:
    require_binary("redis-server")
    state_dir = tmp_path / "run"
    try:
        up = stormctl("sandbox", "up", "--dir", str(state_dir))
        assert up.returncode == 0, up.stderr
        started = started_things(state_dir)
        pids = started[0]
        supervisor = json.loads((state_dir / "state.json").read_text())["supervisor_pid"]

        os.kill(supervisor, signal.SIGKILL)
        wait_for(lambda: not procs.alive(supervisor), 10, "the supervisor to die")
        # The services die with their supervisor (PR_SET_PDEATHSIG), so none serves unnoticed.
        wait_for(lambda: not [p for p in pids if procs.alive(p)], 15, "the services to follow their supervisor")
        status = stormctl("sandbox", "status", "--dir", str(state_dir))
        assert status.returncode != 0 and "not running" in status.stdout

        down = stormctl("sandbox", "down", "--dir", str(state_dir))
        assert down.returncode == 0, down.stderr
        assert_nothing_left(state_dir, started)
    finally:
        services.down(state_dir)


def test_up_refuses_a_second_sandbox_in_the_same_dir(sandbox: Sandbox) -> None:
    second = stormctl("sandbox", "up", env=sandbox.env())
    assert second.returncode == 1
    assert "already running in %s" % sandbox.dir in second.stderr
    sandbox.assert_healthy()


def test_status_json_has_the_endpoints_and_no_secret(sandbox: Sandbox) -> None:
    result = stormctl("sandbox", "status", "--json", env=sandbox.env())
    assert result.returncode == 0, result.stderr
    report: dict[str, Any] = json.loads(result.stdout)
    assert sandbox.redis_password not in result.stdout
    assert all(token not in result.stdout for token in sandbox["kube"]["tokens"].values())

    password_file = Path(report["password_file"])
    assert stat.S_IMODE(password_file.stat().st_mode) == 0o600
    client = redis.Redis(
        host=report["redis"]["host"],
        port=report["redis"]["port"],
        password=password_file.read_text().strip(),
        decode_responses=True,
    )
    assert client.config_get("maxclients") == {"maxclients": str(report["redis"]["maxclients"])}
    client.close()

    prometheus = report["prometheus"]["url"]
    assert prometheus.startswith("http://127.0.0.1:")
    kubeconfig = Path(report["kube"]["kubeconfig"])
    assert stat.S_IMODE(kubeconfig.stat().st_mode) == 0o600
    from kubernetes import client as kube_client
    from kubernetes import config as kube_config

    api = kube_config.new_client_from_config(config_file=str(kubeconfig))
    listed = {ns.metadata.name for ns in kube_client.CoreV1Api(api).list_namespace().items}
    assert set(report["namespaces"]) <= listed
    assert {"redis-storm"} <= set(report["namespaces"])
    assert report["workloads"], "the fleet's baseline workloads are listed"
    assert all({"namespace", "kind", "name"} <= set(w) for w in report["workloads"])
    assert report["scenario"] is None
    assert all(s["healthy"] for s in report["services"].values())

    text = stormctl("sandbox", "status", env=sandbox.env())
    assert text.returncode == 0, text.stderr
    assert sandbox.redis_password not in text.stdout
    assert str(report["redis"]["port"]) in text.stdout and prometheus in text.stdout


def test_kubectl_works_with_the_kubeconfig(sandbox: Sandbox) -> None:
    # kubectl sends the bearer token only over https: the kubeconfig names the TLS listener and its CA
    kubectl = require_binary("kubectl")
    env = dict(os.environ, KUBECONFIG=sandbox["kube"]["kubeconfig"])

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        done = subprocess.run([kubectl, *args], capture_output=True, text=True, timeout=30, env=env)
        assert done.returncode == 0, done.stderr
        return done

    pods = json.loads(run("get", "pods", "-A", "-o", "json").stdout)["items"]
    assert pods and all(p["status"]["phase"] for p in pods)
    deployments = json.loads(run("get", "deploy", "-n", "trading", "-o", "json").stdout)["items"]
    expected = {w["name"] for w in sandbox["workloads"] if w["namespace"] == "trading" and w["kind"] == "Deployment"}
    assert expected and {d["metadata"]["name"] for d in deployments} == expected
    server = run("config", "view", "--minify", "-o", "jsonpath={.clusters[0].cluster.server}").stdout
    assert server == sandbox["kube"]["tls_api"] and server.startswith("https://127.0.0.1:")


def test_prometheus_scrapes_redis_and_the_fleet_and_loads_the_rules(sandbox: Sandbox) -> None:
    wait_for(lambda: sandbox.prom_value('redis_up{job="redis"}') == 1, 10, "redis_up 1 in Prometheus")
    assert sandbox.prom_value("redis_config_maxclients") == sandbox.maxclients
    wait_for(lambda: sandbox.prom_value('up{job="fleet"}') == 1, 10, "the fleet's /metrics scraped")

    groups = sandbox.prom_api("/api/v1/rules")["groups"]
    rules = {rule["name"]: rule for group in groups for rule in group["rules"]}
    assert set(rules) >= STORM_ALERTS
    assert all(rules[name]["health"] == "ok" and rules[name]["labels"]["severity"] for name in STORM_ALERTS)
    assert groups[0]["interval"] == 1
    # the drill's short waits, not production's minutes, so a drill's alerts fire within its storm
    assert {name: rules[name]["duration"] for name in STORM_ALERTS} == {
        "RedisTooManyConnections": 10, "RedisRejectedConnections": 0, "RedisDown": 5, "RedisConnectionStorm": 10,
    }


def test_a_killed_service_comes_back_on_its_own_port(sandbox: Sandbox) -> None:
    before = services.status(sandbox.dir)["services"]["redis"]
    os.kill(before["pid"], signal.SIGKILL)
    wait_for(lambda: not services.status(sandbox.dir)["services"]["redis"]["alive"], 10, "Redis to be gone")
    assert not services.status(sandbox.dir)["healthy"]

    sandbox.revive()
    after = services.status(sandbox.dir)["services"]["redis"]
    assert after["port"] == before["port"] and after["pid"] != before["pid"]
    client = sandbox.redis()
    assert client.ping()
    client.close()
    sandbox.assert_healthy()




PLAYBOOK = """
- name: Template the sandbox's shared storm_* variables
  hosts: sandbox-redis
  gather_facts: false
  tasks:
    - name: Write what the inventory resolved
      ansible.builtin.copy:
        dest: "{{ out }}"
        mode: "0600"
        content: "{{ {'host': storm_redis_host, 'port': storm_redis_port,
                      'password_sha256': storm_redis_password | hash('sha256'),
                      'prometheus': storm_prometheus_url, 'kubeconfig': storm_kubeconfig,
                      'namespaces': storm_namespaces, 'ledger': storm_ledger_namespace,
                      'redis_workload': storm_redis_workload, 'ingresses': storm_ingresses,
                      'flags': storm_flags} | to_json }}"
"""


def test_inventory_templates_the_storm_vars_of_the_running_sandbox(sandbox: Sandbox, tmp_path: Path) -> None:
    playbook = tmp_path / "vars.yml"
    playbook.write_text(PLAYBOOK)
    out = tmp_path / "vars.json"
    ansible_playbook = Path(sys.executable).with_name("ansible-playbook")
    result = subprocess.run(
        [str(ansible_playbook), "-i", str(REPO / "inventories" / "sandbox"), str(playbook), "-e", "out=%s" % out],
        capture_output=True,
        text=True,
        timeout=120,
        env=sandbox.env(),
        cwd=str(REPO),
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert sandbox.redis_password not in result.stdout
    resolved = json.loads(out.read_text())
    assert resolved["host"] == sandbox.redis_host and resolved["port"] == sandbox.redis_port
    assert resolved["password_sha256"] == hashlib.sha256(sandbox.redis_password.encode()).hexdigest()
    assert resolved["prometheus"] == sandbox.prometheus_url
    assert resolved["kubeconfig"] == sandbox.kubeconfig
    assert resolved["ledger"] == "redis-storm"
    deployments = {(w["namespace"], w["name"]) for w in sandbox["workloads"] if w["kind"] == "Deployment"}
    assert resolved["namespaces"] and set(resolved["namespaces"]) == {ns for ns, _ in deployments} - {
        resolved["redis_workload"]["namespace"]
    }
    assert resolved["redis_workload"]["kind"] == "StatefulSet"
    assert resolved["ingresses"] and all((i["namespace"], i["workload"]) in deployments for i in resolved["ingresses"])
    assert {i["provider"] for i in resolved["ingresses"]} <= {"nginx", "traefik"}
    assert resolved["flags"] and all((f["namespace"], f["workload"]) in deployments for f in resolved["flags"])
    assert {f["format"] for f in resolved["flags"]} <= {"plain", "flagd"}


def test_without_a_running_sandbox_the_inventory_stops_the_run_and_says_why(tmp_path: Path) -> None:
    nowhere = tmp_path / "no-sandbox"
    ansible_playbook = Path(sys.executable).with_name("ansible-playbook")
    result = subprocess.run(
        [str(ansible_playbook), "-i", str(REPO / "inventories" / "sandbox"), str(REPO / "playbooks" / "triage.yml")],
        capture_output=True, text=True, timeout=120, cwd=str(REPO),
        env=dict(os.environ, STORM_SANDBOX_DIR=str(nowhere), ANSIBLE_CONFIG=str(REPO / "ansible.cfg")),
    )
    output = result.stdout + result.stderr
    assert result.returncode != 0, output  # not "no hosts matched" and success
    assert "no sandbox is running at %s: run `stormctl sandbox up`" % nowhere in output


def test_storm_and_calm_switch_the_running_scenario(calm_sandbox: Sandbox) -> None:
    from kubernetes import client as kube_client

    env = calm_sandbox.env()
    bad = stormctl("sandbox", "storm", "no-such-scenario", env=env)
    assert bad.returncode == 1 and "no-such-scenario" in bad.stderr

    apps = kube_client.AppsV1Api(calm_sandbox.kube())
    baseline = apps.read_namespaced_deployment("trading-api", "trading").spec.replicas
    started = stormctl("sandbox", "storm", "market-open", env=env)
    assert started.returncode == 0, started.stderr
    try:
        report = json.loads(stormctl("sandbox", "status", "--json", env=env).stdout)
        assert report["scenario"] == "market-open"
        apps.patch_namespaced_deployment_scale("trading-api", "trading", {"spec": {"replicas": baseline + 2}})
    finally:
        calmed = stormctl("sandbox", "calm", "--reset", env=env)
    assert calmed.returncode == 0, calmed.stderr
    report = json.loads(stormctl("sandbox", "status", "--json", env=env).stdout)
    assert report["scenario"] is None
    assert apps.read_namespaced_deployment("trading-api", "trading").spec.replicas == baseline
