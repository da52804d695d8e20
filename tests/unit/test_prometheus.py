"""prometheus_query's pure parts: typed answers, expect checks, times, URLs and error text."""

from __future__ import annotations

import json
from typing import Any

import pytest
from ansible_collections.fintech.redis_storm.plugins.module_utils import prometheus as p
from ansible_collections.fintech.redis_storm.plugins.module_utils.errors import StormError


def test_vector_answer_has_floats_epoch_times_and_one_value() -> None:
    data = {"resultType": "vector", "result": [
        {"metric": {"__name__": "redis_up", "instance": "r:9121"}, "value": [1795670400.123, "1"]}]}
    answer = p.parse_data(data)
    assert answer == {"result_type": "vector", "value": 1.0, "series": [
        {"metric": {"__name__": "redis_up", "instance": "r:9121"}, "time": 1795670400.123, "value": 1.0}]}


def test_vector_with_several_series_has_no_single_value() -> None:
    data = {"resultType": "vector", "result": [{"metric": {"a": "1"}, "value": [1, "0.5"]},
                                               {"metric": {"a": "2"}, "value": [1, "0.7"]}]}
    answer = p.parse_data(data)
    assert answer["value"] is None
    assert [s["value"] for s in answer["series"]] == [0.5, 0.7]


def test_empty_vector() -> None:
    empty = p.parse_data({"resultType": "vector", "result": []})
    assert empty == {"result_type": "vector", "series": [], "value": None}


def test_matrix_answer_has_time_value_pairs() -> None:
    data = {"resultType": "matrix", "result": [{"metric": {"job": "redis"}, "values": [[10, "1"], [25, "3.5"]]}]}
    answer = p.parse_data(data)
    assert answer["series"] == [{"metric": {"job": "redis"}, "values": [[10.0, 1.0], [25.0, 3.5]]}]
    assert answer["value"] is None


def test_scalar_and_string_answers() -> None:
    assert p.parse_data({"resultType": "scalar", "result": [100, "42"]}) == {
        "result_type": "scalar", "value": 42.0, "series": [{"metric": {}, "time": 100.0, "value": 42.0}]}
    assert p.parse_data({"resultType": "string", "result": [100, "storm"]})["value"] == "storm"


@pytest.mark.parametrize("raw", ["NaN", "+Inf", "-Inf"])
def test_non_finite_samples_become_null(raw: str) -> None:
    answer = p.parse_data({"resultType": "scalar", "result": [1, raw]})
    assert answer["value"] is None
    json.dumps(answer, allow_nan=False)  # AWX stores results in a database that rejects NaN


@pytest.mark.parametrize(
    ("values", "expect", "ok"),
    [
        ([0.95], {"op": ">", "value": 0.9}, True),
        ([0.95, 0.5], {"op": ">", "value": 0.9}, False),  # every series must pass
        ([0.9], {"op": ">=", "value": 0.9}, True),
        ([0.9], {"op": "<", "value": 0.9}, False),
        ([0.1], {"op": "<=", "value": 0.1}, True),
        ([3.0], {"op": "==", "value": 3}, True),
        ([3.0], {"op": "!=", "value": 3}, False),
        ([None], {"op": "<", "value": 1}, False),  # NaN cannot satisfy a threshold
        ([], {"op": "<", "value": 1}, False),  # no data confirms nothing
    ],
)
def test_expect_is_checked_against_every_series_last_value(values: list[Any], expect: dict[str, Any],
                                                           ok: bool) -> None:
    series = [{"metric": {"i": str(n)}, "time": 1.0, "value": value} for n, value in enumerate(values)]
    assert p.check_expect(series, expect) is ok


def test_expect_uses_the_last_point_of_a_range() -> None:
    series = [{"metric": {}, "values": [[1.0, 5.0], [2.0, 0.5]]}]
    assert p.check_expect(series, {"op": "<", "value": 1}) is True
    assert p.check_expect(series, None) is None


def test_expect_with_an_unknown_operator_is_refused() -> None:
    with pytest.raises(StormError, match=r"expect\.op '=>' is not one of"):
        p.check_expect([], {"op": "=>", "value": 1})


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("15s", 15.0), ("5m", 300.0), ("1h30m", 5400.0), ("250ms", 0.25), ("30", 30.0), (60, 60.0), ("1d", 86400.0)],
)
def test_durations(text: Any, seconds: float) -> None:
    assert p.duration_seconds(text) == seconds


@pytest.mark.parametrize("text", ["soon", "", "5 minutes", "-5m", "0s"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(StormError):
        p.duration_seconds(text)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1795670400", 1795670400.0),
        ("now", 1000.0),
        ("now-15m", 100.0),
        ("-15m", 100.0),
        ("+1m", 1060.0),
        ("2026-11-26T05:00:00Z", 1795669200.0),
        ("2026-11-26T06:00:00+01:00", 1795669200.0),
    ],
)
def test_times(text: str, expected: float) -> None:
    assert p.epoch_time(text, now=1000.0) == expected


def test_a_time_that_is_not_one_says_which_formats_work() -> None:
    with pytest.raises(StormError, match="not a time: use epoch seconds, now, now-15m"):
        p.epoch_time("yesterday")


@pytest.mark.parametrize(
    "url", ["prometheus:9090", "ftp://prom:9090", "http://", "http://prom:port", "http://prom:9090/?x=1", ""]
)
def test_malformed_urls_are_refused(url: str) -> None:
    with pytest.raises(StormError, match="url"):
        p.validate_url(url)


def test_good_urls_lose_their_trailing_slash() -> None:
    assert p.validate_url("https://mon.example.com/prometheus/") == "https://mon.example.com/prometheus"
    assert p.validate_url("http://[::1]:9090") == "http://[::1]:9090"


def test_prometheus_error_text_is_kept() -> None:
    body = json.dumps({"status": "error", "errorType": "bad_data",
                       "error": "1:14: parse error: unclosed left parenthesis"}).encode()
    with pytest.raises(p.PrometheusError) as caught:
        p._answer("http://prom", 400, body)
    assert caught.value.error_type == "bad_data"
    assert caught.value.details == {"status": 400, "errorType": "bad_data",
                                    "error": "1:14: parse error: unclosed left parenthesis"}
    assert "unclosed left parenthesis" in caught.value.message


@pytest.mark.parametrize(("status", "word"), [(401, "Unauthorized"), (403, "Forbidden")])
def test_refused_credentials_are_a_clear_error(status: int, word: str) -> None:
    with pytest.raises(p.PrometheusError, match="refused our credentials \\(%d %s\\)" % (status, word)):
        p._answer("http://prom", status, b"")


def test_something_that_is_not_prometheus_is_a_clear_error() -> None:
    with pytest.raises(p.PrometheusError, match="not the Prometheus API"):
        p._answer("http://prom", 200, b"<html>Grafana</html>")


def test_client_refuses_mixed_credentials_and_bad_timeouts() -> None:
    with pytest.raises(StormError, match="either bearer_token or username/password"):
        p.Prometheus("http://prom:9090", bearer_token="t", username="u", password="x")
    with pytest.raises(StormError, match="password needs username"):
        p.Prometheus("http://prom:9090", password="x")
    with pytest.raises(StormError, match="timeout must be positive"):
        p.Prometheus("http://prom:9090", timeout=0)
    with pytest.raises(StormError, match="cannot use ca_path"):
        p.Prometheus("https://prom:9090", ca_path="/nonexistent/ca.pem")


class FakeClient(p.Prometheus):
    """Answers from a table instead of the network, to drive run_queries."""

    def __init__(self, table: dict[str, Any]) -> None:
        super().__init__("http://prom:9090")
        self.table = table
        self.forms: list[dict[str, str]] = []

    def _call(self, path: str, form: dict[str, str]) -> dict[str, Any]:
        self.forms.append(dict(form, path=path))
        answer = self.table[form["query"]]
        if isinstance(answer, Exception):
            raise answer
        return dict(answer)


def test_named_queries_keep_a_promql_error_with_its_query() -> None:
    client = FakeClient({
        "up": {"resultType": "vector", "result": [{"metric": {}, "value": [1, "1"]}]},
        "bad(": p.PrometheusError("rejected", status=400, error_type="bad_data", error="parse error"),
    })
    answers, answered = p.run_queries(client, {"redis_up": "up", "broken": "bad("}, {})
    assert answered == 1
    assert answers["redis_up"]["value"] == 1.0
    assert answers["broken"]["error"] == "parse error"
    assert answers["broken"]["errorType"] == "bad_data"


def test_named_queries_stop_when_prometheus_itself_is_unreachable() -> None:
    client = FakeClient({"up": p.PrometheusError("cannot reach Prometheus at http://prom:9090")})
    with pytest.raises(p.PrometheusError, match="cannot reach"):
        p.run_queries(client, {"redis_up": "up"}, {})


def test_range_query_sends_epoch_start_end_and_step() -> None:
    client = FakeClient({"x": {"resultType": "matrix", "result": []}})
    p.run_query(client, {"query": "x", "start": "1795670000", "end": "1795670400", "step": "30s"})
    assert client.forms == [{"path": "/api/v1/query_range", "query": "x", "start": "1795670000",
                             "end": "1795670400", "step": "30"}]


def test_range_query_end_before_start_is_refused() -> None:
    client = FakeClient({})
    with pytest.raises(StormError, match="is before start"):
        client.query_range("x", start="200", end="100", step="1s")


def run_main(args: dict[str, Any], capsys: Any) -> dict[str, Any]:
    from ansible.module_utils.testing import patch_module_args
    from ansible_collections.fintech.redis_storm.plugins.modules import prometheus_query

    with patch_module_args(args), pytest.raises(SystemExit):
        prometheus_query.main()
    return dict(json.loads(capsys.readouterr().out))


def test_module_refuses_a_malformed_url_before_any_request(capsys: Any) -> None:
    out = run_main({"url": "prometheus.monitoring:9090", "query": "up"}, capsys)
    assert out["failed"] is True
    assert out["msg"].startswith("url 'prometheus.monitoring:9090' is not a Prometheus URL")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ({"url": "http://p:9090"}, "one of the following is required: query, queries"),
        ({"url": "http://p:9090", "query": "up", "time": "now", "start": "-5m", "step": "5s"}, "mutually exclusive"),
        ({"url": "http://p:9090", "query": "up", "start": "-5m"}, "missing parameter(s) required by 'start': step"),
        ({"url": "http://p:9090", "query": "up", "expect": {"op": "~", "value": 1}}, "value of op must be one of"),
    ],
)
def test_module_argument_errors(args: dict[str, Any], message: str, capsys: Any) -> None:
    out = run_main(args, capsys)
    assert out["failed"] is True
    assert message in out["msg"]


def test_url_credentials_never_reach_a_message(capsys: Any) -> None:
    with pytest.raises(StormError) as bad_port:
        p.validate_url("http://reader:s3cret-pw@prom:90x0")
    assert "s3cret-pw" not in bad_port.value.message and "***@prom" in bad_port.value.message
    client = p.Prometheus("http://reader:s3cret-pw@127.0.0.1:9/prefix", timeout=2)
    assert client.url == "http://127.0.0.1:9/prefix"
    assert (client.username, client.password) == ("reader", "s3cret-pw")
    with pytest.raises(StormError) as unreachable:
        client.query("up")
    assert "s3cret-pw" not in unreachable.value.message and "http://127.0.0.1:9/prefix" in unreachable.value.message
    # the module's whole result, its invocation (module_args) included
    out = run_main({"url": "http://reader:s3cret-pw@127.0.0.1:9", "query": "up", "timeout": 2}, capsys)
    assert out["failed"] is True and "127.0.0.1:9" in out["msg"]
    assert "s3cret-pw" not in json.dumps(out)


def test_url_credentials_and_a_bearer_token_are_refused_together() -> None:
    with pytest.raises(StormError, match="not both"):
        p.Prometheus("http://reader:pw@prom:9090", bearer_token="t")
    with pytest.raises(StormError, match="give them once"):
        p.Prometheus("http://reader:pw@prom:9090", username="other", password="x")
