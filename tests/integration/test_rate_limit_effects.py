"""A rate limit lowers the request rate the sandbox's fleet serves, and restore undoes it.

The fleet reads the cluster like a real ingress controller would (ingress-nginx annotations, Traefik
Middlewares attached through the router annotation), so this sees the effect a user would see.
"""

from __future__ import annotations

import json
import time
import urllib.request
from typing import Any, Dict

import pytest

from tests.helpers.modules import run_module

pytestmark = pytest.mark.integration

INCIDENT = "storm-effects-1"
SETTLE = 30.0  # the fleet re-reads the cluster every few seconds; rates are averaged over a few more


def fleet_workload(sandbox: Any, namespace: str, name: str) -> Dict[str, Any]:
    with urllib.request.urlopen(sandbox["fleet"]["url"] + "/status", timeout=10) as response:
        status = json.loads(response.read())
    return next(w for w in status["workloads"] if (w["namespace"], w["name"]) == (namespace, name))


def wait_for_workload(sandbox: Any, namespace: str, name: str, condition: Any, what: str) -> Dict[str, Any]:
    deadline = time.monotonic() + SETTLE
    while True:
        workload = fleet_workload(sandbox, namespace, name)
        if condition(workload):
            return workload
        if time.monotonic() > deadline:
            pytest.fail("timed out after %.0f s waiting for %s; fleet shows %s" % (SETTLE, what, workload))
        time.sleep(0.5)


def args(sandbox: Any, **extra: Any) -> Dict[str, Any]:
    return dict({"kubeconfig": sandbox.kubeconfig, "incident_id": INCIDENT,
                 "allowed_namespaces": ["trading", "payments", "wallet", "redis"]}, **extra)


def test_rate_limit_lowers_the_served_request_rate(calm_sandbox: Any) -> None:
    baseline = wait_for_workload(calm_sandbox, "trading", "trading-api", lambda w: w["rps_served"] >= 30,
                                 "trading-api to serve its normal traffic")
    limit = dict(namespace="trading", name="trading-api", provider="nginx", rps=10, burst_multiplier=1)
    applied = run_module("ingress_rate_limit", args(calm_sandbox, **limit))
    assert not applied.failed and applied["changed"], applied.msg
    limited = wait_for_workload(calm_sandbox, "trading", "trading-api",
                                lambda w: (w["ingress_limit"] or {}).get("rps") == 10 and w["rps_served"] <= 13,
                                "the ingress limit to cap served requests at about 10/s")
    assert limited["rps_ingress_rejected"] > 0 and limited["rps_served"] < baseline["rps_served"] / 2

    restored = run_module("ingress_rate_limit", args(calm_sandbox, state="restored", **limit))
    assert not restored.failed and restored["changed"], restored.msg
    wait_for_workload(calm_sandbox, "trading", "trading-api",
                      lambda w: w["ingress_limit"] is None and w["rps_served"] >= 30,
                      "trading-api to serve its normal traffic again")

    # the same through a Traefik RateLimit Middleware on another workload
    wait_for_workload(calm_sandbox, "payments", "payments-api", lambda w: w["rps_served"] >= 30,
                      "payments-api to serve its normal traffic")
    limit = dict(namespace="payments", name="payments-api", provider="traefik", rps=8, burst=8)
    applied = run_module("ingress_rate_limit", args(calm_sandbox, **limit))
    assert applied["middleware"] == "payments-redis-storm-ratelimit-payments-api@kubernetescrd"
    assert not applied.failed and applied["changed"], applied.msg
    wait_for_workload(calm_sandbox, "payments", "payments-api",
                      lambda w: (w["ingress_limit"] or {}).get("provider") == "traefik"
                      and w["rps_served"] <= 11 and w["rps_ingress_rejected"] > 0,
                      "the Traefik middleware to cap served requests at about 8/s")
    assert not run_module("ingress_rate_limit", args(calm_sandbox, state="restored", **limit)).failed
    wait_for_workload(calm_sandbox, "payments", "payments-api",
                      lambda w: w["ingress_limit"] is None and w["rps_served"] >= 30,
                      "payments-api to serve its normal traffic again")
