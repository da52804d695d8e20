"""redis_clients_info against a real redis-server and a real storm, run through ansible-playbook and ansible-runner."""

import json
import threading
import time

import pytest
from ansible_collections.fintech.redis_storm.plugins.module_utils.client_churn import EMPTIED_AGE_SECONDS
from ansible_collections.fintech.redis_storm.plugins.module_utils.redis_clients import collect

from stormctl.sandbox.stormgen import StormGen

pytestmark = pytest.mark.integration

MODULE = "redis_clients_info"


def storm(server, sources, **kwargs):
    return StormGen(server.port, password=server.password, sources=sources, **kwargs)


def wait_for(predicate, timeout=20.0, what="condition"):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail("timed out after %ss waiting for %s" % (timeout, what))
        time.sleep(0.02)


def assert_clean(run, *secrets):
    assert "Traceback" not in run.output and "MODULE FAILURE" not in run.output, run.output
    for secret in secrets:
        assert secret not in run.output
        assert secret not in json.dumps(run.result)


def test_quiet_redis_is_no_storm_and_lists_exactly_our_clients(redis_server, run_module):
    with storm(redis_server, [("127.0.20.1", 3), ("127.0.20.2", 1)], name="quiet-app") as clients:
        clients.wait_connected()
        run = run_module.runner(MODULE, redis_server.module_args(sample_seconds=0.3, latency_samples=5))
    assert not run.failed, run.output
    result = run.result
    assert (result["reachable"], result["saturated"], result["error"]) == (True, False, None)
    assert result["verdict"] == {"storm": False, "severity": "none", "reasons": []}
    assert [(s["ip"], s["connections"], s["names"]) for s in result["top_sources"]] == [
        ("127.0.20.1", 3, ["quiet-app"]), ("127.0.20.2", 1, ["quiet-app"])]
    assert result["clients"] == {"connected": 5, "max": 200, "utilization": 0.025, "blocked": 0}
    assert result["rates"] == {"new_connections_per_sec": 0.0, "rejected_per_sec": 0.0}
    assert 0 < result["latency_ms"]["p50"] <= result["latency_ms"]["p99"] <= result["latency_ms"]["max"]
    assert_clean(run, redis_server.password)


def test_three_sources_in_order_and_connected_matches_info(redis_factory, run_module):
    redis_server = redis_factory(maxclients=1000)
    with storm(redis_server, [("127.0.10.2", 40)], name="wallet") as wallet, \
            storm(redis_server, [("127.0.10.1", 150)], name="checkout") as checkout, \
            storm(redis_server, [("127.0.10.3", 10)], name="cron") as cron:
        for gen in (wallet, checkout, cron):
            gen.wait_connected()
        run = run_module.playbook(MODULE, redis_server.module_args(sample_seconds=0.3))
        assert not run.failed, run.output
        # our INFO connection takes the place the module's connection had
        wait_for(lambda: not [c for c in redis_server.client_list() if c["name"] == "redis-storm"],
                 what="the module's connection to close")
        connected_now = redis_server.info("clients")["connected_clients"]
    result = run.result
    assert [(s["ip"], s["connections"], s["names"]) for s in result["top_sources"]] == [
        ("127.0.10.1", 150, ["checkout"]), ("127.0.10.2", 40, ["wallet"]), ("127.0.10.3", 10, ["cron"])]
    assert result["clients"]["connected"] == connected_now == 201
    assert result["clients"]["utilization"] == pytest.approx(201 / 1000)
    assert result["verdict"]["storm"] is False
    assert_clean(run, redis_server.password)


def test_storm_past_maxclients_during_sampling_is_critical_with_rejections(redis_factory, run_module):
    server = redis_factory(maxclients=60)
    admin = server.client()
    admin.ping()
    outcome = {}
    with storm(server, [("127.0.40.1", 50)], name="steady") as steady:
        steady.wait_connected()
        args = server.module_args(sample_seconds=2.0, latency_samples=3)
        worker = threading.Thread(target=lambda: outcome.update(run=run_module.playbook(MODULE, args)))
        worker.start()
        try:
            wait_for(lambda: any(c["name"] == "redis-storm" for c in admin.client_list()), timeout=30,
                     what="the module to connect")
            # 20 retries a second per refused slot: no backoff, and within loopback's port space
            with storm(server, [("127.0.40.2", 30)], name="stampede", reconnect=True,
                       reconnect_delay=0.05) as stampede:
                stampede.wait_until(lambda s: s.rejected > 0, what="rejections")
                worker.join(60)
            rejected_total = int(admin.info("stats")["rejected_connections"])
        finally:
            worker.join(60)
    run = outcome["run"]
    assert not run.failed, run.output
    result = run.result
    assert result["reachable"] is True
    assert result["rates"]["rejected_per_sec"] > 0
    assert 0 < result["stats"]["rejected_connections"] <= rejected_total
    assert result["clients"]["connected"] == result["clients"]["max"] == 60
    assert result["verdict"]["storm"] is True and result["verdict"]["severity"] == "critical"
    assert any(r.startswith("rejected connections per second is") for r in result["verdict"]["reasons"])
    assert [s["ip"] for s in result["top_sources"]][:2] == ["127.0.40.1", "127.0.40.2"]


def test_full_redis_refusing_us_is_the_saturated_result_within_the_timeout(redis_factory, run_module):
    server = redis_factory(maxclients=40)
    admin = server.client()
    admin.ping()
    with storm(server, [("127.0.50.1", 45)], name="hog") as hog:
        hog.wait_settled()
        assert hog.stats.connected == 39 and hog.stats.rejected == 6
        rejected_before = int(admin.info("stats")["rejected_connections"])
        started = time.monotonic()
        result = collect(server.module_args(socket_timeout=2.0))
        took = time.monotonic() - started
        # one attempt only: client-side retries would show as more rejections
        assert int(admin.info("stats")["rejected_connections"]) == rejected_before + 1
        run = run_module.playbook(MODULE, server.module_args(socket_timeout=2.0, fail_on_unreachable=True))
    assert took < 2.0 + 1.0
    for seen in (result, run.result):
        assert (seen["reachable"], seen["saturated"]) == (False, True)
        assert seen["verdict"]["storm"] is True and seen["verdict"]["severity"] == "critical"
        assert "max number of clients reached" in seen["error"]
        assert seen["top_sources"] == [] and seen["clients"] is None
    assert not run.failed, run.output
    assert_clean(run, server.password)


def test_tls_drop_at_accept_is_saturation_and_a_good_ca_reads_redis(redis_factory, tls_certs):
    server = redis_factory(maxclients=30, tls=True)
    tls = server.module_args(port=server.tls_port, tls=True, ca_path=str(tls_certs.ca), socket_timeout=2.0,
                             sample_seconds=0)
    healthy = collect(tls)
    assert healthy["reachable"] is True and healthy["clients"]["max"] == 30
    admin = server.client()
    admin.ping()
    with storm(server, [("127.0.60.1", 29)], name="plain") as plain:
        plain.wait_connected()
        started = time.monotonic()
        result = collect(tls)
        took = time.monotonic() - started
    assert took < 3.0
    assert (result["reachable"], result["saturated"]) == (False, True)
    assert "dropped our TLS connection" in result["error"]
    assert result["verdict"]["severity"] == "critical"


def test_tls_with_a_wrong_ca_fails_and_names_the_ca(redis_factory, tls_certs, run_module):
    server = redis_factory(tls=True)
    args = server.module_args(port=server.tls_port, tls=True, ca_path=str(tls_certs.wrong_ca))
    run = run_module.playbook(MODULE, args)
    assert run.failed
    message = run.result["msg"]
    assert "TLS verification of Redis at 127.0.0.1:%d failed" % server.tls_port in message
    assert str(tls_certs.wrong_ca) in message and "set ca_path" in message and "validate_certs" in message
    assert_clean(run, server.password)


def test_wrong_password_fails_and_says_so(redis_server, run_module):
    run = run_module.playbook(MODULE, redis_server.module_args(password="not-the-password-42"))
    assert run.failed
    assert "rejected the password for the default user" in run.result["msg"]
    assert_clean(run, "not-the-password-42", redis_server.password)


def test_unknown_host_is_unreachable_without_failing(run_module):
    run = run_module.playbook(MODULE, {"host": "no-such-redis.invalid", "port": 6379, "password": "x-secret-x"})
    assert not run.failed, run.output
    result = run.result
    assert (result["reachable"], result["saturated"]) == (False, False)
    assert "cannot resolve the Redis host no-such-redis.invalid:6379" in result["error"]
    assert result["verdict"]["storm"] is False
    assert_clean(run, "x-secret-x")


def test_refused_port_fails_only_with_fail_on_unreachable(run_module, unused_port):
    port = unused_port
    run = run_module.runner(MODULE, {"host": "127.0.0.1", "port": port, "fail_on_unreachable": True})
    assert run.failed
    assert "Redis at 127.0.0.1:%d refused the TCP connection" % port in run.result["msg"]
    assert run.result["reachable"] is False and run.result["saturated"] is False
    assert "Traceback" not in run.output


# ------------------------------------------------------------------ connections opened across the window


def wait_older_than_a_wave(server):
    """Every client older than the age that marks a just emptied Redis."""
    wait_for(lambda: min(int(c["age"]) for c in server.client_list()) >= EMPTIED_AGE_SECONDS, timeout=30,
             what="the clients to age")


def test_small_churning_pool_opens_the_most_beside_a_large_idle_pool(redis_factory):
    server = redis_factory(maxclients=1000)
    with storm(server, [("127.0.50.1", 120)], name="idle-pool") as idle:
        idle.wait_connected(120)
        wait_older_than_a_wave(server)
        with storm(server, [("127.0.50.2", 4)], name="churner", reconnect=True, lifetime=0.05) as churner:
            churner.wait_until(lambda s: s.accepted > 40, what="the churner to reconnect")
            result = collect(server.module_args(sample_seconds=1.0, latency_samples=1))
    by_ip = {s["ip"]: s for s in result["top_sources"]}
    idle_pool, churning = by_ip["127.0.50.1"], by_ip["127.0.50.2"]
    assert idle_pool["connections"] == 120 and idle_pool["opened"] == 0 and idle_pool["opened_per_sec"] == 0
    # a read sees only the live ones (just opened at the first read, newer ids at the second); INFO counts the rest
    assert churning["connections"] <= churning["opened"] <= 8
    # 4 connections living 50 ms each: dozens opened in one second, whatever the machine's load
    assert churning["opened_per_sec"] >= 10, churning
    window = result["churn"]
    assert window["emptied"] is False and window["reads"] == 2
    assert 1.0 <= window["window_seconds"] < 5
    assert window["opened"] >= churning["opened"] and window["opened_per_sec"] >= churning["opened_per_sec"]
    assert idle_pool["age_max"] >= idle_pool["age_min"] >= 0


def test_just_emptied_redis_waits_for_the_reconnect_wave_then_reads_who_still_reconnects(redis_factory):
    server = redis_factory(maxclients=1000)
    admin = server.client()
    with storm(server, [("127.0.51.1", 150)], name="idle-pool", reconnect=True, reconnect_delay=0.5) as idle, \
            storm(server, [("127.0.51.2", 4)], name="churner", reconnect=True, lifetime=0.05) as churner:
        idle.wait_connected(150)
        churner.wait_until(lambda s: s.accepted > 40, what="the churner to reconnect")
        admin.execute_command("CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes")  # the blip
        result = collect(server.module_args(sample_seconds=0.5, latency_samples=1, wave_wait_seconds=10))
    window = result["churn"]
    assert (window["emptied"], window["wave_settled"]) == (True, True), window
    assert window["reads"] > 2 and window["waited_seconds"] > 0, window  # it waited past the first window
    by_ip = {s["ip"]: s for s in result["top_sources"]}
    # the idle pool came back whole in the wave and then held still; the churner kept reconnecting
    assert (by_ip["127.0.51.1"]["connections"], by_ip["127.0.51.1"]["opened"]) == (150, 0), by_ip["127.0.51.1"]
    assert by_ip["127.0.51.2"]["opened"] >= 1 and by_ip["127.0.51.2"]["opened_per_sec"] >= 10, by_ip["127.0.51.2"]


def test_a_settled_redis_is_read_twice_only(redis_factory):
    server = redis_factory(maxclients=1000)
    with storm(server, [("127.0.52.1", 10)], name="settled") as settled:
        settled.wait_connected(10)
        wait_older_than_a_wave(server)
        result = collect(server.module_args(sample_seconds=0.3, latency_samples=1, wave_wait_seconds=8))
    assert result["churn"]["emptied"] is False and result["churn"]["reads"] == 2
    assert result["top_sources"][0]["opened"] == 0
