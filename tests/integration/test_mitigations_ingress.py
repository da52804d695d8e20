"""ingress_rate_limit against the Kubernetes API emulator: nginx annotations and a Traefik Middleware."""

from __future__ import annotations

from typing import Any, Dict

import pytest

from tests.integration.mitigation_common import (
    ENTRIES_KEY,
    INCIDENT_KEY,
    annotations,
    assert_second_apply_is_noop,
    check_then_apply,
    get,
    ledger_entries,
    object_writes,
    restore_twice,
    run,
    seed_ledger_namespace,
    without_bookkeeping,
)

pytestmark = pytest.mark.integration

MODULE = "ingress_rate_limit"
INCIDENT = "storm-20261126-0600"
INGRESS_PATH = "/apis/networking.k8s.io/v1/namespaces/trading/ingresses/trading-api"
MIDDLEWARE_PATH = "/apis/traefik.io/v1alpha1/namespaces/trading/middlewares/redis-storm-ratelimit-trading-api"
ROUTER = "traefik.ingress.kubernetes.io/router.middlewares"
NGINX = "nginx.ingress.kubernetes.io/"
ORIGINAL_ANNOTATIONS = {"kubernetes.io/description": "trading API", NGINX + "proxy-body-size": "8m",
                        NGINX + "limit-connections": "500"}


def ingress(extra_annotations: Dict[str, str]) -> Dict[str, Any]:
    return {"apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
            "metadata": {"namespace": "trading", "name": "trading-api",
                         "annotations": dict(ORIGINAL_ANNOTATIONS, **extra_annotations)},
            "spec": {"rules": [{"host": "trade.example.com", "http": {"paths": [{
                "path": "/", "pathType": "Prefix",
                "backend": {"service": {"name": "trading-api", "port": {"number": 80}}}}]}}]}}


@pytest.fixture
def cluster(kubeapi: Any) -> Any:
    seed_ledger_namespace(kubeapi)
    kubeapi.seed([ingress({})])
    return kubeapi


def args(kubeapi: Any, **extra: Any) -> Dict[str, Any]:
    return dict({"kubeconfig": str(kubeapi.kubeconfig), "incident_id": INCIDENT, "namespace": "trading",
                 "name": "trading-api", "allowed_namespaces": ["trading", "payments"],
                 "workload": "trading-api"}, **extra)


NGINX_ARGS = {"rps": 50, "connections": 20, "burst_multiplier": 3, "whitelist": ["10.0.0.0/8", "192.168.1.7"]}


def test_nginx_apply_check_mode_second_apply_and_restore(cluster: Any) -> None:
    module_args = args(cluster, **NGINX_ARGS)
    original = get(cluster, INGRESS_PATH)
    applied = check_then_apply(cluster, MODULE, module_args, lambda: get(cluster, INGRESS_PATH))
    live = annotations(get(cluster, INGRESS_PATH))
    # exactly the owned annotations changed, as quoted strings; the rest are untouched
    assert without_bookkeeping(live) == dict(ORIGINAL_ANNOTATIONS, **{
        NGINX + "limit-rps": "50", NGINX + "limit-connections": "20", NGINX + "limit-burst-multiplier": "3",
        NGINX + "limit-whitelist": "10.0.0.0/8,192.168.1.7/32"})
    assert live[INCIDENT_KEY] == INCIDENT and live[ENTRIES_KEY] == applied["ledger"]["entry_id"]
    assert applied["diff"]["before"] == {"metadata": {"annotations": {NGINX + "limit-connections": "500"}}}
    assert any("per controller replica" in w or "each controller replica" in w for w in applied.warnings)
    entry = ledger_entries(cluster, INCIDENT)[-1]
    assert entry["state"] == "applied" and entry["module"] == MODULE
    recorded = {tuple(f["path"]): (f["present_before"], f["before"]) for f in entry["fields"]}
    assert recorded[("metadata", "annotations", NGINX + "limit-connections")] == (True, "500")
    assert recorded[("metadata", "annotations", NGINX + "limit-rps")] == (False, None)
    assert (get(cluster, INGRESS_PATH) or {})["spec"] == original["spec"]

    assert_second_apply_is_noop(cluster, MODULE, module_args)
    restored = restore_twice(cluster, MODULE, module_args)
    assert annotations(get(cluster, INGRESS_PATH)) == ORIGINAL_ANNOTATIONS  # bookkeeping removed too
    assert restored["ledger"]["entry_ids"] == [entry["id"]]
    assert ledger_entries(cluster, INCIDENT)[-1]["state"] == "restored"


def test_nginx_restore_refuses_drift_until_forced(cluster: Any) -> None:
    module_args = args(cluster, rps=50)
    assert not run(MODULE, module_args).failed
    cluster.request("PATCH", INGRESS_PATH, {"metadata": {"annotations": {NGINX + "limit-rps": "200"}}},
                    token="operator", content_type="application/merge-patch+json")
    mark = cluster.last_seq()
    refused = run(MODULE, dict(module_args, state="restored"))
    assert refused.failed
    assert "drift" in refused.msg and NGINX + "limit-rps" in refused.msg
    assert '"50"' in refused.msg and '"200"' in refused.msg and "force: true" in refused.msg
    assert object_writes(cluster, mark) == []
    forced = run(MODULE, dict(module_args, state="restored", force=True))
    assert not forced.failed and forced["changed"]
    assert annotations(get(cluster, INGRESS_PATH)) == ORIGINAL_ANNOTATIONS


@pytest.mark.parametrize(
    ("extra", "rail"),
    [({"allowed_namespaces": ["payments"]}, "allowed_namespaces"),
     ({"allowed_namespaces": []}, "allowed_namespaces"),
     ({"protected_workloads": ["trading/*"]}, "protected_workloads")],
    ids=["namespace-not-allowed", "no-namespace-allowed", "protected-workload"],
)
def test_guard_rails_refuse(cluster: Any, extra: Dict[str, Any], rail: str) -> None:
    mark = cluster.last_seq()
    refused = run(MODULE, args(cluster, rps=10, **extra))
    assert refused.failed and refused["refused"] is True and refused["guard"] == rail
    assert ("refused by guard rail %s" % rail) in refused.msg and "option %s" % rail in refused.msg
    assert cluster.audit(since=mark) == []


@pytest.mark.parametrize(
    ("extra", "message"),
    [({"whitelist": ["10.0.0.0/33"]}, "whitelist entry '10.0.0.0/33' is not an IP address or CIDR"),
     ({"rps": 0}, "rps must be more than 0"),
     ({"rps": None, "whitelist": ["10.0.0.0/8"]}, "give at least one limit"),
     ({"burst": 5}, "burst applies to provider traefik"),
     ({"provider": "traefik", "connections": 5}, "connections applies to provider nginx only"),
     ({"provider": "traefik", "rpm": 600}, "exactly one of rps or rpm")],
)
def test_bad_values_are_refused_before_any_write(cluster: Any, extra: Dict[str, Any], message: str) -> None:
    mark = cluster.last_seq()
    result = run(MODULE, args(cluster, **dict({"rps": 10}, **extra)))
    assert result.failed and message in result.msg
    assert cluster.audit(since=mark) == []


def test_missing_ingress_is_named(cluster: Any) -> None:
    result = run(MODULE, args(cluster, name="no-such-ingress", rps=10))
    assert result.failed and "Ingress trading/no-such-ingress" in result.msg and "404" in result.msg


def test_conflict_is_retried_with_a_fresh_read(cluster: Any) -> None:
    cluster.fault(resource="ingresses", verbs=["patch"], kind="error", status=409, count=1)
    result = run(MODULE, args(cluster, rps=25))
    assert not result.failed, result.msg
    assert annotations(get(cluster, INGRESS_PATH))[NGINX + "limit-rps"] == "25"


def test_server_error_on_the_write_leaves_the_ledger_truthful(cluster: Any) -> None:
    cluster.fault(resource="ingresses", verbs=["patch"], kind="error", status=500)
    result = run(MODULE, args(cluster, rps=25))
    assert result.failed and "500" in result.msg
    cluster.clear_faults()
    assert NGINX + "limit-rps" not in annotations(get(cluster, INGRESS_PATH))
    assert [e["state"] for e in ledger_entries(cluster, INCIDENT)] == ["failed"]
    # nothing open: restore has nothing to do
    restore = run(MODULE, args(cluster, state="restored"))
    assert not restore.failed and restore["changed"] is False


def test_read_only_identity_gets_a_clear_403(cluster: Any, tmp_path: Any) -> None:
    kubeconfig = cluster.write_kubeconfig(tmp_path / "ro", "readonly")
    result = run(MODULE, args(cluster, kubeconfig=str(kubeconfig), rps=10))
    assert result.failed
    assert "cannot write the undo ledger" in result.msg and "forbidden (403)" in result.msg
    assert "create configmaps in namespace redis-storm" in result.msg and "deploy/rbac.yml" in result.msg
    assert NGINX + "limit-rps" not in annotations(get(cluster, INGRESS_PATH))


# ---------------------------------------------------------------------------------------------- traefik

TRAEFIK_ARGS = {"provider": "traefik", "rps": 100, "burst": 150}
EXISTING_MIDDLEWARES = "trading-auth@kubernetescrd,trading-headers@kubernetescrd"


def test_traefik_creates_and_attaches_the_middleware_then_restore_removes_it(kubeapi: Any) -> None:
    seed_ledger_namespace(kubeapi)
    kubeapi.seed([ingress({ROUTER: EXISTING_MIDDLEWARES})])
    module_args = args(kubeapi, **TRAEFIK_ARGS)

    def read() -> Any:
        return get(kubeapi, INGRESS_PATH), get(kubeapi, MIDDLEWARE_PATH)

    applied = check_then_apply(kubeapi, MODULE, module_args, read)
    middleware = get(kubeapi, MIDDLEWARE_PATH)
    assert middleware is not None
    assert middleware["spec"] == {"rateLimit": {"average": 100, "period": "1s", "burst": 150}}
    assert annotations(get(kubeapi, INGRESS_PATH))[ROUTER] == (
        EXISTING_MIDDLEWARES + ",trading-redis-storm-ratelimit-trading-api@kubernetescrd")
    assert applied["middleware"] == "trading-redis-storm-ratelimit-trading-api@kubernetescrd"
    assert [e["action"] for e in ledger_entries(kubeapi, INCIDENT)] == ["create", "patch"]

    assert_second_apply_is_noop(kubeapi, MODULE, module_args)
    restore_twice(kubeapi, MODULE, module_args)
    assert get(kubeapi, MIDDLEWARE_PATH) is None
    assert annotations(get(kubeapi, INGRESS_PATH)) == dict(ORIGINAL_ANNOTATIONS, **{ROUTER: EXISTING_MIDDLEWARES})
    assert {e["state"] for e in ledger_entries(kubeapi, INCIDENT)} == {"restored"}


def test_traefik_tighter_limit_in_the_same_incident_restores_newest_first(cluster: Any) -> None:
    module_args = args(cluster, **TRAEFIK_ARGS)
    assert not run(MODULE, module_args).failed
    tighter = run(MODULE, dict(module_args, rps=40, burst=None))
    assert not tighter.failed and tighter["changed"]
    assert (get(cluster, MIDDLEWARE_PATH) or {})["spec"]["rateLimit"] == {"average": 40, "period": "1s", "burst": 40}
    assert [e["action"] for e in ledger_entries(cluster, INCIDENT)] == ["create", "patch", "patch"]
    restored = run(MODULE, dict(module_args, state="restored"))
    assert not restored.failed, restored.msg
    assert get(cluster, MIDDLEWARE_PATH) is None
    assert annotations(get(cluster, INGRESS_PATH)) == ORIGINAL_ANNOTATIONS
    assert {e["state"] for e in ledger_entries(cluster, INCIDENT)} == {"restored"}


def test_traefik_without_a_router_annotation_adds_one_and_restore_removes_it(cluster: Any) -> None:
    module_args = args(cluster, provider="traefik", rpm=600)
    assert not run(MODULE, module_args).failed
    assert annotations(get(cluster, INGRESS_PATH))[ROUTER] == "trading-redis-storm-ratelimit-trading-api@kubernetescrd"
    assert (get(cluster, MIDDLEWARE_PATH) or {})["spec"]["rateLimit"]["period"] == "1m"
    assert not run(MODULE, dict(module_args, state="restored")).failed
    assert annotations(get(cluster, INGRESS_PATH)) == ORIGINAL_ANNOTATIONS
    assert get(cluster, MIDDLEWARE_PATH) is None


def test_traefik_through_ansible_playbook_check_and_diff(cluster: Any) -> None:
    from tests.helpers.modules import run_playbook

    task = {"name": "limit", "fintech.redis_storm.ingress_rate_limit": args(cluster, **TRAEFIK_ARGS)}
    mark = cluster.last_seq()
    planned = run_playbook([task], check=True, diff=True)
    assert planned.rc == 0, planned.output[-2000:] + planned.stderr[-2000:]
    assert planned.task("limit")["changed"] is True
    assert object_writes(cluster, mark) == []
    assert object_writes(cluster, mark, include_dry_run=True) != []  # validated by the server's dry run
    applied = run(MODULE, task["fintech.redis_storm.ingress_rate_limit"])
    assert not applied.failed and applied["changed"] is True
    assert applied["diff"]["after"] == planned.task("limit")["diff"]["after"]
