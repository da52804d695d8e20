"""prometheus_query against a real Prometheus scraping a real redis_exporter and redis-server.

Auth, timeouts and TLS are checked against a tiny local HTTP server that answers like the
Prometheus API and records what it was sent.
"""

from __future__ import annotations

import base64
import json
import os
import ssl
import subprocess
import threading
import time
import urllib.parse
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional

import pytest
from ansible.module_utils.testing import patch_module_args
from ansible_collections.fintech.redis_storm.plugins.modules import prometheus_query

from stormctl.sandbox.procs import free_port
from tests.fixtures.redis import RedisServer, make_tls_certs, play_module, start_redis
from tests.fixtures.services import require_binary, stop_process_group

pytestmark = pytest.mark.integration

SCRAPE = "1s"


def wait_until(condition: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    last: Optional[BaseException] = None
    while time.monotonic() < deadline:
        try:
            value = condition()
            if value:
                return value
        except Exception as exc:  # the service may still be starting
            last = exc
        time.sleep(0.1)
    pytest.fail("timed out after %.0f s waiting for %s (last error: %s)" % (timeout, what, last))


class Stack:
    def __init__(self, redis: RedisServer, url: str) -> None:
        self.redis = redis
        self.url = url

    def api(self, query: str) -> List[Dict[str, Any]]:
        with urllib.request.urlopen(self.url + "/api/v1/query?" + urllib.parse.urlencode({"query": query}),
                                    timeout=5) as response:
            return list(json.loads(response.read())["data"]["result"])


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    exporter_bin = require_binary("prometheus-redis-exporter")
    prometheus_bin = require_binary("prometheus")
    base = tmp_path_factory.mktemp("promstack")
    redis = start_redis(base / "redis", maxclients=64)
    processes: List[subprocess.Popen[bytes]] = []
    try:
        exporter_port = free_port()
        processes.append(subprocess.Popen(
            [exporter_bin, "-redis.addr", "redis://127.0.0.1:%d" % redis.port,
             "-web.listen-address", "127.0.0.1:%d" % exporter_port],
            env=dict(os.environ, REDIS_PASSWORD=redis.password), start_new_session=True,
            stdout=subprocess.DEVNULL, stderr=(base / "exporter.log").open("wb")))
        config = base / "prometheus.yml"
        config.write_text(json.dumps({
            "global": {"scrape_interval": SCRAPE, "scrape_timeout": SCRAPE, "evaluation_interval": SCRAPE},
            "scrape_configs": [{"job_name": "redis",
                                "static_configs": [{"targets": ["127.0.0.1:%d" % exporter_port]}]}],
        }))
        prometheus_port = free_port()
        processes.append(subprocess.Popen(
            [prometheus_bin, "--config.file", str(config), "--storage.tsdb.path", str(base / "tsdb"),
             "--web.listen-address", "127.0.0.1:%d" % prometheus_port],
            start_new_session=True, stdout=subprocess.DEVNULL, stderr=(base / "prometheus.log").open("wb")))
        built = Stack(redis, "http://127.0.0.1:%d" % prometheus_port)
        # Two scrapes of redis_up = 1, so rate() and range queries have points.
        wait_until(lambda: len([r for r in built.api("count_over_time(redis_up[1m])") if float(r["value"][1]) >= 2]),
                   60, "Prometheus to scrape redis_exporter twice")
        yield built
    finally:
        for process in reversed(processes):
            stop_process_group(process)
        redis.stop()


def run(args: Dict[str, Any], capsys: pytest.CaptureFixture[str]) -> Dict[str, Any]:
    """prometheus_query's main() in this process (the HTTP side is real)."""
    capsys.readouterr()
    with patch_module_args(args), pytest.raises(SystemExit):
        prometheus_query.main()
    return dict(json.loads(capsys.readouterr().out))


# ------------------------------------------------------------------ real Prometheus


def test_instant_vector_with_one_series_gives_its_value(stack: Stack, capsys: pytest.CaptureFixture[str]) -> None:
    out = run({"url": stack.url, "query": "redis_up"}, capsys)
    assert out["changed"] is False
    assert out["result_type"] == "vector"
    assert out["value"] == 1.0
    assert out["series"][0]["metric"]["job"] == "redis"
    assert abs(out["series"][0]["time"] - time.time()) < 60
    assert out["ok"] is None


def test_range_query_returns_points_over_time(stack: Stack, capsys: pytest.CaptureFixture[str]) -> None:
    out = run({"url": stack.url, "query": "redis_config_maxclients", "start": "-30s", "step": "1s"}, capsys)
    assert out["result_type"] == "matrix"
    points = out["series"][0]["values"]
    assert len(points) >= 2
    assert [t for t, _ in points] == sorted(t for t, _ in points)
    assert {value for _, value in points} == {64.0}
    assert out["value"] is None


def test_scalar_and_string_answers(stack: Stack, capsys: pytest.CaptureFixture[str]) -> None:
    scalar = run({"url": stack.url, "query": "scalar(redis_config_maxclients) * 2"}, capsys)
    assert (scalar["result_type"], scalar["value"]) == ("scalar", 128.0)
    text = run({"url": stack.url, "query": '"storm"'}, capsys)
    assert (text["result_type"], text["value"]) == ("string", "storm")


def test_instant_query_at_a_past_time(stack: Stack, capsys: pytest.CaptureFixture[str]) -> None:
    out = run({"url": stack.url, "query": "vector(time())", "time": "now-10m"}, capsys)
    assert abs(out["value"] - (time.time() - 600)) < 30


@pytest.mark.parametrize(("op", "value", "ok"), [("==", 64, True), (">", 64, False), ("<=", 100, True)])
def test_expect_against_the_real_answer(stack: Stack, capsys: pytest.CaptureFixture[str], op: str, value: float,
                                        ok: bool) -> None:
    out = run({"url": stack.url, "query": "redis_config_maxclients", "expect": {"op": op, "value": value}}, capsys)
    assert out["ok"] is ok


def test_a_long_query_still_answers(stack: Stack, capsys: pytest.CaptureFixture[str]) -> None:
    query = " + ".join(["redis_config_maxclients * 0"] * 120) + " + redis_up"
    assert len(query) > 3000
    assert run({"url": stack.url, "query": query}, capsys)["value"] == 1.0


def test_promql_errors_come_back_with_prometheus_own_text(stack: Stack, capsys: pytest.CaptureFixture[str]) -> None:
    out = run({"url": stack.url, "query": "sum(redis_up"}, capsys)
    assert out["failed"] is True
    assert out["errorType"] == "bad_data"
    assert "parse error" in out["error"]
    assert out["error"] in out["msg"]


def test_named_queries_keep_going_past_a_bad_one(stack: Stack, capsys: pytest.CaptureFixture[str]) -> None:
    out = run({"url": stack.url, "queries": {"up": "min(redis_up)", "bad": "rate(redis_up)",
                                             "clients": "max(redis_connected_clients)"}}, capsys)
    assert "failed" not in out
    assert out["answers"]["up"]["value"] == 1.0
    assert out["answers"]["clients"]["value"] >= 1
    assert "range vector" in out["answers"]["bad"]["error"]


def test_unreachable_prometheus_is_a_clear_error(capsys: pytest.CaptureFixture[str]) -> None:
    url = "http://127.0.0.1:%d" % free_port()
    out = run({"url": url, "query": "up", "timeout": 2}, capsys)
    assert out["failed"] is True
    assert out["msg"].startswith("cannot reach Prometheus at %s" % url)
    assert "Connection refused" in out["msg"]


def test_through_ansible_playbook_no_secret_reaches_the_output(stack: Stack, tmp_path: Path) -> None:
    secret = "s3cret-%d" % os.getpid()
    done = play_module("prometheus_query", {"url": stack.url, "query": "redis_up", "username": "triage",
                                            "password": secret, "expect": {"op": "==", "value": 1}}, tmp_path)
    assert not done.failed, done.output
    assert (done.result["value"], done.result["ok"]) == (1.0, True)
    assert secret not in done.output
    assert secret not in json.dumps(done.result)


def test_malformed_url_stops_at_the_arguments(tmp_path: Path) -> None:
    done = play_module("prometheus_query", {"url": "prometheus.monitoring:9090", "query": "up"}, tmp_path)
    assert done.failed
    assert "url 'prometheus.monitoring:9090' is not a Prometheus URL" in done.result["msg"]


# ------------------------------------------------------------------ auth, timeouts and TLS


ANSWER = json.dumps({"status": "success", "data": {"resultType": "scalar", "result": [1795670400, "7"]}}).encode()


class FakePrometheus:
    """Answers /api/v1/query like Prometheus when the Authorization header is the expected one."""

    def __init__(self, authorization: Optional[str] = None, delay: float = 0.0,
                 tls: Optional[ssl.SSLContext] = None) -> None:
        self.authorization = authorization
        self.delay = delay
        self.requests: List[Dict[str, Any]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def handle_one(self, method: str) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length).decode() if length else ""
                outer.requests.append({"method": method, "path": self.path, "body": body,
                                       "authorization": self.headers.get("Authorization")})
                if outer.delay:
                    time.sleep(outer.delay)
                try:
                    if outer.authorization is not None and self.headers.get("Authorization") != outer.authorization:
                        self.send_response(401)
                        self.send_header("WWW-Authenticate", 'Basic realm="prometheus"')
                        self.end_headers()
                        return
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(ANSWER)))
                    self.end_headers()
                    self.wfile.write(ANSWER)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up first (the timeout test)

            def do_GET(self) -> None:
                self.handle_one("GET")

            def do_POST(self) -> None:
                self.handle_one("POST")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        if tls is not None:
            self.server.socket = tls.wrap_socket(self.server.socket, server_side=True)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> FakePrometheus:
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


def test_basic_auth_sends_the_header_and_a_wrong_password_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    expected = "Basic " + base64.b64encode(b"triage:right").decode()
    with FakePrometheus(authorization=expected) as server:
        url = "http://127.0.0.1:%d" % server.port
        good = run({"url": url, "query": "up", "username": "triage", "password": "right"}, capsys)
        assert good["value"] == 7.0
        bad = run({"url": url, "query": "up", "username": "triage", "password": "wrong"}, capsys)
    assert bad["failed"] is True
    assert "refused our credentials (401 Unauthorized)" in bad["msg"]
    assert "wrong" not in json.dumps(bad) and "right" not in json.dumps(good)


def test_bearer_token_sends_the_header(capsys: pytest.CaptureFixture[str]) -> None:
    with FakePrometheus(authorization="Bearer tok-123") as server:
        url = "http://127.0.0.1:%d" % server.port
        assert run({"url": url, "query": "up", "bearer_token": "tok-123"}, capsys)["value"] == 7.0
        refused = run({"url": url, "query": "up", "bearer_token": "other"}, capsys)
    assert "refused our credentials (401" in refused["msg"]
    assert [r["authorization"] for r in server.requests] == ["Bearer tok-123", "Bearer other"]


def test_short_queries_use_get_and_long_ones_a_post_form(capsys: pytest.CaptureFixture[str]) -> None:
    long_query = "sum(" + " + ".join(["up"] * 800) + ")"
    with FakePrometheus() as server:
        url = "http://127.0.0.1:%d" % server.port
        run({"url": url, "query": "up"}, capsys)
        run({"url": url, "query": long_query}, capsys)
    short, long = server.requests
    assert short["method"] == "GET" and short["path"].startswith("/api/v1/query?query=up")
    assert long["method"] == "POST" and long["path"] == "/api/v1/query"
    assert urllib.parse.parse_qs(long["body"])["query"] == [long_query]


def test_a_slow_prometheus_times_out_with_a_clear_error(capsys: pytest.CaptureFixture[str]) -> None:
    with FakePrometheus(delay=3.0) as server:
        started = time.monotonic()
        out = run({"url": "http://127.0.0.1:%d" % server.port, "query": "up", "timeout": 0.5}, capsys)
        elapsed = time.monotonic() - started
    assert out["failed"] is True
    assert "did not answer within 0.5s" in out["msg"]
    assert elapsed < 2.5


@pytest.fixture(scope="module")
def tls_server_context(tmp_path_factory: pytest.TempPathFactory) -> Any:
    certs = make_tls_certs(tmp_path_factory.mktemp("promtls"))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(str(certs.cert), str(certs.key))
    return certs, context


def test_tls_with_the_right_ca_and_failures_without_it(tls_server_context: Any,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    certs, context = tls_server_context
    with FakePrometheus(tls=context) as server:
        url = "https://127.0.0.1:%d" % server.port
        trusted = run({"url": url, "query": "up", "ca_path": str(certs.ca)}, capsys)
        wrong_ca = run({"url": url, "query": "up", "ca_path": str(certs.wrong_ca)}, capsys)
        system_cas = run({"url": url, "query": "up"}, capsys)
        unverified = run({"url": url, "query": "up", "validate_certs": False}, capsys)
    assert trusted["value"] == 7.0
    for out in (wrong_ca, system_cas):
        assert out["failed"] is True
        assert out["msg"].startswith("TLS verification of %s failed" % url), out["msg"]
        assert "ca_path" in out["msg"]
    assert unverified["value"] == 7.0
