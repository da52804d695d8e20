"""redis_runtime_config against a real redis-server, with its ledger in the Kubernetes API emulator."""

from __future__ import annotations

import resource
from typing import Any, Dict

import pytest

from stormctl.sandbox.stormgen import StormGen
from tests.helpers.modules import run_module, run_playbook
from tests.integration.mitigation_common import ledger_entries, object_writes, seed_ledger_namespace

pytestmark = pytest.mark.integration

MODULE = "redis_runtime_config"
INCIDENT = "storm-20261126-0620"
NAMES = ("timeout", "maxclients", "maxmemory-clients", "tcp-keepalive")


@pytest.fixture
def ledger(kubeapi: Any) -> Any:
    seed_ledger_namespace(kubeapi)
    return kubeapi


def config(server: Any) -> Dict[str, str]:
    admin = server.client()
    return {name: admin.config_get(name)[name] for name in NAMES}


def args(kubeapi: Any, server: Any, **extra: Any) -> Dict[str, Any]:
    return dict({"host": server.host, "port": server.port, "password": server.password,
                 "kubeconfig": str(kubeapi.kubeconfig), "incident_id": INCIDENT}, **extra)


def run(module_args: Dict[str, Any], check: bool = False) -> Any:
    return run_module(MODULE, module_args, check=check, diff=True)


def test_check_apply_second_apply_restore_and_restore_again(ledger: Any, redis_server: Any) -> None:
    original = config(redis_server)
    settings = {"maxclients": 400, "timeout": 300, "maxmemory-clients": "64mb", "tcp-keepalive": 60}
    module_args = args(ledger, redis_server, settings=settings, rung="redis_capacity")

    mark = ledger.last_seq()
    planned = run(module_args, check=True)
    assert not planned.failed, planned.msg
    assert planned["changed"] is True
    assert config(redis_server) == original  # no CONFIG SET
    assert ledger.audit(since=mark) == []  # no ledger write of any kind
    assert planned["diff"] == {"before": original, "after": {
        "maxclients": "400", "timeout": "300", "maxmemory-clients": str(64 * 1024 * 1024), "tcp-keepalive": "60"}}

    applied = run(module_args)
    assert not applied.failed, applied.msg
    assert applied["changed"] is True and applied["diff"] == planned["diff"]
    assert config(redis_server) == planned["diff"]["after"]
    entry = ledger_entries(ledger, INCIDENT)[-1]
    assert entry["target"] == {"type": "redis", "endpoint": "%s:%d" % (redis_server.host, redis_server.port),
                               "run_id": redis_server.info("server")["run_id"],
                               "replid": redis_server.info("replication")["master_replid"]}
    assert entry["state"] == "applied" and entry["rung"] == "redis_capacity"
    assert {f["path"][0]: f["before"] for f in entry["fields"]} == original
    assert applied["ledger"]["entry_id"] == entry["id"]
    assert redis_server.password not in str(applied)

    mark = ledger.last_seq()
    again = run(module_args)  # 64mb reads back as bytes: still no change
    assert not again.failed and again["changed"] is False
    assert object_writes(ledger, mark) == []

    restore_args = args(ledger, redis_server, state="restored")
    mark = ledger.last_seq()
    planned_restore = run(restore_args, check=True)
    assert not planned_restore.failed and planned_restore["changed"] is True
    assert config(redis_server) == planned["diff"]["after"] and ledger.audit(since=mark) == []
    restored = run(restore_args)
    assert not restored.failed and restored["changed"] is True
    assert restored["diff"] == planned_restore["diff"]
    assert config(redis_server) == original
    assert ledger_entries(ledger, INCIDENT)[-1]["state"] == "restored"
    mark = ledger.last_seq()
    twice = run(restore_args)
    assert not twice.failed and twice["changed"] is False and object_writes(ledger, mark) == []


def test_restore_refuses_drift_until_forced(ledger: Any, redis_server: Any) -> None:
    assert not run(args(ledger, redis_server, settings={"timeout": 300})).failed
    redis_server.client().config_set("timeout", "120")
    refused = run(args(ledger, redis_server, state="restored"))
    assert refused.failed
    assert 'timeout: we set "300", found "120"' in refused.msg and "force: true" in refused.msg
    assert config(redis_server)["timeout"] == "120"
    forced = run(args(ledger, redis_server, state="restored", force=True))
    assert not forced.failed and forced["changed"]
    assert config(redis_server)["timeout"] == "0"


def test_maxclients_above_the_fd_limit_is_refused_with_what_fits(ledger: Any, redis_server: Any) -> None:
    # the server may open at most 1024 files: 992 clients plus Redis' 32 reserved descriptors
    resource.prlimit(redis_server.process.pid, resource.RLIMIT_NOFILE, (1024, 1024))
    result = run(args(ledger, redis_server, settings={"maxclients": 100000, "tcp-keepalive": 60}))
    assert result.failed
    assert "cannot take maxclients 100000" in result.msg and "at most 992 clients" in result.msg
    assert "Set maxclients to 992 or less" in result.msg and result["max_clients_allowed"] == 992
    assert config(redis_server)["maxclients"] == "200" and config(redis_server)["tcp-keepalive"] == "300"
    assert ledger_entries(ledger, INCIDENT)[-1]["state"] == "failed"  # nothing changed, and the ledger says so

    # half way: timeout is set, then maxclients fails; the open entry lets restore put timeout back
    half = run(args(ledger, redis_server, settings={"timeout": 60, "maxclients": 100000}))
    assert half.failed and half["max_clients_allowed"] == 992
    assert config(redis_server)["timeout"] == "60"
    assert ledger_entries(ledger, INCIDENT)[-1]["state"] == "pending"
    restored = run(args(ledger, redis_server, state="restored"))
    assert not restored.failed and restored["changed"] is True, restored.msg
    assert config(redis_server)["timeout"] == "0" and config(redis_server)["maxclients"] == "200"

    fits = run(args(ledger, redis_server, settings={"maxclients": 992}))
    assert not fits.failed, fits.msg
    assert config(redis_server)["maxclients"] == "992"


def test_maxclients_below_the_connected_clients_is_a_guard_refusal(ledger: Any, redis_server: Any) -> None:
    with StormGen(redis_server.port, password=redis_server.password, sources=[("127.0.40.1", 30)]) as storm:
        storm.wait_connected(30, timeout=20)
        mark = ledger.last_seq()
        refused = run(args(ledger, redis_server, settings={"maxclients": 10}))
        assert refused.failed and refused["guard"] == "maxclients_below_connected"
        assert "refused by guard rail maxclients_below_connected" in refused.msg
        assert "allow_maxclients_below_connected: true" in refused.msg
        assert config(redis_server)["maxclients"] == "200" and ledger.audit(since=mark) == []


def test_restoring_maxclients_below_the_connected_clients_is_a_guard_refusal(ledger: Any, redis_server: Any) -> None:
    raised = run(args(ledger, redis_server, settings={"maxclients": 300}))
    assert raised["changed"], raised.msg
    with StormGen(redis_server.port, password=redis_server.password, sources=[("127.0.40.1", 170)]) as storm:
        storm.wait_connected(170, timeout=20)
        kept = run(args(ledger, redis_server, state="restored"))
        assert kept.failed and kept["guard"] == "maxclients_below_connected", kept.msg
        assert "restoring maxclients 200" in kept.msg and config(redis_server)["maxclients"] == "300"
    restored = run(args(ledger, redis_server, state="restored"))
    assert not restored.failed and config(redis_server)["maxclients"] == "200", restored.msg


@pytest.mark.parametrize(
    ("settings", "message"),
    [({"save": ""}, "settings.save cannot be changed by this module"),
     ({"maxclients": "many"}, "settings.maxclients must be a whole number of clients"),
     ({"timeout": -5}, "settings.timeout must be a whole number of seconds"),
     ({"maxmemory-clients": "64 parsecs"}, "settings.maxmemory-clients '64 parsecs'"),
     ({"maxmemory-clients": "150%"}, "a percentage is 0% to 100% of maxmemory"),
     ({}, "settings is empty")],
)
def test_bad_settings_are_refused_before_any_change(ledger: Any, redis_server: Any, settings: Dict[str, Any],
                                                     message: str) -> None:
    before = config(redis_server)
    result = run(args(ledger, redis_server, settings=settings))
    assert result.failed and message in result.msg
    assert config(redis_server) == before and ledger.audit() == []


def test_saturated_redis_fails_and_points_at_the_kube_side_rungs(ledger: Any, redis_factory: Any) -> None:
    server = redis_factory(maxclients=20)
    with StormGen(server.port, password=server.password, sources=[("127.0.41.1", 30)]) as storm:
        storm.wait_until(lambda s: s.connected >= 20 and s.rejected > 0, timeout=20, what="Redis at maxclients")
        result = run(args(ledger, server, settings={"maxclients": 1000}))
    assert result.failed and result["saturated"] is True
    assert "max number of clients reached" in result.msg
    assert "offender_scale_down" in result.msg and "ingress_rate_limit" in result.msg
    assert ledger.audit() == []


def test_wrong_password_is_a_clear_error(ledger: Any, redis_server: Any) -> None:
    result = run(args(ledger, redis_server, password="not-the-password", settings={"timeout": 10}))
    assert result.failed and "rejected the password" in result.msg
    assert "not-the-password" not in result.msg


def test_ledger_forbidden_changes_nothing_on_redis(ledger: Any, redis_server: Any, tmp_path: Any) -> None:
    kubeconfig = ledger.write_kubeconfig(tmp_path / "ro", "readonly")
    result = run(args(ledger, redis_server, kubeconfig=str(kubeconfig), settings={"timeout": 30}))
    assert result.failed and "forbidden (403)" in result.msg and "configmaps" in result.msg
    assert config(redis_server)["timeout"] == "0"


def test_through_ansible_playbook_with_renamed_kube_options(ledger: Any, redis_server: Any) -> None:
    task_args = args(ledger, redis_server, settings={"tcp-keepalive": 45})
    del task_args["kubeconfig"]
    task_args.update(kube_host=ledger.url, api_key=ledger.tokens["operator"], kube_validate_certs=False)
    run_args = [{"name": "raise", "fintech.redis_storm.redis_runtime_config": task_args}]
    planned = run_playbook(run_args, check=True, diff=True)
    assert planned.rc == 0, planned.output[-2000:] + planned.stderr[-2000:]
    assert planned.task("raise")["changed"] is True and config(redis_server)["tcp-keepalive"] == "300"
    for secret in (redis_server.password, ledger.tokens["operator"]):
        assert secret not in planned.output and secret not in planned.stderr
    applied = run(task_args)
    assert not applied.failed and applied["changed"] is True and applied["diff"] == planned.task("raise")["diff"]
    assert config(redis_server)["tcp-keepalive"] == "45"


def test_two_changes_in_one_incident_restore_newest_first_also_in_check_mode(ledger: Any, redis_server: Any) -> None:
    assert not run(args(ledger, redis_server, settings={"timeout": 300})).failed
    assert not run(args(ledger, redis_server, settings={"timeout": 200})).failed
    assert [e["state"] for e in ledger_entries(ledger, INCIDENT)] == ["applied", "applied"]
    mark = ledger.last_seq()
    planned = run(args(ledger, redis_server, state="restored"), check=True)
    assert not planned.failed, planned.msg
    assert planned["diff"] == {"before": {"timeout": "200"}, "after": {"timeout": "0"}}
    assert config(redis_server)["timeout"] == "200" and ledger.audit(since=mark) == []
    restored = run(args(ledger, redis_server, state="restored"))
    assert not restored.failed and restored["diff"] == planned["diff"]
    assert config(redis_server)["timeout"] == "0"


def capacity_rung(kubeapi: Any, server: Any, **role_vars: Any) -> Any:
    """The redis_capacity rung as the ladder runs it."""
    return run_playbook([{
        "name": "connected",
        "module_defaults": {"fintech.redis_storm.redis_runtime_config": {"kubeconfig": str(kubeapi.kubeconfig)},
                            "group/fintech.redis_storm.kubernetes": {"kubeconfig": str(kubeapi.kubeconfig)}},
        "block": [{
            "name": "rung", "ansible.builtin.include_role": {"name": "fintech.redis_storm.redis_capacity"},
            "vars": dict({"redis_capacity_incident_id": INCIDENT, "redis_capacity_redis_host": server.host,
                          "redis_capacity_redis_port": server.port, "redis_capacity_redis_password": server.password},
                         **role_vars)}]},
        {"name": "show", "ansible.builtin.debug": {"var": "__ladder_rung_result"}},
    ], diff=True)


def fill(server: Any, megabytes: int) -> None:
    admin = server.client()
    value = "x" * (1024 * 1024 - 64)  # inside the allocator's 1 MiB size class
    for index in range(megabytes):
        admin.set("storm-test-fill-%d" % index, value)


def test_capacity_without_memory_headroom_keeps_maxclients(ledger: Any, redis_factory: Any) -> None:
    """Redis near its maxmemory: more clients' buffers would evict data or, in a container, get it OOM-killed."""
    server = redis_factory(maxclients=200, extra={"maxmemory": "32mb", "maxmemory-policy": "noeviction"})
    fill(server, 24)
    run = capacity_rung(ledger, server)
    assert run.rc == 0, run.output[-3000:] + run.stderr[-3000:]
    assert config(server)["maxclients"] == "200"
    result = run.task("show")["__ladder_rung_result"]
    assert "headroom" in result["msg"], result


def test_capacity_raises_within_headroom_and_caps_client_memory(ledger: Any, redis_factory: Any) -> None:
    server = redis_factory(maxclients=200, extra={"maxmemory": "256mb"})
    run = capacity_rung(ledger, server)
    assert run.rc == 0, run.output[-3000:] + run.stderr[-3000:]
    after = config(server)
    assert after["maxclients"] == "300"  # 1.5 x, inside the headroom
    client_memory = int(after["maxmemory-clients"])
    admin = server.client()
    in_use = int(admin.info("memory")["used_memory"])
    # the cap leaves every client connected now room, and keeps all clients inside maxmemory's headroom
    assert 300 * 16 * 1024 <= client_memory <= 256 * 1024 * 1024 - in_use
    raised = [t for t in run.data["plays"][0]["tasks"] if "maxclients" in t["task"]["name"]
              and t["hosts"]["localhost"].get("changed")]
    assert raised, run.output[-3000:]
    header = raised[0]["hosts"]["localhost"]["diff"]["after_header"]
    assert "assumed" in header and "maxmemory 268435456" in header, header


def test_capacity_is_bounded_by_the_container_memory_limit(ledger: Any, redis_factory: Any) -> None:
    server = redis_factory(maxclients=200)
    rss = int(server.client().info("memory")["used_memory_rss"])
    limit = rss + 3 * 1024 * 1024  # room for a few dozen clients at most
    run = capacity_rung(ledger, server, redis_capacity_memory_limit=str(limit))
    assert run.rc == 0, run.output[-3000:] + run.stderr[-3000:]
    assert config(server)["maxclients"] == "200"
    assert "container memory limit" in run.task("show")["__ladder_rung_result"]["msg"]
