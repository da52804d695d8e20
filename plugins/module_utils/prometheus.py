# -*- coding: utf-8 -*-
# Copyright: fintech SRE
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""A small client for the Prometheus HTTP API (instant and range queries) and ``expect`` checks.

Answers come back typed: ``result_type`` (vector, matrix, scalar, string), ``series`` with float
values and epoch times, ``value`` when the answer is one number, and ``ok`` for an ``expect``
check. Every failure is a ``PrometheusError`` (a ``StormError``) whose message says whether
Prometheus rejected the query (with its own ``error``/``errorType``), could not be reached,
timed out, refused the credentials, or failed TLS verification.
"""

from __future__ import annotations

import inspect
import json
import math
import re
import socket
import ssl
import time as _time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from typing import Any, Callable, Dict, List, Optional, Tuple
from urllib.error import HTTPError, URLError
from urllib.parse import unquote, urlencode, urlsplit, urlunsplit

from ansible.module_utils.urls import Request, SSLValidationError, make_context
from ansible_collections.fintech.redis_storm.plugins.module_utils.errors import StormError

PROMETHEUS_ARG_SPEC: Dict[str, Dict[str, Any]] = {
    "url": {"type": "str", "required": True},
    "timeout": {"type": "float", "default": 10.0},
    "bearer_token": {"type": "str", "no_log": True},
    "username": {"type": "str"},
    "password": {"type": "str", "no_log": True},
    "validate_certs": {"type": "bool", "default": True},
    "ca_path": {"type": "path"},
}

EXPECT_OPS: Dict[str, Callable[[float, float], bool]] = {
    ">": lambda a, b: a > b,
    ">=": lambda a, b: a >= b,
    "<": lambda a, b: a < b,
    "<=": lambda a, b: a <= b,
    "==": lambda a, b: a == b,
    "!=": lambda a, b: a != b,
}

_REQUEST_TAKES_CONTEXT = "context" in inspect.signature(Request.__init__).parameters

# Longer query strings go in a POST form body: proxies and servers cap URL length.
GET_LIMIT = 2000
# Queries asked at once by run_queries (a triage asks about a dozen).
PARALLEL_QUERIES = 8

_DURATION_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 31536000}


class PrometheusError(StormError):
    """A query that got no answer; ``error_type`` is Prometheus' own errorType when it sent one."""

    def __init__(self, message: str, status: int = 0, error_type: str = "", error: str = "") -> None:
        details: Dict[str, Any] = {}
        if status:
            details["status"] = status
        if error_type:
            details["errorType"] = error_type
        if error:
            details["error"] = error
        super().__init__(message, **details)
        self.status = status
        self.error_type = error_type
        self.error = error


_USERINFO = re.compile(r"(?<=//)[^/@\s]*@")


def redact_url(url: Any) -> str:
    """The URL as text with any ``user:password@`` replaced, for messages."""
    return _USERINFO.sub("***@", str(url))


def validate_url(url: str) -> str:
    """The base URL without a trailing slash, or a StormError naming what is wrong with it."""
    shown = redact_url(url)
    parts = urlsplit(url.strip()) if url else None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
        raise StormError(
            "url %r is not a Prometheus URL: give http(s)://host:port (plus any path prefix), "
            "e.g. http://prometheus.monitoring:9090" % (shown,)
        )
    try:
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number
    except ValueError as exc:
        raise StormError("url %r has a bad port (%s)" % (shown, redact_url(exc))) from exc
    if parts.query or parts.fragment:
        raise StormError("url %r must not carry a query string or fragment" % (shown,))
    return url.strip().rstrip("/")


def hide_url_password(module: Any, url: Optional[str]) -> None:
    """Make Ansible censor the password of a URL's ``user:password@`` wherever the module's result
    (its invocation included) would show it."""
    try:
        password = urlsplit(url or "").password
    except ValueError:
        return
    if password:
        module.no_log_values.update({password, unquote(password)})


def split_credentials(url: str) -> Tuple[str, Optional[str], Optional[str]]:
    """(URL without ``user:password@``, user, password); user and password are None when it has none."""
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url, None, None
    netloc = parts.netloc.rsplit("@", 1)[1]
    return (urlunsplit(parts._replace(netloc=netloc)), unquote(parts.username or ""),
            None if parts.password is None else unquote(parts.password))


def duration_seconds(value: Any) -> float:
    """Seconds from a number or a Prometheus duration such as ``15s``, ``5m``, ``1h30m``."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        seconds = float(value)
    else:
        text = str(value).strip()
        try:
            seconds = float(text)
        except ValueError:
            seconds = 0.0
            rest = text
            for match in re.finditer(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w|y)", text):
                seconds += float(match.group(1)) * _DURATION_SECONDS[match.group(2)]
                rest = rest.replace(match.group(0), "", 1)
            if rest or not text:
                raise StormError("%r is not a duration: use seconds or e.g. 15s, 5m, 1h" % (value,)) from None
    if seconds <= 0 or math.isinf(seconds) or math.isnan(seconds):
        raise StormError("duration %r must be positive" % (value,))
    return seconds


def epoch_time(value: Any, now: Optional[float] = None) -> float:
    """Epoch seconds from an epoch number, ``now``, ``now-15m`` / ``-15m``, or an RFC 3339 time."""
    current = _time.time() if now is None else now
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    text = str(value).strip()
    try:
        return float(text)
    except ValueError:
        pass
    if text == "now":
        return current
    relative = text[3:] if text.startswith("now") else text
    if relative[:1] in ("-", "+"):
        offset = duration_seconds(relative[1:])
        return current - offset if relative[0] == "-" else current + offset
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError as exc:
        raise StormError(
            "%r is not a time: use epoch seconds, now, now-15m (or -15m), or RFC 3339 like "
            "2026-11-26T05:00:00Z" % (value,)
        ) from exc
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=timezone.utc)
    return parsed.timestamp()


def sample_value(raw: Any) -> Optional[float]:
    """A sample's float; None for NaN and +/-Inf, which JSON (and AWX's database) cannot hold."""
    try:
        number = float(raw)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def parse_data(data: Dict[str, Any]) -> Dict[str, Any]:
    """``{result_type, series, value}`` from the ``data`` member of a Prometheus answer."""
    result_type = str(data.get("resultType", ""))
    result = data.get("result")
    series: List[Dict[str, Any]] = []
    value: Any = None
    if result_type == "vector":
        for item in result or []:
            stamp, raw = item.get("value") or [None, None]
            series.append({"metric": item.get("metric") or {}, "time": float(stamp), "value": sample_value(raw)})
        if len(series) == 1:
            value = series[0]["value"]
    elif result_type == "matrix":
        for item in result or []:
            values = [[float(stamp), sample_value(raw)] for stamp, raw in item.get("values") or []]
            series.append({"metric": item.get("metric") or {}, "values": values})
    elif result_type == "scalar":
        stamp, raw = result or [None, None]
        value = sample_value(raw)
        series.append({"metric": {}, "time": float(stamp), "value": value})
    elif result_type == "string":
        stamp, raw = result or [None, None]
        value = str(raw)
        series.append({"metric": {}, "time": float(stamp), "value": value})
    else:
        raise PrometheusError("Prometheus answered an unknown result type %r" % (result_type,))
    return {"result_type": result_type, "series": series, "value": value}


def last_value(item: Dict[str, Any]) -> Any:
    """A series' latest value: the sample of a vector/scalar, the last point of a matrix."""
    if "values" in item:
        return item["values"][-1][1] if item["values"] else None
    return item.get("value")


def check_expect(series: List[Dict[str, Any]], expect: Optional[Dict[str, Any]]) -> Optional[bool]:
    """Whether every series' last value satisfies ``expect``; None without ``expect``.

    An empty answer is not ok: the expectation cannot be confirmed from no data.
    """
    if not expect:
        return None
    op = expect.get("op")
    if op not in EXPECT_OPS:
        raise StormError("expect.op %r is not one of %s" % (op, ", ".join(EXPECT_OPS)))
    try:
        target = float(expect["value"])
    except (KeyError, TypeError, ValueError) as exc:
        raise StormError("expect.value must be a number, got %r" % (expect.get("value"),)) from exc
    if not series:
        return False
    compare = EXPECT_OPS[op]
    for item in series:
        observed = last_value(item)
        if not isinstance(observed, (int, float)) or not compare(float(observed), target):
            return False
    return True


class Prometheus:
    """Queries against one Prometheus server with one identity."""

    def __init__(
        self,
        url: str,
        timeout: float = 10.0,
        bearer_token: Optional[str] = None,
        username: Optional[str] = None,
        password: Optional[str] = None,
        validate_certs: bool = True,
        ca_path: Optional[str] = None,
    ) -> None:
        # credentials in the URL are basic auth; the URL itself, in every message, is without them
        self.url, url_username, url_password = split_credentials(validate_url(url))
        if url_username is not None:
            if username or password:
                raise StormError("url carries a user and password and username/password are given too: give them once")
            username, password = url_username, url_password
        if timeout <= 0:
            raise StormError("timeout must be positive, got %s" % timeout)
        if bearer_token and (username or password):
            raise StormError("give either bearer_token or username/password (in the url or as options), not both")
        if password and not username:
            raise StormError("password needs username")
        self.timeout = float(timeout)
        self.bearer_token = bearer_token
        self.username = username
        self.password = password
        self.validate_certs = validate_certs
        self.ca_path = ca_path
        # One TLS context for every query: building it loads the CA store (about 20 ms each time).
        try:
            self.context = make_context(cafile=ca_path, validate_certs=validate_certs)
        except (OSError, ssl.SSLError) as exc:
            raise StormError("cannot use ca_path %s: %s" % (ca_path, exc)) from exc
        # ansible-core 2.16 takes no context: it builds one per request from validate_certs and ca_path.
        tls = {"context": self.context} if _REQUEST_TAKES_CONTEXT else {"validate_certs": validate_certs,
                                                                        "ca_path": ca_path}
        self.request = Request(
            headers={"Accept": "application/json", "User-Agent": "fintech.redis_storm"},
            timeout=self.timeout, url_username=username, url_password=password,
            force_basic_auth=bool(username), follow_redirects="safe", **tls,
        )

    @classmethod
    def from_params(cls, params: Dict[str, Any]) -> Prometheus:
        return cls(
            url=params["url"],
            timeout=float(params.get("timeout") or 10.0),
            bearer_token=params.get("bearer_token"),
            username=params.get("username"),
            password=params.get("password"),
            validate_certs=params.get("validate_certs", True) is not False,
            ca_path=params.get("ca_path"),
        )

    def query(self, query: str, time: Any = None) -> Dict[str, Any]:
        """An instant query (at ``time``, or now)."""
        form = {"query": query}
        if time is not None and time != "":
            form["time"] = _format_time(epoch_time(time))
        return parse_data(self._call("/api/v1/query", form))

    def query_range(self, query: str, start: Any, end: Any, step: Any) -> Dict[str, Any]:
        """A range query from ``start`` to ``end`` (default now) every ``step``."""
        now = _time.time()
        start_s = epoch_time(start, now)
        end_s = epoch_time(end if end not in (None, "") else "now", now)
        if end_s < start_s:
            raise StormError("end (%s) is before start (%s)" % (_iso(end_s), _iso(start_s)))
        form = {
            "query": query,
            "start": _format_time(start_s),
            "end": _format_time(end_s),
            "step": _format_time(duration_seconds(step)),
        }
        return parse_data(self._call("/api/v1/query_range", form))

    def _call(self, path: str, form: Dict[str, str]) -> Dict[str, Any]:
        encoded = urlencode(form)
        url = self.url + path
        headers: Dict[str, str] = {}
        if self.bearer_token:
            headers["Authorization"] = "Bearer " + self.bearer_token
        data: Optional[str] = None
        method = "GET"
        if len(url) + len(encoded) + 1 > GET_LIMIT:
            method, data = "POST", encoded
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        else:
            url += "?" + encoded
        try:
            response = self.request.open(method, url, data=data, headers=headers)
            status, body = response.getcode(), response.read()
        except HTTPError as exc:
            status, body = exc.code, _safe_read(exc)
        except SSLValidationError as exc:
            raise PrometheusError(
                "TLS verification of %s failed (%s): give ca_path with the CA that signed its certificate, "
                "or validate_certs: false only for a lab" % (self.url, _first_line(exc))
            ) from exc
        except (socket.timeout, TimeoutError) as exc:
            raise PrometheusError(
                "Prometheus at %s did not answer within %ss: raise timeout, or check that it is up" % (
                    self.url, _seconds(self.timeout))
            ) from exc
        except URLError as exc:
            raise _url_error(self.url, self.timeout, exc) from exc
        except (ssl.SSLError, ssl.CertificateError) as exc:
            raise PrometheusError(
                "TLS with %s failed (%s): check ca_path and validate_certs" % (self.url, exc)
            ) from exc
        except (OSError, ValueError) as exc:
            raise PrometheusError("cannot reach Prometheus at %s (%s)" % (self.url, exc)) from exc
        return _answer(self.url, status, body)


def _answer(url: str, status: int, body: Any) -> Dict[str, Any]:
    """The ``data`` of a successful answer, or the error that says why there is none."""
    if status in (401, 403):
        raise PrometheusError(
            "Prometheus at %s refused our credentials (%s %s): check bearer_token or username/password"
            % (url, status, "Unauthorized" if status == 401 else "Forbidden"), status=status,
        )
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else str(body or "")
    try:
        payload = json.loads(text) if text else {}
    except ValueError:
        payload = None
    if not isinstance(payload, dict):
        raise PrometheusError(
            "%s answered %s with something that is not the Prometheus API (%s): check url"
            % (url, status, _first_line(text)[:200] or "empty body"), status=status,
        )
    if payload.get("status") == "error" or not 200 <= status < 300:
        error_type = str(payload.get("errorType", ""))
        error = str(payload.get("error", "")) or _first_line(text)[:200]
        raise PrometheusError(
            "Prometheus rejected the query (%s%s): %s" % (error_type or "HTTP", " %s" % status, error),
            status=status, error_type=error_type, error=error,
        )
    data = payload.get("data")
    if not isinstance(data, dict):
        raise PrometheusError("Prometheus at %s answered without data: check url" % url, status=status)
    return data


def _url_error(url: str, timeout: float, exc: URLError) -> PrometheusError:
    reason = exc.reason
    if isinstance(reason, (socket.timeout, TimeoutError)):
        return PrometheusError(
            "Prometheus at %s did not answer within %ss: raise timeout, or check that it is up"
            % (url, _seconds(timeout))
        )
    if isinstance(reason, (ssl.SSLError, ssl.CertificateError)):
        return PrometheusError(
            "TLS verification of %s failed (%s): give ca_path with the CA that signed its certificate, "
            "or validate_certs: false only for a lab" % (url, reason)
        )
    return PrometheusError(
        "cannot reach Prometheus at %s (%s): check url, that Prometheus is running, and the network"
        % (url, reason)
    )


def _safe_read(exc: HTTPError) -> bytes:
    try:
        return exc.read() or b""
    except (OSError, ValueError):
        return b""


def _first_line(value: Any) -> str:
    text = str(value).strip()
    return text.splitlines()[0] if text else ""


def _format_time(seconds: float) -> str:
    return ("%.3f" % seconds).rstrip("0").rstrip(".")


def _seconds(value: float) -> str:
    return _format_time(value)


def _iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def run_query(client: Prometheus, params: Dict[str, Any]) -> Dict[str, Any]:
    """One query from module-style params (``query``, ``time`` or ``start``/``end``/``step``, ``expect``)."""
    if params.get("start") not in (None, ""):
        answer = client.query_range(params["query"], params["start"], params.get("end"), params.get("step"))
    else:
        answer = client.query(params["query"], params.get("time"))
    answer["ok"] = check_expect(answer["series"], params.get("expect"))
    return answer


def run_queries(
    client: Prometheus, queries: Dict[str, str], params: Dict[str, Any]
) -> Tuple[Dict[str, Dict[str, Any]], int]:
    """Several named queries at the same time or range; a PromQL error stays with its query.

    Returns ``(results, answered)``. Errors that concern Prometheus as a whole (unreachable,
    timeout, credentials, TLS) are raised, so a dead server is one clear failure.
    """
    def ask(query: str) -> Tuple[Dict[str, Any], bool]:
        try:
            return dict(run_query(client, dict(params, query=query)), query=query), True
        except PrometheusError as exc:
            if not exc.error_type and exc.status in (0, 401, 403):
                raise
            return {"query": query, "result_type": None, "series": [], "value": None, "ok": None,
                    "error": exc.error or exc.message, "errorType": exc.error_type}, False

    # The queries are independent: asked side by side, the module waits for the slowest, not the sum.
    with ThreadPoolExecutor(max_workers=max(1, min(PARALLEL_QUERIES, len(queries)))) as pool:
        futures = {name: pool.submit(ask, query) for name, query in queries.items()}
        answers: Dict[str, Dict[str, Any]] = {}
        answered = 0
        for name, future in futures.items():
            answers[name], ok = future.result()
            answered += int(ok)
    return answers, answered
