"""The culprit by the storm's shape: each case is a storm an on-call engineer meets, seen through Redis' numbers
(connections held, opened per second across the sampling window, held by pods an autoscaler just started)."""

from __future__ import annotations

from typing import Any

import pytest
from ansible_collections.fintech.redis_storm.plugins.module_utils import culprit as c
from ansible_collections.fintech.redis_storm.plugins.module_utils import verdict as v
from ansible_collections.fintech.redis_storm.plugins.module_utils.thresholds import merge_thresholds
from ansible_collections.fintech.redis_storm.plugins.module_utils.verdict_report import summary_lines

LIMITS = merge_thresholds(None)
SCALING = {"kind": "HorizontalPodAutoscaler", "name": "x", "current": 20, "desired": 30, "min": 3, "max": 48,
           "paused": False}


def wl(name: str, held: int, opened_per_sec: float | None = 0.0, young: int = 0, hpa: dict[str, Any] | None = None,
       namespace: str = "ns", signatures: dict[str, int] | None = None) -> dict[str, Any]:
    """A workload as storm_offenders_info returns it."""
    return {"namespace": namespace, "kind": "Deployment", "name": name, "connections": held,
            "connection_share": 0.0, "opened": None if opened_per_sec is None else round(opened_per_sec / 4),
            "opened_per_sec": opened_per_sec, "young_pods": 1 if young else 0, "young_pod_connections": young,
            "pods": 3, "pod_ips": [], "client_names": [name], "restarts": 0, "crashloop": False, "oomkilled": False,
            "hpa": hpa, "cpu_millicores": 10.0, "log_signatures": signatures or {}, "logs_read": []}


def views(*workloads: dict[str, Any], emptied: bool = False, settled: bool = True, opened: int = 400,
          peaks: dict[str, float] | None = None) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    total = sum(w["connections"] for w in workloads)
    for w in workloads:
        w["connection_share"] = round(w["connections"] / total, 4) if total else 0.0
    redis = {"reachable": True, "saturated": False, "error": None,
             "clients": {"connected": 990, "max": 1000, "utilization": 0.99, "blocked": 0},
             "rates": {"new_connections_per_sec": sum(w["opened_per_sec"] or 0.0 for w in workloads),
                       "rejected_per_sec": 20.0},
             "latency_ms": {"p50": 0.2, "p99": 1.0, "max": 1.0}, "top_sources": [],
             "churn": {"window_seconds": 4.0, "reads": 5 if emptied else 2, "emptied": emptied,
                       "wave_settled": settled if emptied else None, "waited_seconds": 3.0 if emptied else 0.0,
                       "opened": opened, "opened_per_sec": opened / 4.0}}
    series = [{"metric": {"namespace": "ns", "service": name}, "time": 0, "value": value}
              for name, value in (peaks or {}).items()]
    prometheus = {"answers": {"client_connections_peak": {"series": series}}} if peaks else {"answers": {}}
    kube = {"workloads": list(workloads), "unattributed_connections": [], "total_connections": total, "degraded": []}
    return redis, prometheus, kube


def named(result: dict[str, Any]) -> list[str]:
    return [o["name"] for o in result["offenders"]]


def rungs_for(result: dict[str, Any]) -> dict[str, str]:
    return {r["rung"]: r.get("workload", "") for r in result["recommended_rungs"]}


CASES = [
    pytest.param(
        [wl("wallet", 800, 1.0), wl("payments", 100, 0.5), wl("trading", 90, 0.0)], False,
        c.POOL_EXHAUSTION, ["wallet"], "redis_held", id="pool-exhaustion-ranks-the-holder"),
    pytest.param(
        [wl("trading", 75, 1.0), wl("payments", 360, 90.0), wl("worker", 400, 0.0)], True,
        c.RECONNECT_STORM, ["payments"], "redis_churn", id="after-the-wave-settles-what-still-reconnects"),
    pytest.param(
        [wl("trading", 600, 0.5), wl("wallet", 20, 150.0), wl("payments", 40, 2.0)], False,
        c.RECONNECT_STORM, ["wallet"], "redis_churn", id="small-pool-high-churn-beats-a-large-idle-pool"),
    pytest.param(
        [wl("worker", 700, 2.0, young=650, hpa=SCALING), wl("trading", 200, 1.0), wl("wallet", 80, 0.0)], False,
        c.SCALE_OUT_BURST, ["worker"], "redis_burst", id="burst-ranks-the-new-pods"),
    pytest.param(
        [wl("api", 500, 5.0, young=480, hpa=SCALING), wl("wallet", 200, 0.0), wl("trading", 50, 120.0)], False,
        c.MIXED, ["api", "trading"], "redis_churn_burst", id="mixed-ranks-both-measures"),
    pytest.param(
        [wl("payments", 60, 130.0), wl("wallet", 8, 70.0), wl("trading", 500, 2.0)], False,
        c.RECONNECT_STORM, ["payments", "wallet"], "redis_churn", id="two-storming-at-once-named-in-order"),
    pytest.param(
        [wl("payments", 60, 250.0), wl("wallet", 8, 40.0), wl("trading", 500, 2.0), wl("worker", 20, 5.0)], False,
        c.RECONNECT_STORM, ["payments", "wallet"], "redis_churn", id="a-second-storm-below-the-share-is-named-too"),
    pytest.param(
        [wl("wallet", 500, 0.0, young=480), wl("trading", 150, 0.0)], False,
        c.POOL_EXHAUSTION, ["wallet"], "redis_held", id="a-rollout-is-not-a-burst-without-an-autoscaler"),
]


@pytest.mark.parametrize(("workloads", "emptied", "shape", "culprits", "source"), CASES)
def test_the_shape_picks_the_measure_and_the_culprits(workloads: list[dict[str, Any]], emptied: bool, shape: str,
                                                      culprits: list[str], source: str) -> None:
    result = v.triage_verdict(*views(*workloads, emptied=emptied))
    record = result["culprit"]
    assert record["shape"] == shape, record
    assert record["certain"] is True, record
    assert record["workloads"] == ["ns/%s" % name for name in culprits], (record, result["offenders"])
    assert named(result)[: len(culprits)] == culprits
    assert {o["connections_from"] for o in result["offenders"]} == {source}
    assert record["connections_from"] == source
    assert 0 < record["share"] <= 1 and 0 <= record["margin"] <= record["share"]
    assert record["evidence"], record
    assert "top offender ns/%s" % culprits[0] in result["summary"]


@pytest.mark.parametrize(("workloads", "emptied", "supported", "not_supported"), [
    pytest.param([wl("trading", 600, 0.5, hpa=SCALING), wl("wallet", 20, 150.0), wl("payments", 40, 2.0)], False,
                 {"client_retries": "ns/wallet", "circuit_breaker": "ns/wallet"},
                 ("offender_scale_down", "hpa_pause"), id="reconnect-storm-retries-and-breaker-on-the-churner"),
    pytest.param([wl("worker", 700, 2.0, young=650, hpa=SCALING), wl("trading", 200, 1.0)], False,
                 {"hpa_pause": "ns/worker", "offender_scale_down": "ns/worker"}, ("client_retries", "circuit_breaker"),
                 id="burst-pauses-the-autoscaler-of-the-new-pods"),
    pytest.param([wl("wallet", 800, 1.0), wl("payments", 100, 0.5)], False,
                 {"offender_scale_down": "ns/wallet"}, ("client_retries", "circuit_breaker", "hpa_pause"),
                 id="pool-exhaustion-scales-the-holder-down"),
])
def test_rungs_follow_the_shape(workloads: list[dict[str, Any]], emptied: bool, supported: dict[str, str],
                                not_supported: tuple[str, ...]) -> None:
    result = v.triage_verdict(*views(*workloads, emptied=emptied))
    found = rungs_for(result)
    for rung, target in supported.items():
        assert found.get(rung) == target, result["recommended_rungs"]
    assert not set(not_supported) & set(found), result["recommended_rungs"]


def test_the_apps_peak_gauges_never_rank_while_redis_answers() -> None:
    # Just after a blip: trading-api's wide idle pool peaked at 600 in its own gauge; once the wave settled,
    # Redis sees payments-api reconnect.
    workloads = [wl("trading", 75, 1.0), wl("payments", 360, 90.0)]
    result = v.triage_verdict(*views(*workloads, emptied=True, peaks={"trading": 600.0, "payments": 200.0}))
    top = result["offenders"][0]
    assert (top["name"], top["connections_from"]) == ("payments", "redis_churn")
    assert top["connections"] == 360 and top["app_connections_peak"] == 200.0
    assert result["offenders"][1]["app_connections_peak"] == 600.0
    assert "apps' own pool gauge" not in " ".join(summary_lines(result))  # no now-gauge asked for: none shown


def test_just_emptied_with_the_wave_still_rising_says_the_culprit_is_uncertain() -> None:
    # the wave's reconnects in the window look like churn, and the idle pool refilling looks like the storm
    workloads = [wl("trading", 300, 250.0), wl("payments", 50, 40.0)]
    result = v.triage_verdict(*views(*workloads, emptied=True, settled=False))
    record = result["culprit"]
    assert record["certain"] is False and record["workloads"] == []
    assert "Redis was just emptied (a blip, a CLIENT KILL or a restart) and its reconnect wave had not settled after " \
           "3.0 s of reads" in record["why"]
    assert "culprit uncertain: Redis was just emptied" in result["summary"]
    assert "top offender" not in result["summary"]
    acting = {"client_retries", "circuit_breaker", "offender_scale_down", "hpa_pause", "ingress_rate_limit"}
    assert not acting & set(rungs_for(result)), result["recommended_rungs"]


@pytest.mark.parametrize(("shares", "expected_margin"), [
    ((0.7, 0.2, 0.1), 0.5),
    ((0.45, 0.4, 0.15), 0.05),
])
def test_the_record_says_how_sure(shares: tuple[float, ...], expected_margin: float) -> None:
    workloads = [wl("w%d" % i, 10, share * 200) for i, share in enumerate(shares)]
    result = v.triage_verdict(*views(*workloads))
    record = result["culprit"]
    assert record["share"] == pytest.approx(shares[0], abs=1e-3)
    assert record["margin"] == pytest.approx(expected_margin, abs=1e-3)
    assert "%s points ahead" % ("%.1f" % (expected_margin * 100)).rstrip("0").rstrip(".") in record["why"]


def test_without_churn_numbers_the_holder_ranks() -> None:
    # sample_seconds 0: one CLIENT LIST read, no opened counts
    workloads = [wl("wallet", 700, None), wl("trading", 300, None)]
    result = v.triage_verdict(*views(*workloads))
    assert result["culprit"]["shape"] == c.POOL_EXHAUSTION and named(result)[0] == "wallet"


def test_a_pool_refilling_after_a_blip_is_not_a_second_storm() -> None:
    # the window after the wave still sees the worker's pool come back: as many opened as it holds
    workloads = [wl("trading", 60, 250.0), wl("worker", 24, 30.0)]
    workloads[1]["opened"] = 24
    result = v.triage_verdict(*views(*workloads, emptied=True))
    assert result["culprit"]["workloads"] == ["ns/trading"]


def test_new_pods_in_a_redis_far_from_full_are_no_burst() -> None:
    # a blip's reconnect CPU scaled trading-api out; Redis is at a fifth of maxclients and wallet churns
    workloads = [wl("trading", 150, 1.0, young=100, hpa=SCALING), wl("wallet", 8, 160.0)]
    redis, prometheus, kube = views(*workloads)
    redis["clients"]["utilization"] = 0.2
    result = v.triage_verdict(redis, prometheus, kube)
    assert result["culprit"]["shape"] == c.RECONNECT_STORM and result["culprit"]["workloads"] == ["ns/wallet"]


def test_a_mixed_storm_names_beside_its_leader_only_who_churns() -> None:
    workloads = [wl("payments", 500, 150.0, young=200, hpa=SCALING), wl("trading", 400, 2.0, young=400, hpa=SCALING)]
    result = v.triage_verdict(*views(*workloads))
    assert result["culprit"]["shape"] == c.MIXED
    assert result["culprit"]["workloads"] == ["ns/payments"], result["culprit"]


def test_a_redis_emptied_with_no_workload_back_yet_says_so() -> None:
    redis, prometheus, kube = views(emptied=True, settled=True)
    result = v.triage_verdict(redis, prometheus, kube)
    assert result["culprit"]["certain"] is False
    assert result["culprit"]["why"].startswith("Redis was just emptied")
    assert "culprit uncertain" in result["summary"]
