"""redis_clients_kill against a real redis-server: check mode kills nothing, real mode only the matching clients."""

import time
from collections import Counter

import pytest
from ansible_collections.fintech.redis_storm.plugins.module_utils.redis_clients import kill_clients

from stormctl.sandbox.stormgen import StormGen

pytestmark = pytest.mark.integration

MODULE = "redis_clients_kill"


@pytest.fixture
def two_workloads(redis_server):
    """20 batch connections from 127.0.30.1 and 10 api connections from 127.0.30.2."""
    with StormGen(redis_server.port, password=redis_server.password, sources=[("127.0.30.1", 20)],
                  name="batch-worker") as batch, \
            StormGen(redis_server.port, password=redis_server.password, sources=[("127.0.30.2", 10)],
                     name="api") as api:
        batch.wait_connected()
        api.wait_connected()
        yield batch, api


def by_source(server):
    return Counter((c["addr"].rsplit(":", 1)[0], c["name"]) for c in server.client_list())


def wait_for(predicate, timeout=20.0, what="condition"):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail("timed out after %ss waiting for %s" % (timeout, what))
        time.sleep(0.02)


def test_check_mode_lists_candidates_and_kills_nothing(redis_server, two_workloads, run_module):
    batch, api = two_workloads
    run = run_module.playbook(MODULE, redis_server.module_args(ips=["127.0.30.1"]), check=True)
    assert not run.failed, run.output
    result = run.result
    assert result["changed"] is True and result["killed"] == 0 and result["matched"] == 20
    assert len(result["candidates"]) == 20
    assert {c["addr"].rsplit(":", 1)[0] for c in result["candidates"]} == {"127.0.30.1"}
    assert {c["name"] for c in result["candidates"]} == {"batch-worker"}
    assert by_source(redis_server) == {("127.0.30.1", "batch-worker"): 20, ("127.0.30.2", "api"): 10}
    assert batch.stats.closed_by_server == 0 and api.stats.closed_by_server == 0
    assert redis_server.password not in run.output


def test_real_mode_kills_only_matching_clients_up_to_max_kill(redis_server, two_workloads, run_module):
    batch, api = two_workloads
    args = redis_server.module_args(ips=["127.0.30.0/24"], name_pattern="batch-*", max_kill=15, enabled=True)
    run = run_module.runner(MODULE, args)
    assert not run.failed, run.output
    result = run.result
    assert result["changed"] is True and result["killed"] == 15 and result["matched"] == 20
    assert len(result["candidates"]) == 15
    assert {c["name"] for c in result["candidates"]} == {"batch-worker"}
    batch.wait_until(lambda s: s.closed_by_server == 15, what="15 kills seen by the clients")
    wait_for(lambda: by_source(redis_server) == {("127.0.30.1", "batch-worker"): 5, ("127.0.30.2", "api"): 10},
             what="5 batch and 10 api connections left")
    assert api.stats.closed_by_server == 0


def test_real_mode_is_refused_unless_enabled(redis_server, two_workloads, run_module):
    run = run_module.playbook(MODULE, redis_server.module_args(ips=["127.0.30.1"]))
    assert run.failed
    assert "irreversible and off by default: set enabled: true" in run.result["msg"]
    assert "Traceback" not in run.output
    assert by_source(redis_server)[("127.0.30.1", "batch-worker")] == 20


def test_filters_are_anded_and_our_own_connection_is_never_killed(redis_server, two_workloads):
    options = redis_server.module_args()
    nothing = kill_clients(options, name_pattern="batch-*", idle_seconds_min=3600, check_mode=False)
    assert (nothing["changed"], nothing["killed"], nothing["candidates"]) == (False, 0, [])
    with StormGen(redis_server.port, password=redis_server.password, sources=[("127.0.0.1", 3)],
                  name="local-tool") as local:
        local.wait_connected()
        result = kill_clients(options, ips=["127.0.0.1"], check_mode=False)
        local.wait_until(lambda s: s.closed_by_server == 3, what="the 3 local clients to be killed")
    assert result["killed"] == 3
    assert {c["name"] for c in result["candidates"]} == {"local-tool"}
    assert by_source(redis_server) == {("127.0.30.1", "batch-worker"): 20, ("127.0.30.2", "api"): 10}


def test_wrong_password_fails_with_a_clear_message(redis_server, run_module):
    run = run_module.playbook(MODULE, redis_server.module_args(password="wrong-pass-7", ips=["127.0.0.9"]),
                              check=True)
    assert run.failed
    assert "rejected the password" in run.result["msg"]
    assert "Traceback" not in run.output and "wrong-pass-7" not in run.output
