"""The collection on each supported ansible-core (meta/runtime.yml: requires_ansible >=2.16.0; 2.16 as AWX
execution environments ship it, with the older redis and kubernetes libraries they carry; the newest on
the Python it needs), one venv per core (tests/fixtures/compat.py): real ansible-playbook runs from it,
against a real redis-server and the Kubernetes API emulator, and against the example (production)
inventory for every role's argument validation; Prometheus queries against a real Prometheus over TLS."""

from __future__ import annotations

import json
import ssl
import subprocess
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterator, List

import pytest
import yaml

from stormctl.sandbox.procs import free_port
from tests.fixtures.kubeapi import deployment, namespace
from tests.fixtures.redis import TlsCerts, make_tls_certs
from tests.fixtures.services import require_binary, stop_process_group

pytestmark = pytest.mark.integration

INCIDENT = "compat-216"
HOLDER = "compat@ee"


STEPS = ("core_version", "clients_info", "verdict", "lock_acquire", "scale_check", "scale_real", "rollback",
         "lock_release", "triage_valid", "triage_rejected")


@dataclass
class TlsPrometheus:
    url: str
    certs: TlsCerts


@pytest.fixture(scope="module")
def tls_prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsPrometheus]:
    """A real Prometheus serving its API over TLS with a certificate of the test CA."""
    base = tmp_path_factory.mktemp("prometheus-tls")
    certs = make_tls_certs(base / "certs")
    web = base / "web.yml"
    web.write_text(json.dumps({"tls_server_config": {"cert_file": str(certs.cert), "key_file": str(certs.key)}}))
    config = base / "prometheus.yml"
    config.write_text(json.dumps({"global": {"scrape_interval": "1m"}}))
    port = free_port()
    process = subprocess.Popen(
        [require_binary("prometheus"), "--config.file", str(config), "--web.config.file", str(web),
         "--storage.tsdb.path", str(base / "tsdb"), "--web.listen-address", "127.0.0.1:%d" % port],
        start_new_session=True, stdout=subprocess.DEVNULL, stderr=(base / "prometheus.log").open("wb"))
    url = "https://127.0.0.1:%d" % port
    context = ssl.create_default_context(cafile=str(certs.ca))
    deadline = time.monotonic() + 60
    try:
        while True:
            try:
                with urllib.request.urlopen(url + "/-/ready", timeout=2, context=context) as answer:
                    if answer.status == 200:
                        break
            except OSError as exc:
                if process.poll() is not None or time.monotonic() > deadline:
                    pytest.fail("Prometheus on %s did not get ready (%s):\n%s"
                                % (url, exc, (base / "prometheus.log").read_text()[-2000:]))
            time.sleep(0.1)
        yield TlsPrometheus(url, certs)
    finally:
        stop_process_group(process)


def compat_play(redis: Any, kubeconfig: str, results_file: Path, prometheus: TlsPrometheus) -> List[Dict[str, Any]]:
    """Each step registers its result; the last task writes them all to ``results_file`` (ansible-core 2.16
    has no json stdout callback of its own: that one lives in ansible.posix). The connections come from
    meta/runtime.yml's action groups, as the playbooks set them."""
    scale = {"incident_id": INCIDENT, "namespace": "trading", "name": "trading-api", "replicas": 4,
             "allowed_namespaces": ["trading"], "min_replicas": 2, "max_reduction_percent": 50}
    lock = {"incident_id": INCIDENT, "holder": HOLDER, "ttl_seconds": 300}
    collect = "{{ {%s} | to_json }}" % ", ".join("'%s': %s" % (step, step) for step in STEPS)
    return [{
        "name": "fintech.redis_storm on each ansible-core", "hosts": "localhost", "gather_facts": False,
        # Set as the sandbox inventory does; the roles' handling of it unset is the next test's subject.
        "vars": {"ansible_python_interpreter": "{{ ansible_playbook_python }}", "storm_kube_validate_certs": True},
        "module_defaults": {
            "group/fintech.redis_storm.kubernetes": {"kubeconfig": kubeconfig},
            "group/fintech.redis_storm.redis": {"host": redis.host, "port": redis.port, "password": redis.password}},
        "tasks": [
            {"name": "core version", "ansible.builtin.set_fact": {"core_version": "{{ ansible_version.full }}"}},
            {"name": "clients info", "fintech.redis_storm.redis_clients_info": {
                "sample_seconds": 0.2, "latency_samples": 3}, "register": "clients_info"},
            {"name": "verdict", "fintech.redis_storm.storm_verdict": {"redis": "{{ clients_info }}"},
             "register": "verdict"},
            {"name": "lock acquire", "fintech.redis_storm.storm_lock": lock, "register": "lock_acquire"},
            {"name": "scale check", "fintech.redis_storm.workload_scale": scale, "check_mode": True, "diff": True,
             "register": "scale_check"},
            {"name": "scale real", "fintech.redis_storm.workload_scale": scale, "diff": True,
             "register": "scale_real"},
            {"name": "rollback", "fintech.redis_storm.storm_rollback": {"incident_id": INCIDENT,
                                                                        "allowed_namespaces": ["trading"]},
             "register": "rollback"},
            {"name": "lock release", "fintech.redis_storm.storm_lock": dict(lock, state="released"),
             "register": "lock_release"},
            {"name": "triage role", "ansible.builtin.include_role": {"name": "fintech.redis_storm.triage"},
             "vars": {"triage_redis_host": redis.host, "triage_redis_port": redis.port,
                      "triage_redis_password": redis.password, "triage_namespaces": ["trading"],
                      "triage_prometheus_url": prometheus.url, "triage_prometheus_ca_path": str(prometheus.certs.ca),
                      "triage_kubeconfig": kubeconfig}},
            {"name": "triage verdict", "ansible.builtin.set_fact": {"triage_valid": "{{ storm_triage }}"}},
            {"name": "triage arguments", "block": [
                {"name": "triage bad port", "ansible.builtin.include_role": {"name": "fintech.redis_storm.triage"},
                 "vars": {"triage_redis_host": redis.host, "triage_redis_port": "not-a-port",
                          "triage_namespaces": ["trading"], "triage_prometheus_url": ""}},
                {"name": "triage accepted", "ansible.builtin.set_fact": {"triage_rejected": False}},
            ], "rescue": [
                {"name": "triage rejected", "ansible.builtin.set_fact": {
                    "triage_rejected": "{{ ansible_failed_result | combine({'task': ansible_failed_task.name}) }}"}},
            ]},
            {"name": "keep results", "ansible.builtin.copy": {"content": collect, "dest": str(results_file),
                                                               "mode": "0600"}},
        ],
    }]


def scale_writes(kubeapi: Any, since: int, dry_run: bool) -> List[Dict[str, Any]]:
    return [w for w in kubeapi.writes(include_dry_run=True, since=since)
            if (w["resource"], w["subresource"], w["name"]) == ("deployments", "scale", "trading-api")
            and bool(w["dry_run"]) is dry_run]


def test_collection_runs_on_ansible_core(compat_ansible: Any, redis_server: Any, kubeapi: Any,
                                              tls_prometheus: TlsPrometheus, tmp_path: Path) -> None:
    pins = compat_ansible.pins
    assert pins["ansible-core"].startswith(compat_ansible.core.version + ".")
    for package in ("ansible-core", "redis", "kubernetes"):
        assert compat_ansible.versions[package] == pins[package]
    kubeapi.seed([namespace("redis-storm"), namespace("trading"), deployment("trading", "trading-api", replicas=6)])
    mark = kubeapi.last_seq()
    playbook = tmp_path / "compat.yml"
    inventory = tmp_path / "hosts.yml"
    inventory.write_text("all:\n  hosts:\n    localhost:\n      ansible_connection: local\n")

    results_file = tmp_path / "results.json"
    playbook.write_text(yaml.safe_dump(compat_play(redis_server, str(kubeapi.kubeconfig), results_file, tls_prometheus),
                                       sort_keys=False))

    run = compat_ansible.playbook(playbook, inventory, env={"ANSIBLE_LOCAL_TEMP": str(tmp_path / "tmp")})
    output = run.stdout[-4000:] + run.stderr[-2000:]
    assert run.returncode == 0 and results_file.exists(), "ansible-playbook %s rc %d:\n%s" % (
        compat_ansible.core.version, run.returncode, output)
    results = json.loads(results_file.read_text())
    assert redis_server.password not in run.stdout + run.stderr + results_file.read_text()

    assert results["core_version"] == pins["ansible-core"]

    clients = results["clients_info"]
    assert not clients.get("failed"), clients
    assert clients["reachable"] is True and clients["clients"]["max"] == redis_server.maxclients

    triage = results["verdict"]["storm_triage"]
    assert triage["storm"] is False and triage["severity"] == "none"
    assert "redis" in triage["sources_answered"]

    acquired = results["lock_acquire"]
    assert acquired["changed"] and acquired["acquired"] and acquired["holder"] == HOLDER

    check, real = results["scale_check"], results["scale_real"]
    assert check["changed"] and (check["replicas_before"], check["replicas_after"]) == (6, 4), check
    assert real["changed"] and (real["replicas_before"], real["replicas_after"]) == (6, 4), real
    # The check run validated with a server-side dry run; the only stored scale writes are the real
    # run's and the rollback's.
    assert len(scale_writes(kubeapi, mark, dry_run=True)) == 1
    stored = scale_writes(kubeapi, mark, dry_run=False)
    assert [w["user"] for w in stored] == ["storm-operator", "storm-operator"], stored

    rollback = results["rollback"]
    assert rollback["changed"] and rollback["summary"]["restored"] == 1, rollback
    assert rollback["summary"]["failed"] == rollback["summary"]["drifted"] == 0
    live = kubeapi.request("GET", "/apis/apps/v1/namespaces/trading/deployments/trading-api")
    assert live["spec"]["replicas"] == 6

    released = results["lock_release"]
    assert released["changed"] and released["acquired"] is False

    role_verdict = results["triage_valid"]
    assert role_verdict["storm"] is False
    answered = set(role_verdict["sources_answered"])
    assert {"redis", "prometheus", "kubernetes"} <= answered, json.dumps(role_verdict)[:3000]

    rejected = results["triage_rejected"]
    assert rejected, "the triage role accepted triage_redis_port: not-a-port"
    assert rejected["failed"] is True and rejected["task"].startswith("Validating arguments against arg spec")
    assert len(rejected["argument_errors"]) == 1 and "triage_redis_port" in rejected["argument_errors"][0], rejected
    assert "triage_redis_port" in rejected["msg"]


def test_prometheus_answers_over_tls_on_ansible_core(compat_ansible: Any, tls_prometheus: TlsPrometheus,
                                                          tmp_path: Path) -> None:
    """Instant, range and named queries with the CA given, and the CA checks: ansible-core 2.16's Request
    takes no TLS context of ours, so the CA and validate_certs reach it by another way."""
    url, certs = tls_prometheus.url, tls_prometheus.certs
    tasks: Dict[str, Dict[str, Any]] = {
        "instant": {"url": url, "ca_path": str(certs.ca), "query": "vector(42)", "expect": {"op": "==", "value": 42}},
        "range": {"url": url, "ca_path": str(certs.ca), "query": "vector(1)", "start": "-1m", "step": "15s"},
        "named": {"url": url, "ca_path": str(certs.ca), "queries": {"one": "vector(1)", "bad": "rate(vector(1))"}},
        "wrong_ca": {"url": url, "ca_path": str(certs.wrong_ca), "query": "vector(1)", "timeout": 5},
        "unverified": {"url": url, "validate_certs": False, "query": "vector(7)"},
    }
    results_file = tmp_path / "results.json"
    play = [{"name": "prometheus_query on each ansible-core", "hosts": "localhost", "gather_facts": False,
             "vars": {"ansible_python_interpreter": "{{ ansible_playbook_python }}"},
             "tasks": [*({"name": name, "fintech.redis_storm.prometheus_query": args, "register": name,
                          "ignore_errors": name == "wrong_ca"} for name, args in tasks.items()),
                       {"name": "keep results", "ansible.builtin.copy": {
                           "content": "{{ {%s} | to_json }}" % ", ".join("'%s': %s" % (n, n) for n in tasks),
                           "dest": str(results_file), "mode": "0600"}}]}]
    playbook, inventory = tmp_path / "prometheus.yml", tmp_path / "hosts.yml"
    playbook.write_text(yaml.safe_dump(play, sort_keys=False))
    inventory.write_text("all:\n  hosts:\n    localhost:\n      ansible_connection: local\n")
    run = compat_ansible.playbook(playbook, inventory, env={"ANSIBLE_LOCAL_TEMP": str(tmp_path / "tmp")})
    assert run.returncode == 0 and results_file.exists(), "ansible-playbook %s rc %d:\n%s\n%s" % (
        compat_ansible.core.version, run.returncode, run.stdout[-4000:], run.stderr[-2000:])
    results = json.loads(results_file.read_text())

    instant = results["instant"]
    assert not instant.get("failed"), instant
    assert (instant["result_type"], instant["value"], instant["ok"]) == ("vector", 42.0, True)
    points = results["range"]["series"][0]["values"]
    assert results["range"]["result_type"] == "matrix" and len(points) >= 4 and {v for _, v in points} == {1.0}
    named = results["named"]["answers"]
    assert named["one"]["value"] == 1.0 and "range vector" in named["bad"]["error"], named
    wrong = results["wrong_ca"]
    assert wrong["failed"] is True and wrong["msg"].startswith("TLS verification of %s failed" % url), wrong
    assert results["unverified"]["value"] == 7.0, results["unverified"]


def validation_play(roles: List[str], results_file: Path) -> List[Dict[str, Any]]:
    """Import every role; run with a tag no task has, so only `always` tasks run, the argument validation first.
    Each role's outcome is recorded: ``validated`` or the task that failed and its message."""
    tasks: List[Dict[str, Any]] = [{"name": "start", "ansible.builtin.set_fact": {"outcomes": {}}, "tags": ["always"]}]
    for role in roles:
        record = "{{ outcomes | combine({'%s': %s}) }}"
        tasks.append({"name": "role %s" % role, "block": [
            {"name": "import %s" % role, "ansible.builtin.import_role": {"name": "fintech.redis_storm." + role}},
            {"name": "%s validated" % role, "ansible.builtin.set_fact": {
                "outcomes": record % (role, "'validated'")}, "tags": ["always"]},
        ], "rescue": [
            {"name": "%s failed" % role, "ansible.builtin.set_fact": {"outcomes": record % (
                role, "{'task': ansible_failed_task.name, 'msg': ansible_failed_result.msg | default('')}")},
             "tags": ["always"]},
        ]})
    tasks.append({"name": "keep outcomes", "ansible.builtin.copy": {
        "content": "{{ outcomes | to_json }}", "dest": str(results_file), "mode": "0600"}, "tags": ["always"]})
    return [{"name": "role argument validation on each ansible-core", "hosts": "trading-redis",
             "gather_facts": False, "tasks": tasks}]


def test_roles_accept_the_example_inventory_on_ansible_core(compat_ansible: Any, tmp_path: Path) -> None:
    """A production inventory leaves optional connection settings unset; on 2.16 a role default that
    templates to omit/None must still pass the role's own argument validation."""
    repo = Path(__file__).resolve().parents[2]
    roles = sorted(r.name for r in (repo / "roles").iterdir() if (r / "meta" / "argument_specs.yml").is_file())
    assert "triage" in roles and len(roles) >= 5
    playbook, results_file = tmp_path / "validate.yml", tmp_path / "outcomes.json"
    playbook.write_text(yaml.safe_dump(validation_play(roles, results_file), sort_keys=False))
    secrets = tmp_path / "vault.yml"  # stands in for the vault file the example inventory refers to
    secrets.write_text("vault_trading_redis_password: not-a-secret\nvault_payments_redis_password: not-a-secret\n"
                       "incident_id: compat-216-roles\n")
    run = compat_ansible.playbook(playbook, repo / "inventories" / "example" / "hosts.yml",
                                  env={"ANSIBLE_LOCAL_TEMP": str(tmp_path / "tmp")},
                                  args=["--tags", "compat-only-always-tasks", "-e", "@%s" % secrets])
    assert results_file.exists(), "ansible-playbook %s rc %d:\n%s\n%s" % (
        compat_ansible.core.version, run.returncode, run.stdout[-4000:], run.stderr[-2000:])
    outcomes = json.loads(results_file.read_text())
    assert sorted(outcomes) == roles
    rejected = {role: outcome["msg"] for role, outcome in outcomes.items()
                if outcome != "validated" and outcome["task"].startswith("Validating arguments")}
    assert rejected == {}, "\n".join("%s: %s" % item for item in sorted(rejected.items()))
