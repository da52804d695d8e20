"""The pure parts of ingress_rate_limit, mesh_circuit_breaker and redis_runtime_config."""

from __future__ import annotations

from typing import Any, Dict

import pytest
from ansible_collections.fintech.redis_storm.plugins.module_utils.errors import StormError
from ansible_collections.fintech.redis_storm.plugins.module_utils.mesh import wanted_fields
from ansible_collections.fintech.redis_storm.plugins.module_utils.rate_limit import (
    TRAEFIK_ROUTER_MIDDLEWARES,
    build_plans,
    traefik_rate,
    validate_cidrs,
)
from ansible_collections.fintech.redis_storm.plugins.module_utils.redis_config import (
    argument_spec,
    normalize,
    renamed_kube_options,
    set_error,
)


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [("maxclients", 20000, "20000"), ("maxclients", "20000", "20000"), ("timeout", 0, "0"),
     ("tcp-keepalive", " 60 ", "60"), ("maxmemory-clients", "64mb", str(64 * 1024 * 1024)),
     ("maxmemory-clients", "1GB", str(1024 ** 3)), ("maxmemory-clients", "2k", "2000"),
     ("maxmemory-clients", 1048576, "1048576"), ("maxmemory-clients", "5%", "5%"),
     ("maxmemory-clients", "005%", "5%")],
)
def test_values_compare_as_config_get_shows_them(name: str, value: Any, expected: str) -> None:
    assert normalize(name, value) == expected


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [("maxclients", 0, "at least 1"), ("maxclients", True, "must be a number"), ("timeout", "1.5", "whole number"),
     ("maxmemory-clients", "101%", "0% to 100%"), ("maxmemory-clients", "1tb", "give bytes"),
     ("appendonly", "yes", "cannot be changed by this module")],
)
def test_bad_values_are_refused(name: str, value: Any, message: str) -> None:
    with pytest.raises(StormError, match=message):
        normalize(name, value)


def test_fd_limit_refusal_names_the_highest_value_redis_can_take() -> None:
    error = set_error(Exception("CONFIG SET failed (possibly related to argument 'maxclients') - The operating "
                                "system is not able to handle the specified number of clients, try with 992"),
                      "10.0.0.5:6379", "maxclients", "100000")
    assert "at most 992 clients" in error.message and error.details == {"max_clients_allowed": 992}


def test_kube_options_are_renamed_where_they_collide_with_redis_ones() -> None:
    spec = argument_spec()
    assert {"host", "validate_certs", "kube_host", "kube_validate_certs", "api_key", "kubeconfig"} <= set(spec)
    assert spec["host"]["default"] == "127.0.0.1" and spec["api_key"]["no_log"] and spec["password"]["no_log"]
    options = renamed_kube_options({"host": "redis", "kube_host": "https://api:6443", "validate_certs": True,
                                    "kube_validate_certs": False, "api_key": "t"})
    assert (options["host"], options["validate_certs"], options["api_key"]) == ("https://api:6443", False, "t")


def test_whitelist_is_normalized_and_validated() -> None:
    assert validate_cidrs(["10.0.0.0/8", "192.168.1.7", "10.1.2.3/16", "fd00::/8"]) == (
        "10.0.0.0/8,192.168.1.7/32,10.1.0.0/16,fd00::/8")
    with pytest.raises(StormError, match="'nope' is not an IP address or CIDR"):
        validate_cidrs(["nope"])


@pytest.mark.parametrize(
    ("options", "expected"),
    [({"rps": 100}, {"average": 100, "period": "1s", "burst": 100}),
     ({"rpm": 600, "burst": 50}, {"average": 600, "period": "1m", "burst": 50}),
     ({"rps": 10, "burst_multiplier": 3}, {"average": 10, "period": "1s", "burst": 30})],
)
def test_traefik_rate(options: Dict[str, Any], expected: Dict[str, Any]) -> None:
    assert traefik_rate(options) == expected


@pytest.mark.parametrize(
    ("current", "expected"),
    [(None, "ns-redis-storm-ratelimit-web@kubernetescrd"),
     ("ns-auth@kubernetescrd", "ns-auth@kubernetescrd,ns-redis-storm-ratelimit-web@kubernetescrd"),
     ("ns-auth@kubernetescrd, ns-redis-storm-ratelimit-web@kubernetescrd",
      "ns-auth@kubernetescrd,ns-redis-storm-ratelimit-web@kubernetescrd")],
    ids=["none", "appended", "already-there"],
)
def test_router_annotation_keeps_existing_middlewares(current: Any, expected: str) -> None:
    plans = build_plans(None, {"namespace": "ns", "name": "web", "provider": "traefik", "rps": 5, "state": "applied"})
    assert [p.ref.kind for p in plans] == ["Middleware", "Ingress"]
    live = {"metadata": {"annotations": {TRAEFIK_ROUTER_MIDDLEWARES: current}}} if current else {}
    assert plans[1].desired(live) == {("metadata", "annotations", TRAEFIK_ROUTER_MIDDLEWARES): expected}


def test_traefik_restore_detaches_before_deleting() -> None:
    plans = build_plans(None, {"namespace": "ns", "name": "web", "provider": "traefik", "state": "restored"})
    assert [p.ref.kind for p in plans] == ["Ingress", "Middleware"]


def test_mesh_owns_only_the_keys_given() -> None:
    assert wanted_fields({"max_connections": 20, "interval": "10s", "max_ejection_percent": 0}) == {
        ("spec", "trafficPolicy", "connectionPool", "tcp", "maxConnections"): 20,
        ("spec", "trafficPolicy", "outlierDetection", "interval"): "10s",
        ("spec", "trafficPolicy", "outlierDetection", "maxEjectionPercent"): 0}
    with pytest.raises(StormError, match="not a duration"):
        wanted_fields({"base_ejection_time": "30"})
