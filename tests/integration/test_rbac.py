"""deploy/rbac.yml is exactly enough: its rules run triage and every mitigation, and each rule is needed.

One emulator serves every case; each case gets its own namespaces (and ledger namespace), so what
one case created or half-changed cannot make another case's operation pass or fail.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

import pytest
import yaml

from tests.helpers.modules import ModuleResult, run_module

pytestmark = pytest.mark.integration

RBAC_FILE = Path(__file__).resolve().parents[2] / "deploy" / "rbac.yml"
ROLES = (("ClusterRole", "redis-storm-triage"), ("ClusterRole", "redis-storm-mitigate"), ("Role", "redis-storm-ledger"))
_cases = itertools.count(1)


def documents() -> List[Dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(RBAC_FILE.read_text()) if isinstance(doc, dict)]


def role(kind: str, name: str) -> Dict[str, Any]:
    return next(d for d in documents() if d["kind"] == kind and d["metadata"]["name"] == name)


def all_rules() -> List[Tuple[str, int, Dict[str, Any]]]:
    """(role name, index, rule) of every rule the service account gets."""
    return [(name, index, rule) for kind, name in ROLES for index, rule in enumerate(role(kind, name)["rules"])]


def rule_id(item: Tuple[str, int, Dict[str, Any]]) -> str:
    name, index, rule = item
    return "%s[%d]:%s:%s" % (name.replace("redis-storm-", ""), index, ",".join(rule["resources"]),
                             ",".join(rule["verbs"]))


# ------------------------------------------------------------------------------------------- the world

class World:
    """One case's namespaces and objects: clients in <apps>, Redis in <redis>, the ledger in <ledger>."""

    def __init__(self, kubeapi: Any, kubeconfig: str) -> None:
        n = next(_cases)
        self.kubeapi = kubeapi
        self.kubeconfig = kubeconfig
        self.apps, self.redis, self.ledger = "apps-%d" % n, "redis-%d" % n, "storm-%d" % n
        self.incident = "rbac-%d" % n

    def seed(self) -> None:
        ns, labels = self.apps, {"app": "api"}
        template = {"metadata": {"labels": labels}, "spec": {"containers": [{"name": "app", "image": "app:1"}]}}
        owner = [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "api-5d8", "uid": "u1", "controller": True}]
        self.kubeapi.seed([
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": self.ledger}},
            {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"namespace": ns, "name": "api"},
             "spec": {"replicas": 4, "selector": {"matchLabels": labels}, "template": template}},
            {"apiVersion": "apps/v1", "kind": "ReplicaSet",
             "metadata": {"namespace": ns, "name": "api-5d8", "ownerReferences": [
                 {"apiVersion": "apps/v1", "kind": "Deployment", "name": "api", "uid": "u0", "controller": True}]},
             "spec": {"replicas": 4, "selector": {"matchLabels": labels}, "template": template}},
            {"apiVersion": "v1", "kind": "Pod", "metadata": {"namespace": ns, "name": "api-5d8-a", "labels": labels,
                                                             "ownerReferences": owner},
             "spec": {"containers": [{"name": "app", "image": "app:1"}]},
             "status": {"phase": "Running", "podIP": "127.0.50.1", "podIPs": [{"ip": "127.0.50.1"}],
                        "containerStatuses": [{"name": "app", "restartCount": 0, "ready": True}]}},
            {"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler", "metadata": {"namespace": ns,
                                                                                          "name": "api"},
             "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "api"},
                      "minReplicas": 2, "maxReplicas": 10},
             "status": {"currentReplicas": 4, "desiredReplicas": 4}},
            {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"namespace": ns, "name": "worker"},
             "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "worker"}},
                      "template": {"metadata": {"labels": {"app": "worker"}},
                                   "spec": {"containers": [{"name": "app", "image": "app:1"}]}}}},
            {"apiVersion": "keda.sh/v1alpha1", "kind": "ScaledObject", "metadata": {"namespace": ns, "name": "worker"},
             "spec": {"scaleTargetRef": {"name": "worker"}, "minReplicaCount": 1, "maxReplicaCount": 5,
                      "triggers": [{"type": "cpu", "metadata": {"value": "60"}}]}},
            {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"namespace": ns, "name": "trading-api-flags"},
             "data": {"redis.retry.aggressive": "true"}},
            {"apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "metadata": {"namespace": ns, "name": "api"},
             "spec": {"rules": [{"host": "api.example.com", "http": {"paths": [{
                 "path": "/", "pathType": "Prefix",
                 "backend": {"service": {"name": "api", "port": {"number": 80}}}}]}}]}},
            {"apiVersion": "networking.istio.io/v1beta1", "kind": "DestinationRule",
             "metadata": {"namespace": ns, "name": "redis-existing"},
             "spec": {"host": "redis.%s.svc.cluster.local" % self.redis}},
            {"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"namespace": self.redis, "name": "redis"},
             "spec": {"replicas": 1, "serviceName": "redis", "selector": {"matchLabels": {"app": "redis"}},
                      "template": {"metadata": {"labels": {"app": "redis"}},
                                   "spec": {"containers": [{"name": "redis", "image": "redis:7"}]}}}},
        ])
        self.kubeapi.log(ns, "api-5d8-a", "WARN retrying redis connection\n")
        self.kubeapi.pod_metrics(ns, "api-5d8-a", {"app": {"cpu": "250m", "memory": "64Mi"}})

    def args(self, **extra: Any) -> Dict[str, Any]:
        return dict({"kubeconfig": self.kubeconfig, "incident_id": self.incident, "ledger_namespace": self.ledger,
                     "allowed_namespaces": [self.apps, self.redis]}, **extra)


Operation = Callable[[World], Optional[str]]


def failure(result: ModuleResult) -> Optional[str]:
    return result.msg or "failed" if result.failed else None


def apply_and_restore(module: str, tighter: Optional[Dict[str, Any]] = None, **options: Any) -> Operation:
    """Check mode (server-side dry run), apply (and a tighter apply), then restore: a mitigation's whole life."""

    def operation(world: World) -> Optional[str]:
        scoped = {k: (v.format(apps=world.apps, redis=world.redis) if isinstance(v, str) else v)
                  for k, v in options.items()}
        steps: List[Tuple[str, bool, Dict[str, Any]]] = [("applied", True, {}), ("applied", False, {})]
        if tighter:
            steps.append(("applied", False, tighter))
        steps.append(("restored", False, {}))
        for state, check, changes in steps:
            result = run_module(module, world.args(state=state, **dict(scoped, **changes)), check=check)
            if result.failed:
                return "%s %s%s: %s" % (module, state, " (check)" if check else "", result.msg)
        return None

    return operation


def triage(world: World) -> Optional[str]:
    result = run_module("storm_offenders_info", {"kubeconfig": world.kubeconfig, "namespaces": [world.apps],
                                                 "sources": [{"ip": "127.0.50.1", "connections": 40}]})
    if result.failed:
        return "storm_offenders_info: " + result.msg
    if result["degraded"]:
        return "storm_offenders_info degraded: %s" % result["degraded"]
    top = result["workloads"][0]
    assert (top["name"], top["hpa"]["name"], top["cpu_millicores"], top["log_signatures"]["retry"]) == (
        "api", "api", 250.0, 1)
    return None


def lock(world: World) -> Optional[str]:
    for state in ("acquired", "acquired", "released"):  # take, renew, release
        result = run_module("storm_lock", {"kubeconfig": world.kubeconfig, "incident_id": world.incident,
                                           "ledger_namespace": world.ledger, "state": state, "holder": "rbac-test"})
        if result.failed:
            return "storm_lock %s: %s" % (state, result.msg)
    return None


def rung_and_rollback(world: World) -> Optional[str]:
    common = {"kubeconfig": world.kubeconfig, "incident_id": world.incident, "ledger_namespace": world.ledger}
    started = run_module("storm_rung", dict(common, rung="offender_scale_down", state="started", max_attempts=3))
    if started.failed:
        return "storm_rung: " + started.msg
    scaled = run_module("workload_scale", world.args(namespace=world.apps, name="api", replicas=3))
    if scaled.failed:
        return "workload_scale: " + scaled.msg
    rollback = run_module("storm_rollback", dict(common, allowed_namespaces=[world.apps]))
    if rollback.failed or rollback["summary"].get("restored") != 1:
        return "storm_rollback: %s %s" % (rollback.msg, rollback.get("summary"))
    return None


OPERATIONS: List[Tuple[str, Operation]] = [
    ("triage", triage),
    ("storm_lock", lock),
    ("workload_scale Deployment", apply_and_restore("workload_scale", namespace="{apps}", name="api", replicas=3)),
    ("workload_scale StatefulSet", apply_and_restore("workload_scale", kind="StatefulSet", namespace="{redis}",
                                                     name="redis", replicas=2)),
    ("hpa_pause HPA", apply_and_restore("hpa_pause", namespace="{apps}", name="api")),
    ("hpa_pause ScaledObject", apply_and_restore("hpa_pause", kind="ScaledObject", namespace="{apps}",
                                                 name="worker")),
    ("feature_flag", apply_and_restore("feature_flag", namespace="{apps}", name="trading-api-flags",
                                       flags={"redis.retry.aggressive": "false"})),
    ("ingress_rate_limit nginx", apply_and_restore("ingress_rate_limit", namespace="{apps}", name="api", rps=20)),
    ("ingress_rate_limit traefik", apply_and_restore("ingress_rate_limit", namespace="{apps}", name="api",
                                                     provider="traefik", rps=20, tighter={"rps": 10})),
    ("mesh_circuit_breaker new rule", apply_and_restore("mesh_circuit_breaker", namespace="{apps}", name="redis",
                                                        redis_host="redis.{redis}.svc.cluster.local",
                                                        max_connections=10)),
    ("mesh_circuit_breaker existing rule", apply_and_restore("mesh_circuit_breaker", namespace="{apps}",
                                                             name="redis-existing", max_connections=10,
                                                             redis_host="redis.{redis}.svc.cluster.local")),
    ("storm_rung + storm_rollback", rung_and_rollback),
]


@pytest.fixture(scope="module")
def shared_kubeapi(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from tests.fixtures.kubeapi import running_kubeapi

    with running_kubeapi(tmp_path_factory.mktemp("rbac-kubeapi")) as api:
        yield api


SERVICE_ACCOUNT = "system:serviceaccount:redis-storm:redis-storm"


def world_for(kubeapi: Any, tmp_path: Path, rules: List[Dict[str, Any]]) -> World:
    name = "rbac-%d" % len(kubeapi.tokens)
    kubeapi.add_token(name, rules=rules, user=SERVICE_ACCOUNT)
    world = World(kubeapi, str(kubeapi.write_kubeconfig(tmp_path / name, name)))
    world.seed()
    return world


def run_all(world: World) -> List[str]:
    return [f"{name}: {error}" for name, operation in OPERATIONS if (error := operation(world))]


def test_the_rules_run_triage_and_every_mitigation(shared_kubeapi: Any, tmp_path: Path) -> None:
    mark = shared_kubeapi.last_seq()
    world = world_for(shared_kubeapi, tmp_path, [rule for _, _, rule in all_rules()])
    assert run_all(world) == []
    # every write verb the file grants was used for real (reads are not in the audit log)
    used = {(e["verb"], e["group"], e["resource"] + ("/" + e["subresource"] if e.get("subresource") else ""))
            for e in shared_kubeapi.writes(user=SERVICE_ACCOUNT, since=mark)}
    writes = {"create", "update", "patch", "delete"}
    granted = {(verb, group, resource) for _, _, rule in all_rules() for verb in set(rule["verbs"]) & writes
               for group in rule["apiGroups"] for resource in rule["resources"]}
    assert granted - used == set()


@pytest.mark.parametrize("removed", all_rules(), ids=[rule_id(item) for item in all_rules()])
def test_every_rule_is_needed(shared_kubeapi: Any, tmp_path: Path, removed: Tuple[str, int, Dict[str, Any]]) -> None:
    rules = [rule for name, index, rule in all_rules() if (name, index) != removed[:2]]
    world = world_for(shared_kubeapi, tmp_path, rules)
    broken = None
    for name, operation in OPERATIONS:
        error = operation(world)
        if error:
            broken = "%s: %s" % (name, error)
            break
    assert broken is not None, "nothing needs %s" % rule_id(removed)
    assert "forbidden (403)" in broken, broken


def test_read_only_identity_gets_a_clear_403(shared_kubeapi: Any, tmp_path: Path) -> None:
    world = world_for(shared_kubeapi, tmp_path, [{"apiGroups": ["*"], "resources": ["*"],
                                                  "verbs": ["get", "list", "watch"]}])
    assert triage(world) is None  # reads are fine
    planned = run_module("workload_scale", world.args(namespace=world.apps, name="api", replicas=3), check=True)
    assert planned.failed
    assert planned.msg.startswith("forbidden (403): this identity may not patch deployments/scale")
    assert "in namespace %s" % world.apps in planned.msg and "deploy/rbac.yml" in planned.msg
    applied = run_module("ingress_rate_limit", world.args(namespace=world.apps, name="api", rps=5))
    assert applied.failed and "forbidden (403)" in applied.msg and "create configmaps" in applied.msg


def test_the_file_grants_no_more_than_it_says() -> None:
    docs = documents()
    kinds = sorted(d["kind"] for d in docs)
    assert kinds.count("ServiceAccount") == 1 and "Secret" not in kinds
    for name, _, rule in all_rules():
        assert "*" not in rule["verbs"] + rule["resources"] + rule["apiGroups"], (name, rule)
        assert not {"escalate", "bind", "impersonate", "deletecollection"} & set(rule["verbs"]), (name, rule)
        assert "secrets" not in rule["resources"] and "pods/exec" not in rule["resources"]
    # everything bound per namespace: triage's reads and the mitigations in the inventory's namespaces, the ledger
    # Role in its own; the cluster-wide read is an opt-in left commented out
    bindings = [d for d in docs if d["kind"] in ("RoleBinding", "ClusterRoleBinding")]
    by_role: Dict[str, List[Dict[str, Any]]] = {}
    for binding in bindings:
        assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "redis-storm", "namespace": "redis-storm"}]
        by_role.setdefault(binding["roleRef"]["name"], []).append(binding)
    assert {b["kind"] for b in by_role["redis-storm-triage"]} == {"RoleBinding"}
    assert "ClusterRoleBinding" not in kinds
    assert {b["metadata"]["namespace"] for b in by_role["redis-storm-triage"]} <= {
        b["metadata"]["namespace"] for b in by_role["redis-storm-mitigate"]}
    assert {b["kind"] for b in by_role["redis-storm-mitigate"]} == {"RoleBinding"}
    assert [(b["kind"], b["metadata"]["namespace"]) for b in by_role["redis-storm-ledger"]] == [
        ("RoleBinding", "redis-storm")]
    assert role("Role", "redis-storm-ledger")["metadata"]["namespace"] == "redis-storm"
    triage_verbs = {v for rule in role("ClusterRole", "redis-storm-triage")["rules"] for v in rule["verbs"]}
    assert triage_verbs <= {"get", "list"}
