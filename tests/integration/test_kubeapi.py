"""The Kubernetes API emulator through the official kubernetes client: CRUD, /scale, patches, Status errors."""

from __future__ import annotations

import json
from typing import Any, Callable

import kubernetes
import pytest
from kubernetes.client.exceptions import ApiException
from kubernetes.dynamic import DynamicClient

from tests.fixtures.kubeapi import KubeApi, deployment, namespace, pod

pytestmark = pytest.mark.integration


def status_of(call: Callable[[], Any]) -> dict[str, Any]:
    """The Status body of a call that must fail."""
    with pytest.raises(ApiException) as info:
        call()
    body = json.loads(info.value.body)
    assert body["kind"] == "Status" and body["status"] == "Failure" and body["code"] == info.value.status
    return dict(body)


@pytest.fixture
def apis(kubeapi: KubeApi) -> Any:
    client = kubeapi.client("operator")

    class Apis:
        core = kubernetes.client.CoreV1Api(client)
        apps = kubernetes.client.AppsV1Api(client)
        autoscaling = kubernetes.client.AutoscalingV2Api(client)
        custom = kubernetes.client.CustomObjectsApi(client)
        coordination = kubernetes.client.CoordinationV1Api(client)

    return Apis


def test_discovery_serves_every_group_and_the_scale_subresource(kubeapi: KubeApi) -> None:
    dynamic = DynamicClient(kubeapi.client("readonly"))
    for api_version, kind in [("v1", "Pod"), ("v1", "ConfigMap"), ("v1", "Event"), ("v1", "Namespace"),
                              ("apps/v1", "Deployment"), ("apps/v1", "StatefulSet"), ("apps/v1", "ReplicaSet"),
                              ("autoscaling/v2", "HorizontalPodAutoscaler"), ("networking.k8s.io/v1", "Ingress"),
                              ("coordination.k8s.io/v1", "Lease"), ("metrics.k8s.io/v1beta1", "PodMetrics"),
                              ("keda.sh/v1alpha1", "ScaledObject"), ("networking.istio.io/v1", "DestinationRule"),
                              ("networking.istio.io/v1beta1", "DestinationRule"),
                              ("traefik.io/v1alpha1", "Middleware")]:
        resource = dynamic.resources.get(api_version=api_version, kind=kind)
        assert resource.namespaced is (kind != "Namespace"), kind
    deployments = dynamic.resources.get(api_version="apps/v1", kind="Deployment")
    assert deployments.short_names == ["deploy"]
    assert set(deployments.verbs) >= {"get", "list", "watch", "create", "update", "patch", "delete"}
    assert "scale" in deployments.subresources and "status" in deployments.subresources
    scale = dynamic.resources.get(api_version="apps/v1", kind="Deployment").subresources["scale"]
    assert scale.kind == "Scale"
    pods = dynamic.resources.get(api_version="v1", kind="Pod")
    assert "log" in pods.subresources
    metrics = dynamic.resources.get(api_version="metrics.k8s.io/v1beta1", kind="PodMetrics")
    assert sorted(metrics.verbs) == ["get", "list"]
    version = kubernetes.client.VersionApi(kubeapi.client("readonly")).get_code()
    assert version.major == "1" and version.git_version.startswith("v1.")


def test_crud_through_typed_apis(kubeapi: KubeApi, apis: Any) -> None:
    apis.core.create_namespace({"metadata": {"name": "payments"}})
    created = apis.core.create_namespaced_config_map("payments", {
        "metadata": {"name": "flags"}, "data": {"redis.retry.aggressive": "true"}})
    assert created.metadata.uid and created.metadata.creation_timestamp and created.metadata.resource_version
    read = apis.core.read_namespaced_config_map("flags", "payments")
    assert read.data == {"redis.retry.aggressive": "true"}
    read.data["redis.retry.aggressive"] = "false"
    replaced = apis.core.replace_namespaced_config_map("flags", "payments", read)
    assert replaced.data["redis.retry.aggressive"] == "false"
    assert int(replaced.metadata.resource_version) > int(created.metadata.resource_version)
    assert replaced.metadata.uid == created.metadata.uid
    listed = apis.core.list_namespaced_config_map("payments")
    assert [c.metadata.name for c in listed.items] == ["flags"]
    assert int(listed.metadata.resource_version) >= int(replaced.metadata.resource_version)

    apis.apps.create_namespaced_deployment("payments", deployment("payments", "payments-api", replicas=3))
    apis.apps.create_namespaced_stateful_set("payments", deployment("payments", "redis", kind="StatefulSet"))
    assert [d.metadata.name for d in apis.apps.list_deployment_for_all_namespaces().items] == ["payments-api"]
    assert apis.apps.read_namespaced_stateful_set("redis", "payments").spec.replicas == 1

    apis.core.delete_namespaced_config_map("flags", "payments")
    gone = status_of(lambda: apis.core.read_namespaced_config_map("flags", "payments"))
    assert gone["code"] == 404 and gone["reason"] == "NotFound"
    assert gone["message"] == 'configmaps "flags" not found'
    assert gone["details"] == {"name": "flags", "kind": "configmaps"}


def test_not_found_already_exists_and_missing_namespace(kubeapi: KubeApi, apis: Any) -> None:
    kubeapi.seed([deployment("trading", "trading-api")])
    missing = status_of(lambda: apis.apps.read_namespaced_deployment("nope", "trading"))
    assert missing["message"] == 'deployments.apps "nope" not found'
    assert missing["details"] == {"name": "nope", "group": "apps", "kind": "deployments"}

    again = status_of(lambda: apis.apps.create_namespaced_deployment("trading", deployment("trading", "trading-api")))
    assert (again["code"], again["reason"]) == (409, "AlreadyExists")
    assert again["message"] == 'deployments.apps "trading-api" already exists'

    orphan = status_of(lambda: apis.core.create_namespaced_config_map("ghost", {"metadata": {"name": "x"}}))
    assert (orphan["code"], orphan["message"]) == (404, 'namespaces "ghost" not found')


def test_stale_resource_version_is_a_conflict(kubeapi: KubeApi, apis: Any) -> None:
    kubeapi.seed([deployment("trading", "trading-api", replicas=2)])
    mine = apis.apps.read_namespaced_deployment("trading-api", "trading")
    theirs = apis.apps.read_namespaced_deployment("trading-api", "trading")
    theirs.spec.replicas = 5
    apis.apps.replace_namespaced_deployment("trading-api", "trading", theirs)
    mine.spec.replicas = 1
    conflict = status_of(lambda: apis.apps.replace_namespaced_deployment("trading-api", "trading", mine))
    assert (conflict["code"], conflict["reason"]) == (409, "Conflict")
    assert conflict["message"] == ('Operation cannot be fulfilled on deployments.apps "trading-api": the object has '
                                   "been modified; please apply your changes to the latest version and try again")
    assert apis.apps.read_namespaced_deployment("trading-api", "trading").spec.replicas == 5
    stale_patch = {"metadata": {"resourceVersion": mine.metadata.resource_version}, "spec": {"replicas": 1}}
    stale = status_of(lambda: apis.apps.patch_namespaced_deployment("trading-api", "trading", stale_patch))
    assert stale["reason"] == "Conflict"


def test_generation_and_resource_version_follow_real_rules(kubeapi: KubeApi, apis: Any) -> None:
    kubeapi.seed([deployment("trading", "trading-api", replicas=2)])
    first = apis.apps.read_namespaced_deployment("trading-api", "trading")
    assert first.metadata.generation == 1
    labelled = apis.apps.patch_namespaced_deployment("trading-api", "trading",
                                                     {"metadata": {"annotations": {"team": "sre"}}})
    assert labelled.metadata.generation == 1
    assert int(labelled.metadata.resource_version) > int(first.metadata.resource_version)
    scaled = apis.apps.patch_namespaced_deployment("trading-api", "trading", {"spec": {"replicas": 4}})
    assert scaled.metadata.generation == 2
    same = apis.apps.patch_namespaced_deployment("trading-api", "trading", {"spec": {"replicas": 4}})
    assert same.metadata.resource_version == scaled.metadata.resource_version, "a no-op write stores nothing"


def test_scale_subresource_reads_and_writes_spec_replicas(kubeapi: KubeApi, apis: Any) -> None:
    kubeapi.seed([deployment("trading", "trading-api", replicas=3), deployment("redis", "redis", kind="StatefulSet")])
    apis.apps.patch_namespaced_deployment_status("trading-api", "trading", {"status": {"replicas": 3}})
    scale = apis.apps.read_namespaced_deployment_scale("trading-api", "trading")
    assert scale.kind == "Scale" and scale.api_version == "autoscaling/v1"
    assert (scale.spec.replicas, scale.status.replicas, scale.status.selector) == (3, 3, "app=trading-api")

    patched = apis.apps.patch_namespaced_deployment_scale("trading-api", "trading", {"spec": {"replicas": 1}})
    assert patched.spec.replicas == 1
    assert apis.apps.read_namespaced_deployment("trading-api", "trading").spec.replicas == 1

    scale.spec.replicas = 7
    stale = status_of(lambda: apis.apps.replace_namespaced_deployment_scale("trading-api", "trading", scale))
    assert stale["code"] == 409
    fresh = apis.apps.read_namespaced_deployment_scale("trading-api", "trading")
    fresh.spec.replicas = 7
    assert apis.apps.replace_namespaced_deployment_scale("trading-api", "trading", fresh).spec.replicas == 7

    sts = apis.apps.patch_namespaced_stateful_set_scale("redis", "redis", {"spec": {"replicas": 3}})
    assert sts.spec.replicas == 3 and apis.apps.read_namespaced_stateful_set("redis", "redis").spec.replicas == 3

    negative = status_of(lambda: apis.apps.patch_namespaced_deployment_scale("trading-api", "trading",
                                                                             {"spec": {"replicas": -1}}))
    assert (negative["code"], negative["reason"]) == (422, "Invalid")
    assert negative["message"] == ('Scale.autoscaling "trading-api" is invalid: spec.replicas: Invalid value: -1: '
                                   "must be greater than or equal to 0")
    assert negative["details"]["causes"] == [{"reason": "FieldValueInvalid", "field": "spec.replicas",
                                              "message": "Invalid value: -1: must be greater than or equal to 0"}]


def test_invalid_objects_are_422_with_causes(kubeapi: KubeApi, apis: Any) -> None:
    kubeapi.seed([namespace("trading"), deployment("trading", "trading-api")])
    nameless = status_of(lambda: apis.core.create_namespaced_config_map("trading", {"data": {"a": "b"}}))
    assert (nameless["code"], nameless["reason"]) == (422, "Invalid")
    assert nameless["details"]["causes"][0]["field"] == "metadata.name"
    assert "name or generateName is required" in nameless["message"]

    hpa = {"metadata": {"name": "trading-api"}, "spec": {
        "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "trading-api"},
        "minReplicas": 4, "maxReplicas": 2}}
    bad_hpa = status_of(lambda: apis.autoscaling.create_namespaced_horizontal_pod_autoscaler("trading", hpa))
    assert bad_hpa["message"] == ('HorizontalPodAutoscaler.autoscaling "trading-api" is invalid: spec.maxReplicas: '
                                  "Invalid value: 2: must be greater than or equal to `minReplicas`")

    numeric = status_of(lambda: apis.apps.patch_namespaced_deployment(
        "trading-api", "trading", {"metadata": {"annotations": {"limit-rps": 10}}}))
    assert (numeric["code"], numeric["details"]["causes"][0]["field"]) == (422, "patch")
    assert "cannot unmarshal number into Go struct field ObjectMeta.metadata.annotations of type string" in \
        numeric["message"]

    # the typed client refuses these itself, so they go raw, as kubectl or another client would send them
    cm = {"metadata": {"name": "flags"}, "data": {"redis.retry.aggressive": True}}
    code, decoded = kubeapi.raw("POST", "/api/v1/namespaces/trading/configmaps", cm)
    assert (code, decoded["reason"]) == (400, "BadRequest"), "a create that cannot decode is a 400"
    assert decoded["message"] == ('ConfigMap in version "v1" cannot be handled as a ConfigMap: json: cannot '
                                  "unmarshal bool into Go struct field ConfigMap.data of type string")
    code, _ = kubeapi.raw("POST", "/api/v1/namespaces/trading/configmaps",
                          {"metadata": {"name": "flags", "labels": {"x": 1}}})
    assert code == 400
    code, _ = kubeapi.raw("PATCH", "/api/v1/namespaces/trading/configmaps/flags", {"data": {"a": 1}},
                          content_type="application/merge-patch+json")
    assert code == 404
    assert status_of(lambda: apis.apps.read_namespaced_deployment("flags", "trading"))["code"] == 404


def test_merge_patch_removes_keys_and_replaces_lists(kubeapi: KubeApi, apis: Any) -> None:
    ing = {"apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "metadata": {
        "name": "web", "namespace": "trading",
        "annotations": {"nginx.ingress.kubernetes.io/limit-rps": "50", "keep": "yes"}},
        "spec": {"rules": [{"host": "a.example"}, {"host": "b.example"}]}}
    kubeapi.seed([ing])
    net = kubernetes.client.NetworkingV1Api(kubeapi.client())
    patched = net.patch_namespaced_ingress(
        "web", "trading", {"metadata": {"annotations": {"nginx.ingress.kubernetes.io/limit-rps": None}},
                           "spec": {"rules": [{"host": "c.example"}]}},
        _content_type="application/merge-patch+json")
    assert patched.metadata.annotations == {"keep": "yes"}
    assert [r.host for r in patched.spec.rules] == ["c.example"]


def test_strategic_merge_patch_merges_containers_and_env_by_name(kubeapi: KubeApi, apis: Any) -> None:
    kubeapi.seed([deployment("trading", "trading-api", env={"REDIS_POOL_MAX": "50", "REDIS_RETRY_ATTEMPTS": "5"})])
    patch = {"spec": {"template": {"spec": {"containers": [
        {"name": "app", "env": [{"name": "REDIS_RETRY_ATTEMPTS", "value": "1"}, {"name": "NEW", "value": "x"}]}]}}}}
    result = apis.apps.patch_namespaced_deployment("trading-api", "trading", patch)
    containers = result.spec.template.spec.containers
    assert [c.name for c in containers] == ["app"] and containers[0].image == "registry.local/trading-api:1.0"
    assert {e.name: e.value for e in containers[0].env} == {"REDIS_POOL_MAX": "50", "REDIS_RETRY_ATTEMPTS": "1",
                                                           "NEW": "x"}
    removed = apis.apps.patch_namespaced_deployment("trading-api", "trading", {"spec": {"template": {"spec": {
        "containers": [{"name": "app", "env": [{"name": "NEW", "$patch": "delete"}]}]}}}})
    assert [e.name for e in removed.spec.template.spec.containers[0].env] == ["REDIS_POOL_MAX", "REDIS_RETRY_ATTEMPTS"]


def test_conditions_merge_by_type_in_status(kubeapi: KubeApi, apis: Any) -> None:
    kubeapi.seed([deployment("trading", "trading-api")])
    hpa = {"metadata": {"name": "trading-api"}, "spec": {
        "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "trading-api"},
        "minReplicas": 2, "maxReplicas": 10}}
    apis.autoscaling.create_namespaced_horizontal_pod_autoscaler("trading", hpa)
    since = "2026-01-01T00:00:00Z"
    first = {"status": {"currentReplicas": 2, "desiredReplicas": 2, "conditions": [
        {"type": "AbleToScale", "status": "True", "reason": "ReadyForNewScale", "lastTransitionTime": since},
        {"type": "ScalingActive", "status": "True", "reason": "ValidMetricFound", "lastTransitionTime": since}]}}
    apis.autoscaling.patch_namespaced_horizontal_pod_autoscaler_status("trading-api", "trading", first)
    second = {"status": {"conditions": [{"type": "ScalingActive", "status": "False", "reason": "ScalingDisabled",
                                         "lastTransitionTime": "2026-01-01T00:01:00Z"}]}}
    result = apis.autoscaling.patch_namespaced_horizontal_pod_autoscaler_status("trading-api", "trading", second)
    assert {c.type: c.status for c in result.status.conditions} == {"AbleToScale": "True", "ScalingActive": "False"}
    assert result.spec.max_replicas == 10


def test_hpa_behavior_defaults_like_the_api_server(kubeapi: KubeApi, apis: Any) -> None:
    hpa = {"metadata": {"name": "api"}, "spec": {
        "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "api"}, "maxReplicas": 10}}
    kubeapi.seed([namespace("trading")])
    created = apis.autoscaling.create_namespaced_horizontal_pod_autoscaler("trading", hpa)
    assert created.spec.min_replicas == 1 and created.spec.behavior is None
    paused = apis.autoscaling.patch_namespaced_horizontal_pod_autoscaler(
        "api", "trading", {"spec": {"behavior": {"scaleUp": {"selectPolicy": "Disabled"}}}})
    assert paused.spec.behavior.scale_up.select_policy == "Disabled"
    assert paused.spec.behavior.scale_down.select_policy == "Max", "a given behavior gets its other rules defaulted"


def test_json_patch_applies_ops_and_a_failed_test_is_422(kubeapi: KubeApi, apis: Any) -> None:
    kubeapi.seed([deployment("trading", "trading-api", replicas=3)])
    ops = [{"op": "test", "path": "/spec/replicas", "value": 3},
           {"op": "replace", "path": "/spec/replicas", "value": 2},
           {"op": "add", "path": "/metadata/annotations", "value": {"redis-storm/ledger": "inc-1"}}]
    result = apis.apps.patch_namespaced_deployment("trading-api", "trading", ops)
    assert result.spec.replicas == 2 and result.metadata.annotations == {"redis-storm/ledger": "inc-1"}
    failed = status_of(lambda: apis.apps.patch_namespaced_deployment(
        "trading-api", "trading", [{"op": "test", "path": "/spec/replicas", "value": 3},
                                   {"op": "replace", "path": "/spec/replicas", "value": 0}]))
    assert (failed["code"], failed["reason"]) == (422, "Invalid")
    assert failed["message"] == "testing value /spec/replicas failed: test failed"
    assert apis.apps.read_namespaced_deployment("trading-api", "trading").spec.replicas == 2
    removal = status_of(lambda: apis.apps.patch_namespaced_deployment(
        "trading-api", "trading", [{"op": "remove", "path": "/metadata/labels/absent"}]))
    assert removal["code"] == 422


def test_custom_resources_take_merge_patch_but_refuse_strategic(kubeapi: KubeApi, apis: Any) -> None:
    so = {"apiVersion": "keda.sh/v1alpha1", "kind": "ScaledObject",
          "metadata": {"name": "worker", "namespace": "trading"},
          "spec": {"scaleTargetRef": {"name": "worker"}, "minReplicaCount": 1, "maxReplicaCount": 20}}
    kubeapi.seed([so])
    paused = apis.custom.patch_namespaced_custom_object(
        "keda.sh", "v1alpha1", "trading", "scaledobjects", "worker",
        {"metadata": {"annotations": {"autoscaling.keda.sh/paused": "true"}}})
    assert paused["metadata"]["annotations"] == {"autoscaling.keda.sh/paused": "true"}
    assert paused["metadata"]["generation"] == 1
    refused = status_of(lambda: apis.custom.patch_namespaced_custom_object(
        "keda.sh", "v1alpha1", "trading", "scaledobjects", "worker", {"spec": {"maxReplicaCount": 2}},
        _content_type="application/strategic-merge-patch+json"))
    assert (refused["code"], refused["reason"]) == (415, "UnsupportedMediaType")

    dr = {"apiVersion": "networking.istio.io/v1beta1", "kind": "DestinationRule",
          "metadata": {"name": "redis"}, "spec": {"host": "redis.redis.svc.cluster.local"}}
    apis.custom.create_namespaced_custom_object("networking.istio.io", "v1beta1", "trading", "destinationrules", dr)
    as_v1 = apis.custom.get_namespaced_custom_object("networking.istio.io", "v1", "trading", "destinationrules",
                                                     "redis")
    assert as_v1["apiVersion"] == "networking.istio.io/v1" and as_v1["spec"]["host"].startswith("redis.")
    mw = {"apiVersion": "traefik.io/v1alpha1", "kind": "Middleware", "metadata": {"name": "ratelimit"},
          "spec": {"rateLimit": {"average": 100, "burst": 50}}}
    apis.custom.create_namespaced_custom_object("traefik.io", "v1alpha1", "trading", "middlewares", mw)
    listed = apis.custom.list_namespaced_custom_object("traefik.io", "v1alpha1", "trading", "middlewares")
    assert [i["metadata"]["name"] for i in listed["items"]] == ["ratelimit"]
    assert listed["items"][0]["kind"] == "Middleware"


def test_dry_run_all_validates_and_writes_nothing(kubeapi: KubeApi, apis: Any) -> None:
    kubeapi.seed([deployment("trading", "trading-api", replicas=3)])
    before = apis.apps.read_namespaced_deployment("trading-api", "trading")
    mark = kubeapi.last_seq()

    would = apis.apps.patch_namespaced_deployment_scale("trading-api", "trading", {"spec": {"replicas": 1}},
                                                        dry_run="All")
    assert would.spec.replicas == 1
    would_deploy = apis.apps.patch_namespaced_deployment("trading-api", "trading",
                                                         {"metadata": {"annotations": {"a": "b"}}}, dry_run="All")
    assert would_deploy.metadata.annotations == {"a": "b"}
    apis.core.create_namespaced_config_map("trading", {"metadata": {"name": "ledger"}}, dry_run="All")
    changed = apis.apps.read_namespaced_deployment("trading-api", "trading")
    changed.spec.replicas = 9
    assert apis.apps.replace_namespaced_deployment("trading-api", "trading", changed, dry_run="All").spec.replicas == 9
    apis.apps.delete_namespaced_deployment("trading-api", "trading", dry_run="All")
    invalid = status_of(lambda: apis.apps.patch_namespaced_deployment_scale(
        "trading-api", "trading", {"spec": {"replicas": -2}}, dry_run="All"))
    assert invalid["code"] == 422, "a dry run still validates"

    after = apis.apps.read_namespaced_deployment("trading-api", "trading")
    assert after.metadata.resource_version == before.metadata.resource_version
    assert after.spec.replicas == 3 and after.metadata.annotations is None
    assert status_of(lambda: apis.core.read_namespaced_config_map("ledger", "trading"))["code"] == 404
    entries = kubeapi.audit(since=mark)
    assert [(e["verb"], e["subresource"], e["dry_run"], e["code"]) for e in entries] == [
        ("patch", "scale", True, 200), ("patch", "", True, 200), ("create", "", True, 201),
        ("update", "", True, 200), ("delete", "", True, 200), ("patch", "scale", True, 422)]
    assert kubeapi.writes(since=mark) == []
    assert len(kubeapi.writes(since=mark, include_dry_run=True)) == 5


def test_audit_log_records_every_write_with_identity(kubeapi: KubeApi, apis: Any) -> None:
    kubeapi.seed([deployment("trading", "trading-api")])
    assert kubeapi.audit() == [], "seeding is not audited"
    apis.apps.read_namespaced_deployment("trading-api", "trading")
    apis.apps.patch_namespaced_deployment_scale("trading-api", "trading", {"spec": {"replicas": 2}})
    readonly = kubernetes.client.AppsV1Api(kubeapi.client("readonly"))
    status_of(lambda: readonly.patch_namespaced_deployment_scale("trading-api", "trading", {"spec": {"replicas": 9}}))
    apis.core.create_namespaced_config_map("trading", {"metadata": {"generateName": "ledger-"}})
    entries = kubeapi.audit()
    assert [(e["seq"], e["user"], e["verb"], e["resource"], e["subresource"], e["code"]) for e in entries] == [
        (1, "storm-operator", "patch", "deployments", "scale", 200),
        (2, "storm-readonly", "patch", "deployments", "scale", 403),
        (3, "storm-operator", "create", "configmaps", "", 201)]
    assert entries[0]["group"] == "apps" and entries[0]["version"] == "v1"
    assert entries[0]["namespace"] == "trading" and entries[0]["name"] == "trading-api"
    assert entries[2]["name"].startswith("ledger-") and len(entries[2]["name"]) == len("ledger-") + 5
    on_disk = [json.loads(line) for line in kubeapi.audit_log.read_text().splitlines()]
    assert on_disk == entries
    assert kubeapi.audit(since=2) == entries[2:]
    assert [e["user"] for e in kubeapi.writes()] == ["storm-operator", "storm-operator"]
    assert [e["verb"] for e in kubeapi.writes(user="storm-readonly")] == []


def test_label_and_field_selectors(kubeapi: KubeApi, apis: Any) -> None:
    kubeapi.seed([
        pod("trading", "api-1", {"app": "api", "tier": "web"}, ip="127.1.0.1"),
        pod("trading", "api-2", {"app": "api", "tier": "web"}, ip="127.1.0.2", phase="Pending"),
        pod("trading", "worker-1", {"app": "worker"}, ip="127.1.0.3"),
        pod("payments", "pay-1", {"app": "pay", "canary": "true"}, ip="127.2.0.1"),
    ])

    def names(**kwargs: Any) -> list[str]:
        return [p.metadata.name for p in apis.core.list_pod_for_all_namespaces(**kwargs).items]

    assert names(label_selector="app=api") == ["api-1", "api-2"]
    assert names(label_selector="app==worker") == ["worker-1"]
    assert names(label_selector="app!=api") == ["pay-1", "worker-1"]
    assert names(label_selector="app in (worker, pay)") == ["pay-1", "worker-1"]
    assert names(label_selector="app notin (api),!canary") == ["worker-1"]
    assert names(label_selector="canary") == ["pay-1"]
    assert names(label_selector="app=api,tier=web") == ["api-1", "api-2"]
    assert names(field_selector="status.podIP=127.1.0.3") == ["worker-1"]
    assert names(field_selector="status.phase=Running,metadata.namespace=trading") == ["api-1", "worker-1"]
    assert names(field_selector="metadata.name!=api-1", label_selector="app=api") == ["api-2"]
    assert [p.metadata.name for p in apis.core.list_namespaced_pod("payments").items] == ["pay-1"]
    unsupported = status_of(lambda: apis.core.list_namespaced_pod("trading", field_selector="spec.bogus=1"))
    assert (unsupported["code"], unsupported["message"]) == (400, "field label not supported: spec.bogus")
    assert status_of(lambda: apis.core.list_namespaced_pod("trading", label_selector="app in api"))["code"] == 400


def test_cascade_delete_removes_dependents_in_the_background(kubeapi: KubeApi, apis: Any) -> None:
    import time

    seeded = kubeapi.seed([deployment("trading", "trading-api")])
    rs = {"apiVersion": "apps/v1", "kind": "ReplicaSet", "metadata": {
        "name": "trading-api-7c9f", "namespace": "trading", "labels": {"app": "trading-api"},
        "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment", "name": "trading-api",
                             "uid": seeded[0]["metadata"]["uid"], "controller": True}]},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "trading-api"}}, "template": {
            "metadata": {"labels": {"app": "trading-api"}}, "spec": {"containers": [{"name": "app", "image": "x:1"}]}}}}
    rs_obj = kubeapi.seed([rs])[0]
    kubeapi.seed([pod("trading", "trading-api-7c9f-abcde", {"app": "trading-api"}, owner=rs_obj),
                  pod("trading", "bystander", {"app": "other"})])
    result = apis.apps.delete_namespaced_deployment("trading-api", "trading")
    assert result["status"] == "Success" and result["details"]["name"] == "trading-api"
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and len(apis.core.list_namespaced_pod("trading").items) > 1:
        time.sleep(0.02)
    assert [p.metadata.name for p in apis.core.list_namespaced_pod("trading").items] == ["bystander"]
    assert apis.apps.list_namespaced_replica_set("trading").items == []
    gc = [e for e in kubeapi.audit() if e["user"].endswith("generic-garbage-collector")]
    assert sorted((e["resource"], e["name"]) for e in gc) == [("pods", "trading-api-7c9f-abcde"),
                                                               ("replicasets", "trading-api-7c9f")]


def test_orphan_delete_keeps_dependents(kubeapi: KubeApi, apis: Any) -> None:
    owner = kubeapi.seed([deployment("trading", "api")])[0]
    kubeapi.seed([pod("trading", "api-x", {"app": "api"}, owner=owner)])
    apis.apps.delete_namespaced_deployment("api", "trading", propagation_policy="Orphan")
    kept = apis.core.read_namespaced_pod("api-x", "trading")
    assert kept.metadata.owner_references is None


def test_status_subresource_and_create_reset_status(kubeapi: KubeApi, apis: Any) -> None:
    kubeapi.seed([namespace("trading")])
    body = pod("trading", "api-1", {"app": "api"}, ip="127.1.0.9")
    created = apis.core.create_namespaced_pod("trading", body)
    assert created.status.phase == "Pending" and created.status.pod_ip is None, "create drops the client's status"
    ignored = apis.core.patch_namespaced_pod("api-1", "trading", {"status": {"podIP": "127.9.9.9"},
                                                                  "metadata": {"labels": {"v": "2"}}})
    assert ignored.status.pod_ip is None and ignored.metadata.labels["v"] == "2"
    updated = apis.core.patch_namespaced_pod_status("api-1", "trading", {"status": {
        "phase": "Running", "podIP": "127.1.0.9", "podIPs": [{"ip": "127.1.0.9"}],
        "containerStatuses": [{"name": "app", "ready": True, "restartCount": 0, "image": "x", "imageID": "",
                               "state": {"running": {}}}]}, "spec": {"nodeName": "ignored"}})
    assert updated.status.pod_ip == "127.1.0.9" and updated.spec.node_name is None
    listed = apis.core.list_pod_for_all_namespaces(field_selector="status.podIP=127.1.0.9")
    assert [p.metadata.name for p in listed.items] == ["api-1"]


def test_lease_lifecycle_with_conflicts(kubeapi: KubeApi, apis: Any) -> None:
    kubeapi.seed([namespace("redis-storm")])
    lease = {"metadata": {"name": "storm-lock-payments"},
             "spec": {"holderIdentity": "awx-1", "leaseDurationSeconds": 300}}
    created = apis.coordination.create_namespaced_lease("redis-storm", lease)
    taken = status_of(lambda: apis.coordination.create_namespaced_lease("redis-storm", lease))
    assert taken["reason"] == "AlreadyExists"
    created.spec.holder_identity = "laptop"
    apis.coordination.replace_namespaced_lease("storm-lock-payments", "redis-storm", created)
    created.spec.holder_identity = "eda"
    assert status_of(lambda: apis.coordination.replace_namespaced_lease(
        "storm-lock-payments", "redis-storm", created))["reason"] == "Conflict"
    bad = dict(lease, spec={"holderIdentity": "x", "leaseDurationSeconds": 0}, metadata={"name": "other"})
    assert status_of(lambda: apis.coordination.create_namespaced_lease("redis-storm", bad))["code"] == 422
    apis.coordination.delete_namespaced_lease("storm-lock-payments", "redis-storm")
    assert apis.coordination.list_namespaced_lease("redis-storm").items == []


def test_pod_logs_tail_container_and_previous(kubeapi: KubeApi, apis: Any) -> None:
    kubeapi.seed([pod("trading", "api-1", {"app": "api"}), pod("trading", "two", {"app": "x"},
                                                               containers=("app", "sidecar"))])
    kubeapi.log("trading", "api-1", "start\nRedisTimeoutException: Redis command timed out\n")
    kubeapi.log("trading", "api-1", "ERR max number of clients reached\n")
    assert apis.core.read_namespaced_pod_log("api-1", "trading") == (
        "start\nRedisTimeoutException: Redis command timed out\nERR max number of clients reached\n")
    assert apis.core.read_namespaced_pod_log("api-1", "trading", tail_lines=1) == "ERR max number of clients reached\n"
    assert apis.core.read_namespaced_pod_log("api-1", "trading", container="app", tail_lines=2).startswith(
        "RedisTimeoutException")
    nothing_before = status_of(lambda: apis.core.read_namespaced_pod_log("api-1", "trading", previous=True))
    assert nothing_before["code"] == 400 and "previous terminated container" in nothing_before["message"]
    kubeapi.log("trading", "api-1", "Connection reset by peer\n", previous=True)
    assert apis.core.read_namespaced_pod_log("api-1", "trading", previous=True) == "Connection reset by peer\n"

    kubeapi.log("trading", "two", "side\n", container="sidecar")
    assert apis.core.read_namespaced_pod_log("two", "trading", container="sidecar") == "side\n"
    assert apis.core.read_namespaced_pod_log("two", "trading", container="app") == ""
    which = status_of(lambda: apis.core.read_namespaced_pod_log("two", "trading"))
    assert which["message"] == "a container name must be specified for pod two, choose one of: [app sidecar]"
    assert status_of(lambda: apis.core.read_namespaced_pod_log("ghost", "trading"))["code"] == 404


def test_pod_metrics_are_read_only(kubeapi: KubeApi, apis: Any) -> None:
    kubeapi.seed([pod("trading", "api-1", {"app": "api"})])
    kubeapi.pod_metrics("trading", "api-1", {"app": {"cpu": "850m", "memory": "120Mi"}})
    listed = apis.custom.list_namespaced_custom_object("metrics.k8s.io", "v1beta1", "trading", "pods",
                                                       label_selector="app=api")
    assert listed["kind"] == "PodMetricsList"
    assert [(i["metadata"]["name"], i["containers"][0]["usage"]["cpu"]) for i in listed["items"]] == [
        ("api-1", "850m")]
    one = apis.custom.get_namespaced_custom_object("metrics.k8s.io", "v1beta1", "trading", "pods", "api-1")
    assert one["kind"] == "PodMetrics" and one["window"]
    refused = status_of(lambda: apis.custom.delete_namespaced_custom_object(
        "metrics.k8s.io", "v1beta1", "trading", "pods", "api-1"))
    assert (refused["code"], refused["reason"]) == (405, "MethodNotAllowed")


def test_watch_streams_changes_after_a_resource_version(kubeapi: KubeApi, apis: Any) -> None:
    kubeapi.seed([deployment("trading", "api", replicas=1)])
    start = apis.apps.list_namespaced_deployment("trading").metadata.resource_version
    apis.apps.patch_namespaced_deployment_scale("api", "trading", {"spec": {"replicas": 4}})
    apis.apps.delete_namespaced_deployment("api", "trading")
    watch = kubernetes.watch.Watch()
    seen = []
    for event in watch.stream(apis.apps.list_namespaced_deployment, "trading", resource_version=start,
                              timeout_seconds=2):
        seen.append((event["type"], event["object"].spec.replicas))
        if event["type"] == "DELETED":
            watch.stop()
    assert seen == [("MODIFIED", 4), ("DELETED", 4)]


def test_namespace_delete_removes_its_objects(kubeapi: KubeApi, apis: Any) -> None:
    kubeapi.seed([deployment("scratch", "api"), pod("scratch", "api-1")])
    deleted = apis.core.delete_namespace("scratch")
    assert deleted["status"]["phase"] == "Terminating"
    assert apis.apps.list_deployment_for_all_namespaces().items == []
    assert [n.metadata.name for n in apis.core.list_namespace().items] == [
        "default", "kube-node-lease", "kube-public", "kube-system"]


def test_watch_sends_the_current_list_then_live_changes(kubeapi: KubeApi, apis: Any) -> None:
    import threading

    kubeapi.seed([deployment("trading", "api", replicas=1), deployment("trading", "other", replicas=1)])
    listed = threading.Event()
    seen: list[tuple[str, str, int]] = []

    def watch() -> None:
        stream = kubernetes.watch.Watch()
        for event in stream.stream(apis.apps.list_namespaced_deployment, "trading", label_selector="app=api",
                                   timeout_seconds=10):
            seen.append((event["type"], event["object"].metadata.name, event["object"].spec.replicas))
            listed.set()
            if event["type"] == "MODIFIED":
                stream.stop()

    worker = threading.Thread(target=watch, daemon=True)
    worker.start()
    assert listed.wait(10), "the watch never sent the current objects"
    apis.apps.patch_namespaced_deployment_scale("other", "trading", {"spec": {"replicas": 2}})
    apis.apps.patch_namespaced_deployment_scale("api", "trading", {"spec": {"replicas": 3}})
    worker.join(10)
    assert not worker.is_alive()
    assert seen == [("ADDED", "api", 1), ("MODIFIED", "api", 3)]


def test_status_fields_go_always_serializes_are_filled(kubeapi: KubeApi, apis: Any) -> None:
    kubeapi.seed([namespace("trading")])
    apis.core.create_namespaced_pod("trading", {"metadata": {"name": "p"}, "spec": {"containers": [
        {"name": "app", "image": "app:1"}]}})
    apis.core.patch_namespaced_pod_status("p", "trading", {"status": {
        "conditions": [{"type": "Ready", "status": "False"}],
        "containerStatuses": [{"name": "app", "state": {"terminated": {"reason": "Error"}}}]}})
    read = apis.core.read_namespaced_pod("p", "trading")
    status = read.status.container_statuses[0]
    assert (status.ready, status.restart_count, status.image, status.state.terminated.exit_code) == (False, 0, "", 0)
    owner = {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "rs"}
    code, bad = kubeapi.raw("POST", "/api/v1/namespaces/trading/pods", {
        "metadata": {"name": "q", "ownerReferences": [owner]},
        "spec": {"containers": [{"name": "app", "image": "app:1"}]}})
    assert (code, bad["details"]["causes"][0]["field"]) == (422, "metadata.ownerReferences.uid")
