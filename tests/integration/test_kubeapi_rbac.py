"""Identities and RBAC in the emulator: 401 without a known token, 403 Status messages, rules from Role YAML."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

import kubernetes
import pytest
from kubernetes.client.exceptions import ApiException

from tests.fixtures.kubeapi import KubeApi, deployment, pod

pytestmark = pytest.mark.integration


def failure(call: Callable[[], Any]) -> dict[str, Any]:
    with pytest.raises(ApiException) as info:
        call()
    return dict(json.loads(info.value.body))


def test_unknown_or_missing_token_is_401(kubeapi: KubeApi) -> None:
    kubeapi.tokens["stranger"] = "not-a-token"
    kubeapi.users["stranger"] = "nobody"
    body = failure(lambda: kubernetes.client.CoreV1Api(kubeapi.client("stranger")).list_namespace())
    assert (body["code"], body["reason"], body["message"]) == (401, "Unauthorized", "Unauthorized")
    anonymous = kubeapi.client("stranger")
    anonymous.configuration.api_key = {}
    assert failure(lambda: kubernetes.client.CoreV1Api(anonymous).list_namespace())["code"] == 401


def test_readonly_reads_everything_and_writes_nothing(kubeapi: KubeApi) -> None:
    kubeapi.seed([deployment("trading", "trading-api")])
    apps = kubernetes.client.AppsV1Api(kubeapi.client("readonly"))
    assert apps.read_namespaced_deployment_scale("trading-api", "trading").spec.replicas == 1
    denied = failure(lambda: apps.patch_namespaced_deployment_scale("trading-api", "trading",
                                                                    {"spec": {"replicas": 0}}))
    assert (denied["code"], denied["reason"]) == (403, "Forbidden")
    assert denied["message"] == ('deployments.apps "trading-api" is forbidden: User "storm-readonly" cannot patch '
                                 'resource "deployments/scale" in API group "apps" in the namespace "trading"')
    assert denied["details"] == {"name": "trading-api", "group": "apps", "kind": "deployments"}
    listing = failure(lambda: kubernetes.client.CoreV1Api(kubeapi.client("readonly")).create_namespace(
        {"metadata": {"name": "x"}}))
    assert listing["message"] == ('namespaces is forbidden: User "storm-readonly" cannot create resource '
                                  '"namespaces" in API group "" at the cluster scope')
    assert apps.read_namespaced_deployment("trading-api", "trading").spec.replicas == 1


def test_policy_rules_with_subresources_and_resource_names(kubeapi: KubeApi) -> None:
    kubeapi.seed([deployment("trading", "trading-api"), deployment("trading", "ledger")])
    kubeapi.add_token("scaler", user="scaler", rules=[
        {"apiGroups": ["apps"], "resources": ["deployments"], "verbs": ["get", "list"]},
        {"apiGroups": ["apps"], "resources": ["deployments/scale"], "verbs": ["get", "patch"],
         "resourceNames": ["trading-api"]}])
    apps = kubernetes.client.AppsV1Api(kubeapi.client("scaler"))
    scaled = apps.patch_namespaced_deployment_scale("trading-api", "trading", {"spec": {"replicas": 2}})
    assert scaled.spec.replicas == 2
    other = failure(lambda: apps.patch_namespaced_deployment_scale("ledger", "trading", {"spec": {"replicas": 2}}))
    assert other["message"].startswith('deployments.apps "ledger" is forbidden: User "scaler" cannot patch')
    main = failure(lambda: apps.patch_namespaced_deployment("trading-api", "trading", {"spec": {"replicas": 3}}))
    assert 'cannot patch resource "deployments" in API group "apps"' in main["message"]
    assert [d.metadata.name for d in apps.list_namespaced_deployment("trading").items] == ["ledger", "trading-api"]
    core = kubernetes.client.CoreV1Api(kubeapi.client("scaler"))
    assert failure(lambda: core.list_namespaced_pod("trading"))["message"] == (
        'pods is forbidden: User "scaler" cannot list resource "pods" in API group "" in the namespace "trading"')

    kubeapi.add_token("any-scale", user="any-scale", rules=[
        {"apiGroups": ["*"], "resources": ["*/scale"], "verbs": ["*"]}])
    anyscale = kubernetes.client.AppsV1Api(kubeapi.client("any-scale"))
    assert anyscale.patch_namespaced_deployment_scale("ledger", "trading", {"spec": {"replicas": 0}}).spec.replicas == 0
    assert failure(lambda: anyscale.read_namespaced_deployment("ledger", "trading"))["code"] == 403


ROLE_YAML = """\
apiVersion: v1
kind: ServiceAccount
metadata:
  name: redis-storm
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata:
  name: redis-storm-operator
rules:
  - apiGroups: [""]
    resources: ["pods", "pods/log"]
    verbs: ["get", "list"]
  - apiGroups: ["apps"]
    resources: ["deployments/scale"]
    verbs: ["get", "patch"]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata:
  name: redis-storm-ledger
  namespace: redis-storm
rules:
  - apiGroups: [""]
    resources: ["configmaps"]
    verbs: ["get", "create", "patch"]
"""


def test_rules_from_role_yaml(kubeapi: KubeApi, tmp_path: Path) -> None:
    rbac = tmp_path / "rbac.yml"
    rbac.write_text(ROLE_YAML)
    kubeapi.seed([deployment("trading", "trading-api"), pod("trading", "api-1", {"app": "trading-api"}),
                  {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "redis-storm"}}])
    kubeapi.log("trading", "api-1", "hello\n")
    kubeapi.add_token("sa", user="system:serviceaccount:redis-storm:redis-storm", rules_from=rbac,
                      role="redis-storm-operator")
    core = kubernetes.client.CoreV1Api(kubeapi.client("sa"))
    apps = kubernetes.client.AppsV1Api(kubeapi.client("sa"))
    assert core.read_namespaced_pod_log("api-1", "trading") == "hello\n"
    scaled = apps.patch_namespaced_deployment_scale("trading-api", "trading", {"spec": {"replicas": 2}})
    assert scaled.spec.replicas == 2
    denied = failure(lambda: core.delete_namespaced_pod("api-1", "trading"))
    assert denied["message"] == ('pods "api-1" is forbidden: User "system:serviceaccount:redis-storm:redis-storm" '
                                 'cannot delete resource "pods" in API group "" in the namespace "trading"')

    kubeapi.add_token("ledger", user="ledger", rules_from=rbac, role="redis-storm-ledger")
    ledger = kubernetes.client.CoreV1Api(kubeapi.client("ledger"))
    ledger.create_namespaced_config_map("redis-storm", {"metadata": {"name": "redis-storm-ledger-inc1"}})
    elsewhere = failure(lambda: ledger.create_namespaced_config_map("trading", {"metadata": {"name": "x"}}))
    assert elsewhere["code"] == 403, "a Role grants only in its own namespace"

    kubeapi.add_token("bound", user="bound", rules_from=rbac, role=["redis-storm-operator", "redis-storm-ledger"])
    bound = kubernetes.client.CoreV1Api(kubeapi.client("bound"))
    assert bound.read_namespaced_pod_log("api-1", "trading") == "hello\n"
    bound.patch_namespaced_config_map("redis-storm-ledger-inc1", "redis-storm", {"data": {"a": "b"}})
    assert failure(lambda: bound.create_namespaced_config_map("trading", {"metadata": {"name": "x"}}))["code"] == 403


def test_namespace_limited_identity(kubeapi: KubeApi) -> None:
    kubeapi.seed([deployment("trading", "api"), deployment("wallet", "api")])
    kubeapi.add_token("team", user="team", rules="*", namespaces=["trading"])
    apps = kubernetes.client.AppsV1Api(kubeapi.client("team"))
    assert apps.patch_namespaced_deployment_scale("api", "trading", {"spec": {"replicas": 3}}).spec.replicas == 3
    assert failure(lambda: apps.read_namespaced_deployment("api", "wallet"))["code"] == 403
    core = kubernetes.client.CoreV1Api(kubeapi.client("team"))
    assert core.read_namespace("trading").metadata.name == "trading"
    assert failure(lambda: core.read_namespace("wallet"))["message"] == (
        'namespaces "wallet" is forbidden: User "team" cannot get resource "namespaces" in API group "" in the '
        'namespace "wallet"')
    assert failure(lambda: apps.list_deployment_for_all_namespaces())["message"] == (
        'deployments.apps is forbidden: User "team" cannot list resource "deployments" in API group "apps" at the '
        "cluster scope")


def test_sandbox_endpoints_need_the_admin_token(kubeapi: KubeApi) -> None:
    code, body = kubeapi.raw("GET", "/_sandbox/audit", token="readonly")
    assert code == 403 and body["reason"] == "Forbidden"
    code, body = kubeapi.raw("POST", "/_sandbox/faults", {"resource": "pods", "kind": "error"}, token="readonly")
    assert code == 403
    assert kubeapi.faults() == []


def test_self_subject_access_review_answers_for_the_caller(kubeapi: KubeApi) -> None:
    kubeapi.add_token("scaler", user="scaler", rules=[
        {"apiGroups": ["apps"], "resources": ["deployments/scale"], "verbs": ["patch"]}])

    def can(name: str, verb: str, resource: str, subresource: str = "") -> bool:
        review = {"spec": {"resourceAttributes": {"namespace": "trading", "verb": verb, "group": "apps",
                                                  "resource": resource, "subresource": subresource}}}
        api = kubernetes.client.AuthorizationV1Api(kubeapi.client(name))
        return bool(api.create_self_subject_access_review(review).status.allowed)

    assert can("scaler", "patch", "deployments", "scale")
    assert not can("scaler", "patch", "deployments")
    assert not can("readonly", "patch", "deployments", "scale")
    assert can("readonly", "get", "deployments", "scale")
    assert kubeapi.audit() == [], "a review stores nothing and is not a write"
