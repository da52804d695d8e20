"""storm_triage from the three views: each case is a situation an on-call engineer meets."""

from __future__ import annotations

import json
import os
import stat
from typing import Any

import pytest
from ansible_collections.fintech.redis_storm.plugins.module_utils import verdict as v
from ansible_collections.fintech.redis_storm.plugins.module_utils.errors import StormError
from ansible_collections.fintech.redis_storm.plugins.module_utils.verdict_report import summary_lines

# ------------------------------------------------------------------ builders of registered results


def redis_ok(connected: int = 50, maxclients: int = 1000, new_per_sec: float = 2.0, rejected_per_sec: float = 0.0,
             p99: float = 0.3, sources: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {
        "changed": False, "reachable": True, "saturated": False, "error": None,
        "clients": {"connected": connected, "max": maxclients, "utilization": round(connected / maxclients, 4),
                    "blocked": 0},
        "stats": {"total_connections_received": 1000, "rejected_connections": 0, "evicted_clients": 0,
                  "ops_per_sec": 100},
        "rates": {"new_connections_per_sec": new_per_sec, "rejected_per_sec": rejected_per_sec},
        "latency_ms": {"p50": 0.1, "p99": p99, "max": p99},
        "top_sources": sources or [],
        "verdict": {"storm": False, "severity": "none", "reasons": []},
    }


def redis_refused() -> dict[str, Any]:
    return {"changed": False, "reachable": False, "saturated": True,
            "error": "max number of clients reached", "clients": None, "stats": None, "rates": None,
            "latency_ms": None, "top_sources": [], "verdict": {"storm": True, "severity": "critical", "reasons": []}}


def failed(msg: str) -> dict[str, Any]:
    # What `register` holds for a module that failed under `failed_when: false`.
    return {"changed": False, "failed": False, "failed_when_result": False, "msg": msg}


def vector(*pairs: tuple[dict[str, str], float]) -> dict[str, Any]:
    series = [{"metric": labels, "time": 1795670400.0, "value": value} for labels, value in pairs]
    return {"result_type": "vector", "series": series, "value": series[0]["value"] if len(series) == 1 else None,
            "ok": None, "query": "q"}


def one(value: float) -> dict[str, Any]:
    return vector(({}, value))


def prom(**answers: dict[str, Any]) -> dict[str, Any]:
    return {"changed": False, "answers": answers}


def svc(namespace: str, service: str) -> dict[str, str]:
    return {"namespace": namespace, "service": service}


def workload(namespace: str, name: str, connections: int, share: float, hpa: dict[str, Any] | None = None,
             signatures: dict[str, int] | None = None, restarts: int = 0, pods: int = 3) -> dict[str, Any]:
    return {"namespace": namespace, "kind": "Deployment", "name": name, "connections": connections,
            "connection_share": share, "pods": pods, "pod_ips": [], "client_names": [name], "restarts": restarts,
            "crashloop": False, "oomkilled": False, "hpa": hpa, "cpu_millicores": 100.0,
            "log_signatures": signatures or {}, "logs_read": []}


def kube(*workloads: dict[str, Any], degraded: list[str] | None = None) -> dict[str, Any]:
    return {"changed": False, "workloads": list(workloads), "unattributed_connections": [],
            "total_connections": sum(w["connections"] for w in workloads), "degraded": degraded or []}


def hpa(current: int, desired: int, maximum: int, paused: bool = False) -> dict[str, Any]:
    return {"kind": "HorizontalPodAutoscaler", "name": "x", "current": current, "desired": desired, "min": 3,
            "max": maximum, "paused": paused}


INGRESSES = [
    {"namespace": "trading", "name": "trading-api", "provider": "nginx", "workload": "trading-api"},
    {"namespace": "payments", "name": "payments-api", "provider": "traefik", "workload": "payments-api"},
]

QUIET_PROM = prom(redis_up=one(1), utilization=one(0.05), connected_clients=one(50), maxclients=one(1000),
                  new_connections_per_sec=one(1.5), rejected_connections=one(0),
                  redis_command_latency_seconds=one(0.00002),
                  app_error_ratio=vector((svc("trading", "trading-api"), 0.0)),
                  app_latency_p99=vector((svc("trading", "trading-api"), 0.05)),
                  app_request_growth=vector((svc("trading", "trading-api"), 1.05)))

QUIET_KUBE = kube(workload("trading", "trading-api", 20, 0.4, hpa(3, 3, 48)),
                  workload("payments", "payments-api", 18, 0.36, hpa(3, 3, 12)),
                  workload("wallet", "wallet-service", 12, 0.24))

# market-open: trading-api's traffic jumps, its HPA scales it up, Redis hits maxclients.
MARKET_REDIS = redis_ok(connected=1000, new_per_sec=350.0, rejected_per_sec=40.0, p99=2.0)
MARKET_PROM = prom(redis_up=one(1), utilization=one(1.0), connected_clients=one(1000), maxclients=one(1000),
                   new_connections_per_sec=one(320.0), rejected_connections=one(900),
                   redis_command_latency_seconds=one(0.00003),
                   app_error_ratio=vector((svc("trading", "trading-api"), 0.31),
                                          (svc("wallet", "wallet-service"), 0.02)),
                   app_latency_p99=vector((svc("trading", "trading-api"), 0.9)),
                   app_request_growth=vector((svc("trading", "trading-api"), 12.4),
                                             (svc("wallet", "wallet-service"), 1.0)))
MARKET_KUBE = kube(workload("trading", "trading-api", 820, 0.82, hpa(16, 24, 48),
                            {"retry": 60, "max_clients_reached": 30, "redis_timeout": 2}),
                   workload("payments", "payments-api", 120, 0.12, hpa(3, 3, 12)),
                   workload("wallet", "wallet-service", 60, 0.06))


def rungs(result: dict[str, Any]) -> list[str]:
    return [r["rung"] for r in result["recommended_rungs"]]


def signals(result: dict[str, Any], breached: bool = True) -> set[tuple[str, str]]:
    return {(i["source"], i["signal"]) for i in result["evidence"] if i["breached"] == breached}


# ------------------------------------------------------------------ the cases


def test_quiet_sandbox_is_no_storm_and_recommends_nothing() -> None:
    result = v.triage_verdict(redis_ok(), QUIET_PROM, QUIET_KUBE, ingresses=INGRESSES)
    assert result["storm"] is False
    assert result["severity"] == "none"
    assert result["recommended_rungs"] == []
    assert result["bottleneck_confirmed"]["confirmed"] is False
    assert result["bottleneck_confirmed"]["confidence"] == "high"
    assert result["degraded_sources"] == []
    assert result["sources_answered"] == ["redis", "prometheus", "kubernetes"]
    assert signals(result) == set()
    # Quiet evidence is still shown, against its thresholds.
    utilization = [i for i in result["evidence"] if i["signal"] == "utilization"]
    assert {(i["source"], i["observed"], i["threshold"]) for i in utilization} == {
        ("redis", 0.05, 0.8), ("prometheus", 0.05, 0.8)}


def test_market_open_names_trading_api_and_climbs_the_whole_ladder() -> None:
    result = v.triage_verdict(MARKET_REDIS, MARKET_PROM, MARKET_KUBE, ingresses=INGRESSES)
    assert result["storm"] is True
    assert result["severity"] == "critical"
    assert result["bottleneck_confirmed"]["confirmed"] is True
    assert result["bottleneck_confirmed"]["confidence"] == "high"
    top = result["offenders"][0]
    assert (top["namespace"], top["name"], top["connections"], top["connection_share"]) == (
        "trading", "trading-api", 820, 0.82)
    assert top["hpa_state"] == "scaling_up"
    assert top["ingress"] == "trading/trading-api"
    assert top["request_growth"] == 12.4
    assert rungs(result) == ["ingress_rate_limit", "client_retries", "redis_capacity", "offender_scale_down",
                             "hpa_pause"]
    reasons = {r["rung"]: r["reason"] for r in result["recommended_rungs"]}
    assert "12.4x" in reasons["ingress_rate_limit"]
    assert "60 retry lines" in reasons["client_retries"]
    assert "82%" in reasons["offender_scale_down"]
    assert "current 16, desired 24, min 3, max 48" in reasons["hpa_pause"]
    assert {("redis", "utilization"), ("prometheus", "rejected_connections"), ("prometheus", "app_error_ratio"),
            ("kubernetes", "top_offender_share"), ("kubernetes", "retry_log_lines")} <= signals(result)
    # Breached evidence comes first.
    flags = [i["breached"] for i in result["evidence"]]
    assert flags == sorted(flags, reverse=True)


def test_saturated_redis_refusing_us_is_critical_from_that_alone() -> None:
    result = v.triage_verdict(redis_refused(), failed("cannot reach Prometheus"), failed("API down"))
    assert result["storm"] is True
    assert result["severity"] == "critical"
    assert result["sources_answered"] == ["redis"]
    assert [d["source"] for d in result["degraded_sources"]] == ["redis", "prometheus", "kubernetes"]
    assert "max number of clients reached" in result["degraded_sources"][0]["reason"]
    assert ("redis", "connection_refused") in signals(result)


def test_saturated_redis_answers_from_prometheus_history_and_the_cluster() -> None:
    history = prom(redis_up=one(0), utilization=one(0.998), connected_clients=one(998), maxclients=one(1000),
                   rejected_connections=one(450),
                   app_error_ratio=vector((svc("payments", "payments-worker"), 0.4)),
                   client_connections=vector((svc("payments", "payments-worker"), 700),
                                             (svc("trading", "trading-api"), 200),
                                             (svc("wallet", "wallet-service"), 60)))
    # Redis could not be read, so the cluster ranks workloads with no connection counts of its own.
    cluster = kube(workload("trading", "trading-api", 0, 0.0, hpa(3, 3, 48)),
                   workload("payments", "payments-worker", 0, 0.0, pods=80,
                            hpa={"kind": "ScaledObject", "name": "payments-worker", "current": 80, "desired": 80,
                                 "min": 2, "max": 80, "paused": False}),
                   workload("wallet", "wallet-service", 0, 0.0))
    result = v.triage_verdict(redis_refused(), history, cluster)
    assert result["severity"] == "critical"
    assert result["bottleneck_confirmed"]["confirmed"] is True
    top = result["offenders"][0]
    assert (top["name"], top["connections"], top["connections_from"]) == ("payments-worker", 700, "prometheus")
    assert top["connection_share"] == round(700 / 960, 4)
    assert {("prometheus", "redis_up"), ("prometheus", "last_utilization"), ("prometheus", "rejected_connections"),
            ("redis", "connection_refused")} <= signals(result)
    assert rungs(result) == ["redis_capacity", "offender_scale_down", "hpa_pause"]
    assert "at max" in {r["rung"]: r["reason"] for r in result["recommended_rungs"]}["hpa_pause"]
    assert [d["source"] for d in result["degraded_sources"]] == ["redis"]


def test_prometheus_down_answers_from_redis_and_the_cluster() -> None:
    result = v.triage_verdict(
        redis_ok(connected=990, rejected_per_sec=12.0, sources=[{"ip": "127.20.3.1", "connections": 500}]),
        failed("cannot reach Prometheus at http://127.0.0.1:9 (Connection refused)"),
        kube(workload("wallet", "wallet-service", 900, 0.9, signatures={"too_many_connections": 40}),
             workload("trading", "trading-api", 90, 0.09)))
    assert result["storm"] is True and result["severity"] == "critical"
    assert result["bottleneck_confirmed"]["confirmed"] is True
    assert result["degraded_sources"] == [
        {"source": "prometheus", "reason": "cannot reach Prometheus at http://127.0.0.1:9 (Connection refused)"}]
    assert result["offenders"][0]["name"] == "wallet-service"
    assert "offender_scale_down" in rungs(result)
    # Without Prometheus there is no request-rate evidence, so no rate limit is recommended.
    assert "ingress_rate_limit" not in rungs(result)
    assert "prometheus" in result["summary"]


def test_kubernetes_down_ranks_offenders_by_redis_client_name() -> None:
    sources = [{"ip": "127.20.2.1", "connections": 300, "names": ["payments-api"]},
               {"ip": "127.20.2.2", "connections": 290, "names": ["payments-api"]},
               {"ip": "127.20.1.1", "connections": 100, "names": ["trading-api"]},
               {"ip": "127.0.0.1", "connections": 3, "names": []}]
    result = v.triage_verdict(redis_ok(connected=693, maxclients=700, sources=sources), MARKET_PROM,
                              failed("the Kubernetes API failed (500) on list pods (all) (v1)"))
    assert result["storm"] is True
    assert [d["source"] for d in result["degraded_sources"]] == ["kubernetes"]
    assert [(o["name"], o["connections"], o["connections_from"]) for o in result["offenders"][:3]] == [
        ("payments-api", 590, "client_name"), ("trading-api", 100, "client_name"), ("127.0.0.1", 3, "client_name")]
    assert "offender_scale_down" in rungs(result)
    # No cluster: nothing is known about autoscalers.
    assert "hpa_pause" not in rungs(result)


def test_no_source_answering_leaves_no_verdict_to_give() -> None:
    result = v.triage_verdict(
        {"reachable": False, "saturated": False, "error": "Connection refused", "top_sources": []},
        failed("cannot reach Prometheus"), None)
    assert result["sources_answered"] == []
    assert result["storm"] is False
    assert [d["source"] for d in result["degraded_sources"]] == ["redis", "prometheus", "kubernetes"]
    assert result["bottleneck_confirmed"]["confidence"] == "low"


def test_redis_down_is_not_a_storm() -> None:
    down = {"reachable": False, "saturated": False, "error": "Error 111 connecting: Connection refused",
            "top_sources": []}
    result = v.triage_verdict(down, prom(redis_up=one(0), utilization=one(0.1)), QUIET_KUBE)
    assert result["storm"] is False
    assert ("prometheus", "redis_up") in signals(result)
    assert "Connection refused" in result["degraded_sources"][0]["reason"]


def test_skipped_prometheus_is_reported_as_not_configured() -> None:
    result = v.triage_verdict(redis_ok(), {"skipped": True, "changed": False}, QUIET_KUBE)
    assert result["degraded_sources"] == [{"source": "prometheus", "reason": "not configured (skipped)"}]


def test_pressure_without_application_impact_is_a_warning_not_a_confirmed_bottleneck() -> None:
    result = v.triage_verdict(redis_ok(connected=8500, maxclients=10000), QUIET_PROM, QUIET_KUBE)
    assert result["storm"] is True
    assert result["severity"] == "warning"
    assert result["bottleneck_confirmed"]["confirmed"] is False
    assert "no errors or latency" in result["bottleneck_confirmed"]["why"]


def test_application_impact_without_redis_pressure_points_elsewhere() -> None:
    sick = prom(redis_up=one(1), utilization=one(0.1), app_error_ratio=vector((svc("trading", "trading-api"), 0.5)))
    result = v.triage_verdict(redis_ok(), sick, QUIET_KUBE)
    assert result["storm"] is False
    assert result["recommended_rungs"] == []
    assert result["bottleneck_confirmed"]["confirmed"] is False
    assert "database" in result["bottleneck_confirmed"]["why"]


@pytest.mark.parametrize(
    ("signatures", "expected"),
    [
        ({"redis_timeout": 50, "too_many_connections": 10}, True),   # timeouts dominate
        ({"redis_timeout": 10, "too_many_connections": 50}, False),  # refusals dominate
        ({"redis_timeout": 2}, False),                               # under the threshold
    ],
)
def test_circuit_breaker_when_timeouts_dominate(signatures: dict[str, int], expected: bool) -> None:
    cluster = kube(workload("payments", "payments-api", 700, 0.7, signatures=signatures),
                   workload("trading", "trading-api", 300, 0.3))
    result = v.triage_verdict(redis_ok(connected=1000, maxclients=1000), None, cluster)
    assert ("circuit_breaker" in rungs(result)) is expected


def test_circuit_breaker_when_apps_are_slow_because_redis_is_slow() -> None:
    slow = prom(redis_up=one(1), utilization=one(0.97), redis_command_latency_seconds=one(0.02),
                app_latency_p99=vector((svc("payments", "payments-api"), 2.5)))
    result = v.triage_verdict(None, slow, None)
    assert "circuit_breaker" in rungs(result)
    assert "2.5s" in {r["rung"]: r["reason"] for r in result["recommended_rungs"]}["circuit_breaker"]


def test_client_retries_from_a_high_new_connection_rate() -> None:
    result = v.triage_verdict(redis_ok(connected=900, new_per_sec=800.0), None, None)
    assert "client_retries" in rungs(result)
    assert "800" in result["recommended_rungs"][0]["reason"]


def test_even_growth_asks_for_redis_capacity_not_a_scale_down() -> None:
    cluster = kube(workload("trading", "trading-api", 3400, 0.34), workload("payments", "payments-api", 3300, 0.33),
                   workload("wallet", "wallet-service", 3300, 0.33))
    result = v.triage_verdict(redis_ok(connected=10000, maxclients=10000), None, cluster)
    assert rungs(result) == ["redis_capacity"]
    assert "spread over 3 workloads" in result["recommended_rungs"][0]["reason"]


@pytest.mark.parametrize(
    ("maxclients", "fd_limit", "expected"),
    [
        (1000, None, "below Redis' default 10000"),
        (4000, 65536, "low against the open-files limit 65536"),
        (60000, 65536, None),
        (10000, None, None),
    ],
)
def test_redis_capacity_when_maxclients_leaves_room(maxclients: int, fd_limit: int | None,
                                                   expected: str | None) -> None:
    cluster = kube(workload("wallet", "wallet-service", maxclients - 10, 0.99))
    result = v.triage_verdict(redis_ok(connected=maxclients, maxclients=maxclients), None, cluster,
                              redis_fd_limit=fd_limit)
    reasons = {r["rung"]: r["reason"] for r in result["recommended_rungs"]}
    if expected is None:
        assert "redis_capacity" not in reasons
    else:
        assert expected in reasons["redis_capacity"]


@pytest.mark.parametrize(
    ("autoscaler", "state", "recommended"),
    [
        (hpa(8, 16, 48), "scaling_up", True),
        (hpa(48, 48, 48), "at_max", True),
        (hpa(8, 8, 48), "scaled_out", True),
        (hpa(3, 3, 48), "steady", False),
        (hpa(8, 16, 48, paused=True), "paused", False),
        (None, "none", False),
    ],
)
def test_hpa_pause_follows_the_top_offenders_autoscaler(autoscaler: dict[str, Any] | None, state: str,
                                                        recommended: bool) -> None:
    cluster = kube(workload("trading", "trading-api", 900, 0.9, autoscaler))
    result = v.triage_verdict(redis_ok(connected=1000, maxclients=1000), None, cluster)
    assert result["offenders"][0]["hpa_state"] == state
    assert ("hpa_pause" in rungs(result)) is recommended


@pytest.mark.parametrize(("pods", "state"), [(10, "scaling_up"), (80, "at_max"), (2, "steady")])
def test_a_scaled_object_without_status_is_judged_by_its_pods(pods: int, state: str) -> None:
    keda = {"kind": "ScaledObject", "name": "payments-worker", "current": None, "desired": None, "min": 2,
            "max": 80, "paused": False}
    cluster = kube(workload("payments", "payments-worker", 900, 0.9, keda, pods=pods))
    result = v.triage_verdict(redis_ok(connected=1000, maxclients=1000), None, cluster)
    assert result["offenders"][0]["hpa_state"] == state
    assert ("hpa_pause" in rungs(result)) is (state != "steady")


def test_client_retries_counts_the_retry_lines_of_every_offender() -> None:
    cluster = kube(workload("trading", "trading-api", 700, 0.7, signatures={"retry": 1}),
                   workload("payments", "payments-api", 300, 0.3, signatures={"retry": 40}))
    result = v.triage_verdict(redis_ok(connected=1000, maxclients=1000), None, cluster)
    reason = {r["rung"]: r["reason"] for r in result["recommended_rungs"]}["client_retries"]
    assert "41 retry lines (most: payments/payments-api, 40)" in reason


def test_rate_limit_needs_an_ingress_in_front_of_the_top_offender() -> None:
    growth = prom(utilization=one(1.0), app_request_growth=vector((svc("payments", "payments-worker"), 9.0)))
    cluster = kube(workload("payments", "payments-worker", 900, 0.9))
    assert "ingress_rate_limit" not in rungs(v.triage_verdict(None, growth, cluster, ingresses=INGRESSES))
    behind = [{"namespace": "payments", "name": "worker-in", "provider": "nginx", "workload": "payments-worker"}]
    assert "ingress_rate_limit" in rungs(v.triage_verdict(None, growth, cluster, ingresses=behind))


def test_partial_failures_are_listed_but_the_source_still_answers() -> None:
    answers = dict(QUIET_PROM["answers"], app_latency_p95={
        "query": "bad(", "result_type": None, "series": [], "value": None, "ok": None,
        "error": "1:5: parse error: unclosed left parenthesis", "errorType": "bad_data"})
    result = v.triage_verdict(redis_ok(), prom(**answers), kube(*QUIET_KUBE["workloads"], degraded=["logs of x: 403"]))
    assert result["sources_answered"] == ["redis", "prometheus", "kubernetes"]
    assert {(d["source"], d.get("partial")) for d in result["degraded_sources"]} == {
        ("prometheus", True), ("kubernetes", True)}
    assert any("unclosed left parenthesis" in d["reason"] for d in result["degraded_sources"])


def test_optional_db_and_queue_checks_become_evidence() -> None:
    answers = dict(MARKET_PROM["answers"], db_connections=one(450), queue_backlog=one(20))
    result = v.triage_verdict(MARKET_REDIS, prom(**answers), MARKET_KUBE)
    found = {i["signal"]: i for i in result["evidence"]}
    assert (found["db_connections"]["observed"], found["db_connections"]["breached"]) == (450, True)
    assert (found["queue_backlog"]["observed"], found["queue_backlog"]["breached"]) == (20, False)


def test_thresholds_change_the_verdict() -> None:
    assert v.triage_verdict(redis_ok(connected=700), None, None)["storm"] is False
    assert v.triage_verdict(redis_ok(connected=700), None, None, thresholds={"utilization_warning": 0.6})["storm"]


@pytest.mark.parametrize(
    ("thresholds", "message"),
    [
        ({"utilisation": 0.8}, "unknown threshold 'utilisation'"),
        ({"utilization_warning": 1.5}, "utilization_warning must be between 0 and 1"),
        ({"offender_share": -0.1}, "offender_share must be between 0 and 1"),
        ({"new_connections_per_sec": -1}, "new_connections_per_sec must be 0 or more"),
        ({"app_error_ratio": "lots"}, "app_error_ratio must be a number"),
        ({"utilization_warning": 0.9, "utilization_critical": 0.85}, "is above utilization_critical"),
    ],
)
def test_bad_thresholds_are_refused(thresholds: dict[str, Any], message: str) -> None:
    with pytest.raises(StormError, match=message):
        v.triage_verdict(redis_ok(), None, None, thresholds=thresholds)


def test_summary_lines_show_verdict_top_three_and_evidence() -> None:
    result = v.triage_verdict(MARKET_REDIS, MARKET_PROM, MARKET_KUBE, ingresses=INGRESSES)
    lines = summary_lines(result)
    assert lines[0].startswith("Verdict: critical connection storm, top offender trading/trading-api (pool exhaustion, "
                               "82% of the connections held")
    assert any(line.startswith("Culprit (pool exhaustion, ranked by connections held from redis_held)")
               for line in lines)
    offenders = [line for line in lines if line.startswith("  ") and ". " in line[:6]]
    assert [line.split(":")[0].strip() for line in offenders] == [
        "1. trading/trading-api", "2. payments/payments-api", "3. wallet/wallet-service"]
    assert any(line.startswith("  [prometheus] rejected_connections = 900") for line in lines)
    assert any(line.startswith("Recommended hpa_pause:") for line in lines)


def test_connections_outside_the_watched_namespaces_are_shown_with_their_counts_and_never_ranked() -> None:
    outside = ("outside the watched namespaces (payments, trading, wallet): no live pod there has this address "
               "(a pod of another namespace, a node, or a client outside the cluster)")
    cluster = dict(MARKET_KUBE, unattributed_connections=[
        {"ip": "10.9.0.4", "connections": 70, "opened": None, "names": ["batch-export"], "reason": outside},
        {"ip": "10.9.0.5", "connections": 5, "opened": None, "names": [], "reason": outside}])
    result = v.triage_verdict(MARKET_REDIS, MARKET_PROM, cluster, ingresses=INGRESSES)
    assert result["unattributed"] == {"connections": 75, "addresses": [
        {"ip": "10.9.0.4", "connections": 70, "names": ["batch-export"], "reason": outside},
        {"ip": "10.9.0.5", "connections": 5, "names": [], "reason": outside}]}
    assert [o["name"] for o in result["offenders"]] == ["trading-api", "payments-api", "wallet-service"]
    assert "batch-export" not in json.dumps(result["offenders"])
    lines = v.summary_lines(result)
    start = lines.index("Not attributed to any workload: 75 connections from 2 addresses")
    assert lines[start + 1] == "  10.9.0.4: 70 connections, client names batch-export; " + outside
    assert lines[start + 2] == "  10.9.0.5: 5 connections; " + outside
    # every address attributed, or the cluster not read: nothing to say
    assert v.triage_verdict(MARKET_REDIS, MARKET_PROM, MARKET_KUBE)["unattributed"] == {
        "connections": 0, "addresses": []}
    unread = v.triage_verdict(MARKET_REDIS, MARKET_PROM, failed("API down"))
    assert unread["unattributed"]["addresses"] == [] and not any(
        line.startswith("Not attributed") for line in v.summary_lines(unread))


def test_no_culprit_is_named_when_addresses_outside_the_watched_namespaces_hold_more_than_the_leader() -> None:
    cluster = dict(MARKET_KUBE, unattributed_connections=[
        {"ip": "10.9.0.4", "connections": 900, "opened": None, "names": ["batch-export"],
         "reason": "outside the watched namespaces (payments, trading, wallet): no live pod there has this address"}])
    result = v.triage_verdict(MARKET_REDIS, MARKET_PROM, cluster, ingresses=INGRESSES)
    named = result["culprit"]
    assert named["certain"] is False and named["workloads"] == []
    assert named["why"].startswith("addresses no workload of the namespaces read has account for more connections "
                                   "held (900) than the leading workload trading/trading-api (820)")
    assert "offender_scale_down" not in rungs(result) and "hpa_pause" not in rungs(result)
    assert "culprit uncertain" in result["summary"]
    # fewer outside than the leader holds: the leader stays the culprit
    fewer = dict(MARKET_KUBE, unattributed_connections=[dict(cluster["unattributed_connections"][0], connections=800)])
    assert v.triage_verdict(MARKET_REDIS, MARKET_PROM, fewer)["culprit"]["workloads"] == ["trading/trading-api"]


def test_run_verdict_writes_the_report_for_its_owner_only(tmp_path: Any) -> None:
    target = tmp_path / "triage.json"
    result = v.run_verdict({"redis": MARKET_REDIS, "prometheus": MARKET_PROM, "kubernetes": MARKET_KUBE,
                            "thresholds": {}, "ingresses": INGRESSES, "redis_fd_limit": None, "top": 2,
                            "output_file": str(target)})
    written = json.loads(target.read_text())
    assert written == result["storm_triage"]
    assert len(written["offenders"]) == 2
    assert stat.S_IMODE(os.stat(target).st_mode) == 0o600
    assert os.listdir(tmp_path) == ["triage.json"]


def test_run_verdict_says_when_the_report_cannot_be_written(tmp_path: Any) -> None:
    with pytest.raises(StormError, match="cannot write output_file"):
        v.run_verdict({"output_file": str(tmp_path / "missing" / "triage.json")})


def test_storm_verdict_module_main(capsys: Any) -> None:
    from ansible.module_utils.testing import patch_module_args
    from ansible_collections.fintech.redis_storm.plugins.modules import storm_verdict

    with patch_module_args({"redis": redis_refused(), "prometheus": failed("down")}), pytest.raises(SystemExit):
        storm_verdict.main()
    out = json.loads(capsys.readouterr().out)
    assert out["changed"] is False
    assert out["storm_triage"]["severity"] == "critical"
    assert out["summary_lines"][0].startswith("Verdict: critical connection storm")

    with patch_module_args({"thresholds": {"offender_share": 2}}), pytest.raises(SystemExit):
        storm_verdict.main()
    out = json.loads(capsys.readouterr().out)
    assert out["failed"] is True
    assert "offender_share must be between 0 and 1" in out["msg"]
