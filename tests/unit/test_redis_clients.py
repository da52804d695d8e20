"""CLIENT LIST parsing, grouping by source, rates, latency, verdict and kill candidates (pure logic)."""

import socket
import ssl

import pytest
import redis
from ansible_collections.fintech.redis_storm.plugins.module_utils import client_churn as churn
from ansible_collections.fintech.redis_storm.plugins.module_utils import redis_clients as rc
from ansible_collections.fintech.redis_storm.plugins.module_utils.errors import StormError
from ansible_collections.fintech.redis_storm.plugins.module_utils.redis_conn import Connection, classify

# One line per server generation, as each prints it.
REDIS_62 = ("id=7 addr=10.1.0.5:50412 laddr=10.1.0.2:6379 fd=9 name=checkout age=120 idle=3 flags=N db=0 sub=0 "
            "psub=0 multi=-1 qbuf=0 qbuf-free=0 argv-mem=0 obl=0 oll=0 omem=0 tot-mem=20496 events=r cmd=get "
            "user=default redir=-1")
REDIS_70 = ("id=8 addr=10.1.0.5:50413 laddr=10.1.0.2:6379 fd=10 name= age=5 idle=5 flags=N db=0 sub=0 psub=0 "
            "ssub=0 multi=-1 qbuf=0 qbuf-free=0 argv-mem=0 multi-mem=0 rbs=1024 rbp=0 obl=0 oll=0 omem=0 "
            "tot-mem=1800 events=r cmd=ping user=default redir=-1 resp=2")
REDIS_72 = ("id=9 addr=10.1.0.6:40001 laddr=10.1.0.2:6379 fd=11 name=wallet-api age=40 idle=0 flags=N db=0 sub=0 "
            "psub=0 ssub=0 multi=-1 qbuf=26 qbuf-free=20448 argv-mem=10 multi-mem=0 rbs=1024 rbp=0 obl=0 oll=0 "
            "omem=0 tot-mem=22426 events=r cmd=client|list user=default redir=-1 resp=2 lib-name=redis-py "
            "lib-ver=5.0.1")
REDIS_80 = ("id=10 addr=10.1.0.6:40002 laddr=10.1.0.2:6379 fd=12 name=wallet-api age=2 idle=1 flags=N db=0 sub=0 "
            "psub=0 ssub=0 multi=-1 watch=0 qbuf=0 qbuf-free=0 argv-mem=0 multi-mem=0 rbs=1024 rbp=0 obl=0 oll=0 "
            "omem=0 tot-mem=1928 events=r cmd=get user=default redir=-1 resp=3 lib-name=jedis lib-ver=5.1.0 "
            "io-thread=0 tot-net-in=100 tot-net-out=200 tot-cmds=4")
VALKEY_81 = ("id=11 addr=[fd00::7]:41000 laddr=[fd00::2]:6379 fd=13 name=trading age=9 idle=9 flags=N capa= db=0 "
             "sub=0 psub=0 ssub=0 multi=-1 watch=0 qbuf=0 qbuf-free=0 argv-mem=0 multi-mem=0 rbs=1024 rbp=0 obl=0 "
             "oll=0 omem=0 tot-mem=1928 events=r cmd=get user=default redir=-1 resp=2 lib-name=lettuce lib-ver=6.3 "
             "tot-net-in=1 tot-net-out=2 tot-cmds=3 some-future-field=x")
REPLICA = ("id=12 addr=10.1.0.9:6379 laddr=10.1.0.2:6379 fd=14 name= age=900 idle=0 flags=S db=0 sub=0 psub=0 "
           "multi=-1 qbuf=0 qbuf-free=0 obl=0 oll=0 omem=0 events=r cmd=replconf user=default")
UNIX = ("id=13 addr=/run/redis/redis.sock:0 laddr=/run/redis/redis.sock:0 fd=15 name=local age=1 idle=1 flags=U "
        "db=0 cmd=ping user=default")


def client_list(*lines: str) -> str:
    return "".join(line + "\n" for line in lines)


@pytest.mark.parametrize(("line", "expected"), [
    (REDIS_62, {"id": "7", "addr": "10.1.0.5:50412", "name": "checkout", "age": "120", "idle": "3", "user": "default"}),
    (REDIS_70, {"id": "8", "name": "", "resp": "2", "ssub": "0"}),
    (REDIS_72, {"cmd": "client|list", "lib-name": "redis-py", "lib-ver": "5.0.1"}),
    (REDIS_80, {"lib-name": "jedis", "io-thread": "0", "tot-cmds": "4"}),
    (VALKEY_81, {"addr": "[fd00::7]:41000", "capa": "", "some-future-field": "x", "lib-name": "lettuce"}),
])
def test_parse_client_list_keeps_every_field(line, expected):
    (parsed,) = rc.parse_client_list(client_list(line))
    assert parsed == {**parsed, **expected}
    assert len(parsed) == len(line.split(" "))


def test_parse_client_list_skips_blank_lines_and_handles_crlf():
    parsed = rc.parse_client_list(REDIS_62 + "\r\n\r\n" + REDIS_70 + "\r\n")
    assert [c["id"] for c in parsed] == ["7", "8"]
    assert parsed[1]["resp"] == "2"


def test_parse_client_list_keeps_one_copy_of_repeated_names_and_values():
    # at 100k clients a copy of every field name and flag per line is hundreds of MB
    first, second = rc.parse_client_list(client_list(REDIS_72, REDIS_72.replace("id=", "id=1")))
    assert first == {**second, "id": first["id"]}
    shared = [key for key in first if any(key is other for other in second)]
    assert len(shared) == len(first)
    assert first["cmd"] is second["cmd"] and first["user"] is second["user"]


@pytest.mark.parametrize(("addr", "ip"), [
    ("10.1.0.5:50412", "10.1.0.5"),
    ("[fd00::7]:41000", "fd00::7"),
    ("/run/redis/redis.sock:0", "/run/redis/redis.sock"),
    ("weird", "weird"),
])
def test_source_ip(addr, ip):
    assert rc.source_ip(addr) == ip


def make(ip, count, start_id, name="", idle=0, age=10, lib=""):
    return [{"id": str(start_id + i), "addr": "%s:%d" % (ip, 40000 + i), "name": name, "idle": str(idle + i),
             "age": str(age + i), "flags": "N", "lib-name": lib} for i in range(count)]


def test_top_sources_groups_by_ip_most_connections_first():
    clients = (make("10.0.0.3", 10, 1000, name="batch") + make("10.0.0.1", 150, 1, name="api", lib="redis-py")
               + make("10.0.0.2", 40, 500, name="worker", idle=7, age=3) + make("10.0.0.2", 1, 900, name="cron"))
    sources = rc.top_sources(clients, top=10)
    assert [(s["ip"], s["connections"]) for s in sources] == [("10.0.0.1", 150), ("10.0.0.2", 41), ("10.0.0.3", 10)]
    worker = sources[1]
    assert worker["names"] == ["cron", "worker"]
    assert worker["lib_names"] == []
    assert worker["idle_max"] == 7 + 39
    assert worker["age_min"] == 3
    assert sources[0]["lib_names"] == ["redis-py"]


def test_top_sources_caps_and_breaks_ties_by_address():
    clients = make("10.0.0.10", 2, 1) + make("10.0.0.9", 2, 10) + make("10.0.0.2", 5, 20)
    assert [s["ip"] for s in rc.top_sources(clients, top=2)] == ["10.0.0.2", "10.0.0.9"]
    assert len(rc.top_sources(clients, top=0)) == 3


def test_application_clients_leaves_out_our_own_connection_and_replication_links():
    clients = rc.parse_client_list(client_list(REDIS_62, REDIS_70, REPLICA, UNIX))
    kept = rc.application_clients(clients, own_id=8)
    assert [c["id"] for c in kept] == ["7", "13"]


@pytest.mark.parametrize(("first", "second", "seconds", "expected"), [
    ({"total_connections_received": 100, "rejected_connections": 0},
     {"total_connections_received": 600, "rejected_connections": 50}, 2.0,
     {"new_connections_per_sec": 250.0, "rejected_per_sec": 25.0}),
    ({"total_connections_received": 5, "rejected_connections": 9},
     {"total_connections_received": 5, "rejected_connections": 9}, 1.0,
     {"new_connections_per_sec": 0.0, "rejected_per_sec": 0.0}),
    ({"total_connections_received": 10}, {"total_connections_received": 13}, 0.0,
     {"new_connections_per_sec": None, "rejected_per_sec": None}),
    # a restart between the samples resets the counters: no negative rate
    ({"total_connections_received": 900, "rejected_connections": 4},
     {"total_connections_received": 3, "rejected_connections": 0}, 1.0,
     {"new_connections_per_sec": 0.0, "rejected_per_sec": 0.0}),
])
def test_rates(first, second, seconds, expected):
    assert rc.rates(first, second, seconds) == expected


@pytest.mark.parametrize(("samples", "expected"), [
    ([], {"p50": None, "p99": None, "max": None}),
    ([2.0], {"p50": 2.0, "p99": 2.0, "max": 2.0}),
    ([float(i) for i in range(100, 0, -1)], {"p50": 50.0, "p99": 99.0, "max": 100.0}),
    ([1.0, 1.0, 1.0, 9.0], {"p50": 1.0, "p99": 9.0, "max": 9.0}),
])
def test_latency_summary(samples, expected):
    assert rc.latency_summary(samples) == expected


def test_probe_latency_pings_the_given_number_of_times():
    calls = []
    summary = rc.probe_latency(lambda: calls.append(1), 7)
    assert len(calls) == 7
    assert summary["p50"] is not None and summary["max"] >= summary["p50"]


def test_clients_view_utilization():
    view = rc.clients_view({"connected_clients": 190, "blocked_clients": 2}, 200)
    assert view == {"connected": 190, "max": 200, "utilization": 0.95, "blocked": 2}
    assert rc.clients_view({"connected_clients": 3}, None)["utilization"] is None


@pytest.mark.parametrize(("measured", "thresholds", "severity", "fragments"), [
    ({"utilization": 0.1, "new_connections_per_sec": 2.0, "rejected_per_sec": 0.0}, None, "none", []),
    ({"utilization": 0.85, "new_connections_per_sec": 2.0, "rejected_per_sec": 0.0}, None, "warning",
     ["client utilization (connected/maxclients) is 0.85, above the warning threshold 0.8"]),
    ({"utilization": 1.0, "new_connections_per_sec": 0.0, "rejected_per_sec": 0.5}, None, "critical",
     ["client utilization (connected/maxclients) is 1, above the critical threshold 0.95",
      "rejected connections per second is 0.5, above the warning threshold 0"]),
    ({"utilization": 0.5, "new_connections_per_sec": 750.0, "rejected_per_sec": 0.0}, None, "critical",
     ["new connections per second is 750, above the critical threshold 500"]),
    ({"utilization": 0.5, "new_connections_per_sec": 150.0, "rejected_per_sec": None}, None, "warning",
     ["new connections per second is 150, above the warning threshold 100"]),
    ({"utilization": 0.5, "new_connections_per_sec": 150.0, "rejected_per_sec": 0.0},
     {"new_connections_per_sec": {"warning": 200.0}, "utilization": {"warning": 0.4, "critical": None}}, "warning",
     ["client utilization (connected/maxclients) is 0.5, above the warning threshold 0.4"]),
    ({"utilization": None, "new_connections_per_sec": None, "rejected_per_sec": None}, None, "none", []),
    # exactly at a level is not above it
    ({"utilization": 0.8, "new_connections_per_sec": 100.0, "rejected_per_sec": 0.0}, None, "none", []),
])
def test_verdict(measured, thresholds, severity, fragments):
    judged = rc.verdict(measured, thresholds)
    assert judged == {"storm": severity != "none", "severity": severity, "reasons": fragments}


@pytest.mark.parametrize(("thresholds", "message"), [
    ({"latency": {"warning": 1}}, "unknown threshold 'latency'"),
    ({"utilization": {"high": 1}}, "unknown level 'high'"),
])
def test_bad_thresholds_are_refused(thresholds, message):
    with pytest.raises(StormError, match=message):
        rc.verdict({}, thresholds)


def test_saturated_verdict_is_a_critical_storm():
    judged = rc.saturated_verdict("Redis at h:1 refused our connection: max number of clients reached")
    assert judged["storm"] is True and judged["severity"] == "critical"
    assert "max number of clients reached" in judged["reasons"][0]


KILLABLE = (make("10.0.1.1", 5, 1, name="batch-7", idle=100) + make("10.0.1.2", 3, 10, name="api", idle=0)
            + make("10.0.2.9", 2, 20, name="batch-9", idle=5)
            + [{"id": "99", "addr": "10.0.1.1:1", "name": "redis-storm", "idle": "0", "flags": "N"},
               {"id": "98", "addr": "10.0.1.1:2", "name": "", "idle": "500", "flags": "S"}])


@pytest.mark.parametrize(("filters", "ids", "matched"), [
    ({"ips": ["10.0.1.1"]}, [5, 4, 3, 2, 1], 5),
    ({"ips": ["10.0.1.0/24"], "name_pattern": "batch-*"}, [5, 4, 3, 2, 1], 5),
    ({"name_pattern": "batch-*"}, [5, 4, 3, 2, 1, 21, 20], 7),
    ({"name_pattern": "batch-*", "idle_seconds_min": 103}, [5, 4], 2),
    ({"idle_seconds_min": 6, "max_kill": 3}, [5, 4, 3], 6),
    ({"ips": ["10.0.1.2"], "name_pattern": "batch-*"}, [], 0),
    ({"name_pattern": "API"}, [], 0),
])
def test_kill_candidates_and_filters_most_idle_first(filters, ids, matched):
    chosen, count = rc.kill_candidates(KILLABLE, own_id=99, **filters)
    assert [c["id"] for c in chosen] == ids
    assert count == matched
    assert all(set(c) == {"id", "addr", "name", "idle"} for c in chosen)


def test_kill_candidates_never_include_our_connection_or_replicas():
    chosen, _ = rc.kill_candidates(KILLABLE, own_id=99, ips=["10.0.0.0/8"])
    assert 99 not in [c["id"] for c in chosen] and 98 not in [c["id"] for c in chosen]


def test_kill_refuses_no_filter_and_bad_ips():
    with pytest.raises(StormError, match="at least one filter"):
        rc.kill_clients({"host": "127.0.0.1", "port": 1})
    with pytest.raises(StormError, match="not an IP address"):
        rc.kill_clients({"host": "127.0.0.1", "port": 1}, ips=["pod-7"])


def chained(outer, inner):
    try:
        try:
            raise inner
        except BaseException as exc:
            raise outer from exc
    except BaseException as exc:
        return exc


OPTS = {"host": "redis.example", "port": 6380, "password": "pw", "socket_timeout": 2.0}


@pytest.mark.parametrize(("exc", "options", "saturated", "text"), [
    (redis.ConnectionError("max number of clients reached"), OPTS, True, "max number of clients reached"),
    (redis.ResponseError("max number of clients + cluster connections reached"), OPTS, True, "cluster connections"),
    (chained(redis.ConnectionError("Error 8 connecting"), ssl.SSLEOFError(8, "EOF occurred in violation of protocol")),
     {**OPTS, "tls": True}, True, "dropped our TLS connection"),
    (chained(redis.ConnectionError("Error 104"), ConnectionResetError(104, "Connection reset by peer")),
     {**OPTS, "tls": True}, True, "maxclients"),
    (chained(redis.ConnectionError("Error 104"), ConnectionResetError(104, "Connection reset by peer")),
     OPTS, False, "redis.example:6380"),
    (chained(redis.ConnectionError("Error 111"), ConnectionRefusedError(111, "refused")), OPTS, False,
     "refused the TCP connection"),
    (chained(redis.ConnectionError("Error -2"), socket.gaierror(-2, "Name or service not known")), OPTS, False,
     "cannot resolve the Redis host redis.example:6380"),
    (chained(redis.TimeoutError("Timeout connecting to server"), TimeoutError("timed out")), OPTS, False,
     "did not answer within socket_timeout 2.0s"),
])
def test_classify_connection_failures(exc, options, saturated, text):
    outcome = classify(exc, options)
    assert outcome.reachable is False
    assert outcome.saturated is saturated
    assert text in outcome.error


@pytest.mark.parametrize(("exc", "options", "text"), [
    (redis.AuthenticationError("invalid username-password pair or user is disabled."), OPTS,
     "rejected the password for the default user"),
    (redis.AuthenticationError("invalid username-password pair"), {**OPTS, "username": "storm"},
     "rejected the password for user storm"),
    (redis.AuthenticationError("NOAUTH Authentication required."), {**OPTS, "password": None},
     "requires a password and none was given"),
    (redis.exceptions.NoPermissionError("NOPERM User storm has no permissions to run the 'client|list' command"),
     {**OPTS, "username": "storm"}, "+client"),
    (chained(redis.ConnectionError("Error 1"), ssl.SSLCertVerificationError(1, "CERTIFICATE_VERIFY_FAILED")),
     {**OPTS, "tls": True, "ca_path": "/etc/ca.pem"}, "the CA in ca_path /etc/ca.pem"),
])
def test_classify_operator_mistakes_raise_a_clear_error(exc, options, text):
    with pytest.raises(StormError) as raised:
        classify(exc, options)
    assert text in raised.value.message
    assert "pw" not in raised.value.message.replace("password", "")


def test_reading_from_an_unreachable_connection_is_a_storm_error_with_its_cause() -> None:
    refused = Connection(None, reachable=False, error="Redis at 10.0.0.1:6379 refused the TCP connection")
    with pytest.raises(StormError, match=r"no connection to Redis: Redis at 10\.0\.0\.1:6379 refused"):
        rc.read_client_list(refused, {})


# ------------------------------------------------------------------ connections opened across the window

def clients(*specs):
    """(id, ip, age) triples as CLIENT LIST clients."""
    return [{"id": str(i), "addr": "%s:%d" % (ip, 40000 + i), "age": str(age), "flags": "N"} for i, ip, age in specs]


OLD = clients((1, "10.0.0.1", 300), (2, "10.0.0.1", 300), (3, "10.0.0.2", 200))


@pytest.mark.parametrize(("reads", "received", "per_ip", "summary"), [
    pytest.param([(0.0, OLD), (1.0, OLD)], (100, 100), {},
                 {"emptied": False, "opened": 0, "opened_per_sec": 0.0, "reads": 2, "wave_settled": None},
                 id="nothing-new"),
    pytest.param([(0.0, OLD[:2] + clients((3, "10.0.0.2", 2))),
                  (1.0, OLD[:2] + clients((4, "10.0.0.2", 0), (9, "10.0.0.3", 0)))], (100, 106),
                 {"10.0.0.2": (1, 6.0), "10.0.0.3": (1, 3.0)},
                 {"emptied": False, "opened": 2, "window_seconds": 1.0, "opened_per_sec": 6.0},
                 id="a-replaced-connection-and-a-new-address-share-what-info-accepted"),
    pytest.param([(0.0, OLD + clients((5, "10.0.0.3", 0))), (0.5, OLD + clients((6, "10.0.0.3", 0)))], (100, 120),
                 {"10.0.0.3": (2, 40.0)},
                 {"emptied": False, "opened": 2, "opened_per_sec": 40.0, "window_seconds": 0.5},
                 id="a-short-lived-connection-replaced-by-another"),
    pytest.param([(0.0, OLD), (1.0, OLD[:2] + clients((4, "10.0.0.2", 0), (5, "10.0.0.2", 0)))], (),
                 {"10.0.0.2": (2, 0.0)}, {"opened_per_sec": 2.0}, id="without-info-the-sample-is-the-rate"),
    pytest.param([(0.0, clients(*((i, "10.0.0.9", 60) for i in range(1, 11)))),
                  (1.0, clients(*((i, "10.0.0.9", 61) for i in range(1, 11)),
                                *((i, "10.0.0.9", 0) for i in range(20, 70))))],
                 (100, 150), {"10.0.0.9": (50, 0.0)}, {"opened": 50, "opened_per_sec": 50.0},
                 id="a-pool-refilling-is-not-churn"),
])
def test_churn_counts_the_connections_opened_per_address(reads, received, per_ip, summary):
    found, window = churn.churn(reads, rc.source_ip, received)
    assert found == per_ip
    assert window == {**window, **summary}


WAVE = [(0.0, clients(*((i, "10.0.0.1", 0) for i in range(1, 11)))),
        (0.5, clients(*((i, "10.0.0.1", 0) for i in range(1, 101)))),  # the idle pool refills
        (1.0, clients(*((i, "10.0.0.1", 1) for i in range(1, 101)), (101, "10.0.0.2", 0))),  # settled
        (1.5, clients(*((i, "10.0.0.1", 1) for i in range(1, 101)), (102, "10.0.0.2", 0)))]


def test_after_a_blip_the_window_is_read_after_the_reconnect_wave():
    found, window = churn.churn(WAVE, rc.source_ip, (0, 90, 101, 102))
    # the wave's 100 reconnects of the idle pool are not churn; the address still reconnecting is
    assert found == {"10.0.0.2": (2, 4.0)}
    assert window == {"window_seconds": 0.5, "reads": 4, "emptied": True, "wave_settled": True, "waited_seconds": 1.0,
                      "opened": 2, "opened_per_sec": 4.0}
    _, unsettled = churn.churn(WAVE[:2], rc.source_ip)
    assert (unsettled["emptied"], unsettled["wave_settled"]) == (True, False)


@pytest.mark.parametrize(("ages", "emptied"), [((0, 3, 9), True), ((0, 3, 10), False), ((), True)])
def test_just_emptied_means_every_client_is_young(ages, emptied):
    assert churn.just_emptied(clients(*((i, "10.0.0.1", age) for i, age in enumerate(ages)))) is emptied


@pytest.mark.parametrize(("reads", "settled"), [
    ([(0, clients((1, "a", 0))), (1, clients((1, "a", 1), (2, "a", 0)))], False),
    ([(0, clients((1, "a", 0))), (1, clients((1, "a", 1), (2, "a", 0))), (2, clients((1, "a", 2), (3, "a", 0)))],
     False),
    ([(0, clients(*((i, "a", 0) for i in range(40)))), (1, clients(*((i, "a", 1) for i in range(40)))),
      (2, clients(*((i, "a", 2) for i in range(41))))], True),
])
def test_the_wave_settles_when_a_read_finds_almost_nothing_new(reads, settled):
    assert churn.wave_settled(reads) is settled


def test_top_sources_keeps_the_churning_address_beyond_top():
    listed = make("10.0.0.1", 50, 1) + make("10.0.0.2", 30, 100) + make("10.0.0.3", 2, 200)
    sources = rc.top_sources(listed, top=2, opened={"10.0.0.3": (2, 80.0)})
    assert [(s["ip"], s["opened"], s["opened_per_sec"]) for s in sources] == [
        ("10.0.0.1", 0, 0.0), ("10.0.0.2", 0, 0.0), ("10.0.0.3", 2, 80.0)]
    assert rc.top_sources(listed, top=2)[0]["opened"] is None


def test_a_blip_inside_the_window_is_waited_out_too():
    old = clients((1001, "10.0.0.1", 300), (1002, "10.0.0.1", 300), (1003, "10.0.0.2", 200))
    reads = [(0.0, old), *WAVE[1:]]  # emptied between the first read and the second
    found, window = churn.churn(reads, rc.source_ip, (0, 90, 101, 102))
    assert found == {"10.0.0.2": (2, 4.0)}
    assert (window["emptied"], window["wave_settled"]) == (True, True)
    _, mid_wave = churn.churn(reads[:2], rc.source_ip)
    assert (mid_wave["emptied"], mid_wave["wave_settled"]) == (True, False)


def test_a_blip_that_takes_a_while_still_empties_redis():
    pool = clients(*((i, "10.0.0.1", 60) for i in range(1, 101)))
    churner = clients((500, "10.0.0.2", 0), (501, "10.0.0.2", 0))
    half_killed = pool[60:] + clients(*((i, "10.0.0.1", 0) for i in range(600, 640)))
    assert churn.emptied_at([(0.0, pool + churner), (0.5, half_killed)]) == 1
    # short-lived clients coming and going never look like a blip
    assert churn.emptied_at([(0.0, pool + churner), (0.5, pool + clients((502, "10.0.0.2", 0)))]) is None
